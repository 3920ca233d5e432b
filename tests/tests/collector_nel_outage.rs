#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! End to end: a browser NEL outage of a subdomain pages the service that owns the domain.
//!
//! ```text
//!  25 "browsers", one per loopback /24 (127.0.N.1, ten test ASNs), POST /v1/nel every second:
//!    warm-up   ok reports for nel.test and www.nel.test (sampling_fraction 0.1, as a NEL
//!              policy's success_fraction), a rare tcp.timed_out
//!    outage    missing.nel.test is NXDOMAIN: dns.name_not_resolved (phase dns), as Chromium
//!              sends it under an include_subdomains policy, next to the same ok reports
//!    recovery  ok reports only
//!        │
//!        ▼
//!  collector (plain listener, fast detector, webhook receiver)
//! ```
//!
//! Asserted: the subdomain's reports are filed under `nel.test` (its registrable domain, no
//! `[[nel.services]]` rule needed), the outage fires one page for the service with a dns
//! breakdown, `/v1/series` shows the dns group, and the recovery resolves the page without
//! paging anything (no `silence` page: the `ok` reports kept the service's clients active).
//! Chromium's own upload of the same report under an include_subdomains policy is checked in
//! `collector_nel_chromium.rs`; the bodies here have its shape.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use vantage_collector::config::Config;
use vantage_collector::server::{Collector, RunningCollector};
use vantage_tests::alert_sink::{AlertSink, Received};
use vantage_tests::collector_proc::{HttpClient, unix_now, write_collector_key};
use vantage_tests::sim::{FAST_DETECTOR_TOML, asn_of, country_of};

/// Distinct /24s the browsers upload from (the issue's goal: >= 20 networks).
const NETWORKS: u8 = 25;
/// Each browser uploads once per step.
const STEP: Duration = Duration::from_secs(1);
/// The agents' heartbeat is not involved; the detection goal of the fast detector tests.
const DETECTION_GOAL_MS: u64 = 2_000 + 20_000;

fn config(dir: &Path, notify: &str) -> Config {
    let (mut asn, mut country) = (String::new(), String::new());
    for net in 0..NETWORKS {
        asn.push_str(&format!("127.0.{net}.0,127.0.{net}.255,{},\"Test AS {net}\"\n", asn_of(net)));
        country.push_str(&format!("127.0.{net}.0,127.0.{net}.255,{}\n", country_of(net)));
    }
    std::fs::write(dir.join("asn.csv"), asn).unwrap();
    std::fs::write(dir.join("country.csv"), country).unwrap();
    let text = format!(
        "[server]\nlisten_plain = \"127.0.0.1:0\"\nlisten_admin = \"127.0.0.1:0\"\n\
         [keys]\nprivate_key_files = [\"collector.key\"]\n[store]\npath = \"data\"\n\
         [enrich]\nasn_csv = [\"asn.csv\"]\ncountry_csv = [\"country.csv\"]\n\
         [limits]\nnel_prefix_rps = 1000.0\nnel_prefix_burst = 1000\n\
         [log]\nlevel = \"warn\"\n{FAST_DETECTOR_TOML}{notify}"
    );
    Config::from_toml_str(&text, dir).unwrap()
}

/// One Reporting API entry with the fields Chromium sends. Every browser sends the same bytes
/// in one round (same page, same timings): byte-identical bodies from different networks are
/// different uploads and must all count.
fn entry(round: u64, url: &str, phase: &str, kind: &str, status: u16, sampling: f64) -> Value {
    json!({
        "age": 150 + round, "type": "network-error", "url": url,
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) HeadlessChrome/120.0.0.0",
        "body": {"sampling_fraction": sampling, "server_ip": if kind == "ok" { "192.0.2.10" } else { "" },
                 "protocol": if kind == "ok" { "http/1.1" } else { "" }, "method": "GET",
                 "status_code": status, "elapsed_time": 40, "phase": phase, "type": kind,
                 "referrer": ""}
    })
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Normal,
    Outage,
}

/// One upload per network: the browsers' ok reports, and the outage's dns failures.
async fn step(addr: SocketAddr, round: u64, phase: Phase) {
    for net in 0..NETWORKS {
        let mut entries = vec![
            entry(round, "https://nel.test/", "application", "ok", 200, 0.1),
            entry(round, "https://www.nel.test/app.js", "application", "ok", 200, 0.1),
        ];
        // A little background failure on a few networks, now and then.
        if (u64::from(net) + round) % 23 == 0 {
            entries.push(entry(
                round,
                "https://www.nel.test/",
                "connection",
                "tcp.timed_out",
                0,
                1.0,
            ));
        }
        if phase == Phase::Outage {
            for _ in 0..10 {
                entries.push(entry(
                    round,
                    "https://missing.nel.test/",
                    "dns",
                    "dns.name_not_resolved",
                    0,
                    1.0,
                ));
            }
        }
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, net, 1));
        let mut http = HttpClient::connect_plain_from(addr, source).await.unwrap();
        let body = Bytes::from(serde_json::to_vec(&entries).unwrap());
        let (status, answer) =
            http.post("/v1/nel", "application/reports+json", body).await.unwrap();
        assert!(status.is_success(), "upload from {source}: {status} {answer:?}");
    }
}

