//! Judging one evaluation window: the statistical tests that say whether a slice fails
//! beyond its baseline ([`judge_window`], and [`judge_span`] for settled late data), and the
//! arbitration that picks the slice that explains an excess ([`arbitrate`]). Pure functions of
//! their inputs.

#![allow(clippy::wildcard_imports, reason = "the detector's own parent module")]

use super::*;

pub(super) fn alert_from(
    c: &Candidate,
    slice: SliceKey,
    id: AlertId,
    now_ms: u64,
    bucket_ms: u64,
    inhibited_by: Option<AlertId>,
) -> Alert {
    let retro = c.kind == AlertKind::Retrospective;
    Alert {
        id,
        slice,
        kind: c.kind,
        state: if retro { AlertState::Resolved } else { AlertState::Firing },
        start_ms: c.start_bucket * bucket_ms,
        end_ms: c.end_bucket.map(|b| (b + 1) * bucket_ms),
        raised_at_ms: now_ms,
        inhibited_by,
        score: c.score,
        observed_ratio: c.observed_ratio,
        baseline_ratio: c.baseline_ratio,
        clients: c.clients,
        networks: c.networks,
        active_clients: c.active,
        breakdown: c.desc.breakdown.clone(),
        top_asns: c.desc.top_asns.clone(),
        top_countries: c.desc.top_countries.clone(),
        supersedes: None,
    }
}

/// The hour-of-week slot's ratio for `now_ms` (0 without one).
fn slot_ratio(b: &Baseline, now_ms: u64) -> f64 {
    b.slot(now_ms).map_or(0.0, |s| s.ratio)
}

/// Below this many clients with counts, the ratio test also needs the failing-network count.
const SMALL_SLICE: u32 = 300;

/// What one window says about one slice.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Verdict {
    pub(super) failure_score: f64,
    pub(super) failure_fires: bool,
    pub(super) observed: f64,
    pub(super) expected: f64,
    pub(super) excess_clients: f64,
    pub(super) silence_score: f64,
    /// Evidence of the per-client test alone (no network agreement): a window where it is
    /// high is suspicious (keys behind few networks failing) and is not learned.
    pub(super) client_score: f64,
    /// Evidence against the long reference (the per-client ratio over hours): a window where
    /// it is high is odd (a slow burn building up) and is learned by neither baseline.
    pub(super) slow_score: f64,
    /// Evidence of the exact small-slice test (broken clients against their null rate).
    pub(super) small_score: f64,
    /// The small-slice test applies (enough broken clients on enough networks, and most of
    /// the slice): then its score can fire.
    pub(super) small_gated: bool,
}

