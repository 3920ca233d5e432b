//! Report and count rows acknowledged since the last checkpoint, held in memory and written to
//! sled merged at the checkpoint.
//!
//! A group commit writes one row per event-time bucket it has reports in (what bounds a read
//! to one bucket of reports at a time). NEL reports arrive with ages spread over the minute a
//! browser queued them for, so a group of a few uploads has reports in tens of buckets, one
//! or two each: tens of sled inserts (and node splits) per group, most of a NEL upload's store
//! CPU (`docs/performance.md`, sixth round). Instead, a group's rows are:
//!
//! 1. journaled as they always were (one record, one `fdatasync`, before the answer), marked
//!    *deferred* (`journal::Batch::insert_deferred`), and not applied to sled;
//! 2. added here, entry by entry, per bucket;
//! 3. written to sled at the next checkpoint (every 4 MiB of journal or 2 s) as one row per
//!    bucket (chunks of [`ROW_BYTES`](super::ROW_BYTES)), keyed with the first group seq that
//!    had entries in it, then sled is flushed and synced and the journal starts over.
//!
//! So what is held here is bounded by what a checkpoint bounds: the journal's bytes.
//!
//! # Recovery
//!
//! A replay puts the deferred rows of the journal's records back here, in record order, and
//! writes them merged before the open's own checkpoint. The merged rows are a function of the
//! records alone (entries in commit order, then a stable sort by event time and id; the key's
//! seq is the first record's that had the bucket), so a replay after a crash in the middle of a
//! checkpoint writes the same keys with the same values over whatever part of them sled had
//! persisted. Before writing them, the open also removes every row of those buckets whose seq
//! is within the replayed records' seqs: whatever an interrupted checkpoint left under another
//! chunking is gone too, and nothing outside the replayed records is touched (a fleet group's
//! rows go to sled directly, between checkpoints, with a seq of its own).
//!
//! # Readers
//!
//! A scan takes a [snapshot](Unflushed::rows) of the buckets it reads together with the
//! [floor](Unflushed::floor): rows in sled with a seq at or above the floor were written after
//! the snapshot (a checkpoint moving what the snapshot holds into sled, or a later fleet
//! group) and are skipped, so a report is never seen twice nor missed by a scan that runs
//! across a checkpoint.

use std::collections::BTreeMap;

use sled::IVec;

use super::codec::{self, Entry};

/// A bucket's entries since the last checkpoint.
struct Bucket {
    /// The seq of the first group that had entries in this bucket: the merged rows' key.
    first_seq: u64,
    entries: Vec<Entry>,
    /// Entries are in (event time, id) order (a stable sort keeps the order of equal ones).
    sorted: bool,
}

impl Bucket {
    fn sort(&mut self, with_ids: bool) {
        if !self.sorted {
            if with_ids {
                self.entries.sort_by_key(|e| (e.event_at, e.id));
            } else {
                self.entries.sort_by_key(|e| e.event_at);
            }
            self.sorted = true;
        }
    }
}

/// The unflushed rows of both row prefixes, by (prefix, bucket).
pub(super) struct Unflushed {
    buckets: BTreeMap<(u8, u64), Bucket>,
    floor: u64,
    entries: usize,
}

