//! The simulated world: clients, services, ASNs, countries and regions, their traffic and
//! failures second by second, and the injected events that change them.

use vantage_agent::report::UnixMillis;
use vantage_agent::taxonomy::{ErrorType, NetworkType, Scope};
use vantage_collector::detect::{AlertEvent, Detector};
use vantage_collector::event_time;
use vantage_collector::model::{Country, Enrichment, NetTag, Source, StoredReport, StoredTargets};

use super::rng::Rng;
use super::{Event, EventClass, SimConfig};

/// Services, their baseline failure ratios, and how likely a client is to use each. The last
/// one is small (a few dozen users at 4000 clients).
pub(crate) const SERVICES: [(&str, f64, f64); 5] = [
    ("shop", 0.005, 0.6),
    ("api", 0.01, 0.5),
    ("media", 0.02, 0.3),
    ("auth", 0.008, 0.2),
    ("tiny", 0.01, 0.003),
];
/// The services ordinary events pick from (the small one has its own class).
pub const MAIN_SERVICES: usize = 4;
/// Index of the small service in `SERVICES`.
pub const SMALL_SERVICE: usize = 4;
/// The host each service's requests go to.
const HOSTS: [&str; 5] =
    ["shop.example", "api.example", "media.example", "auth.example", "tiny.example"];
/// Countries (index = country id); region = index % 3.
pub(crate) const COUNTRIES: [&str; 12] =
    ["DE", "US", "JP", "FR", "CA", "AU", "GB", "MX", "IN", "NL", "BR", "SG"];
/// Hours from UTC of each region's local time (Europe, Americas, Asia-Pacific).
pub(crate) const REGION_UTC_OFFSET_H: [i64; 3] = [1, -5, 8];
/// First simulated ASN number.
pub(crate) const ASN_BASE: u32 = 64_512;
/// Seconds between a client's reports.
pub(crate) const REPORT_INTERVAL_S: u64 = 30;
/// Requests a client makes to each of its services per report interval, at the peak.
const REQUESTS_PER_INTERVAL: f64 = 6.0;
/// Mean online session, seconds.
const SESSION_S: f64 = 1_200.0;
/// Background failure-type mix per group: dns, tcp, tls, http.
const BACKGROUND_MIX: [(ErrorType, f64); 6] = [
    (ErrorType::DnsTimedOut, 0.1),
    (ErrorType::TcpReset, 0.15),
    (ErrorType::TcpTimedOut, 0.15),
    (ErrorType::TlsProtocolError, 0.1),
    (ErrorType::HttpError, 0.4),
    (ErrorType::HttpProtocolError, 0.1),
];

const MIX_WEIGHTS: [f64; 6] = [0.1, 0.15, 0.15, 0.1, 0.4, 0.1];

const HOUR_MS: u64 = 3_600_000;

/// Local hour (fractional) and weekday (Monday = 0) of `ms` in `region`.
pub(crate) fn local_time(ms: u64, region: usize) -> (f64, u64) {
    let shifted = ms as i64 + REGION_UTC_OFFSET_H[region % 3] * HOUR_MS as i64;
    let hours = shifted.max(0) as f64 / HOUR_MS as f64;
    let day = (hours / 24.0).floor() as u64;
    (hours % 24.0, (day + 3) % 7)
}

/// Share of clients online in `region` at `ms`: 4:1 between 16:00 and 04:00 local, and 80% of
/// that on weekends.
pub(crate) fn online_share(ms: u64, region: usize) -> f64 {
    let (hour, weekday) = local_time(ms, region);
    let s = (1.0 - (std::f64::consts::TAU * (hour - 4.0) / 24.0).cos()) / 2.0;
    let weekend = if weekday >= 5 { 0.8 } else { 1.0 };
    0.8 * (0.25 + 0.75 * s) * weekend
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An ordinary user.
    User,
    /// Extra keys that exist only while `event` runs (the key-flood nuisances, forgers).
    Extra { event: usize },
}

#[derive(Clone, Debug)]
struct Batch {
    reports: Vec<StoredReport>,
    targets: Vec<StoredTargets>,
}

