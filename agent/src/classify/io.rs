//! [`std::io::Error`], [`std::io::ErrorKind`] and error chains.

use std::error::Error as StdError;
use std::io;

use super::errno;
use super::errno::ErrnoFlavor;
use crate::taxonomy::ErrorType;

/// How deep [`error_chain`] and [`io_error`] look into nested errors. Real chains are a few
/// levels deep; the bound only guarantees termination on a `source()` that loops.
const MAX_DEPTH: usize = 16;

/// The fixed prefix of the error that Rust's standard library builds on Unix when
/// `getaddrinfo` fails (the message goes on with `gai_strerror`, and the error has no code).
const STD_LOOKUP_PREFIX: &str = "failed to lookup address information";

/// Fragments of `gai_strerror` texts (glibc, musl, Apple/BSD, bionic) that mean "no such
/// name", compared in lower case.
const NO_SUCH_NAME: &[&str] = &[
    "not known",               // glibc, Apple, BSD, bionic EAI_NONAME
    "does not resolve",        // musl EAI_NONAME
    "no address associated",   // glibc, Apple EAI_NODATA
    "no usable address",       // musl EAI_NODATA
    "address family for host", // glibc EAI_ADDRFAMILY
    "address family for node", // Apple EAI_ADDRFAMILY
];

/// Classifies an [`io::Error`], as returned by `std::net`, tokio, or a TLS stream.
///
/// In order:
///
/// 1. An error wrapped inside it (`get_ref()`) is classified first: with the `rustls`
///    feature, a `rustls::Error` (which tokio-rustls wraps in an `io::Error`) gives its TLS
///    type; a nested `io::Error` is classified in turn; other wrapped errors are searched
///    through their `source()` chain, as [`error_chain`] does.
/// 2. A raw OS error code is looked up in the [`super::errno`] table of the platform this crate
///    was compiled for ([`ErrnoFlavor::NATIVE`]). Codes outside the table, and targets whose
///    numbering the tables do not cover (Linux on MIPS/SPARC, WASI), go on to step 4.
/// 3. A failed name lookup through `std::net::ToSocketAddrs` (also used by tokio and
///    hyper-util's resolver) carries no code on Unix, only a fixed message prefix; it gives a
///    DNS type, [`ErrorType::DnsNameNotResolved`] when the `gai_strerror` text says the name
///    does not exist (English texts only; other locales give [`ErrorType::DnsFailed`]).
/// 4. [`io_error_kind`] of the error's kind, whose fallback is [`ErrorType::TcpFailed`].
pub fn io_error(err: &io::Error) -> ErrorType {
    classify_io(err, 0)
}

/// Classifies an [`io::ErrorKind`], for errors that carry nothing more.
///
/// `ConnectionRefused` → `tcp.refused`, `ConnectionReset` → `tcp.reset`, `ConnectionAborted`
/// → `tcp.aborted`, `TimedOut` → `tcp.timed_out`, `NotConnected`/`BrokenPipe`/
/// `UnexpectedEof`/`WriteZero` → `tcp.closed`, `AddrNotAvailable` → `tcp.address_invalid`,
/// `HostUnreachable`/`NetworkUnreachable`/`NetworkDown` → `tcp.address_unreachable`.
/// Every other kind (`PermissionDenied`, `AddrInUse`, `Interrupted`, `Other`, ...) gives the
/// documented fallback [`ErrorType::TcpFailed`].
pub fn io_error_kind(kind: io::ErrorKind) -> ErrorType {
    use io::ErrorKind as K;
    match kind {
        K::ConnectionRefused => ErrorType::TcpRefused,
        K::ConnectionReset => ErrorType::TcpReset,
        K::ConnectionAborted => ErrorType::TcpAborted,
        K::TimedOut => ErrorType::TcpTimedOut,
        K::NotConnected | K::BrokenPipe | K::UnexpectedEof | K::WriteZero => ErrorType::TcpClosed,
        K::AddrNotAvailable => ErrorType::TcpAddressInvalid,
        K::HostUnreachable | K::NetworkUnreachable | K::NetworkDown => {
            ErrorType::TcpAddressUnreachable
        }
        _ => ErrorType::TcpFailed,
    }
}

