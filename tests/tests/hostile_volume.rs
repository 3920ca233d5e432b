#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! Volume attacks on an in-process collector over loopback: one /24 (127.1.2.x) floods big
//! batches within its envelope rate, and is held to its byte and report budgets while a
//! legitimate client on another /24 (127.9.9.x) keeps getting every upload through. Every
//! acknowledged report is in the store; every refusal is a `429` with `Retry-After` naming the
//! budget's setting. Budgets are scaled down from the defaults so the tests take seconds.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use vantage_agent::entropy::SeededEntropy;
use vantage_agent::report::UnixMillis;
use vantage_agent::wire::AgentIdentity;
use vantage_collector::metrics::BudgetKind;
use vantage_collector::server::RunningCollector;
use vantage_tests::collector_proc::{HttpClient, seal_envelope, unix_now};
use vantage_tests::hostile;

type Setup = hostile::Target;

async fn start(limits: &str) -> Setup {
    Setup::start("", limits).await
}

const LEGIT: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 9, 9, 9));

/// Every report id in the store.
fn stored_ids(running: &RunningCollector) -> HashSet<[u8; 16]> {
    running
        .store()
        .scan_reports(UnixMillis(0), UnixMillis(u64::MAX))
        .map(|r| r.unwrap().id)
        .collect()
}

/// Ids are distinct per envelope, so the store's report count is the sum of what was
/// acknowledged; and every acknowledged id is there.
fn nothing_acknowledged_is_lost(running: &RunningCollector, acknowledged: &[[u8; 16]]) {
    let stored = stored_ids(running);
    let missing = acknowledged.iter().filter(|id| !stored.contains(*id)).count();
    assert_eq!(missing, 0, "{missing} acknowledged reports are not in the store");
}

/// One /24 posts 200-report batches back to back from 8 connections for 4 s, its envelope,
/// body and reports budgets lifted so that only its storage share, 40 kB/s (burst 80 kB),
/// can stop it. Its store growth stays within burst + rate x time, it gets `429` +
/// `Retry-After` naming `limits.prefix_store_bytes_per_sec`, and a legit client on another
/// /24 gets >= 99 % of its uploads acknowledged throughout. Nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_prefix_flooding_big_batches_is_held_to_its_storage_share() {
    const RATE: f64 = 40_000.0;
    const BURST: f64 = 80_000.0;
    let s = start(&format!(
        "prefix_rps = 100000.0\nprefix_burst = 100000\n\
         prefix_bytes_per_sec = 1000000000\nprefix_bytes_burst = 1000000000\n\
         prefix_reports_per_sec = 1000000.0\nprefix_reports_burst = 1000000\n\
         prefix_store_bytes_per_sec = {RATE}\nprefix_store_bytes_burst = {BURST}\n"
    ))
    .await;
    let public = s.key.public_key();
    let envelopes = hostile::big_envelopes(&public, 0xa1, 60, 200);
    let offered: u64 = envelopes.iter().map(|e| e.bytes.len() as u64).sum();
    let before = s.running.store().stats().bytes;
    let started = Instant::now();
    let attackers = hostile::sources(127, 1, 2, 8);
    let flood = hostile::volume_flood(s.plain, &attackers, envelopes, Duration::from_secs(4));
    let legit = hostile::legit_uploads(
        s.plain,
        LEGIT,
        0x1e,
        &public,
        100,
        Duration::from_millis(20),
        Duration::from_secs(10),
    );
    let (flood, legit) = tokio::join!(flood, legit);
    let elapsed = started.elapsed().as_secs_f64();
    let grown = s.running.store().stats().bytes - before;

    assert!(
        legit.accepted >= 99,
        "legit: {} of {} ({:?})",
        legit.accepted,
        legit.attempts(),
        legit.failures
    );
    assert!(flood.failures.is_empty(), "flood: {:?}", flood.failures);
    assert!(flood.accepted >= 1, "the budget admits its burst: {flood:?}");
    assert!(flood.refused >= 10, "the flood was not refused: {} refusals", flood.refused);
    assert_eq!(flood.refused_without_retry_after, 0);
    assert_eq!(
        flood.refusal_bodies,
        ["rate limited: source network over its budget (limits.prefix_store_bytes_per_sec)"]
    );
    // The attacker's share of growth: the store grew by at most its budget over the time it
    // ran, plus the legit client's reports (one each, well under 400 logical bytes).
    let allowed = BURST + RATE * elapsed + legit.accepted as f64 * 400.0;
    assert!(
        (grown as f64) <= allowed,
        "store grew {grown} bytes in {elapsed:.1} s, budget {allowed:.0} \
         ({} of 60 attack envelopes accepted)",
        flood.accepted
    );
    // Unlimited, the 60 batches (~1 MB of bodies) would all have been stored in the time.
    assert!(flood.accepted <= 10, "{} of 60 big batches accepted", flood.accepted);
    assert!(offered > 5 * grown, "offered {offered} bytes, grown {grown}");
    eprintln!(
        "flood: {} accepted, {} refused of {} posts; store grew {grown} bytes in {elapsed:.1} s \
         (budget {allowed:.0}); legit {}/{}",
        flood.accepted,
        flood.refused,
        flood.attempts,
        legit.accepted,
        legit.attempts()
    );
    let refusals = s.running.metrics().budget_refusal_count(BudgetKind::PrefixStoreBytes);
    // The flood waits for the answers to its posts in flight at its end, so it saw every
    // refusal of its /24; a legit upload refused (at most one, see above) may add one.
    assert!(
        (flood.refused..=flood.refused + legit.failures.len()).contains(&(refusals as usize)),
        "{refusals} counted, {} seen by the flood, legit failures {:?}",
        flood.refused,
        legit.failures
    );
    // The admin listener and the metrics family are there throughout.
    assert_eq!(hostile::get(s.admin, "/healthz", Duration::from_secs(5)).await, Ok(200));

    let mut acknowledged = flood.accepted_ids.clone();
    let legit_reports = legit.accepted as u64;
    acknowledged.sort_unstable();
    acknowledged.dedup();
    nothing_acknowledged_is_lost(&s.running, &acknowledged);
    // Nothing else was stored either: the flood never abandons a post (it waits for every
    // answer), so only a legit upload that timed out on the client's side (at most one, see
    // above) may have been stored without an acknowledgement seen.
    let legit_in_doubt = legit.failures.iter().filter(|f| *f == "timed out").count() as u64;
    let stored = s.running.store().stats().reports;
    let expected = acknowledged.len() as u64 + legit_reports;
    assert!(
        (expected..=expected + legit_in_doubt).contains(&stored),
        "{stored} reports stored, {} acknowledged to the flood + {legit_reports} to the legit \
         client ({legit_in_doubt} legit uploads timed out)",
        acknowledged.len()
    );
    s.running.shutdown().await.unwrap();
}

