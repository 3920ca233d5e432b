//! Wire protocol v1: CBOR with compact integer keys, Ed25519 signatures (*ring*), and RFC 9180
//! HPKE sealing implemented on *ring*. The schema (CDDL) is in `docs/protocol.md`.
//!
//! ```text
//! Envelope  { 1: version, 2: key id, 3: enc, 4: ciphertext }     (outer, in the clear)
//!   ciphertext = HPKE-Seal(collector key, info = "vantage/v1",
//!                          aad = CBOR { 1: version, 2: key id, 3: enc },
//!                          pt  = SignedBatch)
//! SignedBatch { 1: batch bytes, 2: Ed25519 signature }
//!   signature over "vantage/v1 batch signature\0" || key id || batch bytes
//! Batch { 1: agent key, 2: seq, 3: created at, 4: app, 5: reports, 6: drops, 7: targets }
//! ```
//!
//! Opening is the collector's business (`vantage-collector`), done with an independent HPKE
//! implementation; both are checked against the RFC 9180 test vectors.

mod cbor;
mod codec;
mod envelope;
pub mod hpke;
mod keys;

pub use cbor::DecodeError;
pub use envelope::{Envelope, SignedBatch, VerifyError, WireError, seal_batch};
pub use keys::{AgentIdentity, AgentPublicKey, CollectorPublicKey, KeyError, KeyId};

/// The protocol version this crate writes.
pub const VERSION: u64 = 1;
/// The HPKE `info` string of protocol v1.
pub const HPKE_INFO: &[u8] = b"vantage/v1";
/// The domain-separation tag that starts every signed message.
pub const SIGNATURE_TAG: &[u8] = b"vantage/v1 batch signature\0";
/// The largest envelope a v1 collector accepts by default (64 KiB).
pub const MAX_ENVELOPE_BYTES: usize = 64 * 1024;
/// The most reports one batch may carry.
pub const MAX_REPORTS: usize = 1000;
/// The most target-count entries one batch may carry.
pub const MAX_TARGETS: usize = 256;
/// How deeply CBOR may nest before a decoder refuses it.
pub const MAX_CBOR_DEPTH: usize = 8;
