#![allow(clippy::unwrap_used)]
//! The collector's sled store with real files in temp dirs: round trips, range scans, dedup,
//! duplicates by digest across sequence gaps, group commit under concurrency, retention, close/reopen, corruption.

use std::path::Path;
use std::time::Duration;

use vantage_agent::report::UnixMillis;
use vantage_agent::taxonomy::{ErrorType, NetworkType, Phase, Scope};
use vantage_collector::model::{
    Country, Enrichment, IngestBatch, NetTag, Origin, Source, StoredReport, StoredTargets,
};
use vantage_collector::store::{CommitOutcome, Store, StoreConfig, StoreError, StoreStats};

fn report(id: u64, event_at: u64) -> StoredReport {
    let mut rid = [0u8; 16];
    rid[..8].copy_from_slice(&id.to_be_bytes());
    StoredReport {
        id: rid,
        received_at: UnixMillis(event_at + 1_000),
        event_at: UnixMillis(event_at),
        source: Source::Agent,
        service: "checkout".into(),
        host: "api.example.com".into(),
        phase: Phase::Connection,
        error_type: ErrorType::TcpRefused,
        elapsed_ms: 31,
        status: None,
        network: NetworkType::Cellular,
        scope: Scope::Path,
        count: 3,
        sample_ppm: 250_000,
        client: Some([7; 32]),
        net: NetTag(0xdead_beef_0000_0001),
        enrichment: Enrichment { asn: Some(13335), country: Country::parse("AU") },
    }
}

fn targets(index: u8, event_at: u64) -> StoredTargets {
    StoredTargets {
        received_at: UnixMillis(event_at + 1_000),
        event_at: UnixMillis(event_at),
        service: "checkout".into(),
        host: format!("h{index}.example.com"),
        attempts: 1_000 + u64::from(index),
        successes: 990,
        client: [7; 32],
        net: NetTag(42),
        enrichment: Enrichment::default(),
    }
}

fn digest(n: u64) -> [u8; 32] {
    let mut d = [0xa5; 32];
    d[..8].copy_from_slice(&n.to_be_bytes());
    d
}

/// An agent envelope made when its last report or count was received.
fn batch(n: u64, reports: Vec<StoredReport>, targets: Vec<StoredTargets>) -> IngestBatch {
    let created_at = reports
        .iter()
        .map(|r| r.received_at)
        .chain(targets.iter().map(|t| t.received_at))
        .max()
        .unwrap_or(UnixMillis(0));
    IngestBatch {
        digest: digest(n),
        origin: Origin::Agent { key: [0; 32], seq: n, created_at },
        reports,
        targets,
        agent_drops: Vec::new(),
        agent_app: String::new(),
    }
}

fn stored(reports: usize, targets: usize) -> CommitOutcome {
    CommitOutcome::Stored { reports, targets }
}

fn all_reports(store: &Store) -> Vec<StoredReport> {
    store.scan_reports(UnixMillis(0), UnixMillis(u64::MAX)).map(Result::unwrap).collect()
}

async fn reopen(store: Store, config: StoreConfig) -> Store {
    store.close().await.unwrap();
    drop(store);
    Store::open(config).unwrap()
}

