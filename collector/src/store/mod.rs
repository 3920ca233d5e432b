//! The collector's durable store: accepted reports and target counts in sled, with dedup,
//! group commit and retention.
//!
//! # On-disk layout (sled 0.34, one directory)
//!
//! | tree              | key                                            | value                                  |
//! |-------------------|------------------------------------------------|----------------------------------------|
//! | `reports`         | `event_at` u64 BE ‖ report id (16)             | report record (see below)              |
//! | `report_ids`      | report id (16), agent reports only             | `event_at` u64 BE                      |
//! | `targets`         | `event_at` u64 BE ‖ digest[..16] ‖ index u32 BE | targets record (not NEL failure counts) |
//! | `digests`         | upload digest (32)                             | `received_at` u64 BE                   |
//! | `digests_by_time` | `received_at` u64 BE ‖ digest (32)             | empty                                  |
//! | `replay`          | (format 1 stores only; emptied at open)        |                                        |
//! | `meta`            | `format`, `reports`, `targets`, `bytes`, `drops/` ‖ code u16 BE, `drops_app/` ‖ app ‖ 0 ‖ code u16 BE (at most `MAX_DROP_APPS` apps, then `(other)`) | `format` u32 BE (1 or 2), u64 BE counters |
//! | `fleet_outbox`    | u64 BE, increasing (fleet mode only)           | flag ‖ digest (32) ‖ stream payload    |
//!
//! Keys start with the big-endian event time, so a time range is one sled range scan and the
//! oldest data is at the front. `report_ids` makes a report re-sent in a later upload (same id,
//! slightly different event time) a no-op instead of a second row. Records are a version byte
//! and compact varint/label fields (`codec.rs`); labels are stored as their stable strings.
//!
//! # Duplicates: by digest, exactly once
//!
//! An agent re-sends an unacknowledged envelope byte for byte, so the SHA-256 of the envelope
//! (its *digest*) is what identifies a retry. The writer decides `Duplicate` by the `digests`
//! tree only, inside the group's transaction, so any order, any concurrency and any sequence
//! gap (an agent restart moves its sequence numbers up by 10,000) gives exactly one `Stored`
//! per envelope. Digests are kept for the dedup horizon (the longer of the retention and
//! `dedup_horizon`, default 10 days; agents retry for at most 7 days by default) and then
//! forgotten by time, so the index is bounded by the upload rate times the horizon; an envelope
//! older than the horizon is refused at admission ([`Admission::check_created_at`]) so a
//! replay cannot outlive its digest.
//!
//! Format 1 stores also kept a per-agent `(key, seq)` bitmap window. It was dropped: a window
//! can only prove "duplicate" for a `(key, seq)` it recorded, which the digest proves already,
//! and what it did beyond that (refusing sequence numbers older than the window) refused new
//! envelopes that arrived after newer ones. Its tree is emptied when a store is opened.
//!
//! # NEL uploads
//!
//! A NEL upload of n failures is n report rows plus the two digest entries (and its share of
//! the group's counter updates in `meta`), nothing else; NEL uploads and envelopes share the
//! writer's groups, so one flush and one `fdatasync` cover both:
//! - Its report ids derive from its digest (`ingest::accept::nel_batch`), so a digest found
//!   new means ids never stored: NEL reports get no `report_ids` entry and no id lookup. (The
//!   one difference: a NEL body replayed after its digest expired, beyond the dedup horizon,
//!   is stored again where format 1 skipped those of its reports still retained. NEL is
//!   unauthenticated, so such a replay is no different from any forged upload, which the
//!   per-/24 budgets bound.)
//! - Each failure's count (1 / its sampling fraction attempts, no successes, on its network's
//!   stand-in client) holds nothing the report does not, so it is not a `targets` row: the
//!   report's record carries a flag (record version 2, `codec.rs`) and
//!   [`Store::scan_targets`] derives the count from it ([`StoredReport::nel_targets`]). The
//!   writer flags exactly the reports whose batch carried a count equal to that derivation;
//!   anything else (NEL `ok` counts, agent counts) is a row. [`StoreStats::targets`] counts
//!   rows, and [`StoreStats::bytes`] counts 24 bytes of id entry for every report, NEL or
//!   not, as before.
//!
//! # Formats
//!
//! Format 2 (this build) differs from format 1 only in the NEL rows above and in writing
//! report records of version 2. Opening a format 1 store upgrades it in place by setting
//! `meta/format` to 2; nothing is rewritten: its version 1 report records read as reports
//! without a derived count, and its NEL count rows stay rows, so every count is read exactly
//! once. A build that reads format 1 only refuses a format 2 store by name ("on-disk format
//! 2"), so a downgrade is an explicit error, not a misread.
//!
//! # Writes
//!
//! One writer task owns all inserts. [`Store::commit`] sends the batch over a bounded channel and
//! waits; the writer checks free space ([`disk`]), takes everything queued (up to
//! [`MAX_GROUP`] batches), runs dedup and all inserts of the group in **one multi-tree sled
//! transaction**, flushes sled's log, `fdatasync`s its files ([`SyncMode::Data`], the default;
//! sled's own flush is `sync_file_range`, which does not reach stable storage) and only then
//! answers every waiter. sled writes a transaction to its log as one atomic unit, so after a
//! crash either the whole group (digests, rows, counters) is there or none of it; a client that
//! got no answer retries and gets `Stored` or `Duplicate`, both of which are correct. Nothing is
//! acknowledged before the sync that made it durable, including `Duplicate` (the original may be
//! in the same, not yet synced, group).
//!
//! # The fleet outbox
//!
//! In fleet mode the ingest path hands `Store::commit_with_outbox` the batch *and* the bytes
//! the fleet publisher sends to the stream; the writer inserts them into
//! `fleet_outbox` in the same transaction as the batch, both when it stores the batch and when
//! it finds it a `Duplicate` (the stored copy might have been acknowledged by a collector
//! killed before it published; the consumers drop the second copy by digest). So whatever
//! was acknowledged is either published or still in the outbox: a kill between the commit and
//! the publish cannot lose it.
//!
//! # Admission
//!
//! [`Admission`] says which reports the retention pass would delete (the ingest path refuses
//! them with `400`, naming the field) with the same cutoff arithmetic the retention pass uses.
//!
//! # Disk full
//!
//! Below `min_free_bytes` of available space the store refuses commits with
//! [`StoreError::DiskFull`] (`503` + `Retry-After`) before sled sees them, and
//! [`Store::readiness`] says so; it accepts again within [`disk::GUARD_PERIOD`] of space
//! returning. See [`disk`] for the reserve file that keeps sled itself from hitting `ENOSPC`.
//!
//! Retention ([`Store::enforce_retention`]) deletes in transactions of its own that also
//! update the counters in `meta`; sled serialises them against the writer's.

pub mod admit;
mod codec;
pub mod disk;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use vantage_agent::drops::DropReason;
use vantage_agent::report::UnixMillis;

use crate::model::{IngestBatch, Source, StoredReport, StoredTargets};
pub use admit::{Admission, Refusal};
use disk::{Space, SpaceGuard, Syncer};
pub use disk::{SpaceLimits, SyncMode};

/// The on-disk format this build writes and reads (the `meta/format` value). Format 1
/// stores are upgraded in place when opened (see "Formats").
pub const FORMAT_VERSION: u32 = 2;
/// Most batches one group commit takes from the queue.
pub const MAX_GROUP: usize = 256;
/// Capacity of the channel into the writer; `commit` waits when it is full.
const QUEUE: usize = 1024;
/// Rows deleted per retention transaction.
const DELETE_CHUNK: usize = 1024;
/// sled page cache by default ([`StoreConfig::cache_bytes`]).
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// Logical bytes a `report_ids` entry adds to a report.
const ID_ENTRY_BYTES: u64 = 16 + 8;

const META_FORMAT: &[u8] = b"format";
const META_REPORTS: &[u8] = b"reports";
const META_TARGETS: &[u8] = b"targets";
const META_BYTES: &[u8] = b"bytes";
/// `meta` keys `drops/` ‖ reason code (u16 BE): agent drop totals (see [`Store::agent_drops`]).
/// The tree of stream messages waiting for JetStream's ack, written with the batches they
/// publish (see "The fleet outbox").
pub(crate) const FLEET_OUTBOX_TREE: &str = "fleet_outbox";
const DROPS_PREFIX: &[u8] = b"drops/";
/// `meta` keys `drops_app/` ‖ app id ‖ 0 ‖ reason code (u16 BE): agent drop totals per app
/// (see [`Store::agent_drops_by_app`]).
const DROPS_APP_PREFIX: &[u8] = b"drops_app/";
/// Apps with totals of their own, at most; the drops of any further app are kept under
/// [`OTHER_APP`]. App ids come from unauthenticated senders: this bounds the keys they make.
pub const MAX_DROP_APPS: usize = 100;
/// Where the drops of apps beyond [`MAX_DROP_APPS`] (and of an empty app id) are summed.
pub const OTHER_APP: &str = "(other)";

