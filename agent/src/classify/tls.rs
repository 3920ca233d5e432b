//! rustls errors (feature `rustls`).

use rustls::{AlertDescription, CertificateError, Error};

use crate::taxonomy::ErrorType;

/// Classifies a [`rustls::Error`] from a client connection.
///
/// - Certificate errors ([`Error::InvalidCertificate`]): expired or not yet valid →
///   `tls.cert.date_invalid`; unknown issuer → `tls.cert.authority_invalid`; wrong name →
///   `tls.cert.name_invalid`; revoked → `tls.cert.revoked`; anything else (bad encoding or
///   signature, wrong purpose, unknown revocation status, custom verifier errors) →
///   `tls.cert.invalid`. A server that sends no certificate is `tls.cert.invalid` too.
/// - [`Error::PeerIncompatible`] → `tls.version_or_cipher_mismatch`.
/// - Alerts from the server ([`Error::AlertReceived`]): `handshake_failure`,
///   `protocol_version`, `insufficient_security`, `inappropriate_fallback` and
///   `no_application_protocol` (nothing in common could be negotiated) →
///   `tls.version_or_cipher_mismatch`; the certificate alerts (`bad_certificate`,
///   `certificate_required`, `unknown_ca`, `access_denied`, ...) → `tls.bad_client_auth_cert`,
///   since a client receiving them is being told that *its* certificate was refused;
///   `decode_error`, `unexpected_message`, `illegal_parameter` and the other malformed-record
///   alerts → `tls.protocol.error`.
/// - The peer broke the protocol ([`Error::InvalidMessage`], [`Error::PeerMisbehaved`],
///   [`Error::InappropriateMessage`], [`Error::InappropriateHandshakeMessage`],
///   [`Error::PeerSentOversizedRecord`], [`Error::DecryptError`]) → `tls.protocol.error`: a
///   middlebox, or not TLS at all.
/// - Everything else (local configuration, clock, randomness, custom errors) gives the
///   documented fallback [`ErrorType::TlsFailed`].
pub fn rustls_error(err: &Error) -> ErrorType {
    match err {
        Error::InvalidCertificate(cert) => certificate_error(cert),
        Error::NoCertificatesPresented => ErrorType::TlsCertInvalid,
        Error::PeerIncompatible(_) => ErrorType::TlsVersionOrCipherMismatch,
        Error::AlertReceived(alert) => alert_received(*alert),
        Error::NoApplicationProtocol => ErrorType::TlsVersionOrCipherMismatch,
        Error::InvalidMessage(_)
        | Error::PeerMisbehaved(_)
        | Error::InappropriateMessage { .. }
        | Error::InappropriateHandshakeMessage { .. }
        | Error::PeerSentOversizedRecord
        | Error::DecryptError => ErrorType::TlsProtocolError,
        _ => ErrorType::TlsFailed,
    }
}

fn certificate_error(err: &CertificateError) -> ErrorType {
    match err {
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => ErrorType::TlsCertDateInvalid,
        CertificateError::UnknownIssuer => ErrorType::TlsCertAuthorityInvalid,
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            ErrorType::TlsCertNameInvalid
        }
        CertificateError::Revoked => ErrorType::TlsCertRevoked,
        _ => ErrorType::TlsCertInvalid,
    }
}

