//! The duplicate test of NEL uploads: the digests of the NEL uploads stored in the last
//! [`WINDOW_MS`], at most [`MAX_RECENT`] of them, in memory ([`Recent`]); on disk one `N` row
//! per group commit (`N` ‖ group time ‖ group seq ‖ 0 → the group's NEL digests, the first 16
//! bytes of each), so a restart reads the window back, and after a kill the journal replays the
//! rows of the groups it acknowledged.
//!
//! Agent envelopes keep a `D` key per digest for the whole dedup horizon (an agent re-sends an
//! unacknowledged envelope for up to 7 days). A NEL upload gets this window instead:
//! - It is unauthenticated: anyone can send any body, so what a duplicate test protects for NEL
//!   is a transport retry of the same bytes (a client or proxy re-sending after a lost answer),
//!   which comes within seconds. A browser that retries a failed delivery serializes its reports
//!   again (their `age` has grown), so its bytes differ and no digest would match them anyway.
//! - A `D` key per upload was a random key in the largest index of the store: its lookup and
//!   insert read and copy a leaf wherever that is, about a third of a NEL upload's CPU
//!   (`docs/performance.md`, fifth round), and it was a key sled keeps bookkeeping for in memory
//!   for 10 days.
//!
//! Under a flood of distinct uploads the window is the last [`MAX_RECENT`] uploads (about 4 s at
//! 30,000 uploads/s): a re-send after that is stored again, as any forged upload would be, and
//! the per-/24 budgets bound both. Memory is bounded by [`MAX_RECENT`] whatever the traffic.
//!
//! Identity is the first 16 bytes of the digest (a SHA-256): 128 bits, as report ids are.

use std::collections::{HashSet, VecDeque};

use super::journal::Batch;
use super::{P_RECENT, row_bound, row_key};

/// How long a NEL upload's digest makes a re-send of the same bytes a duplicate.
pub(super) const WINDOW_MS: u64 = 10 * 60 * 1000;

/// Most digests in the window (about 6.5 MiB: a hash set of 16-byte keys and the order they
/// arrived in).
pub(super) const MAX_RECENT: usize = 131_072;

/// A digest as the window knows it.
pub(super) fn short(digest: &[u8; 32]) -> [u8; 16] {
    let mut d = [0; 16];
    d.copy_from_slice(&digest[..16]);
    d
}

/// The NEL digests of the window, oldest first.
#[derive(Default)]
pub(super) struct Recent {
    set: HashSet<[u8; 16]>,
    /// Each digest with its group's time, in the order they were stored.
    order: VecDeque<(u64, [u8; 16])>,
}

impl Recent {
    /// True if an upload with this digest was stored within the window (as of the last
    /// [`Recent::forget`] or [`Recent::add`]).
    pub(super) fn contains(&self, digest: &[u8; 32]) -> bool {
        self.set.contains(&short(digest))
    }

    /// Adds a group's new NEL digests (stored at `at_ms`), then forgets what is beyond the
    /// window: older than [`WINDOW_MS`] before `at_ms`, or more than [`MAX_RECENT`].
    pub(super) fn add(&mut self, at_ms: u64, digests: &[[u8; 16]]) {
        for d in digests {
            if self.set.insert(*d) {
                self.order.push_back((at_ms, *d));
            }
        }
        self.forget(at_ms);
    }

    /// Forgets what is beyond the window at `now_ms`.
    pub(super) fn forget(&mut self, now_ms: u64) {
        let cutoff = now_ms.saturating_sub(WINDOW_MS);
        while let Some(&(at, d)) = self.order.front() {
            if self.order.len() <= MAX_RECENT && at >= cutoff {
                break;
            }
            self.order.pop_front();
            self.set.remove(&d);
        }
    }

    pub(super) fn len(&self) -> usize {
        self.order.len()
    }

    /// How far back a re-send is caught: [`WINDOW_MS`], or less once [`MAX_RECENT`] uploads
    /// arrived within it (from the oldest digest kept to the newest).
    pub(super) fn reach_ms(&self) -> u64 {
        match (self.order.front(), self.order.back()) {
            (Some(first), Some(last)) if self.order.len() >= MAX_RECENT => {
                last.0.saturating_sub(first.0).min(WINDOW_MS)
            }
            _ => WINDOW_MS,
        }
    }

