#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! Fleet mode, exactly once across collectors, with real processes: a real `nats-server`
//! (JetStream on, a temp store dir, loopback), two `vantage-collector serve` processes in fleet
//! mode, and a real native [`Agent`] that lists them in order. The first one sits behind a TLS
//! proxy ([`LossyProxy`]) that forwards an upload to it and then closes the connection instead
//! of relaying its `202`.
//!
//! ```text
//!  phase 1  agent ──TLS──▶ proxy ──▶ c-1: 202 (stored, published) ──✗ answer lost
//!           (the proxy holds the connection until JetStream's duplicate window has passed)
//!           agent fails over ──▶ c-2: 202 (stored, published again: the stream has 2 copies)
//!           both consumers feed the envelope to their detector once (seen-digest set)
//!  phase 2  nats-server killed; agent ──▶ the first collector up: 202 (stored + outbox entry,
//!           one transaction); SIGKILL that collector before it could publish
//!           nats-server back, collector restarted: the outbox drains, the other consumes it
//! ```
//!
//! A second test SIGKILLs a collector at seeded random moments while uploads flow with NATS
//! up, six times, and checks that the envelopes in its store and in the stream are the same
//! number (each published once) and cover every `202`.
//!
//! The stream of the first test is created by the test with a 200 ms duplicate window (the collectors take an
//! existing stream as it is), so the de-duplication seen here is the collectors' own, by
//! digest, and not JetStream's `Nats-Msg-Id` window. `nats-server` comes from
//! `.ci/install-nats.sh`.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::sync::Notify;
use vantage_agent::native::{Agent, CollectorConfig as AgentCollector};
use vantage_agent::report::AppInfo;
use vantage_collector::ENVELOPE_CONTENT_TYPE;
use vantage_collector::open::CollectorKey;
use vantage_tests::collector_proc::HttpClient;
use vantage_tests::fleet::{
    FleetMember, HOST, KEY_SEED, SERVICE, flush_all, metrics, record, wait_for,
};
use vantage_tests::nats::{NatsServer, free_port};
use vantage_tests::tls::{TestCa, TestCert};

/// Failures recorded in phase 1 (one HTTP status each: nothing coalesces).
const PHASE_1: Range<u16> = 500..503;
/// ... in phase 2.
const PHASE_2: Range<u16> = 503..505;
/// JetStream's duplicate window on the test's stream.
const DUP_WINDOW: Duration = Duration::from_millis(200);

