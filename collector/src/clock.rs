//! The collector's wall clock, in one place.
//!
//! Everything that is a pure function of time (the detector, retention, event times) takes
//! `now` as an argument; only the shells (request handlers, background loops) read the clock,
//! through [`now_millis`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vantage_agent::report::UnixMillis;

/// Milliseconds since the Unix epoch on the collector clock (0 if the clock is before 1970).
pub(crate) fn now_millis() -> UnixMillis {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    UnixMillis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}