    /// The window as the `N` rows on disk give it at `now_ms`: the newest rows first, until
    /// [`MAX_RECENT`] digests or the start of the window.
    pub(super) fn load(rows: &sled::Tree, now_ms: u64) -> Result<Recent, String> {
        let start = row_bound(P_RECENT, now_ms.saturating_sub(WINDOW_MS));
        let mut groups: Vec<(u64, Vec<[u8; 16]>)> = Vec::new();
        let mut n = 0;
        for item in rows.range(start.to_vec()..vec![P_RECENT + 1]).rev() {
            let (key, value) = item.map_err(|e| e.to_string())?;
            let at = super::key_bucket(&key)?;
            let digests = decode(&value)?;
            n += digests.len();
            groups.push((at, digests));
            if n >= MAX_RECENT {
                break;
            }
        }
        let mut recent = Recent::default();
        for (at, digests) in groups.into_iter().rev() {
            recent.add(at, &digests);
        }
        recent.forget(now_ms);
        Ok(recent)
    }
}

/// Writes a group's `N` row.
pub(super) fn write_row(group_time: u64, seq: u64, digests: &[[u8; 16]], batch: &mut Batch) {
    if !digests.is_empty() {
        batch.insert(&row_key(P_RECENT, group_time, seq, 0)[..], digests.concat());
    }
}

/// An `N` row's digests.
pub(super) fn decode(value: &[u8]) -> Result<Vec<[u8; 16]>, String> {
    if value.len() % 16 != 0 {
        return Err(format!("NEL digest row of {} bytes, not a multiple of 16", value.len()));
    }
    Ok(value.chunks_exact(16).map(|c| <[u8; 16]>::try_from(c).unwrap_or_default()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u32) -> [u8; 32] {
        let mut d = [0; 32];
        d[..4].copy_from_slice(&n.to_be_bytes());
        d[31] = 1;
        d
    }

    #[test]
    fn the_window_forgets_by_age_and_by_count() {
        let mut recent = Recent::default();
        assert_eq!(recent.reach_ms(), WINDOW_MS);
        recent.add(1_000, &[short(&digest(1)), short(&digest(2))]);
        assert_eq!(recent.reach_ms(), WINDOW_MS);
        assert!(recent.contains(&digest(1)) && recent.contains(&digest(2)));
        assert!(!recent.contains(&digest(3)));
        // Within the window at its last millisecond, gone one after.
        recent.forget(1_000 + WINDOW_MS);
        assert!(recent.contains(&digest(1)));
        recent.add(1_001 + WINDOW_MS, &[short(&digest(3))]);
        assert!(!recent.contains(&digest(1)) && !recent.contains(&digest(2)));
        assert!(recent.contains(&digest(3)));
        // By count: the oldest go first.
        let many: Vec<[u8; 16]> = (10..10 + MAX_RECENT as u32).map(|n| short(&digest(n))).collect();
        recent.add(2_000 + WINDOW_MS, &many);
        assert_eq!(recent.len(), MAX_RECENT);
        assert_eq!(
            recent.reach_ms(),
            0,
            "full of one group's digests: a re-send of the next is new"
        );
        assert!(!recent.contains(&digest(3)));
        assert!(recent.contains(&digest(10)) && recent.contains(&digest(9 + MAX_RECENT as u32)));
        recent.add(2_500 + WINDOW_MS, &[short(&digest(1))]);
        assert!(!recent.contains(&digest(10)) && recent.contains(&digest(11)));
        assert_eq!(recent.len(), MAX_RECENT);
        assert_eq!(recent.reach_ms(), 500);
    }

    #[test]
    fn rows_that_are_not_lists_of_digests_are_refused() {
        assert_eq!(decode(&[0; 32]).unwrap().len(), 2);
        let e = decode(&[0; 17]).unwrap_err();
        assert!(e.contains("17 bytes"), "{e}");
    }
}
