//! Browser Network Error Logging uploads (`POST /v1/nel`, `application/reports+json`).
//!
//! A browser that has a [NEL policy] for an origin queues a report for each failed (and, if
//! asked, successful) request and uploads them through the [Reporting API] as a JSON array:
//!
//! ```json
//! [{"age": 1200, "type": "network-error", "url": "https://shop.example/cart?id=7",
//!   "user_agent": "Mozilla/5.0 ...",
//!   "body": {"sampling_fraction": 1.0, "server_ip": "192.0.2.1", "protocol": "http/1.1",
//!            "method": "GET", "status_code": 500, "elapsed_time": 38, "phase": "application",
//!            "type": "http.error", "referrer": "https://shop.example/"}}]
//! ```
//!
//! [`parse_upload`] turns each `network-error` entry into a [`NelEntry`] and keeps only what
//! detection needs: the origin's host, phase, type, elapsed time, HTTP status (application
//! phase only), sampling rate and the report's age. The ingest path maps entries to stored
//! reports (`ingest::accept`, beside the agent batch mapping), with the event time on the
//! collector's clock. The URL's path,
//! query, fragment, port and user info, the server IP, the user agent, the referrer, the method
//! and the protocol are read past and never stored. NEL's own privacy rule (drop path and query
//! for `dns` and `connection` failures) therefore holds for every phase.
//!
//! Choices that others will ask about:
//! - **Scope** is [`Scope::Unknown`](vantage_agent::taxonomy::Scope::Unknown): the browser delivers reports after the fact, possibly
//!   minutes later and over another network, so reaching the collector says nothing about
//!   where the failure was (unlike the agent's reachability check that sets `Path`/`Local`).
//! - **Network** is [`NetworkType::Unknown`](vantage_agent::taxonomy::NetworkType::Unknown); **client** is `None` (NEL is unauthenticated).
//! - **Ids** are the first 16 bytes of SHA-256(SHA-256(network tag ‖ body) ‖ index as u32
//!   big-endian), so an upload replayed from the same /24 yields the same ids (and the store
//!   drops it by its digest), two entries of one upload never share an id, and byte-identical
//!   bodies from browsers on different networks (one page's `ok` reports often are) all count.
//! - Entries of another Reporting API type (`deprecation`, `csp-violation`, ...) are skipped
//!   and counted, not refused: one browser upload may mix report types. NEL success reports
//!   (`type: "ok"`) are kept as [`NelOk`]: they become success counts, scaled up by their
//!   sampling fraction, so browser traffic has failure ratios.
//! - **Service** is what [`NelServices`] maps the host to: a configured host pattern, else the
//!   registrable domain (`missing.nel.test` belongs to `nel.test`), with a cap on how many
//!   services unknown domains can mint.
//! - One malformed `network-error` entry refuses the whole upload with an error that names the
//!   field (`reports[2].body.type: missing`): a browser that sends such a thing is broken or
//!   hostile, and a partial accept would hide it.
//!
//! [NEL policy]: https://w3c.github.io/network-error-logging/
//! [Reporting API]: https://w3c.github.io/reporting/

mod json;

use json::{Body, Entry, Lite, ReadError, Upload};
use vantage_agent::report::Host;
use vantage_agent::taxonomy::{ErrorType, Phase};

/// At most this many entries (of any type) in one upload.
pub const MAX_REPORTS_PER_UPLOAD: usize = 100;

/// Longest `url` accepted, in bytes (only its host is kept).
pub const MAX_URL_BYTES: usize = 8192;

/// Longest `phase` or `type` label accepted, in bytes.
const MAX_LABEL_BYTES: usize = 64;

/// Why a NEL upload was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NelError {
    /// The body is not a NEL report list.
    #[error("malformed NEL upload: {0}")]
    Malformed(String),
}

impl NelError {
    /// Stable label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            NelError::Malformed(_) => "malformed",
        }
    }
}

