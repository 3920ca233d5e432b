//! The cost to forge an alert: the fewest distinct /24s from which an attacker's keys,
//! reporting failures for a healthy service, make the detector page.

use vantage_collector::detect::AlertEvent;

use super::{EPOCH_MS, EventClass, SimConfig, asn_shares, event, run_events};

const MINUTE_MS: u64 = 60_000;

/// The lead of the pre-positioned settings: far longer than the detector's `net_tenure_ms`
/// (a minute), so the attacker's /24s count as the slice's own when they start failing.
pub(super) const PREPOSITION_MIN: u32 = 15;

/// What the forging experiment found.
#[derive(Clone, Debug, PartialEq)]
pub struct ForgeResult {
    /// Keys behind each forged /24, per setting.
    pub keys_per_net: Vec<u32>,
    /// Minutes the keys reported like the service's clients before failing, per setting (0:
    /// fresh /24s failing at once; 15: /24s established in the slice).
    pub lead_min: Vec<u32>,
    /// Fewest /24s that paged, per setting (`None`: none up to `max_nets`).
    pub min_nets: Vec<Option<u32>>,
    /// The paged slice and its active clients, per setting.
    pub paged: Vec<Option<(String, u64)>>,
    /// Largest number of /24s tried.
    pub max_nets: u32,
}

impl ForgeResult {
    /// True when every successful forgery needed >= 20 /24s or >= 5% of the slice's active
    /// clients.
    pub fn goal_met(&self) -> bool {
        let mut settings = self.keys_per_net.iter().zip(&self.min_nets).zip(&self.paged);
        settings.all(|((k, n), p)| match (n, p) {
            (Some(n), Some((_, active))) => *n >= 20 || f64::from(n * k) >= 0.05 * *active as f64,
            _ => true,
        })
    }

    /// One line for the goals list.
    pub fn goal_line(&self) -> String {
        format!(
            "forging needs >= 20 /24s or >= 5% of the slice's active clients ({})",
            self.summary()
        )
    }

    /// One line for the table.
    pub fn table_line(&self) -> String {
        format!("cost to forge a page: {}", self.summary())
    }

    fn summary(&self) -> String {
        let parts: Vec<String> = self
            .keys_per_net
            .iter()
            .zip(&self.lead_min)
            .zip(&self.min_nets)
            .zip(&self.paged)
            .map(|(((k, lead), n), p)| {
                let how = match lead {
                    0 => format!("{k} key(s)/24, fresh"),
                    m => format!("{k} key(s)/24, there {m} min before"),
                };
                match (n, p) {
                    (Some(n), Some((slice, active))) => format!(
                        "{how}: {n} /24s ({} keys = {:.1}% of {slice}'s {active} active)",
                        n * k,
                        100.0 * f64::from(n * k) / (*active).max(1) as f64
                    ),
                    _ => format!("{how}: no page up to {} /24s", self.max_nets),
                }
            })
            .collect();
        parts.join("; ")
    }
}

/// Finds, by bisection, the fewest /24s that page when each holds `keys_per_net` attacking
/// keys in a 1-5% ASN of a `clients`-strong population, for 1 and 20 keys per /24, with fresh
/// /24s failing at once and with /24s that reported like the slice's own clients for
/// 15 minutes first.
pub fn forge_cost(seed: u64, clients: usize) -> ForgeResult {
    let config = SimConfig { seed, clients, asns: 80, ..SimConfig::default() };
    let shares = asn_shares(&config);
    let asn = shares.iter().position(|s| *s < 0.05 && *s >= 0.01).unwrap_or(0);
    let fail_at = EPOCH_MS + 90 * MINUTE_MS;
    let end = fail_at + 10 * MINUTE_MS;
    let max_nets = 64;
    let pages = |nets: u32, keys_per_net: u32, lead_min: u32| -> Option<(String, u64)> {
        let start = fail_at - u64::from(lead_min) * MINUTE_MS;
        let class = EventClass::Forge { nets, keys_per_net, lead_min };
        let e = event(class, start, end, 0, Some(asn));
        let alerts = run_events(&config, &[e], 105 * MINUTE_MS);
        alerts.iter().find_map(|(t, ev)| match ev {
            AlertEvent::Fired(a) if a.notifies() && *t >= start && a.slice.service == "shop" => {
                Some((a.slice.to_string(), a.active_clients))
            }
            _ => None,
        })
    };
    let mut result = ForgeResult {
        keys_per_net: vec![1, 20, 1, 20],
        lead_min: vec![0, 0, PREPOSITION_MIN, PREPOSITION_MIN],
        min_nets: Vec::new(),
        paged: Vec::new(),
        max_nets,
    };
    for (&k, &lead) in result.keys_per_net.clone().iter().zip(&result.lead_min.clone()) {
        let Some(top) = pages(max_nets, k, lead) else {
            result.min_nets.push(None);
            result.paged.push(None);
            continue;
        };
        let (mut lo, mut hi, mut best) = (0u32, max_nets, top);
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            match pages(mid, k, lead) {
                Some(p) => {
                    hi = mid;
                    best = p;
                }
                None => lo = mid,
            }
        }
        result.min_nets.push(Some(hi));
        result.paged.push(Some(best));
    }
    result
}
