//! Fleet mode (`[fleet]`, off by default): collectors share what they accepted through a NATS
//! JetStream stream, so every detector sees the whole fleet, and only one collector pages for
//! an alert that several detectors raise.
//!
//! ```text
//!  ingest ──Store::commit_with_outbox: batch + tree `fleet_outbox` entry, one group commit,
//!    │       synced before the 202 (a duplicate writes its entry too)──▶ publisher
//!    │ NATS unreachable: Feed ─▶ observe_once (local), entry marked    │ Nats-Msg-Id = hex(digest)
//!    │ "fed locally"                                                   ▼
//!    │                                                   JetStream stream `VANTAGE`
//!    ▼                                                   (subject `vantage.batches`)
//!  observe_once(digest) ◀── consumer (ordered, whole stream) ◀──────────┘
//!    │ digest in tree `fleet_seen` (kept store.dedup_days)? skip : insert, then
//!    └─▶ Alerting::observe
//!
//!  Alerting (new alert state) ──NotifyGate──▶ tree `fleet_alert_outbox` ──▶ alert publisher
//!      ──▶ stream `VANTAGE_ALERTS` (Nats-Msg-Id = "{id}-{state}") ──PubAck.duplicate == false──▶
//!      Alerting::queue_notification (this collector pages); duplicate: another one did.
//! ```
//!
//! **Nothing accepted is lost.** The outbox entry is written in the store's own group commit
//! (see "The fleet outbox" in [`store`](crate::store)), so a batch acknowledged with `202` is
//! in the outbox even if the collector dies right after the commit; the publisher drains the
//! outbox after a restart. An entry is deleted only after JetStream acknowledged it. The one
//! exception is the byte bound: beyond `max_buffer_bytes` the oldest entries are dropped and
//! counted (`vantage_fleet_outbox_dropped_total`); they stay in the local store and were fed to
//! the local detector.
//!
//! **Counted once, whatever the delay.** An envelope can reach the stream more than once: a
//! re-publish after a lost ack, the duplicate path above, or two collectors that both accepted
//! it (an agent failed over after a lost `202`). JetStream's `Nats-Msg-Id` window (10 minutes)
//! drops close copies; every consumer also keeps the digests it fed to its detector in the
//! tree `fleet_seen` (with a time index, forgotten after the store's dedup horizon,
//! `store.dedup_days`, the same horizon beyond which the ingest path refuses an envelope), and
//! skips a digest it has seen (`vantage_fleet_skipped_duplicate_total`). Batches fed locally
//! during an outage go through the same set, so this collector skips them when they come back
//! through the stream.
//!
//! **Partitions.** While a publish fails (or the NATS connection is down), accepted batches are
//! fed to the local detector at once and their outbox entries are marked; they are published
//! later with the header `Vantage-Fed-Locally: <collector_id>`, and this collector's consumer
//! skips them (the others count them). Alert events that cannot be published within
//! `publish_timeout_ms` are paged locally: during a partition, several collectors may page the
//! same alert.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use vantage_agent::report::UnixMillis;
use vantage_agent::taxonomy::{ErrorType, NetworkType, Phase, Scope};

use crate::alerting::Alerting;
use crate::config::FleetConfig;
use crate::detect::{AlertEvent, AlertState};
use crate::model::{Country, Enrichment, NetTag, Source, StoredReport, StoredTargets};
use crate::store::{Store, StoreError};

mod seen;

/// Version of the batch encoding on the stream (the `v` field).
const WIRE_VERSION: u8 = 1;
/// Header naming the collector that already fed a batch to its own detector.
const FED_LOCALLY_HEADER: &str = "Vantage-Fed-Locally";
/// JetStream's deduplication header.
const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// Deduplication window of the batch stream (re-publishes after a lost ack).
const BATCH_DEDUP_WINDOW: Duration = Duration::from_secs(600);
/// Deduplication window of the alert stream: one page per alert state across the fleet.
const ALERT_DEDUP_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How long the streams keep messages.
const BATCH_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// ... and alert events.
const ALERT_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// Publishes in flight at once (acks awaited in order).
const PUBLISH_WINDOW: usize = 64;
/// How often digests older than the dedup horizon are forgotten from the seen set.
const SEEN_PRUNE_PERIOD: Duration = Duration::from_secs(60);
/// How often the seen set's digests recorded since its last row are written as a row.
const SEEN_FLUSH_PERIOD: Duration = Duration::from_secs(1);
/// The seen set's rows (`seen.rs`).
const SEEN_TREE: &str = "fleet_seen_rows";
/// The trees of the seen set before `seen.rs` (a key per digest), read once into it.
const OLD_SEEN_TREES: [&str; 2] = ["fleet_seen", "fleet_seen_by_time"];
/// Retry delays while NATS is unreachable.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// ... at most.
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// Why fleet mode could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum FleetError {
    /// The outbox trees could not be opened or read.
    #[error("fleet outbox: {0}")]
    Store(#[from] StoreError),
    /// The outbox could not be read.
    #[error("fleet outbox: {0}")]
    Outbox(String),
    /// The NATS client refused the options or the URL.
    #[error("fleet.nats_url: {0}")]
    Connect(String),
}

/// Opens the seen set (`seen.rs`) from its rows, forgetting what is past `cutoff` (the dedup
/// horizon) or `max`. A store with the set's earlier trees (a key per digest) has them read
/// into it, oldest first, and dropped.
fn open_seen(store: &Store, max: usize, cutoff: u64) -> Result<seen::Seen, FleetError> {
    let sled = |e: sled::Error| FleetError::Outbox(format!("seen-digest set: {e}"));
    let (mut seen, _) = seen::Seen::load(store.open_tree(SEEN_TREE)?, max, cutoff).map_err(sled)?;
    let by_time = OLD_SEEN_TREES[1];
    if !store.has_tree(by_time) {
        return Ok(seen);
    }
    let mut moved = 0u64;
    // Its keys: time (u64 BE) ‖ digest, in the order they were recorded.
    for item in store.open_tree(by_time)?.iter() {
        let (key, _) = item.map_err(sled)?;
        let (Ok(at), Ok(digest)) = (
            <[u8; 8]>::try_from(key.get(..8).unwrap_or_default()),
            <[u8; 32]>::try_from(key.get(8..).unwrap_or_default()),
        ) else {
            continue;
        };
        let at = u64::from_be_bytes(at);
        if at >= cutoff && seen.insert(&digest, at).0 {
            moved += 1;
        }
    }
    seen.flush().map_err(sled)?;
    for name in OLD_SEEN_TREES {
        store.drop_tree(name)?;
    }
    tracing::info!(digests = moved, "fleet: seen-digest set moved to its rows");
    Ok(seen)
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    publish_failures: AtomicU64,
    /// Signed: the publisher can delete an entry (the store wrote it) before the feed counted
    /// it in; the two updates commute, so the sum is right once both happened.
    outbox_batches: AtomicI64,
    /// ... likewise.
    outbox_bytes: AtomicI64,
    outbox_dropped: AtomicU64,
    consumed: AtomicU64,
    skipped_local: AtomicU64,
    skipped_duplicate: AtomicU64,
    seen_expired: AtomicU64,
    /// Seen digests forgotten at `fleet.max_seen_digests`.
    seen_evicted: AtomicU64,
    /// Digests in the seen set.
    seen_digests: AtomicU64,
    fed_locally: AtomicU64,
    decode_errors: AtomicU64,
    alerts_paged: AtomicU64,
    alerts_suppressed: AtomicU64,
    alerts_paged_locally: AtomicU64,
}

