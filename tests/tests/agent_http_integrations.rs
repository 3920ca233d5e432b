#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! Capture without code: real HTTP clients with the agent's middleware (reqwest) or layer
//! (hyper-util), real failures from real servers on loopback, reports delivered by a real
//! agent to a real collector process, read back from its store after it stops.
//!
//! ```text
//!  reqwest + VantageMiddleware ─┐   127.0.0.11 closed port        refused
//!  hyper-util + VantageLayer ───┼─▶ 127.0.0.12 accept, RST        reset
//!                               │   127.0.0.13 TLS, unknown CA     tls.cert.authority_invalid
//!                               │   127.0.0.14 TLS, other name     tls.cert.name_invalid
//!                               │   127.0.0.15 HTTP 503            http.error 503
//!                               │   127.0.0.16 never answers       tcp.timed_out (reqwest timeout)
//!                               │   127.0.0.17 HTTP 200            success, counted
//!                               │   127.0.0.18 HTTP 503, no service: not recorded
//!  Agent (consented) ──TLS──▶ vantage-collector serve ──▶ sled store ──▶ Store::open after SIGTERM
//! ```
//!
//! DNS failures (NXDOMAIN, resolver timeout, SERVFAIL) and connect timeouts need network
//! namespaces: `agent_http_netns.rs` runs the same clients inside one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower_layer::Layer;
use tower_service::Service;
use vantage_agent::native::integrations::reqwest::VantageMiddleware;
use vantage_agent::native::integrations::tower::VantageLayer;
use vantage_agent::native::{Agent, CollectorConfig};
use vantage_agent::report::{AppInfo, UnixMillis};
use vantage_agent::sampling::Sampling;
use vantage_collector::store::{Store, StoreConfig};
use vantage_tests::collector_proc::{self, CollectorProc};
use vantage_tests::tls::{TestCa, TestCert};

/// Reads one request's head (up to the blank line) or until the peer stops sending.
async fn read_head(stream: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 64 * 1024 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn listen(ip: &str) -> TcpListener {
    TcpListener::bind((ip, 0)).await.unwrap()
}

/// Answers every request with `status` and closes.
async fn http_server(ip: &str, status: u16) -> SocketAddr {
    let listener = listen(ip).await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                read_head(&mut s).await;
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

/// Reads the request, then closes with SO_LINGER 0: the client gets an RST.
async fn reset_server(ip: &str) -> SocketAddr {
    let listener = listen(ip).await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            read_head(&mut s).await;
            s.set_zero_linger().unwrap();
            drop(s);
        }
    });
    addr
}

/// Accepts and reads, never answers (kept open until the peer goes).
async fn silent_server(ip: &str) -> SocketAddr {
    let listener = listen(ip).await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            });
        }
    });
    addr
}

/// A TLS server with `cert`; the clients' handshakes fail on their side.
async fn tls_server(ip: &str, cert: &TestCert) -> SocketAddr {
    let listener = listen(ip).await;
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cert.server_config()));
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(s).await {
                    read_head(tls.get_mut().0).await;
                    let _ = tls.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
                }
            });
        }
    });
    addr
}

/// A closed port: bound, then released.
fn closed_port(ip: &str) -> SocketAddr {
    std::net::TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap()
}

/// The servers, and the URL each client requests with what it must see.
struct Lab {
    ca: TestCa,
    collector_ca: TestCa,
    collector: CollectorProc,
    _collector_dir: tempfile::TempDir,
    data_dir: tempfile::TempDir,
    refused: SocketAddr,
    reset: SocketAddr,
    untrusted: SocketAddr,
    wrong_name: SocketAddr,
    unavailable: SocketAddr,
    silent: SocketAddr,
    ok: SocketAddr,
    unmapped: SocketAddr,
}

