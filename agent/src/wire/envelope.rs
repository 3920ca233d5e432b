//! The envelope (outer, in the clear) and the signed batch (inside the HPKE ciphertext).

use ciborium::Value;

use super::cbor::{DecodeError, Fields, Path, Shape, head, map, parse, to_vec};
use super::hpke::{SealError, seal_base_with_aad};
use super::{
    AgentIdentity, AgentPublicKey, CollectorPublicKey, HPKE_INFO, KeyId, MAX_ENVELOPE_BYTES,
    SIGNATURE_TAG, VERSION,
};
use crate::entropy::Entropy;
use crate::report::Batch;

/// The envelope and the signed batch are small flat maps (4 and 2 v1 keys; room for a later
/// version's header to be recognised as such): anything bigger is refused from its heads.
const ENVELOPE_SHAPE: Shape = Shape { max_entries: 16, max_items: 64 };

/// Sealing a batch failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The batch's agent key is not the signing identity's public key.
    #[error("the batch names agent key {batch} but is signed by {identity}")]
    KeyMismatch {
        /// The key in the batch.
        batch: String,
        /// The identity's key.
        identity: String,
    },
    /// The envelope would exceed what collectors accept: split the batch.
    #[error("envelope of {len} bytes exceeds the {max}-byte limit: send fewer reports per batch")]
    TooLarge {
        /// The envelope's size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The batch has more reports or targets than protocol v1 allows.
    #[error(
        "batch has {reports} reports and {targets} targets; v1 allows at most {max_reports} and {max_targets}"
    )]
    TooManyItems {
        /// Reports in the batch.
        reports: usize,
        /// Targets in the batch.
        targets: usize,
        /// Limit on reports.
        max_reports: usize,
        /// Limit on targets.
        max_targets: usize,
    },
    /// HPKE sealing failed (an invalid collector key).
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// A signature did not verify, or the signed batch inside did not decode.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The batch inside is malformed.
    #[error("malformed batch: {0}")]
    Malformed(#[from] DecodeError),
    /// The signature is not the batch's agent key's signature over this batch and key id.
    #[error("bad signature")]
    BadSignature,
}

/// The outer envelope: `{ 1: version, 2: key id, 3: enc, 4: ciphertext }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Protocol version (1).
    pub version: u64,
    /// The id of the collector key the envelope is sealed to.
    pub key_id: KeyId,
    /// The HPKE encapsulated key (the ephemeral X25519 public key).
    pub enc: [u8; 32],
    /// The HPKE ciphertext of a [`SignedBatch`], with its 16-byte tag.
    pub ciphertext: Vec<u8>,
}

impl Envelope {
    /// The header, `{ 1: version, 2: key id, 3: enc }` in CBOR: the HPKE additional data, so
    /// no header field can be changed without the ciphertext failing to open.
    pub fn header_bytes(&self) -> Vec<u8> {
        self.prefix(None)
    }

    /// The envelope's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.prefix(Some(self.ciphertext.len()));
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// The canonical CBOR of `{ 1: version, 2: key id, 3: enc }` or, given the ciphertext's
    /// length, of the envelope up to its ciphertext's bytes (a map of four, then key 4 and the
    /// head of a byte string that long): written head by head, as the value-tree encoder
    /// writes them (held to it by a test), without building a tree or copying the ciphertext.
    fn prefix(&self, ciphertext_len: Option<usize>) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        head(&mut out, 5, if ciphertext_len.is_some() { 4 } else { 3 });
        head(&mut out, 0, 1);
        head(&mut out, 0, self.version);
        head(&mut out, 0, 2);
        head(&mut out, 2, self.key_id.0.len() as u64);
        out.extend_from_slice(&self.key_id.0);
        head(&mut out, 0, 3);
        head(&mut out, 2, self.enc.len() as u64);
        out.extend_from_slice(&self.enc);
        if let Some(len) = ciphertext_len {
            head(&mut out, 0, 4);
            head(&mut out, 2, len as u64);
        }
        out
    }

    /// Decodes an envelope from untrusted bytes. Refuses anything over
    /// [`MAX_ENVELOPE_BYTES`], versions other than 1 (field `envelope.version`, with reason
    /// `unsupported version N`: see [`Envelope::unsupported_version`]), unknown keys, and any
    /// encoding other than the canonical one, so one envelope has exactly one byte string (and
    /// one digest for replay detection).
    pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(DecodeError::new(
                "envelope",
                format!("{} bytes, more than the {MAX_ENVELOPE_BYTES}-byte limit", bytes.len()),
            ));
        }
        // Heads first: the envelope is a small flat map, so a 16k-key map or a long array is
        // refused at its first byte, before anything is built.
        let mut f = Fields::new(Path::new("envelope"), parse("envelope", bytes, ENVELOPE_SHAPE)?)?;
        let version = f.uint(1, "version")?;
        if version != VERSION {
            return Err(DecodeError::new(
                "envelope.version",
                format!("unsupported version {version}"),
            ));
        }
        let key_id = KeyId(f.bytes::<8>(2, "key_id")?);
        let enc = f.bytes::<32>(3, "enc")?;
        let ciphertext = f.byte_string(4, "ciphertext")?.to_vec();
        f.finish_strict()?;
        if ciphertext.len() < 16 {
            return Err(DecodeError::new(
                "envelope.ciphertext",
                "shorter than the 16-byte AEAD tag",
            ));
        }
        let envelope = Envelope { version, key_id, enc, ciphertext };
        // The one canonical encoding: its prefix, then the ciphertext's bytes.
        let prefix = envelope.prefix(Some(envelope.ciphertext.len()));
        if bytes.split_at_checked(prefix.len()) != Some((&prefix[..], &envelope.ciphertext[..])) {
            return Err(DecodeError::new("envelope", "not in canonical CBOR encoding"));
        }
        Ok(envelope)
    }

    /// If `err` came from [`Envelope::decode`] refusing a version, that version.
    pub fn unsupported_version(err: &DecodeError) -> Option<u64> {
        if err.field() != "envelope.version" {
            return None;
        }
        err.reason().strip_prefix("unsupported version ")?.parse().ok()
    }
}

