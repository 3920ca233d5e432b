#![allow(clippy::unwrap_used)]
//! kill -9 under load: every report whose envelope the collector answered `202` is in the store
//! after the process is killed, in every round, and stays there across later crashes.
//!
//! Each round starts the real `vantage-collector` binary on the same directory, lets several
//! keep-alive clients send agent-sealed envelopes (10 reports each) as fast as it takes them,
//! SIGKILLs it at a moment drawn from a seeded RNG (after the first acknowledgement), then opens
//! the store in-process with `Store::open` and checks it against the acknowledged ids.
//!
//! Every fourth envelope also carries 3 report ids acknowledged before (in this round or an
//! earlier one, so in the store's in-memory pending runs, in runs read back after a kill, or in
//! its id chunks): the store must keep one copy of each, whatever the kills did.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vantage_agent::entropy::{Entropy, SeededEntropy};
use vantage_agent::report::{ReportId, UnixMillis};
use vantage_agent::wire::AgentIdentity;
use vantage_collector::store::{Store, StoreConfig, journal};
use vantage_tests::collector_proc::{
    CollectorConfig, CollectorProc, HttpClient, seal_envelope, seal_envelope_with_ids, unix_now,
    write_collector_key,
};

const ROUNDS: u64 = 10;
const CLIENTS: u64 = 8;
/// Per client and round, so the store (scanned after every round) stays small.
const MAX_ENVELOPES_PER_CLIENT: u64 = 150;
const REPORTS_PER_ENVELOPE: usize = 10;
/// The kill comes this long (at most) after the round's first acknowledgement.
const MAX_KILL_DELAY_MS: u64 = 250;

type Id = [u8; 16];

#[derive(Default)]
struct Ledger {
    sent: HashSet<Id>,
    acked: HashSet<Id>,
    /// `acked` in the order acknowledged, to draw re-sent ids from.
    acked_list: Vec<Id>,
    /// Acknowledged ids sent again in a later envelope.
    resent: usize,
    /// Answers other than 202, with their bodies (none are expected: limits are off).
    unexpected: Vec<String>,
}

fn stored_ids(rt: &tokio::runtime::Runtime, path: &std::path::Path) -> (Vec<Id>, u64) {
    rt.block_on(async {
        let store = Store::open(StoreConfig::new(path)).unwrap();
        let ids: Vec<Id> = store
            .scan_reports(UnixMillis(0), UnixMillis(u64::MAX))
            .map(|r| r.unwrap().id)
            .collect();
        let count = store.stats().reports;
        store.close().await.unwrap();
        (ids, count)
    })
}

async fn client(
    addr: std::net::SocketAddr,
    agent: AgentIdentity,
    collector: vantage_agent::wire::CollectorPublicKey,
    mut rng: SeededEntropy,
    ledger: Arc<Mutex<Ledger>>,
    acks: Arc<AtomicUsize>,
) {
    let Ok(mut http) = HttpClient::connect_plain(addr).await else { return };
    for seq in 1..=MAX_ENVELOPES_PER_CLIENT {
        let now = unix_now();
        let again: Vec<Id> = {
            let ledger = ledger.lock().unwrap();
            let known = &ledger.acked_list;
            if seq % 4 == 0 && known.len() >= 3 {
                let mut picked: Vec<Id> =
                    (0..3).map(|_| known[(rng.next_u64() % known.len() as u64) as usize]).collect();
                picked.sort_unstable();
                picked.dedup();
                picked
            } else {
                Vec::new()
            }
        };
        let env = if again.is_empty() {
            seal_envelope(&agent, &collector, seq, REPORTS_PER_ENVELOPE, now, &mut rng)
        } else {
            let mut ids: Vec<ReportId> = again.iter().map(|id| ReportId(*id)).collect();
            while ids.len() < REPORTS_PER_ENVELOPE {
                ids.push(ReportId::new(now, &mut rng));
            }
            ledger.lock().unwrap().resent += again.len();
            seal_envelope_with_ids(&agent, &collector, seq, &ids, now, &mut rng)
        };
        // Recorded as sent before the request: a report the store holds must be one we sent.
        ledger.lock().unwrap().sent.extend(env.report_ids.iter().copied());
        match http.post_envelope(env.bytes).await {
            Ok((status, _)) if status == http::StatusCode::ACCEPTED => {
                let mut ledger = ledger.lock().unwrap();
                for id in env.report_ids {
                    if ledger.acked.insert(id) {
                        ledger.acked_list.push(id);
                    }
                }
                drop(ledger);
                acks.fetch_add(1, Ordering::SeqCst);
            }
            Ok((status, body)) => {
                let body = String::from_utf8_lossy(&body).into_owned();
                ledger.lock().unwrap().unexpected.push(format!("{status}: {body}"));
                return;
            }
            // The collector died under us: this envelope is neither acknowledged nor refused.
            Err(_) => return,
        }
    }
}

