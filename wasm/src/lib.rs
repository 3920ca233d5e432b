//! Vantage wasm (in progress).
