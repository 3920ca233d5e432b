//! The durable envelope buffer of the native agent: one append-only log file.
//!
//! `<data_dir>/envelopes.log` starts with the 8-byte magic `VNTGLOG1`, then records:
//!
//! ```text
//!  kind u8 | payload length u32 LE | payload | check: SHA-256(kind, length, payload)[..8]
//!
//!  1 put      seq u64, sealed at u64, failures u64, n u16, n × (reason u16, count u64) (the
//!             drop counts its batch carries), the sealed envelope (encrypted to the collector
//!             key)                                         fsync before put() returns
//!  2 remove   seq u64, outcome u16 (0 delivered, else the drop reason's wire code)
//!                                                          fsync before remove_as() returns
//!  3 sending  seq u64: an attempt to send starts             fsync before the bytes leave
//!  4 answered seq u64: a collector answered "not accepted"   (no fsync: losing it is safe)
//!  5 state    last seq u64, then (reason u16, count u64)*: written by compaction, after the
//!             live puts, so it replaces what the dropped records said
//! ```
//!
//! Memory holds an index (sequence number → offset, length, seal time, failures); `get` reads
//! the bytes back from the file. Nothing runs in the background: the store does work only
//! when it is called, so an idle agent makes no wake-ups (sled, which this replaced, woke its
//! seven I/O threads every second).
//!
//! ## Exact outcomes across crashes
//! Every record is written whole and fsynced before the call returns, so at any instant of a
//! kill the log says one of: not stored; stored; stored and maybe sent; removed with its
//! outcome. Drop outcomes are kept as *unsent drops* until the next put (whose batch carries
//! every drop counted before it; an envelope dropped in turn gives back the counts it carried,
//! [`EnvelopeStore::carried_drops`]); after a restart the core takes them back
//! ([`EnvelopeStore::unsent_drops`]) and sends them in its next batch, once. An envelope with
//! a `sending` record and no outcome may have been delivered just before the process died: it
//! is sent again (a collector answers a duplicate with `202`), never evicted as dropped
//! ([`EnvelopeStore::maybe_delivered`]).
//!
//! ## Damage
//! Reading stops at the first record that is short or whose check fails. A torn last record
//! (the process died mid-write) is cut off: a torn put's failures (from its header, when that
//! much was written; else 1) become unsent `store_error` drops. Damage followed by more data
//! loses the rest of the file: counted `store_error` (1, the count is unknown) and the next
//! sequence number jumps by [`SEQ_JUMP`], since a lost record may have used one that was
//! sent. A file without the magic is [`StoreError::Corrupt`]: the runtime deletes it and
//! starts a fresh one.
//!
//! ## Sequence numbers
//! The highest sequence number ever stored is exact: every put record has its own, and
//! compaction writes it in the state record. A restarted agent continues at the next one, with
//! no gap (a gap appears only after damage, see above).
//!
//! ## Compaction
//! When dead records outweigh live ones (and the file is over 64 KiB), the live puts, the
//! `sending` marks and a state record are written to `envelopes.log.tmp`, fsynced, renamed over
//! the log, and the folder is fsynced. A crash at any point leaves the old or the new log.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::buffer::{EnvelopeMeta, EnvelopeStore, Removal, StoreError, StoredEnvelope};
use crate::drops::{DropCounts, DropReason};
use crate::report::UnixMillis;

const MAGIC: &[u8; 8] = b"VNTGLOG1";
const HEAD: usize = 5;
const CHECK: usize = 8;
const PUT: u8 = 1;
const REMOVE: u8 = 2;
const SENDING: u8 = 3;
const ANSWERED: u8 = 4;
const STATE: u8 = 5;
/// A put's fixed fields before the envelope bytes.
const PUT_FIELDS: usize = 24;
/// Records longer than this are damage, not data (envelopes are at most 1 MiB).
const MAX_RECORD: usize = 64 * 1024 * 1024;
/// Compaction waits until the file is at least this big.
const COMPACT_MIN: u64 = 64 * 1024;
/// How far the next sequence number jumps after damage lost records of unknown numbers.
pub const SEQ_JUMP: u64 = 10_000;

/// The log's file name inside the data dir.
pub const LOG_FILE: &str = "envelopes.log";

