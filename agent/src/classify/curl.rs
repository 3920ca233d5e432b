//! curl `CURLcode` values (`curl/curl.h`).

use super::{Entry, find};
use crate::taxonomy::ErrorType;
use crate::taxonomy::ErrorType::{
    Abandoned, DnsNameNotResolved, HttpError, HttpProtocolError, HttpResponseInvalid,
    HttpResponseRedirectLoop, TcpAddressInvalid, TcpClosed, TcpFailed, TcpReset, TcpTimedOut,
    TlsBadClientAuthCert, TlsCertAuthorityInvalid, TlsCertNameInvalid,
    TlsCertPinnedKeyNotInCertChain, TlsCertRevoked, TlsFailed, TlsProtocolError,
    TlsVersionOrCipherMismatch,
};

/// Classifies a libcurl `CURLcode` (the return value of `curl_easy_perform`).
///
/// Several codes hide the cause a host may know better:
///
/// - 7 `CURLE_COULDNT_CONNECT` covers refused, unreachable and timed-out connects alike, so it
///   is [`ErrorType::TcpFailed`]; likewise 55 `SEND_ERROR` is `tcp.closed` and 56 `RECV_ERROR`
///   `tcp.reset` (their most common causes). A host that has `CURLINFO_OS_ERRNO` should
///   classify that with [`super::errno`] instead.
/// - 28 `CURLE_OPERATION_TIMEDOUT` is [`ErrorType::TcpTimedOut`] whichever phase ran out of
///   time (resolve, connect or transfer).
/// - 60 `CURLE_PEER_FAILED_VERIFICATION` covers every certificate failure since curl 7.62; it
///   is [`ErrorType::TlsCertAuthorityInvalid`], the most common one. 51 is that code's old
///   number (before 7.62 it meant peer verification, in practice a host name mismatch) and is
///   [`ErrorType::TlsCertNameInvalid`].
/// - 35 `CURLE_SSL_CONNECT_ERROR` is [`ErrorType::TlsProtocolError`]; local TLS setup codes
///   (engine, CA bundle and CRL files) are [`ErrorType::TlsFailed`].
/// - 96 `CURLE_QUIC_CONNECT_ERROR` and 97 `CURLE_PROXY` are [`ErrorType::TcpFailed`]: the
///   taxonomy has no QUIC or proxy types, and both are connection-phase failures.
///
/// Codes that are not network failures (0, bad options, local file and memory errors, FTP,
/// LDAP and SSH specifics) and unknown codes give the documented fallback
/// [`ErrorType::Unknown`].
pub fn curl(code: u32) -> ErrorType {
    lookup(code).map_or(ErrorType::Unknown, |entry| entry.2.clone())
}

/// The table row for `code`, if there is one.
pub(crate) fn lookup(code: u32) -> Option<&'static Entry<u32>> {
    find(TABLE, code)
}

