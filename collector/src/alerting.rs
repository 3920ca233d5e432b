//! Alerting around the [`Detector`]: fed after every durable commit, alerts persisted next to
//! the reports, notifications through a durable outbox, and the admin JSON API the dashboard
//! reads.
//!
//! ```text
//!  ingest ──commit ok──▶ Alerting::observe ──▶ Detector (one mutex)
//!                                                 │ advance(now), every tick
//!                                                 ▼
//!                        AlertEvent ──▶ tree `alerts` (latest state per id; a known id in the
//!                                        │              same state is a duplicate: not re-sent)
//!                                        └─▶ notify::Outbox (tree `outbox`) ──▶ Notifier task
//!  every 30 s and at shutdown: Detector::snapshot ──▶ tree `alerting_state`
//!  at start: restore the snapshot, then replay what the store accepted after it
//! ```
//!
//! A restart therefore keeps baselines, firing alerts and the ids already raised: an outage
//! that is still going on is not paged again, and one that ended while the collector was down
//! resolves on the first quiet evaluations.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use vantage_agent::report::UnixMillis;

use crate::detect::{
    Alert, AlertEvent, AlertKind, AlertState, Detector, DetectorConfig, DetectorSnapshot,
    FailureGroup, SeriesPoint, SliceDim, SliceKey,
};
use crate::model::{Country, StoredReport, StoredTargets};
use crate::notify::{Notifier, NotifierHandle, NotifyConfig, Outbox, slice_label};
use crate::store::{Store, StoreError};

/// Key of the detector snapshot in the `alerting_state` tree.
const SNAPSHOT_KEY: &[u8] = b"detector_snapshot";
/// How often the detector state is saved.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(30);
/// `GET /v1/alerts` lists resolved and retrospective alerts of this last stretch.
const RECENT_MS: u64 = 24 * 3_600_000;
/// ... and at most this many of them.
const RECENT_MAX: usize = 200;
/// Resolved alerts older than this are deleted from the `alerts` tree.
const KEEP_ALERTS_MS: u64 = 30 * 24 * 3_600_000;
/// ... and beyond this many resolved alerts, the oldest (by end) are deleted too, so what
/// senders can make the detector raise bounds neither the tree nor the scans of it
/// (`recent`, `GET /v1/alerts`, the strip) by a rate times 30 days. Alerts the tree holds as
/// firing are not counted: the detector's slices bound those.
const KEEP_ALERTS_MAX: usize = 10_000;
/// Heat map columns without `top`.
pub const HEATMAP_COLUMNS: usize = 40;
/// The largest `top` of `GET /v1/heatmap`.
pub const HEATMAP_MAX_COLUMNS: usize = 200;
/// The longest `filter` of `GET /v1/heatmap`.
const HEATMAP_MAX_FILTER: usize = 64;
/// `GET /v1/strip` looks back this far ...
const STRIP_SPAN_MS: u64 = 3_600_000;
/// ... in at most this many columns ...
pub const STRIP_COLUMNS: usize = 60;
/// ... and shows at most this many slices.
pub const STRIP_ROWS: usize = 30;
/// Reports and target counts replayed into the detector at start, at most.
const REPLAY_MAX: usize = 2_000_000;

/// Counters of what alerting did, for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    fired: AtomicU64,
    resolved: AtomicU64,
    retrospective: AtomicU64,
    regrouped: AtomicU64,
    duplicates: AtomicU64,
    persist_errors: AtomicU64,
    pruned: AtomicU64,
    replayed: AtomicU64,
    observed_reports: AtomicU64,
    observed_targets: AtomicU64,
}

/// A "should this collector queue notifications for this event now?" gate (fleet mode).
///
/// Called after the event's new state is stored. `true`: queue them now (what happens without
/// a gate). `false`: the gate took the event over and calls
/// [`Alerting::queue_notification`] itself if and when this collector should page (in fleet
/// mode: only the collector whose publish of the event was not a duplicate).
pub type NotifyGate = Arc<dyn Fn(&AlertEvent) -> bool + Send + Sync>;

/// The detector, its persistence and the notification hand-off. See the [module docs](self).
pub struct Alerting {
    detector: Mutex<Detector>,
    alerts: sled::Tree,
    state: sled::Tree,
    store: Store,
    notify: NotifyConfig,
    outbox: Outbox,
    notifier: Mutex<Option<NotifierHandle>>,
    notifier_stop: watch::Sender<bool>,
    firing: watch::Sender<Vec<Alert>>,
    notify_gate: OnceLock<NotifyGate>,
    counters: Counters,
    bucket_ms: u64,
    window_ms: u64,
    /// The snapshot time the start-up replay began after (`None`: no snapshot, no replay):
    /// the store's batches received after it are already in the detector.
    replayed_since: Option<u64>,
}

impl std::fmt::Debug for Alerting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The notify config holds receiver headers (credentials): never printed.
        f.debug_struct("Alerting").field("counters", &self.counters).finish_non_exhaustive()
    }
}

impl Alerting {
    /// Opens the alerting trees of `store`, restores the last detector snapshot, replays what
    /// the store accepted since, and starts the notifier. Call inside a tokio runtime.
    pub fn start(
        store: &Store,
        detector: DetectorConfig,
        notify: NotifyConfig,
        now: UnixMillis,
    ) -> Result<Arc<Alerting>, StoreError> {
        let alerts = store.open_tree("alerts")?;
        let state = store.open_tree("alerting_state")?;
        let outbox = Outbox::open(store.open_tree("outbox")?);
        let bucket_ms = detector.bucket_ms.max(1);
        let window_ms = bucket_ms * detector.window_buckets.max(1);
        let lateness_ms = detector.lateness_ms;
        let mut det = Detector::new(detector);
        let counters = Counters::default();
        let mut replayed_events = Vec::new();
        let mut replayed_since = None;
        let snapshot = state
            .get(SNAPSHOT_KEY)
            .map_err(|e| StoreError::Io(format!("reading the detector snapshot: {e}")))?;
        if let Some(bytes) = snapshot {
            match serde_json::from_slice::<DetectorSnapshot>(&bytes) {
                Ok(snap) => {
                    let since = snap.taken_at_ms;
                    tracing::info!(
                        firing = snap.firing.len(),
                        taken_at_ms = since,
                        "restoring the detector"
                    );
                    det.restore(snap);
                    let (n, events) = replay(store, &mut det, since, lateness_ms, now)?;
                    counters.replayed.store(n as u64, Ordering::Relaxed);
                    replayed_events = events;
                    replayed_since = Some(since);
                }
                // A snapshot from an incompatible version: start learning afresh rather than
                // refuse to start; the alerts tree still suppresses re-sent notifications.
                Err(e) => {
                    tracing::warn!(error = %e, "detector snapshot unreadable; starting afresh")
                }
            }
        }
        let (firing, firing_rx) = watch::channel(notifying(&det));
        let (notifier_stop, stop_rx) = watch::channel(false);
        let notifier = Notifier::spawn(notify.clone(), outbox.clone(), firing_rx, stop_rx);
        let alerting = Arc::new(Alerting {
            detector: Mutex::new(det),
            alerts,
            state,
            store: store.clone(),
            notify,
            outbox,
            notifier: Mutex::new(Some(notifier)),
            notifier_stop,
            firing,
            notify_gate: OnceLock::new(),
            counters,
            bucket_ms,
            window_ms,
            replayed_since,
        });
        // Alerts raised while replaying are handled like live ones (persisted, notified
        // unless already known in the same state).
        alerting.handle(&replayed_events, now);
        Ok(alerting)
    }

