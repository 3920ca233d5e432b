//! RFC 9180 HPKE, base mode, sender side, on *ring* alone:
//! DHKEM(X25519, HKDF-SHA256) (kem 0x0020), HKDF-SHA256 (kdf 0x0001), ChaCha20-Poly1305
//! (aead 0x0003). Single-shot: one message per encapsulation (sequence number 0).
//!
//! *ring* has X25519 only for ephemeral keys and HKDF only behind opaque types, so this module
//! builds LabeledExtract/LabeledExpand from HMAC-SHA256 directly and feeds the RFC's
//! `DeriveKeyPair` scalar to *ring*'s ephemeral X25519 through a fixed-bytes random source (see
//! `docs/adr/0001-crypto.md`). The receiver side lives in `vantage-collector` and uses the
//! independent `hpke` crate; both pass the RFC 9180 A.2.1 vector.

use ring::{aead, agreement, hmac};

const KEM_SUITE: &[u8] = b"KEM\x00\x20";
const HPKE_SUITE: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x03";
const VERSION_LABEL: &[u8] = b"HPKE-v1";
const MODE_BASE: u8 = 0;

/// Sealing failed. With a valid recipient key this does not happen; a low-order (all-zero
/// shared secret) recipient key is refused, as RFC 9180 section 7.1.4 requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("HPKE seal failed: the recipient public key is invalid (low order)")]
pub struct SealError;

