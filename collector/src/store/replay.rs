//! The per-agent replay window: which recent sequence numbers an agent key has used.
//!
//! State per key: the highest sequence number seen and a ring bitmap of `window` bits, where bit
//! `seq % window` says whether `seq` was seen, valid for `highest - window < seq <= highest`.
//! Encoded as `version (1) | window u64 BE | highest u64 BE | last_seen u64 BE | bitmap`.

/// What the window says about a sequence number.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Not seen before: the state was updated to include it.
    Fresh,
    /// Seen before, or older than the window (see [`ReplayState::check_and_insert`]).
    Seen,
}

const VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 8 + 8;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ReplayState {
    window: u64,
    highest: u64,
    /// Collector time of the last accepted batch from this key (for retention).
    pub(super) last_seen: u64,
    bits: Vec<u8>,
}

impl ReplayState {
    /// The state after the first sequence number from a key.
    pub(super) fn first(window: u64, seq: u64, now: u64) -> ReplayState {
        let mut state =
            ReplayState { window, highest: seq, last_seen: now, bits: vec![0; bitmap_len(window)] };
        state.set(seq);
        state
    }

    /// Checks `seq` and records it when fresh.
    ///
    /// A sequence number at or below `highest - window` is `Seen` without looking: the window
    /// no longer says whether it was used, and accepting it would let a captured old envelope
    /// be replayed once its digest has left the digest index. An honest agent numbers batches
    /// in order and only re-sends what was not acknowledged, so it reaches this case only after
    /// `window` newer batches were accepted; treating the old one as already delivered drops
    /// it rather than letting the store be tricked into counting it twice.
    pub(super) fn check_and_insert(&mut self, seq: u64, now: u64) -> Verdict {
        if seq > self.highest {
            let advance = seq - self.highest;
            if advance >= self.window {
                self.bits.iter_mut().for_each(|b| *b = 0);
            } else {
                // The bits for highest+1..=seq held sequence numbers that now fall out of the
                // window.
                for s in self.highest + 1..=seq {
                    self.clear(s);
                }
            }
            self.highest = seq;
            self.set(seq);
            self.last_seen = self.last_seen.max(now);
            return Verdict::Fresh;
        }
        if self.highest - seq >= self.window || self.is_set(seq) {
            return Verdict::Seen;
        }
        self.set(seq);
        self.last_seen = self.last_seen.max(now);
        Verdict::Fresh
    }

    /// Decodes a stored state for a store configured with `window`.
    ///
    /// A state written under another window size is converted conservatively: every sequence
    /// number up to the stored highest counts as seen, so changing the configuration can make
    /// an agent lose retries that were in flight, never accept a replay.
    pub(super) fn decode(bytes: &[u8], window: u64) -> Result<ReplayState, String> {
        if bytes.len() < HEADER || bytes[0] != VERSION {
            return Err(format!(
                "replay state of {} bytes with version {:?}",
                bytes.len(),
                bytes.first()
            ));
        }
        let field = |i: usize| {
            let mut b = [0; 8];
            b.copy_from_slice(&bytes[1 + i * 8..9 + i * 8]);
            u64::from_be_bytes(b)
        };
        let (stored_window, highest, last_seen) = (field(0), field(1), field(2));
        let bits = &bytes[HEADER..];
        if stored_window == window {
            if bits.len() != bitmap_len(window) {
                return Err(format!("replay bitmap of {} bytes for window {window}", bits.len()));
            }
            return Ok(ReplayState { window, highest, last_seen, bits: bits.to_vec() });
        }
        Ok(ReplayState { window, highest, last_seen, bits: vec![0xff; bitmap_len(window)] })
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + self.bits.len());
        out.push(VERSION);
        out.extend_from_slice(&self.window.to_be_bytes());
        out.extend_from_slice(&self.highest.to_be_bytes());
        out.extend_from_slice(&self.last_seen.to_be_bytes());
        out.extend_from_slice(&self.bits);
        out
    }

    fn index(&self, seq: u64) -> (usize, u8) {
        // Invariant: the bitmap has window bits, so seq % window indexes inside it.
        let bit = seq % self.window;
        ((bit / 8) as usize, 1 << (bit % 8))
    }

    fn set(&mut self, seq: u64) {
        let (i, m) = self.index(seq);
        self.bits[i] |= m;
    }

    fn clear(&mut self, seq: u64) {
        let (i, m) = self.index(seq);
        self.bits[i] &= !m;
    }

    fn is_set(&self, seq: u64) -> bool {
        let (i, m) = self.index(seq);
        self.bits[i] & m != 0
    }
}

fn bitmap_len(window: u64) -> usize {
    // Invariant: the store refuses windows above MAX_WINDOW, so this fits in usize.
    window.div_ceil(8) as usize
}

/// The largest replay window a store accepts (128 KiB of bitmap per agent key).
pub(super) const MAX_WINDOW: u64 = 1 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_then_seen_in_any_order_within_the_window() {
        let mut s = ReplayState::first(8, 10, 0);
        assert_eq!(s.check_and_insert(10, 0), Verdict::Seen);
        assert_eq!(s.check_and_insert(12, 0), Verdict::Fresh);
        assert_eq!(s.check_and_insert(11, 0), Verdict::Fresh);
        assert_eq!(s.check_and_insert(11, 0), Verdict::Seen);
        // 12 - 8 = 4 is out of the window, 5 is the oldest still inside.
        assert_eq!(s.check_and_insert(4, 0), Verdict::Seen);
        assert_eq!(s.check_and_insert(5, 0), Verdict::Fresh);
        assert_eq!(s.check_and_insert(5, 0), Verdict::Seen);
    }

    #[test]
    fn advancing_clears_bits_that_left_the_window() {
        let mut s = ReplayState::first(8, 0, 0);
        for seq in 1..8 {
            assert_eq!(s.check_and_insert(seq, 0), Verdict::Fresh);
        }
        // 9 reuses the bits of 1 (and 8 those of 0): 8 and 9 must be fresh, not "seen".
        assert_eq!(s.check_and_insert(9, 0), Verdict::Fresh);
        assert_eq!(s.check_and_insert(8, 0), Verdict::Fresh);
        assert_eq!(s.check_and_insert(1, 0), Verdict::Seen);
        // A jump beyond the window forgets everything.
        assert_eq!(s.check_and_insert(100, 0), Verdict::Fresh);
        assert_eq!(s.check_and_insert(95, 0), Verdict::Fresh);
        assert_eq!(s.check_and_insert(92, 0), Verdict::Seen);
    }

    #[test]
    fn encoding_round_trips_and_a_new_window_is_conservative() {
        let mut s = ReplayState::first(16, 40, 7);
        s.check_and_insert(38, 9);
        let bytes = s.encode();
        assert_eq!(ReplayState::decode(&bytes, 16).unwrap(), s);
        let mut resized = ReplayState::decode(&bytes, 32).unwrap();
        assert_eq!(resized.last_seen, 9);
        assert_eq!(resized.check_and_insert(39, 0), Verdict::Seen);
        assert_eq!(resized.check_and_insert(41, 0), Verdict::Fresh);
        assert!(ReplayState::decode(&bytes[..10], 16).is_err());
        assert!(ReplayState::decode(&bytes[..bytes.len() - 1], 16).is_err());
    }
}
