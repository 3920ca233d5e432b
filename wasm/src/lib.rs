//! # vantage-wasm: the Vantage agent for web pages
//!
//! This crate will become the wasm-bindgen module over the agent core (IndexedDB buffer, fetch
//! instrumentation, real-browser tests). Today it holds nothing of its own: what is proven for
//! the browser target so far is that the sans-IO core, `vantage-agent` without default features,
//! builds for `wasm32-unknown-unknown` (checked by `.ci/check-wasm.sh`).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The wire protocol version the module's envelopes will use (the core's).
pub const PROTOCOL_VERSION: u64 = vantage_agent::wire::VERSION;

#[cfg(test)]
mod tests {
    #[test]
    fn speaks_the_cores_protocol_version() {
        assert_eq!(super::PROTOCOL_VERSION, 1);
    }
}
