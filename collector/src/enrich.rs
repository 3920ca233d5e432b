//! ASN and country enrichment of source addresses.
//!
//! Two kinds of source, any combination of which may be configured:
//!
//! * MaxMind DB files read with the `maxminddb` crate: an ASN database with
//!   `autonomous_system_number` (GeoLite2-ASN layout), and a country database with
//!   `country.iso_code` (GeoLite2-Country) or a top-level `country_code` (the
//!   `@ip-location-db/*-mmdb` packages).
//! * CSV files in the ip-location-db layout: `range_start,range_end,ASN,organisation` and
//!   `range_start,range_end,country_code`, ranges as IPv4 or IPv6 addresses, the organisation
//!   optionally quoted (with `""` for a quote). They are loaded into sorted vectors of disjoint
//!   `u32` / `u128` ranges and looked up by binary search.
//!
//! For each field the MaxMind DB answers first; the CSV files are asked when it has no answer.
//! Where CSV ranges overlap (the real data has a few: one in the ASN files, ~570 in the country
//! files), the range loaded first wins: files in config order, then lines in file order. This
//! is a plain, predictable rule; ip-location-db's MMDB builds resolve some of those overlaps the
//! other way, so a CSV and an MMDB of the same release agree everywhere except there.
//! IPv4-mapped IPv6 addresses are looked up as IPv4.
//!
//! Loading the real `@ip-location-db/asn` CSVs (412k IPv4 + 103k IPv6 ranges, 32 MB) takes
//! about 2 s in a debug build and keeps about 10 MB of ranges in memory (12 bytes per IPv4
//! range, 48 per IPv6 range). A MaxMind DB is read into memory whole (8 MB for the
//! ip-location-db country database) in a few milliseconds.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::{Country, Enrichment};

/// Which enrichment sources to load. Everything is optional.
#[derive(Clone, Debug, Default)]
pub struct EnrichConfig {
    /// MaxMind DB with `autonomous_system_number` (GeoLite2-ASN layout).
    pub asn_mmdb: Option<PathBuf>,
    /// MaxMind DB with `country.iso_code` (GeoLite2-Country) or top-level `country_code`
    /// (ip-location-db).
    pub country_mmdb: Option<PathBuf>,
    /// ip-location-db ASN CSV files (`range_start,range_end,ASN,organisation`).
    pub asn_csv: Vec<PathBuf>,
    /// ip-location-db country CSV files (`range_start,range_end,country_code`).
    pub country_csv: Vec<PathBuf>,
}

/// Enrichment errors; each names the file (and line for CSV).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrichError {
    /// A file exists but could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A CSV line could not be parsed.
    #[error("{path}:{line}: {reason}")]
    Csv {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What was wrong.
        reason: String,
    },
    /// A MaxMind DB could not be opened.
    #[error("MaxMind DB {path}: {reason}")]
    Mmdb {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

/// Looks up ASN and country for an address. `Send + Sync`, shared behind an `Arc`.
#[derive(Default)]
pub struct Enricher {
    asn_mmdb: Option<Mmdb>,
    country_mmdb: Option<Mmdb>,
    asn_ranges: Ranges<u32>,
    country_ranges: Ranges<Country>,
}

impl fmt::Debug for Enricher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enricher")
            .field("asn_mmdb", &self.asn_mmdb.as_ref().map(|m| &m.path))
            .field("country_mmdb", &self.country_mmdb.as_ref().map(|m| &m.path))
            .field("asn_ranges", &self.asn_ranges.len())
            .field("country_ranges", &self.country_ranges.len())
            .finish()
    }
}

