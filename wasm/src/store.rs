//! [`JournalStore`]: the envelope store of the browser, a memory mirror that journals its
//! changes for the JavaScript side to write through to IndexedDB (see the crate docs).

use std::cell::RefCell;

use vantage_agent::buffer::{EnvelopeMeta, EnvelopeStore, MemoryStore, StoreError, StoredEnvelope};

/// One change to apply to IndexedDB, in journal order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalOp {
    /// Store this envelope under its `seq`.
    Put(StoredEnvelope),
    /// Delete the envelope `seq`.
    Remove(u64),
    /// Delete every envelope.
    Clear,
}

/// A [`MemoryStore`] that records every change in a journal ([`JournalStore::take_journal`]).
/// Loading what IndexedDB held ([`JournalStore::load`]) is not journalled.
///
/// The journal is taken through `&self` (a `RefCell`): the core lends its store out only
/// immutably, and taking the journal does not change what the store holds.
#[derive(Debug, Default)]
pub struct JournalStore {
    mem: MemoryStore,
    journal: RefCell<Vec<JournalOp>>,
}

impl JournalStore {
    /// An empty store with an empty journal.
    pub fn new() -> JournalStore {
        JournalStore::default()
    }

    /// Puts an envelope read back from IndexedDB (not journalled: it is already there).
    pub fn load(&mut self, envelope: StoredEnvelope) -> Result<(), StoreError> {
        self.mem.put(envelope)
    }

    /// The changes since the last call, oldest first.
    pub fn take_journal(&self) -> Vec<JournalOp> {
        self.journal.take()
    }

    /// True when changes wait to be written.
    pub fn has_journal(&self) -> bool {
        !self.journal.borrow().is_empty()
    }

    /// The number of envelopes held.
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    /// True when no envelope is held.
    pub fn is_empty(&self) -> bool {
        self.mem.is_empty()
    }
}

impl EnvelopeStore for JournalStore {
    fn put(&mut self, envelope: StoredEnvelope) -> Result<(), StoreError> {
        self.mem.put(envelope.clone())?;
        self.journal.get_mut().push(JournalOp::Put(envelope));
        Ok(())
    }

    fn get(&self, seq: u64) -> Result<Option<StoredEnvelope>, StoreError> {
        self.mem.get(seq)
    }

    fn list(&self) -> Result<Vec<EnvelopeMeta>, StoreError> {
        self.mem.list()
    }

    fn remove(&mut self, seq: u64) -> Result<Option<EnvelopeMeta>, StoreError> {
        let removed = self.mem.remove(seq)?;
        if removed.is_some() {
            self.journal.get_mut().push(JournalOp::Remove(seq));
        }
        Ok(removed)
    }

    fn clear(&mut self) -> Result<u64, StoreError> {
        let failures = self.mem.clear()?;
        // Whatever was journalled but not written yet is moot: the whole store goes.
        self.journal.get_mut().clear();
        self.journal.get_mut().push(JournalOp::Clear);
        Ok(failures)
    }

    fn bytes_used(&self) -> u64 {
        self.mem.bytes_used()
    }

    fn last_seq(&self) -> Option<u64> {
        self.mem.last_seq()
    }
}

#[cfg(test)]
mod tests {
    use vantage_agent::buffer::StoreLimits;
    use vantage_agent::drops::DropReason;
    use vantage_agent::report::UnixMillis;

    use super::*;

    fn env(seq: u64, at: u64, len: usize) -> StoredEnvelope {
        StoredEnvelope {
            seq,
            created_at: UnixMillis(at),
            failures: seq,
            bytes: vec![seq as u8; len],
        }
    }

    #[test]
    fn journals_puts_and_removes_in_order_but_not_loads() {
        let mut s = JournalStore::new();
        s.load(env(1, 0, 10)).unwrap();
        assert!(!s.has_journal());
        s.put(env(2, 0, 10)).unwrap();
        assert_eq!(s.remove(1).unwrap().map(|m| m.seq), Some(1));
        assert_eq!(s.remove(1).unwrap(), None, "a second remove is no change");
        assert_eq!(s.take_journal(), vec![JournalOp::Put(env(2, 0, 10)), JournalOp::Remove(1)]);
        assert!(s.take_journal().is_empty());
        assert_eq!(s.last_seq(), Some(2));
        assert_eq!(s.bytes_used(), 10);
    }

    #[test]
    fn clear_supersedes_pending_changes() {
        let mut s = JournalStore::new();
        s.put(env(1, 0, 10)).unwrap();
        s.put(env(2, 0, 10)).unwrap();
        assert_eq!(s.clear().unwrap(), 3);
        assert_eq!(s.take_journal(), vec![JournalOp::Clear]);
        assert!(s.is_empty());
    }

    #[test]
    fn eviction_is_journalled_as_removals_oldest_first() {
        let mut s = JournalStore::new();
        for seq in 1..=4 {
            s.put(env(seq, seq * 1000, 100)).unwrap();
        }
        let _ = s.take_journal();
        let limits = StoreLimits { max_bytes: 200, max_age_ms: 3_500 };
        let (drops, removed) = s.evict(limits, UnixMillis(4_600), &[]).unwrap();
        // seq 1 is 3.6 s old (expired); then seq 2 goes for bytes.
        assert_eq!(removed, vec![1, 2]);
        assert_eq!(drops.count(DropReason::Expired), 1);
        assert_eq!(drops.count(DropReason::QueueFull), 2);
        assert_eq!(s.take_journal(), vec![JournalOp::Remove(1), JournalOp::Remove(2)]);
    }
}