/// A batch with its Ed25519 signature: `{ 1: batch bytes, 2: signature }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedBatch {
    /// The batch's CBOR bytes, exactly as signed.
    pub batch: Vec<u8>,
    /// Ed25519 over `SIGNATURE_TAG || key id || batch`.
    pub signature: [u8; 64],
}

/// What is signed, in its parts: `SIGNATURE_TAG || key id || batch`.
fn signed_parts<'a>(key_id: &'a KeyId, batch: &'a [u8]) -> [&'a [u8]; 3] {
    [SIGNATURE_TAG, &key_id.0, batch]
}

impl SignedBatch {
    /// Encodes and signs `batch` for the collector key `key_id`. The key id is signed too, so
    /// a signed batch cannot be re-sealed to another deployment's key.
    pub fn sign(
        batch: &Batch,
        identity: &AgentIdentity,
        key_id: &KeyId,
    ) -> Result<SignedBatch, WireError> {
        if batch.agent_key != identity.public_key() {
            // The hex as Display writes it, without core::fmt (see crate::text).
            return Err(WireError::KeyMismatch {
                batch: crate::text::hex(batch.agent_key.as_bytes()),
                identity: crate::text::hex(identity.public_key().as_bytes()),
            });
        }
        if batch.reports.len() > super::MAX_REPORTS || batch.targets.len() > super::MAX_TARGETS {
            return Err(WireError::TooManyItems {
                reports: batch.reports.len(),
                targets: batch.targets.len(),
                max_reports: super::MAX_REPORTS,
                max_targets: super::MAX_TARGETS,
            });
        }
        let bytes = batch.encode();
        let signature = identity.sign(&signed_parts(key_id, &bytes).concat());
        Ok(SignedBatch { batch: bytes, signature })
    }

    /// The signed batch's bytes.
    pub fn encode(&self) -> Vec<u8> {
        to_vec(&map(vec![
            (1, Value::Bytes(self.batch.clone())),
            (2, Value::Bytes(self.signature.to_vec())),
        ]))
    }

    /// Decodes a signed batch from untrusted bytes (without checking the signature).
    pub fn decode(bytes: &[u8]) -> Result<SignedBatch, DecodeError> {
        let top = parse("signed_batch", bytes, ENVELOPE_SHAPE)?;
        let mut f = Fields::new(Path::new("signed_batch"), top)?;
        let batch = f.byte_string(1, "batch")?.to_vec();
        let signature = f.bytes::<64>(2, "signature")?;
        f.finish_strict()?;
        Ok(SignedBatch { batch, signature })
    }

    /// Decodes the batch and checks its signature against the batch's own agent key and the
    /// collector key id the envelope was sealed to.
    pub fn verify(&self, key_id: &KeyId) -> Result<Batch, VerifyError> {
        self.verify_with(key_id, |key, parts, signature| key.verify(&parts.concat(), signature))
    }

