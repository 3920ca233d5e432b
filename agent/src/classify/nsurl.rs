//! Apple `NSURLErrorDomain` codes (`NSURLError.h`; the `kCFURLError*` codes are the same).

use super::{Entry, find};
use crate::taxonomy::ErrorType;
use crate::taxonomy::ErrorType::{
    Abandoned, DnsFailed, DnsNameNotResolved, HttpError, HttpResponseInvalid,
    HttpResponseRedirectLoop, TcpAddressUnreachable, TcpClosed, TcpFailed, TcpTimedOut,
    TlsBadClientAuthCert, TlsCertAuthorityInvalid, TlsCertDateInvalid, TlsFailed,
};

/// Classifies an `NSError` code in `NSURLErrorDomain` (URLSession, `NSURLConnection`).
///
/// Decisions for codes that hide their cause:
///
/// - `-1004` `NSURLErrorCannotConnectToHost` is [`ErrorType::TcpFailed`]: it covers refused
///   and unreachable alike. Its `NSUnderlyingErrorKey` usually holds an `NSPOSIXErrorDomain`
///   error; a host that has it should classify that with [`super::errno`] (Darwin flavour).
/// - `-1001` `NSURLErrorTimedOut` is [`ErrorType::TcpTimedOut`] whichever phase the request
///   timer expired in.
/// - `-1009` `NSURLErrorNotConnectedToInternet` and the cellular codes (`-1018` roaming off,
///   `-1019` call active, `-1020` data not allowed) are [`ErrorType::TcpAddressUnreachable`]:
///   the device has no route.
/// - `-1202` `NSURLErrorServerCertificateUntrusted` is
///   [`ErrorType::TlsCertAuthorityInvalid`], although Apple also reports a host name mismatch
///   with it; `-1203` (unknown root) is the same.
/// - `-1200` `NSURLErrorSecureConnectionFailed` is [`ErrorType::TlsFailed`].
/// - `-999` `NSURLErrorCancelled` is [`ErrorType::Abandoned`].
///
/// Codes that are not network failures (bad or unsupported URL, file and background-session
/// codes, App Transport Security refusals) and unknown codes give the documented fallback
/// [`ErrorType::Unknown`].
pub fn nsurl(code: i64) -> ErrorType {
    lookup(code).map_or(ErrorType::Unknown, |entry| entry.2.clone())
}

/// The table row for `code`, if there is one.
pub(crate) fn lookup(code: i64) -> Option<&'static Entry<i64>> {
    find(TABLE, code)
}

static TABLE: &[Entry<i64>] = &[
    (-999, "NSURLErrorCancelled", Abandoned),
    (-1001, "NSURLErrorTimedOut", TcpTimedOut),
    (-1003, "NSURLErrorCannotFindHost", DnsNameNotResolved),
    (-1004, "NSURLErrorCannotConnectToHost", TcpFailed),
    (-1005, "NSURLErrorNetworkConnectionLost", TcpClosed),
    (-1006, "NSURLErrorDNSLookupFailed", DnsFailed),
    (-1007, "NSURLErrorHTTPTooManyRedirects", HttpResponseRedirectLoop),
    (-1009, "NSURLErrorNotConnectedToInternet", TcpAddressUnreachable),
    (-1010, "NSURLErrorRedirectToNonExistentLocation", HttpResponseInvalid),
    (-1011, "NSURLErrorBadServerResponse", HttpResponseInvalid),
    (-1013, "NSURLErrorUserAuthenticationRequired", HttpError),
    (-1014, "NSURLErrorZeroByteResource", HttpResponseInvalid),
    (-1015, "NSURLErrorCannotDecodeRawData", HttpResponseInvalid),
    (-1016, "NSURLErrorCannotDecodeContentData", HttpResponseInvalid),
    (-1017, "NSURLErrorCannotParseResponse", HttpResponseInvalid),
    (-1018, "NSURLErrorInternationalRoamingOff", TcpAddressUnreachable),
    (-1019, "NSURLErrorCallIsActive", TcpAddressUnreachable),
    (-1020, "NSURLErrorDataNotAllowed", TcpAddressUnreachable),
    (-1200, "NSURLErrorSecureConnectionFailed", TlsFailed),
    (-1201, "NSURLErrorServerCertificateHasBadDate", TlsCertDateInvalid),
    (-1202, "NSURLErrorServerCertificateUntrusted", TlsCertAuthorityInvalid),
    (-1203, "NSURLErrorServerCertificateHasUnknownRoot", TlsCertAuthorityInvalid),
    (-1204, "NSURLErrorServerCertificateNotYetValid", TlsCertDateInvalid),
    (-1205, "NSURLErrorClientCertificateRejected", TlsBadClientAuthCert),
    (-1206, "NSURLErrorClientCertificateRequired", TlsBadClientAuthCert),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::testutil::{assert_unique_codes, round_trips};
    use crate::taxonomy::ErrorType::Unknown;
    use proptest::prelude::*;

    #[test]
    fn table_has_unique_codes() {
        assert_unique_codes(TABLE);
        assert!(TABLE.iter().all(|e| e.1.starts_with("NSURLError")));
    }

    #[test]
    fn code_table() {
        let cases = [
            (-1003, DnsNameNotResolved),
            (-1006, DnsFailed),
            (-1004, TcpFailed),
            (-1001, TcpTimedOut),
            (-1005, TcpClosed),
            (-1009, TcpAddressUnreachable),
            (-1018, TcpAddressUnreachable),
            (-1019, TcpAddressUnreachable),
            (-1020, TcpAddressUnreachable),
            (-1200, TlsFailed),
            (-1201, TlsCertDateInvalid),
            (-1204, TlsCertDateInvalid),
            (-1202, TlsCertAuthorityInvalid),
            (-1203, TlsCertAuthorityInvalid),
            (-1205, TlsBadClientAuthCert),
            (-1206, TlsBadClientAuthCert),
            (-999, Abandoned),
            (-1007, HttpResponseRedirectLoop),
            (-1010, HttpResponseInvalid),
            (-1011, HttpResponseInvalid),
            (-1013, HttpError),
            (-1014, HttpResponseInvalid),
            (-1015, HttpResponseInvalid),
            (-1016, HttpResponseInvalid),
            (-1017, HttpResponseInvalid),
        ];
        for (code, expected) in cases {
            assert_eq!(nsurl(code), expected, "NSURLError {code}");
        }
    }

    #[test]
    fn non_network_and_unknown_codes_are_unknown() {
        // Unknown, BadURL, UnsupportedURL, ResourceUnavailable, RequestBodyStreamExhausted,
        // AppTransportSecurityRequiresSecureConnection, FileDoesNotExist, CannotLoadFromNetwork.
        for code in [-1, -1000, -1002, -1008, -1021, -1022, -1100, -2000, 0, 1003] {
            assert_eq!(nsurl(code), Unknown, "NSURLError {code}");
        }
        assert_eq!(nsurl(i64::MIN), Unknown);
        assert_eq!(nsurl(i64::MAX), Unknown);
    }

    proptest! {
        #[test]
        fn any_code_gives_a_label(code in any::<i64>()) {
            prop_assert!(round_trips(&nsurl(code)));
        }
    }
}