impl Enricher {
    /// Missing files are warnings (that source is off); a file that exists but cannot be parsed
    /// is an error naming the file (and line for CSV).
    pub fn load(config: &EnrichConfig) -> Result<(Enricher, Vec<String>), EnrichError> {
        let mut warnings = Vec::new();
        let mut missing = |path: &Path, what: &str| {
            warnings.push(format!(
                "enrichment file {} does not exist: {what} enrichment from it is off",
                path.display()
            ));
        };
        let mut enricher = Enricher::disabled();
        if let Some(path) = &config.asn_mmdb {
            enricher.asn_mmdb = Mmdb::open(path)?;
            if enricher.asn_mmdb.is_none() {
                missing(path, "ASN");
            }
        }
        if let Some(path) = &config.country_mmdb {
            enricher.country_mmdb = Mmdb::open(path)?;
            if enricher.country_mmdb.is_none() {
                missing(path, "country");
            }
        }
        let mut asn = RangeBuilder::default();
        for path in &config.asn_csv {
            if !load_csv(path, &mut asn, parse_asn)? {
                missing(path, "ASN");
            }
        }
        enricher.asn_ranges = asn.build();
        let mut country = RangeBuilder::default();
        for path in &config.country_csv {
            if !load_csv(path, &mut country, parse_country)? {
                missing(path, "country");
            }
        }
        enricher.country_ranges = country.build();
        Ok((enricher, warnings))
    }

    /// An enricher with no sources: every lookup is empty.
    pub fn disabled() -> Enricher {
        Enricher::default()
    }

    /// True when at least one source is loaded.
    pub fn is_enabled(&self) -> bool {
        self.asn_mmdb.is_some()
            || self.country_mmdb.is_some()
            || self.asn_ranges.len() > 0
            || self.country_ranges.len() > 0
    }

    /// ASN and country of `ip`, as far as the sources know.
    pub fn lookup(&self, ip: IpAddr) -> Enrichment {
        let ip = ip.to_canonical();
        let asn =
            self.asn_mmdb.as_ref().and_then(|db| db.asn(ip)).or_else(|| self.asn_ranges.get(ip));
        let country = self
            .country_mmdb
            .as_ref()
            .and_then(|db| db.country(ip))
            .or_else(|| self.country_ranges.get(ip));
        Enrichment { asn, country }
    }
}

struct Mmdb {
    path: PathBuf,
    reader: maxminddb::Reader<Vec<u8>>,
}

#[derive(Deserialize)]
struct AsnRecord {
    autonomous_system_number: Option<u32>,
}

#[derive(Deserialize)]
struct CountryRecord<'a> {
    #[serde(borrow)]
    country: Option<IsoCode<'a>>,
    #[serde(borrow)]
    country_code: Option<&'a str>,
    #[serde(borrow)]
    registered_country: Option<IsoCode<'a>>,
}

#[derive(Deserialize)]
struct IsoCode<'a> {
    #[serde(borrow)]
    iso_code: Option<&'a str>,
}

impl Mmdb {
    /// `Ok(None)` when the file does not exist.
    fn open(path: &Path) -> Result<Option<Mmdb>, EnrichError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(EnrichError::Read { path: path.to_owned(), reason: e.to_string() });
            }
            Ok(_) => {}
        }
        let reader = maxminddb::Reader::open_readfile(path)
            .map_err(|e| EnrichError::Mmdb { path: path.to_owned(), reason: e.to_string() })?;
        Ok(Some(Mmdb { path: path.to_owned(), reader }))
    }

    fn covers(&self, ip: IpAddr) -> bool {
        // An IPv4-only database cannot answer for IPv6 (the crate returns an error).
        ip.is_ipv4() || self.reader.metadata.ip_version == 6
    }

    fn asn(&self, ip: IpAddr) -> Option<u32> {
        if !self.covers(ip) {
            return None;
        }
        // A record that does not decode is no answer; the CSV sources may still have one.
        let record: AsnRecord = self.reader.lookup(ip).ok()??;
        record.autonomous_system_number.filter(|&asn| asn != 0)
    }

    fn country(&self, ip: IpAddr) -> Option<Country> {
        if !self.covers(ip) {
            return None;
        }
        let record: CountryRecord<'_> = self.reader.lookup(ip).ok()??;
        record
            .country
            .and_then(|c| c.iso_code)
            .or(record.country_code)
            .or(record.registered_country.and_then(|c| c.iso_code))
            .and_then(Country::parse)
    }
}