/// LabeledExtract(salt, label, ikm) = HMAC-SHA256(salt, "HPKE-v1" || suite || label || ikm).
fn labeled_extract(suite: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> [u8; 32] {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    let mut ctx = hmac::Context::with_key(&key);
    for part in [VERSION_LABEL, suite, label, ikm] {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// LabeledExpand(prk, label, info, L): HKDF-Expand with info = I2OSP(L, 2) || "HPKE-v1" ||
/// suite || label || info. `N` is L; every use here is at most one SHA-256 block.
fn labeled_expand<const N: usize>(
    suite: &[u8],
    prk: &[u8; 32],
    label: &[u8],
    info: &[u8],
) -> [u8; N] {
    const { assert!(N <= 32, "one HKDF block is enough for every HPKE use here") };
    let len = (N as u16).to_be_bytes();
    let key = hmac::Key::new(hmac::HMAC_SHA256, prk);
    let mut ctx = hmac::Context::with_key(&key);
    for part in [&len[..], VERSION_LABEL, suite, label, info, &[1u8]] {
        ctx.update(part);
    }
    let mut out = [0u8; N];
    out.copy_from_slice(&ctx.sign().as_ref()[..N]);
    out
}

/// RFC 9180 section 7.1.3 `DeriveKeyPair` for X25519: the private scalar derived from `ikm`.
pub fn derive_private_key(ikm: &[u8]) -> [u8; 32] {
    let dkp_prk = labeled_extract(KEM_SUITE, b"", b"dkp_prk", ikm);
    labeled_expand::<32>(KEM_SUITE, &dkp_prk, b"sk", b"")
}

/// The encapsulated key (`enc`, the ephemeral public key) that [`seal_base`] will produce for
/// `ikm_e`. The envelope header carries it and is the AEAD's additional data, so it is needed
/// before sealing.
pub fn encapsulated_key(ikm_e: &[u8; 32]) -> Result<[u8; 32], SealError> {
    let eph = ephemeral_key(ikm_e)?;
    let mut enc = [0u8; 32];
    enc.copy_from_slice(eph.compute_public_key().map_err(|_| SealError)?.as_ref());
    Ok(enc)
}

fn ephemeral_key(ikm_e: &[u8; 32]) -> Result<agreement::EphemeralPrivateKey, SealError> {
    let sk_e = derive_private_key(ikm_e);
    // ring only generates X25519 keys from a SecureRandom. Its fixed-bytes source hands it the
    // RFC's derived scalar, which is exactly the bytes its generator would otherwise draw.
    #[allow(deprecated)]
    let fixed = ring::test::rand::FixedSliceRandom { bytes: &sk_e };
    agreement::EphemeralPrivateKey::generate(&agreement::X25519, &fixed).map_err(|_| SealError)
}

/// The key schedule's outputs for one encapsulation (base mode).
struct Schedule {
    enc: [u8; 32],
    #[cfg_attr(not(test), allow(dead_code))] // checked against the RFC vector in tests
    shared_secret: [u8; 32],
    key: [u8; 32],
    base_nonce: [u8; 12],
}

fn encap_and_schedule(
    pk_r: &[u8; 32],
    ikm_e: &[u8; 32],
    info: &[u8],
) -> Result<Schedule, SealError> {
    let eph = ephemeral_key(ikm_e)?;
    let mut enc = [0u8; 32];
    enc.copy_from_slice(eph.compute_public_key().map_err(|_| SealError)?.as_ref());
    let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, pk_r);
    let dh = agreement::agree_ephemeral(eph, &peer, |dh| {
        let mut out = [0u8; 32];
        out.copy_from_slice(dh);
        out
    })
    .map_err(|_| SealError)?;

    let mut kem_context = [0u8; 64];
    kem_context[..32].copy_from_slice(&enc);
    kem_context[32..].copy_from_slice(pk_r);
    let eae_prk = labeled_extract(KEM_SUITE, b"", b"eae_prk", &dh);
    let shared_secret = labeled_expand::<32>(KEM_SUITE, &eae_prk, b"shared_secret", &kem_context);

    let psk_id_hash = labeled_extract(HPKE_SUITE, b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract(HPKE_SUITE, b"", b"info_hash", info);
    let mut ksc = [0u8; 65];
    ksc[0] = MODE_BASE;
    ksc[1..33].copy_from_slice(&psk_id_hash);
    ksc[33..].copy_from_slice(&info_hash);
    let secret = labeled_extract(HPKE_SUITE, &shared_secret, b"secret", b"");
    let key = labeled_expand::<32>(HPKE_SUITE, &secret, b"key", &ksc);
    let base_nonce = labeled_expand::<12>(HPKE_SUITE, &secret, b"base_nonce", &ksc);
    Ok(Schedule { enc, shared_secret, key, base_nonce })
}

/// Single-shot HPKE base-mode seal to `pk_r`: returns `(enc, ciphertext || tag)`.
///
/// `ikm_e` is the input keying material for the ephemeral key (RFC 9180 `DeriveKeyPair`); it
/// must be 32 fresh random bytes for every call. Fixed values are for test vectors only.
pub fn seal_base(
    pk_r: &[u8; 32],
    ikm_e: &[u8; 32],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<([u8; 32], Vec<u8>), SealError> {
    seal_base_with_aad(pk_r, ikm_e, info, |_| aad.to_vec(), plaintext)
}

/// Like [`seal_base`], for additional data that contains `enc` itself (the envelope header):
/// `aad_for` is called with `enc` once the ephemeral key exists, so it is derived only once.
pub fn seal_base_with_aad(
    pk_r: &[u8; 32],
    ikm_e: &[u8; 32],
    info: &[u8],
    aad_for: impl FnOnce(&[u8; 32]) -> Vec<u8>,
    plaintext: &[u8],
) -> Result<([u8; 32], Vec<u8>), SealError> {
    let s = encap_and_schedule(pk_r, ikm_e, info)?;
    let aad = aad_for(&s.enc);
    let key = aead::LessSafeKey::new(
        aead::UnboundKey::new(&aead::CHACHA20_POLY1305, &s.key)
            .expect("a 32-byte key fits ChaCha20-Poly1305"),
    );
    // Sequence number 0: the nonce is base_nonce itself. One message per key, so it is unique.
    let nonce = aead::Nonce::assume_unique_for_key(s.base_nonce);
    let mut buf = Vec::with_capacity(plaintext.len() + aead::CHACHA20_POLY1305.tag_len());
    buf.extend_from_slice(plaintext);
    key.seal_in_place_append_tag(nonce, aead::Aad::from(&aad), &mut buf)
        .expect("ChaCha20-Poly1305 seals any message shorter than 256 GiB");
    Ok((s.enc, buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<const N: usize>(s: &str) -> [u8; N] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    // RFC 9180 appendix A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305, base.
    const INFO: &str = "4f6465206f6e2061204772656369616e2055726e";
    const IKM_E: &str = "909a9b35d3dc4713a5e72a4da274b55d3d3821a37e5d099e74a647db583a904b";
    const SK_EM: &str = "f4ec9b33b792c372c1d2c2063507b684ef925b8c75a42dbcbf57d63ccd381600";
    const PK_RM: &str = "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a";
    const ENC: &str = "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a";
    const SHARED: &str = "0bbe78490412b4bbea4812666f7916932b828bba79942424abb65244930d69a7";
    const KEY: &str = "ad2744de8e17f4ebba575b3f5f5a8fa1f69c2a07f6e7500bc60ca6e3e3ec1c91";
    const NONCE: &str = "5c4d98150661b848853b547f";
    const PT: &str = "4265617574792069732074727574682c20747275746820626561757479";
    const AAD0: &str = "436f756e742d30";
    const CT0: &str = "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28";

    #[test]
    fn rfc9180_a21_key_schedule() {
        assert_eq!(derive_private_key(&h::<32>(IKM_E)), h::<32>(SK_EM));
        let s = encap_and_schedule(&h(PK_RM), &h(IKM_E), &hex::decode(INFO).unwrap()).unwrap();
        assert_eq!(s.enc, h::<32>(ENC));
        assert_eq!(s.shared_secret, h::<32>(SHARED));
        assert_eq!(s.key, h::<32>(KEY));
        assert_eq!(s.base_nonce, h::<12>(NONCE));
    }

    #[test]
    fn rfc9180_a21_first_encryption() {
        let (enc, ct) = seal_base(
            &h(PK_RM),
            &h(IKM_E),
            &hex::decode(INFO).unwrap(),
            &hex::decode(AAD0).unwrap(),
            &hex::decode(PT).unwrap(),
        )
        .unwrap();
        assert_eq!(hex::encode(enc), ENC);
        assert_eq!(hex::encode(ct), CT0);
    }

    #[test]
    fn low_order_recipient_is_refused() {
        assert_eq!(seal_base(&[0; 32], &[1; 32], b"", b"", b"x"), Err(SealError));
    }
}
