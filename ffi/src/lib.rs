//! Vantage C ABI (in progress).