#[derive(Clone, Debug)]
struct Entry {
    /// Offset of the envelope bytes in the file.
    at: u64,
    len: u64,
    created_at: UnixMillis,
    failures: u64,
    /// The drop counts its batch carries.
    carried: DropCounts,
}

/// What [`LogStore::open`] found wrong and repaired.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repair {
    /// Bytes cut off the end of the log.
    pub discarded_bytes: u64,
    /// Failures counted as [`DropReason::StoreError`] for it.
    pub lost_failures: u64,
    /// True when the damage was not just a torn last record (the sequence jumped).
    pub mid_file: bool,
}

/// An [`EnvelopeStore`] in one append-only log file. See the [module docs](self).
pub struct LogStore {
    path: PathBuf,
    file: File,
    index: BTreeMap<u64, Entry>,
    bytes: u64,
    last_seq: Option<u64>,
    unsent: DropCounts,
    /// Marked sending, with no answer or outcome yet.
    sending: BTreeSet<u64>,
    /// Of those, the ones marked by an earlier process.
    maybe: BTreeSet<u64>,
    file_len: u64,
    repair: Option<Repair>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore")
            .field("path", &self.path)
            .field("envelopes", &self.index.len())
            .field("bytes", &self.bytes)
            .field("file_len", &self.file_len)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

fn io(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

fn check(kind: u8, payload: &[u8]) -> [u8; CHECK] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&[kind]);
    ctx.update(&(payload.len() as u32).to_le_bytes());
    ctx.update(payload);
    let mut out = [0u8; CHECK];
    out.copy_from_slice(&ctx.finish().as_ref()[..CHECK]);
    out
}

fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut r = Vec::with_capacity(HEAD + payload.len() + CHECK);
    r.push(kind);
    r.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    r.extend_from_slice(payload);
    r.extend_from_slice(&check(kind, payload));
    r
}

