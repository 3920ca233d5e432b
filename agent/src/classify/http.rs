//! HTTP status codes.

use crate::taxonomy::ErrorType;

/// The class of an HTTP status code (RFC 9110, section 15).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 1xx.
    Informational,
    /// 2xx.
    Success,
    /// 3xx.
    Redirection,
    /// 4xx.
    ClientError,
    /// 5xx.
    ServerError,
    /// Outside `100..=599`: not a valid status code.
    Invalid,
}

impl StatusClass {
    /// The class of `status`.
    pub fn of(status: u16) -> StatusClass {
        match status {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirection,
            400..=499 => StatusClass::ClientError,
            500..=599 => StatusClass::ServerError,
            _ => StatusClass::Invalid,
        }
    }

    /// True for 4xx and 5xx: the server answered, with an error.
    pub fn is_error(self) -> bool {
        matches!(self, StatusClass::ClientError | StatusClass::ServerError)
    }

    /// True for 5xx, the statuses that say the service itself is failing (the ones spike
    /// detection counts, as opposed to a client's bad request).
    pub fn is_server_error(self) -> bool {
        self == StatusClass::ServerError
    }
}

/// Classifies the status code of a response.
///
/// `None` for 1xx, 2xx and 3xx (not a failure); [`ErrorType::HttpError`] for 4xx and 5xx, as in
/// NEL; [`ErrorType::HttpResponseInvalid`] for a code outside `100..=599`, which no valid
/// response carries.
pub fn http_status(status: u16) -> Option<ErrorType> {
    match StatusClass::of(status) {
        StatusClass::Informational | StatusClass::Success | StatusClass::Redirection => None,
        StatusClass::ClientError | StatusClass::ServerError => Some(ErrorType::HttpError),
        StatusClass::Invalid => Some(ErrorType::HttpResponseInvalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::testutil::round_trips;
    use crate::taxonomy::Phase;
    use proptest::prelude::*;

    #[test]
    fn status_table() {
        let cases = [
            (0, Some(ErrorType::HttpResponseInvalid)),
            (99, Some(ErrorType::HttpResponseInvalid)),
            (100, None),
            (101, None),
            (200, None),
            (204, None),
            (299, None),
            (301, None),
            (304, None),
            (399, None),
            (400, Some(ErrorType::HttpError)),
            (404, Some(ErrorType::HttpError)),
            (429, Some(ErrorType::HttpError)),
            (499, Some(ErrorType::HttpError)),
            (500, Some(ErrorType::HttpError)),
            (503, Some(ErrorType::HttpError)),
            (599, Some(ErrorType::HttpError)),
            (600, Some(ErrorType::HttpResponseInvalid)),
            (999, Some(ErrorType::HttpResponseInvalid)),
            (u16::MAX, Some(ErrorType::HttpResponseInvalid)),
        ];
        for (status, expected) in cases {
            assert_eq!(http_status(status), expected, "{status}");
        }
    }

    #[test]
    fn classes() {
        assert_eq!(StatusClass::of(103), StatusClass::Informational);
        assert_eq!(StatusClass::of(201), StatusClass::Success);
        assert_eq!(StatusClass::of(308), StatusClass::Redirection);
        assert_eq!(StatusClass::of(418), StatusClass::ClientError);
        assert_eq!(StatusClass::of(504), StatusClass::ServerError);
        assert_eq!(StatusClass::of(42), StatusClass::Invalid);
        assert!(StatusClass::of(404).is_error());
        assert!(!StatusClass::of(404).is_server_error());
        assert!(StatusClass::of(502).is_server_error());
        assert!(!StatusClass::of(200).is_error());
        assert!(!StatusClass::of(1000).is_error());
    }

    proptest! {
        #[test]
        fn any_status_gives_an_application_label_or_none(status in any::<u16>()) {
            let class = StatusClass::of(status);
            match http_status(status) {
                None => prop_assert!(!class.is_error() && class != StatusClass::Invalid),
                Some(t) => {
                    prop_assert!(round_trips(&t));
                    prop_assert_eq!(t.phase(), Phase::Application);
                    prop_assert_eq!(t == ErrorType::HttpError, class.is_error());
                }
            }
        }
    }
}