    /// The detector snapshot's time when the start-up replay fed it everything the store
    /// received after that time; `None` when there was no replay. Fleet mode marks its own
    /// unpublished batches from after it as seen, so the stream does not feed them twice.
    pub(crate) fn replayed_since(&self) -> Option<u64> {
        self.replayed_since
    }

    /// Installs the notification gate (at most once; fleet mode sets it at start). Returns
    /// `false` when a gate was already set (the first one stays).
    pub fn set_notify_gate(&self, gate: NotifyGate) -> bool {
        self.notify_gate.set(gate).is_ok()
    }

    /// Queues the notifications of an event the [`NotifyGate`] took over, and wakes the
    /// notifier. Returns how many receivers it was queued for.
    pub fn queue_notification(&self, event: &AlertEvent, now: UnixMillis) -> Result<usize, String> {
        let n = self.outbox.enqueue(&self.notify, event, now.0).map_err(|e| e.to_string())?;
        if n > 0
            && let Some(notifier) =
                self.notifier.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
        {
            notifier.wake();
        }
        Ok(n)
    }

    fn detector(&self) -> std::sync::MutexGuard<'_, Detector> {
        self.detector.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Feeds what one durable commit stored.
    pub fn observe(&self, reports: &[StoredReport], targets: &[StoredTargets]) {
        let occurrences = reports.iter().map(|r| u64::from(r.count.max(1))).sum();
        self.counters.observed_reports.fetch_add(occurrences, Ordering::Relaxed);
        self.counters.observed_targets.fetch_add(targets.len() as u64, Ordering::Relaxed);
        let mut det = self.detector();
        for r in reports {
            det.observe_report(r, r.received_at);
        }
        for t in targets {
            det.observe_targets(t);
        }
    }

    /// Moves the detector to `now` and handles what it raised: persisted, then queued for
    /// notification unless already known in the same state. Returns the events.
    pub fn tick(&self, now: UnixMillis) -> Vec<AlertEvent> {
        let events = self.detector().advance(now);
        self.handle(&events, now);
        events
    }