#[test]
fn acknowledged_reports_survive_kill_9() {
    let started = Instant::now();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key = write_collector_key(dir.path(), [9; 32]);
    let config = CollectorConfig { unlimited: true, ..Default::default() }.to_toml();
    let store_path = dir.path().join("data");
    let mut rng = SeededEntropy::insecure_from_seed([0x5e; 32]);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut killed_mid_flight = 0;
    let mut replayed = 0;

    for round in 0..ROUNDS {
        let proc = CollectorProc::start(dir.path(), &config);
        let addr = proc.plain_addr().expect("plain listener configured");
        let acks = Arc::new(AtomicUsize::new(0));
        let acked_before = ledger.lock().unwrap().acked.len();
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let agent = AgentIdentity::generate(&mut rng);
                let mut seed = [0u8; 32];
                rng.fill(&mut seed);
                rt.spawn(client(
                    addr,
                    agent,
                    key.public_key(),
                    SeededEntropy::insecure_from_seed(seed),
                    ledger.clone(),
                    acks.clone(),
                ))
            })
            .collect();

        let deadline = Instant::now() + Duration::from_secs(10);
        while acks.load(Ordering::SeqCst) == 0 {
            assert!(
                Instant::now() < deadline,
                "round {round}: no envelope acknowledged within 10 s; unexpected answers: {:?}; \
                 stderr:\n{}",
                ledger.lock().unwrap().unexpected,
                proc.stderr()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        // The random moment: deliberately a sleep, the point is to kill mid-load.
        std::thread::sleep(Duration::from_millis(rng.next_u64() % MAX_KILL_DELAY_MS));
        let all_done = tasks.iter().all(|t| t.is_finished());
        proc.kill9();
        if !all_done {
            killed_mid_flight += 1;
        }
        for task in tasks {
            rt.block_on(task).unwrap();
        }
        // Acknowledged since the store's last checkpoint: only in its journal.
        let pending = journal::pending_records(&store_path).unwrap();
        replayed += pending;

        let (ids, count) = stored_ids(&rt, &store_path);
        let stored: HashSet<Id> = ids.iter().copied().collect();
        let ledger = ledger.lock().unwrap();
        assert!(
            ledger.unexpected.is_empty(),
            "round {round}: answers other than 202: {:?}",
            ledger.unexpected
        );
        let missing = ledger.acked.difference(&stored).count();
        assert_eq!(
            missing,
            0,
            "round {round}: {missing} of {} acknowledged reports are not in the store",
            ledger.acked.len()
        );
        assert_eq!(stored.len(), ids.len(), "round {round}: a report id is stored twice");
        assert_eq!(count, ids.len() as u64, "round {round}: stats().reports disagrees with a scan");
        let foreign = stored.difference(&ledger.sent).count();
        assert_eq!(foreign, 0, "round {round}: {foreign} stored reports were never sent");
        eprintln!(
            "round {round}: acknowledged {} new reports, {} stored in total ({} acknowledged), \
             {pending} journal records replayed",
            ledger.acked.len() - acked_before,
            stored.len(),
            ledger.acked.len()
        );
    }
    // The kills came within a checkpoint period of acknowledgements: the reopen had journal
    // records to replay (the path that makes a 202 durable before sled's own flush).
    assert!(replayed > 0, "no round left journal records to replay");
    let resent = ledger.lock().unwrap().resent;
    assert!(resent > 100, "only {resent} acknowledged ids were sent again");
    assert!(
        killed_mid_flight >= ROUNDS / 2,
        "only {killed_mid_flight} of {ROUNDS} kills came while clients were still sending"
    );

    // Last, a graceful stop on the same store: SIGTERM exits 0 and loses nothing either.
    let proc = CollectorProc::start(dir.path(), &config);
    let addr = proc.plain_addr().unwrap();
    let agent = AgentIdentity::generate(&mut rng);
    let env =
        seal_envelope(&agent, &key.public_key(), 1, REPORTS_PER_ENVELOPE, unix_now(), &mut rng);
    let (status, _) = rt.block_on(async {
        HttpClient::connect_plain(addr)
            .await
            .unwrap()
            .post_envelope(env.bytes.clone())
            .await
            .unwrap()
    });
    assert_eq!(status, http::StatusCode::ACCEPTED);
    let exit = proc.terminate();
    assert!(exit.success(), "collector exited with {exit} after SIGTERM");
    let (ids, _) = stored_ids(&rt, &store_path);
    let stored: HashSet<Id> = ids.into_iter().collect();
    assert!(env.report_ids.iter().all(|id| stored.contains(id)));
    assert!(ledger.lock().unwrap().acked.is_subset(&stored));
    eprintln!("{ROUNDS} rounds in {:?}", started.elapsed());
}
