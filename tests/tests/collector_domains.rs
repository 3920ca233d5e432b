#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! `vantage-collector check-domains`: the real binary resolves names against the project's DNS
//! server on loopback (never the host's resolver), maps addresses to ASNs with ip-location-db
//! CSVs written here, and exits 0 (no fail), 1 (a fail row) or 2 (bad spec).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;
use vantage_tests::collector_proc::collector_bin;
use vantage_tests::dns_server::{Answer, DnsServer, Zone};

/// The loopback DNS server, shared by the tests of this file.
fn dns() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let a = |s: &str| Answer::A(vec![s.parse::<Ipv4Addr>().unwrap()]);
        let mut zone = Zone::new();
        zone.set("api.shop.test", a("198.51.100.10"))
            .set("www.shop.test", a("198.51.100.11"))
            .set_ns("shop.test", &["ns1.dns-s.test", "ns2.dns-s.test"])
            // Separate in every way.
            .set("c1.vantage-a.test", a("192.0.2.10"))
            .set_ns("vantage-a.test", &["ns1.dns-a.test", "ns2.dns-a.test"])
            .set("c2.vantage-b.test", a("203.0.113.20"))
            .set_ns("vantage-b.test", &["ns.dns-b.test"])
            // One of its two name-server operators also serves the shop.
            .set("c3.vantage-c.test", a("100.64.0.30"))
            .set_ns("vantage-c.test", &["ns1.dns-c.test", "ns2.dns-s.test"])
            // Another /24, but the shop's autonomous system.
            .set("c4.vantage-d.test", a("198.51.101.40"))
            .set_ns("vantage-d.test", &["ns.dns-d.test"])
            // The shop's own registrable domain.
            .set("collect.shop.test", a("192.0.2.50"));
        let server = DnsServer::bind("127.0.0.1:0".parse().unwrap(), zone).unwrap();
        let addr = server.local_addr().unwrap();
        let _thread = server.spawn();
        addr
    })
}

/// ip-location-db ASN CSV: the test ranges and their autonomous systems.
const ASN_CSV: &str = "\
192.0.2.0,192.0.2.255,64496,\"Test AS A\"
198.51.100.0,198.51.101.255,64501,\"Shop Hosting, Inc.\"
203.0.113.0,203.0.113.255,64502,Test AS B
100.64.0.0,100.64.0.255,64503,Test AS C
";

const SERVICES: &str = r#"
[[services]]
name = "shop"
hosts = ["api.shop.test", "www.shop.test"]
"#;

/// Writes `spec.toml` (and `asn.csv` next to it) with the loopback server as `dns`.
fn write_spec(dir: &Path, body: &str) -> String {
    std::fs::write(dir.join("asn.csv"), ASN_CSV).unwrap();
    let text = format!(
        "dns = [\"{}\"]\ntimeout_ms = 2000\n{SERVICES}\n{body}\n[enrich]\nasn_csv = [\"asn.csv\"]\n",
        dns()
    );
    let path = dir.join("spec.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn run(args: &[&str]) -> Output {
    Command::new(collector_bin()).args(args).stdin(Stdio::null()).output().unwrap()
}

/// Runs `check-domains --json` on the collectors in `body`: (exit code, rows).
fn check(body: &str) -> (i32, Vec<Value>) {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), body);
    let out = run(&["check-domains", "--spec", &spec, "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!("not JSON ({e}): {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr))
    });
    (out.status.code().unwrap(), json["rows"].as_array().unwrap().clone())
}

/// The rows of `check` (as `(subject, verdict, detail)`).
fn rows<'a>(rows: &'a [Value], check: &str) -> Vec<(&'a str, &'a str, &'a str)> {
    rows.iter()
        .filter(|r| r["check"] == check)
        .map(|r| {
            (
                r["subject"].as_str().unwrap(),
                r["verdict"].as_str().unwrap(),
                r["detail"].as_str().unwrap(),
            )
        })
        .collect()
}

fn verdict<'a>(all: &'a [Value], check: &str, subject: &str) -> &'a str {
    let found = rows(all, check).into_iter().find(|r| r.0 == subject);
    found.unwrap_or_else(|| panic!("no {check} row for {subject}: {all:#?}")).1
}

