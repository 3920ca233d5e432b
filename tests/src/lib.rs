//! # vantage-tests: end-to-end tests across the Vantage crates
//!
//! The tests live in `tests/tests/`, one file per capability. This library holds what they
//! share: the golden-vector file format and fixed inputs. It is not used by any product code.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod vectors;
