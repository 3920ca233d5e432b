//! The durable envelope buffer on sled.
//!
//! One sled database in its own folder (`<data_dir>/buffer`). Tree `envelopes`: key = the
//! sequence number (8 bytes big-endian, so sled's order is age order), value = a 1-byte format
//! version, the seal time and failure count (8 bytes big-endian each), then the sealed
//! envelope. Tree `meta`: `last_seq`. Every `put` is flushed before it returns, so a report is
//! on disk once its envelope is stored. What is stored is sealed to the collector key: nothing
//! at rest can be read without the collector's private key.
//!
//! A store that does not open or whose records do not decode is corrupt:
//! [`SledStore::open_or_replace`] then deletes it and starts a fresh one, and says so, so the
//! runtime can warn and count the loss ([`DropReason::StoreError`](crate::drops::DropReason)).

use std::path::{Path, PathBuf};

use crate::buffer::{EnvelopeMeta, EnvelopeStore, StoreError, StoredEnvelope};
use crate::report::UnixMillis;

const FORMAT: u8 = 1;
const HEADER: usize = 17;

/// An [`EnvelopeStore`] on sled. No sled type appears in its API.
pub struct SledStore {
    path: PathBuf,
    db: sled::Db,
    envelopes: sled::Tree,
    meta: sled::Tree,
    bytes: u64,
    last_seq: Option<u64>,
}

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore")
            .field("path", &self.path)
            .field("bytes", &self.bytes)
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

fn io(e: impl std::fmt::Display) -> StoreError {
    StoreError::Io(e.to_string())
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn sled_error(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Corruption { .. } | sled::Error::Unsupported(_) => corrupt(e),
        other => io(other),
    }
}

fn decode(key: &[u8], value: &[u8]) -> Result<StoredEnvelope, StoreError> {
    let seq = u64::from_be_bytes(key.try_into().map_err(|_| corrupt("key is not 8 bytes"))?);
    if value.len() < HEADER || value[0] != FORMAT {
        return Err(corrupt(format!("record {seq} has an unknown format")));
    }
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&value[at..at + 8]);
        u64::from_be_bytes(b)
    };
    Ok(StoredEnvelope {
        seq,
        created_at: UnixMillis(word(1)),
        failures: word(9),
        bytes: value[HEADER..].to_vec(),
    })
}

fn encode(e: &StoredEnvelope) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER + e.bytes.len());
    v.push(FORMAT);
    v.extend_from_slice(&e.created_at.0.to_be_bytes());
    v.extend_from_slice(&e.failures.to_be_bytes());
    v.extend_from_slice(&e.bytes);
    v
}

impl SledStore {
    /// Opens (or creates) the store in `dir`, reading every record once to check it and to
    /// count bytes. Any error means the store is unusable as it is.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let dir_owned = dir.to_path_buf();
        // sled panics on some kinds of damage instead of returning an error; a damaged buffer
        // must never crash the app, so a panic here counts as corruption.
        let opened = std::panic::catch_unwind(move || -> Result<SledStore, StoreError> {
            let db = sled::Config::new()
                .path(&dir_owned)
                // Every put is flushed before it returns; sled's periodic flusher would only
                // wake an idle agent twice a second.
                .flush_every_ms(None)
                .open()
                .map_err(sled_error)?;
            let envelopes = db.open_tree("envelopes").map_err(sled_error)?;
            let meta = db.open_tree("meta").map_err(sled_error)?;
            let mut bytes = 0u64;
            let mut last_seq = match meta.get("last_seq").map_err(sled_error)? {
                Some(v) => Some(u64::from_be_bytes(
                    v.as_ref().try_into().map_err(|_| corrupt("last_seq is not 8 bytes"))?,
                )),
                None => None,
            };
            for item in envelopes.iter() {
                let (k, v) = item.map_err(sled_error)?;
                let e = decode(&k, &v)?;
                bytes += e.bytes.len() as u64;
                last_seq = Some(last_seq.map_or(e.seq, |s| s.max(e.seq)));
            }
            Ok(SledStore { path: dir_owned, db, envelopes, meta, bytes, last_seq })
        });
        opened.unwrap_or_else(|_| Err(corrupt("the database panicked while opening")))
    }

    /// Opens the store in `dir`; if it is corrupt or unreadable, deletes it and creates a fresh
    /// one. Returns the store and the error that made it start over, if any.
    pub fn open_or_replace(dir: &Path) -> Result<(SledStore, Option<StoreError>), StoreError> {
        match SledStore::open(dir) {
            Ok(store) => Ok((store, None)),
            Err(first) => {
                remove_dir(dir)?;
                SledStore::open(dir).map(|store| (store, Some(first)))
            }
        }
    }

    /// The folder of the database.
    pub fn path(&self) -> &Path {
        &self.path
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

/// Deletes a store's folder (missing is fine).
pub fn remove_dir(dir: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("deleting {}: {e}", dir.display()))),
    }
}