/// The failure and silence tests for one window against one baseline.
pub(super) fn judge_window(
    cfg: &DetectorConfig,
    b: &Baseline,
    w: &SliceWindow,
    now_ms: u64,
    silence_allowed: bool,
    child: bool,
) -> Verdict {
    let mut v = Verdict::default();
    // Active networks: this window's or, when larger, the baseline's.
    let nets_active = f64::from(w.active_nets).max(b.active_nets);
    let has_counts = b.clients.weight > 0 && w.clients.n > 0;
    if has_counts {
        // Quasi-binomial: each client votes its own failure ratio once; the variance of the
        // mean is the per-client variance over n plus the slice's learned drift over time.
        let slot = b.slot(now_ms).map_or(0.0, |s| s.ratio);
        v.expected = b.clients.mean.max(slot);
        v.observed = w.clients.mean();
        let n_c = f64::from(w.clients.n);
        let n_n = f64::from(w.nets.n);
        let effect_c = v.observed - v.expected;
        let effect_n = w.nets.mean() - b.nets.mean;
        if effect_c >= cfg.min_effect {
            let zc = b.clients.z(n_c, v.observed, slot, cfg.min_unit_variance);
            v.client_score = normal_upper_score(zc);
        }
        if effect_c >= cfg.min_effect && effect_n >= cfg.min_effect {
            let zc = b.clients.z(n_c, v.observed, slot, cfg.min_unit_variance);
            let zn = b.nets.z(n_n, w.nets.mean(), 0.0, cfg.min_unit_variance);
            // Both must agree: many keys behind one network move the client mean only.
            v.failure_score = normal_upper_score(zc).min(normal_upper_score(zn));
            if w.clients.n < SMALL_SLICE {
                // Few clients: the normal approximation is loose, so the count of failing
                // networks must be improbable on its own too (p < 1e-4 at the defaults).
                let count = poisson_upper_score(f64::from(w.failing_nets), b.failing_nets.max(0.5));
                if count < 2.0 * cfg.resolve_score {
                    v.failure_score = v.failure_score.min(count);
                }
            }
        }
        // The long reference: has the fast mean (a 30-minute average of the level) drifted
        // above the ratio over hours by more than its own noise, with this window above it
        // too? The noise of an EWMA of windows is the window's variance times a / (2 - a),
        // so a slow burn shows long before any single window could.
        if b.slow.weight > 0 && w.capped.n > 0 {
            let drift = b.clients.mean - b.slow.mean;
            let above = w.capped.mean() - b.slow.mean;
            if drift >= cfg.min_effect && above >= cfg.min_effect {
                let n = f64::from(w.capped.n);
                let window_var =
                    b.clients.var_unit.max(cfg.min_unit_variance) / n + b.clients.var_time;
                let a = cfg.baseline_alpha.clamp(1e-6, 1.0);
                v.slow_score = normal_upper_score(drift / (window_var * a / (2.0 - a)).sqrt());
            }
        }
        // A slow burn under way (the fast mean drifted off the long reference): the window is
        // judged against the long reference too, with its own variance over hours. The climb
        // drags the fast mean and, worse, inflates the fast baseline's variance over time
        // (every window sits above a mean that trails it), so against the fast baseline alone
        // a burn to a level that pages as a step may never reach the fire score (spikebench
        // seed 108: +2.2 points, z 5 against the fast baseline, 20 against the long one).
        if v.slow_score >= cfg.resolve_score {
            let n = f64::from(w.capped.n);
            let observed = w.capped.mean();
            if observed - b.slow.mean.max(slot_ratio(b, now_ms)) >= cfg.min_effect {
                let z = b.slow.z(n, observed, slot_ratio(b, now_ms), cfg.min_unit_variance);
                let mut score = normal_upper_score(z);
                if w.clients.n < SMALL_SLICE {
                    let count =
                        poisson_upper_score(f64::from(w.failing_nets), b.failing_nets.max(0.5));
                    score = score.min(count);
                }
                if score > v.failure_score {
                    v.failure_score = score;
                    v.observed = observed;
                    v.expected = b.slow.mean;
                }
            }
        }
        // Small slices: when most of a slice's clients are broken (at least half their
        // attempts failed) on enough networks, the exact binomial tail of that count against
        // the learned (floored) rate of broken clients decides; one /24 counts for at most
        // NET_CAP clients in both the count and the total, so keys behind it cannot supply it.
        // Below those gates the same score still marks the window odd (not learned), so a
        // few broken clients do not raise the null rate the next small outage is judged by.
        let (k, n) = (w.broken_capped, w.capped.n);
        if b.updates > 0 && k > 0 {
            let q = b.broken.max(cfg.small_null_rate);
            v.small_score = binomial_upper_score(k, n, q);
            // Networks count when established in the slice (`net_tenure_ms`): fresh /24s
            // cannot make a small slice's quorum.
            v.small_gated = k >= cfg.min_clients
                && (!child || n <= cfg.small_max_clients)
                && w.broken_nets_known >= cfg.min_networks
                && f64::from(k) >= cfg.small_min_share * f64::from(n)
                && f64::from(w.broken_nets_known) >= cfg.small_min_share * nets_active;
        }
    } else {
        // No attempt counts (browser NEL): failing networks against their baseline count.
        let lambda = b.failing_nets.max(1.0);
        let k = f64::from(w.failing_nets);
        if b.updates > 0 && k >= cfg.count_min_factor * lambda {
            v.failure_score = poisson_upper_score(k, lambda);
        }
    }
    let expected_clients = b.failing_clients_at(now_ms);
    v.excess_clients = f64::from(w.failing_clients) - expected_clients;
    // The floors count what is beyond the baseline and its usual noise (3 sigma, Poisson),
    // so whoever forges must bring all of it, and they leave out the network with the most
    // failing clients: no single /24, however many keys it holds, can supply the evidence.
    let spread_clients =
        v.excess_clients - 3.0 * expected_clients.sqrt() - f64::from(w.top_net_failing);
    let excess_nets = f64::from(w.failing_nets) - b.failing_nets - 3.0 * b.failing_nets.sqrt();
    let spread_nets = excess_nets - 1.0;
    // The slice's own networks: those seen working before (`net_tenure_ms`), when the slice
    // has attempt counts to see that by (browser NEL without success reports has none).
    // /24s that turn up failing from their first report count only toward the
    // `min_networks_alone` networks that fire on their own.
    let own_nets = if has_counts { w.failing_nets_known } else { w.failing_nets };
    let own_spread = f64::from(own_nets) - b.failing_nets - 3.0 * b.failing_nets.sqrt() - 1.0;
    let active = f64::from(w.active_clients).max(b.active_clients);
    // An ASN or country fails as a network does: most of its networks at once. Keys an
    // attacker brings from a few /24s of a mid-sized ASN (spikebench's forge experiment: 7-9
    // /24s, 17-36% of the slice's clients) move its client ratio but not this share.
    let spread_over_slice = !child
        || excess_nets >= f64::from(cfg.min_networks_alone)
        || f64::from(own_nets) - b.failing_nets >= cfg.child_min_net_share * nets_active;
    let floors = spread_over_slice
        && w.failing_clients >= cfg.min_clients
        && w.failing_nets >= cfg.min_networks
        && spread_clients >= f64::from(cfg.min_clients)
        && spread_nets >= f64::from(cfg.min_networks)
        && (excess_nets >= f64::from(cfg.min_networks_alone)
            || (spread_clients >= cfg.min_client_share * active
                && own_spread >= f64::from(cfg.min_networks)
                && own_spread >= cfg.min_client_share * nets_active));
    v.failure_fires = floors && v.failure_score >= cfg.fire_score;
    if v.small_gated {
        // The small-slice test stands on its own (its gates are its floors).
        v.failure_fires |= v.small_score >= cfg.fire_score;
        v.failure_score = v.failure_score.max(v.small_score);
    }

    let expected = b.active_clients;
    let k = f64::from(w.active_clients);
    // Usual reporters gone quiet: both keys and their networks, so extra keys behind a few
    // networks leaving again is not silence.
    if silence_allowed
        && expected >= cfg.min_silence_clients
        && b.active_nets >= cfg.min_silence_networks
        && k < cfg.silence_ratio * expected
        && f64::from(w.active_nets) < cfg.silence_ratio * b.active_nets
    {
        v.silence_score = poisson_lower_score(k, expected);
    }
    v
}

