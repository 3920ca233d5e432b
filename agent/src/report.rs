//! The report and batch model.
//!
//! A [`Report`] is one failure (or several identical ones, coalesced: see `count`). It carries
//! the service id and host of the failed request, never a path, query, user info, client IP,
//! resolver detail or traceroute. A [`Batch`] is what one envelope carries: the agent's public
//! key and sequence number, app information, reports, drop counts and per-target attempt counts.
//!
//! Values are parsed once, at the edge (`ServiceId::from_str`, `Host::parse`, `Host::from_url`,
//! `ReportBuilder::build`), and are valid from then on.

use core::fmt;
use core::str::FromStr;

use crate::drops::DropCounts;
use crate::entropy::Entropy;
use crate::taxonomy::{ErrorType, NetworkType, Phase, Scope};
use crate::wire::AgentPublicKey;

/// Milliseconds since the Unix epoch (UTC). The core never reads a clock: callers pass this in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    /// `self + ms`, saturating.
    pub fn plus_ms(self, ms: u64) -> UnixMillis {
        UnixMillis(self.0.saturating_add(ms))
    }

    /// Milliseconds from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: UnixMillis) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// What was wrong with a value given to the report model. Each variant names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// A service id must be 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    #[error("invalid service id {0:?}: use 1 to 64 characters of A-Z a-z 0-9 . _ -")]
    InvalidService(String),
    /// A host must be a DNS name or an IP address, without scheme, path, query or user info.
    #[error("invalid host {value:?}: {reason}")]
    InvalidHost {
        /// The value (truncated).
        value: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// An HTTP status must be 100..=599, and only application-phase reports carry one.
    #[error("invalid HTTP status {status}: {reason}")]
    InvalidStatus {
        /// The status given.
        status: u16,
        /// What was wrong.
        reason: &'static str,
    },
    /// An app field (id, version, platform, sdk) must be 1 to 64 printable characters.
    #[error("invalid app {field} {value:?}: use 1 to 64 printable characters")]
    InvalidApp {
        /// Which field.
        field: &'static str,
        /// The value (truncated).
        value: String,
    },
    /// A count must be at least 1.
    #[error("invalid count 0: a report stands for at least one failure")]
    ZeroCount,
    /// Successes cannot exceed attempts.
    #[error("invalid target counts: {successes} successes > {attempts} attempts")]
    SuccessesExceedAttempts {
        /// Attempts given.
        attempts: u64,
        /// Successes given.
        successes: u64,
    },
}

fn truncated(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A service id, chosen by the operator (`checkout`, `api.v2`). Low-cardinality by design.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId(String);

impl ServiceId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's text, without a copy.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl FromStr for ServiceId {
    type Err = ReportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if valid_service_id(s) {
            Ok(ServiceId(s.to_owned()))
        } else {
            Err(ReportError::InvalidService(truncated(s)))
        }
    }
}

impl ServiceId {
    /// [`ServiceId::from_str`] that keeps `s`'s allocation (the builder owns its text).
    pub(crate) fn from_string(s: String) -> Result<ServiceId, ReportError> {
        if valid_service_id(&s) {
            Ok(ServiceId(s))
        } else {
            Err(ReportError::InvalidService(truncated(&s)))
        }
    }
}

/// 1 to 64 of ASCII letters, digits, `.`, `_` and `-`.
fn valid_service_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The host of a failed request: a lower-case DNS name or an IP address, never a URL.
///
/// `Host::from_url` takes a whole URL and keeps only the host, dropping scheme, user info, port,
/// path, query and fragment, so a report can never carry them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Host(String);

impl Host {
    /// Parses a bare host: a DNS name (ASCII; use punycode for IDNs), an IPv4 address, or an
    /// IPv6 address (with or without brackets; stored without).
    pub fn parse(s: &str) -> Result<Host, ReportError> {
        match dns_name(s) {
            Some(name) => Ok(Host(name.to_ascii_lowercase())),
            None => Host::parse_other(s),
        }
    }