#[derive(Clone, Debug)]
pub(crate) struct Client {
    key: [u8; 32],
    pub(crate) asn: usize,
    net: u64,
    /// Networks the client hops between (carrier-grade NAT pools).
    net_pool: Vec<u64>,
    pub(crate) country: usize,
    services: u8,
    online: bool,
    /// Failure-rate multiplier (flaky Wi-Fi and such).
    mult: f64,
    pub(crate) kind: Kind,
    buffer: Vec<Batch>,
}

impl Client {
    pub(crate) fn region(&self) -> usize {
        self.country % 3
    }
}

/// ASN sizes and networks.
#[derive(Clone, Debug)]
pub(crate) struct Asn {
    pub(crate) share: f64,
    pub(crate) nets: Vec<u64>,
    mult: f64,
}

/// The whole simulated population and the detector it feeds.
pub(crate) struct World {
    pub(crate) clients: Vec<Client>,
    pub(crate) asns: Vec<Asn>,
    wheel: Vec<Vec<u32>>,
    rng: Rng,
    service_drift: [f64; 5],
    pub(crate) detector: Detector,
    pub(crate) alerts: Vec<(u64, AlertEvent)>,
    /// Background micro-blips, 20-60 s: (start, end, service, 1-3 clients failing 100%, or
    /// None for +0.2 points service-wide).
    pub(crate) blips: Vec<(u64, u64, usize, Option<Vec<u32>>)>,
    /// Indexes into `blips` of the ones still running.
    live_blips: Vec<usize>,
    next_blip_ms: u64,
    pub(crate) records: u64,
    /// Per event: (online clients, their distinct /24s) of the affected slice (the ASN's
    /// clients of the service, or the service's) when the event began.
    pub(crate) event_active: Vec<Option<(u32, u32)>>,
}

