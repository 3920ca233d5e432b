//! The failure taxonomy: W3C Network Error Logging phases and types.
//!
//! Native reports and browser NEL reports land in the same series, so the labels here are the
//! NEL names (`dns.name_not_resolved`, `tcp.refused`, ...). Labels are stable and low-cardinality:
//! they are used as metric labels and stored on disk. [`ErrorType::Other`] carries a label this
//! version does not know, so newer agents can talk to older collectors.

use core::fmt;
use core::str::FromStr;

/// The phase of a request in which a failure happened (NEL `phase`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Name resolution.
    Dns,
    /// TCP connect, TLS handshake, and the transport below HTTP.
    Connection,
    /// HTTP: the request was sent and the exchange failed or returned an error status.
    Application,
}

impl Phase {
    /// Every phase, in wire order.
    pub const ALL: [Phase; 3] = [Phase::Dns, Phase::Connection, Phase::Application];

    /// The stable NEL label.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Dns => "dns",
            Phase::Connection => "connection",
            Phase::Application => "application",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A label did not name a known value; the error names what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?}")]
pub struct UnknownLabel {
    what: &'static str,
    value: String,
}

impl UnknownLabel {
    pub(crate) fn new(what: &'static str, value: &str) -> Self {
        // Bounded, so an attacker-sized label never ends up whole in an error message.
        let value = value.chars().take(64).collect();
        Self { what, value }
    }
}

impl FromStr for Phase {
    type Err = UnknownLabel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Phase::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownLabel::new("phase", s))
    }
}

