//! The store's contract with the disk: data sync after sled's write, and the free-space guard.
//!
//! # Sync
//!
//! sled 0.34 makes its log "durable" on Linux with `sync_file_range(WAIT_BEFORE | WRITE |
//! WAIT_AFTER)`, which writes the data pages but neither the file's metadata (its size, when
//! the log grew) nor the drive's volatile cache: a power loss can still lose what it flushed.
//! Large values go to files under `blobs/` that sled never syncs. With [`SyncMode::Data`] (the
//! default) every group commit's journal record is `fdatasync`ed before any waiter is answered
//! (see `journal`), and every checkpoint (sled's flush) is followed by `fdatasync` of the `db`
//! file, of every new blob file and of the `blobs/` directory before the journal starts over.
//! [`SyncMode::DangerNone`] skips both syncs and is for benchmarks and throwaway stores.
//!
//! # Free space
//!
//! sled treats a failed write as fatal for the open database: after `ENOSPC` every later
//! operation returns the same error until the database is opened again, which needs every
//! handle (including the alerting and fleet trees) closed. So the store makes sure sled does
//! not run out of space instead of recovering from it:
//!
//! ```text
//!  available (statvfs f_bavail) ≥ min_free and reserve present ──▶ Ok: commits go to sled
//!  available < min_free ──▶ Low: commits answer DiskFull (503) before sled sees them,
//!                           /readyz is not ready, the reserve file is deleted so sled's own
//!                           background writes (flusher, retention, alerting state) have room
//!  Low and available ≥ min_free + reserve ──▶ reserve re-created ──▶ Ok
//! ```
//!
//! The state is re-checked before every group commit (one `statvfs`) and every
//! [`GUARD_PERIOD`] by a background task, so the store refuses within one commit of the disk
//! filling and recovers within [`GUARD_PERIOD`] of space coming back.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// How often the background task re-checks free space.
pub const GUARD_PERIOD: Duration = Duration::from_millis(250);

/// Name of the reserve file in the store directory.
pub const RESERVE_FILE: &str = "vantage-reserve";

/// What a group commit waits for before it is acknowledged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncMode {
    /// `fdatasync` of the journal per group commit, and of sled's log and blob files per
    /// checkpoint (`store.sync = "data"`).
    #[default]
    Data,
    /// No `fdatasync` (the journal is written, sled flushed with `sync_file_range` on Linux): a
    /// power loss can lose acknowledged reports (`store.sync = "danger_none"`).
    DangerNone,
}

impl SyncMode {
    /// The config value (`data`, `danger_none`).
    pub fn as_str(self) -> &'static str {
        match self {
            SyncMode::Data => "data",
            SyncMode::DangerNone => "danger_none",
        }
    }
}

impl std::str::FromStr for SyncMode {
    type Err = String;
    fn from_str(s: &str) -> Result<SyncMode, String> {
        match s {
            "data" => Ok(SyncMode::Data),
            "danger_none" => Ok(SyncMode::DangerNone),
            other => {
                Err(format!("unknown sync mode {other:?} (expected \"data\" or \"danger_none\")"))
            }
        }
    }
}

/// Syncs sled's files after its flush.
pub(super) struct Syncer {
    mode: SyncMode,
    dir: PathBuf,
    db: File,
    synced_blobs: Mutex<HashSet<OsString>>,
}

impl Syncer {
    pub(super) fn open(dir: &Path, mode: SyncMode) -> std::io::Result<Syncer> {
        Ok(Syncer {
            mode,
            dir: dir.to_owned(),
            db: File::open(dir.join("db"))?,
            synced_blobs: Mutex::new(HashSet::new()),
        })
    }

    pub(super) fn mode(&self) -> SyncMode {
        self.mode
    }

    /// `fdatasync` of the log, of blob files not synced before and of the blob directory.
    pub(super) fn sync(&self) -> std::io::Result<()> {
        if self.mode == SyncMode::DangerNone {
            return Ok(());
        }
        self.db.sync_data()?;
        let blobs = self.dir.join("blobs");
        let entries = match std::fs::read_dir(&blobs) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(PoisonError::into_inner);
        let mut new = false;
        let mut present = HashSet::new();
        for entry in entries {
            let name = entry?.file_name();
            if !synced.contains(&name) {
                match File::open(blobs.join(&name)) {
                    Ok(f) => f.sync_data()?,
                    // sled removed it (a blob rewritten or garbage collected) meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                new = true;
            }
            present.insert(name);
        }
        if new {
            File::open(&blobs)?.sync_all()?;
        }
        *synced = present;
        Ok(())
    }
}

/// Free-space thresholds (`store.min_free_bytes`, `store.reserve_bytes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpaceLimits {
    /// Commits are refused while the file system has less than this available. 0 turns the
    /// guard off.
    pub min_free_bytes: u64,
    /// Size of the reserve file given back to sled when space runs low. 0 for none.
    pub reserve_bytes: u64,
}

