//! The simulated population of agents (real agent cores on loopback /24s) lives in the
//! collector crate, where `vantage-collector demo` runs it; the end-to-end detection tests use
//! it from here. See [`vantage_collector::demo::sim`]. (Not to be confused with fleet mode,
//! collectors sharing reports over NATS: `vantage_collector::fleet`.)

pub use vantage_collector::demo::sim::*;
