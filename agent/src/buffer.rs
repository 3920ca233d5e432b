//! The envelope buffer: sealed envelopes waiting for delivery, bounded by bytes and age.
//!
//! What is stored is the exact bytes of a sealed envelope ([`crate::wire::seal_batch`]), already
//! encrypted to the collector key, so nothing at rest can be read without the collector's
//! private key, and a retry sends the same bytes as the first attempt. Alongside the bytes the
//! store keeps the envelope's sequence number (its key and its age order), when it was sealed,
//! and how many failures it carries, so that an eviction can be counted in failures (the unit of
//! [`DropCounts`]).
//!
//! [`EnvelopeStore`] is the trait the core drives; [`MemoryStore`] keeps envelopes in memory
//! (tests, the C library's host-driven mode, the browser before IndexedDB), the native runtime
//! has an append-only log file (`native::log_store`), and the wasm module a journal written to
//! IndexedDB. Eviction is shared: [`EnvelopeStore::evict`] drops the oldest envelopes first,
//! first those past the maximum age ([`DropReason::Expired`]), then as many as needed to fit
//! the byte budget ([`DropReason::QueueFull`]).
//!
//! ## Outcomes across crashes
//! A durable store can make every envelope end delivered xor dropped, counted once, whatever
//! moment the process dies. Three optional methods carry what it needs (the defaults do
//! nothing, which is right for a store that does not outlive the process):
//! - [`EnvelopeStore::remove_as`] writes the removal together with its outcome, in one durable
//!   write, and keeps the drop counts of such removals until the next [`EnvelopeStore::put`]
//!   (whose batch carries them): [`EnvelopeStore::unsent_drops`] gives them back after a
//!   restart, so they ride in the next batch exactly once;
//! - [`EnvelopeStore::mark_sending`] is written durably before an envelope's bytes leave, and
//!   [`EnvelopeStore::mark_answered`] when a collector answered "not accepted": an envelope
//!   still marked when the process died may have been delivered
//!   ([`EnvelopeStore::maybe_delivered`]), so it is sent again (the collector answers a
//!   duplicate with `202`) instead of being evicted and counted as dropped.

use crate::drops::{DropCounts, DropReason};
use crate::report::UnixMillis;
use crate::vecmap::VecMap;

/// The default byte budget of a store: 1 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 1024 * 1024;

/// The default maximum age of a stored envelope: 7 days, in milliseconds.
pub const DEFAULT_MAX_AGE_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// What the store knows about an envelope without its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvelopeMeta {
    /// The batch's sequence number: the store's key and its age order.
    pub seq: u64,
    /// When the envelope was sealed.
    pub created_at: UnixMillis,
    /// How many failures (the sum of its reports' counts) it carries.
    pub failures: u64,
    /// Its size in bytes.
    pub len: u64,
}

/// A sealed envelope with its metadata.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredEnvelope {
    /// The batch's sequence number.
    pub seq: u64,
    /// When the envelope was sealed.
    pub created_at: UnixMillis,
    /// How many failures it carries.
    pub failures: u64,
    /// The sealed bytes, exactly as they are sent.
    pub bytes: Vec<u8>,
}

impl StoredEnvelope {
    /// Its metadata.
    pub fn meta(&self) -> EnvelopeMeta {
        EnvelopeMeta {
            seq: self.seq,
            created_at: self.created_at,
            failures: self.failures,
            len: self.bytes.len() as u64,
        }
    }
}

impl std::fmt::Debug for StoredEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredEnvelope")
            .field("seq", &self.seq)
            .field("created_at", &self.created_at)
            .field("failures", &self.failures)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// The limits a store is kept within.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreLimits {
    /// The most bytes of envelopes kept (default [`DEFAULT_MAX_BYTES`], 1 MiB).
    pub max_bytes: u64,
    /// The oldest an envelope may get, in milliseconds since it was sealed (default
    /// [`DEFAULT_MAX_AGE_MS`], 7 days).
    pub max_age_ms: u64,
}

impl Default for StoreLimits {
    /// 1 MiB, 7 days.
    fn default() -> Self {
        StoreLimits { max_bytes: DEFAULT_MAX_BYTES, max_age_ms: DEFAULT_MAX_AGE_MS }
    }
}

/// A store failed. The message says what failed; it never contains envelope bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the underlying storage failed.
    #[error("{}", self.message())]
    Io(String),
    /// The stored data is not what this version wrote.
    #[error("{}", self.message())]
    Corrupt(String),
}

impl StoreError {
    /// The message `Display` writes (`envelope store I/O failed: ...`), built without
    /// `core::fmt`, which the browser module's error path then does not link.
    pub fn message(&self) -> String {
        match self {
            StoreError::Io(detail) => ["envelope store I/O failed: ", detail].concat(),
            StoreError::Corrupt(detail) => ["envelope store is corrupt: ", detail].concat(),
        }
    }
}

/// Why an envelope leaves the store ([`EnvelopeStore::remove_as`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// A collector accepted it.
    Delivered,
    /// It was dropped, for this reason.
    Dropped(DropReason),
}