/// A TLS front for one collector: each upload is forwarded to the collector's plain listener;
/// while `lose_next` is set, the collector's answer to the next upload is not relayed: the
/// proxy waits for [`LossyProxy::release`] and then closes the connection.
struct LossyProxy {
    addr: SocketAddr,
    lose_next: Arc<AtomicBool>,
    /// Uploads the collector answered with 202 but the proxy did not relay.
    lost: Arc<AtomicU64>,
    release: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl LossyProxy {
    async fn start(cert: &TestCert, upstream: SocketAddr) -> LossyProxy {
        let mut config = cert.server_config();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let lose_next = Arc::new(AtomicBool::new(true));
        let lost = Arc::new(AtomicU64::new(0));
        let release = Arc::new(Notify::new());
        let (lose, count, rel) = (lose_next.clone(), lost.clone(), release.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, lose, count, rel) =
                    (acceptor.clone(), lose.clone(), count.clone(), rel.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (lose, count, rel) = (lose.clone(), count.clone(), rel.clone());
                        async move {
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map_err(std::io::Error::other)?
                                .to_bytes();
                            let mut c = HttpClient::connect_plain(upstream).await.unwrap();
                            let (status, answer) =
                                c.post("/v1/envelopes", ENVELOPE_CONTENT_TYPE, body).await.unwrap();
                            if status.as_u16() == 202 && lose.swap(false, Ordering::SeqCst) {
                                count.fetch_add(1, Ordering::SeqCst);
                                rel.notified().await;
                                // An error from the service closes the connection unanswered.
                                return Err(std::io::Error::other("202 lost on purpose"));
                            }
                            let mut response = http::Response::new(Full::new(answer));
                            *response.status_mut() = status;
                            Ok::<_, std::io::Error>(response)
                        }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    let _ = http.serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        LossyProxy { addr, lose_next, lost, release, task }
    }
}

impl Drop for LossyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_202_and_a_kill_before_publishing_each_count_once_across_the_fleet() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let nats_dir = tmp.path().join("nats");
    let (nats_port, nats_monitor) = (free_port(), free_port());
    let mut nats = NatsServer::start(&nats_dir, nats_port, nats_monitor).await;
    let window_ns = u64::try_from(DUP_WINDOW.as_nanos()).unwrap();
    nats.create_stream(&serde_json::json!({
        "name": "VANTAGE",
        "subjects": ["vantage.batches"],
        "storage": "file",
        "retention": "limits",
        "discard": "old",
        "num_replicas": 1,
        "max_age": 86_400_000_000_000u64,
        "duplicate_window": window_ns,
    }))
    .await;

    let mut cas = Vec::new();
    let mut fleet = Vec::new();
    for id in ["c-1", "c-2"] {
        let (mut m, ca) = FleetMember::new(tmp.path(), id, &nats.url(), true);
        m.start();
        fleet.push(m);
        cas.push(ca);
    }
    for m in &fleet {
        wait_for(&format!("{} connected", m.id), async || {
            match m.metrics().await["vantage_fleet_connected"] {
                1 => Ok(()),
                v => Err(format!("vantage_fleet_connected {v}")),
            }
        })
        .await;
    }
    let proxy_ca = TestCa::new("lossy proxy");
    let proxy = LossyProxy::start(&proxy_ca.leaf(&["127.0.0.1"]), fleet[0].plain()).await;

    let key = CollectorKey::from_seed(KEY_SEED);
    let app = AppInfo::new("com.example.shop", "1.0", "linux", "vantage-tests").unwrap();
    let c2_url = format!("https://{}", fleet[1].proc.as_ref().unwrap().tls_addr().unwrap());
    let agent = Agent::builder(app, key.public_key(), tmp.path().join("agent"))
        .service(SERVICE, &[HOST])
        .unwrap()
        .extra_root(proxy_ca.cert_der())
        .extra_root(cas[1].cert_der())
        .collector(AgentCollector::new(&format!("https://{}", proxy.addr)).unwrap())
        .collector(AgentCollector::new(&c2_url).unwrap())
        .build()
        .unwrap();
    agent.set_consent(true).unwrap();

    // Phase 1: c-1 stores and publishes, its 202 is lost once the duplicate window is over;
    // the agent fails over to c-2, which stores and publishes the same envelope again.
    record(&agent, PHASE_1);
    let c1 = fleet[0].plain();
    let hold = async {
        let published_at = wait_for("c-1 stored and published the first envelope", async || {
            let m = metrics(c1).await;
            let published = m["vantage_fleet_published_total"];
            if proxy.lost.load(Ordering::SeqCst) == 1 && published == 1 {
                Ok(Instant::now())
            } else {
                Err(format!("lost {}, published {published}", proxy.lost.load(Ordering::SeqCst)))
            }
        })
        .await;
        // The property under test is "whatever the delay": let JetStream's window pass.
        tokio::time::sleep_until((published_at + 3 * DUP_WINDOW).into()).await;
        proxy.release.notify_one();
    };
    let (delivered_1, ()) = tokio::join!(flush_all(&agent), hold);
    assert!(!proxy.lose_next.load(Ordering::SeqCst));
    let accepted: Vec<u64> = {
        let mut v = Vec::new();
        for m in &fleet {
            v.push(m.metrics().await["vantage_envelopes_accepted_total"]);
        }
        v
    };
    assert_eq!(accepted.iter().sum::<u64>(), delivered_1 + 1, "accepted {accepted:?}");
    assert!(accepted[0] >= 1 && accepted[1] >= 1, "both collectors stored it: {accepted:?}");
    let unique_1 = delivered_1;
    wait_for("both copies in the stream, each consumer fed the envelope once", async || {
        let in_stream = nats.stream_messages("VANTAGE").await;
        let mut seen = Vec::new();
        for m in &fleet {
            let m = m.metrics().await;
            seen.push((
                m["vantage_fleet_consumed_total"],
                m["vantage_fleet_skipped_duplicate_total"],
                m["vantage_detector_observed_reports_total"],
            ));
        }
        let want = (unique_1, 1, PHASE_1.len() as u64);
        if in_stream == unique_1 + 1 && seen.iter().all(|s| *s == want) {
            Ok(())
        } else {
            Err(format!(
                "stream {in_stream} (want {}), (consumed, skipped dup, observed) {seen:?}, \
                 want {want:?}",
                unique_1 + 1
            ))
        }
    })
    .await;

    // Phase 2: NATS down; an envelope is acknowledged (outbox entry in the same transaction)
    // and its collector killed before it could publish.
    nats.stop();
    let before: Vec<u64> = {
        let mut v = Vec::new();
        for m in &fleet {
            v.push(m.metrics().await["vantage_envelopes_accepted_total"]);
        }
        v
    };
    record(&agent, PHASE_2);
    let delivered_2 = flush_all(&agent).await;
    assert_eq!(delivered_2, 1, "phase 2 fits one envelope");
    let mut took = None;
    for (i, m) in fleet.iter().enumerate() {
        let m = m.metrics().await;
        if m["vantage_envelopes_accepted_total"] > before[i] {
            assert_eq!(m["vantage_fleet_outbox_batches"], 1, "{}: waits in the outbox", i);
            took = Some(i);
        }
    }
    let took = took.expect("a collector accepted phase 2");
    let other = 1 - took;
    fleet[took].proc.take().unwrap().kill9();
    let nats = NatsServer::start(&nats_dir, nats_port, nats_monitor).await;
    fleet[took].start();
    let total = unique_1 + 2;
    wait_for("the killed collector's outbox published after its restart", async || {
        let m = fleet[took].metrics().await;
        let in_stream = nats.stream_messages("VANTAGE").await;
        if m["vantage_fleet_outbox_batches"] == 0 && in_stream == total {
            Ok(())
        } else {
            Err(format!("outbox {}, stream {in_stream}/{total}", m["vantage_fleet_outbox_batches"]))
        }
    })
    .await;
    wait_for("the other collector fed phase 2 to its detector once", async || {
        let m = fleet[other].metrics().await;
        let got = (m["vantage_fleet_consumed_total"], m["vantage_detector_observed_reports_total"]);
        let want = (unique_1 + 1, (PHASE_1.len() + PHASE_2.len()) as u64);
        if got == want {
            Ok(())
        } else {
            Err(format!("(consumed, observed) {got:?}, want {want:?}"))
        }
    })
    .await;
    let stats = agent.stats();
    assert_eq!(stats.delivered_failures, (PHASE_1.len() + PHASE_2.len()) as u64);
    agent.shutdown().await.unwrap();
    for m in &mut fleet {
        let exit = m.proc.take().unwrap().terminate();
        assert!(exit.success(), "{} exited with {exit}", m.id);
    }
    eprintln!(
        "phase 1: {delivered_1} envelope(s), accepted {accepted:?}; phase 2 at c-{}; {:?}",
        took + 1,
        started.elapsed()
    );
}

/// SIGKILL at seeded random moments while uploads flow and NATS is up: after the restarts,
/// every envelope the store holds is in the stream exactly once (the outbox entry is written
/// in the same transaction as the envelope), and every envelope answered `202` is in the
/// store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_at_random_moments_leave_no_stored_envelope_unpublished() {
    use vantage_agent::entropy::{Entropy, SeededEntropy};
    use vantage_agent::report::UnixMillis;
    use vantage_agent::wire::AgentIdentity;
    use vantage_collector::store::{Store, StoreConfig};
    use vantage_tests::collector_proc::{seal_envelope, unix_now};

