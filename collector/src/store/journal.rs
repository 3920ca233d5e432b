//! The store's write-ahead journal: what makes a group commit durable.
//!
//! sled 0.34 makes a write durable with a flush of its log, and every `apply_batch` rolls its
//! I/O buffer twice (before and after the batch's manifest), so each group commit cost two or
//! three log writes handed to sled's I/O threads, a flush, `sync_file_range` and our
//! `fdatasync` of its files: about half of a NEL upload's CPU (`docs/performance.md`). With the
//! journal, a group is instead:
//!
//! 1. one record appended to `vantage-journal` in the store directory (the group's writes,
//!    keys and values, with a CRC) and one `fdatasync` of that file ([`SyncMode::Data`]);
//! 2. then applied to sled key by key (no batch, so no log roll), in memory: sled writes its
//!    log when a buffer fills and on its own periodic flush; all but its report and count
//!    rows, which are *deferred*: held in memory and written merged at the checkpoint
//!    (`unflushed.rs`), and at open replayed into memory, then written merged the same way;
//! 3. then answered.
//!
//! Every [`CHECKPOINT_BYTES`] of records or [`CHECKPOINT_PERIOD`], whichever comes first, the
//! writer *checkpoints*: sled's flush and the `fdatasync` of its files, after which everything
//! applied is on stable storage in sled and the journal starts over (from offset 0, with the
//! next epoch number in its records, so no truncation and no metadata write per checkpoint).
//!
//! # Recovery
//!
//! At open, the records of the file's first epoch are read up to the first one that is torn
//! (short, or its CRC does not match: the group being written when the process died, never
//! acknowledged), applied to sled in order, sled is flushed and synced, and the file is
//! truncated. Every record holds absolute values (a counter's new total, a chunk's new ids),
//! never increments, so applying the records since the last checkpoint over whatever prefix
//! of them sled had already persisted gives exactly the state after the last record: a key
//! no record touched is as the checkpoint left it, and any other ends with the value of the
//! last record that wrote it. Records after a checkpoint start at offset 0 with a higher
//! epoch, so the stale records behind them (already checkpointed) are never read.
//!
//! Every write to the `rows` tree goes through the journal (groups, retention steps, digest
//! expiry), in the order the store's write lock gives them, so that order is what is
//! replayed. A group with fleet outbox entries is the exception: it is written to sled as one
//! atomic batch with its outbox entries and checkpointed at once (sled's flush and sync, as
//! before the journal), because the publisher removes outbox entries once published and a
//! replay must not bring them back. The journal is checkpointed before such a group too, so
//! no record older than the group can be replayed over its writes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sled::IVec;

use super::disk::SyncMode;

/// Name of the journal file in the store directory.
pub const JOURNAL_FILE: &str = "vantage-journal";
/// The writer checkpoints once the journal holds this many bytes of records.
pub const CHECKPOINT_BYTES: u64 = 1024 * 1024;
/// ... or once this long has passed since the last checkpoint (bounds what a restart replays).
pub const CHECKPOINT_PERIOD: Duration = Duration::from_secs(2);

/// The largest value written to the `rows` tree. sled 0.34 splits a leaf only by its number
/// of keys (past 16; a merge can leave 19), never by size, and writes any page whose
/// serialized size is over a quarter of a segment (512 KiB / 4, less a header) to a file of
/// its own under `blobs/`, which it deletes only when it reclaims the segment pointing at it,
/// possibly never: with larger values the store's files grew without a bound at `max_bytes`
/// (`docs/performance.md`, fifteenth round). So every key family chunks its values to about
/// 4 KiB (rows `ROW_BYTES` plus one entry, id run pieces of `ids::RUN_PIECE`, digest rows),
/// and every write to the tree is checked against this bound in debug builds (the tests).
pub(super) const MAX_ROWS_VALUE: usize = 6 * 1024;
/// Keys of the `rows` tree are at most this long: a report row key is 21 bytes; the longest
/// is a per-app drop total's, `M` ‖ `drops_app/` ‖ an app id of 64 characters (256 bytes of
/// UTF-8 at most) ‖ 0 ‖ u16.
pub(super) const MAX_ROWS_KEY: usize = 512;
const _: () = assert!(19 * (MAX_ROWS_VALUE + MAX_ROWS_KEY + 16) < 512 * 1024 / 4 - 32);

/// Checks one write to the `rows` tree against [`MAX_ROWS_VALUE`] (debug builds).
#[track_caller]
pub(super) fn debug_check_rows_value(key: &[u8], value: &[u8]) {
    debug_assert!(
        value.len() <= MAX_ROWS_VALUE && key.len() <= MAX_ROWS_KEY,
        "a rows value of {} bytes under a key of {} bytes starting {:?}: over {MAX_ROWS_VALUE} \
         and {MAX_ROWS_KEY}, sled would write its leaf as a blob file",
        value.len(),
        key.len(),
        key.first().map(|b| *b as char),
    );
}

