//! Admission: what the store refuses to acknowledge because it could not keep the promise a
//! `202` makes.
//!
//! Two promises are checked here, with the same arithmetic the store itself uses:
//!
//! - **Kept.** A report is admitted only when the retention pass will keep it for at least
//!   [`MIN_KEEP`] after it was accepted: `event_at >= now - retention + MIN_KEEP`, where the
//!   retention pass deletes `event_at < now - retention` ([`Admission::cutoff`], the one
//!   function both use). A report observed at time 0 or 40 days ago on a 30-day store is refused
//!   with `400 timestamp: batch.reports[i].observed_at ...` instead of acknowledged and deleted
//!   five minutes later. (Eviction by `max_bytes` deletes the oldest data when the disk budget is
//!   exceeded; it cannot be predicted at admission and is reported by its own counters.)
//! - **Counted once.** Duplicates are decided by the envelope digest, which the store remembers
//!   for [`Admission::dedup_horizon`] (the longer of the retention and `store.dedup_days`,
//!   default 10 days; the agent re-sends an envelope for at most 7 days by default). An envelope
//!   whose own `created_at` is older than that horizon, less the allowed clock skew, could be a
//!   replay of one whose digest was already forgotten, so it is refused (`400 timestamp:
//!   batch.created_at ...`); an honest agent never sends one.
//!
//! The unsigned `vantage-sent-at` header only ever makes reports older; a value before the
//! batch's `created_at` or more than the dedup horizon after it is ignored
//! ([`Admission::plausible_sent_at`]).

use std::fmt;
use std::time::Duration;

use vantage_agent::report::UnixMillis;

use crate::model::StoredReport;

/// The least time a report is kept after it was accepted. Well above the 5-minute retention
/// period of the server, so a `202`'d report survives at least twelve retention passes.
pub const MIN_KEEP: Duration = Duration::from_secs(3600);

/// The retention and dedup horizons of a store, as pure arithmetic on times.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    retention_ms: u64,
    dedup_ms: u64,
}

/// Why an envelope or upload was refused; its `Display` starts with `timestamp:` and names the
/// field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// A report the retention pass would delete (or delete within [`MIN_KEEP`]).
    #[error(
        "timestamp: batch.reports[{index}].observed_at makes the report {age_s} s old when \
         received; this collector keeps reports for {retention_s} s (less {keep_s} s margin)"
    )]
    ReportTooOld {
        /// Index of the report in the batch (or upload).
        index: usize,
        /// Its age at receipt, in seconds (saturated).
        age_s: u64,
        /// The store's retention, in seconds.
        retention_s: u64,
        /// [`MIN_KEEP`] in seconds.
        keep_s: u64,
    },
    /// An envelope older than the dedup horizon (less the clock skew allowance).
    #[error(
        "timestamp: batch.created_at is {age_s} s before now; envelopes older than {limit_s} s \
         are not accepted (duplicates are recognised for {horizon_s} s)"
    )]
    EnvelopeTooOld {
        /// Age of `created_at` on the collector clock, in seconds.
        age_s: u64,
        /// The limit: dedup horizon less the clock skew allowance, in seconds.
        limit_s: u64,
        /// The dedup horizon, in seconds.
        horizon_s: u64,
    },
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Admission {
    /// Admission for a store keeping reports for `retention` and digests for the longer of
    /// `retention` and `dedup`.
    pub fn new(retention: Duration, dedup: Duration) -> Admission {
        let retention_ms = millis(retention);
        Admission { retention_ms, dedup_ms: millis(dedup).max(retention_ms) }
    }

    /// How long envelope digests are remembered.
    pub fn dedup_horizon(&self) -> Duration {
        Duration::from_millis(self.dedup_ms)
    }

    /// The retention pass at `now` deletes every report and target count with
    /// `event_at < cutoff(now)`.
    pub fn cutoff(&self, now: UnixMillis) -> UnixMillis {
        UnixMillis(now.0.saturating_sub(self.retention_ms))
    }

    /// Digests received before this are forgotten by the retention pass at `now`.
    pub fn dedup_cutoff(&self, now: UnixMillis) -> UnixMillis {
        UnixMillis(now.0.saturating_sub(self.dedup_ms))
    }

    /// True if a report with this event time, accepted at `now`, survives every retention pass
    /// until `now + MIN_KEEP`.
    pub fn keeps(&self, event_at: UnixMillis, now: UnixMillis) -> bool {
        let later = UnixMillis(now.0.saturating_add(millis(MIN_KEEP)));
        event_at >= self.cutoff(later)
    }

    /// `sent_at` when it is plausible for an envelope made at `created_at`, else `None`.
    pub fn plausible_sent_at(
        &self,
        created_at: UnixMillis,
        sent_at: Option<UnixMillis>,
    ) -> Option<UnixMillis> {
        sent_at.filter(|s| *s >= created_at && s.0 - created_at.0 <= self.dedup_ms)
    }

    /// Refuses an envelope made (agent clock) longer ago than the dedup horizon less `skew`.
    pub fn check_created_at(
        &self,
        created_at: UnixMillis,
        received_at: UnixMillis,
        skew: Duration,
    ) -> Result<(), Refusal> {
        let limit = self.dedup_ms.saturating_sub(millis(skew));
        let age = received_at.0.saturating_sub(created_at.0);
        if age > limit {
            return Err(Refusal::EnvelopeTooOld {
                age_s: age / 1000,
                limit_s: limit / 1000,
                horizon_s: self.dedup_ms / 1000,
            });
        }
        Ok(())
    }

    /// Refuses the first report the retention pass would delete within [`MIN_KEEP`].
    pub fn check_reports(&self, reports: &[StoredReport], now: UnixMillis) -> Result<(), Refusal> {
        match reports.iter().position(|r| !self.keeps(r.event_at, now)) {
            None => Ok(()),
            Some(index) => Err(Refusal::ReportTooOld {
                index,
                age_s: reports[index].received_at.0.saturating_sub(reports[index].event_at.0)
                    / 1000,
                retention_s: self.retention_ms / 1000,
                keep_s: MIN_KEEP.as_secs(),
            }),
        }
    }
}