macro_rules! error_types {
    ($( $(#[$doc:meta])* $variant:ident => $label:literal, $phase:ident; )*) => {
        /// A NEL failure type (`dns.name_not_resolved`, `tcp.refused`, ...).
        ///
        /// `as_str()` gives the stable label; parsing a label this version does not know gives
        /// [`ErrorType::Other`] rather than an error, for forward compatibility.
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum ErrorType {
            $( $(#[$doc])* $variant, )*
            /// A label this version does not know (kept as received, for forward compatibility).
            Other(String),
        }

        impl ErrorType {
            /// Every known type (without `Other`).
            pub const KNOWN: &'static [ErrorType] = &[ $( ErrorType::$variant, )* ];

            /// The stable NEL label.
            pub fn as_str(&self) -> &str {
                match self {
                    $( ErrorType::$variant => $label, )*
                    ErrorType::Other(label) => label,
                }
            }

            /// The phase this type belongs to. `Other` labels are placed by their prefix
            /// (`dns.` -> DNS; `http.` -> application; anything else -> connection).
            pub fn phase(&self) -> Phase {
                match self {
                    $( ErrorType::$variant => Phase::$phase, )*
                    ErrorType::Other(label) => phase_of_label(label),
                }
            }

            /// Parses a label: known labels give their variant, anything else that is a
            /// plausible label gives `Other`.
            pub fn from_label(label: &str) -> Result<ErrorType, UnknownLabel> {
                match label {
                    $( $label => Ok(ErrorType::$variant), )*
                    other if is_plausible_label(other) => Ok(ErrorType::Other(other.to_owned())),
                    other => Err(UnknownLabel::new("error type", other)),
                }
            }
        }
    };
}

error_types! {
    /// The resolver could not be reached.
    DnsUnreachable => "dns.unreachable", Dns;
    /// The name does not exist (NXDOMAIN, no data).
    DnsNameNotResolved => "dns.name_not_resolved", Dns;
    /// The resolver answered with a failure (SERVFAIL, REFUSED) or failed in another way.
    DnsFailed => "dns.failed", Dns;
    /// The resolver did not answer in time.
    DnsTimedOut => "dns.timed_out", Dns;
    /// The address changed between the policy fetch and the report (browser NEL only).
    DnsAddressChanged => "dns.address_changed", Dns;
    /// The TCP connection timed out.
    TcpTimedOut => "tcp.timed_out", Connection;
    /// The connection was closed by the server before a response.
    TcpClosed => "tcp.closed", Connection;
    /// The connection was reset (RST).
    TcpReset => "tcp.reset", Connection;
    /// The connection was refused.
    TcpRefused => "tcp.refused", Connection;
    /// The connection was aborted.
    TcpAborted => "tcp.aborted", Connection;
    /// The address is invalid or not available locally.
    TcpAddressInvalid => "tcp.address_invalid", Connection;
    /// No route: network or host unreachable (ENETUNREACH, EHOSTUNREACH, ICMP unreachable).
    TcpAddressUnreachable => "tcp.address_unreachable", Connection;
    /// Another TCP failure.
    TcpFailed => "tcp.failed", Connection;
    /// No common TLS version or cipher suite.
    TlsVersionOrCipherMismatch => "tls.version_or_cipher_mismatch", Connection;
    /// The server rejected our client certificate.
    TlsBadClientAuthCert => "tls.bad_client_auth_cert", Connection;
    /// The certificate does not match the host name.
    TlsCertNameInvalid => "tls.cert.name_invalid", Connection;
    /// The certificate is expired or not yet valid.
    TlsCertDateInvalid => "tls.cert.date_invalid", Connection;
    /// The certificate chains to an untrusted or unknown authority.
    TlsCertAuthorityInvalid => "tls.cert.authority_invalid", Connection;
    /// The certificate is invalid in another way.
    TlsCertInvalid => "tls.cert.invalid", Connection;
    /// The certificate was revoked.
    TlsCertRevoked => "tls.cert.revoked", Connection;
    /// The certificate chain does not contain a pinned key.
    TlsCertPinnedKeyNotInCertChain => "tls.cert.pinned_key_not_in_cert_chain", Connection;
    /// The TLS handshake failed with a protocol error (a middlebox, or not TLS at all).
    TlsProtocolError => "tls.protocol.error", Connection;
    /// Another TLS failure.
    TlsFailed => "tls.failed", Connection;
    /// The server answered with an error status (4xx, 5xx).
    HttpError => "http.error", Application;
    /// The HTTP exchange broke the protocol.
    HttpProtocolError => "http.protocol.error", Application;
    /// The response was invalid (empty, malformed headers, ...).
    HttpResponseInvalid => "http.response.invalid", Application;
    /// Redirects looped.
    HttpResponseRedirectLoop => "http.response.redirect_loop", Application;
    /// Another HTTP failure.
    HttpFailed => "http.failed", Application;
    /// The request was abandoned by the user or the app before it finished.
    Abandoned => "abandoned", Application;
    /// The failure could not be classified (the documented fallback).
    Unknown => "unknown", Application;
}

/// Labels are short, lower-case ASCII words separated by dots or underscores.
fn is_plausible_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 64
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'_')
}

fn phase_of_label(label: &str) -> Phase {
    if label.starts_with("dns.") {
        Phase::Dns
    } else if label.starts_with("http.") {
        Phase::Application
    } else {
        Phase::Connection
    }
}

impl ErrorType {
    /// True for timeouts in any phase.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ErrorType::DnsTimedOut | ErrorType::TcpTimedOut)
    }

    /// True for DNS failures.
    pub fn is_dns(&self) -> bool {
        self.phase() == Phase::Dns
    }

    /// True for TLS failures (including certificate failures).
    pub fn is_tls(&self) -> bool {
        self.as_str().starts_with("tls.")
    }

    /// True for certificate failures.
    pub fn is_certificate(&self) -> bool {
        self.as_str().starts_with("tls.cert.")
    }

    /// True for routing failures (no route to the network or host).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ErrorType::TcpAddressUnreachable | ErrorType::DnsUnreachable)
    }

    /// The coarse group used for detection slices: `dns`, `tcp`, `tls`, `http`, or `other`.
    pub fn group(&self) -> &'static str {
        let label = self.as_str();
        ["dns", "tcp", "tls", "http"]
            .into_iter()
            .find(|g| label.strip_prefix(g).is_some_and(|rest| rest.starts_with('.')))
            .unwrap_or("other")
    }
}

impl fmt::Display for ErrorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorType {
    type Err = UnknownLabel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorType::from_label(s)
    }
}

macro_rules! small_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $( $(#[$doc:meta])* $variant:ident => $label:literal = $code:literal, )* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub enum $name {
            $( $(#[$doc])* $variant, )*
        }

        impl $name {
            /// Every value, in wire-code order.
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )* ];

            /// The stable label.
            pub fn as_str(self) -> &'static str {
                match self { $( $name::$variant => $label, )* }
            }

            /// The compact code used on the wire.
            pub fn code(self) -> u8 {
                match self { $( $name::$variant => $code, )* }
            }

            /// The value for a wire code; `None` for a code this version does not know.
            pub fn from_code(code: u64) -> Option<$name> {
                match code { $( $code => Some($name::$variant), )* _ => None }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownLabel;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownLabel::new($what, s))
            }
        }
    };
}