#[tokio::test]
async fn every_field_round_trips_through_disk() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(dir.path().join("data"));
    let store = Store::open(config.clone()).unwrap();

    let agent = report(1, 1_700_000_000_000);
    let mut nel = report(2, 1_700_000_000_500);
    nel.source = Source::Nel;
    nel.phase = Phase::Application;
    nel.error_type = ErrorType::HttpError;
    nel.status = Some(503);
    nel.client = None;
    nel.network = NetworkType::Unknown;
    nel.scope = Scope::Unknown;
    nel.enrichment = Enrichment::default();
    nel.host = "ünïcode.example".into();
    let mut future = report(3, 1_700_000_000_900);
    future.error_type = ErrorType::Other("quic.handshake_timeout".into());
    future.elapsed_ms = u32::MAX;
    future.count = u32::MAX;
    future.enrichment.asn = Some(u32::MAX);
    let t = targets(1, 1_700_000_000_000);

    let b = IngestBatch {
        digest: digest(1),
        origin: Origin::Agent { key: [9; 32], seq: 17, created_at: UnixMillis(1_700_000_001_000) },
        reports: vec![agent.clone(), nel.clone(), future.clone()],
        targets: vec![t.clone()],
        agent_drops: Vec::new(),
        agent_app: String::new(),
    };
    assert_eq!(store.commit(b).await.unwrap(), stored(3, 1));
    let expected = vec![agent, nel, future];
    assert_eq!(all_reports(&store), expected);

    let store = reopen(store, config).await;
    assert_eq!(all_reports(&store), expected);
    let got: Vec<_> =
        store.scan_targets(UnixMillis(0), UnixMillis(u64::MAX)).map(Result::unwrap).collect();
    assert_eq!(got, vec![t]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn range_scans_are_half_open_and_in_event_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(StoreConfig::new(dir.path())).unwrap();
    // Committed out of order, ids chosen so id order differs from time order.
    let times = [300u64, 100, 200, 200, 299, 301];
    for (i, &t) in times.iter().enumerate() {
        let id = 100 - i as u64;
        store
            .commit(batch(i as u64, vec![report(id, t)], vec![targets(i as u8, t)]))
            .await
            .unwrap();
    }
    let scan = |from, to| -> Vec<u64> {
        store
            .scan_reports(UnixMillis(from), UnixMillis(to))
            .map(|r| r.unwrap().event_at.0)
            .collect()
    };
    assert_eq!(scan(0, u64::MAX), [100, 200, 200, 299, 300, 301]);
    assert_eq!(scan(200, 300), [200, 200, 299]);
    assert_eq!(scan(100, 101), [100]);
    assert_eq!(scan(101, 200), Vec::<u64>::new());
    assert_eq!(scan(300, 200), Vec::<u64>::new());
    // Equal times come back in id order (the key's second part).
    let same: Vec<_> =
        store.scan_reports(UnixMillis(200), UnixMillis(201)).map(|r| r.unwrap().id).collect();
    assert!(same[0] < same[1]);
    let t: Vec<u64> = store
        .scan_targets(UnixMillis(200), UnixMillis(301))
        .map(|r| r.unwrap().event_at.0)
        .collect();
    assert_eq!(t, [200, 200, 299, 300]);
    store.close().await.unwrap();
}

#[tokio::test]
async fn duplicates_by_digest_and_by_report_id() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(dir.path());
    let store = Store::open(config.clone()).unwrap();
    let b = batch(1, vec![report(1, 10), report(2, 11)], vec![targets(0, 10)]);
    assert_eq!(store.commit(b.clone()).await.unwrap(), stored(2, 1));
    let before = store.stats();
    assert_eq!(store.commit(b.clone()).await.unwrap(), CommitOutcome::Duplicate);
    assert_eq!(store.stats(), StoreStats { disk_bytes: store.stats().disk_bytes, ..before });

    // A later upload re-sending report 2 (its event time shifted by a few ms on the way) and
    // a new report 3: only report 3 is new.
    let mut resent = report(2, 14);
    resent.received_at = UnixMillis(2_000);
    let b2 = batch(2, vec![resent, report(3, 12)], vec![]);
    assert_eq!(store.commit(b2).await.unwrap(), stored(1, 0));
    assert_eq!(store.stats().reports, 3);

    // Dedup state survives a reopen.
    let store = reopen(store, config).await;
    assert_eq!(store.commit(b).await.unwrap(), CommitOutcome::Duplicate);
    assert_eq!(store.stats().reports, 3);
    store.close().await.unwrap();
}

