//! The native runtime (feature `native`): one tokio background task, an append-only log
//! buffer ([`log_store`]), a hyper + rustls uploader and network probes around the sans-IO [`AgentCore`](crate::pipeline::AgentCore).
//!
//! `native` is `native-base` plus two optional parts, which the C library leaves out to stay
//! small: `psl` (registrable domains from the public suffix list in [`mod@validate`];
//! approximated without it) and `hickory-dns` (custom `dns_servers`, refused without it, and
//! the probes' own DNS client; the system resolver without it, see [`probe`]).
//!
//! ```text
//!  app threads                         background task (own runtime thread, or the app's)
//!  ───────────                         ──────────────────────────────────────────────────
//!  record(input) ──push──▶ inbox: failure queue ─▶ AgentCore: consent, sampling, coalescing
//!  count_success(..) ─────▶ + per-target tallies  (full queue: dropped, queue_full) │ ≤ 500 ms
//!                                                                                ▼
//!  set_consent(bool) (sync: key file,           seal (Ed25519 + HPKE) ──▶ log buffer (fsync)
//!                     buffer files)                                              │
//!  flush(timeout) ──▶ seal now, wait for delivery             uploader (hyper, rustls, ring)
//!                                                POST {collector}/v1/envelopes, failover,
//!                                                backoff with jitter, Retry-After, pacing
//!  check(url) ──▶ probe::check ──▶ record on failure     scope: probe::ping of a collector
//! ```
//!
//! About five lines for an app:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use vantage_agent::native::{Agent, ReportInput};
//!
//! let agent = Agent::from_toml_file("vantage.toml")?;
//! agent.set_consent(true)?; // after the user opted in
//! let io_err = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
//! agent.record(ReportInput::new("checkout", "https://api.example.com/pay", &io_err).elapsed_ms(120));
//! agent.count_success("checkout", "api.example.com");
//! agent.flush(Duration::from_secs(5)).await?;
//! agent.shutdown().await?;
//! # Ok(()) }
//! ```
//!
//! ## HTTP clients without code
//! With the `reqwest` or `tower` feature, one middleware or layer on the client records every
//! request's outcome (`integrations`, in builds with either feature):
//! failures classified from the error chain, successes counted per the sampling, the host
//! mapped to its service by the config.
//!
//! ## Runtime
//! [`AgentBuilder::build`] (and `from_toml_*`) start a current-thread tokio runtime on a thread
//! named `vantage-agent`, so the agent works in apps without tokio and never competes with an
//! app's runtime; [`AgentBuilder::build_in`] runs the task on the app's runtime instead. The
//! task waits on its inbox, on uploads in flight and on the core's next deadline only: an
//! idle agent has no timer and does not wake up. App threads wake it only when it needs them
//! to (no seal pending for what they push, or 512 failures queued), since a wake-up was most
//! of the slow tail of `record()`; success counts are tallied per target and take no room in
//! the failure queue, whose default of 65 536 holds bursts of tens of thousands. See
//! docs/agent-config.md for the figures (`vantage-agent-bench --only record`: p99 at the
//! call site 2-4 µs, against 7-19 µs with a channel and a wake per message, and no
//! `queue_full` drop). The buffer has no thread of its own (it
//! writes when called), and a task that goes idle (nothing pending, due or in flight) closes
//! its kept-alive upload connections, whose closing by the collector (5 s after the last
//! request, its `header_read_timeout`) was the one wake-up left. So an idle agent process
//! makes no wake-ups at all: `vantage-agent-bench --only idle --idle-secs 60`, all threads,
//! 0 context switches per minute (1 per 60 s window before, each time that close).
//!
//! ## On disk (`data_dir`, created at opt-in, nothing before)
//! - `identity.key` (mode 0600): the install's Ed25519 seed and the time of the grant;
//! - `envelopes.log`: the buffer, an append-only log of sealed envelopes (encrypted to the
//!   collector key) and of their outcomes, bounded by bytes (1 MiB) and age (7 days), oldest
//!   dropped first and counted. Each write is fsynced before it counts, so every envelope
//!   ends delivered xor dropped, counted once, whatever moment the process dies; it also
//!   keeps the last sequence number exactly (a restart continues without a gap). A torn end
//!   is cut off and counted `store_error`; a file that is not a log is replaced by a fresh
//!   one (logged, counted). See [`log_store`].
//!
//! Withdrawing consent deletes both. (Files of earlier versions, `seq` and the sled folder
//! `buffer/`, are taken over or deleted at start.)
//!
//! ## Delivery
//! Collectors in configured order with failover on network errors, 5xx and 429/503; full
//! jitter exponential backoff (1 s base, 5 min cap); `Retry-After` honoured per collector; at
//! most 2 uploads in flight and 10 per second; a `400`/`413` is dropped (`rejected`).
//! Connections are kept alive while there is work and closed when the agent goes idle. When a
//! collector's name does not resolve, its fixed addresses are used and TLS still verifies the
//! name.
//!
//! ## Scope
//! After a failure (at most every 30 s, only while consented) the agent pings up to two
//! collectors (`GET /v1/ping`): reachable gives reports since the failure `scope = path`,
//! unreachable `local`; reports sealed before the answer stay `unknown`.

mod agent;
pub mod config;
mod doc;
mod inbox;
#[cfg(any(feature = "reqwest", feature = "tower"))]
pub mod integrations;
pub mod log_store;
pub mod probe;
mod uploader;
pub mod validate;

pub use self::agent::{
    Agent, AgentError, CollectorDelivery, DeliveryListener, FlushOutcome, HostUpload,
    IDENTITY_FILE, LOCK_FILE, OsEntropy,
};
pub use self::config::{AgentBuilder, AgentConfig, CollectorConfig, ConfigError, ServiceConfig};
pub use self::uploader::{ENVELOPE_MEDIA_TYPE, SENT_AT_HEADER, parse_retry_after};
pub use self::validate::{ConfigWarning, validate};
pub use crate::delivery::{CollectorStatus, DeliveryError};
pub use crate::pipeline::{
    Classifiable, ErrorChain, HttpStatus, PlatformCode, Recorded, ReportInput,
};