/// Reads one CSV file into `builder`; `Ok(false)` when the file does not exist.
fn load_csv<T: Copy + PartialEq>(
    path: &Path,
    builder: &mut RangeBuilder<T>,
    parse_value: fn(&[String]) -> Result<Option<T>, String>,
) -> Result<bool, EnrichError> {
    let read_err =
        |e: std::io::Error| EnrichError::Read { path: path.to_owned(), reason: e.to_string() };
    let file = match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        other => other.map_err(read_err)?,
    };
    let mut fields = Vec::with_capacity(4);
    let mut reader = BufReader::with_capacity(1 << 16, file);
    let mut buf = String::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        if reader.read_line(&mut buf).map_err(read_err)? == 0 {
            break;
        }
        line_no += 1;
        let csv_err =
            |reason: String| EnrichError::Csv { path: path.to_owned(), line: line_no, reason };
        let line = buf.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() || (line_no == 1 && line.starts_with("range_start")) {
            continue;
        }
        split_csv(line, &mut fields).map_err(csv_err)?;
        if fields.len() < 3 {
            return Err(csv_err(format!("expected at least 3 fields, found {}", fields.len())));
        }
        let start = parse_ip(&fields[0]).map_err(|e| csv_err(format!("range_start: {e}")))?;
        let end = parse_ip(&fields[1]).map_err(|e| csv_err(format!("range_end: {e}")))?;
        let Some(value) = parse_value(&fields).map_err(csv_err)? else {
            continue;
        };
        match (start, end) {
            (IpAddr::V4(s), IpAddr::V4(e)) if s <= e => {
                let order = builder.v4.len();
                builder.v4.push(Pending { start: s.into(), end: e.into(), order, value });
            }
            (IpAddr::V6(s), IpAddr::V6(e)) if s <= e => {
                let order = builder.v6.len();
                builder.v6.push(Pending { start: s.into(), end: e.into(), order, value });
            }
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                return Err(csv_err(format!(
                    "range_start {} is after range_end {}",
                    fields[0], fields[1]
                )));
            }
            _ => {
                return Err(csv_err(format!(
                    "range_start {} and range_end {} are of different address families",
                    fields[0], fields[1]
                )));
            }
        }
    }
    Ok(true)
}

fn parse_ip(field: &str) -> Result<IpAddr, String> {
    field.trim().parse().map_err(|_| {
        let hint = if !field.is_empty() && field.bytes().all(|b| b.is_ascii_digit()) {
            " (numeric ranges, the *-num.csv files, are not supported; use the address files)"
        } else {
            ""
        };
        format!("{:?} is not an IP address{hint}", truncate(field))
    })
}

fn parse_asn(fields: &[String]) -> Result<Option<u32>, String> {
    let raw = fields[2].trim();
    let digits = raw.strip_prefix("AS").or_else(|| raw.strip_prefix("as")).unwrap_or(raw);
    let asn: u32 =
        digits.parse().map_err(|_| format!("ASN {:?} is not a number", truncate(raw)))?;
    // AS 0 marks unannounced space (RFC 7607): no origin to report.
    Ok((asn != 0).then_some(asn))
}

fn parse_country(fields: &[String]) -> Result<Option<Country>, String> {
    let raw = fields[2].trim();
    Country::parse(raw)
        .map(Some)
        .ok_or_else(|| format!("country code {:?} is not two letters", truncate(raw)))
}

fn truncate(s: &str) -> String {
    s.chars().take(48).collect()
}

/// Splits one CSV line (RFC 4180 quoting, no embedded newlines) into `out`.
fn split_csv(line: &str, out: &mut Vec<String>) -> Result<(), String> {
    out.clear();
    let mut chars = line.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        field.push('"');
                    }
                    Some('"') => break,
                    Some(c) => field.push(c),
                    None => return Err(format!("unterminated quoted field {}", out.len() + 1)),
                }
            }
            match chars.next() {
                None => {
                    out.push(field);
                    return Ok(());
                }
                Some(',') => out.push(field),
                Some(c) => {
                    return Err(format!("unexpected {c:?} after quoted field {}", out.len() + 1));
                }
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        out.push(field);
                        return Ok(());
                    }
                    Some(',') => break,
                    Some('"') => {
                        return Err(format!("stray quote in field {}", out.len() + 1));
                    }
                    Some(c) => field.push(c),
                }
            }
            out.push(field);
        }
    }
}