fn word(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// A put record, and where the envelope bytes start in its payload.
fn put_record(e: &StoredEnvelope, carried: &DropCounts) -> (Vec<u8>, usize) {
    let mut p = Vec::with_capacity(PUT_FIELDS + 2 + e.bytes.len());
    p.extend_from_slice(&e.seq.to_le_bytes());
    p.extend_from_slice(&e.created_at.0.to_le_bytes());
    p.extend_from_slice(&e.failures.to_le_bytes());
    let pairs: Vec<(DropReason, u64)> = carried.iter().collect();
    p.extend_from_slice(&(pairs.len() as u16).to_le_bytes());
    for (reason, n) in pairs {
        p.extend_from_slice(&reason.code().to_le_bytes());
        p.extend_from_slice(&n.to_le_bytes());
    }
    let start = p.len();
    p.extend_from_slice(&e.bytes);
    (record(PUT, &p), start)
}

/// Reads `(reason u16, count u64)` pairs.
fn read_pairs(b: &[u8]) -> DropCounts {
    let mut counts = DropCounts::new();
    for pair in b.chunks_exact(10) {
        counts.add(DropReason::from_code(u16::from_le_bytes([pair[0], pair[1]])), word(pair, 2));
    }
    counts
}

fn state_record(last_seq: Option<u64>, unsent: &DropCounts) -> Vec<u8> {
    let mut p = last_seq.unwrap_or(0).to_le_bytes().to_vec();
    for (reason, n) in unsent.iter() {
        p.extend_from_slice(&reason.code().to_le_bytes());
        p.extend_from_slice(&n.to_le_bytes());
    }
    record(STATE, &p)
}

/// Fsyncs a folder, so a rename or a new file in it is durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io("syncing the folder", dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

impl LogStore {
    /// Opens (or creates) the log `path`, reading it once to build the index and cutting off
    /// a damaged tail ([`LogStore::repair`] says what was cut). A file that is not a log is
    /// [`StoreError::Corrupt`].
    pub fn open(path: &Path) -> Result<LogStore, StoreError> {
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| io("opening", path, e))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(|e| io("reading", path, e))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        if data.len() < MAGIC.len() {
            if !MAGIC.starts_with(&data) {
                return Err(StoreError::Corrupt(format!(
                    "{} is not an envelope log",
                    path.display()
                )));
            }
            // New, or torn while being created: start it (again).
            file.set_len(0).map_err(|e| io("truncating", path, e))?;
            file.write_all(MAGIC)
                .and_then(|()| file.sync_all())
                .map_err(|e| io("writing", path, e))?;
            sync_dir(dir)?;
            data = MAGIC.to_vec();
        } else if &data[..MAGIC.len()] != MAGIC {
            return Err(StoreError::Corrupt(format!("{} is not an envelope log", path.display())));
        }
        let mut store = LogStore {
            path: path.to_path_buf(),
            file,
            index: BTreeMap::new(),
            bytes: 0,
            last_seq: None,
            unsent: DropCounts::new(),
            sending: BTreeSet::new(),
            maybe: BTreeSet::new(),
            file_len: data.len() as u64,
            repair: None,
        };
        let end = store.replay(&data);
        if end < data.len() {
            store.cut(&data, end)?;
        }
        store.maybe = store.sending.clone();
        Ok(store)
    }

    /// Applies the records of `data` to the index; returns where the readable part ends.
    fn replay(&mut self, data: &[u8]) -> usize {
        let mut at = MAGIC.len();
        while at < data.len() {
            let Some(head) = data.get(at..at + HEAD) else { break };
            let kind = head[0];
            let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
            if len > MAX_RECORD {
                break;
            }
            let body = at + HEAD;
            let Some(payload) = data.get(body..body + len) else { break };
            let Some(sum) = data.get(body + len..body + len + CHECK) else { break };
            if sum != check(kind, payload) || !self.apply(kind, payload, body as u64) {
                break;
            }
            at = body + len + CHECK;
        }
        at
    }

    /// Applies one checked record; false when it makes no sense (damage).
    fn apply(&mut self, kind: u8, p: &[u8], body: u64) -> bool {
        match kind {
            PUT if p.len() >= PUT_FIELDS + 2 => {
                let seq = word(p, 0);
                let n = u16::from_le_bytes([p[PUT_FIELDS], p[PUT_FIELDS + 1]]) as usize;
                let start = PUT_FIELDS + 2 + 10 * n;
                if p.len() < start {
                    return false;
                }
                let entry = Entry {
                    at: body + start as u64,
                    len: (p.len() - start) as u64,
                    created_at: UnixMillis(word(p, 8)),
                    failures: word(p, 16),
                    carried: read_pairs(&p[PUT_FIELDS + 2..start]),
                };
                self.insert(seq, entry);
                // Its batch carried every drop counted before it.
                self.unsent = DropCounts::new();
                true
            }
            REMOVE if p.len() == 10 => {
                let seq = word(p, 0);
                let code = u16::from_le_bytes([p[8], p[9]]);
                if let Some(e) = self.take(seq) {
                    if code != 0 {
                        self.unsent.add(DropReason::from_code(code), e.failures);
                        self.unsent.merge(&e.carried);
                    }
                }
                true
            }
            SENDING | ANSWERED if p.len() == 8 => {
                let seq = word(p, 0);
                if kind == SENDING && self.index.contains_key(&seq) {
                    self.sending.insert(seq);
                } else {
                    self.sending.remove(&seq);
                }
                true
            }
            STATE if p.len() >= 8 && (p.len() - 8) % 10 == 0 => {
                self.raise_seq(word(p, 0));
                self.unsent = read_pairs(&p[8..]);
                true
            }
            _ => false,
        }
    }

    /// Cuts the log at `end` (damage from there on) and counts what was lost.
    fn cut(&mut self, data: &[u8], end: usize) -> Result<(), StoreError> {
        let rest = &data[end..];
        // A torn last record: its declared length runs past the end of the file.
        let declared = rest
            .get(..HEAD)
            .map(|h| u32::from_le_bytes([h[1], h[2], h[3], h[4]]) as usize + HEAD + CHECK);
        let torn_last = declared.is_none_or(|n| n >= rest.len());
        let lost = match rest.first() {
            Some(&PUT) if torn_last && rest.len() >= HEAD + PUT_FIELDS => {
                // Untrusted (not checked), but only a count: at least 1, at most what fits in
                // a batch of coalesced reports.
                word(rest, HEAD + 16).clamp(1, u64::from(u32::MAX))
            }
            Some(&PUT) => 1,
            Some(_) if torn_last => 0,
            _ => 1,
        };
        if lost > 0 {
            self.unsent.add(DropReason::StoreError, lost);
        }
        if !torn_last {
            let jumped = self.last_seq.unwrap_or(0).saturating_add(SEQ_JUMP);
            self.raise_seq(jumped);
        }
        self.file.set_len(end as u64).map_err(|e| io("truncating", &self.path, e))?;
        self.file_len = end as u64;
        // The drops and the jump must survive the next crash too.
        let state = state_record(self.last_seq, &self.unsent);
        self.append(&state, true)?;
        self.repair = Some(Repair {
            discarded_bytes: rest.len() as u64,
            lost_failures: lost,
            mid_file: !torn_last,
        });
        Ok(())
    }

    fn raise_seq(&mut self, seq: u64) {
        self.last_seq = Some(self.last_seq.map_or(seq, |s| s.max(seq)));
    }

    fn insert(&mut self, seq: u64, entry: Entry) {
        self.bytes += entry.len;
        if let Some(old) = self.index.insert(seq, entry) {
            self.bytes = self.bytes.saturating_sub(old.len);
        }
        self.raise_seq(seq);
    }

    fn take(&mut self, seq: u64) -> Option<Entry> {
        let e = self.index.remove(&seq)?;
        self.bytes = self.bytes.saturating_sub(e.len);
        self.sending.remove(&seq);
        self.maybe.remove(&seq);
        Some(e)
    }

    fn append(&mut self, record: &[u8], sync: bool) -> Result<u64, StoreError> {
        let at = self.file_len;
        self.file.write_all(record).map_err(|e| io("appending to", &self.path, e))?;
        self.file_len += record.len() as u64;
        if sync {
            self.file.sync_data().map_err(|e| io("syncing", &self.path, e))?;
        }
        Ok(at)
    }

    /// What opening found damaged and cut off, if anything.
    pub fn repair(&self) -> Option<&Repair> {
        self.repair.as_ref()
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The number of envelopes stored.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// The size of the log file in bytes (live and dead records).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Makes sure sequence numbers up to `seq` are never used again (a store that replaces a
    /// broken one continues where that one was), durably.
    pub fn raise_last_seq(&mut self, seq: u64) -> Result<(), StoreError> {
        if self.last_seq.is_some_and(|s| s >= seq) {
            return Ok(());
        }
        self.raise_seq(seq);
        let state = state_record(self.last_seq, &self.unsent);
        self.append(&state, true).map(drop)
    }

    fn maybe_compact(&mut self) -> Result<(), StoreError> {
        let live = self.bytes + self.index.len() as u64 * (HEAD + PUT_FIELDS + CHECK) as u64;
        if self.file_len < COMPACT_MIN || self.file_len < 2 * live + COMPACT_MIN / 2 {
            return Ok(());
        }
        self.compact()
    }

    /// Rewrites the log with only what is live (see the [module docs](self)).
    pub fn compact(&mut self) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("log.tmp");
        let mut out = MAGIC.to_vec();
        let mut index = BTreeMap::new();
        for (&seq, e) in &self.index {
            let env = self.read(seq, e)?;
            let (rec, start) = put_record(&env, &e.carried);
            index.insert(seq, Entry { at: (out.len() + HEAD + start) as u64, ..e.clone() });
            out.extend_from_slice(&rec);
        }
        for &seq in &self.sending {
            out.extend_from_slice(&record(SENDING, &seq.to_le_bytes()));
        }
        out.extend_from_slice(&state_record(self.last_seq, &self.unsent));
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp).map_err(|e| io("creating", &tmp, e))?;
        f.write_all(&out).and_then(|()| f.sync_all()).map_err(|e| io("writing", &tmp, e))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(|e| io("renaming", &tmp, e))?;
        sync_dir(self.path.parent().unwrap_or(Path::new(".")))?;
        self.file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| io("opening", &self.path, e))?;
        self.file_len = out.len() as u64;
        self.index = index;
        Ok(())
    }

    fn read(&self, seq: u64, e: &Entry) -> Result<StoredEnvelope, StoreError> {
        let mut bytes = vec![0u8; e.len as usize];
        let mut f = &self.file;
        f.seek(SeekFrom::Start(e.at))
            .and_then(|_| f.read_exact(&mut bytes))
            .map_err(|err| io("reading", &self.path, err))?;
        Ok(StoredEnvelope { seq, created_at: e.created_at, failures: e.failures, bytes })
    }

    fn meta(seq: u64, e: &Entry) -> EnvelopeMeta {
        EnvelopeMeta { seq, created_at: e.created_at, failures: e.failures, len: e.len }
    }
}