    /// What [`Host::parse`] does with anything [`dns_name`] did not take: IPv6 addresses, and
    /// the error that names what is wrong. (It takes every input, DNS names too: it is the
    /// whole of the function before the one-pass path, which the tests hold to it.)
    fn parse_other(s: &str) -> Result<Host, ReportError> {
        let err = |reason| ReportError::InvalidHost { value: truncated(s), reason };
        let trimmed = s.strip_suffix('.').unwrap_or(s);
        if trimmed.is_empty() {
            return Err(err("empty"));
        }
        let unbracketed = trimmed.strip_prefix('[').and_then(|r| r.strip_suffix(']'));
        if let Some(v6) = unbracketed.or(trimmed.contains(':').then_some(trimmed)) {
            return v6
                .parse::<std::net::Ipv6Addr>()
                .map(|ip| Host(ipv6_text(ip)))
                .map_err(|_| err("not a DNS name or IP address (a port, path or user info?)"));
        }
        if trimmed.len() > 253 {
            return Err(err("longer than 253 characters"));
        }
        if trimmed.bytes().any(|b| matches!(b, b'/' | b'?' | b'#' | b'@')) {
            return Err(err("contains a path, query, fragment or user info: give the host only"));
        }
        if !trimmed.is_ascii() {
            return Err(err("not ASCII: give internationalized names in punycode (xn--)"));
        }
        let lower = trimmed.to_ascii_lowercase();
        for label in lower.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(err("has an empty label or a label over 63 characters"));
            }
            if !label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(err("has characters other than letters, digits, '-', '_' and '.'"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(err("has a label that starts or ends with '-'"));
            }
        }
        Ok(Host(lower))
    }

    /// Takes the host out of a URL (or a bare `host[:port]`), dropping everything else.
    pub fn from_url(url: &str) -> Result<Host, ReportError> {
        // Byte scans for ASCII delimiters: every index found is a char boundary. (This runs on
        // the caller's thread in `record()`; `str` searchers cost more to set up than these
        // URLs take to scan.)
        let rest = match url.as_bytes().windows(3).position(|w| w == b"://") {
            Some(i) => &url[i + 3..],
            None => url,
        };
        let end = rest.bytes().position(|b| matches!(b, b'/' | b'?' | b'#'));
        let authority = &rest[..end.unwrap_or(rest.len())];
        let host_port = match authority.bytes().rposition(|b| b == b'@') {
            Some(i) => &authority[i + 1..],
            None => authority,
        };
        let host = if let Some(inner) = host_port.strip_prefix('[') {
            inner.split_once(']').map_or(inner, |(h, _)| h)
        } else {
            // One colon: `host:port`. None: a host. More: a bare IPv6 address.
            let mut colons = host_port.bytes().enumerate().filter(|&(_, b)| b == b':');
            match (colons.next(), colons.next()) {
                (Some((i, _)), None) => &host_port[..i],
                _ => host_port,
            }
        };
        Host::parse(host)
    }

    /// [`Host::from_url`] that keeps `url`'s allocation when it is already a bare lower-case
    /// DNS name, as most call sites pass.
    pub(crate) fn from_url_string(url: String) -> Result<Host, ReportError> {
        match dns_name(&url) {
            Some(name)
                if name.len() == url.len() && !url.bytes().any(|b| b.is_ascii_uppercase()) =>
            {
                Ok(Host(url))
            }
            _ => Host::from_url(&url),
        }
    }

    /// The host as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host's text, without a copy.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// `s` without one trailing `.`, when that is a DNS name [`Host::parse`] accepts as it is (up
/// to lower-casing): at most 253 bytes of labels of 1 to 63 ASCII letters, digits, `-` and `_`,
/// none starting or ending with `-`. `None` for anything else, valid or not (IPv6 addresses,
/// errors), which [`Host::parse_other`] takes. One pass, no allocation.
fn dns_name(s: &str) -> Option<&str> {
    fn label_ok(label: &[u8]) -> bool {
        (1..=63).contains(&label.len()) && label[0] != b'-' && label[label.len() - 1] != b'-'
    }
    let name = s.strip_suffix('.').unwrap_or(s);
    let bytes = name.as_bytes();
    if bytes.len() > 253 {
        return None;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'.' {
            if !label_ok(&bytes[start..i]) {
                return None;
            }
            start = i + 1;
        } else if !(b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return None;
        }
    }
    label_ok(&bytes[start..]).then_some(name)
}

