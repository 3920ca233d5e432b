//! [`BrowserEntropy`]: the core's randomness from the platform's secure RNG.

use ring::rand::{SecureRandom, SystemRandom};
use vantage_agent::entropy::Entropy;

/// *ring*'s `SystemRandom`: `crypto.getRandomValues` in a browser (ring's
/// `wasm32_unknown_unknown_js` feature), the operating system's RNG elsewhere.
#[derive(Debug)]
pub struct BrowserEntropy(SystemRandom);

impl BrowserEntropy {
    /// The platform's RNG.
    pub fn new() -> BrowserEntropy {
        BrowserEntropy(SystemRandom::new())
    }
}

impl Default for BrowserEntropy {
    fn default() -> Self {
        BrowserEntropy::new()
    }
}

impl Entropy for BrowserEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        // Identity keys and HPKE ephemerals come from here: carrying on with predictable bytes
        // would be worse than stopping.
        self.0.fill(dest).expect("the platform RNG (crypto.getRandomValues) is available");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_with_bytes_that_differ() {
        let mut e = BrowserEntropy::new();
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        e.fill(&mut a);
        e.fill(&mut b);
        assert_ne!(a, b);
        assert_ne!(a, [0; 32]);
    }
}
