//! Report and count rows (and envelope digests) acknowledged since the last checkpoint, held in
//! memory and written to sled merged at the checkpoint.
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
//! 3. written to sled at the next checkpoint (every 1 MiB of journal or 2 s) as one row per
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
//! # Envelope digests
//!
//! A group's new envelope digests are held the same way, as `G` rows per second of the
//! envelopes' `created_at` (`mod.rs`, "Duplicates"), with a hash set of them that the
//! writer's duplicate test reads. They are not among the merged rows: the checkpoint (and a
//! replay) merges each second's digests into that second's rows in sled instead
//! ([`Unflushed::digest_buckets`]), a union, so merging the same digests twice changes
//! nothing and the seq range removal above leaves `G` rows alone.
//!
//! # Readers
//!
//! A scan takes a [snapshot](Unflushed::rows) of the buckets it reads together with the
//! [floor](Unflushed::floor): rows in sled with a seq at or above the floor were written after
//! the snapshot (a checkpoint moving what the snapshot holds into sled, or a later fleet
//! group) and are skipped, so a report is never seen twice nor missed by a scan that runs
//! across a checkpoint.

use std::collections::{BTreeMap, HashSet};

use sled::IVec;

use super::codec::{self, Entry};

/// A bucket's rows since the last checkpoint: the groups' own rows, as journaled.
struct Bucket {
    /// The seq of the first group that had entries in this bucket: the merged rows' key.
    first_seq: u64,
    /// Each row's seq, chunk and value (a range of [`Unflushed::data`]), in commit order.
    rows: Vec<Held>,
}

struct Held {
    seq: u64,
    chunk: u32,
    value: std::ops::Range<usize>,
}

/// The unflushed rows of the three row prefixes (reports, counts, envelope digests), by
/// (prefix, bucket).
pub(super) struct Unflushed {
    buckets: BTreeMap<(u8, u64), Bucket>,
    /// The digests of the `G` rows held: the writer's duplicate test reads them here.
    digests: HashSet<[u8; 32]>,
    /// The rows' values, one after the other: one buffer, kept across checkpoints, instead of
    /// an allocation per row that lives until the checkpoint.
    data: Vec<u8>,
    floor: u64,
    rows: usize,
}

/// A buffer grown past this by a burst is let go at the next checkpoint.
const KEEP_DATA: usize = 2 * super::journal::CHECKPOINT_BYTES as usize;