/// `(app id, reason code)` of a `drops_app/` key.
fn split_drop_app_key(key: &[u8]) -> Option<(String, u16)> {
    let rest = key.strip_prefix(DROPS_APP_PREFIX)?;
    let (app, code) = rest.split_at(rest.len().checked_sub(3)?);
    let (zero, code) = code.split_first()?;
    if *zero != 0 {
        return None;
    }
    let app = std::str::from_utf8(app).ok()?.to_owned();
    Some((app, u16::from_be_bytes(<[u8; 2]>::try_from(code).ok()?)))
}

fn drop_app_key(app: &str, reason: DropReason) -> Vec<u8> {
    let mut key = DROPS_APP_PREFIX.to_vec();
    key.extend_from_slice(app.as_bytes());
    key.push(0);
    key.extend_from_slice(&reason.code().to_be_bytes());
    key
}

fn drop_key(reason: DropReason) -> Vec<u8> {
    let mut key = DROPS_PREFIX.to_vec();
    key.extend_from_slice(&reason.code().to_be_bytes());
    key
}

/// Where and how long the store keeps data.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The sled directory (created when missing).
    pub path: PathBuf,
    /// How long reports and target counts are kept, by event time. Default 30 days.
    pub retention: Duration,
    /// Logical size (see [`StoreStats::bytes`]) above which the oldest data is deleted.
    /// Default 10 GiB.
    pub max_bytes: u64,
    /// Envelope digests (duplicate detection) are remembered for the longer of this and
    /// `retention`. Must cover the longest time an agent re-sends an envelope (7 days by
    /// default) plus the clock skew allowance. Default 10 days.
    pub dedup_horizon: Duration,
    /// What a commit waits for before it is acknowledged. Default [`SyncMode::Data`].
    pub sync: SyncMode,
    /// Free-space guard. Default: refuse below 128 MiB available, 32 MiB reserve.
    pub space: SpaceLimits,
    /// sled's page cache ([`DEFAULT_CACHE_BYTES`], 16 MiB). sled counts its cache below what
    /// it costs (64 MiB gave 281 MiB resident at 1M stored reports, 8 MiB gave 136 MiB), and
    /// besides the cache its bookkeeping of the log grows with the stored volume (about
    /// 55 MiB per 1M reports): `max_bytes` is what bounds memory in the end (README).
    pub cache_bytes: u64,
}

impl StoreConfig {
    /// A config for `path` with the defaults for everything else.
    pub fn new(path: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            path: path.into(),
            retention: Duration::from_secs(30 * 24 * 3600),
            max_bytes: 10 * 1024 * 1024 * 1024,
            dedup_horizon: Duration::from_secs(10 * 24 * 3600),
            sync: SyncMode::Data,
            space: SpaceLimits::default(),
            cache_bytes: DEFAULT_CACHE_BYTES,
        }
    }
}

/// What a commit did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitOutcome {
    /// The batch is on disk.
    Stored {
        /// Reports written (a report whose id is already stored is not written again).
        reports: usize,
        /// Target-count records written.
        targets: usize,
    },
    /// An envelope with the same digest (the same bytes: a retry) was already stored.
    Duplicate,
}

/// What a retention pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionStats {
    /// Reports deleted because their event time was older than the retention.
    pub expired_reports: u64,
    /// Target counts deleted because their event time was older than the retention.
    pub expired_targets: u64,
    /// Reports deleted, oldest first, to get under `max_bytes`.
    pub evicted_reports: u64,
    /// Target counts deleted, oldest first, to get under `max_bytes`.
    pub evicted_targets: u64,
    /// Dedup digests forgotten because they were received before the dedup horizon.
    pub expired_digests: u64,
    /// Logical bytes freed (reports and targets).
    pub freed_bytes: u64,
}

/// Counts and sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Reports stored.
    pub reports: u64,
    /// Target-count records stored.
    pub targets: u64,
    /// Logical size of reports (with their id index entries) and targets, keys and values:
    /// the figure `max_bytes` bounds.
    pub bytes: u64,
    /// Size of the sled files on disk.
    pub disk_bytes: u64,
}

/// An upper bound on the logical bytes (see [`StoreStats::bytes`]) committing `batch` adds,
/// computed without encoding anything: what a source's storage share is charged before the
/// commit.
pub fn logical_bytes_bound(batch: &IngestBatch) -> u64 {
    let reports: usize = batch
        .reports
        .iter()
        .map(|r| codec::REPORT_KEY_LEN + ID_ENTRY_BYTES as usize + codec::report_len_bound(r))
        .sum();
    let targets: usize =
        batch.targets.iter().map(|t| codec::TARGET_KEY_LEN + codec::targets_len_bound(t)).sum();
    (reports + targets) as u64
}

/// Store errors. Each names the store path or the key that was wrong.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store could not be opened or created.
    #[error("cannot open store at {path}: {reason}")]
    Open {
        /// The store directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Stored data could not be read back.
    #[error("store at {path} is corrupt: {detail}")]
    Corrupt {
        /// The store directory.
        path: PathBuf,
        /// What was wrong, naming the tree and key.
        detail: String,
    },
    /// An I/O error from the storage engine.
    #[error("store I/O error: {0}")]
    Io(String),
    /// A record could not be encoded.
    #[error("cannot encode record: {0}")]
    Encode(String),
    /// The store was closed.
    #[error("store is closed")]
    Closed,
    /// Less free space than `min_free_bytes`: nothing is written until space returns.
    #[error(
        "store at {path}: {available} bytes available on its file system, below min_free_bytes \
         {min_free}"
    )]
    DiskFull {
        /// The store directory.
        path: PathBuf,
        /// Bytes available to the collector.
        available: u64,
        /// The configured threshold.
        min_free: u64,
    },
}

/// The durable store. Cheap to clone; all clones share one database and one writer.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    control: Arc<Control>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.shared.path)
            .field("stats", &self.shared.counts())
            .finish()
    }
}