/// One `network-error` failure entry, as the browser sent it (privacy rules applied).
#[derive(Clone, Debug, PartialEq)]
pub struct NelEntry {
    /// Position of the entry in the upload (part of its report id).
    pub index: usize,
    /// Milliseconds between the failure and the upload (`age`).
    pub age_ms: u64,
    /// The origin's host; nothing else of the URL.
    pub host: Host,
    /// NEL phase.
    pub phase: Phase,
    /// NEL type.
    pub error_type: ErrorType,
    /// HTTP status, application phase only.
    pub status: Option<u16>,
    /// `elapsed_time`, saturated.
    pub elapsed_ms: u32,
    /// `sampling_fraction` in parts per million, in `1..=1_000_000`.
    pub sample_ppm: u32,
}

/// One `network-error` success entry (`type: "ok"`): it counts as an attempt that succeeded,
/// scaled up by its sampling rate, so browser traffic has failure ratios.
#[derive(Clone, Debug, PartialEq)]
pub struct NelOk {
    /// Position of the entry in the upload.
    pub index: usize,
    /// Milliseconds between the request and the upload (`age`).
    pub age_ms: u64,
    /// The origin's host; nothing else of the URL.
    pub host: Host,
    /// `sampling_fraction` in parts per million, in `1..=1_000_000`.
    pub sample_ppm: u32,
}

/// One parsed upload: the failure entries, the success entries and what was skipped.
#[derive(Clone, Debug, PartialEq)]
pub struct NelUpload {
    /// One entry per `network-error` failure, in upload order.
    pub entries: Vec<NelEntry>,
    /// One entry per `network-error` success (`type: "ok"`), in upload order.
    pub ok: Vec<NelOk>,
    /// Entries skipped because they are not `network-error` reports (other Reporting API types).
    pub other_types: usize,
    /// `network-error` success entries (`type: "ok"`): not failure reports, counted in `ok`.
    pub successes: usize,
}

/// A parsed `network-error` entry.
enum Parsed {
    Failure(NelEntry),
    Ok(NelOk),
}

/// At most this many JSON tokens (`{`, `[`, `:` and `,` outside strings) in one upload: a
/// browser's network-error entry has about 35, so 100 entries of any report type fit easily,
/// while the reader stops at the bound on a body of tiny values.
pub const MAX_JSON_TOKENS: usize = 8192;

/// Parses one upload: the failure entries, and counts of the entries that were skipped.
///
/// The size of the upload (entries, tokens) is checked while reading it, so every input up to
/// the body limit costs at most one pass over its bytes.
pub fn parse_upload(body: &[u8]) -> Result<NelUpload, NelError> {
    // One pass into the few fields read, borrowing strings from the body (no value tree):
    // the whole body is read and checked as JSON first, exactly as a `serde_json::Value`
    // would be (syntax errors win over field errors), then the entries are read in order.
    // The reader stops at the token and entry bounds, so every body up to the size limit
    // costs at most one bounded pass.
    let Upload(entries) =
        json::read(body, MAX_JSON_TOKENS, MAX_REPORTS_PER_UPLOAD).map_err(|e| match e {
            // The message names line and column only, never the input.
            ReadError::NotJson(e) => NelError::Malformed(format!("reports: not JSON ({e})")),
            ReadError::Tokens => {
                malformed("reports", &format!("more than {MAX_JSON_TOKENS} JSON tokens"))
            }
            ReadError::Entries => {
                malformed("reports", &format!("more than {MAX_REPORTS_PER_UPLOAD} entries"))
            }
        })?;
    let Some(entries) = entries else {
        return Err(malformed("reports", "not an array"));
    };
    debug_assert!(entries.len() <= MAX_REPORTS_PER_UPLOAD, "the reader stops at the bound");
    let mut upload =
        NelUpload { entries: Vec::new(), ok: Vec::new(), other_types: 0, successes: 0 };
    for (index, entry) in entries.iter().enumerate() {
        let at = Field::Entry(index);
        let Some(entry) = entry else {
            return Err(malformed(&at.to_string(), "not an object"));
        };
        if string(entry.ty.as_ref(), at, "type")? != "network-error" {
            upload.other_types += 1;
            continue;
        }
        match parse_entry(entry, index)? {
            Parsed::Failure(entry) => upload.entries.push(entry),
            Parsed::Ok(ok) => {
                upload.successes += 1;
                upload.ok.push(ok);
            }
        }
    }
    Ok(upload)
}

