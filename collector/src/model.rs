//! The collector's data model: what is stored after a report has been accepted.
//!
//! Every accepted report, from an agent envelope or from a browser's Network Error Logging
//! upload, becomes one [`StoredReport`]; success/attempt counts become [`StoredTargets`]. Both
//! carry what detection needs (event time, client and network identity, ASN, country) and
//! nothing that identifies a person: the source IP is turned into an [`Enrichment`] and a
//! keyed, truncated [`NetTag`] of its /24 (IPv4) or /48 (IPv6) prefix, then dropped.

use std::fmt;
use std::net::IpAddr;

use ring::hmac;
use vantage_agent::drops::DropReason;
use vantage_agent::report::UnixMillis;
use vantage_agent::taxonomy::{ErrorType, NetworkType, Phase, Scope};

/// Where a stored report came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// A signed, sealed envelope from a Vantage agent.
    Agent,
    /// A browser Network Error Logging report (unauthenticated).
    Nel,
}

impl Source {
    /// Stable label (`agent`, `nel`), used in metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Agent => "agent",
            Source::Nel => "nel",
        }
    }
}

/// A two-letter ISO 3166-1 country code, upper case.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// Parses a two-letter code (any case); `None` for anything else.
    pub fn parse(code: &str) -> Option<Country> {
        let b = code.as_bytes();
        if b.len() == 2 && b.iter().all(u8::is_ascii_alphabetic) {
            Some(Country([b[0].to_ascii_uppercase(), b[1].to_ascii_uppercase()]))
        } else {
            None
        }
    }

    /// The code as a string slice.
    pub fn as_str(&self) -> &str {
        // Invariant: both bytes are ASCII letters (checked in `parse`).
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Country({})", self.as_str())
    }
}

/// What the source IP told us, kept after the IP itself is dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Enrichment {
    /// Autonomous system number of the source address, when known.
    pub asn: Option<u32>,
    /// Country of the source address, when known.
    pub country: Option<Country>,
}

/// A pseudonymous tag for the source network (/24 for IPv4, /48 for IPv6).
///
/// It is an HMAC-SHA256 of the prefix under a per-deployment secret, truncated to 64 bits, so
/// detection can count distinct networks without the collector keeping any address. Equal
/// prefixes give equal tags under the same secret; without the secret a tag cannot be turned
/// back into a prefix by enumeration.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetTag(pub u64);

impl fmt::Debug for NetTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NetTag({:016x})", self.0)
    }
}

/// The secret that keys [`NetTag`]s. Shared by the collectors of one deployment.
#[derive(Clone)]
pub struct NetTagKey(hmac::Key);

impl NetTagKey {
    /// A key from 32 secret bytes (from the collector config).
    pub fn new(secret: &[u8; 32]) -> NetTagKey {
        NetTagKey(hmac::Key::new(hmac::HMAC_SHA256, secret))
    }

    /// The tag of the /24 (IPv4) or /48 (IPv6) that `ip` belongs to.
    ///
    /// IPv4-mapped IPv6 addresses are treated as the IPv4 address they carry.
    pub fn tag(&self, ip: IpAddr) -> NetTag {
        let mut input = [0u8; 7];
        let prefix: &[u8] = match ip.to_canonical() {
            IpAddr::V4(v4) => {
                input[0] = 4;
                input[1..4].copy_from_slice(&v4.octets()[..3]);
                &input[..4]
            }
            IpAddr::V6(v6) => {
                input[0] = 6;
                input[1..7].copy_from_slice(&v6.octets()[..6]);
                &input[..7]
            }
        };
        let sig = hmac::sign(&self.0, prefix);
        let mut first = [0u8; 8];
        first.copy_from_slice(&sig.as_ref()[..8]);
        NetTag(u64::from_be_bytes(first))
    }
}

impl fmt::Debug for NetTagKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetTagKey(..)")
    }
}

