//! The collector's durable store: accepted reports and target counts in sled, with dedup,
//! group commit and retention.
//!
//! # On-disk layout (sled 0.34, one directory; format 8)
//!
//! Everything but the format marker is in **one tree, `rows`**, so a group commit is one
//! journal record (no multi-tree transaction), and it writes few keys: reports are not
//! a key each but entries of *rows*, one row per time bucket ([`BUCKET_MS`], 1 s) per
//! checkpoint (split at about 4 KiB; the key's group seq is the first group since the last
//! checkpoint with entries in the bucket): a group's rows are journaled and held in memory until
//! the checkpoint writes them merged (`unflushed.rs`). Envelope digests are held the same way,
//! by the second the envelope was made, and merged into that second's rows.
//!
//! | `rows` key                                             | value                                 |
//! |--------------------------------------------------------|---------------------------------------|
//! | `R` ‖ bucket u64 BE ‖ group seq u64 BE ‖ chunk u32 BE   | report entries (below)                |
//! | `T` ‖ bucket ‖ group seq ‖ chunk                        | targets entries (not NEL failure counts) |
//! | `I` ‖ lower bound (16): chunks of agent report ids (`ids.rs`) | up to 64 sorted ids, 16 bytes each |
//! | `P` ‖ group seq u64 BE ‖ piece u32 BE: a group's new agent report ids, not merged into `I` yet (`ids.rs`); format 7 wrote a whole run under `P` ‖ seq | its sorted ids, 16 bytes each, at most 256 a piece |
//! | `G` ‖ `created_at` bucket u64 BE ‖ the row's greatest digest (32) | version byte (2), the row's `until` (u64 BE: no report or count of its envelopes has a later event time; see "Duplicates"), then sorted digests (32 bytes each) of envelopes made in the bucket, at most 128; a bucket's rows hold disjoint ranges. Format 6 rows: version byte 1, no `until` |
//! | `C` ‖ envelope `created_at` u64 BE ‖ envelope digest (32): written by formats 4 and 5, read until the dedup horizon passed | empty |
//! | `N` ‖ group `received_at` u64 BE ‖ group seq ‖ 0 u32    | the group's new NEL upload digests, their first 16 bytes each (`recent.rs`) |
//! | `D` ‖ upload digest (32): written by format 3 only, read until the dedup horizon passed | group `received_at` u64 BE |
//! | `E` ‖ group `received_at` u64 BE ‖ group seq ‖ 0 u32: format 3 only | the group's new digests, 32 bytes each |
//! | `M` ‖ `reports` / `targets` / `digests` / `bytes` / `seq` / `outbox_hi` | u64 BE counters (`digests`: envelope digests in `G` rows), next group seq, outbox keys backed by rows |
//! | `M` ‖ `g1_until`                                        | u64 BE: when a format 6 store was first opened as format 7, the `until` of its version 1 `G` rows |
//! | `M` ‖ `drops/` ‖ code u16 BE, `M` ‖ `drops_app/` ‖ app ‖ 0 ‖ code u16 BE (at most `MAX_DROP_APPS` apps, then `(other)`) | u64 BE totals |
//!
//! | tree           | key                                  | value                                  |
//! |----------------|--------------------------------------|----------------------------------------|
//! | `meta`         | `format`                             | u32 BE: 7                              |
//! | `fleet_outbox` | u64 BE, increasing (fleet mode only) | flag ‖ digest (32) ‖ stream payload    |
//!
//! A row value (`codec::encode_row`) is a version byte (3), the entry count, then per entry
//! its event time as a varint delta (from the bucket start, then from the previous entry),
//! the report id (reports only) and the record with its length. Entries are sorted by (event
//! time, id). Records are a version byte and compact varint/label fields (`codec.rs`); labels
//! are stored as their stable strings.
//!
//! Row keys start with the bucket, so a time range is one range scan; a read decodes one
//! bucket's rows at a time and sorts them, so it holds one bucket in memory (plus a snapshot of
//! the range's rows held since the last checkpoint, merged into the scan by key). `I` makes a
//! report re-sent in a later upload (same id, slightly different event time) a no-op instead
//! of a second copy; its ids are packed in sorted chunks, so it costs a key per 48 to 64 ids.
//! A group commit does not rewrite chunks: it writes its new ids as one `P` run, which the
//! writer keeps in memory and merges into the chunks in bulk later (`ids.rs`, "Pending
//! runs"); agents make ids that sort by time, so a merge mostly appends chunks.
//!
//! [`StoreStats::bytes`] (what `max_bytes` bounds and the storage share charges) is counted as
//! format 1 laid it out (a report: 24 bytes of key, 24 of id entry, its record; a count: 28
//! bytes of key and its record), so the figures did not change with the layout.
//!
//! # Duplicates: by digest, exactly once
//!
//! An agent re-sends an unacknowledged envelope byte for byte, so the SHA-256 of the envelope
//! (its *digest*) is what identifies a retry. The writer decides `Duplicate` by the stored
//! digests only, inside the group's write, so any order, any concurrency and any sequence
//! gap (an agent restart moves its sequence numbers up by 10,000) gives exactly one `Stored`
//! per envelope. Digests are filed by the envelope's `created_at` (from the signed envelope: a
//! re-send carries the same), so the index grows at its end in time order instead of at
//! random places (a random key per envelope made sled read and copy a leaf anywhere in the
//! index and keep bookkeeping for pages all over it: `docs/performance.md`, fifth round).
//!
//! Format 6 packs them: a group's new digests are journaled as one deferred `G` row per second
//! of `created_at` and held in memory with the report rows (`unflushed.rs`); the checkpoint
//! merges each second's held digests into that second's rows in sled, which split the second's
//! digests into disjoint ranges, each row keyed by its greatest digest: a digest goes into the
//! row whose range holds it, and a row that gets digests is rewritten, split in even parts when
//! it outgrows 128 (one atomic sled batch per second; the rows nothing went into are not
//! touched). A second's digests so take about one key per 64 to 128 envelopes instead of one
//! each (format 4 and 5's `C` keys: one sled key per
//! envelope was most of the keys of the store, and sled's memory grows with its keys;
//! `docs/performance.md`, seventh round), and the duplicate test is the digests held in
//! memory, then one seek: the first row of the second at or above the digest is the only one
//! that can hold it. (Rows per checkpoint, as report rows are, made the test read a row per
//! checkpoint that had the second: a checkpoint every 1 MiB is several per second under load,
//! and sled's iterator seeks cost more than the `C` key's point read had.) A merge is a union,
//! so a replay over a checkpoint that a crash cut short merges to the same rows.
//!
//! Digests are kept for the dedup horizon (the longer of the retention and `dedup_horizon`,
//! default 10 days; agents retry for at most 7 days by default): an envelope made longer ago
//! than the horizon is refused at admission ([`Admission::check_created_at`]), so the retention
//! pass forgets the rows of seconds before it, a range at the front of the index, and a replay
//! cannot outlive its digest.
//!
//! They also count toward `max_bytes` ([`DIGEST_BYTES`] each: format 6 kept them on top of it,
//! up to the upload rate times the horizon, which no bound held), and the size pass forgets
//! those that protect nothing any more: a digest guards against a second copy of its
//! envelope's reports and counts, so once none of them is stored, forgetting it can at worst
//! let a re-send store again what was evicted, never a second copy. A `G` row keeps the
//! latest time any of its envelopes' data can have (`until`: the greatest of the group's
//! receipt time and event times, since every event time is at or before receipt on the
//! collector's clock, `model.rs`; merged rows take the later), and the size pass forgets a row
//! whose `until` is earlier than the oldest report or count left, first, before evicting
//! data (`Shared::evict_digests`). It is the collector's clock that decides, not the agent's
//! `created_at`: an agent whose clock is behind cannot make its digests look older than its
//! data. (A re-sent envelope that comes back this way also adds its agent drop totals again:
//! they are totals, not rows, and nothing bounds a replay of them but the sender's budgets.)
//!
//! NEL uploads are deduplicated within a window instead (the last 10 minutes, at most 131,072
//! uploads): see `recent.rs` for why. Their digests are in memory and in one `N` row per group.
//!
//! A format 4 or 5 store (marked 6 at open: nothing moves) has `C` keys, one per envelope; the
//! writer also looks an envelope up there for as long as any is left, and retention forgets
//! them by their `created_at` as before.
//!
//! A format 3 store (upgraded in place by writing the new marker: nothing moves) has `D` keys,
//! one per digest, and `E` rows listing them; the writer also looks every digest (envelope or
//! NEL) up in `D` for as long as any is left, so nothing stored before the upgrade is stored
//! again, and retention forgets them by their `E` rows as before.
//!
//! Format 1 stores also kept a per-agent `(key, seq)` bitmap window. It was dropped: a window
//! can only prove "duplicate" for a `(key, seq)` it recorded, which the digest proves already,
//! and what it did beyond that (refusing sequence numbers older than the window) refused new
//! envelopes that arrived after newer ones. Its tree is dropped by the upgrade.
//!
//! # NEL uploads
//!
//! A NEL upload of n failures is n entries in its group's row for their second and 16 bytes
//! of its group's `N` row (and its share of the group's counter updates), nothing else: no
//! key of its own; NEL uploads and envelopes share the writer's groups, so one journal record
//! and one `fdatasync` cover both:
//! - Its report ids derive from its digest (`ingest::accept::nel_batch`), so a digest found
//!   new means ids never stored: NEL reports get no `I` entry and no id lookup. (The
//!   one difference: a NEL body replayed after its digest left the window is stored again
//!   where format 1 skipped those of its reports still retained. NEL is unauthenticated, so
//!   such a replay is no different from any forged upload, which the per-/24 budgets bound.)
//! - Each failure's count (1 / its sampling fraction attempts, no successes, on its network's
//!   stand-in client) holds nothing the report does not, so it is not a `T` entry: the
//!   report's record carries a flag (record version 2, `codec.rs`) and
//!   [`Store::scan_targets`] derives the count from it ([`StoredReport::nel_targets`]). The
//!   writer flags exactly the reports whose batch carried a count equal to that derivation;
//!   anything else (NEL `ok` counts, agent counts) is a `T` entry. [`StoreStats::targets`] counts
//!   those, and [`StoreStats::bytes`] counts 24 bytes of id entry for every report, NEL or
//!   not, as before.
//!
//! # Formats
//!
//! Format 1 wrote a key per report, per id and per count in trees of their own; format 2 kept
//! NEL counts in their reports (above); format 3 is the `rows` layout; format 4 keys envelope
//! digests by `created_at` and keeps NEL digests in a window (below); format 5 journals a
//! group's rows as deferred writes (`unflushed.rs`), which an older build could not replay;
//! format 6 packs envelope digests into `G` rows, which an older build would not
//! look up (it would store a re-send again); format 7 gives `G` rows an `until`
//! and counts digests in `bytes`, which format 6 would read as a corrupt row and a store over
//! its bound; format 8 (this build) writes a group's id run in pieces of at most 256 ids
//! (`ids::RUN_PIECE`: a whole run could be written by sled to a blob file it never deleted),
//! whose keys format 7 would refuse as corrupt. A format 7 store is marked 8 at open with
//! nothing moved (its whole runs are read and merged as they are). A format 3 to 6 store is
//! marked 8 at open with nothing moved as well. Its version 1
//! `G` rows are not counted and not evicted by size: they expire by age, as they did (counting
//! them at once could put a store that sat at its bound far over it, and since their envelopes
//! may have been received as late as the upgrade, the size pass would have to evict every
//! report stored before it to free them). A version 1 row that new digests go into is
//! rewritten as version 2 with `M` ‖ `g1_until` (the first open's time, written before the
//! marker: later than the receipt of any of its envelopes) as the old digests' `until`, and
//! counted from then on, in the checkpoint's batch for that second; while version 1 rows are
//! left, the count is taken from the rows at every open (a crash between that batch and the
//! next journal record leaves the journal's count), and once none is left `g1_until` goes.
//! Opening a
//! format 1 or 2 store upgrades it in place (`upgrade.rs`): the old trees are moved into
//! `rows` a step at a time, each step a transaction that inserts the rows and removes the old
//! entries, so a kill during the upgrade leaves a store that the next open goes on upgrading.
//! Records are copied byte for byte (format 1's version 1 report records read as reports
//! without a derived count, and its NEL count rows stay counts, so every count is read exactly
//! once). A build that does not know format 3 refuses it by name ("on-disk format 3"), and
//! this one refuses a later format the same way.
//!
//! # Writes
//!
//! One writer thread (`store-writer`) owns all inserts. [`Store::commit`] sends the batch over
//! a bounded channel and waits; the writer checks free space ([`disk`]), takes everything
//! queued (up to [`MAX_GROUP`] batches), runs dedup (envelope digests: those held in memory,
//! then the `G` rows of the envelope's second, and `C` or `D` while an older format's are
//! left; for report ids the
//! pending ids in memory, and `I` only for an id at or below the greatest id in the chunks; the
//! window in memory for NEL digests) and
//! builds **one batch of writes for the whole group**: its digests, id run, rows, `N` row,
//! counters and drop totals; appends it to the store's [`journal`] as one record and `fdatasync`s that
//! file ([`SyncMode::Data`], the default), applies it to `rows` but for its report and count
//! rows, which it holds in memory (`unflushed.rs`; in memory: sled writes its log
//! on its own, and every [`journal::CHECKPOINT_PERIOD`] the writer writes the held rows merged,
//! flushes sled and syncs its files, after which the journal starts over) and only then
//! answers every waiter. After a
//! crash either the whole group is there or none of it: the journal's records since the last
//! checkpoint are applied again at open (see [`journal`], "Recovery"). A client that got no
//! answer retries and gets `Stored` or `Duplicate`, both of which are correct. Nothing is
//! acknowledged before the sync that made it durable, including `Duplicate` (the original may
//! be in the same, not yet synced, group).
//! The counters and drop totals are read, added to and written back by whoever holds the
//! store's write lock (the writer, or one retention step), so no transaction is needed.
//!
//! # The fleet outbox
//!
//! In fleet mode the ingest path hands `Store::commit_with_outbox` the batch *and* the bytes
//! the fleet publisher sends to the stream; the writer inserts them into
//! `fleet_outbox` right before the group's rows (both as atomic sled batches, not journaled:
//! such a group is checkpointed, sled's flush and sync, before it is answered), both when it
//! stores the batch and when it finds it a `Duplicate` (the stored copy might have been acknowledged by a collector
//! killed before it published; the consumers drop the second copy by digest). So whatever
//! was acknowledged is either published or still in the outbox: a kill between the commit and
//! the publish cannot lose it. sled recovers a prefix of its log, so rows that survive a kill
//! have their outbox entries; the rows batch also records how far the outbox is backed
//! (`outbox_hi`), and entries past it (a kill between the two writes: never stored, never
//! acknowledged) are deleted at open, so what is published is exactly what is stored.
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
//! Retention ([`Store::enforce_retention`]) deletes in steps of its own (one journal record
//! each, under the write lock) that also update the counters: by age, entries before the
//! cutoff (a row across the cutoff is rewritten without them); `G` rows of seconds before the
//! dedup horizon's and `C` digests made before it, `N` rows older than the NEL window, format 3's digests by their `E` rows; by
//! size, first the `G` rows whose envelopes have no data left (see "Duplicates"), then whole
//! report and count rows oldest first (by bucket, then group: "oldest" to the second), which
//! leaves more such `G` rows for the next round.
//!
//! # Memory
//!
//! sled keeps bookkeeping for every node of its tree in memory, cached or not (its page
//! table and each log segment's list of pages), and a leaf holds at most 16 keys: memory grows
//! with the number of keys stored, not with their bytes. Format 3 stores a report in a shared
//! row and packs agent report ids 32 to 64 to a key (`ids.rs`), and format 6 64 to 128
//! envelope digests to a key (format 4 and 5 had a key per envelope: most of the store's keys).
//! Measured with `vantage-loadgen --duration 2 --rss-reports 6000000` (agent envelopes of 10
//! reports, 16 MiB cache): format 6 66-72 MiB at 6M, growing 1.2-3.8 MiB per million over
//! the second half (two sessions), against 86-89 MiB and 6.4-8.2 MiB per million for format 5; format 2 held 221-238 MiB at 2M and format 3 with a key per id 192-193 MiB. Besides the keys: the page cache
//! ([`StoreConfig::cache_bytes`]), which sled undercounts (about 2x), and transient buffers of
//! one group (at most [`MAX_GROUP`] batches) and of one bucket per read.
//! `max_bytes` bounds the stored volume and so what grows with it: held at a 64 MiB bound
//! (`vantage-loadgen --store-max-mib 64`), memory rose in glibc's heap steps to about 97 MiB and
//! stayed there (98.8 MiB at 15M reports; `docs/performance.md`, ninth round). Since format 7
//! it counts envelope digests too (format 6 kept them for the dedup horizon on top of it, and
//! the store's files grew with them: from 156 to 220 MiB over 8M to 15M reports at a 64 MiB
//! bound; tenth round).

pub mod admit;
mod codec;
pub mod disk;
mod ids;
pub mod journal;
mod recent;
mod unflushed;
mod upgrade;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use vantage_agent::drops::DropReason;
use vantage_agent::report::UnixMillis;

use crate::model::{IngestBatch, Origin, Source, StoredReport, StoredTargets};
pub use admit::{Admission, Refusal};
use disk::{Space, SpaceGuard, Syncer};
pub use disk::{SpaceLimits, SyncMode};
use journal::{Batch, Journal};

/// The on-disk format this build writes and reads (the `meta/format` value). Format 1
/// stores are upgraded in place when opened (see "Formats").
pub const FORMAT_VERSION: u32 = 8;
/// Most batches one group commit takes from the queue.
pub const MAX_GROUP: usize = 256;
/// Capacity of the channel into the writer; `commit` waits when it is full.
const QUEUE: usize = 1024;
/// Rows looked at per retention step (one `apply_batch`).
const DELETE_CHUNK: usize = 256;
/// sled page cache by default ([`StoreConfig::cache_bytes`]).
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;
/// How often the collector calls [`Store::enforce_retention`] by default
/// (`store.retention_check_secs`).
pub const DEFAULT_RETENTION_CHECK: Duration = Duration::from_secs(300);
/// Logical bytes a `report_ids` entry adds to a report.
const ID_ENTRY_BYTES: u64 = 16 + 8;

const META_FORMAT: &[u8] = b"format";
/// Meta key in `rows`: every `fleet_outbox` key below it is backed by a group's rows.
const META_OUTBOX_HI: &[u8] = b"outbox_hi";
const META_REPORTS: &[u8] = b"reports";
const META_TARGETS: &[u8] = b"targets";
const META_BYTES: &[u8] = b"bytes";
/// Meta key in `rows`: envelope digests in `G` rows (counted in `bytes` at [`DIGEST_BYTES`]).
const META_DIGESTS: &[u8] = b"digests";
/// Meta key in `rows`: when a format 6 store was opened by a format 7 build, which is later
/// than the receipt of any envelope in a format 6 `G` row (their `until`).
const META_V1_UNTIL: &[u8] = b"g1_until";
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
    /// Logical size (see [`StoreStats::bytes`]: reports, counts and envelope digests) above
    /// which the oldest data is deleted, after the digests of envelopes with no data left.
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
    /// it costs (about 2x), and besides the cache its bookkeeping grows with the number of
    /// keys stored, which format 3 keeps to about one per upload (see "Memory"): `max_bytes`
    /// is what bounds memory in the end (README).
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
    /// Envelope digests forgotten to get under `max_bytes`: of envelopes none of whose
    /// reports and counts is stored any more.
    pub evicted_digests: u64,
    /// Logical bytes freed (reports, targets and evicted digests).
    pub freed_bytes: u64,
}

/// Counts and sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Reports stored.
    pub reports: u64,
    /// Target-count records stored.
    pub targets: u64,
    /// Envelope digests remembered for duplicate detection.
    pub digests: u64,
    /// Logical size of reports (with their id index entries), targets, keys and values, and
    /// envelope digests ([`DIGEST_BYTES`] each): the figure `max_bytes` bounds.
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
    let digest = match batch.origin {
        Origin::Agent { .. } => DIGEST_BYTES,
        Origin::Nel => 0,
    };
    (reports + targets) as u64 + digest
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
    /// The group-commit writer's thread (see [`run_writer`]).
    writer: tokio::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
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
    /// In-memory mirror of the counters in `rows`: changed only with `write` held, together
    /// with the batch that writes their new values.
    counts: Mutex<Counts>,
    /// Held by whoever writes to `rows` (the group-commit writer, a retention step), so the
    /// counters and drop totals each of them reads, adds to and writes back are not changed
    /// in between: one journal record per step instead of a transaction. The journal's
    /// order is this lock's order.
    write: Mutex<WriteState>,
    /// Next `fleet_outbox` key. Only the writer inserts (one group at a time), so keys
    /// increase in commit order and are never reused.
    next_outbox_key: std::sync::atomic::AtomicU64,
    /// Every `fleet_outbox` key below this is on stable storage: what the publisher may send.
    /// (sled applies a group's batch in memory before the group's flush and sync; an entry
    /// published before its sync could reach the stream and then vanish from the store in a
    /// crash.)
    outbox_durable_below: std::sync::atomic::AtomicU64,
    /// Apps with per-app drop totals (at most [`MAX_DROP_APPS`]; loaded at open).
    drop_apps: Mutex<std::collections::BTreeSet<String>>,
    /// The NEL window's gauges (`recent.rs`).
    nel_window: NelWindowGauges,
    /// Report and count rows acknowledged since the last checkpoint (`unflushed.rs`): added
    /// to and emptied by the holder of `write`, read by scans.
    unflushed: Mutex<unflushed::Unflushed>,
    /// The `until` of format 6 `G` rows, which carry none ([`META_V1_UNTIL`]; `u64::MAX`, never
    /// evicted by size, in a store that never was format 6). Set at open.
    v1_until: std::sync::atomic::AtomicU64,
}