fn alert_received(alert: AlertDescription) -> ErrorType {
    use AlertDescription as A;
    match alert {
        A::HandshakeFailure
        | A::ProtocolVersion
        | A::InsufficientSecurity
        | A::InappropriateFallback
        | A::NoApplicationProtocol => ErrorType::TlsVersionOrCipherMismatch,
        A::BadCertificate
        | A::UnsupportedCertificate
        | A::CertificateRevoked
        | A::CertificateExpired
        | A::CertificateUnknown
        | A::UnknownCA
        | A::AccessDenied
        | A::NoCertificate
        | A::CertificateRequired => ErrorType::TlsBadClientAuthCert,
        A::UnexpectedMessage
        | A::BadRecordMac
        | A::RecordOverflow
        | A::DecompressionFailure
        | A::IllegalParameter
        | A::DecodeError
        | A::DecryptError
        | A::MissingExtension
        | A::UnsupportedExtension => ErrorType::TlsProtocolError,
        _ => ErrorType::TlsFailed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::testutil::round_trips;
    use crate::classify::{error_chain, io_error};
    use crate::taxonomy::ErrorType::*;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::{ContentType, HandshakeType, InvalidMessage, PeerIncompatible, PeerMisbehaved};
    use std::io;
    use std::time::Duration;

    fn time(secs: u64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(secs))
    }

    fn cert(e: CertificateError) -> Error {
        Error::InvalidCertificate(e)
    }

    #[test]
    fn certificate_errors() {
        let name = ServerName::try_from("api.example.com").expect("a valid DNS name");
        let cases = [
            (cert(CertificateError::Expired), TlsCertDateInvalid),
            (
                cert(CertificateError::ExpiredContext {
                    time: time(2_000_000_000),
                    not_after: time(1_900_000_000),
                }),
                TlsCertDateInvalid,
            ),
            (cert(CertificateError::NotValidYet), TlsCertDateInvalid),
            (
                cert(CertificateError::NotValidYetContext {
                    time: time(1_000_000_000),
                    not_before: time(1_100_000_000),
                }),
                TlsCertDateInvalid,
            ),
            (cert(CertificateError::UnknownIssuer), TlsCertAuthorityInvalid),
            (cert(CertificateError::NotValidForName), TlsCertNameInvalid),
            (
                cert(CertificateError::NotValidForNameContext {
                    expected: name.to_owned(),
                    presented: vec!["other.example.com".into()],
                }),
                TlsCertNameInvalid,
            ),
            (cert(CertificateError::Revoked), TlsCertRevoked),
            (cert(CertificateError::BadSignature), TlsCertInvalid),
            (cert(CertificateError::BadEncoding), TlsCertInvalid),
            (cert(CertificateError::UnhandledCriticalExtension), TlsCertInvalid),
            (cert(CertificateError::UnknownRevocationStatus), TlsCertInvalid),
            (cert(CertificateError::InvalidPurpose), TlsCertInvalid),
            (cert(CertificateError::ApplicationVerificationFailure), TlsCertInvalid),
            (
                cert(CertificateError::Other(rustls::OtherError(std::sync::Arc::new(
                    io::Error::other("custom verifier"),
                )))),
                TlsCertInvalid,
            ),
            (Error::NoCertificatesPresented, TlsCertInvalid),
        ];
        for (err, expected) in cases {
            assert_eq!(rustls_error(&err), expected, "{err:?}");
        }
    }

    #[test]
    fn negotiation_and_protocol_errors() {
        let cases = [
            (
                Error::PeerIncompatible(PeerIncompatible::NoCipherSuitesInCommon),
                TlsVersionOrCipherMismatch,
            ),
            (
                Error::PeerIncompatible(PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig),
                TlsVersionOrCipherMismatch,
            ),
            (Error::NoApplicationProtocol, TlsVersionOrCipherMismatch),
            (Error::InvalidMessage(InvalidMessage::InvalidContentType), TlsProtocolError),
            (
                Error::PeerMisbehaved(PeerMisbehaved::IllegalMiddleboxChangeCipherSpec),
                TlsProtocolError,
            ),
            (
                Error::InappropriateMessage {
                    expect_types: vec![ContentType::Handshake],
                    got_type: ContentType::ApplicationData,
                },
                TlsProtocolError,
            ),
            (
                Error::InappropriateHandshakeMessage {
                    expect_types: vec![HandshakeType::ServerHello],
                    got_type: HandshakeType::Finished,
                },
                TlsProtocolError,
            ),
            (Error::PeerSentOversizedRecord, TlsProtocolError),
            (Error::DecryptError, TlsProtocolError),
        ];
        for (err, expected) in cases {
            assert_eq!(rustls_error(&err), expected, "{err:?}");
        }
    }

    #[test]
    fn alerts() {
        use AlertDescription as A;
        let cases = [
            (A::HandshakeFailure, TlsVersionOrCipherMismatch),
            (A::ProtocolVersion, TlsVersionOrCipherMismatch),
            (A::InsufficientSecurity, TlsVersionOrCipherMismatch),
            (A::InappropriateFallback, TlsVersionOrCipherMismatch),
            (A::NoApplicationProtocol, TlsVersionOrCipherMismatch),
            (A::BadCertificate, TlsBadClientAuthCert),
            (A::CertificateRequired, TlsBadClientAuthCert),
            (A::UnsupportedCertificate, TlsBadClientAuthCert),
            (A::CertificateRevoked, TlsBadClientAuthCert),
            (A::CertificateExpired, TlsBadClientAuthCert),
            (A::CertificateUnknown, TlsBadClientAuthCert),
            (A::UnknownCA, TlsBadClientAuthCert),
            (A::AccessDenied, TlsBadClientAuthCert),
            (A::DecodeError, TlsProtocolError),
            (A::UnexpectedMessage, TlsProtocolError),
            (A::IllegalParameter, TlsProtocolError),
            (A::BadRecordMac, TlsProtocolError),
            (A::RecordOverflow, TlsProtocolError),
            (A::InternalError, TlsFailed),
            (A::UserCanceled, TlsFailed),
            (A::CloseNotify, TlsFailed),
            (A::UnrecognisedName, TlsFailed),
            (A::Unknown(0xee), TlsFailed),
        ];
        for (alert, expected) in cases {
            assert_eq!(rustls_error(&Error::AlertReceived(alert)), expected, "{alert:?}");
        }
    }

    #[test]
    fn everything_else_is_tls_failed() {
        for err in [
            Error::General("oops".into()),
            Error::FailedToGetCurrentTime,
            Error::FailedToGetRandomBytes,
            Error::HandshakeNotComplete,
            Error::EncryptError,
            Error::BadMaxFragmentSize,
            Error::UnsupportedNameType,
            Error::Other(rustls::OtherError(std::sync::Arc::new(io::Error::other("provider")))),
        ] {
            assert_eq!(rustls_error(&err), TlsFailed, "{err:?}");
        }
    }

    /// tokio-rustls reports TLS failures as `io::Error::new(InvalidData, rustls::Error)`.
    #[test]
    fn rustls_errors_inside_io_errors() {
        let err = io::Error::new(io::ErrorKind::InvalidData, cert(CertificateError::UnknownIssuer));
        assert_eq!(io_error(&err), TlsCertAuthorityInvalid);
        let outer = io::Error::other(err);
        assert_eq!(io_error(&outer), TlsCertAuthorityInvalid);
        assert_eq!(error_chain(&outer), Some(TlsCertAuthorityInvalid));
        let err = Error::AlertReceived(AlertDescription::HandshakeFailure);
        assert_eq!(error_chain(&err), Some(TlsVersionOrCipherMismatch));
    }

    #[test]
    fn labels_round_trip() {
        for alert in 0..=u8::MAX {
            let t = rustls_error(&Error::AlertReceived(AlertDescription::from(alert)));
            assert!(round_trips(&t) && t.is_tls(), "{alert}: {t}");
        }
    }
}