/// `ip` as its `Display` writes it (RFC 5952: lower-case hex without leading zeros, the first
/// longest run of two or more zero groups as `::`, IPv4-mapped as `::ffff:a.b.c.d`), built
/// without `core::fmt` (see `crate::text`). A property test holds it to `Display`.
fn ipv6_text(ip: std::net::Ipv6Addr) -> String {
    use crate::text::{push_decimal, push_hex};
    let mut out = String::with_capacity(39);
    if let Some(v4) = ip.to_ipv4_mapped() {
        out.push_str("::ffff:");
        for (i, octet) in v4.octets().into_iter().enumerate() {
            if i > 0 {
                out.push('.');
            }
            push_decimal(&mut out, u32::from(octet));
        }
        return out;
    }
    let groups = ip.segments();
    // The first longest run of zero groups: (start, len).
    let (mut zeros, mut run) = ((0, 0), 0);
    for (i, &g) in groups.iter().enumerate() {
        run = if g == 0 { run + 1 } else { 0 };
        if run > zeros.1 {
            zeros = (i + 1 - run, run);
        }
    }
    let push_groups = |out: &mut String, groups: &[u16]| {
        for (i, &g) in groups.iter().enumerate() {
            if i > 0 {
                out.push(':');
            }
            push_hex(out, g);
        }
    };
    if zeros.1 > 1 {
        push_groups(&mut out, &groups[..zeros.0]);
        out.push_str("::");
        push_groups(&mut out, &groups[zeros.0 + zeros.1..]);
    } else {
        push_groups(&mut out, &groups);
    }
    out
}

impl FromStr for Host {
    type Err = ReportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Host::parse(s)
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A report's id (16 bytes), so duplicates can be recognised end to end.
///
/// Fresh ids ([`ReportId::new`]) start with the time they were made, so ids sort by time:
/// a collector's index of ids then grows at its end instead of being rewritten all over (see
/// the collector's `store::ids`). The collector accepts any 16 bytes; nothing relies on the
/// layout but the cost of indexing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReportId(pub [u8; 16]);

impl ReportId {
    /// A fresh id made at `now`: the time in milliseconds (48 bits, big-endian, as in a
    /// UUIDv7), then 80 random bits. The time is the report's own (it travels in the report
    /// anyway), so it tells nothing new; the random part keeps ids unique, also among the
    /// reports an app makes in one millisecond.
    pub fn new(now: UnixMillis, rng: &mut impl Entropy) -> ReportId {
        let mut id = [0u8; 16];
        id[..6].copy_from_slice(&now.0.to_be_bytes()[2..]);
        rng.fill(&mut id[6..]);
        ReportId(id)
    }

    /// An id of 128 random bits: what agents made before [`ReportId::new`]; the collector's
    /// benchmark sends such ids to measure what old agents cost.
    pub fn random(rng: &mut impl Entropy) -> ReportId {
        let mut id = [0u8; 16];
        rng.fill(&mut id);
        ReportId(id)
    }
}

impl fmt::Display for ReportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ReportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReportId({self})")
    }
}

/// The application protocol of the failed request, as far as it got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Protocol {
    /// Not known (for example, DNS failed before a protocol was chosen).
    #[default]
    Unknown,
    /// HTTP/1.1.
    Http1,
    /// HTTP/2.
    H2,
    /// HTTP/3.
    H3,
}

impl Protocol {
    /// Every value, in wire-code order.
    pub const ALL: [Protocol; 4] = [Protocol::Unknown, Protocol::Http1, Protocol::H2, Protocol::H3];

    /// The NEL label (`http/1.1`, `h2`, `h3`; empty when unknown).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Unknown => "",
            Protocol::Http1 => "http/1.1",
            Protocol::H2 => "h2",
            Protocol::H3 => "h3",
        }
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Protocol::Unknown => 0,
            Protocol::Http1 => 1,
            Protocol::H2 => 2,
            Protocol::H3 => 3,
        }
    }

    /// The protocol for a wire code; `None` if unknown to this version.
    pub fn from_code(code: u64) -> Option<Protocol> {
        Protocol::ALL.into_iter().find(|p| u64::from(p.code()) == code)
    }
}

/// One failure (or `count` identical ones) seen by the agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub(crate) id: ReportId,
    pub(crate) observed_at: UnixMillis,
    pub(crate) service: ServiceId,
    pub(crate) host: Host,
    pub(crate) phase: Phase,
    pub(crate) error_type: ErrorType,
    pub(crate) elapsed_ms: u32,
    pub(crate) protocol: Protocol,
    pub(crate) status: Option<u16>,
    pub(crate) network: NetworkType,
    pub(crate) scope: Scope,
    pub(crate) count: u32,
}