fn net_tag(asn: usize, index: usize) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in (asn as u64).to_be_bytes().into_iter().chain((index as u64).to_be_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl World {
    /// Builds the population for `config` and the extra keys the `events` need.
    pub(crate) fn new(config: &SimConfig, events: &[Event], detector: Detector) -> World {
        let mut rng = Rng::new(config.seed);
        let mut pop = rng.fork(1);
        // Zipf(1) ASN sizes.
        let n_asns = config.asns.max(12);
        let h: f64 = (1..=n_asns).map(|r| 1.0 / r as f64).sum();
        let asns: Vec<Asn> = (0..n_asns)
            .map(|i| {
                let share = 1.0 / ((i + 1) as f64 * h);
                let n_nets = ((share * config.clients as f64 * 0.6).round() as usize).max(1);
                Asn {
                    share,
                    nets: (0..n_nets).map(|j| net_tag(i, j)).collect(),
                    mult: (0.3 * pop.normal()).exp(),
                }
            })
            .collect();
        let shares: Vec<f64> = asns.iter().map(|a| a.share).collect();
        let mut clients = Vec::with_capacity(config.clients);
        for _ in 0..config.clients {
            let asn = pop.weighted(&shares);
            let mut services = 0u8;
            while services == 0 {
                for (i, (_, _, p)) in SERVICES.iter().enumerate() {
                    if pop.chance(*p) {
                        services |= 1 << i;
                    }
                }
            }
            let mut key = [0u8; 32];
            key.iter_mut().for_each(|b| *b = pop.next_u64() as u8);
            let nets = &asns[asn].nets;
            clients.push(Client {
                key,
                asn,
                net: nets[pop.range(0, nets.len() as u64) as usize],
                net_pool: Vec::new(),
                country: asn % COUNTRIES.len(),
                services,
                online: pop.chance(0.5),
                mult: if pop.chance(0.05) { 5.0 } else { 1.0 },
                kind: Kind::User,
                buffer: Vec::new(),
            });
        }
        // Extra keys for the key-flood nuisances and the forging experiment.
        for (i, e) in events.iter().enumerate() {
            let (nets, keys_per_net) = match e.class {
                EventClass::KeysOneNet => (1, 1000),
                EventClass::KeysManyNets => (50, 6),
                EventClass::Forge { nets, keys_per_net } => (nets, keys_per_net),
                _ => continue,
            };
            let asn = e.asn.unwrap_or(0);
            let pool: Vec<u64> =
                (0..nets).map(|j| net_tag(asn, 1_000_000 + i * 1000 + j as usize)).collect();
            for n in 0..nets as usize {
                for _ in 0..keys_per_net {
                    let mut key = [0u8; 32];
                    key.iter_mut().for_each(|b| *b = pop.next_u64() as u8);
                    clients.push(Client {
                        key,
                        asn,
                        net: pool[n],
                        net_pool: if e.class == EventClass::KeysManyNets {
                            pool.clone()
                        } else {
                            Vec::new()
                        },
                        country: asn % COUNTRIES.len(),
                        services: 1 << e.service,
                        online: true,
                        mult: 1.0,
                        kind: Kind::Extra { event: i },
                        buffer: Vec::new(),
                    });
                }
            }
        }
        let mut wheel = vec![Vec::new(); 64];
        for i in 0..clients.len() {
            wheel[pop.range(0, REPORT_INTERVAL_S) as usize].push(i as u32);
        }
        World {
            clients,
            asns,
            wheel,
            rng: rng.fork(2),
            service_drift: [0.0; 5],
            event_active: vec![None; events.len()],
            detector,
            alerts: Vec::new(),
            blips: Vec::new(),
            live_blips: Vec::new(),
            next_blip_ms: 0,
            records: 0,
        }
    }

    /// Runs second by second from `start_ms` to `end_ms`.
    pub(crate) fn run(&mut self, start_ms: u64, end_ms: u64, events: &[Event], blips: bool) {
        let mut t = start_ms / 1000;
        self.next_blip_ms = start_ms + 30 * 60_000;
        while t * 1000 < end_ms {
            let now_ms = t * 1000;
            if now_ms % 600_000 == 0 {
                for d in &mut self.service_drift {
                    *d = 0.9 * *d + 0.1 * self.rng.normal();
                }
            }
            if blips && now_ms >= self.next_blip_ms {
                self.add_blip(now_ms);
            }
            let all = &self.blips;
            self.live_blips.retain(|i| all[*i].1 > now_ms);
            let active: Vec<usize> =
                (0..events.len()).filter(|i| events[*i].covers(now_ms)).collect();
            for &i in &active {
                if self.event_active[i].is_none() {
                    self.event_active[i] = Some(self.active_in(&events[i]));
                }
            }
            let slot = (t % 64) as usize;
            let due = std::mem::take(&mut self.wheel[slot]);
            for &c in &due {
                self.tick(c as usize, now_ms, events, &active);
                let next = t + self.rng.range(REPORT_INTERVAL_S - 2, REPORT_INTERVAL_S + 3);
                self.wheel[(next % 64) as usize].push(c);
            }
            if t % 10 == 0 {
                let out = self.detector.advance(UnixMillis(now_ms));
                self.alerts.extend(out.into_iter().map(|e| (now_ms, e)));
            }
            t += 1;
        }
    }

    /// Online clients of `e`'s slice (its service, within its ASN if it has one) and their
    /// distinct /24s.
    fn active_in(&self, e: &Event) -> (u32, u32) {
        let mut nets = std::collections::HashSet::new();
        let mut n = 0;
        for c in &self.clients {
            if c.kind == Kind::User
                && c.online
                && c.services & (1 << e.service) != 0
                && e.asn.is_none_or(|a| a == c.asn)
            {
                n += 1;
                nets.insert(c.net);
            }
        }
        (n, nets.len() as u32)
    }

    fn add_blip(&mut self, now_ms: u64) {
        let service = self.rng.range(0, 4) as usize;
        let len = self.rng.range(20_000, 60_000);
        let who = if self.rng.chance(0.5) {
            let n = self.rng.range(1, 4);
            Some((0..n).map(|_| self.rng.range(0, self.clients.len() as u64) as u32).collect())
        } else {
            None
        };
        self.live_blips.push(self.blips.len());
        self.blips.push((now_ms, now_ms + len, service, who));
        self.next_blip_ms = now_ms + self.rng.range(10 * 60_000, 30 * 60_000);
    }

    /// One client's report interval: sessions, requests, failures, delivery or buffering.
    fn tick(&mut self, c: usize, now_ms: u64, events: &[Event], active: &[usize]) {
        let client = &self.clients[c];
        if let Kind::Extra { event } = client.kind
            && !events[event].covers(now_ms)
        {
            return;
        }
        let region = client.region();
        if client.kind == Kind::User {
            let share = online_share(now_ms, region);
            let h_off = REPORT_INTERVAL_S as f64 / SESSION_S;
            let h_on = h_off * share / (1.0 - share).max(0.05);
            let online = client.online;
            let flip = self.rng.chance(if online { h_off } else { h_on.min(1.0) });
            self.clients[c].online = online != flip;
        }
        let client = &self.clients[c];
        if !client.online {
            return;
        }
        let mut surge = 1.0;
        let mut retry_loop = false;
        let mut blackout = false;
        let mut collector_down = false;
        let mut skew_ms: i64 = 0;
        for &i in active {
            let e = &events[i];
            match e.class {
                EventClass::Surge => surge = 3.0,
                EventClass::RetryLoop if e.client == Some(c) => retry_loop = true,
                EventClass::AsnBlackout | EventClass::ShortBlackout | EventClass::LongBlackout
                    if e.asn == Some(client.asn) =>
                {
                    blackout = true;
                }
                EventClass::CollectorOutage => collector_down = true,
                EventClass::ClockSkew if c % 10 == 0 => {
                    skew_ms = if c % 20 == 0 { 3_600_000 } else { -86_400_000 };
                }
                _ => {}
            }
        }
        let net = if client.net_pool.is_empty() {
            client.net
        } else {
            client.net_pool[self.rng.range(0, client.net_pool.len() as u64) as usize]
        };
        let enrichment = Enrichment {
            asn: Some(ASN_BASE + client.asn as u32),
            country: Country::parse(COUNTRIES[client.country]),
        };
        let key = client.key;
        let mut batch = Batch { reports: Vec::new(), targets: Vec::new() };
        for s in 0..SERVICES.len() {
            if client.services & (1 << s) == 0 {
                continue;
            }
            let mut lambda = REQUESTS_PER_INTERVAL * surge;
            if retry_loop {
                lambda *= 1000.0;
            }
            let attempts = self.rng.poisson(lambda).max(1);
            let (p, incident_type) = self.fail_prob(c, s, now_ms, events, active);
            let failures =
                if blackout || retry_loop { attempts } else { self.rng.binomial(attempts, p) };
            let scope = if blackout || collector_down { Scope::Local } else { Scope::Path };
            // Coalesce failures per type, as the agent does.
            let mut by_type: Vec<(ErrorType, u32)> = Vec::new();
            for _ in 0..failures.min(64) {
                let t = match &incident_type {
                    Some(t) if blackout || retry_loop || self.rng.chance(0.9) => t.clone(),
                    _ if blackout => ErrorType::TcpAddressUnreachable,
                    _ => BACKGROUND_MIX[self.rng.weighted(&MIX_WEIGHTS)].0.clone(),
                };
                match by_type.iter_mut().find(|(bt, _)| *bt == t) {
                    Some((_, n)) => *n += 1,
                    None => by_type.push((t, 1)),
                }
            }
            if failures > 64 {
                // Big counts (retry loops) coalesce into the first type.
                if let Some((_, n)) = by_type.first_mut() {
                    *n += (failures - 64) as u32;
                }
            }
            for (error_type, count) in by_type {
                let mut id = [0u8; 16];
                id.iter_mut().for_each(|b| *b = self.rng.next_u64() as u8);
                let observed = now_ms.saturating_sub(self.rng.range(0, REPORT_INTERVAL_S * 1000));
                batch.reports.push(StoredReport {
                    id,
                    received_at: UnixMillis(0),
                    // The true observation time; converted at delivery as the ingest does.
                    event_at: UnixMillis(observed),
                    source: Source::Agent,
                    service: SERVICES[s].0.to_owned(),
                    host: HOSTS[s].to_owned(),
                    phase: error_type.phase(),
                    status: (error_type == ErrorType::HttpError).then_some(503),
                    error_type,
                    elapsed_ms: 120,
                    network: NetworkType::Wifi,
                    scope,
                    count,
                    sample_ppm: 1_000_000,
                    client: Some(key),
                    net: NetTag(net),
                    enrichment: enrichment.clone(),
                });
            }
            batch.targets.push(StoredTargets {
                received_at: UnixMillis(0),
                event_at: UnixMillis(0),
                service: SERVICES[s].0.to_owned(),
                host: HOSTS[s].to_owned(),
                attempts,
                successes: attempts - failures,
                client: key,
                net: NetTag(net),
                enrichment: enrichment.clone(),
            });
        }
        if blackout || collector_down {
            self.clients[c].buffer.push(batch);
            return;
        }
        let buffered = std::mem::take(&mut self.clients[c].buffer);
        let mut latency = self.rng.range(50, 500);
        for b in buffered.into_iter().chain(std::iter::once(batch)) {
            self.deliver(b, now_ms + latency, skew_ms);
            latency += 20;
        }
    }

    /// Hands a batch to the detector as the collector would after its durable write. The
    /// agent stamps `created_at` when it sends, on its own (possibly skewed) clock; the
    /// collector's event time cancels the skew.
    fn deliver(&mut self, batch: Batch, received_ms: u64, skew_ms: i64) {
        let received = UnixMillis(received_ms);
        let on_client = |ms: u64| UnixMillis((ms as i64 + skew_ms).max(0) as u64);
        let sent_ms = received_ms.saturating_sub(40);
        for mut r in batch.reports {
            r.received_at = received;
            r.event_at = event_time(received, on_client(sent_ms), None, on_client(r.event_at.0));
            self.detector.observe_report(&r, received);
            self.records += 1;
        }
        for mut t in batch.targets {
            t.received_at = received;
            t.event_at = received;
            self.detector.observe_targets(&t);
            self.records += 1;
        }
    }

    /// Failure probability of client `c` on service `s`, and the incident's failure type.
    fn fail_prob(
        &self,
        c: usize,
        s: usize,
        now_ms: u64,
        events: &[Event],
        active: &[usize],
    ) -> (f64, Option<ErrorType>) {
        let client = &self.clients[c];
        let base = SERVICES[s].1
            * (0.25 * self.service_drift[s]).exp()
            * self.asns[client.asn].mult
            * client.mult;
        let mut p = base.min(0.5);
        let mut kind = None;
        for &i in active {
            let e = &events[i];
            let mine = e.service == s;
            let (hit, t) = match e.class {
                EventClass::ServiceOutage
                | EventClass::OutageAfterPoison
                | EventClass::SmallService => (mine, ErrorType::TcpRefused),
                EventClass::Flapping => {
                    let on = (now_ms - e.start_ms) / 60_000 % 2 == 0;
                    (mine && on, ErrorType::TcpRefused)
                }
                EventClass::SlowBurn if mine => {
                    let climbed = (now_ms - e.start_ms) as f64 / e.ramp_ms.max(1) as f64;
                    p = (p + e.delta * climbed.min(1.0)).min(1.0);
                    kind = Some(ErrorType::HttpError);
                    (false, ErrorType::HttpError)
                }
                EventClass::RegionOutage => {
                    (mine && Some(client.region()) == e.region, ErrorType::DnsTimedOut)
                }
                EventClass::AsnOutage | EventClass::SmallAsn => {
                    (mine && Some(client.asn) == e.asn, ErrorType::TcpTimedOut)
                }
                EventClass::OneClient | EventClass::RetryLoop => {
                    (mine && e.client == Some(c), ErrorType::HttpError)
                }
                EventClass::KeysOneNet | EventClass::Forge { .. } => {
                    (mine && client.kind == (Kind::Extra { event: i }), ErrorType::TlsCertInvalid)
                }
                EventClass::GrayFailure if mine => {
                    p = (p + e.delta).min(1.0);
                    kind = Some(ErrorType::HttpError);
                    (false, ErrorType::HttpError)
                }
                _ => (false, ErrorType::Unknown),
            };
            if hit {
                return (1.0, Some(t));
            }
        }
        for (start, end, service, who) in self.live_blips.iter().map(|i| &self.blips[*i]) {
            if *service == s && now_ms >= *start && now_ms < *end {
                match who {
                    Some(ids) if ids.contains(&(c as u32)) => return (1.0, None),
                    None => p = (p + 0.002).min(1.0),
                    _ => {}
                }
            }
        }
        (p, kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diurnal_share_is_four_to_one_and_lower_on_weekends() {
        // 2024-01-01 was a Monday; region 0 is UTC+1.
        let monday = 1_704_067_200_000u64;
        let peak = online_share(monday + 15 * HOUR_MS, 0);
        let trough = online_share(monday + 3 * HOUR_MS, 0);
        assert!((peak / trough - 4.0).abs() < 0.01, "{peak} {trough}");
        let saturday = online_share(monday + 5 * 24 * HOUR_MS + 15 * HOUR_MS, 0);
        assert!((saturday / peak - 0.8).abs() < 1e-9);
        assert_eq!(local_time(monday, 0).1, 0);
    }
}