impl Unflushed {
    /// Empty; rows in sled with a seq below `floor` are all there is.
    pub(super) fn new(floor: u64) -> Unflushed {
        Unflushed {
            buckets: BTreeMap::new(),
            digests: HashSet::new(),
            data: Vec::new(),
            floor,
            rows: 0,
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Group rows held (for tests and the open's log line).
    pub(super) fn len(&self) -> usize {
        self.rows
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

    /// A group's row (`key` a row key: prefix ‖ bucket ‖ seq ‖ chunk), as journaled: by the
    /// writer after the group's record is synced, and by a replay.
    pub(super) fn add_row(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let (prefix, bucket, seq, chunk) = super::split_row_key(key)?;
        match prefix {
            super::P_REPORTS | super::P_TARGETS => {}
            super::P_ENVELOPE_ROWS => {
                self.digests.extend(super::digest_row_digests(value)?);
            }
            other => return Err(format!("a deferred row of prefix {other:#04x}")),
        }
        let b = self
            .buckets
            .entry((prefix, bucket))
            .or_insert_with(|| Bucket { first_seq: seq, rows: Vec::new() });
        let start = self.data.len();
        self.data.extend_from_slice(value);
        b.rows.push(Held { seq, chunk, value: start..self.data.len() });
        self.rows += 1;
        Ok(())
    }

    /// The least bucket of a row held with one of `prefixes`.
    pub(super) fn first_bucket(&self, prefixes: &[u8]) -> Option<u64> {
        prefixes
            .iter()
            .filter_map(|&p| self.buckets.range((p, 0)..=(p, u64::MAX)).next().map(|(k, _)| k.1))
            .min()
    }

    /// True if a `G` row held has `digest`.
    pub(super) fn contains_digest(&self, digest: &[u8; 32]) -> bool {
        self.digests.contains(digest)
    }

    /// The envelope digests held, per bucket: sorted, distinct, with the latest `until` of
    /// their rows (`v1_until` for a format 6 row, replayed from its journal). (Errors: a row's
    /// key and what is wrong with it.)
    #[allow(clippy::type_complexity)]
    pub(super) fn digest_buckets(
        &self,
        v1_until: u64,
    ) -> Result<Vec<(u64, Vec<[u8; 32]>, u64)>, (Vec<u8>, String)> {
        let p = super::P_ENVELOPE_ROWS;
        let mut out = Vec::new();
        for (&(_, bucket), b) in self.buckets.range((p, 0)..=(p, u64::MAX)) {
            let mut digests: Vec<[u8; 32]> = Vec::new();
            let mut until = 0;
            for held in &b.rows {
                let value = &self.data[held.value.clone()];
                let key = || super::row_key(p, bucket, held.seq, held.chunk).to_vec();
                let (own, _) = super::digest_row(value).map_err(|e| (key(), e))?;
                until = until.max(own.unwrap_or(v1_until));
                digests.extend(super::digest_row_digests(value).map_err(|e| (key(), e))?);
            }
            digests.sort_unstable();
            digests.dedup();
            out.push((bucket, digests, until));
        }
        Ok(out)
    }

    /// Every bucket held (prefix, bucket), with the least and greatest first seq of them.
    #[allow(clippy::type_complexity)]
    pub(super) fn buckets_and_seqs(&self) -> (Vec<(u8, u64)>, Option<(u64, u64)>) {
        let keys: Vec<(u8, u64)> = self.buckets.keys().copied().collect();
        let seqs = self.buckets.values().map(|b| b.first_seq);
        let range = seqs.clone().min().zip(seqs.max());
        (keys, range)
    }

    /// The merged rows of every bucket, in key order: per bucket, its groups' entries in
    /// commit order, stably sorted by (event time, id) (event time alone for counts), as rows
    /// keyed with the bucket's first seq. A function of the rows added and their order only.
    /// One bucket at a time, so what is decoded and encoded at once is one bucket's.
    pub(super) fn for_each_merged<E>(
        &self,
        mut f: impl FnMut(IVec, IVec) -> Result<(), E>,
        corrupt: impl Fn(&[u8], String) -> E,
    ) -> Result<(), E> {
        let mut out = Vec::new();
        for (&(prefix, bucket), b) in &self.buckets {
            if prefix == super::P_ENVELOPE_ROWS {
                // Merged into the bucket's rows in sled instead (`digest_buckets`).
                continue;
            }
            let with_ids = prefix == super::P_REPORTS;
            // Records borrowed from the held rows: no copy per entry.
            let mut entries: Vec<Entry<&[u8]>> = Vec::new();
            for held in &b.rows {
                let key = super::row_key(prefix, bucket, held.seq, held.chunk);
                let value = &self.data[held.value.clone()];
                let row =
                    codec::decode_row(bucket, with_ids, value).map_err(|e| corrupt(&key, e))?;
                entries.extend(row.into_iter().map(|(event_at, id, record)| Entry {
                    event_at,
                    id,
                    record,
                }));
            }
            if with_ids {
                entries.sort_by_key(|e| (e.event_at, e.id));
            } else {
                entries.sort_by_key(|e| e.event_at);
            }
            super::encode_rows(prefix, bucket, b.first_seq, &entries, |key, value| {
                out.push((IVec::from(&key[..]), IVec::from(value)));
            });
            for (k, v) in out.drain(..) {
                f(k, v)?;
            }
        }
        Ok(())
    }

    /// [`Unflushed::for_each_merged`] collected.
    #[cfg(test)]
    pub(super) fn merged(&self) -> Result<Vec<(IVec, IVec)>, String> {
        let mut out = Vec::new();
        self.for_each_merged(
            |k, v| {
                out.push((k, v));
                Ok(())
            },
            |_, e| e,
        )?;
        Ok(out)
    }

    /// The rows held of `prefix`'s buckets `from <= bucket < to`, in key order (the groups'
    /// own rows: a reader sorts a bucket's entries anyway): a reader's snapshot, taken with
    /// [`Unflushed::floor`] under the same lock.
    pub(super) fn rows(&self, prefix: u8, from: u64, to: u64) -> Vec<(IVec, IVec)> {
        if from >= to {
            return Vec::new();
        }
        let out: Vec<(IVec, IVec)> = self
            .buckets
            .range((prefix, from)..(prefix, to))
            .flat_map(|(&(prefix, bucket), b)| {
                b.rows.iter().map(move |h| {
                    let key = super::row_key(prefix, bucket, h.seq, h.chunk);
                    (IVec::from(&key[..]), IVec::from(&self.data[h.value.clone()]))
                })
            })
            .collect();
        // Buckets in order, and within one its groups' rows are added in seq order, chunks in
        // order: key order, which the merge with sled's rows relies on.
        debug_assert!(out.windows(2).all(|w| w[0].0 < w[1].0));
        out
    }

    /// After the merged rows are in sled: empty, and every row in sled below `floor`.
    pub(super) fn clear(&mut self, floor: u64) {
        self.buckets.clear();
        self.digests.clear();
        self.rows = 0;
        if self.data.capacity() > KEEP_DATA {
            self.data = Vec::new();
        } else {
            self.data.clear();
        }
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
                let (prefix, bucket, _, _) = crate::store::split_row_key(k).unwrap();
                let entries = codec::decode_row(bucket, prefix == P_REPORTS, v).unwrap();
                (k.to_vec(), entries.into_iter().map(|(t, id, r)| (t, id, r.to_vec())).collect())
            })
            .collect()
    }

    /// Held `G` rows answer the duplicate test until the checkpoint, give each bucket's
    /// digests sorted and distinct, and are not among the merged report and count rows.
    #[test]
    fn held_digests_are_found_and_given_per_bucket_in_order() {
        use crate::store::{P_ENVELOPE_ROWS, encode_digest_rows, row_key};
        let mut held = Unflushed::new(3);
        let d = |first: u8, rest: u8| {
            let mut d = [rest; 32];
            d[0] = first;
            d
        };
        let add = |held: &mut Unflushed, bucket, seq, until, digests: &[[u8; 32]]| {
            encode_digest_rows(bucket, seq, until, digests, |k, v| held.add_row(&k, &v).unwrap());
        };
        add(&mut held, 5_000, 3, 70_000, &[d(2, 0), d(9, 0)]);
        add(&mut held, 5_000, 4, 60_000, &[d(1, 0), d(2, 1), d(7, 0)]);
        add(&mut held, 9_000, 4, 60_000, &[d(3, 0)]);
        // A format 6 row from its journal: no `until` of its own.
        let mut v1 = vec![1];
        v1.extend_from_slice(&d(4, 0));
        held.add_row(&row_key(P_ENVELOPE_ROWS, 12_000, 4, 0), &v1).unwrap();
        assert!(held.contains_digest(&d(7, 0)) && held.contains_digest(&d(3, 0)));
        assert!(held.contains_digest(&d(4, 0)));
        assert!(!held.contains_digest(&d(7, 1)));
        let buckets = held.digest_buckets(99_000).unwrap();
        assert_eq!(
            buckets,
            vec![
                (5_000, vec![d(1, 0), d(2, 0), d(2, 1), d(7, 0), d(9, 0)], 70_000),
                (9_000, vec![d(3, 0)], 60_000),
                (12_000, vec![d(4, 0)], 99_000),
            ]
        );
        assert_eq!(held.first_bucket(b"RT"), None);
        assert!(held.merged().unwrap().is_empty());
        assert!(held.add_row(&row_key(P_ENVELOPE_ROWS, 5_000, 5, 0), &[1, 2]).is_err());
        assert!(held.add_row(&row_key(b'X', 5_000, 5, 0), &[1]).unwrap_err().contains("0x58"));
        held.clear(5);
        assert!(!held.contains_digest(&d(7, 0)));
    }

    /// The merged rows are a function of the rows added: what a replay of the journaled rows
    /// rebuilds merges to the same keys and values, which is what makes a replay over an
    /// interrupted checkpoint exact.
    /// The checkpoint's merge borrows the held records: its allocations grow with the rows it
    /// reads and writes, not with their entries (a copy of each record was one per entry).
    #[test]
    fn merging_held_rows_allocates_per_row_not_per_entry() {
        let count = |n: u64| {
            let mut held = Unflushed::new(1);
            // Two groups' rows of one bucket, `n` entries each, records of 8 bytes.
            for seq in [1, 2] {
                let entries: Vec<Entry> =
                    (0..n).map(|i| entry(1000 + i, (i % 251) as u8, &[seq as u8; 8])).collect();
                crate::store::encode_rows(P_REPORTS, 1000, seq, &entries, |k, v| {
                    held.add_row(&k, &v).unwrap()
                });
            }
            let mut rows = 0;
            let allocations = allocation_counter::measure(|| {
                held.for_each_merged(
                    |_, _| {
                        rows += 1;
                        Ok::<_, String>(())
                    },
                    |_, e| e,
                )
                .unwrap();
            })
            .count_total;
            (allocations, rows)
        };
        let ((few, rows_few), (many, rows_many)) = (count(40), count(80));
        assert_eq!((rows_few, rows_many), (1, 2), "80 and 160 entries of 26 bytes: 1 and 2 rows");
        assert!(
            many - few <= 12,
            "{few} allocations to merge 80 entries, {many} to merge 160: more per entry"
        );
    }

    #[test]
    fn held_rows_merge_to_one_row_per_bucket_in_event_order() {
        let mut held = Unflushed::new(7);
        let groups: Vec<(u64, u8, u64, Vec<Entry>)> = vec![
            (7, P_REPORTS, 1000, vec![entry(1500, 9, b"a"), entry(1700, 1, b"b")]),
            (7, P_TARGETS, 1000, vec![entry(1200, 0, b"t1")]),
            (8, P_REPORTS, 1000, vec![entry(1100, 5, b"c"), entry(1500, 2, b"d")]),
            (8, P_TARGETS, 1000, vec![entry(1200, 0, b"t2")]),
            (9, P_REPORTS, 3000, vec![entry(3000, 3, b"e")]),
        ];
        for (seq, prefix, bucket, entries) in &groups {
            crate::store::encode_rows(*prefix, *bucket, *seq, entries, |k, v| {
                held.add_row(&k, &v).unwrap()
            });
        }
        let merged = held.merged().unwrap();
        assert_eq!(held.merged().unwrap(), merged);
        let rows = decoded(&merged);
        // One row per bucket, keyed with the bucket's first seq; in (event time, id) order;
        // counts of one time in commit order.
        assert_eq!(rows.len(), 3);
        let times: Vec<(u64, u8)> = rows[0].1.iter().map(|(t, id, _)| (*t, id[0])).collect();
        assert_eq!(times, vec![(1100, 5), (1500, 2), (1500, 9), (1700, 1)]);
        assert_eq!(rows[0].0, crate::store::row_key(P_REPORTS, 1000, 7, 0).to_vec());
        assert_eq!(rows[1].0, crate::store::row_key(P_REPORTS, 3000, 9, 0).to_vec());
        let counts: Vec<&[u8]> = rows[2].1.iter().map(|(_, _, r)| &r[..]).collect();
        assert_eq!(counts, vec![&b"t1"[..], &b"t2"[..]]);
        assert_eq!(held.len(), 5);
        // A reader's snapshot: the groups' own rows of the range, in key order.
        let snapshot = held.rows(P_REPORTS, 0, 2000);
        let keys: Vec<Vec<u8>> = snapshot.iter().map(|(k, _)| k.to_vec()).collect();
        let want: Vec<Vec<u8>> = [7, 8]
            .iter()
            .map(|&seq| crate::store::row_key(P_REPORTS, 1000, seq, 0).to_vec())
            .collect();
        assert_eq!(keys, want);
        assert!(held.rows(P_REPORTS, 4000, 4000).is_empty());
        assert_eq!(held.buckets_and_seqs().1, Some((7, 9)));
        held.clear(10);
        assert!(held.is_empty());
        assert_eq!(held.floor(), 10);
    }
}
