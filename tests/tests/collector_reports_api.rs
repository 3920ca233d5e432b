#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! `GET /v1/reports` on the admin listener of a real collector: simulated agents (real agent
//! cores on loopback /24s mapped to test ASNs and countries) report failures of two services
//! through the plain listener; the admin API must list exactly those reports, filter them by
//! service, type, phase, ASN, country and time, page through them with a cursor without losing
//! or repeating one, refuse a bad or unknown parameter with a 400 naming it, and sit behind
//! the admin listener's Host allowlist and bearer token.
//!
//! ```text
//!  Population (24 clients, 12 /24s) ── POST /v1/envelopes ──▶ collector ──▶ sled store
//!                                                                   │
//!  test ── GET /v1/reports?... (Authorization: Bearer, Host) ──▶ admin listener
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use vantage_agent::taxonomy::ErrorType;
use vantage_collector::config::Config;
use vantage_collector::open::CollectorKey;
use vantage_tests::collector_proc::HttpClient;
use vantage_tests::sim::{ClientInfo, Population, PopulationConfig, asn_of, country_of};

const TOKEN: &str = "reports-api-test-token";

/// shop: clients on even networks are refused; search: AS64501's clients cannot resolve it.
fn outcome(c: &ClientInfo, service: &str) -> Option<ErrorType> {
    match service {
        "shop" if c.net % 2 == 0 => Some(ErrorType::TcpRefused),
        "search" if c.asn == asn_of(1) => Some(ErrorType::DnsNameNotResolved),
        _ => None,
    }
}

fn config(dir: &Path, fleet: &Population) -> Config {
    let key = CollectorKey::from_seed([9; 32]);
    std::fs::write(dir.join("collector.key"), hex::encode(key.secret_bytes())).unwrap();
    let token = dir.join("admin.token");
    std::fs::write(&token, TOKEN).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (asn, country) = fleet.write_enrichment(dir).unwrap();
    let text = format!(
        "[server]\nlisten_plain = \"127.0.0.1:0\"\nlisten_admin = \"127.0.0.1:0\"\n\
         admin_token_file = \"admin.token\"\n\
         [keys]\nprivate_key_files = [\"collector.key\"]\n[store]\npath = \"data\"\n\
         [enrich]\nasn_csv = [{asn:?}]\ncountry_csv = [{country:?}]\n[log]\nlevel = \"warn\"\n"
    );
    Config::from_toml_str(&text, dir).unwrap()
}

struct Admin(SocketAddr);

impl Admin {
    async fn raw(&self, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
        let mut c = HttpClient::connect_plain(self.0).await.unwrap();
        let (status, body) = c.get_with(path, headers).await.unwrap();
        (status.as_u16(), String::from_utf8(body.to_vec()).unwrap())
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let auth = format!("Bearer {TOKEN}");
        let (status, body) = self.raw(path, &[("authorization", &auth)]).await;
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    /// A 200 answer's body.
    async fn ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    /// Every report of `query`, one page of `limit` at a time, and the pages' sizes.
    async fn all_pages(&self, query: &str, limit: usize) -> (Vec<Value>, Vec<usize>) {
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/reports?{query}&limit={limit}");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.ok(&path).await;
            let reports = page["reports"].as_array().unwrap();
            assert!(reports.len() <= limit, "{path}: {} reports", reports.len());
            sizes.push(reports.len());
            out.extend(reports.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => return (out, sizes),
            }
            assert!(sizes.len() < 1000, "paging does not end");
        }
    }
}

