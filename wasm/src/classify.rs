//! What a browser can tell about a failed `fetch`, mapped onto the shared NEL taxonomy.
//!
//! A page sees far less than a native agent: every network failure is the same `TypeError`
//! ("Failed to fetch"), whether the name did not resolve, the port refused, or the connection
//! was reset; only the time it took, the abort reason, the HTTP status and (where the browser
//! exposes one) a Resource Timing entry are visible. The mapping is therefore coarse on
//! purpose:
//!
//! | what the page saw                           | type                         |
//! |---------------------------------------------|------------------------------|
//! | a response with status 4xx/5xx              | `http.error` (with status)   |
//! | a response with a status outside 100..=599  | `http.response.invalid`      |
//! | our timeout fired (`TimeoutError`)          | `tcp.timed_out`, or `http.failed` when a response had started |
//! | the app aborted (`AbortError`)              | `abandoned`                  |
//! | `TypeError`, timing shows a response began  | `http.protocol.error`        |
//! | `TypeError`, timing shows a connection made | `http.failed`                |
//! | `TypeError`, nothing more known             | `tcp.failed`                 |
//!
//! Chromium adds no Resource Timing entry for most network errors, so in practice a refused
//! port, a reset and a DNS failure all arrive as `tcp.failed`; the scope check after the
//! failure (`/v1/ping`) then tells whether the network as a whole was reachable.

use vantage_agent::ErrorType;
use vantage_agent::classify;

/// How a `fetch` failed, as far as the page can tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FetchFailure {
    /// A response arrived with this status (only error statuses are reported).
    Status(u16),
    /// The agent's own timeout aborted the request (`TimeoutError`).
    Timeout,
    /// The app aborted the request (`AbortError`).
    Aborted,
    /// `fetch` rejected with a `TypeError`: a network error of any kind.
    Network,
}

impl FetchFailure {
    /// Parses the kind the JavaScript side sends: `"http"` (with `status`), `"timeout"`,
    /// `"abort"`, `"network"`. `None` for anything else.
    pub fn from_kind(kind: &str, status: u16) -> Option<FetchFailure> {
        Some(match kind {
            "http" => FetchFailure::Status(status),
            "timeout" => FetchFailure::Timeout,
            "abort" => FetchFailure::Aborted,
            "network" => FetchFailure::Network,
            _ => return None,
        })
    }
}

/// What a Resource Timing entry said about the failed request (milliseconds relative to the
/// page's time origin; 0 means "did not happen" as in the Resource Timing API).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Timing {
    /// `connectEnd`.
    pub connect_end: f64,
    /// `responseStart`.
    pub response_start: f64,
}

/// The NEL type for a failed fetch (see the [module docs](self)).
pub fn classify_fetch(failure: FetchFailure, timing: Option<Timing>) -> ErrorType {
    let timing = timing.unwrap_or_default();
    let responded = timing.response_start > 0.0;
    let connected = timing.connect_end > 0.0;
    match failure {
        FetchFailure::Status(status) => {
            classify::http_status(status).unwrap_or(ErrorType::HttpResponseInvalid)
        }
        FetchFailure::Timeout if responded => ErrorType::HttpFailed,
        FetchFailure::Timeout => ErrorType::TcpTimedOut,
        FetchFailure::Aborted => ErrorType::Abandoned,
        FetchFailure::Network if responded => ErrorType::HttpProtocolError,
        FetchFailure::Network if connected => ErrorType::HttpFailed,
        FetchFailure::Network => ErrorType::TcpFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_use_the_shared_http_table() {
        assert_eq!(classify_fetch(FetchFailure::Status(404), None), ErrorType::HttpError);
        assert_eq!(classify_fetch(FetchFailure::Status(503), None), ErrorType::HttpError);
        assert_eq!(classify_fetch(FetchFailure::Status(99), None), ErrorType::HttpResponseInvalid);
        // A success status is not a failure: recorded anyway, it is not an error the table knows.
        assert_eq!(classify_fetch(FetchFailure::Status(200), None), ErrorType::HttpResponseInvalid);
    }

    #[test]
    fn network_errors_are_refined_only_by_timing() {
        let none = classify_fetch(FetchFailure::Network, None);
        assert_eq!(none, ErrorType::TcpFailed);
        let connected = Timing { connect_end: 5.0, response_start: 0.0 };
        assert_eq!(classify_fetch(FetchFailure::Network, Some(connected)), ErrorType::HttpFailed);
        let responded = Timing { connect_end: 5.0, response_start: 9.0 };
        assert_eq!(
            classify_fetch(FetchFailure::Network, Some(responded)),
            ErrorType::HttpProtocolError
        );
        assert_eq!(classify_fetch(FetchFailure::Timeout, None), ErrorType::TcpTimedOut);
        assert_eq!(classify_fetch(FetchFailure::Timeout, Some(responded)), ErrorType::HttpFailed);
        assert_eq!(classify_fetch(FetchFailure::Aborted, None), ErrorType::Abandoned);
    }

    #[test]
    fn kinds_parse() {
        assert_eq!(FetchFailure::from_kind("http", 500), Some(FetchFailure::Status(500)));
        assert_eq!(FetchFailure::from_kind("timeout", 0), Some(FetchFailure::Timeout));
        assert_eq!(FetchFailure::from_kind("abort", 0), Some(FetchFailure::Aborted));
        assert_eq!(FetchFailure::from_kind("network", 0), Some(FetchFailure::Network));
        assert_eq!(FetchFailure::from_kind("dns", 0), None);
    }
}