/// An address as an integer: `u32` for IPv4, `u128` for IPv6.
trait Key: Copy + Ord + fmt::Debug {
    const MAX: Self;
    fn next(self) -> Option<Self>;
    fn prev(self) -> Self;
}

impl Key for u32 {
    const MAX: u32 = u32::MAX;
    fn next(self) -> Option<u32> {
        self.checked_add(1)
    }
    fn prev(self) -> u32 {
        self - 1
    }
}

impl Key for u128 {
    const MAX: u128 = u128::MAX;
    fn next(self) -> Option<u128> {
        self.checked_add(1)
    }
    fn prev(self) -> u128 {
        self - 1
    }
}

struct Pending<K, T> {
    start: K,
    end: K,
    /// Position in load order (files in config order, then lines): lower wins an overlap.
    order: usize,
    value: T,
}

struct RangeBuilder<T> {
    v4: Vec<Pending<u32, T>>,
    v6: Vec<Pending<u128, T>>,
}

impl<T> Default for RangeBuilder<T> {
    fn default() -> Self {
        RangeBuilder { v4: Vec::new(), v6: Vec::new() }
    }
}

impl<T: Copy + PartialEq> RangeBuilder<T> {
    fn build(self) -> Ranges<T> {
        Ranges { v4: disjoint(self.v4), v6: disjoint(self.v6) }
    }
}

/// Turns possibly overlapping ranges into sorted, disjoint ones: on every address the range
/// loaded first that contains it wins.
fn disjoint<K: Key, T: Copy + PartialEq>(mut ranges: Vec<Pending<K, T>>) -> Vec<(K, K, T)> {
    ranges.sort_by_key(|r| r.start);
    let overlapping = ranges.windows(2).any(|w| w[1].start <= w[0].end);
    if !overlapping {
        return ranges.into_iter().map(|r| (r.start, r.end, r.value)).collect();
    }
    // Sweep over the boundaries (starts, and the address after each end); between two
    // boundaries the set of containing ranges does not change.
    let mut ends: Vec<usize> = (0..ranges.len()).collect();
    ends.sort_by_key(|&i| ranges[i].end);
    let mut points: Vec<K> =
        ranges.iter().map(|r| r.start).chain(ranges.iter().filter_map(|r| r.end.next())).collect();
    points.sort();
    points.dedup();
    let mut active: BTreeSet<(usize, usize)> = BTreeSet::new();
    let (mut next_start, mut next_end) = (0, 0);
    let mut out: Vec<(K, K, T)> = Vec::with_capacity(ranges.len());
    for (k, &point) in points.iter().enumerate() {
        while next_end < ends.len() && ranges[ends[next_end]].end.next() == Some(point) {
            let i = ends[next_end];
            active.remove(&(ranges[i].order, i));
            next_end += 1;
        }
        while next_start < ranges.len() && ranges[next_start].start == point {
            active.insert((ranges[next_start].order, next_start));
            next_start += 1;
        }
        let Some(&(_, best)) = active.first() else {
            continue;
        };
        // Invariant: the last boundary is past every end unless a range ends at MAX, in
        // which case it is still active here.
        let seg_end = points.get(k + 1).map_or(K::MAX, |p| p.prev());
        let value = ranges[best].value;
        match out.last_mut() {
            Some(last) if last.2 == value && last.1.next() == Some(point) => last.1 = seg_end,
            _ => out.push((point, seg_end, value)),
        }
    }
    out
}

/// Sorted, disjoint ranges per address family.
struct Ranges<T> {
    v4: Vec<(u32, u32, T)>,
    v6: Vec<(u128, u128, T)>,
}

impl<T> Default for Ranges<T> {
    fn default() -> Self {
        Ranges { v4: Vec::new(), v6: Vec::new() }
    }
}

impl<T: Copy> Ranges<T> {
    fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    fn get(&self, ip: IpAddr) -> Option<T> {
        match ip {
            IpAddr::V4(v4) => find(&self.v4, u32::from(v4)),
            IpAddr::V6(v6) => find(&self.v6, u128::from(v6)),
        }
    }
}