/// What only the holder of [`Shared::write`] changes.
/// What the writer last saw of the NEL window, for `/metrics` (which must not wait for the
/// write lock).
#[derive(Default)]
struct NelWindowGauges {
    digests: std::sync::atomic::AtomicU64,
    reach_ms: std::sync::atomic::AtomicU64,
}

impl NelWindowGauges {
    fn set(&self, recent: &recent::Recent) {
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        self.digests.store(recent.len() as u64, relaxed);
        self.reach_ms.store(recent.reach_ms(), relaxed);
    }
}

struct WriteState {
    /// The next row sequence number (also on disk, `M` ‖ `seq`): makes every row key unique.
    next_seq: u64,
    /// Where every write to `rows` goes first (see [`journal`]).
    journal: Journal,
    /// The agent report ids written since the last merge into the id chunks (`ids.rs`).
    pending: ids::Pending,
    /// The NEL digests of the dedup window (`recent.rs`).
    recent: recent::Recent,
    /// Format 3 `D` keys may be left: an envelope's digest is looked up there too.
    legacy_digests: bool,
    /// Format 4 and 5 `C` keys may be left: an envelope's digest is looked up there too.
    legacy_envelopes: bool,
}

struct Trees {
    /// Everything of format 3 but the format marker (see "On-disk layout").
    rows: sled::Tree,
    /// The format marker only (where format 1 and 2 kept it too).
    meta: sled::Tree,
    fleet_outbox: sled::Tree,
}

#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    reports: u64,
    targets: u64,
    /// Envelope digests in `G` rows (held or in sled).
    digests: u64,
    /// Logical bytes: reports, targets and digests.
    bytes: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Delta {
    reports: i64,
    targets: i64,
    digests: i64,
    bytes: i64,
}

impl Delta {
    /// `n` envelope digests (negative: forgotten) and their logical bytes.
    fn digests(n: i64) -> Delta {
        Delta { digests: n, bytes: n.saturating_mul(DIGEST_BYTES as i64), ..Delta::default() }
    }
}

impl Counts {
    fn apply(&mut self, d: Delta) {
        self.reports = self.reports.saturating_add_signed(d.reports);
        self.targets = self.targets.saturating_add_signed(d.targets);
        self.digests = self.digests.saturating_add_signed(d.digests);
        self.bytes = self.bytes.saturating_add_signed(d.bytes);
    }
}

/// A batch with its records encoded, ready for the group's write.
struct Prepared {
    digest: [u8; 32],
    origin: Origin,
    received_at: u64,
    /// The latest of `received_at` and the batch's event times: no report or count of the
    /// batch is later (a `G` row's `until`).
    until: u64,
    /// Each report's row entry, and whether its id goes into the id index (not for NEL
    /// reports: see "NEL uploads").
    reports: Vec<(codec::Entry, bool)>,
    /// The targets records to write (counts derived from a NEL report are not written).
    targets: Vec<codec::Entry>,
    /// Target records of the batch, written or derived: what `Stored` reports.
    target_records: usize,
    drops: Vec<(DropReason, u64)>,
    /// The app the drops are counted under (its id, or [`OTHER_APP`]).
    drops_app: String,
    /// Key and value of the fleet outbox entry (fleet mode).
    outbox: Option<([u8; 8], Vec<u8>)>,
}

/// Logical bytes (see [`StoreStats::bytes`]) of a report with a record of `record_len` bytes:
/// what its format 1 row and id entry took, whatever the layout.
fn report_bytes(record_len: usize) -> u64 {
    (codec::REPORT_KEY_LEN + record_len) as u64 + ID_ENTRY_BYTES
}

/// Logical bytes of a targets record of `record_len` bytes.
fn targets_bytes(record_len: usize) -> u64 {
    (codec::TARGET_KEY_LEN + record_len) as u64
}

/// Key prefixes of the `rows` tree.
const P_REPORTS: u8 = b'R';
const P_TARGETS: u8 = b'T';
const P_IDS: u8 = b'I';
const P_RUNS: u8 = b'P';
/// Format 3's digest keys (read until they expire).
const P_DIGESTS: u8 = b'D';
/// Format 3's lists of a group's digests, by which retention forgets its `D` keys.
const P_EXPIRY: u8 = b'E';
/// Format 4 and 5's envelope digests, a key each by `created_at` (read until they expire).
const P_ENVELOPES: u8 = b'C';
/// Envelope digests in rows by `created_at` bucket (format 6).
const P_ENVELOPE_ROWS: u8 = b'G';
/// A group's NEL upload digests (`recent.rs`).
const P_RECENT: u8 = b'N';
/// Digest keys forgotten per retention step (one journal record each).
const EXPIRE_STEP: usize = 4096;
const P_META: u8 = b'M';
/// The `rows` tree.
const ROWS_TREE: &str = "rows";
/// Width of a row's time bucket: a row holds reports (or counts) of one bucket only.
pub const BUCKET_MS: u64 = 1000;
/// A row is closed once its entries reach about this many bytes (sled writes a node of up to
/// 17 rows as one item; items over a quarter of its 512 KiB segment become separate blob
/// files, which this keeps far away from).
const ROW_BYTES: usize = 4096;
/// Row key: prefix ‖ bucket start (u64 BE) ‖ sequence (u64 BE) ‖ chunk (u32 BE).
const ROW_KEY_LEN: usize = 1 + 8 + 8 + 4;

fn bucket_of(t: u64) -> u64 {
    t - t % BUCKET_MS
}

fn row_key(prefix: u8, bucket: u64, seq: u64, chunk: u32) -> [u8; ROW_KEY_LEN] {
    let mut key = [0; ROW_KEY_LEN];
    key[0] = prefix;
    key[1..9].copy_from_slice(&bucket.to_be_bytes());
    key[9..17].copy_from_slice(&seq.to_be_bytes());
    key[17..].copy_from_slice(&chunk.to_be_bytes());
    key
}

/// The 9-byte bound `prefix ‖ t`: sorts before every row key of bucket `t` and after every
/// row key of an earlier bucket.
fn row_bound(prefix: u8, t: u64) -> [u8; 9] {
    let mut key = [0; 9];
    key[0] = prefix;
    key[1..].copy_from_slice(&t.to_be_bytes());
    key
}

/// `prefix` ‖ `t` u64 BE ‖ `digest`: a `C` key, or a `G` row's.
fn time_digest_key(prefix: u8, t: u64, digest: &[u8; 32]) -> [u8; 41] {
    let mut key = [0; 41];
    key[0] = prefix;
    key[1..9].copy_from_slice(&t.to_be_bytes());
    key[9..].copy_from_slice(digest);
    key
}

/// The `C` key of an envelope's digest.
fn envelope_key(created_at: u64, digest: &[u8; 32]) -> [u8; 41] {
    time_digest_key(P_ENVELOPES, created_at, digest)
}

/// Version byte of a format 6 `G` row: the sorted digests follow, 32 bytes each. Read (its
/// `until` is [`Shared::v1_until`]), never written.
const DIGEST_ROW_V1: u8 = 1;
/// Version byte of a `G` row: its `until` (u64 BE) and the sorted digests follow.
const DIGEST_ROW_VERSION: u8 = 2;
/// Bytes before the digests of a [`DIGEST_ROW_VERSION`] row.
const DIGEST_ROW_HEAD: usize = 1 + 8;

/// Digests per `G` row, at most (about [`ROW_BYTES`]).
const DIGESTS_PER_ROW: usize = ROW_BYTES / 32;

/// Logical bytes (see [`StoreStats::bytes`]) of an envelope digest: what `max_bytes` charges
/// for remembering one (32 bytes and its share of a row's key and head, rounded up).
pub const DIGEST_BYTES: u64 = 40;

/// A `G` row value: the version byte, `until`, then `digests`.
fn digest_row_value(until: u64, digests: &[[u8; 32]]) -> Vec<u8> {
    let mut value = Vec::with_capacity(DIGEST_ROW_HEAD + 32 * digests.len());
    value.push(DIGEST_ROW_VERSION);
    value.extend_from_slice(&until.to_be_bytes());
    for d in digests {
        value.extend_from_slice(d);
    }
    value
}

/// A group's new `digests` (sorted, distinct) of envelopes made in `bucket`, as journaled
/// and held until the checkpoint: rows of at most [`DIGESTS_PER_ROW`], keyed
/// `G` ‖ bucket ‖ seq ‖ n (a row key, as report rows are), each with the group's `until`. In
/// sled they are merged into the bucket's rows instead ([`merge_digest_rows`]).
fn encode_digest_rows(
    bucket: u64,
    seq: u64,
    until: u64,
    digests: &[[u8; 32]],
    mut out: impl FnMut([u8; ROW_KEY_LEN], Vec<u8>),
) {
    for (n, part) in (0u32..).zip(digests.chunks(DIGESTS_PER_ROW)) {
        out(row_key(P_ENVELOPE_ROWS, bucket, seq, n), digest_row_value(until, part));
    }
}

/// The sled key of the `G` row of `bucket` whose greatest digest is `last`.
fn digest_row_key(bucket: u64, last: &[u8; 32]) -> [u8; 41] {
    time_digest_key(P_ENVELOPE_ROWS, bucket, last)
}

/// Writes `digests` (sorted, distinct) of `bucket` as rows of at most [`DIGESTS_PER_ROW`], as
/// even as can be, each keyed by its greatest digest; says whether one of them is keyed `key`.
fn put_digest_rows(
    bucket: u64,
    until: u64,
    digests: &[[u8; 32]],
    key: &[u8],
    batch: &mut sled::Batch,
) -> bool {
    let rows = digests.len().div_ceil(DIGESTS_PER_ROW);
    let mut rewritten = false;
    let mut start = 0;
    for i in 0..rows {
        // The first `digests.len() % rows` rows get one more; each at least one.
        let end = start + digests.len() / rows + usize::from(i < digests.len() % rows);
        let part = &digests[start..end];
        let row_key = digest_row_key(bucket, &part[part.len() - 1]);
        rewritten |= row_key[..] == *key;
        let value = digest_row_value(until, part);
        journal::debug_check_rows_value(&row_key, &value);
        batch.insert(&row_key[..], value);
        start = end;
    }
    rewritten
}

/// The greatest digest of the `G` row keyed `key`.
fn digest_row_greatest(key: &[u8]) -> Result<&[u8], String> {
    match key.get(9..) {
        Some(g) if key.len() == 41 => Ok(g),
        _ => Err(format!("digest row key of {} bytes, expected 41", key.len())),
    }
}

/// The writes that merge `new` digests (sorted, distinct) into a bucket's `G` rows in sled,
/// `old` (in key order: its rows, or those of them that a digest goes into: for every digest
/// the first row at or above it, and the last row if a digest is past it). A bucket's rows
/// hold disjoint ranges of its digests, each keyed by its greatest, so the one row that could
/// hold a digest is the first with a key at or above it ([`Shared::envelope_stored`]: one
/// seek). A new digest goes into that row (past the last key: the last row); a row that gets
/// new digests is rewritten, split into rows of at most [`DIGESTS_PER_ROW`] (as even as can be)
/// when it outgrows one, and the others are not touched. A rewritten row's `until` is the
/// greater of its own (a format 6 row's: `v1_until`) and `until`, the new digests'. A union:
/// merging digests that are there already changes nothing, so a replay over a checkpoint that
/// a crash cut short merges to the same digests. Says how many digests of format 6 rows it
/// rewrote (not counted before, counted from now on: see "Formats").
fn merge_digest_rows(
    bucket: u64,
    old: &[(sled::IVec, sled::IVec)],
    new: &[[u8; 32]],
    until: u64,
    v1_until: u64,
    batch: &mut sled::Batch,
) -> Result<u64, (sled::IVec, String)> {
    if old.is_empty() {
        if !new.is_empty() {
            put_digest_rows(bucket, until, new, &[], batch);
        }
        return Ok(0);
    }
    let mut converted = 0;
    let mut start = 0;
    for (i, (k, v)) in old.iter().enumerate() {
        let greatest = digest_row_greatest(k).map_err(|e| (k.clone(), e))?;
        let end = if i + 1 == old.len() {
            new.len()
        } else {
            start + new[start..].partition_point(|d| d[..] <= *greatest)
        };
        if end == start {
            continue;
        }
        let (own, digests) = digest_row(v).map_err(|e| (k.clone(), e))?;
        if own.is_none() {
            converted += digests.len() as u64 / 32;
        }
        let mut all: Vec<[u8; 32]> = digest_row_digests(v).map_err(|e| (k.clone(), e))?.collect();
        all.extend_from_slice(&new[start..end]);
        all.sort_unstable();
        all.dedup();
        let until = own.unwrap_or(v1_until).max(until);
        if !put_digest_rows(bucket, until, &all, k, batch) {
            batch.remove(k.clone());
        }
        start = end;
    }
    Ok(converted)
}

/// A `G` row value's `until` (`None`: a format 6 row, which has none) and its digests, 32
/// bytes each, sorted.
fn digest_row(value: &[u8]) -> Result<(Option<u64>, &[u8]), String> {
    let (until, rest) = match value.split_first() {
        Some((&DIGEST_ROW_VERSION, rest)) if rest.len() >= 8 => {
            let (until, rest) = rest.split_at(8);
            (Some(codec::be_u64(until)?), rest)
        }
        Some((&DIGEST_ROW_VERSION, rest)) => {
            return Err(format!("digest row of {} bytes, shorter than its head", rest.len() + 1));
        }
        Some((&DIGEST_ROW_V1, rest)) => (None, rest),
        Some((v, _)) => {
            return Err(format!(
                "digest row version {v}, this build reads {DIGEST_ROW_V1} and {DIGEST_ROW_VERSION}"
            ));
        }
        None => return Err("empty digest row".into()),
    };
    if rest.len() % 32 != 0 {
        return Err(format!(
            "digest row with {} bytes of digests, not a multiple of 32",
            rest.len()
        ));
    }
    Ok((until, rest))
}

/// The digests of a `G` row value, in order.
fn digest_row_digests(value: &[u8]) -> Result<impl Iterator<Item = [u8; 32]> + '_, String> {
    // Invariant: `digest_row` gives a multiple of 32 bytes.
    Ok(digest_row(value)?.1.chunks_exact(32).map(|d| <[u8; 32]>::try_from(d).unwrap_or_default()))
}

