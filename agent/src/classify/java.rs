//! Java and Android exception class names.

use crate::taxonomy::ErrorType;
use crate::taxonomy::ErrorType::{
    Abandoned, DnsFailed, DnsNameNotResolved, HttpFailed, HttpProtocolError, TcpAddressInvalid,
    TcpAddressUnreachable, TcpClosed, TcpFailed, TcpRefused, TcpReset, TcpTimedOut,
    TlsCertAuthorityInvalid, TlsCertDateInvalid, TlsCertInvalid, TlsCertNameInvalid,
    TlsCertRevoked, TlsFailed, TlsProtocolError, Unknown,
};

/// How many causes [`java_exception_chain`] looks at.
const MAX_CHAIN: usize = 64;

/// Classifies a Java exception by its class name.
///
/// Accepts a fully-qualified name (`java.net.UnknownHostException`), a simple name
/// (`UnknownHostException`), a JNI name (`java/net/UnknownHostException`), a nested class
/// (`Outer$Inner`), or `Throwable.toString()` output (`java.net.ConnectException: Connection
/// refused`, whose message is ignored). Matching is by simple name, so the JDK, Android,
/// OkHttp, Ktor and Apache HttpClient classes of the same name classify alike.
///
/// Decisions for classes that hide their cause:
///
/// - `SSLHandshakeException` is [`ErrorType::TlsFailed`]: the JDK and Android throw it for
///   every handshake failure (certificate, version, cipher, connection closed). Pass the cause
///   chain to [`java_exception_chain`] to get the specific cause.
/// - `SSLPeerUnverifiedException` is [`ErrorType::TlsCertNameInvalid`] (OkHttp's "Hostname not
///   verified"); OkHttp also uses it for certificate pinning failures, which the class name
///   cannot tell apart.
/// - `ConnectException` is [`ErrorType::TcpRefused`] as the JDK documents it; on Android it
///   also wraps `ENETUNREACH` and `ETIMEDOUT`. A host with the `ErrnoException`'s `errno` should
///   classify that with [`super::errno`].
/// - `SocketException` (the JDK's "Connection reset" among others) is [`ErrorType::TcpFailed`].
/// - `InterruptedIOException` is [`ErrorType::TcpTimedOut`] (OkHttp's call timeout).
///
/// Unknown classes, and the empty string, give the documented fallback
/// [`ErrorType::Unknown`]. Never panics, whatever the input.
pub fn java_exception(class_name: &str) -> ErrorType {
    let name = simple_name(class_name);
    TABLE.iter().find(|(simple, _)| *simple == name).map_or(Unknown, |(_, t)| t.clone())
}

/// Classifies a Java exception together with its causes (`getCause()`), outermost first.
///
/// The most specific classification wins: any specific type beats a generic one
/// (`tcp.failed`, `tls.failed`, `tls.cert.invalid`, `http.failed`, `dns.failed`), which beats
/// `unknown`; among equally specific ones, the innermost (the root cause) wins. So
/// `[SSLHandshakeException, CertificateException, CertPathValidatorException]` is
/// `tls.cert.authority_invalid`. Only the first 64 entries are read, so a cyclic cause chain
/// ends. An empty chain is [`ErrorType::Unknown`].
pub fn java_exception_chain<'a, I>(class_names: I) -> ErrorType
where
    I: IntoIterator<Item = &'a str>,
{
    let mut best = Unknown;
    for name in class_names.into_iter().take(MAX_CHAIN) {
        let t = java_exception(name);
        if specificity(&t) >= specificity(&best) {
            best = t;
        }
    }
    best
}

fn specificity(t: &ErrorType) -> u8 {
    match t {
        Unknown => 0,
        TcpFailed | TlsFailed | TlsCertInvalid | HttpFailed | DnsFailed => 1,
        _ => 2,
    }
}

/// `java.net.ConnectException: Connection refused` → `ConnectException`.
fn simple_name(class_name: &str) -> &str {
    let name = class_name.trim_start();
    let name = name.split(|c: char| c == ':' || c.is_whitespace()).next().unwrap_or(name);
    let name = name.strip_suffix(';').unwrap_or(name);
    name.rsplit(['.', '/', '$']).next().unwrap_or(name)
}

