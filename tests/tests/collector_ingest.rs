#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! The collector's ingest server, in process, over real TLS on loopback: agent-sealed envelopes
//! stored over HTTP/1.1 and HTTP/2, every kind of bad input refused with its status while the
//! server keeps serving, replays counted once, and the connection limits (slow headers, too
//! many connections, rate limits) holding.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use vantage_agent::entropy::SeededEntropy;
use vantage_agent::report::{AppInfo, Batch, Host, Report, ReportId, TargetCounts, UnixMillis};
use vantage_agent::wire::{self, AgentIdentity, Envelope, HPKE_INFO, SignedBatch, seal_batch};
use vantage_agent::{ErrorType, NetworkType, Scope};
use vantage_collector::config::Config;
use vantage_collector::metrics::RejectReason;
use vantage_collector::model::Source;
use vantage_collector::open::CollectorKey;
use vantage_collector::server::{Collector, RunningCollector};
use vantage_tests::tls::TestCa;

const ENVELOPE: &str = "application/vnd.vantage.envelope+cbor";
const MAX_BODY: usize = 16 * 1024;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

struct Harness {
    _dir: tempfile::TempDir,
    config: Config,
    key: CollectorKey,
    running: Option<RunningCollector>,
    connector: TlsConnector,
    addr: SocketAddr,
}

/// Starts a collector on 127.0.0.1:0 with TLS; `server` and `limits` are extra TOML lines.
async fn start(server: &str, limits: &str) -> Harness {
    start_with_store(server, limits, "").await
}

/// [`start`] with extra `[store]` lines.
async fn start_with_store(server: &str, limits: &str, store: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("collector ingest test CA");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]);
    leaf.write_to(dir.path());
    let key = CollectorKey::from_seed([1; 32]);
    let hex: String = key.secret_bytes().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.path().join("collector.key"), hex).unwrap();
    let text = format!(
        r#"
        [server]
        listen_tls = "127.0.0.1:0"
        tls_cert = "cert.pem"
        tls_key = "key.pem"
        max_body_bytes = {MAX_BODY}
        {server}
        [keys]
        private_key_files = ["collector.key"]
        [store]
        path = "data"
        {store}
        [limits]
        {limits}
        "#
    );
    let config = Config::from_toml_str(&text, dir.path()).unwrap();
    let running = Collector::start(config.clone()).await.unwrap();
    let addr = running.tls_addr().unwrap();
    let mut client = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(ca.root_store())
    .with_no_client_auth();
    client.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = TlsConnector::from(Arc::new(client));
    Harness { _dir: dir, config, key, running: Some(running), connector, addr }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Alpn {
    H1,
    H2,
}

impl Harness {
    fn running(&self) -> &RunningCollector {
        self.running.as_ref().unwrap()
    }

    async fn tls(&self, alpn: &[&[u8]]) -> TlsStream<TcpStream> {
        let mut config = (**self.connector.config()).clone();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let connector = TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        connector.connect(name, tcp).await.unwrap()
    }