impl fmt::Display for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retention {} s, dedup horizon {} s",
            self.retention_ms / 1000,
            self.dedup_ms / 1000
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: u64 = 86_400_000;

    #[test]
    fn keeps_is_the_retention_cutoff_shifted_by_min_keep() {
        let a = Admission::new(Duration::from_millis(30 * DAY), Duration::from_millis(10 * DAY));
        assert_eq!(a.dedup_horizon(), Duration::from_millis(30 * DAY));
        let now = UnixMillis(100 * DAY);
        let keep = millis(MIN_KEEP);
        let edge = UnixMillis(70 * DAY + keep);
        assert!(a.keeps(edge, now));
        assert!(!a.keeps(UnixMillis(edge.0 - 1), now));
        // The retention pass at now + MIN_KEEP keeps the edge report (deletes < cutoff only).
        assert!(edge >= a.cutoff(UnixMillis(now.0 + keep)));
        assert!(!a.keeps(UnixMillis(0), now));
        assert!(!a.keeps(UnixMillis(now.0 - 40 * DAY), now));
        assert!(a.keeps(now, now));
    }

    #[test]
    fn absurd_sent_at_is_ignored_and_old_envelopes_refused() {
        let a = Admission::new(Duration::from_millis(DAY), Duration::from_millis(10 * DAY));
        assert_eq!(a.dedup_horizon(), Duration::from_millis(10 * DAY));
        let c = UnixMillis(50 * DAY);
        assert_eq!(a.plausible_sent_at(c, Some(UnixMillis(u64::MAX))), None);
        assert_eq!(a.plausible_sent_at(c, Some(UnixMillis(c.0 - 1))), None);
        assert_eq!(
            a.plausible_sent_at(c, Some(UnixMillis(c.0 + DAY))),
            Some(UnixMillis(c.0 + DAY))
        );
        assert_eq!(a.plausible_sent_at(c, None), None);
        let skew = Duration::from_millis(DAY);
        assert!(a.check_created_at(c, UnixMillis(c.0 + 9 * DAY), skew).is_ok());
        let err = a.check_created_at(c, UnixMillis(c.0 + 9 * DAY + 1000), skew).unwrap_err();
        assert!(err.to_string().starts_with("timestamp: batch.created_at is 777601 s"), "{err}");
    }
}