#[tokio::test]
async fn sequence_numbers_never_make_a_new_envelope_a_duplicate() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(dir.path());
    let store = Store::open(config.clone()).unwrap();
    let mut n = 0;
    let mut send = |key: u8, seq: u64| {
        n += 1;
        IngestBatch {
            digest: digest(n),
            origin: Origin::Agent { key: [key; 32], seq, created_at: UnixMillis(2_000 + n) },
            reports: vec![report(n, 1_000 + n)],
            targets: vec![],
            agent_drops: Vec::new(),
            agent_app: String::new(),
        }
    };
    // Restarts move an agent's numbers up by 10,000; older envelopes arrive after newer ones,
    // gaps up to 2^32 and beyond: every new envelope (new digest) is stored.
    for seq in [40_001, 30_001, 20_001, 10_001, 1, 1 << 32, 5, u64::MAX, 0] {
        assert_eq!(store.commit(send(1, seq)).await.unwrap(), stored(1, 0), "seq {seq}");
    }
    // Even the same (key, seq) under another digest is a different envelope, not a retry.
    assert_eq!(store.commit(send(1, 5)).await.unwrap(), stored(1, 0));
    assert_eq!(store.stats().reports, 10);
    // A retry is the same bytes: the same digest, whatever its sequence number says.
    let retry = IngestBatch {
        digest: digest(3),
        origin: Origin::Agent { key: [1; 32], seq: 20_001, created_at: UnixMillis(2_003) },
        reports: vec![report(3, 1_003)],
        targets: vec![],
        agent_drops: Vec::new(),
        agent_app: String::new(),
    };
    assert_eq!(store.commit(retry.clone()).await.unwrap(), CommitOutcome::Duplicate);
    let store = reopen(store, config).await;
    assert_eq!(store.commit(retry).await.unwrap(), CommitOutcome::Duplicate);
    assert_eq!(store.stats().reports, 10);
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_commits_are_group_committed_and_all_durable() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(dir.path());
    let store = Store::open(config.clone()).unwrap();
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let b = IngestBatch {
                digest: digest(i),
                origin: Origin::Agent {
                    key: [(i % 5) as u8; 32],
                    seq: i,
                    created_at: UnixMillis(6_000 + i),
                },
                reports: vec![report(2 * i, 5_000 + i), report(2 * i + 1, 5_000 + i)],
                targets: vec![targets(0, 5_000 + i)],
                agent_drops: Vec::new(),
                agent_app: String::new(),
            };
            // Every tenth batch is also sent twice at the same time: one copy is stored.
            if i % 10 == 0 {
                let (a, b) = tokio::join!(store.commit(b.clone()), store.commit(b));
                let mut outcomes = [a.unwrap(), b.unwrap()];
                outcomes.sort_by_key(|o| matches!(o, CommitOutcome::Duplicate));
                assert_eq!(outcomes, [stored(2, 1), CommitOutcome::Duplicate]);
            } else {
                assert_eq!(store.commit(b).await.unwrap(), stored(2, 1));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("220 concurrent commits in {:?}", started.elapsed());
    assert_eq!(store.stats().reports, 400);
    assert_eq!(store.stats().targets, 200);
    let stats = store.stats();
    let store = reopen(store, config).await;
    assert_eq!(all_reports(&store).len(), 400);
    let reopened = store.stats();
    assert_eq!((reopened.reports, reopened.targets, reopened.bytes), (400, 200, stats.bytes));
    store.close().await.unwrap();
}

#[tokio::test]
async fn retention_by_age_drops_old_rows_digests_and_agents() {
    let dir = tempfile::tempdir().unwrap();
    let day = 24 * 3600 * 1000;
    let config = StoreConfig {
        retention: Duration::from_secs(24 * 3600),
        dedup_horizon: Duration::from_secs(24 * 3600),
        ..StoreConfig::new(dir.path())
    };
    let store = Store::open(config).unwrap();
    let now = 10 * day;
    let old = batch(
        1,
        vec![report(1, now - 2 * day), report(2, now - day - 2_000)],
        vec![targets(0, now - 2 * day)],
    );
    let mut replayable = old.clone();
    replayable.digest = digest(9);
    replayable.origin =
        Origin::Agent { key: [3; 32], seq: 5, created_at: UnixMillis(now - 3 * day) };
    replayable.reports = vec![report(9, now - 3 * day)];
    replayable.targets.clear();
    let fresh =
        batch(2, vec![report(3, now - day), report(4, now - 5)], vec![targets(1, now - 10)]);
    store.commit(old.clone()).await.unwrap();
    store.commit(replayable.clone()).await.unwrap();
    store.commit(fresh).await.unwrap();
    let before = store.stats();

    let stats = store.enforce_retention(UnixMillis(now)).unwrap();
    assert_eq!(stats.expired_reports, 3);
    assert_eq!(stats.expired_targets, 1);
    assert_eq!(stats.expired_digests, 2);
    assert_eq!((stats.evicted_reports, stats.evicted_targets), (0, 0));
    let after = store.stats();
    assert_eq!(after.reports, 2);
    assert_eq!(after.targets, 1);
    assert_eq!(before.bytes - after.bytes, stats.freed_bytes);
    let left: Vec<u64> = all_reports(&store).iter().map(|r| r.event_at.0).collect();
    assert_eq!(left, [now - day, now - 5]);
    // The digests are forgotten with the data.
    assert_eq!(store.commit(old).await.unwrap(), stored(2, 1));
    assert_eq!(store.commit(replayable).await.unwrap(), stored(1, 0));
    // A second pass removes the re-committed old rows again and keeps the fresh ones.
    let again = store.enforce_retention(UnixMillis(now)).unwrap();
    assert_eq!(again.expired_reports, 3);
    assert_eq!(store.stats().reports, 2);
    store.close().await.unwrap();
}