impl Report {
    /// Starts a report for `error_type` on `service` at `host` (a bare host or a URL: only the
    /// host is kept). Validation happens in [`ReportBuilder::build`].
    pub fn builder(service: &str, host: &str, error_type: ErrorType) -> ReportBuilder {
        Report::builder_owned(service.to_owned(), host.to_owned(), error_type)
    }

    /// [`Report::builder`] taking the text it keeps.
    pub(crate) fn builder_owned(
        service: String,
        host: String,
        error_type: ErrorType,
    ) -> ReportBuilder {
        ReportBuilder {
            service,
            host,
            phase: error_type.phase(),
            error_type,
            observed_at: None,
            elapsed_ms: 0,
            protocol: Protocol::Unknown,
            status: None,
            network: NetworkType::Unknown,
            scope: Scope::Unknown,
            count: 1,
        }
    }

    /// The report id (made with [`ReportId::new`] unless given).
    pub fn id(&self) -> ReportId {
        self.id
    }
    /// When the (first) failure was observed.
    pub fn observed_at(&self) -> UnixMillis {
        self.observed_at
    }
    /// The service id.
    pub fn service(&self) -> &ServiceId {
        &self.service
    }
    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }
    /// The service and the host, moved out of the report (a receiver that keeps them as text
    /// takes them without copying).
    pub fn into_service_and_host(self) -> (ServiceId, Host) {
        (self.service, self.host)
    }
    /// The phase of the failure.
    pub fn phase(&self) -> Phase {
        self.phase
    }
    /// The NEL type.
    pub fn error_type(&self) -> &ErrorType {
        &self.error_type
    }
    /// Milliseconds from the start of the request to the failure.
    pub fn elapsed_ms(&self) -> u32 {
        self.elapsed_ms
    }
    /// The protocol.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
    /// The HTTP status (application phase only).
    pub fn status(&self) -> Option<u16> {
        self.status
    }
    /// The network type.
    pub fn network(&self) -> NetworkType {
        self.network
    }
    /// Where the failure was (path, local, unknown).
    pub fn scope(&self) -> Scope {
        self.scope
    }
    /// How many identical failures this report stands for (coalescing), at least 1.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Sets the scope once the reachability check has answered.
    pub fn set_scope(&mut self, scope: Scope) {
        self.scope = scope;
    }

    /// Adds `n` more identical failures, saturating at `u32::MAX`.
    pub fn add_occurrences(&mut self, n: u32) {
        self.count = self.count.saturating_add(n);
    }
}

/// Builds a [`Report`]; every setter documents its default.
#[derive(Clone, Debug)]
#[must_use]
pub struct ReportBuilder {
    service: String,
    host: String,
    phase: Phase,
    error_type: ErrorType,
    observed_at: Option<UnixMillis>,
    elapsed_ms: u32,
    protocol: Protocol,
    status: Option<u16>,
    network: NetworkType,
    scope: Scope,
    count: u32,
}

impl ReportBuilder {
    /// When the failure was observed. Default: the `now` given to `build`.
    pub fn observed_at(mut self, at: UnixMillis) -> Self {
        self.observed_at = Some(at);
        self
    }
    /// The phase, when it differs from the type's own (NEL allows e.g. `tcp.*` types to be
    /// reported in the application phase). Default: `error_type.phase()`.
    pub fn phase(mut self, phase: Phase) -> Self {
        self.phase = phase;
        self
    }
    /// Milliseconds from request start to failure. Default: 0.
    pub fn elapsed_ms(mut self, ms: u32) -> Self {
        self.elapsed_ms = ms;
        self
    }
    /// The protocol. Default: unknown.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }
    /// The HTTP status, for application-phase reports. Default: none.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
    /// The network type. Default: unknown.
    pub fn network(mut self, network: NetworkType) -> Self {
        self.network = network;
        self
    }
    /// The scope. Default: unknown (not checked).
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = scope;
        self
    }
    /// How many identical failures this stands for. Default: 1.
    pub fn count(mut self, count: u32) -> Self {
        self.count = count;
        self
    }

    /// Validates and builds the report with a fresh id ([`ReportId::new`]).
    pub fn build(self, rng: &mut impl Entropy, now: UnixMillis) -> Result<Report, ReportError> {
        self.build_with_id(ReportId::new(now, rng), now)
    }

    /// Validates and builds the report with the given id (for replays and golden vectors).
    pub fn build_with_id(self, id: ReportId, now: UnixMillis) -> Result<Report, ReportError> {
        let service = ServiceId::from_string(self.service)?;
        let host = Host::from_url_string(self.host)?;
        check_status(self.phase, self.status)?;
        if self.count == 0 {
            return Err(ReportError::ZeroCount);
        }
        Ok(Report {
            id,
            observed_at: self.observed_at.unwrap_or(now),
            service,
            host,
            phase: self.phase,
            error_type: self.error_type,
            elapsed_ms: self.elapsed_ms,
            protocol: self.protocol,
            status: self.status,
            network: self.network,
            scope: self.scope,
            count: self.count,
        })
    }
}

