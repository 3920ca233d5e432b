//! # vantage-tests: end-to-end tests across the Vantage crates
//!
//! The tests live in `tests/tests/`, one file per capability. This library holds what they
//! share: the golden-vector file format and fixed inputs, generated TLS certificates, and the
//! harnesses for real parts (network namespaces, a DNS server, collectors as processes). It is not used by any product code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod alert_sink;
pub mod collector_proc;
pub mod dns_server;
pub mod fleet;
pub mod hostile;
pub mod nats;
pub mod netns;
pub mod receiver;
pub mod sim;
pub mod spikebench;
pub mod tls;
pub mod vectors;
