//! Opening envelopes: size, version, key id, HPKE decryption, signature.
//!
//! Every failure is a typed [`OpenError`] that says what was wrong without echoing secrets;
//! the ingest endpoint maps all of them to `400` (never retried) except `TooLarge` (`413`).

mod ed25519;
mod receiver;

use std::fmt;

use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, Serializable};
use vantage_agent::report::Batch;
use vantage_agent::wire::{
    self, AgentPublicKey, CollectorPublicKey, DecodeError, Envelope, KeyId, SignedBatch,
    VerifyError,
};

type KemPrivateKey = <X25519HkdfSha256 as hpke::Kem>::PrivateKey;

/// Why an envelope did not open. Messages never contain key material or plaintext.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The body is larger than the configured limit (HTTP 413).
    #[error("envelope of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Size received.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The envelope names a protocol version this collector does not speak.
    #[error("unsupported envelope version {0}")]
    BadVersion(u64),
    /// The envelope is sealed to a key this collector does not hold.
    #[error("unknown collector key id {0}")]
    UnknownKeyId(KeyId),
    /// HPKE decryption failed: wrong key, or the envelope was altered.
    #[error("decryption failed: the envelope was altered or sealed to another key")]
    DecryptFailed,
    /// The signature does not verify against the batch's agent key.
    #[error("bad signature")]
    BadSignature,
    /// The bytes (outside or inside the ciphertext) are not a valid v1 structure.
    #[error("malformed: {0}")]
    Malformed(DecodeError),
}

impl OpenError {
    /// A stable, low-cardinality label for metrics (`rejected_total{reason=...}`).
    pub fn as_str(&self) -> &'static str {
        match self {
            OpenError::TooLarge { .. } => "too_large",
            OpenError::BadVersion(_) => "bad_version",
            OpenError::UnknownKeyId(_) => "unknown_key_id",
            OpenError::DecryptFailed => "decrypt_failed",
            OpenError::BadSignature => "bad_signature",
            OpenError::Malformed(_) => "malformed",
        }
    }
}

/// A collector's X25519 private key (HPKE recipient). `Debug` shows the key id only.
#[derive(Clone)]
pub struct CollectorKey {
    secret: KemPrivateKey,
    public: CollectorPublicKey,
    key_id: KeyId,
    /// The secret with its public key and the key schedule's `info` part, for opening.
    receiver: receiver::Receiver,
}

impl CollectorKey {
    /// The key RFC 9180 `DeriveKeyPair` gives for `seed` (32 secret random bytes in production;
    /// the `keygen` command draws them from the OS).
    pub fn from_seed(seed: [u8; 32]) -> CollectorKey {
        let (secret, public) = X25519HkdfSha256::derive_keypair(&seed);
        CollectorKey::from_parts(secret, public.to_bytes().into())
    }

    /// Restores a key from its 32 secret bytes (as written by `keygen`).
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> CollectorKey {
        let secret = KemPrivateKey::from_bytes(bytes)
            .expect("every 32-byte string is an X25519 private key (it is clamped on use)");
        let public = X25519HkdfSha256::sk_to_pk(&secret);
        CollectorKey::from_parts(secret, public.to_bytes().into())
    }

    fn from_parts(secret: KemPrivateKey, public: [u8; 32]) -> CollectorKey {
        let receiver = receiver::Receiver::new(secret.to_bytes().into(), public, wire::HPKE_INFO);
        let public = CollectorPublicKey(public);
        CollectorKey { secret, public, key_id: public.key_id(), receiver }
    }

    /// The 32 secret bytes, for the collector's key file only. Never log them.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes().into()
    }

    /// The public key agents seal to.
    pub fn public_key(&self) -> CollectorPublicKey {
        self.public
    }

    /// The key id envelopes sealed to this key carry.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
}

impl fmt::Debug for CollectorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectorKey").field("key_id", &self.key_id()).finish_non_exhaustive()
    }
}

/// A verified batch and what the collector needs to deduplicate it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    /// The verified batch.
    pub batch: Batch,
    /// The collector key it was sealed to.
    pub key_id: KeyId,
    /// SHA-256 of the envelope bytes (unique per envelope: decoding accepts canonical CBOR
    /// only, so the same envelope cannot arrive under two digests).
    pub digest: [u8; 32],
}

impl Opened {
    /// The sending agent's key (for the `(agent key, sequence)` replay window).
    pub fn agent_key(&self) -> AgentPublicKey {
        self.batch.agent_key
    }
}

/// Opens envelopes with the deployment's live collector keys (several during rotation).
#[derive(Clone, Debug)]
pub struct Opener {
    keys: Vec<CollectorKey>,
    max_envelope_bytes: usize,
}