pub(crate) fn check_status(phase: Phase, status: Option<u16>) -> Result<(), ReportError> {
    match status {
        None => Ok(()),
        Some(s) if !(100..=599).contains(&s) => {
            Err(ReportError::InvalidStatus { status: s, reason: "outside 100..=599" })
        }
        Some(s) if phase != Phase::Application => Err(ReportError::InvalidStatus {
            status: s,
            reason: "only application-phase reports carry a status",
        }),
        Some(_) => Ok(()),
    }
}

/// The app that sends reports. Every field: 1 to 64 printable characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppInfo {
    pub(crate) id: String,
    pub(crate) version: String,
    pub(crate) platform: String,
    pub(crate) sdk: String,
}

impl AppInfo {
    /// App id (`com.example.shop`), app version, platform (`android`, `ios`, `linux`, `web`) and
    /// SDK (`rust/0.1.0`).
    pub fn new(id: &str, version: &str, platform: &str, sdk: &str) -> Result<AppInfo, ReportError> {
        Ok(AppInfo {
            id: app_field("id", id)?,
            version: app_field("version", version)?,
            platform: app_field("platform", platform)?,
            sdk: app_field("sdk", sdk)?,
        })
    }

    /// App id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// App version.
    pub fn version(&self) -> &str {
        &self.version
    }
    /// Platform.
    pub fn platform(&self) -> &str {
        &self.platform
    }
    /// SDK name and version.
    pub fn sdk(&self) -> &str {
        &self.sdk
    }
}

pub(crate) fn app_field(field: &'static str, value: &str) -> Result<String, ReportError> {
    let ok = (1..=64).contains(&value.chars().count()) && !value.chars().any(char::is_control);
    if ok {
        Ok(value.to_owned())
    } else {
        Err(ReportError::InvalidApp { field, value: truncated(value) })
    }
}

/// Attempts and successes for one target, so the collector can compute failure ratios.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetCounts {
    pub(crate) service: ServiceId,
    pub(crate) host: Host,
    pub(crate) attempts: u64,
    pub(crate) successes: u64,
}

impl TargetCounts {
    /// Counts for one target; `successes <= attempts`.
    pub fn new(
        service: ServiceId,
        host: Host,
        attempts: u64,
        successes: u64,
    ) -> Result<TargetCounts, ReportError> {
        if successes > attempts {
            return Err(ReportError::SuccessesExceedAttempts { attempts, successes });
        }
        Ok(TargetCounts { service, host, attempts, successes })
    }

    /// The service id.
    pub fn service(&self) -> &ServiceId {
        &self.service
    }
    /// The host.
    pub fn host(&self) -> &Host {
        &self.host
    }
    /// Requests attempted (sampled).
    pub fn attempts(&self) -> u64 {
        self.attempts
    }
    /// Requests that succeeded (sampled).
    pub fn successes(&self) -> u64 {
        self.successes
    }
}

/// The sampling fractions in force when a batch's counts were taken, in parts per million, so
/// the collector can scale sampled counts into unbiased failure ratios:
/// ratio = F / (F + S) with F = failures / failure fraction and S = successes / success fraction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SampleRates {
    /// Fraction of failures that become reports, in millionths (1_000_000 = all).
    pub failure_ppm: u32,
    /// Fraction of successes that are counted, in millionths.
    pub success_ppm: u32,
}

impl SampleRates {
    /// Everything sampled (the default, and what an absent wire field means).
    pub const ALL: SampleRates = SampleRates { failure_ppm: 1_000_000, success_ppm: 1_000_000 };

