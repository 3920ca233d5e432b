//! Classification: tables that map platform errors onto the NEL [`ErrorType`] taxonomy.
//!
//! Every platform reports a failed request in its own vocabulary: POSIX `errno`, `getaddrinfo`
//! `EAI_*` codes, [`std::io::Error`], rustls errors, HTTP status codes, curl's `CURLcode`,
//! Apple's `NSURLErrorDomain` codes and Java exception class names. The functions here turn
//! each of them into one stable, low-cardinality [`ErrorType`], so a refused connection is
//! `tcp.refused` whether it came from Linux, iOS, Android or a browser.
//!
//! The mappings are plain tables: pure functions of the code, no I/O, no allocation except for
//! message inspection in [`io_error`]. Each table has unit tests at the bottom of its file, and
//! on Linux the `errno` and `EAI_*` numbers are checked against the `libc` crate so that the
//! tables cannot drift from the real platform.
//!
//! ```
//! use vantage_agent::ErrorType;
//! use vantage_agent::classify::{self, ErrnoFlavor};
//!
//! assert_eq!(classify::errno(ErrnoFlavor::Linux, 111), ErrorType::TcpRefused); // ECONNREFUSED
//! assert_eq!(classify::errno(ErrnoFlavor::Darwin, 65), ErrorType::TcpAddressUnreachable);
//! assert_eq!(classify::curl(60), ErrorType::TlsCertAuthorityInvalid);
//! assert_eq!(classify::nsurl(-1003), ErrorType::DnsNameNotResolved);
//! assert_eq!(classify::java_exception("java.net.UnknownHostException"), ErrorType::DnsNameNotResolved);
//! assert_eq!(classify::http_status(503), Some(ErrorType::HttpError));
//! assert_eq!(classify::platform("getaddrinfo.linux", -2), ErrorType::DnsNameNotResolved);
//! ```
//!
//! # Fallbacks
//!
//! A code that a table does not know never panics and never becomes an error: it gets the
//! documented fallback of its table, chosen so that the *phase* stays right when it is known.
//!
//! | Source                              | Function                 | Code not in the table gives       |
//! |-------------------------------------|--------------------------|-----------------------------------|
//! | POSIX `errno` / Winsock             | [`errno`]                | `tcp.failed`                      |
//! | [`std::io::Error`]                  | [`io_error`]             | `tcp.failed` (after the steps it lists) |
//! | [`std::io::ErrorKind`]              | [`io_error_kind`]        | `tcp.failed`                      |
//! | any [`std::error::Error`] chain     | [`error_chain`]          | `None` (nothing recognised)       |
//! | `getaddrinfo` `EAI_*`               | [`getaddrinfo`]          | `dns.failed`                      |
//! | HTTP status                         | [`http_status`]          | `None` for 1xx–3xx; `http.error` for 4xx–5xx; `http.response.invalid` outside `100..=599` |
//! | curl `CURLcode`                     | [`curl`]                 | `unknown`                         |
//! | Apple `NSURLErrorDomain`            | [`nsurl`]                | `unknown`                         |
//! | Java exception class                | [`java_exception`]       | `unknown`                         |
//! | rustls (feature `rustls`)           | `rustls_error`           | `tls.failed`                      |
//! | `(domain, code)` pair               | [`platform`]             | `unknown` for an unknown domain   |
//!
//! Transport-level sources (`errno`, `io`) fall back to `tcp.failed` because whatever produced
//! them was a socket; `getaddrinfo` falls back to `dns.failed` for the same reason. curl,
//! NSURLError and Java cover every phase, so their fallback is `unknown`.
//!
//! # Decisions on ambiguous codes
//!
//! - **Routing failures are `tcp.address_unreachable`**: `ENETUNREACH`, `EHOSTUNREACH`,
//!   `ENETDOWN`, `EHOSTDOWN`, Linux `ENONET` (ICMP host isolated), `EAFNOSUPPORT` (no route for
//!   that address family, e.g. no IPv6), `NSURLErrorNotConnectedToInternet` and the cellular
//!   "data not allowed" codes.
//! - **Linux `EINVAL` is `tcp.address_unreachable`**: Linux fails `connect()` with `EINVAL` over
//!   a `blackhole` route (VPN kill switches and policy routing install them). A genuine invalid
//!   argument is a caller bug that does not show up at fleet scale. On Darwin and Windows,
//!   `EINVAL` has no routing meaning and stays `tcp.failed`.
//! - **`EACCES`/`EPERM` are `tcp.failed`**: a local firewall (netfilter `OUTPUT` drop, an app
//!   firewall, a Linux `prohibit` route) refused the packet before it left the host; that is a
//!   policy on the client, not a statement about the path.
//! - **`EAI_AGAIN` is `dns.failed`**, not `dns.timed_out`: glibc returns it for SERVFAIL and for
//!   a resolver timeout alike, and for no network at all. `EAI_NODATA`/`EAI_ADDRFAMILY` (the
//!   name exists, but has no address) are `dns.name_not_resolved`, as in browsers.
//! - **Catch-all codes that hide an `errno`** (curl 7 `COULDNT_CONNECT`, 55/56
//!   `SEND_ERROR`/`RECV_ERROR`, `NSURLErrorCannotConnectToHost`, Java `ConnectException` and
//!   `SocketException`) get a best guess; a host that has the underlying `errno`
//!   (`CURLINFO_OS_ERRNO`, the `NSUnderlyingErrorKey` in `NSPOSIXErrorDomain`, Android's
//!   `ErrnoException`) should classify that instead with [`errno`].
//! - **Timeouts that span phases** (curl 28, `NSURLErrorTimedOut`, Java `SocketTimeoutException`)
//!   are `tcp.timed_out`: the code does not say which phase ran out of time.
//! - **Certificate verification catch-alls**: curl 60 and Apple's `-1202` (`ServerCertificate
//!   Untrusted`, which Apple also uses for a name mismatch) are `tls.cert.authority_invalid`,
//!   the most common cause; curl 51 (obsolete since 7.62, once `PEER_FAILED_VERIFICATION` for
//!   name mismatches) is `tls.cert.name_invalid`. Java `SSLHandshakeException` is `tls.failed`
//!   (it wraps every handshake failure); pass the whole cause chain to [`java_exception_chain`]
//!   to recover the specific cause.