/// One `network-error` entry, a failure or a success.
fn parse_entry(entry: &Entry<'_>, index: usize) -> Result<Parsed, NelError> {
    let at = Field::Entry(index);
    let age_ms = non_negative(entry.age.as_ref(), at, "age")?;
    let url = string(entry.url.as_ref(), at, "url")?;
    let host = origin_host(url).map_err(|reason| malformed(&format!("{at}.url"), reason))?;
    let body_at = Field::Body(index);
    let body = match &entry.body {
        Some(Lite::Body(body)) => body,
        Some(_) => return Err(malformed(&body_at.to_string(), "not an object")),
        None => return Err(malformed(&body_at.to_string(), "missing")),
    };

    let type_label = label(body.ty.as_ref(), body_at, "type")?;
    if type_label == "ok" {
        let sample_ppm = sampling(body, body_at)?;
        return Ok(Parsed::Ok(NelOk { index, age_ms, host, sample_ppm }));
    }
    let error_type = ErrorType::from_label(type_label)
        .map_err(|_| malformed(&format!("{body_at}.type"), "not a NEL type label"))?;
    let phase: Phase = label(body.phase.as_ref(), body_at, "phase")?.parse().map_err(|_| {
        malformed(&format!("{body_at}.phase"), "not dns, connection or application")
    })?;

    let sample_ppm = sampling(body, body_at)?;

    let elapsed = non_negative(body.elapsed_time.as_ref(), body_at, "elapsed_time")?;
    let elapsed_ms = u32::try_from(elapsed).unwrap_or(u32::MAX);

    let status = match &body.status_code {
        None | Some(Lite::Null) => 0,
        Some(v) => v.as_u64().filter(|s| *s <= 999).ok_or_else(|| {
            malformed(&format!("{body_at}.status_code"), "not an integer 0..=999")
        })?,
    };
    let status =
        (phase == Phase::Application && (100..=599).contains(&status)).then_some(status as u16);

    Ok(Parsed::Failure(NelEntry {
        index,
        age_ms,
        host,
        phase,
        error_type,
        status,
        elapsed_ms,
        sample_ppm,
    }))
}

/// `sampling_fraction` in parts per million.
fn sampling(body: &Body<'_>, body_at: Field) -> Result<u32, NelError> {
    let fraction = number(body.sampling_fraction.as_ref(), body_at, "sampling_fraction")?;
    if fraction <= 0.0 || fraction > 1.0 {
        return Err(malformed(&format!("{body_at}.sampling_fraction"), "not in (0, 1]"));
    }
    // Invariant: fraction is in (0, 1], so the product is in (0, 1e6] and fits a u32.
    Ok(((fraction * 1_000_000.0).round() as u32).clamp(1, 1_000_000))
}

/// Service of browser reports whose host maps to no configured service once
/// [`NelServices`] has minted its maximum of services from unknown domains.
pub const OTHER_SERVICE: &str = "nel-other";

/// Services minted from unknown domains by default (see [`NelServices::new`]).
pub const DEFAULT_MAX_MINTED: usize = 100;

/// One configured mapping: reports for `hosts` belong to service `id`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NelServiceRule {
    /// Service id the reports are filed under.
    pub id: String,
    /// Host patterns: `shop.example` (that host) or `*.shop.example` (its subdomains).
    pub hosts: Vec<String>,
}

/// Maps the host of a browser report to a service: the first configured rule whose pattern
/// matches, else the host's registrable domain (public suffix list; an IP literal stays
/// itself), so `missing.nel.test` and `www.nel.test` land in the series of `nel.test`.
///
/// Unknown domains cannot mint services without bound: past `max_minted` distinct ones, reports
/// go to [`OTHER_SERVICE`] and are counted ([`NelServices::refused`]).
#[derive(Debug)]
pub struct NelServices {
    rules: Vec<(String, Vec<String>)>,
    max_minted: usize,
    minted: std::sync::Mutex<std::collections::BTreeSet<String>>,
    refused: std::sync::atomic::AtomicU64,
}

impl Default for NelServices {
    fn default() -> Self {
        NelServices {
            rules: Vec::new(),
            max_minted: DEFAULT_MAX_MINTED,
            minted: std::sync::Mutex::default(),
            refused: std::sync::atomic::AtomicU64::new(0),
        }
    }
}