/// Where sealed envelopes wait for delivery, keyed and ordered by sequence number (which is
/// also their age order: sequence numbers only grow).
pub trait EnvelopeStore {
    /// Stores an envelope (replacing one with the same `seq`). Durable implementations have it
    /// on disk when this returns.
    fn put(&mut self, envelope: StoredEnvelope) -> Result<(), StoreError>;

    /// The envelope with sequence number `seq`, if stored.
    fn get(&self, seq: u64) -> Result<Option<StoredEnvelope>, StoreError>;

    /// The metadata of every stored envelope, oldest (lowest `seq`) first.
    fn list(&self) -> Result<Vec<EnvelopeMeta>, StoreError>;

    /// Removes the envelope `seq`, returning its metadata if it was stored.
    fn remove(&mut self, seq: u64) -> Result<Option<EnvelopeMeta>, StoreError>;

    /// Removes everything, returning how many failures the removed envelopes carried.
    fn clear(&mut self) -> Result<u64, StoreError>;

    /// Bytes of envelopes stored (the sum of their lengths).
    fn bytes_used(&self) -> u64;

    /// The highest sequence number ever stored here (also of envelopes since removed), so a
    /// restarted agent never reuses one; `None` for a store that never held one.
    fn last_seq(&self) -> Option<u64>;

    /// Removes the envelope `seq` because it was delivered or dropped. A durable store writes
    /// the removal and its outcome in one durable write before it returns, and adds a drop to
    /// [`Self::unsent_drops`]. Default: [`Self::remove`].
    fn remove_as(
        &mut self,
        seq: u64,
        removal: Removal,
    ) -> Result<Option<EnvelopeMeta>, StoreError> {
        let _ = removal;
        self.remove(seq)
    }

    /// Stores an envelope whose batch carries the drop counts `carried` (counted before it was
    /// sealed). A durable store keeps them with it: if the envelope is dropped in turn, they
    /// must travel again ([`Self::carried_drops`]). Default: [`Self::put`].
    fn put_carrying(
        &mut self,
        envelope: StoredEnvelope,
        carried: &DropCounts,
    ) -> Result<(), StoreError> {
        let _ = carried;
        self.put(envelope)
    }

    /// The drop counts the stored envelope `seq` carries ([`Self::put_carrying`]); when it is
    /// dropped they go into the next batch again. Default: none.
    fn carried_drops(&self, seq: u64) -> DropCounts {
        let _ = seq;
        DropCounts::new()
    }

    /// Failures dropped by [`Self::remove_as`] (with the counts the removed envelopes carried) (and lost to damage the store found when it
    /// opened) since the last [`Self::put`]: every put carries the drops counted before it, so
    /// these are the ones no stored batch carries yet. The core adds them to its next batch
    /// when it takes the store (after a restart). Default: none.
    fn unsent_drops(&self) -> DropCounts {
        DropCounts::new()
    }

    /// An attempt to send `seq` starts: a durable store writes this before it returns, so
    /// after a crash it knows the envelope may have reached a collector. Writing nothing when
    /// `seq` is already marked. Default: nothing.
    fn mark_sending(&mut self, seq: u64) -> Result<(), StoreError> {
        let _ = seq;
        Ok(())
    }

    /// A collector answered an attempt to send `seq` with a status that means "not accepted,
    /// try later": it was not delivered. Default: nothing.
    fn mark_answered(&mut self, seq: u64) -> Result<(), StoreError> {
        let _ = seq;
        Ok(())
    }

    /// Envelopes whose last send attempt in an earlier process has no recorded answer: they
    /// may have been delivered. They are sent again rather than evicted (a collector answers
    /// a duplicate with `202`), until an answer settles them. Default: none.
    fn maybe_delivered(&self) -> Vec<u64> {
        Vec::new()
    }

    /// Drops the oldest envelopes until the store is within `limits` at `now`: first every
    /// envelope sealed `max_age_ms` or more before `now` ([`DropReason::Expired`]), then the
    /// oldest until `bytes_used() <= max_bytes` ([`DropReason::QueueFull`]). Envelopes in
    /// `keep` (being sent right now, or maybe delivered; a handful) are skipped. Returns the
    /// failures dropped, by reason, and the sequence numbers removed.
    fn evict(
        &mut self,
        limits: StoreLimits,
        now: UnixMillis,
        keep: &[u64],
    ) -> Result<(DropCounts, Vec<u64>), StoreError> {
        let mut drops = DropCounts::new();
        let mut removed = Vec::new();
        let mut used = self.bytes_used();
        for meta in self.list()? {
            if keep.contains(&meta.seq) {
                continue;
            }
            let reason = if now.since(meta.created_at) >= limits.max_age_ms {
                DropReason::Expired
            } else if used > limits.max_bytes {
                DropReason::QueueFull
            } else {
                continue;
            };
            if self.remove_as(meta.seq, Removal::Dropped(reason))?.is_some() {
                used = used.saturating_sub(meta.len);
                drops.add(reason, meta.failures);
                removed.push(meta.seq);
            }
        }
        Ok((drops, removed))
    }
}