mod curl;
mod errno;
mod gai;
mod http;
mod io;
mod java;
mod nsurl;
#[cfg(feature = "rustls")]
mod tls;

use core::fmt;
use core::str::FromStr;

pub use self::curl::curl;
pub use self::errno::{ErrnoFlavor, errno};
pub use self::gai::getaddrinfo;
pub use self::http::{StatusClass, http_status};
pub use self::io::{error_chain, io_error, io_error_kind};
pub use self::java::{java_exception, java_exception_chain};
pub use self::nsurl::nsurl;
#[cfg(feature = "rustls")]
pub use self::tls::rustls_error;

use crate::taxonomy::{ErrorType, UnknownLabel};

/// A source of numeric error codes, for callers that carry `(domain, code)` pairs (the C
/// library, the Apple `NSError` bridge).
///
/// Parsed from a short name (see [`ErrorDomain::from_str`]); [`ErrorDomain::as_str`] gives the
/// canonical name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorDomain {
    /// POSIX `errno` (or Winsock / Win32 error) numbers of the given flavour: [`errno`].
    Posix(ErrnoFlavor),
    /// `getaddrinfo` return codes of the given flavour: [`getaddrinfo`].
    Getaddrinfo(ErrnoFlavor),
    /// curl `CURLcode`: [`curl`].
    Curl,
    /// Apple `NSURLErrorDomain` codes: [`nsurl`].
    NsUrl,
    /// HTTP status codes: [`http_status`].
    Http,
}

impl ErrorDomain {
    /// The canonical name: `posix.linux`, `posix.darwin`, `posix.windows`, `getaddrinfo.linux`,
    /// ..., `curl`, `nsurl`, `http`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorDomain::Posix(ErrnoFlavor::Linux) => "posix.linux",
            ErrorDomain::Posix(ErrnoFlavor::Darwin) => "posix.darwin",
            ErrorDomain::Posix(ErrnoFlavor::Windows) => "posix.windows",
            ErrorDomain::Getaddrinfo(ErrnoFlavor::Linux) => "getaddrinfo.linux",
            ErrorDomain::Getaddrinfo(ErrnoFlavor::Darwin) => "getaddrinfo.darwin",
            ErrorDomain::Getaddrinfo(ErrnoFlavor::Windows) => "getaddrinfo.windows",
            ErrorDomain::Curl => "curl",
            ErrorDomain::NsUrl => "nsurl",
            ErrorDomain::Http => "http",
        }
    }

    /// Classifies `code` with this domain's table.
    ///
    /// A code that does not fit the table's integer type gets the table's fallback (see the
    /// [module docs](self)); an HTTP status that is not an error (1xx–3xx) gives
    /// [`ErrorType::Unknown`], since a caller only asks about failed requests.
    pub fn classify(self, code: i64) -> ErrorType {
        match self {
            ErrorDomain::Posix(flavor) => {
                i32::try_from(code).map_or(ErrorType::TcpFailed, |c| errno(flavor, c))
            }
            ErrorDomain::Getaddrinfo(flavor) => {
                i32::try_from(code).map_or(ErrorType::DnsFailed, |c| getaddrinfo(flavor, c))
            }
            ErrorDomain::Curl => u32::try_from(code).map_or(ErrorType::Unknown, curl),
            ErrorDomain::NsUrl => nsurl(code),
            ErrorDomain::Http => match u16::try_from(code) {
                Ok(status) => http_status(status).unwrap_or(ErrorType::Unknown),
                Err(_) => ErrorType::HttpResponseInvalid,
            },
        }
    }

    /// The symbolic name of `code` in this domain's table (`ECONNREFUSED`,
    /// `CURLE_COULDNT_CONNECT`, `NSURLErrorCannotFindHost`, ...), for logs and debugging;
    /// `None` when the table has no entry for it (and always for HTTP).
    pub fn code_name(self, code: i64) -> Option<&'static str> {
        match self {
            ErrorDomain::Posix(flavor) => {
                i32::try_from(code).ok().and_then(|c| errno::lookup(flavor, c)).map(|e| e.1)
            }
            ErrorDomain::Getaddrinfo(flavor) => {
                i32::try_from(code).ok().and_then(|c| gai::lookup(flavor, c)).map(|e| e.1)
            }
            ErrorDomain::Curl => u32::try_from(code).ok().and_then(curl::lookup).map(|e| e.1),
            ErrorDomain::NsUrl => nsurl::lookup(code).map(|e| e.1),
            ErrorDomain::Http => None,
        }
    }
}