impl Opener {
    /// An opener for these keys, with the default size limit ([`wire::MAX_ENVELOPE_BYTES`]).
    pub fn new(keys: Vec<CollectorKey>) -> Opener {
        Opener { keys, max_envelope_bytes: wire::MAX_ENVELOPE_BYTES }
    }

    /// Lowers the size limit. Default: [`wire::MAX_ENVELOPE_BYTES`] (64 KiB), which is also the
    /// most the protocol allows, so larger values are capped.
    pub fn max_envelope_bytes(mut self, max: usize) -> Opener {
        self.max_envelope_bytes = max.min(wire::MAX_ENVELOPE_BYTES);
        self
    }

    /// Opens and verifies one envelope.
    pub fn open(&self, bytes: &[u8]) -> Result<Opened, OpenError> {
        if bytes.len() > self.max_envelope_bytes {
            return Err(OpenError::TooLarge { len: bytes.len(), max: self.max_envelope_bytes });
        }
        let envelope =
            Envelope::decode(bytes).map_err(|e| match Envelope::unsupported_version(&e) {
                Some(v) => OpenError::BadVersion(v),
                None => OpenError::Malformed(e),
            })?;
        let key = self
            .keys
            .iter()
            .find(|k| k.key_id() == envelope.key_id)
            .ok_or(OpenError::UnknownKeyId(envelope.key_id))?;
        let plaintext = key
            .receiver
            .open(&envelope.enc, &envelope.header_bytes(), &envelope.ciphertext)
            .ok_or(OpenError::DecryptFailed)?;
        let signed = SignedBatch::decode(&plaintext).map_err(OpenError::Malformed)?;
        // The collector's own Ed25519 verification (`ed25519.rs`: *ring*'s verdicts, on a
        // vectorised backend).
        let batch = signed
            .verify_with(&envelope.key_id, |key, parts, signature| {
                ed25519::verify(key.as_bytes(), parts, signature)
            })
            .map_err(|e| match e {
                VerifyError::BadSignature => OpenError::BadSignature,
                VerifyError::Malformed(d) => OpenError::Malformed(d),
                _ => OpenError::BadSignature,
            })?;
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut d = [0u8; 32];
        d.copy_from_slice(digest.as_ref());
        Ok(Opened { batch, key_id: envelope.key_id, digest: d })
    }
}

#[cfg(test)]
mod tests {
    use hpke::OpModeR;
    use hpke::aead::ChaCha20Poly1305;
    use hpke::kdf::HkdfSha256;

    use super::*;

    type KemEncappedKey = <X25519HkdfSha256 as hpke::Kem>::EncappedKey;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    // RFC 9180 appendix A.2.1 (the same vector the agent's ring sealer is checked against).
    const IKM_R: &str = "1ac01f181fdf9f352797655161c58b75c656a6cc2716dcb66372da835542e1df";
    const SK_RM: &str = "8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb";
    const PK_RM: &str = "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a";
    const ENC: &str = "1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a";
    const INFO: &str = "4f6465206f6e2061204772656369616e2055726e";
    const PT: &str = "4265617574792069732074727574682c20747275746820626561757479";
    const AAD0: &str = "436f756e742d30";
    const CT0: &str = "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28";