/// Deletes a log and its temp file (missing is fine).
pub fn remove_log(path: &Path) -> Result<(), StoreError> {
    for p in [path.to_path_buf(), path.with_extension("log.tmp")] {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("deleting", &p, e)),
        }
    }
    Ok(())
}

impl EnvelopeStore for LogStore {
    fn put(&mut self, envelope: StoredEnvelope) -> Result<(), StoreError> {
        self.put_carrying(envelope, &DropCounts::new())
    }

    fn put_carrying(
        &mut self,
        envelope: StoredEnvelope,
        carried: &DropCounts,
    ) -> Result<(), StoreError> {
        let (rec, start) = put_record(&envelope, carried);
        let at = self.append(&rec, true)?;
        let entry = Entry {
            at: at + (HEAD + start) as u64,
            len: envelope.bytes.len() as u64,
            created_at: envelope.created_at,
            failures: envelope.failures,
            carried: carried.clone(),
        };
        self.sending.remove(&envelope.seq);
        self.maybe.remove(&envelope.seq);
        self.insert(envelope.seq, entry);
        self.unsent = DropCounts::new();
        Ok(())
    }

    fn get(&self, seq: u64) -> Result<Option<StoredEnvelope>, StoreError> {
        match self.index.get(&seq) {
            Some(e) => self.read(seq, e).map(Some),
            None => Ok(None),
        }
    }