const SEPARATE: &str = r#"
[[collectors]]
url = "https://c1.vantage-a.test"
addresses = ["192.0.2.11"]
[[collectors]]
url = "https://c2.vantage-b.test:8443"
"#;

#[test]
fn separate_collectors_pass_every_check() {
    let (code, all) = check(SEPARATE);
    assert_eq!(code, 0, "{all:#?}");
    assert!(all.iter().all(|r| r["verdict"] == "pass"), "{all:#?}");
    // Every check ran: names resolved through the loopback server, ASNs from the CSV.
    assert_eq!(
        rows(&all, "resolve"),
        [
            ("api.shop.test", "pass", "198.51.100.10"),
            ("c1.vantage-a.test", "pass", "192.0.2.10"),
            ("c2.vantage-b.test", "pass", "203.0.113.20"),
            ("www.shop.test", "pass", "198.51.100.11"),
        ]
    );
    let c1 = "c1.vantage-a.test vs service shop";
    assert_eq!(verdict(&all, "domain", c1), "pass");
    assert_eq!(verdict(&all, "prefix", "c1.vantage-a.test vs c2.vantage-b.test"), "pass");
    let asn = rows(&all, "asn");
    assert_eq!(asn.len(), 3, "{asn:#?}");
    assert_eq!(asn[0].2, "AS64496 / AS64501");
    let ns = rows(&all, "ns");
    assert!(ns.contains(&(
        "shop.test",
        "pass",
        "operators dns-s.test (ns1.dns-s.test, ns2.dns-s.test)"
    )));
    assert!(ns.iter().any(|r| r.0 == c1));
}

#[test]
fn a_collector_under_the_service_domain_fails() {
    let (code, all) = check("[[collectors]]\nurl = \"https://collect.shop.test\"\n");
    assert_eq!(code, 1);
    let subject = "collect.shop.test vs service shop";
    let domain = rows(&all, "domain");
    assert_eq!(domain.len(), 1);
    assert_eq!(domain[0].1, "fail");
    assert!(domain[0].2.contains("shop.test"), "{domain:?}");
    // Its name servers are the shop's: every one shared.
    assert_eq!(verdict(&all, "ns", subject), "fail");
    // Address and ASN differ, and say so.
    assert_eq!(verdict(&all, "prefix", subject), "pass");
    assert_eq!(verdict(&all, "asn", subject), "pass");
}

#[test]
fn a_collector_in_the_service_asn_fails() {
    let (code, all) = check("[[collectors]]\nurl = \"https://c4.vantage-d.test\"\n");
    assert_eq!(code, 1);
    let subject = "c4.vantage-d.test vs service shop";
    assert_eq!(verdict(&all, "domain", subject), "pass");
    assert_eq!(verdict(&all, "prefix", subject), "pass", "another /24");
    let asn = rows(&all, "asn");
    assert_eq!(asn, [(subject, "fail", "both in AS64501: one network's outage hits both")]);
    // A fixed address in the service's /24 fails the prefix check too.
    let (code, all) = check(
        "[[collectors]]\nurl = \"https://c1.vantage-a.test\"\naddresses = [\"198.51.100.200\"]\n",
    );
    assert_eq!(code, 1);
    let prefix = rows(&all, "prefix");
    assert_eq!(prefix, [("c1.vantage-a.test vs service shop", "fail", "both in 198.51.100.0/24")]);
}

#[test]
fn a_shared_name_server_operator_warns() {
    let body = format!("{SEPARATE}[[collectors]]\nurl = \"https://c3.vantage-c.test\"\n");
    let (code, all) = check(&body);
    assert_eq!(code, 0, "a warning is not a failure: {all:#?}");
    let subject = "c3.vantage-c.test vs service shop";
    let row = rows(&all, "ns").into_iter().find(|r| r.0 == subject).unwrap();
    assert_eq!((row.1, row.2), ("warn", "name-server operator dns-s.test serves both"));
    assert_eq!(verdict(&all, "ns", "vantage-c.test"), "pass");
    // The other pairs are clean.
    let warned: Vec<&str> = all
        .iter()
        .filter(|r| r["verdict"] != "pass")
        .map(|r| r["subject"].as_str().unwrap())
        .collect();
    assert_eq!(warned, [subject]);
}

