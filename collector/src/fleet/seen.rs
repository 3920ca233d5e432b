//! Fleet mode's seen-digest set: the digests of the batches this collector fed to its detector,
//! so that a second copy of a batch (a re-publish, a failed-over agent's envelope that two
//! collectors accepted, a batch fed locally during an outage) is not fed again.
//!
//! Every collector of a fleet records every batch of the whole fleet here, so its size follows
//! the fleet's accepted rate, not this collector's store, and nothing else bounds it. It was
//! two sled trees with a key per digest (digest → time, and time ‖ digest for expiry): sled
//! keeps bookkeeping in memory for every leaf of a tree, and 400,000 digests took about 1 GiB
//! of resident memory (`docs/fleet.md`). Now:
//!
//! - **In memory**, the set of digests (their first 16 bytes: 128 bits, as report ids and the
//!   NEL window's digests are) and their order, at most `max` of them
//!   (`fleet.max_seen_digests`): 35 to 71 bytes per digest (a hash table and a queue of
//!   16-byte entries, each at most half empty). Past it the oldest are forgotten and counted
//!   (`vantage_fleet_seen_evicted_total`); a copy of one of them that arrives later is fed
//!   once more.
//! - **On disk**, one tree of rows, `time (u64 BE) ‖ seq (u32 BE)` → up to [`ROW`] digests of
//!   16 bytes, in the order they were recorded, so that a restart reads the set back. A row is
//!   written once it is full and otherwise by [`Seen::flush`] (every second and at stop), and
//!   deleted once all its digests were forgotten, by count or by the store's dedup horizon.
//!   The rows' times never go back (a clock that does keeps the last time), so key order is
//!   the order of the set.
//!
//! A restart keeps what was written: the digests recorded in the last second before a kill
//! may be lost, and a copy of such a batch may then be fed once more (before, sled's own
//! flush every 500 ms bounded the same loss).

use std::collections::{HashSet, VecDeque};

/// Digests per row (4 KiB).
pub(super) const ROW: usize = 256;

/// A digest as the set knows it.
fn short(digest: &[u8; 32]) -> [u8; 16] {
    let mut d = [0; 16];
    d.copy_from_slice(&digest[..16]);
    d
}

/// A written row: its key, the time of its newest digest, and how many of `order`'s digests
/// it holds.
struct RowInfo {
    key: [u8; 12],
    at: u64,
    n: usize,
}

/// What [`Seen::forget_before`] and the count bound removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Forgotten {
    /// Past the dedup horizon.
    pub expired: u64,
    /// Past the bound.
    pub evicted: u64,
}

/// The seen-digest set (see the module docs).
pub(super) struct Seen {
    tree: sled::Tree,
    set: HashSet<[u8; 16]>,
    /// Every digest of `set`, oldest first: those of `rows` (less the first `front_gone`),
    /// then `pending`.
    order: VecDeque<[u8; 16]>,
    rows: VecDeque<RowInfo>,
    /// Digests of the front row already forgotten (the row is deleted with its last one).
    front_gone: usize,
    /// Recorded, not written yet.
    pending: Vec<[u8; 16]>,
    /// The newest time recorded (rows' times never go back).
    last_at: u64,
    next_seq: u32,
    max: usize,
}

impl Seen {
    /// Reads the set back from `tree`: rows before `cutoff` (the dedup horizon) are deleted,
    /// and the oldest digests beyond `max`. Returns the set and what was forgotten.
    pub(super) fn load(
        tree: sled::Tree,
        max: usize,
        cutoff: u64,
    ) -> Result<(Seen, Forgotten), sled::Error> {
        let mut seen = Seen {
            tree,
            set: HashSet::new(),
            order: VecDeque::new(),
            rows: VecDeque::new(),
            front_gone: 0,
            pending: Vec::new(),
            last_at: 0,
            next_seq: 0,
            max: max.max(1),
        };
        let mut forgotten = Forgotten::default();
        for item in seen.tree.iter() {
            let (key, value) = item?;
            let Ok(key) = <[u8; 12]>::try_from(key.as_ref()) else {
                // Not a row of this format: nothing reads it.
                seen.tree.remove(key)?;
                continue;
            };
            let at = u64::from_be_bytes(key[..8].try_into().unwrap_or_default());
            let seq = u32::from_be_bytes(key[8..].try_into().unwrap_or_default());
            seen.last_at = seen.last_at.max(at);
            seen.next_seq = seen.next_seq.max(seq.wrapping_add(1));
            if at < cutoff {
                seen.tree.remove(key)?;
                forgotten.expired += (value.len() / 16) as u64;
                continue;
            }
            let mut n = 0;
            for d in value.chunks_exact(16) {
                let d = <[u8; 16]>::try_from(d).unwrap_or_default();
                if seen.set.insert(d) {
                    seen.order.push_back(d);
                    n += 1;
                }
            }
            if n == 0 {
                seen.tree.remove(key)?;
            } else {
                seen.rows.push_back(RowInfo { key, at, n });
            }
        }
        forgotten.evicted = seen.evict()?;
        Ok((seen, forgotten))
    }