/// A running fleet connection: outbox publisher, stream consumer and alert publisher. See the
/// [module docs](self).
pub(crate) struct Fleet {
    config: FleetConfig,
    client: async_nats::Client,
    js: jetstream::Context,
    outbox: sled::Tree,
    alert_outbox: sled::Tree,
    /// Digests fed to this collector's detector (`seen.rs`).
    seen: Mutex<seen::Seen>,
    /// The store's dedup horizon: how long `seen` keeps a digest.
    admission: crate::store::Admission,
    alerting: Arc<Alerting>,
    /// Serialises the byte bound (counters and the oldest entries dropped).
    append: Mutex<()>,
    /// The last publish succeeded (cleared by a failure or a timeout).
    online: AtomicBool,
    /// Highest outbox key the publisher has fed locally while offline.
    fed_upto: AtomicU64,
    /// The store, for how far its outbox is durable ([`Store::outbox_durable_below`]).
    store: Store,
    wake: Notify,
    wake_alerts: Notify,
    stop: watch::Sender<bool>,
    /// Bumped on every (re)connection to NATS.
    connections: watch::Sender<u64>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    counters: Counters,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may carry credentials (nats://user:pass@host): not printed.
        f.debug_struct("Fleet")
            .field("collector_id", &self.config.collector_id)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Fleet {
    /// Opens the outbox trees of `store`, starts connecting to NATS (in the background: an
    /// unreachable NATS does not stop the collector), installs the alert gate on `alerting`,
    /// and spawns the publisher, consumer and alert publisher. Call inside a tokio runtime.
    pub(crate) async fn start(
        config: FleetConfig,
        store: &Store,
        alerting: Arc<Alerting>,
    ) -> Result<Arc<Fleet>, FleetError> {
        let outbox = store.open_tree(crate::store::FLEET_OUTBOX_TREE)?;
        let alert_outbox = store.open_tree("fleet_alert_outbox")?;
        let counters = Counters::default();
        let cutoff = store.admission().dedup_cutoff(crate::clock::now_millis()).0;
        let seen = open_seen(store, config.max_seen_digests, cutoff)?;
        counters.seen_digests.store(seen.len() as u64, Ordering::Relaxed);
        let (mut batches, mut bytes) = (0, 0);
        for entry in outbox.iter() {
            let (_, v) = entry.map_err(|e| FleetError::Outbox(e.to_string()))?;
            batches += 1;
            bytes += signed(v.len());
        }
        counters.outbox_batches.store(batches, Ordering::Relaxed);
        counters.outbox_bytes.store(bytes, Ordering::Relaxed);
        // Counts (re)connections: the consumer reopens after each one (see `consume_loop`).
        let (connections, _) = watch::channel(0u64);
        let count = connections.clone();
        let client = async_nats::ConnectOptions::new()
            .name(format!("vantage-collector-{}", config.collector_id))
            .event_callback(move |event| {
                if matches!(event, async_nats::Event::Connected) {
                    count.send_modify(|n| *n += 1);
                }
                std::future::ready(())
            })
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_millis(config.publish_timeout_ms))
            .reconnect_delay_callback(|attempts| {
                let exp = u32::try_from(attempts.min(5)).unwrap_or(5);
                (BACKOFF_MIN * 2u32.pow(exp)).min(BACKOFF_MAX)
            })
            .connect(config.nats_url.as_str())
            .await
            .map_err(|e| FleetError::Connect(e.to_string()))?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(Duration::from_millis(config.publish_timeout_ms));
        let (stop, _) = watch::channel(false);
        let fleet = Arc::new(Fleet {
            config,
            client,
            js,
            outbox,
            alert_outbox,
            seen: Mutex::new(seen),
            admission: store.admission(),
            alerting: alerting.clone(),
            append: Mutex::new(()),
            online: AtomicBool::new(true),
            fed_upto: AtomicU64::new(0),
            store: store.clone(),
            wake: Notify::new(),
            wake_alerts: Notify::new(),
            stop,
            connections,
            tasks: Mutex::new(Vec::new()),
            counters,
        });
        if let Some(since) = alerting.replayed_since() {
            let marked = fleet.mark_replayed(since);
            if marked > 0 {
                tracing::info!(batches = marked, "fleet: own unpublished batches already replayed");
            }
        }
        let weak = Arc::downgrade(&fleet);
        alerting.set_notify_gate(Arc::new(move |event: &AlertEvent| match weak.upgrade() {
            Some(fleet) => fleet.gate(event),
            None => true,
        }));
        let started = time::OffsetDateTime::now_utc();
        let tasks = vec![
            tokio::spawn(fleet.clone().publish_loop(fleet.stop.subscribe())),
            tokio::spawn(fleet.clone().consume_loop(started, fleet.stop.subscribe())),
            tokio::spawn(fleet.clone().alert_loop(fleet.stop.subscribe())),
            tokio::spawn(fleet.clone().prune_loop(fleet.stop.subscribe())),
        ];
        *fleet.tasks.lock().unwrap_or_else(PoisonError::into_inner) = tasks;
        tracing::info!(collector_id = %fleet.config.collector_id, "fleet mode on");
        Ok(fleet)
    }

    /// The outbox entry for one batch, for [`Store::commit_with_outbox`]: a flag byte (1:
    /// `fed_locally`, the caller gives the batch to the local detector itself because NATS is
    /// unreachable), the digest (the stream's `Nats-Msg-Id`), and the stream payload.
    pub(crate) fn outbox_entry(
        &self,
        digest: &[u8; 32],
        reports: &[StoredReport],
        targets: &[StoredTargets],
        fed_locally: bool,
    ) -> Vec<u8> {
        let payload = encode_batch(digest, reports, targets);
        let mut value = Vec::with_capacity(33 + payload.len());
        value.push(u8::from(fed_locally));
        value.extend_from_slice(digest);
        value.extend_from_slice(&payload);
        value
    }

    /// Called after the store committed an outbox entry of `len` bytes: counts it, applies the
    /// byte bound and wakes the publisher.
    pub(crate) fn enqueued(&self, len: usize) {
        {
            let _guard = self.append.lock().unwrap_or_else(PoisonError::into_inner);
            self.counters.outbox_batches.fetch_add(1, Ordering::Relaxed);
            self.counters.outbox_bytes.fetch_add(signed(len), Ordering::Relaxed);
            if let Err(e) = self.make_room(0) {
                tracing::error!(error = %e, "fleet outbox bound");
            }
        }
        self.wake.notify_one();
    }

    /// Feeds a batch to this collector's detector unless its digest was fed already (from the
    /// stream, or locally during an outage); records the digest. Returns whether it was fed.
    /// The check and the insert are one transaction, so two paths racing on one digest feed it
    /// once.
    fn observe_once(
        &self,
        digest: &[u8; 32],
        reports: &[StoredReport],
        targets: &[StoredTargets],
    ) -> bool {
        let first = {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            let (first, evicted) = seen.insert(digest, crate::clock::now_millis().0);
            if first {
                self.counters.seen_evicted.fetch_add(evicted, Ordering::Relaxed);
                self.counters.seen_digests.store(seen.len() as u64, Ordering::Relaxed);
            }
            first
        };
        if first {
            self.alerting.observe(reports, targets);
        }
        first
    }

    /// At start, after the detector replayed what the store received after `since`: the
    /// outbox entries (not yet published) of batches received after `since` are in the
    /// detector already, so their digests go into the seen set and the stream's copy is not fed
    /// again. Entries fed locally carry their own marker; entries from before `since` were not
    /// replayed and are fed once from the stream. Returns how many were marked.
    fn mark_replayed(&self, since: u64) -> usize {
        let mut marked = 0;
        for (_, value) in self.outbox.iter().filter_map(Result::ok) {
            if value.len() < 33 || value[0] == 1 {
                continue;
            }
            let Ok(batch) = decode_batch(&value[33..]) else { continue };
            let after = batch.reports.iter().map(|r| r.received_at.0);
            let after = after.chain(batch.targets.iter().map(|t| t.received_at.0));
            if after.into_iter().any(|at| at > since) {
                let mut digest = [0u8; 32];
                digest.copy_from_slice(&value[1..33]);
                // Nothing to feed: only the digest is recorded.
                if self.observe_once(&digest, &[], &[]) {
                    marked += 1;
                }
            }
        }
        marked
    }

    /// Feeds a batch accepted while NATS is unreachable to the local detector now (once, see
    /// [`Fleet::observe_once`]); its outbox entry carries the "fed locally" flag.
    pub(crate) fn feed_locally(
        &self,
        digest: &[u8; 32],
        reports: &[StoredReport],
        targets: &[StoredTargets],
    ) {
        if self.observe_once(digest, reports, targets) {
            self.counters.fed_locally.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Forgets seen digests recorded before the store's dedup horizon; returns how many.
    fn prune_seen(&self, now: UnixMillis) -> u64 {
        let cutoff = self.admission.dedup_cutoff(now).0;
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let expired = seen.forget_before(cutoff).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "fleet seen-digest expiry");
            0
        });
        self.counters.seen_digests.store(seen.len() as u64, Ordering::Relaxed);
        expired
    }

