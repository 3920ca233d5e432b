//! Token-bucket rate limits keyed by source prefix or agent key, with bounded memory.
//!
//! Time is an argument (`now`), so the limiter is tested without sleeping. Each key has one
//! bucket per dimension (`N` of them: envelopes, bytes, reports, ...), each holding up to its
//! `burst` tokens and refilled at its `rate` per second. A request states its cost in every
//! dimension; it is admitted when every bucket holds at least its cost, or the whole burst
//! when the cost is larger than the burst (so one big request is never refused forever), and
//! then takes its full cost from every bucket, which may leave a bucket in debt. Over any
//! interval `t` a key is therefore admitted at most `burst + rate * t` plus one request's cost
//! per dimension. A refusal names the dimension and the time until the request would fit
//! (the `Retry-After`); it takes nothing.
//!
//! Memory is bounded by `max_keys`. When the table is full, buckets that have refilled
//! completely (they carry no state a fresh bucket would not) are dropped, at most once per
//! [`SWEEP_INTERVAL`] so a spray of new addresses cannot make every request scan the table;
//! if it is still full, keys not in the table share one overflow bucket, so a flood of new
//! prefixes is limited as one client instead of growing the table or resetting the buckets
//! of known clients.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Least time between two sweeps of a full table.
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

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

/// One dimension of a limiter: `rate` tokens per second, buckets of `burst` tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Budget {
    /// Tokens per second (> 0).
    pub(crate) rate: f64,
    /// Bucket size (>= 1).
    pub(crate) burst: f64,
}

impl Budget {
    /// A budget of `rate` per second and `burst`; a rate that is not positive and finite
    /// becomes the smallest positive one, a burst below 1 becomes 1.
    pub(crate) fn new(rate: f64, burst: f64) -> Budget {
        Budget {
            rate: if rate > 0.0 && rate.is_finite() { rate } else { f64::MIN_POSITIVE },
            burst: if burst >= 1.0 && burst.is_finite() { burst } else { 1.0 },
        }
    }
}

/// A refused request: which dimension was short, and how long until the request would fit.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Refused {
    /// Index of the dimension (in the order the limiter was built with).
    pub(crate) dim: usize,
    /// Time until that bucket holds enough.
    pub(crate) wait: Duration,
}

#[derive(Clone, Copy, Debug)]
struct Bucket<const N: usize> {
    tokens: [f64; N],
    last: Instant,
}

impl<const N: usize> Bucket<N> {
    fn full(budgets: &[Budget; N], now: Instant) -> Bucket<N> {
        Bucket { tokens: budgets.map(|b| b.burst), last: now }
    }

    fn refill(&mut self, budgets: &[Budget; N], now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        for (t, b) in self.tokens.iter_mut().zip(budgets) {
            *t = (*t + elapsed * b.rate).min(b.burst);
        }
        self.last = now;
    }

    /// Takes `cost` from every bucket, or says which one is short and for how long.
    fn take(
        &mut self,
        budgets: &[Budget; N],
        cost: &[f64; N],
        now: Instant,
    ) -> Result<(), Refused> {
        self.refill(budgets, now);
        let mut refused: Option<Refused> = None;
        for (dim, ((t, b), c)) in self.tokens.iter().zip(budgets).zip(cost).enumerate() {
            let need = c.min(b.burst);
            if *c > 0.0 && *t < need {
                let wait = Duration::from_secs_f64(((need - *t) / b.rate).min(1e9));
                if refused.is_none_or(|r| wait > r.wait) {
                    refused = Some(Refused { dim, wait });
                }
            }
        }
        if let Some(r) = refused {
            return Err(r);
        }
        for (t, c) in self.tokens.iter_mut().zip(cost) {
            *t -= c.max(0.0);
        }
        Ok(())
    }

    fn is_full_at(&self, budgets: &[Budget; N], now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens.iter().zip(budgets).all(|(t, b)| t + elapsed * b.rate >= b.burst)
    }
}

struct Table<K, const N: usize> {
    buckets: HashMap<K, Bucket<N>>,
    overflow: Bucket<N>,
    last_sweep: Option<Instant>,
}

/// A set of token buckets, `N` per key.
pub(crate) struct RateLimiter<K, const N: usize = 1> {
    budgets: [Budget; N],
    max_keys: usize,
    table: Mutex<Table<K, N>>,
}

impl<K: Hash + Eq + Copy> RateLimiter<K, 1> {
    /// `rate` tokens per second (must be > 0), buckets of `burst` tokens, at most `max_keys`
    /// keys tracked individually.
    pub(crate) fn new(rate: f64, burst: u32, max_keys: usize, now: Instant) -> RateLimiter<K, 1> {
        RateLimiter::with_budgets([Budget::new(rate, f64::from(burst))], max_keys, now)
    }