    fn list(&self) -> Result<Vec<EnvelopeMeta>, StoreError> {
        Ok(self.index.iter().map(|(&seq, e)| LogStore::meta(seq, e)).collect())
    }

    fn remove(&mut self, seq: u64) -> Result<Option<EnvelopeMeta>, StoreError> {
        self.remove_as(seq, Removal::Delivered)
    }

    fn carried_drops(&self, seq: u64) -> DropCounts {
        self.index.get(&seq).map(|e| e.carried.clone()).unwrap_or_default()
    }

    fn remove_as(
        &mut self,
        seq: u64,
        removal: Removal,
    ) -> Result<Option<EnvelopeMeta>, StoreError> {
        let Some(e) = self.index.get(&seq).cloned() else {
            return Ok(None);
        };
        let code = match removal {
            Removal::Delivered => 0,
            Removal::Dropped(reason) => reason.code(),
        };
        let mut p = seq.to_le_bytes().to_vec();
        p.extend_from_slice(&code.to_le_bytes());
        self.append(&record(REMOVE, &p), true)?;
        self.take(seq);
        if let Removal::Dropped(reason) = removal {
            self.unsent.add(reason, e.failures);
            self.unsent.merge(&e.carried);
        }
        self.maybe_compact()?;
        Ok(Some(LogStore::meta(seq, &e)))
    }

    fn clear(&mut self) -> Result<u64, StoreError> {
        let failures = self.index.values().map(|e| e.failures).sum();
        self.index.clear();
        self.bytes = 0;
        self.sending.clear();
        self.maybe.clear();
        self.unsent = DropCounts::new();
        self.compact()?;
        Ok(failures)
    }

    fn bytes_used(&self) -> u64 {
        self.bytes
    }

    fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    fn unsent_drops(&self) -> DropCounts {
        self.unsent.clone()
    }

    fn mark_sending(&mut self, seq: u64) -> Result<(), StoreError> {
        if !self.index.contains_key(&seq) || self.sending.contains(&seq) {
            return Ok(());
        }
        self.append(&record(SENDING, &seq.to_le_bytes()), true)?;
        self.sending.insert(seq);
        Ok(())
    }

    fn mark_answered(&mut self, seq: u64) -> Result<(), StoreError> {
        if !self.sending.contains(&seq) {
            return Ok(());
        }
        self.append(&record(ANSWERED, &seq.to_le_bytes()), false)?;
        self.sending.remove(&seq);
        self.maybe.remove(&seq);
        Ok(())
    }

