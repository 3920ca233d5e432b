//! `GET /v1/reports` on the admin listener: the stored failure reports themselves, newest first,
//! filtered, paginated and bounded.
//!
//! ```text
//!  GET /v1/reports?service=shop&type=tcp&asn=64500&country=DE&since=..&until=..&limit=100
//!        │ parse_reports_query: every parameter checked, a bad one is a 400 naming it
//!        ▼
//!  Store::scan_reports_newest_first(since, cursor or until)  ── at most SCAN_MAX rows read
//!        │ filters applied in order, at most `limit` kept
//!        ▼
//!  {"reports": [...], "next_cursor": "..."|null, "scanned": n, ...}
//! ```
//!
//! A report shows what the store keeps: times, service, the host the client tried to reach,
//! source (agent or browser NEL), phase, type, HTTP status, elapsed time, network type, scope,
//! count, ASN and country. The store keeps no client IP, no URL path and no agent key in a form
//! worth showing, so neither does this API (the pseudonymous network tag and the agent key are
//! left out too).
//!
//! Work per request is bounded twice: at most [`MAX_LIMIT`] reports are returned and at most
//! [`SCAN_MAX`] stored rows are read. A filter that matches rarely therefore answers with fewer
//! reports than `limit` and a `next_cursor` to go on from where the scan stopped; `next_cursor`
//! is `null` only when the time range is exhausted.

use serde_json::{Value, json};
use vantage_agent::report::UnixMillis;
use vantage_agent::taxonomy::{ErrorType, Phase};

use crate::alerting::parse_query;
use crate::model::{Country, StoredReport};
use crate::store::{Store, StoreError};

/// Reports per page without `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` accepted (a larger one is a 400).
pub const MAX_LIMIT: usize = 1000;
/// Stored rows one request reads at most, matching or not.
pub const SCAN_MAX: usize = 50_000;
/// Without `since`: this long before `until`.
pub const DEFAULT_SPAN_MS: u64 = 24 * 3_600_000;

/// The parameters `GET /v1/reports` knows, for the error naming an unknown one.
const KNOWN: [&str; 9] =
    ["service", "type", "phase", "asn", "country", "since", "until", "limit", "cursor"];

/// A parsed `GET /v1/reports` query. See the [module docs](self).
#[derive(Clone, Debug, PartialEq)]
pub struct ReportQuery {
    /// Only this service.
    pub service: Option<String>,
    /// Only this type: a full label (`tcp.refused`) or a prefix before its dot (`tcp`).
    pub error_type: Option<String>,
    /// Only this phase.
    pub phase: Option<Phase>,
    /// Only clients in this AS.
    pub asn: Option<u32>,
    /// Only clients in this country.
    pub country: Option<Country>,
    /// Event time at or after this.
    pub since: UnixMillis,
    /// Event time before this.
    pub until: UnixMillis,
    /// Reports per page.
    pub limit: usize,
    /// Continue before this position (event time, report id), from a previous `next_cursor`.
    pub cursor: Option<(UnixMillis, [u8; 16])>,
}

