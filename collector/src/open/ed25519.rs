//! The opener's Ed25519 verification (RFC 8032), on curve25519-dalek.
//!
//! The agent signs with *ring*, and *ring* verified here too until the fourteenth round of
//! `docs/performance.md`: its double scalar multiplication is serial 64-bit code, where
//! curve25519-dalek (already linked: x25519-dalek, the `hpke` crate) has a vectorised AVX2 backend,
//! chosen at run time. Verification was about half of an open's CPU.
//!
//! The checks are *ring*'s, in the same order, so the two accept exactly the same
//! signatures (the tests hold it to *ring* over random, altered and crafted inputs):
//!
//! - `S` must be a canonical scalar (`S < L`), or the signature is refused;
//! - `A` is decompressed as *ring* (BoringSSL's `ge_frombytes_vartime`) does it: the sign bit
//!   aside, the y-coordinate is taken mod p (a non-canonical y is accepted), and a y with no
//!   x on the curve is refused;
//! - `k = SHA-512(R ‖ A ‖ M) mod L` over the bytes as sent;
//! - cofactorless: `[S]B - [k]A` is encoded and compared with `R`'s bytes, so a non-canonical
//!   `R` never matches.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use sha2::{Digest, Sha512};

/// True if `signature` is `public`'s Ed25519 signature of the concatenation of `message`'s
/// parts (given in parts so the signed message is never copied together).
pub(crate) fn verify(public: &[u8; 32], message: &[&[u8]], signature: &[u8; 64]) -> bool {
    let (r, s) = signature.split_at(32);
    let s: [u8; 32] = s.try_into().expect("the second half of 64 bytes is 32 bytes");
    let Some(s) = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)) else {
        return false;
    };
    let Some(a) = CompressedEdwardsY(*public).decompress() else {
        return false;
    };
    let mut hash = Sha512::new();
    hash.update(r);
    hash.update(public);
    for part in message {
        hash.update(part);
    }
    let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
    EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &-a, &s).compress().as_bytes() == r
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use ring::signature::{self, KeyPair};

    use super::*;

    fn ring_verify(public: &[u8; 32], message: &[u8], sig: &[u8; 64]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, public).verify(message, sig).is_ok()
    }

    fn key_pair(seed: [u8; 32]) -> signature::Ed25519KeyPair {
        signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap()
    }

    fn both(public: &[u8; 32], message: &[u8], sig: &[u8; 64]) -> (bool, bool) {
        // Split at an arbitrary point: the parts are hashed as one message.
        let cut = message.len() / 3;
        (
            verify(public, &[&message[..cut], &message[cut..]], sig),
            ring_verify(public, message, sig),
        )
    }

    /// L, the order of the base point, little-endian.
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];

    fn add_l(s: &[u8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        let mut carry = 0u16;
        for i in 0..32 {
            let v = u16::from(s[i]) + u16::from(L[i]) + carry;
            out[i] = v as u8;
            carry = v >> 8;
        }
        out
    }

    /// Encodings of points of small order (and non-canonical spellings of them): y = 1, -1, 0
    /// with either sign bit, y = p and p + 1, and the order-8 points.
    const ODD_KEYS: [&str; 9] = [
        "0100000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000080",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    ];

    #[test]
    fn rfc8032_test_vector_1_verifies_and_altered_copies_do_not() {
        // RFC 8032 section 7.1, TEST 1 (the empty message).
        let public: [u8; 32] =
            hex::decode("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
                .unwrap()
                .try_into()
                .unwrap();
        let sig: [u8; 64] = hex::decode(
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        )
        .unwrap()
        .try_into()
        .unwrap();
        assert!(verify(&public, &[], &sig));
        assert!(!verify(&public, &[b"x"], &sig));
        let mut s_plus_l = sig;
        s_plus_l[32..].copy_from_slice(&add_l(&sig[32..]));
        assert_eq!(both(&public, b"", &s_plus_l), (false, false), "S + L is not canonical");
    }

    #[test]
    fn small_order_and_non_canonical_keys_are_judged_as_ring_judges_them() {
        let mut accepted = 0;
        for key in ODD_KEYS {
            let public: [u8; 32] = hex::decode(key).unwrap().try_into().unwrap();
            // R the identity and S = 0 verify against a key of small order exactly when [k]A
            // is the identity, which depends on k mod 8, and so on the message and on the key's
            // bytes as sent (a non-canonical encoding hashes differently from the canonical
            // one): over many messages both verifiers must agree every time.
            for n in 0u32..64 {
                let message = n.to_le_bytes();
                let mut sig = [0u8; 64];
                sig[0] = 1;
                let (ours, ring) = both(&public, &message, &sig);
                assert_eq!(ours, ring, "key {key}, message {n}");
                accepted += usize::from(ours);
                let real = key_pair([7; 32]).sign(&message);
                let real: [u8; 64] = real.as_ref().try_into().unwrap();
                let (ours, ring) = both(&public, &message, &real);
                assert_eq!(ours, ring, "key {key}, message {n}");
            }
        }
        // Some of those degenerate signatures are valid (the identity as key, half of them for
        // order 2...): the comparison above covered acceptances, not only refusals.
        assert!(accepted > 64, "{accepted}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// For real signatures, the same signature with one bit flipped anywhere (signature,
        /// key or message), S + L, and any 32 bytes as a key: the same verdict as *ring*.
        #[test]
        fn verdicts_match_ring(
            seed in any::<[u8; 32]>(),
            message in proptest::collection::vec(any::<u8>(), 0..300),
            flip in 0usize..(64 + 32 + 300) * 8,
            raw_key in any::<[u8; 32]>(),
        ) {
            let pair = key_pair(seed);
            let public: [u8; 32] = pair.public_key().as_ref().try_into().unwrap();
            let sig: [u8; 64] = pair.sign(&message).as_ref().try_into().unwrap();
            prop_assert_eq!(both(&public, &message, &sig), (true, true));

            let (mut s, mut k, mut m) = (sig, public, message.clone());
            let (byte, bit) = (flip / 8, flip % 8);
            if byte < 64 {
                s[byte] ^= 1 << bit;
            } else if byte < 96 {
                k[byte - 64] ^= 1 << bit;
            } else if byte - 96 < m.len() {
                m[byte - 96] ^= 1 << bit;
            }
            let (ours, ring) = both(&k, &m, &s);
            prop_assert_eq!(ours, ring);

            let mut s_plus_l = sig;
            s_plus_l[32..].copy_from_slice(&add_l(&sig[32..]));
            prop_assert_eq!(both(&public, &message, &s_plus_l), (false, false));

            let (ours, ring) = both(&raw_key, &message, &sig);
            prop_assert_eq!(ours, ring);
        }
    }
}