/// Searches an error and its `source()` chain for something this module can classify: an
/// [`io::Error`] (classified with [`io_error`]) or, with the `rustls` feature, a
/// `rustls::Error`. The first one found, from the outside in, decides.
///
/// This is the entry point for errors from HTTP clients (hyper, reqwest), which wrap the
/// transport error a few levels down. `None` means nothing in the chain was recognised; the
/// caller chooses the fallback, since only it knows the phase the request was in.
pub fn error_chain(err: &(dyn StdError + 'static)) -> Option<ErrorType> {
    classify_chain(err, 0)
}

fn classify_io(err: &io::Error, depth: usize) -> ErrorType {
    // (No let chains: the workspace's minimum Rust is 1.85.)
    let inside = err.get_ref().and_then(|inner| classify_chain(inner, depth + 1));
    let raw = || {
        let flavor = ErrnoFlavor::TRUSTED_NATIVE?;
        errno::lookup(flavor, err.raw_os_error()?).map(|entry| entry.2.clone())
    };
    inside
        .or_else(raw)
        .or_else(|| std_lookup_failure(err))
        .unwrap_or_else(|| io_error_kind(err.kind()))
}

fn classify_chain(err: &(dyn StdError + 'static), mut depth: usize) -> Option<ErrorType> {
    let mut next = Some(err);
    while let Some(e) = next {
        if depth >= MAX_DEPTH {
            return None;
        }
        #[cfg(feature = "rustls")]
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(super::rustls_error(tls));
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return Some(classify_io(io, depth));
        }
        next = e.source();
        depth += 1;
    }
    None
}

/// Recognises the error `std::net` returns on Unix when `getaddrinfo` fails (see
/// [`STD_LOOKUP_PREFIX`]). `EAI_SYSTEM` is reported as the OS error instead, so it never
/// gets here.
fn std_lookup_failure(err: &io::Error) -> Option<ErrorType> {
    let message = err.get_ref()?.to_string();
    let detail = message.strip_prefix(STD_LOOKUP_PREFIX)?.to_ascii_lowercase();
    Some(if NO_SUCH_NAME.iter().any(|f| detail.contains(f)) {
        ErrorType::DnsNameNotResolved
    } else {
        ErrorType::DnsFailed
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::testutil::round_trips;
    use crate::taxonomy::ErrorType::*;
    use proptest::prelude::*;
    use std::fmt;
    use std::io::ErrorKind as K;

    #[test]
    fn kind_table() {
        let cases = [
            (K::ConnectionRefused, TcpRefused),
            (K::ConnectionReset, TcpReset),
            (K::ConnectionAborted, TcpAborted),
            (K::TimedOut, TcpTimedOut),
            (K::NotConnected, TcpClosed),
            (K::BrokenPipe, TcpClosed),
            (K::UnexpectedEof, TcpClosed),
            (K::WriteZero, TcpClosed),
            (K::AddrNotAvailable, TcpAddressInvalid),
            (K::HostUnreachable, TcpAddressUnreachable),
            (K::NetworkUnreachable, TcpAddressUnreachable),
            (K::NetworkDown, TcpAddressUnreachable),
        ];
        for (kind, expected) in cases {
            assert_eq!(io_error_kind(kind), expected, "{kind:?}");
            assert_eq!(io_error(&io::Error::from(kind)), expected, "{kind:?}");
        }
    }

    #[test]
    fn other_kinds_fall_back_to_tcp_failed() {
        for kind in [
            K::PermissionDenied,
            K::AddrInUse,
            K::Interrupted,
            K::WouldBlock,
            K::InvalidData,
            K::InvalidInput,
            K::NotFound,
            K::OutOfMemory,
            K::Unsupported,
            K::Other,
        ] {
            assert_eq!(io_error_kind(kind), TcpFailed, "{kind:?}");
        }
        assert_eq!(io_error(&io::Error::other("boom")), TcpFailed);
    }

    /// End to end with the platform's own numbers: the raw code decides, not the kind.
    #[cfg(target_os = "linux")]
    #[test]
    fn raw_linux_errors_use_the_errno_table() {
        let cases = [
            (libc::ECONNREFUSED, TcpRefused),
            (libc::ECONNRESET, TcpReset),
            (libc::ETIMEDOUT, TcpTimedOut),
            (libc::ENETUNREACH, TcpAddressUnreachable),
            (libc::EHOSTUNREACH, TcpAddressUnreachable),
            (libc::EHOSTDOWN, TcpAddressUnreachable),
            (libc::EINVAL, TcpAddressUnreachable),
            (libc::EADDRNOTAVAIL, TcpAddressInvalid),
            (libc::EPIPE, TcpClosed),
            (libc::ECANCELED, Abandoned),
            (libc::EACCES, TcpFailed),
            // Not in the table: the kind decides (WouldBlock -> the fallback).
            (libc::EAGAIN, TcpFailed),
        ];
        for (code, expected) in cases {
            let err = io::Error::from_raw_os_error(code);
            assert_eq!(io_error(&err), expected, "{err}");
        }
    }

    #[test]
    fn nested_io_errors_are_classified_from_the_inside() {
        let inner = io::Error::from(K::ConnectionReset);
        assert_eq!(io_error(&io::Error::other(inner)), TcpReset);
        let inner = io::Error::new(K::InvalidData, io::Error::from(K::HostUnreachable));
        assert_eq!(io_error(&io::Error::other(inner)), TcpAddressUnreachable);
    }

    #[derive(Debug)]
    struct Wrapper(Option<Box<dyn StdError + Send + Sync + 'static>>);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapper")
        }
    }

    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.0.as_deref().map(|e| e as &(dyn StdError + 'static))
        }
    }

    /// An error whose `source()` is itself, forever.
    #[derive(Debug)]
    struct Loop;

    impl fmt::Display for Loop {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("loop")
        }
    }

    impl StdError for Loop {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(self)
        }
    }

    #[test]
    fn error_chain_finds_the_transport_error() {
        let deep =
            Wrapper(Some(Box::new(Wrapper(Some(Box::new(io::Error::from(K::ConnectionRefused)))))));
        assert_eq!(error_chain(&deep), Some(TcpRefused));
        assert_eq!(error_chain(&Wrapper(None)), None);
        assert_eq!(error_chain(&Loop), None);
        // An io::Error that wraps an unrecognised chain falls back to its own kind.
        let err = io::Error::new(K::TimedOut, Wrapper(None));
        assert_eq!(error_chain(&err), Some(TcpTimedOut));
        let err = io::Error::new(K::ConnectionAborted, Loop);
        assert_eq!(io_error(&err), TcpAborted);
    }

    #[test]
    fn std_lookup_failures_are_dns() {
        let cases = [
            ("Name or service not known", DnsNameNotResolved), // glibc EAI_NONAME
            ("No address associated with hostname", DnsNameNotResolved), // glibc EAI_NODATA
            ("Address family for hostname not supported", DnsNameNotResolved),
            ("Name does not resolve", DnsNameNotResolved), // musl
            ("Name has no usable address", DnsNameNotResolved), // musl
            ("nodename nor servname provided, or not known", DnsNameNotResolved), // Apple
            ("Temporary failure in name resolution", DnsFailed), // EAI_AGAIN
            ("Non-recoverable failure in name resolution", DnsFailed), // EAI_FAIL
            ("Échec temporaire dans la résolution du nom", DnsFailed), // another locale
            ("", DnsFailed),
        ];
        for (detail, expected) in cases {
            let err = io::Error::other(format!("{STD_LOOKUP_PREFIX}: {detail}"));
            assert_eq!(io_error(&err), expected, "{detail}");
        }
        // Without the prefix, a message is just a message.
        let err = io::Error::other("Name or service not known");
        assert_eq!(io_error(&err), TcpFailed);
    }

    /// A real lookup that glibc fails locally (an empty host name), through `std::net`.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn real_std_lookup_failure() {
        use std::net::ToSocketAddrs;
        let err = ":80".to_socket_addrs().expect_err("an empty host name does not resolve");
        assert_eq!(io_error(&err), DnsNameNotResolved, "{err}");
    }

    /// Real sockets on loopback: a closed port refuses, a closed peer gives end-of-file.
    #[test]
    fn real_loopback_sockets() {
        use std::io::Read;
        use std::net::{TcpListener, TcpStream};

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        drop(listener);
        let err = TcpStream::connect(addr).expect_err("nothing listens on the port any more");
        assert_eq!(io_error(&err), TcpRefused, "{err}");

        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let mut client = TcpStream::connect(listener.local_addr().expect("local addr"))
            .expect("connect to loopback");
        let (server, _) = listener.accept().expect("accept");
        drop(server);
        let mut buf = [0u8; 1];
        let err = client.read_exact(&mut buf).expect_err("the peer closed");
        assert_eq!(io_error(&err), TcpClosed, "{err}");
    }

    proptest! {
        #[test]
        fn any_raw_code_gives_a_label(code in any::<i32>()) {
            let t = io_error(&io::Error::from_raw_os_error(code));
            prop_assert!(round_trips(&t));
        }

        #[test]
        fn any_message_gives_a_label(message in any::<String>()) {
            let t = io_error(&io::Error::other(message.clone()));
            prop_assert!(round_trips(&t));
            let t = io_error(&io::Error::other(format!("{STD_LOOKUP_PREFIX}: {message}")));
            prop_assert!(t.is_dns());
        }
    }
}
