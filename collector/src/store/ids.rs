//! The id index of agent reports, packed: sorted runs of ids (chunks) under keys
//! `I` ‖ the chunk's lower bound (16 bytes), each value the chunk's ids in order, 16 bytes
//! each, at most [`MAX_CHUNK`] of them; and in front of it the ids written since the last
//! merge ([`Pending`]), one key per group commit.
//!
//! A key per id made sled keep bookkeeping for a leaf per dozen ids (its leaves hold at most
//! 16 keys), about 85 MiB per million ids; a chunk holds 32 to 64 of them. The chunk that
//! holds (or would hold) an id is the one with the greatest key at or below it; its key is at
//! or below every id in it, and every id in it is below the next chunk's key. A chunk over
//! [`MAX_CHUNK`] is split into pieces of [`FILL`] ids (each keyed by its first id), an
//! emptied one is removed.
//!
//! [`IdChunks`] loads the chunks one write step touches, answers and changes them in memory,
//! and writes the changed ones into the step's batch.
//!
//! # Pending runs, merged in bulk
//!
//! Writing each new id into its chunk rewrote a chunk value (about 1 KiB) per stored report,
//! which was most of what a group commit wrote. Agents make ids that start with the time
//! (`ReportId::new`), so most new ids sort after every timely id in the chunks (timely: made by
//! the group's time plus [`AHEAD_MS`]). A group commit writes those as one *run*, sorted, in
//! pieces of at most [`RUN_PIECE`] ids (`P` ‖ group seq ‖ piece, see [`run_piece_key`]), and
//! the writer keeps every id of the runs in memory ([`Pending`], at
//! most about [`MERGE_AT`] plus one group's). Once that many are pending, a write step of its
//! own (one journal record) merges the oldest runs, at least [`MERGE_STEP`] ids, into the
//! chunks and deletes them: mostly new chunks appended at the end of the timely ids, few
//! rewritten. A duplicate test is then: in [`Pending`] (memory), or timely and above every
//! timely id in the chunks (memory: nothing to read), or in its chunk (one read).
//!
//! Any other new id had its chunk read for the duplicate test anyway and goes into it in the
//! same group, as every id did before runs: an id at or below the newest merged ones (made
//! before them), and an id that is not timely (128 random bits, as agents made them before,
//! or a clock far ahead). Such ids cost what they cost then and take no memory, and as they do
//! not move what the writer knows of the timely end of the chunks, a sender of such ids does
//! not push other agents' ids out of runs. (A sender of timely ids made ahead, up to
//! [`AHEAD_MS`], can: for as long as that is ahead, new ids take the slower path.)

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::ops::Bound;

use super::journal::Batch;
use super::{P_IDS, P_RUNS};

/// Most ids in one chunk (1 KiB).
pub(super) const MAX_CHUNK: usize = 64;

/// Ids per piece when a chunk over [`MAX_CHUNK`] is split: three quarters full, so the ids
/// that arrive a little late (made before the last merge, delivered after it) find room in
/// the chunks at the end without splitting them again at once.
pub(super) const FILL: usize = MAX_CHUNK * 3 / 4;

/// Pending ids that make the writer merge the oldest runs into the chunks before its next
/// group (about 3 MiB of memory at most: ids of a hash set, 16 bytes each and its overhead).
pub(super) const MERGE_AT: usize = 131_072;

/// Ids merged by one write step (whole runs, the oldest first, at least this many unless
/// fewer are pending): its journal record holds every chunk it changes, so this bounds the
/// record (about 8 MiB when each id falls in a chunk of its own).
pub(super) const MERGE_STEP: usize = 8_192;

/// Chunk keys [`IdChunks::load_sorted`] reads past without finding an id before it seeks the
/// next id's chunk instead (about a leaf of sled's: 16 keys).
const WALK: usize = 16;

/// Id chunks loaded for one write step, with what changed.
#[derive(Default)]
pub(super) struct IdChunks {
    chunks: BTreeMap<[u8; 16], Vec<[u8; 16]>>,
    dirty: BTreeSet<[u8; 16]>,
}

/// The `rows` key of the chunk keyed `bound`.
pub(super) fn chunk_key(bound: &[u8; 16]) -> [u8; 17] {
    let mut key = [0; 17];
    key[0] = P_IDS;
    key[1..].copy_from_slice(bound);
    key
}