/// An in-memory [`EnvelopeStore`]: nothing survives the process.
#[derive(Clone, Debug, Default)]
pub struct MemoryStore {
    envelopes: VecMap<u64, StoredEnvelope>,
    bytes: u64,
    last_seq: Option<u64>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// The number of envelopes stored.
    pub fn len(&self) -> usize {
        self.envelopes.len()
    }

    /// True when nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.envelopes.is_empty()
    }
}

impl EnvelopeStore for MemoryStore {
    fn put(&mut self, envelope: StoredEnvelope) -> Result<(), StoreError> {
        let seq = envelope.seq;
        self.bytes += envelope.bytes.len() as u64;
        if let Some(old) = self.envelopes.insert(seq, envelope) {
            self.bytes -= old.bytes.len() as u64;
        }
        self.last_seq = Some(self.last_seq.map_or(seq, |s| s.max(seq)));
        Ok(())
    }

    fn get(&self, seq: u64) -> Result<Option<StoredEnvelope>, StoreError> {
        Ok(self.envelopes.get(&seq).cloned())
    }

    fn list(&self) -> Result<Vec<EnvelopeMeta>, StoreError> {
        Ok(self.envelopes.values().map(StoredEnvelope::meta).collect())
    }

    fn remove(&mut self, seq: u64) -> Result<Option<EnvelopeMeta>, StoreError> {
        Ok(self.envelopes.remove(&seq).map(|e| {
            self.bytes -= e.bytes.len() as u64;
            e.meta()
        }))
    }

    fn clear(&mut self) -> Result<u64, StoreError> {
        let failures = self.envelopes.values().map(|e| e.failures).sum();
        self.envelopes.clear();
        self.bytes = 0;
        Ok(failures)
    }

    fn bytes_used(&self) -> u64 {
        self.bytes
    }

    fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(seq: u64, at: u64, failures: u64, len: usize) -> StoredEnvelope {
        StoredEnvelope { seq, created_at: UnixMillis(at), failures, bytes: vec![seq as u8; len] }
    }

    #[test]
    fn put_get_remove_and_account_bytes() {
        let mut s = MemoryStore::new();
        s.put(env(2, 10, 1, 100)).unwrap();
        s.put(env(1, 5, 3, 50)).unwrap();
        assert_eq!(s.bytes_used(), 150);
        assert_eq!(s.list().unwrap().iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(s.get(2).unwrap().unwrap().bytes, vec![2; 100]);
        s.put(env(2, 10, 1, 10)).unwrap();
        assert_eq!(s.bytes_used(), 60);
        assert_eq!(s.remove(1).unwrap().unwrap().failures, 3);
        assert_eq!(s.remove(1).unwrap(), None);
        assert_eq!(s.bytes_used(), 10);
        assert_eq!(s.last_seq(), Some(2));
        assert_eq!(s.clear().unwrap(), 1);
        assert!(s.is_empty());
        assert_eq!(s.last_seq(), Some(2), "last_seq survives removal");
    }

    #[test]
    fn evicts_expired_then_oldest_to_fit_and_counts_failures() {
        let limits = StoreLimits { max_bytes: 250, max_age_ms: 1_000 };
        let mut s = MemoryStore::new();
        for (seq, at) in [(1, 0), (2, 500), (3, 600), (4, 700), (5, 800)] {
            s.put(env(seq, at, seq, 100)).unwrap();
        }
        // At 1_000, envelope 1 is exactly max_age old; 500 bytes remain, 250 allowed.
        let (drops, removed) = s.evict(limits, UnixMillis(1_000), &[]).unwrap();
        assert_eq!(removed, [1, 2, 3]);
        assert_eq!(drops.count(DropReason::Expired), 1);
        assert_eq!(drops.count(DropReason::QueueFull), 2 + 3);
        assert_eq!(s.bytes_used(), 200);
        let (drops, removed) = s.evict(limits, UnixMillis(1_000), &[]).unwrap();
        assert!(drops.is_empty() && removed.is_empty());
    }

    #[test]
    fn eviction_skips_envelopes_being_sent() {
        let limits = StoreLimits { max_bytes: 100, max_age_ms: u64::MAX };
        let mut s = MemoryStore::new();
        for seq in 1..=3 {
            s.put(env(seq, 0, 1, 100)).unwrap();
        }
        let (drops, removed) = s.evict(limits, UnixMillis(0), &[1]).unwrap();
        assert_eq!(removed, [2, 3]);
        assert_eq!(drops.count(DropReason::QueueFull), 2);
        assert!(s.get(1).unwrap().is_some());
    }

    #[test]
    fn store_errors_say_what_failed() {
        let io = StoreError::Io("disk full".into());
        assert_eq!(io.to_string(), "envelope store I/O failed: disk full");
        assert_eq!(io.message(), io.to_string());
        let corrupt = StoreError::Corrupt("bad header".into());
        assert_eq!(corrupt.to_string(), "envelope store is corrupt: bad header");
    }

    #[test]
    fn debug_does_not_print_bytes() {
        let d = format!("{:?}", env(1, 0, 1, 4));
        assert!(d.contains("len: 4") && !d.contains("[1, 1"), "{d}");
    }
}
