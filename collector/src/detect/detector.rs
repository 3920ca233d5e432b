//! The [`Detector`]'s state machine: observing reports and counts, evaluating windows once
//! per bucket, installing and resolving alerts, snapshots and the series the dashboard reads.
//! Judging one window (is this slice failing, by how much, which slice explains it) is
//! [`judge`](super::judge)'s job.

#![allow(clippy::wildcard_imports, reason = "the detector's own parent module")]

use super::judge::{alert_from, arbitrate, judge_span, judge_window, spans};
use super::*;

/// A wider alert takes an incident over when its head explains less than this share of the
/// wider slice's excess: the head no longer explains most of it.
const MOST: f64 = 0.5;

/// Alert ids remembered for deduplication.
const RECENT_IDS: usize = 10_000;
/// ASN retrospectives remembered for grouping across services.
const RECENT_NETWORK_RETRO: usize = 1_000;

impl Detector {
    /// A detector with `config` and no history.
    pub fn new(config: DetectorConfig) -> Detector {
        Detector {
            stats: DetectorStats { slice_cap: config.max_slices, ..DetectorStats::default() },
            config,
            services: BTreeMap::new(),
            clients: IdMap::default(),
            late_entries: 0,
            high_water_ms: 0,
            last_eval: None,
            last_sweep_ms: 0,
            recent_ids: VecDeque::new(),
            recent_set: HashSet::new(),
            recent_network_retro: VecDeque::new(),
            recent_incidents: VecDeque::new(),
            scratch: IdMap::default(),
            tenure_amnesty_ms: 0,
            amnesty_pending: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    fn client_id(&self, client: Option<&[u8; 32]>, net: NetTag) -> u64 {
        let seed = self.config.hash_seed.to_be_bytes();
        match client {
            // Browser counts carry their network's stand-in key: the same client as the
            // network's failure reports, which carry none.
            Some(key) if *key != nel_client_key(net) => fnv1a64(&[&seed, b"agent", key]),
            _ => fnv1a64(&[&seed, b"nel", &net.0.to_be_bytes()]),
        }
    }

    fn bucket(&self, ms: u64) -> u64 {
        ms / self.config.bucket_ms.max(1)
    }

    fn data_slices(&self) -> usize {
        self.services.values().map(|s| 1 + s.asns.len() + s.countries.len()).sum()
    }

    /// Calls `f` on every tracked data slice `enrichment` belongs to in `service` (the
    /// service, its ASN, its country), creating them as needed; ASN and country slices only
    /// under the cap.
    fn for_each_part(
        &mut self,
        service: &str,
        enrichment: &Enrichment,
        mut f: impl FnMut(&mut Tracked),
    ) {
        let needs_new = match self.services.get(service) {
            None => true,
            Some(sd) => {
                enrichment.asn.is_some_and(|a| !sd.asns.contains_key(&a))
                    || enrichment.country.is_some_and(|c| !sd.countries.contains_key(&c))
            }
        };
        let room = !needs_new || self.data_slices() < self.config.max_slices;
        if !self.services.contains_key(service) {
            let sd = ServiceData {
                service: Tracked::new(GROUP_SLOTS),
                asns: BTreeMap::new(),
                countries: BTreeMap::new(),
            };
            self.services.insert(service.to_owned(), sd);
        }
        let Some(sd) = self.services.get_mut(service) else { return };
        f(&mut sd.service);
        if let Some(asn) = enrichment.asn {
            match sd.asns.get_mut(&asn) {
                Some(t) => f(t),
                None if room => f(sd.asns.entry(asn).or_insert_with(|| Tracked::new(1))),
                None => self.stats.slices_refused += 1,
            }
        }
        if let Some(country) = enrichment.country {
            match sd.countries.get_mut(&country) {
                Some(t) => f(t),
                None if room => f(sd.countries.entry(country).or_insert_with(|| Tracked::new(1))),
                None => self.stats.slices_refused += 1,
            }
        }
    }

    fn tracked_mut(&mut self, service: &str, part: Part) -> Option<&mut Tracked> {
        let sd = self.services.get_mut(service)?;
        match part {
            Part::Service => Some(&mut sd.service),
            Part::Asn(a) => sd.asns.get_mut(&a),
            Part::Country(c) => sd.countries.get_mut(&c),
        }
    }

    fn tracked(&self, service: &str, part: Part) -> Option<&Tracked> {
        let sd = self.services.get(service)?;
        match part {
            Part::Service => Some(&sd.service),
            Part::Asn(a) => sd.asns.get(&a),
            Part::Country(c) => sd.countries.get(&c),
        }
    }

    /// Takes in one stored failure report, received at `received_at` (collector clock).
    ///
    /// Reports whose event time is behind the watermark (the newest time seen minus
    /// [`DetectorConfig::lateness_ms`]) and reports with [`Scope::Local`] (the client's own
    /// network was down) go to the retrospective path; the rest land in their event-time
    /// bucket.
    pub fn observe_report(&mut self, report: &StoredReport, received_at: UnixMillis) {
        self.high_water_ms = self.high_water_ms.max(received_at.0);
        let event_ms = report.event_at.0.min(received_at.0);
        let client = self.client_id(report.client.as_ref(), report.net);
        let group = FailureGroup::of(&report.error_type).map_or(OTHER_GROUP, FailureGroup::index);
        let weight = u64::from(report.count.max(1)).saturating_mul(1_000_000)
            / u64::from(report.sample_ppm.clamp(1, 1_000_000));
        let bucket = self.bucket(event_ms);
        let late = event_ms < self.high_water_ms.saturating_sub(self.config.lateness_ms)
            || report.scope == Scope::Local;
        let e = &report.enrichment;
        let net = report.net.0;
        let received = received_at.0;
        if report.scope == Scope::Local {
            // The client says its own network was down: what it delivers now is a flush of
            // buffered batches, and the counts that come with it (however short the gap)
            // are not current evidence either.
            let grace_end = received.saturating_add(self.config.flush_grace_ms);
            let room = self.clients.len() < self.config.max_clients;
            match self.clients.get_mut(&client) {
                Some(entry) => entry.1 = entry.1.max(grace_end),
                None if room => {
                    self.clients.insert(client, (received, grace_end));
                }
                None => {}
            }
        }
        if late {
            self.stats.late_reports += 1;
            if self.late_entries >= self.config.max_late_entries {
                self.stats.late_dropped += 1;
                return;
            }
            let mut added = 0;
            self.for_each_part(&report.service, e, |t| {
                t.late_last_ms = received;
                let cells = t.late.entry(bucket).or_default();
                added += usize::from(!cells.contains_key(&client));
                let cell = cells.entry(client).or_default();
                cell.net = net;
                cell.asn = e.asn;
                cell.country = e.country;
                cell.reported[group] = cell.reported[group].saturating_add(weight);
            });
            self.late_entries += added;
            return;
        }
        let mut delta = Cell { net, asn: e.asn, country: e.country, ..Cell::default() };
        delta.reported[group] = weight;
        let forget = self.config.idle_evict_ms;
        self.for_each_part(&report.service, e, |t| {
            t.data.last_data_ms = received;
            if t.first_data_ms == 0 {
                t.first_data_ms = received;
            }
            t.data.note_net(net, received, false, forget);
            t.data.add(bucket, client, &delta);
        });
    }

    /// Takes in one client's success/attempt counts.
    ///
    /// Counts that arrive within [`DetectorConfig::flush_grace_ms`] of a client's first
    /// appearance, or of its return from a gap longer than [`DetectorConfig::client_gap_ms`],
    /// are partial (buffered batches being flushed, or first seals covering an unknown
    /// stretch): they mark the client active, but no window holding them counts its ratio.
    pub fn observe_targets(&mut self, targets: &StoredTargets) {
        let received = targets.received_at.0;
        self.high_water_ms = self.high_water_ms.max(received);
        let client = self.client_id(Some(&targets.client), targets.net);
        // Browser counts are dated by their own age; only agents buffer and flush.
        let nel = targets.client == nel_client_key(targets.net);
        let flushing = match self.clients.get(&client).copied() {
            _ if nel => false,
            Some((last, _)) if last.saturating_add(self.config.client_gap_ms) < received => {
                self.clients.insert(client, (received, received + self.config.flush_grace_ms));
                true
            }
            Some((_, grace_end)) => {
                self.clients.insert(client, (received, grace_end));
                received < grace_end
            }
            // Never seen (or forgotten after an idle hour): its first counts are partial, as
            // after a gap. With the table full it is not tracked, and counts as current.
            None if self.clients.len() < self.config.max_clients => {
                self.clients.insert(client, (received, received + self.config.flush_grace_ms));
                true
            }
            None => false,
        };
        let event_ms = targets.event_at.0.min(received);
        if event_ms < self.high_water_ms.saturating_sub(self.config.lateness_ms) {
            self.stats.late_targets += 1;
            return;
        }
        if flushing {
            self.stats.flushed_targets += 1;
        }
        let bucket = self.bucket(event_ms);
        let e = &targets.enrichment;
        let failures = targets.attempts.saturating_sub(targets.successes);
        let (attempts, net) = (targets.attempts, targets.net.0);
        // Flushed (or first) counts are partial: the client is active, but no window that
        // holds them is its vote (`Cell::current`), so the stretch its counts cover is always
        // a whole window of seals made on the agent's usual schedule.
        let delta = Cell {
            attempts,
            failures,
            net,
            asn: e.asn,
            country: e.country,
            partial: u32::from(flushing),
            ..Cell::default()
        };
        let forget = self.config.idle_evict_ms;
        let ok = targets.successes > 0;
        self.for_each_part(&targets.service, e, |t| {
            t.data.last_data_ms = received;
            if t.first_data_ms == 0 {
                t.first_data_ms = received;
            }
            t.data.note_net(net, received, ok, forget);
            t.data.add(bucket, client, &delta);
        });
    }

    /// Moves time to `now` and returns what changed: alerts fired, resolved, and past incidents
    /// found in late data. Evaluates once per bucket; calling it more often is cheap.
    pub fn advance(&mut self, now: UnixMillis) -> Vec<AlertEvent> {
        let now_ms = now.0;
        self.high_water_ms = self.high_water_ms.max(now_ms);
        let cur = self.bucket(now_ms);
        if self.last_eval.is_some_and(|b| cur <= b) {
            return Vec::new();
        }
        self.last_eval = Some(cur);
        self.stats.evaluations += 1;
        let from = cur.saturating_sub(self.config.window_buckets);

        let windows = self.windows(from, cur, now_ms);
        let global_ok = self.global_ok(&windows);
        let mut events = Vec::new();
        let mut candidates = self.evaluate(&windows, now_ms, cur, from, global_ok, &mut events);
        self.describe_candidates(&mut candidates, from, cur);
        arbitrate(&mut candidates, self.config.dominance);
        self.install(candidates, now_ms, &mut events);

        let mut retro = self.retro_candidates(now_ms);
        arbitrate(&mut retro, self.config.dominance);
        self.install_retro(retro, now_ms, &mut events);

        let keep_from = cur.saturating_sub(
            self.config.lateness_ms.div_ceil(self.config.bucket_ms.max(1))
                + self.config.window_buckets,
        );
        for sd in self.services.values_mut() {
            sd.service.data.drop_before(keep_from);
            sd.asns.values_mut().for_each(|t| t.data.drop_before(keep_from));
            sd.countries.values_mut().for_each(|t| t.data.drop_before(keep_from));
        }
        if now_ms >= self.last_sweep_ms.saturating_add(60_000) {
            self.last_sweep_ms = now_ms;
            self.sweep(now_ms);
        }
        events
    }

    /// Window sums of every stat slice: (service, part, per-output windows).
    /// Networks seen working by `now_ms - net_tenure_ms` (before this window, as received)
    /// count as the slices' own (`failing_nets_known`, `broken_nets_known`), and after a
    /// restore, networks seen at all by the end of its amnesty.
    fn windows(
        &mut self,
        from: u64,
        to: u64,
        now_ms: u64,
    ) -> Vec<(String, Part, Vec<SliceWindow>)> {
        let mut out = Vec::new();
        let mut nets = IdMap::default();
        if std::mem::take(&mut self.amnesty_pending) {
            self.tenure_amnesty_ms = now_ms.saturating_add(self.config.client_gap_ms);
        }
        let established = Established {
            ok_by_ms: now_ms.saturating_sub(self.config.net_tenure_ms),
            seen_by_ms: self.tenure_amnesty_ms,
        };
        for (name, sd) in &mut self.services {
            let parts = std::iter::once((Part::Service, &mut sd.service))
                .chain(sd.asns.iter_mut().map(|(a, t)| (Part::Asn(*a), t)))
                .chain(sd.countries.iter_mut().map(|(c, t)| (Part::Country(*c), t)));
            for (part, t) in parts {
                let outputs = t.states.len();
                t.data.slide(from, to);
                let (window, tenure) = (t.data.window(), t.data.tenure());
                let sums = summarise(window, outputs, &mut nets, tenure, established);
                out.push((name.clone(), part, sums));
            }
        }
        out
    }

    /// False when the whole fleet went quiet (the collector is cut off, not the clients).
    fn global_ok(&self, windows: &[(String, Part, Vec<SliceWindow>)]) -> bool {
        let mut active = 0.0;
        let mut expected = 0.0;
        for (name, part, w) in windows {
            if *part != Part::Service {
                continue;
            }
            let Some(sd) = self.services.get(name) else { continue };
            let b = &sd.service.states[0].baseline;
            if b.updates >= self.config.warmup_windows {
                expected += b.active_clients;
                active += f64::from(w[0].active_clients);
            }
        }
        expected < self.config.min_silence_clients
            || active >= self.config.global_min_ratio * expected
    }

    fn evaluate(
        &mut self,
        windows: &[(String, Part, Vec<SliceWindow>)],
        now_ms: u64,
        cur: u64,
        from: u64,
        global_ok: bool,
        events: &mut Vec<AlertEvent>,
    ) -> Vec<Candidate> {
        let cfg = self.config.clone();
        let mut candidates = Vec::new();
        let mut resolved = Vec::new();
        // The service slice's verdict, seen before its children (windows list it first).
        // Its name, failure score, whether it fires, and whether it is a candidate in this
        // evaluation (held or not).
        let mut parent: Option<(String, f64, bool, bool)> = None;
        for (name, part, ws) in windows {
            let Some(t) = self.tracked_mut(name, *part) else { continue };
            // One series point per output (the slice, and a service's failure groups).
            for (state, w) in t.states.iter_mut().zip(ws) {
                let b = &state.baseline;
                let point = SeriesPoint {
                    t_ms: (cur + 1) * cfg.bucket_ms,
                    active_clients: w.active_clients,
                    failing_clients: w.failing_clients,
                    failure_ratio: (w.clients.n > 0).then_some(w.clients.mean() as f32),
                    baseline_ratio: (b.clients.weight > 0).then_some(b.clients.mean as f32),
                };
                if state.history.len() >= HISTORY_POINTS {
                    state.history.pop_front();
                }
                state.history.push_back(point);
            }
            let full_window = cfg.window_buckets * cfg.bucket_ms;
            if t.first_data_ms == 0 || now_ms < t.first_data_ms.saturating_add(full_window) {
                continue;
            }
            for (index, (state, w)) in t.states.iter_mut().zip(ws).enumerate() {
                let is_service = *part == Part::Service && index == 0;
                let verdict = judge_window(
                    &cfg,
                    &state.baseline,
                    w,
                    now_ms,
                    global_ok && index == 0,
                    *part != Part::Service,
                );
                if is_service {
                    parent =
                        Some((name.clone(), verdict.failure_score, state.alert.is_some(), false));
                }
                if let Some(alert) = &mut state.alert {
                    let (quiet, excess) = match alert.kind {
                        AlertKind::Silence => (
                            f64::from(w.active_clients)
                                >= cfg.silence_resolve_ratio * state.baseline.active_clients,
                            state.baseline.active_clients - f64::from(w.active_clients),
                        ),
                        _ => (verdict.failure_score < cfg.resolve_score, verdict.excess_clients),
                    };
                    state.excess = excess;
                    if quiet {
                        state.quiet += 1;
                    } else {
                        state.quiet = 0;
                        if alert.kind == AlertKind::Failures {
                            alert.clients = alert.clients.max(u64::from(w.failing_clients));
                            alert.networks = alert.networks.max(u64::from(w.failing_nets));
                        }
                    }
                    if state.quiet >= cfg.resolve_after {
                        let end_bucket = (cur + 1)
                            .saturating_sub(u64::from(cfg.resolve_after))
                            .saturating_sub(cfg.window_buckets);
                        alert.state = AlertState::Resolved;
                        alert.end_ms = Some((end_bucket * cfg.bucket_ms).max(alert.start_ms));
                        events.push(AlertEvent::Resolved(alert.clone()));
                        // The incident it belongs to (itself when it paged) stays open for
                        // the cool-down.
                        let incident = alert.inhibited_by.unwrap_or(alert.id);
                        let until = now_ms.saturating_add(cfg.incident_cooldown_ms);
                        let head = alert.inhibited_by.is_none().then(|| breadth(&alert.slice.dim));
                        resolved.push((name.clone(), alert.kind, incident, until, head));
                        state.alert = None;
                        state.quiet = 0;
                    } else if !is_service && index == 0 {
                        // A firing child still explains part of its parent's excess.
                        let mut c = Candidate::from_alert(alert, *part, excess);
                        c.firing = true;
                        candidates.push(c);
                    }
                    continue;
                }
                let warm = state.baseline.updates >= cfg.warmup_windows;
                let b = &state.baseline;
                let candidate = if warm && verdict.failure_fires {
                    Some((AlertKind::Failures, verdict.failure_score, verdict.excess_clients))
                } else if warm && verdict.silence_score >= cfg.fire_score {
                    let missing = b.active_clients - f64::from(w.active_clients);
                    Some((AlertKind::Silence, verdict.silence_score, missing))
                } else {
                    None
                };
                // Who pages first decides the localisation, so close calls wait a little:
                // - a child waits up to HOLD evaluations while its service is elevated but not
                //   firing yet (the service-wide alert usually follows and should page alone);
                // - a failure-group child waits one evaluation in any case (its baseline is
                //   small, so it often crosses first in a service-wide incident);
                // - a service waits one evaluation, so a child that explains it (one ASN, say)
                //   can become a candidate too.
                let parent_quiet =
                    parent.as_ref().is_some_and(|(p, _, firing, _)| p == name && !firing);
                let parent_rising = parent.as_ref().is_some_and(|(p, score, firing, _)| {
                    p == name && !firing && *score >= cfg.resolve_score / 2.0
                });
                if is_service && let Some(p) = parent.as_mut() {
                    p.3 = candidate.is_some();
                }
                // A failure group never pages in an evaluation where its own service is a
                // candidate: the service (held one evaluation for arbitration) pages next and
                // the group joins it. A group's baseline is smaller, so it crosses first in a
                // service-wide outage, and its hold ran out just as the service crossed
                // (spikebench seeds 111, 112: a small service's outage paged `tiny/group=tcp`
                // one evaluation before `tiny`).
                let service_pending =
                    index > 0 && parent.as_ref().is_some_and(|(p, _, _, cand)| p == name && *cand);
                let hold_limit = match candidate {
                    None => 0,
                    Some(_) if is_service => 1,
                    Some(_) if service_pending => state.held.max(HOLD) + 1,
                    Some(_) if parent_rising => HOLD,
                    Some(_) if index > 0 && parent_quiet => 1,
                    Some(_) => 0,
                };
                let held = state.held < hold_limit;
                state.held = if held { state.held + 1 } else { 0 };
                let Some((kind, score, excess)) = candidate else {
                    // Learn when the fleet reports, from windows that look normal. While
                    // warming up, learn from everything (a young baseline makes normal windows
                    // look odd, and skipping them would never let it grow up); an oddity that
                    // lasts an hour without firing is the new normal. "Odd" starts at the
                    // resolve score, not the fire score: an incident still below the evidence
                    // floors (few clients yet, a slow gray failure) must not be learned while
                    // it builds up (spikebench: gray-failure recall 7/8 -> 8/8).
                    // Keys failing behind few networks (the per-client test alone) are odd too:
                    // an attacker's burst is neither paged nor learned.
                    // Odd against the long reference (a slow burn building up) is odd too,
                    // and the long reference itself learns only what it finds normal (or,
                    // after SLOW_FREEZE_LIMIT, a lasting new normal).
                    let slow_odd = verdict.slow_score >= cfg.resolve_score;
                    if !warm || !slow_odd {
                        state.slow_frozen = 0;
                        if global_ok {
                            state.baseline.update_slow(w, cfg.slow_alpha);
                        }
                    } else if state.slow_frozen >= SLOW_FREEZE_LIMIT {
                        if global_ok {
                            state.baseline.update_slow(w, cfg.slow_alpha);
                        }
                    } else {
                        state.slow_frozen += 1;
                    }
                    let odd = verdict.failure_score >= cfg.resolve_score
                        || verdict.client_score >= cfg.resolve_score
                        || verdict.small_score >= cfg.resolve_score
                        || slow_odd;
                    if odd && warm && state.frozen < FREEZE_LIMIT {
                        state.frozen += 1;
                    } else if global_ok {
                        state.frozen = 0;
                        let learn_broken = verdict.small_score < BROKEN_ODD_SCORE;
                        state.baseline.update(w, now_ms, cfg.baseline_alpha, learn_broken);
                    }
                    continue;
                };
                let silence = kind == AlertKind::Silence;
                candidates.push(Candidate {
                    service: name.clone(),
                    part: *part,
                    index,
                    kind,
                    score,
                    excess,
                    observed_ratio: if silence { 0.0 } else { verdict.observed },
                    baseline_ratio: if silence { 0.0 } else { verdict.expected },
                    clients: u64::from(if silence { w.active_clients } else { w.failing_clients }),
                    networks: u64::from(if silence { w.active_nets } else { w.failing_nets }),
                    active: if silence {
                        b.active_clients.round() as u64
                    } else {
                        u64::from(w.active_clients)
                    },
                    start_bucket: from,
                    end_bucket: None,
                    desc: Description::default(),
                    deferred: false,
                    // A held candidate explains its parent's excess but does not fire yet.
                    firing: held,
                });
            }
        }
        self.recent_incidents.retain(|(_, _, _, until, _)| *until >= now_ms);
        self.recent_incidents.extend(resolved);
        while self.recent_incidents.len() > RECENT_INCIDENTS {
            self.recent_incidents.pop_front();
        }
        candidates
    }

    fn describe_candidates(&mut self, candidates: &mut [Candidate], from: u64, to: u64) {
        let mut scratch = std::mem::take(&mut self.scratch);
        for c in candidates.iter_mut().filter(|c| c.desc.top_countries.is_empty()) {
            if let Some(t) = self.tracked(&c.service, c.part) {
                t.data.merge_window(from, to, &mut scratch);
                c.desc = describe(&scratch, c.index);
            }
        }
        self.scratch = scratch;
    }

    fn remember(&mut self, id: AlertId) -> bool {
        if !self.recent_set.insert(id) {
            return false;
        }
        self.recent_ids.push_back(id);
        if self.recent_ids.len() > RECENT_IDS
            && let Some(old) = self.recent_ids.pop_front()
        {
            self.recent_set.remove(&old);
        }
        true
    }

    /// Turns surviving candidates into firing alerts, widest slices first (the service, its
    /// failure groups, countries, ASNs), so a service alert inhibits the child alerts raised
    /// with it. A new alert joins the incident of its service and kind (raised inhibited by
    /// its head), unless it is wider than the head and explains more of the excess than the
    /// head does now (the head explains less than half of it, so most of it is elsewhere):
    /// then it heads the incident and notifies as its update
    /// ([`Alert::supersedes`]); it survived arbitration, so no child explains it.
    fn install(
        &mut self,
        mut candidates: Vec<Candidate>,
        now_ms: u64,
        events: &mut Vec<AlertEvent>,
    ) {
        // What the firing child alerts explain now (their current excess).
        let firing_excess: Vec<(SliceKey, AlertKind, f64)> =
            candidates.iter().filter(|c| c.firing).map(|c| (c.key(), c.kind, c.excess)).collect();
        candidates.retain(|c| !c.deferred && !c.firing);
        candidates.sort_by_key(|c| (c.part.breadth(), c.index, c.part));
        for c in candidates {
            let key = c.key();
            let id = AlertId::derive(&key, c.kind, c.start_bucket);
            if !self.remember(id) {
                continue;
            }
            let parent = if key.dim == SliceDim::Service {
                None
            } else {
                self.services
                    .get(&c.service)
                    .and_then(|sd| sd.service.states[0].alert.as_ref())
                    .map(|a| a.id)
                    .or_else(|| self.network_silence(&c))
            };
            let mut supersedes = None;
            let inhibited_by = match parent {
                Some(p) => Some(p),
                None => match self.incident_of(&c, now_ms) {
                    // A failure group is a breakdown of its service by error type, not a
                    // narrower set of clients: when a group paged first (its ratio left a
                    // lower baseline sooner), the service's own alert heads the incident.
                    Some((head, _))
                        if key.dim == SliceDim::Service && self.is_group_alert(head) =>
                    {
                        supersedes = Some(head);
                        None
                    }
                    Some((head, Some(head_breadth))) if head_breadth > c.part.breadth() => {
                        let head_excess = self
                            .firing()
                            .into_iter()
                            .find(|a| a.id == head)
                            .and_then(|a| {
                                firing_excess
                                    .iter()
                                    .find(|(k, kind, _)| *k == a.slice && *kind == a.kind)
                            })
                            .map_or(0.0, |f| f.2);
                        if head_excess < MOST * c.excess {
                            supersedes = Some(head);
                            None
                        } else {
                            Some(head)
                        }
                    }
                    Some((head, _)) => {
                        // Once the head resolved, the incident's alerts still firing (held
                        // back, never notified) must explain most of this one's excess, or it
                        // is another outage: a weak alert lingering in an old incident (a
                        // group slice left above a stale baseline after a slow burn,
                        // spikebench seed 106) must not absorb a region outage hours later.
                        // With the head firing it joins (a region's ASNs fire one after the
                        // other, each bigger than the last); with nothing firing (the
                        // cool-down: an outage flapping) it joins.
                        let (head_firing, firing, explained) =
                            self.incident_excess(&c.service, c.kind, head);
                        if !head_firing && firing && explained < MOST * c.excess {
                            None
                        } else {
                            Some(head)
                        }
                    }
                    None => None,
                },
            };
            let mut alert = alert_from(&c, key, id, now_ms, self.config.bucket_ms, inhibited_by);
            alert.supersedes = supersedes;
            let regrouped = match supersedes {
                Some(old) => self.rehead(&c.service, c.kind, old, id, c.part.breadth()),
                None => Vec::new(),
            };
            let Some(t) = self.tracked_mut(&c.service, c.part) else { continue };
            if let Some(state) = t.states.get_mut(c.index) {
                state.alert = Some(alert.clone());
                state.excess = c.excess;
                state.quiet = 0;
                events.push(AlertEvent::Fired(alert));
            }
            // The take-over first, then what it regrouped: each its own event, so a reader
            // of events alone (the store, the dashboard's recent list) knows at once that
            // the old head notifies no more.
            events.extend(regrouped.into_iter().map(AlertEvent::Regrouped));
        }
    }

    /// A silent network is silent for every service: the firing silence alert of the same ASN
    /// in another service (the first one raised pages; the others are grouped under it).
    fn network_silence(&self, c: &Candidate) -> Option<AlertId> {
        let Part::Asn(asn) = c.part else { return None };
        if c.kind != AlertKind::Silence {
            return None;
        }
        self.services
            .iter()
            .filter(|(name, _)| **name != c.service)
            .filter_map(|(_, sd)| sd.asns.get(&asn)?.states[0].alert.as_ref())
            .find(|a| a.kind == AlertKind::Silence && a.inhibited_by.is_none())
            .map(|a| a.id)
    }

    /// Judges late data that has settled: spans of late failing clients far above what the
    /// baseline expects become retrospective candidates.
    fn retro_candidates(&mut self, now_ms: u64) -> Vec<Candidate> {
        let cfg = self.config.clone();
        let mut out = Vec::new();
        let mut freed = 0;
        for (name, sd) in self.services.iter_mut() {
            let parts = std::iter::once((Part::Service, &mut sd.service))
                .chain(sd.asns.iter_mut().map(|(a, t)| (Part::Asn(*a), t)))
                .chain(sd.countries.iter_mut().map(|(c, t)| (Part::Country(*c), t)));
            for (part, t) in parts {
                if t.late.is_empty() || t.late_last_ms.saturating_add(cfg.retro_settle_ms) > now_ms
                {
                    continue;
                }
                freed += t.late_cells();
                let late = std::mem::take(&mut t.late);
                let b = &t.states[0].baseline;
                if b.updates < cfg.warmup_windows {
                    continue;
                }
                for span in spans(&late, cfg.retro_gap_buckets) {
                    if let Some(c) = judge_span(&cfg, name, part, b, &late, span) {
                        out.push(c);
                    }
                }
            }
        }
        self.late_entries = self.late_entries.saturating_sub(freed);
        out
    }

    fn install_retro(
        &mut self,
        mut retro: Vec<Candidate>,
        now_ms: u64,
        events: &mut Vec<AlertEvent>,
    ) {
        retro.retain(|c| !c.deferred);
        retro.sort_by_key(|c| (c.part != Part::Service, c.part));
        // Service retrospectives inhibit overlapping child retrospectives of the same service;
        // an ASN's first retrospective inhibits the same ASN's in other services.
        let mut parents: Vec<(String, u64, u64, AlertId)> = Vec::new();

        for c in retro {
            let key = c.key();
            let id = AlertId::derive(&key, c.kind, c.start_bucket);
            if !self.remember(id) {
                continue;
            }
            let end = c.end_bucket.unwrap_or(c.start_bucket);
            let overlaps = |a: u64, b: u64| a <= end && c.start_bucket <= b;
            let inhibited_by = parents
                .iter()
                .find(|(s, a, b, _)| *s == c.service && overlaps(*a, *b))
                .map(|p| p.3)
                .or_else(|| match c.part {
                    Part::Asn(asn) => self
                        .recent_network_retro
                        .iter()
                        .find(|(n, a, b, _)| *n == asn && overlaps(*a, *b))
                        .map(|p| p.3),
                    _ => None,
                });
            match c.part {
                Part::Service => parents.push((c.service.clone(), c.start_bucket, end, id)),
                Part::Asn(asn) if inhibited_by.is_none() => {
                    self.recent_network_retro.push_back((asn, c.start_bucket, end, id));
                    if self.recent_network_retro.len() > RECENT_NETWORK_RETRO {
                        self.recent_network_retro.pop_front();
                    }
                }
                _ => {}
            }
            events.push(AlertEvent::Retrospective(alert_from(
                &c,
                key,
                id,
                now_ms,
                self.config.bucket_ms,
                inhibited_by,
            )));
        }
    }

    /// Evicts idle slices (never one with a firing alert or pending late data) and clients.
    fn sweep(&mut self, now_ms: u64) {
        let idle = self.config.idle_evict_ms;
        let mut evicted = 0u64;
        let gone = |t: &Tracked| {
            !t.firing()
                && t.data.is_empty()
                && t.late.is_empty()
                && t.data.last_data_ms.saturating_add(idle) < now_ms
        };
        self.services.retain(|_, sd| {
            let before = sd.asns.len() + sd.countries.len();
            sd.asns.retain(|_, t| !gone(t));
            sd.countries.retain(|_, t| !gone(t));
            let forget_before = now_ms.saturating_sub(idle);
            sd.service.data.forget_nets(forget_before);
            sd.asns.values_mut().for_each(|t| t.data.forget_nets(forget_before));
            sd.countries.values_mut().for_each(|t| t.data.forget_nets(forget_before));
            evicted += (before - sd.asns.len() - sd.countries.len()) as u64;
            let keep = !(gone(&sd.service) && sd.asns.is_empty() && sd.countries.is_empty());
            evicted += u64::from(!keep);
            keep
        });
        self.stats.slices_evicted += evicted;
        let gap = self.config.client_gap_ms.max(idle);
        self.clients.retain(|_, (last, _)| last.saturating_add(gap) >= now_ms);
    }

    /// Alerts currently firing (including inhibited ones), service slices first.
    pub fn firing(&self) -> Vec<&Alert> {
        let mut out = Vec::new();
        for sd in self.services.values() {
            let all =
                std::iter::once(&sd.service).chain(sd.asns.values()).chain(sd.countries.values());
            for t in all {
                out.extend(t.states.iter().filter_map(|s| s.alert.as_ref()));
            }
        }
        out
    }

    /// Sizes and counters, for metrics.
    pub fn stats(&self) -> DetectorStats {
        let mut s = self.stats.clone();
        s.data_slices = self.data_slices();
        s.slices =
            self.services.values().map(|sd| GROUP_SLOTS + sd.asns.len() + sd.countries.len()).sum();
        s.clients_tracked = self.clients.len();
        s.firing = self.firing().len();
        s
    }

    /// The baseline mean per-client failure ratio and active clients of `slice`, if tracked
    /// (for dashboards and tests).
    pub fn baseline(&self, slice: &SliceKey) -> Option<(f64, f64)> {
        let sd = self.services.get(&slice.service)?;
        let state = match &slice.dim {
            SliceDim::Service => sd.service.states.first(),
            SliceDim::Group(g) => sd.service.states.get(g.index() + 1),
            SliceDim::Asn(a) => sd.asns.get(a).and_then(|t| t.states.first()),
            SliceDim::Country(c) => {
                Country::parse(c).and_then(|c| sd.countries.get(&c)).and_then(|t| t.states.first())
            }
        }?;
        Some((state.baseline.clients.mean, state.baseline.active_clients))
    }

    fn tracked_by_key(&self, slice: &SliceKey) -> Option<&Tracked> {
        let part = match &slice.dim {
            SliceDim::Service | SliceDim::Group(_) => Part::Service,
            SliceDim::Asn(a) => Part::Asn(*a),
            SliceDim::Country(c) => Part::Country(Country::parse(c)?),
        };
        self.tracked(&slice.service, part)
    }

    /// The state of `slice` (a service's failure group is one of the service's outputs).
    fn state_by_key(&self, slice: &SliceKey) -> Option<&SliceState> {
        let index = match &slice.dim {
            SliceDim::Group(g) => g.index() + 1,
            _ => 0,
        };
        self.tracked_by_key(slice)?.states.get(index)
    }

    /// What a restart must not forget: every slice's baseline, the firing alerts and the
    /// alert ids already raised. Bucket contents are left out (they are minutes of data).
    pub fn snapshot(&self, now: UnixMillis) -> DetectorSnapshot {
        let mut baselines = Vec::new();
        for (name, sd) in &self.services {
            let parts = std::iter::once((Part::Service, &sd.service))
                .chain(sd.asns.iter().map(|(a, t)| (Part::Asn(*a), t)))
                .chain(sd.countries.iter().map(|(c, t)| (Part::Country(*c), t)));
            for (part, t) in parts {
                for (index, state) in t.states.iter().enumerate() {
                    if state.baseline.updates > 0 {
                        baselines.push((part.key(name, index), state.baseline.clone()));
                    }
                }
            }
        }
        DetectorSnapshot {
            taken_at_ms: now.0,
            config_bucket_ms: self.config.bucket_ms,
            baselines,
            firing: self.firing().into_iter().cloned().collect(),
            recent_ids: self.recent_ids.iter().copied().collect(),
        }
    }

    /// Restores a [`Detector::snapshot`] into a fresh detector: baselines go back to their
    /// slices, firing alerts keep firing (and resolve when their slice is quiet again), and
    /// ids already raised are not raised again. A snapshot taken with another bucket length
    /// restores only the firing alerts and ids (its baselines measured other windows).
    pub fn restore(&mut self, snapshot: DetectorSnapshot) {
        let same_buckets = snapshot.config_bucket_ms == self.config.bucket_ms;
        // The slices' networks are not in the snapshot: the ones that report within a report
        // interval or two of the restart count as established, as they were before it.
        self.amnesty_pending = true;
        for id in snapshot.recent_ids {
            self.remember(id);
        }
        self.high_water_ms = self.high_water_ms.max(snapshot.taken_at_ms);
        if same_buckets {
            for (key, baseline) in snapshot.baselines {
                if let Some(state) = self.state_for(&key) {
                    state.baseline = baseline;
                }
            }
        }
        for alert in snapshot.firing {
            self.remember(alert.id);
            if let Some(state) = self.state_for(&alert.slice) {
                state.alert = Some(alert);
                state.quiet = 0;
            }
        }
        // Restored slices count as having had data when the snapshot was taken, so the idle
        // sweep keeps them until their data comes back (ASN and country slices were evicted
        // by the first sweep when no report of theirs arrived in the first second).
        for sd in self.services.values_mut() {
            let all = std::iter::once(&mut sd.service)
                .chain(sd.asns.values_mut())
                .chain(sd.countries.values_mut());
            for t in all {
                t.data.last_data_ms = t.data.last_data_ms.max(snapshot.taken_at_ms);
            }
        }
    }

    /// The state of `key`, creating its data slice (under the cap) as needed.
    fn state_for(&mut self, key: &SliceKey) -> Option<&mut SliceState> {
        let mut enrichment = Enrichment::default();
        let index = match &key.dim {
            SliceDim::Service => 0,
            SliceDim::Group(g) => g.index() + 1,
            SliceDim::Asn(a) => {
                enrichment.asn = Some(*a);
                0
            }
            SliceDim::Country(c) => {
                enrichment.country = Some(Country::parse(c)?);
                0
            }
        };
        self.for_each_part(&key.service, &enrichment, |_| {});
        let part = match &key.dim {
            SliceDim::Service | SliceDim::Group(_) => Part::Service,
            SliceDim::Asn(a) => Part::Asn(*a),
            SliceDim::Country(c) => Part::Country(Country::parse(c)?),
        };
        self.tracked_mut(&key.service, part)?.states.get_mut(index)
    }

    /// The evaluated windows of a data slice (service, ASN or country; not a failure group),
    /// oldest first, up to the last hour; `None` when the slice is not tracked.
    pub fn series(&self, slice: &SliceKey) -> Option<Vec<SeriesPoint>> {
        Some(self.state_by_key(slice)?.history.iter().copied().collect())
    }

    /// The latest evaluated window of every tracked data slice, with the id of the alert
    /// firing on that exact slice (for heat maps). Slices not evaluated yet are left out.
    pub fn latest(&self) -> Vec<(SliceKey, SeriesPoint, Option<AlertId>)> {
        let mut out = Vec::new();
        for (name, sd) in &self.services {
            let parts = std::iter::once((Part::Service, &sd.service))
                .chain(sd.asns.iter().map(|(a, t)| (Part::Asn(*a), t)))
                .chain(sd.countries.iter().map(|(c, t)| (Part::Country(*c), t)));
            for (part, t) in parts {
                let Some(point) = t.states.first().and_then(|s| s.history.back()) else {
                    continue;
                };
                let alert = t.states.first().and_then(|s| s.alert.as_ref()).map(|a| a.id);
                out.push((part.key(name, 0), *point, alert));
            }
        }
        out
    }
}