small_enum! {
    /// Where the failure was, from the agent's reachability check (see DESIGN.md, "scope").
    Scope, "scope" {
        /// Not checked.
        #[default]
        Unknown => "unknown" = 0,
        /// A collector in another failure domain answered while the service did not: the
        /// service, its DNS or the route to it is broken.
        Path => "path" = 1,
        /// Nothing answered: a last-mile outage on the client's side.
        Local => "local" = 2,
    }
}

small_enum! {
    /// The kind of network the client was on.
    NetworkType, "network type" {
        /// Not known.
        #[default]
        Unknown => "unknown" = 0,
        /// Wi-Fi.
        Wifi => "wifi" = 1,
        /// Cellular.
        Cellular => "cellular" = 2,
        /// Wired Ethernet.
        Ethernet => "ethernet" = 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_known_label_round_trips_and_is_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for t in ErrorType::KNOWN {
            assert!(seen.insert(t.as_str()), "duplicate label {}", t.as_str());
            assert_eq!(&ErrorType::from_label(t.as_str()).unwrap(), t);
            assert!(is_plausible_label(t.as_str()));
        }
        assert!(seen.contains("tcp.address_unreachable"));
        assert!(seen.contains("dns.timed_out"));
    }

    #[test]
    fn phases_follow_the_label_prefix() {
        for t in ErrorType::KNOWN {
            let label = t.as_str();
            let expected = if label.starts_with("dns.") {
                Phase::Dns
            } else if label.starts_with("tcp.") || label.starts_with("tls.") {
                Phase::Connection
            } else {
                Phase::Application
            };
            assert_eq!(t.phase(), expected, "{label}");
        }
    }

    #[test]
    fn unknown_labels_become_other_and_garbage_is_refused() {
        let t: ErrorType = "quic.handshake_failed".parse().unwrap();
        assert_eq!(t, ErrorType::Other("quic.handshake_failed".into()));
        assert_eq!(t.as_str(), "quic.handshake_failed");
        assert_eq!(t.phase(), Phase::Connection);
        assert_eq!(ErrorType::from_label("dns.new_thing").unwrap().phase(), Phase::Dns);
        let err = ErrorType::from_label("DROP TABLE").unwrap_err();
        assert_eq!(err.to_string(), "unknown error type \"DROP TABLE\"");
        assert!(ErrorType::from_label("").is_err());
        assert!(ErrorType::from_label(&"a".repeat(65)).is_err());
    }

    #[test]
    fn predicates() {
        assert!(ErrorType::TcpTimedOut.is_timeout());
        assert!(ErrorType::DnsTimedOut.is_timeout());
        assert!(!ErrorType::TcpRefused.is_timeout());
        assert!(ErrorType::TlsCertDateInvalid.is_certificate());
        assert!(ErrorType::TlsCertDateInvalid.is_tls());
        assert!(!ErrorType::TlsProtocolError.is_certificate());
        assert!(ErrorType::TcpAddressUnreachable.is_unreachable());
        assert_eq!(ErrorType::TlsFailed.group(), "tls");
        assert_eq!(ErrorType::HttpError.group(), "http");
        assert_eq!(ErrorType::Abandoned.group(), "other");
        assert_eq!(ErrorType::Other("tcpx.y".into()).group(), "other");
    }

    #[test]
    fn small_enums_round_trip_labels_and_codes() {
        for s in Scope::ALL {
            assert_eq!(s.as_str().parse::<Scope>().unwrap(), *s);
            assert_eq!(Scope::from_code(s.code().into()), Some(*s));
        }
        for n in NetworkType::ALL {
            assert_eq!(n.as_str().parse::<NetworkType>().unwrap(), *n);
            assert_eq!(NetworkType::from_code(n.code().into()), Some(*n));
        }
        assert_eq!(Scope::from_code(9), None);
        assert_eq!(
            "wired".parse::<NetworkType>().unwrap_err().to_string(),
            "unknown network type \"wired\""
        );
        for p in Phase::ALL {
            assert_eq!(p.as_str().parse::<Phase>().unwrap(), p);
        }
    }
}