/// Who sent a report: the agent's public key, or nothing for browser NEL reports.
pub type ClientKey = [u8; 32];

/// The stand-in client key of browser (NEL) counts from network `net`: NEL is
/// unauthenticated, so the browsers behind one network tag are one client, and the detector
/// files these counts with that network's failure reports (which carry no key).
pub fn nel_client_key(net: NetTag) -> ClientKey {
    let mut key = [0u8; 32];
    key[..16].copy_from_slice(b"vantage-nel-net\0");
    key[16..24].copy_from_slice(&net.0.to_be_bytes());
    key
}

/// One accepted failure report, as stored and as fed to detection.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredReport {
    /// The report's id (agent: as the agent made it, `ReportId::new`; NEL: derived from the
    /// upload digest and index).
    pub id: [u8; 16],
    /// When the collector accepted it (collector clock).
    pub received_at: UnixMillis,
    /// Event time on the collector's clock: `received_at` minus the report's age at sending
    /// (batch `created_at` minus report `observed_at`; NEL `age`), so client clock skew does not
    /// matter.
    pub event_at: UnixMillis,
    /// Agent envelope or browser NEL.
    pub source: Source,
    /// The monitored service (agent: its service id; NEL: the origin's host).
    pub service: String,
    /// Host name the client tried to reach (never a path, query or user info).
    pub host: String,
    /// NEL phase.
    pub phase: Phase,
    /// NEL type.
    pub error_type: ErrorType,
    /// Time until the failure, in milliseconds.
    pub elapsed_ms: u32,
    /// HTTP status for application-phase failures.
    pub status: Option<u16>,
    /// Network the client was on.
    pub network: NetworkType,
    /// Where the failure was (path, local, unknown).
    pub scope: Scope,
    /// How many failures this report stands for (coalescing), at least 1.
    pub count: u32,
    /// Sampling rate the client applied to failures, in parts per million (1_000_000 = all).
    pub sample_ppm: u32,
    /// The agent's public key; `None` for NEL.
    pub client: Option<ClientKey>,
    /// Pseudonymous source network.
    pub net: NetTag,
    /// ASN and country of the source address.
    pub enrichment: Enrichment,
}

impl StoredReport {
    /// The attempt count a browser (NEL) failure report stands for, as a [`StoredTargets`] of
    /// its network's stand-in client ([`nel_client_key`]): 1 / its sampling fraction attempts
    /// ([`scale_up`]), no successes, at the report's own times, service, host, network and
    /// enrichment. `None` for an agent report.
    ///
    /// Everything in it is in the report, so the store keeps only the report and derives
    /// these counts when it reads them back (see the store's "NEL counts" docs).
    pub fn nel_targets(&self) -> Option<StoredTargets> {
        (self.source == Source::Nel).then(|| StoredTargets {
            received_at: self.received_at,
            event_at: self.event_at,
            service: self.service.clone(),
            host: self.host.clone(),
            attempts: scale_up(1, self.sample_ppm),
            successes: 0,
            client: nel_client_key(self.net),
            net: self.net,
            enrichment: self.enrichment.clone(),
        })
    }

    /// True if `t` is exactly [`StoredReport::nel_targets`] of this report (compared field by
    /// field, without building it).
    pub fn has_nel_targets(&self, t: &StoredTargets) -> bool {
        self.source == Source::Nel
            && t.event_at == self.event_at
            && t.received_at == self.received_at
            && t.successes == 0
            && t.attempts == scale_up(1, self.sample_ppm)
            && t.net == self.net
            && t.client == nel_client_key(self.net)
            && t.service == self.service
            && t.host == self.host
            && t.enrichment == self.enrichment
    }
}

