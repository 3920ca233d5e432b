//! Token-bucket rate limits keyed by source prefix or agent key, with bounded memory.
//!
//! Time is an argument (`now`), so the limiter is tested without sleeping. Each key has a
//! bucket of `burst` tokens refilled at `rate` per second; a request takes one token or is
//! refused with the time until the next token (the `Retry-After`).
//!
//! Memory is bounded by `max_keys`. When the table is full, buckets that have refilled
//! completely (they carry no state a fresh bucket would not) are dropped; if it is still full,
//! keys not in the table share one overflow bucket, so a flood of new prefixes is limited as one
//! client instead of growing the table or resetting the buckets of known clients.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The rate-limit key of a source address: its /24 (IPv4) or /48 (IPv6); IPv4-mapped IPv6
/// addresses count as IPv4.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SourcePrefix([u8; 7]);

impl SourcePrefix {
    /// The prefix `ip` belongs to.
    pub(crate) fn of(ip: IpAddr) -> SourcePrefix {
        let mut key = [0u8; 7];
        match ip.to_canonical() {
            IpAddr::V4(v4) => {
                key[0] = 4;
                key[1..4].copy_from_slice(&v4.octets()[..3]);
            }
            IpAddr::V6(v6) => {
                key[0] = 6;
                key[1..7].copy_from_slice(&v6.octets()[..6]);
            }
        }
        SourcePrefix(key)
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket { tokens: burst, last: now }
    }

    fn refill(&mut self, rate: f64, burst: f64, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
    }

    /// Takes one token, or says how long until one is there.
    fn take(&mut self, rate: f64, burst: f64, now: Instant) -> Result<(), Duration> {
        self.refill(rate, burst, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }

    fn is_full_at(&self, rate: f64, burst: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate >= burst
    }
}

struct Table<K> {
    buckets: HashMap<K, Bucket>,
    overflow: Bucket,
}

/// A set of token buckets, one per key.
pub(crate) struct RateLimiter<K> {
    rate: f64,
    burst: f64,
    max_keys: usize,
    table: Mutex<Table<K>>,
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// `rate` tokens per second (must be > 0), buckets of `burst` tokens, at most `max_keys`
    /// keys tracked individually.
    pub(crate) fn new(rate: f64, burst: u32, max_keys: usize, now: Instant) -> RateLimiter<K> {
        let burst = f64::from(burst.max(1));
        RateLimiter {
            rate: if rate > 0.0 && rate.is_finite() { rate } else { f64::MIN_POSITIVE },
            burst,
            max_keys: max_keys.max(1),
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                overflow: Bucket::full(burst, now),
            }),
        }
    }

    /// Takes a token from `key`'s bucket; `Err(wait)` when it is empty.
    pub(crate) fn check(&self, key: K, now: Instant) -> Result<(), Duration> {
        let (rate, burst) = (self.rate, self.burst);
        // A poisoned lock only means another request panicked mid-update; the table is
        // still a valid map of buckets.
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = table.buckets.get_mut(&key) {
            return bucket.take(rate, burst, now);
        }
        if table.buckets.len() >= self.max_keys {
            table.buckets.retain(|_, b| !b.is_full_at(rate, burst, now));
        }
        if table.buckets.len() >= self.max_keys {
            return table.overflow.take(rate, burst, now);
        }
        let mut bucket = Bucket::full(burst, now);
        let result = bucket.take(rate, burst, now);
        table.buckets.insert(key, bucket);
        result
    }

    /// Keys tracked individually right now.
    #[cfg(test)]
    pub(crate) fn tracked_keys(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).buckets.len()
    }
}

/// Whole seconds for a `Retry-After` header: the wait rounded up, at least 1.
pub(crate) fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_the_rate() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(2.0, 3, 10, t0);
        for _ in 0..3 {
            rl.check(1u8, t0).unwrap();
        }
        let wait = rl.check(1u8, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert_eq!(retry_after_secs(wait), 1);
        // Other keys are not affected.
        rl.check(2u8, t0).unwrap();
        // Half a second later there is one token again, and only one.
        let t1 = t0 + Duration::from_millis(500);
        rl.check(1u8, t1).unwrap();
        assert!(rl.check(1u8, t1).is_err());
        // Long idle: back to the full burst, not more.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..3 {
            rl.check(1u8, t2).unwrap();
        }
        assert!(rl.check(1u8, t2).is_err());
    }

    #[test]
    fn slow_rates_give_long_retry_after() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(0.1, 1, 10, t0);
        rl.check(0u8, t0).unwrap();
        let wait = rl.check(0u8, t0).unwrap_err();
        assert_eq!(retry_after_secs(wait), 10);
        assert_eq!(retry_after_secs(Duration::from_millis(10_001)), 11);
    }

    #[test]
    fn memory_is_bounded_and_new_keys_share_the_overflow_bucket() {
        let t0 = Instant::now();
        let rl = RateLimiter::new(1.0, 2, 4, t0);
        for k in 0..4u32 {
            rl.check(k, t0).unwrap();
        }
        assert_eq!(rl.tracked_keys(), 4);
        // The table is full of partly used buckets: new keys share one overflow bucket.
        rl.check(100, t0).unwrap();
        rl.check(101, t0).unwrap();
        assert!(rl.check(102, t0).is_err());
        assert_eq!(rl.tracked_keys(), 4);
        // Once the tracked buckets have refilled they are dropped and new keys get their own.
        let t1 = t0 + Duration::from_secs(5);
        rl.check(200, t1).unwrap();
        assert_eq!(rl.tracked_keys(), 1);
    }

    #[test]
    fn prefixes_group_addresses() {
        let p = |s: &str| SourcePrefix::of(s.parse().unwrap());
        assert_eq!(p("192.0.2.1"), p("192.0.2.200"));
        assert_eq!(p("192.0.2.1"), p("::ffff:192.0.2.9"));
        assert_ne!(p("192.0.2.1"), p("192.0.3.1"));
        assert_eq!(p("2001:db8:1::1"), p("2001:db8:1:ffff::2"));
        assert_ne!(p("2001:db8:1::1"), p("2001:db8:2::1"));
    }
}