    /// Rates from fractions in `0.0..=1.0` (out-of-range values are clamped, NaN counts as 0).
    pub fn from_fractions(failure: f64, success: f64) -> SampleRates {
        let ppm = |f: f64| if f.is_nan() { 0 } else { (f.clamp(0.0, 1.0) * 1e6).round() as u32 };
        SampleRates { failure_ppm: ppm(failure), success_ppm: ppm(success) }
    }
}

impl Default for SampleRates {
    fn default() -> Self {
        SampleRates::ALL
    }
}

/// What one envelope carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The agent's Ed25519 public key; the batch is signed with its private half.
    pub agent_key: AgentPublicKey,
    /// Per-agent sequence number, increasing; the collector's replay window uses it.
    pub seq: u64,
    /// When the batch was made (agent clock; the collector uses it only for report ages).
    pub created_at: UnixMillis,
    /// The app that sends it.
    pub app: AppInfo,
    /// The reports (at most [`crate::wire::MAX_REPORTS`]).
    pub reports: Vec<Report>,
    /// Reports dropped since the last batch, by reason.
    pub drops: DropCounts,
    /// Sampled attempt/success counts per target (at most [`crate::wire::MAX_TARGETS`]).
    pub targets: Vec<TargetCounts>,
    /// The sampling fractions the reports and target counts were taken with.
    pub sampling: SampleRates,
}

impl Batch {
    /// An empty batch.
    pub fn new(agent_key: AgentPublicKey, seq: u64, created_at: UnixMillis, app: AppInfo) -> Batch {
        Batch {
            agent_key,
            seq,
            created_at,
            app,
            reports: Vec::new(),
            drops: DropCounts::new(),
            targets: Vec::new(),
            sampling: SampleRates::ALL,
        }
    }

    /// With these reports.
    pub fn with_reports(mut self, reports: Vec<Report>) -> Batch {
        self.reports = reports;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SeededEntropy;

    #[test]
    fn fresh_ids_sort_by_the_time_they_were_made_and_stay_distinct() {
        let mut rng = SeededEntropy::insecure_from_seed([7; 32]);
        let mut ids: Vec<ReportId> = Vec::new();
        for t in [1_700_000_000_000u64, 1_700_000_000_001, 1_700_000_060_000] {
            let same_ms: Vec<ReportId> =
                (0..50).map(|_| ReportId::new(UnixMillis(t), &mut rng)).collect();
            assert!(same_ms.iter().all(|id| id.0[..6] == t.to_be_bytes()[2..]), "{same_ms:?}");
            ids.extend(same_ms);
        }
        // Later made, greater: whatever the random part.
        assert!(ids.windows(2).all(|w| w[0].0[..6] <= w[1].0[..6]));
        assert!(ids[..50].iter().all(|a| ids[50..].iter().all(|b| a < b)));
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "80 random bits per id");
        // The builder makes such ids.
        let report = Report::builder("checkout", "api.example.com", ErrorType::HttpError)
            .status(503)
            .build(&mut rng, UnixMillis(1_700_000_000_000))
            .unwrap();
        assert_eq!(report.id().0[..6], 1_700_000_000_000u64.to_be_bytes()[2..]);
    }

