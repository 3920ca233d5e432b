#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! A `202` that holds: the collector refuses, with `400` naming the field, any report its
//! retention pass would delete (observed at time 0, 40 days ago) and any envelope older than its
//! dedup horizon; an absurd `vantage-sent-at` is ignored instead of dating reports at time 0;
//! and what was acknowledged survives the next retention pass.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_agent::entropy::SeededEntropy;
use vantage_agent::report::{AppInfo, Batch, Report, UnixMillis};
use vantage_agent::taxonomy::ErrorType;
use vantage_agent::wire::{AgentIdentity, seal_batch};
use vantage_collector::config::Config;
use vantage_collector::open::CollectorKey;
use vantage_collector::server::Collector;
use vantage_tests::collector_proc::unix_now;

const DAY: u64 = 86_400_000;

fn envelope(
    key: &CollectorKey,
    rng: &mut SeededEntropy,
    seq: u64,
    created_at: UnixMillis,
    observed_at: UnixMillis,
) -> (Vec<u8>, [u8; 16]) {
    let agent = AgentIdentity::generate(rng);
    let report = Report::builder("checkout", "api.example.com", ErrorType::TcpRefused)
        .observed_at(observed_at)
        .build(rng, created_at)
        .unwrap();
    let id = report.id().0;
    let app = AppInfo::new("com.example.admission", "1", "linux", "rust").unwrap();
    let batch = Batch::new(agent.public_key(), seq, created_at, app).with_reports(vec![report]);
    (seal_batch(&batch, &agent, &key.public_key(), rng).unwrap(), id)
}

async fn post(addr: std::net::SocketAddr, body: &[u8], sent_at: Option<&str>) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!(
        "POST /v1/envelopes HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\
         content-type: application/vnd.vantage.envelope+cbor\r\ncontent-length: {}\r\n",
        body.len()
    );
    if let Some(v) = sent_at {
        head.push_str(&format!("vantage-sent-at: {v}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(body).await.unwrap();
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await.unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

#[tokio::test]
async fn reports_retention_would_delete_are_refused_and_a_202_survives_retention() {
    let dir = tempfile::tempdir().unwrap();
    let key = CollectorKey::from_seed([8; 32]);
    std::fs::write(dir.path().join("collector.key"), hex::encode(key.secret_bytes())).unwrap();
    let config = Config::from_toml_str(
        "[server]\nlisten_plain = \"127.0.0.1:0\"\n[keys]\nprivate_key_files = [\"collector.key\"]\n\
         [store]\npath = \"data\"\nretention_days = 30\n",
        dir.path(),
    )
    .unwrap();
    let collector = Collector::start(config).await.unwrap();
    let addr = collector.plain_addr().unwrap();
    let mut rng = SeededEntropy::insecure_from_seed([3; 32]);
    let now = unix_now();

    // Observed at time 0, and 40 days ago: refused, naming the field.
    for observed in [UnixMillis(0), UnixMillis(now.0 - 40 * DAY)] {
        let (bytes, _) = envelope(&key, &mut rng, 1, now, observed);
        let (status, body) = post(addr, &bytes, None).await;
        assert_eq!(status, 400, "{body}");
        assert!(body.starts_with("timestamp: batch.reports[0].observed_at"), "{body}");
    }
    // An envelope made 40 days ago (past the dedup horizon): refused, naming batch.created_at.
    let old = UnixMillis(now.0 - 40 * DAY);
    let (bytes, _) = envelope(&key, &mut rng, 2, old, old);
    let (status, body) = post(addr, &bytes, None).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.starts_with("timestamp: batch.created_at"), "{body}");

    // An absurd sent-at is ignored: the report is dated by its age at sealing, not at time 0.
    let (bytes, kept) = envelope(&key, &mut rng, 3, now, UnixMillis(now.0 - 1_000));
    let (status, body) = post(addr, &bytes, Some("18446744073709551615")).await;
    assert_eq!((status, body.as_str()), (202, "stored\n"));
    // 29 days old: inside the retention, accepted.
    let (bytes, kept_old) = envelope(&key, &mut rng, 4, now, UnixMillis(now.0 - 29 * DAY));
    let (status, body) = post(addr, &bytes, None).await;
    assert_eq!((status, body.as_str()), (202, "stored\n"));

    // The retention passes of the next hour keep both.
    let store = collector.store().clone();
    for after in [Duration::ZERO, Duration::from_secs(300), Duration::from_secs(3_600)] {
        let at = UnixMillis(unix_now().0 + after.as_millis() as u64);
        let stats = store.enforce_retention(at).unwrap();
        assert_eq!(stats.expired_reports, 0, "retention at +{after:?}: {stats:?}");
        let ids: Vec<[u8; 16]> = store
            .scan_reports(UnixMillis(0), UnixMillis(u64::MAX))
            .map(|r| r.unwrap().id)
            .collect();
        assert!(ids.contains(&kept) && ids.contains(&kept_old), "after +{after:?}");
    }
    let stored = store.scan_reports(UnixMillis(0), UnixMillis(u64::MAX)).count();
    assert_eq!(stored, 2);
    collector.shutdown().await.unwrap();
}