    fn handle(&self, events: &[AlertEvent], now: UnixMillis) {
        if events.is_empty() {
            return;
        }
        let firing = notifying(&self.detector());
        let mut queued = false;
        for event in events {
            match event {
                AlertEvent::Fired(_) => &self.counters.fired,
                AlertEvent::Resolved(_) => &self.counters.resolved,
                AlertEvent::Retrospective(_) => &self.counters.retrospective,
                AlertEvent::Regrouped(_) => &self.counters.regrouped,
            }
            .fetch_add(1, Ordering::Relaxed);
            let alert = event.alert();
            tracing::info!(
                id = %alert.id,
                slice = %alert.slice,
                kind = alert.kind.as_str(),
                event = event_name(event),
                clients = alert.clients,
                networks = alert.networks,
                inhibited = alert.inhibited_by.is_some(),
                "alert"
            );
            match self.persist(event, now) {
                Ok(true) => queued = true,
                Ok(false) => {}
                Err(e) => {
                    self.counters.persist_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, id = %alert.id, "could not persist an alert");
                }
            }
        }
        self.firing.send_replace(firing);
        if queued
            && let Some(n) = self.notifier.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
        {
            n.wake();
        }
    }

    /// Stores the alert's latest state; queues notifications when that state is new. Returns
    /// whether anything was queued.
    fn persist(&self, event: &AlertEvent, now: UnixMillis) -> Result<bool, String> {
        let alert = event.alert();
        let key = alert.id.0.to_be_bytes();
        let known = self
            .alerts
            .get(key)
            .map_err(|e| e.to_string())?
            .and_then(|v| serde_json::from_slice::<Alert>(&v).ok());
        // A regrouped alert keeps its state and changes its head: new when the head is.
        let same = |k: &Alert| {
            k.state == alert.state
                && (!matches!(event, AlertEvent::Regrouped(_))
                    || k.inhibited_by == alert.inhibited_by)
        };
        if known.as_ref().is_some_and(same) {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let bytes = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
        self.alerts.insert(key, bytes).map_err(|e| e.to_string())?;
        if matches!(event, AlertEvent::Regrouped(_)) {
            // Stored for the dashboard and the API; inhibited, so nobody is notified (and in
            // fleet mode there is nothing to publish: every detector regroups alike).
            self.alerts.flush().map_err(|e| e.to_string())?;
            return Ok(false);
        }
        if let Some(gate) = self.notify_gate.get()
            && !gate(event)
        {
            self.alerts.flush().map_err(|e| e.to_string())?;
            return Ok(false);
        }
        // The outbox flushes the database when it queued something, which makes the alert
        // above durable too; otherwise flush here.
        let n = self.outbox.enqueue(&self.notify, event, now.0).map_err(|e| e.to_string())?;
        if n == 0 {
            self.alerts.flush().map_err(|e| e.to_string())?;
        }
        Ok(n > 0)
    }

    /// Saves the detector state (and flushes it).
    pub async fn save_snapshot(&self, now: UnixMillis) -> Result<(), StoreError> {
        let snapshot = self.detector().snapshot(now);
        let bytes = serde_json::to_vec(&snapshot)
            .map_err(|e| StoreError::Io(format!("encoding the detector snapshot: {e}")))?;
        self.state
            .insert(SNAPSHOT_KEY, bytes)
            .map_err(|e| StoreError::Io(format!("writing the detector snapshot: {e}")))?;
        self.store.flush().await
    }

    /// Deletes resolved alerts older than 30 days, then the oldest resolved ones beyond
    /// [`KEEP_ALERTS_MAX`]. Returns how many it deleted.
    fn prune(&self, now: UnixMillis) -> usize {
        self.prune_to(now, KEEP_ALERTS_MAX)
    }

    fn prune_to(&self, now: UnixMillis, keep: usize) -> usize {
        let cutoff = now.0.saturating_sub(KEEP_ALERTS_MS);
        // The resolved alerts, by end (then id): what goes first is at the front.
        let mut resolved: Vec<(u64, sled::IVec)> = self
            .alerts
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(k, v)| {
                let a = serde_json::from_slice::<Alert>(&v).ok()?;
                (a.state == AlertState::Resolved).then(|| (a.end_ms.unwrap_or(a.raised_at_ms), k))
            })
            .collect();
        resolved.sort_unstable();
        let expired = resolved.partition_point(|(end, _)| *end < cutoff);
        let over = resolved.len().saturating_sub(keep);
        let n = expired.max(over);
        for (_, k) in resolved.drain(..n) {
            let _ = self.alerts.remove(k);
        }
        self.counters.pruned.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// The tick loop: advances the detector about four times per bucket, saves snapshots,
    /// and returns (after a last snapshot) when `stop` flips to true.
    pub async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let period = Duration::from_millis((self.bucket_ms / 4).clamp(50, 1_000));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut snapshots = tokio::time::interval(SNAPSHOT_EVERY);
        snapshots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        snapshots.tick().await;
        loop {
            tokio::select! {
                biased;
                changed = stop.changed() => {
                    if changed.is_err() || *stop.borrow() {
                        break;
                    }
                }
                _ = ticks.tick() => {
                    self.tick(crate::clock::now_millis());
                }
                _ = snapshots.tick() => {
                    let now = crate::clock::now_millis();
                    // Pruned only after a save: what it deletes ended before the state a
                    // restart restores, which cannot resolve it again.
                    match self.save_snapshot(now).await {
                        Ok(()) => {
                            self.prune(now);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "could not save the detector snapshot");
                        }
                    }
                }
            }
        }
        if let Err(e) = self.save_snapshot(crate::clock::now_millis()).await {
            tracing::error!(error = %e, "could not save the detector snapshot at shutdown");
        }
        let _ = self.notifier_stop.send(true);
        let notifier = self.notifier.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(n) = notifier {
            n.join().await;
        }
    }

    /// Prometheus text for the detector, the alerts and the notifier.
    pub fn render_metrics(&self, out: &mut String) {
        let s = self.detector().stats();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = &self.counters;
        let families: [(&str, &str, &str, u64); 16] = [
            (
                "vantage_alerts_firing",
                "gauge",
                "Alerts firing now (inhibited ones included).",
                s.firing as u64,
            ),
            ("vantage_detector_slices", "gauge", "Slices with a baseline.", s.slices as u64),
            (
                "vantage_detector_data_slices",
                "gauge",
                "Tracked data slices (service, ASN, country).",
                s.data_slices as u64,
            ),
            (
                "vantage_detector_slice_cap",
                "gauge",
                "The cap on tracked data slices.",
                s.slice_cap as u64,
            ),
            (
                "vantage_detector_slices_refused_total",
                "counter",
                "ASN or country slices not created because of the cap.",
                s.slices_refused,
            ),
            (
                "vantage_detector_slices_evicted_total",
                "counter",
                "Slices evicted after being idle.",
                s.slices_evicted,
            ),
            (
                "vantage_detector_clients_tracked",
                "gauge",
                "Clients whose last-seen time is kept.",
                s.clients_tracked as u64,
            ),
            (
                "vantage_detector_late_reports_total",
                "counter",
                "Reports routed to the retrospective path.",
                s.late_reports,
            ),
            (
                "vantage_detector_late_dropped_total",
                "counter",
                "Late reports dropped because the late store was full.",
                s.late_dropped,
            ),
            (
                "vantage_detector_evaluations_total",
                "counter",
                "Detector evaluations (one per bucket).",
                s.evaluations,
            ),
            (
                "vantage_detector_replayed_total",
                "counter",
                "Reports and counts replayed from the store at start.",
                load(&c.replayed),
            ),
            (
                "vantage_detector_observed_reports_total",
                "counter",
                "Failure occurrences (report counts, unscaled) fed to the detector since start \
                 (fleet mode: from the whole fleet, each envelope once).",
                load(&c.observed_reports),
            ),
            (
                "vantage_detector_observed_targets_total",
                "counter",
                "Success/attempt count records fed to the detector since start.",
                load(&c.observed_targets),
            ),
            (
                "vantage_alert_duplicates_total",
                "counter",
                "Alert events already stored in the same state (not notified again).",
                load(&c.duplicates),
            ),
            (
                "vantage_alert_persist_errors_total",
                "counter",
                "Alert events the store could not write.",
                load(&c.persist_errors),
            ),
            (
                "vantage_alerts_pruned_total",
                "counter",
                "Resolved alerts deleted from the store: after 30 days, or the oldest beyond \
                 10,000.",
                load(&c.pruned),
            ),
        ];
        crate::metrics::write_families(out, &families);
        let _ = writeln!(
            out,
            "# HELP vantage_alert_events_total Alert events raised by the detector.\n\
             # TYPE vantage_alert_events_total counter\n\
             vantage_alert_events_total{{event=\"fired\"}} {}\n\
             vantage_alert_events_total{{event=\"resolved\"}} {}\n\
             vantage_alert_events_total{{event=\"retrospective\"}} {}\n\
             vantage_alert_events_total{{event=\"regrouped\"}} {}",
            load(&c.fired),
            load(&c.resolved),
            load(&c.retrospective),
            load(&c.regrouped),
        );
        let notifier = self.notifier.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = notifier.as_ref() {
            n.stats().render_prometheus(out);
        }
    }

    /// Alerts firing now (from the detector, inhibited ones included), newest first.
    pub fn firing(&self) -> Vec<Alert> {
        let mut firing: Vec<Alert> = self.detector().firing().into_iter().cloned().collect();
        firing.sort_by(|a, b| b.raised_at_ms.cmp(&a.raised_at_ms).then(a.id.cmp(&b.id)));
        firing
    }

    /// Resolved and retrospective alerts of the last 24 h, newest first, at most 200.
    pub fn recent(&self, now: UnixMillis) -> Vec<Alert> {
        let since = now.0.saturating_sub(RECENT_MS);
        let mut recent: Vec<Alert> = self
            .alerts
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(_, v)| serde_json::from_slice::<Alert>(&v).ok())
            .filter(|a| {
                a.state == AlertState::Resolved && a.end_ms.unwrap_or(a.raised_at_ms) >= since
            })
            .collect();
        recent.sort_by(|a, b| {
            let end = |a: &Alert| a.end_ms.unwrap_or(a.raised_at_ms);
            end(b).cmp(&end(a)).then(a.id.cmp(&b.id))
        });
        recent.truncate(RECENT_MAX);
        recent
    }

    /// `GET /v1/alerts`. Every alert carries `label`; a firing one also `window`: its slice's
    /// latest evaluated window (the figures the heat map and the strip show, so a card and a
    /// cell never disagree; `null` when stale), `window_ms` says how long a window is.
    pub fn alerts_json(&self, now: UnixMillis) -> Value {
        let firing = self.firing();
        let recent = self.recent(now);
        let windows: HashMap<SliceKey, SeriesPoint> = {
            let det = self.detector();
            firing
                .iter()
                .filter_map(|a| {
                    let last = det.series(&a.slice)?.last().copied()?;
                    Some((a.slice.clone(), last))
                })
                .collect()
        };
        let fresh_after = now.0.saturating_sub(2 * self.window_ms);
        let with_label = |a: Alert| {
            let window = windows.get(&a.slice).filter(|p| p.t_ms >= fresh_after).copied();
            let mut v = serde_json::to_value(&a).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut v {
                map.insert("label".into(), Value::String(slice_label(&a.slice)));
                map.insert("window".into(), serde_json::to_value(window).unwrap_or(Value::Null));
            }
            v
        };
        json!({
            "now_ms": now.0,
            "window_ms": self.window_ms,
            "bucket_ms": self.bucket_ms,
            "firing": firing.into_iter().map(with_label).collect::<Vec<_>>(),
            "recent": recent.into_iter().map(with_label).collect::<Vec<_>>(),
        })
    }

    /// `GET /v1/heatmap?dim=asn|country[&top=N&filter=TEXT&sort=failing|active]`: services x
    /// the top `top` columns (default 40, at most 200) among those whose label contains
    /// `filter`, ranked by failing clients (or active clients) summed over services. The
    /// ranking runs here, so thousands of ASNs never reach the page; `columns_total` and
    /// `columns_matched` say how many there were. `totals` has each service's whole-service
    /// cell (where a service-wide alert is marked).
    pub fn heatmap_json(&self, q: &HeatQuery, now: UnixMillis) -> Value {
        let dim = q.dim;
        let latest = self.detector().latest();
        let fresh_after = now.0.saturating_sub(2 * self.window_ms);
        let mut rows: Vec<String> = Vec::new();
        // column key -> (label, active clients, failing clients)
        let mut columns: HashMap<String, (String, u64, u64)> = HashMap::new();
        let mut cells = Vec::new();
        let mut totals = Vec::new();
        for (key, point, alert) in latest {
            if !rows.contains(&key.service) {
                rows.push(key.service.clone());
            }
            let fresh = point.t_ms >= fresh_after && point.active_clients > 0;
            let (col, label) = match (&key.dim, dim) {
                (SliceDim::Service, _) => {
                    if fresh {
                        totals.push(json!({
                            "row": key.service,
                            "t_ms": point.t_ms,
                            "active_clients": point.active_clients,
                            "failing_clients": point.failing_clients,
                            "failure_ratio": point.failure_ratio,
                            "baseline_ratio": point.baseline_ratio,
                            "alert": alert,
                        }));
                    }
                    continue;
                }
                (SliceDim::Asn(a), HeatDim::Asn) => (a.to_string(), format!("AS{a}")),
                (SliceDim::Country(c), HeatDim::Country) => (c.clone(), c.clone()),
                _ => continue,
            };
            if !fresh {
                continue;
            }
            let entry = columns.entry(col.clone()).or_insert((label, 0, 0));
            entry.1 += u64::from(point.active_clients);
            entry.2 += u64::from(point.failing_clients);
            cells.push((key.service.clone(), col, point, alert));
        }
        rows.sort();
        let columns_total = columns.len();
        let needle = q.filter.to_ascii_lowercase();
        let mut cols: Vec<(String, String, u64, u64)> = columns
            .into_iter()
            .filter(|(k, (label, _, _))| {
                needle.is_empty()
                    || label.to_ascii_lowercase().contains(&needle)
                    || k.to_ascii_lowercase().contains(&needle)
            })
            .map(|(k, (label, active, failing))| (k, label, active, failing))
            .collect();
        let columns_matched = cols.len();
        match q.sort {
            HeatSort::Failing => {
                cols.sort_by(|a, b| b.3.cmp(&a.3).then(b.2.cmp(&a.2)).then_with(|| a.0.cmp(&b.0)))
            }
            HeatSort::Active => {
                cols.sort_by(|a, b| b.2.cmp(&a.2).then(b.3.cmp(&a.3)).then_with(|| a.0.cmp(&b.0)))
            }
        }
        cols.truncate(q.top);
        let kept: std::collections::HashSet<&str> = cols.iter().map(|c| c.0.as_str()).collect();
        let cells: Vec<Value> = cells
            .iter()
            .filter(|(_, col, _, _)| kept.contains(col.as_str()))
            .map(|(row, col, p, alert)| {
                json!({
                    "row": row,
                    "key": col,
                    "t_ms": p.t_ms,
                    "active_clients": p.active_clients,
                    "failing_clients": p.failing_clients,
                    "failure_ratio": p.failure_ratio,
                    "baseline_ratio": p.baseline_ratio,
                    "alert": alert,
                })
            })
            .collect();
        json!({
            "now_ms": now.0,
            "window_ms": self.window_ms,
            "dim": dim.as_str(),
            "sort": q.sort.as_str(),
            "top": q.top,
            "filter": q.filter,
            "columns_total": columns_total,
            "columns_matched": columns_matched,
            "rows": rows,
            "columns": cols.iter().map(|(k, label, active, failing)| json!({"key": k, "label": label, "active_clients": active, "failing_clients": failing})).collect::<Vec<_>>(),
            "cells": cells,
            "totals": totals,
        })
    }

    /// `GET /v1/strip`: which slices failed when over the last hour (or since the detector's
    /// history begins, if later), in at most [`STRIP_COLUMNS`] columns. Rows: every slice with
    /// an alert firing or ended within that time, under its service, then the services with
    /// the most failing clients, [`STRIP_ROWS`] rows at most. Each row has, per column, the
    /// highest failure ratio and failing-client count of its windows in that column and
    /// whether that was within one of its alerts (from its start to its end).
    pub fn strip_json(&self, now: UnixMillis) -> Value {
        let span_start = now.0.saturating_sub(STRIP_SPAN_MS);
        let mut alerts: Vec<Alert> = self.firing();
        alerts.extend(
            self.recent(now)
                .into_iter()
                .filter(|a| a.end_ms.unwrap_or(a.raised_at_ms) >= span_start),
        );
        let det = self.detector();
        // Services in order of alerts, then of failing clients now.
        let mut slices: Vec<SliceKey> = Vec::new();
        let push = |slices: &mut Vec<SliceKey>, k: SliceKey| {
            if !slices.contains(&k) {
                slices.push(k);
            }
        };
        let mut busy: Vec<(u32, String)> = det
            .latest()
            .into_iter()
            .filter(|(k, p, _)| k.dim == SliceDim::Service && p.t_ms >= span_start)
            .map(|(k, p, _)| (p.failing_clients, k.service))
            .collect();
        busy.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        let mut services: Vec<String> = Vec::new();
        for a in &alerts {
            if !services.contains(&a.slice.service) {
                services.push(a.slice.service.clone());
            }
        }
        for (_, s) in &busy {
            if !services.contains(s) {
                services.push(s.clone());
            }
        }
        let mut more = 0usize;
        for service in &services {
            let children: Vec<&Alert> =
                alerts.iter().filter(|a| a.slice.service == *service).collect();
            if slices.len() + 1 > STRIP_ROWS {
                more += 1 + children.iter().filter(|a| a.slice.dim != SliceDim::Service).count();
                continue;
            }
            push(&mut slices, SliceKey::service(service));
            let mut kids: Vec<SliceKey> = children
                .iter()
                .filter(|a| a.slice.dim != SliceDim::Service)
                .map(|a| a.slice.clone())
                .collect();
            kids.sort();
            kids.dedup();
            for k in kids {
                if slices.len() < STRIP_ROWS {
                    slices.push(k);
                } else {
                    more += 1;
                }
            }
        }
        let series: Vec<(SliceKey, Vec<SeriesPoint>)> = slices
            .into_iter()
            .map(|k| {
                let pts = det.series(&k).unwrap_or_default();
                (k, pts)
            })
            .collect();
        drop(det);
        // A window is stamped with the end of its last bucket, so the newest one ends after
        // `now` (by less than a bucket): the strip ends with it.
        let newest = now.0.saturating_add(self.bucket_ms);
        let stamps =
            || series.iter().flat_map(|(_, p)| p.iter().map(|p| p.t_ms)).filter(|t| *t <= newest);
        let end = stamps().max().unwrap_or(now.0).max(now.0);
        let first = stamps().filter(|t| *t > span_start).min().unwrap_or(end);
        let from = first.saturating_sub(self.bucket_ms).max(span_start);
        let span = end.saturating_sub(from).max(1);
        let per = span.div_ceil(STRIP_COLUMNS as u64);
        let column_ms = per.div_ceil(self.bucket_ms) * self.bucket_ms;
        let n = (span.div_ceil(column_ms) as usize).clamp(1, STRIP_COLUMNS);
        let from = end.saturating_sub(n as u64 * column_ms);
        let rows: Vec<Value> = series
            .iter()
            .map(|(k, points)| {
                let mut ratio: Vec<Option<f32>> = vec![None; n];
                let mut failing: Vec<Option<u32>> = vec![None; n];
                let mut firing = vec![false; n];
                for p in points.iter().filter(|p| p.t_ms > from && p.t_ms <= end) {
                    let i = (((p.t_ms - from - 1) / column_ms) as usize).min(n - 1);
                    if let Some(r) = p.failure_ratio {
                        ratio[i] = Some(ratio[i].map_or(r, |x| x.max(r)));
                    }
                    failing[i] =
                        Some(failing[i].map_or(p.failing_clients, |x| x.max(p.failing_clients)));
                }
                let mine: Vec<&Alert> = alerts.iter().filter(|a| a.slice == *k).collect();
                for (i, f) in firing.iter_mut().enumerate() {
                    let (c0, c1) = (from + i as u64 * column_ms, from + (i as u64 + 1) * column_ms);
                    // Over the incident as the alert states it (its start is the start of the
                    // window that showed it, as on its card and its series).
                    *f = mine.iter().any(|a| a.start_ms < c1 && a.end_ms.unwrap_or(u64::MAX) > c0);
                }
                json!({
                    "label": slice_label(k),
                    "slice": k,
                    "child": k.dim != SliceDim::Service,
                    "alerts": mine.iter().map(|a| a.id).collect::<Vec<_>>(),
                    "inhibited": !mine.is_empty() && mine.iter().all(|a| a.inhibited_by.is_some()),
                    "ratio": ratio,
                    "failing": failing,
                    "firing": firing,
                })
            })
            .collect();
        json!({
            "now_ms": now.0,
            "from_ms": from,
            "to_ms": end,
            "column_ms": column_ms,
            "columns": n,
            "rows": rows,
            "more_rows": more,
        })
    }

    /// `GET /v1/series?service=..[&dim=group|asn|country&key=..]`: `Err` is a 404 message.
    pub fn series_json(&self, slice: &SliceKey) -> Result<Value, String> {
        let points: Vec<SeriesPoint> =
            self.detector().series(slice).ok_or_else(|| format!("no data for slice {slice}"))?;
        Ok(json!({
            "slice": slice,
            "label": slice_label(slice),
            "bucket_ms": self.bucket_ms,
            "points": points,
        }))
    }
}