impl EnvelopeStore for SledStore {
    fn put(&mut self, envelope: StoredEnvelope) -> Result<(), StoreError> {
        let key = envelope.seq.to_be_bytes();
        let old = self.envelopes.insert(key, encode(&envelope)).map_err(sled_error)?;
        let last = self.last_seq.map_or(envelope.seq, |s| s.max(envelope.seq));
        self.meta.insert("last_seq", &last.to_be_bytes()).map_err(sled_error)?;
        self.db.flush().map_err(sled_error)?;
        self.bytes += envelope.bytes.len() as u64;
        if let Some(old) = old {
            self.bytes = self.bytes.saturating_sub(old.len().saturating_sub(HEADER) as u64);
        }
        self.last_seq = Some(last);
        Ok(())
    }

    fn get(&self, seq: u64) -> Result<Option<StoredEnvelope>, StoreError> {
        let key = seq.to_be_bytes();
        match self.envelopes.get(key).map_err(sled_error)? {
            Some(v) => decode(&key, &v).map(Some),
            None => Ok(None),
        }
    }

    fn list(&self) -> Result<Vec<EnvelopeMeta>, StoreError> {
        self.envelopes
            .iter()
            .map(|item| {
                let (k, v) = item.map_err(sled_error)?;
                decode(&k, &v).map(|e| e.meta())
            })
            .collect()
    }

    fn remove(&mut self, seq: u64) -> Result<Option<EnvelopeMeta>, StoreError> {
        let key = seq.to_be_bytes();
        let Some(v) = self.envelopes.remove(key).map_err(sled_error)? else {
            return Ok(None);
        };
        let meta = decode(&key, &v)?.meta();
        self.bytes = self.bytes.saturating_sub(meta.len);
        Ok(Some(meta))
    }

    fn clear(&mut self) -> Result<u64, StoreError> {
        let failures = self.list()?.iter().map(|m| m.failures).sum();
        self.envelopes.clear().map_err(sled_error)?;
        self.db.flush().map_err(sled_error)?;
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

    fn env(seq: u64) -> StoredEnvelope {
        StoredEnvelope { seq, created_at: UnixMillis(seq * 10), failures: seq, bytes: vec![7; 50] }
    }

    fn tempdir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "vantage-sled-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn survives_reopen_with_order_bytes_and_last_seq() {
        let dir = tempdir("reopen");
        {
            let mut s = SledStore::open(&dir).unwrap();
            for seq in [3, 1, 2] {
                s.put(env(seq)).unwrap();
            }
            assert_eq!(s.remove(3).unwrap().unwrap().failures, 3);
        }
        let s = SledStore::open(&dir).unwrap();
        assert_eq!(s.list().unwrap().iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(s.bytes_used(), 100);
        assert_eq!(s.last_seq(), Some(3), "a removed envelope's seq is never reused");
        assert_eq!(s.get(2).unwrap().unwrap(), env(2));
        drop(s);
        remove_dir(&dir).unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn scribbled_store_is_replaced() {
        let dir = tempdir("scribble");
        {
            let mut s = SledStore::open(&dir).unwrap();
            s.put(env(1)).unwrap();
        }
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                std::fs::write(&path, vec![0xA5; 4096]).unwrap();
            }
        }
        let (s, error) = SledStore::open_or_replace(&dir).unwrap();
        assert!(error.is_some(), "the damage is reported");
        assert!(s.is_empty());
        remove_dir(&dir).unwrap();
    }
}