    /// Records `digest` at `now_ms` unless it is in the set; true if it was not (the batch is
    /// to be fed). The second return is how many old digests the bound made room by.
    pub(super) fn insert(&mut self, digest: &[u8; 32], now_ms: u64) -> (bool, u64) {
        let d = short(digest);
        if !self.set.insert(d) {
            return (false, 0);
        }
        self.order.push_back(d);
        self.pending.push(d);
        self.last_at = self.last_at.max(now_ms);
        if self.pending.len() >= ROW {
            if let Err(e) = self.flush() {
                tracing::error!(error = %e, "fleet seen-digest set: a row could not be written");
            }
        }
        match self.evict() {
            Ok(n) => (true, n),
            Err(e) => {
                tracing::error!(error = %e, "fleet seen-digest set: a row could not be deleted");
                (true, 0)
            }
        }
    }

    /// True if `digest` is in the set.
    #[cfg(test)]
    pub(super) fn contains(&self, digest: &[u8; 32]) -> bool {
        self.set.contains(&short(digest))
    }

    /// Digests in the set.
    pub(super) fn len(&self) -> usize {
        self.set.len()
    }

    /// Writes the digests recorded since the last row as a row. On an error they stay pending
    /// (and in the set) for the next call.
    pub(super) fn flush(&mut self) -> Result<(), sled::Error> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut key = [0u8; 12];
        key[..8].copy_from_slice(&self.last_at.to_be_bytes());
        key[8..].copy_from_slice(&self.next_seq.to_be_bytes());
        let value: Vec<u8> = self.pending.iter().flatten().copied().collect();
        self.tree.insert(key, value)?;
        self.next_seq = self.next_seq.wrapping_add(1);
        self.rows.push_back(RowInfo { key, at: self.last_at, n: self.pending.len() });
        self.pending.clear();
        Ok(())
    }

    /// Forgets the rows whose newest digest was recorded before `cutoff` (the dedup horizon),
    /// and pending digests too when everything recorded is that old; returns how many.
    pub(super) fn forget_before(&mut self, cutoff: u64) -> Result<u64, sled::Error> {
        let mut expired = 0;
        while let Some(row) = self.rows.front() {
            if row.at >= cutoff {
                return Ok(expired);
            }
            let left = row.n - self.front_gone;
            self.tree.remove(row.key)?;
            for _ in 0..left {
                if let Some(d) = self.order.pop_front() {
                    self.set.remove(&d);
                }
            }
            expired += left as u64;
            self.front_gone = 0;
            self.rows.pop_front();
        }
        if self.last_at < cutoff {
            expired += self.pending.len() as u64;
            for d in self.pending.drain(..) {
                self.set.remove(&d);
            }
            self.order.clear();
        }
        Ok(expired)
    }

    /// Forgets the oldest digests beyond `max`; returns how many.
    fn evict(&mut self) -> Result<u64, sled::Error> {
        let mut evicted = 0;
        while self.order.len() > self.max {
            let Some(d) = self.order.pop_front() else { break };
            self.set.remove(&d);
            evicted += 1;
            match self.rows.front() {
                Some(row) => {
                    self.front_gone += 1;
                    if self.front_gone == row.n {
                        self.tree.remove(row.key)?;
                        self.rows.pop_front();
                        self.front_gone = 0;
                    }
                }
                // Not written yet: the oldest pending digest.
                None => {
                    self.pending.remove(0);
                }
            }
        }
        Ok(evicted)
    }
}

impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seen")
            .field("digests", &self.set.len())
            .field("rows", &self.rows.len())
            .field("pending", &self.pending.len())
            .field("max", &self.max)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(i: u64) -> [u8; 32] {
        let mut d = [0u8; 32];
        d[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
        d[8..16].copy_from_slice(&i.to_le_bytes());
        d
    }

    fn tree() -> (sled::Db, sled::Tree) {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("seen").unwrap();
        (db, tree)
    }

    /// Digests held in the tree's rows.
    fn on_disk(tree: &sled::Tree) -> usize {
        tree.iter().map(|kv| kv.unwrap().1.len() / 16).sum()
    }

    #[test]
    fn a_digest_is_new_once_and_the_set_stays_within_its_bound() {
        let (_db, tree) = tree();
        let (mut seen, _) = Seen::load(tree.clone(), 1_000, 0).unwrap();
        let mut evicted = 0;
        for i in 0..5_000 {
            let (new, n) = seen.insert(&digest(i), 1_000 + i);
            assert!(new, "digest {i}");
            evicted += n;
            assert!(!seen.insert(&digest(i), 1_000 + i).0, "digest {i} twice");
            assert!(seen.len() <= 1_000);
        }
        assert_eq!(evicted, 4_000);
        assert_eq!(seen.len(), 1_000);
        // The newest are known, the oldest forgotten: a late copy of one is fed again.
        assert!((4_000..5_000).all(|i| seen.contains(&digest(i))));
        assert!(!(0..4_000).any(|i| seen.contains(&digest(i))));
        // Rows whose digests are all forgotten are deleted: what is on disk is the set's
        // written part, plus at most the forgotten head of one row.
        seen.flush().unwrap();
        let disk = on_disk(&tree);
        assert!((1_000..1_000 + ROW).contains(&disk), "{disk} digests on disk");
    }

    #[test]
    fn a_restart_reads_the_set_back_and_applies_a_smaller_bound() {
        let (_db, tree) = tree();
        let (mut seen, _) = Seen::load(tree.clone(), 10_000, 0).unwrap();
        for i in 0..700 {
            seen.insert(&digest(i), 5_000);
        }
        // Not yet flushed: 512 of them are in two full rows.
        assert_eq!(on_disk(&tree), 2 * ROW);
        seen.flush().unwrap();
        drop(seen);
        let (seen, forgotten) = Seen::load(tree.clone(), 10_000, 0).unwrap();
        assert_eq!(forgotten, Forgotten::default());
        assert_eq!(seen.len(), 700);
        assert!((0..700).all(|i| seen.contains(&digest(i))));
        drop(seen);
        // A smaller bound keeps the newest.
        let (seen, forgotten) = Seen::load(tree.clone(), 300, 0).unwrap();
        assert_eq!(forgotten, Forgotten { expired: 0, evicted: 400 });
        assert!((400..700).all(|i| seen.contains(&digest(i))));
        assert!(!(0..400).any(|i| seen.contains(&digest(i))));
        // The first row (0..256) was wholly forgotten and deleted.
        assert_eq!(on_disk(&tree), 700 - ROW);
    }

    #[test]
    fn the_dedup_horizon_forgets_whole_rows_in_time_order() {
        let (_db, tree) = tree();
        let (mut seen, _) = Seen::load(tree.clone(), 10_000, 0).unwrap();
        for i in 0..300 {
            seen.insert(&digest(i), 1_000);
        }
        seen.flush().unwrap();
        for i in 300..400 {
            seen.insert(&digest(i), 2_000);
        }
        seen.flush().unwrap();
        for i in 400..450 {
            seen.insert(&digest(i), 3_000);
        }
        // Rows: 0..256 and 256..300 at 1000 (the second flushed at the newest time then),
        // 300..400 at 2000; 400..450 pending at 3000.
        assert_eq!(seen.forget_before(1_000).unwrap(), 0);
        assert_eq!(seen.forget_before(1_500).unwrap(), 300);
        assert!(!seen.contains(&digest(0)) && !seen.contains(&digest(299)));
        assert!(seen.contains(&digest(300)) && seen.contains(&digest(449)));
        assert_eq!(on_disk(&tree), 100);
        assert_eq!(seen.forget_before(3_001).unwrap(), 150);
        assert_eq!(seen.len(), 0);
        assert_eq!(on_disk(&tree), 0);
        // Past the horizon at load: deleted, counted as expired.
        for i in 0..10 {
            seen.insert(&digest(i), 4_000);
        }
        seen.flush().unwrap();
        drop(seen);
        let (seen, forgotten) = Seen::load(tree.clone(), 10_000, 4_001).unwrap();
        assert_eq!(forgotten, Forgotten { expired: 10, evicted: 0 });
        assert_eq!(seen.len(), 0);
        assert!(tree.is_empty());
    }

    #[test]
    fn a_clock_that_goes_back_keeps_the_rows_in_order() {
        let (_db, tree) = tree();
        let (mut seen, _) = Seen::load(tree.clone(), 300, 0).unwrap();
        for i in 0..10 {
            seen.insert(&digest(i), 9_000);
        }
        seen.flush().unwrap();
        for i in 10..20 {
            seen.insert(&digest(i), 1_000);
        }
        seen.flush().unwrap();
        let times: Vec<u64> = tree
            .iter()
            .map(|kv| u64::from_be_bytes(kv.unwrap().0[..8].try_into().unwrap()))
            .collect();
        assert_eq!(times, [9_000, 9_000]);
        // Eviction then takes the oldest first, the first row with its last digest.
        for i in 20..310 {
            seen.insert(&digest(i), 1_000);
        }
        assert!(!seen.contains(&digest(9)) && seen.contains(&digest(10)));
        assert_eq!(tree.len(), 2, "the first row deleted; the second and a full third kept");
    }

    #[test]
    fn a_bound_below_a_row_evicts_pending_digests() {
        let (_db, tree) = tree();
        let (mut seen, _) = Seen::load(tree.clone(), 10, 0).unwrap();
        for i in 0..25 {
            assert_eq!(seen.insert(&digest(i), 1).1, u64::from(i >= 10));
        }
        assert!((15..25).all(|i| seen.contains(&digest(i))));
        seen.flush().unwrap();
        assert_eq!(on_disk(&tree), 10);
        drop(seen);
        let (seen, _) = Seen::load(tree, 10, 0).unwrap();
        assert!((15..25).all(|i| seen.contains(&digest(i))));
    }
}