impl Default for SpaceLimits {
    fn default() -> SpaceLimits {
        SpaceLimits { min_free_bytes: 128 * 1024 * 1024, reserve_bytes: 32 * 1024 * 1024 }
    }
}

/// What the guard found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Space {
    Ok,
    Low { available: u64 },
}

pub(super) struct SpaceGuard {
    dir: PathBuf,
    limits: SpaceLimits,
    /// Whether the reserve file is in place (only touched with the lock held).
    state: Mutex<GuardState>,
}

struct GuardState {
    reserve_present: bool,
    last: Space,
}

impl SpaceGuard {
    /// Creates the reserve (when there is room for it) and takes the first reading.
    pub(super) fn open(dir: &Path, limits: SpaceLimits) -> SpaceGuard {
        let reserve = dir.join(RESERVE_FILE);
        let present =
            reserve.metadata().is_ok_and(|m| m.len() >= limits.reserve_bytes && m.len() > 0);
        let guard = SpaceGuard {
            dir: dir.to_owned(),
            limits,
            state: Mutex::new(GuardState { reserve_present: present, last: Space::Ok }),
        };
        guard.check();
        guard
    }

    pub(super) fn limits(&self) -> SpaceLimits {
        self.limits
    }

    /// The last reading, without a new `statvfs`.
    pub(super) fn last(&self) -> Space {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).last
    }

    /// Reads the free space now, releases or re-creates the reserve, and answers.
    pub(super) fn check(&self) -> Space {
        if self.limits.min_free_bytes == 0 && self.limits.reserve_bytes == 0 {
            return Space::Ok;
        }
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let available = match fs2::available_space(&self.dir) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.dir.display(), "statvfs failed");
                return state.last;
            }
        };
        let reserve = self.limits.reserve_bytes;
        let space = if available < self.limits.min_free_bytes {
            if state.reserve_present {
                // Give sled's own writes room while new commits are refused.
                match std::fs::remove_file(self.dir.join(RESERVE_FILE)) {
                    Ok(()) => tracing::warn!(available, "free space low: reserve released"),
                    Err(e) => tracing::warn!(error = %e, "cannot release the space reserve"),
                }
                state.reserve_present = false;
            }
            Space::Low { available }
        } else if state.reserve_present || reserve == 0 {
            Space::Ok
        } else if available >= self.limits.min_free_bytes.saturating_add(reserve) {
            match write_reserve(&self.dir.join(RESERVE_FILE), reserve) {
                Ok(()) => {
                    state.reserve_present = true;
                    Space::Ok
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the space reserve");
                    Space::Low { available }
                }
            }
        } else {
            Space::Low { available }
        };
        if space != state.last {
            match space {
                Space::Ok => tracing::info!(available, "free space back: store accepts commits"),
                Space::Low { .. } => tracing::warn!(
                    available,
                    min_free = self.limits.min_free_bytes,
                    "free space low: store refuses commits"
                ),
            }
        }
        state.last = space;
        space
    }
}

/// Allocates `len` bytes of real blocks (`posix_fallocate`, not a sparse file) and syncs.
fn write_reserve(path: &Path, len: u64) -> std::io::Result<()> {
    let result = (|| {
        let f = File::create(path)?;
        fs2::FileExt::allocate(&f, len)?;
        f.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_modes_parse_and_print() {
        for mode in [SyncMode::Data, SyncMode::DangerNone] {
            assert_eq!(mode.as_str().parse::<SyncMode>().unwrap(), mode);
        }
        assert!("none".parse::<SyncMode>().unwrap_err().contains("danger_none"));
    }

    #[test]
    fn the_guard_holds_a_reserve_and_refuses_below_the_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let guard =
            SpaceGuard::open(dir.path(), SpaceLimits { min_free_bytes: 1, reserve_bytes: 4096 });
        assert_eq!(guard.last(), Space::Ok);
        assert_eq!(std::fs::metadata(dir.path().join(RESERVE_FILE)).unwrap().len(), 4096);
        let available = fs2::available_space(dir.path()).unwrap();
        let full = SpaceGuard::open(
            dir.path(),
            SpaceLimits { min_free_bytes: available * 4, reserve_bytes: 4096 },
        );
        assert!(matches!(full.check(), Space::Low { .. }));
        // The reserve went back to the file system.
        assert!(!dir.path().join(RESERVE_FILE).exists());
    }
}