static TABLE: &[Entry<u32>] = &[
    (5, "CURLE_COULDNT_RESOLVE_PROXY", DnsNameNotResolved),
    (6, "CURLE_COULDNT_RESOLVE_HOST", DnsNameNotResolved),
    (7, "CURLE_COULDNT_CONNECT", TcpFailed),
    (8, "CURLE_WEIRD_SERVER_REPLY", HttpResponseInvalid),
    (16, "CURLE_HTTP2", HttpProtocolError),
    (18, "CURLE_PARTIAL_FILE", TcpClosed),
    (22, "CURLE_HTTP_RETURNED_ERROR", HttpError),
    (28, "CURLE_OPERATION_TIMEDOUT", TcpTimedOut),
    (35, "CURLE_SSL_CONNECT_ERROR", TlsProtocolError),
    (42, "CURLE_ABORTED_BY_CALLBACK", Abandoned),
    (45, "CURLE_INTERFACE_FAILED", TcpAddressInvalid),
    (47, "CURLE_TOO_MANY_REDIRECTS", HttpResponseRedirectLoop),
    (51, "CURLE_OBSOLETE51", TlsCertNameInvalid),
    (52, "CURLE_GOT_NOTHING", HttpResponseInvalid),
    (53, "CURLE_SSL_ENGINE_NOTFOUND", TlsFailed),
    (54, "CURLE_SSL_ENGINE_SETFAILED", TlsFailed),
    (55, "CURLE_SEND_ERROR", TcpClosed),
    (56, "CURLE_RECV_ERROR", TcpReset),
    (58, "CURLE_SSL_CERTPROBLEM", TlsBadClientAuthCert),
    (59, "CURLE_SSL_CIPHER", TlsVersionOrCipherMismatch),
    (60, "CURLE_PEER_FAILED_VERIFICATION", TlsCertAuthorityInvalid),
    (61, "CURLE_BAD_CONTENT_ENCODING", HttpResponseInvalid),
    (64, "CURLE_USE_SSL_FAILED", TlsFailed),
    (66, "CURLE_SSL_ENGINE_INITFAILED", TlsFailed),
    (77, "CURLE_SSL_CACERT_BADFILE", TlsFailed),
    (80, "CURLE_SSL_SHUTDOWN_FAILED", TlsFailed),
    (82, "CURLE_SSL_CRL_BADFILE", TlsFailed),
    (83, "CURLE_SSL_ISSUER_ERROR", TlsCertAuthorityInvalid),
    (90, "CURLE_SSL_PINNEDPUBKEYNOTMATCH", TlsCertPinnedKeyNotInCertChain),
    (91, "CURLE_SSL_INVALIDCERTSTATUS", TlsCertRevoked),
    (92, "CURLE_HTTP2_STREAM", HttpProtocolError),
    (95, "CURLE_HTTP3", HttpProtocolError),
    (96, "CURLE_QUIC_CONNECT_ERROR", TcpFailed),
    (97, "CURLE_PROXY", TcpFailed),
    (98, "CURLE_SSL_CLIENTCERT", TlsBadClientAuthCert),
    (100, "CURLE_TOO_LARGE", HttpResponseInvalid),
    (101, "CURLE_ECH_REQUIRED", TlsFailed),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::testutil::{assert_unique_codes, round_trips};
    use crate::taxonomy::ErrorType::Unknown;
    use proptest::prelude::*;

    #[test]
    fn table_has_unique_codes_and_curle_names() {
        assert_unique_codes(TABLE);
        assert!(TABLE.iter().all(|e| e.1.starts_with("CURLE_")));
    }

    #[test]
    fn code_table() {
        let cases = [
            (5, DnsNameNotResolved),
            (6, DnsNameNotResolved),
            (7, TcpFailed),
            (8, HttpResponseInvalid),
            (16, HttpProtocolError),
            (18, TcpClosed),
            (22, HttpError),
            (28, TcpTimedOut),
            (35, TlsProtocolError),
            (42, Abandoned),
            (45, TcpAddressInvalid),
            (47, HttpResponseRedirectLoop),
            (51, TlsCertNameInvalid),
            (52, HttpResponseInvalid),
            (55, TcpClosed),
            (56, TcpReset),
            (58, TlsBadClientAuthCert),
            (59, TlsVersionOrCipherMismatch),
            (60, TlsCertAuthorityInvalid),
            (61, HttpResponseInvalid),
            (77, TlsFailed),
            (83, TlsCertAuthorityInvalid),
            (90, TlsCertPinnedKeyNotInCertChain),
            (91, TlsCertRevoked),
            (92, HttpProtocolError),
            (95, HttpProtocolError),
            (96, TcpFailed),
            (97, TcpFailed),
            (98, TlsBadClientAuthCert),
            (100, HttpResponseInvalid),
            (101, TlsFailed),
        ];
        for (code, expected) in cases {
            assert_eq!(curl(code), expected, "CURLcode {code}");
        }
    }

    #[test]
    fn non_network_and_unknown_codes_are_unknown() {
        // OK, UNSUPPORTED_PROTOCOL, URL_MALFORMAT, WRITE_ERROR, OUT_OF_MEMORY,
        // BAD_FUNCTION_ARGUMENT, LOGIN_DENIED, SSH, AGAIN, and codes past the last one.
        for code in [0, 1, 3, 23, 27, 43, 67, 79, 81, 102, 1000, u32::MAX] {
            assert_eq!(curl(code), Unknown, "CURLcode {code}");
        }
    }

    proptest! {
        #[test]
        fn any_code_gives_a_label(code in any::<u32>()) {
            prop_assert!(round_trips(&curl(code)));
        }
    }
}
