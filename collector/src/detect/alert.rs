//! Alerts: what the detector raises, their identity and their lifecycle states.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::slice::SliceKey;
use super::stats::fnv1a64;

/// A stable alert identity: a hash of the slice and the start bucket, so every detector that
/// sees the same incident in the same slice names it the same way (and a fleet pages once).
///
/// Serialised as 16 lower-case hex digits (a JSON number would lose precision in JavaScript).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AlertId(pub u64);

impl Serialize for AlertId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AlertId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for AlertId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("alert id {s:?} is not 16 lower-case hex digits"));
        }
        u64::from_str_radix(s, 16).map(AlertId).map_err(|e| format!("alert id {s:?}: {e}"))
    }
}

impl AlertId {
    /// The identity of an alert of `kind` on `slice` starting in bucket `start_bucket`.
    pub fn derive(slice: &SliceKey, kind: AlertKind, start_bucket: u64) -> AlertId {
        AlertId(fnv1a64(&[
            slice.identity().as_bytes(),
            kind.as_str().as_bytes(),
            &start_bucket.to_be_bytes(),
        ]))
    }
}

impl fmt::Display for AlertId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// What an alert says happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// The slice's failure ratio (or failing networks) is far above its baseline.
    Failures,
    /// The slice's usual reporters went quiet (heartbeat volume far below its baseline).
    Silence,
    /// Late reports showed a past failure spike (for example a last-mile outage that ended
    /// and flushed its buffered reports). Never a current page.
    Retrospective,
}

impl AlertKind {
    /// Stable label (`failures`, `silence`, `retrospective`).
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Failures => "failures",
            AlertKind::Silence => "silence",
            AlertKind::Retrospective => "retrospective",
        }
    }
}

/// Lifecycle state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Still going on.
    Firing,
    /// Over (`end_ms` is set).
    Resolved,
}

/// One alert.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable identity (slice + kind + start bucket).
    pub id: AlertId,
    /// The affected slice.
    pub slice: SliceKey,
    /// Failures, silence or retrospective.
    pub kind: AlertKind,
    /// Firing or resolved.
    pub state: AlertState,
    /// Start of the incident (event time, ms since the epoch, collector clock).
    pub start_ms: u64,
    /// End of the incident, once resolved.
    pub end_ms: Option<u64>,
    /// When the detector raised it (detector time).
    pub raised_at_ms: u64,
    /// The firing alert that inhibits this one: the service-wide alert for a child slice, or,
    /// for a silent ASN, the same ASN's silence alert in another service. Such alerts are
    /// delivered to nobody, only shown.
    pub inhibited_by: Option<AlertId>,
    /// Evidence: `-ln p` of the test that fired (larger is stronger).
    pub score: f64,
    /// Observed mean per-client failure ratio when raised (0 for silence and count tests).
    pub observed_ratio: f64,
    /// Baseline mean per-client failure ratio.
    pub baseline_ratio: f64,
    /// Distinct failing clients (silence: active clients) at the peak.
    pub clients: u64,
    /// Distinct failing networks (silence: active networks) at the peak.
    pub networks: u64,
    /// Distinct active clients in the slice when raised (silence: the baseline expectation).
    pub active_clients: u64,
    /// Failure-type group (`dns`, `tcp`, `tls`, `http`, `other`, `unreported`) to count.
    pub breakdown: BTreeMap<String, u64>,
    /// ASNs with the most failing clients.
    pub top_asns: Vec<(u32, u64)>,
    /// Countries with the most failing clients.
    pub top_countries: Vec<(String, u64)>,
    /// The alert whose incident this one took over: a wider slice (the service over an ASN or
    /// a country, a country over an ASN) fired in an incident a narrower slice had paged for,
    /// and explains more of the excess, so it heads the incident from now on and the earlier
    /// alert (and everything grouped under it) is grouped under this one. Its notification
    /// is an update of that incident, not a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supersedes: Option<AlertId>,
}

impl Alert {
    /// True when the alert should be delivered (not inhibited by a parent alert).
    pub fn notifies(&self) -> bool {
        self.inhibited_by.is_none()
    }
}

/// What [`Detector::advance`](super::Detector::advance) reports.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", content = "alert", rename_all = "snake_case")]
pub enum AlertEvent {
    /// A new alert (page it unless [`Alert::inhibited_by`] is set).
    Fired(Alert),
    /// A firing alert ended.
    Resolved(Alert),
    /// A past incident found in late data: record and show it, never page.
    Retrospective(Alert),
    /// A firing alert was grouped under another: a wider alert took over the incident it
    /// headed or belonged to ([`Alert::supersedes`]), so it carries the new head in
    /// [`Alert::inhibited_by`]. Its own event, raised right after the new head's
    /// [`AlertEvent::Fired`], so whatever keeps the latest state of each alert (the store,
    /// the dashboard's recent list) stops showing the old head as the one that notifies.
    /// Record and show it, never page (it is inhibited).
    Regrouped(Alert),
}

impl AlertEvent {
    /// The alert the event is about.
    pub fn alert(&self) -> &Alert {
        match self {
            AlertEvent::Fired(a)
            | AlertEvent::Resolved(a)
            | AlertEvent::Retrospective(a)
            | AlertEvent::Regrouped(a) => a,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::slice::SliceDim;

    #[test]
    fn ids_are_stable_and_differ_by_slice_kind_and_start() {
        let s = SliceKey::new("shop", SliceDim::Asn(64500));
        let id = AlertId::derive(&s, AlertKind::Failures, 100);
        assert_eq!(id, AlertId::derive(&s.clone(), AlertKind::Failures, 100));
        assert_ne!(id, AlertId::derive(&s, AlertKind::Failures, 101));
        assert_ne!(id, AlertId::derive(&s, AlertKind::Silence, 100));
        assert_ne!(id, AlertId::derive(&SliceKey::service("shop"), AlertKind::Failures, 100));
        assert_eq!(id.to_string().len(), 16);
        assert_eq!(id.to_string().parse::<AlertId>(), Ok(id));
        assert!("00000000000000zz".parse::<AlertId>().unwrap_err().contains("hex"));
        assert!("1".parse::<AlertId>().is_err());
    }

    #[test]
    fn events_serialise_with_their_alert() {
        let alert = Alert {
            id: AlertId(1),
            slice: SliceKey::service("shop"),
            kind: AlertKind::Failures,
            state: AlertState::Firing,
            start_ms: 10,
            end_ms: None,
            raised_at_ms: 20,
            inhibited_by: None,
            score: 30.0,
            observed_ratio: 0.5,
            baseline_ratio: 0.01,
            clients: 40,
            networks: 30,
            active_clients: 80,
            breakdown: BTreeMap::from([("tcp".to_owned(), 12)]),
            top_asns: vec![(64500, 20)],
            top_countries: vec![("DE".to_owned(), 20)],
            supersedes: None,
        };
        let event = AlertEvent::Fired(alert.clone());
        let json = serde_json::to_string(&event).unwrap();
        assert!(
            json.starts_with(r#"{"event":"fired","alert":{"id":"0000000000000001","#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<AlertEvent>(&json).unwrap(), event);
        assert!(event.alert().notifies());
    }
}