impl fmt::Display for ErrorDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorDomain {
    type Err = UnknownLabel;

    /// Accepts the canonical names, plus: `posix` and `getaddrinfo` (the flavour of the
    /// platform this crate was compiled for, [`ErrnoFlavor::NATIVE`]), and the Apple `NSError`
    /// domain strings `NSPOSIXErrorDomain` (Darwin `errno`), `NSURLErrorDomain` and
    /// `kCFErrorDomainCFNetwork` (both NSURLError codes), so an iOS host can pass
    /// `error.domain` through unchanged.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let domain = match s {
            "posix" => ErrorDomain::Posix(ErrnoFlavor::NATIVE),
            "posix.linux" => ErrorDomain::Posix(ErrnoFlavor::Linux),
            "posix.darwin" | "NSPOSIXErrorDomain" => ErrorDomain::Posix(ErrnoFlavor::Darwin),
            "posix.windows" => ErrorDomain::Posix(ErrnoFlavor::Windows),
            "getaddrinfo" => ErrorDomain::Getaddrinfo(ErrnoFlavor::NATIVE),
            "getaddrinfo.linux" => ErrorDomain::Getaddrinfo(ErrnoFlavor::Linux),
            "getaddrinfo.darwin" => ErrorDomain::Getaddrinfo(ErrnoFlavor::Darwin),
            "getaddrinfo.windows" => ErrorDomain::Getaddrinfo(ErrnoFlavor::Windows),
            "curl" => ErrorDomain::Curl,
            "nsurl" | "NSURLErrorDomain" | "kCFErrorDomainCFNetwork" => ErrorDomain::NsUrl,
            "http" => ErrorDomain::Http,
            other => return Err(UnknownLabel::new("error domain", other)),
        };
        Ok(domain)
    }
}

/// The single entry point for `(domain, code)` pairs: parses `domain` as an [`ErrorDomain`]
/// and classifies `code` with its table.
///
/// An unknown domain gives [`ErrorType::Unknown`]. Java exceptions are named, not numbered:
/// use [`java_exception`] for them.
pub fn platform(domain: &str, code: i64) -> ErrorType {
    domain.parse::<ErrorDomain>().map_or(ErrorType::Unknown, |d| d.classify(code))
}

