#![allow(clippy::unwrap_used)]
//! Enrichment against the real ip-location-db data (fetched by `.ci/install-ip-data.sh`):
//! CSV ranges, MaxMind DB countries, precedence, malformed and missing files.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use vantage_collector::enrich::{EnrichConfig, EnrichError, Enricher};
use vantage_collector::model::Country;

/// The directory `.ci/install-ip-data.sh` fills; the test fails (never skips) without it.
fn ip_data() -> PathBuf {
    let dir = std::env::var_os("VANTAGE_IP_DATA")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vantage/ip-data"))
        })
        .expect("neither VANTAGE_IP_DATA nor HOME is set");
    assert!(
        dir.join("asn/asn-ipv4.csv").is_file()
            && dir.join("geo-whois-asn-country/geo-whois-asn-country-ipv6.csv").is_file()
            && dir.join("geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb").is_file(),
        "the IP data is missing from {}: run .ci/install-ip-data.sh first",
        dir.display()
    );
    dir
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn country(code: &str) -> Option<Country> {
    Some(Country::parse(code).unwrap())
}

fn asn_csv(dir: &std::path::Path) -> Vec<PathBuf> {
    vec![dir.join("asn/asn-ipv4.csv"), dir.join("asn/asn-ipv6.csv")]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn asn_from_the_real_csv_files() {
    let dir = ip_data();
    let config = EnrichConfig { asn_csv: asn_csv(&dir), ..EnrichConfig::default() };
    let rss_before = rss_kib();
    let started = Instant::now();
    let (enricher, warnings) = Enricher::load(&config).unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "loaded the ASN CSVs in {elapsed:?}; RSS grew by about {} KiB ({enricher:?})",
        rss_kib().saturating_sub(rss_before)
    );
    assert!(warnings.is_empty(), "{warnings:?}");
    assert!(enricher.is_enabled());

    // Values as the pinned data files say (1.0.0.0,1.0.0.255,13335,"Cloudflare, Inc.", ...).
    for (addr, asn) in [
        ("1.0.0.1", 13335),
        ("1.0.0.0", 13335),
        ("1.0.0.255", 13335),
        ("8.8.8.8", 15169),
        ("9.9.9.9", 19281),
        ("2606:4700:4700::1111", 13335),
        ("2001:4860:4860::8888", 15169),
        ("2001:4:112::1", 112),
        // IPv4-mapped IPv6 is looked up as IPv4.
        ("::ffff:1.0.0.1", 13335),
        // The data has one overlap: 214.95.0.0-215.0.255.255 (AS749), then 215.0.0.0-215.1.3.255
        // (AS721); the line listed first wins where they overlap.
        ("215.0.0.1", 749),
        ("215.0.255.255", 749),
        ("214.95.0.1", 749),
        ("215.1.0.1", 721),
    ] {
        assert_eq!(enricher.lookup(ip(addr)).asn, Some(asn), "{addr}");
    }
    // Just outside the first range (1.0.1.0-1.0.3.255 is in no range), private and
    // documentation space.
    for addr in ["1.0.1.1", "10.0.0.1", "192.0.2.1", "2001:db8::1", "::1"] {
        let e = enricher.lookup(ip(addr));
        assert_eq!(e.asn, None, "{addr}");
        assert_eq!(e.country, None, "{addr}");
    }
}