async fn get_json(admin: SocketAddr, path: &str) -> (u16, Value) {
    let mut c = HttpClient::connect_plain(admin).await.unwrap();
    let (status, body) = c.get(path).await.unwrap();
    (status.as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Steps every second until `done` holds for `/v1/alerts` or `limit` passes.
async fn run_until(
    running: &RunningCollector,
    round: &mut u64,
    phase: Phase,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> Option<Value> {
    let (plain, admin) = (running.plain_addr().unwrap(), running.admin_addr().unwrap());
    let started = Instant::now();
    while started.elapsed() < limit {
        let next = Instant::now() + STEP;
        step(plain, *round, phase).await;
        *round += 1;
        let (status, alerts) = get_json(admin, "/v1/alerts").await;
        assert_eq!(status, 200);
        if done(&alerts) {
            return Some(alerts);
        }
        // Pacing the simulated browsers, not waiting for readiness.
        tokio::time::sleep_until(next.into()).await;
    }
    None
}

fn firing(alerts: &Value) -> Vec<&Value> {
    alerts["firing"].as_array().unwrap().iter().collect()
}

fn paged<'a>(events: &'a [Received], event: &str) -> Vec<&'a Received> {
    events.iter().filter(|r| r.accepted() && r.json["event"] == event).collect()
}

fn is_service_alert(a: &Value) -> bool {
    a["slice"]["service"] == "nel.test" && a["slice"]["dim"]["kind"] == "service"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subdomain_dns_outage_pages_the_owning_service_once_and_its_recovery_pages_nothing() {
    let dir = tempfile::tempdir().unwrap();
    write_collector_key(dir.path(), [5; 32]);
    let sink = AlertSink::start().await;
    let notify = format!(
        "[notify]\nretry_base_ms = 100\n[[notify.receivers]]\nname = \"ops\"\nkind = \"webhook\"\n\
         url = {:?}\n",
        sink.url("/hook")
    );
    let running = Collector::start(config(dir.path(), &notify)).await.unwrap();
    let admin = running.admin_addr().unwrap();
    let mut round = 0;

    // Warm-up: the browsers' ok reports. Nothing may fire.
    let early = run_until(&running, &mut round, Phase::Normal, Duration::from_secs(25), |a| {
        !firing(a).is_empty()
    })
    .await;
    assert!(early.is_none(), "fired during warm-up: {early:#?}");
    let (status, series) = get_json(admin, "/v1/series?service=nel.test").await;
    assert_eq!(status, 200, "{series}");
    let points = series["points"].as_array().unwrap();
    assert!(points.len() >= 15, "{series:#}");

    // Outage: missing.nel.test does not resolve, from every network.
    let outage_start = unix_now().0;
    let fired = run_until(&running, &mut round, Phase::Outage, Duration::from_secs(40), |a| {
        firing(a).iter().any(|x| is_service_alert(x))
    })
    .await;
    let Some(fired) = fired else {
        let (_, series) = get_json(admin, "/v1/series?service=nel.test").await;
        let (_, alerts) = get_json(admin, "/v1/alerts").await;
        panic!(
            "no alert for nel.test while missing.nel.test was NXDOMAIN from 25 networks\n\
             series {series:#}\nalerts {alerts:#}"
        );
    };
    let alert = firing(&fired).into_iter().find(|a| is_service_alert(a)).unwrap().clone();
    let delay = alert["raised_at_ms"].as_u64().unwrap() - outage_start;
    println!("detection delay {delay} ms (goal {DETECTION_GOAL_MS} ms)");
    assert!(delay <= DETECTION_GOAL_MS, "{delay} ms: {alert:#}");
    assert_eq!(alert["inhibited_by"], Value::Null, "{alert:#}");
    assert!(alert["breakdown"]["dns"].as_u64().unwrap() > 0, "no dns breakdown: {alert:#}");
    assert!(alert["networks"].as_u64().unwrap() >= 20, "{alert:#}");
    let id = alert["id"].as_str().unwrap().to_owned();
    // No service was minted for the subdomain: everything is filed under nel.test.
    for a in firing(&fired) {
        assert_eq!(a["slice"]["service"], "nel.test", "{a:#}");
    }
    let (status, dns) = get_json(admin, "/v1/series?service=nel.test&dim=group&key=dns").await;
    assert_eq!(status, 200, "{dns}");
    assert!(
        dns["points"].as_array().unwrap().iter().any(|p| p["failing_clients"].as_u64() >= Some(20)),
        "the dns group never shows 20 failing networks: {dns:#}"
    );
    let (status, none) = get_json(admin, "/v1/series?service=missing.nel.test").await;
    assert_eq!(status, 404, "a service was minted for the subdomain: {none:#}");

    // Recovery: only ok reports again. The page resolves; nothing else pages.
    let resolved = run_until(&running, &mut round, Phase::Normal, Duration::from_secs(40), |a| {
        a["recent"].as_array().unwrap().iter().any(|x| x["id"] == id.as_str())
    })
    .await
    .expect("the nel.test alert did not resolve");
    assert!(firing(&resolved).is_empty(), "still firing after recovery: {resolved:#}");
    // Twice the resolve time again of ok traffic: a silence or any other page would show here.
    let late = run_until(&running, &mut round, Phase::Normal, Duration::from_secs(15), |a| {
        !firing(a).is_empty()
    })
    .await;
    assert!(late.is_none(), "something fired after the recovery: {late:#?}");
    assert!(
        sink.wait_until(Duration::from_secs(10), |r| !paged(r, "resolved").is_empty()).await,
        "no webhook for the resolution: {:?}",
        sink.received()
    );
    let hook = sink.received();
    let (fired, resolved) = (paged(&hook, "fired"), paged(&hook, "resolved"));
    assert_eq!((fired.len(), resolved.len()), (1, 1), "{hook:#?}");
    assert_eq!(fired[0].json["alert"]["id"], id.as_str());
    assert_eq!(resolved[0].json["alert"]["id"], id.as_str());
    running.shutdown().await.unwrap();
}
