#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! Fleet mode with real processes: a real `nats-server` (Debian's, JetStream on, a temp store
//! dir, on loopback), three `vantage-collector serve` processes in fleet mode over TLS, and a
//! real native [`Agent`] that lists them in order. The first collector is SIGKILLed; the
//! agent's own scheduler fails over, and nothing accepted is lost or duplicated, in the
//! collectors' sled stores or in the JetStream stream.
//!
//! ```text
//!  phase A   agent ──▶ c-1 ──publish──▶ VANTAGE ──▶ consumers of c-1, c-2, c-3
//!  phase B1  c-1's NATS link loses what NATS sends: agent ──▶ c-1 (202); the publish is
//!            stored in the stream, its ack never arrives (the entry stays in c-1's outbox)
//!  phase B2  c-1's NATS link loses everything: agent ──▶ c-1 (202); the publish is lost
//!            SIGKILL c-1, both outbox entries on disk
//!  phase C   agent ──✗ c-1 ──▶ c-2 (or c-3) ──publish──▶ VANTAGE
//!  restart   c-1 on the same dir, link up: B1 is published again (JetStream drops the copy by
//!            Nats-Msg-Id), B2 for the first time: every accepted envelope is in the stream once
//!  stores    every recorded failure in exactly one collector's store
//! ```
//!
//! c-1 reaches NATS through a TCP relay on loopback ([`Relay`]) that the test can make lose one
//! or both directions; c-2 and c-3 connect directly. Each recorded failure carries its own HTTP
//! status, so the agent does not coalesce them and the stores can be matched report by report.
//! `nats-server` comes from `.ci/install-nats.sh`; `tests/tests/collector_fleet.rs` covers
//! detection and paging with in-process collectors.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use vantage_agent::native::{Agent, CollectorConfig as AgentCollector};
use vantage_agent::report::{AppInfo, UnixMillis};
use vantage_collector::open::CollectorKey;
use vantage_collector::store::{Store, StoreConfig};
use vantage_tests::fleet::{
    FleetMember, HOST, KEY_SEED, SERVICE, flush_all, metric, metrics, record, wait_for,
};
use vantage_tests::nats::{NatsServer, free_port};

/// HTTP statuses of the failures recorded while c-1 is up and NATS too.
const PHASE_A: Range<u16> = 500..510;
/// ... while c-1's acks from NATS are lost.
const PHASE_B1: Range<u16> = 510..515;
/// ... while everything between c-1 and NATS is lost, just before c-1 is killed.
const PHASE_B2: Range<u16> = 515..520;
/// ... after c-1 was killed.
const PHASE_C: Range<u16> = 520..540;

/// What a [`Relay`] lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Both directions.
    Up,
    /// Collector to NATS only: publishes arrive, acks (and everything else NATS sends) are lost.
    AcksLost,
    /// Nothing: bytes are read and discarded both ways, the connections stay open.
    Cut,
}

