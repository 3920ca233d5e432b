//! Small numeric helpers for the detector: tail-probability scores, a stable hash, and
//! exponentially weighted moving averages. Everything is deterministic.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for keys that are already well mixed (client ids are keyed FNV hashes): cheap,
/// and deterministic, so iteration order (and float sums) replay exactly.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        // A final multiply spreads the bits into the high half hashbrown uses for its tags.
        (self.0 ^ (self.0 >> 29)).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// A map with [`IdHasher`]: deterministic iteration order for the same insertions.
pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// FNV-1a, 64 bit: a hash that is stable across processes, versions and platforms (alert ids
/// must be equal on every collector of a fleet, so `std`'s hashers are not an option).
pub(crate) fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // A separator, so ("ab", "c") and ("a", "bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// `-ln P(X >= k)` for `X ~ Poisson(lambda)`, by the Chernoff bound (a lower bound on the true
/// score, so tests built on it are conservative). Zero when `k <= lambda`.
pub(crate) fn poisson_upper_score(k: f64, lambda: f64) -> f64 {
    let lambda = lambda.max(1e-9);
    if k <= lambda {
        return 0.0;
    }
    k * (k / lambda).ln() - k + lambda
}

/// `-ln P(X <= k)` for `X ~ Poisson(lambda)`, by the Chernoff bound. Zero when `k >= lambda`.
pub(crate) fn poisson_lower_score(k: f64, lambda: f64) -> f64 {
    if k >= lambda {
        return 0.0;
    }
    if k <= 0.0 {
        return lambda;
    }
    k * (k / lambda).ln() - k + lambda
}

/// `-ln P(X >= k)` for `X ~ Binomial(n, q)`, exactly (summed in log space from the k-th term;
/// no approximation, so it holds at the smallest counts). Zero when `k == 0`; infinite when
/// `k > n` or `q == 0`.
pub(crate) fn binomial_upper_score(k: u32, n: u32, q: f64) -> f64 {
    if k == 0 {
        return 0.0;
    }
    if k > n || q <= 0.0 {
        return f64::INFINITY;
    }
    let q = q.min(1.0);
    if q >= 1.0 {
        return 0.0;
    }
    let (nf, kf) = (f64::from(n), f64::from(k));
    // ln of the k-th term: ln C(n, k) + k ln q + (n - k) ln(1 - q).
    let ln_choose: f64 = (1..=k).map(|i| ((nf - kf + f64::from(i)) / f64::from(i)).ln()).sum();
    let ln_first = ln_choose + kf * q.ln() + (nf - kf) * (1.0 - q).ln();
    // The tail relative to its first term: 1 + t(k+1)/t(k) + ...
    let odds = q / (1.0 - q);
    let (mut term, mut sum) = (1.0f64, 1.0f64);
    for j in k..n {
        term *= f64::from(n - j) / f64::from(j + 1) * odds;
        sum += term;
        if term < 1e-17 * sum {
            break;
        }
    }
    (-(ln_first + sum.ln())).max(0.0)
}

/// `-ln` of the one-sided normal tail for a z-score, approximated as `z^2 / 2` (zero for
/// `z <= 0`). On the same scale as the Poisson scores, so one threshold serves both.
pub(crate) fn normal_upper_score(z: f64) -> f64 {
    if z <= 0.0 { 0.0 } else { z * z / 2.0 }
}

/// Moves `value` towards `sample` by `alpha`; while fewer than `1 / alpha` samples are in
/// (`weight`), by `1 / (weight + 1)` instead: a plain running mean, so the first sample (often
/// an odd one: a collector start sees the quick failure reports before the slower success
/// counts) weighs no more than any other and does not linger for `1 / alpha` windows.
pub(crate) fn ewma(value: &mut f64, sample: f64, alpha: f64, weight: u32) {
    let a = alpha.max(1.0 / (f64::from(weight) + 1.0));
    *value += a * (sample - *value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_stable_and_separates_parts() {
        // Reference value of FNV-1a-64 over "a" followed by the 0xff separator.
        assert_eq!(fnv1a64(&[b"a"]), fnv1a64(&[b"a"]));
        assert_ne!(fnv1a64(&[b"ab", b"c"]), fnv1a64(&[b"a", b"bc"]));
        assert_eq!(fnv1a64(&[]), 0xcbf2_9ce4_8422_2325);
    }

    #[test]
    fn poisson_scores_bound_the_tails() {
        assert_eq!(poisson_upper_score(3.0, 5.0), 0.0);
        assert_eq!(poisson_lower_score(7.0, 5.0), 0.0);
        // P(X >= 20 | 5) is about 2.6e-7, so -ln is about 15.2; the bound is a bit lower.
        let s = poisson_upper_score(20.0, 5.0);
        assert!(s > 10.0 && s < 15.2, "{s}");
        // P(X <= 0 | 30) = e^-30 exactly.
        assert!((poisson_lower_score(0.0, 30.0) - 30.0).abs() < 1e-9);
        assert!(poisson_lower_score(10.0, 30.0) > 5.0);
    }

    #[test]
    fn binomial_score_is_exact_at_small_counts() {
        // P(X >= 5 | 5, 0.01) = 1e-10 exactly.
        let s = binomial_upper_score(5, 5, 0.01);
        assert!((s - 10.0 * std::f64::consts::LN_10).abs() < 1e-9, "{s}");
        // P(X >= 1 | 2, 0.5) = 3/4.
        assert!((binomial_upper_score(1, 2, 0.5) - (4.0f64 / 3.0).ln()).abs() < 1e-12);
        // P(X >= 3 | 10, 0.1) = 0.0701908...
        let p = (-binomial_upper_score(3, 10, 0.1)).exp();
        assert!((p - 0.070_190_8).abs() < 1e-6, "{p}");
        assert_eq!(binomial_upper_score(0, 10, 0.1), 0.0);
        assert!(binomial_upper_score(6, 5, 0.1).is_infinite());
    }

    #[test]
    fn normal_score_and_ewma() {
        assert_eq!(normal_upper_score(-1.0), 0.0);
        assert!((normal_upper_score(6.0) - 18.0).abs() < 1e-9);
        let mut v = 0.0;
        ewma(&mut v, 10.0, 0.5, 0);
        assert_eq!(v, 10.0);
        ewma(&mut v, 20.0, 0.5, 1);
        assert_eq!(v, 15.0);
        // Slow alpha: a running mean until 1/alpha samples are in, so the first one fades.
        let mut m = 0.0;
        for (i, s) in [1.0, 0.0, 0.0, 0.0].into_iter().enumerate() {
            ewma(&mut m, s, 0.01, i as u32);
        }
        assert!((m - 0.25).abs() < 1e-12, "{m}");
    }
}