/// Record header: payload length (u32 LE), CRC-32 of epoch and payload (u32 LE), epoch (u64 LE).
const HEADER: usize = 16;
const OP_REMOVE: u8 = 0;
const OP_INSERT: u8 = 1;
/// A report or count row of a group commit: replayed into the store's unflushed rows
/// (`unflushed.rs`), not into sled.
const OP_DEFER: u8 = 2;

/// Writes to one tree, applied in order: what `sled::Batch` is, but readable, so it can be
/// journaled.
#[derive(Default, Debug)]
pub(super) struct Batch {
    ops: Vec<(IVec, Option<IVec>)>,
    /// Row inserts that [`Batch::apply_each`] leaves out: the writer holds them in memory
    /// until the next checkpoint (`unflushed.rs`). Their keys are never among `ops`.
    deferred: Vec<(IVec, IVec)>,
}

impl Batch {
    #[track_caller]
    pub(super) fn insert<K: Into<IVec>, V: Into<IVec>>(&mut self, key: K, value: V) {
        let (key, value) = (key.into(), value.into());
        debug_check_rows_value(&key, &value);
        self.ops.push((key, Some(value)));
    }

    pub(super) fn remove<K: Into<IVec>>(&mut self, key: K) {
        self.ops.push((key.into(), None));
    }

    /// A row insert held back from sled until the checkpoint (see `deferred`).
    #[track_caller]
    pub(super) fn insert_deferred<K: Into<IVec>, V: Into<IVec>>(&mut self, key: K, value: V) {
        let (key, value) = (key.into(), value.into());
        debug_check_rows_value(&key, &value);
        self.deferred.push((key, value));
    }

    /// The row inserts held back from sled.
    pub(super) fn deferred(&self) -> &[(IVec, IVec)] {
        &self.deferred
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.deferred.is_empty()
    }

    /// The same writes as one atomic sled batch, deferred rows included.
    pub(super) fn to_sled(&self) -> sled::Batch {
        let mut batch = sled::Batch::default();
        for (k, v) in &self.ops {
            match v {
                Some(v) => batch.insert(k.clone(), v.clone()),
                None => batch.remove(k.clone()),
            }
        }
        for (k, v) in &self.deferred {
            batch.insert(k.clone(), v.clone());
        }
        batch
    }

    /// Applies the writes one by one (not atomic: the journal record is what makes the batch
    /// all-or-nothing across a crash), all but the deferred rows.
    pub(super) fn apply_each(&self, tree: &sled::Tree) -> sled::Result<()> {
        for (k, v) in &self.ops {
            match v {
                Some(v) => {
                    tree.insert(k.clone(), v.clone())?;
                }
                None => {
                    tree.remove(k)?;
                }
            }
        }
        Ok(())
    }

    fn encode(&self, epoch: u64, out: &mut Vec<u8>) {
        out.clear();
        out.resize(HEADER, 0);
        out.extend_from_slice(&((self.ops.len() + self.deferred.len()) as u32).to_le_bytes());
        let deferred = self.deferred.iter().map(|(k, v)| (OP_DEFER, k, Some(v)));
        for (op, k, v) in self
            .ops
            .iter()
            .map(|(k, v)| (if v.is_some() { OP_INSERT } else { OP_REMOVE }, k, v.as_ref()))
            .chain(deferred)
        {
            out.push(op);
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            if let Some(v) = v {
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                out.extend_from_slice(v);
            }
        }
        let len = (out.len() - HEADER) as u32;
        out[8..16].copy_from_slice(&epoch.to_le_bytes());
        let crc = crc32fast::hash(&out[8..]);
        out[0..4].copy_from_slice(&len.to_le_bytes());
        out[4..8].copy_from_slice(&crc.to_le_bytes());
    }

    fn decode(mut payload: &[u8]) -> Option<Batch> {
        fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, rest) = buf.split_at_checked(n)?;
            *buf = rest;
            Some(head)
        }
        fn take_u32(buf: &mut &[u8]) -> Option<usize> {
            Some(u32::from_le_bytes(take(buf, 4)?.try_into().ok()?) as usize)
        }
        let n = take_u32(&mut payload)?;
        let mut batch =
            Batch { ops: Vec::with_capacity(n.min(payload.len())), deferred: Vec::new() };
        for _ in 0..n {
            let op = *take(&mut payload, 1)?.first()?;
            let klen = take_u32(&mut payload)?;
            let key = IVec::from(take(&mut payload, klen)?);
            match op {
                OP_INSERT | OP_DEFER => {
                    let vlen = take_u32(&mut payload)?;
                    let value = IVec::from(take(&mut payload, vlen)?);
                    if op == OP_DEFER {
                        batch.deferred.push((key, value));
                    } else {
                        batch.ops.push((key, Some(value)));
                    }
                }
                OP_REMOVE => batch.ops.push((key, None)),
                _ => return None,
            }
        }
        payload.is_empty().then_some(batch)
    }
}