    /// Writes the seen digests recorded since the last row (`seen.rs`).
    fn flush_seen(&self) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = seen.flush() {
            tracing::warn!(error = %e, "fleet seen-digest set: a row could not be written");
        }
    }

    /// Writes the seen set's pending digests every [`SEEN_FLUSH_PERIOD`] and at stop, and
    /// expires it every [`SEEN_PRUNE_PERIOD`].
    async fn prune_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut pruned: Option<tokio::time::Instant> = None;
        loop {
            let fleet = Arc::clone(&self);
            let prune = pruned.is_none_or(|at| at.elapsed() >= SEEN_PRUNE_PERIOD);
            if prune {
                pruned = Some(tokio::time::Instant::now());
            }
            if let Ok(n) = tokio::task::spawn_blocking(move || {
                fleet.flush_seen();
                if prune { fleet.prune_seen(crate::clock::now_millis()) } else { 0 }
            })
            .await
            {
                self.counters.seen_expired.fetch_add(n, Ordering::Relaxed);
            }
            tokio::select! {
                _ = tokio::time::sleep(SEEN_FLUSH_PERIOD) => {}
                _ = stop.changed() => {
                    let fleet = Arc::clone(&self);
                    let _ = tokio::task::spawn_blocking(move || fleet.flush_seen()).await;
                    return;
                }
            }
        }
    }

    /// Whether batches currently go through the stream (the last publish succeeded and the
    /// connection is up).
    pub(crate) fn is_online(&self) -> bool {
        self.online.load(Ordering::Relaxed)
            && self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Drops the oldest outbox entries until `incoming` more bytes fit the bound.
    fn make_room(&self, incoming: u64) -> Result<(), StoreError> {
        let max = self.config.max_buffer_bytes;
        while self.counters.outbox_bytes.load(Ordering::Relaxed).saturating_add(signed(incoming))
            > signed(max)
        {
            let Some((k, v)) =
                self.outbox.pop_min().map_err(|e| StoreError::Io(format!("fleet outbox: {e}")))?
            else {
                break;
            };
            tracing::warn!(key = key_seq(&k), "fleet outbox full: oldest batch dropped");
            self.counters.outbox_dropped.fetch_add(1, Ordering::Relaxed);
            self.counters.outbox_batches.fetch_sub(1, Ordering::Relaxed);
            self.counters.outbox_bytes.fetch_sub(signed(v.len()), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Stops the tasks and closes the NATS connection (flushing what it buffered, for at
    /// most `publish_timeout_ms`). What is left in the outboxes is published after a restart.
    pub(crate) async fn stop(&self) {
        let _ = self.stop.send(true);
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(PoisonError::into_inner));
        for task in tasks {
            let _ = task.await;
        }
        let _ = self.outbox.flush_async().await;
        let timeout = Duration::from_millis(self.config.publish_timeout_ms);
        let _ = tokio::time::timeout(timeout, self.client.drain()).await;
    }

    async fn ensure_streams(&self) -> Result<(), String> {
        let c = &self.config;
        for (name, subject, window, max_age) in [
            (c.stream.clone(), &c.subject, BATCH_DEDUP_WINDOW, BATCH_MAX_AGE),
            (c.alert_stream(), &c.alert_subject, ALERT_DEDUP_WINDOW, ALERT_MAX_AGE),
        ] {
            self.js
                .get_or_create_stream(stream::Config {
                    name: name.clone(),
                    subjects: vec![subject.clone()],
                    storage: stream::StorageType::File,
                    duplicate_window: window,
                    max_age,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("stream {name}: {e}"))?;
        }
        Ok(())
    }

    /// Publishes the outbox in order; deletes an entry only after its ack.
    async fn publish_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut streams_ready = false;
        let mut backoff = BACKOFF_MIN;
        loop {
            if *stop.borrow() {
                return;
            }
            // Only entries already synced with their batch: one published before its group's
            // sync could reach the stream and then vanish from the store in a crash.
            let below = self.store.outbox_durable_below();
            let entries: Vec<_> = self
                .outbox
                .range(..below.to_be_bytes())
                .take(PUBLISH_WINDOW)
                .filter_map(Result::ok)
                .collect();
            if entries.is_empty() {
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = stop.changed() => {}
                }
                continue;
            }
            let result = if streams_ready { Ok(()) } else { self.ensure_streams().await };
            let result = match result {
                Ok(()) => {
                    streams_ready = true;
                    self.publish_entries(&entries).await
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    backoff = BACKOFF_MIN;
                    self.online.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    self.counters.publish_failures.fetch_add(1, Ordering::Relaxed);
                    if self.online.swap(false, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "fleet: cannot publish; detecting locally");
                    }
                    // A failure may be a restarted server without our streams.
                    streams_ready = false;
                    self.feed_outbox_locally();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Publishes a run of outbox entries, then awaits their acks in order, deleting each
    /// acknowledged entry. Stops at the first failure.
    async fn publish_entries(&self, entries: &[(sled::IVec, sled::IVec)]) -> Result<(), String> {
        let timeout = Duration::from_millis(self.config.publish_timeout_ms);
        let mut pending = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            if value.len() < 33 {
                // Invariant: submit writes flag + digest + payload; anything shorter is not ours.
                let _ = self.outbox.remove(key);
                continue;
            }
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(MSG_ID_HEADER, hex(&value[1..33]).as_str());
            if value[0] == 1 {
                headers.insert(FED_LOCALLY_HEADER, self.config.collector_id.as_str());
            }
            let payload = Bytes::copy_from_slice(&value[33..]);
            let publish =
                self.js.publish_with_headers(self.config.subject.clone(), headers, payload);
            let ack = tokio::time::timeout(timeout, publish)
                .await
                .map_err(|_| "publish timed out".to_owned())?
                .map_err(|e| format!("publish: {e}"))?;
            pending.push((key, value.len(), ack));
        }
        for (key, len, ack) in pending {
            tokio::time::timeout(timeout, ack)
                .await
                .map_err(|_| "ack timed out".to_owned())?
                .map_err(|e| format!("ack: {e}"))?;
            if self.outbox.remove(key).ok().flatten().is_some() {
                self.counters.outbox_batches.fetch_sub(1, Ordering::Relaxed);
                self.counters.outbox_bytes.fetch_sub(signed(len), Ordering::Relaxed);
            }
            self.counters.published.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// While offline: feeds outbox entries not fed yet to the local detector and marks them.
    fn feed_outbox_locally(&self) {
        let from = self.fed_upto.load(Ordering::Relaxed) + 1;
        let below = self.store.outbox_durable_below();
        if from >= below {
            return;
        }
        let range = self.outbox.range(from.to_be_bytes()..below.to_be_bytes());
        for (key, value) in range.filter_map(Result::ok) {
            self.fed_upto.fetch_max(key_seq(&key), Ordering::Relaxed);
            if value.len() < 33 || value[0] == 1 {
                continue;
            }
            match decode_batch(&value[33..]) {
                Ok(batch) => {
                    if self.observe_once(&batch.digest, &batch.reports, &batch.targets) {
                        self.counters.fed_locally.fetch_add(1, Ordering::Relaxed);
                    }
                    let mut marked = value.to_vec();
                    marked[0] = 1;
                    // Only if the publisher has not deleted it meanwhile.
                    let _ = self.outbox.compare_and_swap(&key, Some(&value), Some(marked));
                }
                Err(e) => {
                    self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "fleet outbox entry unreadable");
                }
            }
        }
    }

    /// Consumes the whole batch stream (from this start on) into the local detector.
    async fn consume_loop(
        self: Arc<Self>,
        started: time::OffsetDateTime,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut next = consumer::DeliverPolicy::ByStartTime { start_time: started };
        let mut backoff = BACKOFF_MIN;
        loop {
            if *stop.borrow() {
                return;
            }
            let mut connections = self.connections.subscribe();
            connections.borrow_and_update();
            // Opening waits on JetStream requests; a stop must not wait for their timeouts.
            let opened = tokio::select! {
                opened = self.open_consumer(next) => opened,
                _ = stop.changed() => return,
            };
            match opened {
                Ok(mut messages) => {
                    backoff = BACKOFF_MIN;
                    loop {
                        let item = tokio::select! {
                            item = futures_next(&mut messages) => item,
                            _ = stop.changed() => return,
                            // A restarted server may have lost the ephemeral consumer; the
                            // client would notice only after missed heartbeats (~15 s).
                            _ = connections.changed() => {
                                tracing::debug!("fleet: reconnected; reopening the consumer");
                                break;
                            }
                        };
                        match item {
                            Some(Ok(message)) => {
                                if let Ok(info) = message.info() {
                                    next = consumer::DeliverPolicy::ByStartSequence {
                                        start_sequence: info.stream_sequence + 1,
                                    };
                                }
                                self.handle_message(&message);
                            }
                            Some(Err(e)) => {
                                tracing::debug!(error = %e, "fleet consumer interrupted");
                                break;
                            }
                            None => break,
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "fleet consumer not open yet"),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    async fn open_consumer(
        &self,
        deliver_policy: consumer::DeliverPolicy,
    ) -> Result<consumer::pull::Ordered, String> {
        self.ensure_streams().await?;
        let stream = self.js.get_stream(&self.config.stream).await.map_err(|e| e.to_string())?;
        let consumer = stream
            .create_consumer(consumer::pull::OrderedConfig { deliver_policy, ..Default::default() })
            .await
            .map_err(|e| e.to_string())?;
        consumer.messages().await.map_err(|e| e.to_string())
    }

    /// Feeds a batch from the stream to the detector unless it was fed already, and counts it.
    /// `fed_here`: it carries this collector's "fed locally" header.
    fn consume(&self, batch: &DecodedBatch, fed_here: bool) {
        // Fed by this collector when its entry was marked: skipped by the header, so not even
        // a seen set that forgot the digest meanwhile (a partition longer than
        // `max_seen_digests` batches) feeds it twice.
        let counter = if fed_here {
            &self.counters.skipped_local
        } else if self.observe_once(&batch.digest, &batch.reports, &batch.targets) {
            &self.counters.consumed
        } else {
            &self.counters.skipped_duplicate
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn handle_message(&self, message: &jetstream::Message) {
        let fed_here = message
            .headers
            .as_ref()
            .and_then(|h| h.get(FED_LOCALLY_HEADER))
            .is_some_and(|v| v.as_str() == self.config.collector_id);
        match decode_batch(&message.payload) {
            Ok(batch) => self.consume(&batch, fed_here),
            Err(e) => {
                self.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "fleet: undecodable batch on the stream skipped");
            }
        }
    }

    /// The [`NotifyGate`](crate::alerting::NotifyGate): keeps the event in the alert outbox
    /// for the alert publisher, which decides who pages.
    fn gate(&self, event: &AlertEvent) -> bool {
        let stored = serde_json::to_vec(event).map_err(|e| e.to_string()).and_then(|bytes| {
            let key = self
                .alert_outbox
                .last()
                .map_err(|e| e.to_string())?
                .map_or(1, |(k, _)| key_seq(&k) + 1);
            self.alert_outbox.insert(key.to_be_bytes(), bytes).map_err(|e| e.to_string())
        });
        match stored {
            Ok(_) => {
                self.wake_alerts.notify_one();
                false
            }
            Err(e) => {
                // Better a possible duplicate page than none.
                tracing::error!(error = %e, "fleet alert outbox; paging locally");
                self.counters.alerts_paged_locally.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }

    /// Publishes alert events; the collector whose publish was not a duplicate pages.
    async fn alert_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let timeout = Duration::from_millis(self.config.publish_timeout_ms);
        loop {
            if *stop.borrow() {
                return;
            }
            let Some(Ok((key, value))) = self.alert_outbox.iter().next() else {
                tokio::select! {
                    _ = self.wake_alerts.notified() => {}
                    _ = stop.changed() => {}
                }
                continue;
            };
            let event: AlertEvent = match serde_json::from_slice(&value) {
                Ok(event) => event,
                Err(e) => {
                    tracing::error!(error = %e, "fleet alert outbox entry unreadable; dropped");
                    let _ = self.alert_outbox.remove(&key);
                    continue;
                }
            };
            let alert = event.alert();
            let state = match alert.state {
                AlertState::Firing => "firing",
                AlertState::Resolved => "resolved",
            };
            let msg_id = format!("{}-{state}", alert.id);
            let outcome = async {
                self.ensure_streams().await?;
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(MSG_ID_HEADER, msg_id.as_str());
                let payload = Bytes::from(value.to_vec());
                let ack = self
                    .js
                    .publish_with_headers(self.config.alert_subject.clone(), headers, payload)
                    .await
                    .map_err(|e| e.to_string())?
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<bool, String>(ack.duplicate)
            };
            let page = match tokio::time::timeout(timeout, outcome).await {
                Ok(Ok(false)) => {
                    self.counters.alerts_paged.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Ok(Ok(true)) => {
                    self.counters.alerts_suppressed.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, id = %alert.id, "alert not published; paging locally");
                    self.counters.alerts_paged_locally.fetch_add(1, Ordering::Relaxed);
                    true
                }
                Err(_) => {
                    tracing::warn!(id = %alert.id, "alert publish timed out; paging locally");
                    self.counters.alerts_paged_locally.fetch_add(1, Ordering::Relaxed);
                    true
                }
            };
            if page
                && let Err(e) = self.alerting.queue_notification(&event, crate::clock::now_millis())
            {
                tracing::error!(error = %e, id = %alert.id, "could not queue a notification");
            }
            let _ = self.alert_outbox.remove(&key);
            let _ = self.alert_outbox.flush_async().await;
        }
    }

    /// Prometheus text for the fleet: publishing, the outbox, consuming and alert paging.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        let c = &self.counters;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let gauge = |a: &AtomicI64| u64::try_from(a.load(Ordering::Relaxed)).unwrap_or(0);
        let families: [(&str, &str, &str, u64); 17] = [
            (
                "vantage_fleet_connected",
                "gauge",
                "1 while batches go through NATS, 0 while detecting locally.",
                u64::from(self.is_online()),
            ),
            (
                "vantage_fleet_published_total",
                "counter",
                "Batches JetStream acknowledged.",
                load(&c.published),
            ),
            (
                "vantage_fleet_publish_failures_total",
                "counter",
                "Publish attempts that failed or timed out.",
                load(&c.publish_failures),
            ),
            (
                "vantage_fleet_outbox_batches",
                "gauge",
                "Accepted batches not yet acknowledged by JetStream.",
                gauge(&c.outbox_batches),
            ),
            ("vantage_fleet_outbox_bytes", "gauge", "Bytes of the outbox.", gauge(&c.outbox_bytes)),
            (
                "vantage_fleet_outbox_dropped_total",
                "counter",
                "Oldest outbox batches dropped at fleet.max_buffer_bytes (kept locally).",
                load(&c.outbox_dropped),
            ),
            (
                "vantage_fleet_consumed_total",
                "counter",
                "Batches from the stream fed to the detector.",
                load(&c.consumed),
            ),
            (
                "vantage_fleet_skipped_local_total",
                "counter",
                "Batches from the stream skipped: already fed locally during an outage.",
                load(&c.skipped_local),
            ),
            (
                "vantage_fleet_skipped_duplicate_total",
                "counter",
                "Batches from the stream skipped: their digest was fed already (another \
                 collector accepted the same envelope, or a re-publish).",
                load(&c.skipped_duplicate),
            ),
            (
                "vantage_fleet_seen_expired_total",
                "counter",
                "Seen digests forgotten after the dedup horizon (store.dedup_days).",
                load(&c.seen_expired),
            ),
            (
                "vantage_fleet_seen_evicted_total",
                "counter",
                "Seen digests forgotten at fleet.max_seen_digests (a later copy is fed again).",
                load(&c.seen_evicted),
            ),
            (
                "vantage_fleet_seen_digests",
                "gauge",
                "Digests of batches fed to the detector that the duplicate test holds.",
                load(&c.seen_digests),
            ),
            (
                "vantage_fleet_fed_locally_total",
                "counter",
                "Batches fed to the local detector while NATS was unreachable.",
                load(&c.fed_locally),
            ),
            (
                "vantage_fleet_decode_errors_total",
                "counter",
                "Batches that could not be decoded.",
                load(&c.decode_errors),
            ),
            (
                "vantage_fleet_alerts_paged_total",
                "counter",
                "Alert events this collector pages for (first in the fleet).",
                load(&c.alerts_paged),
            ),
            (
                "vantage_fleet_alerts_suppressed_total",
                "counter",
                "Alert events another collector already pages for.",
                load(&c.alerts_suppressed),
            ),
            (
                "vantage_fleet_alerts_paged_locally_total",
                "counter",
                "Alert events paged without the fleet (NATS unreachable).",
                load(&c.alerts_paged_locally),
            ),
        ];
        crate::metrics::write_families(out, &families);
    }
}

async fn futures_next(
    messages: &mut consumer::pull::Ordered,
) -> Option<Result<jetstream::Message, consumer::pull::OrderedError>> {
    use futures_util::StreamExt as _;
    messages.next().await
}

/// A size as the signed outbox counters take it.
fn signed(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

fn key_seq(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if key.len() == 8 {
        b.copy_from_slice(key);
    }
    u64::from_be_bytes(b)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex<const N: usize>(s: &str, field: &str) -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    if s.len() != N * 2 || !s.is_ascii() {
        return Err(format!("{field}: expected {} hex digits", N * 2));
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16)
            .map_err(|_| format!("{field}: not hex"))?;
    }
    Ok(out)
}

/// A batch on the stream (JSON). No client IP: the keyed [`NetTag`] and enrichment only.
#[derive(Debug, Serialize, Deserialize)]
struct WireBatch {
    v: u8,
    digest: String,
    reports: Vec<WireReport>,
    targets: Vec<WireTargets>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireReport {
    id: String,
    received_at: u64,
    event_at: u64,
    source: String,
    service: String,
    host: String,
    phase: String,
    error_type: String,
    elapsed_ms: u32,
    status: Option<u16>,
    network: String,
    scope: String,
    count: u32,
    sample_ppm: u32,
    client: Option<String>,
    net: u64,
    asn: Option<u32>,
    country: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct WireTargets {
    received_at: u64,
    event_at: u64,
    service: String,
    host: String,
    attempts: u64,
    successes: u64,
    client: String,
    net: u64,
    asn: Option<u32>,
    country: Option<String>,
}

/// What a decoded stream message holds.
struct DecodedBatch {
    digest: [u8; 32],
    reports: Vec<StoredReport>,
    targets: Vec<StoredTargets>,
}

fn encode_batch(digest: &[u8; 32], reports: &[StoredReport], targets: &[StoredTargets]) -> Vec<u8> {
    let batch = WireBatch {
        v: WIRE_VERSION,
        digest: hex(digest),
        reports: reports
            .iter()
            .map(|r| WireReport {
                id: hex(&r.id),
                received_at: r.received_at.0,
                event_at: r.event_at.0,
                source: r.source.as_str().into(),
                service: r.service.clone(),
                host: r.host.clone(),
                phase: r.phase.as_str().into(),
                error_type: r.error_type.as_str().into(),
                elapsed_ms: r.elapsed_ms,
                status: r.status,
                network: r.network.as_str().into(),
                scope: r.scope.as_str().into(),
                count: r.count,
                sample_ppm: r.sample_ppm,
                client: r.client.as_ref().map(|c| hex(c)),
                net: r.net.0,
                asn: r.enrichment.asn,
                country: r.enrichment.country.map(|c| c.as_str().to_owned()),
            })
            .collect(),
        targets: targets
            .iter()
            .map(|t| WireTargets {
                received_at: t.received_at.0,
                event_at: t.event_at.0,
                service: t.service.clone(),
                host: t.host.clone(),
                attempts: t.attempts,
                successes: t.successes,
                client: hex(&t.client),
                net: t.net.0,
                asn: t.enrichment.asn,
                country: t.enrichment.country.map(|c| c.as_str().to_owned()),
            })
            .collect(),
    };
    serde_json::to_vec(&batch).expect("a batch of strings and integers always encodes as JSON")
}

fn decode_batch(bytes: &[u8]) -> Result<DecodedBatch, String> {
    let w: WireBatch = serde_json::from_slice(bytes).map_err(|e| format!("batch: {e}"))?;
    if w.v != WIRE_VERSION {
        return Err(format!("batch.v: version {} is not supported", w.v));
    }
    let enrichment = |asn: Option<u32>, country: Option<String>| Enrichment {
        asn,
        country: country.as_deref().and_then(Country::parse),
    };
    let mut reports = Vec::with_capacity(w.reports.len());
    for (i, r) in w.reports.into_iter().enumerate() {
        let field = |f: &str| format!("batch.reports[{i}].{f}");
        let source = match r.source.as_str() {
            "agent" => Source::Agent,
            "nel" => Source::Nel,
            other => return Err(format!("{}: unknown {other:?}", field("source"))),
        };
        let phase: Phase = r.phase.parse().map_err(|e| format!("{}: {e}", field("phase")))?;
        let error_type = ErrorType::from_label(&r.error_type)
            .map_err(|e| format!("{}: {e}", field("error_type")))?;
        reports.push(StoredReport {
            id: unhex::<16>(&r.id, &field("id"))?,
            received_at: UnixMillis(r.received_at),
            event_at: UnixMillis(r.event_at),
            source,
            service: r.service,
            host: r.host,
            phase,
            error_type,
            elapsed_ms: r.elapsed_ms,
            status: r.status,
            // A value a newer version added reads as `Unknown` (as in the store codec).
            network: r.network.parse().unwrap_or(NetworkType::Unknown),
            scope: r.scope.parse().unwrap_or(Scope::Unknown),
            count: r.count,
            sample_ppm: r.sample_ppm,
            client: r.client.as_deref().map(|c| unhex::<32>(c, &field("client"))).transpose()?,
            net: NetTag(r.net),
            enrichment: enrichment(r.asn, r.country),
        });
    }
    let mut targets = Vec::with_capacity(w.targets.len());
    for (i, t) in w.targets.into_iter().enumerate() {
        targets.push(StoredTargets {
            received_at: UnixMillis(t.received_at),
            event_at: UnixMillis(t.event_at),
            service: t.service,
            host: t.host,
            attempts: t.attempts,
            successes: t.successes,
            client: unhex::<32>(&t.client, &format!("batch.targets[{i}].client"))?,
            net: NetTag(t.net),
            enrichment: enrichment(t.asn, t.country),
        });
    }
    Ok(DecodedBatch { digest: unhex::<32>(&w.digest, "batch.digest")?, reports, targets })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> StoredReport {
        StoredReport {
            id: [3; 16],
            received_at: UnixMillis(1_700_000_000_500),
            event_at: UnixMillis(1_700_000_000_000),
            source: Source::Agent,
            service: "shop".into(),
            host: "api.shop.example".into(),
            phase: Phase::Connection,
            error_type: ErrorType::TcpRefused,
            elapsed_ms: 12,
            status: None,
            network: NetworkType::Wifi,
            scope: Scope::Path,
            count: 2,
            sample_ppm: 1_000_000,
            client: Some([7; 32]),
            net: NetTag(0xdead_beef),
            enrichment: Enrichment { asn: Some(64500), country: Country::parse("DE") },
        }
    }

    /// A store, alerting and a fleet whose NATS is never reachable (the seen-digest set and the
    /// outbox work without it), in `dir`.
    async fn fleet_without_nats(dir: &std::path::Path) -> (Store, Arc<Alerting>, Arc<Fleet>) {
        fleet_with(dir, "").await
    }

    /// [`fleet_without_nats`] with more lines for `[fleet]`.
    async fn fleet_with(dir: &std::path::Path, fleet: &str) -> (Store, Arc<Alerting>, Arc<Fleet>) {
        let text = format!(
            "[server]\nlisten_plain = \"127.0.0.1:0\"\n[keys]\nprivate_key_files = [\"k\"]\n\
             [store]\npath = \"data\"\n[fleet]\nnats_url = \"nats://127.0.0.1:1\"\n\
             collector_id = \"t\"\npublish_timeout_ms = 200\n{fleet}"
        );
        let text = text.as_str();
        let key = crate::open::CollectorKey::from_seed([4; 32]);
        let hex_key: String = key.secret_bytes().iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(dir.join("k"), hex_key).unwrap();
        let config = crate::config::Config::from_toml_str(text, dir).unwrap();
        let store = Store::open(crate::store::StoreConfig::new(dir.join("data"))).unwrap();
        let now = crate::clock::now_millis();
        let alerting =
            Alerting::start(&store, config.detector.clone(), config.notify.clone(), now).unwrap();
        let fleet =
            Fleet::start(config.fleet.clone().unwrap(), &store, alerting.clone()).await.unwrap();
        (store, alerting, fleet)
    }

    /// `vantage_detector_observed_reports_total` as the alerting renders it.
    fn observed_reports(alerting: &Alerting) -> u64 {
        let mut out = String::new();
        alerting.render_metrics(&mut out);
        out.lines()
            .find_map(|l| l.strip_prefix("vantage_detector_observed_reports_total "))
            .unwrap()
            .parse::<u64>()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_digest_feeds_the_detector_once_until_the_dedup_horizon_forgets_it() {
        let dir = tempfile::tempdir().unwrap();
        let (store, alerting, fleet) = fleet_without_nats(dir.path()).await;
        let now = crate::clock::now_millis();
        let observed = || observed_reports(&alerting);
        let (a, b) = ([1; 32], [2; 32]);
        assert!(fleet.observe_once(&a, &[report()], &[]));
        assert!(!fleet.observe_once(&a, &[report()], &[]), "the same digest twice");
        assert!(fleet.observe_once(&b, &[report()], &[]));
        assert_eq!(observed(), 4, "two batches of one report with count 2");
        // Within the horizon nothing is forgotten; past it, both digests are.
        let horizon = store.admission().dedup_horizon().as_millis() as u64;
        assert_eq!(fleet.prune_seen(UnixMillis(now.0 + horizon / 2)), 0);
        assert!(!fleet.observe_once(&b, &[report()], &[]));
        assert_eq!(fleet.prune_seen(UnixMillis(now.0 + horizon + 60_000)), 2);
        assert_eq!(fleet.seen.lock().unwrap().len(), 0);
        assert!(fleet.observe_once(&a, &[report()], &[]), "forgotten: fed again");
        assert_eq!(observed(), 6);
        // Without NATS the consumer is opening a stream: the stop does not wait for that.
        fleet.stop().await;
        store.close().await.unwrap();
    }

    /// The set survives a restart (written at stop), is bounded by `fleet.max_seen_digests`
    /// with the oldest forgotten and counted, and shows both on `/metrics`.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_seen_set_is_bounded_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let digest = |i: u32| {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&i.to_be_bytes());
            d[31] = 1;
            d
        };
        let metric = |fleet: &Fleet, name: &str| {
            let mut out = String::new();
            fleet.render_metrics(&mut out);
            let line = out.lines().find(|l| l.split(' ').next() == Some(name)).unwrap().to_owned();
            line.rsplit(' ').next().unwrap().parse::<u64>().unwrap()
        };
        let extra = "max_seen_digests = 1024\n";
        let (store, alerting, fleet) = fleet_with(dir.path(), extra).await;
        for i in 0..1_500 {
            assert!(fleet.observe_once(&digest(i), &[], &[]), "batch {i}");
        }
        assert_eq!(metric(&fleet, "vantage_fleet_seen_digests"), 1_024);
        assert_eq!(metric(&fleet, "vantage_fleet_seen_evicted_total"), 1_500 - 1_024);
        fleet.stop().await;
        store.close().await.unwrap();
        drop((store, alerting, fleet));

        let (store, _alerting, fleet) = fleet_with(dir.path(), extra).await;
        assert_eq!(metric(&fleet, "vantage_fleet_seen_digests"), 1_024);
        for i in 1_500 - 1_024..1_500 {
            assert!(!fleet.observe_once(&digest(i), &[], &[]), "batch {i} after the restart");
        }
        assert!(fleet.observe_once(&digest(0), &[], &[]), "forgotten at the bound: fed again");
        fleet.stop().await;
        store.close().await.unwrap();
    }

    /// A partition longer than the seen set's bound: what this collector fed locally comes back
    /// through the stream with its header and is skipped by it, not fed a second time for the
    /// digests the set forgot meanwhile; another collector's copy of a batch is fed once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_fed_locally_are_skipped_by_their_header_after_the_set_forgot_them() {
        let dir = tempfile::tempdir().unwrap();
        let (store, alerting, fleet) = fleet_with(dir.path(), "max_seen_digests = 1024\n").await;
        let observed = || observed_reports(&alerting);
        let batch = |i: u32| DecodedBatch {
            digest: {
                let mut d = [0u8; 32];
                d[..4].copy_from_slice(&i.to_be_bytes());
                d
            },
            reports: vec![report()],
            targets: Vec::new(),
        };
        for i in 0..1_500 {
            let b = batch(i);
            fleet.feed_locally(&b.digest, &b.reports, &b.targets);
        }
        assert_eq!(observed(), 3_000, "1,500 batches of one report with count 2");
        for i in 0..1_500 {
            fleet.consume(&batch(i), true);
        }
        assert_eq!(observed(), 3_000, "none fed twice");
        assert_eq!(fleet.counters.skipped_local.load(Ordering::Relaxed), 1_500);
        // Without the header: fed once, then a duplicate.
        fleet.consume(&batch(5_000), false);
        fleet.consume(&batch(5_000), false);
        assert_eq!(observed(), 3_002);
        assert_eq!(fleet.counters.consumed.load(Ordering::Relaxed), 1);
        assert_eq!(fleet.counters.skipped_duplicate.load(Ordering::Relaxed), 1);
        fleet.stop().await;
        store.close().await.unwrap();
    }

    /// A store with the seen set's earlier trees (a key per digest) has them read into the
    /// set at start, what is past the dedup horizon left out, and the trees dropped.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_earlier_seen_trees_are_read_into_the_set_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::clock::now_millis().0;
        {
            let store =
                Store::open(crate::store::StoreConfig::new(dir.path().join("data"))).unwrap();
            let horizon = store.admission().dedup_horizon().as_millis() as u64;
            let (seen, by_time) = (
                store.open_tree("fleet_seen").unwrap(),
                store.open_tree("fleet_seen_by_time").unwrap(),
            );
            for (d, at) in
                [([1u8; 32], now - 1_000), ([2; 32], now - horizon - 60_000), ([3; 32], now)]
            {
                let mut key = at.to_be_bytes().to_vec();
                key.extend_from_slice(&d);
                seen.insert(d, &at.to_be_bytes()).unwrap();
                by_time.insert(key, &[]).unwrap();
            }
            store.close().await.unwrap();
        }
        let (store, _alerting, fleet) = fleet_with(dir.path(), "").await;
        assert!(!store.has_tree("fleet_seen") && !store.has_tree("fleet_seen_by_time"));
        assert!(!fleet.observe_once(&[1; 32], &[report()], &[]), "moved: not fed again");
        assert!(!fleet.observe_once(&[3; 32], &[report()], &[]), "moved: not fed again");
        assert!(fleet.observe_once(&[2; 32], &[report()], &[]), "past the horizon: left out");
        fleet.stop().await;
        store.close().await.unwrap();
    }

    /// After a restart the detector replayed the store's batches received after its snapshot:
    /// those of them still in the outbox (unpublished) are marked seen, so their copy from the
    /// stream is not fed again; older ones, and ones fed locally, are left to their paths.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn own_unpublished_batches_replayed_at_start_are_not_fed_again() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _alerting, fleet) = fleet_without_nats(dir.path()).await;
        let since = 1_700_000_000_000;
        let entry = |flag: u8, digest: [u8; 32], received_at: u64| {
            let mut r = report();
            r.received_at = UnixMillis(received_at);
            let mut v = vec![flag];
            v.extend_from_slice(&digest);
            v.extend_from_slice(&encode_batch(&digest, &[r], &[]));
            v
        };
        let (after, before, local) = ([1; 32], [2; 32], [3; 32]);
        fleet.outbox.insert(10u64.to_be_bytes(), entry(0, after, since + 1)).unwrap();
        fleet.outbox.insert(11u64.to_be_bytes(), entry(0, before, since)).unwrap();
        fleet.outbox.insert(12u64.to_be_bytes(), entry(1, local, since + 5)).unwrap();
        assert_eq!(fleet.mark_replayed(since), 1);
        assert!(!fleet.observe_once(&after, &[report()], &[]), "replayed: not fed again");
        assert!(fleet.observe_once(&before, &[report()], &[]), "not replayed: fed once");
        assert!(!fleet.seen.lock().unwrap().contains(&local), "fed locally: its own marker");
        // Marking is idempotent.
        assert_eq!(fleet.mark_replayed(since), 0);
        fleet.stop().await;
        store.close().await.unwrap();
    }

    #[test]
    fn batches_round_trip() {
        let targets = StoredTargets {
            received_at: UnixMillis(5),
            event_at: UnixMillis(4),
            service: "shop".into(),
            host: "api.shop.example".into(),
            attempts: 10,
            successes: 9,
            client: [8; 32],
            net: NetTag(1),
            enrichment: Enrichment::default(),
        };
        let mut nel = report();
        nel.source = Source::Nel;
        nel.client = None;
        nel.status = Some(503);
        let bytes =
            encode_batch(&[1; 32], &[report(), nel.clone()], std::slice::from_ref(&targets));
        let back = decode_batch(&bytes).unwrap();
        assert_eq!(back.reports, vec![report(), nel]);
        assert_eq!(back.targets, vec![targets]);
    }

    #[test]
    fn bad_batches_name_the_field() {
        let mut v: serde_json::Value =
            serde_json::from_slice(&encode_batch(&[1; 32], &[report()], &[])).unwrap();
        v["reports"][0]["client"] = "zz".into();
        let err = decode_batch(&serde_json::to_vec(&v).unwrap()).err().unwrap();
        assert!(err.starts_with("batch.reports[0].client"), "{err}");
        v["v"] = 9.into();
        let err = decode_batch(&serde_json::to_vec(&v).unwrap()).err().unwrap();
        assert!(err.contains("batch.v"), "{err}");
    }
}
