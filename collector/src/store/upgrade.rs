//! Upgrading a format 1 or 2 store to format 3 in place, when it is opened.
//!
//! The old trees are moved into `rows` in steps of [`STEP`] entries, each step one sled
//! transaction that inserts the new rows and removes the old entries, so a crash (or kill)
//! during the upgrade loses and doubles nothing: the store is still marked format 1 or 2 and
//! the next open goes on where this one stopped. Records are copied byte for byte (format 1
//! report records are version 1, format 2's version 2: both read as before), so the logical
//! sizes, and every count, stay what they were. The counters are recounted once at the end;
//! the format marker becomes 3 and the old trees are dropped last.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{
    DROPS_APP_PREFIX, DROPS_PREFIX, FORMAT_VERSION, META_BYTES, META_FORMAT, META_REPORTS,
    META_TARGETS, P_DIGESTS, P_EXPIRY, P_REPORTS, P_TARGETS, Shared, StoreError, bucket_of, codec,
    engine_error, ids, meta_key, prefixed, push_rows, row_key,
};

/// The trees of formats 1 and 2 besides `meta`.
pub(super) const LEGACY_TREES: [&str; 6] =
    ["reports", "report_ids", "targets", "digests", "digests_by_time", "replay"];
/// Old entries moved per transaction.
const STEP: usize = 1024;

type Tx = Result<(), ConflictableTransactionError<StoreError>>;

impl Shared {
    /// Moves a format `from` (1 or 2) store's data into `rows` and marks it format 3.
    pub(super) fn upgrade(&self, from: u32) -> Result<(), StoreError> {
        let engine = |e| engine_error(&self.path, e);
        let names = self.db.tree_names();
        let has = |n: &str| names.iter().any(|t| t.as_ref() == n.as_bytes());
        let tree = |n: &str| self.db.open_tree(n).map_err(engine);
        let started = std::time::Instant::now();
        let mut moved = [0u64; 3];
        if has("report_ids") && has("reports") {
            self.move_ids(&tree("report_ids")?, &tree("reports")?)?;
        }
        if has("reports") {
            moved[0] = self.move_rows(&tree("reports")?, true)?;
        }
        if has("targets") {
            moved[1] = self.move_rows(&tree("targets")?, false)?;
        }
        if has("digests") {
            moved[2] = self.move_digests(&tree("digests")?, &tree("digests_by_time")?)?;
        }
        // Drop totals move as they are; the counters are recounted from the rows at open.
        let meta = &self.trees.meta;
        let mut batch = sled::Batch::default();
        for prefix in [DROPS_PREFIX, DROPS_APP_PREFIX] {
            for item in meta.scan_prefix(prefix) {
                let (k, v) = item.map_err(engine)?;
                batch.insert(meta_key(&k), v);
            }
        }
        for name in [META_REPORTS, META_TARGETS, META_BYTES] {
            batch.remove(meta_key(name));
        }
        self.trees.rows.apply_batch(batch).map_err(engine)?;
        // Everything moved is on disk before the marker says so.
        self.db.flush().map_err(engine)?;
        meta.insert(META_FORMAT, &FORMAT_VERSION.to_be_bytes()).map_err(engine)?;
        self.db.flush().map_err(engine)?;
        for item in meta.iter().keys() {
            let k = item.map_err(engine)?;
            if k.as_ref() != META_FORMAT {
                meta.remove(k).map_err(engine)?;
            }
        }
        for name in LEGACY_TREES {
            if has(name) {
                self.db.drop_tree(name).map_err(engine)?;
            }
        }
        tracing::info!(
            path = %self.path.display(),
            reports = moved[0],
            targets = moved[1],
            digests = moved[2],
            seconds = started.elapsed().as_secs_f64(),
            "store upgraded from format {from} to {FORMAT_VERSION} (rows per group commit)"
        );
        Ok(())
    }

    /// Moves a format 1/2 `report_ids` tree (sorted by id: the chunks are written in order,
    /// [`ids::MAX_CHUNK`] / 2 ids each), keeping the ids of agent reports only (format 1
    /// indexed NEL reports too; `reports` says which is which).
    pub(super) fn move_ids(
        &self,
        old: &sled::Tree,
        reports: &sled::Tree,
    ) -> Result<(), StoreError> {
        let engine = |e| engine_error(&self.path, e);
        loop {
            let step: Vec<(sled::IVec, sled::IVec)> =
                old.iter().take(ids::MAX_CHUNK / 2).collect::<Result<_, _>>().map_err(engine)?;
            let Some((first, _)) = step.first() else { return Ok(()) };
            let mut chunk = Vec::with_capacity(step.len() * 16);
            for (id, time) in &step {
                if id.len() != 16 || time.len() != 8 {
                    return Err(self.corrupt("report_ids", id, "not an id and a time"));
                }
                let mut key = time.to_vec();
                key.extend_from_slice(id);
                if reports.get(&key).map_err(engine)?.is_some_and(|r| codec::record_is_agent(&r)) {
                    chunk.extend_from_slice(id);
                }
            }
            let bound: [u8; 16] =
                first.as_ref().try_into().map_err(|_| self.corrupt("report_ids", first, "id"))?;
            (&self.trees.rows, old)
                .transaction(|(rows, old_tx)| -> Tx {
                    if !chunk.is_empty() {
                        rows.insert(&ids::chunk_key(&bound)[..], chunk.as_slice())?;
                    }
                    for (k, _) in &step {
                        old_tx.remove(k)?;
                    }
                    Ok(())
                })
                .map_err(|e: TransactionError<StoreError>| self.upgrade_error(e))?;
        }
    }