    #[test]
    fn rfc9180_a21_derive_and_open_with_the_hpke_crate() {
        let key = CollectorKey::from_seed(h(IKM_R).try_into().unwrap());
        assert_eq!(key.public_key().to_string(), PK_RM);
        // The RFC lists DeriveKeyPair's output before clamping; the hpke crate stores it clamped.
        let mut clamped: [u8; 32] = h(SK_RM).try_into().unwrap();
        clamped[0] &= 248;
        clamped[31] = (clamped[31] & 127) | 64;
        assert_eq!(key.secret_bytes(), clamped);
        let imported = CollectorKey::from_secret_bytes(&h(SK_RM).try_into().unwrap());
        assert_eq!(imported.public_key().to_string(), PK_RM);
        let encapped = KemEncappedKey::from_bytes(&h(ENC)).unwrap();
        let pt = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &key.secret,
            &encapped,
            &h(INFO),
            &h(CT0),
            &h(AAD0),
        )
        .unwrap();
        assert_eq!(hex::encode(pt), PT);
    }

    #[test]
    fn ring_sealed_messages_open_with_the_hpke_crate() {
        let key = CollectorKey::from_seed([3; 32]);
        for (i, len) in [0usize, 1, 15, 16, 17, 1000, 60_000].into_iter().enumerate() {
            let pt: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
            let ikm = [i as u8 + 1; 32];
            let (enc, ct) =
                wire::hpke::seal_base(key.public_key().as_bytes(), &ikm, b"info", b"aad", &pt)
                    .unwrap();
            let encapped = KemEncappedKey::from_bytes(&enc).unwrap();
            let opened = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                &OpModeR::Base,
                &key.secret,
                &encapped,
                b"info",
                &ct,
                b"aad",
            )
            .unwrap();
            assert_eq!(opened, pt, "length {len}");
        }
    }

    #[test]
    fn rfc9180_a21_opens_with_the_collectors_receiver() {
        let key = CollectorKey::from_seed(h(IKM_R).try_into().unwrap());
        let pk: [u8; 32] = h(PK_RM).try_into().unwrap();
        // Unclamped as the RFC lists it, and clamped as the key file holds it.
        for secret in [h(SK_RM).try_into().unwrap(), key.secret_bytes()] {
            let r = receiver::Receiver::new(secret, pk, &h(INFO));
            let pt = r.open(&h(ENC), &h(AAD0), &h(CT0)).unwrap();
            assert_eq!(hex::encode(pt), PT);
            // Any change to enc, aad or ciphertext fails.
            let mut enc = h(ENC);
            enc[0] ^= 1;
            assert!(r.open(&enc, &h(AAD0), &h(CT0)).is_none());
            assert!(r.open(&h(ENC), b"Count-1", &h(CT0)).is_none());
            let mut ct = h(CT0);
            ct[3] ^= 0x80;
            assert!(r.open(&h(ENC), &h(AAD0), &ct).is_none());
            assert!(r.open(&h(ENC)[..31], &h(AAD0), &h(CT0)).is_none());
            // A small-order point (all zeros) gives an all-zero DH output: refused.
            assert!(r.open(&[0; 32], &h(AAD0), &h(CT0)).is_none());
        }
    }

    #[test]
    fn the_receiver_agrees_with_the_hpke_crate_on_ring_sealed_messages() {
        let key = CollectorKey::from_seed([5; 32]);
        for (i, len) in [0usize, 1, 16, 17, 4096, 60_000].into_iter().enumerate() {
            let pt: Vec<u8> = (0..len).map(|b| (b * 13 + i) as u8).collect();
            let ikm = [i as u8 + 9; 32];
            let (enc, ct) = wire::hpke::seal_base(
                key.public_key().as_bytes(),
                &ikm,
                wire::HPKE_INFO,
                b"aad",
                &pt,
            )
            .unwrap();
            let ours = key.receiver.open(&enc, b"aad", &ct).unwrap();
            let encapped = KemEncappedKey::from_bytes(&enc).unwrap();
            let theirs = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                &OpModeR::Base,
                &key.secret,
                &encapped,
                wire::HPKE_INFO,
                &ct,
                b"aad",
            )
            .unwrap();
            assert_eq!(ours, pt, "length {len}");
            assert_eq!(theirs, pt, "length {len}");
        }
    }

    /// Shapes no envelope has are refused from their first heads, before anything is built:
    /// a 16k-key map, a long array, deep nesting, a tag chain.
    #[test]
    fn oversized_shapes_are_refused_from_their_heads() {
        let opener = Opener::new(vec![CollectorKey::from_seed([8; 32])]);
        let mut map = vec![0xb9, 0x3e, 0x80]; // a map of 16000 entries
        for k in 0..16_000u16 {
            map.extend([0x19, (k >> 8) as u8, k as u8, 0xf6]);
        }
        let mut array = vec![0x99, 0x4e, 0x20]; // an array of 20000 entries
        array.extend(std::iter::repeat_n(0u8, 20_000));
        let deep: Vec<u8> = std::iter::repeat_n(0x81u8, 60_000).chain([0]).collect();
        let tags: Vec<u8> = std::iter::repeat_n(0xc6u8, 60_000).chain([0]).collect();
        for (bytes, want) in [
            (map, "malformed: envelope: a map of 16000 entries, at most 16 allowed"),
            (array, "malformed: envelope: an array of 20000 entries, at most 16 allowed"),
            (deep, "malformed: envelope: nested deeper than 8 levels"),
            (tags, "malformed: envelope: more than 64 CBOR items"),
        ] {
            assert_eq!(opener.open(&bytes).unwrap_err().to_string(), want);
        }
    }

    #[test]
    fn secret_bytes_round_trip_and_debug_hides_them() {
        let key = CollectorKey::from_seed([8; 32]);
        let back = CollectorKey::from_secret_bytes(&key.secret_bytes());
        assert_eq!(back.public_key(), key.public_key());
        let debug = format!("{key:?}");
        assert!(!debug.contains(&hex::encode(key.secret_bytes())));
        assert!(debug.contains(&key.key_id().to_string()));
    }
}
