//! Spike detection: a pure function of injected time and counts.
//!
//! The [`Detector`] is fed what the collector stored ([`Detector::observe_report`],
//! [`Detector::observe_targets`]) and is told the time ([`Detector::advance`]); it reads no
//! clock, does no I/O and draws no random numbers, so a recorded stream replays to the same
//! alerts, and spikebench (in `vantage-tests`) drives it with simulated weeks.
//!
//! ```text
//!  StoredReport ──scope=local or event_at < watermark──▶ late store (per slice, event buckets)
//!       │ on time                                              │ settled (no late data for 60 s)
//!       ▼                                                      ▼
//!  10 s event-time buckets per slice: client ─▶ Cell      spans ─▶ Poisson vs baseline
//!  (attempts, failures, reported per group, /24 tag)           ─▶ Retrospective alert (no page)
//!       ▲
//!  StoredTargets (a client back from a long gap: its counts are a flush, not "now")
//!
//!  advance(now), once per bucket:
//!    window = last 4 buckets, merged per client (one vote per client), then per /24
//!    failure test: mean per-client ratio and mean per-network ratio vs baseline (quasi-binomial,
//!       overdispersion learned), or failing networks vs baseline (Poisson) without counts
//!    floors: >= 5 failing clients on >= 3 networks, and >= 20 failing networks or >= 5% of the
//!       slice's active clients, above what the baseline expects
//!    silence test: active clients far below baseline while the rest of the fleet reports
//!    arbitration: a parent defers to one ASN (or <= 2 countries) that explain its excess;
//!       a firing service alert inhibits its child slices
//!    lifecycle: Fired ─▶ (quiet for 3 evaluations) ─▶ Resolved; baselines learn quiet windows
//! ```
//!
//! Slices are the service, service x failure group (dns, tcp, tls, http), service x ASN and
//! service x country. Memory is bounded: at most [`DetectorConfig::max_slices`] tracked slices
//! (services always fit), idle slices are evicted, per-client state is capped, and the late
//! store is capped; [`DetectorStats`] counts what was refused, evicted or dropped.
//!
//! ## Example
//!
//! ```
//! use vantage_agent::report::UnixMillis;
//! use vantage_collector::detect::{Detector, DetectorConfig};
//!
//! let mut detector = Detector::new(DetectorConfig::default());
//! // ... observe_report / observe_targets for what the store accepted ...
//! let events = detector.advance(UnixMillis(1_700_000_000_000));
//! assert!(events.is_empty());
//! assert_eq!(detector.stats().slices, 0);
//! ```

mod alert;
mod baseline;
mod slice;
mod stats;
mod window;

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use vantage_agent::report::UnixMillis;
use vantage_agent::taxonomy::Scope;

use crate::model::{Country, Enrichment, NetTag, StoredReport, StoredTargets};

pub use alert::{Alert, AlertEvent, AlertId, AlertKind, AlertState};
pub use slice::{FailureGroup, SliceDim, SliceKey};

use baseline::Baseline;
use slice::OTHER_GROUP;
use stats::{IdMap, fnv1a64, normal_upper_score, poisson_lower_score, poisson_upper_score};
use window::{Cell, DataSlice, Description, GROUP_SLOTS, SliceWindow, describe, summarise};

