//! Sampling, and the per-target attempt counts that let the collector form failure ratios.
//!
//! [`Sampling`] decides, with randomness passed in, whether one failure becomes a report and
//! whether one success is counted. [`TargetCounter`] accumulates what was sampled, per
//! (service, host), for the next [`Batch`](crate::report::Batch)'s `targets`.
//!
//! ## How ratios are formed
//!
//! For each request outcome the runtime draws once:
//!
//! ```text
//!  failure ──sample_failure?──yes──▶ report (coalesced)  +  record_attempt(.., success: false)
//!                              no ──▶ nothing
//!  success ──sample_success?──yes──▶                        record_attempt(.., success: true)
//!                              no ──▶ nothing
//! ```
//!
//! So for one target, over one batch, `attempts - successes` is the number of *sampled failures*
//! (the sum of the counts of that target's reports, before any drops) and `successes` is the
//! number of *sampled successes*. Both are raw sample counts. With the default fractions
//! (failures 1.0, successes 1.0) they are the true counts. When either part is sampled, the
//! collector must scale each part by its own fraction to estimate the failure ratio:
//!
//! ```text
//!  F = (attempts - successes) / failure_fraction      S = successes / success_fraction
//!  failure ratio ≈ F / (F + S)
//! ```
//!
//! The unscaled `successes / attempts` is biased whenever the two fractions differ (with
//! failures at 1.0 and successes at 0.01 it overstates the failure ratio about a hundredfold), so
//! the collector needs both fractions for every batch that carries target counts.
//!
//! ## Why every success is counted by default
//!
//! Chromium's Domain Reliability samples 5% of successes because each sampled success is a
//! report uploaded on its own. Here a success is one increment of a per-target counter: the
//! batch carries one `(attempts, successes)` pair per target however many successes it
//! counts, so sampling them saves no bytes and hardly any work, while it makes each client's
//! counts sparse. The collector judges failure ratios per client and window (so that one client
//! or one /24 cannot move a slice); at 5%, a client making 20 requests a minute has about one
//! counted success a minute, so one background failure reads as a 50-100% failure ratio. In
//! spikebench (`vantage-tests`, 4000 simulated default agents, 16 h) a 5% default raised 430
//! false pages per simulated week and missed an ASN blackout (with a 60 s heartbeat); counting
//! every success raised none (with the 30 s default heartbeat). See docs/agent-config.md for the figures and the bytes per hour.

use crate::entropy::Entropy;
use crate::report::{Host, ServiceId, TargetCounts};
use crate::vecmap::VecMap;
use crate::wire::MAX_TARGETS;

/// The default fraction of failures that become reports: 1.0 (every failure).
pub const DEFAULT_FAILURE_FRACTION: f64 = 1.0;

/// The default fraction of successes that are counted: 1.0 (every one; counts cost the same
/// bytes whatever they say, see the [module docs](self#why-every-success-is-counted-by-default)).
pub const DEFAULT_SUCCESS_FRACTION: f64 = 1.0;

/// The default maximum number of targets a [`TargetCounter`] keeps:
/// [`wire::MAX_TARGETS`](crate::wire::MAX_TARGETS) (256), what one batch can carry.
pub const DEFAULT_MAX_TARGETS: usize = MAX_TARGETS;

/// A sampling setting was invalid. The message names the field.
#[derive(Clone, Copy, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SamplingError {
    /// A fraction was outside `0.0..=1.0`, or NaN.
    #[error("{field} must be within 0.0..=1.0, got {value}")]
    FractionOutOfRange {
        /// The field: `failure_fraction` or `success_fraction`.
        field: &'static str,
        /// The value given.
        value: f64,
    },
}

/// Which fraction of failures and of successes the agent samples.
///
/// Defaults ([`Sampling::default`]): `failure_fraction` 1.0 (every failure is reported),
/// `success_fraction` 1.0 (every success is counted).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampling {
    failure_fraction: f64,
    success_fraction: f64,
}

