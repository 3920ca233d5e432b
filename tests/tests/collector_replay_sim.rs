#![allow(clippy::unwrap_used)]
//! Seeded simulation: real sans-IO agent cores ([`AgentCore`]) deliver through a lossy,
//! reordering network to the collector's real opener and real sled store, with agent restarts
//! (sequence numbers jump by 10,000, sometimes by up to 2^32), crashes, 1 to 8 uploads in
//! flight, concurrent commits in one group, lost `202`s, `503`s and collector restarts.
//!
//! Asserted over thousands of envelopes per seed:
//! - every envelope an agent sealed is stored exactly once (`Stored` once per digest);
//! - `Duplicate` is answered only for an envelope stored before (a retry);
//! - the store holds exactly the reports of the stored envelopes;
//! - the agents count as delivered exactly what the collector stored.
//!
//! `VANTAGE_SIM_SEEDS=n` runs more seeds (default 4).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use vantage_agent::buffer::MemoryStore;
use vantage_agent::delivery::Outcome;
use vantage_agent::entropy::SeededEntropy;
use vantage_agent::pipeline::{AgentCore, CoreConfig, CoreTransmit, HttpStatus, ReportInput};
use vantage_agent::report::{AppInfo, UnixMillis};
use vantage_collector::model::{Enrichment, IngestBatch, NetTag, Origin, Source, StoredReport};
use vantage_collector::open::{CollectorKey, Opener};
use vantage_collector::store::{CommitOutcome, Store, StoreConfig, SyncMode};

/// splitmix64: the simulation's own randomness, from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const SEQ_BLOCK: u64 = 10_000;

struct SimAgent {
    core: AgentCore<MemoryStore, SeededEntropy>,
    secret: [u8; 32],
    /// The sequence mark the native runtime keeps on disk (`agent/src/native/agent.rs`).
    reserved: u64,
    /// Incremented on every restart; answers to an older epoch's requests are lost.
    epoch: u64,
    in_flight: usize,
    delivered: u64,
    index: usize,
}

struct Request {
    agent: usize,
    epoch: u64,
    transmit: CoreTransmit,
}

fn core(
    key: &CollectorKey,
    store: MemoryStore,
    secret: [u8; 32],
    seed: u64,
    max_in_flight: usize,
    now: UnixMillis,
) -> AgentCore<MemoryStore, SeededEntropy> {
    let app = AppInfo::new("sim", "1", "linux", "rust").unwrap();
    let mut config = CoreConfig::new(app, key.public_key(), 1);
    config.delivery.max_in_flight = max_in_flight;
    config.delivery.base_backoff_ms = 200;
    config.delivery.max_backoff_ms = 2_000;
    config.delivery.max_per_second = 1_000;
    config.seal_delay_ms = 500;
    let mut rng_seed = [0u8; 32];
    rng_seed[..8].copy_from_slice(&seed.to_be_bytes());
    let mut core =
        AgentCore::new(config, store, SeededEntropy::insecure_from_seed(rng_seed)).unwrap();
    core.restore_consent(secret, now);
    core
}

impl SimAgent {
    fn reserve(&mut self) {
        let next = self.core.next_seq();
        if next + SEQ_BLOCK / 10 > self.reserved {
            self.reserved = next + SEQ_BLOCK;
        }
    }

    /// A restart (or crash: what was not sealed is lost either way): the envelope buffer
    /// survives, the core starts over at the reserved sequence mark.
    fn restart(&mut self, key: &CollectorKey, rng: &mut Rng, now: UnixMillis) {
        self.delivered += self.core.stats().delivered_envelopes;
        let store = self.core.replace_store(MemoryStore::new()).unwrap();
        if rng.chance(10) {
            // A far jump (a restored backup of the mark, a clock-derived scheme...).
            self.reserved += rng.below(1 << 32);
        }
        let max_in_flight = 1 + rng.below(8) as usize;
        self.epoch += 1;
        self.core = core(key, store, self.secret, rng.next(), max_in_flight, now);
        self.core.ensure_next_seq(self.reserved);
        self.in_flight = 0;
    }
}

fn stored_reports(
    opened: &vantage_collector::open::Opened,
    received_at: UnixMillis,
) -> IngestBatch {
    let b = &opened.batch;
    let reports = b
        .reports
        .iter()
        .map(|r| StoredReport {
            id: r.id().0,
            received_at,
            event_at: received_at,
            source: Source::Agent,
            service: r.service().as_str().to_owned(),
            host: r.host().as_str().to_owned(),
            phase: r.phase(),
            error_type: r.error_type().clone(),
            elapsed_ms: r.elapsed_ms(),
            status: r.status(),
            network: r.network(),
            scope: r.scope(),
            count: r.count(),
            sample_ppm: b.sampling.failure_ppm,
            client: Some(b.agent_key.0),
            net: NetTag(1),
            enrichment: Enrichment::default(),
        })
        .collect();
    IngestBatch {
        digest: opened.digest,
        origin: Origin::Agent { key: b.agent_key.0, seq: b.seq, created_at: b.created_at },
        reports,
        targets: Vec::new(),
        agent_drops: Vec::new(),
        agent_app: String::new(),
    }
}