/// Tuning of the detector. Every field has a default (see [`DetectorConfig::default`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectorConfig {
    /// Bucket length in ms. Default 10 000.
    pub bucket_ms: u64,
    /// Buckets per evaluation window. Default 4 (40 s: one report interval of 30 s plus slack).
    pub window_buckets: u64,
    /// Data whose event time is this far behind the newest time seen is late: it goes to the
    /// retrospective path, never to a current page. Default 60 000.
    pub lateness_ms: u64,
    /// Evidence (`-ln p`) needed to fire. Default 24.5 (z = 7).
    pub fire_score: f64,
    /// Evidence below which a window counts as quiet. Default 4.5 (z = 3).
    pub resolve_score: f64,
    /// Consecutive quiet evaluations that resolve an alert. Default 3.
    pub resolve_after: u32,
    /// Smallest rise of the mean failure ratio (absolute) that can fire. Default 0.003.
    pub min_effect: f64,
    /// Floor of the per-unit ratio variance, so a slice that never failed still has noise.
    /// Default 1e-4.
    pub min_unit_variance: f64,
    /// Failing clients (and clients above the baseline) needed to fire. Default 5.
    pub min_clients: u32,
    /// Failing networks (and networks above the baseline) needed to fire. Default 3.
    pub min_networks: u32,
    /// Failing networks above the baseline that fire on their own. Default 20.
    pub min_networks_alone: u32,
    /// Share of the slice's active clients failing above the baseline that fires (with the
    /// other floors). Default 0.05.
    pub min_client_share: f64,
    /// In count mode (no attempt counts), failing networks must be this many times the
    /// baseline. Default 3.
    pub count_min_factor: f64,
    /// Quiet windows a slice must learn before it can fire. Default 60 (10 minutes).
    pub warmup_windows: u32,
    /// EWMA weight of each quiet window in the baseline. Default 1/180 (30 minutes).
    pub baseline_alpha: f64,
    /// Silence fires when active clients fall below this share of the baseline. Default 0.25.
    pub silence_ratio: f64,
    /// A silence alert resolves when active clients are back above this share. Default 0.5.
    pub silence_resolve_ratio: f64,
    /// Baseline active clients a slice needs for silence detection. Default 20.
    pub min_silence_clients: f64,
    /// Baseline active networks a slice needs for silence detection. Default 10.
    pub min_silence_networks: f64,
    /// When the whole fleet's active clients fall below this share of their baseline (the
    /// collector is cut off, not the clients), silence does not fire and baselines freeze.
    /// Default 0.5.
    pub global_min_ratio: f64,
    /// A client whose previous counts are older than this is back from a gap. Default 120 000.
    pub client_gap_ms: u64,
    /// After a gap, a client's counts for this long are a flush of buffered batches and are
    /// not current evidence. Default 30 000.
    pub flush_grace_ms: u64,
    /// Late data of a slice is judged once none has arrived for this long. Default 60 000.
    pub retro_settle_ms: u64,
    /// Empty buckets that split late data into separate spans. Default 6.
    pub retro_gap_buckets: u64,
    /// Late failing clients must be this many times the baseline to raise a retrospective
    /// alert. Default 3.
    pub retro_min_factor: f64,
    /// Share of a parent slice's excess that one child must explain for the parent to defer
    /// to it. Default 0.7.
    pub dominance: f64,
    /// Tracked data slices (service, service x ASN, service x country). Services are always
    /// tracked; ASN and country slices beyond the cap are refused. Default 10 000.
    pub max_slices: usize,
    /// Slices without data for this long are evicted. Default 3 600 000.
    pub idle_evict_ms: u64,
    /// Clients whose last-seen time is kept (for gap detection). Default 1 000 000.
    pub max_clients: usize,
    /// Late cells kept before new late data is dropped. Default 2 000 000.
    pub max_late_entries: usize,
    /// Keys the client-id hash, so nobody can aim keys at one hash bucket. Default 0; set a
    /// secret value in production.
    pub hash_seed: u64,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            bucket_ms: 10_000,
            window_buckets: 4,
            lateness_ms: 60_000,
            fire_score: 24.5,
            resolve_score: 4.5,
            resolve_after: 3,
            min_effect: 0.003,
            min_unit_variance: 1e-4,
            min_clients: 5,
            min_networks: 3,
            min_networks_alone: 20,
            min_client_share: 0.05,
            count_min_factor: 3.0,
            warmup_windows: 60,
            baseline_alpha: 1.0 / 180.0,
            silence_ratio: 0.25,
            silence_resolve_ratio: 0.5,
            min_silence_clients: 20.0,
            min_silence_networks: 10.0,
            global_min_ratio: 0.5,
            client_gap_ms: 120_000,
            flush_grace_ms: 30_000,
            retro_settle_ms: 60_000,
            retro_gap_buckets: 6,
            retro_min_factor: 3.0,
            dominance: 0.7,
            max_slices: 10_000,
            idle_evict_ms: 3_600_000,
            max_clients: 1_000_000,
            max_late_entries: 2_000_000,
            hash_seed: 0,
        }
    }
}

/// Counters and sizes, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorStats {
    /// Slices with a baseline (service, groups, ASNs, countries).
    pub slices: usize,
    /// Tracked data slices (service, service x ASN, service x country).
    pub data_slices: usize,
    /// The cap on data slices ([`DetectorConfig::max_slices`]).
    pub slice_cap: usize,
    /// ASN or country slices not created because of the cap.
    pub slices_refused: u64,
    /// Slices evicted after being idle.
    pub slices_evicted: u64,
    /// Clients whose last-seen time is kept.
    pub clients_tracked: usize,
    /// Reports routed to the retrospective path (late or local scope).
    pub late_reports: u64,
    /// Late reports dropped because the late store was full.
    pub late_dropped: u64,
    /// Target counts too late for any current window (ignored).
    pub late_targets: u64,
    /// Target counts from a client's flush after a gap (not current evidence).
    pub flushed_targets: u64,
    /// Evaluations run (one per bucket).
    pub evaluations: u64,
    /// Alerts currently firing (inhibited ones included).
    pub firing: usize,
}