    fn maybe_delivered(&self) -> Vec<u64> {
        self.maybe.iter().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::StoreLimits;
    use crate::delivery::Outcome;
    use crate::entropy::SeededEntropy;
    use crate::pipeline::{AgentCore, CoreConfig};
    use crate::report::AppInfo;
    use crate::taxonomy::ErrorType;

    fn env(seq: u64, failures: u64) -> StoredEnvelope {
        StoredEnvelope {
            seq,
            created_at: UnixMillis(seq * 10),
            failures,
            bytes: vec![seq as u8; 50],
        }
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "vantage-log-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn seqs(s: &LogStore) -> Vec<u64> {
        s.list().unwrap().iter().map(|m| m.seq).collect()
    }

    #[test]
    fn survives_reopen_with_order_bytes_and_last_seq() {
        let dir = tempdir("reopen");
        let path = dir.join(LOG_FILE);
        {
            let mut s = LogStore::open(&path).unwrap();
            for seq in [3, 1, 2] {
                s.put(env(seq, seq)).unwrap();
            }
            assert_eq!(s.remove_as(3, Removal::Delivered).unwrap().unwrap().failures, 3);
            assert_eq!(s.remove_as(3, Removal::Delivered).unwrap(), None);
        }
        let s = LogStore::open(&path).unwrap();
        assert_eq!(s.repair(), None);
        assert_eq!(seqs(&s), [1, 2], "oldest first");
        assert_eq!(s.bytes_used(), 100);
        assert_eq!(s.last_seq(), Some(3), "a removed envelope's seq is never reused");
        assert_eq!(s.get(2).unwrap().unwrap(), env(2, 2));
        assert!(s.unsent_drops().is_empty(), "a delivery is not a drop");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_torn_last_put_is_cut_off_and_counted() {
        let dir = tempdir("torn");
        let path = dir.join(LOG_FILE);
        {
            let mut s = LogStore::open(&path).unwrap();
            for seq in 1..=3 {
                s.put(env(seq, 10 + seq)).unwrap();
            }
        }
        let len = std::fs::metadata(&path).unwrap().len();
        // Every cut inside the last record: a write the process did not finish.
        let record = put_record(&env(3, 13), &DropCounts::new()).0.len() as u64;
        for cut in [1, 7, record / 2, record - 1] {
            let copy = dir.join(format!("cut-{cut}.log"));
            std::fs::copy(&path, &copy).unwrap();
            OpenOptions::new().write(true).open(&copy).unwrap().set_len(len - cut).unwrap();
            let mut s = LogStore::open(&copy).unwrap();
            assert_eq!(seqs(&s), [1, 2], "cut {cut}");
            let repair = s.repair().unwrap().clone();
            assert!(!repair.mid_file, "cut {cut}");
            let expected = if record - cut >= (HEAD + PUT_FIELDS) as u64 { 13 } else { 1 };
            assert_eq!(repair.lost_failures, expected, "cut {cut}");
            assert_eq!(s.unsent_drops().count(DropReason::StoreError), expected);
            assert_eq!(s.last_seq(), Some(2), "the torn put's seq was never sent");
            // Appends continue cleanly after the cut, and the count survives a reopen.
            s.put(env(4, 1)).unwrap();
            assert!(s.unsent_drops().is_empty(), "the new put carries the count");
            drop(s);
            let s = LogStore::open(&copy).unwrap();
            assert_eq!(s.repair(), None);
            assert_eq!(seqs(&s), [1, 2, 4]);
        }
        // A torn removal: the envelope is still there, nothing is counted.
        let mut s = LogStore::open(&path).unwrap();
        s.remove_as(1, Removal::Dropped(DropReason::QueueFull)).unwrap();
        drop(s);
        let len = std::fs::metadata(&path).unwrap().len();
        OpenOptions::new().write(true).open(&path).unwrap().set_len(len - 3).unwrap();
        let s = LogStore::open(&path).unwrap();
        assert_eq!(seqs(&s), [1, 2, 3]);
        assert!(s.unsent_drops().is_empty(), "{:?}", s.unsent_drops());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn damage_mid_file_loses_the_rest_counts_it_and_jumps_the_sequence() {
        let dir = tempdir("damage");
        let path = dir.join(LOG_FILE);
        {
            let mut s = LogStore::open(&path).unwrap();
            for seq in 1..=3 {
                s.put(env(seq, 1)).unwrap();
            }
        }
        let mut bytes = std::fs::read(&path).unwrap();
        let second = MAGIC.len() + put_record(&env(1, 1), &DropCounts::new()).0.len() + HEAD + 30;
        bytes[second] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        let s = LogStore::open(&path).unwrap();
        assert_eq!(seqs(&s), [1]);
        assert!(s.repair().unwrap().mid_file);
        assert_eq!(s.unsent_drops().count(DropReason::StoreError), 1);
        assert_eq!(s.last_seq(), Some(1 + SEQ_JUMP));
        drop(s);
        let s = LogStore::open(&path).unwrap();
        assert_eq!(s.last_seq(), Some(1 + SEQ_JUMP), "the jump is durable");
        assert_eq!(s.unsent_drops().count(DropReason::StoreError), 1, "so is the count");
        // A file that is not a log at all.
        std::fs::write(&path, b"not a log file").unwrap();
        assert!(matches!(LogStore::open(&path), Err(StoreError::Corrupt(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn evicts_oldest_first_and_keeps_drops_until_the_next_put() {
        let dir = tempdir("evict");
        let path = dir.join(LOG_FILE);
        let limits = StoreLimits { max_bytes: 100, max_age_ms: 1_000 };
        {
            let mut s = LogStore::open(&path).unwrap();
            for seq in 1..=5 {
                s.put(env(seq, seq)).unwrap();
            }
            // At 1_010 envelope 1 (sealed at 10) is expired; then 2 and 3 go to fit 100 bytes.
            let (drops, removed) = s.evict(limits, UnixMillis(1_010), &[]).unwrap();
            assert_eq!(removed, [1, 2, 3]);
            assert_eq!(drops.count(DropReason::Expired), 1);
            assert_eq!(drops.count(DropReason::QueueFull), 5);
            assert_eq!(s.unsent_drops(), drops);
        }
        let mut s = LogStore::open(&path).unwrap();
        assert_eq!(seqs(&s), [4, 5]);
        assert_eq!(s.unsent_drops().count(DropReason::QueueFull), 5, "durable with the removal");
        assert_eq!(s.unsent_drops().count(DropReason::Expired), 1);
        let carried = s.unsent_drops();
        s.put_carrying(env(6, 1), &carried).unwrap();
        drop(s);
        let mut s = LogStore::open(&path).unwrap();
        assert!(s.unsent_drops().is_empty(), "carried by put 6");
        assert_eq!(s.carried_drops(6), carried, "kept with it");
        // Envelope 6 dropped in turn: its own failure and what it carried are unsent again.
        s.remove_as(6, Removal::Dropped(DropReason::Rejected)).unwrap();
        drop(s);
        let s = LogStore::open(&path).unwrap();
        let mut expected = carried.clone();
        expected.add(DropReason::Rejected, 1);
        assert_eq!(s.unsent_drops(), expected);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_send_without_an_answer_marks_maybe_delivered() {
        let dir = tempdir("sending");
        let path = dir.join(LOG_FILE);
        {
            let mut s = LogStore::open(&path).unwrap();
            for seq in 1..=3 {
                s.put(env(seq, 1)).unwrap();
            }
            for seq in 1..=3 {
                s.mark_sending(seq).unwrap();
            }
            assert!(s.maybe_delivered().is_empty(), "in this process the outcome is known");
            s.mark_answered(2).unwrap();
            s.remove_as(3, Removal::Delivered).unwrap();
        }
        let mut s = LogStore::open(&path).unwrap();
        assert_eq!(s.maybe_delivered(), [1]);
        // Never evicted while maybe delivered (the core passes it in `keep`).
        let limits = StoreLimits { max_bytes: 0, max_age_ms: u64::MAX };
        let (_, removed) = s.evict(limits, UnixMillis(0), &s.maybe_delivered()).unwrap();
        assert_eq!(removed, [2]);
        s.mark_answered(1).unwrap();
        assert!(s.maybe_delivered().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn compaction_shrinks_the_file_and_keeps_the_state() {
        let dir = tempdir("compact");
        let path = dir.join(LOG_FILE);
        let mut s = LogStore::open(&path).unwrap();
        let big = |seq: u64| StoredEnvelope { bytes: vec![1; 4096], ..env(seq, 1) };
        for seq in 1..=100 {
            s.put(big(seq)).unwrap();
            if seq > 2 {
                s.remove_as(seq - 2, Removal::Dropped(DropReason::QueueFull)).unwrap();
            }
        }
        s.mark_sending(99).unwrap();
        assert!(s.file_len() < 3 * COMPACT_MIN, "compacted as it went: {}", s.file_len());
        let unsent = s.unsent_drops();
        assert_eq!(unsent.count(DropReason::QueueFull), 1, "dropped after the last put");
        s.compact().unwrap();
        drop(s);
        let s = LogStore::open(&path).unwrap();
        assert_eq!(seqs(&s), [99, 100]);
        assert_eq!(s.get(100).unwrap().unwrap(), big(100));
        assert_eq!(s.last_seq(), Some(100));
        assert_eq!(s.unsent_drops(), unsent);
        assert_eq!(s.maybe_delivered(), [99]);
        assert!(!path.with_extension("log.tmp").exists());
        let mut s = s;
        assert_eq!(s.clear().unwrap(), 2);
        drop(s);
        let s = LogStore::open(&path).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.last_seq(), Some(100));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn core_on(path: &Path, secret: Option<[u8; 32]>) -> AgentCore<LogStore, SeededEntropy> {
        let app = AppInfo::new("app", "1", "linux", "rust").unwrap();
        let key =
            "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a".parse().unwrap();
        let mut config = CoreConfig::new(app, key, 1);
        // Two envelopes of one report (about 300 bytes each) fit, three do not.
        config.limits.max_bytes = 700;
        config.delivery.max_per_second = 1_000;
        let store = LogStore::open(path).unwrap();
        let mut core =
            AgentCore::new(config, store, SeededEntropy::insecure_from_seed([3; 32])).unwrap();
        match secret {
            Some(secret) => core.restore_consent(secret, UnixMillis(0)),
            None => drop(core.grant(UnixMillis(0))),
        }
        core
    }

    fn record(core: &mut AgentCore<LogStore, SeededEntropy>, at: u64) {
        let mut rng = SeededEntropy::insecure_from_seed([at as u8; 32]);
        let host = format!("h{at}.example.com");
        let report = crate::pipeline::ReportInput::new("svc", &host, &ErrorType::TcpRefused)
            .build(&mut rng, UnixMillis(at))
            .unwrap();
        core.handle_record(report, UnixMillis(at));
        core.seal_pending(UnixMillis(at)).unwrap();
    }

    #[test]
    fn a_restarted_core_sends_drops_of_the_dead_one_exactly_once() {
        let dir = tempdir("core");
        let path = dir.join(LOG_FILE);
        let mut first = core_on(&path, None);
        let secret = *first.consent().identity().unwrap().secret_bytes();
        record(&mut first, 1);
        let one = first.store().bytes_used();
        assert!((250..350).contains(&one), "the budget fits two envelopes, not three: {one}");
        // Envelope 1 is being sent when envelope 3 pushes the store over budget: 2 (the
        // oldest not in flight) is evicted, queue_full 1. The process dies right then.
        let tx = first.poll_transmit(UnixMillis(1)).unwrap().unwrap();
        record(&mut first, 2);
        record(&mut first, 3);
        assert_eq!(first.pending_drops().count(DropReason::QueueFull), 1);
        drop(first);

        let mut second = core_on(&path, Some(secret));
        assert_eq!(second.next_seq(), 4, "no gap after a restart");
        assert_eq!(seqs(second.store()), [1, 3]);
        assert_eq!(second.store().maybe_delivered(), [1], "sent when the process died");
        assert_eq!(second.pending_drops().count(DropReason::QueueFull), 1, "taken back");
        let again = second.poll_transmit(UnixMillis(3)).unwrap().unwrap();
        assert_eq!((again.seq, &again.bytes), (1, &tx.bytes), "sent again, the same bytes");
        second.handle_outcome(again.id, Outcome::Accepted, UnixMillis(3)).unwrap();
        record(&mut second, 4);
        assert!(second.pending_drops().is_empty(), "sealed into batch 4");
        drop(second);

        let third = core_on(&path, Some(secret));
        assert!(third.pending_drops().is_empty(), "counted once");
        assert!(third.store().maybe_delivered().is_empty());
        assert_eq!(seqs(third.store()), [3, 4]);
        assert_eq!(third.next_seq(), 5);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