/// A chunk value's ids.
pub(super) fn decode_chunk(value: &[u8]) -> Result<Vec<[u8; 16]>, String> {
    if value.len() % 16 != 0 {
        return Err(format!("id chunk of {} bytes, not a multiple of 16", value.len()));
    }
    Ok(value.chunks_exact(16).map(|c| <[u8; 16]>::try_from(c).unwrap_or_default()).collect())
}

impl IdChunks {
    /// Loads (once) the chunk on disk that holds or would hold `id`. Call for every id before
    /// [`IdChunks::contains`], [`IdChunks::insert`] or [`IdChunks::remove`] of any of them.
    ///
    /// An id within the span of a chunk already loaded (from its key to its last id) reads
    /// nothing: no chunk key lies inside a chunk's span, so that chunk is the one. A delete
    /// step loads the ids of the reports it evicts, made together and so mostly in a few
    /// chunks; a seek each (sled's `next_back` copies the leaf it lands in) was most of the
    /// step's CPU.
    pub(super) fn load(&mut self, rows: &sled::Tree, id: &[u8; 16]) -> Result<(), String> {
        if self.covering(id).is_some_and(|(_, ids)| ids.last().is_some_and(|last| id <= last)) {
            return Ok(());
        }
        let found = rows
            .range(&[P_IDS][..]..=&chunk_key(id)[..])
            .next_back()
            .transpose()
            .map_err(|e| e.to_string())?;
        if let Some((k, v)) = found {
            self.keep(&k, &v)?;
        }
        Ok(())
    }