/// Splits the late buckets into spans separated by more than `gap` empty buckets.
pub(super) fn spans(late: &BTreeMap<u64, IdMap<u64, LateCell>>, gap: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &b in late.keys() {
        match out.last_mut() {
            Some((_, end)) if b <= *end + gap + 1 => *end = b,
            _ => out.push((b, b)),
        }
    }
    out
}

/// A retrospective candidate for one span of late data, if it is far above the baseline.
pub(super) fn judge_span(
    cfg: &DetectorConfig,
    service: &str,
    part: Part,
    b: &Baseline,
    late: &BTreeMap<u64, IdMap<u64, LateCell>>,
    (first, last): (u64, u64),
) -> Option<Candidate> {
    let mut sum = 0u64;
    let mut clients: IdMap<u64, ()> = IdMap::default();
    let mut nets: IdMap<u64, ()> = IdMap::default();
    let mut asns: IdMap<u32, u64> = IdMap::default();
    let mut countries: IdMap<Country, u64> = IdMap::default();
    let mut breakdown = BTreeMap::new();
    for cells in late.range(first..=last).map(|(_, c)| c) {
        sum += cells.len() as u64;
        for (id, cell) in cells {
            nets.insert(cell.net, ());
            if clients.insert(*id, ()).is_none() {
                if let Some(a) = cell.asn {
                    *asns.entry(a).or_default() += 1;
                }
                if let Some(c) = cell.country {
                    *countries.entry(c).or_default() += 1;
                }
            }
            for (g, n) in cell.reported.iter().enumerate() {
                if *n > 0 {
                    *breakdown.entry(slice::group_label(g).to_owned()).or_default() += n;
                }
            }
        }
    }
    let buckets = (last - first + 1) as f64;
    let mid_ms = (first + last) / 2 * cfg.bucket_ms;
    // Expected failing clients per bucket: the window's baseline spread over its buckets.
    let per_bucket = b.failing_clients_at(mid_ms) / cfg.window_buckets.max(1) as f64;
    let lambda = (per_bucket * buckets).max(1.0);
    let k = sum as f64;
    let n_clients = clients.len() as f64;
    let n_nets = nets.len() as f64;
    let floors = n_clients >= f64::from(cfg.min_clients)
        && n_nets >= f64::from(cfg.min_networks)
        && (n_nets >= f64::from(cfg.min_networks_alone)
            || n_clients >= cfg.min_client_share * b.active_clients);
    let score = poisson_upper_score(k, lambda);
    if !(floors && k >= cfg.retro_min_factor * lambda && score >= cfg.fire_score) {
        return None;
    }
    Some(Candidate {
        service: service.to_owned(),
        part,
        index: 0,
        kind: AlertKind::Retrospective,
        score,
        excess: k - lambda,
        observed_ratio: 0.0,
        baseline_ratio: 0.0,
        clients: clients.len() as u64,
        networks: nets.len() as u64,
        active: b.active_clients.round() as u64,
        start_bucket: first,
        end_bucket: Some(last),
        desc: Description {
            breakdown,
            top_asns: window::top(asns),
            top_countries: window::top(countries)
                .into_iter()
                .map(|(c, n)| (c.as_str().to_owned(), n))
                .collect(),
        },
        deferred: false,
        firing: false,
    })
}