/// One slice with a baseline and at most one firing alert.
#[derive(Debug, Default)]
struct SliceState {
    baseline: Baseline,
    alert: Option<Alert>,
    quiet: u32,
    /// Consecutive odd windows not learned from.
    frozen: u32,
    /// Consecutive evaluations a candidate waited for its rising parent.
    held: u32,
}

/// Evaluations a child candidate waits for its rising service-wide parent.
const HOLD: u32 = 2;

/// Odd windows a baseline skips before it learns them anyway: one hour of 10 s windows.
const FREEZE_LIMIT: u32 = 360;

/// A late failure report's contribution to one bucket of one slice.
#[derive(Clone, Copy, Debug, Default)]
struct LateCell {
    net: u64,
    asn: Option<u32>,
    country: Option<Country>,
    reported: [u64; GROUP_SLOTS],
}

/// A data slice with its state: buckets, late store, and its stat slices' states (one for an
/// ASN or country; five for a service: itself and the four failure groups).
#[derive(Debug)]
struct Tracked {
    data: DataSlice,
    late: BTreeMap<u64, IdMap<u64, LateCell>>,
    late_last_ms: u64,
    states: Vec<SliceState>,
    /// One point per evaluation, newest last, at most [`HISTORY_POINTS`].
    history: VecDeque<SeriesPoint>,
    /// When the slice's first current data arrived (0: none yet). Until a whole window has
    /// passed since, its windows are partial (quick failure reports, not yet the slower success
    /// counts), so they are neither judged nor learned from.
    first_data_ms: u64,
}

/// What [`Detector::snapshot`] saves and [`Detector::restore`] reads back (serde; the
/// collector keeps it in its store).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DetectorSnapshot {
    /// When it was taken (detector time).
    pub taken_at_ms: u64,
    /// The bucket length the baselines were learned with.
    pub config_bucket_ms: u64,
    baselines: Vec<(SliceKey, Baseline)>,
    /// Alerts firing when it was taken.
    pub firing: Vec<Alert>,
    recent_ids: Vec<AlertId>,
}

/// Evaluations kept per data slice for [`Detector::series`]: one hour of 10 s buckets.
const HISTORY_POINTS: usize = 360;

/// One evaluated window of one data slice, for dashboards ([`Detector::series`],
/// [`Detector::latest`]).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// End of the window (ms since the epoch, collector clock).
    pub t_ms: u64,
    /// Distinct clients with any data in the window.
    pub active_clients: u32,
    /// Distinct clients with a failure in the window.
    pub failing_clients: u32,
    /// Mean per-client failure ratio; `None` when no client sent attempt counts.
    pub failure_ratio: Option<f32>,
    /// The baseline's mean per-client failure ratio; `None` while it has learned nothing.
    pub baseline_ratio: Option<f32>,
}

impl Tracked {
    fn new(outputs: usize) -> Tracked {
        Tracked {
            data: DataSlice::default(),
            late: BTreeMap::new(),
            late_last_ms: 0,
            states: (0..outputs).map(|_| SliceState::default()).collect(),
            history: VecDeque::new(),
            first_data_ms: 0,
        }
    }

    fn firing(&self) -> bool {
        self.states.iter().any(|s| s.alert.is_some())
    }

    fn late_cells(&self) -> usize {
        self.late.values().map(|m| m.len()).sum()
    }
}

/// Everything tracked for one service.
#[derive(Debug)]
struct ServiceData {
    service: Tracked,
    asns: BTreeMap<u32, Tracked>,
    countries: BTreeMap<Country, Tracked>,
}

/// Which data slice of a service, without the service name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Service,
    Asn(u32),
    Country(Country),
}

impl Part {
    /// The slice key of output `index` of this part.
    fn key(self, service: &str, index: usize) -> SliceKey {
        let dim = match self {
            Part::Service if index == 0 => SliceDim::Service,
            Part::Service => SliceDim::Group(FailureGroup::ALL[(index - 1).min(3)]),
            Part::Asn(a) => SliceDim::Asn(a),
            Part::Country(c) => SliceDim::Country(c.as_str().to_owned()),
        };
        SliceKey::new(service, dim)
    }
}

/// A slice that wants to fire.
#[derive(Clone, Debug)]
struct Candidate {
    service: String,
    part: Part,
    index: usize,
    kind: AlertKind,
    score: f64,
    /// What the slice has beyond its baseline (failing clients, silent clients, or late
    /// failing client-buckets); arbitration compares these.
    excess: f64,
    observed_ratio: f64,
    baseline_ratio: f64,
    clients: u64,
    networks: u64,
    active: u64,
    start_bucket: u64,
    end_bucket: Option<u64>,
    desc: Description,
    deferred: bool,
    /// Already firing, or held for a rising parent: present only so arbitration sees what
    /// it explains; never installed in this evaluation.
    firing: bool,
}

