//! # vantage-collector: where agent envelopes are opened, verified and (later) stored
//!
//! Collectors run on two or more providers, in failure domains other than the services they
//! watch. This crate will hold the whole collector (ingest server, replay protection,
//! enrichment, sled storage, spike detection, alerts). Today it holds the first step of the
//! ingest pipeline, [`open`]: turning envelope bytes into a verified [`vantage_agent::report::Batch`].
//! It is **not** yet a server: there is no listener, store or detector in this version.
//!
//! ```text
//!  bytes ─▶ size check ─▶ Envelope::decode ─▶ key id lookup ─▶ HPKE open (hpke crate)
//!        ─▶ SignedBatch::decode ─▶ Ed25519 verify ─▶ Opened { batch, digest, key id }
//! ```
//!
//! Opening uses the `hpke` crate, an implementation independent of the agent's *ring*-based
//! sealer (*ring* cannot hold the static X25519 private key opening needs); both are checked
//! against RFC 9180's test vector, and each against the other.
//!
//! ```
//! use vantage_agent::entropy::SeededEntropy;
//! use vantage_agent::report::{AppInfo, Batch, UnixMillis};
//! use vantage_agent::wire::{AgentIdentity, seal_batch};
//! use vantage_collector::open::{CollectorKey, Opener};
//!
//! let key = CollectorKey::from_seed([42; 32]);
//! let opener = Opener::new(vec![key.clone()]);
//!
//! let mut rng = SeededEntropy::insecure_from_seed([1; 32]);
//! let agent = AgentIdentity::generate(&mut rng);
//! let batch = Batch::new(agent.public_key(), 1, UnixMillis(0), AppInfo::new("a", "1", "linux", "rust")?);
//! let bytes = seal_batch(&batch, &agent, &key.public_key(), &mut rng)?;
//!
//! let opened = opener.open(&bytes)?;
//! assert_eq!(opened.batch, batch);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod model;
pub mod nel;
pub mod open;