/// One row of a code table: the code, its symbolic name, and its classification.
type Entry<C> = (C, &'static str, ErrorType);

/// Finds `code` in `table` (tables are short; a linear scan is as fast as anything else here).
fn find<C: PartialEq + Copy>(table: &'static [Entry<C>], code: C) -> Option<&'static Entry<C>> {
    table.iter().find(|entry| entry.0 == code)
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::Entry;
    use crate::taxonomy::ErrorType;

    /// Every label a classifier gives must survive a round trip through `from_label`.
    pub(crate) fn round_trips(t: &ErrorType) -> bool {
        ErrorType::from_label(t.as_str()).as_ref() == Ok(t)
    }

    /// Tables must not list a code twice: the second row would be dead.
    pub(crate) fn assert_unique_codes<C: PartialEq + core::fmt::Debug>(table: &[Entry<C>]) {
        for (i, a) in table.iter().enumerate() {
            for b in &table[i + 1..] {
                assert!(a.0 != b.0, "code {:?} listed twice ({} and {})", a.0, a.1, b.1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn domains_round_trip_their_canonical_names() {
        let all = [
            ErrorDomain::Posix(ErrnoFlavor::Linux),
            ErrorDomain::Posix(ErrnoFlavor::Darwin),
            ErrorDomain::Posix(ErrnoFlavor::Windows),
            ErrorDomain::Getaddrinfo(ErrnoFlavor::Linux),
            ErrorDomain::Getaddrinfo(ErrnoFlavor::Darwin),
            ErrorDomain::Getaddrinfo(ErrnoFlavor::Windows),
            ErrorDomain::Curl,
            ErrorDomain::NsUrl,
            ErrorDomain::Http,
        ];
        for d in all {
            assert_eq!(d.as_str().parse::<ErrorDomain>(), Ok(d));
            assert_eq!(d.to_string(), d.as_str());
        }
    }

    #[test]
    fn domain_aliases() {
        let cases = [
            ("posix", ErrorDomain::Posix(ErrnoFlavor::NATIVE)),
            ("getaddrinfo", ErrorDomain::Getaddrinfo(ErrnoFlavor::NATIVE)),
            ("NSPOSIXErrorDomain", ErrorDomain::Posix(ErrnoFlavor::Darwin)),
            ("NSURLErrorDomain", ErrorDomain::NsUrl),
            ("kCFErrorDomainCFNetwork", ErrorDomain::NsUrl),
        ];
        for (name, domain) in cases {
            assert_eq!(name.parse::<ErrorDomain>(), Ok(domain), "{name}");
        }
        let err = "java".parse::<ErrorDomain>().expect_err("java is not a numeric domain");
        assert_eq!(err.to_string(), "unknown error domain \"java\"");
    }

    #[test]
    fn platform_dispatches_to_each_table() {
        let cases = [
            ("posix.linux", 111, ErrorType::TcpRefused),
            ("posix.darwin", 61, ErrorType::TcpRefused),
            ("posix.windows", 10061, ErrorType::TcpRefused),
            ("NSPOSIXErrorDomain", 65, ErrorType::TcpAddressUnreachable),
            ("getaddrinfo.linux", -2, ErrorType::DnsNameNotResolved),
            ("getaddrinfo.darwin", 8, ErrorType::DnsNameNotResolved),
            ("getaddrinfo.windows", 11001, ErrorType::DnsNameNotResolved),
            ("curl", 6, ErrorType::DnsNameNotResolved),
            ("nsurl", -1200, ErrorType::TlsFailed),
            ("NSURLErrorDomain", -999, ErrorType::Abandoned),
            ("http", 502, ErrorType::HttpError),
        ];
        for (domain, code, expected) in cases {
            assert_eq!(platform(domain, code), expected, "{domain} {code}");
        }
    }

    #[test]
    fn platform_fallbacks() {
        assert_eq!(platform("", 1), ErrorType::Unknown);
        assert_eq!(platform("POSIX", 111), ErrorType::Unknown);
        assert_eq!(platform("java", 1), ErrorType::Unknown);
        // Out of the table's integer range: the table's own fallback.
        assert_eq!(platform("posix.linux", i64::MAX), ErrorType::TcpFailed);
        assert_eq!(platform("getaddrinfo.linux", i64::MIN), ErrorType::DnsFailed);
        assert_eq!(platform("curl", -1), ErrorType::Unknown);
        assert_eq!(platform("http", 70_000), ErrorType::HttpResponseInvalid);
        assert_eq!(platform("http", -1), ErrorType::HttpResponseInvalid);
        // Not an error status: a caller only asks about failures.
        assert_eq!(platform("http", 200), ErrorType::Unknown);
    }

    #[test]
    fn code_names() {
        let linux = ErrorDomain::Posix(ErrnoFlavor::Linux);
        assert_eq!(linux.code_name(111), Some("ECONNREFUSED"));
        assert_eq!(linux.code_name(1 << 40), None);
        assert_eq!(
            ErrorDomain::Getaddrinfo(ErrnoFlavor::Windows).code_name(11001),
            Some("WSAHOST_NOT_FOUND")
        );
        assert_eq!(ErrorDomain::Curl.code_name(7), Some("CURLE_COULDNT_CONNECT"));
        assert_eq!(ErrorDomain::Curl.code_name(-7), None);
        assert_eq!(ErrorDomain::NsUrl.code_name(-1003), Some("NSURLErrorCannotFindHost"));
        assert_eq!(ErrorDomain::Http.code_name(500), None);
    }

    proptest! {
        #[test]
        fn platform_never_panics_and_labels_round_trip(domain in ".{0,24}", code in any::<i64>()) {
            let t = platform(&domain, code);
            prop_assert!(testutil::round_trips(&t));
        }

        #[test]
        fn known_domains_never_panic_on_any_code(code in any::<i64>()) {
            for name in ["posix", "posix.windows", "getaddrinfo", "curl", "nsurl", "http"] {
                let domain: ErrorDomain = name.parse().expect("a known domain");
                let t = domain.classify(code);
                prop_assert!(testutil::round_trips(&t));
                let _ = domain.code_name(code);
            }
        }
    }
}