    /// Takes a token from `key`'s bucket; `Err(wait)` when it is empty.
    pub(crate) fn check(&self, key: K, now: Instant) -> Result<(), Duration> {
        self.take(key, [1.0], now).map_err(|r| r.wait)
    }
}

impl<K: Hash + Eq + Copy, const N: usize> RateLimiter<K, N> {
    /// One bucket per budget for each key, at most `max_keys` keys tracked individually.
    pub(crate) fn with_budgets(
        budgets: [Budget; N],
        max_keys: usize,
        now: Instant,
    ) -> RateLimiter<K, N> {
        RateLimiter {
            budgets,
            max_keys: max_keys.max(1),
            table: Mutex::new(Table {
                buckets: HashMap::new(),
                overflow: Bucket::full(&budgets, now),
                last_sweep: None,
            }),
        }
    }

    /// Takes `cost` (per dimension) from `key`'s buckets, or refuses and takes nothing.
    pub(crate) fn take(&self, key: K, cost: [f64; N], now: Instant) -> Result<(), Refused> {
        let budgets = &self.budgets;
        // A poisoned lock only means another request panicked mid-update; the table is
        // still a valid map of buckets.
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(bucket) = table.buckets.get_mut(&key) {
            return bucket.take(budgets, &cost, now);
        }
        if table.buckets.len() >= self.max_keys
            && table.last_sweep.is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_INTERVAL)
        {
            table.last_sweep = Some(now);
            table.buckets.retain(|_, b| !b.is_full_at(budgets, now));
        }
        if table.buckets.len() >= self.max_keys {
            return table.overflow.take(budgets, &cost, now);
        }
        let mut bucket = Bucket::full(budgets, now);
        let result = bucket.take(budgets, &cost, now);
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
    fn costs_are_charged_in_every_dimension_and_a_refusal_takes_nothing() {
        let t0 = Instant::now();
        // [requests, bytes]: 10 requests/s burst 10; 1000 bytes/s burst 4000.
        let rl: RateLimiter<u8, 2> = RateLimiter::with_budgets(
            [Budget::new(10.0, 10.0), Budget::new(1000.0, 4000.0)],
            8,
            t0,
        );
        rl.take(1, [1.0, 3000.0], t0).unwrap();
        // 1000 bytes left: a 2000-byte request is short in dimension 1 by a second.
        let r = rl.take(1, [1.0, 2000.0], t0).unwrap_err();
        assert_eq!(r, Refused { dim: 1, wait: Duration::from_secs(1) });
        // It took nothing: a 1000-byte request still fits, then nothing does.
        rl.take(1, [1.0, 1000.0], t0).unwrap();
        assert_eq!(rl.take(1, [0.0, 1.0], t0).unwrap_err().dim, 1);
        // Zero-cost dimensions are not checked; other keys are not affected.
        rl.take(1, [1.0, 0.0], t0).unwrap();
        rl.take(2, [1.0, 4000.0], t0).unwrap();
    }

    #[test]
    fn a_cost_above_the_burst_needs_a_full_bucket_and_leaves_a_debt() {
        let t0 = Instant::now();
        let rl: RateLimiter<u8, 1> = RateLimiter::with_budgets([Budget::new(100.0, 1000.0)], 8, t0);
        // Full bucket: a 5000-byte batch is admitted once, leaving a debt of 4000.
        rl.take(0, [5000.0], t0).unwrap();
        let r = rl.take(0, [1.0], t0).unwrap_err();
        assert_eq!(r.wait, Duration::from_secs_f64(40.01));
        // The debt is paid at the rate: over 60 s the key got 5000 + 60 * 100 at most.
        let t1 = t0 + Duration::from_secs(49);
        let r = rl.take(0, [5000.0], t1).unwrap_err();
        assert_eq!(r.wait, Duration::from_secs(1));
        rl.take(0, [5000.0], t1 + Duration::from_secs(1)).unwrap();
    }

    #[test]
    fn a_spray_of_new_keys_is_bounded_and_sweeps_at_most_once_a_second() {
        let t0 = Instant::now();
        let rl: RateLimiter<u32, 2> =
            RateLimiter::with_budgets([Budget::new(1.0, 5.0), Budget::new(1.0, 5.0)], 100, t0);
        let mut ok = 0;
        for k in 0..100_000u32 {
            let now = t0 + Duration::from_micros(u64::from(k));
            ok += usize::from(rl.take(k, [1.0, 1.0], now).is_ok());
        }
        assert_eq!(rl.tracked_keys(), 100);
        // 100 tracked keys, then the overflow bucket's 5 plus what it refilled in 0.1 s.
        assert_eq!(ok, 105);
        // After a second the refilled buckets are swept and a new key gets its own again.
        let later = t0 + Duration::from_secs(10);
        rl.take(1_000_000, [5.0, 5.0], later).unwrap();
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