/// `count` samples taken at `ppm` parts per million, as an estimate of the occurrences they
/// stand for: `count / (ppm / 10^6)`, rounded to the nearest integer, saturating. A rate of 0
/// cannot have produced a sample; a sender that claims one anyway gets its count taken as is.
/// The one place the collector undoes sampling: agent target counts (`scaled_counts` in the
/// ingest path) and NEL entries ([`StoredReport::nel_targets`]) both use it, and the detector
/// weighs a failure report by the same rule (`count * 10^6 / sample_ppm`).
pub fn scale_up(count: u64, ppm: u32) -> u64 {
    if ppm == 0 || ppm >= 1_000_000 {
        return count;
    }
    let ppm = u128::from(ppm);
    let scaled = (u128::from(count) * 1_000_000 + ppm / 2) / ppm;
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// Success and attempt counts an agent sent for one target (for failure ratios).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTargets {
    /// When the collector accepted them.
    pub received_at: UnixMillis,
    /// Start of the counting window on the collector's clock (see [`StoredReport::event_at`]).
    pub event_at: UnixMillis,
    /// Monitored service.
    pub service: String,
    /// Host.
    pub host: String,
    /// Requests attempted.
    pub attempts: u64,
    /// Requests that succeeded.
    pub successes: u64,
    /// The agent's public key.
    pub client: ClientKey,
    /// Pseudonymous source network.
    pub net: NetTag,
    /// ASN and country of the source address.
    pub enrichment: Enrichment,
}

/// Where an [`IngestBatch`] came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// An agent envelope (signed). Its digest is kept for the dedup horizon under its
    /// `created_at` (the agent's clock, from the signed envelope: a re-send carries the same),
    /// so the store's digest index grows in time order.
    Agent {
        /// The agent's public key.
        key: ClientKey,
        /// The envelope's sequence number.
        seq: u64,
        /// When the agent made the envelope (its clock).
        created_at: UnixMillis,
    },
    /// A browser's NEL upload (unauthenticated): its digest makes a re-send of the same bytes a
    /// duplicate within a window (the store's `recent.rs`).
    Nel,
}

/// Everything one accepted upload (an agent envelope or a NEL POST) adds to the store.
///
/// The store commits it atomically: either all of it is on disk, or none.
#[derive(Clone, Debug, PartialEq)]
pub struct IngestBatch {
    /// SHA-256 of the uploaded bytes (agent: the envelope digest from `Opener::open`).
    pub digest: [u8; 32],
    /// Who sent it, which decides how long its digest makes a re-send a duplicate.
    pub origin: Origin,
    /// Reports.
    pub reports: Vec<StoredReport>,
    /// Success/attempt counts.
    pub targets: Vec<StoredTargets>,
    /// Reports the agent dropped before this batch, by reason (its "no silent loss" counts;
    /// empty for NEL). Added to the store's totals exactly once, with the batch.
    pub agent_drops: Vec<(DropReason, u64)>,
    /// The app whose agent sent `agent_drops` (its app id; empty for NEL), for the per-app
    /// totals (bounded: see [`Store::agent_drops_by_app`](crate::store::Store::agent_drops_by_app)).
    pub agent_app: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_tags_group_by_prefix() {
        let key = NetTagKey::new(&[7; 32]);
        let a = key.tag("192.0.2.1".parse().unwrap());
        assert_eq!(a, key.tag("192.0.2.254".parse().unwrap()));
        assert_ne!(a, key.tag("192.0.3.1".parse().unwrap()));
        assert_eq!(a, key.tag("::ffff:192.0.2.9".parse().unwrap()));
        let v6 = key.tag("2001:db8:1:2::1".parse().unwrap());
        assert_eq!(v6, key.tag("2001:db8:1:ffff::1".parse().unwrap()));
        assert_ne!(v6, key.tag("2001:db8:2::1".parse().unwrap()));
        assert_ne!(a, NetTagKey::new(&[8; 32]).tag("192.0.2.1".parse().unwrap()));
    }

    #[test]
    fn countries_parse_two_letters_only() {
        assert_eq!(Country::parse("de").unwrap().as_str(), "DE");
        assert!(Country::parse("DEU").is_none());
        assert!(Country::parse("1A").is_none());
    }
}
