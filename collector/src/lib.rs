//! # vantage-collector: receive, verify, store and watch Vantage reports
//!
//! Collectors run on two or more providers, in failure domains other than the services they
//! watch. This crate is one collector: an HTTPS ingest server (hyper 1 on tokio, rustls with the
//! *ring* provider, HTTP/1.1 and HTTP/2) that opens agent envelopes ([`open`]), parses browser
//! Network Error Logging uploads ([`nel`]), turns the source address into an ASN, country and
//! pseudonymous network tag ([`enrich`], [`model::NetTagKey`]) and then forgets it, writes what
//! it accepted durably to an embedded sled [`store`] before answering, and feeds it to a spike
//! detector ([`detect`], a pure function of time and counts) whose alerts are persisted,
//! notified (webhook, Slack, Alertmanager: [`notify`]) and shown on an admin dashboard
//! ([`alerting`] serves its JSON API). In fleet mode (`[fleet]`, see `docs/fleet.md`) collectors
//! share what they accepted over NATS JetStream so every detector sees the whole fleet. It also
//! exports Prometheus [`metrics`], checks failure domains ([`domains`]), and has a command line
//! (`serve`, `keygen`, `check-config`, `check-domains`, `demo`) driven by a TOML [`config`].
//!
//! It is **not** an agent (that is `vantage-agent`) and never stores or logs a client IP
//! address or a URL path.
//!
//! ## The request path
//!
//! Data flows one way: `server` ─▶ `routes` ─▶ `ingest` ─▶ `store` ─▶ `feed` ─▶ detector or
//! fleet. No module imports a module upstream of it; the wall clock is read in one place
//! (`clock`), and everything downstream takes `now` as an argument.
//!
//! ```text
//!  TCP accept ── prefix over max_connections_per_prefix? ──▶ close           (server)
//!      │ budget permit (public: max_connections; admin: its own)? no ──▶ close an idle
//!      │   connection of the biggest prefix and take its place, else 503 + Retry-After
//!      │ TLS handshake (≤ header_read_timeout; ALPN h2 | http/1.1)
//!      │ hyper auto (HTTP/1.1: header_read_timeout; any connection: first request within
//!      │   header_read_timeout, then idle_timeout between requests; PINGs do not count)
//!      ▼
//!  public listener                                                            (routes)
//!   POST /v1/envelopes (CORS) ─────────────────────────────────────────────▶ (ingest)
//!      Content-Type ─415   Content-Length ─413   /24|/48 token bucket ─429
//!      body ≤ max_body_bytes ─413      in-flight permit ─503 + Retry-After (nothing opened)
//!      Opener::open (version, key id, then HPKE, Ed25519) ─400 "<reason>: .."
//!      created_at skew, observed_at ≤ created_at, created_at within the dedup horizon,
//!      every report kept by retention ≥ 1 h (store::admit) ─400 "timestamp: .."
//!      agent-key token bucket ─429
//!      peer IP ─▶ Enricher::lookup + NetTagKey::tag ─▶ IP dropped
//!      accept::from_envelope ─▶ IngestBatch { digest, (agent key, seq), reports, targets }
//!   POST /v1/nel (CORS)
//!      Content-Type ─415  Content-Length ─413  /24 bucket ─429  in-flight permit ─503
//!      nel::parse_upload ─400 ─▶ accept::nel_batch ─▶ IngestBatch { digest, reports }
//!      retention check ─400
//!   both: (holding the in-flight permit) ─▶ Store::commit (free-space guard ─503 disk_full;
//!      dedup by digest, group commit: journal record + fdatasync, then sled) ─503 on error
//!      ─▶ Feed::accepted (stored, not duplicates)                              (feed)
//!           standalone: Alerting::observe ─▶ Detector
//!           fleet mode: Fleet::submit ─▶ outbox ─▶ JetStream ─▶ every collector's detector
//!      ─▶ 202 (stored | duplicate) / 204 for NEL
//!   GET /v1/ping 204   /healthz   /metrics
//!   /readyz 503 while shutting down, below the free-space guard, or after a failed store write
//!  admin listener (own connection budget): Host in server.admin_hosts? ─403
//!      /healthz /readyz (no checks)   dashboard assets (Host only)
//!      /v1/alerts /v1/heatmap /v1/strip /v1/series /v1/reports /metrics: bearer token if
//!      configured ─401
//!
//!  background: retention every 5 min (Store::enforce_retention on a blocking thread);
//!              Alerting::run (detector ticks, snapshots, notifier); fleet publisher/consumer
//!  SIGTERM/SIGINT: not ready ─▶ stop accepting ─▶ drain ≤ shutdown_grace ─▶ Store::close
//! ```
//!
//! Modules that are not API (`server` internals such as `routes`, `ingest`, `feed`, `clock`,
//! `ratelimit`, `conntrack`, `fleet`) are private; `cli` and `demo` are public for the binary and the test
//! crate only and hidden from these docs.
//!
//! ## Example: a collector in process
//!
//! ```
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! use vantage_collector::config::Config;
//! use vantage_collector::server::Collector;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("collector.key"), "01".repeat(32))?;
//! let config = Config::from_toml_str(
//!     r#"
//!     [server]
//!     listen_plain = "127.0.0.1:0"
//!     [keys]
//!     private_key_files = ["collector.key"]
//!     [store]
//!     path = "data"
//!     "#,
//!     dir.path(),
//! )?;
//! let collector = Collector::start(config).await?;
//!
//! let addr = collector.plain_addr().expect("a plain listener is configured");
//! let mut tcp = tokio::net::TcpStream::connect(addr).await?;
//! tcp.write_all(b"GET /v1/ping HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").await?;
//! let mut answer = String::new();
//! tcp.read_to_string(&mut answer).await?;
//! assert!(answer.starts_with("HTTP/1.1 204"));
//!
//! collector.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Example: opening an envelope
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

mod admin_guard;
pub mod alerting;
#[doc(hidden)]
pub mod cli;
mod clock;
pub mod config;
mod conntrack;
#[doc(hidden)]
pub mod dashboard;
#[doc(hidden)]
pub mod demo;
pub mod detect;
pub mod domains;
pub mod enrich;
mod feed;
mod fleet;
mod ingest;
pub mod keyfile;
pub mod metrics;
pub mod model;
pub mod nel;
pub mod notify;
pub mod open;
mod ratelimit;
pub mod reports;
mod respond;
mod routes;
pub mod server;
pub mod store;

pub use ingest::{
    ENVELOPE_CONTENT_TYPE, NEL_CONTENT_TYPE, SENT_AT_HEADER, event_time, scaled_counts,
};
