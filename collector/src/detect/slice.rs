//! Slices: the subsets of traffic the detector watches (a service, and the service split by
//! failure group, ASN and country).

use std::fmt;

use serde::{Deserialize, Serialize};
use vantage_agent::taxonomy::ErrorType;

/// The coarse failure groups that get their own slices (see `ErrorType::group`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureGroup {
    /// Name resolution.
    Dns,
    /// TCP connect and transport.
    Tcp,
    /// TLS handshake and certificates.
    Tls,
    /// HTTP exchange and error statuses.
    Http,
}

impl FailureGroup {
    /// Every group, in index order.
    pub const ALL: [FailureGroup; 4] =
        [FailureGroup::Dns, FailureGroup::Tcp, FailureGroup::Tls, FailureGroup::Http];

    /// The stable label (`dns`, `tcp`, `tls`, `http`).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureGroup::Dns => "dns",
            FailureGroup::Tcp => "tcp",
            FailureGroup::Tls => "tls",
            FailureGroup::Http => "http",
        }
    }

    /// The group of an error type; `None` for types outside the four groups (`abandoned`,
    /// `unknown`, unknown labels).
    pub fn of(error_type: &ErrorType) -> Option<FailureGroup> {
        match error_type.group() {
            "dns" => Some(FailureGroup::Dns),
            "tcp" => Some(FailureGroup::Tcp),
            "tls" => Some(FailureGroup::Tls),
            "http" => Some(FailureGroup::Http),
            _ => None,
        }
    }

    /// Index into per-group arrays: 0..4 for the groups; [`OTHER_GROUP`] is 4.
    pub(crate) fn index(self) -> usize {
        match self {
            FailureGroup::Dns => 0,
            FailureGroup::Tcp => 1,
            FailureGroup::Tls => 2,
            FailureGroup::Http => 3,
        }
    }
}

/// Index of "other" failures in per-group arrays.
pub(crate) const OTHER_GROUP: usize = 4;

/// Label of a per-group array index.
pub(crate) fn group_label(index: usize) -> &'static str {
    FailureGroup::ALL.get(index).map_or("other", |g| g.as_str())
}

/// Which cut of a service's traffic a slice is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum SliceDim {
    /// All of the service's traffic.
    Service,
    /// Failures of one group, against all of the service's attempts.
    Group(FailureGroup),
    /// Clients in one autonomous system.
    Asn(u32),
    /// Clients in one country (ISO 3166-1 alpha-2, upper case).
    Country(String),
}

/// One slice: a service and a cut of its traffic.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SliceKey {
    /// The monitored service.
    pub service: String,
    /// The cut.
    pub dim: SliceDim,
}

impl SliceKey {
    /// The whole-service slice of `service`.
    pub fn service(service: &str) -> SliceKey {
        SliceKey { service: service.to_owned(), dim: SliceDim::Service }
    }

    /// The slice of `service` in `dim`.
    pub fn new(service: &str, dim: SliceDim) -> SliceKey {
        SliceKey { service: service.to_owned(), dim }
    }

    /// The slice that inhibits this one: the whole service, for every other cut.
    pub fn parent(&self) -> Option<SliceKey> {
        match self.dim {
            SliceDim::Service => None,
            _ => Some(SliceKey::service(&self.service)),
        }
    }

    /// Stable bytes for hashing into an alert identity.
    pub(crate) fn identity(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for SliceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dim {
            SliceDim::Service => write!(f, "{}", self.service),
            SliceDim::Group(g) => write!(f, "{}/group={}", self.service, g.as_str()),
            SliceDim::Asn(asn) => write!(f, "{}/asn={asn}", self.service),
            SliceDim::Country(c) => write!(f, "{}/country={c}", self.service),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_the_taxonomy() {
        assert_eq!(FailureGroup::of(&ErrorType::DnsTimedOut), Some(FailureGroup::Dns));
        assert_eq!(FailureGroup::of(&ErrorType::TcpReset), Some(FailureGroup::Tcp));
        assert_eq!(FailureGroup::of(&ErrorType::TlsCertDateInvalid), Some(FailureGroup::Tls));
        assert_eq!(FailureGroup::of(&ErrorType::HttpError), Some(FailureGroup::Http));
        assert_eq!(FailureGroup::of(&ErrorType::Abandoned), None);
        for (i, g) in FailureGroup::ALL.iter().enumerate() {
            assert_eq!(g.index(), i);
            assert_eq!(group_label(i), g.as_str());
        }
        assert_eq!(group_label(OTHER_GROUP), "other");
    }

    #[test]
    fn keys_display_parent_and_serialise() {
        let k = SliceKey::new("shop", SliceDim::Asn(64500));
        assert_eq!(k.to_string(), "shop/asn=64500");
        assert_eq!(k.parent(), Some(SliceKey::service("shop")));
        assert_eq!(SliceKey::service("shop").parent(), None);
        let c = SliceKey::new("shop", SliceDim::Country("DE".into()));
        assert_eq!(c.to_string(), "shop/country=DE");
        let g = SliceKey::new("shop", SliceDim::Group(FailureGroup::Tls));
        assert_eq!(g.to_string(), "shop/group=tls");
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(json, r#"{"service":"shop","dim":{"kind":"group","value":"tls"}}"#);
        assert_eq!(serde_json::from_str::<SliceKey>(&json).unwrap(), g);
    }
}
