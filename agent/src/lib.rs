//! # vantage-agent: the sans-IO core of the Vantage agent
//!
//! Vantage turns opted-in client apps into vantage points: the agent notices the network failures
//! a service can never see in its own logs, and delivers them signed and end-to-end encrypted to
//! collectors in other failure domains. This crate is the part of the agent that is the same on
//! every platform:
//!
//! - [`taxonomy`]: the W3C Network Error Logging phases and types, with stable labels;
//! - [`classify`]: tables that map platform errors (errno, getaddrinfo, `std::io`, rustls, HTTP
//!   status, curl, NSURLError, Java exceptions) onto that taxonomy;
//! - [`report`]: the report and batch model; [`coalesce`], [`sampling`], [`consent`] and
//!   [`drops`]: what happens to a report before it is sent;
//! - [`wire`]: protocol v1: CBOR encoding, Ed25519 signing, and sealing with RFC 9180 HPKE
//!   implemented on *ring*.
//!
//! It is **not** an uploader: it has no sockets, no clock, no RNG and no files. Time arrives as
//! `now` arguments and randomness through [`entropy::Entropy`], so every behaviour can be replayed
//! in tests. The native runtime, the C library and the WebAssembly module are shells around it.
//! Opening envelopes (the collector's side, with the `hpke` crate) lives in `vantage-collector`,
//! so the agent's own build carries one crypto library only.
//!
//! ```text
//!  platform error ──classify──▶ ErrorType ─┐
//!                                          ▼
//!  record(now) ──consent?──sample?──▶ Report ──coalesce──▶ Batch ──sign(Ed25519)──▶ SignedBatch
//!                                                                                   │
//!                          Envelope { version, key id, enc, ciphertext } ◀──seal(HPKE)┘
//! ```
//!
//! ```
//! use vantage_agent::classify;
//! use vantage_agent::entropy::{Entropy, SeededEntropy};
//! use vantage_agent::report::{AppInfo, Batch, Report, UnixMillis};
//! use vantage_agent::wire::{AgentIdentity, CollectorPublicKey, seal_batch};
//!
//! let mut rng = SeededEntropy::insecure_from_seed([7; 32]); // tests only: use the OS RNG
//! let identity = AgentIdentity::generate(&mut rng);
//! let collector: CollectorPublicKey =
//!     "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a".parse()?;
//!
//! let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
//! let now = UnixMillis(1_700_000_000_000);
//! let report = Report::builder("checkout", "api.example.com", classify::io_error(&refused))
//!     .elapsed_ms(12)
//!     .build(&mut rng, now)?;
//! let batch = Batch::new(identity.public_key(), 1, now, AppInfo::new("app", "1.0", "linux", "rust")?)
//!     .with_reports(vec![report]);
//! let envelope = seal_batch(&batch, &identity, &collector, &mut rng)?;
//! assert_eq!(envelope[0] >> 5, 5); // a CBOR map
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod buffer;
pub mod classify;
pub mod coalesce;
pub mod consent;
pub mod delivery;
pub mod drops;
pub mod entropy;
#[cfg(feature = "native-base")]
pub mod native;
pub mod pipeline;
pub mod report;
pub mod sampling;
pub mod taxonomy;
mod text;
mod vecmap;
pub mod wire;

pub use taxonomy::{ErrorType, NetworkType, Phase, Scope};