impl Default for Sampling {
    /// Every failure reported, every success counted.
    fn default() -> Self {
        Sampling {
            failure_fraction: DEFAULT_FAILURE_FRACTION,
            success_fraction: DEFAULT_SUCCESS_FRACTION,
        }
    }
}

impl Sampling {
    /// Sampling with the given fractions, each within `0.0..=1.0` (NaN is refused). Defaults,
    /// through [`Sampling::default`]: 1.0 for failures, 1.0 for successes.
    pub fn new(failure_fraction: f64, success_fraction: f64) -> Result<Sampling, SamplingError> {
        Ok(Sampling {
            failure_fraction: fraction("failure_fraction", failure_fraction)?,
            success_fraction: fraction("success_fraction", success_fraction)?,
        })
    }

    /// The fraction of failures reported (default 1.0).
    pub fn failure_fraction(&self) -> f64 {
        self.failure_fraction
    }

    /// The fraction of successes counted (default 1.0).
    pub fn success_fraction(&self) -> f64 {
        self.success_fraction
    }

    /// Whether to keep this failure (report it and count it as an attempt).
    ///
    /// With a fraction of 1.0 this is always true and 0.0 always false, and in both cases `rng`
    /// is not used; in between, one `next_f64()` is drawn. So the default setting consumes no
    /// randomness at all.
    pub fn sample_failure(&self, rng: &mut impl Entropy) -> bool {
        draw(self.failure_fraction, rng)
    }

    /// Whether to count this success (as an attempt and a success). Same rules as
    /// [`sample_failure`](Self::sample_failure): 0.0 is always false, 1.0 (the default) always
    /// true, and neither uses `rng`.
    pub fn sample_success(&self, rng: &mut impl Entropy) -> bool {
        draw(self.success_fraction, rng)
    }
}

fn fraction(field: &'static str, value: f64) -> Result<f64, SamplingError> {
    // `contains` is false for NaN.
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(SamplingError::FractionOutOfRange { field, value })
    }
}