/// The open journal file; owned by whoever holds the store's write lock.
pub(super) struct Journal {
    path: PathBuf,
    file: File,
    mode: SyncMode,
    epoch: u64,
    /// Where the next record goes (the bytes of this epoch so far).
    pos: u64,
    last_checkpoint: Instant,
    buf: Vec<u8>,
    /// [`CHECKPOINT_PERIOD`], unless a test holds checkpoints back.
    pub(super) period: Duration,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("path", &self.path).field("pos", &self.pos).finish()
    }
}

/// What [`Journal::open`] found: the records to replay and their bytes. (Whatever follows
/// them is a torn record or older epochs' records behind them: the two cannot be told apart,
/// and neither is replayed.)
pub(super) struct Recovered {
    pub(super) batches: Vec<Batch>,
    pub(super) bytes: u64,
}

/// How many records the next open of the store in `dir` will replay (0 without a journal):
/// for tests and operators looking at a store that was not closed.
pub fn pending_records(dir: &Path) -> std::io::Result<usize> {
    match std::fs::read(dir.join(JOURNAL_FILE)) {
        Ok(data) => Ok(read_records(&data).0.len()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e),
    }
}

/// The records of the first epoch in `data`, up to the first torn or foreign one; their bytes
/// and epoch.
fn read_records(data: &[u8]) -> (Vec<Batch>, usize, Option<u64>) {
    let mut batches = Vec::new();
    let mut at = 0;
    let mut first_epoch = None;
    while at + HEADER <= data.len() {
        let len = u32::from_le_bytes(data[at..at + 4].try_into().unwrap_or_default()) as usize;
        let crc = u32::from_le_bytes(data[at + 4..at + 8].try_into().unwrap_or_default());
        let epoch = u64::from_le_bytes(data[at + 8..at + 16].try_into().unwrap_or_default());
        if first_epoch.is_some_and(|e| e != epoch) {
            // A record of an earlier epoch, already checkpointed.
            break;
        }
        let Some(body) = data.get(at + 8..at + HEADER + len) else { break };
        let batch = (crc32fast::hash(body) == crc).then(|| Batch::decode(&body[8..])).flatten();
        let Some(batch) = batch else { break };
        first_epoch = Some(epoch);
        batches.push(batch);
        at += HEADER + len;
    }
    (batches, at, first_epoch)
}

impl Journal {
    /// Opens (or creates) the journal in `dir` and reads the records to replay. The caller
    /// applies them, checkpoints, then calls [`Journal::truncate`].
    pub(super) fn open(dir: &Path, mode: SyncMode) -> std::io::Result<(Journal, Recovered)> {
        let path = dir.join(JOURNAL_FILE);
        let file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let data = std::fs::read(&path)?;
        let (batches, bytes, first_epoch) = read_records(&data);
        let recovered = Recovered { batches, bytes: bytes as u64 };
        let journal = Journal {
            path,
            file,
            mode,
            epoch: first_epoch.map_or(1, |e| e.wrapping_add(1)),
            pos: 0,
            last_checkpoint: Instant::now(),
            buf: Vec::new(),
            period: CHECKPOINT_PERIOD,
        };
        Ok((journal, recovered))
    }

    /// Empties the file (after the records read at open were applied and checkpointed).
    pub(super) fn truncate(&mut self) -> std::io::Result<()> {
        self.file.set_len(0)?;
        self.file.sync_all()?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        self.epoch = 1;
        self.pos = 0;
        self.last_checkpoint = Instant::now();
        Ok(())
    }