impl NelServices {
    /// The map of `rules` (checked: ids and patterns must be non-empty host names, a
    /// wildcard only as a leading `*.`), minting at most `max_minted` unknown services.
    /// The error names the rule and the pattern.
    pub fn new(rules: &[NelServiceRule], max_minted: usize) -> Result<NelServices, String> {
        let mut out = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            if rule.id.trim().is_empty() {
                return Err(format!("nel.services[{i}].id: empty"));
            }
            if rule.hosts.is_empty() {
                return Err(format!("nel.services[{i}].hosts: empty (give at least one host)"));
            }
            let mut patterns = Vec::new();
            for h in &rule.hosts {
                let bare = h.strip_prefix("*.").unwrap_or(h);
                let valid = !bare.is_empty()
                    && !bare.contains('*')
                    && Host::parse(bare)
                        .is_ok_and(|host| host.as_str() == bare.to_ascii_lowercase());
                if !valid {
                    return Err(format!(
                        "nel.services[{i}].hosts: {h:?} is not a host name or *.host name pattern"
                    ));
                }
                patterns.push(h.to_ascii_lowercase());
            }
            out.push((rule.id.clone(), patterns));
        }
        Ok(NelServices { rules: out, max_minted, ..NelServices::default() })
    }

    /// The service of a report for `host`.
    pub fn service_for(&self, host: &str) -> String {
        // Hosts from `parse_upload` are lower case already: a copy only for one that is not.
        let lowered;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lowered = host.to_ascii_lowercase();
            lowered.as_str()
        } else {
            host
        };
        for (id, patterns) in &self.rules {
            let hit = patterns.iter().any(|p| match p.strip_prefix("*.") {
                Some(domain) => {
                    host.len() > domain.len() + 1
                        && host.ends_with(domain)
                        && host.as_bytes()[host.len() - domain.len() - 1] == b'.'
                }
                None => *p == host,
            });
            if hit {
                return id.clone();
            }
        }
        let domain = crate::domains::registrable_domain(host).unwrap_or_else(|| host.to_owned());
        let mut minted = self.minted.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if minted.contains(&domain) {
            return domain;
        }
        if minted.len() < self.max_minted {
            minted.insert(domain.clone());
            return domain;
        }
        self.refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OTHER_SERVICE.to_owned()
    }

    /// Reports filed under [`OTHER_SERVICE`] because the minting cap was reached.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The host of an `http(s)` URL; everything else of the URL is dropped.
fn origin_host(url: &str) -> Result<Host, &'static str> {
    if url.len() > MAX_URL_BYTES {
        return Err("longer than 8192 bytes");
    }
    let lower_scheme = url.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    if !(lower_scheme.starts_with("https://") || lower_scheme.starts_with("http://")) {
        return Err("not an http or https URL");
    }
    Host::from_url(url).map_err(|_| "has no valid host")
}

fn malformed(field: &str, reason: &str) -> NelError {
    NelError::Malformed(format!("{field}: {reason}"))
}

/// Where a field is, for error messages: `reports[2]` or `reports[2].body`.
#[derive(Clone, Copy)]
enum Field {
    Entry(usize),
    Body(usize),
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Entry(i) => write!(f, "reports[{i}]"),
            Field::Body(i) => write!(f, "reports[{i}].body"),
        }
    }
}

fn field<'v, 'a>(v: Option<&'v Lite<'a>>, at: Field, name: &str) -> Result<&'v Lite<'a>, NelError> {
    v.ok_or_else(|| malformed(&format!("{at}.{name}"), "missing"))
}

fn string<'v>(v: Option<&'v Lite<'_>>, at: Field, name: &str) -> Result<&'v str, NelError> {
    match field(v, at, name)? {
        Lite::Str(s) => Ok(s),
        _ => Err(malformed(&format!("{at}.{name}"), "not a string")),
    }
}

fn label<'v>(v: Option<&'v Lite<'_>>, at: Field, name: &str) -> Result<&'v str, NelError> {
    let s = string(v, at, name)?;
    if s.len() > MAX_LABEL_BYTES {
        return Err(malformed(&format!("{at}.{name}"), "longer than 64 bytes"));
    }
    Ok(s)
}

fn number(v: Option<&Lite<'_>>, at: Field, name: &str) -> Result<f64, NelError> {
    field(v, at, name)?
        .as_f64()
        .filter(|n| n.is_finite())
        .ok_or_else(|| malformed(&format!("{at}.{name}"), "not a number"))
}