/// Which dimension a heat map shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum HeatDim {
    /// Services x ASNs.
    Asn,
    /// Services x countries.
    Country,
}

impl HeatDim {
    /// `asn` or `country`.
    pub fn as_str(self) -> &'static str {
        match self {
            HeatDim::Asn => "asn",
            HeatDim::Country => "country",
        }
    }
}

/// The query of `GET /v1/series`, parsed: an error names the parameter.
pub fn parse_series_query(query: &str) -> Result<SliceKey, String> {
    let params = parse_query(query)?;
    let service = params.get("service").ok_or("missing parameter `service`")?;
    if service.is_empty() {
        return Err("parameter `service` is empty".into());
    }
    let dim = match (params.get("dim").map(String::as_str), params.get("key")) {
        (None | Some("service"), _) => SliceDim::Service,
        (Some("asn"), Some(k)) => SliceDim::Asn(
            k.strip_prefix("AS")
                .unwrap_or(k)
                .parse()
                .map_err(|_| format!("parameter `key`: {k:?} is not an AS number"))?,
        ),
        (Some("country"), Some(k)) => {
            let c = Country::parse(k).ok_or_else(|| {
                format!("parameter `key`: {k:?} is not a two-letter country code")
            })?;
            SliceDim::Country(c.as_str().to_owned())
        }
        (Some("group"), Some(k)) => {
            SliceDim::Group(FailureGroup::ALL.into_iter().find(|g| g.as_str() == k).ok_or_else(
                || format!("parameter `key`: {k:?} is not a failure group (dns, tcp, tls, http)"),
            )?)
        }
        (Some("asn" | "country" | "group"), None) => {
            return Err("parameter `key` is needed with `dim`".into());
        }
        (Some(other), _) => {
            return Err(format!(
                "parameter `dim`: {other:?} is not one of service, group, asn, country"
            ));
        }
    };
    Ok(SliceKey::new(service, dim))
}