fn draw(fraction: f64, rng: &mut impl Entropy) -> bool {
    if fraction <= 0.0 {
        false
    } else if fraction >= 1.0 {
        true
    } else {
        // next_f64 is uniform on [0, 1), so P(x < fraction) == fraction.
        rng.next_f64() < fraction
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Tally {
    attempts: u64,
    successes: u64,
}

/// Sampled attempts and successes per (service, host), for the next batch.
///
/// Bounded: it tracks at most `max_targets` targets (default [`DEFAULT_MAX_TARGETS`], 256, what
/// one batch carries). Attempts for further new targets are not attributed but counted in
/// [`overflow`](Self::overflow); targets already tracked keep counting. Counts saturate at
/// `u64::MAX`. [`take`](Self::take) empties it. See the [module docs](self) for how the
/// collector turns these counts into ratios.
#[derive(Clone, Debug)]
pub struct TargetCounter {
    max_targets: usize,
    /// By (service, host): the order [`take`](Self::take) hands them out in.
    targets: VecMap<(ServiceId, Host), Tally>,
    len: usize,
    overflow: u64,
}

impl Default for TargetCounter {
    /// At most 256 targets.
    fn default() -> Self {
        TargetCounter::new(DEFAULT_MAX_TARGETS)
    }
}

impl TargetCounter {
    /// A counter for at most `max_targets` targets (default 256). Values above
    /// [`wire::MAX_TARGETS`](crate::wire::MAX_TARGETS) are lowered to it, since a batch cannot
    /// carry more; 0 attributes nothing and counts every attempt in `overflow`.
    pub fn new(max_targets: usize) -> TargetCounter {
        TargetCounter {
            max_targets: max_targets.min(MAX_TARGETS),
            targets: VecMap::new(),
            len: 0,
            overflow: 0,
        }
    }

    /// Counts one sampled attempt on `host` of `service`; `success` when it succeeded. Call it
    /// for every failure that [`Sampling::sample_failure`] kept and every success that
    /// [`Sampling::sample_success`] kept, and for nothing else.
    pub fn record_attempt(&mut self, service: &ServiceId, host: &Host, success: bool) {
        match self.targets.search_by(|(s, h)| s.cmp(service).then_with(|| h.cmp(host))) {
            Ok(i) => {
                if let Some(tally) = self.targets.value_at_mut(i) {
                    tally.add(success);
                }
            }
            Err(i) if self.len < self.max_targets => {
                let key = (service.clone(), host.clone());
                self.targets.insert_at(i, key, Tally::default()).add(success);
                self.len += 1;
            }
            Err(_) => self.overflow = self.overflow.saturating_add(1),
        }
    }

    /// The number of targets tracked (at most `max_targets`).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no target is tracked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sampled attempts since the last [`take`](Self::take) that were not attributed because
    /// `max_targets` targets were already tracked. Batches have no field for this yet, so the
    /// runtime can only log it or expose it as a metric, before calling `take`.
    pub fn overflow(&self) -> u64 {
        self.overflow
    }

    /// Takes the counts, ordered by service then host, and starts over (targets and
    /// `overflow`). At most `max_targets` entries, so they fit one batch.
    pub fn take(&mut self) -> Vec<TargetCounts> {
        self.len = 0;
        self.overflow = 0;
        std::mem::take(&mut self.targets)
            .into_iter()
            .map(|((service, host), tally)| TargetCounts {
                service,
                host,
                attempts: tally.attempts,
                successes: tally.successes,
            })
            .collect()
    }
}

impl Tally {
    // successes only grows with attempts, so successes <= attempts holds (TargetCounts' rule);
    // once attempts saturates, successes can at most catch up with it.
    fn add(&mut self, success: bool) {
        self.attempts = self.attempts.saturating_add(1);
        if success {
            self.successes = self.successes.saturating_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::entropy::SeededEntropy;

    /// Counts draws, to check which fractions use the RNG.
    struct Counting(SeededEntropy, usize);

    impl Entropy for Counting {
        fn fill(&mut self, dest: &mut [u8]) {
            self.1 += 1;
            self.0.fill(dest);
        }
    }

    fn target(service: &str, host: &str) -> (ServiceId, Host) {
        (service.parse().expect("valid"), Host::parse(host).expect("valid"))
    }

    #[test]
    fn defaults_report_every_failure_and_count_every_success() {
        let s = Sampling::default();
        assert_eq!((s.failure_fraction(), s.success_fraction()), (1.0, 1.0));
        let none = Sampling::new(1.0, 0.0).expect("valid");
        let mut rng = Counting(SeededEntropy::insecure_from_seed([0; 32]), 0);
        for _ in 0..100 {
            assert!(s.sample_failure(&mut rng));
            assert!(s.sample_success(&mut rng));
            assert!(!none.sample_success(&mut rng));
        }
        assert_eq!(rng.1, 0, "fractions 0 and 1 must not use the rng");
    }

    #[test]
    fn fractions_are_validated_and_errors_name_the_field() {
        let err = Sampling::new(1.5, 0.0).expect_err("1.5 is out of range");
        assert_eq!(err.to_string(), "failure_fraction must be within 0.0..=1.0, got 1.5");
        let err = Sampling::new(1.0, -0.1).expect_err("negative");
        assert_eq!(err.to_string(), "success_fraction must be within 0.0..=1.0, got -0.1");
        let err = Sampling::new(f64::NAN, 0.0).expect_err("NaN");
        assert!(err.to_string().starts_with("failure_fraction") && err.to_string().contains("NaN"));
        assert!(Sampling::new(0.5, f64::INFINITY).is_err());
        for (f, s) in [(0.0, 0.0), (1.0, 1.0), (0.25, 0.001)] {
            let sampling = Sampling::new(f, s).expect("in range");
            assert_eq!((sampling.failure_fraction(), sampling.success_fraction()), (f, s));
        }
    }

    #[test]
    fn a_quarter_samples_a_quarter() {
        let s = Sampling::new(0.25, 0.25).expect("valid");
        let mut rng = SeededEntropy::insecure_from_seed([42; 32]);
        let n = 100_000;
        let failures = (0..n).filter(|_| s.sample_failure(&mut rng)).count();
        let successes = (0..n).filter(|_| s.sample_success(&mut rng)).count();
        for kept in [failures, successes] {
            let share = kept as f64 / n as f64;
            assert!((0.24..0.26).contains(&share), "{share}");
        }
    }

    #[test]
    fn sampling_is_deterministic_for_a_seed() {
        let s = Sampling::new(0.5, 0.1).expect("valid");
        let draws = |seed| {
            let mut rng = SeededEntropy::insecure_from_seed([seed; 32]);
            (0..256).map(|_| s.sample_failure(&mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(draws(1), draws(1));
        assert_ne!(draws(1), draws(2));
    }

    #[test]
    fn counter_counts_per_target_in_order() {
        let mut c = TargetCounter::default();
        assert!(c.is_empty());
        let (svc, b) = target("svc", "b.example");
        let (_, a) = target("svc", "a.example");
        let (other, _) = target("alpha", "a.example");
        c.record_attempt(&svc, &b, true);
        c.record_attempt(&svc, &b, false);
        c.record_attempt(&svc, &a, false);
        c.record_attempt(&other, &b, true);
        assert_eq!(c.len(), 3);
        let counts = c.take();
        let got: Vec<_> = counts
            .iter()
            .map(|t| (t.service().as_str(), t.host().as_str(), t.attempts(), t.successes()))
            .collect();
        assert_eq!(
            got,
            [("alpha", "b.example", 1, 1), ("svc", "a.example", 1, 0), ("svc", "b.example", 2, 1),]
        );
        assert!(c.is_empty());
        assert!(c.take().is_empty());
    }

    #[test]
    fn counter_is_bounded_and_counts_the_overflow() {
        let mut c = TargetCounter::new(2);
        let (svc, a) = target("svc", "a.example");
        let (_, b) = target("svc", "b.example");
        let (_, z) = target("svc", "z.example");
        c.record_attempt(&svc, &a, false);
        c.record_attempt(&svc, &b, false);
        c.record_attempt(&svc, &z, false);
        c.record_attempt(&svc, &z, true);
        c.record_attempt(&svc, &a, true); // tracked targets keep counting
        assert_eq!((c.len(), c.overflow()), (2, 2));
        let counts = c.take();
        assert_eq!(counts.len(), 2);
        assert_eq!((counts[0].attempts(), counts[0].successes()), (2, 1));
        assert_eq!(c.overflow(), 0);
        // After take there is room again.
        c.record_attempt(&svc, &z, true);
        assert_eq!((c.len(), c.overflow()), (1, 0));
        assert_eq!(TargetCounter::new(10_000).max_targets, MAX_TARGETS);
        let mut none = TargetCounter::new(0);
        none.record_attempt(&svc, &a, true);
        assert_eq!((none.len(), none.overflow()), (0, 1));
    }

    proptest! {
        #[test]
        fn counter_accounts_for_every_attempt_deterministically(
            attempts in proptest::collection::vec((0u8..4, 0u8..6, any::<bool>()), 0..300),
            max_targets in 0usize..30,
        ) {
            let run = || {
                let mut c = TargetCounter::new(max_targets);
                for (s, h, ok) in &attempts {
                    let (svc, host) = target(&format!("s{s}"), &format!("h{h}.example"));
                    c.record_attempt(&svc, &host, *ok);
                }
                let overflow = c.overflow();
                (c.take(), overflow)
            };
            let (counts, overflow) = run();
            prop_assert_eq!(&run().0, &counts);
            prop_assert!(counts.len() <= max_targets);
            let total: u64 = counts.iter().map(TargetCounts::attempts).sum();
            prop_assert_eq!(total + overflow, attempts.len() as u64);
            prop_assert!(counts.iter().all(|t| t.successes() <= t.attempts()));
            let keys: Vec<_> = counts.iter().map(|t| (t.service(), t.host())).collect();
            prop_assert!(keys.windows(2).all(|w| w[0] < w[1]));
        }
    }
}