impl Unflushed {
    /// Empty; rows in sled with a seq below `floor` are all there is.
    pub(super) fn new(floor: u64) -> Unflushed {
        Unflushed { buckets: BTreeMap::new(), floor, entries: 0 }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Entries held (for tests and the checkpoint's log line).
    pub(super) fn len(&self) -> usize {
        self.entries
    }

    /// The least seq a row written to sled after this state can have.
    pub(super) fn floor(&self) -> u64 {
        self.floor
    }

    /// After a fleet group wrote its rows to sled directly (with nothing held here): rows up to
    /// its seq are in sled.
    pub(super) fn raise_floor(&mut self, floor: u64) {
        debug_assert!(self.is_empty());
        self.floor = self.floor.max(floor);
    }

    /// A group's entries of one bucket, in the order its row holds them.
    pub(super) fn add(
        &mut self,
        prefix: u8,
        bucket: u64,
        seq: u64,
        entries: impl IntoIterator<Item = Entry>,
    ) {
        let b = self.buckets.entry((prefix, bucket)).or_insert_with(|| Bucket {
            first_seq: seq,
            entries: Vec::new(),
            sorted: true,
        });
        let before = b.entries.len();
        b.entries.extend(entries);
        self.entries += b.entries.len() - before;
        b.sorted = before == 0;
    }

    /// A deferred row of a replayed record (`key` a row key: prefix ‖ bucket ‖ seq ‖ chunk).
    pub(super) fn add_row(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let (prefix, bucket, seq) = super::split_row_key(key)?;
        let entries = codec::decode_row(bucket, prefix == super::P_REPORTS, value)?;
        self.add(
            prefix,
            bucket,
            seq,
            entries.into_iter().map(|(event_at, id, record)| Entry {
                event_at,
                id,
                record: record.to_vec(),
            }),
        );
        Ok(())
    }

    /// Every bucket held (prefix, bucket), with the least and greatest first seq of them.
    #[allow(clippy::type_complexity)]
    pub(super) fn buckets_and_seqs(&self) -> (Vec<(u8, u64)>, Option<(u64, u64)>) {
        let keys: Vec<(u8, u64)> = self.buckets.keys().copied().collect();
        let seqs = self.buckets.values().map(|b| b.first_seq);
        let range = seqs.clone().min().zip(seqs.max());
        (keys, range)
    }

    /// The merged rows of every bucket, in key order.
    pub(super) fn merged(&mut self) -> Vec<(IVec, IVec)> {
        self.rows_in(None)
    }

    /// The merged rows of `prefix`'s buckets `from <= bucket < to`, in key order: a reader's
    /// snapshot (with [`Unflushed::floor`], taken under the same lock).
    pub(super) fn rows(&mut self, prefix: u8, from: u64, to: u64) -> Vec<(IVec, IVec)> {
        if from >= to {
            return Vec::new();
        }
        self.rows_in(Some((prefix, from, to)))
    }

    fn rows_in(&mut self, range: Option<(u8, u64, u64)>) -> Vec<(IVec, IVec)> {
        let mut out = Vec::new();
        let buckets: Box<dyn Iterator<Item = (&(u8, u64), &mut Bucket)>> = match range {
            None => Box::new(self.buckets.iter_mut()),
            Some((prefix, from, to)) => {
                Box::new(self.buckets.range_mut((prefix, from)..(prefix, to)))
            }
        };
        for (&(prefix, bucket), b) in buckets {
            b.sort(prefix == super::P_REPORTS);
            super::encode_rows(prefix, bucket, b.first_seq, &b.entries, |key, value| {
                out.push((IVec::from(&key[..]), IVec::from(value)));
            });
        }
        out
    }

    /// After the merged rows are in sled: empty, and every row in sled below `floor`.
    pub(super) fn clear(&mut self, floor: u64) {
        self.buckets.clear();
        self.entries = 0;
        self.floor = self.floor.max(floor);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{P_REPORTS, P_TARGETS};

    fn entry(event_at: u64, id: u8, record: &[u8]) -> Entry {
        Entry { event_at, id: [id; 16], record: record.to_vec() }
    }

    type Decoded = (Vec<u8>, Vec<(u64, [u8; 16], Vec<u8>)>);

    fn decoded(rows: &[(IVec, IVec)]) -> Vec<Decoded> {
        rows.iter()
            .map(|(k, v)| {
                let (prefix, bucket, _) = crate::store::split_row_key(k).unwrap();
                let entries = codec::decode_row(bucket, prefix == P_REPORTS, v).unwrap();
                (k.to_vec(), entries.into_iter().map(|(t, id, r)| (t, id, r.to_vec())).collect())
            })
            .collect()
    }

    /// What a replay rebuilds from the journaled rows is what the writer held: the same merged
    /// keys and values, which is what makes a replay over an interrupted checkpoint exact.
    #[test]
    fn a_replay_of_the_journaled_rows_merges_to_the_same_rows() {
        let mut live = Unflushed::new(7);
        let groups: Vec<(u64, u8, u64, Vec<Entry>)> = vec![
            (7, P_REPORTS, 1000, vec![entry(1500, 9, b"a"), entry(1700, 1, b"b")]),
            (7, P_TARGETS, 1000, vec![entry(1200, 0, b"t1")]),
            (8, P_REPORTS, 1000, vec![entry(1100, 5, b"c"), entry(1500, 2, b"d")]),
            (8, P_TARGETS, 1000, vec![entry(1200, 0, b"t2")]),
            (9, P_REPORTS, 3000, vec![entry(3000, 3, b"e")]),
        ];
        let mut journaled = Vec::new();
        for (seq, prefix, bucket, entries) in &groups {
            crate::store::encode_rows(*prefix, *bucket, *seq, entries, |k, v| {
                journaled.push((k.to_vec(), v))
            });
            let copy = entries.iter().map(|e| entry(e.event_at, e.id[0], &e.record));
            live.add(*prefix, *bucket, *seq, copy);
        }
        let mut replayed = Unflushed::new(0);
        for (k, v) in &journaled {
            replayed.add_row(k, v).unwrap();
        }
        let (live_rows, replayed_rows) = (live.merged(), replayed.merged());
        assert_eq!(decoded(&live_rows), decoded(&replayed_rows));
        let rows = decoded(&live_rows);
        // One row per bucket, keyed with the bucket's first seq; in (event time, id) order;
        // counts of one time in commit order.
        assert_eq!(rows.len(), 3);
        let times: Vec<(u64, u8)> = rows[0].1.iter().map(|(t, id, _)| (*t, id[0])).collect();
        assert_eq!(times, vec![(1100, 5), (1500, 2), (1500, 9), (1700, 1)]);
        assert_eq!(rows[0].0, crate::store::row_key(P_REPORTS, 1000, 7, 0).to_vec());
        assert_eq!(rows[1].0, crate::store::row_key(P_REPORTS, 3000, 9, 0).to_vec());
        let counts: Vec<&[u8]> = rows[2].1.iter().map(|(_, _, r)| &r[..]).collect();
        assert_eq!(counts, vec![&b"t1"[..], &b"t2"[..]]);
        assert_eq!(live.len(), 7);
        // A reader's snapshot is the same rows, by prefix and bucket range.
        assert_eq!(decoded(&live.rows(P_REPORTS, 2000, 4000)), rows[1..2].to_vec());
        assert!(live.rows(P_REPORTS, 4000, 4000).is_empty());
        assert_eq!(live.buckets_and_seqs().1, Some((7, 9)));
        live.clear(10);
        assert!(live.is_empty());
        assert_eq!(live.floor(), 10);
    }
}