/// How `GET /v1/heatmap` ranks its columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeatSort {
    /// Most failing clients first (the default: an incident's networks come first).
    Failing,
    /// Most active clients first.
    Active,
}

impl HeatSort {
    /// `failing` or `active`.
    pub fn as_str(self) -> &'static str {
        match self {
            HeatSort::Failing => "failing",
            HeatSort::Active => "active",
        }
    }
}

/// The query of `GET /v1/heatmap`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeatQuery {
    /// Columns: ASNs or countries.
    pub dim: HeatDim,
    /// How many columns at most.
    pub top: usize,
    /// Only columns whose label or key contains this (case-insensitive); empty: all.
    pub filter: String,
    /// Which columns come first.
    pub sort: HeatSort,
}

/// The query of `GET /v1/heatmap`, parsed: an error names the parameter.
pub fn parse_heatmap_query(query: &str) -> Result<HeatQuery, String> {
    let params = parse_query(query)?;
    if let Some(unknown) =
        params.keys().find(|k| !["dim", "top", "filter", "sort"].contains(&k.as_str()))
    {
        return Err(format!(
            "unknown parameter `{unknown}` (known: `dim`, `top`, `filter`, `sort`)"
        ));
    }
    let dim = match params.get("dim").map(String::as_str) {
        None | Some("asn") => HeatDim::Asn,
        Some("country") => HeatDim::Country,
        Some(other) => {
            return Err(format!("parameter `dim`: {other:?} is not one of asn, country"));
        }
    };
    let top = match params.get("top") {
        None => HEATMAP_COLUMNS,
        Some(t) => match t.parse::<usize>() {
            Ok(n) if (1..=HEATMAP_MAX_COLUMNS).contains(&n) => n,
            _ => {
                return Err(format!(
                    "parameter `top`: {t:?} is not a number from 1 to {HEATMAP_MAX_COLUMNS}"
                ));
            }
        },
    };
    let filter = params.get("filter").map(|f| f.trim().to_owned()).unwrap_or_default();
    if filter.chars().count() > HEATMAP_MAX_FILTER {
        return Err(format!("parameter `filter`: longer than {HEATMAP_MAX_FILTER} characters"));
    }
    let sort = match params.get("sort").map(String::as_str) {
        None | Some("failing") => HeatSort::Failing,
        Some("active") => HeatSort::Active,
        Some(other) => {
            return Err(format!("parameter `sort`: {other:?} is not one of failing, active"));
        }
    };
    Ok(HeatQuery { dim, top, filter, sort })
}

