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
/// Alerts older than this are deleted from the `alerts` tree.
const KEEP_ALERTS_MS: u64 = 30 * 24 * 3_600_000;
/// Heat map columns at most.
const HEATMAP_COLUMNS: usize = 40;
/// Reports and target counts replayed into the detector at start, at most.
const REPLAY_MAX: usize = 2_000_000;

/// Counters of what alerting did, for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    fired: AtomicU64,
    resolved: AtomicU64,
    retrospective: AtomicU64,
    duplicates: AtomicU64,
    persist_errors: AtomicU64,
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
        });
        // Alerts raised while replaying are handled like live ones (persisted, notified
        // unless already known in the same state).
        alerting.handle(&replayed_events, now);
        Ok(alerting)
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
        if known.as_ref().is_some_and(|k| k.state == alert.state) {
            self.counters.duplicates.fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        let bytes = serde_json::to_vec(alert).map_err(|e| e.to_string())?;
        self.alerts.insert(key, bytes).map_err(|e| e.to_string())?;
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

    /// Deletes alerts older than 30 days.
    fn prune(&self, now: UnixMillis) {
        let cutoff = now.0.saturating_sub(KEEP_ALERTS_MS);
        let old: Vec<_> = self
            .alerts
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| {
                serde_json::from_slice::<Alert>(v).is_ok_and(|a| {
                    a.state == AlertState::Resolved && a.end_ms.unwrap_or(a.raised_at_ms) < cutoff
                })
            })
            .map(|(k, _)| k)
            .collect();
        for k in old {
            let _ = self.alerts.remove(k);
        }
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
                    if let Err(e) = self.save_snapshot(now).await {
                        tracing::error!(error = %e, "could not save the detector snapshot");
                    }
                    self.prune(now);
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
        let families: [(&str, &str, &str, u64); 15] = [
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
        ];
        crate::metrics::write_families(out, &families);
        let _ = writeln!(
            out,
            "# HELP vantage_alert_events_total Alert events raised by the detector.\n\
             # TYPE vantage_alert_events_total counter\n\
             vantage_alert_events_total{{event=\"fired\"}} {}\n\
             vantage_alert_events_total{{event=\"resolved\"}} {}\n\
             vantage_alert_events_total{{event=\"retrospective\"}} {}",
            load(&c.fired),
            load(&c.resolved),
            load(&c.retrospective),
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

    /// `GET /v1/alerts`.
    pub fn alerts_json(&self, now: UnixMillis) -> Value {
        let with_label = |a: Alert| {
            let mut v = serde_json::to_value(&a).unwrap_or(Value::Null);
            if let Value::Object(map) = &mut v {
                map.insert("label".into(), Value::String(slice_label(&a.slice)));
            }
            v
        };
        json!({
            "now_ms": now.0,
            "firing": self.firing().into_iter().map(with_label).collect::<Vec<_>>(),
            "recent": self.recent(now).into_iter().map(with_label).collect::<Vec<_>>(),
        })
    }

    /// `GET /v1/heatmap?dim=asn|country`.
    pub fn heatmap_json(&self, dim: HeatDim, now: UnixMillis) -> Value {
        let latest = self.detector().latest();
        let fresh_after = now.0.saturating_sub(2 * self.window_ms);
        let mut rows: Vec<String> = Vec::new();
        let mut columns: HashMap<String, (String, u64)> = HashMap::new();
        let mut cells = Vec::new();
        for (key, point, alert) in latest {
            if !rows.contains(&key.service) {
                rows.push(key.service.clone());
            }
            let (col, label) = match (&key.dim, dim) {
                (SliceDim::Asn(a), HeatDim::Asn) => (a.to_string(), format!("AS{a}")),
                (SliceDim::Country(c), HeatDim::Country) => (c.clone(), c.clone()),
                _ => continue,
            };
            if point.t_ms < fresh_after || point.active_clients == 0 {
                continue;
            }
            let entry = columns.entry(col.clone()).or_insert((label, 0));
            entry.1 += u64::from(point.active_clients);
            cells.push((key.service.clone(), col, point, alert));
        }
        rows.sort();
        let mut cols: Vec<(String, String, u64)> =
            columns.into_iter().map(|(k, (label, n))| (k, label, n)).collect();
        cols.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        cols.truncate(HEATMAP_COLUMNS);
        let kept: std::collections::HashSet<&str> = cols.iter().map(|c| c.0.as_str()).collect();
        let cells: Vec<Value> = cells
            .iter()
            .filter(|(_, col, _, _)| kept.contains(col.as_str()))
            .map(|(row, col, p, alert)| {
                json!({
                    "row": row,
                    "key": col,
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
            "rows": rows,
            "columns": cols.iter().map(|(k, label, n)| json!({"key": k, "label": label, "active_clients": n})).collect::<Vec<_>>(),
            "cells": cells,
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

/// The query of `GET /v1/heatmap`, parsed.
pub fn parse_heatmap_query(query: &str) -> Result<HeatDim, String> {
    let params = parse_query(query)?;
    match params.get("dim").map(String::as_str) {
        None | Some("asn") => Ok(HeatDim::Asn),
        Some("country") => Ok(HeatDim::Country),
        Some(other) => Err(format!("parameter `dim`: {other:?} is not one of asn, country")),
    }
}

/// `a=1&b=x%20y` into a map (later duplicates win); bad percent escapes are errors.
fn parse_query(query: &str) -> Result<BTreeMap<String, String>, String> {
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
        assert_eq!(parse_heatmap_query("").unwrap(), HeatDim::Asn);
        assert_eq!(parse_heatmap_query("dim=country").unwrap(), HeatDim::Country);
        assert!(parse_heatmap_query("dim=city").unwrap_err().contains("`dim`"));
    }
}