/// The per-/24 byte budget is charged on the body before anything is opened; the reports
/// budget after opening. A /24 over either gets `429` naming it, another /24 does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_bytes_and_reports_per_prefix_are_budgets_of_their_own() {
    let s = start(
        "prefix_bytes_per_sec = 1000\nprefix_bytes_burst = 60000\n\
         prefix_reports_per_sec = 1.0\nprefix_reports_burst = 250\n",
    )
    .await;
    let key = s.key.public_key();
    // 100-report envelopes: ~8.7 kB of body each.
    let big = hostile::big_envelopes(&key, 0xb1, 8, 100);
    let from = |c: u8| IpAddr::V4(Ipv4Addr::new(127, 1, c, 1));
    let mut client = HttpClient::connect_plain_from(s.plain, from(3)).await.unwrap();
    let mut statuses = Vec::new();
    let mut last_body = String::new();
    for e in &big[..4] {
        let (status, headers, body) =
            client.post_with_headers("/v1/envelopes", hostile_ct(), e.bytes.clone()).await.unwrap();
        statuses.push(status.as_u16());
        if status == 429 {
            assert!(headers.get("retry-after").is_some(), "429 without Retry-After");
            last_body = String::from_utf8_lossy(&body).into_owned();
        }
    }
    // 250 reports of burst: two 100-report batches, then the third is short.
    assert_eq!(statuses, [202, 202, 429, 429], "{last_body}");
    assert!(last_body.contains("limits.prefix_reports_per_sec"), "{last_body}");
    assert_eq!(s.running.metrics().budget_refusal_count(BudgetKind::PrefixReports), 2);

    // Body bytes: a /24 of its own sends 40 kB bodies of garbage; the body budget
    // refuses before anything is opened (no `malformed` for the refused ones).
    let mut c = HttpClient::connect_plain_from(s.plain, from(4)).await.unwrap();
    let junk = Bytes::from(vec![0x41u8; 40_000]);
    let mut refused_body = None;
    for _ in 0..3 {
        let (status, headers, body) =
            c.post_with_headers("/v1/envelopes", hostile_ct(), junk.clone()).await.unwrap();
        if status == 429 {
            let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!(retry >= 1);
            refused_body = Some(String::from_utf8_lossy(&body).into_owned());
        } else {
            assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        }
    }
    let refused_body = refused_body.expect("a second 40 kB body is over a 60 kB burst");
    assert!(refused_body.contains("limits.prefix_bytes_per_sec"), "{refused_body}");
    assert_eq!(s.running.metrics().budget_refusal_count(BudgetKind::PrefixBytes), 2);

    // Another /24 has its own budgets.
    let mut other = HttpClient::connect_plain_from(s.plain, from(5)).await.unwrap();
    let (status, _) = other.post_envelope(big[5].bytes.clone()).await.unwrap();
    assert_eq!(status, 202);
    let mut acknowledged = big[0].report_ids.clone();
    acknowledged.extend_from_slice(&big[1].report_ids);
    acknowledged.extend_from_slice(&big[5].report_ids);
    nothing_acknowledged_is_lost(&s.running, &acknowledged);
    assert_eq!(s.running.store().stats().reports, 300);
    s.running.shutdown().await.unwrap();
}

