//! The simulated fleet (real agent cores on loopback /24s) lives in the collector crate, where
//! `vantage-collector demo` runs it; the end-to-end detection tests use it from here.
//! See [`vantage_collector::demo::sim`].

pub use vantage_collector::demo::sim::*;
