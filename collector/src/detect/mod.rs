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
//!    small slices: >= 5 broken clients (half their attempts failed) on >= 3 networks, half
//!       the slice or more: exact binomial tail against the learned (floored) broken rate
//!    long reference (hours): a fast mean drifted above it marks windows odd (not learned),
//!       so a slow burn builds into a step instead of being learned; while it does, the window
//!       is also judged against the long reference and its variance over hours (the climb
//!       inflates the fast baseline's variance)
//!    silence test: active clients far below baseline while the rest of the fleet reports
//!    arbitration: a parent defers to one ASN (or <= 2 countries) that explain its excess
//!       while the rest of its clients fail far less (under half their share);
//!       a firing service alert inhibits its child slices
//!    lifecycle: Fired ─▶ (quiet for 3 evaluations) ─▶ Resolved; baselines learn quiet windows
//!    incidents: a new alert of a service joins the firing (or < 15 min resolved) incident of
//!       the same kind there: raised inhibited by the alert heading it, unless the head has
//!       resolved and the incident's alerts still firing explain less than half of its excess
//!       (another outage: it pages);
//!       a wider slice (service
//!       over country over ASN) whose excess the head explains less than half of takes the
//!       incident over instead (notifies as an update, `supersedes`; the rest regroup under it,
//!       each with a `Regrouped` event)
//!    flushes: a client's local-scope report makes its counts a flush (not current evidence)
//!    first counts: a client's counts within the flush grace of its first appearance (or of
//!       its return from a gap) are partial: no window holding them counts its ratio (an
//!       agent seals at once on a failure, only after its heartbeat otherwise, so a fresh
//!       client's first window shows it only if it failed)
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
mod detector;
mod incident;
mod judge;
mod slice;
mod stats;
mod window;

use std::collections::{BTreeMap, HashSet, VecDeque};

use serde::{Deserialize, Serialize};
use vantage_agent::report::UnixMillis;
use vantage_agent::taxonomy::Scope;

use crate::model::{Country, Enrichment, NetTag, StoredReport, StoredTargets, nel_client_key};

pub use alert::{Alert, AlertEvent, AlertId, AlertKind, AlertState};
pub use slice::{FailureGroup, SliceDim, SliceKey};