#[tokio::test]
async fn retention_by_size_deletes_oldest_first() {
    // Each pair in a second of its own, then 100 reports within one second: the store keeps a
    // second's entries in one row, and eviction goes oldest first by second (reports before
    // counts of the same second), then oldest first within the row it stops in.
    for spread_ms in [1_000, 1] {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path());
        let store = Store::open(config.clone()).unwrap();
        for i in 0..100u64 {
            let t = 1_000 + spread_ms * i;
            let pair = if spread_ms > 1 { vec![targets(0, t + 1)] } else { vec![] };
            store.commit(batch(i, vec![report(i, t)], pair)).await.unwrap();
        }
        let full = store.stats();
        let pairs = if spread_ms > 1 { 100 } else { 0 };
        assert_eq!((full.reports, full.targets), (100, pairs));
        let per_pair = full.bytes / 100;
        store.close().await.unwrap();
        drop(store);

        let limit = full.bytes / 4;
        let config = StoreConfig { max_bytes: limit, ..config };
        let store = Store::open(config).unwrap();
        let stats = store.enforce_retention(UnixMillis(1_000 + 200)).unwrap();
        let after = store.stats();
        assert!(after.bytes <= limit, "{after:?} over {limit}");
        assert!(after.bytes + per_pair > limit, "deleted more than needed: {after:?} {stats:?}");
        assert_eq!(stats.expired_reports, 0);
        assert_eq!(after.reports, 100 - stats.evicted_reports);
        assert_eq!(after.targets, pairs - stats.evicted_targets);
        assert_eq!(full.bytes - after.bytes, stats.freed_bytes);
        // What is left is the newest data, contiguous up to the end.
        let reports: Vec<u64> = all_reports(&store).iter().map(|r| r.event_at.0).collect();
        let targets: Vec<u64> = store
            .scan_targets(UnixMillis(0), UnixMillis(u64::MAX))
            .map(|t| t.unwrap().event_at.0)
            .collect();
        let oldest_left = reports[0].min(targets.first().copied().unwrap_or(u64::MAX));
        let expected_reports: Vec<u64> =
            (0..100).map(|i| 1_000 + spread_ms * i).filter(|&t| t >= oldest_left).collect();
        let expected_targets: Vec<u64> =
            (0..pairs).map(|i| 1_001 + spread_ms * i).filter(|&t| t >= oldest_left).collect();
        assert_eq!(reports, expected_reports);
        assert_eq!(targets, expected_targets);
        store.close().await.unwrap();
    }
}

#[tokio::test]
async fn closed_stores_refuse_commits_and_reopen_with_their_counts() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(dir.path());
    let store = Store::open(config.clone()).unwrap();
    store.commit(batch(1, vec![report(1, 5)], vec![targets(0, 5)])).await.unwrap();
    let stats = store.stats();
    assert!(stats.disk_bytes > 0);
    let clone = store.clone();
    store.close().await.unwrap();
    assert!(matches!(clone.commit(batch(2, vec![], vec![])).await, Err(StoreError::Closed)));
    // Closing twice is fine.
    clone.close().await.unwrap();
    // Reads still work on a closed store.
    assert_eq!(all_reports(&clone).len(), 1);
    drop((store, clone));

    let store = Store::open(config.clone()).unwrap();
    let again = store.stats();
    assert_eq!(
        (again.reports, again.targets, again.bytes),
        (stats.reports, stats.targets, stats.bytes)
    );
    // The same directory cannot be opened twice at once.
    let err = Store::open(config).unwrap_err();
    assert!(err.to_string().contains(&dir.path().display().to_string()), "{err}");
    store.close().await.unwrap();
}

#[test]
fn opening_needs_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let err = Store::open(StoreConfig::new(dir.path())).unwrap_err();
    assert!(err.to_string().contains("tokio runtime"), "{err}");
}

fn scribble(dir: &Path, only: Option<&str>) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            n += scribble(&path, only);
            continue;
        }
        if only.is_some_and(|name| path.file_name().unwrap() != name) {
            continue;
        }
        let len = std::fs::metadata(&path).unwrap().len().max(64) as usize;
        let garbage: Vec<u8> = (0..len).map(|i| (i * 7919 % 251) as u8).collect();
        std::fs::write(&path, garbage).unwrap();
        n += 1;
    }
    n
}

#[tokio::test]
async fn a_store_with_garbage_files_is_an_error_naming_the_path() {
    for only in [Some("db"), None] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store");
        let config = StoreConfig::new(&path);
        let store = Store::open(config.clone()).unwrap();
        for i in 0..50 {
            store.commit(batch(i, vec![report(i, 100 + i)], vec![])).await.unwrap();
        }
        store.close().await.unwrap();
        drop(store);
        assert!(scribble(&path, only) > 0);

        for _ in 0..2 {
            let err = Store::open(config.clone()).unwrap_err();
            let text = err.to_string();
            eprintln!("garbage over {only:?}: {text}");
            assert!(
                matches!(err, StoreError::Corrupt { .. } | StoreError::Open { .. }),
                "{only:?}: {text}"
            );
            assert!(text.contains(&path.display().to_string()), "{only:?}: {text}");
        }
        // Nothing was deleted.
        assert!(path.join("db").metadata().unwrap().len() > 0, "{only:?}");
    }
}