/// Parses the query of `GET /v1/reports`; `now` is the default `until`. Every error names the
/// parameter that was wrong.
pub fn parse_reports_query(query: &str, now: UnixMillis) -> Result<ReportQuery, String> {
    let params = parse_query(query)?;
    if let Some(unknown) = params.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!(
            "unknown parameter `{unknown}` (known: {})",
            KNOWN.map(|k| format!("`{k}`")).join(", ")
        ));
    }
    let get = |name: &str| params.get(name).map(String::as_str);
    let non_empty = |name: &str| -> Result<Option<String>, String> {
        match get(name) {
            None => Ok(None),
            Some("") => Err(format!("parameter `{name}` is empty")),
            Some(v) => Ok(Some(v.to_owned())),
        }
    };
    let service = non_empty("service")?;
    let error_type = match non_empty("type")? {
        None => None,
        Some(t) if t.contains('.') => {
            let parsed = ErrorType::from_label(&t)
                .map_err(|_| format!("parameter `type`: {t:?} is not an error type label"))?;
            Some(parsed.as_str().to_owned())
        }
        Some(t) if t.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') => Some(t),
        Some(t) => {
            return Err(format!(
                "parameter `type`: {t:?} is neither a type label (tcp.refused) nor a prefix (tcp)"
            ));
        }
    };
    let phase = match non_empty("phase")? {
        None => None,
        Some(p) => Some(p.parse::<Phase>().map_err(|_| {
            format!("parameter `phase`: {p:?} is not one of dns, connection, application")
        })?),
    };
    let asn = match non_empty("asn")? {
        None => None,
        Some(a) => Some(
            a.strip_prefix("AS")
                .or_else(|| a.strip_prefix("as"))
                .unwrap_or(&a)
                .parse::<u32>()
                .map_err(|_| format!("parameter `asn`: {a:?} is not an AS number"))?,
        ),
    };
    let country = match non_empty("country")? {
        None => None,
        Some(c) => Some(Country::parse(&c).ok_or_else(|| {
            format!("parameter `country`: {c:?} is not a two-letter country code")
        })?),
    };
    let until = match non_empty("until")? {
        None => UnixMillis(now.0.saturating_add(1)),
        Some(t) => parse_time("until", &t)?,
    };
    let since = match non_empty("since")? {
        None => UnixMillis(until.0.saturating_sub(DEFAULT_SPAN_MS)),
        Some(t) => parse_time("since", &t)?,
    };
    if since >= until {
        return Err(format!("parameter `since` ({}) is not before `until` ({})", since.0, until.0));
    }
    let limit = match non_empty("limit")? {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(format!(
                    "parameter `limit`: {l:?} is not a number from 1 to {MAX_LIMIT}"
                ));
            }
        },
    };
    let cursor = match non_empty("cursor")? {
        None => None,
        Some(c) => Some(parse_cursor(&c).ok_or_else(|| {
            format!("parameter `cursor`: {c:?} is not a cursor from `next_cursor`")
        })?),
    };
    Ok(ReportQuery { service, error_type, phase, asn, country, since, until, limit, cursor })
}

impl ReportQuery {
    /// Whether `r` passes every filter (the time range is the scan's).
    pub fn matches(&self, r: &StoredReport) -> bool {
        self.service.as_ref().is_none_or(|s| *s == r.service)
            && self.error_type.as_ref().is_none_or(|t| {
                let label = r.error_type.as_str();
                label == t || label.strip_prefix(t.as_str()).is_some_and(|s| s.starts_with('.'))
            })
            && self.phase.is_none_or(|p| p == r.phase)
            && self.asn.is_none_or(|a| r.enrichment.asn == Some(a))
            && self.country.is_none_or(|c| r.enrichment.country == Some(c))
    }
}

/// Runs `q` against `store`: the JSON of `GET /v1/reports`.
pub fn reports_json(store: &Store, q: &ReportQuery) -> Result<Value, StoreError> {
    let start = match q.cursor {
        Some(c) if c < (q.until, [0; 16]) => c,
        _ => (q.until, [0; 16]),
    };
    let mut out = Vec::new();
    let mut scanned = 0usize;
    let mut last = None;
    let mut exhausted = true;
    for item in store.scan_reports_newest_first(q.since, start) {
        if out.len() >= q.limit || scanned >= SCAN_MAX {
            exhausted = false;
            break;
        }
        let (pos, r) = item?;
        scanned += 1;
        last = Some(pos);
        if q.matches(&r) {
            out.push(report_json(&r));
        }
    }
    let next_cursor = match (exhausted, last) {
        (false, Some(pos)) => Value::String(cursor_text(pos)),
        _ => Value::Null,
    };
    Ok(json!({
        "since_ms": q.since.0,
        "until_ms": q.until.0,
        "limit": q.limit,
        "scanned": scanned,
        "reports": out,
        "next_cursor": next_cursor,
    }))
}

fn report_json(r: &StoredReport) -> Value {
    json!({
        "event_ms": r.event_at.0,
        "received_ms": r.received_at.0,
        "service": r.service,
        "host": r.host,
        "source": r.source.as_str(),
        "phase": r.phase.as_str(),
        "type": r.error_type.as_str(),
        "status": r.status,
        "elapsed_ms": r.elapsed_ms,
        "network": r.network.as_str(),
        "scope": r.scope.as_str(),
        "count": r.count,
        "asn": r.enrichment.asn,
        "country": r.enrichment.country.map(|c| c.as_str().to_owned()),
    })
}

/// `event_at` (16 hex digits) then the report id (32 hex digits).
fn cursor_text((at, id): (UnixMillis, [u8; 16])) -> String {
    let mut s = format!("{:016x}", at.0);
    for b in id {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn parse_cursor(s: &str) -> Option<(UnixMillis, [u8; 16])> {
    if s.len() != 48 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let at = u64::from_str_radix(&s[..16], 16).ok()?;
    let mut id = [0u8; 16];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[16 + 2 * i..18 + 2 * i], 16).ok()?;
    }
    Some((UnixMillis(at), id))
}

