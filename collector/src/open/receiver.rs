//! The HPKE receiver the opener uses: RFC 9180 base mode with DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256 and ChaCha20-Poly1305, for one message per encapsulated key (seq 0).
//!
//! The `hpke` crate's `single_shot_open` derives the recipient's public key from the private
//! key on every call (a scalar multiplication, about a quarter of an open) and hashes the
//! fixed `info` again each time. A [`Receiver`] does both once, when the key is loaded: the
//! public key, and the `psk_id_hash`/`info_hash` half of the key schedule context. Each open
//! is then one X25519 Diffie-Hellman, six HMAC-SHA256 computations and the AEAD.
//!
//! The Diffie-Hellman is *ring*'s X25519 (assembly on x86-64 with ADX and BMI2), the rest the
//! RustCrypto primitives the `hpke` crate links (hkdf, sha2, chacha20poly1305); the tests
//! check it against RFC 9180's A.2.1 vector, the `hpke` crate, the agent's sealer and (the
//! Diffie-Hellman) x25519-dalek's Montgomery ladder.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use ring::agreement;
use sha2::Sha256;

/// `"KEM" ‖ I2OSP(0x0020, 2)`: DHKEM(X25519, HKDF-SHA256).
const KEM_SUITE: &[u8] = b"KEM\x00\x20";
/// `"HPKE" ‖ kem 0x0020 ‖ kdf 0x0001 ‖ aead 0x0003`.
const HPKE_SUITE: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x03";
/// The mode byte of base mode.
const MODE_BASE: u8 = 0;

/// A recipient key with the per-key and per-`info` work done. See the [module docs](self).
#[derive(Clone)]
pub(crate) struct Receiver {
    secret: zeroize::Zeroizing<[u8; 32]>,
    public: [u8; 32],
    /// `mode ‖ psk_id_hash ‖ info_hash` (65 bytes).
    context: [u8; 65],
}

impl Receiver {
    /// `secret` (clamped or not: X25519 clamps on use) with its `public` key, for messages
    /// sealed with `info`.
    pub(crate) fn new(secret: [u8; 32], public: [u8; 32], info: &[u8]) -> Receiver {
        let mut context = [0u8; 65];
        context[0] = MODE_BASE;
        context[1..33].copy_from_slice(&labeled_extract(b"", HPKE_SUITE, b"psk_id_hash", b""));
        context[33..].copy_from_slice(&labeled_extract(b"", HPKE_SUITE, b"info_hash", info));
        Receiver { secret: zeroize::Zeroizing::new(secret), public, context }
    }

    /// Opens `ciphertext` sent to this key with encapsulated key `enc` and `aad`; `None` when
    /// anything does not match (never says which).
    pub(crate) fn open(&self, enc: &[u8], aad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
        let enc: [u8; 32] = enc.try_into().ok()?;
        let dh = self.diffie_hellman(enc);
        // RFC 9180 §7.1.4: an all-zero shared secret (a small-order point) is an error.
        if dh.iter().fold(0u8, |acc, b| acc | b) == 0 {
            return None;
        }
        let eae_prk = labeled_extract(b"", KEM_SUITE, b"eae_prk", &dh[..]);
        let mut shared = [0u8; 32];
        labeled_expand(&eae_prk, KEM_SUITE, b"shared_secret", &[&enc, &self.public], &mut shared);
        let secret = labeled_extract(&shared, HPKE_SUITE, b"secret", b"");
        let mut key = [0u8; 32];
        labeled_expand(&secret, HPKE_SUITE, b"key", &[&self.context], &mut key);
        let mut nonce = [0u8; 12];
        labeled_expand(&secret, HPKE_SUITE, b"base_nonce", &[&self.context], &mut nonce);
        let aead = ChaCha20Poly1305::new(&Key::from(key));
        aead.decrypt(&Nonce::from(nonce), Payload { msg: ciphertext, aad }).ok()
    }
}

impl Receiver {
    /// X25519(secret, enc) (RFC 7748), all zeros for a point of small order.
    ///
    /// Computed by *ring* (the agent's sealer uses it too): on x86-64 with ADX and BMI2 it is
    /// assembly, about a tenth cheaper than curve25519-dalek's AVX2 Edwards form and a third
    /// cheaper than its Montgomery ladder (`docs/performance.md`, fourteenth round). *ring*
    /// draws an X25519 private key from a random source only; its fixed-bytes source hands it
    /// the collector's secret, the bytes its generator would otherwise draw (as the sealer does
    /// with the RFC 9180 derived scalar, `docs/adr/0001-crypto.md`). It clamps the scalar and
    /// ignores the u-coordinate's top bit, as RFC 7748 says; the tests hold it to the ladder.
    fn diffie_hellman(&self, enc: [u8; 32]) -> zeroize::Zeroizing<[u8; 32]> {
        let mut out = zeroize::Zeroizing::new([0u8; 32]);
        #[allow(deprecated)]
        let fixed = ring::test::rand::FixedSliceRandom { bytes: &self.secret[..] };
        // Invariant: any 32 bytes are an X25519 private key for ring.
        let private = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &fixed)
            .expect("32 bytes are an X25519 private key");
        let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, &enc);
        // ring refuses an all-zero result (a point of small order); `out` then stays zero,
        // which `open` refuses as RFC 9180 says.
        let _ = agreement::agree_ephemeral(private, &peer, |dh| out.copy_from_slice(dh));
        out
    }
}