/// Simple class names. Where several packages use a name, the comment names them.
static TABLE: &[(&str, ErrorType)] = &[
    // java.net
    ("UnknownHostException", DnsNameNotResolved),
    ("ConnectException", TcpRefused),
    ("NoRouteToHostException", TcpAddressUnreachable),
    ("PortUnreachableException", TcpRefused),
    ("BindException", TcpAddressInvalid),
    ("SocketTimeoutException", TcpTimedOut), // also Ktor's
    ("SocketException", TcpFailed),
    ("ProtocolException", HttpProtocolError), // also Apache HttpClient's
    // sun.net: the JDK's "Connection reset" on some versions
    ("ConnectionResetException", TcpReset),
    // java.nio.channels
    ("UnresolvedAddressException", DnsNameNotResolved),
    // java.io
    ("EOFException", TcpClosed),
    ("InterruptedIOException", TcpTimedOut),
    // java.net.http
    ("HttpConnectTimeoutException", TcpTimedOut),
    ("HttpTimeoutException", TcpTimedOut),
    // Apache HttpClient, Ktor
    ("ConnectTimeoutException", TcpTimedOut),
    ("HttpHostConnectException", TcpRefused),
    ("HttpRequestTimeoutException", TcpTimedOut),
    // javax.net.ssl
    ("SSLHandshakeException", TlsFailed),
    ("SSLPeerUnverifiedException", TlsCertNameInvalid),
    ("SSLProtocolException", TlsProtocolError),
    ("SSLKeyException", TlsFailed),
    ("SSLException", TlsFailed),
    // java.security.cert
    ("CertPathValidatorException", TlsCertAuthorityInvalid),
    ("CertificateExpiredException", TlsCertDateInvalid),
    ("CertificateNotYetValidException", TlsCertDateInvalid),
    ("CertificateRevokedException", TlsCertRevoked),
    ("CertificateException", TlsCertInvalid),
    // OkHttp
    ("StreamResetException", HttpProtocolError),
    ("ConnectionShutdownException", TcpClosed),
    // java.util.concurrent, kotlinx.coroutines
    ("CancellationException", Abandoned),
    ("JobCancellationException", Abandoned),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::testutil::round_trips;
    use proptest::prelude::*;

    #[test]
    fn table_names_are_unique_simple_names() {
        for (i, (a, _)) in TABLE.iter().enumerate() {
            assert_eq!(simple_name(a), *a);
            assert!(TABLE[i + 1..].iter().all(|(b, _)| a != b), "{a} twice");
        }
    }

    #[test]
    fn class_table() {
        let cases = [
            ("java.net.UnknownHostException", DnsNameNotResolved),
            ("java.net.ConnectException", TcpRefused),
            ("java.net.SocketTimeoutException", TcpTimedOut),
            ("java.net.http.HttpConnectTimeoutException", TcpTimedOut),
            ("java.net.http.HttpTimeoutException", TcpTimedOut),
            ("java.io.InterruptedIOException", TcpTimedOut),
            ("java.net.NoRouteToHostException", TcpAddressUnreachable),
            ("java.net.PortUnreachableException", TcpRefused),
            ("java.net.BindException", TcpAddressInvalid),
            ("java.net.SocketException", TcpFailed),
            ("sun.net.ConnectionResetException", TcpReset),
            ("java.nio.channels.UnresolvedAddressException", DnsNameNotResolved),
            ("java.io.EOFException", TcpClosed),
            ("javax.net.ssl.SSLHandshakeException", TlsFailed),
            ("javax.net.ssl.SSLPeerUnverifiedException", TlsCertNameInvalid),
            ("javax.net.ssl.SSLProtocolException", TlsProtocolError),
            ("javax.net.ssl.SSLKeyException", TlsFailed),
            ("javax.net.ssl.SSLException", TlsFailed),
            ("java.security.cert.CertPathValidatorException", TlsCertAuthorityInvalid),
            ("java.security.cert.CertificateExpiredException", TlsCertDateInvalid),
            ("java.security.cert.CertificateNotYetValidException", TlsCertDateInvalid),
            ("java.security.cert.CertificateRevokedException", TlsCertRevoked),
            ("java.security.cert.CertificateException", TlsCertInvalid),
            ("java.net.ProtocolException", HttpProtocolError),
            ("okhttp3.internal.http2.StreamResetException", HttpProtocolError),
            ("okhttp3.internal.http2.ConnectionShutdownException", TcpClosed),
            ("org.apache.http.conn.ConnectTimeoutException", TcpTimedOut),
            ("org.apache.http.conn.HttpHostConnectException", TcpRefused),
            ("io.ktor.client.plugins.HttpRequestTimeoutException", TcpTimedOut),
            ("java.util.concurrent.CancellationException", Abandoned),
            ("kotlinx.coroutines.JobCancellationException", Abandoned),
        ];
        for (name, expected) in cases {
            assert_eq!(java_exception(name), expected, "{name}");
            let simple = name.rsplit('.').next().unwrap_or(name);
            assert_eq!(java_exception(simple), expected, "{simple}");
        }
    }

    #[test]
    fn name_forms() {
        let cases = [
            ("UnknownHostException", DnsNameNotResolved),
            ("java/net/UnknownHostException", DnsNameNotResolved),
            ("Ljava/net/UnknownHostException;", DnsNameNotResolved),
            ("  java.net.ConnectException  ", TcpRefused),
            ("java.net.ConnectException: Connection refused", TcpRefused),
            ("java.net.ConnectException Connection refused", TcpRefused),
            ("com.example.Client$TimeoutException", Unknown),
            ("com.example.Http$SocketTimeoutException", TcpTimedOut),
            // The message is never read: this is a SocketException, whatever it says.
            ("java.net.SocketException: java.net.UnknownHostException", TcpFailed),
        ];
        for (name, expected) in cases {
            assert_eq!(java_exception(name), expected, "{name:?}");
        }
    }

    #[test]
    fn unknown_names_are_unknown() {
        for name in [
            "",
            " ",
            ".",
            "$",
            ":",
            "java.io.IOException",
            "java.lang.NullPointerException",
            "unknownhostexception",
            "UnknownHostExceptionX",
            "Ünknown",
            "例外",
        ] {
            assert_eq!(java_exception(name), Unknown, "{name:?}");
        }
    }

    #[test]
    fn chains_pick_the_most_specific_cause() {
        let cases: &[(&[&str], ErrorType)] = &[
            (&[], Unknown),
            (&["java.io.IOException"], Unknown),
            (
                &[
                    "javax.net.ssl.SSLHandshakeException",
                    "java.security.cert.CertificateException",
                    "java.security.cert.CertPathValidatorException",
                ],
                TlsCertAuthorityInvalid,
            ),
            (
                &[
                    "javax.net.ssl.SSLHandshakeException",
                    "java.security.cert.CertificateExpiredException",
                ],
                TlsCertDateInvalid,
            ),
            (&["javax.net.ssl.SSLHandshakeException", "java.io.EOFException"], TcpClosed),
            (
                &["javax.net.ssl.SSLHandshakeException", "java.security.cert.CertificateException"],
                TlsCertInvalid,
            ),
            (&["java.net.UnknownHostException", "android.system.GaiException"], DnsNameNotResolved),
            (&["java.io.IOException", "java.net.SocketException"], TcpFailed),
            // Equally specific: the root cause wins.
            (
                &[
                    "java.io.InterruptedIOException",
                    "java.net.SocketTimeoutException",
                    "java.net.ConnectException",
                ],
                TcpRefused,
            ),
        ];
        for (chain, expected) in cases {
            assert_eq!(&java_exception_chain(chain.iter().copied()), expected, "{chain:?}");
        }
    }

    #[test]
    fn chains_are_bounded() {
        let endless = std::iter::repeat("java.net.SocketException");
        assert_eq!(java_exception_chain(endless), TcpFailed);
    }

    proptest! {
        #[test]
        fn any_string_gives_a_label(name in any::<String>()) {
            prop_assert!(round_trips(&java_exception(&name)));
        }

        #[test]
        fn any_printable_string_gives_a_label(name in "\\PC{0,300}") {
            prop_assert!(round_trips(&java_exception(&name)));
        }

        #[test]
        fn any_chain_gives_a_label(chain in proptest::collection::vec(any::<String>(), 0..8)) {
            let t = java_exception_chain(chain.iter().map(String::as_str));
            prop_assert!(round_trips(&t));
        }

        #[test]
        fn a_package_prefix_never_changes_the_result(
            package in "[a-z]{1,8}(\\.[a-z]{1,8}){0,3}",
            index in 0..TABLE.len(),
        ) {
            let (simple, expected) = &TABLE[index];
            prop_assert_eq!(&java_exception(&format!("{package}.{simple}")), expected);
        }
    }

    #[test]
    fn huge_input_does_not_panic() {
        let huge = format!("{}UnknownHostException", "a.".repeat(1 << 20));
        assert_eq!(java_exception(&huge), DnsNameNotResolved);
    }
}