#[derive(Default, Debug)]
struct Tally {
    sealed: usize,
    requests: usize,
    stored: usize,
    duplicates: usize,
    lost_before: usize,
    lost_replies: usize,
    unavailable: usize,
    restarts: usize,
    collector_restarts: usize,
    max_seq_gap: u64,
}

async fn simulate(seed: u64, target_envelopes: usize) -> Tally {
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    // No fdatasync: this test is about dedup decisions, not power loss (collector_crash and
    // collector_disk cover durability).
    let config = StoreConfig { sync: SyncMode::DangerNone, ..StoreConfig::new(dir.path()) };
    let mut store = Store::open(config.clone()).unwrap();
    let key = CollectorKey::from_seed([seed as u8; 32]);
    let opener = Opener::new(vec![key.clone()]);
    let mut now = UnixMillis(1_700_000_000_000);

    let mut agents: Vec<SimAgent> = (0..3)
        .map(|i| {
            let mut secret = [0u8; 32];
            secret[..8].copy_from_slice(&rng.next().to_be_bytes());
            secret[8] = i as u8;
            let max_in_flight = 1 + rng.below(8) as usize;
            SimAgent {
                core: core(&key, MemoryStore::new(), secret, rng.next(), max_in_flight, now),
                secret,
                reserved: 0,
                epoch: 0,
                in_flight: 0,
                delivered: 0,
                index: i,
            }
        })
        .collect();
    let mut network: Vec<Request> = Vec::new();
    let mut stored: HashMap<[u8; 32], usize> = HashMap::new();
    let mut transmitted: HashSet<[u8; 32]> = HashSet::new();
    let mut report_ids: HashSet<[u8; 16]> = HashSet::new();
    let mut last_seq: HashMap<usize, u64> = HashMap::new();
    let mut tally = Tally::default();
    let causes = [HttpStatus(502), HttpStatus(503), HttpStatus(504)];

    let mut step = 0u64;
    loop {
        step += 1;
        let recording = tally.sealed < target_envelopes;
        let idle =
            agents.iter().all(|a| a.core.queued_envelopes() == 0 && a.core.pending_failures() == 0);
        if !recording && idle && network.is_empty() {
            break;
        }
        assert!(step < 200_000, "seed {seed}: no progress: {tally:?}");

        for a in &mut agents {
            if recording && rng.chance(60) {
                for _ in 0..1 + rng.below(3) {
                    let cause = &causes[rng.below(3) as usize];
                    let host = format!("h{}.example.com", rng.below(5));
                    let report = ReportInput::new("checkout", &host, cause)
                        .observed_at(now)
                        .build(
                            &mut SeededEntropy::insecure_from_seed({
                                let mut s = [0u8; 32];
                                s[..8].copy_from_slice(&rng.next().to_be_bytes());
                                s
                            }),
                            now,
                        )
                        .unwrap();
                    a.core.handle_record(report, now);
                }
            }
            a.reserve();
            let before = a.core.stats().sealed_envelopes;
            a.core.poll_seal(now).unwrap();
            if !recording {
                a.core.seal_pending(now).unwrap();
            }
            tally.sealed += (a.core.stats().sealed_envelopes - before) as usize;
            while let Some(t) = a.core.poll_transmit(now).unwrap() {
                a.in_flight += 1;
                let gap = last_seq.insert(a.index, t.seq).map_or(0, |prev| t.seq.abs_diff(prev));
                tally.max_seq_gap = tally.max_seq_gap.max(gap);
                network.push(Request { agent: a.index, epoch: a.epoch, transmit: t });
            }
        }

        // The collector takes a random subset of what is on the wire, in random order, and
        // commits it concurrently (one or more group commits); the rest waits (reordering).
        let mut batch = Vec::new();
        let mut i = 0;
        while i < network.len() {
            if rng.chance(55) {
                batch.push(network.swap_remove(i));
            } else {
                i += 1;
            }
        }
        let mut work = Vec::new();
        let mut answers: Vec<(Request, Option<Outcome>)> = Vec::new();
        for req in batch {
            tally.requests += 1;
            let opened = opener.open(&req.transmit.bytes).unwrap();
            transmitted.insert(opened.digest);
            match rng.below(100) {
                0..=7 => {
                    tally.lost_before += 1;
                    answers.push((req, Some(Outcome::NetworkError)));
                }
                8..=12 => {
                    tally.unavailable += 1;
                    answers.push((req, Some(Outcome::RetryAfter { status: 503, delay_ms: 1_000 })));
                }
                _ => work.push((req, opened)),
            }
        }
        let commits = futures_join(
            &store,
            work.iter().map(|(_, opened)| stored_reports(opened, now)).collect(),
        )
        .await;
        // Commits that ran together may be answered in any order within their group: the
        // stored copy is accounted before its duplicates.
        let mut done: Vec<_> = work.into_iter().zip(commits).collect();
        done.sort_by_key(|(_, o)| matches!(o, CommitOutcome::Duplicate));
        for ((req, opened), outcome) in done {
            match outcome {
                CommitOutcome::Stored { reports, .. } => {
                    let n = stored.entry(opened.digest).or_default();
                    *n += 1;
                    assert_eq!(
                        *n, 1,
                        "seed {seed}: envelope seq {} stored twice",
                        req.transmit.seq
                    );
                    tally.stored += 1;
                    let fresh =
                        opened.batch.reports.iter().filter(|r| report_ids.insert(r.id().0)).count();
                    assert_eq!(
                        reports, fresh,
                        "seed {seed}: report rows for seq {}",
                        req.transmit.seq
                    );
                }
                CommitOutcome::Duplicate => {
                    assert!(
                        stored.contains_key(&opened.digest),
                        "seed {seed}: seq {} judged a duplicate but never stored",
                        req.transmit.seq
                    );
                    tally.duplicates += 1;
                }
            }
            if rng.chance(15) {
                tally.lost_replies += 1;
                answers.push((req, Some(Outcome::NetworkError)));
            } else {
                answers.push((req, Some(Outcome::Accepted)));
            }
        }
        for (req, outcome) in answers {
            let a = &mut agents[req.agent];
            if req.epoch != a.epoch {
                continue; // the agent that sent it is gone; its successor re-sends.
            }
            a.in_flight -= 1;
            if let Some(outcome) = outcome {
                a.core.handle_outcome(req.transmit.id, outcome, now).unwrap();
            }
        }

        for a in &mut agents {
            if rng.chance(2) {
                tally.restarts += 1;
                a.restart(&key, &mut rng, now);
            }
        }
        if rng.chance(1) {
            tally.collector_restarts += 1;
            store.close().await.unwrap();
            drop(store);
            store = Store::open(config.clone()).unwrap();
        }
        now = now.plus_ms(100 + rng.below(1_500));
    }

    for a in &mut agents {
        a.delivered += a.core.stats().delivered_envelopes;
        assert_eq!(a.core.stats().dropped.total(), 0, "seed {seed}: agent {} dropped", a.index);
    }
    // Everything sent (and so everything sealed: the agents' queues are empty) is stored once.
    assert_eq!(transmitted.len(), stored.len(), "seed {seed}");
    assert!(transmitted.iter().all(|d| stored.get(d) == Some(&1)), "seed {seed}");
    assert_eq!(tally.sealed, stored.len(), "seed {seed}: sealed vs stored");
    let delivered: u64 = agents.iter().map(|a| a.delivered).sum();
    assert_eq!(delivered as usize, stored.len(), "seed {seed}: agents' delivered vs stored");
    assert_eq!(store.stats().reports as usize, report_ids.len(), "seed {seed}: report rows");
    store.close().await.unwrap();
    tally
}

