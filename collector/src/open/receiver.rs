//! The HPKE receiver the opener uses: RFC 9180 base mode with DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256 and ChaCha20-Poly1305, for one message per encapsulated key (seq 0).
//!
//! The `hpke` crate's `single_shot_open` derives the recipient's public key from the private
//! key on every call (a scalar multiplication, about a quarter of an open) and hashes the
//! fixed `info` again each time. A [`Receiver`] does both once, when the key is loaded: the
//! public key, and the `psk_id_hash`/`info_hash` half of the key schedule context. Each open
//! is then one X25519 Diffie-Hellman, six HMAC-SHA256 computations and the AEAD.
//!
//! It is built from the same RustCrypto primitives the `hpke` crate links (x25519-dalek, hkdf,
//! sha2, chacha20poly1305), independent of the agent's *ring* sealer; the tests check it
//! against RFC 9180's A.2.1 vector, the `hpke` crate and the agent's sealer.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

/// `"KEM" ‖ I2OSP(0x0020, 2)`: DHKEM(X25519, HKDF-SHA256).
const KEM_SUITE: &[u8] = b"KEM\x00\x20";
/// `"HPKE" ‖ kem 0x0020 ‖ kdf 0x0001 ‖ aead 0x0003`.
const HPKE_SUITE: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x03";
/// The mode byte of base mode.
const MODE_BASE: u8 = 0;

/// A recipient key with the per-key and per-`info` work done. See the [module docs](self).
#[derive(Clone)]
pub(crate) struct Receiver {
    secret: StaticSecret,
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
        Receiver { secret: StaticSecret::from(secret), public, context }
    }

    /// Opens `ciphertext` sent to this key with encapsulated key `enc` and `aad`; `None` when
    /// anything does not match (never says which).
    pub(crate) fn open(&self, enc: &[u8], aad: &[u8], ciphertext: &[u8]) -> Option<Vec<u8>> {
        let enc: [u8; 32] = enc.try_into().ok()?;
        let dh = self.secret.diffie_hellman(&PublicKey::from(enc));
        // RFC 9180 §7.1.4: an all-zero shared secret (a small-order point) is an error.
        if !dh.was_contributory() {
            return None;
        }
        let eae_prk = labeled_extract(b"", KEM_SUITE, b"eae_prk", dh.as_bytes());
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