impl Lab {
    async fn start() -> Lab {
        let ca = TestCa::new("http integrations test CA");
        let stranger = TestCa::new("a CA nobody trusts");
        let collector_dir = tempfile::tempdir().unwrap();
        let (collector_ca, _) = collector_proc::write_tls(collector_dir.path(), &["127.0.0.1"]);
        collector_proc::write_collector_key(collector_dir.path(), [5; 32]);
        let config =
            collector_proc::CollectorConfig { plain: false, tls: true, ..Default::default() };
        let collector = CollectorProc::start(collector_dir.path(), &config.to_toml());
        Lab {
            refused: closed_port("127.0.0.11"),
            reset: reset_server("127.0.0.12").await,
            untrusted: tls_server("127.0.0.13", &stranger.leaf(&["127.0.0.13"])).await,
            wrong_name: tls_server("127.0.0.14", &ca.leaf(&["other.example"])).await,
            unavailable: http_server("127.0.0.15", 503).await,
            silent: silent_server("127.0.0.16").await,
            ok: http_server("127.0.0.17", 200).await,
            unmapped: http_server("127.0.0.18", 503).await,
            ca,
            collector_ca,
            collector,
            _collector_dir: collector_dir,
            data_dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A consented agent delivering to the collector (its CA trusted), counting every
    /// success, one service per server.
    fn agent(&self) -> Arc<Agent> {
        let app = AppInfo::new("com.example.http", "1.0", "linux", "vantage-tests").unwrap();
        let key = vantage_collector::open::CollectorKey::from_seed([5; 32]).public_key();
        let url = format!("https://{}", self.collector.tls_addr().unwrap());
        let mut b = Agent::builder(app, key, self.data_dir.path().join("vantage"))
            .collector(CollectorConfig::new(&url).unwrap())
            .extra_root(self.collector_ca.cert_der())
            .sampling(Sampling::new(1.0, 1.0).unwrap())
            .scope_check_interval(None);
        for (service, host) in [
            ("refused", "127.0.0.11"),
            ("reset", "127.0.0.12"),
            ("untrusted", "127.0.0.13"),
            ("wrong-name", "127.0.0.14"),
            ("unavailable", "127.0.0.15"),
            ("silent", "127.0.0.16"),
            ("ok", "127.0.0.17"),
            ("shop", "*.shop.test"),
        ] {
            b = b.service(service, &[host]).unwrap();
        }
        let agent = Arc::new(b.build().unwrap());
        agent.set_consent(true).unwrap();
        agent
    }

    /// The clients' TLS: the test CA only, ring, HTTP/1.1.
    fn client_tls(&self) -> rustls::ClientConfig {
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(self.ca.root_store())
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        tls
    }
}

/// What the collector stored: reports by service (type, status, host, count) and success
/// counts by service.
struct Stored {
    reports: BTreeMap<String, (String, Option<u16>, String, u32)>,
    successes: BTreeMap<String, u64>,
}

/// Flushes the agent (everything delivered), stops the collector and reads its store.
async fn delivered(agent: Arc<Agent>, lab: Lab) -> Stored {
    let outcome = agent.flush(Duration::from_secs(20)).await.unwrap();
    assert_eq!(outcome.undelivered, 0, "not everything reached the collector");
    agent.shutdown().await.unwrap();
    let store_path = lab.collector.store_path();
    let stderr = lab.collector.stderr();
    let status = lab.collector.terminate();
    assert_eq!(status.code(), Some(0), "collector stderr:\n{stderr}");
    let store = Store::open(StoreConfig::new(&store_path)).unwrap();
    let mut reports = BTreeMap::new();
    for r in store.scan_reports(UnixMillis(0), UnixMillis(u64::MAX)) {
        let r = r.unwrap();
        let entry = reports.entry(r.service.clone()).or_insert((
            r.error_type.as_str().to_owned(),
            r.status,
            r.host.clone(),
            0,
        ));
        assert_eq!(entry.0, r.error_type.as_str(), "two types for {}", r.service);
        entry.3 += r.count;
    }
    let mut successes = BTreeMap::new();
    for t in store.scan_targets(UnixMillis(0), UnixMillis(u64::MAX)) {
        let t = t.unwrap();
        *successes.entry(t.service.clone()).or_insert(0) += t.successes;
    }
    store.close().await.unwrap();
    Stored { reports, successes }
}

#[track_caller]
fn assert_report(
    stored: &Stored,
    service: &str,
    error_type: &str,
    status: Option<u16>,
    host: &str,
) {
    let Some((t, s, h, _)) = stored.reports.get(service) else {
        panic!("no report for {service}; stored: {:?}", stored.reports)
    };
    assert_eq!((t.as_str(), *s, h.as_str()), (error_type, status, host), "service {service}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_middleware_records_real_failures() {
    let lab = Lab::start().await;
    let agent = lab.agent();
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(lab.client_tls())
        .no_proxy()
        .timeout(Duration::from_millis(800))
        .resolve("api.shop.test", lab.unavailable)
        .build()
        .unwrap();
    let client = reqwest_middleware::ClientBuilder::new(client)
        .with(VantageMiddleware::new(agent.clone()))
        .build();
    let get = |url: String| {
        let client = client.clone();
        async move { client.get(url).send().await }
    };

    // The caller sees exactly what the bare client would give.
    let e = get(format!("http://{}/", lab.refused)).await.unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    get(format!("http://{}/", lab.reset)).await.unwrap_err();
    get(format!("https://{}/", lab.untrusted)).await.unwrap_err();
    get(format!("https://{}/", lab.wrong_name)).await.unwrap_err();
    assert_eq!(get(format!("http://{}/", lab.unavailable)).await.unwrap().status(), 503);
    let e = get(format!("http://{}/", lab.silent)).await.unwrap_err();
    assert!(e.is_timeout(), "{e:?}");
    for _ in 0..3 {
        assert_eq!(get(format!("http://{}/", lab.ok)).await.unwrap().status(), 200);
    }
    let shop = format!("http://api.shop.test:{}/", lab.unavailable.port());
    assert_eq!(get(shop).await.unwrap().status(), 503);
    assert_eq!(get(format!("http://{}/", lab.unmapped)).await.unwrap().status(), 503);

    let stored = delivered(agent, lab).await;
    assert_report(&stored, "refused", "tcp.refused", None, "127.0.0.11");
    assert_report(&stored, "reset", "tcp.reset", None, "127.0.0.12");
    assert_report(&stored, "untrusted", "tls.cert.authority_invalid", None, "127.0.0.13");
    assert_report(&stored, "wrong-name", "tls.cert.name_invalid", None, "127.0.0.14");
    assert_report(&stored, "unavailable", "http.error", Some(503), "127.0.0.15");
    assert_report(&stored, "silent", "tcp.timed_out", None, "127.0.0.16");
    assert_report(&stored, "shop", "http.error", Some(503), "api.shop.test");
    assert_eq!(
        stored.reports.len(),
        7,
        "unexpected reports (unmapped host?): {:?}",
        stored.reports
    );
    assert_eq!(stored.successes.get("ok"), Some(&3), "{:?}", stored.successes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tower_layer_on_hyper_util_records_real_failures() {
    let lab = Lab::start().await;
    let agent = lab.agent();
    let mut tls = lab.client_tls();
    tls.alpn_protocols.clear(); // hyper-rustls sets them (enable_http1)
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .build();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<Bytes>>(https);
    let client = VantageLayer::new(agent.clone()).layer(client);
    let get = |url: String| {
        let mut client = client.clone();
        async move {
            std::future::poll_fn(|cx| client.poll_ready(cx)).await.unwrap();
            let req = http::Request::get(url).body(Empty::<Bytes>::new()).unwrap();
            client.call(req).await
        }
    };

    // The caller keeps hyper-util's error type and sees what the bare client would give.
    let e: hyper_util::client::legacy::Error =
        get(format!("http://{}/", lab.refused)).await.unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    get(format!("http://{}/", lab.reset)).await.unwrap_err();
    get(format!("https://{}/", lab.untrusted)).await.unwrap_err();
    get(format!("https://{}/", lab.wrong_name)).await.unwrap_err();
    assert_eq!(get(format!("http://{}/", lab.unavailable)).await.unwrap().status(), 503);
    for _ in 0..3 {
        assert_eq!(get(format!("http://{}/", lab.ok)).await.unwrap().status(), 200);
    }
    assert_eq!(get(format!("http://{}/", lab.unmapped)).await.unwrap().status(), 503);

    let stored = delivered(agent, lab).await;
    assert_report(&stored, "refused", "tcp.refused", None, "127.0.0.11");
    assert_report(&stored, "reset", "tcp.reset", None, "127.0.0.12");
    assert_report(&stored, "untrusted", "tls.cert.authority_invalid", None, "127.0.0.13");
    assert_report(&stored, "wrong-name", "tls.cert.name_invalid", None, "127.0.0.14");
    assert_report(&stored, "unavailable", "http.error", Some(503), "127.0.0.15");
    assert_eq!(
        stored.reports.len(),
        5,
        "unexpected reports (unmapped host?): {:?}",
        stored.reports
    );
    assert_eq!(stored.successes.get("ok"), Some(&3), "{:?}", stored.successes);
}