/// `LabeledExtract(salt, label, ikm)`.
fn labeled_extract(salt: &[u8], suite: &[u8], label: &[u8], ikm: &[u8]) -> [u8; 32] {
    let mut input = Vec::with_capacity(7 + suite.len() + label.len() + ikm.len());
    input.extend_from_slice(b"HPKE-v1");
    input.extend_from_slice(suite);
    input.extend_from_slice(label);
    input.extend_from_slice(ikm);
    let (prk, _) = Hkdf::<Sha256>::extract(Some(salt), &input);
    let mut out = [0u8; 32];
    out.copy_from_slice(&prk);
    out
}

/// `LabeledExpand(prk, label, info, L)` with `info` given in parts; `L = out.len()`.
fn labeled_expand(prk: &[u8; 32], suite: &[u8], label: &[u8], info: &[&[u8]], out: &mut [u8]) {
    // Invariant: callers ask for 12 or 32 bytes, so L fits two bytes and HKDF's 255 * 32 limit.
    let len = (out.len() as u16).to_be_bytes();
    let mut parts: Vec<&[u8]> = vec![&len, b"HPKE-v1", suite, label];
    parts.extend_from_slice(info);
    let hkdf = Hkdf::<Sha256>::from_prk(prk).expect("a 32-byte PRK is valid for HKDF-SHA256");
    hkdf.expand_multi_info(&parts, out).expect("12 or 32 bytes is within HKDF-SHA256's limit");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use x25519_dalek::{PublicKey, StaticSecret};

    use super::*;

    /// RFC 7748's X25519 as x25519-dalek computes it (the Montgomery ladder throughout).
    fn ladder(secret: [u8; 32], u: [u8; 32]) -> [u8; 32] {
        StaticSecret::from(secret).diffie_hellman(&PublicKey::from(u)).to_bytes()
    }

    fn receiver(secret: [u8; 32]) -> Receiver {
        Receiver::new(secret, PublicKey::from(&StaticSecret::from(secret)).to_bytes(), b"info")
    }

    /// The eight points of small order, as u-coordinates (RFC 7748 section 7's list, with the
    /// non-canonical encodings): X25519 of any of them is all zeros.
    const SMALL_ORDER: [&str; 7] = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
        "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ];

    #[test]
    fn small_order_points_give_zero_and_are_refused() {
        let r = receiver([0x42; 32]);
        for hex_u in SMALL_ORDER {
            let u: [u8; 32] = hex::decode(hex_u).unwrap().try_into().unwrap();
            for u in [u, {
                let mut hi = u;
                hi[31] |= 0x80;
                hi
            }] {
                assert_eq!(*r.diffie_hellman(u), [0; 32], "{hex_u}");
                assert_eq!(ladder([0x42; 32], u), [0; 32], "{hex_u}");
                assert!(r.open(&u, b"", &[0; 32]).is_none(), "{hex_u}");
            }
        }
        // u = -1, a point of the twist.
        let mut minus_one = [0xff; 32];
        minus_one[0] = 0xec;
        minus_one[31] = 0x7f;
        assert_eq!(*r.diffie_hellman(minus_one), ladder([0x42; 32], minus_one));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// ring's X25519 is the same as x25519-dalek's Montgomery ladder: for public keys of
        /// the curve (what agents send), for any 32 bytes (about half of them points of the
        /// twist), with the top bit set (ignored) and for u-coordinates of p and above
        /// (non-canonical: taken mod p).
        #[test]
        fn x25519_through_ring_matches_the_ladder(
            secret in any::<[u8; 32]>(),
            other in any::<[u8; 32]>(),
            raw in any::<[u8; 32]>(),
            low in 0u8..=18,
        ) {
            let r = receiver(secret);
            let public = PublicKey::from(&StaticSecret::from(other)).to_bytes();
            let mut high = raw;
            high[31] |= 0x80;
            // p + low (non-canonical for low <= 18): 2^255 - 19 + low.
            let mut big = [0xff; 32];
            big[0] = 0xed + low;
            big[31] = 0x7f;
            for u in [public, raw, high, big] {
                prop_assert_eq!(*r.diffie_hellman(u), ladder(secret, u));
            }
        }
    }
}