/// Localisation: a country defers to the ASNs in it that explain its excess; a service (or one
/// of its failure groups) defers to one ASN, or at most two countries, that explain its excess. Candidates of one kind only
/// explain candidates of the same kind.
pub(super) fn arbitrate(candidates: &mut [Candidate], dominance: f64) {
    let best_sum = |xs: &mut Vec<f64>, n: usize| {
        xs.sort_by(|a, b| b.total_cmp(a));
        xs.iter().take(n).sum::<f64>()
    };
    // Countries first: their verdict feeds the service's.
    for i in 0..candidates.len() {
        let c = &candidates[i];
        let Part::Country(country) = c.part else { continue };
        let mut explained: Vec<f64> = candidates
            .iter()
            .filter(|a| {
                a.service == c.service
                    && a.kind == c.kind
                    && matches!(a.part, Part::Asn(_))
                    && a.desc.top_countries.first().is_some_and(|(tc, _)| tc == country.as_str())
            })
            .map(|a| a.excess)
            .collect();
        let explained = best_sum(&mut explained, 2);
        if c.excess > 0.0 && explained >= dominance * c.excess {
            candidates[i].deferred = true;
        }
    }
    for i in 0..candidates.len() {
        let c = &candidates[i];
        // The service and its failure groups alike.
        if c.part != Part::Service || c.firing {
            continue;
        }
        let of = |want_asn: bool| {
            let mut xs: Vec<&Candidate> = candidates
                .iter()
                .filter(|a| {
                    a.service == c.service
                        && a.kind == c.kind
                        && !a.deferred
                        && match a.part {
                            Part::Asn(_) => want_asn,
                            Part::Country(_) => !want_asn,
                            Part::Service => false,
                        }
                })
                .collect();
            xs.sort_by(|a, b| b.excess.total_cmp(&a.excess));
            xs
        };
        // The children explain the parent only when the failure is theirs: the rest of the
        // parent's clients fail far less. A small service whose clients sit mostly in two
        // countries, all failing, is the service's outage, not those countries' (spikebench
        // seeds 313, 318: the page named a country).
        let explains = |kids: &[&Candidate]| {
            let excess: f64 = kids.iter().map(|a| a.excess).sum();
            let failing: u64 = kids.iter().map(|a| a.clients).sum();
            let active: u64 = kids.iter().map(|a| a.active).sum();
            let rest_failing = c.clients.saturating_sub(failing);
            let rest_active = c.active.saturating_sub(active);
            let share = |f: u64, n: u64| f as f64 / n.max(1) as f64;
            let rest_fails_too = c.kind == AlertKind::Failures
                && rest_failing >= 2
                && share(rest_failing, rest_active) >= 0.5 * share(failing, active);
            excess >= dominance * c.excess && !rest_fails_too
        };
        let asns = of(true);
        let countries = of(false);
        let by_asn = !asns.is_empty() && explains(&asns[..1]);
        let by_countries = !countries.is_empty() && explains(&countries[..countries.len().min(2)]);
        if c.excess > 0.0 && (by_asn || by_countries) {
            candidates[i].deferred = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(part: Part, clients: u64, active: u64, excess: f64) -> Candidate {
        Candidate {
            service: "tiny".into(),
            part,
            index: 0,
            kind: AlertKind::Failures,
            score: 30.0,
            excess,
            observed_ratio: 0.0,
            baseline_ratio: 0.0,
            clients,
            networks: clients,
            active,
            start_bucket: 0,
            end_bucket: None,
            desc: Description::default(),
            deferred: false,
            firing: false,
        }
    }

    fn country(code: &str) -> Part {
        Part::Country(Country::parse(code).unwrap())
    }

    #[test]
    fn a_parent_defers_to_children_only_when_the_rest_of_it_fails_far_less() {
        // A small service, its clients mostly in two countries, all failing: the countries
        // explain most of the excess, but the rest of the service fails as much: the page is
        // the service's.
        let mut all = vec![
            candidate(Part::Service, 30, 30, 29.0),
            candidate(country("DE"), 14, 14, 13.5),
            candidate(country("FR"), 12, 12, 11.5),
        ];
        arbitrate(&mut all, 0.7);
        assert!(all.iter().all(|c| !c.deferred));
        // A region outage: the same two countries fail, the other 300 clients do not.
        let mut region = vec![
            candidate(Part::Service, 62, 400, 55.0),
            candidate(country("DE"), 30, 60, 28.0),
            candidate(country("FR"), 25, 40, 23.0),
        ];
        arbitrate(&mut region, 0.7);
        assert!(region[0].deferred);
        assert!(!region[1].deferred && !region[2].deferred);
        // One ASN, the rest quiet: the service defers to it.
        let mut asn = vec![
            candidate(Part::Service, 45, 400, 40.0),
            candidate(Part::Asn(64_500), 40, 50, 38.0),
        ];
        arbitrate(&mut asn, 0.7);
        assert!(asn[0].deferred);
    }
}