    const ROUNDS: usize = 6;
    const SENDERS: usize = 4;
    let seed = [21u8; 32];
    let tmp = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&tmp.path().join("nats"), free_port(), free_port()).await;
    let (mut c1, _ca) = FleetMember::new(tmp.path(), "c-1", &nats.url(), true);
    c1.start();
    let key = CollectorKey::from_seed(KEY_SEED).public_key();
    let mut rng = SeededEntropy::insecure_from_seed(seed);
    let agents: Vec<AgentIdentity> =
        (0..SENDERS).map(|_| AgentIdentity::generate(&mut rng)).collect();
    let mut acked = 0u64;
    let mut seq = 0u64;
    for round in 0..ROUNDS {
        if c1.proc.is_none() {
            c1.start();
        }
        let plain = c1.plain();
        // Envelopes sealed up front, so the senders only post.
        let mut queues = Vec::new();
        for agent in &agents {
            let mut q = Vec::new();
            for _ in 0..200 {
                seq += 1;
                q.push(seal_envelope(agent, &key, seq, 1, unix_now(), &mut rng).bytes);
            }
            queues.push(q);
        }
        let ok = Arc::new(AtomicU64::new(0));
        let senders: Vec<_> = queues
            .into_iter()
            .map(|q| {
                let ok = ok.clone();
                tokio::spawn(async move {
                    let Ok(mut c) = HttpClient::connect_plain(plain).await else { return };
                    for body in q {
                        match c.post_envelope(body).await {
                            Ok((status, _)) if status.as_u16() == 202 => {
                                ok.fetch_add(1, Ordering::SeqCst);
                            }
                            _ => return,
                        }
                    }
                })
            })
            .collect();
        // Wait until uploads are flowing, then a seeded random moment more.
        wait_for("uploads flowing", async || match ok.load(Ordering::SeqCst) {
            0 => Err("none acknowledged yet".to_owned()),
            _ => Ok(()),
        })
        .await;
        let extra = Duration::from_millis(rng.next_u64() % 150);
        tokio::time::sleep(extra).await;
        c1.proc.take().unwrap().kill9();
        for s in senders {
            s.await.unwrap();
        }
        let n = ok.load(Ordering::SeqCst);
        eprintln!("round {round}: killed after {extra:?} extra, {n} acknowledged");
        acked += n;
    }

    // Restart once more: the outbox drains; then stop gracefully and count the store.
    c1.start();
    let drained = wait_for("c-1's outbox drained", async || {
        let m = c1.metrics().await;
        assert_eq!(m["vantage_fleet_outbox_dropped_total"], 0, "outbox entries dropped");
        match m["vantage_fleet_outbox_batches"] {
            0 => Ok(nats.stream_messages("VANTAGE").await),
            n => Err(format!("outbox {n}")),
        }
    })
    .await;
    let exit = c1.proc.take().unwrap().terminate();
    assert!(exit.success(), "c-1 exited with {exit}");
    let store = Store::open(StoreConfig::new(c1.dir.join("data"))).unwrap();
    let stored = store.scan_reports(UnixMillis(0), UnixMillis(u64::MAX)).count() as u64;
    store.close().await.unwrap();
    let in_stream = nats.stream_messages("VANTAGE").await;
    eprintln!(
        "seed {seed:?}: {acked} acknowledged, {stored} stored (one report each), {in_stream} in \
         the stream ({drained} when the outbox drained)"
    );
    assert!(acked > 0);
    assert!(stored >= acked, "an acknowledged envelope is missing from the store");
    assert_eq!(in_stream, stored, "every stored envelope published, once");
}