fn find<K: Key, T: Copy>(ranges: &[(K, K, T)], key: K) -> Option<T> {
    let after = ranges.partition_point(|r| r.0 <= key);
    let (_, end, value) = ranges.get(after.checked_sub(1)?)?;
    (key <= *end).then_some(*value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(start: u32, end: u32, order: usize, value: u32) -> Pending<u32, u32> {
        Pending { start, end, order, value }
    }

    #[test]
    fn csv_fields_split_with_quotes() {
        let mut f = Vec::new();
        split_csv(r#"1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc.""#, &mut f).unwrap();
        assert_eq!(f, ["1.0.0.0", "1.0.0.255", "13335", "Cloudflare, Inc."]);
        split_csv(r#"a,b,1,"LLC ""SPUTNIK""""#, &mut f).unwrap();
        assert_eq!(f[3], r#"LLC "SPUTNIK""#);
        split_csv("a,,c,", &mut f).unwrap();
        assert_eq!(f, ["a", "", "c", ""]);
        assert!(split_csv(r#"a,"b"#, &mut f).unwrap_err().contains("unterminated"));
        assert!(split_csv(r#"a,"b"x,c"#, &mut f).unwrap_err().contains("after quoted"));
        assert!(split_csv(r#"a,b"c"#, &mut f).unwrap_err().contains("stray quote"));
    }

    #[test]
    fn disjoint_ranges_pass_through_and_lookups_respect_the_edges() {
        let out = disjoint(vec![pending(10, 19, 0, 1), pending(0, 9, 0, 2)]);
        assert_eq!(out, [(0, 9, 2), (10, 19, 1)]);
        assert_eq!(find(&out, 0), Some(2));
        assert_eq!(find(&out, 9), Some(2));
        assert_eq!(find(&out, 19), Some(1));
        assert_eq!(find(&out, 20), None);
        let gap = disjoint(vec![pending(5, 6, 0, 1)]);
        assert_eq!(find(&gap, 4), None);
        assert_eq!(find(&gap, 7), None);
    }

    #[test]
    fn overlaps_resolve_to_the_range_loaded_first() {
        // Like the real country data: 103.142.140.0/23 SG, then 103.142.141.0/24 JP.
        let out = disjoint(vec![pending(0, 100, 0, 1), pending(50, 60, 1, 2)]);
        assert_eq!(out, [(0, 100, 1)]);
        let out = disjoint(vec![pending(50, 60, 0, 2), pending(0, 100, 1, 1)]);
        assert_eq!(out, [(0, 49, 1), (50, 60, 2), (61, 100, 1)]);
        let out = disjoint(vec![pending(90, 200, 0, 2), pending(0, 100, 1, 1)]);
        assert_eq!(out, [(0, 89, 1), (90, 200, 2)]);
        // Adjacent pieces with the same value merge.
        let out = disjoint(vec![pending(0, 10, 0, 1), pending(5, 20, 1, 1), pending(21, 30, 2, 1)]);
        assert_eq!(out, [(0, 30, 1)]);
        // Ranges reaching the end of the address space.
        let out = disjoint(vec![
            pending(u32::MAX - 3, u32::MAX, 0, 2),
            pending(u32::MAX - 10, u32::MAX, 1, 1),
        ]);
        assert_eq!(out, [(u32::MAX - 10, u32::MAX - 4, 1), (u32::MAX - 3, u32::MAX, 2)]);
        assert_eq!(find(&out, u32::MAX), Some(2));
    }

    #[test]
    fn value_parsers_reject_garbage() {
        let f = |v: &str| vec![String::new(), String::new(), v.to_owned()];
        assert_eq!(parse_asn(&f("AS13335")).unwrap(), Some(13335));
        assert_eq!(parse_asn(&f("0")).unwrap(), None);
        assert!(parse_asn(&f("x1")).is_err());
        assert_eq!(parse_country(&f("au")).unwrap(), Country::parse("AU"));
        assert!(parse_country(&f("AUS")).is_err());
        assert!(parse_ip("16777216").unwrap_err().contains("-num.csv"));
    }
}