fn hostile_ct() -> &'static str {
    vantage_tests::collector_proc::ENVELOPE_CONTENT_TYPE
}

/// NEL uploads from a /24 draw on the same reports budget as its envelopes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nel_uploads_share_the_prefix_reports_budget() {
    let s = start("prefix_reports_per_sec = 0.5\nprefix_reports_burst = 60\n").await;
    let entry = |i: usize| {
        format!(
            r#"{{"age":100,"type":"network-error","url":"https://shop.example/{i}",
            "body":{{"sampling_fraction":1.0,"phase":"connection","type":"tcp.refused",
            "elapsed_time":5}}}}"#
        )
    };
    let upload = |n: usize, salt: usize| {
        let list: Vec<String> = (0..n).map(|i| entry(i + salt * 1000)).collect();
        Bytes::from(format!("[{}]", list.join(",")))
    };
    let from = IpAddr::V4(Ipv4Addr::new(127, 1, 6, 1));
    let mut c = HttpClient::connect_plain_from(s.plain, from).await.unwrap();
    let (status, body) =
        c.post("/v1/nel", "application/reports+json", upload(50, 1)).await.unwrap();
    assert_eq!(status, 204, "{}", String::from_utf8_lossy(&body));
    let (status, headers, body) =
        c.post_with_headers("/v1/nel", "application/reports+json", upload(50, 2)).await.unwrap();
    assert_eq!(status, 429);
    assert!(headers.get("retry-after").is_some());
    assert!(String::from_utf8_lossy(&body).contains("limits.prefix_reports_per_sec"));
    // The same /24's envelope of 20 reports is over the shared budget too (10 left).
    let mut rng = SeededEntropy::insecure_from_seed([3; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    let sealed = seal_envelope(&agent, &s.key.public_key(), 1, 20, unix_now(), &mut rng);
    let (status, _) = c.post_envelope(sealed.bytes.clone()).await.unwrap();
    assert_eq!(status, 429);
    // Another /24 is not affected.
    let mut other = HttpClient::connect_plain_from(s.plain, LEGIT).await.unwrap();
    let (status, _) = other.post_envelope(sealed.bytes.clone()).await.unwrap();
    assert_eq!(status, 202);
    nothing_acknowledged_is_lost(&s.running, &sealed.report_ids);
    assert_eq!(s.running.store().stats().reports, 70);
    s.running.shutdown().await.unwrap();
}

/// One agent key sending big batches is held to its reports budget, whichever address it
/// comes from; another agent on the same /24 is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_key_is_held_to_its_reports_budget() {
    let s = start("agent_reports_per_sec = 1.0\nagent_reports_burst = 150\n").await;
    let key = s.key.public_key();
    let mut rng = SeededEntropy::insecure_from_seed([4; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    let envelopes: Vec<_> =
        (1..=3).map(|seq| seal_envelope(&agent, &key, seq, 100, unix_now(), &mut rng)).collect();
    let mut statuses = Vec::new();
    let mut refusal = String::new();
    for (i, e) in envelopes.iter().enumerate() {
        // A new address each time: the agent key is what counts.
        let from = IpAddr::V4(Ipv4Addr::new(127, 1, 7 + i as u8, 1));
        let mut c = HttpClient::connect_plain_from(s.plain, from).await.unwrap();
        let (status, headers, body) =
            c.post_with_headers("/v1/envelopes", hostile_ct(), e.bytes.clone()).await.unwrap();
        statuses.push(status.as_u16());
        if status == 429 {
            let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            // 50 reports short at 1 report/s.
            assert!((49..=51).contains(&retry), "Retry-After {retry}");
            refusal = String::from_utf8_lossy(&body).into_owned();
        }
    }
    assert_eq!(statuses, [202, 429, 429], "{refusal}");
    assert!(refusal.starts_with("rate limited: agent key over its budget"), "{refusal}");
    assert!(refusal.contains("limits.agent_reports_per_sec"), "{refusal}");
    // Another agent from the first address's /24 gets through.
    let other = AgentIdentity::generate(&mut rng);
    let sealed = seal_envelope(&other, &key, 1, 100, unix_now(), &mut rng);
    let mut c = HttpClient::connect_plain_from(s.plain, IpAddr::V4(Ipv4Addr::new(127, 1, 7, 2)))
        .await
        .unwrap();
    let (status, _) = c.post_envelope(sealed.bytes.clone()).await.unwrap();
    assert_eq!(status, 202);
    let mut acknowledged = envelopes[0].report_ids.clone();
    acknowledged.extend_from_slice(&sealed.report_ids);
    nothing_acknowledged_is_lost(&s.running, &acknowledged);
    assert_eq!(s.running.metrics().budget_refusal_count(BudgetKind::AgentReports), 2);
    s.running.shutdown().await.unwrap();
}