    /// Loads the chunk of every id of `sorted` (ascending), as [`IdChunks::load`] of each
    /// does, reading forward from one id's chunk for the next ids' while they are at most
    /// [`WALK`] chunk keys apart, and seeking anew past that. A merge step's ids (a run's,
    /// near each other) and a delete step's (the reports evicted together, made within
    /// seconds of each other) sit in neighbouring chunks: sled's forward iterator reads a leaf
    /// once for all its keys, where a seek per chunk copied the leaf each time.
    pub(super) fn load_sorted(
        &mut self,
        rows: &sled::Tree,
        sorted: &[[u8; 16]],
    ) -> Result<(), String> {
        let last_key = chunk_key(&[0xff; 16]);
        let mut i = 0;
        while let Some(id) = sorted.get(i) {
            self.load(rows, id)?;
            let from = chunk_key(id);
            let mut keys = rows
                .range::<&[u8], _>((Bound::Excluded(&from[..]), Bound::Included(&last_key[..])));
            // The chunk before the next key, when this walk read it (else the one loaded).
            let mut before: Option<(sled::IVec, sled::IVec)> = None;
            let mut idle = 0;
            loop {
                let next = keys.next().transpose().map_err(|e| e.to_string())?;
                let bound = match &next {
                    Some((k, _)) => Some(
                        <[u8; 16]>::try_from(k.get(1..).unwrap_or_default())
                            .map_err(|_| format!("id chunk key of {} bytes", k.len()))?,
                    ),
                    None => None,
                };
                // The ids below the next key are in the chunk before it.
                let start = i;
                while sorted.get(i).is_some_and(|id| bound.is_none_or(|b| *id < b)) {
                    i += 1;
                }
                if i > start {
                    if let Some((k, v)) = &before {
                        self.keep(k, v)?;
                    }
                    idle = 0;
                } else {
                    idle += 1;
                }
                if i == sorted.len() {
                    return Ok(());
                }
                before = next;
                if idle > WALK {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Keeps the chunk read as `key`, `value` (unless already loaded: it may have changed).
    fn keep(&mut self, key: &[u8], value: &[u8]) -> Result<(), String> {
        let bound: [u8; 16] = key
            .get(1..)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("id chunk key of {} bytes", key.len()))?;
        if let std::collections::btree_map::Entry::Vacant(slot) = self.chunks.entry(bound) {
            slot.insert(decode_chunk(value)?);
        }
        Ok(())
    }

    fn covering(&mut self, id: &[u8; 16]) -> Option<(&[u8; 16], &mut Vec<[u8; 16]>)> {
        self.chunks.range_mut(..=*id).next_back()
    }

    /// Whether `id` is in the index (its chunk loaded).
    pub(super) fn contains(&mut self, id: &[u8; 16]) -> bool {
        self.covering(id).is_some_and(|(_, ids)| ids.binary_search(id).is_ok())
    }

    /// Adds `id` (no-op when present).
    pub(super) fn insert(&mut self, id: [u8; 16]) {
        let bound = match self.covering(&id) {
            Some((bound, ids)) => {
                if let Err(at) = ids.binary_search(&id) {
                    ids.insert(at, id);
                }
                *bound
            }
            // Below every chunk: a new chunk starting at it.
            None => {
                self.chunks.insert(id, vec![id]);
                id
            }
        };
        self.dirty.insert(bound);
    }

    /// Removes `id` (no-op when absent).
    pub(super) fn remove(&mut self, id: &[u8; 16]) {
        if let Some((bound, ids)) = self.covering(id) {
            if let Ok(at) = ids.binary_search(id) {
                ids.remove(at);
                let bound = *bound;
                self.dirty.insert(bound);
            }
        }
    }

    /// Writes the changed chunks into `batch`: split when over [`MAX_CHUNK`], removed when
    /// empty.
    pub(super) fn write(self, batch: &mut Batch) {
        let IdChunks { chunks, dirty } = self;
        for bound in dirty {
            let Some(ids) = chunks.get(&bound) else { continue };
            if ids.is_empty() {
                batch.remove(&chunk_key(&bound)[..]);
                continue;
            }
            let pieces = if ids.len() > MAX_CHUNK { FILL } else { MAX_CHUNK };
            for (i, piece) in ids.chunks(pieces).enumerate() {
                // The first piece keeps its key (its lower bound may be below its first id).
                let key = if i == 0 { bound } else { piece[0] };
                batch.insert(&chunk_key(&key)[..], piece.concat());
            }
        }
    }
}

/// How far ahead of its group's time an id's made-at time may be and still count as timely
/// (see [`Pending`]): agents' clocks are rarely that far off; an id beyond it is treated like
/// one of 128 random bits.
pub(super) const AHEAD_MS: u64 = 10 * 60 * 1000;

/// The greatest id made by `at_ms` (its time, then 80 one bits).
fn made_by(at_ms: u64) -> [u8; 16] {
    let mut id = [0xff; 16];
    id[..6].copy_from_slice(&at_ms.min((1 << 48) - 1).to_be_bytes()[2..]);
    id
}

/// The greatest id in the chunks at or below `bound` (`None`: none). At most two chunks are
/// read: the last one keyed at or below `bound` may hold only greater ids, and then the one
/// before it holds the answer (its ids are below the next key).
fn greatest_at_or_below(rows: &sled::Tree, bound: &[u8; 16]) -> Result<Option<[u8; 16]>, String> {
    for item in rows.range(&[P_IDS][..]..=&chunk_key(bound)[..]).rev() {
        let (_, v) = item.map_err(|e| e.to_string())?;
        if let Some(id) = decode_chunk(&v)?.into_iter().rev().find(|id| id <= bound) {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// Most ids in one piece of a run (4 KiB). A group's run is at most [`super::MAX_GROUP`]
/// batches of up to 1,000 reports: one value of up to 4 MB. sled 0.34 writes a value, or a
/// leaf of up to 16 values, that is over a quarter of its 512 KiB segments to a file of its
/// own under `blobs/` and deletes that file only when the segment that points at it is
/// reclaimed, which may be never (sled issue 786): a store at its size bound with runs of a
/// few thousand ids grew its files by a blob each time such a leaf was rewritten. In pieces of
/// 4 KiB a leaf stays under that size, as `R`, `T`, `G` and `I` rows do.
pub(super) const RUN_PIECE: usize = 256;

/// The `rows` key prefix of the run of group `seq`: its pieces are keyed below it
/// ([`run_piece_key`]); a format 7 store's whole runs are keyed by exactly this.
pub(super) fn run_key(seq: u64) -> [u8; 9] {
    let mut key = [0; 9];
    key[0] = P_RUNS;
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The `rows` key of piece `piece` of the run of group `seq`: `P` ‖ seq u64 BE ‖ piece u32 BE.
pub(super) fn run_piece_key(seq: u64, piece: u32) -> [u8; 13] {
    let mut key = [0; 13];
    key[..9].copy_from_slice(&run_key(seq));
    key[9..].copy_from_slice(&piece.to_be_bytes());
    key
}

/// The group seq of a run key: a piece's (13 bytes) or a format 7 whole run's (9 bytes).
fn run_seq(key: &[u8]) -> Result<u64, String> {
    match key.len() {
        9 | 13 => Ok(u64::from_be_bytes(key[1..9].try_into().unwrap_or_default())),
        n => Err(format!("id run key of {n} bytes")),
    }
}

/// The ids of the runs not merged yet (see "Pending runs" above), and what the writer knows
/// of the chunks without reading them. Owned by the store's write lock; changed only after
/// the write it describes succeeded.
///
/// What it knows of the chunks is about *timely* ids, those made by `timely_bound` (the
/// newest group's time plus [`AHEAD_MS`]): every timely id in the chunks is at or below
/// `chunks_max`. An id above the bound (128 random bits, a clock far ahead) may be in any
/// chunk, so its chunk is read and it goes straight in; it does not move `chunks_max`, so a
/// sender of such ids cannot make every later agent id take that path. When the bound moves
/// past ids already in the chunks, [`Pending::advance`] takes them into `chunks_max`.
#[derive(Debug, Default)]
pub(super) struct Pending {
    ids: HashSet<[u8; 16]>,
    /// Their runs' group sequence numbers, oldest first.
    runs: VecDeque<u64>,
    /// At or above every timely id in the chunks (`None`: there is none). Only grows: after
    /// a removal it may be above every id, which costs a read, never a wrong answer.
    chunks_max: Option<[u8; 16]>,
    /// Ids above this are not timely. Only grows.
    timely_bound: [u8; 16],
}

impl Pending {
    /// Reads the runs and the timely end of the chunks of `rows` at `now_ms` (at open, after
    /// the journal's replay).
    pub(super) fn load(rows: &sled::Tree, now_ms: u64) -> Result<Pending, String> {
        let mut pending = Pending::default();
        for item in rows.scan_prefix([P_RUNS]) {
            let (k, v) = item.map_err(|e| e.to_string())?;
            let seq = run_seq(&k)?;
            pending.ids.extend(decode_chunk(&v)?);
            // A run's pieces are next to each other in key order.
            if pending.runs.back() != Some(&seq) {
                pending.runs.push_back(seq);
            }
        }
        pending.advance(rows, now_ms)?;
        Ok(pending)
    }

    /// Moves the timely bound to `now_ms` plus [`AHEAD_MS`] (never back), taking the chunked
    /// ids it passes into `chunks_max`. Once per second of `now_ms` at most, two chunk reads.
    pub(super) fn advance(&mut self, rows: &sled::Tree, now_ms: u64) -> Result<(), String> {
        let bound = made_by((now_ms / 1000 * 1000).saturating_add(AHEAD_MS));
        if bound <= self.timely_bound {
            return Ok(());
        }
        self.chunks_max = self.chunks_max.max(greatest_at_or_below(rows, &bound)?);
        self.timely_bound = bound;
        Ok(())
    }

    /// How many ids wait for a merge.
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no run waits for a merge (then no id does either). By runs, so a merge loop
    /// that goes until this holds ends: each step removes at least one run.
    pub(super) fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    #[cfg(test)]
    pub(super) fn ids(&self) -> &HashSet<[u8; 16]> {
        &self.ids
    }

    /// Whether `id` is in a run.
    pub(super) fn contains(&self, id: &[u8; 16]) -> bool {
        self.ids.contains(id)
    }

    /// Whether the chunks may hold `id` (if not, there is nothing to read for it, and a new
    /// id goes into the group's run).
    pub(super) fn may_be_in_chunks(&self, id: &[u8; 16]) -> bool {
        *id > self.timely_bound || self.chunks_max.is_some_and(|max| *id <= max)
    }

    /// Writes group `seq`'s new ids (none in the index) as its run into `batch`; once that
    /// write succeeded, [`Pending::add_run`] them.
    pub(super) fn write_run(seq: u64, new_ids: &mut [[u8; 16]], batch: &mut Batch) {
        if new_ids.is_empty() {
            return;
        }
        new_ids.sort_unstable();
        for (piece, ids) in (0u32..).zip(new_ids.chunks(RUN_PIECE)) {
            batch.insert(&run_piece_key(seq, piece)[..], ids.concat());
        }
    }

    /// Records a run written by [`Pending::write_run`].
    pub(super) fn add_run(&mut self, seq: u64, new_ids: &[[u8; 16]]) {
        if !new_ids.is_empty() {
            self.ids.extend(new_ids.iter().copied());
            self.runs.push_back(seq);
        }
    }

    /// One merge step as writes into `batch`: the oldest runs, `step` ids or more (or all
    /// there are; [`MERGE_STEP`] but in tests), into the chunks, and those runs removed. Once
    /// that write succeeded, hand what this returned to [`Pending::merged`].
    pub(super) fn merge_step(
        &self,
        rows: &sled::Tree,
        step: usize,
        batch: &mut Batch,
    ) -> Result<Merged, String> {
        let mut merged = Merged { runs: 0, ids: Vec::new() };
        for seq in &self.runs {
            if merged.ids.len() >= step {
                break;
            }
            let mut pieces = 0;
            for item in rows.scan_prefix(run_key(*seq)) {
                let (key, run) = item.map_err(|e| e.to_string())?;
                merged.ids.extend(decode_chunk(&run)?);
                batch.remove(&key[..]);
                pieces += 1;
            }
            if pieces == 0 {
                return Err(format!("id run of group {seq} missing"));
            }
            merged.runs += 1;
        }
        merged.ids.sort_unstable();
        let mut chunks = IdChunks::default();
        chunks.load_sorted(rows, &merged.ids)?;
        for id in &merged.ids {
            chunks.insert(*id);
        }
        chunks.write(batch);
        Ok(merged)
    }

    /// After a merge step's write: its runs and ids are not pending any more; the chunks reach
    /// up to its greatest id.
    pub(super) fn merged(&mut self, merged: &Merged) {
        self.runs.drain(..merged.runs);
        for id in &merged.ids {
            self.ids.remove(id);
        }
        // Run ids were timely when written (and the bound only grows); sorted, so the last is
        // the greatest.
        self.chunks_max = self.chunks_max.max(merged.ids.last().copied());
    }
}

/// What one merge step wrote ([`Pending::merge_step`]).
pub(super) struct Merged {
    runs: usize,
    /// Sorted.
    ids: Vec<[u8; 16]>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u16) -> [u8; 16] {
        let mut id = [0; 16];
        id[..2].copy_from_slice(&n.to_be_bytes());
        id
    }

    /// A run is written in pieces of at most [`RUN_PIECE`] ids; a format 7 whole run (one
    /// value under the 9-byte key) and a run in pieces are both read as one run each and
    /// merged whole, every piece removed.
    #[test]
    fn runs_are_pieces_and_format_7_whole_runs_are_read_and_merged() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let rows = db.open_tree("rows").unwrap();
        let old: Vec<[u8; 16]> = (0..300u16).map(|n| id(n * 2 + 1)).collect();
        rows.insert(run_key(7), old.concat()).unwrap();
        let mut new: Vec<[u8; 16]> = (0..600u16).rev().map(|n| id(n * 2 + 2000)).collect();
        let mut batch = Batch::default();
        Pending::write_run(8, &mut new, &mut batch);
        rows.apply_batch(batch.to_sled()).unwrap();
        let values: Vec<(sled::IVec, sled::IVec)> =
            rows.scan_prefix(run_key(8)).map(Result::unwrap).collect();
        assert_eq!(values.len(), 3, "600 ids in pieces of 256");
        for (piece, (k, v)) in (0u32..).zip(&values) {
            assert_eq!(k.as_ref(), run_piece_key(8, piece));
            assert!(v.len() <= RUN_PIECE * 16);
        }
        let ids = |values: &[(sled::IVec, sled::IVec)]| -> Vec<[u8; 16]> {
            values.iter().flat_map(|(_, v)| decode_chunk(v).unwrap()).collect()
        };
        assert!(ids(&values).windows(2).all(|w| w[0] < w[1]), "sorted across pieces");

        let mut pending = Pending::load(&rows, 0).unwrap();
        assert_eq!(pending.runs, [7, 8]);
        assert_eq!(pending.len(), 900);
        assert!(pending.contains(&id(1)) && pending.contains(&id(3198)));
        // One step of 1 id still takes whole runs: the old one first, then the pieces.
        let mut batch = Batch::default();
        let merged = pending.merge_step(&rows, 1, &mut batch).unwrap();
        rows.apply_batch(batch.to_sled()).unwrap();
        pending.merged(&merged);
        assert_eq!((pending.runs.len(), pending.len()), (1, 600));
        assert!(rows.get(run_key(7)).unwrap().is_none());
        let mut batch = Batch::default();
        let merged = pending.merge_step(&rows, 1, &mut batch).unwrap();
        rows.apply_batch(batch.to_sled()).unwrap();
        pending.merged(&merged);
        assert_eq!((pending.is_empty(), pending.ids().len()), (true, 0));
        assert_eq!(rows.scan_prefix([P_RUNS]).count(), 0, "every piece removed");
        let mut chunks = IdChunks::default();
        for i in old.iter().chain(&new) {
            chunks.load(&rows, i).unwrap();
            assert!(chunks.contains(i));
        }
        // A run key of another length is refused by name.
        rows.insert([P_RUNS, 1, 2], &[][..]).unwrap();
        assert!(Pending::load(&rows, 0).unwrap_err().contains("id run key of 3 bytes"));
    }

    /// An id inside the span of a chunk already loaded (its key to its last id) is answered
    /// from memory; one past the span, or below every loaded chunk, reads its chunk. Shown by
    /// a chunk key slipped into the span on disk after the first load (no store writes one):
    /// only a read would find it.
    #[test]
    fn ids_inside_a_loaded_chunk_read_nothing_more() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let rows = db.open_tree("rows").unwrap();
        let chunk = |ids: &[[u8; 16]]| -> Vec<u8> { ids.concat() };
        rows.insert(chunk_key(&id(10)), chunk(&[id(10), id(20), id(30)])).unwrap();
        rows.insert(chunk_key(&id(40)), chunk(&[id(40), id(50)])).unwrap();
        let mut chunks = IdChunks::default();
        chunks.load(&rows, &id(20)).unwrap();
        assert_eq!(chunks.chunks.keys().collect::<Vec<_>>(), [&id(10)]);
        rows.insert(chunk_key(&id(25)), chunk(&[id(25)])).unwrap();
        for inside in [id(10), id(25), id(30)] {
            chunks.load(&rows, &inside).unwrap();
        }
        assert_eq!(chunks.chunks.keys().collect::<Vec<_>>(), [&id(10)], "no read inside the span");
        // Past the span's last id: read, and the greatest key at or below it is found.
        chunks.load(&rows, &id(35)).unwrap();
        chunks.load(&rows, &id(45)).unwrap();
        assert_eq!(chunks.chunks.keys().collect::<Vec<_>>(), [&id(10), &id(25), &id(40)]);
        // Below every loaded chunk: read (nothing on disk there).
        chunks.load(&rows, &id(5)).unwrap();
        assert_eq!(chunks.chunks.len(), 3);
        // A chunk emptied in memory has no span: its ids are read again (and it stays as it
        // is in memory, which is what the caller changed).
        for i in [id(40), id(50)] {
            chunks.remove(&i);
        }
        rows.insert(chunk_key(&id(45)), chunk(&[id(45)])).unwrap();
        chunks.load(&rows, &id(46)).unwrap();
        assert!(chunks.chunks.contains_key(&id(45)));
    }

    /// Loading ids one after the other into one [`IdChunks`] (the skip above at work), or
    /// sorted by [`IdChunks::load_sorted`] (a walk, with new seeks for ids far apart), answers
    /// every id as a fresh load of that id alone does, over chunk layouts that keep the
    /// index's rule, for ids in chunks, between them, below and above them.
    #[test]
    fn loads_that_skip_answer_as_a_load_per_id() {
        let mut next = crate::store::xorshift(0x2545_f491_4f6c_dd1d);
        for _ in 0..40 {
            let db = sled::Config::new().temporary(true).open().unwrap();
            let rows = db.open_tree("rows").unwrap();
            // Chunks of 1 to 4 ids from a sorted set, keyed at or below their first id.
            let mut all: Vec<u16> =
                (0..(100 + next() % 500)).map(|_| (next() % 5_000) as u16 + 2).collect();
            all.sort_unstable();
            all.dedup();
            let mut at = 0;
            let mut prev_last = 0u16;
            while at < all.len() {
                let n = (1 + next() % 4) as usize;
                let piece: Vec<[u8; 16]> =
                    all[at..(at + n).min(all.len())].iter().map(|&n| id(n)).collect();
                let first = all[at];
                let key = if first > prev_last + 1 && next() % 2 == 0 { first - 1 } else { first };
                rows.insert(chunk_key(&id(key)), piece.concat()).unwrap();
                prev_last = *all[at..(at + n).min(all.len())].last().unwrap();
                at += n;
            }
            let probes: Vec<[u8; 16]> = (0..200)
                .map(|_| match next() % 3 {
                    0 if !all.is_empty() => id(all[(next() % all.len() as u64) as usize]),
                    _ => id((next() % 5_100) as u16),
                })
                .collect();
            let mut shared = IdChunks::default();
            for p in &probes {
                shared.load(&rows, p).unwrap();
            }
            // The same probes sorted, read by walking: all of them, or a few far apart (each
            // more than `WALK` chunks from the last: a new seek each).
            let mut sorted = probes.clone();
            sorted.sort_unstable();
            let mut walked = IdChunks::default();
            walked.load_sorted(&rows, &sorted).unwrap();
            let sparse: Vec<[u8; 16]> = sorted.iter().step_by(40).copied().collect();
            let mut sparse_walk = IdChunks::default();
            sparse_walk.load_sorted(&rows, &sparse).unwrap();
            for p in &probes {
                let mut alone = IdChunks::default();
                alone.load(&rows, p).unwrap();
                let of = |c: &mut IdChunks| c.covering(p).map(|(k, ids)| (*k, ids.clone()));
                let expected = (alone.contains(p), of(&mut alone));
                assert_eq!((shared.contains(p), of(&mut shared)), expected, "{p:?}");
                assert_eq!((walked.contains(p), of(&mut walked)), expected, "walked: {p:?}");
                if sparse.contains(p) {
                    let got = (sparse_walk.contains(p), of(&mut sparse_walk));
                    assert_eq!(got, expected, "sparse: {p:?}");
                }
            }
            // A walk keeps only chunks that hold or would hold one of its ids.
            let needed: BTreeSet<[u8; 16]> = probes
                .iter()
                .filter_map(|p| {
                    let mut alone = IdChunks::default();
                    alone.load(&rows, p).unwrap();
                    alone.chunks.keys().next().copied()
                })
                .collect();
            assert_eq!(walked.chunks.keys().copied().collect::<BTreeSet<_>>(), needed);
        }
    }

    #[test]
    fn chunks_split_when_full_and_go_when_empty() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let rows = db.open_tree("rows").unwrap();
        let ids: Vec<[u8; 16]> = (0..200u16).map(|n| id(n * 3 + 10)).collect();
        let mut chunks = IdChunks::default();
        for i in &ids {
            chunks.load(&rows, i).unwrap();
            assert!(!chunks.contains(i));
            chunks.insert(*i);
        }
        let mut batch = Batch::default();
        chunks.write(&mut batch);
        rows.apply_batch(batch.to_sled()).unwrap();
        // 200 ids in pieces of 48: 5 keys, each at or below its ids.
        assert_eq!(rows.len(), 5);
        for (k, v) in rows.iter().map(Result::unwrap) {
            assert!(decode_chunk(&v).unwrap().iter().all(|i| i[..] >= k[1..]));
        }
        // Found again from disk; ids between and below are not there.
        let mut chunks = IdChunks::default();
        for probe in [id(10), id(11), id(9), id(607), id(1000)] {
            chunks.load(&rows, &probe).unwrap();
        }
        assert!(chunks.contains(&id(10)) && chunks.contains(&id(607)));
        assert!(!chunks.contains(&id(11)) && !chunks.contains(&id(9)));
        assert!(!chunks.contains(&id(1000)));
        // Below every chunk: a chunk of its own. Removing every id removes every chunk.
        chunks.insert(id(9));
        let mut batch = Batch::default();
        chunks.write(&mut batch);
        rows.apply_batch(batch.to_sled()).unwrap();
        assert_eq!(rows.len(), 6);
        let mut chunks = IdChunks::default();
        for i in ids.iter().chain([&id(9)]) {
            chunks.load(&rows, i).unwrap();
        }
        for i in ids.iter().chain([&id(9)]) {
            chunks.remove(i);
        }
        let mut batch = Batch::default();
        chunks.write(&mut batch);
        rows.apply_batch(batch.to_sled()).unwrap();
        assert!(rows.is_empty());
        assert!(decode_chunk(&[0; 17]).unwrap_err().contains("17 bytes"));
    }
}