/// True if the `G` row `value` holds `digest` (a binary search: its digests are sorted).
fn digest_row_contains(value: &[u8], digest: &[u8; 32]) -> Result<bool, String> {
    let (_, rest) = digest_row(value)?;
    let (mut lo, mut hi) = (0, rest.len() / 32);
    while lo < hi {
        let mid = (lo + hi) / 2;
        match rest[mid * 32..mid * 32 + 32].cmp(&digest[..]) {
            std::cmp::Ordering::Equal => return Ok(true),
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    Ok(false)
}

fn prefixed<const N: usize>(prefix: u8, rest: &[u8; N]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + N);
    key.push(prefix);
    key.extend_from_slice(rest);
    key
}

fn meta_key(name: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(P_META);
    key.extend_from_slice(name);
    key
}

/// Prefix, bucket, seq and chunk of a row key.
fn split_row_key(key: &[u8]) -> Result<(u8, u64, u64, u32), String> {
    match key {
        [prefix, bucket @ .., seq0, seq1, seq2, seq3, seq4, seq5, seq6, seq7, c0, c1, c2, c3]
            if key.len() == ROW_KEY_LEN =>
        {
            let seq = u64::from_be_bytes([*seq0, *seq1, *seq2, *seq3, *seq4, *seq5, *seq6, *seq7]);
            Ok((*prefix, codec::be_u64(bucket)?, seq, u32::from_be_bytes([*c0, *c1, *c2, *c3])))
        }
        _ => Err(format!("row key of {} bytes, expected {ROW_KEY_LEN}", key.len())),
    }
}

/// The seq of a row key (`None`: not a row key).
fn key_seq(key: &[u8]) -> Option<u64> {
    split_row_key(key).ok().map(|(_, _, seq, _)| seq)
}

/// The bucket of a row key.
fn key_bucket(key: &[u8]) -> Result<u64, String> {
    match key.get(1..9) {
        Some(b) if key.len() == ROW_KEY_LEN => codec::be_u64(b),
        _ => Err(format!("row key of {} bytes, expected {ROW_KEY_LEN}", key.len())),
    }
}

/// The counter keys and values of `counts` (absolute).
fn count_pairs(counts: Counts) -> impl Iterator<Item = (Vec<u8>, [u8; 8])> {
    [
        (META_REPORTS, counts.reports),
        (META_TARGETS, counts.targets),
        (META_DIGESTS, counts.digests),
        (META_BYTES, counts.bytes),
    ]
    .into_iter()
    .map(|(name, v)| (meta_key(name), v.to_be_bytes()))
}

/// Writes `counts` (absolute) into `batch`.
fn put_counts(batch: &mut Batch, counts: Counts) {
    for (k, v) in count_pairs(counts) {
        batch.insert(k, &v[..]);
    }
}

/// Writes `counts` (absolute) into a sled batch (one not journaled: a fleet group's, a
/// checkpoint's).
fn put_counts_sled(batch: &mut sled::Batch, counts: Counts) {
    for (k, v) in count_pairs(counts) {
        batch.insert(k, &v[..]);
    }
}

/// `entries` (sorted) as rows of at most about [`ROW_BYTES`], keyed `prefix ‖ bucket ‖ seq ‖ n`,
/// deferred (`unflushed.rs`).
fn push_rows(batch: &mut Batch, prefix: u8, bucket: u64, seq: u64, entries: &[codec::Entry]) {
    encode_rows(prefix, bucket, seq, entries, |key, value| batch.insert_deferred(&key[..], value));
}

/// `entries` (sorted) as rows of at most about [`ROW_BYTES`], keyed `prefix ‖ bucket ‖ seq ‖ n`.
fn encode_rows<R: AsRef<[u8]>>(
    prefix: u8,
    bucket: u64,
    seq: u64,
    entries: &[codec::Entry<R>],
    mut out: impl FnMut([u8; ROW_KEY_LEN], Vec<u8>),
) {
    let with_ids = prefix == P_REPORTS;
    let mut chunk = 0u32;
    let mut start = 0;
    while start < entries.len() {
        let mut end = start;
        let mut size = 0;
        while end < entries.len() && (end == start || size < ROW_BYTES) {
            size += codec::entry_len_bound(entries[end].record.as_ref().len());
            end += 1;
        }
        let (key, value) = (
            row_key(prefix, bucket, seq, chunk),
            codec::encode_row(bucket, with_ids, entries[start..end].iter()),
        );
        journal::debug_check_rows_value(&key, &value);
        out(key, value);
        chunk += 1;
        start = end;
    }
}

impl Store {
    /// Opens or creates. Must be called inside a tokio runtime (spawns the free-space guard;
    /// the group-commit writer is a thread of its own).
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
            rows: tree(ROWS_TREE)?,
            meta: tree("meta")?,
            fleet_outbox: tree(FLEET_OUTBOX_TREE)?,
        };
        let next_outbox_key = recover_outbox(&path, &trees)?;
        let syncer = Syncer::open(&path, config.sync).map_err(|e| open_err(e.to_string()))?;
        let (journal, recovered) = Journal::open(&path, config.sync)
            .map_err(|e| open_err(format!("{}: {e}", journal::JOURNAL_FILE)))?;
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
            write: Mutex::new(WriteState {
                next_seq: 0,
                journal,
                pending: ids::Pending::default(),
                recent: recent::Recent::default(),
                legacy_digests: false,
                legacy_envelopes: false,
            }),
            next_outbox_key: std::sync::atomic::AtomicU64::new(next_outbox_key),
            // What is in the tree at open was read back from disk.
            outbox_durable_below: std::sync::atomic::AtomicU64::new(next_outbox_key),
            drop_apps: Mutex::new(std::collections::BTreeSet::new()),
            nel_window: NelWindowGauges::default(),
            unflushed: Mutex::new(unflushed::Unflushed::new(0)),
            v1_until: std::sync::atomic::AtomicU64::new(u64::MAX),
        };
        shared.check_format(had_data)?;
        if let Some(until) = shared.read_meta(META_V1_UNTIL)? {
            shared.v1_until.store(until, std::sync::atomic::Ordering::Relaxed);
        }
        // What was acknowledged after the last checkpoint (see `journal`: "Recovery").
        if !recovered.batches.is_empty() {
            let mut deferred = unflushed::Unflushed::new(0);
            for batch in &recovered.batches {
                batch.apply_each(&shared.trees.rows).map_err(|e| engine_error(&path, e))?;
                for (k, v) in batch.deferred() {
                    deferred.add_row(k, v).map_err(|e| shared.corrupt("vantage-journal", k, &e))?;
                }
            }
            let rows = deferred.len();
            shared.write_replayed(&mut deferred)?;
            tracing::info!(
                records = recovered.batches.len(),
                bytes = recovered.bytes,
                rows,
                "store journal replayed"
            );
        }
        let next_seq = shared.read_meta(b"seq")?.unwrap_or(0);
        *shared.unflushed.lock().unwrap_or_else(PoisonError::into_inner) =
            unflushed::Unflushed::new(next_seq);
        let now = crate::clock::now_millis().0;
        let pending = ids::Pending::load(&shared.trees.rows, now)
            .map_err(|e| shared.corrupt("rows", &[P_RUNS], &e))?;
        let recent = recent::Recent::load(&shared.trees.rows, now)
            .map_err(|e| shared.corrupt("rows", &[P_RECENT], &e))?;
        let legacy_digests = shared.any_key(P_DIGESTS)?;
        let legacy_envelopes = shared.any_key(P_ENVELOPES)?;
        {
            let mut state = shared.write.lock().unwrap_or_else(PoisonError::into_inner);
            state.next_seq = next_seq;
            state.pending = pending;
            shared.nel_window.set(&recent);
            state.recent = recent;
            state.legacy_digests = legacy_digests;
            state.legacy_envelopes = legacy_envelopes;
        }
        let counts = shared.load_or_rebuild_counts()?;
        let apps = shared.drop_apps_on_disk()?;
        *shared.drop_apps.lock().unwrap_or_else(PoisonError::into_inner) = apps;
        *shared.counts.lock().unwrap_or_else(PoisonError::into_inner) = counts;
        shared.db.flush().map_err(|e| engine_error(&path, e))?;
        shared.syncer.sync().map_err(|e| open_err(e.to_string()))?;
        // Replayed and synced: the records are not needed any more.
        shared
            .write
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .journal
            .truncate()
            .map_err(|e| open_err(format!("{}: {e}", journal::JOURNAL_FILE)))?;

        let shared = Arc::new(shared);
        let (sender, receiver) = mpsc::channel(QUEUE);
        let writer = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("store-writer".into())
                .spawn(move || run_writer(&shared, receiver))
                .map_err(|e| open_err(format!("cannot start the writer thread: {e}")))?
        };
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
    /// one journal record and one `fdatasync` for many concurrent commits; see [`SyncMode`]).
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
    /// here) written with the same group commit, whether the batch is stored or found a
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

    /// Reports with `from <= event_at < to`, in `event_at` order (then report id).
    pub fn scan_reports(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> impl Iterator<Item = Result<StoredReport, StoreError>> + '_ {
        let (from, to) = (from.0, to.0);
        self.shared.buckets(P_REPORTS, from, to, false).flat_map(move |rows| {
            let reports = rows.and_then(|rows| {
                self.shared.decode_reports(&rows, |t, _| from <= t && t < to, false)
            });
            flatten(reports.map(|v| v.into_iter().map(|(r, _)| r)))
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
        let from = from.0;
        let (before_t, before_id) = (before.0.0, before.1);
        let keep = move |t: u64, id: &[u8; 16]| from <= t && (t, id) < (before_t, &before_id);
        self.shared.buckets(P_REPORTS, from, before_t.saturating_add(1), true).flat_map(
            move |rows| {
                let reports = rows.and_then(|rows| self.shared.decode_reports(&rows, keep, true));
                flatten(reports.map(|v| v.into_iter().map(|(r, _)| ((r.event_at, r.id), r))))
            },
        )
    }

    /// Target counts with `from <= event_at < to`, in `event_at` order.
    ///
    /// The counts of NEL failure reports that the store keeps in the report's record are
    /// derived from it ([`StoredReport::nel_targets`]) and merged in here, so callers see
    /// every count the ingest path committed (see "NEL uploads").
    pub fn scan_targets(
        &self,
        from: UnixMillis,
        to: UnixMillis,
    ) -> impl Iterator<Item = Result<StoredTargets, StoreError>> + '_ {
        let (from, to) = (from.0, to.0);
        let rows = self.shared.buckets(P_TARGETS, from, to, false).flat_map(move |rows| {
            flatten(rows.and_then(|rows| self.shared.decode_targets(&rows, from, to)))
        });
        let derived = self.shared.buckets(P_REPORTS, from, to, false).flat_map(move |rows| {
            let counts = rows.and_then(|rows| {
                self.shared.decode_reports(&rows, |t, _| from <= t && t < to, false)
            });
            flatten(counts.map(|v| {
                v.into_iter().filter(|(_, derived)| *derived).filter_map(|(r, _)| r.nel_targets())
            }))
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
            digests: counts.digests,
            bytes: counts.bytes,
            disk_bytes: self.shared.db.size_on_disk().unwrap_or(0),
        }
    }

    /// The NEL duplicate test's window now: the digests it holds, and how far back it reaches
    /// (10 minutes, or less while a flood of uploads fills it: see `recent.rs`).
    pub fn nel_dedup_window(&self) -> (u64, Duration) {
        let w = &self.shared.nel_window;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        (load(&w.digests), Duration::from_millis(load(&w.reach_ms)))
    }

    /// Reports agents dropped before delivery (queue full, expired, ...), summed by reason
    /// over every stored envelope: each envelope's counts are added in the group commit that
    /// stores it, so a retried envelope never counts twice. Kept for the store's lifetime
    /// (the labels are a fixed set). Reasons with no drops are left out.
    pub fn agent_drops(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let mut totals: Vec<(&'static str, u64)> = Vec::new();
        for item in self.shared.trees.rows.scan_prefix(meta_key(DROPS_PREFIX)) {
            let (key, value) = item.map_err(|e| self.shared.io(e))?;
            let n = codec::be_u64(&value).map_err(|e| self.shared.corrupt("rows", &key, &e))?;
            let code = key
                .get(1 + DROPS_PREFIX.len()..)
                .and_then(|c| <[u8; 2]>::try_from(c).ok())
                .map(u16::from_be_bytes)
                .ok_or_else(|| self.shared.corrupt("rows", &key, "not a drop reason code"))?;
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
        for item in self.shared.trees.rows.scan_prefix(meta_key(DROPS_APP_PREFIX)) {
            let (key, value) = item.map_err(|e| self.shared.io(e))?;
            let n = codec::be_u64(&value).map_err(|e| self.shared.corrupt("rows", &key, &e))?;
            let (app, code) = split_drop_app_key(&key[1..])
                .ok_or_else(|| self.shared.corrupt("rows", &key, "not an app drop key"))?;
            out.push((app, DropReason::from_code(code).as_str(), n));
        }
        Ok(out)
    }

    /// A named tree of the same database for state that lives next to the reports (alerts,
    /// the notification outbox, the detector snapshot). Its writes are durable after
    /// [`Store::flush`] (or sled's next flush: its own, every 500 ms, or the store's next
    /// checkpoint).
    pub fn open_tree(&self, name: &str) -> Result<sled::Tree, StoreError> {
        self.shared.db.open_tree(name).map_err(|e| engine_error(&self.shared.path, e))
    }

    /// True if a tree of that name exists (without creating it, as [`Store::open_tree`] does).
    pub fn has_tree(&self, name: &str) -> bool {
        self.shared.db.tree_names().iter().any(|n| n.as_ref() == name.as_bytes())
    }

    /// Deletes a tree and everything in it; false if there was none.
    pub fn drop_tree(&self, name: &str) -> Result<bool, StoreError> {
        self.shared.db.drop_tree(name).map_err(|e| engine_error(&self.shared.path, e))
    }

    /// Flushes everything written so far to stable storage (sled's flush, then the sync of
    /// [`SyncMode`]).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || {
            let mut state = shared.write.lock().unwrap_or_else(PoisonError::into_inner);
            shared.checkpoint(&mut state)
        })
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
            // The thread ends once the queue is drained (its last sender was just dropped).
            tokio::task::spawn_blocking(move || handle.join())
                .await
                .map_err(|e| StoreError::Io(format!("store writer join failed: {e}")))?
                .map_err(|_| StoreError::Io("store writer thread panicked".into()))?;
        }
        let _ = self.control.guard_stop.send(true);
        if let Some(handle) = self.control.guard.lock().await.take() {
            // A check in flight ends on its own (a statvfs); the task then sees the stop.
            let _ = handle.await;
        }
        let shared = Arc::clone(&self.shared);
        let checkpoint = tokio::task::spawn_blocking(move || {
            let mut state = shared.write.lock().unwrap_or_else(PoisonError::into_inner);
            // A clean stop leaves no pending id run: a build that does not know runs finds
            // every id in the chunks. Not merged is not lost (the next open reads the runs).
            if let Err(e) = shared.merge_ids(&mut state) {
                tracing::warn!(error = %e, "store close: pending report ids not merged");
            }
            shared.write_unflushed(state.next_seq)?;
            shared.flush_and_sync()?;
            // Everything is in sled's synced files: a clean stop leaves no journal to replay.
            state
                .journal
                .truncate()
                .map_err(|e| StoreError::Io(format!("{}: {e}", journal::JOURNAL_FILE)))
        })
        .await
        .map_err(|e| StoreError::Io(format!("store flush task failed: {e}")))?;
        match checkpoint {
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

/// Two key-ordered streams of rows as one (descending when `rev`); no key is in both.
fn merge_keys<'a>(
    sled: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a,
    held: impl Iterator<Item = (sled::IVec, sled::IVec)> + 'a,
    rev: bool,
) -> impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a {
    let (mut sled, mut held) = (sled.peekable(), held.peekable());
    std::iter::from_fn(move || {
        let take_held = match (sled.peek(), held.peek()) {
            (_, None) => false,
            (None, Some(_)) => true,
            // An error goes out first: the scan stops at it.
            (Some(Err(_)), Some(_)) => false,
            (Some(Ok((a, _))), Some((b, _))) => (b < a) != rev,
        };
        if take_held { held.next().map(Ok) } else { sled.next() }
    })
}

/// A result of many items as items (an error as one).
fn flatten<T>(
    items: Result<impl IntoIterator<Item = T>, StoreError>,
) -> Box<dyn Iterator<Item = Result<T, StoreError>>>
where
    T: 'static,
{
    match items {
        Ok(items) => Box::new(items.into_iter().map(Ok).collect::<Vec<_>>().into_iter()),
        Err(e) => Box::new(std::iter::once(Err(e))),
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

/// The first `fleet_outbox` key to hand out after a restart. A group writes its outbox
/// entries, then its rows with [`META_OUTBOX_HI`] (every key below is backed by rows that
/// landed); entries at or above it are from a group killed between the two writes, whose
/// batches were never acknowledged (and, not stored, must not be published): deleted here.
fn recover_outbox(path: &Path, trees: &Trees) -> Result<u64, StoreError> {
    let engine = |e| engine_error(path, e);
    let last = trees.fleet_outbox.last().map_err(engine)?;
    let after_last =
        last.map_or(1, |(k, _)| codec::be_u64(&k).unwrap_or(u64::MAX - 1).saturating_add(1));
    let key = meta_key(META_OUTBOX_HI);
    let Some(hi) = trees.rows.get(&key).map_err(engine)? else {
        // No fleet group committed since this marker exists.
        return Ok(after_last);
    };
    let hi = codec::be_u64(&hi).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        detail: format!("rows key {}: {e}", hex(&key)),
    })?;
    let mut orphans = 0;
    for item in trees.fleet_outbox.range(hi.to_be_bytes()..) {
        let (k, _) = item.map_err(engine)?;
        trees.fleet_outbox.remove(k).map_err(engine)?;
        orphans += 1;
    }
    if orphans > 0 {
        tracing::warn!(
            orphans,
            "fleet outbox: deleted entries of a group whose rows were never written (killed \
             mid-commit; those uploads were not acknowledged)"
        );
    }
    Ok(hi.max(1))
}

/// The writer: group commit until every sender is gone and the queue is empty.
///
/// A thread of its own, not a task: it blocks in `fdatasync` (and sled's flush) for most of
/// each group, and a task would hand every group to the blocking pool and back (two thread
/// wake-ups per group on top of the ones the commits themselves cost). The uploads queue in
/// the channel meanwhile and form the next group.
fn run_writer(shared: &Arc<Shared>, mut receiver: mpsc::Receiver<Job>) {
    let mut jobs = Vec::with_capacity(MAX_GROUP);
    while let Some(job) = receiver.blocking_recv() {
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
        let (results, flushed, batches) =
            catch_unwind(AssertUnwindSafe(|| write_and_sync(shared, batches))).unwrap_or_else(
                |_| {
                    let err = StoreError::Io("store write failed: the writer panicked".into());
                    (vec![Err(err); n], Ok(()), vec![None; n])
                },
            );
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

/// One group: the free-space check, the write (journal record and sync, then sled), and the
/// checkpoint when one is due. One result per batch, the checkpoint's result, and the batches
/// handed back.
#[allow(clippy::type_complexity)]
fn write_and_sync(
    worker: &Shared,
    batches: Vec<(IngestBatch, Option<Vec<u8>>)>,
) -> (Vec<Result<CommitOutcome, StoreError>>, Result<(), StoreError>, Vec<Option<IngestBatch>>) {
    let n = batches.len();
    // Checked again right before the write: sled must not be the one to find the
    // disk full (it cannot recover from that without a reopen).
    if let Space::Low { available } = worker.guard.check() {
        let e = worker.disk_full(available);
        let batches = batches.into_iter().map(|(b, _)| Some(b)).collect();
        return (vec![Err(e); n], Ok(()), batches);
    }
    let (results, flushed, batches) = worker.apply_group(batches);
    if matches!(flushed, Ok(true)) {
        // This writer alone assigns outbox keys: every key handed out so far is now
        // synced. Before the replies, so the publisher a commit wakes sees its entry.
        let next = worker.next_outbox_key.load(std::sync::atomic::Ordering::Relaxed);
        worker.outbox_durable_below.fetch_max(next, std::sync::atomic::Ordering::Release);
    }
    let flushed = flushed.map(drop);
    let batches: Vec<Option<IngestBatch>> = batches.into_iter().map(Some).collect();
    (results, flushed, batches)
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
            self.mark_failed(e);
        }
        result
    }

    /// After a failed write or sync: not ready until restarted.
    fn mark_failed(&self, e: &StoreError) {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if failed.is_none() {
            tracing::error!(error = %e, "store write failed; restart the collector to recover");
            *failed = Some(e.to_string());
        }
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

    /// Checks the format marker; upgrades a format 1 or 2 store in place (`upgrade.rs`).
    fn check_format(&self, had_data: bool) -> Result<(), StoreError> {
        let meta = &self.trees.meta;
        let engine = |e| engine_error(&self.path, e);
        match meta.get(META_FORMAT).map_err(engine)? {
            Some(v) => {
                let arr: [u8; 4] = v.as_ref().try_into().map_err(|_| {
                    self.corrupt("meta", META_FORMAT, &format!("{} bytes", v.len()))
                })?;
                match u32::from_be_bytes(arr) {
                    FORMAT_VERSION => Ok(()),
                    old @ (1 | 2) => self.upgrade(old),
                    // Format 3's `D` keys and `E` rows are read as they are (see "Duplicates");
                    // the marker keeps a build that does not know `C` keys from using the store.
                    // Format 4 differs in its journal only (deferred rows, `unflushed.rs`): the
                    // marker keeps a build that cannot replay them from using the store.
                    // Format 5 differs in its envelope digests (`G` rows instead of `C` keys,
                    // which are read until they expire) and its journal (deferred `G` rows).
                    // Format 6's `G` rows have no `until`: every envelope in one was received
                    // before now, which is written first (sled recovers a prefix of its log, so
                    // a store marked 7 has it). Format 6 also did not count digests in `bytes`:
                    // the missing `digests` counter has them counted at open.
                    // Format 7 wrote a group's id run as one value, which sled 0.34 could put
                    // in a file of its own and never delete (`ids::RUN_PIECE`); its whole runs
                    // are read and merged as they are, and the marker keeps a format 7 build,
                    // which would refuse the keys of pieces as corrupt, from using the store.
                    old @ (3..=7) => {
                        let key = meta_key(META_V1_UNTIL);
                        if old <= 6 && self.trees.rows.get(&key).map_err(engine)?.is_none() {
                            let now = crate::clock::now_millis().0;
                            self.trees.rows.insert(key, &now.to_be_bytes()[..]).map_err(engine)?;
                        }
                        meta.insert(META_FORMAT, &FORMAT_VERSION.to_be_bytes()).map_err(engine)?;
                        tracing::info!(path = %self.path.display(), "store marked format {FORMAT_VERSION} (from format {old}: nothing moved; older keys are read as they are)");
                        Ok(())
                    }
                    version => Err(StoreError::Open {
                        path: self.path.clone(),
                        reason: format!(
                            "on-disk format {version}, this build reads formats 1 to \
                             {FORMAT_VERSION}"
                        ),
                    }),
                }
            }
            None => {
                let legacy = self
                    .db
                    .tree_names()
                    .iter()
                    .any(|n| upgrade::LEGACY_TREES.iter().any(|l| l.as_bytes() == n.as_ref()));
                if had_data || legacy || !self.trees.rows.is_empty() {
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

    /// A u64 under `M` ‖ `name` in `rows`.
    fn read_meta(&self, name: &[u8]) -> Result<Option<u64>, StoreError> {
        let key = meta_key(name);
        match self.trees.rows.get(&key).map_err(|e| engine_error(&self.path, e))? {
            Some(v) => codec::be_u64(&v).map(Some).map_err(|e| self.corrupt("rows", &key, &e)),
            None => Ok(None),
        }
    }

    /// The apps that have per-app drop totals on disk.
    fn drop_apps_on_disk(&self) -> Result<std::collections::BTreeSet<String>, StoreError> {
        let mut apps = std::collections::BTreeSet::new();
        for item in self.trees.rows.scan_prefix(meta_key(DROPS_APP_PREFIX)) {
            let (key, _) = item.map_err(|e| self.io(e))?;
            if let Some((app, _)) = split_drop_app_key(&key[1..]) {
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

    /// The counters from `rows`, or recounted from the rows when any is missing (an upgraded
    /// store, or one whose counter entries were lost).
    fn load_or_rebuild_counts(&self) -> Result<Counts, StoreError> {
        let digests = self.read_meta(META_DIGESTS)?;
        if let (Some(reports), Some(targets), Some(bytes)) = (
            self.read_meta(META_REPORTS)?,
            self.read_meta(META_TARGETS)?,
            self.read_meta(META_BYTES)?,
        ) {
            // Format 7 from the start: the counters are right.
            let transition = self.read_meta(META_V1_UNTIL)?.is_some();
            if let (Some(digests), false) = (digests, transition) {
                return Ok(Counts { reports, targets, digests, bytes });
            }
            // Marked 7 from format 6 (whose counters had no digests), and at every open while
            // format 6 rows are left: the count of digests in format 7 rows is taken from the
            // rows (a checkpoint that rewrote format 6 rows, cut short by a crash, leaves the
            // count its journal had), and once no format 6 row is left, the transition is over.
            let had = digests.unwrap_or(0);
            let (counted, v1_left) = self.count_digests()?;
            let counts = Counts {
                reports,
                targets,
                digests: counted,
                bytes: bytes.saturating_sub(had * DIGEST_BYTES) + counted * DIGEST_BYTES,
            };
            let mut batch = Batch::default();
            put_counts(&mut batch, counts);
            if v1_left == 0 {
                batch.remove(meta_key(META_V1_UNTIL));
                self.v1_until.store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
            }
            self.trees
                .rows
                .apply_batch(batch.to_sled())
                .map_err(|e| engine_error(&self.path, e))?;
            if counted != had || v1_left > 0 {
                tracing::info!(
                    counted,
                    format_6_digests = v1_left,
                    "store counted its envelope digests into its logical size (format 6 digests \
                     are not counted: they expire by age)"
                );
            }
            return Ok(counts);
        }
        let mut counts = Counts::default();
        counts.digests = self.count_digests()?.0;
        counts.bytes = counts.digests * DIGEST_BYTES;
        for (prefix, with_ids) in [(P_REPORTS, true), (P_TARGETS, false)] {
            for entry in self.trees.rows.scan_prefix([prefix]) {
                let (k, v) = entry.map_err(|e| engine_error(&self.path, e))?;
                let base = key_bucket(&k).map_err(|e| self.corrupt("rows", &k, &e))?;
                let entries = codec::decode_row(base, with_ids, &v)
                    .map_err(|e| self.corrupt("rows", &k, &e))?;
                for (_, _, record) in entries {
                    if with_ids {
                        counts.reports += 1;
                        counts.bytes += report_bytes(record.len());
                    } else {
                        counts.targets += 1;
                        counts.bytes += targets_bytes(record.len());
                    }
                }
            }
        }
        let mut batch = Batch::default();
        put_counts(&mut batch, counts);
        self.trees.rows.apply_batch(batch.to_sled()).map_err(|e| engine_error(&self.path, e))?;
        Ok(counts)
    }

    /// The envelope digests in format 7 `G` rows in sled (counted), and in format 6 rows (not
    /// counted). At open, after the journal's replay: all there are.
    fn count_digests(&self) -> Result<(u64, u64), StoreError> {
        let (mut counted, mut v1) = (0, 0);
        for entry in self.trees.rows.scan_prefix([P_ENVELOPE_ROWS]) {
            let (k, v) = entry.map_err(|e| engine_error(&self.path, e))?;
            let (until, digests) = digest_row(&v).map_err(|e| self.corrupt("rows", &k, &e))?;
            match until {
                Some(_) => counted += digests.len() as u64 / 32,
                None => v1 += digests.len() as u64 / 32,
            }
        }
        Ok((counted, v1))
    }

    /// The rows of `prefix` whose bucket is in `bucket_of(from)..to`, one bucket's rows at a
    /// time, oldest bucket first (or newest first when `rev`).
    fn buckets<'a>(
        &'a self,
        prefix: u8,
        from: u64,
        to: u64,
        rev: bool,
    ) -> impl Iterator<Item = Result<Vec<(sled::IVec, sled::IVec)>, StoreError>> + 'a {
        let start = row_bound(prefix, bucket_of(from));
        let end = row_bound(prefix, to.max(bucket_of(from)));
        // The unflushed rows of the range, and the floor of what sled held when they were
        // taken (see `unflushed.rs`, "Readers"); under one lock, before sled is read.
        let (floor, overlay) = {
            let unflushed = self.unflushed.lock().unwrap_or_else(PoisonError::into_inner);
            (unflushed.floor(), unflushed.rows(prefix, bucket_of(from), to))
        };
        let range = self.trees.rows.range(start..end).filter(move |kv| match kv {
            Ok((k, _)) => key_seq(k).is_none_or(|seq| seq < floor),
            Err(_) => true,
        });
        let mut iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>> + 'a> = if rev
        {
            Box::new(merge_keys(range.rev(), overlay.into_iter().rev(), true))
        } else {
            Box::new(merge_keys(range, overlay.into_iter(), false))
        };
        let mut pending: Option<(sled::IVec, sled::IVec)> = None;
        std::iter::from_fn(move || {
            let mut rows = Vec::new();
            let mut bucket = None;
            loop {
                let next = match pending.take() {
                    Some(kv) => kv,
                    None => match iter.next() {
                        None => break,
                        Some(Err(e)) => return Some(Err(self.io(e))),
                        Some(Ok(kv)) => kv,
                    },
                };
                let b = match key_bucket(&next.0) {
                    Ok(b) => b,
                    Err(e) => return Some(Err(self.corrupt("rows", &next.0, &e))),
                };
                match bucket {
                    Some(current) if current != b => {
                        pending = Some(next);
                        break;
                    }
                    _ => bucket = Some(b),
                }
                rows.push(next);
            }
            (!rows.is_empty()).then_some(Ok(rows))
        })
    }

    /// The reports of one bucket's rows that `keep` (event time, id) selects, with their
    /// derived-count flags, in (event time, id) order (reversed when `newest_first`).
    fn decode_reports(
        &self,
        rows: &[(sled::IVec, sled::IVec)],
        keep: impl Fn(u64, &[u8; 16]) -> bool,
        newest_first: bool,
    ) -> Result<Vec<(StoredReport, bool)>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in rows {
            let base = key_bucket(k).map_err(|e| self.corrupt("rows", k, &e))?;
            for (t, id, record) in
                codec::decode_row(base, true, v).map_err(|e| self.corrupt("rows", k, &e))?
            {
                if keep(t, &id) {
                    let decoded = codec::decode_record(UnixMillis(t), id, record).map_err(|e| {
                        self.corrupt("rows", k, &format!("report {}: {e}", hex(&id)))
                    })?;
                    out.push(decoded);
                }
            }
        }
        if newest_first {
            out.sort_unstable_by_key(|b| std::cmp::Reverse((b.0.event_at, b.0.id)));
        } else {
            out.sort_unstable_by_key(|a| (a.0.event_at, a.0.id));
        }
        Ok(out)
    }

    /// The targets of one bucket's rows with `from <= event_at < to`, in event order.
    fn decode_targets(
        &self,
        rows: &[(sled::IVec, sled::IVec)],
        from: u64,
        to: u64,
    ) -> Result<Vec<StoredTargets>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in rows {
            let base = key_bucket(k).map_err(|e| self.corrupt("rows", k, &e))?;
            for (t, _, record) in
                codec::decode_row(base, false, v).map_err(|e| self.corrupt("rows", k, &e))?
            {
                if from <= t && t < to {
                    out.push(
                        codec::decode_targets_record(UnixMillis(t), record)
                            .map_err(|e| self.corrupt("rows", k, &e))?,
                    );
                }
            }
        }
        // Stable: counts of one time stay in the order they were committed.
        out.sort_by_key(|t| t.event_at);
        Ok(out)
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
                let record = codec::encode_report(r, *derived)
                    .map_err(|e| StoreError::Encode(format!("reports[{i}]: {e}")))?;
                let entry = codec::Entry { event_at: r.event_at.0, id: r.id, record };
                Ok((entry, r.source != Source::Nel))
            })
            .collect::<Result<_, StoreError>>()?;
        let targets = batch
            .targets
            .iter()
            .enumerate()
            .filter(|(i, _)| written[*i])
            .map(|(i, t)| {
                let record = codec::encode_targets(t)
                    .map_err(|e| StoreError::Encode(format!("targets[{i}]: {e}")))?;
                Ok(codec::Entry { event_at: t.event_at.0, id: [0; 16], record })
            })
            .collect::<Result<_, StoreError>>()?;
        let until = batch
            .reports
            .iter()
            .map(|r| r.event_at.0)
            .chain(batch.targets.iter().map(|t| t.event_at.0))
            .fold(received_at, u64::max);
        Ok(Prepared {
            digest: batch.digest,
            origin: batch.origin,
            received_at,
            until,
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

    /// Dedup and inserts for a whole group in one `apply_batch` of `rows` (and one of
    /// `fleet_outbox` after it). One result per batch, in order. The batches come back as they
    /// were, in order.
    /// Then the checkpoint when one is due, or when the group wrote fleet outbox entries:
    /// its result is the group's "flushed" (every outcome fails with it).
    #[allow(clippy::type_complexity)]
    fn apply_group(
        &self,
        batches: Vec<(IngestBatch, Option<Vec<u8>>)>,
    ) -> (Vec<Result<CommitOutcome, StoreError>>, Result<bool, StoreError>, Vec<IngestBatch>) {
        let (prepared, batches): (Vec<Result<Prepared, StoreError>>, Vec<IngestBatch>) =
            batches.into_iter().map(|(b, outbox)| (self.prepare(&b, outbox), b)).unzip();
        let n = prepared.len();
        let mut state = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let (outcomes, fleet) = match self.write_group(&mut state, prepared) {
            Ok(written) => written,
            Err(e) => (vec![Err(e); n], false),
        };
        let any_ok = outcomes.iter().any(Result::is_ok);
        let flushed = if any_ok && (fleet || state.journal.checkpoint_due()) {
            self.checkpoint(&mut state).map(|()| true)
        } else {
            Ok(false)
        };
        (outcomes, flushed, batches)
    }

    /// The group's write, with [`Shared::write`] held.
    /// Also says whether the group wrote fleet outbox entries (then it must be checkpointed
    /// before it is answered).
    #[allow(clippy::type_complexity)]
    fn write_group(
        &self,
        state: &mut WriteState,
        prepared: Vec<Result<Prepared, StoreError>>,
    ) -> Result<(Vec<Result<CommitOutcome, StoreError>>, bool), StoreError> {
        use std::collections::{BTreeMap, HashSet};
        let rows = &self.trees.rows;
        let io = |e| self.io(e);
        if state.pending.len() >= ids::MERGE_AT {
            self.merge_ids_step(state, ids::MERGE_STEP)?;
        }
        let group_time = prepared.iter().flatten().map(|p| p.received_at).max().unwrap_or(0);
        state.pending.advance(rows, group_time).map_err(|e| self.corrupt("rows", &[P_IDS], &e))?;
        let seq = state.next_seq;
        let mut batch = Batch::default();
        let mut outbox = sled::Batch::default();
        let mut any_outbox = false;
        let mut nel_digests: Vec<[u8; 16]> = Vec::new();
        // The group's new envelope digests by `created_at` bucket: its `G` rows, with the
        // latest `until` of their envelopes.
        let mut envelope_digests: BTreeMap<u64, Vec<[u8; 32]>> = BTreeMap::new();
        let mut until = 0;
        // What left the window by age since the last group is no longer a duplicate.
        state.recent.forget(group_time);
        let mut new_digests: HashSet<[u8; 32]> = HashSet::new();
        let mut new_ids: HashSet<[u8; 16]> = HashSet::new();
        // The new ids above every chunk: the group's run (`ids.rs`).
        let mut run: Vec<[u8; 16]> = Vec::new();
        let mut reports: BTreeMap<u64, Vec<codec::Entry>> = BTreeMap::new();
        let mut targets: BTreeMap<u64, Vec<codec::Entry>> = BTreeMap::new();
        let mut drops: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
        let mut delta = Delta::default();
        // First the digests (in batch order: the first of two equal uploads is stored), and
        // the id chunks every candidate agent report id falls in.
        let mut outcomes: Vec<Option<Result<CommitOutcome, StoreError>>> =
            Vec::with_capacity(prepared.len());
        let mut stored: Vec<Prepared> = Vec::with_capacity(prepared.len());
        for p in prepared {
            let mut p = match p {
                Ok(p) => p,
                Err(e) => {
                    outcomes.push(Some(Err(e)));
                    continue;
                }
            };
            // Published with the batch, or published again with its duplicate: whoever stored
            // the first copy may have died before publishing it.
            if let Some((key, value)) = p.outbox.take() {
                outbox.insert(&key[..], value);
                any_outbox = true;
            }
            // The one duplicate test: the same bytes were stored (earlier in this group, or
            // before: within the horizon for an envelope, within the window for NEL).
            let duplicate = new_digests.contains(&p.digest)
                || match p.origin {
                    Origin::Nel => state.recent.contains(&p.digest),
                    Origin::Agent { created_at, .. } => {
                        self.envelope_stored(state.legacy_envelopes, created_at.0, &p.digest)?
                    }
                }
                || (state.legacy_digests
                    && rows.get(prefixed(P_DIGESTS, &p.digest)).map_err(io)?.is_some());
            if duplicate {
                outcomes.push(Some(Ok(CommitOutcome::Duplicate)));
                continue;
            }
            new_digests.insert(p.digest);
            match p.origin {
                Origin::Nel => nel_digests.push(recent::short(&p.digest)),
                Origin::Agent { created_at, .. } => {
                    envelope_digests.entry(bucket_of(created_at.0)).or_default().push(p.digest);
                    until = until.max(p.until);
                    delta.digests += 1;
                    delta.bytes += DIGEST_BYTES as i64;
                }
            }
            outcomes.push(None);
            stored.push(p);
        }
        // Only ids not pending and not above every chunk need their chunk read.
        let mut ids = ids::IdChunks::default();
        let mut candidates: Vec<[u8; 16]> = stored
            .iter()
            .flat_map(|p| p.reports.iter().filter(|(_, indexed)| *indexed).map(|(e, _)| e.id))
            .filter(|id| !state.pending.contains(id) && state.pending.may_be_in_chunks(id))
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        for id in &candidates {
            ids.load(rows, id).map_err(|e| self.corrupt("rows", &[P_IDS], &e))?;
        }
        let mut stored = stored.into_iter();
        for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
            let Some(p) = stored.next() else { break };
            let mut stored_reports = 0;
            for (entry, indexed) in p.reports {
                if indexed {
                    let id = entry.id;
                    let in_chunks_range = state.pending.may_be_in_chunks(&id);
                    if new_ids.contains(&id)
                        || state.pending.contains(&id)
                        || (in_chunks_range && ids.contains(&id))
                    {
                        continue;
                    }
                    new_ids.insert(id);
                    if in_chunks_range {
                        // Its chunk is loaded already (the duplicate test read it): written now,
                        // as a merge would. Ids of 128 random bits all go this way.
                        ids.insert(id);
                    } else {
                        run.push(id);
                    }
                }
                // Invariant: the id index had no entry for this id (or, for a NEL report, its
                // id derives from the digest just found new), so no row holds it.
                stored_reports += 1;
                delta.reports += 1;
                delta.bytes += report_bytes(entry.record.len()) as i64;
                reports.entry(bucket_of(entry.event_at)).or_default().push(entry);
            }
            for entry in p.targets {
                delta.targets += 1;
                delta.bytes += targets_bytes(entry.record.len()) as i64;
                targets.entry(bucket_of(entry.event_at)).or_default().push(entry);
            }
            for (reason, n) in &p.drops {
                // The total per reason, and the same per app.
                for key in [drop_key(*reason), drop_app_key(&p.drops_app, *reason)] {
                    let total = drops.entry(meta_key(&key)).or_insert(0);
                    *total = total.saturating_add(*n);
                }
            }
            *outcome = Some(Ok(CommitOutcome::Stored {
                reports: stored_reports,
                targets: p.target_records,
            }));
        }
        ids.write(&mut batch);
        ids::Pending::write_run(seq, &mut run, &mut batch);
        // Invariant: every `None` was replaced by its stored batch's outcome just above.
        let outcomes: Vec<Result<CommitOutcome, StoreError>> = outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(StoreError::Io("batch without an outcome".into()))))
            .collect();
        for (key, added) in drops {
            let current = match rows.get(&key).map_err(io)? {
                Some(v) => codec::be_u64(&v).map_err(|e| self.corrupt("rows", &key, &e))?,
                None => 0,
            };
            batch.insert(key, &current.saturating_add(added).to_be_bytes()[..]);
        }
        for (prefix, buckets) in [(P_REPORTS, &mut reports), (P_TARGETS, &mut targets)] {
            for (bucket, entries) in buckets.iter_mut() {
                entries.sort_unstable_by_key(|a| (a.event_at, a.id));
                push_rows(&mut batch, prefix, *bucket, seq, entries);
            }
        }
        for digests in envelope_digests.values_mut() {
            digests.sort_unstable();
        }
        recent::write_row(group_time, seq, &nel_digests, &mut batch);
        let mut counts = self.counts();
        counts.apply(delta);
        put_counts(&mut batch, counts);
        batch.insert(meta_key(b"seq"), &(seq + 1).to_be_bytes()[..]);
        // Before the rows: sled recovers a prefix of its log, so rows on disk always have
        // their outbox entries. The rows batch records how far the outbox is backed by rows;
        // entries beyond that after a crash belong to a group whose rows never landed (never
        // acknowledged) and are deleted at open (`recover_outbox`).
        if any_outbox {
            // Nothing journaled may be replayed over this group's writes (its `seq` and
            // counters would go back): what the journal holds goes into sled's files first.
            if !state.journal.is_empty() {
                self.checkpoint(state)?;
            }
            let hi = self.next_outbox_key.load(std::sync::atomic::Ordering::Relaxed);
            batch.insert(meta_key(META_OUTBOX_HI), &hi.to_be_bytes()[..]);
            self.trees.fleet_outbox.apply_batch(outbox).map_err(io)?;
            // One atomic sled write for the group, checkpointed before it is answered (see
            // `journal`: the publisher's removals must not be undone by a replay).
            let mut writes = batch.to_sled();
            let mut converted = 0;
            for (bucket, digests) in &envelope_digests {
                converted += self.merge_digests(*bucket, digests, until, &mut writes)?;
            }
            if converted > 0 {
                let more = Delta::digests(converted as i64);
                delta.digests += more.digests;
                delta.bytes += more.bytes;
                let mut counts = self.counts();
                counts.apply(delta);
                put_counts_sled(&mut writes, counts);
            }
            rows.apply_batch(writes).map_err(io)?;
        } else {
            for (bucket, digests) in &envelope_digests {
                encode_digest_rows(*bucket, seq, until, digests, |key, value| {
                    batch.insert_deferred(&key[..], value);
                });
            }
            // Journaled, then applied: after a crash either all of it is there or none.
            self.write_rows(state, &batch)?;
        }
        {
            // The group's rows: in sled already with a fleet group, else held until the
            // checkpoint (`unflushed.rs`).
            let mut unflushed = self.unflushed.lock().unwrap_or_else(PoisonError::into_inner);
            if any_outbox {
                unflushed.raise_floor(seq + 1);
            } else {
                for (k, v) in batch.deferred() {
                    // Invariant: `push_rows` made these keys.
                    unflushed.add_row(k, v).map_err(|e| self.corrupt("rows", k, &e))?;
                }
            }
        }
        state.next_seq = seq + 1;
        state.pending.add_run(seq, &run);
        state.recent.add(group_time, &nel_digests);
        self.nel_window.set(&state.recent);
        self.apply_delta(delta);
        Ok((outcomes, any_outbox))
    }

    /// True if the envelope with `digest`, made at `created_at`, is stored: among the digests
    /// held since the last checkpoint, in its bucket's `G` rows, or (`legacy`: format 4 and 5
    /// keys may be left) under its `C` key. With [`Shared::write`] held.
    fn envelope_stored(
        &self,
        legacy: bool,
        created_at: u64,
        digest: &[u8; 32],
    ) -> Result<bool, StoreError> {
        if self.unflushed.lock().unwrap_or_else(PoisonError::into_inner).contains_digest(digest) {
            return Ok(true);
        }
        let rows = &self.trees.rows;
        let bucket = bucket_of(created_at);
        // The one row that could hold it: the first of its second at or above it.
        let from = digest_row_key(bucket, digest);
        let end = row_bound(P_ENVELOPE_ROWS, bucket + 1);
        if let Some(item) = rows.range(&from[..]..&end[..]).next() {
            let (k, v) = item.map_err(|e| self.io(e))?;
            if digest_row_contains(&v, digest).map_err(|e| self.corrupt("rows", &k, &e))? {
                return Ok(true);
            }
        }
        Ok(legacy && rows.get(envelope_key(created_at, digest)).map_err(|e| self.io(e))?.is_some())
    }

    /// Adds to `writes` what merges `digests` (sorted, distinct) into the `G` rows of `bucket`
    /// ([`merge_digest_rows`]), reading only the rows they go into: a seek per such row (and
    /// one for the digests past the last), not the whole second, which a sender choosing one
    /// `created_at` for all its envelopes could make large. With [`Shared::write`] held. Says
    /// how many format 6 digests the rewritten rows bring into the count.
    fn merge_digests(
        &self,
        bucket: u64,
        digests: &[[u8; 32]],
        until: u64,
        writes: &mut sled::Batch,
    ) -> Result<u64, StoreError> {
        let rows = &self.trees.rows;
        let end = row_bound(P_ENVELOPE_ROWS, bucket + 1);
        let mut touched: Vec<(sled::IVec, sled::IVec)> = Vec::new();
        let mut i = 0;
        while i < digests.len() {
            let from = digest_row_key(bucket, &digests[i]);
            match rows.range(&from[..]..&end[..]).next() {
                Some(item) => {
                    let (k, v) = item.map_err(|e| self.io(e))?;
                    let greatest =
                        digest_row_greatest(&k).map_err(|e| self.corrupt("rows", &k, &e))?;
                    // Every digest up to this row's greatest goes into it (at least
                    // `digests[i]`: the seek found a row at or above it).
                    i += digests[i..].partition_point(|d| d[..] <= *greatest);
                    touched.push((k, v));
                }
                None => {
                    // Past every row: the last row of the second, if any, takes them.
                    let start = row_bound(P_ENVELOPE_ROWS, bucket);
                    if let Some(item) = rows.range(&start[..]..&end[..]).next_back() {
                        let (k, v) = item.map_err(|e| self.io(e))?;
                        if touched.last().is_none_or(|(t, _)| *t != k) {
                            touched.push((k, v));
                        }
                    }
                    break;
                }
            }
        }
        let v1_until = self.v1_until.load(std::sync::atomic::Ordering::Relaxed);
        merge_digest_rows(bucket, &touched, digests, until, v1_until, writes)
            .map_err(|(k, e)| self.corrupt("rows", &k, &e))
    }

    /// A write to `rows` through the journal: the record on stable storage first, then the
    /// writes applied to sled. Called with [`Shared::write`] held (it owns the journal).
    fn write_rows(&self, state: &mut WriteState, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        // After a failed append or sync the journal's tail is not known: nothing more goes
        // into it until a restart replays what is there.
        if let Some(failed) = self.failed.lock().unwrap_or_else(PoisonError::into_inner).clone() {
            return Err(StoreError::Io(format!("store failed earlier: {failed}")));
        }
        if let Err(e) = state.journal.append(batch) {
            let e =
                StoreError::Io(format!("{}: {e}", self.path.join(journal::JOURNAL_FILE).display()));
            self.mark_failed(&e);
            return Err(e);
        }
        batch.apply_each(&self.trees.rows).map_err(|e| {
            let e = self.io(e);
            self.mark_failed(&e);
            e
        })
    }

    /// Merges the oldest pending id runs into the id chunks: one write step of its own (see
    /// `ids.rs`, "Pending runs"). With [`Shared::write`] held.
    fn merge_ids_step(&self, state: &mut WriteState, step: usize) -> Result<(), StoreError> {
        let mut batch = Batch::default();
        let merged = state
            .pending
            .merge_step(&self.trees.rows, step, &mut batch)
            .map_err(|e| self.corrupt("rows", &[P_RUNS], &e))?;
        self.write_rows(state, &batch)?;
        state.pending.merged(&merged);
        Ok(())
    }

    /// Merges every pending id run, step by step.
    fn merge_ids(&self, state: &mut WriteState) -> Result<(), StoreError> {
        while !state.pending.is_empty() {
            self.merge_ids_step(state, ids::MERGE_STEP)?;
        }
        Ok(())
    }

    /// Sled's flush and the sync of its files, then the journal starts over; with
    /// [`Shared::write`] held, so no write lands between the two.
    fn checkpoint(&self, state: &mut WriteState) -> Result<(), StoreError> {
        self.write_unflushed(state.next_seq)?;
        self.flush_and_sync()?;
        state.journal.checkpointed();
        Ok(())
    }

    /// The unflushed rows into sled, merged (`unflushed.rs`); with [`Shared::write`] held, as
    /// part of a checkpoint (they are durable once sled is flushed and synced; until then the
    /// journal holds them). `next_seq`: the next group's seq.
    fn write_unflushed(&self, next_seq: u64) -> Result<(), StoreError> {
        let mut unflushed = self.unflushed.lock().unwrap_or_else(PoisonError::into_inner);
        if unflushed.is_empty() {
            return Ok(());
        }
        // Readers wait for the lock meanwhile (a scan's snapshot), the writer is this thread.
        let failed = |e: StoreError| {
            self.mark_failed(&e);
            e
        };
        unflushed.for_each_merged(
            |k, v| self.trees.rows.insert(k, v).map(drop).map_err(|e| failed(self.io(e))),
            |k, e| self.corrupt("rows", k, &e),
        )?;
        self.write_held_digests(&unflushed, true).map_err(failed)?;
        unflushed.clear(next_seq);
        Ok(())
    }

    /// At open, the deferred rows of the replayed records into sled, merged: first every row
    /// of their buckets with a seq among theirs (an interrupted checkpoint's), then the
    /// merged rows (see `unflushed.rs`, "Recovery"). The open's flush and sync follow.
    fn write_replayed(&self, deferred: &mut unflushed::Unflushed) -> Result<(), StoreError> {
        let (buckets, seqs) = deferred.buckets_and_seqs();
        let Some((lo, hi)) = seqs else { return Ok(()) };
        let rows = &self.trees.rows;
        let engine = |e| engine_error(&self.path, e);
        // (`G` rows are merged, whatever an interrupted checkpoint left: below.)
        for (prefix, bucket) in buckets.into_iter().filter(|(p, _)| *p != P_ENVELOPE_ROWS) {
            let range = row_key(prefix, bucket, lo, 0)..=row_key(prefix, bucket, hi, u32::MAX);
            for kv in rows.range(range) {
                rows.remove(kv.map_err(engine)?.0).map_err(engine)?;
            }
        }
        deferred.for_each_merged(
            |k, v| rows.insert(k, v).map(drop).map_err(engine),
            |k, e| self.corrupt("vantage-journal", k, &e),
        )?;
        self.write_held_digests(deferred, false)
    }

    /// The held digests into the `G` rows of their buckets, one atomic sled batch per bucket.
    /// `counted`: the counters are loaded (not at open's replay, after which they are counted
    /// from the rows while format 6 rows are left), and a batch that brings format 6 digests
    /// into the count writes them with it.
    fn write_held_digests(
        &self,
        held: &unflushed::Unflushed,
        counted: bool,
    ) -> Result<(), StoreError> {
        let v1_until = self.v1_until.load(std::sync::atomic::Ordering::Relaxed);
        for (bucket, digests, until) in held
            .digest_buckets(v1_until)
            .map_err(|(k, e)| self.corrupt("vantage-journal", &k, &e))?
        {
            let mut writes = sled::Batch::default();
            let converted = self.merge_digests(bucket, &digests, until, &mut writes)?;
            let delta = Delta::digests(converted as i64);
            if counted && converted > 0 {
                let mut counts = self.counts();
                counts.apply(delta);
                put_counts_sled(&mut writes, counts);
            }
            self.trees.rows.apply_batch(writes).map_err(|e| self.io(e))?;
            if counted {
                self.apply_delta(delta);
            }
        }
        Ok(())
    }

    /// Deletes the expired entries of `prefix` rows in `*start..end`: those before `cutoff`
    /// (`Some`), or whole rows in key order until `excess` logical bytes are freed (`None`
    /// cutoff). One step: at most [`DELETE_CHUNK`] rows, in one `apply_batch` with
    /// [`Shared::write`] held. Moves `*start` past the rows it looked at; `None` when there
    /// were none.
    fn delete_step(
        &self,
        prefix: u8,
        start: &mut Vec<u8>,
        end: &[u8],
        cutoff: Option<u64>,
        excess: u64,
    ) -> Result<Option<Delta>, StoreError> {
        let with_ids = prefix == P_REPORTS;
        let rows = &self.trees.rows;
        let mut state = self.write.lock().unwrap_or_else(PoisonError::into_inner);
        let mut batch = Batch::default();
        let mut delta = Delta::default();
        let mut gone_ids = Vec::new();
        let mut seen = 0;
        for item in rows.range(start.clone()..end.to_vec()) {
            if seen == DELETE_CHUNK || (cutoff.is_none() && delta.bytes.unsigned_abs() >= excess) {
                break;
            }
            let (k, v) = item.map_err(|e| self.io(e))?;
            seen += 1;
            *start = k.to_vec();
            start.push(0);
            let base = key_bucket(&k).map_err(|e| self.corrupt("rows", &k, &e))?;
            let entries =
                codec::decode_row(base, with_ids, &v).map_err(|e| self.corrupt("rows", &k, &e))?;
            let (gone, kept): (Vec<_>, Vec<_>) = match cutoff {
                Some(c) => entries.into_iter().partition(|(t, _, _)| *t < c),
                // By size: the row's oldest entries until the excess is freed (a row holds a
                // second of a checkpoint's entries, in event order), the rest stays.
                None => {
                    let mut entries = entries;
                    let mut need = excess.saturating_sub(delta.bytes.unsigned_abs());
                    let mut n = 0;
                    while n < entries.len() && need > 0 {
                        let len = entries[n].2.len();
                        let bytes = if with_ids { report_bytes(len) } else { targets_bytes(len) };
                        need = need.saturating_sub(bytes);
                        n += 1;
                    }
                    let kept = entries.split_off(n);
                    (entries, kept)
                }
            };
            if gone.is_empty() {
                continue;
            }
            for (_, id, record) in &gone {
                if with_ids {
                    delta.reports -= 1;
                    delta.bytes -= report_bytes(record.len()) as i64;
                    if codec::record_is_agent(record) {
                        gone_ids.push(*id);
                    }
                } else {
                    delta.targets -= 1;
                    delta.bytes -= targets_bytes(record.len()) as i64;
                }
            }
            if kept.is_empty() {
                batch.remove(k);
            } else {
                let kept: Vec<codec::Entry<&[u8]>> = kept
                    .into_iter()
                    .map(|(event_at, id, record)| codec::Entry { event_at, id, record })
                    .collect();
                batch.insert(k, codec::encode_row(base, with_ids, kept.iter()));
            }
        }
        if seen == 0 {
            return Ok(None);
        }
        // A pending id goes with its report too: merged first, it is in its chunk.
        if gone_ids.iter().any(|id| state.pending.contains(id)) {
            self.merge_ids(&mut state)?;
        }
        let mut ids = ids::IdChunks::default();
        gone_ids.sort_unstable();
        ids.load_sorted(rows, &gone_ids).map_err(|e| self.corrupt("rows", &[P_IDS], &e))?;
        for id in &gone_ids {
            ids.remove(id);
        }
        ids.write(&mut batch);
        let mut counts = self.counts();
        counts.apply(delta);
        put_counts(&mut batch, counts);
        self.write_rows(&mut state, &batch)?;
        self.apply_delta(delta);
        Ok(Some(delta))
    }

    fn enforce_retention(&self, now: UnixMillis) -> Result<RetentionStats, StoreError> {
        let cutoff = self.admission.cutoff(now).0;
        let mut stats = RetentionStats::default();
        // Retention reads sled's rows: what is held since the last checkpoint goes there first.
        {
            let mut state = self.write.lock().unwrap_or_else(PoisonError::into_inner);
            if !self.unflushed.lock().unwrap_or_else(PoisonError::into_inner).is_empty() {
                self.checkpoint(&mut state)?;
            }
        }

        // By age: every entry before the cutoff, front of the keyspace first.
        for prefix in [P_REPORTS, P_TARGETS] {
            let mut start = vec![prefix];
            let end = row_bound(prefix, cutoff);
            while let Some(d) = self.delete_step(prefix, &mut start, &end, Some(cutoff), 0)? {
                stats.expired_reports += d.reports.unsigned_abs();
                stats.expired_targets += d.targets.unsigned_abs();
                stats.freed_bytes += d.bytes.unsigned_abs();
            }
        }
        let dedup_cutoff = self.admission.dedup_cutoff(now).0;
        // A `G` row holds a bucket: the rows of buckets before the cutoff's.
        // Counted in `bytes`, unlike the digests of older formats and NEL's.
        let (envelopes, counted) = self.expire_keys(
            vec![P_ENVELOPE_ROWS],
            row_bound(P_ENVELOPE_ROWS, bucket_of(dedup_cutoff)).to_vec(),
            |v| {
                let (until, digests) = digest_row(v)?;
                let n = digests.len() as u64 / 32;
                Ok((n, if until.is_some() { n } else { 0 }))
            },
        )?;
        stats.freed_bytes += counted * DIGEST_BYTES;
        stats.expired_digests = envelopes
            + self.expire_digests(dedup_cutoff)?
            + self
                .expire_keys(
                    vec![P_ENVELOPES],
                    row_bound(P_ENVELOPES, dedup_cutoff).to_vec(),
                    |_| Ok((1, 0)),
                )?
                .0
            + self
                .expire_keys(
                    vec![P_RECENT],
                    row_bound(P_RECENT, now.0.saturating_sub(recent::WINDOW_MS)).to_vec(),
                    |v| Ok(((v.len() / 16) as u64, 0)),
                )?
                .0;
        {
            let mut state = self.write.lock().unwrap_or_else(PoisonError::into_inner);
            if state.legacy_envelopes && !self.any_key(P_ENVELOPES)? {
                state.legacy_envelopes = false;
            }
        }
        // By size: first the envelope digests whose envelopes have no data left, then whole
        // rows, oldest first by (bucket, sequence, chunk) across reports and counts (reports
        // first on a tie), which leaves more digests with no data.
        // The least `until` of the digest rows a full pass kept: none goes before the oldest
        // data is later than that.
        let mut pinned: Option<u64> = None;
        while self.counts().bytes > self.config.max_bytes {
            let excess = self.counts().bytes - self.config.max_bytes;
            let oldest = self.oldest_data()?;
            if pinned.is_none_or(|p| oldest.is_none_or(|o| p < o)) {
                let (gone, kept) = self.evict_digests(excess)?;
                stats.evicted_digests += gone;
                stats.freed_bytes += gone * DIGEST_BYTES;
                pinned = kept;
                if gone > 0 {
                    continue;
                }
            }
            let first = |prefix: u8| -> Result<Option<sled::IVec>, StoreError> {
                match self.trees.rows.scan_prefix([prefix]).next() {
                    None => Ok(None),
                    Some(Err(e)) => Err(self.io(e)),
                    Some(Ok((k, _))) => Ok(Some(k)),
                }
            };
            let (prefix, other) = match (first(P_REPORTS)?, first(P_TARGETS)?) {
                (None, None) => break,
                (Some(r), Some(t)) if t[1..] < r[1..] => (P_TARGETS, Some(r)),
                (Some(_), t) => (P_REPORTS, t),
                (None, Some(_)) => (P_TARGETS, None),
            };
            // Up to the other prefix's oldest row (inclusive for reports: they go first).
            let end = match other {
                Some(o) => {
                    let mut end = vec![prefix];
                    end.extend_from_slice(&o[1..]);
                    if prefix == P_REPORTS {
                        end.push(0);
                    }
                    end
                }
                None => vec![prefix + 1],
            };
            let mut start = vec![prefix];
            let Some(d) = self.delete_step(prefix, &mut start, &end, None, excess)? else {
                break;
            };
            stats.evicted_reports += d.reports.unsigned_abs();
            stats.evicted_targets += d.targets.unsigned_abs();
            stats.freed_bytes += d.bytes.unsigned_abs();
        }
        Ok(stats)
    }

    /// Deletes every key in `start..end`, in steps of [`EXPIRE_STEP`] keys; says how many
    /// digests went, and how many of them the counters held ([`Counts::digests`]): `digests`
    /// of each value.
    fn expire_keys(
        &self,
        start: Vec<u8>,
        end: Vec<u8>,
        digests: impl Fn(&[u8]) -> Result<(u64, u64), String>,
    ) -> Result<(u64, u64), StoreError> {
        let (mut removed, mut counted) = (0, 0);
        loop {
            let mut state = self.write.lock().unwrap_or_else(PoisonError::into_inner);
            let mut batch = Batch::default();
            let mut step = 0;
            for item in self.trees.rows.range(start.clone()..end.clone()).take(EXPIRE_STEP) {
                let (k, v) = item.map_err(|e| self.io(e))?;
                let (n, c) = digests(&v).map_err(|e| self.corrupt("rows", &k, &e))?;
                removed += n;
                step += c;
                batch.remove(k);
            }
            if batch.is_empty() {
                return Ok((removed, counted));
            }
            counted += step;
            if step > 0 {
                self.forget_digests(&mut state, &mut batch, step)?;
            } else {
                self.write_rows(&mut state, &batch)?;
            }
        }
    }

    /// Writes `batch`, which deletes `n` counted envelope digests, with the counters less them.
    /// With [`Shared::write`] held.
    fn forget_digests(
        &self,
        state: &mut WriteState,
        batch: &mut Batch,
        n: u64,
    ) -> Result<(), StoreError> {
        let delta = Delta::digests(-i64::try_from(n).unwrap_or(i64::MAX));
        let mut counts = self.counts();
        counts.apply(delta);
        put_counts(batch, counts);
        self.write_rows(state, batch)?;
        self.apply_delta(delta);
        Ok(())
    }

    /// The bucket of the oldest report or count row, in sled or held (`None`: there is none).
    fn oldest_data(&self) -> Result<Option<u64>, StoreError> {
        let mut oldest = self
            .unflushed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .first_bucket(&[P_REPORTS, P_TARGETS]);
        for prefix in [P_REPORTS, P_TARGETS] {
            if let Some(item) = self.trees.rows.scan_prefix([prefix]).next() {
                let (k, _) = item.map_err(|e| self.io(e))?;
                let bucket = key_bucket(&k).map_err(|e| self.corrupt("rows", &k, &e))?;
                oldest = Some(oldest.map_or(bucket, |o| o.min(bucket)));
            }
        }
        Ok(oldest)
    }

    /// Forgets, to free `excess` logical bytes, the `G` rows whose envelopes have no data
    /// left: a row's `until` is earlier than the oldest report or count stored, so none of its
    /// envelopes' reports and counts is (each was at or before its envelope's `until`), and a
    /// re-send of one can only store again what was evicted, never a second copy (see
    /// "Duplicates"). Front of the keyspace first (the oldest `created_at` seconds), in steps of
    /// at most [`DELETE_CHUNK`] rows looked at, each with [`Shared::write`] held and the oldest
    /// data read again (a group in between may have added older data). Format 6 rows are
    /// passed over (not counted: they go by age). Says how many digests went, and, when it
    /// looked at every row, the least `until` of those it kept (`u64::MAX`: none that the
    /// size pass could ever free).
    fn evict_digests(&self, excess: u64) -> Result<(u64, Option<u64>), StoreError> {
        let rows = &self.trees.rows;
        let mut start = vec![P_ENVELOPE_ROWS];
        let end = vec![P_ENVELOPE_ROWS + 1];
        let mut removed: u64 = 0;
        let mut kept: Option<u64> = None;
        loop {
            let mut state = self.write.lock().unwrap_or_else(PoisonError::into_inner);
            let oldest = self.oldest_data()?;
            let mut batch = Batch::default();
            let mut step: u64 = 0;
            let mut done = true;
            for (seen, item) in rows.range(start.clone()..end.clone()).enumerate() {
                if seen == DELETE_CHUNK || (removed + step) * DIGEST_BYTES >= excess {
                    done = false;
                    break;
                }
                let (k, v) = item.map_err(|e| self.io(e))?;
                start = k.to_vec();
                start.push(0);
                let (until, digests) = digest_row(&v).map_err(|e| self.corrupt("rows", &k, &e))?;
                // A format 6 row is not counted: it goes by age only.
                let Some(until) = until else { continue };
                if oldest.is_none_or(|o| until < o) {
                    step += digests.len() as u64 / 32;
                    batch.remove(k);
                } else {
                    kept = Some(kept.map_or(until, |k| k.min(until)));
                }
            }
            if !batch.is_empty() {
                self.forget_digests(&mut state, &mut batch, step)?;
            }
            removed += step;
            if done {
                // Nothing kept that a later oldest could free (format 6 rows never are): no
                // need to look again in this pass.
                return Ok((removed, Some(kept.unwrap_or(u64::MAX))));
            }
            if removed * DIGEST_BYTES >= excess {
                return Ok((removed, None));
            }
        }
    }

    /// True if `rows` holds a key with this prefix.
    fn any_key(&self, prefix: u8) -> Result<bool, StoreError> {
        match self.trees.rows.scan_prefix([prefix]).next() {
            None => Ok(false),
            Some(Err(e)) => Err(self.io(e)),
            Some(Ok(_)) => Ok(true),
        }
    }

    /// Forgets format 3's digests of groups committed before `cutoff`, in steps of
    /// [`DELETE_CHUNK`] groups; once none is left, the writer stops looking for them.
    fn expire_digests(&self, cutoff: u64) -> Result<u64, StoreError> {
        let rows = &self.trees.rows;
        let mut removed = 0;
        loop {
            let mut state = self.write.lock().unwrap_or_else(PoisonError::into_inner);
            let mut batch = Batch::default();
            let mut seen = 0;
            for item in
                rows.range(vec![P_EXPIRY]..row_bound(P_EXPIRY, cutoff).to_vec()).take(DELETE_CHUNK)
            {
                let (k, v) = item.map_err(|e| self.io(e))?;
                seen += 1;
                let time = key_bucket(&k).map_err(|e| self.corrupt("rows", &k, &e))?.to_be_bytes();
                for digest in v.chunks(32) {
                    let key = prefixed(
                        P_DIGESTS,
                        &<[u8; 32]>::try_from(digest)
                            .map_err(|_| self.corrupt("rows", &k, "not a list of digests"))?,
                    );
                    // A digest seen again later (after an earlier expiry) carries a newer
                    // time; only the entry this group wrote goes.
                    if rows.get(&key).map_err(|e| self.io(e))?.is_some_and(|v| v.as_ref() == time) {
                        batch.remove(key);
                        removed += 1;
                    }
                }
                batch.remove(k);
            }
            if seen == 0 {
                if state.legacy_digests && !self.any_key(P_DIGESTS)? {
                    state.legacy_digests = false;
                }
                return Ok(removed);
            }
            self.write_rows(&mut state, &batch)?;
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

/// Opens sled at `path`, polling for its file lock up to [`LOCK_WAIT`] (sled's threads of a
/// `Db` just dropped can hold it a moment longer).
pub(crate) fn open_sled(path: &Path, cache_bytes: u64) -> sled::Result<sled::Db> {
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

/// A seeded xorshift64 generator for the store's tests (`seed` not 0).
#[cfg(test)]
fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut state = seed;
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
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

    /// An agent envelope made when its last report was received.
    fn batch(digest: u8, reports: Vec<StoredReport>) -> IngestBatch {
        let created_at = reports.iter().map(|r| r.received_at).max().unwrap_or(UnixMillis(0));
        IngestBatch {
            digest: [digest; 32],
            origin: Origin::Agent { key: [9; 32], seq: u64::from(digest), created_at },
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
        IngestBatch { targets, origin: Origin::Nel, ..batch(digest, reports) }
    }

    fn all_reports_of(store: &Store) -> Vec<StoredReport> {
        store.scan_reports(UnixMillis(0), UnixMillis(u64::MAX)).map(Result::unwrap).collect()
    }

    /// Keys of one prefix in `rows`, with the rows held until the next checkpoint (as many as
    /// it will write).
    fn keys(store: &Store, prefix: u8) -> usize {
        let merged = store.shared.unflushed.lock().unwrap().merged().unwrap();
        let held = merged.iter().filter(|(k, _)| k[0] == prefix).count();
        store.shared.trees.rows.scan_prefix([prefix]).count() + held
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

    /// A NEL upload's re-send is a duplicate within the window, in a later group and after a
    /// reopen; it writes no key of its own (one `N` row per group), and what is beyond the
    /// window is stored again and its rows are forgotten by retention.
    #[tokio::test]
    async fn nel_uploads_are_deduplicated_within_the_window_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path());
        let store = Store::open(config.clone()).unwrap();
        let now = crate::clock::now_millis().0;
        let recent = nel_batch(1, now, 2);
        let old = nel_batch(2, now - recent::WINDOW_MS - 60_000, 1);
        let stored = |n| CommitOutcome::Stored { reports: n, targets: n };
        assert_eq!(store.commit(recent.clone()).await.unwrap(), stored(2));
        assert_eq!(store.commit(old.clone()).await.unwrap(), stored(1));
        // A later group: the window in memory.
        assert_eq!(store.commit(recent.clone()).await.unwrap(), CommitOutcome::Duplicate);
        assert_eq!(keys(&store, P_RECENT), 2, "one row per group with new NEL digests");
        let window = Duration::from_millis(recent::WINDOW_MS);
        assert_eq!(store.nel_dedup_window(), (2, window));
        assert_eq!(keys(&store, P_DIGESTS) + keys(&store, P_ENVELOPES), 0);
        store.close().await.unwrap();
        drop(store);

        // Reopened: the window as the rows give it at open.
        let store = Store::open(config.clone()).unwrap();
        assert_eq!(store.nel_dedup_window(), (1, window), "the old upload is beyond it");
        assert_eq!(store.commit(recent.clone()).await.unwrap(), CommitOutcome::Duplicate);
        assert_eq!(store.commit(old.clone()).await.unwrap(), stored(1), "beyond the window");
        let stats = store.enforce_retention(UnixMillis(now)).unwrap();
        assert_eq!(stats.expired_digests, 2, "the two rows of the old upload");
        assert_eq!(keys(&store, P_RECENT), 1);
        let stats = store.enforce_retention(UnixMillis(now + recent::WINDOW_MS + 1)).unwrap();
        assert_eq!(stats.expired_digests, 1);
        assert_eq!(keys(&store, P_RECENT), 0);
        assert_eq!(store.stats().reports, 4);
        // The window moves with every group, NEL or not: once a group is received more than
        // the window after it, the upload is new again.
        assert_eq!(store.commit(recent.clone()).await.unwrap(), CommitOutcome::Duplicate);
        let later = batch(9, vec![report(9, now + recent::WINDOW_MS + 1)]);
        assert_eq!(
            store.commit(later).await.unwrap(),
            CommitOutcome::Stored { reports: 1, targets: 0 }
        );
        assert_eq!(store.nel_dedup_window(), (0, window));
        assert_eq!(store.commit(recent.clone()).await.unwrap(), stored(2));
        store.close().await.unwrap();
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
        assert_eq!(keys(&store, P_TARGETS), 1, "only the success count is written");
        assert_eq!(keys(&store, P_REPORTS), 1, "one row for the upload's reports");
        assert_eq!(keys(&store, P_IDS), 0, "NEL ids derive from the digest");
        // Read back: every count the batch carried, in event order.
        let mut want = b.targets.clone();
        want.sort_by_key(|t| t.event_at);
        assert_eq!(all_targets(&store), want);
        // A retry is still a duplicate.
        assert_eq!(store.commit(b).await.unwrap(), CommitOutcome::Duplicate);
        store.close().await.unwrap();
    }

    /// Writes what a format 1 (`v1`) or 2 build wrote for `nel` and `agent` into `store`'s
    /// legacy trees and marks it with that format; returns the targets it reads back as.
    fn write_legacy(store: &Store, v1: bool, nel: &IngestBatch, agent: &IngestBatch) {
        let tree = |n: &str| store.open_tree(n).unwrap();
        let (reports, ids, targets) = (tree("reports"), tree("report_ids"), tree("targets"));
        let (digests, by_time, meta) = (tree("digests"), tree("digests_by_time"), tree("meta"));
        for b in [nel, agent] {
            for (i, r) in b.reports.iter().enumerate() {
                let key = codec::report_key(r.event_at, &r.id);
                let nel = r.source == Source::Nel;
                let mut record = codec::encode_report(r, nel && !v1).unwrap();
                if v1 {
                    // A version 1 record: version 2 without its last (derived-count) byte.
                    record[0] = 1;
                    record.pop();
                }
                reports.insert(key, record).unwrap();
                if v1 || !nel {
                    ids.insert(r.id, &key[..8]).unwrap();
                }
                if nel && v1 {
                    let count = r.nel_targets().unwrap();
                    let key = codec::target_key(count.event_at, &b.digest, i as u32);
                    targets.insert(key, codec::encode_targets(&count).unwrap()).unwrap();
                }
            }
            if !b.reports[0].source.eq(&Source::Nel) {
                for (i, t) in b.targets.iter().enumerate() {
                    let key = codec::target_key(t.event_at, &b.digest, i as u32);
                    targets.insert(key, codec::encode_targets(t).unwrap()).unwrap();
                }
            }
            let time = b.reports[0].received_at.0.to_be_bytes();
            digests.insert(b.digest, &time).unwrap();
            let mut k = time.to_vec();
            k.extend_from_slice(&b.digest);
            by_time.insert(k, &[]).unwrap();
        }
        meta.insert(drop_key(DropReason::QueueFull), &7u64.to_be_bytes()).unwrap();
        meta.insert(drop_app_key("com.example", DropReason::QueueFull), &7u64.to_be_bytes())
            .unwrap();
        meta.insert(META_FORMAT, &(if v1 { 1u32 } else { 2 }).to_be_bytes()).unwrap();
        // What format 3 wrote at the open that made this directory: not there in an old store.
        store.shared.trees.rows.clear().unwrap();
    }

    #[tokio::test]
    async fn format_1_and_2_stores_are_upgraded_in_place_and_read_as_before() {
        for v1 in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(StoreConfig::new(dir.path())).unwrap();
            let nel = nel_batch(1, 10_000, 2);
            let mut agent = batch(2, vec![report(40, 9_000), report(41, 12_500)]);
            agent.targets.push(StoredTargets {
                received_at: UnixMillis(12_600),
                event_at: UnixMillis(9_500),
                service: "svc".into(),
                host: "example.org".into(),
                attempts: 10,
                successes: 9,
                client: [1; 32],
                net: NetTag(3),
                enrichment: Enrichment::default(),
            });
            write_legacy(&store, v1, &nel, &agent);
            store.close().await.unwrap();
            drop(store);

            let store = Store::open(StoreConfig::new(dir.path())).unwrap();
            let format = store.shared.trees.meta.get(META_FORMAT).unwrap().unwrap();
            assert_eq!(format.as_ref(), FORMAT_VERSION.to_be_bytes());
            let names = store.shared.db.tree_names();
            for old in upgrade::LEGACY_TREES {
                assert!(!names.iter().any(|n| n.as_ref() == old.as_bytes()), "{old} left");
            }
            // Every report and count reads as before, each count once.
            let mut reports = [nel.reports.clone(), agent.reports.clone()].concat();
            reports.sort_by_key(|r| (r.event_at, r.id));
            assert_eq!(all_reports_of(&store), reports);
            let mut targets = [nel.targets.clone(), agent.targets.clone()].concat();
            targets.sort_by_key(|t| t.event_at);
            assert_eq!(all_targets(&store), targets);
            let stats = store.stats();
            assert_eq!((stats.reports, stats.targets), (4, if v1 { 3 } else { 1 }));
            // Dedup state moved: the old digests, and an old agent report's id.
            assert_eq!(store.commit(nel.clone()).await.unwrap(), CommitOutcome::Duplicate);
            let mut resent = agent.clone();
            resent.digest = [9; 32];
            resent.targets.clear();
            assert_eq!(
                store.commit(resent).await.unwrap(),
                CommitOutcome::Stored { reports: 0, targets: 0 }
            );
            assert_eq!(store.agent_drops().unwrap(), vec![("queue_full", 7)]);
            assert_eq!(
                store.agent_drops_by_app().unwrap(),
                vec![("com.example".to_owned(), "queue_full", 7)]
            );
            // Retention still finds the moved rows, ids and digests.
            let stats = store.enforce_retention(UnixMillis(u64::MAX / 2)).unwrap();
            assert_eq!(stats.expired_reports, 4);
            assert_eq!(stats.expired_digests, 3);
            assert_eq!(keys(&store, P_IDS), 0, "the ids went with their reports");
            store.close().await.unwrap();
            drop(store);
        }

        // A format this build does not know is refused by name.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.shared.trees.meta.insert(META_FORMAT, &(FORMAT_VERSION + 1).to_be_bytes()).unwrap();
        store.close().await.unwrap();
        drop(store);
        let err = Store::open(StoreConfig::new(dir.path())).unwrap_err().to_string();
        assert!(err.contains(&format!("on-disk format {}", FORMAT_VERSION + 1)), "{err}");
        assert!(err.contains(&format!("this build reads formats 1 to {FORMAT_VERSION}")), "{err}");

        // A format 7 store is marked 8 with nothing moved: its whole id runs (one value under
        // `P` ‖ seq) are pending ids, merged into the chunks like runs in pieces.
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let old: Vec<[u8; 16]> = (1..=40u8).map(|n| [n; 16]).collect();
        store.shared.trees.rows.insert(ids::run_key(1), old.concat()).unwrap();
        store.shared.trees.meta.insert(META_FORMAT, &7u32.to_be_bytes()).unwrap();
        store.close().await.unwrap();
        drop(store);
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let format = store.shared.trees.meta.get(META_FORMAT).unwrap().unwrap();
        assert_eq!(format.as_ref(), 8u32.to_be_bytes());
        assert!(old.iter().all(|id| store.shared.write.lock().unwrap().pending.contains(id)));
        store.close().await.unwrap();
        drop(store);
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!((keys(&store, P_RUNS), keys(&store, P_IDS)), (0, 1), "merged at close");
        store.close().await.unwrap();
    }

    /// A format 3 store keeps a `D` key per digest and an `E` row per group: opened by this
    /// build, it is marked format 4 with nothing moved, every digest it holds still makes a
    /// re-send a duplicate (envelope or NEL), and retention forgets them as before, after
    /// which the writer stops looking there.
    #[tokio::test]
    async fn format_3_digests_are_read_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let nel = nel_batch(1, 10_000, 2);
        let agent = batch(2, vec![report(40, 9_000), report(41, 12_500)]);
        // What format 3 wrote for them: rows, and the digests under `D` with their `E` row.
        for (seq, b) in [&nel, &agent].into_iter().enumerate() {
            let prepared = store.shared.prepare(b, None).unwrap();
            let mut entries: Vec<codec::Entry> =
                prepared.reports.into_iter().map(|(e, _)| e).collect();
            entries.sort_unstable_by_key(|e| (e.event_at, e.id));
            let mut batch = Batch::default();
            let mut buckets: std::collections::BTreeMap<u64, Vec<codec::Entry>> =
                Default::default();
            for e in entries {
                buckets.entry(bucket_of(e.event_at)).or_default().push(e);
            }
            for (bucket, entries) in buckets {
                push_rows(&mut batch, P_REPORTS, bucket, seq as u64, &entries);
            }
            let time = prepared.received_at.to_be_bytes();
            batch.insert(prefixed(P_DIGESTS, &b.digest), &time[..]);
            batch
                .insert(&row_key(P_EXPIRY, prepared.received_at, seq as u64, 0)[..], &b.digest[..]);
            store.shared.trees.rows.apply_batch(batch.to_sled()).unwrap();
        }
        store.shared.trees.rows.insert(meta_key(b"seq"), &2u64.to_be_bytes()).unwrap();
        store.shared.trees.meta.insert(META_FORMAT, &3u32.to_be_bytes()).unwrap();
        store.shared.trees.rows.remove(meta_key(META_REPORTS)).unwrap();
        store.close().await.unwrap();
        drop(store);

        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let format = store.shared.trees.meta.get(META_FORMAT).unwrap().unwrap();
        assert_eq!(format.as_ref(), FORMAT_VERSION.to_be_bytes());
        assert_eq!(all_reports_of(&store).len(), 4);
        assert!(store.shared.write.lock().unwrap().legacy_digests);
        assert_eq!(store.commit(nel.clone()).await.unwrap(), CommitOutcome::Duplicate);
        assert_eq!(store.commit(agent.clone()).await.unwrap(), CommitOutcome::Duplicate);
        // Forgotten after the horizon, by their `E` rows; then the writer stops reading `D`.
        let stats = store.enforce_retention(UnixMillis(u64::MAX / 2)).unwrap();
        assert_eq!(stats.expired_digests, 2);
        assert_eq!(keys(&store, P_DIGESTS) + keys(&store, P_EXPIRY), 0);
        assert!(!store.shared.write.lock().unwrap().legacy_digests);
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn an_upgrade_cut_short_goes_on_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let nel = nel_batch(1, 10_000, 2);
        let agent = batch(2, vec![report(40, 9_000), report(41, 12_500)]);
        write_legacy(&store, false, &nel, &agent);
        // What a kill after the first steps leaves: the ids and the targets moved, the
        // marker still says 2.
        let tree = |n: &str| store.open_tree(n).unwrap();
        store.shared.move_ids(&tree("report_ids"), &tree("reports")).unwrap();
        store.shared.move_rows(&tree("targets"), false).unwrap();
        assert_eq!(keys(&store, P_IDS), 1);
        assert_eq!(tree("meta").get(META_FORMAT).unwrap().unwrap().as_ref(), 2u32.to_be_bytes());
        store.close().await.unwrap();
        drop(store);

        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let mut reports = [nel.reports.clone(), agent.reports.clone()].concat();
        reports.sort_by_key(|r| (r.event_at, r.id));
        assert_eq!(all_reports_of(&store), reports, "every report once");
        assert_eq!(store.stats().reports, 4);
        let mut resent = agent.clone();
        resent.digest = [9; 32];
        let outcome = store.commit(resent).await.unwrap();
        assert_eq!(outcome, CommitOutcome::Stored { reports: 0, targets: 0 }, "ids kept");
        store.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_group_writes_one_row_per_bucket_not_one_per_report() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        // Received after every id's made-at time (`[i; 16]` reads as year 2000-ish to
        // far future): every id is timely, so all go into the group's run.
        let late = |r: StoredReport| StoredReport { received_at: UnixMillis(1 << 48), ..r };
        let batches: Vec<_> = (0..50u8)
            .map(|i| {
                let reports =
                    vec![late(report(i, 100_000 + u64::from(i))), late(report(i + 100, 101_500))];
                (batch(i, reports), None)
            })
            .collect();
        let (results, _, _) = store.shared.apply_group(batches);
        assert!(
            results
                .iter()
                .all(|r| r.as_ref().unwrap() == &CommitOutcome::Stored { reports: 2, targets: 0 })
        );
        // 100 reports in two one-second buckets: a few rows, a run of ids, nothing of older
        // formats' digest indexes (and, at the checkpoint, one row of the 50 envelopes'
        // digests: they were made in one second).
        assert!(keys(&store, P_REPORTS) <= 4, "{} report rows", keys(&store, P_REPORTS));
        assert_eq!(keys(&store, P_RUNS), 1, "the group's 100 ids are one run");
        assert_eq!(keys(&store, P_IDS), 0, "merged later");
        let old_keys = [P_DIGESTS, P_EXPIRY, P_RECENT, P_ENVELOPES];
        assert_eq!(old_keys.iter().map(|p| keys(&store, *p)).sum::<usize>(), 0);
        let got = all_reports_of(&store);
        assert_eq!(got.len(), 100);
        assert!(got.windows(2).all(|w| (w[0].event_at, w[0].id) < (w[1].event_at, w[1].id)));
        // Newest first, paged from a position inside a bucket.
        let newest: Vec<_> = store
            .scan_reports_newest_first(UnixMillis(0), (UnixMillis(100_010), [0; 16]))
            .map(|r| r.unwrap().0)
            .collect();
        let want: Vec<_> =
            (0..10u8).rev().map(|i| (UnixMillis(100_000 + u64::from(i)), [i; 16])).collect();
        assert_eq!(newest, want);
        // A clean close merges the run: 100 ids in pieces of 48.
        store.close().await.unwrap();
        drop(store);
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        assert_eq!((keys(&store, P_RUNS), keys(&store, P_IDS)), (0, 3));
        assert_eq!(keys(&store, P_ENVELOPE_ROWS), 1);
        store.close().await.unwrap();
    }

    /// Ids of 128 random bits (and ids made far ahead) go straight into chunks and do not stop
    /// the ids agents make from going into runs.
    #[tokio::test]
    async fn random_ids_do_not_push_agent_ids_out_of_runs() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        // The store's bound starts at the clock's time at open, and never goes back.
        let now = crate::clock::now_millis().0 + 1_000;
        let at = |id: [u8; 16]| StoredReport { id, received_at: UnixMillis(now), ..report(0, 1) };
        let made = |ms: u64, n: u8| {
            let mut id = [n; 16];
            id[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
            id
        };
        // Far-future and random-looking ids first.
        let foreign: Vec<StoredReport> = (1..=40u8)
            .map(|n| at([n.wrapping_mul(37) | 0x80; 16]))
            .chain([at(made(now + ids::AHEAD_MS + 60_000, 1))])
            .collect();
        store.commit(batch(1, foreign)).await.unwrap();
        assert_eq!((keys(&store, P_RUNS), keys(&store, P_IDS) > 0), (0, true));
        for round in 0..3u8 {
            let timely: Vec<StoredReport> =
                (0..10u8).map(|n| at(made(now - 1_000 + u64::from(round), n))).collect();
            store.commit(batch(10 + round, timely)).await.unwrap();
            let mut state = store.shared.write.lock().unwrap();
            store.shared.merge_ids(&mut state).unwrap();
        }
        // Each group's ids went into a run (merged since), none straight into a chunk: the
        // chunks' timely end is still below them.
        {
            let state = store.shared.write.lock().unwrap();
            assert!(state.pending.may_be_in_chunks(&made(now - 1_000 + 2, 9)));
            assert!(!state.pending.may_be_in_chunks(&made(now, 0)), "{:?}", state.pending);
        }
        store.close().await.unwrap();
    }

    /// Every agent report id is stored once, whether its first copy is in a pending run, in
    /// the chunks after a merge, or read back from disk after a reopen; for time-ordered ids,
    /// ids of 128 random bits and a mix, with merges at any point.
    #[tokio::test]
    async fn report_ids_are_stored_once_across_runs_merges_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let mut next = xorshift(0x9e37_79b9_7f4a_7c15);
        let mut known: Vec<[u8; 16]> = Vec::new();
        let mut digest = 0u64;
        // Group times from the clock's on (the store's timely bound starts there at open).
        let start = crate::clock::now_millis().0 + 1_000;
        let mut stored_total = 0u64;
        for round in 0..60u64 {
            let mut batches = Vec::new();
            for _ in 0..(1 + next() % 6) {
                let mut reports = Vec::new();
                for _ in 0..(1 + next() % 12) {
                    let now = start + round * 30_000;
                    let id = match next() % 5 {
                        // Re-sent: stored before.
                        0 if !known.is_empty() => known[(next() % known.len() as u64) as usize],
                        // 128 random bits.
                        1 => {
                            let mut id = [0u8; 16];
                            id[..8].copy_from_slice(&next().to_be_bytes());
                            id[8..].copy_from_slice(&next().to_be_bytes());
                            id
                        }
                        // Made 10 to 20 minutes ahead of the group's time: not timely (straight
                        // into a chunk) until the rounds' time passes it.
                        2 => {
                            let made = now + ids::AHEAD_MS + 1_000 + next() % 600_000;
                            let mut id = [0u8; 16];
                            id[..6].copy_from_slice(&made.to_be_bytes()[2..]);
                            id[6..14].copy_from_slice(&next().to_be_bytes());
                            id
                        }
                        // Made now (the time, then random bits), some a little late.
                        _ => {
                            let made = now - next() % 3_000;
                            let mut id = [0u8; 16];
                            id[..6].copy_from_slice(&made.to_be_bytes()[2..]);
                            id[6..14].copy_from_slice(&next().to_be_bytes());
                            id
                        }
                    };
                    reports.push(StoredReport {
                        id,
                        received_at: UnixMillis(now),
                        ..report(0, 100_000 + round)
                    });
                }
                // Within one upload an id appears once.
                reports.sort_by_key(|r| r.id);
                reports.dedup_by_key(|r| r.id);
                digest += 1;
                let mut b = batch(0, reports);
                b.digest[..8].copy_from_slice(&digest.to_be_bytes());
                batches.push((b, None));
            }
            // Earlier batches of the group come first: an id new in two of them is stored by
            // the first.
            let mut seen = std::collections::HashSet::new();
            let want: Vec<usize> = batches
                .iter()
                .map(|(b, _)| {
                    b.reports.iter().filter(|r| !known.contains(&r.id) && seen.insert(r.id)).count()
                })
                .collect();
            let (results, _, batches) = store.shared.apply_group(batches);
            for ((r, w), b) in results.iter().zip(&want).zip(&batches) {
                assert_eq!(
                    r.as_ref().unwrap(),
                    &CommitOutcome::Stored { reports: *w, targets: 0 },
                    "round {round}"
                );
                stored_total += *w as u64;
                for report in &b.reports {
                    if !known.contains(&report.id) {
                        known.push(report.id);
                    }
                }
            }
            // What the writer holds in memory is what the next open reads.
            {
                let state = store.shared.write.lock().unwrap();
                let on_disk = ids::Pending::load(&store.shared.trees.rows, 0).unwrap();
                assert_eq!(on_disk.ids(), state.pending.ids(), "round {round}");
            }
            match next() % 8 {
                0 => {
                    let mut state = store.shared.write.lock().unwrap();
                    store.shared.merge_ids(&mut state).unwrap();
                    assert!(state.pending.is_empty());
                    assert_eq!(keys(&store, P_RUNS), 0);
                }
                // The oldest runs only, as the writer does once `MERGE_AT` ids are pending.
                2 | 3 => {
                    let mut state = store.shared.write.lock().unwrap();
                    let (runs, ids) = (keys(&store, P_RUNS), state.pending.len());
                    store.shared.merge_ids_step(&mut state, 10).unwrap();
                    assert!(ids < 10 || state.pending.len() <= ids - 10, "{ids} pending");
                    assert!(runs == 0 || keys(&store, P_RUNS) < runs);
                }
                1 => {
                    store.close().await.unwrap();
                    drop(store);
                    store = Store::open(StoreConfig::new(dir.path())).unwrap();
                    assert_eq!(keys(&store, P_RUNS), 0, "a clean close merges");
                }
                _ => {}
            }
        }
        assert_eq!(store.stats().reports, stored_total);
        assert_eq!(all_reports_of(&store).len() as u64, stored_total);
        // Every id once more, in a new upload: nothing is new.
        let again: Vec<StoredReport> =
            known.iter().map(|id| StoredReport { id: *id, ..report(0, 200_000) }).collect();
        let mut b = batch(0, again);
        b.digest = [0xee; 32];
        assert_eq!(
            store.commit(b).await.unwrap(),
            CommitOutcome::Stored { reports: 0, targets: 0 }
        );
        store.close().await.unwrap();
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
        let (results, _, back) =
            store.shared.apply_group(vec![(b.clone(), None), (b.clone(), None), (replayed, None)]);
        assert_eq!(back[0], b, "the batches come back unchanged");
        assert_eq!(results[0].as_ref().unwrap(), &CommitOutcome::Stored { reports: 2, targets: 0 });
        assert_eq!(results[1].as_ref().unwrap(), &CommitOutcome::Duplicate);
        // Another upload carrying the same report ids stores none of them again.
        assert_eq!(results[2].as_ref().unwrap(), &CommitOutcome::Stored { reports: 0, targets: 0 });
        assert_eq!(store.stats().reports, 2);
        store.close().await.unwrap();
    }

    /// Copies the files of the store at `from` into `to` (sled's files and the journal).
    fn copy_store(from: &Path, to: &Path) {
        for entry in walk(from) {
            let rel = entry.strip_prefix(from).unwrap();
            std::fs::create_dir_all(to.join(rel).parent().unwrap()).unwrap();
            std::fs::copy(&entry, to.join(rel)).unwrap();
        }
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() { out.extend(walk(&path)) } else { out.push(path) }
        }
        out
    }

    /// A group's rows are held until the checkpoint and written merged (one row per bucket,
    /// not one per bucket per group); scans see them before, during and after it, once.
    #[tokio::test]
    async fn rows_are_held_until_the_checkpoint_and_scans_see_each_report_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.shared.write.lock().unwrap().journal.period = Duration::MAX;
        // Rows of 1 s and 5 s (and a digest row), of 1 s and 5 s again (and a digest row),
        // then of 5 s (the NEL reports).
        for (b, held) in [
            (batch(1, vec![report(1, 1_000), report(2, 5_000)]), 3),
            (batch(2, vec![report(3, 1_500), report(4, 5_200)]), 6),
            (nel_batch(3, 5_900, 3), 7),
        ] {
            store.commit(b).await.unwrap();
            assert_eq!(store.shared.unflushed.lock().unwrap().len(), held);
        }
        let sled_rows = |prefix| store.shared.trees.rows.scan_prefix([prefix]).count();
        assert_eq!(sled_rows(P_REPORTS), 0, "nothing in sled before the checkpoint");
        let want = all_reports_of(&store);
        assert_eq!(want.len(), 7);
        let newest: Vec<_> = store
            .scan_reports_newest_first(UnixMillis(0), (UnixMillis(u64::MAX), [0xff; 16]))
            .map(|r| r.unwrap().1)
            .collect();
        assert_eq!(newest, want.iter().rev().cloned().collect::<Vec<_>>());
        // A scan taken before the checkpoint and read after it.
        let mut across = store.scan_reports(UnixMillis(0), UnixMillis(u64::MAX));
        let first = across.next().unwrap().unwrap();
        store.flush().await.unwrap();
        let rest: Vec<StoredReport> = across.map(Result::unwrap).collect();
        assert_eq!([vec![first], rest].concat(), want);
        assert!(store.shared.unflushed.lock().unwrap().is_empty());
        // Two buckets of reports (1 s and 5 s): a row each, whatever the groups.
        assert_eq!(sled_rows(P_REPORTS), 2);
        assert_eq!(all_reports_of(&store), want);
        store.close().await.unwrap();
    }

    /// A crash in the middle of a checkpoint: sled holds the merged rows (and a stale row of
    /// another chunking), the journal still holds the records. The replay writes each report
    /// once.
    #[tokio::test]
    async fn a_replay_over_an_interrupted_checkpoint_stores_each_report_once() {
        let dir = tempfile::tempdir().unwrap();
        let (live, image) = (dir.path().join("live"), dir.path().join("image"));
        let store = Store::open(StoreConfig::new(&live)).unwrap();
        store.commit(batch(1, vec![report(1, 900)])).await.unwrap();
        store.flush().await.unwrap();
        store.shared.write.lock().unwrap().journal.period = Duration::MAX;
        for b in [
            batch(2, vec![report(2, 1_000), report(3, 5_000)]),
            batch(3, vec![report(4, 1_500), report(5, 5_200)]),
        ] {
            store.commit(b).await.unwrap();
        }
        let want = all_reports_of(&store);
        let want_stats = store.stats();
        assert_eq!(want.len(), 5);
        {
            // The checkpoint's first half: rows in sled and flushed, the journal not reset.
            let state = store.shared.write.lock().unwrap();
            store.shared.write_unflushed(state.next_seq).unwrap();
            let rows = &store.shared.trees.rows;
            let merged: Vec<_> = rows.scan_prefix([P_REPORTS]).map(Result::unwrap).collect();
            // The first group's row (checkpointed before) and one per bucket since.
            assert_eq!(merged.len(), 3);
            // ... and a row an earlier build's chunking would have left: the same entries.
            let (key, value) = &merged[2];
            let mut stale = key.to_vec();
            stale[17..].copy_from_slice(&9u32.to_be_bytes());
            rows.insert(stale, value.clone()).unwrap();
            store.shared.db.flush().unwrap();
        }
        copy_store(&live, &image);
        assert!(journal::pending_records(&image).unwrap() > 0);
        store.close().await.unwrap();
        drop(store);

        let restored = Store::open(StoreConfig::new(&image)).unwrap();
        assert_eq!(all_reports_of(&restored), want);
        let stats = |s: StoreStats| (s.reports, s.targets, s.bytes);
        assert_eq!(stats(restored.stats()), stats(want_stats));
        // The first group's row (an earlier checkpoint) and one merged row per bucket.
        assert_eq!(restored.shared.trees.rows.scan_prefix([P_REPORTS]).count(), 3);
        restored.close().await.unwrap();
    }

    /// `n` envelopes of no reports, made at `created_at(i)`, with digests spread over the whole
    /// range (an xorshift from `seed`).
    fn envelopes(seed: u64, n: usize, created_at: impl Fn(usize) -> u64) -> Vec<IngestBatch> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|i| {
                let mut digest = [0u8; 32];
                for c in digest.chunks_mut(8) {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    c.copy_from_slice(&x.to_be_bytes());
                }
                let origin =
                    Origin::Agent { key: [9; 32], seq: 1, created_at: UnixMillis(created_at(i)) };
                IngestBatch { digest, origin, ..batch(0, Vec::new()) }
            })
            .collect()
    }

    /// The outcomes of `batches` committed as one group.
    fn group(store: &Store, batches: &[IngestBatch]) -> Vec<CommitOutcome> {
        let (results, _, _) =
            store.shared.apply_group(batches.iter().map(|b| (b.clone(), None)).collect());
        results.into_iter().map(Result::unwrap).collect()
    }

    /// Envelope digests are rows per second of `created_at`, 64 to 128 digests to a row (format
    /// 6, not a key each): a re-send is a `Duplicate` whether its digest is held since the last
    /// checkpoint, in sled (in any row of any seq of its second), or replayed from the journal
    /// after a crash; a new envelope of the same second is stored; retention forgets the rows.
    #[tokio::test]
    async fn envelope_digests_are_rows_per_second_and_find_every_resend() {
        let dir = tempfile::tempdir().unwrap();
        let (live, image) = (dir.path().join("live"), dir.path().join("image"));
        let store = Store::open(StoreConfig::new(&live)).unwrap();
        store.shared.write.lock().unwrap().journal.period = Duration::MAX;
        let stored = CommitOutcome::Stored { reports: 0, targets: 0 };
        let all = |outcomes: Vec<CommitOutcome>, want: &CommitOutcome| {
            assert!(outcomes.iter().all(|o| o == want), "{outcomes:?}");
        };
        // 300 envelopes over three seconds (143, 143 and 14 of them).
        let first = envelopes(1, 300, |i| 10_000 + 7 * i as u64);
        all(group(&store, &first), &stored);
        // Held since the last checkpoint.
        all(group(&store, &first), &CommitOutcome::Duplicate);
        let sled_rows =
            |store: &Store| store.shared.trees.rows.scan_prefix([P_ENVELOPE_ROWS]).count();
        assert_eq!(sled_rows(&store), 0);
        store.flush().await.unwrap();
        // Merged: two rows for each full second, one for the last.
        assert_eq!(sled_rows(&store), 5);
        all(group(&store, &first), &CommitOutcome::Duplicate);
        // A second checkpoint's rows in the same seconds, then rows held again.
        let second = envelopes(2, 200, |i| 10_003 + 7 * i as u64);
        all(group(&store, &second), &stored);
        store.flush().await.unwrap();
        // Merged into the seconds' rows: 286, 200 and 14 digests.
        let rows: Vec<_> =
            store.shared.trees.rows.scan_prefix([P_ENVELOPE_ROWS]).map(Result::unwrap).collect();
        assert_eq!(check_digest_rows(&rows), 500);
        let third = envelopes(3, 100, |i| 10_005 + 7 * i as u64);
        all(group(&store, &third), &stored);
        for b in [&first, &second, &third] {
            all(group(&store, b), &CommitOutcome::Duplicate);
        }
        // Made in the same seconds, other digests: new.
        all(group(&store, &envelopes(4, 50, |i| 10_000 + 7 * i as u64)), &stored);
        assert_eq!(keys(&store, P_ENVELOPES), 0, "no key per envelope");
        copy_store(&live, &image);
        assert!(journal::pending_records(&image).unwrap() > 0);
        store.close().await.unwrap();
        drop(store);

        // The crash image: the last groups' digests come back from the journal.
        let restored = Store::open(StoreConfig::new(&image)).unwrap();
        for b in [&first, &second, &third] {
            all(group(&restored, b), &CommitOutcome::Duplicate);
        }
        all(group(&restored, &envelopes(5, 50, |i| 10_001 + 7 * i as u64)), &stored);
        let stats = restored.enforce_retention(UnixMillis(u64::MAX / 2)).unwrap();
        assert_eq!(stats.expired_digests, 700);
        assert_eq!(keys(&restored, P_ENVELOPE_ROWS), 0);
        restored.close().await.unwrap();
    }

    /// Checks the `G` rows (in key order) hold disjoint ranges per bucket, in order, at most
    /// [`DIGESTS_PER_ROW`] each, keyed by their greatest digest; the number of digests.
    fn check_digest_rows(rows: &[(sled::IVec, sled::IVec)]) -> usize {
        let mut count = 0;
        for (i, (k, v)) in rows.iter().enumerate() {
            let (_, digests) = digest_row(v).unwrap();
            let n = digests.len() / 32;
            assert!((1..=DIGESTS_PER_ROW).contains(&n), "a row of {n} digests");
            assert_eq!(&k[9..], &digests[digests.len() - 32..], "keyed by its greatest digest");
            assert!(digests.chunks(32).zip(digests.chunks(32).skip(1)).all(|(a, b)| a < b));
            if let Some((prev, _)) = i.checked_sub(1).map(|j| &rows[j]) {
                if prev[..9] == k[..9] {
                    assert!(digests[..32] > prev[9..], "ranges disjoint, in order");
                }
            }
            count += n;
        }
        count
    }

    /// A second's digests merged into its rows, again and again: rows of at most 128 holding
    /// disjoint ranges in key order, so the first row at or above a digest is the one that
    /// holds it; merging what is there already changes nothing.
    #[test]
    fn digest_rows_partition_a_second_and_merge_idempotently() {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::Config::new().path(dir.path()).open().unwrap().open_tree("rows").unwrap();
        let digests = |seed, n| -> Vec<[u8; 32]> {
            let mut d: Vec<[u8; 32]> =
                envelopes(seed, n, |_| 0).into_iter().map(|b| b.digest).collect();
            d.sort_unstable();
            d
        };
        let merge = |new: &[[u8; 32]], until| {
            let range = row_bound(P_ENVELOPE_ROWS, 5_000)..row_bound(P_ENVELOPE_ROWS, 5_001);
            let old: Vec<_> = tree.range(range).map(Result::unwrap).collect();
            let mut batch = sled::Batch::default();
            merge_digest_rows(5_000, &old, new, until, 1, &mut batch).unwrap();
            tree.apply_batch(batch).unwrap();
        };
        let (first, second) = (digests(1, 300), digests(2, 200));
        merge(&first, 9_000);
        let untils = || -> Vec<u64> {
            tree.scan_prefix([P_ENVELOPE_ROWS])
                .map(|kv| digest_row(&kv.unwrap().1).unwrap().0.unwrap())
                .collect()
        };
        assert!(untils().iter().all(|u| *u == 9_000));
        merge(&second, 7_000);
        // A row that got digests has the later `until`; one that got none keeps its own.
        assert!(untils().iter().all(|u| *u == 9_000));
        merge(&first[..10], 11_000);
        let rows: Vec<_> = tree.scan_prefix([P_ENVELOPE_ROWS]).map(Result::unwrap).collect();
        assert_eq!(check_digest_rows(&rows), 500);
        assert!(rows.len() >= 4, "split as they grew: {} rows", rows.len());
        let touched =
            rows.iter().find(|(k, _)| k.as_ref() >= &digest_row_key(5_000, &first[0])[..]);
        assert_eq!(digest_row(&touched.unwrap().1).unwrap().0, Some(11_000));
        assert_eq!(untils().iter().filter(|u| **u == 11_000).count(), 1, "{:?}", untils());
        // A format 6 row (no `until`) merged into takes the later of `v1_until` and the new.
        let mut v1 = vec![DIGEST_ROW_V1];
        v1.extend_from_slice(&[0xff; 32]);
        let old = vec![(sled::IVec::from(&digest_row_key(8_000, &[0xff; 32])[..]), v1.into())];
        let mut batch = sled::Batch::default();
        merge_digest_rows(8_000, &old, &[[0xfe; 32]], 5, 3_000, &mut batch).unwrap();
        tree.apply_batch(batch).unwrap();
        let (_, v) = tree.get_gt(row_bound(P_ENVELOPE_ROWS, 8_000)).unwrap().unwrap();
        assert_eq!(digest_row(&v).unwrap(), (Some(3_000), &[[0xfe; 32], [0xff; 32]].concat()[..]));
        for d in first.iter().chain(&second) {
            let (_, v) =
                rows.iter().find(|(k, _)| k.as_ref() >= &digest_row_key(5_000, d)[..]).unwrap();
            assert!(digest_row_contains(v, d).unwrap());
        }
        assert!(!digest_row_contains(&rows[0].1, &[0; 32]).unwrap());
        assert!(digest_row(&[1, 2, 3]).unwrap_err().contains("not a multiple of 32"));
        assert!(digest_row(&[2, 0, 0]).unwrap_err().contains("shorter than its head"));
        assert!(digest_row(&[3]).unwrap_err().contains("digest row version 3"));
    }

    /// Merging into a second reads only the rows the digests go into (a seek each, and the
    /// last row for digests past it) and keeps the rows disjoint: digests below the first row,
    /// past the last, and both at once (the case where taking the row found for the first
    /// digest for all of them would make rows overlap and lose a digest's row).
    #[tokio::test]
    async fn merging_into_a_second_keeps_its_rows_disjoint_wherever_digests_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let digest = |n: u32| {
            let mut d = [0u8; 32];
            d[..4].copy_from_slice(&n.to_be_bytes());
            d
        };
        let merge = |new: &[[u8; 32]]| {
            let _state = store.shared.write.lock().unwrap();
            let mut writes = sled::Batch::default();
            store.shared.merge_digests(7_000, new, 0, &mut writes).unwrap();
            store.shared.trees.rows.apply_batch(writes).unwrap();
            let rows: Vec<_> = store
                .shared
                .trees
                .rows
                .scan_prefix([P_ENVELOPE_ROWS])
                .map(Result::unwrap)
                .collect();
            (check_digest_rows(&rows), rows.len())
        };
        let mut merged: Vec<[u8; 32]> = (0..384).map(|i| digest(1_000 + 10 * i)).collect();
        assert_eq!(merge(&merged), (384, 3));
        // Past the last row only: the last row takes it and splits.
        let past = [digest(9_000)];
        assert_eq!(merge(&past), (385, 4));
        // Below the first row and past the last, in one merge.
        let both = [digest(5), digest(9_500)];
        assert_eq!(merge(&both).0, 387);
        // Inside a row, and what is there already: the union.
        let inside = [digest(1_000), digest(2_005), digest(9_000)];
        assert_eq!(merge(&inside).0, 388);
        merged.extend(past.iter().chain(&both).chain(&inside));
        {
            let _state = store.shared.write.lock().unwrap();
            for d in &merged {
                assert!(store.shared.envelope_stored(false, 7_500, d).unwrap());
            }
            assert!(!store.shared.envelope_stored(false, 7_500, &digest(2_006)).unwrap());
            assert!(!store.shared.envelope_stored(false, 8_000, &digest(2_005)).unwrap());
        }
        store.close().await.unwrap();
    }

    /// A format 5 store's `C` keys are read until they expire: an envelope stored before the
    /// upgrade is a duplicate after it; retention forgets the keys, and the writer stops
    /// reading them.
    #[tokio::test]
    async fn format_5_envelope_keys_are_read_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let old = batch(7, vec![report(1, 5_000)]);
        let Origin::Agent { created_at, .. } = old.origin else { unreachable!() };
        let rows = &store.shared.trees.rows;
        rows.insert(envelope_key(created_at.0, &old.digest), &[][..]).unwrap();
        store.shared.trees.meta.insert(META_FORMAT, &5u32.to_be_bytes()).unwrap();
        store.close().await.unwrap();
        drop(store);

        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let format = store.shared.trees.meta.get(META_FORMAT).unwrap().unwrap();
        assert_eq!(format.as_ref(), FORMAT_VERSION.to_be_bytes());
        assert!(store.shared.write.lock().unwrap().legacy_envelopes);
        assert_eq!(store.commit(old.clone()).await.unwrap(), CommitOutcome::Duplicate);
        let stats = store.enforce_retention(UnixMillis(u64::MAX / 2)).unwrap();
        assert_eq!(stats.expired_digests, 1);
        assert_eq!(keys(&store, P_ENVELOPES), 0);
        assert!(!store.shared.write.lock().unwrap().legacy_envelopes);
        store.close().await.unwrap();
    }

    /// A crash image: sled's files as the last checkpoint left them, and the journal as it is
    /// after later acknowledged commits. Reopened, the store has every acknowledged batch
    /// (and its counters and dedup entries), as if it had never stopped.
    #[tokio::test]
    async fn commits_acknowledged_after_the_last_checkpoint_are_replayed_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let (live, image) = (dir.path().join("live"), dir.path().join("image"));
        let store = Store::open(StoreConfig::new(&live)).unwrap();
        store.commit(batch(1, vec![report(1, 1_000)])).await.unwrap();
        store.close().await.unwrap();
        drop(store);
        // sled's files after a clean stop: everything checkpointed, the journal empty.
        copy_store(&live, &image);
        assert_eq!(std::fs::metadata(image.join(journal::JOURNAL_FILE)).unwrap().len(), 0);

        let store = Store::open(StoreConfig::new(&live)).unwrap();
        store.shared.write.lock().unwrap().journal.period = Duration::MAX;
        // The NEL upload within the dedup window at the next open.
        let later = [
            batch(2, vec![report(2, 2_000), report(3, 2_001)]),
            nel_batch(3, crate::clock::now_millis().0, 2),
            batch(4, vec![report(3, 2_001), report(4, 4_000)]),
        ];
        for b in &later {
            store.commit(b.clone()).await.unwrap();
        }
        let want = all_reports_of(&store);
        let want_stats = store.stats();
        assert_eq!(want.len(), 6);
        // The crash image: the checkpointed sled files and the journal of the later commits,
        // with a record cut short after them (the group being written when the process died).
        let mut journal = std::fs::read(live.join(journal::JOURNAL_FILE)).unwrap();
        assert!(!journal.is_empty());
        let first = 16 + u32::from_le_bytes(journal[..4].try_into().unwrap()) as usize;
        let cut_short = journal[..first - 3].to_vec();
        journal.extend_from_slice(&cut_short);
        std::fs::write(image.join(journal::JOURNAL_FILE), &journal).unwrap();
        store.close().await.unwrap();
        drop(store);

        let restored = Store::open(StoreConfig::new(&image)).unwrap();
        assert_eq!(all_reports_of(&restored), want);
        assert_eq!(restored.stats(), want_stats);
        for b in later {
            assert_eq!(restored.commit(b).await.unwrap(), CommitOutcome::Duplicate);
        }
        let again = restored.commit(batch(5, vec![report(4, 4_000), report(5, 5_000)])).await;
        assert_eq!(again.unwrap(), CommitOutcome::Stored { reports: 1, targets: 0 });
        restored.close().await.unwrap();
        drop(restored);
        // Replayed at open, then emptied: a second open replays nothing, and loses nothing.
        assert_eq!(std::fs::metadata(image.join(journal::JOURNAL_FILE)).unwrap().len(), 0);
        let reopened = Store::open(StoreConfig::new(&image)).unwrap();
        assert_eq!(all_reports_of(&reopened).len(), 7);
        reopened.close().await.unwrap();
    }

    /// Retention's deletes go through the journal as well: replayed after a crash, the store
    /// does not bring back what retention removed, and its counters stay those of its rows.
    #[tokio::test]
    async fn retention_after_the_last_checkpoint_is_replayed_too() {
        let dir = tempfile::tempdir().unwrap();
        let (live, image) = (dir.path().join("live"), dir.path().join("image"));
        let store = Store::open(StoreConfig::new(&live)).unwrap();
        store.commit(batch(1, vec![report(1, 1_000), report(2, 1_001)])).await.unwrap();
        store.commit(batch(2, vec![report(3, 5_000)])).await.unwrap();
        store.close().await.unwrap();
        drop(store);
        copy_store(&live, &image);

        let store = Store::open(StoreConfig::new(&live)).unwrap();
        store.shared.write.lock().unwrap().journal.period = Duration::MAX;
        let retention = u64::try_from(store.shared.config.retention.as_millis()).unwrap();
        let stats = store.enforce_retention(UnixMillis(retention + 2_000)).unwrap();
        assert_eq!((stats.expired_reports, stats.expired_digests), (2, 1));
        let want = all_reports_of(&store);
        let want_stats = store.stats();
        assert_eq!(want.iter().map(|r| r.id[0]).collect::<Vec<_>>(), [3]);
        std::fs::copy(live.join(journal::JOURNAL_FILE), image.join(journal::JOURNAL_FILE)).unwrap();
        store.close().await.unwrap();
        drop(store);

        let restored = Store::open(StoreConfig::new(&image)).unwrap();
        assert_eq!(all_reports_of(&restored), want);
        assert_eq!(restored.stats(), want_stats);
        // The expired digest went with it: the first batch is new again.
        let again = restored.commit(batch(1, vec![report(1, 1_000)])).await.unwrap();
        assert_eq!(again, CommitOutcome::Stored { reports: 1, targets: 0 });
        restored.close().await.unwrap();
    }

    /// A fleet group is not journaled: were older records still in the journal when it is
    /// applied, a crash before its checkpoint would replay them over its writes (its `seq`
    /// and counters going back). So the journal is checkpointed before it.
    #[tokio::test]
    async fn the_journal_is_checkpointed_before_a_fleet_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        store.shared.write.lock().unwrap().journal.period = Duration::MAX;
        store.commit(batch(1, vec![report(1, 100)])).await.unwrap();
        assert_eq!(journal::pending_records(dir.path()).unwrap(), 1);
        {
            let shared = &store.shared;
            let mut state = shared.write.lock().unwrap();
            let fleet = shared.prepare(&batch(2, vec![report(2, 200)]), Some(b"entry".to_vec()));
            // The group's write, before the checkpoint `apply_group` does after it.
            let (outcomes, was_fleet) = shared.write_group(&mut state, vec![fleet]).unwrap();
            assert!(was_fleet && outcomes[0].is_ok());
            assert!(state.journal.is_empty(), "records older than the fleet group remain");
        }
        assert_eq!(journal::pending_records(dir.path()).unwrap(), 0);
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
        // What a kill between a group's outbox write and its rows write leaves: entries past
        // the last rows batch's marker. Their uploads were never stored nor acknowledged.
        outbox.insert(3u64.to_be_bytes(), &b"orphan"[..]).unwrap();
        outbox.insert(4u64.to_be_bytes(), &b"orphan too"[..]).unwrap();
        store.close().await.unwrap();
        drop((store, outbox));
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let outbox = store.open_tree(FLEET_OUTBOX_TREE).unwrap();
        assert_eq!(entries(&outbox), vec![(2, b"again".to_vec())], "orphans deleted at open");
        let third = Some(b"third".to_vec());
        store.commit_with_outbox(batch(3, vec![report(3, 100)]), third).await.0.unwrap();
        assert_eq!(entries(&outbox), vec![(2, b"again".to_vec()), (3, b"third".to_vec())]);
        // The publisher drains everything: the next key still goes on.
        outbox.remove(2u64.to_be_bytes()).unwrap();
        outbox.remove(3u64.to_be_bytes()).unwrap();
        store.close().await.unwrap();
        drop((store, outbox));
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let fourth = Some(b"fourth".to_vec());
        store.commit_with_outbox(batch(4, vec![report(4, 100)]), fourth).await.0.unwrap();
        let outbox = store.open_tree(FLEET_OUTBOX_TREE).unwrap();
        assert_eq!(entries(&outbox), vec![(4, b"fourth".to_vec())]);
        store.close().await.unwrap();
    }

    /// Envelope `i`, made and received at second `i` (plus 1 s) with `reports` reports of
    /// distinct ids.
    fn numbered(i: u32, reports: u8) -> IngestBatch {
        let t = 1_000_000 + u64::from(i) * 1000;
        let mut digest = [0xd1; 32];
        digest[..4].copy_from_slice(&i.to_be_bytes());
        let reports = (0..reports)
            .map(|j| {
                let mut r = report(0, t);
                r.id[..4].copy_from_slice(&i.to_be_bytes());
                r.id[4] = j;
                r.received_at = UnixMillis(t + 1000);
                r
            })
            .collect();
        let created_at = UnixMillis(t + 1000);
        let origin = Origin::Agent { key: [9; 32], seq: u64::from(i), created_at };
        IngestBatch { digest, origin, ..batch(0, reports) }
    }

    /// Bytes allocated on disk to the files under `dir` but the reserve: (all of them, those
    /// of sled's `blobs/` directory).
    fn store_files(dir: &Path) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let (mut all, mut blobs) = (0, 0);
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                let (a, _) = store_files(&entry.path());
                all += a;
                if entry.file_name() == "blobs" {
                    blobs += a;
                }
            } else if entry.file_name() != disk::RESERVE_FILE {
                all += meta.blocks() * 512;
            }
        }
        (all, blobs)
    }

    /// At its size bound the store's files stay level: groups of 200 envelopes of 10 reports
    /// (a run of 2,000 new ids each) through six times the bound, the files never over 4 times
    /// `max_bytes` plus 8 MiB (sled's segments, the journal) and nothing in sled's `blobs/`.
    /// A run written as one 32 KiB value made leaves of nine runs that sled wrote as blob
    /// files, which it deletes only when it reclaims the segment pointing at them: the files
    /// grew from 14 to 32 MB over 330 such rounds at a 4 MiB bound, a blob file at a time.
    #[tokio::test]
    async fn the_store_files_stay_level_at_the_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        let limit: u64 = 4 << 20;
        let store =
            Store::open(StoreConfig { max_bytes: limit, ..StoreConfig::new(dir.path()) }).unwrap();
        let (mut most, mut reports) = (0, 0u32);
        for round in 0..80u32 {
            let batches: Vec<IngestBatch> =
                (round * 200..round * 200 + 200).map(|i| numbered(i, 10)).collect();
            group(&store, &batches);
            reports += 2000;
            store
                .enforce_retention(UnixMillis(1_000_000 + u64::from(round + 1) * 200_000))
                .unwrap();
            let s = store.stats();
            assert!(s.bytes <= limit, "round {round}: {s:?}");
            let (all, blobs) = store_files(dir.path());
            assert_eq!(blobs, 0, "round {round}: sled wrote blob files");
            assert!(all <= 4 * limit + (8 << 20), "round {round}: {all} bytes of files");
            most = most.max(all);
        }
        // The bound was passed many times over.
        let per =
            report_bytes(codec::encode_report(&numbered(1, 1).reports[0], false).unwrap().len());
        assert!(u64::from(reports) * per > 6 * limit, "{reports} reports of {per} bytes");
        assert!(store.stats().reports < u64::from(reports / 4));
        eprintln!("store files at most {most} bytes at a bound of {limit}");
        assert_ids_once(&store);
        store.close().await.unwrap();
    }

    /// Reports at the ingest path's limits (a 64-byte service id, a 253-byte host, a 64-byte
    /// label, an ASN and a country) still make rows under `journal::MAX_ROWS_VALUE`, the
    /// groups' own rows and the rows merged at the checkpoint alike (every write is checked
    /// in debug builds; the tree is scanned here too).
    #[tokio::test]
    async fn rows_of_the_largest_reports_stay_under_the_value_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let host = ["a", "b", "c"].map(|l| l.repeat(63)).join(".") + "." + &"d".repeat(61);
        assert_eq!(host.len(), 253);
        let label = format!("quic.{}", "x".repeat(59));
        let mut batches: Vec<IngestBatch> = (0..40u32)
            .map(|i| {
                let mut b = numbered(i / 4, 50);
                b.digest[31] = i as u8;
                for (j, r) in b.reports.iter_mut().enumerate() {
                    r.id[5] = i as u8;
                    r.id[6] = j as u8;
                    r.host = host.clone();
                    r.service = "s".repeat(64);
                    r.error_type = ErrorType::from_label(&label).unwrap();
                    r.enrichment =
                        Enrichment { asn: Some(u32::MAX - 1), country: Country::parse("nz") };
                }
                b
            })
            .collect();
        // The longest key: a per-app drop total of an app id of 64 four-byte characters.
        batches[0].agent_drops = vec![(DropReason::QueueFull, 3)];
        batches[0].agent_app = "\u{1d11e}".repeat(64);
        let record = codec::encode_report(&batches[0].reports[0], false).unwrap().len();
        assert!(record > 400, "{record}");
        for chunk in batches.chunks(8) {
            group(&store, chunk);
        }
        assert_eq!(store.stats().reports, 2000);
        store.close().await.unwrap();
        drop(store);
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let most = store.shared.trees.rows.iter().map(|kv| kv.unwrap().1.len()).max().unwrap();
        assert!(most <= journal::MAX_ROWS_VALUE, "a value of {most} bytes");
        let key = store.shared.trees.rows.iter().map(|kv| kv.unwrap().0.len()).max().unwrap();
        assert!((270..=journal::MAX_ROWS_KEY).contains(&key), "a key of {key} bytes");
        assert_eq!(store.agent_drops_by_app().unwrap()[0].0, "\u{1d11e}".repeat(64));
        assert!(most >= ROW_BYTES, "rows were filled: {most} bytes at most");
        eprintln!("records of {record} bytes; rows values of {most}, keys of {key} bytes at most");
        assert_eq!(all_reports_of(&store).len(), 2000);
        store.close().await.unwrap();
    }

    /// Fleet mode's outbox: an entry of 30,000 bytes per commit (a body under
    /// `server.max_body_bytes`), removed 20 behind as the publisher does, with envelopes of 10
    /// reports at a `max_bytes` of 1 MiB, 6,000 commits: 180 MB of entries through the tree. A
    /// leaf of such entries is over sled's blob size, so sled writes it as a file under
    /// `blobs/`; what is there must stay what the live entries' leaves take (about 0.6 MB,
    /// up to 17 to a leaf), never a file left per rewrite, and the store's files must stay
    /// level, sled's garbage from the transient entries reclaimed (17-19 MB measured:
    /// `docs/performance.md`, sixteenth round).
    #[tokio::test]
    async fn the_fleet_outbox_leaves_no_blob_files_behind() {
        let dir = tempfile::tempdir().unwrap();
        let limit: u64 = 1 << 20;
        let store =
            Store::open(StoreConfig { max_bytes: limit, ..StoreConfig::new(dir.path()) }).unwrap();
        let outbox = store.open_tree(FLEET_OUTBOX_TREE).unwrap();
        let (mut most, mut most_blobs, mut live) = (0, 0, 0usize);
        for i in 0..6_000u32 {
            let entry = vec![(i % 251) as u8; 30_000];
            store.commit_with_outbox(numbered(i, 10), Some(entry)).await.0.unwrap();
            live += 1;
            while live > 20 {
                outbox.pop_min().unwrap().unwrap();
                live -= 1;
            }
            if i % 50 == 49 {
                store.enforce_retention(UnixMillis(1_000_000 + u64::from(i) * 1000)).unwrap();
                assert!(store.stats().bytes <= limit, "commit {i}: {:?}", store.stats());
                let (all, blobs) = store_files(dir.path());
                assert!(blobs <= 8 << 20, "commit {i}: {blobs} bytes under blobs/");
                assert!(all <= 40 << 20, "commit {i}: {all} bytes of files");
                most = most.max(all);
                most_blobs = most_blobs.max(blobs);
            }
        }
        eprintln!("files at most {most} bytes, blobs/ at most {most_blobs} at a bound of {limit}");
        assert_eq!(outbox.len(), 20);
        store.close().await.unwrap();
    }

    fn assert_ids_once(store: &Store) {
        let mut ids: Vec<[u8; 16]> = all_reports_of(store).iter().map(|r| r.id).collect();
        let n = ids.len();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), n, "a report stored twice");
    }

    /// Envelope digests count toward `max_bytes`, and the size pass forgets only those of
    /// envelopes none of whose reports is stored: a re-send of an envelope with a report left
    /// is still a `Duplicate`; one whose reports were all evicted may be stored again (what
    /// it stores is only what was evicted), so no report is ever stored twice.
    #[tokio::test]
    async fn digests_count_toward_max_bytes_and_go_only_with_their_data() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path());
        let store = Store::open(config.clone()).unwrap();
        // (An envelope without reports or counts is received "now" by the store's clock, after
        // every synthetic time here: `digests_stay_bounded_at_the_size_bound` has those.)
        let all: Vec<IngestBatch> =
            (0..300u32).map(|i| numbered(i, if i % 3 == 0 { 1 } else { 2 })).collect();
        for chunk in all.chunks(40) {
            assert!(group(&store, chunk).iter().all(|o| matches!(o, CommitOutcome::Stored { .. })));
        }
        let full = store.stats();
        assert_eq!((full.reports, full.digests), (500, 300));
        let report_bytes: u64 = all_reports_of(&store)
            .iter()
            .map(|r| report_bytes(codec::encode_report(r, false).unwrap().len()))
            .sum();
        assert_eq!(full.bytes, report_bytes + 300 * DIGEST_BYTES);
        store.close().await.unwrap();
        drop(store);

        let limit = full.bytes / 3;
        let store = Store::open(StoreConfig { max_bytes: limit, ..config }).unwrap();
        assert_eq!(store.stats().digests, 300, "the digest counter is kept across a reopen");
        // The first pass finds every digest's envelope with data left (the oldest envelope's
        // `until` is the next one's event time) and evicts reports.
        let first = store.enforce_retention(UnixMillis(1_400_000)).unwrap();
        assert_eq!(first.evicted_digests, 0, "{first:?}");
        assert!(first.evicted_reports > 0, "{first:?}");
        let middle = store.stats();
        assert!(middle.bytes <= limit, "{middle:?} over {limit}");
        // Over the bound again: the digests of envelopes evicted by the first pass go first.
        let more: Vec<IngestBatch> = (300..330u32).map(|i| numbered(i, 2)).collect();
        group(&store, &more);
        let added = store.stats().bytes - middle.bytes;
        let stats = store.enforce_retention(UnixMillis(1_400_000)).unwrap();
        let after = store.stats();
        assert!(after.bytes <= limit, "{after:?} over {limit}");
        assert!(stats.evicted_digests > 0, "{stats:?}");
        assert_eq!(after.digests, 330 - stats.evicted_digests);
        assert_eq!(store.shared.count_digests().unwrap(), (after.digests, 0));
        assert_eq!(middle.bytes + added - after.bytes, stats.freed_bytes);
        let all: Vec<IngestBatch> = all.into_iter().chain(more).collect();
        let oldest = all_reports_of(&store)[0].event_at.0;
        let mut again = 0;
        for b in &all {
            let kept = b.reports.iter().any(|r| r.event_at.0 >= oldest);
            let outcome = store.commit(b.clone()).await.unwrap();
            if kept {
                assert_eq!(outcome, CommitOutcome::Duplicate, "a re-send of a stored envelope");
            } else if outcome != CommitOutcome::Duplicate {
                again += 1;
            }
        }
        assert!(again > 0, "no digest of an evicted envelope was forgotten");
        assert_ids_once(&store);
        store.close().await.unwrap();
    }

    /// Held at a size bound round after round, the digests stay bounded (they grew with every
    /// envelope ever accepted, for the dedup horizon, when `max_bytes` did not count them),
    /// with reports or without.
    #[tokio::test]
    async fn digests_stay_bounded_at_the_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        let per =
            report_bytes(codec::encode_report(&numbered(1, 1).reports[0], false).unwrap().len());
        // About 60 envelopes of two reports.
        let limit = 60 * (2 * per + DIGEST_BYTES);
        let store =
            Store::open(StoreConfig { max_bytes: limit, ..StoreConfig::new(dir.path()) }).unwrap();
        let mut most = 0;
        for round in 0..40u32 {
            let reports = if round % 4 == 3 { 0 } else { 2 };
            let batches: Vec<IngestBatch> =
                (round * 50..round * 50 + 50).map(|i| numbered(i, reports)).collect();
            group(&store, &batches);
            let now = 1_000_000 + u64::from(round * 50 + 50) * 1000;
            store.enforce_retention(UnixMillis(now)).unwrap();
            let s = store.stats();
            assert!(s.bytes <= limit, "round {round}: {s:?} over {limit}");
            // The counter is what the rows hold.
            assert_eq!(store.shared.count_digests().unwrap(), (s.digests, 0), "round {round}");
            most = most.max(s.digests);
        }
        assert!(most * DIGEST_BYTES <= limit, "{most} digests");
        assert_ids_once(&store);
        store.close().await.unwrap();
    }

    /// A format 6 store (digest rows without an `until`, digests not counted) is marked 7 at
    /// open with its digests still not counted and not evicted by size (they expire by age, as
    /// they did): marking it does not push `bytes` over `max_bytes` and make the size pass
    /// evict reports. A format 6 row that new digests go into is rewritten as format 7, with
    /// the open's time as the old digests' `until`, and counted from then on, also across a
    /// crash that cut the checkpoint short (the count is taken from the rows at open while
    /// format 6 rows are left).
    #[tokio::test]
    async fn format_6_digest_rows_stay_uncounted_until_rewritten_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path());
        let store = Store::open(config.clone()).unwrap();
        let all: Vec<IngestBatch> = (0..100u32).map(|i| numbered(i, 1)).collect();
        group(&store, &all);
        let full = store.stats();
        let checkpoint = |store: &Store| {
            let mut state = store.shared.write.lock().unwrap();
            store.shared.checkpoint(&mut state).unwrap();
        };
        checkpoint(&store);
        // Made format 6: version 1 rows, no counter, no `until` bound, bytes without digests.
        let rows = &store.shared.trees.rows;
        for kv in rows.scan_prefix([P_ENVELOPE_ROWS]) {
            let (k, v) = kv.unwrap();
            let mut old = vec![DIGEST_ROW_V1];
            old.extend_from_slice(&v[DIGEST_ROW_HEAD..]);
            rows.insert(k, old).unwrap();
        }
        rows.remove(meta_key(META_DIGESTS)).unwrap();
        rows.remove(meta_key(META_V1_UNTIL)).unwrap();
        let v6 = full.bytes - 100 * DIGEST_BYTES;
        rows.insert(meta_key(META_BYTES), &v6.to_be_bytes()[..]).unwrap();
        store.shared.trees.meta.insert(META_FORMAT, &6u32.to_be_bytes()).unwrap();
        store.close().await.unwrap();
        drop(store);

        let before = crate::clock::now_millis().0;
        // Exactly at format 6's size: marking it must not put it over.
        let config = StoreConfig { max_bytes: v6, ..config };
        let store = Store::open(config.clone()).unwrap();
        let format = store.shared.trees.meta.get(META_FORMAT).unwrap().unwrap();
        assert_eq!(format.as_ref(), FORMAT_VERSION.to_be_bytes());
        let marked = store.stats();
        assert_eq!((marked.reports, marked.digests, marked.bytes), (100, 0, v6));
        let v1_until = store.shared.v1_until.load(std::sync::atomic::Ordering::Relaxed);
        assert!((before..u64::MAX).contains(&v1_until));
        let stats = store.enforce_retention(UnixMillis(2_000_000)).unwrap();
        assert_eq!((stats.evicted_reports, stats.evicted_digests), (0, 0), "{stats:?}");
        for b in &all {
            assert_eq!(store.commit(b.clone()).await.unwrap(), CommitOutcome::Duplicate);
        }
        // A new envelope made in the second of envelope 7 goes into its format 6 row.
        let mut late = numbered(7, 1);
        late.digest[31] ^= 1;
        late.reports[0].id[15] = 1;
        assert!(matches!(store.commit(late.clone()).await.unwrap(), CommitOutcome::Stored { .. }));
        assert_eq!(store.stats().digests, 1);
        checkpoint(&store);
        assert_eq!(store.stats().digests, 2, "the rewritten row's old digest is counted now");
        assert_eq!(store.shared.count_digests().unwrap(), (2, 99));
        let bucket = bucket_of(1_000_000 + 7 * 1000 + 1000);
        let (_, v) = store
            .shared
            .trees
            .rows
            .range(row_bound(P_ENVELOPE_ROWS, bucket)..row_bound(P_ENVELOPE_ROWS, bucket + 1))
            .next()
            .unwrap()
            .unwrap();
        assert_eq!(digest_row(&v).unwrap().0, Some(v1_until));
        // A crash after that checkpoint's writes but before the count reached the disk: the
        // count comes from the rows at the next open.
        let rows = &store.shared.trees.rows;
        rows.insert(meta_key(META_DIGESTS), &1u64.to_be_bytes()[..]).unwrap();
        let bytes = store.stats().bytes - DIGEST_BYTES;
        rows.insert(meta_key(META_BYTES), &bytes.to_be_bytes()[..]).unwrap();
        store.close().await.unwrap();
        drop(store);
        let store = Store::open(config.clone()).unwrap();
        assert_eq!(store.stats().digests, 2);
        assert!(store.shared.read_meta(META_V1_UNTIL).unwrap().is_some(), "format 6 rows left");
        for b in all.iter().chain([&late]) {
            assert_eq!(store.commit(b.clone()).await.unwrap(), CommitOutcome::Duplicate);
        }
        // Past the dedup horizon every row goes, counted or not; then the transition is over.
        let stats = store.enforce_retention(UnixMillis(u64::MAX / 2)).unwrap();
        assert_eq!(stats.expired_digests, 101);
        let left = store.stats();
        assert_eq!((left.reports, left.digests, left.bytes), (0, 0, 0));
        store.close().await.unwrap();
        drop(store);
        let store = Store::open(config).unwrap();
        assert_eq!(store.shared.read_meta(META_V1_UNTIL).unwrap(), None);
        assert_eq!(store.shared.v1_until.load(std::sync::atomic::Ordering::Relaxed), u64::MAX);
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
        store.flush().await.unwrap();
        let (key, _) = store.shared.trees.rows.scan_prefix([P_REPORTS]).next().unwrap().unwrap();
        store.shared.trees.rows.insert(&key, &[3, 0xff][..]).unwrap();
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
            store.shared.trees.rows.remove(meta_key(key)).unwrap();
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