    #[test]
    fn hosts_keep_only_the_host() {
        let cases = [
            ("https://user:pw@API.Example.com:8443/v1/pay?card=1#x", "api.example.com"),
            ("api.example.com", "api.example.com"),
            ("api.example.com.", "api.example.com"),
            ("example.com:443", "example.com"),
            ("http://192.0.2.7/x", "192.0.2.7"),
            ("https://[2001:db8::1]:443/p", "2001:db8::1"),
            ("2001:DB8::1", "2001:db8::1"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ];
        for (input, want) in cases {
            assert_eq!(Host::from_url(input).unwrap().as_str(), want, "{input}");
        }
    }

    #[test]
    fn ipv6_hosts_are_written_as_display_writes_them() {
        for text in [
            "::",
            "::1",
            "1::",
            "2001:db8::",
            "2001:db8:0:1:1:1:1:1",
            "1:0:0:2:0:0:0:3",
            "0:0:1:0:0:1:0:0",
            "1:2:3:4:5:6:7:8",
            "::ffff:0.0.0.0",
            "::ffff:192.0.2.255",
            "::1.2.3.4",
            "ffff::abcd",
        ] {
            let ip: std::net::Ipv6Addr = text.parse().unwrap();
            assert_eq!(ipv6_text(ip), ip.to_string(), "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_ipv6_host_is_written_as_display_writes_it(groups: [u16; 8], zeros: u8) {
            // Zero runs of every length and place are what the compression rule is about.
            let mut groups = groups;
            for (i, g) in groups.iter_mut().enumerate() {
                if zeros & (1 << i) != 0 {
                    *g = 0;
                }
            }
            let ip = std::net::Ipv6Addr::from(groups);
            proptest::prop_assert_eq!(ipv6_text(ip), ip.to_string());
        }
    }

    /// `Host::parse` as it was before its one-pass scan: `Host::parse_other` takes every input
    /// and is the old function unchanged; the property test below holds the one-pass path to it.
    fn reference_parse(s: &str) -> Result<Host, ReportError> {
        Host::parse_other(s)
    }

    /// `Host::from_url` as it was before its byte scans.
    fn reference_from_url(url: &str) -> Result<Host, ReportError> {
        let rest = url.split_once("://").map_or(url, |(_, r)| r);
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = if let Some(inner) = host_port.strip_prefix('[') {
            inner.split_once(']').map_or(inner, |(h, _)| h)
        } else if host_port.matches(':').count() == 1 {
            host_port.split_once(':').map_or(host_port, |(h, _)| h)
        } else {
            host_port
        };
        reference_parse(host)
    }

    /// Text made of the pieces hosts and URLs are made of, and of what they must not contain.
    fn host_text() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::strategy::Strategy;
        let piece = proptest::sample::select(vec![
            "a",
            "Z",
            "0",
            "9",
            "-",
            "_",
            ".",
            ":",
            "/",
            "?",
            "#",
            "@",
            "[",
            "]",
            "://",
            "ü",
            " ",
            "%",
            "::",
            "1",
            "ff",
            "api",
            "EXAMPLE",
            "com",
            "xn--",
            "192.0.2.7",
            "2001:db8::1",
            "https://",
            "user:pw@",
            ":8443",
            "a-",
            "-a",
        ]);
        let long = proptest::sample::select(vec!["", "", "", "x", "y"])
            .prop_flat_map(|c| (0usize..70).prop_map(move |n| c.repeat(n)));
        proptest::collection::vec(proptest::prop_oneof![piece.prop_map(str::to_owned), long], 0..12)
            .prop_map(|parts| parts.concat())
    }

    fn same(a: &Result<Host, ReportError>, b: &Result<Host, ReportError>) -> bool {
        match (a, b) {
            (Ok(a), Ok(b)) => a == b,
            (Err(a), Err(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]
        #[test]
        fn one_pass_host_scans_match_the_reference(text in host_text()) {
            use proptest::prop_assert;
            let parsed = Host::parse(&text);
            prop_assert!(same(&parsed, &reference_parse(&text)), "parse {text:?}: {parsed:?}");
            let from_url = Host::from_url(&text);
            let want = reference_from_url(&text);
            prop_assert!(same(&from_url, &want), "from_url {text:?}: {from_url:?} vs {want:?}");
            let owned = Host::from_url_string(text.clone());
            prop_assert!(same(&owned, &want), "from_url_string {text:?}: {owned:?}");
            let service = ServiceId::from_string(text.clone());
            let want = text.parse::<ServiceId>();
            prop_assert!(
                match (&service, &want) {
                    (Ok(a), Ok(b)) => a == b,
                    (Err(a), Err(b)) => a.to_string() == b.to_string(),
                    _ => false,
                },
                "service {text:?}: {service:?}"
            );
        }
    }

    #[test]
    fn long_names_and_labels_at_their_limits() {
        let label = "a".repeat(63);
        let name = [&label[..], &label, &label, &"b".repeat(61)].join(".");
        assert_eq!(name.len(), 253);
        for text in [name.clone(), format!("{name}."), format!("{}x", name), format!("{label}b.c")]
        {
            assert!(same(&Host::parse(&text), &reference_parse(&text)), "{text}");
            assert!(same(&Host::from_url(&text), &reference_from_url(&text)), "{text}");
        }
        assert!(Host::parse(&name).is_ok());
        assert!(Host::parse(&format!("{name}x")).is_err());
        // A bare lower-case name keeps its allocation; anything else is copied from the URL.
        let text = String::from("api.example.com");
        let ptr = text.as_ptr();
        assert_eq!(Host::from_url_string(text).unwrap().as_str().as_ptr(), ptr);
        assert_eq!(
            Host::from_url_string("API.example.com".into()).unwrap().as_str(),
            "api.example.com"
        );
        assert_eq!(Host::from_url_string("example.com.".into()).unwrap().as_str(), "example.com");
    }

    #[test]
    fn bad_hosts_name_what_was_wrong() {
        for (input, fragment) in [
            ("", "empty"),
            ("bücher.example", "punycode"),
            ("a..b", "empty label"),
            ("-a.example", "'-'"),
            ("exa mple.com", "characters"),
            ("a/b", "path"),
        ] {
            let err = Host::parse(input).unwrap_err().to_string();
            assert!(err.contains(fragment), "{input}: {err}");
        }
        assert!(Host::parse(&"a".repeat(254)).is_err());
        assert!(Host::parse(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn service_ids() {
        assert!("checkout".parse::<ServiceId>().is_ok());
        assert!("api.v2_x-y".parse::<ServiceId>().is_ok());
        for bad in ["", "a b", "ü", &"x".repeat(65)] {
            let err = bad.parse::<ServiceId>().unwrap_err();
            assert!(err.to_string().contains("invalid service id"), "{err}");
        }
    }

    #[test]
    fn builder_validates_and_defaults() {
        let mut rng = SeededEntropy::insecure_from_seed([0; 32]);
        let now = UnixMillis(1_000);
        let r = Report::builder("svc", "https://a.example/x", ErrorType::TcpRefused)
            .build(&mut rng, now)
            .unwrap();
        assert_eq!(r.observed_at(), now);
        assert_eq!(r.phase(), Phase::Connection);
        assert_eq!(r.count(), 1);
        assert_eq!(r.host().as_str(), "a.example");
        let err = Report::builder("svc", "a.example", ErrorType::TcpRefused)
            .status(503)
            .build(&mut rng, now)
            .unwrap_err();
        assert!(err.to_string().contains("only application-phase"), "{err}");
        let err = Report::builder("svc", "a.example", ErrorType::HttpError)
            .status(700)
            .build(&mut rng, now)
            .unwrap_err();
        assert!(err.to_string().contains("100..=599"), "{err}");
        let err = Report::builder("svc", "a.example", ErrorType::HttpError)
            .count(0)
            .build(&mut rng, now)
            .unwrap_err();
        assert_eq!(err, ReportError::ZeroCount);
        let a = Report::builder("svc", "a.example", ErrorType::Unknown).build(&mut rng, now);
        let b = Report::builder("svc", "a.example", ErrorType::Unknown).build(&mut rng, now);
        assert_ne!(a.unwrap().id(), b.unwrap().id());
    }

    #[test]
    fn app_and_target_validation() {
        assert!(AppInfo::new("com.example", "1.2.3", "android", "rust/0.1").is_ok());
        let err = AppInfo::new("com.example", "", "android", "x").unwrap_err();
        assert!(err.to_string().contains("app version"), "{err}");
        let err = AppInfo::new("a\nb", "1", "android", "x").unwrap_err();
        assert!(err.to_string().contains("app id"), "{err}");
        let svc: ServiceId = "s".parse().unwrap();
        let host = Host::parse("h.example").unwrap();
        assert!(TargetCounts::new(svc.clone(), host.clone(), 3, 3).is_ok());
        assert!(TargetCounts::new(svc, host, 3, 4).is_err());
    }

    #[test]
    fn sample_rates_from_fractions() {
        assert_eq!(
            SampleRates::from_fractions(1.0, 0.25),
            SampleRates { failure_ppm: 1_000_000, success_ppm: 250_000 }
        );
        assert_eq!(
            SampleRates::from_fractions(f64::NAN, 7.0),
            SampleRates { failure_ppm: 0, success_ppm: 1_000_000 }
        );
    }

    #[test]
    fn occurrences_saturate() {
        let mut rng = SeededEntropy::insecure_from_seed([0; 32]);
        let mut r = Report::builder("svc", "a.example", ErrorType::TcpReset)
            .count(u32::MAX - 1)
            .build(&mut rng, UnixMillis(0))
            .unwrap();
        r.add_occurrences(5);
        assert_eq!(r.count(), u32::MAX);
    }
}
