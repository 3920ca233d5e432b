//! Capture without code for Rust HTTP clients: add one middleware or layer to the client and
//! every request's outcome reaches the agent, with no change at call sites.
//!
//! - [`reqwest`] (feature `reqwest`): [`VantageMiddleware`](reqwest::VantageMiddleware) for
//!   `reqwest-middleware` clients;
//! - [`tower`] (feature `tower`): [`VantageLayer`](tower::VantageLayer), a `tower::Layer` for
//!   `hyper_util::client::legacy::Client` and any other `Service<http::Request<B>>`.
//!
//! Both share [`HttpCapture`], which decides what one request's outcome becomes:
//!
//! ```text
//!  request ──▶ host of the URI ──AgentConfig::service_for_host──▶ service? ── none ─▶ nothing
//!                                                                    │ (unless [capture]
//!                                                                    ▼  unmapped_service)
//!  outcome: error  ─▶ classify the source() chain (io::Error, rustls, hyper, reqwest) ─▶ record
//!           5xx    ─▶ http.error with the status ─────────────────────────────────────▶ record
//!           other  ─▶ a success, counted per the sampling (success_fraction, default 1)
//! ```
//!
//! Recording never blocks and never fails the request: the error or response goes back to
//! the caller unchanged. Elapsed time runs from the moment the middleware or layer sees the
//! request. Before consent nothing is recorded or counted.
//!
//! 1xx–4xx responses count as successes: a 4xx is the service answering about the request
//! (not found, unauthorised), which says nothing about the network or the service's health.
//!
//! What an error becomes, first match from the outside of the chain in:
//!
//! | in the chain                                       | type                             |
//! |----------------------------------------------------|----------------------------------|
//! | a `std::io::Error` or `rustls::Error`              | its table ([`crate::classify::io_error`]): refused, reset, DNS (`getaddrinfo` texts), TLS certificate types, ... |
//! | a `hyper::Error` without one                       | `http.response.invalid` (parse, incomplete message), `tcp.timed_out`, else `http.failed` |
//! | a reqwest timeout (`Client::timeout`, `connect_timeout`) | `tcp.timed_out`            |
//! | a reqwest connect error without a cause above      | `tcp.failed`                     |
//! | anything else                                      | `unknown`                        |

#[cfg(feature = "reqwest")]
pub mod reqwest;
#[cfg(feature = "tower")]
pub mod tower;

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Instant;

use super::Agent;
use crate::classify;
use crate::pipeline::ReportInput;
use crate::report::{Host, Protocol};
use crate::taxonomy::ErrorType;

/// How deep the chain is searched for hyper and reqwest errors (termination on loops).
const MAX_DEPTH: usize = 16;

/// What the HTTP client integrations share: the agent, and the mapping of one request's
/// outcome to a report or a success count. Cheap to clone (one `Arc`).
#[derive(Clone, Debug)]
pub struct HttpCapture {
    agent: Arc<Agent>,
}

/// A request in flight: when it started and, when it goes to a service's host, the host.
#[derive(Debug)]
pub(crate) struct InFlight {
    started: Instant,
    host: Option<Box<str>>,
}

impl HttpCapture {
    /// Captures into `agent`.
    pub fn new(agent: Arc<Agent>) -> HttpCapture {
        HttpCapture { agent }
    }

    /// The agent.
    pub fn agent(&self) -> &Arc<Agent> {
        &self.agent
    }

    /// Called when a request to `host` (as in the URI: IPv6 in brackets) starts. Keeps the
    /// host only when it maps to a service and consent is granted, so other requests cost a
    /// clock read and a lookup.
    pub(crate) fn start(&self, host: Option<&str>) -> InFlight {
        let host = host
            .map(|h| h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h))
            .filter(|h| {
                self.agent.is_consented() && self.agent.config().service_for_host(h).is_some()
            })
            .map(Box::from);
        InFlight { started: Instant::now(), host }
    }

    /// A response arrived: a 5xx is recorded as `http.error`, anything else is a success.
    pub(crate) fn response(&self, flight: &InFlight, status: u16, version: http::Version) {
        let Some(host) = flight.host.as_deref() else { return };
        // The common case, a success that is not sampled, costs no lookup.
        if status < 500 && !self.agent.counts_successes() {
            return;
        }
        let Some(service) = self.agent.config().service_for_host(host) else { return };
        if status >= 500 {
            let status = crate::pipeline::HttpStatus(status);
            let input = ReportInput::new(service.as_str(), host, &status)
                .elapsed_ms(elapsed_ms(flight.started))
                .protocol(protocol(version));
            let _ = self.agent.record(input);
        } else if self.agent.counts_successes() {
            if let Ok(host) = Host::parse(host) {
                self.agent.count_success_parsed(service.clone(), host);
            }
        }
    }

    /// The request failed with `err`.
    pub(crate) fn error(&self, flight: &InFlight, err: &(dyn StdError + 'static)) {
        let Some(host) = flight.host.as_deref() else { return };
        let Some(service) = self.agent.config().service_for_host(host) else { return };
        let error_type = classify_request_error(err);
        let input = ReportInput::new(service.as_str(), host, &error_type)
            .elapsed_ms(elapsed_ms(flight.started));
        let _ = self.agent.record(input);
    }
}

fn elapsed_ms(started: Instant) -> u32 {
    u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX)
}

fn protocol(version: http::Version) -> Protocol {
    match version {
        http::Version::HTTP_11 => Protocol::Http1,
        http::Version::HTTP_2 => Protocol::H2,
        http::Version::HTTP_3 => Protocol::H3,
        _ => Protocol::Unknown,
    }
}

/// Classifies the error of a failed request (see the [module docs](self) for the order).
pub fn classify_request_error(err: &(dyn StdError + 'static)) -> ErrorType {
    if let Some(t) = classify::error_chain(err) {
        return t;
    }
    let mut connect = false;
    let mut next = Some(err);
    let mut depth = 0;
    while let Some(e) = next {
        if depth >= MAX_DEPTH {
            break;
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            return super::probe::hyper_error(h);
        }
        #[cfg(feature = "reqwest")]
        if let Some(r) = e.downcast_ref::<::reqwest::Error>() {
            if r.is_timeout() {
                return ErrorType::TcpTimedOut;
            }
            connect |= r.is_connect();
        }
        if let Some(l) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= l.is_connect();
        }
        next = e.source();
        depth += 1;
    }
    if connect { ErrorType::TcpFailed } else { ErrorType::Unknown }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_in_a_chain_decide() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(classify_request_error(&io), ErrorType::TcpRefused);
    }

    #[test]
    fn unrecognised_errors_are_unknown() {
        let e = std::fmt::Error;
        assert_eq!(classify_request_error(&e), ErrorType::Unknown);
    }
}