struct Control {
    /// `None` once closed. Dropping the last sender ends the writer after it drained the queue.
    sender: Mutex<Option<mpsc::Sender<Job>>>,
    writer: tokio::sync::Mutex<Option<JoinHandle<()>>>,
    /// Stops the free-space guard; `close` waits for it, so no check in flight still holds
    /// the database (and its file lock) after `close` returned.
    guard_stop: tokio::sync::watch::Sender<bool>,
    guard: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

struct Job {
    batch: IngestBatch,
    /// The fleet outbox entry written with the batch (fleet mode).
    outbox: Option<Vec<u8>>,
    /// The outcome, and the batch handed back (the ingest path feeds it to detection
    /// without a copy); `None` only if the write task itself failed.
    reply: oneshot::Sender<(Result<CommitOutcome, StoreError>, Option<IngestBatch>)>,
}

struct Shared {
    path: PathBuf,
    config: StoreConfig,
    db: sled::Db,
    trees: Trees,
    admission: Admission,
    syncer: Syncer,
    guard: SpaceGuard,
    /// Set when a write or sync failed: sled refuses everything after an I/O error until the
    /// database is opened again, so the collector is not ready until it restarts.
    failed: Mutex<Option<String>>,
    /// In-memory mirror of the `meta` counters, moved by the deltas of committed transactions
    /// (deltas commute, so the order in which concurrent transactions report them is
    /// irrelevant).
    counts: Mutex<Counts>,
    /// Next `fleet_outbox` key. Only the writer inserts (one group at a time), so keys
    /// increase in commit order and are never reused.
    next_outbox_key: std::sync::atomic::AtomicU64,
    /// Every `fleet_outbox` key below this is on stable storage: what the publisher may send.
    /// (sled applies a group's transaction in memory before the group's flush and sync; an
    /// entry published before its sync could reach the stream and then vanish from the store
    /// in a crash.)
    outbox_durable_below: std::sync::atomic::AtomicU64,
    /// Apps with per-app drop totals (at most [`MAX_DROP_APPS`]; loaded at open).
    drop_apps: Mutex<std::collections::BTreeSet<String>>,
}

struct Trees {
    reports: sled::Tree,
    report_ids: sled::Tree,
    targets: sled::Tree,
    digests: sled::Tree,
    digests_by_time: sled::Tree,
    meta: sled::Tree,
    fleet_outbox: sled::Tree,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    reports: u64,
    targets: u64,
    bytes: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Delta {
    reports: i64,
    targets: i64,
    bytes: i64,
}

impl Delta {
    fn is_zero(&self) -> bool {
        self.reports == 0 && self.targets == 0 && self.bytes == 0
    }
}

impl Counts {
    fn apply(&mut self, d: Delta) {
        self.reports = self.reports.saturating_add_signed(d.reports);
        self.targets = self.targets.saturating_add_signed(d.targets);
        self.bytes = self.bytes.saturating_add_signed(d.bytes);
    }
}

/// One report's row, encoded.
struct PreparedReport {
    key: [u8; codec::REPORT_KEY_LEN],
    id: [u8; 16],
    value: Vec<u8>,
    /// Whether the id goes into `report_ids` (not for NEL reports: see "NEL uploads").
    indexed: bool,
}

/// A batch with its records encoded, ready for the transaction.
struct Prepared {
    digest: [u8; 32],
    received_at: u64,
    reports: Vec<PreparedReport>,
    /// The target rows to write (counts derived from a NEL report are not written).
    targets: Vec<([u8; codec::TARGET_KEY_LEN], Vec<u8>)>,
    /// Target records of the batch, written or derived: what `Stored` reports.
    target_records: usize,
    drops: Vec<(DropReason, u64)>,
    /// The app the drops are counted under (its id, or [`OTHER_APP`]).
    drops_app: String,
    /// Key and value of the fleet outbox entry (fleet mode).
    outbox: Option<([u8; 8], Vec<u8>)>,
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

impl Store {
    /// Opens or creates. Must be called inside a tokio runtime (spawns the group-commit writer).
    /// A corrupt or unreadable store is an error naming the path, never silently replaced.
    pub fn open(config: StoreConfig) -> Result<Store, StoreError> {
        let path = config.path.clone();
        let open_err = |reason: String| StoreError::Open { path: path.clone(), reason };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| open_err("Store::open must be called inside a tokio runtime".into()))?;
        // sled reads a damaged log as an empty database (and writes a fresh head into it);
        // whether data was there before has to be known before sled touches the files, so a
        // damaged store is reported instead of silently starting over empty.
        let had_data = path.join("db").metadata().is_ok_and(|m| m.len() > 0);
        let db = catch_unwind(AssertUnwindSafe(|| open_sled(&path, config.cache_bytes)))
            .map_err(|_| StoreError::Corrupt {
                path: path.clone(),
                detail: "the storage engine panicked while reading the files".into(),
            })?
            .map_err(|e| engine_error(&path, e))?;
        let tree = |name: &str| db.open_tree(name).map_err(|e| engine_error(&path, e));
        let trees = Trees {
            reports: tree("reports")?,
            report_ids: tree("report_ids")?,
            targets: tree("targets")?,
            digests: tree("digests")?,
            digests_by_time: tree("digests_by_time")?,
            meta: tree("meta")?,
            fleet_outbox: tree(FLEET_OUTBOX_TREE)?,
        };
        let next_outbox_key = trees
            .fleet_outbox
            .last()
            .map_err(|e| engine_error(&path, e))?
            .map_or(1, |(k, _)| codec::be_u64(&k).unwrap_or(u64::MAX - 1).saturating_add(1));
        // Format 1's per-agent replay windows: no longer consulted (see "Duplicates").
        let legacy_replay = tree("replay")?;
        let syncer = Syncer::open(&path, config.sync).map_err(|e| open_err(e.to_string()))?;
        let guard = SpaceGuard::open(&path, config.space);
        let shared = Shared {
            path: path.clone(),
            admission: Admission::new(config.retention, config.dedup_horizon),
            config,
            db,
            trees,
            syncer,
            guard,
            failed: Mutex::new(None),
            counts: Mutex::new(Counts::default()),
            next_outbox_key: std::sync::atomic::AtomicU64::new(next_outbox_key),
            // What is in the tree at open was read back from disk.
            outbox_durable_below: std::sync::atomic::AtomicU64::new(next_outbox_key),
            drop_apps: Mutex::new(std::collections::BTreeSet::new()),
        };
        shared.check_format(had_data, &legacy_replay)?;
        legacy_replay.clear().map_err(|e| engine_error(&path, e))?;
        let counts = shared.load_or_rebuild_counts()?;
        let apps = shared.drop_apps_on_disk()?;
        *shared.drop_apps.lock().unwrap_or_else(PoisonError::into_inner) = apps;
        *shared.counts.lock().unwrap_or_else(PoisonError::into_inner) = counts;
        shared.db.flush().map_err(|e| engine_error(&path, e))?;
        shared.syncer.sync().map_err(|e| open_err(e.to_string()))?;

        let shared = Arc::new(shared);
        let (sender, receiver) = mpsc::channel(QUEUE);
        let writer = runtime.spawn(run_writer(Arc::clone(&shared), receiver));
        let (guard_stop, stop_rx) = tokio::sync::watch::channel(false);
        let guard = runtime.spawn(run_guard(Arc::downgrade(&shared), stop_rx));
        Ok(Store {
            shared,
            control: Arc::new(Control {
                sender: Mutex::new(Some(sender)),
                writer: tokio::sync::Mutex::new(Some(writer)),
                guard_stop,
                guard: tokio::sync::Mutex::new(Some(guard)),
            }),
        })
    }

    /// Dedup (by digest) + atomic write; Ok only once it is on stable storage (group commit:
    /// one flush and one `fdatasync` for many concurrent commits; see [`SyncMode`]).
    /// [`StoreError::DiskFull`] while free space is below the guard.
    pub async fn commit(&self, batch: IngestBatch) -> Result<CommitOutcome, StoreError> {
        self.submit(batch, None).await.0
    }

    /// Every `fleet_outbox` key below this one is on stable storage (flushed and synced with
    /// its batch); the fleet publisher sends nothing at or above it.
    pub(crate) fn outbox_durable_below(&self) -> u64 {
        self.shared.outbox_durable_below.load(std::sync::atomic::Ordering::Acquire)
    }

    /// [`Store::commit`], plus (fleet mode) one `fleet_outbox` entry (`outbox_entry`, opaque
    /// here) written in the same transaction, whether the batch is stored or found a
    /// duplicate (see "The fleet outbox" in the [module docs](self)). The batch comes back
    /// with the outcome, so the caller can hand it on without copying it first (`None` only
    /// when the write task itself failed).
    pub(crate) async fn commit_with_outbox(
        &self,
        batch: IngestBatch,
        outbox_entry: Option<Vec<u8>>,
    ) -> (Result<CommitOutcome, StoreError>, Option<IngestBatch>) {
        self.submit(batch, outbox_entry).await
    }

    async fn submit(
        &self,
        batch: IngestBatch,
        outbox: Option<Vec<u8>>,
    ) -> (Result<CommitOutcome, StoreError>, Option<IngestBatch>) {
        if let Space::Low { available } = self.shared.guard.last() {
            return (Err(self.shared.disk_full(available)), Some(batch));
        }
        let sender = self.control.sender.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let Some(sender) = sender else {
            return (Err(StoreError::Closed), Some(batch));
        };
        let (reply, answer) = oneshot::channel();
        if let Err(e) = sender.send(Job { batch, outbox, reply }).await {
            return (Err(StoreError::Closed), Some(e.0.batch));
        }
        drop(sender);
        answer.await.unwrap_or((Err(StoreError::Closed), None))
    }

    /// Reports with `from <= event_at < to`, in `event_at` order.
    pub fn scan_reports(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> impl Iterator<Item = Result<StoredReport, StoreError>> + '_ {
        self.shared.scan(&self.shared.trees.reports, from, to).map(|entry| {
            let (k, v) = entry?;
            codec::decode_report(&k, &v).map_err(|e| self.shared.corrupt("reports", &k, &e))
        })
    }

    /// Reports with `from <= event_at` whose position (event time, report id) is before
    /// `before`, newest first, each with its position: the admin API's paging
    /// (`GET /v1/reports`) starts the next page before the last position it returned.
    pub fn scan_reports_newest_first(
        &self,
        from: UnixMillis,
        before: (UnixMillis, [u8; 16]),
    ) -> impl Iterator<Item = Result<((UnixMillis, [u8; 16]), StoredReport), StoreError>> + '_ {
        let start = from.0.to_be_bytes().to_vec();
        let end = codec::report_key(before.0, &before.1).to_vec();
        let range = if start < end { start..end } else { start.clone()..start };
        self.shared.trees.reports.range(range).rev().map(|entry| {
            let (k, v) = entry.map_err(|e| self.shared.io(e))?;
            let r =
                codec::decode_report(&k, &v).map_err(|e| self.shared.corrupt("reports", &k, &e))?;
            Ok(((r.event_at, r.id), r))
        })
    }