/// A TCP relay on loopback to an upstream address, for every connection it accepts.
struct Relay {
    addr: SocketAddr,
    link: Arc<Mutex<Link>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(upstream: SocketAddr) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let link = Arc::new(Mutex::new(Link::Up));
        let shared = link.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(upstream).await else { continue };
                let (client_rx, client_tx) = client.into_split();
                let (server_rx, server_tx) = server.into_split();
                tokio::spawn(pump(client_rx, server_tx, shared.clone(), |l| l != Link::Cut));
                tokio::spawn(pump(server_rx, client_tx, shared.clone(), |l| l == Link::Up));
            }
        });
        Relay { addr, link, accept }
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    fn set(&self, link: Link) {
        *self.link.lock().unwrap() = link;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies `from` to `to` while `passes(link)`, discarding what arrives otherwise; ends when
/// either side closes.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    link: Arc<Mutex<Link>>,
    passes: fn(Link) -> bool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let pass = passes(*link.lock().unwrap());
        if pass && to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// `(status, id, count)` of every report in the sled store at `path` (its collector stopped).
async fn stored_reports(path: &Path) -> Vec<(u16, [u8; 16], u32)> {
    let store = Store::open(StoreConfig::new(path)).unwrap();
    let reports = store
        .scan_reports(UnixMillis(0), UnixMillis(u64::MAX))
        .map(|r| {
            let r = r.unwrap();
            assert_eq!((r.service.as_str(), r.host.as_str()), (SERVICE, HOST));
            (r.status.unwrap(), r.id, r.count)
        })
        .collect();
    store.close().await.unwrap();
    reports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_fails_over_from_a_killed_collector_and_the_stream_holds_every_batch_once() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&tmp.path().join("nats"), free_port(), free_port()).await;
    let relay = Relay::start(nats.addr()).await;
    let key = CollectorKey::from_seed(KEY_SEED);
    let mut fleet = Vec::new();
    let mut cas = Vec::new();
    for (id, url) in [("c-1", relay.url()), ("c-2", nats.url()), ("c-3", nats.url())] {
        let (mut m, ca) = FleetMember::new(tmp.path(), id, &url, false);
        m.start();
        fleet.push(m);
        cas.push(ca);
    }
    for m in &fleet {
        wait_for(&format!("{} connected to NATS", m.id), async || {
            match metric(m.plain(), "vantage_fleet_connected").await {
                1 => Ok(()),
                v => Err(format!("vantage_fleet_connected {v}")),
            }
        })
        .await;
    }

    let app = AppInfo::new("com.example.shop", "1.0", "linux", "vantage-tests").unwrap();
    let mut builder = Agent::builder(app, key.public_key(), tmp.path().join("agent"))
        .service(SERVICE, &[HOST])
        .unwrap();
    for (m, ca) in fleet.iter().zip(&cas) {
        let url = format!("https://{}", m.proc().tls_addr().unwrap());
        builder = builder.extra_root(ca.cert_der()).collector(AgentCollector::new(&url).unwrap());
    }
    let agent = builder.build().unwrap();
    agent.set_consent(true).unwrap();

    // Phase A: everything up. The agent delivers to c-1, c-1 publishes, every consumer sees it.
    record(&agent, PHASE_A);
    let env_a = flush_all(&agent).await;
    assert!(env_a > 0);
    let plain: Vec<SocketAddr> = fleet.iter().map(FleetMember::plain).collect();
    let accepted: Vec<u64> = {
        let mut v = Vec::new();
        for a in &plain {
            v.push(metric(*a, "vantage_envelopes_accepted_total").await);
        }
        v
    };
    assert_eq!(accepted, [env_a, 0, 0], "c-1 first: it takes everything while up");
    wait_for("c-1's phase A batches published and consumed by all three", async || {
        let mut seen = Vec::new();
        for a in &plain {
            let m = metrics(*a).await;
            seen.push((m["vantage_fleet_published_total"], m["vantage_fleet_consumed_total"]));
        }
        let in_stream = nats.stream_messages("VANTAGE").await;
        let want = [(env_a, env_a), (0, env_a), (0, env_a)];
        if seen == want && in_stream == env_a {
            Ok(())
        } else {
            Err(format!("(published, consumed) {seen:?}, stream {in_stream}; want {want:?}"))
        }
    })
    .await;

    // Phase B1: c-1's acks are lost. c-1 answers 202 (stored, outbox flushed) and publishes;
    // JetStream stores the batch, but c-1 never learns it and keeps the outbox entry.
    relay.set(Link::AcksLost);
    record(&agent, PHASE_B1);
    let env_b1 = flush_all(&agent).await;
    assert!(env_b1 > 0);
    // The survivors' consumers see it before c-1 dies.
    wait_for("phase B1 in the stream and consumed by c-2 and c-3", async || {
        let in_stream = nats.stream_messages("VANTAGE").await;
        let mut consumed = Vec::new();
        for a in &plain[1..] {
            consumed.push(metric(*a, "vantage_fleet_consumed_total").await);
        }
        let want = env_a + env_b1;
        if in_stream == want && consumed.iter().all(|&c| c == want) {
            Ok(())
        } else {
            Err(format!("stream {in_stream}, consumed {consumed:?}, want {want}"))
        }
    })
    .await;
    // Phase B2: nothing gets through. c-1 still answers 202; this publish is lost.
    relay.set(Link::Cut);
    record(&agent, PHASE_B2);
    let env_b2 = flush_all(&agent).await;
    assert!(env_b2 > 0);
    let env_b = env_b1 + env_b2;
    let c1 = metrics(plain[0]).await;
    assert_eq!(c1["vantage_envelopes_accepted_total"], env_a + env_b);
    assert_eq!(c1["vantage_fleet_published_total"], env_a, "no ack got through since phase A");
    assert_eq!(c1["vantage_fleet_outbox_batches"], env_b, "phase B waits in the outbox");
    let c1_published_before_kill = c1["vantage_fleet_published_total"];
    fleet[0].proc.take().unwrap().kill9();
    assert_eq!(nats.stream_messages("VANTAGE").await, env_a + env_b1, "B2 never reached NATS");
    relay.set(Link::Up);

    // Phase C: the agent's scheduler finds c-1 dead and fails over on its own.
    record(&agent, PHASE_C);
    let env_c = flush_all(&agent).await;
    assert!(env_c > 0);
    let survivors = &plain[1..];
    let mut took = Vec::new();
    for a in survivors {
        took.push(metric(*a, "vantage_envelopes_accepted_total").await);
    }
    assert_eq!(took.iter().sum::<u64>(), env_c, "the survivors accepted phase C: {took:?}");
    wait_for("the survivors published phase C", async || {
        let mut left = Vec::new();
        for (a, accepted) in survivors.iter().zip(&took) {
            let m = metrics(*a).await;
            left.push((
                m["vantage_fleet_published_total"],
                *accepted,
                m["vantage_fleet_outbox_batches"],
            ));
        }
        if left.iter().all(|&(p, a, o)| p == a && o == 0) {
            Ok(())
        } else {
            Err(format!("(published, accepted, outbox) {left:?}"))
        }
    })
    .await;
    assert_eq!(nats.stream_messages("VANTAGE").await, env_a + env_b1 + env_c);

    // Restart c-1 on the same directory: its outbox drains (B1 again, B2 for the first time),
    // and JetStream keeps one copy of each.
    fleet[0].start();
    let c1_plain = fleet[0].plain();
    let total = env_a + env_b + env_c;
    wait_for("c-1's outbox drained and every batch in the stream once", async || {
        let m = metrics(c1_plain).await;
        let in_stream = nats.stream_messages("VANTAGE").await;
        let (published, outbox) =
            (m["vantage_fleet_published_total"], m["vantage_fleet_outbox_batches"]);
        assert!(in_stream <= total, "stream {in_stream} > {total} accepted envelopes");
        // `published` counts acks, duplicates included: B1's copy is acknowledged too.
        if published == env_b && outbox == 0 && in_stream == total {
            Ok(())
        } else {
            Err(format!("c-1 published {published}, outbox {outbox}; stream {in_stream}/{total}"))
        }
    })
    .await;
    let survivors: Vec<SocketAddr> = plain[1..].to_vec();
    wait_for("the survivors consumed every batch in the stream", async || {
        let mut seen = Vec::new();
        for a in &survivors {
            let m = metrics(*a).await;
            seen.push(m["vantage_fleet_consumed_total"] + m["vantage_fleet_skipped_local_total"]);
        }
        if seen.iter().all(|&s| s == total) {
            Ok(())
        } else {
            Err(format!("consumed + skipped {seen:?} of {total}"))
        }
    })
    .await;

    // Accounting across the fleet: every accepted envelope acknowledged by JetStream once, no
    // envelope delivered twice, nothing dropped from an outbox.
    let mut all = vec![metrics(c1_plain).await];
    for a in &survivors {
        all.push(metrics(*a).await);
    }
    let sum = |name: &str| all.iter().map(|m| m[name]).sum::<u64>();
    assert_eq!(all[0]["vantage_envelopes_accepted_total"], 0, "nothing new reached c-1");
    assert_eq!(sum("vantage_envelopes_accepted_total") + env_a + env_b, total);
    assert_eq!(sum("vantage_fleet_published_total") + c1_published_before_kill, total);
    assert_eq!(sum("vantage_envelopes_duplicate_total"), 0);
    assert_eq!(sum("vantage_fleet_outbox_dropped_total"), 0);
    assert_eq!(sum("vantage_fleet_decode_errors_total"), 0);
    assert_eq!(nats.stream_messages("VANTAGE").await, total);
    let stats = agent.stats();
    assert_eq!(stats.delivered_envelopes, total);
    let recorded = (PHASE_A.len() + PHASE_B1.len() + PHASE_B2.len() + PHASE_C.len()) as u64;
    assert_eq!(stats.delivered_failures, recorded);
    agent.shutdown().await.unwrap();

    // Every recorded failure is in exactly one collector's store: A and B at c-1, C at the
    // survivors.
    let mut ids = BTreeSet::new();
    let mut where_stored: BTreeMap<u16, &str> = BTreeMap::new();
    for m in &mut fleet {
        let exit = m.proc.take().unwrap().terminate();
        assert!(exit.success(), "{} exited with {exit}", m.id);
        for (status, id, count) in stored_reports(&m.dir.join("data")).await {
            assert_eq!(count, 1, "status {status} at {} was coalesced", m.id);
            assert!(ids.insert(id), "a report id is stored twice (status {status})");
            if let Some(other) = where_stored.insert(status, m.id) {
                panic!("status {status} stored at {other} and {}", m.id);
            }
        }
    }
    let expect = |range: Range<u16>, at: &[&str]| {
        for status in range {
            let got = where_stored.get(&status).copied();
            assert!(got.is_some_and(|id| at.contains(&id)), "status {status} stored at {got:?}");
        }
    };
    expect(PHASE_A, &["c-1"]);
    expect(PHASE_B1, &["c-1"]);
    expect(PHASE_B2, &["c-1"]);
    expect(PHASE_C, &["c-2", "c-3"]);
    assert_eq!(where_stored.len() as u64, recorded, "reports nobody recorded: {where_stored:?}");
    eprintln!(
        "envelopes A {env_a} B1 {env_b1} B2 {env_b2} C {env_c} (c-2, c-3 took {took:?}) in {:?}",
        started.elapsed()
    );
}