use baseline::Baseline;
use slice::OTHER_GROUP;
use stats::{
    IdMap, binomial_upper_score, fnv1a64, normal_upper_score, poisson_lower_score,
    poisson_upper_score,
};
use window::{
    Cell, DataSlice, Description, Established, GROUP_SLOTS, SliceWindow, describe, summarise,
};

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
    /// Share of the slice's active clients, and of its active networks, failing above the
    /// baseline that fires (with the other floors), unless
    /// [`DetectorConfig::min_networks_alone`] networks fail. Default 0.05.
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
    /// After a gap (or on a client's first appearance), a client's counts for this long are
    /// partial (a flush of buffered batches, or first seals covering an unknown stretch): no
    /// window holding them is current evidence of the client's ratio. Default 30 000.
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
    /// EWMA weight of each window in the long reference, the per-client ratio over hours that
    /// a slow burn cannot drag along: windows odd against it are learned by neither baseline,
    /// so a drift accumulates into a step the fast test sees. Default 1/2160 (6 hours).
    pub slow_alpha: f64,
    /// Small-slice test: the share of a slice's (per-network capped) clients that must be
    /// broken (at least half their attempts failed), and of its active networks that must
    /// hold a broken client, for the exact binomial test to apply. Default 0.5.
    pub small_min_share: f64,
    /// Small-slice test: the most (per-network capped) active clients an ASN or country slice
    /// may have for the exact test to apply; larger ones are the ordinary test's, whose
    /// floors ask two thirds of their networks ([`DetectorConfig::child_min_net_share`]).
    /// Keys an attacker brings to a mid-sized ASN, half of its clients on as many /24s as its
    /// own clients use, passed the small test's shares (spikebench's forge experiment, /24s
    /// pre-positioned: 11-21 of them). A service keeps the test at any size: half of a
    /// service's clients broken on half of its networks is an outage. Default 20.
    pub small_max_clients: u32,
    /// The share of an ASN or country slice's active networks (this window's or, when
    /// larger, the baseline's) that must hold a failing client beyond the baseline for it to
    /// fire, unless [`DetectorConfig::min_networks_alone`] networks fail. A real outage of a
    /// network or a country fails most of its networks; an attacker must bring twice as many
    /// /24s of that ASN or country as its real clients use. Default 0.67.
    pub child_min_net_share: f64,
    /// How long before an evaluation a network must have been seen working for a slice (counts
    /// with a success) to count as one of the slice's own: only such networks count toward
    /// an ASN or country slice's share of failing networks
    /// ([`DetectorConfig::child_min_net_share`]), the ordinary test's 5% of networks
    /// ([`DetectorConfig::min_client_share`]) and the small-slice test's networks.
    /// /24s an attacker brings failing from their first report count only in numbers
    /// ([`DetectorConfig::min_networks_alone`]); a real outage fails networks that were
    /// working. Default 60 000 (a minute: two report intervals, so a client that came online
    /// just before an outage still counts within a window or two).
    pub net_tenure_ms: u64,
    /// Small-slice test: the smallest per-window null rate of a broken client, whatever the
    /// baseline learned (a slice that never saw one still has some chance). Default 0.002.
    pub small_null_rate: f64,
    /// A notifying alert that fires while another of the same service and kind is firing, or
    /// within this long after one resolved, joins that incident (it is raised inhibited by
    /// it) instead of paging again: flapping and the slices of one outage are one
    /// notification. Default 900 000 (15 minutes).
    pub incident_cooldown_ms: u64,
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
            slow_alpha: 1.0 / 2160.0,
            small_min_share: 0.5,
            small_max_clients: 20,
            child_min_net_share: 0.67,
            net_tenure_ms: 60_000,
            small_null_rate: 0.002,
            incident_cooldown_ms: 900_000,
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
    /// Consecutive windows the long reference found odd and did not learn.
    slow_frozen: u32,
    /// Consecutive evaluations a candidate waited for its rising parent.
    held: u32,
    /// What the firing alert explains now: the slice's excess in the latest evaluation
    /// (failing clients above the baseline; silence: missing clients).
    excess: f64,
    /// One point per evaluation, newest last, at most [`HISTORY_POINTS`].
    history: VecDeque<SeriesPoint>,
}

/// Evaluations a child candidate waits for its rising service-wide parent.
const HOLD: u32 = 2;

/// Odd windows a baseline skips before it learns them anyway: one hour of 10 s windows.
const FREEZE_LIMIT: u32 = 360;

/// Windows odd against the long reference it skips before it follows them (a new normal):
/// six hours of 10 s windows.
const SLOW_FREEZE_LIMIT: u32 = 2160;

/// Small-slice evidence (`-ln p`) above which a window's broken clients are not learned into
/// the null rate: p < 0.1.
const BROKEN_ODD_SCORE: f64 = 2.3;

/// Notifying alerts remembered (per service and kind) for incident grouping.
const RECENT_INCIDENTS: usize = 10_000;

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

/// How narrow a slice is, for incident heads: 0 for the service and its failure groups, 1 for
/// a country, 2 for an ASN.
fn breadth(dim: &SliceDim) -> u8 {
    match dim {
        SliceDim::Service | SliceDim::Group(_) => 0,
        SliceDim::Country(_) => 1,
        SliceDim::Asn(_) => 2,
    }
}

impl Part {
    /// [`breadth`] of this part.
    fn breadth(self) -> u8 {
        match self {
            Part::Service => 0,
            Part::Country(_) => 1,
            Part::Asn(_) => 2,
        }
    }

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
    /// Incidents open for the cool-down after an alert of theirs resolved: (service, kind,
    /// incident id, open until, the head's breadth when the resolved alert was the head).
    recent_incidents: VecDeque<(String, AlertKind, AlertId, u64, Option<u8>)>,
    stats: DetectorStats,
    scratch: IdMap<u64, Cell>,
    /// After a restore: networks first seen up to this receive time count as established
    /// (they were there before the restart, which the snapshot does not keep). Set at the
    /// first evaluation after [`Detector::restore`] to [`DetectorConfig::client_gap_ms`] on.
    tenure_amnesty_ms: u64,
    /// A restore happened and the amnesty starts at the next evaluation.
    amnesty_pending: bool,
}

#[cfg(test)]
mod tests;
