//! Drop accounting: every report ends delivered or dropped with a counted reason.
//!
//! Drop counts ride along in the next batch, so the collector learns how much it did not see.
//! The unit is failures, not reports: dropping a coalesced report with `count = 5` adds 5.
//!
//! One reason never travels: [`DropReason::ConsentWithdrawn`]. Withdrawal deletes the identity
//! key, and the next batch would be signed by the next opt-in's key, so sending "N dropped at
//! withdrawal" would link the two keys. Runtimes keep that count in local statistics only.

use std::fmt;

use crate::vecmap::VecMap;

/// Why a report was dropped before it was delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum DropReason {
    /// The buffer was full (by bytes or count); the oldest reports go first.
    QueueFull,
    /// The report was older than the buffer's maximum age.
    Expired,
    /// A rate limit (the agent's own, or the collector's 429 beyond retry) dropped it.
    RateLimited,
    /// Consent was withdrawn while it waited. Counted locally only, never sent (see the module
    /// docs: it would link the old and new install keys).
    ConsentWithdrawn,
    /// The durable store failed to keep it.
    StoreError,
    /// A collector refused it as malformed (400): retrying would not help.
    Rejected,
    /// A reason this version does not know (its wire code), kept for forward compatibility.
    Other(u16),
}

impl DropReason {
    /// Every known reason.
    pub const KNOWN: [DropReason; 6] = [
        DropReason::QueueFull,
        DropReason::Expired,
        DropReason::RateLimited,
        DropReason::ConsentWithdrawn,
        DropReason::StoreError,
        DropReason::Rejected,
    ];

    /// The stable label (metric label value).
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::Expired => "expired",
            DropReason::RateLimited => "rate_limited",
            DropReason::ConsentWithdrawn => "consent_withdrawn",
            DropReason::StoreError => "store_error",
            DropReason::Rejected => "rejected",
            DropReason::Other(_) => "other",
        }
    }

    /// The compact wire code.
    pub fn code(self) -> u16 {
        match self {
            DropReason::QueueFull => 1,
            DropReason::Expired => 2,
            DropReason::RateLimited => 3,
            DropReason::ConsentWithdrawn => 4,
            DropReason::StoreError => 5,
            DropReason::Rejected => 6,
            DropReason::Other(code) => code,
        }
    }

    /// The reason for a wire code (unknown codes become `Other`).
    pub fn from_code(code: u16) -> DropReason {
        DropReason::KNOWN.into_iter().find(|r| r.code() == code).unwrap_or(DropReason::Other(code))
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts of dropped reports by reason. Counts saturate instead of overflowing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounts {
    counts: VecMap<DropReason, u64>,
}

impl DropCounts {
    /// No drops.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `n` drops for `reason`.
    pub fn add(&mut self, reason: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        let slot = self.counts.get_or_insert_with(reason, || 0);
        *slot = slot.saturating_add(n);
    }

    /// Adds all of `other`'s counts.
    pub fn merge(&mut self, other: &DropCounts) {
        for (reason, n) in other.iter() {
            self.add(reason, n);
        }
    }

    /// The count for one reason.
    pub fn count(&self, reason: DropReason) -> u64 {
        self.counts.get(&reason).copied().unwrap_or(0)
    }

    /// The total over all reasons.
    pub fn total(&self) -> u64 {
        self.counts.values().fold(0u64, |acc, n| acc.saturating_add(*n))
    }

    /// True when nothing was dropped.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The non-zero counts, by reason in code order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        self.counts.iter().map(|(r, n)| (*r, *n))
    }

    /// Takes the counts, leaving none (used when they are put into a batch).
    pub fn take(&mut self) -> DropCounts {
        std::mem::take(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_codes_are_kept() {
        for r in DropReason::KNOWN {
            assert_eq!(DropReason::from_code(r.code()), r);
        }
        assert_eq!(DropReason::from_code(99), DropReason::Other(99));
        assert_eq!(DropReason::from_code(99).code(), 99);
    }

    #[test]
    fn counts_add_merge_saturate_and_take() {
        let mut a = DropCounts::new();
        a.add(DropReason::QueueFull, 3);
        a.add(DropReason::QueueFull, 2);
        a.add(DropReason::Expired, 0);
        assert_eq!(a.count(DropReason::QueueFull), 5);
        assert_eq!(a.count(DropReason::Expired), 0);
        assert!(a.iter().all(|(_, n)| n > 0));
        let mut b = DropCounts::new();
        b.add(DropReason::QueueFull, u64::MAX);
        b.merge(&a);
        assert_eq!(b.count(DropReason::QueueFull), u64::MAX);
        assert_eq!(b.total(), u64::MAX);
        let taken = a.take();
        assert!(a.is_empty());
        assert_eq!(taken.total(), 5);
    }
}