/// Commits all batches at once (so they share group commits), answers in input order.
async fn futures_join(store: &Store, batches: Vec<IngestBatch>) -> Vec<CommitOutcome> {
    let handles: Vec<_> = batches
        .into_iter()
        .map(|b| {
            let store = store.clone();
            tokio::spawn(async move { store.commit(b).await.unwrap() })
        })
        .collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_envelope_is_stored_exactly_once_across_restarts_and_reordering() {
    let seeds: u64 =
        std::env::var("VANTAGE_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
    let started = Instant::now();
    let mut total = Tally::default();
    for seed in 1..=seeds {
        let t = simulate(seed, 800).await;
        eprintln!("seed {seed}: {t:?}");
        assert!(t.restarts > 0 && t.duplicates > 0 && t.lost_replies > 0, "seed {seed}: {t:?}");
        assert!(t.max_seq_gap >= SEQ_BLOCK, "seed {seed}: no restart gap exercised: {t:?}");
        total.sealed += t.sealed;
        total.stored += t.stored;
        total.duplicates += t.duplicates;
        total.requests += t.requests;
        total.restarts += t.restarts;
    }
    eprintln!(
        "{seeds} seeds in {:?}: {} envelopes sealed, {} stored once each, {} duplicates (all \
         retries), {} requests, {} agent restarts",
        started.elapsed(),
        total.sealed,
        total.stored,
        total.duplicates,
        total.requests,
        total.restarts
    );
    assert!(started.elapsed() < Duration::from_secs(300));
}
