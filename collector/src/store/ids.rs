//! The id index of agent reports, packed: sorted runs of ids (chunks) under keys
//! `I` ‖ the chunk's lower bound (16 bytes), each value the chunk's ids in order, 16 bytes
//! each, at most [`MAX_CHUNK`] of them.
//!
//! A key per id made sled keep bookkeeping for a leaf per dozen ids (its leaves hold at most
//! 16 keys), about 85 MiB per million ids; a chunk holds 32 to 64 of them. The chunk that
//! holds (or would hold) an id is the one with the greatest key at or below it; its key is at
//! or below every id in it, and every id in it is below the next chunk's key. A chunk over
//! [`MAX_CHUNK`] is split in halves (each keyed by its first id), an emptied one is removed.
//!
//! [`IdChunks`] loads the chunks one write step touches, answers and changes them in memory,
//! and writes the changed ones into the step's batch: one point read per id, as with a key per
//! id, and a chunk value rewritten per step instead of a key inserted per id.

use std::collections::{BTreeMap, BTreeSet};

use super::P_IDS;

/// Most ids in one chunk (1 KiB).
pub(super) const MAX_CHUNK: usize = 64;

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
    pub(super) fn load(&mut self, rows: &sled::Tree, id: &[u8; 16]) -> Result<(), String> {
        let found = rows
            .range(&[P_IDS][..]..=&chunk_key(id)[..])
            .next_back()
            .transpose()
            .map_err(|e| e.to_string())?;
        if let Some((k, v)) = found {
            let bound: [u8; 16] = k
                .get(1..)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| format!("id chunk key of {} bytes", k.len()))?;
            if let std::collections::btree_map::Entry::Vacant(slot) = self.chunks.entry(bound) {
                slot.insert(decode_chunk(&v)?);
            }
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
    pub(super) fn write(self, batch: &mut super::journal::Batch) {
        let IdChunks { chunks, dirty } = self;
        for bound in dirty {
            let Some(ids) = chunks.get(&bound) else { continue };
            if ids.is_empty() {
                batch.remove(&chunk_key(&bound)[..]);
                continue;
            }
            let pieces = if ids.len() > MAX_CHUNK { MAX_CHUNK / 2 } else { MAX_CHUNK };
            for (i, piece) in ids.chunks(pieces).enumerate() {
                // The first piece keeps its key (its lower bound may be below its first id).
                let key = if i == 0 { bound } else { piece[0] };
                batch.insert(&chunk_key(&key)[..], piece.concat());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u16) -> [u8; 16] {
        let mut id = [0; 16];
        id[..2].copy_from_slice(&n.to_be_bytes());
        id
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
        let mut batch = crate::store::journal::Batch::default();
        chunks.write(&mut batch);
        rows.apply_batch(batch.to_sled()).unwrap();
        // 200 ids in pieces of 32: 7 keys, each at or below its ids.
        assert_eq!(rows.len(), 7);
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
        let mut batch = crate::store::journal::Batch::default();
        chunks.write(&mut batch);
        rows.apply_batch(batch.to_sled()).unwrap();
        assert_eq!(rows.len(), 8);
        let mut chunks = IdChunks::default();
        for i in ids.iter().chain([&id(9)]) {
            chunks.load(&rows, i).unwrap();
        }
        for i in ids.iter().chain([&id(9)]) {
            chunks.remove(i);
        }
        let mut batch = crate::store::journal::Batch::default();
        chunks.write(&mut batch);
        rows.apply_batch(batch.to_sled()).unwrap();
        assert!(rows.is_empty());
        assert!(decode_chunk(&[0; 17]).unwrap_err().contains("17 bytes"));
    }
}