#[test]
fn an_unresolvable_collector_is_a_fail_row() {
    let dir = tempfile::tempdir().unwrap();
    let body = format!("{SEPARATE}[[collectors]]\nurl = \"https://c9.missing.test\"\n");
    let spec = write_spec(dir.path(), &body);
    let out = run(&["check-domains", "--spec", &spec]);
    assert_eq!(out.status.code(), Some(1));
    let table = String::from_utf8(out.stdout).unwrap();
    let line = |check: &str, subject: &str| {
        let found = table.lines().find(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some(check) && words.next() == Some(subject)
        });
        found.unwrap_or_else(|| panic!("no {check} {subject} in\n{table}")).to_owned()
    };
    // The table is aligned: every verdict starts in the column of the header's VERDICT.
    let column = table.lines().next().unwrap().find("VERDICT").unwrap();
    let resolve = line("resolve", "c9.missing.test");
    assert_eq!(&resolve[column..column + 4], "fail", "{table}");
    assert!(resolve.contains("does not resolve") && resolve.contains("no records"), "{resolve}");
    let ns = line("ns", "missing.test");
    assert_eq!(&ns[column..column + 4], "fail", "{table}");
    assert!(table.lines().last().unwrap().ends_with(" 2 fail"), "{table}");
    // Only the two lookups failed; the other collectors were still checked.
    assert_eq!(table.lines().filter(|l| l.get(column..column + 4) == Some("fail")).count(), 2);
    assert!(table.contains("c1.vantage-a.test vs c2.vantage-b.test"));
}

#[test]
fn the_dns_flag_overrides_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("asn.csv"), ASN_CSV).unwrap();
    // The spec's server is a closed loopback port; --dns points to the real one.
    let closed = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let spec = dir.path().join("spec.toml");
    std::fs::write(&spec, format!("dns = [\"{closed}\"]\ntimeout_ms = 2000\n{SERVICES}{SEPARATE}"))
        .unwrap();
    let dns = dns().to_string();
    let out = run(&["check-domains", "--spec", spec.to_str().unwrap(), "--dns", &dns, "--json"]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{json:#}");
    // Without an [enrich] section ASNs are unknown, which is a warning, not a failure.
    assert_eq!(json["summary"]["fail"], 0);
    let rows = json["rows"].as_array().unwrap();
    assert_eq!(verdict(rows, "asn", "enrichment"), "warn");
    assert_eq!(verdict(rows, "resolve", "c1.vantage-a.test"), "pass");
}

#[test]
fn a_bad_spec_exits_2_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.toml");
    let cases: [(&str, &[&str]); 4] = [
        (
            "[[services]]\nname = \"shop\"\nhosts = [\"api.shop.test\"]\n[[collectors]]\nurl = \"c1.vantage-a.test\"\naddresses = [\"192.0.2.300\"]\n",
            &["collectors[0].url: ", "collectors[0].addresses[0]: "],
        ),
        (
            "[[collectors]]\nurl = \"https://c1.vantage-a.test\"\n",
            &["services: at least one service"],
        ),
        ("dns = [\"resolver.example\"]\n", &["dns[0]: "]),
        ("[[services]]\nname = \"shop\"\nhosts = [\"a.test\"]\nport = 1\n", &["port"]),
    ];
    for (text, expected) in cases {
        std::fs::write(&spec, text).unwrap();
        let out = run(&["check-domains", "--spec", spec.to_str().unwrap()]);
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}\n{stderr}");
        assert!(out.stdout.is_empty());
        for e in expected {
            assert!(stderr.contains(e), "{e:?} missing from:\n{stderr}");
        }
    }
    // An enrichment file that exists but is not ASN data is bad input too.
    std::fs::write(dir.path().join("asn.csv"), "not,a,csv\n").unwrap();
    std::fs::write(&spec, format!("{SERVICES}{SEPARATE}[enrich]\nasn_csv = [\"asn.csv\"]\n"))
        .unwrap();
    let out = run(&["check-domains", "--spec", spec.to_str().unwrap(), "--dns", "127.0.0.1:9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("enrich: "));
    // And a missing file.
    let out = run(&["check-domains", "--spec", dir.path().join("nope.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));
}