    /// [`SignedBatch::verify`] with another Ed25519 implementation: `check(key, message parts,
    /// signature)` says whether the signature of the parts' concatenation is valid (the
    /// collector's is vectorised).
    pub fn verify_with(
        &self,
        key_id: &KeyId,
        check: impl FnOnce(&AgentPublicKey, &[&[u8]], &[u8; 64]) -> bool,
    ) -> Result<Batch, VerifyError> {
        let batch = Batch::decode(&self.batch)?;
        if check(&batch.agent_key, &signed_parts(key_id, &self.batch), &self.signature) {
            Ok(batch)
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}

/// Signs `batch` with `identity` and seals it to `collector`: the bytes to `POST /v1/envelopes`.
///
/// `rng` supplies the 32 bytes of ephemeral key material (fresh per envelope; the OS RNG in
/// production). The result is never altered afterwards: retries send the same bytes.
pub fn seal_batch(
    batch: &Batch,
    identity: &AgentIdentity,
    collector: &CollectorPublicKey,
    rng: &mut impl Entropy,
) -> Result<Vec<u8>, WireError> {
    let mut ikm_e = [0u8; 32];
    rng.fill(&mut ikm_e);
    let key_id = collector.key_id();
    let signed = SignedBatch::sign(batch, identity, &key_id)?;
    let header = |enc: &[u8; 32]| {
        Envelope { version: VERSION, key_id, enc: *enc, ciphertext: Vec::new() }.header_bytes()
    };
    let (enc, ciphertext) =
        seal_base_with_aad(&collector.0, &ikm_e, HPKE_INFO, header, &signed.encode())?;
    let envelope = Envelope { version: VERSION, key_id, enc, ciphertext };
    let bytes = envelope.encode();
    if bytes.len() > MAX_ENVELOPE_BYTES {
        return Err(WireError::TooLarge { len: bytes.len(), max: MAX_ENVELOPE_BYTES });
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::cbor::uint;

    /// The envelope as the value-tree encoder writes it (what `encode` and `header_bytes`
    /// were): the reference for the head-by-head writer.
    fn tree(e: &Envelope, with_ciphertext: bool) -> Vec<u8> {
        let mut entries = vec![
            (1, uint(e.version)),
            (2, Value::Bytes(e.key_id.0.to_vec())),
            (3, Value::Bytes(e.enc.to_vec())),
        ];
        if with_ciphertext {
            entries.push((4, Value::Bytes(e.ciphertext.clone())));
        }
        to_vec(&map(entries))
    }

    /// Every head width (versions and lengths at each boundary of CBOR's argument sizes).
    #[test]
    fn the_envelope_written_by_heads_is_the_value_trees_encoding() {
        let edges = [0u64, 1, 23, 24, 255, 256, 65_535, 65_536, u64::from(u32::MAX), 1 << 32];
        for version in edges.iter().copied().chain([u64::MAX]) {
            for len in edges.iter().copied().filter(|n| *n <= 70_000) {
                let e = Envelope {
                    version,
                    key_id: KeyId([version as u8; 8]),
                    enc: [len as u8; 32],
                    ciphertext: (0..len).map(|i| i as u8).collect(),
                };
                assert_eq!(e.header_bytes(), tree(&e, false), "version {version}");
                assert_eq!(e.encode(), tree(&e, true), "version {version}, {len} bytes");
            }
        }
    }

    /// The canonical check sees the ciphertext's head too: the same envelope with that head in
    /// a longer form, or with a byte more or less after it, is refused.
    #[test]
    fn a_ciphertext_head_in_a_longer_form_is_refused() {
        let e =
            Envelope { version: 1, key_id: KeyId([3; 8]), enc: [4; 32], ciphertext: vec![5; 20] };
        let bytes = e.encode();
        assert_eq!(Envelope::decode(&bytes).unwrap(), e);
        // `4: h'05..'`: the head 0x54 (20 bytes), then 20 bytes; 0x58 0x14 is the same length.
        let at = bytes.len() - 21;
        assert_eq!(bytes[at], 0x54);
        let mut long = bytes[..at].to_vec();
        long.extend_from_slice(&[0x58, 0x14]);
        long.extend_from_slice(&bytes[at + 1..]);
        let err = Envelope::decode(&long).unwrap_err();
        assert_eq!((err.field(), err.reason()), ("envelope", "not in canonical CBOR encoding"));
        for cut in [&bytes[..bytes.len() - 1], &[&bytes[..], &[0]].concat()[..]] {
            assert!(Envelope::decode(cut).is_err(), "{} bytes", cut.len());
        }
    }
}