/// Milliseconds since the epoch, or RFC 3339 UTC (`2026-12-03T12:00:00Z`, optional fraction).
fn parse_time(name: &str, s: &str) -> Result<UnixMillis, String> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map(UnixMillis)
            .map_err(|_| format!("parameter `{name}`: {s:?} is too large"));
    }
    rfc3339_ms(s).map(UnixMillis).ok_or_else(|| {
        format!(
            "parameter `{name}`: {s:?} is neither milliseconds since the epoch nor an RFC 3339 \
             UTC time like 2026-12-03T12:00:00Z"
        )
    })
}

fn rfc3339_ms(s: &str) -> Option<u64> {
    let s = s.strip_suffix('Z').or_else(|| s.strip_suffix('z'))?;
    let (date, time) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let (y, mo, day) = (d.next()?, d.next()?, d.next()?);
    if d.next().is_some() || y.len() != 4 || mo.len() != 2 || day.len() != 2 {
        return None;
    }
    let (y, mo, day): (i64, u32, u32) = (y.parse().ok()?, mo.parse().ok()?, day.parse().ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':');
    let (h, mi, sec) = (t.next()?, t.next()?, t.next()?);
    if t.next().is_some() || [h, mi, sec].iter().any(|p| p.len() != 2) {
        return None;
    }
    let (h, mi, sec): (u64, u64, u64) = (h.parse().ok()?, mi.parse().ok()?, sec.parse().ok()?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ms: u64 = format!("{frac:0<3}").get(..3)?.parse().ok()?;
    let days = days_from_civil(y, mo, day);
    let days = u64::try_from(days).ok()?;
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000) + ms)
}

/// Day number from 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let (y, m) =
        if month <= 2 { (year - 1, i64::from(month) + 9) } else { (year, i64::from(month) - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

    #[test]
    fn queries_parse_and_defaults_are_bounded() {
        let q = parse_reports_query("", NOW).unwrap();
        assert_eq!(q.until, UnixMillis(NOW.0 + 1));
        assert_eq!(q.since, UnixMillis(NOW.0 + 1 - DEFAULT_SPAN_MS));
        assert_eq!(q.limit, DEFAULT_LIMIT);
        let q = parse_reports_query(
            "service=my%20shop&type=tcp&phase=connection&asn=AS64500&country=de\
             &since=2026-12-03T12:00:00Z&until=1796300000000&limit=1000",
            NOW,
        )
        .unwrap();
        assert_eq!(q.service.as_deref(), Some("my shop"));
        assert_eq!(q.error_type.as_deref(), Some("tcp"));
        assert_eq!(q.phase, Some(Phase::Connection));
        assert_eq!(q.asn, Some(64500));
        assert_eq!(q.country.unwrap().as_str(), "DE");
        assert_eq!(q.since, UnixMillis(1_796_299_200_000));
        assert_eq!(q.limit, MAX_LIMIT);
        let q = parse_reports_query("type=tcp.refused&since=0&until=1", NOW).unwrap();
        assert_eq!(q.error_type.as_deref(), Some("tcp.refused"));
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01.5Z"), Some(1500));
        assert_eq!(rfc3339_ms("2026-12-03T12:00:00"), None);
    }

    #[test]
    fn every_bad_parameter_is_named() {
        for (query, name) in [
            ("servce=shop", "`servce`"),
            ("service=", "`service`"),
            ("type=TCP", "`type`"),
            ("type=tcp.x%20y", "`type`"),
            ("phase=tls", "`phase`"),
            ("asn=x", "`asn`"),
            ("asn=4294967296", "`asn`"),
            ("country=DEU", "`country`"),
            ("since=yesterday", "`since`"),
            ("until=2026-13-01T00:00:00Z", "`until`"),
            ("since=10&until=10", "`since`"),
            ("limit=0", "`limit`"),
            ("limit=1001", "`limit`"),
            ("limit=-1", "`limit`"),
            ("cursor=zz", "`cursor`"),
            ("service=%zz", "percent"),
        ] {
            let e = parse_reports_query(query, NOW).unwrap_err();
            assert!(e.contains(name), "{query}: {e}");
        }
    }

    #[test]
    fn cursors_round_trip() {
        let pos = (UnixMillis(1_796_300_000_123), [0xab; 16]);
        assert_eq!(parse_cursor(&cursor_text(pos)), Some(pos));
        assert_eq!(parse_cursor(&cursor_text(pos)[1..]), None);
    }
}