#[test]
fn country_from_the_real_mmdb_and_precedence_over_csv() {
    let dir = ip_data();
    let mmdb_dir = dir.join("geo-whois-asn-country-mmdb");
    let started = Instant::now();
    let (enricher, warnings) = Enricher::load(&EnrichConfig {
        country_mmdb: Some(mmdb_dir.join("geo-whois-asn-country.mmdb")),
        ..EnrichConfig::default()
    })
    .unwrap();
    eprintln!("opened the country MMDB in {:?}", started.elapsed());
    assert!(warnings.is_empty(), "{warnings:?}");
    // The package uses a top-level `country_code` field.
    for (addr, code) in [
        ("8.8.8.8", "US"),
        ("1.0.0.1", "AU"),
        ("2001:200::1", "AU"),
        ("2606:4700:4700::1111", "US"),
        ("2a00:1450:4001::1", "IE"),
        ("::ffff:8.8.8.8", "US"),
    ] {
        assert_eq!(enricher.lookup(ip(addr)).country, country(code), "{addr}");
    }
    assert_eq!(enricher.lookup(ip("10.0.0.1")).country, None);
    assert_eq!(enricher.lookup(ip("2001:4:112::1")).country, None);
    assert_eq!(enricher.lookup(ip("8.8.8.8")).asn, None);

    // An IPv4-only database answers nothing for IPv6 (instead of failing).
    let (v4_only, _) = Enricher::load(&EnrichConfig {
        country_mmdb: Some(mmdb_dir.join("geo-whois-asn-country-ipv4.mmdb")),
        ..EnrichConfig::default()
    })
    .unwrap();
    assert_eq!(v4_only.lookup(ip("8.8.8.8")).country, country("US"));
    assert_eq!(v4_only.lookup(ip("2001:200::1")).country, None);

    // MMDB first, CSV for what it does not know.
    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("country.csv");
    std::fs::write(&csv, "8.8.8.0,8.8.8.255,DE\n10.0.0.0,10.255.255.255,NZ\n").unwrap();
    let (both, _) = Enricher::load(&EnrichConfig {
        country_mmdb: Some(mmdb_dir.join("geo-whois-asn-country.mmdb")),
        country_csv: vec![csv],
        ..EnrichConfig::default()
    })
    .unwrap();
    assert_eq!(both.lookup(ip("8.8.8.8")).country, country("US"));
    assert_eq!(both.lookup(ip("10.1.2.3")).country, country("NZ"));
}