/// A non-negative millisecond count; fractions are rounded, huge values saturate.
fn non_negative(v: Option<&Lite<'_>>, at: Field, name: &str) -> Result<u64, NelError> {
    let n = number(v, at, name)?;
    if n < 0.0 {
        return Err(malformed(&format!("{at}.{name}"), "negative"));
    }
    // `as` saturates for values beyond u64::MAX.
    Ok(n.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::accept::{NelContext, nel_batch};
    use crate::model::{Enrichment, NetTag, Source, StoredReport};
    use proptest::prelude::*;
    use serde_json::{Value, json};
    use vantage_agent::report::UnixMillis;
    use vantage_agent::taxonomy::{NetworkType, Scope};

    /// Parses and maps, as the ingest path does.
    fn parse_reports(body: &[u8], ctx: &NelContext) -> Result<Vec<StoredReport>, NelError> {
        Ok(nel_batch(body, parse_upload(body)?, ctx, &NelServices::default()).reports)
    }

    fn ctx() -> NelContext {
        NelContext {
            received_at: UnixMillis(1_700_000_000_000),
            net: NetTag(0x1234),
            enrichment: Enrichment { asn: Some(64500), country: None },
        }
    }

    fn entry(phase: &str, ty: &str, status: u64) -> Value {
        json!({
            "age": 1200, "type": "network-error",
            "url": "https://User:pw@Shop.Example:8443/cart/itemzz?session=secret#frag",
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) secret-ua",
            "body": {"sampling_fraction": 0.25, "server_ip": "192.0.2.77", "protocol": "http/1.1",
                     "method": "POST", "status_code": status, "elapsed_time": 38.4,
                     "phase": phase, "type": ty, "referrer": "https://shop.example/private-ref"}
        })
    }

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    fn err(v: &Value) -> String {
        match parse_reports(&bytes(v), &ctx()).unwrap_err() {
            NelError::Malformed(m) => m,
        }
    }

    #[test]
    fn maps_an_http_error() {
        let body = bytes(&json!([entry("application", "http.error", 500)]));
        let reports = parse_reports(&body, &ctx()).unwrap();
        assert_eq!(reports.len(), 1);
        let r = &reports[0];
        assert_eq!(r.source, Source::Nel);
        assert_eq!(r.service, "shop.example");
        assert_eq!(r.host, "shop.example");
        assert_eq!(r.phase, Phase::Application);
        assert_eq!(r.error_type, ErrorType::HttpError);
        assert_eq!(r.status, Some(500));
        assert_eq!(r.elapsed_ms, 38);
        assert_eq!(r.received_at, UnixMillis(1_700_000_000_000));
        assert_eq!(r.event_at, UnixMillis(1_700_000_000_000 - 1200));
        assert_eq!(r.count, 1);
        assert_eq!(r.sample_ppm, 250_000);
        assert_eq!(r.client, None);
        assert_eq!(r.network, NetworkType::Unknown);
        assert_eq!(r.scope, Scope::Unknown);
        assert_eq!(r.net, NetTag(0x1234));
        assert_eq!(r.enrichment.asn, Some(64500));
    }

    #[test]
    fn keeps_nothing_private() {
        let body = bytes(&json!([
            entry("application", "http.error", 503),
            entry("connection", "tcp.reset", 0),
            entry("dns", "dns.name_not_resolved", 0),
        ]));
        for r in parse_reports(&body, &ctx()).unwrap() {
            let dump = format!("{r:?}");
            for secret in [
                "cart",
                "itemzz",
                "session",
                "secret",
                "frag",
                "User",
                "pw",
                "8443",
                "192.0.2.77",
                "Mozilla",
                "private-ref",
                "POST",
                "http/1.1",
            ] {
                assert!(!dump.contains(secret), "{secret} leaked into {dump}");
            }
        }
    }

    #[test]
    fn status_only_for_the_application_phase() {
        let body = bytes(&json!([
            entry("connection", "tcp.refused", 500),
            entry("application", "http.protocol.error", 0),
            entry("application", "http.error", 404),
        ]));
        let r = parse_reports(&body, &ctx()).unwrap();
        assert_eq!(r[0].status, None);
        assert_eq!(r[0].phase, Phase::Connection);
        assert_eq!(r[0].error_type, ErrorType::TcpRefused);
        assert_eq!(r[1].status, None);
        assert_eq!(r[2].status, Some(404));
    }

    #[test]
    fn skips_other_types_and_successes() {
        let mut ok = entry("application", "ok", 200);
        ok["body"]["type"] = json!("ok");
        let body = bytes(&json!([
            {"age": 0, "type": "deprecation", "url": "https://a.example/", "body": {"id": "x"}},
            ok,
            entry("connection", "tcp.timed_out", 0),
        ]));
        let upload = parse_upload(&body).unwrap();
        assert_eq!(upload.other_types, 1);
        assert_eq!(upload.successes, 1);
        assert_eq!(upload.entries.len(), 1);
        assert_eq!(upload.entries[0].error_type, ErrorType::TcpTimedOut);
        assert_eq!(parse_upload(b"[]").unwrap().entries, vec![]);
    }

    #[test]
    fn successes_become_scaled_counts_and_hosts_map_to_their_registrable_domain() {
        let mut ok = entry("application", "ok", 200);
        ok["body"]["type"] = json!("ok");
        ok["url"] = json!("https://www.nel.test/");
        let mut dns = entry("dns", "dns.name_not_resolved", 0);
        dns["url"] = json!("https://missing.nel.test/x?y=1");
        dns["body"]["sampling_fraction"] = json!(1.0);
        let body = bytes(&json!([ok, dns]));
        let services = NelServices::default();
        let batch = nel_batch(&body, parse_upload(&body).unwrap(), &ctx(), &services);
        assert_eq!(batch.reports.len(), 1);
        assert_eq!(batch.reports[0].service, "nel.test");
        assert_eq!(batch.reports[0].host, "missing.nel.test");
        // One count per entry: the success weighs 1 / 0.25, the failure 1.
        assert_eq!(batch.targets.len(), 2);
        let ok_t = batch.targets.iter().find(|t| t.successes > 0).unwrap();
        assert_eq!((ok_t.attempts, ok_t.successes), (4, 4));
        assert_eq!(ok_t.service, "nel.test");
        let fail_t = batch.targets.iter().find(|t| t.successes == 0).unwrap();
        assert_eq!((fail_t.attempts, fail_t.service.as_str()), (1, "nel.test"));
        assert_eq!(fail_t.client, crate::model::nel_client_key(NetTag(0x1234)));
        // A bad sampling fraction on a success is refused like on a failure.
        let mut bad = entry("application", "ok", 200);
        bad["body"]["type"] = json!("ok");
        bad["body"]["sampling_fraction"] = json!(0);
        assert_eq!(err(&json!([bad])), "reports[0].body.sampling_fraction: not in (0, 1]");
    }

    #[test]
    fn one_body_from_two_networks_is_two_uploads_and_from_one_network_a_replay() {
        let mut ok = entry("application", "ok", 200);
        ok["body"]["type"] = json!("ok");
        let body = bytes(&json!([ok, entry("dns", "dns.name_not_resolved", 0)]));
        let batch = |net| {
            let ctx = NelContext { net: NetTag(net), ..ctx() };
            nel_batch(&body, parse_upload(&body).unwrap(), &ctx, &NelServices::default())
        };
        let (a, again, b) = (batch(0x1234), batch(0x1234), batch(0x9876));
        // A retry from the same network: same digest and ids, so the store drops it.
        assert_eq!(a.digest, again.digest);
        assert_eq!(a.reports[0].id, again.reports[0].id);
        // Another browser on another network sent the same bytes: a different upload.
        assert_ne!(a.digest, b.digest);
        assert_ne!(a.reports[0].id, b.reports[0].id);
    }

    #[test]
    fn configured_patterns_win_and_unknown_domains_are_capped() {
        let rule = |id: &str, hosts: &[&str]| NelServiceRule {
            id: id.into(),
            hosts: hosts.iter().map(|h| (*h).to_owned()).collect(),
        };
        let s = NelServices::new(&[rule("shop", &["example.com", "*.example.com"])], 2).unwrap();
        assert_eq!(s.service_for("example.com"), "shop");
        assert_eq!(s.service_for("A.B.Example.com"), "shop");
        assert_eq!(s.service_for("notexample.com"), "notexample.com");
        assert_eq!(s.service_for("www.other.co.uk"), "other.co.uk");
        // A host in capitals is the same service (and not a third minted one).
        assert_eq!(s.service_for("WWW.Other.CO.uk"), "other.co.uk");
        // The cap: two minted already; a third unknown domain goes to the shared bucket.
        assert_eq!(s.service_for("third.example.org"), OTHER_SERVICE);
        assert_eq!(s.service_for("notexample.com"), "notexample.com");
        assert_eq!(s.refused(), 1);
        assert_eq!(s.service_for("192.0.2.1"), OTHER_SERVICE);
        let e = NelServices::new(&[rule("x", &["*.*.example"])], 1).unwrap_err();
        assert_eq!(
            e,
            "nel.services[0].hosts: \"*.*.example\" is not a host name or *.host name pattern"
        );
        let e = NelServices::new(&[rule("", &["a.example"])], 1).unwrap_err();
        assert_eq!(e, "nel.services[0].id: empty");
        assert!(NelServices::new(&[rule("x", &[])], 1).unwrap_err().contains("hosts: empty"));
    }

    #[test]
    fn unknown_types_are_kept_as_other() {
        let body = bytes(&json!([entry("connection", "quic.protocol.error", 0)]));
        let r = parse_reports(&body, &ctx()).unwrap();
        assert_eq!(r[0].error_type, ErrorType::Other("quic.protocol.error".into()));
    }

    #[test]
    fn ids_are_stable_per_body_and_distinct_per_entry() {
        let body = bytes(&json!([
            entry("application", "http.error", 500),
            entry("application", "http.error", 500),
        ]));
        let a = parse_reports(&body, &ctx()).unwrap();
        let b = parse_reports(&body, &ctx()).unwrap();
        assert_eq!(a[0].id, b[0].id);
        assert_ne!(a[0].id, a[1].id);
        let other = bytes(&json!([entry("application", "http.error", 502)]));
        assert_ne!(parse_reports(&other, &ctx()).unwrap()[0].id, a[0].id);
    }

    #[test]
    fn age_beyond_the_epoch_saturates() {
        let mut e = entry("dns", "dns.failed", 0);
        e["age"] = json!(1e300);
        let r = parse_reports(&bytes(&json!([e])), &ctx()).unwrap();
        assert_eq!(r[0].event_at, UnixMillis(0));
    }

    /// Fields read as JSON values: the last of a repeated name wins, escaped strings decode,
    /// `null` status is no status, a float status or a `null` body is refused, whitespace
    /// anywhere is fine, and invalid JSON is "not JSON".
    #[test]
    fn fields_read_as_json_values_would() {
        let body = br#" [ { "type" : "x", "age":1, "url":"https://a.example/",
            "type": "network-\u0065rror",
            "body": {"type":"dns.failed","phase":"dns","sampling_fraction":0.5,
                     "elapsed_time":7.6, "status_code": null, "phase": "application",
                     "type": "http.\u0065rror"} } ] "#;
        let upload = parse_upload(body).unwrap();
        assert_eq!(upload.entries.len(), 1);
        let e = &upload.entries[0];
        assert_eq!(
            (e.phase, &e.error_type, e.status),
            (Phase::Application, &ErrorType::HttpError, None)
        );
        assert_eq!((e.sample_ppm, e.elapsed_ms, e.age_ms), (500_000, 8, 1));
        let mut e = entry("application", "http.error", 0);
        e["body"]["status_code"] = json!(500.0);
        assert_eq!(err(&json!([e])), "reports[0].body.status_code: not an integer 0..=999");
        let mut e = entry("dns", "dns.failed", 0);
        e["body"] = Value::Null;
        assert_eq!(err(&json!([e])), "reports[0].body: not an object");
        let mut e = entry("dns", "dns.failed", 0);
        e["age"] = json!("1");
        assert_eq!(err(&json!([e])), "reports[0].age: not a number");
        let mut e = entry("dns", "dns.failed", 0);
        e["url"] = json!(7);
        assert_eq!(err(&json!([e])), "reports[0].url: not a string");
        let e = parse_upload(b"[{\"type\": \"network-error\",}]").err().unwrap().to_string();
        assert!(e.starts_with("malformed NEL upload: reports: not JSON ("), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err(&json!({"a": 1})).starts_with("reports: not an array"));
        let mut e = entry("dns", "dns.failed", 0);
        e["body"].as_object_mut().unwrap().remove("type");
        assert_eq!(
            err(&json!([entry("dns", "dns.failed", 0), e])),
            "reports[1].body.type: missing"
        );
        let mut e = entry("dns", "dns.failed", 0);
        e["body"]["phase"] = json!("transport");
        assert_eq!(err(&json!([e])), "reports[0].body.phase: not dns, connection or application");
        let mut e = entry("dns", "dns.failed", 0);
        e["body"]["type"] = json!("DROP TABLE");
        assert_eq!(err(&json!([e])), "reports[0].body.type: not a NEL type label");
        let mut e = entry("dns", "dns.failed", 0);
        e["url"] = json!("ftp://a.example/");
        assert_eq!(err(&json!([e])), "reports[0].url: not an http or https URL");
        let mut e = entry("dns", "dns.failed", 0);
        e["url"] = json!(format!("https://a.example/{}", "x".repeat(MAX_URL_BYTES)));
        assert_eq!(err(&json!([e])), "reports[0].url: longer than 8192 bytes");
        let mut e = entry("dns", "dns.failed", 0);
        e["age"] = json!(-1);
        assert_eq!(err(&json!([e])), "reports[0].age: negative");
        let mut e = entry("dns", "dns.failed", 0);
        e["body"]["sampling_fraction"] = json!(0);
        assert_eq!(err(&json!([e])), "reports[0].body.sampling_fraction: not in (0, 1]");
        let mut e = entry("application", "http.error", 0);
        e["body"]["status_code"] = json!("500");
        assert_eq!(err(&json!([e])), "reports[0].body.status_code: not an integer 0..=999");
        let mut e = entry("dns", "dns.failed", 0);
        e.as_object_mut().unwrap().remove("body");
        assert_eq!(err(&json!([e])), "reports[0].body: missing");
        assert_eq!(err(&json!([7])), "reports[0]: not an object");
        assert_eq!(err(&json!([{"age": 1}])), "reports[0].type: missing");
        let many: Vec<Value> =
            (0..=MAX_REPORTS_PER_UPLOAD).map(|_| entry("dns", "dns.failed", 0)).collect();
        assert_eq!(err(&Value::Array(many)), "reports: more than 100 entries");
        // Entries are the top-level array's: commas inside strings and nested values do not
        // count.
        let hundred: Vec<String> =
            (0..100).map(|i| format!(r#"{{"type":"x,{i}","b":[1,2]}}"#)).collect();
        let body = format!("[{}]", hundred.join(","));
        assert_eq!(parse_upload(body.as_bytes()).unwrap().other_types, 100);
        let tiny = format!("[[{}]]", vec!["0"; MAX_JSON_TOKENS + 1].join(","));
        let e = parse_upload(tiny.as_bytes()).err().unwrap().to_string();
        assert_eq!(
            e,
            format!("malformed NEL upload: reports: more than {MAX_JSON_TOKENS} JSON tokens")
        );
        let e = parse_reports(b"{not json", &ctx()).unwrap_err();
        assert_eq!(e.as_str(), "malformed");
        assert!(e.to_string().starts_with("malformed NEL upload: reports: not JSON"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_upload(&body);
        }

        #[test]
        fn arbitrary_entries_never_panic(
            age in any::<f64>(), elapsed in any::<f64>(), fraction in any::<f64>(),
            status in any::<i64>(), url in ".{0,40}", phase in "[a-z.]{0,12}", ty in "[a-z._]{0,20}",
        ) {
            let body = json!([{"age": age, "type": "network-error", "url": url,
                "body": {"sampling_fraction": fraction, "status_code": status, "elapsed_time": elapsed,
                         "phase": phase, "type": ty}}]);
            if let Ok(reports) = parse_reports(&bytes(&body), &ctx()) {
                for r in reports {
                    prop_assert!(r.sample_ppm >= 1 && r.sample_ppm <= 1_000_000);
                    prop_assert!(r.event_at <= ctx().received_at);
                    prop_assert!(!r.host.contains('/'));
                }
            }
        }
    }
}