fn count(reports: &[Value]) -> u64 {
    reports.iter().map(|r| r["count"].as_u64().unwrap()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_are_listed_filtered_paged_bounded_and_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let key = CollectorKey::from_seed([9; 32]);
    let config_fleet = PopulationConfig { clients: 24, networks: 12, ..Default::default() };
    let mut fleet = Population::new(config_fleet, key.public_key());
    let running =
        vantage_collector::server::Collector::start(config(dir.path(), &fleet)).await.unwrap();
    let (plain, admin) = (running.plain_addr().unwrap(), running.admin_addr().unwrap());
    let admin = Admin(admin);

    // Failures in three rounds a little apart (so `since`/`until` have something to split),
    // then everything pending delivered.
    let shop_failures = std::cell::Cell::new(0u64);
    let counted = |c: &ClientInfo, service: &str| {
        let o = outcome(c, service);
        if o.is_some() && service == "shop" {
            shop_failures.set(shop_failures.get() + 1);
        }
        o
    };
    let mut failures = 0;
    for _ in 0..3 {
        let stats = fleet.step(plain, 2, counted).await;
        assert_eq!(stats.rejected, 0, "{stats:?}");
        failures += stats.failures;
        // Pacing the rounds apart in event time, not waiting for anything.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let stats = fleet.flush(plain).await;
    assert_eq!(stats.rejected, 0, "{stats:?}");
    let shop = shop_failures.get();
    assert!(shop > 0 && failures > shop, "{shop} of {failures}");

    // Everything arrives (the collector acknowledges after the durable write).
    let deadline = Instant::now() + Duration::from_secs(20);
    let all = loop {
        let page = admin.ok("/v1/reports?limit=1000").await;
        let reports = page["reports"].as_array().unwrap().clone();
        if count(&reports) >= failures || Instant::now() > deadline {
            assert!(page["next_cursor"].is_null(), "{page}");
            break reports;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(count(&all), failures, "every recorded failure is listed once");

    // Newest first; only what the store keeps, never an address.
    let times: Vec<u64> = all.iter().map(|r| r["event_ms"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "not newest first: {times:?}");
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains("127.0."), "a client address leaked: {text}");
    for r in &all {
        let fields: BTreeSet<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
        let want: BTreeSet<&str> = [
            "event_ms",
            "received_ms",
            "service",
            "host",
            "source",
            "phase",
            "type",
            "status",
            "elapsed_ms",
            "network",
            "scope",
            "count",
            "asn",
            "country",
        ]
        .into();
        assert_eq!(fields, want, "{r}");
        assert_eq!(r["host"], format!("{}.example", r["service"].as_str().unwrap()));
        assert_eq!(r["source"], "agent");
    }

    // Filters: each result passes its filter, and the counts are the ones sent.
    let shop_reports = admin.ok("/v1/reports?service=shop&limit=1000").await;
    let shop_reports = shop_reports["reports"].as_array().unwrap();
    assert!(shop_reports.iter().all(|r| r["service"] == "shop" && r["type"] == "tcp.refused"));
    assert_eq!(count(shop_reports), shop, "shop failures");
    let tcp = admin.ok("/v1/reports?type=tcp&limit=1000").await;
    assert_eq!(tcp["reports"], Value::Array(shop_reports.clone()), "type=tcp is shop's failures");
    let dns = admin.ok("/v1/reports?type=dns.name_not_resolved&phase=dns&limit=1000").await;
    let dns = dns["reports"].as_array().unwrap();
    assert_eq!(count(dns), failures - shop, "the other failures are search's DNS ones");
    assert!(dns.iter().all(|r| r["service"] == "search" && r["asn"] == asn_of(1)));
    assert_eq!(admin.ok("/v1/reports?type=tls").await["reports"], serde_json::json!([]));
    let by_asn = admin.ok(&format!("/v1/reports?asn=AS{}&limit=1000", asn_of(2))).await;
    let by_asn = by_asn["reports"].as_array().unwrap();
    assert!(!by_asn.is_empty() && by_asn.iter().all(|r| r["asn"] == asn_of(2)));
    let by_country =
        admin.ok(&format!("/v1/reports?country={}&limit=1000", country_of(1).to_lowercase())).await;
    let by_country = by_country["reports"].as_array().unwrap();
    assert!(!by_country.is_empty() && by_country.iter().all(|r| r["country"] == country_of(1)));
    let none = admin.ok(&format!("/v1/reports?service=shop&asn={}", asn_of(1))).await;
    assert_eq!(none["reports"], serde_json::json!([]), "shop fails only on even networks");

    // Time: `until` is exclusive, `since` inclusive; the two halves make the whole.
    let mid = times[times.len() / 2];
    let before = admin.ok(&format!("/v1/reports?until={mid}&limit=1000")).await;
    let after = admin.ok(&format!("/v1/reports?since={mid}&limit=1000")).await;
    let (before, after) =
        (before["reports"].as_array().unwrap(), after["reports"].as_array().unwrap());
    assert!(before.iter().all(|r| r["event_ms"].as_u64().unwrap() < mid));
    assert!(after.iter().all(|r| r["event_ms"].as_u64().unwrap() >= mid));
    assert_eq!(before.len() + after.len(), all.len());
    let future =
        admin.ok("/v1/reports?since=2100-01-01T00:00:00Z&until=2100-01-02T00:00:00Z").await;
    assert_eq!(future["reports"], serde_json::json!([]));

    // Paging: small pages give the same reports, in the same order, none twice.
    let (paged, sizes) = admin.all_pages("", 7).await;
    assert!(sizes.len() >= all.len() / 7, "{sizes:?}");
    assert!(sizes[..sizes.len() - 1].iter().all(|&n| n == 7), "{sizes:?}");
    assert_eq!(paged, all);
    let (paged_shop, _) = admin.all_pages("service=shop", 5).await;
    assert_eq!(paged_shop, *shop_reports);

    // Bounds and mistakes: 400 naming the parameter.
    for (query, name) in [
        ("limit=1001", "`limit`"),
        ("limit=0", "`limit`"),
        ("servce=shop", "`servce`"),
        ("asn=sixty", "`asn`"),
        ("country=Germany", "`country`"),
        ("type=TCP!", "`type`"),
        ("phase=tls", "`phase`"),
        ("since=yesterday", "`since`"),
        ("since=20&until=10", "`since`"),
        ("cursor=abc", "`cursor`"),
    ] {
        let (status, body) = admin.get(&format!("/v1/reports?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        let e = body["error"].as_str().unwrap();
        assert!(e.contains(name), "{query}: {e}");
    }

    // The admin guard: the token, and an allowed Host, are required.
    let (status, _) = admin.raw("/v1/reports", &[]).await;
    assert_eq!(status, 401, "no token");
    let (status, _) = admin.raw("/v1/reports", &[("authorization", "Bearer wrong")]).await;
    assert_eq!(status, 401, "wrong token");
    let auth = format!("Bearer {TOKEN}");
    let (status, _) =
        admin.raw("/v1/reports", &[("authorization", &auth), ("host", "rebound.example")]).await;
    assert_eq!(status, 403, "a Host outside server.admin_hosts");

    running.shutdown().await.unwrap();
}