    /// Target counts with `from <= event_at < to`, in `event_at` order.
    ///
    /// The counts of NEL failure reports that a format 2 store keeps in the report's record
    /// are derived from it ([`StoredReport::nel_targets`]) and merged in here, so callers see
    /// every count the ingest path committed (see "NEL uploads").
    pub fn scan_targets(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> impl Iterator<Item = Result<StoredTargets, StoreError>> + '_ {
        let rows = self.shared.scan(&self.shared.trees.targets, from, to).map(|entry| {
            let (k, v) = entry?;
            codec::decode_targets(&k, &v).map_err(|e| self.shared.corrupt("targets", &k, &e))
        });
        let derived = self.shared.scan(&self.shared.trees.reports, from, to).filter_map(|entry| {
            let decoded = entry.and_then(|(k, v)| {
                codec::decode_report_and_count(&k, &v)
                    .map_err(|e| self.shared.corrupt("reports", &k, &e))
            });
            match decoded {
                Ok((r, true)) => r.nel_targets().map(Ok),
                Ok((_, false)) => None,
                Err(e) => Some(Err(e)),
            }
        });
        merge_by_event_at(rows, derived)
    }

    /// The retention and dedup arithmetic of this store: what the ingest path must refuse so
    /// that a `202` is not deleted by the next retention pass.
    pub fn admission(&self) -> Admission {
        self.shared.admission
    }

    /// `Ok` when commits can be accepted; else why not (free space below the guard, or a
    /// failed write that needs a restart). Takes a fresh free-space reading.
    pub fn readiness(&self) -> Result<(), String> {
        if let Some(reason) =
            self.shared.failed.lock().unwrap_or_else(PoisonError::into_inner).as_ref()
        {
            return Err(format!("store failed, restart needed: {reason}"));
        }
        match self.shared.guard.check() {
            Space::Ok => Ok(()),
            Space::Low { available } => Err(self.shared.disk_full(available).to_string()),
        }
    }

    /// Deletes by age (event_at before [`Admission::cutoff`]) and then oldest-first down to
    /// max_bytes. Also forgets dedup digests received before [`Admission::dedup_cutoff`].
    pub fn enforce_retention(&self, now: UnixMillis) -> Result<RetentionStats, StoreError> {
        self.shared.enforce_retention(now)
    }

    /// Counts and sizes.
    pub fn stats(&self) -> StoreStats {
        let counts = self.shared.counts();
        StoreStats {
            reports: counts.reports,
            targets: counts.targets,
            bytes: counts.bytes,
            disk_bytes: self.shared.db.size_on_disk().unwrap_or(0),
        }
    }

    /// Reports agents dropped before delivery (queue full, expired, ...), summed by reason
    /// over every stored envelope: each envelope's counts are added in the transaction that
    /// stores it, so a retried envelope never counts twice. Kept for the store's lifetime
    /// (the labels are a fixed set). Reasons with no drops are left out.
    pub fn agent_drops(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let mut totals: Vec<(&'static str, u64)> = Vec::new();
        for item in self.shared.trees.meta.scan_prefix(DROPS_PREFIX) {
            let (key, value) = item.map_err(|e| self.shared.io(e))?;
            let n = codec::be_u64(&value).map_err(|e| self.shared.corrupt("meta", &key, &e))?;
            let code = key
                .get(DROPS_PREFIX.len()..)
                .and_then(|c| <[u8; 2]>::try_from(c).ok())
                .map(u16::from_be_bytes)
                .ok_or_else(|| self.shared.corrupt("meta", &key, "not a drop reason code"))?;
            let label = DropReason::from_code(code).as_str();
            match totals.iter_mut().find(|(l, _)| *l == label) {
                Some((_, total)) => *total = total.saturating_add(n),
                None => totals.push((label, n)),
            }
        }
        Ok(totals)
    }

    /// The same totals per app: `(app id, reason, count)`, apps in id order. At most
    /// [`MAX_DROP_APPS`] apps have totals of their own; later apps' drops are under
    /// [`OTHER_APP`].
    pub fn agent_drops_by_app(&self) -> Result<Vec<(String, &'static str, u64)>, StoreError> {
        let mut out = Vec::new();
        for item in self.shared.trees.meta.scan_prefix(DROPS_APP_PREFIX) {
            let (key, value) = item.map_err(|e| self.shared.io(e))?;
            let n = codec::be_u64(&value).map_err(|e| self.shared.corrupt("meta", &key, &e))?;
            let (app, code) = split_drop_app_key(&key)
                .ok_or_else(|| self.shared.corrupt("meta", &key, "not an app drop key"))?;
            out.push((app, DropReason::from_code(code).as_str(), n));
        }
        Ok(out)
    }

    /// A named tree of the same database for state that lives next to the reports (alerts,
    /// the notification outbox, the detector snapshot). Its writes are durable after
    /// [`Store::flush`] (or the next group commit).
    pub fn open_tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.shared.db.open_tree(name).map_err(|e| engine_error(&self.shared.path, e))
    }

    /// Flushes everything written so far to stable storage (sled's flush, then the sync of
    /// [`SyncMode`]).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || shared.flush_and_sync())
            .await
            .map_err(|e| StoreError::Io(format!("store flush task failed: {e}")))?
    }

    /// Waits for pending commits, flushes, stops the writer. Further commits get
    /// [`StoreError::Closed`].
    pub async fn close(&self) -> Result<(), StoreError> {
        drop(self.control.sender.lock().unwrap_or_else(PoisonError::into_inner).take());
        // Held across the wait so a second `close` returns only after the writer is gone too.
        let mut writer = self.control.writer.lock().await;
        if let Some(handle) = writer.take() {
            handle.await.map_err(|e| StoreError::Io(format!("store writer task failed: {e}")))?;
        }
        let _ = self.control.guard_stop.send(true);
        if let Some(handle) = self.control.guard.lock().await.take() {
            // A check in flight ends on its own (a statvfs); the task then sees the stop.
            let _ = handle.await;
        }
        match self.flush().await {
            // Every acknowledged commit was synced when it was acknowledged; what this last
            // flush would add is state that was never promised durable (alerting snapshots,
            // retention deletes), which is written again after the restart.
            Err(e) if self.shared.syncer.mode() == SyncMode::Data => {
                tracing::warn!(error = %e, "final store flush failed; acknowledged data was synced at commit");
                Ok(())
            }
            other => other,
        }
    }
}

/// Two event-ordered streams of counts as one, in event order (errors first).
fn merge_by_event_at(
    a: impl Iterator<Item = Result<StoredTargets, StoreError>>,
    b: impl Iterator<Item = Result<StoredTargets, StoreError>>,
) -> impl Iterator<Item = Result<StoredTargets, StoreError>> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || {
        let take_a = match (a.peek(), b.peek()) {
            (Some(Err(_)), _) => true,
            (_, Some(Err(_))) => false,
            (Some(Ok(x)), Some(Ok(y))) => x.event_at <= y.event_at,
            (Some(Ok(_)), None) => true,
            (None, _) => false,
        };
        if take_a { a.next() } else { b.next() }
    })
}