    /// Moves a format 1/2 `reports` (`with_ids`) or `targets` tree.
    pub(super) fn move_rows(&self, old: &sled::Tree, with_ids: bool) -> Result<u64, StoreError> {
        let (prefix, key_len, name) = match with_ids {
            true => (P_REPORTS, codec::REPORT_KEY_LEN, "reports"),
            false => (P_TARGETS, codec::TARGET_KEY_LEN, "targets"),
        };
        let mut moved = 0;
        loop {
            let step: Vec<(sled::IVec, sled::IVec)> = old
                .iter()
                .take(STEP)
                .collect::<Result<_, _>>()
                .map_err(|e| engine_error(&self.path, e))?;
            if step.is_empty() {
                return Ok(moved);
            }
            let mut state = self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let seq = state.next_seq;
            let mut batch = super::journal::Batch::default();
            let mut buckets: std::collections::BTreeMap<u64, Vec<codec::Entry>> =
                std::collections::BTreeMap::new();
            for (k, v) in &step {
                if k.len() != key_len {
                    return Err(self.corrupt(name, k, &format!("key of {} bytes", k.len())));
                }
                let event_at = codec::key_time(k).map_err(|e| self.corrupt(name, k, &e))?;
                let mut id = [0; 16];
                if with_ids {
                    id.copy_from_slice(&k[8..24]);
                }
                // Old keys sort by event time (then id or upload): the entries stay in order.
                let entry = codec::Entry { event_at, id, record: v.to_vec() };
                buckets.entry(bucket_of(event_at)).or_default().push(entry);
            }
            for (bucket, entries) in &buckets {
                push_rows(&mut batch, prefix, *bucket, seq, entries);
            }
            batch.insert(meta_key(b"seq"), &(seq + 1).to_be_bytes()[..]);
            // Written in a transaction with the old entries' removal, not journaled: the
            // upgrade runs at open, before any commit, and open flushes when it is done.
            let batch = batch.to_sled();
            (&self.trees.rows, old)
                .transaction(|(rows, old_tx)| -> Tx {
                    rows.apply_batch(&batch)?;
                    for (k, _) in &step {
                        old_tx.remove(k)?;
                    }
                    Ok(())
                })
                .map_err(|e: TransactionError<StoreError>| self.upgrade_error(e))?;
            state.next_seq = seq + 1;
            moved += step.len() as u64;
        }
    }

    /// Moves format 1/2 `digests` and `digests_by_time`: each step's digests become one
    /// expiry row, timed by the latest of them (so a digest is kept at most one step's time
    /// spread longer, never shorter).
    fn move_digests(&self, digests: &sled::Tree, by_time: &sled::Tree) -> Result<u64, StoreError> {
        let engine = |e| engine_error(&self.path, e);
        let mut moved = 0;
        loop {
            // The time index first (oldest first, so a step's times are close); then any
            // digest it did not list.
            let mut step: Vec<(sled::IVec, Option<sled::IVec>, u64)> = Vec::new();
            for item in by_time.iter().take(STEP) {
                let (k, _) = item.map_err(engine)?;
                let time =
                    codec::key_time(&k).map_err(|e| self.corrupt("digests_by_time", &k, &e))?;
                let digest = sled::IVec::from(&k[8..]);
                let live =
                    digests.get(&digest).map_err(engine)?.is_some_and(|v| v.as_ref() == &k[..8]);
                step.push((k.clone(), live.then_some(digest), time));
            }
            if step.is_empty() {
                for item in digests.iter().take(STEP) {
                    let (k, v) = item.map_err(engine)?;
                    let time = codec::be_u64(&v).map_err(|e| self.corrupt("digests", &k, &e))?;
                    step.push((sled::IVec::default(), Some(k), time));
                }
            }
            if step.is_empty() {
                return Ok(moved);
            }
            let mut state = self.write.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let seq = state.next_seq;
            let time = step.iter().map(|(_, _, t)| *t).max().unwrap_or(0);
            let mut batch = sled::Batch::default();
            let mut list = Vec::new();
            for (_, digest, _) in &step {
                if let Some(d) = digest {
                    let d: [u8; 32] = d
                        .as_ref()
                        .try_into()
                        .map_err(|_| self.corrupt("digests", d, "not a 32-byte digest"))?;
                    batch.insert(prefixed(P_DIGESTS, &d), &time.to_be_bytes()[..]);
                    list.extend_from_slice(&d);
                }
            }
            if !list.is_empty() {
                batch.insert(&row_key(P_EXPIRY, time, seq, 0)[..], list);
            }
            batch.insert(meta_key(b"seq"), &(seq + 1).to_be_bytes()[..]);
            (&self.trees.rows, digests, by_time)
                .transaction(|(rows, digests_tx, by_time_tx)| -> Tx {
                    rows.apply_batch(&batch)?;
                    for (k, digest, _) in &step {
                        if !k.is_empty() {
                            by_time_tx.remove(k)?;
                        }
                        if let Some(d) = digest {
                            digests_tx.remove(d)?;
                        }
                    }
                    Ok(())
                })
                .map_err(|e: TransactionError<StoreError>| self.upgrade_error(e))?;
            state.next_seq = seq + 1;
            moved += step.iter().filter(|(_, d, _)| d.is_some()).count() as u64;
        }
    }

    fn upgrade_error(&self, e: TransactionError<StoreError>) -> StoreError {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => engine_error(&self.path, e),
        }
    }
}
