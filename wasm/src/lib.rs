//! # vantage-wasm: the Vantage agent for web pages
//!
//! A wasm-bindgen module over the same sans-IO core as the native agent (`vantage-agent`
//! without default features): the same taxonomy, coalescing, batching, sealing (*ring* HPKE,
//! Ed25519) and delivery scheduling, so envelopes from a browser open in the collector exactly
//! like native ones. This crate is an adapter only: it owns no I/O. The JavaScript side of the
//! package (`wasm/pkg-src/vantage.js`) does the I/O the core asks for: IndexedDB, `fetch`,
//! timers, a last `fetch(keepalive)` on pagehide.
//!
//! ```text
//!  page ── record({...}) / instrumented fetch ──▶ vantage.js ──▶ Core.record ──▶ AgentCore
//!                                                   ▲    │            (classify, coalesce)
//!               IndexedDB ◀── apply journal ────────┘    │ timer: pollSeal ──▶ JournalStore
//!               (envelopes, meta)   takeJournal() ◀──────┼──────────────────── (put/remove)
//!  collector ◀── fetch(keepalive) POST /v1/envelopes ◀── pollTransmit; handleOutcome(status)
//!            ◀── GET /v1/ping (no-cors) ◀──────────────── pollScopeCheck; handleScopeResult
//! ```
//!
//! ## The store: a mirror in memory, written through to IndexedDB
//! The core's [`EnvelopeStore`](vantage_agent::buffer::EnvelopeStore) is synchronous and
//! IndexedDB is not. [`JournalStore`] keeps every envelope in wasm memory (the authoritative copy
//! while the page lives) and journals each change (put, remove, clear). The JS side drains the
//! journal after every call that can change the store and applies it, in order, in one
//! IndexedDB transaction; at start it loads what IndexedDB holds back into the mirror
//! ([`Core::load_envelope`], [`Core::finish_load`]). An envelope leaves IndexedDB only through
//! the core's own removals: after a `2xx`, a permanent rejection, an eviction (counted) or a
//! consent withdrawal. Because writes are asynchronous, an envelope sealed in the last
//! moment before the page dies can be lost with the page; that window is the time of one
//! IndexedDB transaction. Sequence numbers are reserved ahead in IndexedDB (64 at a time), so
//! an envelope sent on `pagehide` before its write completed never has its number
//! reused after a reload (the collector would drop the reuse as a replay).
//!
//! ## What is not here
//! No `fetch` wrapper and no IndexedDB code in Rust: web-sys bindings for them would cost more
//! module size than the JavaScript that does the same, and would not be any easier to test.
//!
//! ```
//! // The module's classification of a browser failure is plain Rust (and runs natively too).
//! use vantage_wasm::classify::{FetchFailure, classify_fetch};
//! let t = classify_fetch(FetchFailure::Status(503), None);
//! assert_eq!(t.as_str(), "http.error");
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod classify;
mod core;
mod entropy;
mod error;
mod store;
mod transmit;

pub use crate::core::Core;
pub use crate::entropy::BrowserEntropy;
pub use crate::error::WasmError;
pub use crate::store::{JournalOp, JournalStore};
pub use crate::transmit::Transmit;

/// The module's allocator: talc over the wasm memory, growing it as needed (single-threaded
/// wasm; std's default there is dlmalloc, several kB larger in the module).
#[cfg(all(target_arch = "wasm32", target_os = "unknown", not(target_feature = "atomics")))]
#[global_allocator]
static ALLOCATOR: talc::wasm::WasmDynamicTalc = talc::wasm::new_wasm_dynamic_allocator();

/// The wire protocol version the module's envelopes use (the core's).
pub const PROTOCOL_VERSION: u64 = vantage_agent::wire::VERSION;

/// The wire protocol version, for JavaScript (`protocolVersion()`); also the cheapest call into
/// the module, which the benchmark uses as its baseline.
#[wasm_bindgen::prelude::wasm_bindgen(js_name = protocolVersion)]
pub fn protocol_version() -> u32 {
    PROTOCOL_VERSION as u32
}

/// The `sdk` field of the app info in every batch this module seals.
pub const SDK: &str = concat!("vantage-wasm/", env!("CARGO_PKG_VERSION"));

/// The media type of an envelope upload (the native uploader's).
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.vantage.envelope+cbor";

#[cfg(test)]
mod tests {
    #[test]
    fn speaks_the_cores_protocol_version() {
        assert_eq!(super::PROTOCOL_VERSION, 1);
        assert!(super::SDK.starts_with("vantage-wasm/"));
    }
}