/// The writer: group commit until every sender is gone and the queue is empty.
async fn run_writer(shared: Arc<Shared>, mut receiver: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    while let Some(job) = receiver.recv().await {
        jobs.push(job);
        while jobs.len() < MAX_GROUP {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let (batches, replies): (Vec<_>, Vec<_>) =
            jobs.drain(..).map(|j| ((j.batch, j.outbox), j.reply)).unzip();
        let n = batches.len();
        let worker = Arc::clone(&shared);
        let (results, flushed, batches) = tokio::task::spawn_blocking(move || {
            // Checked again right before the write: sled must not be the one to find the
            // disk full (it cannot recover from that without a reopen).
            if let Space::Low { available } = worker.guard.check() {
                let e = worker.disk_full(available);
                let batches = batches.into_iter().map(|(b, _)| Some(b)).collect();
                return (vec![Err(e); n], Ok(()), batches);
            }
            let (results, batches) = worker.apply_group(batches);
            let flushed =
                if results.iter().any(Result::is_ok) { worker.flush_and_sync() } else { Ok(()) };
            if flushed.is_ok() {
                // This writer alone assigns outbox keys: every key handed out so far is now
                // synced. Before the replies, so the publisher a commit wakes sees its entry.
                let next = worker.next_outbox_key.load(std::sync::atomic::Ordering::Relaxed);
                worker.outbox_durable_below.fetch_max(next, std::sync::atomic::Ordering::Release);
            }
            let batches: Vec<Option<IngestBatch>> = batches.into_iter().map(Some).collect();
            (results, flushed, batches)
        })
        .await
        .unwrap_or_else(|e| {
            let err = StoreError::Io(format!("store write failed: {e}"));
            (vec![Err(err); n], Ok(()), vec![None; n])
        });
        for ((reply, result), batch) in replies.into_iter().zip(results).zip(batches) {
            let result = match (&flushed, result) {
                (Err(e), Ok(_)) => Err(e.clone()),
                (_, result) => result,
            };
            // The caller may have stopped waiting; the batch is stored either way.
            let _ = reply.send((result, batch));
        }
    }
}

/// Re-reads free space every [`disk::GUARD_PERIOD`] until the store is closed or dropped, so
/// the reserve is released when the disk fills while no commit arrives, and re-created when
/// space returns.
async fn run_guard(shared: Weak<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(disk::GUARD_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let Some(shared) = shared.upgrade() else { return };
        if tokio::task::spawn_blocking(move || shared.guard.check()).await.is_err() {
            return;
        }
    }
}

impl Shared {
    fn disk_full(&self, available: u64) -> StoreError {
        StoreError::DiskFull {
            path: self.path.clone(),
            available,
            min_free: self.guard.limits().min_free_bytes,
        }
    }

    /// sled's flush, then the data sync; a failure marks the store failed (sled keeps failing
    /// after an I/O error until reopened).
    fn flush_and_sync(&self) -> Result<(), StoreError> {
        let result = self.db.flush().map(drop).map_err(|e| self.io(e)).and_then(|()| {
            self.syncer
                .sync()
                .map_err(|e| StoreError::Io(format!("{}: sync: {e}", self.path.display())))
        });
        if let Err(e) = &result {
            let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
            if failed.is_none() {
                tracing::error!(error = %e, "store write failed; restart the collector to recover");
                *failed = Some(e.to_string());
            }
        }
        result
    }

    fn counts(&self) -> Counts {
        *self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn apply_delta(&self, d: Delta) {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner).apply(d);
    }

    fn corrupt(&self, tree: &str, key: &[u8], detail: &str) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            detail: format!("{tree} key {}: {detail}", hex(key)),
        }
    }

    /// Checks (and, for a format 1 store, upgrades) the format marker.
    fn check_format(&self, had_data: bool, legacy_replay: &sled::Tree) -> Result<(), StoreError> {
        let meta = &self.trees.meta;
        let engine = |e| engine_error(&self.path, e);
        match meta.get(META_FORMAT).map_err(engine)? {
            Some(v) => {
                let arr: [u8; 4] = v.as_ref().try_into().map_err(|_| {
                    self.corrupt("meta", META_FORMAT, &format!("{} bytes", v.len()))
                })?;
                match u32::from_be_bytes(arr) {
                    FORMAT_VERSION => Ok(()),
                    // Format 1 data reads as it is (its report records are version 1: no
                    // derived counts); only new writes use format 2's records.
                    1 => {
                        meta.insert(META_FORMAT, &FORMAT_VERSION.to_be_bytes()).map_err(engine)?;
                        tracing::info!(
                            path = %self.path.display(),
                            "store upgraded from format 1 to 2 (NEL counts kept in their reports)"
                        );
                        Ok(())
                    }
                    version => Err(StoreError::Open {
                        path: self.path.clone(),
                        reason: format!(
                            "on-disk format {version}, this build reads formats 1 and \
                             {FORMAT_VERSION}"
                        ),
                    }),
                }
            }
            None => {
                let empty =
                    [&self.trees.reports, &self.trees.targets, &self.trees.digests, legacy_replay]
                        .iter()
                        .all(|t| t.is_empty());
                if had_data || !empty {
                    return Err(StoreError::Corrupt {
                        path: self.path.clone(),
                        detail: "the directory holds sled files but no Vantage format marker: the \
                                 files are damaged or are not a Vantage store; refusing to use \
                                 it (move the directory aside to start a new store)"
                            .into(),
                    });
                }
                meta.insert(META_FORMAT, &FORMAT_VERSION.to_be_bytes()).map_err(engine)?;
                Ok(())
            }
        }
    }

    /// The counters from `meta`, or recounted from the trees when any is missing (a store
    /// written before they existed, or one whose meta entries were lost).
    /// The apps that have per-app drop totals on disk.
    fn drop_apps_on_disk(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let mut apps = std::collections::BTreeSet::new();
        for item in self.trees.meta.scan_prefix(DROPS_APP_PREFIX) {
            let (key, _) = item.map_err(|e| self.io(e))?;
            if let Some((app, _)) = split_drop_app_key(&key) {
                apps.insert(app);
            }
        }
        Ok(apps)
    }

    /// The app a batch's drops are counted under: its own id while fewer than
    /// [`MAX_DROP_APPS`] apps have totals (or it has some already), else [`OTHER_APP`].
    fn drop_app_slot(&self, app: &str) -> String {
        if app.is_empty() || app.contains('\0') {
            return OTHER_APP.to_owned();
        }
        let mut apps = self.drop_apps.lock().unwrap_or_else(PoisonError::into_inner);
        if apps.contains(app) {
            return app.to_owned();
        }
        // OTHER_APP itself does not count against the bound.
        if apps.iter().filter(|a| a.as_str() != OTHER_APP).count() < MAX_DROP_APPS {
            apps.insert(app.to_owned());
            return app.to_owned();
        }
        apps.insert(OTHER_APP.to_owned());
        OTHER_APP.to_owned()
    }

    fn load_or_rebuild_counts(&self) -> Result<Counts, StoreError> {
        let meta = &self.trees.meta;
        let read = |key: &[u8]| -> Result<Option<u64>, StoreError> {
            match meta.get(key).map_err(|e| engine_error(&self.path, e))? {
                Some(v) => codec::be_u64(&v).map(Some).map_err(|e| self.corrupt("meta", key, &e)),
                None => Ok(None),
            }
        };
        if let (Some(reports), Some(targets), Some(bytes)) =
            (read(META_REPORTS)?, read(META_TARGETS)?, read(META_BYTES)?)
        {
            return Ok(Counts { reports, targets, bytes });
        }
        let mut counts = Counts::default();
        for entry in self.trees.reports.iter() {
            let (k, v) = entry.map_err(|e| engine_error(&self.path, e))?;
            counts.reports += 1;
            counts.bytes += (k.len() + v.len()) as u64 + ID_ENTRY_BYTES;
        }
        for entry in self.trees.targets.iter() {
            let (k, v) = entry.map_err(|e| engine_error(&self.path, e))?;
            counts.targets += 1;
            counts.bytes += (k.len() + v.len()) as u64;
        }
        let write = |key: &[u8], v: u64| {
            meta.insert(key, &v.to_be_bytes()).map(drop).map_err(|e| engine_error(&self.path, e))
        };
        write(META_REPORTS, counts.reports)?;
        write(META_TARGETS, counts.targets)?;
        write(META_BYTES, counts.bytes)?;
        Ok(counts)
    }

    fn scan<'a>(
        &'a self,
        tree: &'a sled::Tree,
        from: UnixMillis,
        to: UnixMillis,
    ) -> impl Iterator<Item = Result<(sled::IVec, sled::IVec), StoreError>> + 'a {
        // An 8-byte bound sorts before every longer key with the same time prefix, so
        // `from..to` holds exactly the keys with from <= event_at < to.
        let start = from.0.to_be_bytes();
        let end = to.0.max(from.0).to_be_bytes();
        tree.range(start..end).map(move |entry| entry.map_err(|e| self.io(e)))
    }

    fn prepare(
        &self,
        batch: &IngestBatch,
        outbox: Option<Vec<u8>>,
    ) -> Result<Prepared, StoreError> {
        let received_at = batch
            .reports
            .iter()
            .map(|r| r.received_at.0)
            .chain(batch.targets.iter().map(|t| t.received_at.0))
            .max()
            .unwrap_or_else(now_millis);
        // NEL failure counts are derived from their reports when read (`scan_targets`): the
        // ingest path appends them in report order, so one pass pairs each with its report;
        // the report's record says so, and the count is not written.
        let mut derived = vec![false; batch.reports.len()];
        let mut written = vec![true; batch.targets.len()];
        let mut nel = batch.reports.iter().enumerate().filter(|(_, r)| r.source == Source::Nel);
        let mut next = nel.next();
        for (t, slot) in batch.targets.iter().zip(written.iter_mut()) {
            if let Some((i, _)) = next.filter(|(_, r)| r.has_nel_targets(t)) {
                derived[i] = true;
                *slot = false;
                next = nel.next();
            }
        }
        let reports = batch
            .reports
            .iter()
            .zip(&derived)
            .enumerate()
            .map(|(i, (r, derived))| {
                let value = codec::encode_report(r, *derived)
                    .map_err(|e| StoreError::Encode(format!("reports[{i}]: {e}")))?;
                Ok(PreparedReport {
                    key: codec::report_key(r.event_at, &r.id),
                    id: r.id,
                    value,
                    indexed: r.source != Source::Nel,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let targets = batch
            .targets
            .iter()
            .enumerate()
            .filter(|(i, _)| written[*i])
            .map(|(i, t)| {
                let value = codec::encode_targets(t)
                    .map_err(|e| StoreError::Encode(format!("targets[{i}]: {e}")))?;
                let index = u32::try_from(i)
                    .map_err(|_| StoreError::Encode(format!("more than {} targets", u32::MAX)))?;
                Ok((codec::target_key(t.event_at, &batch.digest, index), value))
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(Prepared {
            digest: batch.digest,
            received_at,
            reports,
            targets,
            target_records: batch.targets.len(),
            drops: batch.agent_drops.clone(),
            drops_app: if batch.agent_drops.is_empty() {
                String::new()
            } else {
                self.drop_app_slot(&batch.agent_app)
            },
            outbox: outbox.map(|value| {
                let key = self.next_outbox_key.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                (key.to_be_bytes(), value)
            }),
        })
    }

    /// Dedup and inserts for a whole group in one transaction. One result per batch, in order.
    /// The batches come back as they were, in order.
    fn apply_group(
        &self,
        batches: Vec<(IngestBatch, Option<Vec<u8>>)>,
    ) -> (Vec<Result<CommitOutcome, StoreError>>, Vec<IngestBatch>) {
        let (prepared, batches): (Vec<Result<Prepared, StoreError>>, Vec<IngestBatch>) =
            batches.into_iter().map(|(b, outbox)| (self.prepare(&b, outbox), b)).unzip();
        let t = &self.trees;
        let result = (
            &t.reports,
            &t.report_ids,
            &t.targets,
            &t.digests,
            &t.digests_by_time,
            &t.meta,
            &t.fleet_outbox,
        )
            .transaction(
                |(reports, report_ids, targets, digests, by_time, meta, fleet_outbox)| {
                    let mut delta = Delta::default();
                    let mut outcomes = Vec::with_capacity(prepared.len());
                    for p in &prepared {
                        let p = match p {
                            Ok(p) => p,
                            Err(e) => {
                                outcomes.push(Err(e.clone()));
                                continue;
                            }
                        };
                        // Published with the batch, or published again with its duplicate:
                        // whoever stored the first copy may have died before publishing it.
                        if let Some((key, value)) = &p.outbox {
                            fleet_outbox.insert(&key[..], value.as_slice())?;
                        }
                        // The one duplicate test: the same envelope bytes were stored. Earlier
                        // batches of this group are visible here (same transaction).
                        if digests.get(p.digest)?.is_some() {
                            outcomes.push(Ok(CommitOutcome::Duplicate));
                            continue;
                        }
                        let time = p.received_at.to_be_bytes();
                        digests.insert(&p.digest[..], &time[..])?;
                        let mut by_time_key = [0u8; 40];
                        by_time_key[..8].copy_from_slice(&time);
                        by_time_key[8..].copy_from_slice(&p.digest);
                        by_time.insert(&by_time_key[..], &[][..])?;

                        let mut stored_reports = 0;
                        for PreparedReport { key, id, value, indexed } in &p.reports {
                            if *indexed {
                                if report_ids.get(id)?.is_some() {
                                    continue;
                                }
                                report_ids.insert(&id[..], &key[..8])?;
                            }
                            // Invariant: report_ids had no entry for this id (or, for a NEL
                            // report, its id derives from the digest just found new), so
                            // reports has no key ending in it.
                            reports.insert(&key[..], value.as_slice())?;
                            stored_reports += 1;
                            delta.reports += 1;
                            delta.bytes += (key.len() + value.len()) as i64 + ID_ENTRY_BYTES as i64;
                        }
                        for (key, value) in &p.targets {
                            let old = targets.insert(&key[..], value.as_slice())?;
                            match old {
                                Some(old) => delta.bytes += value.len() as i64 - old.len() as i64,
                                None => {
                                    delta.targets += 1;
                                    delta.bytes += (key.len() + value.len()) as i64;
                                }
                            }
                        }
                        for (reason, n) in &p.drops {
                            // The total per reason, and the same per app.
                            for key in [drop_key(*reason), drop_app_key(&p.drops_app, *reason)] {
                                let current = match meta.get(&key)? {
                                    Some(v) => codec::be_u64(&v).map_err(|e| {
                                        ConflictableTransactionError::Abort(
                                            self.corrupt("meta", &key, &e),
                                        )
                                    })?,
                                    None => 0,
                                };
                                meta.insert(key, &current.saturating_add(*n).to_be_bytes())?;
                            }
                        }
                        outcomes.push(Ok(CommitOutcome::Stored {
                            reports: stored_reports,
                            targets: p.target_records,
                        }));
                    }
                    self.add_to_meta(meta, delta)?;
                    Ok((outcomes, delta))
                },
            );
        let outcomes = match result {
            Ok((outcomes, delta)) => {
                self.apply_delta(delta);
                outcomes
            }
            Err(e) => {
                let e = self.tx_error(e);
                vec![Err(e); prepared.len()]
            }
        };
        (outcomes, batches)
    }

    fn add_to_meta(&self, meta: &sled::transaction::TransactionalTree, d: Delta) -> TxResult<()> {
        if d.is_zero() {
            return Ok(());
        }
        for (key, change) in
            [(META_REPORTS, d.reports), (META_TARGETS, d.targets), (META_BYTES, d.bytes)]
        {
            let current = match meta.get(key)? {
                Some(v) => codec::be_u64(&v).map_err(|e| {
                    ConflictableTransactionError::Abort(self.corrupt("meta", key, &e))
                })?,
                None => 0,
            };
            meta.insert(key, &current.saturating_add_signed(change).to_be_bytes())?;
        }
        Ok(())
    }

    fn tx_error(&self, e: TransactionError<StoreError>) -> StoreError {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => self.io(e),
        }
    }

    /// Deletes the given rows in one transaction, updating the counters.
    fn delete(
        &self,
        report_keys: &[sled::IVec],
        target_keys: &[sled::IVec],
    ) -> Result<Delta, StoreError> {
        let t = &self.trees;
        let delta = (&t.reports, &t.report_ids, &t.targets, &t.meta)
            .transaction(|(reports, report_ids, targets, meta)| {
                let mut delta = Delta::default();
                for key in report_keys {
                    if let Some(old) = reports.remove(key)? {
                        if let Some(id) = key.get(8..) {
                            report_ids.remove(id)?;
                        }
                        delta.reports -= 1;
                        delta.bytes -= (key.len() + old.len()) as i64 + ID_ENTRY_BYTES as i64;
                    }
                }
                for key in target_keys {
                    if let Some(old) = targets.remove(key)? {
                        delta.targets -= 1;
                        delta.bytes -= (key.len() + old.len()) as i64;
                    }
                }
                self.add_to_meta(meta, delta)?;
                Ok(delta)
            })
            .map_err(|e| self.tx_error(e))?;
        self.apply_delta(delta);
        Ok(delta)
    }

    fn enforce_retention(&self, now: UnixMillis) -> Result<RetentionStats, StoreError> {
        let engine = |e: sled::Error| self.io(e);
        let cutoff = self.admission.cutoff(now).0.to_be_bytes();
        let dedup_cutoff = self.admission.dedup_cutoff(now).0.to_be_bytes();
        let mut stats = RetentionStats::default();
        let t = &self.trees;

        // By age: everything keyed before the cutoff, front of each tree first.
        loop {
            let keys = t
                .reports
                .range(..cutoff)
                .keys()
                .take(DELETE_CHUNK)
                .collect::<Result<Vec<_>, _>>()
                .map_err(engine)?;
            if keys.is_empty() {
                break;
            }
            let d = self.delete(&keys, &[])?;
            stats.expired_reports += d.reports.unsigned_abs();
            stats.freed_bytes += d.bytes.unsigned_abs();
        }
        loop {
            let keys = t
                .targets
                .range(..cutoff)
                .keys()
                .take(DELETE_CHUNK)
                .collect::<Result<Vec<_>, _>>()
                .map_err(engine)?;
            if keys.is_empty() {
                break;
            }
            let d = self.delete(&[], &keys)?;
            stats.expired_targets += d.targets.unsigned_abs();
            stats.freed_bytes += d.bytes.unsigned_abs();
        }
        loop {
            let keys = t
                .digests_by_time
                .range(..dedup_cutoff)
                .keys()
                .take(DELETE_CHUNK)
                .collect::<Result<Vec<_>, _>>()
                .map_err(engine)?;
            if keys.is_empty() {
                break;
            }
            let removed = (&t.digests, &t.digests_by_time)
                .transaction(|(digests, by_time)| {
                    let mut removed = 0u64;
                    for key in &keys {
                        by_time.remove(key)?;
                        let digest = &key[8..];
                        // A digest seen again later (after an earlier expiry) carries a newer
                        // time; only the entry this time-index row describes goes.
                        if digests.get(digest)?.is_some_and(|v| v.as_ref() == &key[..8]) {
                            digests.remove(digest)?;
                            removed += 1;
                        }
                    }
                    Ok(removed)
                })
                .map_err(|e| self.tx_error(e))?;
            stats.expired_digests += removed;
        }
        // By size: oldest event time first across reports and targets.
        while self.counts().bytes > self.config.max_bytes {
            let excess = self.counts().bytes - self.config.max_bytes;
            let (reports, targets) = self.oldest(excess)?;
            if reports.is_empty() && targets.is_empty() {
                break;
            }
            let d = self.delete(&reports, &targets)?;
            stats.evicted_reports +=
                u64::try_from(reports.len()).unwrap_or(0).min(d.reports.unsigned_abs());
            stats.evicted_targets += d.targets.unsigned_abs();
            stats.freed_bytes += d.bytes.unsigned_abs();
        }
        Ok(stats)
    }

    /// The oldest rows (merging both trees by event time) whose sizes add up to `excess`, at
    /// most `DELETE_CHUNK` of them.
    fn oldest(&self, excess: u64) -> Result<(Vec<sled::IVec>, Vec<sled::IVec>), StoreError> {
        let mut reports = self.trees.reports.iter();
        let mut targets = self.trees.targets.iter();
        let mut next_report = self.next_row(&mut reports, "reports", ID_ENTRY_BYTES)?;
        let mut next_target = self.next_row(&mut targets, "targets", 0)?;
        let (mut report_keys, mut target_keys) = (Vec::new(), Vec::new());
        let mut freed = 0u64;
        while freed < excess && report_keys.len() + target_keys.len() < DELETE_CHUNK {
            let take_report = match (&next_report, &next_target) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some(r), Some(t)) => r.0 <= t.0,
            };
            if take_report {
                if let Some((_, key, size)) = next_report.take() {
                    freed += size;
                    report_keys.push(key);
                }
                next_report = self.next_row(&mut reports, "reports", ID_ENTRY_BYTES)?;
            } else {
                if let Some((_, key, size)) = next_target.take() {
                    freed += size;
                    target_keys.push(key);
                }
                next_target = self.next_row(&mut targets, "targets", 0)?;
            }
        }
        Ok((report_keys, target_keys))
    }

    /// The next row of a time-keyed tree as (event time, key, logical size).
    fn next_row(
        &self,
        iter: &mut sled::Iter,
        tree: &str,
        extra: u64,
    ) -> Result<Option<(u64, sled::IVec, u64)>, StoreError> {
        match iter.next() {
            None => Ok(None),
            Some(Err(e)) => Err(self.io(e)),
            Some(Ok((k, v))) => {
                let time = codec::key_time(&k).map_err(|e| self.corrupt(tree, &k, &e))?;
                let size = (k.len() + v.len()) as u64 + extra;
                Ok(Some((time, k, size)))
            }
        }
    }

    /// A storage engine error after opening.
    fn io(&self, e: sled::Error) -> StoreError {
        match e {
            sled::Error::Corruption { .. } => engine_error(&self.path, e),
            other => StoreError::Io(format!("{}: {other}", self.path.display())),
        }
    }
}

/// How long [`Store::open`] waits for sled's file lock: a store closed a moment ago in this
/// process (sled's I/O threads drop their last handle shortly after `close`) or a collector
/// that is still exiting frees it within this; a running collector keeps it, and the open fails
/// naming the lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Opens sled at `path`, polling for its file lock up to [`LOCK_WAIT`].
fn open_sled(path: &Path, cache_bytes: u64) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_WAIT;
    loop {
        match sled::Config::new().path(path).cache_capacity(cache_bytes).open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

fn engine_error(path: &Path, e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { at, .. } => StoreError::Corrupt {
            path: path.to_owned(),
            detail: match at {
                Some(at) => format!("storage engine found damaged data at {at:?}"),
                None => "storage engine found damaged data".into(),
            },
        },
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            StoreError::Open {
                path: path.to_owned(),
                reason: format!(
                    "{io}: another process holds this store (is a collector already running on it?)"
                ),
            }
        }
        sled::Error::Io(io) => StoreError::Open { path: path.to_owned(), reason: io.to_string() },
        other => StoreError::Open { path: path.to_owned(), reason: other.to_string() },
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Country, Enrichment, NetTag, Source};
    use vantage_agent::taxonomy::{ErrorType, NetworkType, Phase, Scope};

    fn report(id: u8, event_at: u64) -> StoredReport {
        StoredReport {
            id: [id; 16],
            received_at: UnixMillis(event_at + 5),
            event_at: UnixMillis(event_at),
            source: Source::Agent,
            service: "svc".into(),
            host: "example.org".into(),
            phase: Phase::Connection,
            error_type: ErrorType::Other("quic.handshake_timeout".into()),
            elapsed_ms: 12,
            status: None,
            network: NetworkType::Wifi,
            scope: Scope::Path,
            count: 1,
            sample_ppm: 1_000_000,
            client: Some([9; 32]),
            net: NetTag(77),
            enrichment: Enrichment::default(),
        }
    }

    fn batch(digest: u8, reports: Vec<StoredReport>) -> IngestBatch {
        IngestBatch {
            digest: [digest; 32],
            sequence: None,
            reports,
            targets: Vec::new(),
            agent_drops: Vec::new(),
            agent_app: String::new(),
        }
    }

    /// A NEL upload as the ingest path builds it: `n` failure reports, each with its count.
    fn nel_batch(digest: u8, received_at: u64, n: u8) -> IngestBatch {
        let reports: Vec<StoredReport> = (0..n)
            .map(|i| StoredReport {
                source: Source::Nel,
                client: None,
                sample_ppm: 250_000,
                received_at: UnixMillis(received_at),
                ..report(digest.wrapping_mul(16).wrapping_add(i), received_at - 100 + u64::from(i))
            })
            .collect();
        let targets = reports.iter().filter_map(StoredReport::nel_targets).collect();
        IngestBatch { targets, ..batch(digest, reports) }
    }

    fn all_reports_of(store: &Store) -> Vec<StoredReport> {
        store.scan_reports(UnixMillis(0), UnixMillis(u64::MAX)).map(Result::unwrap).collect()
    }

    fn all_targets(store: &Store) -> Vec<StoredTargets> {
        store.scan_targets(UnixMillis(0), UnixMillis(u64::MAX)).map(Result::unwrap).collect()
    }

    #[tokio::test]
    async fn a_store_in_use_is_refused_by_name_and_a_closed_one_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(StoreConfig::new(dir.path())).unwrap();
        let started = std::time::Instant::now();
        let Err(e) = Store::open(StoreConfig::new(dir.path())) else {
            panic!("two stores opened on one directory");
        };
        assert!(started.elapsed() >= LOCK_WAIT, "refused before the lock wait");
        assert!(e.to_string().contains("another process holds this store"), "{e}");
        first.close().await.unwrap();
        drop(first);
        // sled's I/O threads may still hold the files a moment: the open waits for them.
        let again = Store::open(StoreConfig::new(dir.path())).unwrap();
        again.close().await.unwrap();
    }

    #[tokio::test]
    async fn nel_counts_are_derived_from_their_reports_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let mut b = nel_batch(1, 10_000, 3);
        // A NEL success count (no report of its own) stays a row.
        let ok = StoredTargets { successes: 4, ..b.targets[0].clone() };
        b.targets.insert(0, ok.clone());
        let outcome = store.commit(b.clone()).await.unwrap();
        assert_eq!(outcome, CommitOutcome::Stored { reports: 3, targets: 4 });
        assert_eq!(store.shared.trees.targets.len(), 1, "only the success count is a row");
        assert!(store.shared.trees.report_ids.is_empty(), "NEL ids derive from the digest");
        // Read back: every count the batch carried, in event order.
        let mut want = b.targets.clone();
        want.sort_by_key(|t| t.event_at);
        assert_eq!(all_targets(&store), want);
        // A retry is still a duplicate.
        assert_eq!(store.commit(b).await.unwrap(), CommitOutcome::Duplicate);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_format_1_store_is_upgraded_and_its_nel_count_rows_are_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        // What format 1 wrote for a NEL upload: the reports, their ids and a row per count.
        let old = nel_batch(1, 10_000, 2);
        let t = &store.shared.trees;
        for (i, r) in old.reports.iter().enumerate() {
            let key = codec::report_key(r.event_at, &r.id);
            // A version 1 record: version 2 without its last (derived-count) byte.
            let mut v1 = codec::encode_report(r, false).unwrap();
            v1[0] = 1;
            v1.pop();
            t.reports.insert(key, v1).unwrap();
            t.report_ids.insert(r.id, &key[..8]).unwrap();
            let count = r.nel_targets().unwrap();
            let key = codec::target_key(count.event_at, &old.digest, i as u32);
            t.targets.insert(key, codec::encode_targets(&count).unwrap()).unwrap();
        }
        t.meta.insert(META_FORMAT, &1u32.to_be_bytes()).unwrap();
        store.close().await.unwrap();
        drop(store);

        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let format = store.shared.trees.meta.get(META_FORMAT).unwrap().unwrap();
        assert_eq!(format.as_ref(), FORMAT_VERSION.to_be_bytes());
        // The old rows are read as they are, not a second time from their reports.
        assert_eq!(all_reports_of(&store), old.reports);
        assert_eq!(all_targets(&store), old.targets);
        // A NEL upload after the upgrade: its count is derived.
        let new = nel_batch(2, 20_000, 1);
        store.commit(new.clone()).await.unwrap();
        assert_eq!(all_targets(&store), [old.targets.clone(), new.targets].concat());
        assert_eq!(store.shared.trees.targets.len(), 2);
        store.close().await.unwrap();
        drop(store);

        // A format this build does not know is refused by name.
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.shared.trees.meta.insert(META_FORMAT, &3u32.to_be_bytes()).unwrap();
        store.close().await.unwrap();
        drop(store);
        let err = Store::open(StoreConfig::new(dir.path())).unwrap_err().to_string();
        assert!(err.contains("on-disk format 3"), "{err}");
    }

    #[tokio::test]
    async fn agent_drops_are_kept_per_app_for_a_bounded_number_of_apps() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let dropping = |d: u8, app: String, n: u64| IngestBatch {
            agent_drops: vec![(DropReason::QueueFull, n)],
            agent_app: app,
            ..batch(d, vec![report(d, 100)])
        };
        for i in 0..MAX_DROP_APPS + 3 {
            let app = format!("com.example.app{i:03}");
            store.commit(dropping(i as u8, app, 1)).await.unwrap();
        }
        // Again for a known app after the bound was reached: still its own.
        store.commit(dropping(250, "com.example.app000".into(), 4)).await.unwrap();
        let by_app = store.agent_drops_by_app().unwrap();
        let count = |app: &str| by_app.iter().find(|(a, _, _)| a == app).map(|(_, _, n)| *n);
        assert_eq!(by_app.len(), MAX_DROP_APPS + 1, "{by_app:?}");
        assert_eq!(count("com.example.app000"), Some(5));
        assert_eq!(count(OTHER_APP), Some(3), "the three apps past the bound");
        assert_eq!(count(&format!("com.example.app{:03}", MAX_DROP_APPS)), None);
        assert_eq!(store.agent_drops().unwrap(), vec![("queue_full", MAX_DROP_APPS as u64 + 7)]);
        // The slots survive a restart: a new app still goes to OTHER_APP.
        store.close().await.unwrap();
        drop(store);
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.commit(dropping(251, "com.example.new".into(), 2)).await.unwrap();
        let by_app = store.agent_drops_by_app().unwrap();
        assert!(by_app.contains(&(OTHER_APP.to_owned(), "queue_full", 5)), "{by_app:?}");
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn identical_batches_in_one_group_store_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let b = batch(1, vec![report(1, 100), report(2, 100)]);
        let mut replayed = b.clone();
        replayed.digest = [2; 32];
        replayed.sequence = None;
        let (results, back) =
            store.shared.apply_group(vec![(b.clone(), None), (b.clone(), None), (replayed, None)]);
        assert_eq!(back[0], b, "the batches come back unchanged");
        assert_eq!(results[0].as_ref().unwrap(), &CommitOutcome::Stored { reports: 2, targets: 0 });
        assert_eq!(results[1].as_ref().unwrap(), &CommitOutcome::Duplicate);
        // Another upload carrying the same report ids stores none of them again.
        assert_eq!(results[2].as_ref().unwrap(), &CommitOutcome::Stored { reports: 0, targets: 0 });
        assert_eq!(store.stats().reports, 2);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn the_fleet_outbox_entry_is_written_with_the_batch_and_again_with_its_duplicate() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let outbox = store.open_tree(FLEET_OUTBOX_TREE).unwrap();
        let b = batch(1, vec![report(1, 100)]);
        let stored = store.commit_with_outbox(b.clone(), Some(b"first".to_vec())).await.0.unwrap();
        assert_eq!(stored, CommitOutcome::Stored { reports: 1, targets: 0 });
        // A plain commit writes no entry.
        store.commit(batch(2, vec![report(2, 100)])).await.unwrap();
        let dup = store.commit_with_outbox(b, Some(b"again".to_vec())).await.0.unwrap();
        assert_eq!(dup, CommitOutcome::Duplicate);
        let entries = |t: &sled::Tree| -> Vec<(u64, Vec<u8>)> {
            t.iter()
                .map(|e| {
                    let (k, v) = e.unwrap();
                    (codec::be_u64(&k).unwrap(), v.to_vec())
                })
                .collect()
        };
        assert_eq!(entries(&outbox), vec![(1, b"first".to_vec()), (2, b"again".to_vec())]);
        // The publisher drains the front; keys go on after a reopen, never reused.
        outbox.remove(1u64.to_be_bytes()).unwrap();
        outbox.remove(2u64.to_be_bytes()).unwrap();
        outbox.insert(7u64.to_be_bytes(), &b"left"[..]).unwrap();
        store.close().await.unwrap();
        drop((store, outbox));
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let third = Some(b"third".to_vec());
        store.commit_with_outbox(batch(3, vec![report(3, 100)]), third).await.0.unwrap();
        let outbox = store.open_tree(FLEET_OUTBOX_TREE).unwrap();
        assert_eq!(entries(&outbox), vec![(7, b"left".to_vec()), (8, b"third".to_vec())]);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn the_logical_bytes_bound_is_not_exceeded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let mut big = report(4, 700);
        big.service = "s".repeat(300);
        big.host = "h".repeat(200);
        big.elapsed_ms = u32::MAX;
        big.status = Some(u16::MAX);
        big.count = u32::MAX;
        big.received_at = UnixMillis(u64::MAX);
        big.enrichment = Enrichment { asn: Some(u32::MAX), country: Country::parse("DE") };
        let mut b = batch(5, vec![report(1, 100), report(2, 100), big]);
        b.targets.push(StoredTargets {
            received_at: UnixMillis(u64::MAX),
            event_at: UnixMillis(100),
            service: "svc".into(),
            host: "example.org".into(),
            attempts: u64::MAX,
            successes: u64::MAX,
            client: [1; 32],
            net: NetTag(1),
            enrichment: Enrichment { asn: Some(7), country: None },
        });
        let bound = logical_bytes_bound(&b);
        store.commit(b).await.unwrap();
        let added = store.stats().bytes;
        assert!(added <= bound && bound <= added * 2, "added {added}, bound {bound}");
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_damaged_record_is_corrupt_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.commit(batch(1, vec![report(3, 500)])).await.unwrap();
        let key = codec::report_key(UnixMillis(500), &[3; 16]);
        store.shared.trees.reports.insert(&key[..], &[1, 0xff][..]).unwrap();
        let err = store.scan_reports(UnixMillis(0), UnixMillis(1000)).next().unwrap().unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, StoreError::Corrupt { .. }), "{text}");
        assert!(text.contains(&hex(&key)), "{text}");
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn counters_are_rebuilt_when_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.commit(batch(1, vec![report(1, 1), report(2, 2)])).await.unwrap();
        let before = store.stats();
        for key in [META_REPORTS, META_TARGETS, META_BYTES] {
            store.shared.trees.meta.remove(key).unwrap();
        }
        store.close().await.unwrap();
        drop(store);
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let after = store.stats();
        assert_eq!((after.reports, after.bytes), (before.reports, before.bytes));
        assert_eq!(after.reports, 2);
        store.close().await.unwrap();
    }

    #[test]
    fn report_records_round_trip_with_unknown_labels() {
        let mut r = report(4, 123_456);
        r.status = Some(503);
        r.enrichment = Enrichment { asn: Some(u32::MAX), country: Country::parse("nz") };
        let key = codec::report_key(r.event_at, &r.id);
        let value = codec::encode_report(&r, false).unwrap();
        assert_eq!(codec::decode_report(&key, &value).unwrap(), r);
        let mut longer = value.clone();
        longer.push(0);
        assert!(codec::decode_report(&key, &longer).unwrap_err().contains("trailing"));
        // The derived-count byte: read back; anything but 0 or 1 is corrupt; version 1
        // records (no such byte) still read, without a derived count.
        let flagged = codec::encode_report(&r, true).unwrap();
        assert_eq!(codec::decode_report_and_count(&key, &flagged).unwrap(), (r.clone(), true));
        let mut bad = flagged.clone();
        *bad.last_mut().unwrap() = 2;
        assert!(codec::decode_report(&key, &bad).unwrap_err().contains("derived count"));
        let mut v1 = flagged;
        v1[0] = 1;
        v1.pop();
        assert_eq!(codec::decode_report_and_count(&key, &v1).unwrap(), (r, false));
    }
}