impl Candidate {
    fn key(&self) -> SliceKey {
        self.part.key(&self.service, self.index)
    }

    /// A firing alert of a child slice, as arbitration sees it.
    fn from_alert(alert: &Alert, part: Part, excess: f64) -> Candidate {
        Candidate {
            service: alert.slice.service.clone(),
            part,
            index: 0,
            kind: alert.kind,
            score: alert.score,
            excess,
            observed_ratio: alert.observed_ratio,
            baseline_ratio: alert.baseline_ratio,
            clients: alert.clients,
            networks: alert.networks,
            active: alert.active_clients,
            start_bucket: 0,
            end_bucket: None,
            desc: Description {
                breakdown: BTreeMap::new(),
                top_asns: alert.top_asns.clone(),
                top_countries: alert.top_countries.clone(),
            },
            deferred: false,
            firing: false,
        }
    }
}

/// The spike detector. See the [module docs](self).
#[derive(Debug)]
pub struct Detector {
    config: DetectorConfig,
    services: BTreeMap<String, ServiceData>,
    /// Client id to (last counts received, flush grace end).
    clients: IdMap<u64, (u64, u64)>,
    late_entries: usize,
    high_water_ms: u64,
    last_eval: Option<u64>,
    last_sweep_ms: u64,
    recent_ids: VecDeque<AlertId>,
    recent_set: HashSet<AlertId>,
    /// Recent notifying ASN retrospectives (ASN, first bucket, last bucket, id), so one
    /// network's flush is one retrospective across services.
    recent_network_retro: VecDeque<(u32, u64, u64, AlertId)>,
    stats: DetectorStats,
    scratch: IdMap<u64, Cell>,
}

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
            scratch: IdMap::default(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &DetectorConfig {
        &self.config
    }

    fn client_id(&self, client: Option<&[u8; 32]>, net: NetTag) -> u64 {
        let seed = self.config.hash_seed.to_be_bytes();
        match client {
            Some(key) => fnv1a64(&[&seed, b"agent", key]),
            None => fnv1a64(&[&seed, b"nel", &net.0.to_be_bytes()]),
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
        self.for_each_part(&report.service, e, |t| {
            t.data.last_data_ms = received;
            if t.first_data_ms == 0 {
                t.first_data_ms = received;
            }
            t.data.add(bucket, client, &delta);
        });
    }

    /// Takes in one client's success/attempt counts.
    ///
    /// Counts that arrive within [`DetectorConfig::flush_grace_ms`] of a client's return from
    /// a gap longer than [`DetectorConfig::client_gap_ms`] are buffered batches being flushed:
    /// they mark the client active but are not current failure evidence.
    pub fn observe_targets(&mut self, targets: &StoredTargets) {
        let received = targets.received_at.0;
        self.high_water_ms = self.high_water_ms.max(received);
        let client = self.client_id(Some(&targets.client), targets.net);
        let flushing = match self.clients.get(&client).copied() {
            Some((last, _)) if last.saturating_add(self.config.client_gap_ms) < received => {
                self.clients.insert(client, (received, received + self.config.flush_grace_ms));
                true
            }
            Some((_, grace_end)) => {
                self.clients.insert(client, (received, grace_end));
                received < grace_end
            }
            None => {
                if self.clients.len() < self.config.max_clients {
                    self.clients.insert(client, (received, 0));
                }
                false
            }
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
        let delta = Cell {
            attempts: if flushing { 0 } else { attempts },
            failures: if flushing { 0 } else { failures },
            net,
            asn: e.asn,
            country: e.country,
            ..Cell::default()
        };
        self.for_each_part(&targets.service, e, |t| {
            t.data.last_data_ms = received;
            if t.first_data_ms == 0 {
                t.first_data_ms = received;
            }
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

        let windows = self.windows(from, cur);
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
    fn windows(&mut self, from: u64, to: u64) -> Vec<(String, Part, Vec<SliceWindow>)> {
        let mut out = Vec::new();
        let mut nets = IdMap::default();
        for (name, sd) in &mut self.services {
            let parts = std::iter::once((Part::Service, &mut sd.service))
                .chain(sd.asns.iter_mut().map(|(a, t)| (Part::Asn(*a), t)))
                .chain(sd.countries.iter_mut().map(|(c, t)| (Part::Country(*c), t)));
            for (part, t) in parts {
                let outputs = t.states.len();
                let window = t.data.slide(from, to);
                out.push((name.clone(), part, summarise(window, outputs, &mut nets)));
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
        // The service slice's verdict, seen before its children (windows list it first).
        let mut parent: Option<(String, f64, bool)> = None;
        for (name, part, ws) in windows {
            let Some(t) = self.tracked_mut(name, *part) else { continue };
            if let (Some(w), Some(state)) = (ws.first(), t.states.first()) {
                let b = &state.baseline;
                if t.history.len() >= HISTORY_POINTS {
                    t.history.pop_front();
                }
                t.history.push_back(SeriesPoint {
                    t_ms: (cur + 1) * cfg.bucket_ms,
                    active_clients: w.active_clients,
                    failing_clients: w.failing_clients,
                    failure_ratio: (w.clients.n > 0).then_some(w.clients.mean() as f32),
                    baseline_ratio: (b.clients.weight > 0).then_some(b.clients.mean as f32),
                });
            }
            let full_window = cfg.window_buckets * cfg.bucket_ms;
            if t.first_data_ms == 0 || now_ms < t.first_data_ms.saturating_add(full_window) {
                continue;
            }
            for (index, (state, w)) in t.states.iter_mut().zip(ws).enumerate() {
                let is_service = *part == Part::Service && index == 0;
                let verdict = judge(&cfg, &state.baseline, w, now_ms, global_ok && index == 0);
                if is_service {
                    parent = Some((name.clone(), verdict.failure_score, state.alert.is_some()));
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
                    parent.as_ref().is_some_and(|(p, _, firing)| p == name && !firing);
                let parent_rising = parent.as_ref().is_some_and(|(p, score, firing)| {
                    p == name && !firing && *score >= cfg.resolve_score / 2.0
                });
                let hold_limit = match candidate {
                    None => 0,
                    Some(_) if is_service => 1,
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
                    let odd = verdict.failure_score >= cfg.resolve_score;
                    if odd && warm && state.frozen < FREEZE_LIMIT {
                        state.frozen += 1;
                    } else if global_ok {
                        state.frozen = 0;
                        state.baseline.update(w, now_ms, cfg.baseline_alpha);
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

    /// Turns surviving candidates into firing alerts: service slices first, so a service
    /// alert inhibits the child alerts raised with it.
    fn install(
        &mut self,
        mut candidates: Vec<Candidate>,
        now_ms: u64,
        events: &mut Vec<AlertEvent>,
    ) {
        candidates.retain(|c| !c.deferred && !c.firing);
        candidates.sort_by_key(|c| (c.part != Part::Service || c.index != 0, c.part));
        for c in candidates {
            let key = c.key();
            let id = AlertId::derive(&key, c.kind, c.start_bucket);
            if !self.remember(id) {
                continue;
            }
            let inhibited_by = if key.dim == SliceDim::Service {
                None
            } else {
                self.services
                    .get(&c.service)
                    .and_then(|sd| sd.service.states[0].alert.as_ref())
                    .map(|a| a.id)
                    .or_else(|| self.network_silence(&c))
            };
            let alert = alert_from(&c, key, id, now_ms, self.config.bucket_ms, inhibited_by);
            let Some(t) = self.tracked_mut(&c.service, c.part) else { continue };
            if let Some(state) = t.states.get_mut(c.index) {
                state.alert = Some(alert.clone());
                state.quiet = 0;
                events.push(AlertEvent::Fired(alert));
            }
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
            SliceDim::Service => Part::Service,
            SliceDim::Asn(a) => Part::Asn(*a),
            SliceDim::Country(c) => Part::Country(Country::parse(c)?),
            SliceDim::Group(_) => return None,
        };
        self.tracked(&slice.service, part)
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
        Some(self.tracked_by_key(slice)?.history.iter().copied().collect())
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
                let Some(point) = t.history.back() else { continue };
                let alert = t.states.first().and_then(|s| s.alert.as_ref()).map(|a| a.id);
                out.push((part.key(name, 0), *point, alert));
            }
        }
        out
    }
}

fn alert_from(
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
    }
}

/// Below this many clients with counts, the ratio test also needs the failing-network count.
const SMALL_SLICE: u32 = 300;

/// What one window says about one slice.
#[derive(Clone, Copy, Debug, Default)]
struct Verdict {
    failure_score: f64,
    failure_fires: bool,
    observed: f64,
    expected: f64,
    excess_clients: f64,
    silence_score: f64,
}

/// The failure and silence tests for one window against one baseline.
fn judge(
    cfg: &DetectorConfig,
    b: &Baseline,
    w: &SliceWindow,
    now_ms: u64,
    silence_allowed: bool,
) -> Verdict {
    let mut v = Verdict::default();
    if b.clients.weight > 0 && w.clients.n > 0 {
        // Quasi-binomial: each client votes its own failure ratio once; the variance of the
        // mean is the per-client variance over n plus the slice's learned drift over time.
        let slot = b.slot(now_ms).map_or(0.0, |s| s.ratio);
        v.expected = b.clients.mean.max(slot);
        v.observed = w.clients.mean();
        let n_c = f64::from(w.clients.n);
        let n_n = f64::from(w.nets.n);
        let effect_c = v.observed - v.expected;
        let effect_n = w.nets.mean() - b.nets.mean;
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
    let active = f64::from(w.active_clients).max(b.active_clients);
    let floors = w.failing_clients >= cfg.min_clients
        && w.failing_nets >= cfg.min_networks
        && spread_clients >= f64::from(cfg.min_clients)
        && spread_nets >= f64::from(cfg.min_networks)
        && (excess_nets >= f64::from(cfg.min_networks_alone)
            || spread_clients >= cfg.min_client_share * active);
    v.failure_fires = floors && v.failure_score >= cfg.fire_score;

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
fn spans(late: &BTreeMap<u64, IdMap<u64, LateCell>>, gap: u64) -> Vec<(u64, u64)> {
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
fn judge_span(
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
fn arbitrate(candidates: &mut [Candidate], dominance: f64) {
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
            let mut xs: Vec<f64> = candidates
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
                .map(|a| a.excess)
                .collect();
            xs.sort_by(|a, b| b.total_cmp(a));
            xs
        };
        let asn = of(true).first().copied().unwrap_or(0.0);
        let countries: f64 = of(false).iter().take(2).sum();
        if c.excess > 0.0 && (asn >= dominance * c.excess || countries >= dominance * c.excess) {
            candidates[i].deferred = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Source;
    use vantage_agent::taxonomy::{ErrorType, NetworkType};

    const T0: u64 = 1_704_067_200_000;

    /// A tiny deterministic world: `n` clients on their own /24s in 4 ASNs (2 countries),
    /// each reporting 10 attempts every 30 s for `service`.
    struct Feed {
        n: u64,
        det: Detector,
        now: u64,
        events: Vec<(u64, AlertEvent)>,
    }

    fn key(c: u64) -> [u8; 32] {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&c.to_be_bytes());
        k
    }

    fn enrichment(c: u64) -> Enrichment {
        Enrichment {
            asn: Some(64_500 + (c % 4) as u32),
            country: Country::parse(if c % 2 == 0 { "DE" } else { "FR" }),
        }
    }

    fn report(c: u64, net: u64, at: u64, received: u64, scope: Scope) -> StoredReport {
        StoredReport {
            id: [0; 16],
            received_at: UnixMillis(received),
            event_at: UnixMillis(at),
            source: Source::Agent,
            service: "shop".into(),
            host: "shop.example".into(),
            phase: ErrorType::TcpRefused.phase(),
            error_type: ErrorType::TcpRefused,
            elapsed_ms: 5,
            status: None,
            network: NetworkType::Wifi,
            scope,
            count: 1,
            sample_ppm: 1_000_000,
            client: Some(key(c)),
            net: NetTag(net),
            enrichment: enrichment(c),
        }
    }

    impl Feed {
        fn new(n: u64) -> Feed {
            Feed { n, det: Detector::new(DetectorConfig::default()), now: T0, events: Vec::new() }
        }

        /// Runs `secs` seconds; `fails(client, now)` says how many of its 10 attempts failed.
        fn run(&mut self, secs: u64, fails: impl Fn(u64, u64) -> u64) {
            for _ in 0..secs {
                self.now += 1000;
                for c in 0..self.n {
                    if (self.now / 1000 + c) % 30 != 0 {
                        continue;
                    }
                    let failed = fails(c, self.now).min(10);
                    if failed > 0 {
                        let r = report(c, c, self.now - 5_000, self.now, Scope::Path);
                        self.det.observe_report(&r, UnixMillis(self.now));
                    }
                    self.det.observe_targets(&StoredTargets {
                        received_at: UnixMillis(self.now),
                        event_at: UnixMillis(self.now),
                        service: "shop".into(),
                        host: "shop.example".into(),
                        attempts: 10,
                        successes: 10 - failed,
                        client: key(c),
                        net: NetTag(c),
                        enrichment: enrichment(c),
                    });
                }
                let out = self.det.advance(UnixMillis(self.now));
                self.events.extend(out.into_iter().map(|e| (self.now, e)));
            }
        }

        fn fired(&self) -> Vec<&Alert> {
            self.events
                .iter()
                .filter_map(|(_, e)| match e {
                    AlertEvent::Fired(a) => Some(a),
                    _ => None,
                })
                .collect()
        }
    }

    #[test]
    fn a_restored_snapshot_keeps_the_alert_and_does_not_page_again() {
        let mut f = Feed::new(400);
        f.run(1800, background);
        f.run(120, |_, _| 10);
        let paging: Vec<Alert> = f.fired().into_iter().filter(|a| a.notifies()).cloned().collect();
        assert_eq!(paging.len(), 1, "{paging:?}");
        // The series shows the outage: the last point fails far above the baseline.
        let series = f.det.series(&SliceKey::service("shop")).unwrap();
        let last = series.last().unwrap();
        assert!(last.failure_ratio.unwrap() > 0.9, "{last:?}");
        assert!(last.baseline_ratio.unwrap() < 0.05, "{last:?}");
        assert!(series.len() > 100 && series.len() <= HISTORY_POINTS);
        assert!(series.windows(2).all(|w| w[0].t_ms < w[1].t_ms));
        let latest = f.det.latest();
        let shop = latest.iter().find(|(k, _, _)| *k == SliceKey::service("shop")).unwrap();
        assert_eq!(shop.2, Some(paging[0].id));
        assert!(f.det.series(&SliceKey::service("nope")).is_none());

        // Through JSON, as the collector stores it, into a fresh detector.
        let json = serde_json::to_vec(&f.det.snapshot(UnixMillis(f.now))).unwrap();
        let snapshot: DetectorSnapshot = serde_json::from_slice(&json).unwrap();
        assert_eq!(snapshot.firing.len(), f.det.firing().len());
        let mut restored = Feed { det: Detector::new(DetectorConfig::default()), ..Feed::new(400) };
        restored.now = f.now;
        restored.det.restore(snapshot);
        assert_eq!(
            restored.det.baseline(&SliceKey::service("shop")),
            f.det.baseline(&SliceKey::service("shop"))
        );
        // The outage goes on: nothing new pages (same incident), then it resolves.
        restored.run(120, |_, _| 10);
        assert!(restored.fired().iter().all(|a| !a.notifies()), "{:?}", restored.fired());
        restored.run(300, background);
        let resolved: Vec<_> = restored
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                AlertEvent::Resolved(a) => Some(a.id),
                _ => None,
            })
            .collect();
        assert!(resolved.contains(&paging[0].id), "{:?}", restored.events);

        // A fresh detector without the snapshot would have learned nothing: no baseline.
        assert!(
            Detector::new(DetectorConfig::default()).baseline(&SliceKey::service("shop")).is_none()
        );
    }

    /// Background: every 7th client fails one attempt in ten, now and then.
    fn background(c: u64, now: u64) -> u64 {
        u64::from((c * 7 + now / 30_000) % 11 == 0)
    }

    #[test]
    fn a_service_outage_pages_once_fast_and_resolves() {
        let mut f = Feed::new(400);
        f.run(1800, background);
        assert!(f.events.is_empty(), "{:?}", f.events);
        let start = f.now;
        f.run(300, |_, _| 10);
        let fired = f.fired();
        let paging: Vec<_> = fired.iter().filter(|a| a.notifies()).collect();
        assert_eq!(paging.len(), 1, "{paging:?}");
        let alert = (*paging[0]).clone();
        assert_eq!(alert.slice, SliceKey::service("shop"));
        assert_eq!(alert.kind, AlertKind::Failures);
        assert!(alert.raised_at_ms - start <= 60_000, "{}", alert.raised_at_ms - start);
        assert_eq!(alert.breakdown.get("tcp").copied().map(|n| n > 0), Some(true));
        assert_eq!(alert.top_asns.len(), 4);
        // Its children fired inhibited, under it.
        assert!(fired.iter().filter(|a| !a.notifies()).all(|a| a.inhibited_by == Some(alert.id)));
        assert_eq!(f.det.firing().len(), fired.len());
        drop(fired);
        f.run(300, background);
        let resolved: Vec<_> = f
            .events
            .iter()
            .filter(|(_, e)| matches!(e, AlertEvent::Resolved(a) if a.id == alert.id))
            .collect();
        assert_eq!(resolved.len(), 1);
        let end = resolved[0].1.alert().end_ms.unwrap();
        assert!(end >= start + 280_000 && end <= start + 320_000, "{}", end - start);
        assert!(f.det.firing().is_empty());
        let stats = f.det.stats();
        assert_eq!((stats.data_slices, stats.slices), (7, 11));
    }

    #[test]
    fn one_asn_failing_is_localised_to_that_asn() {
        let mut f = Feed::new(400);
        f.run(1800, background);
        f.run(300, |c, now| if c % 4 == 1 { 10 } else { background(c, now) });
        let paging: Vec<_> = f.fired().into_iter().filter(|a| a.notifies()).collect();
        assert_eq!(paging.len(), 1, "{paging:?}");
        assert_eq!(paging[0].slice, SliceKey::new("shop", SliceDim::Asn(64_501)));
    }

    #[test]
    fn many_keys_behind_one_network_and_one_loud_client_do_not_page() {
        let mut f = Feed::new(400);
        f.run(1800, background);
        // 1000 extra keys on one /24, all failing, plus client 3 failing everything.
        for step in 0..300u64 {
            f.run(1, |c, now| if c == 3 { 10 } else { background(c, now) });
            if step % 30 == 0 {
                for k in 0..1000u64 {
                    let c = 10_000 + k;
                    let r = report(c, 999_999, f.now - 1000, f.now, Scope::Path);
                    f.det.observe_report(&r, UnixMillis(f.now));
                    f.det.observe_targets(&StoredTargets {
                        received_at: UnixMillis(f.now),
                        event_at: UnixMillis(f.now),
                        service: "shop".into(),
                        host: "shop.example".into(),
                        attempts: 10,
                        successes: 0,
                        client: key(c),
                        net: NetTag(999_999),
                        enrichment: enrichment(1),
                    });
                }
            }
        }
        f.run(300, background);
        assert!(f.fired().is_empty(), "{:?}", f.fired());
    }

    #[test]
    fn silence_pages_and_a_late_flush_is_only_retrospective() {
        // Clients of ASN 64502 go dark for 10 minutes: nothing of theirs arrives.
        let dark = |c: u64| c % 4 == 2;
        let mut h = Feed::new(800);
        h.run(1800, background);
        let outage_start = h.now;
        for _ in 0..600 {
            h.now += 1000;
            for c in (0..h.n).filter(|c| !dark(*c)) {
                if (h.now / 1000 + c) % 30 == 0 {
                    h.det.observe_targets(&StoredTargets {
                        received_at: UnixMillis(h.now),
                        event_at: UnixMillis(h.now),
                        service: "shop".into(),
                        host: "shop.example".into(),
                        attempts: 10,
                        successes: 10,
                        client: key(c),
                        net: NetTag(c),
                        enrichment: enrichment(c),
                    });
                }
            }
            let out = h.det.advance(UnixMillis(h.now));
            h.events.extend(out.into_iter().map(|e| (h.now, e)));
        }
        let silence: Vec<_> = h.fired().into_iter().filter(|a| a.notifies()).cloned().collect();
        assert_eq!(silence.len(), 1, "{silence:?}");
        assert_eq!(silence[0].kind, AlertKind::Silence);
        assert_eq!(silence[0].slice, SliceKey::new("shop", SliceDim::Asn(64_502)));
        assert!(silence[0].raised_at_ms - outage_start <= 90_000);
        // They come back and flush: local-scope failures observed during the outage.
        for c in (0..h.n).filter(|c| dark(*c)) {
            for m in 0..10u64 {
                let at = outage_start + m * 60_000 + c;
                let r = report(c, c, at, h.now, Scope::Local);
                h.det.observe_report(&r, UnixMillis(h.now));
            }
        }
        h.events.clear();
        h.run(300, background);
        let current: Vec<_> = h.fired().into_iter().filter(|a| a.notifies()).collect();
        assert!(current.is_empty(), "{current:?}");
        let retro: Vec<_> = h
            .events
            .iter()
            .filter_map(|(_, e)| match e {
                AlertEvent::Retrospective(a) if a.notifies() => Some(a),
                _ => None,
            })
            .collect();
        assert_eq!(retro.len(), 1, "{retro:?}");
        assert_eq!(retro[0].slice, SliceKey::new("shop", SliceDim::Asn(64_502)));
        assert_eq!(retro[0].state, AlertState::Resolved);
        assert!(
            retro[0].start_ms >= outage_start - 10_000
                && retro[0].start_ms <= outage_start + 10_000
        );
        assert!(retro[0].end_ms.unwrap() >= outage_start + 540_000);
        assert!(h.det.stats().late_reports >= 2000);
    }

    #[test]
    fn replay_is_deterministic_and_the_cap_refuses_new_slices() {
        let run = || {
            let mut f = Feed::new(200);
            f.run(1800, background);
            f.run(200, |_, _| 10);
            serde_json::to_string(&f.events.iter().map(|(_, e)| e).collect::<Vec<_>>()).unwrap()
        };
        assert_eq!(run(), run());
        let mut det = Detector::new(DetectorConfig { max_slices: 3, ..DetectorConfig::default() });
        for c in 0..10u64 {
            let r = report(c, c, T0, T0, Scope::Path);
            det.observe_report(&r, UnixMillis(T0));
        }
        let stats = det.stats();
        assert_eq!(stats.data_slices, 3);
        assert!(stats.slices_refused > 0);
        assert_eq!(stats.slice_cap, 3);
    }
}