/// `a=1&b=x%20y` into a map (later duplicates win); bad percent escapes are errors.
pub(crate) fn parse_query(query: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k)?, percent_decode(v)?);
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent escape in {s:?}"))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

fn event_name(event: &AlertEvent) -> &'static str {
    match event {
        AlertEvent::Fired(_) => "fired",
        AlertEvent::Resolved(_) => "resolved",
        AlertEvent::Retrospective(_) => "retrospective",
        AlertEvent::Regrouped(_) => "regrouped",
    }
}

/// Firing alerts that page (not inhibited), for the notifier's Alertmanager re-sends.
fn notifying(det: &Detector) -> Vec<Alert> {
    det.firing()
        .into_iter()
        .filter(|a| a.notifies() && a.kind != AlertKind::Retrospective)
        .cloned()
        .collect()
}

/// Feeds the detector what the store accepted after `since` (received time), in received
/// order: what arrived between the last snapshot and the stop.
fn replay(
    store: &Store,
    det: &mut Detector,
    since: u64,
    lateness_ms: u64,
    now: UnixMillis,
) -> Result<(usize, Vec<AlertEvent>), StoreError> {
    let from = UnixMillis(since.saturating_sub(lateness_ms));
    let to = UnixMillis(now.0.saturating_add(1));
    let mut reports = Vec::new();
    for r in store.scan_reports(from, to) {
        let r = r?;
        if r.received_at.0 > since {
            reports.push(r);
        }
        if reports.len() >= REPLAY_MAX {
            break;
        }
    }
    let mut targets = Vec::new();
    for t in store.scan_targets(from, to) {
        let t = t?;
        if t.received_at.0 > since {
            targets.push(t);
        }
        if targets.len() >= REPLAY_MAX {
            break;
        }
    }
    reports.sort_by_key(|r| r.received_at);
    targets.sort_by_key(|t| t.received_at);
    let n = reports.len() + targets.len();
    let mut events = Vec::new();
    // Interleave by received time and let the detector evaluate as time passes, as it would
    // have live.
    let (mut ri, mut ti) = (0, 0);
    while ri < reports.len() || ti < targets.len() {
        let take_report = match (reports.get(ri), targets.get(ti)) {
            (Some(r), Some(t)) => r.received_at <= t.received_at,
            (Some(_), None) => true,
            _ => false,
        };
        let at = if take_report {
            let r = &reports[ri];
            det.observe_report(r, r.received_at);
            ri += 1;
            r.received_at
        } else {
            let t = &targets[ti];
            det.observe_targets(t);
            ti += 1;
            t.received_at
        };
        events.extend(det.advance(at));
    }
    Ok((n, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_queries_name_what_is_wrong() {
        assert_eq!(parse_series_query("service=shop").unwrap(), SliceKey::service("shop"));
        assert_eq!(
            parse_series_query("service=my%20shop&dim=asn&key=AS64500").unwrap(),
            SliceKey::new("my shop", SliceDim::Asn(64500))
        );
        assert_eq!(
            parse_series_query("service=shop&dim=country&key=de").unwrap(),
            SliceKey::new("shop", SliceDim::Country("DE".into()))
        );
        assert_eq!(
            parse_series_query("service=shop&dim=group&key=dns").unwrap(),
            SliceKey::new("shop", SliceDim::Group(FailureGroup::Dns))
        );
        assert!(
            parse_series_query("service=shop&dim=group&key=quic")
                .unwrap_err()
                .contains("failure group")
        );
        assert!(parse_series_query("").unwrap_err().contains("`service`"));
        assert!(parse_series_query("service=shop&dim=asn").unwrap_err().contains("`key`"));
        assert!(
            parse_series_query("service=shop&dim=asn&key=x").unwrap_err().contains("AS number")
        );
        assert!(parse_series_query("service=shop&dim=pop&key=x").unwrap_err().contains("`dim`"));
        assert!(parse_series_query("service=%zz").unwrap_err().contains("percent"));
        let q = parse_heatmap_query("").unwrap();
        assert_eq!(
            (q.dim, q.top, q.filter.as_str(), q.sort),
            (HeatDim::Asn, 40, "", HeatSort::Failing)
        );
        let q = parse_heatmap_query("dim=country&top=200&filter=%20AS645%20&sort=active").unwrap();
        assert_eq!(
            (q.dim, q.top, q.filter.as_str(), q.sort),
            (HeatDim::Country, 200, "AS645", HeatSort::Active)
        );
        for (query, name) in [
            ("dim=city", "`dim`"),
            ("top=0", "`top`"),
            ("top=201", "`top`"),
            ("top=x", "`top`"),
            ("sort=ratio", "`sort`"),
            ("dims=asn", "`dims`"),
        ] {
            let e = parse_heatmap_query(query).unwrap_err();
            assert!(e.contains(name), "{query}: {e}");
        }
        let long = format!("filter={}", "a".repeat(65));
        assert!(parse_heatmap_query(&long).unwrap_err().contains("`filter`"));
    }

    /// An alerting started at `t0` on a store of its own (keep the directory alive).
    fn alerting_at(t0: u64) -> (tempfile::TempDir, Arc<Alerting>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(crate::store::StoreConfig::new(dir.path().join("data"))).unwrap();
        let alerting = Alerting::start(
            &store,
            DetectorConfig::default(),
            NotifyConfig::default(),
            UnixMillis(t0),
        )
        .unwrap();
        (dir, alerting)
    }

    /// A failures alert of `slice`, raised and firing since `t0`.
    fn firing_alert(id: u64, slice: SliceKey, t0: u64) -> Alert {
        Alert {
            id: crate::detect::AlertId(id),
            slice,
            kind: AlertKind::Failures,
            state: AlertState::Firing,
            start_ms: t0,
            end_ms: None,
            raised_at_ms: t0,
            inhibited_by: None,
            score: 30.0,
            observed_ratio: 0.5,
            baseline_ratio: 0.01,
            clients: 40,
            networks: 30,
            active_clients: 80,
            breakdown: BTreeMap::new(),
            top_asns: Vec::new(),
            top_countries: Vec::new(),
            supersedes: None,
        }
    }

    /// A take-over's regrouping is stored as its own event: the old head's stored state names
    /// the new head at once (not only when it resolves), nobody is notified, and the same
    /// regrouping again is a duplicate.
    #[tokio::test]
    async fn a_regrouped_alert_is_stored_with_its_new_head_and_notifies_nobody() {
        use crate::detect::{AlertId, SliceDim, SliceKey};
        const T0: u64 = 1_800_000_000_000;
        let (_dir, alerting) = alerting_at(T0);
        let alert = |id: u64, slice: SliceKey| firing_alert(id, slice, T0);
        let old = alert(1, SliceKey::new("shop", SliceDim::Asn(64_500)));
        let new = Alert { supersedes: Some(old.id), ..alert(2, SliceKey::service("shop")) };
        let regrouped = Alert { inhibited_by: Some(new.id), ..old.clone() };
        let stored = |id: AlertId| -> Alert {
            let v = alerting.alerts.get(id.0.to_be_bytes()).unwrap().unwrap();
            serde_json::from_slice(&v).unwrap()
        };
        alerting.handle(&[AlertEvent::Fired(old.clone())], UnixMillis(T0));
        assert_eq!(stored(old.id).inhibited_by, None);
        let events = [AlertEvent::Fired(new.clone()), AlertEvent::Regrouped(regrouped.clone())];
        alerting.handle(&events, UnixMillis(T0 + 20_000));
        assert_eq!(stored(old.id), regrouped);
        assert_eq!(stored(new.id).supersedes, Some(old.id));
        let c = &alerting.counters;
        assert_eq!(c.regrouped.load(Ordering::Relaxed), 1);
        assert_eq!(c.duplicates.load(Ordering::Relaxed), 0);
        alerting.handle(&[AlertEvent::Regrouped(regrouped)], UnixMillis(T0 + 30_000));
        assert_eq!(c.duplicates.load(Ordering::Relaxed), 1);
        assert!(alerting.outbox.is_empty());
        let mut metrics = String::new();
        alerting.render_metrics(&mut metrics);
        assert!(metrics.contains("vantage_alert_events_total{event=\"regrouped\"} 2"), "{metrics}");
    }

    /// The tree keeps resolved alerts for 30 days and at most `KEEP_ALERTS_MAX` of them, the
    /// oldest going first; what it holds as firing is never pruned.
    #[tokio::test]
    async fn resolved_alerts_are_kept_30_days_and_at_most_a_bounded_number() {
        use crate::detect::{SliceDim, SliceKey};
        const T0: u64 = 1_800_000_000_000;
        const DAY: u64 = 24 * 3_600_000;
        let (_dir, alerting) = alerting_at(T0);
        let alert = |id: u64, end: Option<u64>| Alert {
            state: if end.is_some() { AlertState::Resolved } else { AlertState::Firing },
            end_ms: end,
            ..firing_alert(
                id,
                SliceKey::new("shop", SliceDim::Asn(64_500 + id as u32 % 7)),
                T0 - 40 * DAY,
            )
        };
        let put = |a: &Alert| {
            alerting.alerts.insert(a.id.0.to_be_bytes(), serde_json::to_vec(a).unwrap()).unwrap();
        };
        let now = T0 + 31 * DAY;
        // The greater the id, the older the end: the bound goes by the end, not by the key.
        let extra = 25;
        let n = KEEP_ALERTS_MAX as u64 + extra;
        for i in 0..n {
            put(&alert(1_000_000 + i, Some(now - DAY - i * 1_000)));
        }
        for id in [1, 2, 3] {
            put(&alert(id, Some(T0 - DAY))); // resolved 32 days ago
        }
        for id in [10, 11] {
            put(&alert(id, None)); // raised 71 days ago, still firing
        }
        assert_eq!(alerting.prune(UnixMillis(now)), 3 + extra as usize);
        assert_eq!(alerting.alerts.len(), KEEP_ALERTS_MAX + 2);
        for id in [1, 2, 3] {
            assert!(alerting.alerts.get(u64::to_be_bytes(id)).unwrap().is_none(), "{id}");
        }
        for id in [10, 11] {
            assert!(alerting.alerts.get(u64::to_be_bytes(id)).unwrap().is_some(), "{id}");
        }
        // The oldest ends (the greatest i) went; the newest stayed.
        for i in 0..n {
            let kept = alerting.alerts.get((1_000_000 + i).to_be_bytes()).unwrap().is_some();
            assert_eq!(kept, i < KEEP_ALERTS_MAX as u64, "alert {i} ends {} ms back", i * 1_000);
        }
        assert_eq!(alerting.prune(UnixMillis(now)), 0);
        // The age rule alone, below the bound: the oldest left ends 9,999 s before the
        // newest, which ends a day before `now`.
        let oldest_end = now - DAY - (KEEP_ALERTS_MAX as u64 - 1) * 1_000;
        let at = |t: u64| UnixMillis(t + KEEP_ALERTS_MS);
        assert_eq!(alerting.prune_to(at(oldest_end), usize::MAX), 0, "not older than 30 days");
        let gone = alerting.prune_to(at(oldest_end + 1_500), usize::MAX);
        assert_eq!(gone, 2, "the two that end more than 30 days before");
        let mut metrics = String::new();
        alerting.render_metrics(&mut metrics);
        let pruned = 3 + extra + 2;
        assert!(metrics.contains(&format!("vantage_alerts_pruned_total {pruned}")), "{metrics}");
    }

    /// A deployment with thousands of ASNs: the collector ranks, filters and cuts the columns,
    /// so the page gets at most `top` of them.
    #[tokio::test]
    async fn the_heat_map_ranks_and_filters_thousands_of_asns_itself() {
        use crate::model::{Enrichment, NetTag, Source, StoredTargets};
        use vantage_agent::taxonomy::{ErrorType, NetworkType, Scope};
        const T0: u64 = 1_800_000_000_000;
        const ASNS: u32 = 3000;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(crate::store::StoreConfig::new(dir.path().join("data"))).unwrap();
        let config = DetectorConfig::default();
        let bucket = config.bucket_ms;
        let alerting =
            Alerting::start(&store, config, NotifyConfig::default(), UnixMillis(T0)).unwrap();
        // One client per ASN, none failing, except: AS100042 5 failing clients, AS100043 3,
        // AS100044 2 (and one client each that does not fail).
        let failing = |asn: u32| match asn {
            100_042 => 5,
            100_043 => 3,
            100_044 => 2,
            _ => 0,
        };
        let mut clients = Vec::new();
        for i in 0..ASNS {
            let asn = 100_000 + i;
            clients.push((asn, false));
            clients.extend((0..failing(asn)).map(|_| (asn, true)));
        }
        let enrichment = |asn| Enrichment { asn: Some(asn), country: None };
        let mut now = T0;
        for _ in 0..3 {
            let at = UnixMillis(now);
            let mut reports = Vec::new();
            let mut targets = Vec::new();
            for (n, &(asn, fails)) in clients.iter().enumerate() {
                let mut client = [0u8; 32];
                client[..8].copy_from_slice(&(n as u64).to_be_bytes());
                let net = NetTag(n as u64);
                targets.push(StoredTargets {
                    received_at: at,
                    event_at: at,
                    service: "shop".into(),
                    host: "shop.example".into(),
                    attempts: 10,
                    successes: if fails { 0 } else { 10 },
                    client,
                    net,
                    enrichment: enrichment(asn),
                });
                if fails {
                    reports.push(StoredReport {
                        id: [0; 16],
                        received_at: at,
                        event_at: at,
                        source: Source::Agent,
                        service: "shop".into(),
                        host: "shop.example".into(),
                        phase: ErrorType::TcpRefused.phase(),
                        error_type: ErrorType::TcpRefused,
                        elapsed_ms: 5,
                        status: None,
                        network: NetworkType::Wifi,
                        scope: Scope::Path,
                        count: 10,
                        sample_ppm: 1_000_000,
                        client: Some(client),
                        net,
                        enrichment: enrichment(asn),
                    });
                }
            }
            alerting.observe(&reports, &targets);
            now += bucket;
            alerting.tick(UnixMillis(now));
        }
        let now = UnixMillis(now);
        let heat = |q: &str| alerting.heatmap_json(&parse_heatmap_query(q).unwrap(), now);
        let keys = |v: &Value| -> Vec<String> {
            v["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["key"].as_str().unwrap().to_owned())
                .collect()
        };

        let all = heat("");
        assert_eq!(all["columns_total"], ASNS);
        assert_eq!(all["columns_matched"], ASNS);
        assert_eq!(keys(&all).len(), HEATMAP_COLUMNS);
        assert_eq!(keys(&all)[..3], ["100042", "100043", "100044"]);
        assert_eq!(all["cells"].as_array().unwrap().len(), HEATMAP_COLUMNS);
        let total = &all["totals"][0];
        assert_eq!(total["active_clients"], ASNS + 10);
        assert_eq!(total["failing_clients"], 10);

        let most = heat("top=200");
        assert_eq!(keys(&most).len(), HEATMAP_MAX_COLUMNS);
        assert!(most.to_string().len() < 100_000, "{} bytes", most.to_string().len());

        let filtered = heat("filter=as10004&top=2");
        assert_eq!(filtered["columns_matched"], 10, "AS100040 to AS100049");
        assert_eq!(keys(&filtered), ["100042", "100043"]);
        let active = heat("filter=10004&sort=active&top=1");
        assert_eq!(keys(&active), ["100042"], "6 active clients");
        let none = heat("filter=AS99");
        assert_eq!(none["columns_matched"], 0);
        assert_eq!(none["cells"], serde_json::json!([]));

        // The strip: the one service, its windows in the last columns, nothing firing.
        let strip = alerting.strip_json(now);
        let n = strip["columns"].as_u64().unwrap() as usize;
        assert!((1..=STRIP_COLUMNS).contains(&n), "{strip}");
        assert_eq!(strip["column_ms"].as_u64().unwrap() % bucket, 0);
        let rows = strip["rows"].as_array().unwrap();
        assert_eq!(rows.len(), 1, "{strip}");
        assert_eq!(rows[0]["label"], "shop");
        assert_eq!(rows[0]["child"], false);
        let failing = rows[0]["failing"].as_array().unwrap();
        assert_eq!(failing.len(), n);
        assert_eq!(failing[n - 1], 10, "the newest window is in the last column: {strip}");
        assert_eq!(failing.iter().filter(|f| !f.is_null()).count(), 3, "{strip}");
        assert!(rows[0]["firing"].as_array().unwrap().iter().all(|f| f == false));
        store.close().await.unwrap();
    }
}