    /// One request on a fresh connection.
    async fn send(&self, alpn: Alpn, req: Request<Full<Bytes>>) -> Response<Bytes> {
        match alpn {
            Alpn::H1 => {
                let tls = self.tls(&[b"http/1.1"]).await;
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
                tokio::spawn(conn);
                collect(sender.send_request(req).await.unwrap()).await
            }
            Alpn::H2 => {
                let tls = self.tls(&[b"h2", b"http/1.1"]).await;
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                let (mut sender, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                collect(sender.send_request(req).await.unwrap()).await
            }
        }
    }

    async fn post(&self, body: Vec<u8>, content_type: &str) -> Response<Bytes> {
        self.send(Alpn::H1, post("/v1/envelopes", body, content_type)).await
    }

    async fn ping(&self) -> StatusCode {
        self.send(Alpn::H1, get("/v1/ping")).await.status()
    }

    fn stored_reports(&self) -> Vec<vantage_collector::model::StoredReport> {
        self.running()
            .store()
            .scan_reports(UnixMillis(0), UnixMillis(u64::MAX))
            .collect::<Result<_, _>>()
            .unwrap()
    }

    async fn stop(mut self) {
        self.running.take().unwrap().shutdown().await.unwrap();
    }
}

async fn collect(resp: Response<hyper::body::Incoming>) -> Response<Bytes> {
    let (parts, body) = resp.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

fn post(path: &str, body: Vec<u8>, content_type: &str) -> Request<Full<Bytes>> {
    Request::post(format!("https://localhost{path}"))
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://localhost{path}")).body(Full::new(Bytes::new())).unwrap()
}

fn body_text(resp: &Response<Bytes>) -> String {
    String::from_utf8_lossy(resp.body()).into_owned()
}

/// Report ids unique per agent and sequence number: `[seq | tag, agent key[..15]]`.
fn report_id(agent: &AgentIdentity, seq: u64, tag: u8) -> ReportId {
    let mut id = [seq as u8 | tag; 16];
    id[1..].copy_from_slice(&agent.public_key().0[..15]);
    ReportId(id)
}

/// A batch made at `created_at` (agent clock) with reports 5 s and 60 s old and one target.
fn batch(agent: &AgentIdentity, seq: u64, created_at: u64) -> Batch {
    let r1 = Report::builder("checkout", "api.example.com", ErrorType::TcpRefused)
        .observed_at(UnixMillis(created_at - 5_000))
        .elapsed_ms(12)
        .network(NetworkType::Wifi)
        .scope(Scope::Path)
        .count(3)
        .build_with_id(report_id(agent, seq, 0), UnixMillis(created_at))
        .unwrap();
    let r2 = Report::builder("checkout", "api.example.com", ErrorType::HttpError)
        .status(503)
        .observed_at(UnixMillis(created_at - 60_000))
        .build_with_id(report_id(agent, seq, 0x80), UnixMillis(created_at))
        .unwrap();
    let mut b = Batch::new(
        agent.public_key(),
        seq,
        UnixMillis(created_at),
        AppInfo::new("com.example.shop", "3.1.4", "android", "vantage-rust/0.1.0").unwrap(),
    )
    .with_reports(vec![r1, r2]);
    b.targets.push(
        TargetCounts::new(
            "checkout".parse().unwrap(),
            Host::parse("api.example.com").unwrap(),
            100,
            97,
        )
        .unwrap(),
    );
    b
}

/// Seals arbitrary plaintext to `key` with any version, so the inside can be made wrong.
fn seal_raw(key: &CollectorKey, plaintext: &[u8], version: u64) -> Vec<u8> {
    let ikm = [7u8; 32];
    let mut env = Envelope {
        version,
        key_id: key.key_id(),
        enc: wire::hpke::encapsulated_key(&ikm).unwrap(),
        ciphertext: Vec::new(),
    };
    let (_, ct) = wire::hpke::seal_base(
        key.public_key().as_bytes(),
        &ikm,
        HPKE_INFO,
        &env.header_bytes(),
        plaintext,
    )
    .unwrap();
    env.ciphertext = ct;
    env.encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_envelopes_are_stored_over_http1_and_http2() {
    let h = start("", "").await;
    let mut rng = SeededEntropy::insecure_from_seed([2; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    // The agent's clock is a day behind: event times still come out right.
    let skew = 86_400_000;
    for (seq, alpn) in [(1u64, Alpn::H1), (2, Alpn::H2)] {
        let b = batch(&agent, seq, now_ms() - skew);
        let bytes = seal_batch(&b, &agent, &h.key.public_key(), &mut rng).unwrap();
        let before = now_ms();
        let resp = h.send(alpn, post("/v1/envelopes", bytes, ENVELOPE)).await;
        let after = now_ms();
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{alpn:?}: {}", body_text(&resp));
        let stored: Vec<_> =
            h.stored_reports().into_iter().filter(|r| r.id[0] & 0x7f == seq as u8).collect();
        assert_eq!(stored.len(), 2, "{alpn:?}");
        let net = h.config.keys.net_tag_key.tag("127.0.0.1".parse().unwrap());
        for r in &stored {
            assert!((before..=after).contains(&r.received_at.0), "{alpn:?}");
            let age = if r.error_type == ErrorType::TcpRefused { 5_000 } else { 60_000 };
            assert_eq!(r.event_at.0, r.received_at.0 - age, "{alpn:?}");
            assert_eq!(r.source, Source::Agent);
            assert_eq!(r.client, Some(agent.public_key().0));
            assert_eq!(r.service, "checkout");
            assert_eq!(r.host, "api.example.com");
            assert_eq!(r.net, net);
            assert_eq!(r.enrichment, Default::default(), "enrichment is off in this config");
        }
        let refused = stored.iter().find(|r| r.error_type == ErrorType::TcpRefused).unwrap();
        assert_eq!((refused.count, refused.elapsed_ms), (3, 12));
        assert_eq!(refused.network, NetworkType::Wifi);
        let http = stored.iter().find(|r| r.error_type == ErrorType::HttpError).unwrap();
        assert_eq!(http.status, Some(503));
    }
    let targets: Vec<_> = h
        .running()
        .store()
        .scan_targets(UnixMillis(0), UnixMillis(u64::MAX))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(targets.len(), 2);
    assert!(targets.iter().all(|t| (t.attempts, t.successes) == (100, 97)));
    assert_eq!(h.running().metrics().accepted_count(), 2);

    // The other endpoints.
    assert_eq!(h.ping().await, StatusCode::NO_CONTENT);
    assert_eq!(h.send(Alpn::H2, get("/healthz")).await.status(), StatusCode::OK);
    assert_eq!(h.send(Alpn::H1, get("/readyz")).await.status(), StatusCode::OK);
    assert_eq!(h.send(Alpn::H1, get("/nope")).await.status(), StatusCode::NOT_FOUND);
    let wrong_method = h.send(Alpn::H1, get("/v1/envelopes")).await;
    assert_eq!(wrong_method.status(), StatusCode::METHOD_NOT_ALLOWED);
    let metrics = body_text(&h.send(Alpn::H1, get("/metrics")).await);
    assert!(metrics.contains("\nvantage_envelopes_accepted_total 2\n"), "{metrics}");
    assert!(metrics.contains("vantage_reports_accepted_total{source=\"agent\"} 4\n"), "{metrics}");
    assert!(metrics.contains("\nvantage_store_reports 4\n"), "{metrics}");
    assert!(metrics.contains("vantage_ingest_duration_seconds_count{endpoint=\"envelopes\"} 2\n"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_bytes_is_enforced_every_retention_check() {
    // A store bound of 1 byte, checked every second: whatever is accepted is evicted by the
    // next check, not 5 minutes (the default period) later, envelope digests included.
    let h = start_with_store("", "", "max_bytes = 1\nretention_check_secs = 1").await;
    let mut rng = SeededEntropy::insecure_from_seed([7; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    for seq in 1..=3 {
        let bytes =
            seal_batch(&batch(&agent, seq, now_ms()), &agent, &h.key.public_key(), &mut rng)
                .unwrap();
        let resp = h.post(bytes, ENVELOPE).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "{}", body_text(&resp));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = h.running().store().stats();
        if stats.reports == 0 && stats.digests == 0 && stats.bytes <= 1 {
            break;
        }
        assert!(Instant::now() < deadline, "not evicted within 30 s: {stats:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(h.stored_reports().is_empty());
    let metrics = body_text(&h.send(Alpn::H1, get("/metrics")).await);
    assert!(metrics.contains("\nvantage_store_reports 0\n"), "{metrics}");
    // The envelope digests count toward the bound too, and went once their reports had.
    assert!(metrics.contains("\nvantage_store_envelope_digests 0\n"), "{metrics}");
    assert!(metrics.contains("\nvantage_store_bytes 0\n"), "{metrics}");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_their_status_and_the_server_keeps_serving() {
    let h = start("", "").await;
    let key = &h.key;
    let mut rng = SeededEntropy::insecure_from_seed([3; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    let now = now_ms();
    let good_batch = batch(&agent, 7, now);
    let good = seal_batch(&good_batch, &agent, &key.public_key(), &mut rng).unwrap();
    let signed = SignedBatch::sign(&good_batch, &agent, &key.key_id()).unwrap();
    let mut bad_sig = signed.clone();
    bad_sig.signature[0] ^= 1;
    let stranger = CollectorKey::from_seed([6; 32]);
    let future = batch(&agent, 8, now + 3 * 86_400_000);
    let late_report = {
        let mut b = batch(&agent, 9, now);
        b.reports.push(
            Report::builder("checkout", "api.example.com", ErrorType::TcpReset)
                .observed_at(UnixMillis(now + 60_000))
                .build_with_id(ReportId([99; 16]), UnixMillis(now + 60_000))
                .unwrap(),
        );
        b
    };
    use RejectReason as R;
    let cases: Vec<(&str, Vec<u8>, &str, StatusCode, RejectReason)> = vec![
        ("empty body", vec![], ENVELOPE, StatusCode::BAD_REQUEST, R::Malformed),
        (
            "truncated CBOR",
            good[..good.len() / 2].to_vec(),
            ENVELOPE,
            StatusCode::BAD_REQUEST,
            R::Malformed,
        ),
        (
            "deeply nested CBOR",
            [vec![0x81u8; 10_000], vec![0]].concat(),
            ENVELOPE,
            StatusCode::BAD_REQUEST,
            R::Malformed,
        ),
        (
            "oversized",
            vec![0xa4; MAX_BODY + 1],
            ENVELOPE,
            StatusCode::PAYLOAD_TOO_LARGE,
            R::TooLarge,
        ),
        (
            "unknown version",
            seal_raw(key, &signed.encode(), 2),
            ENVELOPE,
            StatusCode::BAD_REQUEST,
            R::BadVersion,
        ),
        (
            "unknown key id",
            seal_batch(&good_batch, &agent, &stranger.public_key(), &mut rng).unwrap(),
            ENVELOPE,
            StatusCode::BAD_REQUEST,
            R::UnknownKeyId,
        ),
        (
            "bad ciphertext",
            {
                let mut t = good.clone();
                let n = t.len();
                t[n - 20] ^= 1;
                t
            },
            ENVELOPE,
            StatusCode::BAD_REQUEST,
            R::DecryptFailed,
        ),
        (
            "bad signature",
            seal_raw(key, &bad_sig.encode(), 1),
            ENVELOPE,
            StatusCode::BAD_REQUEST,
            R::BadSignature,
        ),
        (
            "created far in the future",
            seal_batch(&future, &agent, &key.public_key(), &mut rng).unwrap(),
            ENVELOPE,
            StatusCode::BAD_REQUEST,
            R::Timestamp,
        ),
        (
            "report observed after the batch was made",
            seal_batch(&late_report, &agent, &key.public_key(), &mut rng).unwrap(),
            ENVELOPE,
            StatusCode::BAD_REQUEST,
            R::Timestamp,
        ),
        (
            "wrong content type",
            good.clone(),
            "application/json",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            R::BadContentType,
        ),
        (
            "no content type",
            good.clone(),
            "",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            R::BadContentType,
        ),
    ];
    for (name, body, content_type, want, reason) in cases {
        let before = h.running().metrics().rejected_count(reason);
        let resp = h.post(body, content_type).await;
        assert_eq!(resp.status(), want, "{name}: {}", body_text(&resp));
        if want == StatusCode::BAD_REQUEST {
            assert!(body_text(&resp).starts_with(reason.as_str()), "{name}: {}", body_text(&resp));
        }
        assert_eq!(h.running().metrics().rejected_count(reason), before + 1, "{name}");
        assert_eq!(h.ping().await, StatusCode::NO_CONTENT, "after {name}");
    }
    assert!(h.stored_reports().is_empty(), "nothing bad was stored");

    // An oversized body without Content-Length is cut off while it is read.
    let mut tls = h.tls(&[b"http/1.1"]).await;
    let head = format!(
        "POST /v1/envelopes HTTP/1.1\r\nhost: localhost\r\ncontent-type: {ENVELOPE}\r\ntransfer-encoding: chunked\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![0xa4u8; 4096];
    for _ in 0..(MAX_BODY / chunk.len() + 1) {
        let _ = tls.write_all(format!("{:x}\r\n", chunk.len()).as_bytes()).await;
        let _ = tls.write_all(&chunk).await;
        let _ = tls.write_all(b"\r\n").await;
    }
    let mut response = vec![0u8; 256];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut response))
        .await
        .unwrap()
        .unwrap();
    let status_line = String::from_utf8_lossy(&response[..n]);
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
    assert_eq!(h.ping().await, StatusCode::NO_CONTENT);

    // Replays: the same bytes are a duplicate; the same batch sealed again (new bytes: not a
    // retry, an agent re-sends bytes) is a new envelope whose reports are already stored
    // (report ids), so nothing is stored twice.
    let (opens_before, open_cpu_before) = h.running().metrics().open_cpu();
    assert_eq!(h.post(good.clone(), ENVELOPE).await.status(), StatusCode::ACCEPTED);
    assert_eq!(h.stored_reports().len(), 2);
    let resp = h.post(good.clone(), ENVELOPE).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(body_text(&resp), "duplicate\n");
    assert_eq!(h.running().metrics().duplicate_count(), 1);
    let resealed = seal_batch(&good_batch, &agent, &key.public_key(), &mut rng).unwrap();
    assert_ne!(resealed, good);
    assert_eq!(h.post(resealed, ENVELOPE).await.status(), StatusCode::ACCEPTED);
    assert_eq!(h.running().metrics().duplicate_count(), 1);
    assert_eq!(h.stored_reports().len(), 2, "stored once");
    assert_eq!(h.running().metrics().accepted_count(), 2);
    // All three went through the open (a duplicate is recognised after it), each at some CPU
    // cost of the worker thread that opened it: an X25519 and an Ed25519 verify take tens of
    // µs, and no open takes a second.
    let (opens, open_cpu) = h.running().metrics().open_cpu();
    assert_eq!(opens - opens_before, 3);
    let per_open = (open_cpu - open_cpu_before) / 3;
    assert!(
        per_open > Duration::from_micros(5) && per_open < Duration::from_secs(1),
        "{per_open:?}"
    );
    let metrics = body_text(&h.send(Alpn::H1, get("/metrics")).await);
    assert!(metrics.contains(&format!("\nvantage_envelope_opens_total {opens}\n")), "{metrics}");
    let exposed: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vantage_envelope_open_cpu_seconds_total "))
        .and_then(|v| v.parse().ok())
        .expect("vantage_envelope_open_cpu_seconds_total");
    assert!((exposed - open_cpu.as_secs_f64()).abs() < 1e-6, "{exposed} vs {open_cpu:?}");
    assert!(metrics.contains("\nvantage_envelopes_duplicate_total 1\n"), "{metrics}");
    assert!(metrics.contains("vantage_envelopes_rejected_total{reason=\"bad_signature\"} 1\n"));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nel_preflight_content_type_and_refusals() {
    let h = start("", "").await;
    let preflight = Request::options("https://localhost/v1/nel")
        .header("origin", "https://shop.example")
        .header("access-control-request-method", "POST")
        .body(Full::new(Bytes::new()))
        .unwrap();
    for alpn in [Alpn::H1, Alpn::H2] {
        let resp = h.send(alpn, preflight.clone()).await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let hdr = |n: &str| resp.headers().get(n).unwrap().to_str().unwrap().to_owned();
        assert_eq!(hdr("access-control-allow-origin"), "*");
        assert!(hdr("access-control-allow-methods").contains("POST"));
        assert_eq!(hdr("access-control-allow-headers"), "content-type");
        assert!(hdr("access-control-max-age").parse::<u64>().unwrap() > 0);
    }
    let resp = h.send(Alpn::H1, post("/v1/nel", b"[]".to_vec(), "application/json")).await;
    assert_eq!(resp.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let resp =
        h.send(Alpn::H2, post("/v1/nel", b"not json".to_vec(), "application/reports+json")).await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let resp = h
        .send(Alpn::H1, post("/v1/nel", vec![b' '; MAX_BODY + 1], "application/reports+json"))
        .await;
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let metrics = body_text(&h.send(Alpn::H1, get("/metrics")).await);
    for reason in ["bad_content_type", "too_large"] {
        assert!(
            metrics.contains(&format!("vantage_nel_rejected_total{{reason=\"{reason}\"}} 1\n")),
            "{metrics}"
        );
    }
    assert!(h.stored_reports().is_empty());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_and_silent_handshakes_are_cut_off() {
    let h = start("header_read_timeout_ms = 1000", "").await;
    // Headers one byte every 250 ms: the connection is closed about 1 s in, long before the
    // 60-odd bytes are sent.
    let tls = h.tls(&[b"http/1.1"]).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let started = Instant::now();
    let writer = tokio::spawn(async move {
        for b in
            b"GET /v1/ping HTTP/1.1\r\nhost: localhost\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaa\r\n\r\n"
        {
            if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let mut buf = vec![0u8; 512];
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a 408 response, if any; keep reading until the close
            }
        }
    })
    .await;
    assert!(end.is_ok(), "slow connection still open after 10 s");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "{took:?}");
    writer.abort();

    // A TCP connection that never starts the TLS handshake is closed after the same timeout.
    let mut tcp = TcpStream::connect(h.addr).await.unwrap();
    let started = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await.unwrap();
    assert!(matches!(n, Ok(0) | Err(_)));
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(h.ping().await, StatusCode::NO_CONTENT);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_limit_get_503_and_service_resumes() {
    let h = start("max_connections = 2", "").await;
    // Two connections hold both slots, each in the middle of a request (a body that does not
    // come): busy, so neither can be closed to make room.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut tls = h.tls(&[b"http/1.1"]).await;
        tls.write_all(
            b"POST /v1/envelopes HTTP/1.1\r\nhost: x\r\ncontent-type: \
              application/vnd.vantage.envelope+cbor\r\ncontent-length: 1000\r\n\r\nab",
        )
        .await
        .unwrap();
        held.push(tls);
    }
    // Both requests are in progress before the third connection comes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !h.running().metrics().render(Default::default()).contains("connections_open 2\n") {
        assert!(Instant::now() < deadline, "the two connections were never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // A third gets 503 + Retry-After (over HTTP/1.1 even when it offers h2), then is closed.
    let tls = h.tls(&[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    let closed = tokio::spawn(conn);
    let resp = sender.send_request(get("/v1/ping")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["retry-after"], "1");
    tokio::time::timeout(Duration::from_secs(5), closed).await.unwrap().unwrap().unwrap();
    let rejected = || {
        let text = h.running().metrics().render(Default::default());
        let line = text.lines().find(|l| l.starts_with("vantage_connections_rejected_total "));
        line.unwrap().rsplit(' ').next().unwrap().parse::<u64>().unwrap()
    };
    assert_eq!(rejected(), 1);

    // Once the two close, new connections are served again.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut sender, _task) = loop {
        let tls = h.tls(&[b"http/1.1"]).await;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        let task = tokio::spawn(conn);
        let status = sender.send_request(get("/v1/ping")).await.unwrap().status();
        if status == StatusCode::NO_CONTENT {
            break (sender, task);
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(Instant::now() < deadline, "slots never freed");
        tokio::task::yield_now().await;
    };
    sender.ready().await.unwrap();
    let rejected_before = rejected();

    // Idle keep-alive connections do not keep newcomers out: with both slots held by idle
    // connections, a new one makes the least recently used close and is served.
    let mut idle = vec![sender];
    let tls = h.tls(&[b"http/1.1"]).await;
    let (mut second, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    assert_eq!(
        second.send_request(get("/v1/ping")).await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    idle.push(second);
    let tls = h.tls(&[b"http/1.1"]).await;
    let (mut third, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    assert_eq!(third.send_request(get("/v1/ping")).await.unwrap().status(), StatusCode::NO_CONTENT);
    // The first (least recently used) was closed to make room.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !idle[0].is_closed() {
        assert!(Instant::now() < deadline, "no idle connection was closed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!idle[1].is_closed());
    assert_eq!(rejected(), rejected_before, "nobody was refused");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    // Per source prefix, before opening: three requests, then 429.
    let h = start("", "prefix_rps = 0.05\nprefix_burst = 3").await;
    for _ in 0..3 {
        assert_eq!(h.post(vec![], ENVELOPE).await.status(), StatusCode::BAD_REQUEST);
    }
    let resp = h.post(vec![], ENVELOPE).await;
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(h.running().metrics().rejected_count(RejectReason::RateLimited), 1);
    assert_eq!(h.ping().await, StatusCode::NO_CONTENT, "other endpoints are not limited");
    h.stop().await;

    // Per agent key, after verification: two envelopes, then 429; another agent is not affected.
    let h = start("", "agent_rps = 0.1\nagent_burst = 2").await;
    let mut rng = SeededEntropy::insecure_from_seed([4; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    let other = AgentIdentity::generate(&mut rng);
    let now = now_ms();
    for seq in 1..=3u64 {
        let bytes =
            seal_batch(&batch(&agent, seq, now), &agent, &h.key.public_key(), &mut rng).unwrap();
        let resp = h.post(bytes, ENVELOPE).await;
        let want = if seq <= 2 { StatusCode::ACCEPTED } else { StatusCode::TOO_MANY_REQUESTS };
        assert_eq!(resp.status(), want, "seq {seq}");
        if seq == 3 {
            let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=10).contains(&retry), "{retry}");
        }
    }
    let bytes = seal_batch(&batch(&other, 1, now), &other, &h.key.public_key(), &mut rng).unwrap();
    assert_eq!(h.post(bytes, ENVELOPE).await.status(), StatusCode::ACCEPTED);
    assert_eq!(h.stored_reports().len(), 6);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests_then_flushes_the_store() {
    let h = start("", "").await;
    let mut rng = SeededEntropy::insecure_from_seed([5; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    let bytes =
        seal_batch(&batch(&agent, 1, now_ms()), &agent, &h.key.public_key(), &mut rng).unwrap();
    assert_eq!(h.post(bytes, ENVELOPE).await.status(), StatusCode::ACCEPTED);

    // A request in progress when shutdown begins still gets its 202. `Expect: 100-continue`
    // shows when the handler is reading the body; only then does shutdown start.
    let second =
        seal_batch(&batch(&agent, 2, now_ms()), &agent, &h.key.public_key(), &mut rng).unwrap();
    let mut tls = h.tls(&[b"http/1.1"]).await;
    let head = format!(
        "POST /v1/envelopes HTTP/1.1\r\nhost: localhost\r\ncontent-type: {ENVELOPE}\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        second.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let mut interim = Vec::new();
    while !interim.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await.unwrap();
        interim.push(byte[0]);
    }
    assert!(interim.starts_with(b"HTTP/1.1 100"), "{}", String::from_utf8_lossy(&interim));
    let addr = h.addr;
    let store_path = h.config.store.path.clone();
    let Harness { _dir, mut running, .. } = h;
    let running = running.take().unwrap();
    let shutdown = tokio::spawn(running.shutdown());
    // Shutdown has begun once the listener is gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).await.is_ok() {
        assert!(Instant::now() < deadline, "still listening after shutdown began");
        tokio::task::yield_now().await;
    }
    tls.write_all(&second).await.unwrap();
    tls.flush().await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut response))
        .await
        .unwrap()
        .unwrap_or_default();
    let response = String::from_utf8_lossy(&response).to_lowercase();
    assert!(response.starts_with("http/1.1 202"), "{response}");
    assert!(response.contains("connection: close"), "{response}");
    shutdown.await.unwrap().unwrap();

    // The store reopens with both envelopes' reports in it.
    let store = vantage_collector::store::Store::open(vantage_collector::store::StoreConfig::new(
        &store_path,
    ))
    .unwrap();
    let reports: Vec<_> =
        store.scan_reports(UnixMillis(0), UnixMillis(u64::MAX)).collect::<Result<_, _>>().unwrap();
    assert_eq!(reports.len(), 4);
    store.close().await.unwrap();
}

/// The drop counts agents send ride into the store with their envelope, exactly once: a
/// retried envelope (same bytes) adds nothing, and the totals survive a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_drop_counts_are_stored_once_and_exported() {
    use vantage_agent::drops::DropReason;
    let mut h = start("", "").await;
    let mut rng = SeededEntropy::insecure_from_seed([9; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    let mut b = batch(&agent, 1, now_ms());
    b.drops.add(DropReason::QueueFull, 5);
    b.drops.add(DropReason::Expired, 2);
    let bytes = seal_batch(&b, &agent, &h.key.public_key(), &mut rng).unwrap();
    for expected in ["stored", "duplicate"] {
        let resp = h.post(bytes.clone(), ENVELOPE).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
        assert_eq!(body_text(&resp).trim(), expected);
    }
    let mut b2 = batch(&agent, 2, now_ms());
    b2.drops.add(DropReason::QueueFull, 1);
    let bytes2 = seal_batch(&b2, &agent, &h.key.public_key(), &mut rng).unwrap();
    assert_eq!(h.post(bytes2, ENVELOPE).await.status(), StatusCode::ACCEPTED);

    let check = |metrics: &str| {
        for (reason, n) in [("queue_full", 6), ("expired", 2), ("store_error", 0)] {
            let line = format!("vantage_agent_dropped_reports_total{{reason=\"{reason}\"}} {n}\n");
            assert!(metrics.contains(&line), "missing {line:?} in {metrics}");
        }
    };
    check(&body_text(&h.send(Alpn::H1, get("/metrics")).await));
    let totals = h.running().store().agent_drops().unwrap();
    assert!(totals.contains(&("queue_full", 6)), "{totals:?}");
    // The same totals under the sending app.
    let by_app = h.running().store().agent_drops_by_app().unwrap();
    let app = b.app.id().to_owned();
    assert!(by_app.contains(&(app.clone(), "queue_full", 6)), "{by_app:?}");
    assert!(by_app.contains(&(app, "expired", 2)), "{by_app:?}");

    // Restart on the same store: the totals are on disk.
    h.running.take().unwrap().shutdown().await.unwrap();
    let running = Collector::start(h.config.clone()).await.unwrap();
    h.addr = running.tls_addr().unwrap();
    h.running = Some(running);
    check(&body_text(&h.send(Alpn::H1, get("/metrics")).await));
    h.stop().await;
}

/// `[nel]`: a `[[nel.services]]` rule files a subdomain's reports under its service, other
/// domains become their registrable domain until `max_services` is reached, and past it they
/// go to `nel-other`, counted in `/metrics`; a bad rule is a config error naming the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nel_reports_map_to_configured_services_within_a_bound() {
    let nel = "[nel]\nmax_services = 1\n[[nel.services]]\nid = \"checkout\"\nhosts = [\"shop.example\", \"*.shop.example\"]";
    let h = start("", nel).await;
    let upload = |hosts: &[&str]| {
        let entries: Vec<_> = hosts
            .iter()
            .map(|host| {
                serde_json::json!({
                    "age": 100, "type": "network-error", "url": format!("https://{host}/a/b?c=d"),
                    "body": {"sampling_fraction": 1.0, "phase": "dns",
                             "type": "dns.name_not_resolved", "elapsed_time": 12}
                })
            })
            .collect();
        post("/v1/nel", serde_json::to_vec(&entries).unwrap(), "application/reports+json")
    };
    let hosts = ["missing.shop.example", "shop.example", "www.news.example", "cdn.third.example"];
    let resp = h.send(Alpn::H1, upload(&hosts)).await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT, "{}", body_text(&resp));
    let mut got: Vec<(String, String)> =
        h.stored_reports().into_iter().map(|r| (r.host, r.service)).collect();
    got.sort();
    let want = [
        ("cdn.third.example", "nel-other"),
        ("missing.shop.example", "checkout"),
        ("shop.example", "checkout"),
        ("www.news.example", "news.example"),
    ];
    assert_eq!(got, want.map(|(a, b)| (a.to_owned(), b.to_owned())));
    let metrics = body_text(&h.send(Alpn::H1, get("/metrics")).await);
    assert!(metrics.contains("\nvantage_nel_other_service_total 1\n"), "{metrics}");
    h.stop().await;

    let dir = tempfile::tempdir().unwrap();
    let bad = "[keys]\nprivate_key_files = [\"k\"]\n[store]\npath = \"d\"\n[server]\nlisten_plain = \"127.0.0.1:0\"\n[[nel.services]]\nid = \"x\"\nhosts = [\"*.*.example\"]";
    let e = Config::from_toml_str(bad, dir.path()).unwrap_err().to_string();
    assert!(e.contains("nel.services[0].hosts") && e.contains("*.*.example"), "{e}");
}