/// The country CSV and the MMDB of the same release are the same data: the CSV loader and the
/// maxminddb crate must agree on the first, middle and last address of a sample of ranges.
/// Ranges that overlap another are left out: the upstream MMDB build resolves those by a rule
/// of its own (the CSV loader: first listed wins).
#[test]
fn country_csv_and_mmdb_agree_on_the_real_data() {
    let dir = ip_data();
    let csv_dir = dir.join("geo-whois-asn-country");
    let csv_files = vec![
        csv_dir.join("geo-whois-asn-country-ipv4.csv"),
        csv_dir.join("geo-whois-asn-country-ipv6.csv"),
    ];
    let started = Instant::now();
    let (from_csv, warnings) =
        Enricher::load(&EnrichConfig { country_csv: csv_files.clone(), ..EnrichConfig::default() })
            .unwrap();
    eprintln!("loaded the country CSVs in {:?} ({from_csv:?})", started.elapsed());
    assert!(warnings.is_empty(), "{warnings:?}");
    let (from_mmdb, _) = Enricher::load(&EnrichConfig {
        country_mmdb: Some(dir.join("geo-whois-asn-country-mmdb/geo-whois-asn-country.mmdb")),
        ..EnrichConfig::default()
    })
    .unwrap();
    let mut checked = 0;
    for file in &csv_files {
        let text = std::fs::read_to_string(file).unwrap();
        let rows: Vec<(IpAddr, IpAddr, &str)> = text
            .lines()
            .map(|line| {
                let mut fields = line.split(',');
                let (start, end) = (ip(fields.next().unwrap()), ip(fields.next().unwrap()));
                (start, end, fields.next().unwrap())
            })
            .collect();
        // The file is sorted by start; a range overlaps another when it starts before the end
        // of any earlier one or ends after the start of the next.
        let mut overlapping = vec![false; rows.len()];
        let mut max_end: Option<IpAddr> = None;
        for i in 0..rows.len() {
            if max_end.is_some_and(|m| rows[i].0 <= m) {
                overlapping[i] = true;
            }
            if rows.get(i + 1).is_some_and(|next| next.0 <= rows[i].1) {
                overlapping[i] = true;
            }
            max_end = Some(max_end.map_or(rows[i].1, |m| m.max(rows[i].1)));
        }
        for (i, &(start, end, code)) in rows.iter().enumerate().step_by(97) {
            if overlapping[i] {
                continue;
            }
            let line = format!("{}: {start},{end},{code}", i + 1);
            let middle = match (start, end) {
                (IpAddr::V4(s), IpAddr::V4(e)) => {
                    let (s, e) = (u32::from(s), u32::from(e));
                    IpAddr::from(std::net::Ipv4Addr::from(s + (e - s) / 2))
                }
                (IpAddr::V6(s), IpAddr::V6(e)) => {
                    let (s, e) = (u128::from(s), u128::from(e));
                    IpAddr::from(std::net::Ipv6Addr::from(s + (e - s) / 2))
                }
                _ => panic!("mixed families in {line}"),
            };
            for addr in [start, middle, end] {
                assert_eq!(from_csv.lookup(addr).country, country(code), "csv {addr} ({line})");
                assert_eq!(from_mmdb.lookup(addr).country, country(code), "mmdb {addr} ({line})");
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "only {checked} addresses checked");
}

#[test]
fn malformed_csv_lines_are_errors_naming_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        ("1.0.0.0,1.0.0.255,13335,ok\n1.0.1.0,1.0.1.x,5,bad\n", 2, "range_end"),
        (
            "\n1.0.0.0,1.0.0.255,AS13335,\"Cloudflare, Inc.\"\n1.0.0.0,1.0.0.255,abc,x\n",
            3,
            "ASN \"abc\"",
        ),
        ("1.0.0.0,1.0.0.255,13335,\"unterminated\n", 1, "unterminated"),
        ("1.0.0.9,1.0.0.1,1,x\n", 1, "is after range_end"),
        ("1.0.0.0,::1,1,x\n", 1, "different address families"),
        ("16777216,16777471,13335,x\n", 1, "-num.csv"),
        ("1.0.0.0,1.0.0.255\n", 1, "at least 3 fields"),
    ];
    for (i, (text, line, needle)) in cases.into_iter().enumerate() {
        let path = tmp.path().join(format!("asn-{i}.csv"));
        std::fs::write(&path, text).unwrap();
        let err = Enricher::load(&EnrichConfig {
            asn_csv: vec![path.clone()],
            ..EnrichConfig::default()
        })
        .unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, EnrichError::Csv { line: l, .. } if l == line), "case {i}: {msg}");
        assert!(msg.starts_with(&format!("{}:{line}: ", path.display())), "case {i}: {msg}");
        assert!(msg.contains(needle), "case {i}: {msg}");
    }
    let path = tmp.path().join("country.csv");
    std::fs::write(&path, "1.0.0.0,1.0.0.255,AU\n1.0.1.0,1.0.1.255,Australia\n").unwrap();
    let err = Enricher::load(&EnrichConfig {
        country_csv: vec![path.clone()],
        ..EnrichConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("country.csv:2: "), "{err}");

    // A file that is not a MaxMind DB.
    let err =
        Enricher::load(&EnrichConfig { asn_mmdb: Some(path.clone()), ..EnrichConfig::default() })
            .unwrap_err();
    assert!(matches!(err, EnrichError::Mmdb { .. }), "{err}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[test]
fn missing_files_are_warnings_and_disable_that_source() {
    let tmp = tempfile::tempdir().unwrap();
    let present = tmp.path().join("asn.csv");
    std::fs::write(&present, "192.0.2.0,192.0.2.255,64500,Example\n").unwrap();
    let config = EnrichConfig {
        asn_mmdb: Some(tmp.path().join("GeoLite2-ASN.mmdb")),
        country_mmdb: Some(tmp.path().join("country.mmdb")),
        asn_csv: vec![tmp.path().join("asn-ipv6.csv"), present],
        country_csv: vec![tmp.path().join("country.csv")],
    };
    let (enricher, warnings) = Enricher::load(&config).unwrap();
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    for (warning, name) in
        warnings.iter().zip(["GeoLite2-ASN.mmdb", "country.mmdb", "asn-ipv6.csv", "country.csv"])
    {
        assert!(warning.contains(name), "{warning}");
        assert!(warning.contains("is off"), "{warning}");
    }
    assert!(enricher.is_enabled());
    assert_eq!(enricher.lookup(ip("192.0.2.7")).asn, Some(64500));
    assert_eq!(enricher.lookup(ip("192.0.3.7")).asn, None);

    let (nothing, warnings) = Enricher::load(&EnrichConfig {
        asn_csv: vec![tmp.path().join("nope.csv")],
        ..EnrichConfig::default()
    })
    .unwrap();
    assert_eq!(warnings.len(), 1);
    assert!(!nothing.is_enabled());
    assert!(!Enricher::disabled().is_enabled());
    assert_eq!(
        Enricher::disabled().lookup(ip("1.0.0.1")),
        vantage_collector::model::Enrichment::default()
    );
}
