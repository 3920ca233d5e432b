//! Randomness, passed in: the core never reaches for an RNG of its own.
//!
//! Shells supply the operating system's RNG (the native runtime uses *ring*'s `SystemRandom`,
//! the browser `crypto.getRandomValues`). Tests and replays use [`SeededEntropy`].

use ring::hmac;

/// A source of random bytes. Implementations for key material must be cryptographically secure.
pub trait Entropy {
    /// Fills `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]);

    /// A random `u64`.
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// A uniformly random float in `[0, 1)` (53 bits).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl<E: Entropy + ?Sized> Entropy for &mut E {
    fn fill(&mut self, dest: &mut [u8]) {
        (**self).fill(dest)
    }
}

/// Deterministic bytes from a 32-byte seed: HMAC-SHA256(seed, counter) blocks.
///
/// The output is unpredictable to anyone who does not know the seed, but the same seed always
/// gives the same bytes, so it is for tests, golden vectors and replays only; keys made from it
/// are only as secret as the seed. The constructor's name says so.
pub struct SeededEntropy {
    key: hmac::Key,
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl SeededEntropy {
    /// A deterministic source. Not for production keys unless `seed` is itself secret and random.
    pub fn insecure_from_seed(seed: [u8; 32]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, &seed), counter: 0, block: [0; 32], used: 32 }
    }
}

impl std::fmt::Debug for SeededEntropy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeededEntropy").field("counter", &self.counter).finish_non_exhaustive()
    }
}

impl Entropy for SeededEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        for byte in dest {
            if self.used == self.block.len() {
                let tag = hmac::sign(&self.key, &self.counter.to_be_bytes());
                self.block.copy_from_slice(tag.as_ref());
                self.counter += 1;
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_is_deterministic_and_chunking_does_not_matter() {
        let mut a = SeededEntropy::insecure_from_seed([1; 32]);
        let mut b = SeededEntropy::insecure_from_seed([1; 32]);
        let mut whole = [0u8; 100];
        a.fill(&mut whole);
        let mut parts = [0u8; 100];
        let (x, y) = parts.split_at_mut(33);
        b.fill(x);
        b.fill(y);
        assert_eq!(whole, parts);
        let mut c = SeededEntropy::insecure_from_seed([2; 32]);
        let mut other = [0u8; 100];
        c.fill(&mut other);
        assert_ne!(whole, other);
    }

    #[test]
    fn floats_are_in_unit_interval_and_spread() {
        let mut r = SeededEntropy::insecure_from_seed([3; 32]);
        let xs: Vec<f64> = (0..10_000).map(|_| r.next_f64()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let below_half = xs.iter().filter(|x| **x < 0.5).count();
        assert!((4_700..5_300).contains(&below_half), "{below_half}");
    }
}