    /// Appends `batch` as one record and waits for it to reach stable storage
    /// ([`SyncMode::Data`]). On an error nothing after the previous record counts: the next
    /// record is written at the same place.
    pub(super) fn append(&mut self, batch: &Batch) -> std::io::Result<()> {
        batch.encode(self.epoch, &mut self.buf);
        self.file.write_all_at(&self.buf, self.pos)?;
        if self.mode == SyncMode::Data {
            self.file.sync_data()?;
        }
        self.pos += self.buf.len() as u64;
        if self.buf.capacity() > 4 * 1024 * 1024 {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Whether no record was written since the last checkpoint.
    pub(super) fn is_empty(&self) -> bool {
        self.pos == 0
    }

    /// Whether the writer should checkpoint now.
    pub(super) fn checkpoint_due(&self) -> bool {
        self.pos >= CHECKPOINT_BYTES
            || (self.pos > 0 && self.last_checkpoint.elapsed() >= self.period)
    }

    /// After a checkpoint (everything applied is on stable storage in sled): the records so
    /// far are not needed; the next one starts a new epoch at offset 0.
    pub(super) fn checkpointed(&mut self) {
        // Not needed for correctness (replaying checkpointed records is harmless, see
        // "Recovery"), so neither synced nor fatal: the next open has nothing to replay.
        if self.pos > 0 {
            let _ = self.file.write_all_at(&[0; HEADER], 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        self.pos = 0;
        self.last_checkpoint = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: u8) -> Batch {
        let mut b = Batch::default();
        b.insert(vec![b'k', n], vec![n; n as usize]);
        b.remove(vec![b'r', n]);
        b.insert_deferred(vec![b'R', n], vec![n; 3]);
        b
    }

    /// A batch's writes, each with whether it is deferred.
    fn keys(b: &Batch) -> Vec<(Vec<u8>, Option<Vec<u8>>, bool)> {
        let ops = b.ops.iter().map(|(k, v)| (k.to_vec(), v.as_ref().map(|v| v.to_vec()), false));
        let deferred = b.deferred.iter().map(|(k, v)| (k.to_vec(), Some(v.to_vec()), true));
        ops.chain(deferred).collect()
    }

    #[test]
    fn records_are_read_back_up_to_a_torn_one_and_not_past_an_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, r) = Journal::open(dir.path(), SyncMode::Data).unwrap();
        assert!(r.batches.is_empty());
        j.truncate().unwrap();
        for n in 1..=3 {
            j.append(&batch(n)).unwrap();
        }
        drop(j);
        let (mut j, r) = Journal::open(dir.path(), SyncMode::Data).unwrap();
        assert_eq!(
            r.batches.iter().map(keys).collect::<Vec<_>>(),
            (1..=3).map(|n| keys(&batch(n))).collect::<Vec<_>>()
        );
        assert_eq!(r.bytes, std::fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap().len());

        // A checkpoint, then one record of the next epoch over the first: only it is read.
        j.checkpointed();
        j.append(&batch(9)).unwrap();
        drop(j);
        let (_, r) = Journal::open(dir.path(), SyncMode::Data).unwrap();
        assert_eq!(r.batches.iter().map(keys).collect::<Vec<_>>(), vec![keys(&batch(9))]);

        // A torn last record (cut short, or a flipped byte) ends the replay before it.
        let path = dir.path().join(JOURNAL_FILE);
        let (mut j, _) = Journal::open(dir.path(), SyncMode::Data).unwrap();
        j.truncate().unwrap();
        j.append(&batch(1)).unwrap();
        j.append(&batch(2)).unwrap();
        let full = std::fs::read(&path).unwrap();
        std::fs::write(&path, &full[..full.len() - 1]).unwrap();
        let (_, r) = Journal::open(dir.path(), SyncMode::Data).unwrap();
        assert_eq!(r.batches.len(), 1);
        let mut flipped = full.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let (_, r) = Journal::open(dir.path(), SyncMode::Data).unwrap();
        assert_eq!(r.batches.len(), 1);
    }

    #[test]
    fn a_checkpoint_is_due_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path(), SyncMode::DangerNone).unwrap();
        j.truncate().unwrap();
        assert!(!j.checkpoint_due());
        let mut big = Batch::default();
        for n in 0..CHECKPOINT_BYTES / MAX_ROWS_VALUE as u64 + 1 {
            big.insert(n.to_be_bytes().to_vec(), vec![0; MAX_ROWS_VALUE]);
        }
        j.append(&big).unwrap();
        assert!(j.checkpoint_due());
        j.checkpointed();
        assert!(!j.checkpoint_due());
    }

    /// A value over the bound is caught where it is put into a batch, in debug builds, with
    /// the key family named; one at the bound is taken.
    #[test]
    #[cfg(debug_assertions)]
    fn a_rows_value_over_the_bound_is_caught_in_debug_builds() {
        let mut b = Batch::default();
        b.insert(vec![b'R'; 21], vec![0; MAX_ROWS_VALUE]);
        b.insert_deferred(vec![b'R'; 21], vec![0; MAX_ROWS_VALUE]);
        for deferred in [false, true] {
            let caught = std::panic::catch_unwind(move || {
                let mut b = Batch::default();
                if deferred {
                    b.insert_deferred(vec![b'P'; 13], vec![0; MAX_ROWS_VALUE + 1]);
                } else {
                    b.insert(vec![b'P'; 13], vec![0; MAX_ROWS_VALUE + 1]);
                }
            })
            .unwrap_err();
            let message = caught.downcast_ref::<String>().unwrap();
            assert!(message.contains("a rows value of 6145 bytes"), "{message}");
            assert!(message.contains("starting Some('P')"), "{message}");
        }
    }
}
