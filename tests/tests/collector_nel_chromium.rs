#![allow(clippy::unwrap_used)]
//! Real Network Error Logging reports from Debian's Chromium reach the collector's `/v1/nel`.
//!
//! ```text
//!  node tests/browser/driver.js ── playwright-core ── /usr/bin/chromium (headless)
//!        │ goto https://origin.test:P/...          (host-resolver-rules: *.test -> 127.0.0.1,
//!        ▼                                          everything else NOTFOUND)
//!  origin (this test: hyper + rustls)  NEL + Report-To headers; /fail answers 500;
//!        then replaced by a listener that resets every connection; then closed (refused)
//!        │ Chromium queues NEL reports, uploads them (--short-reporting-delay)
//!        ▼
//!  collector (in-process, TLS, collector.test:Q)  POST /v1/nel ─▶ nel::parse_reports ─▶ store
//! ```
//!
//! The policy and its Report-To group both set `include_subdomains`, and the browser then
//! navigates to `missing.origin.test`, which does not resolve: Chromium reports the DNS failure
//! under the parent's policy, and the collector files it under the service `origin.test` (the
//! registrable domain), with phase dns (`collector_nel_outage.rs` pages such an outage).
//!
//! Chromium trusts the two test leaves through `--ignore-certificate-errors-spki-list` (the
//! blanket `--ignore-certificate-errors` turns NEL off). The test asserts the types, phases and
//! status that arrive, that no path, query, IP or user agent reaches the store's files, and
//! that delivering the same upload twice does not count twice.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::PublicKeyData;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use vantage_agent::report::UnixMillis;
use vantage_agent::taxonomy::{ErrorType, Phase};
use vantage_collector::config::Config;
use vantage_collector::model::{Source, StoredReport};
use vantage_collector::server::{Collector, RunningCollector};
use vantage_tests::collector_proc::{HttpClient, write_collector_key};
use vantage_tests::tls::{TestCa, TestCert};

/// Words that appear only in paths, queries and headers the store must never keep.
const SECRET_PATH: &str = "cart-zq7x";
const SECRET_QUERY: &str = "token=qq93";
const DEADLINE: Duration = Duration::from_secs(30);

fn spki_der_hex(cert: &TestCert) -> String {
    let key = rcgen::KeyPair::from_pem(&cert.key_pem).unwrap();
    hex::encode(key.subject_public_key_info())
}

/// The test origin: a TLS server whose every answer sets a NEL policy; `/fail...` is a 500.
struct Origin {
    port: u16,
    accept: tokio::task::JoinHandle<()>,
}

impl Origin {
    async fn start(listener: TcpListener, cert: &TestCert, collector_port: u16) -> Origin {
        let port = listener.local_addr().unwrap().port();
        let mut config = cert.server_config();
        // The handler speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let report_to = format!(
            r#"{{"group":"default","max_age":3600,"include_subdomains":true,"endpoints":[{{"url":"https://collector.test:{collector_port}/v1/nel"}}]}}"#
        );
        let accept = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                let report_to = report_to.clone();
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let status = if req.uri().path().starts_with("/fail") { 500 } else { 200 };
                        let response = http::Response::builder()
                            .status(status)
                            .header("content-type", "text/html")
                            .header("report-to", report_to.as_str())
                            .header(
                                "nel",
                                r#"{"report_to":"default","max_age":3600,"failure_fraction":1.0,"include_subdomains":true}"#,
                            )
                            // An inline icon: no favicon request may be in flight when the
                            // origin stops (it would add a stray tcp.closed or similar).
                            .body(Full::new(Bytes::from_static(
                                b"<!doctype html><link rel=icon href=\"data:,\"><p>origin</p>",
                            )));
                        async move { response }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Origin { port, accept }
    }

    /// Stops accepting and closes every open connection (dropping the task drops the listener
    /// and the connection set, which aborts the connections).
    async fn stop(self) {
        self.accept.abort();
        let _ = self.accept.await;
    }
}

/// A listener on the origin's port that resets every connection (RST right after accept).
async fn resetter(listener: TcpListener) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_zero_linger();
                drop(tcp);
            }
        }
    })
}

/// The node driver around Chromium: one JSON command per line, one JSON answer per line.
struct Browser {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Browser {
    async fn launch(user_data_dir: &Path, spki_der_hex: &[String]) -> Browser {
        let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
        assert!(
            Path::new("/usr/bin/chromium").is_file(),
            "/usr/bin/chromium is missing: run .ci/install-chromium.sh"
        );
        assert!(
            browser_dir.join("node_modules/playwright-core").is_dir(),
            "tests/browser/node_modules/playwright-core is missing: run .ci/install-chromium.sh"
        );
        let config = serde_json::json!({
            "userDataDir": user_data_dir,
            // The first matching rule wins: the subdomain does not resolve.
            "hostRules": [
                "MAP missing.origin.test ~NOTFOUND",
                "MAP origin.test 127.0.0.1",
                "MAP collector.test 127.0.0.1"
            ],
            "spkiDerHex": spki_der_hex,
            "extraArgs": ["--short-reporting-delay"],
        });
        let mut child = tokio::process::Command::new("node")
            .arg("driver.js")
            .arg(config.to_string())
            .current_dir(&browser_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run node (install it with .ci/install-chromium.sh)");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Browser { child, stdin, stdout }
    }

    async fn command(&mut self, cmd: serde_json::Value) -> serde_json::Value {
        self.stdin.write_all(format!("{cmd}\n").as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
        let line = tokio::time::timeout(Duration::from_secs(40), self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("driver did not answer {cmd} within 40 s"))
            .unwrap()
            .unwrap_or_else(|| panic!("driver exited while running {cmd}"));
        let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(answer.get("fatal").is_none(), "driver failed: {answer}");
        answer
    }

    async fn goto(&mut self, url: &str) -> serde_json::Value {
        self.command(serde_json::json!({"cmd": "goto", "url": url, "timeoutMs": 15000})).await
    }

    async fn quit(mut self) {
        self.command(serde_json::json!({"cmd": "quit"})).await;
        let status = tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "driver exited with {status}");
    }
}

fn nel_reports(collector: &RunningCollector) -> Vec<StoredReport> {
    collector
        .store()
        .scan_reports(UnixMillis(0), UnixMillis(u64::MAX))
        .map(|r| r.unwrap())
        .filter(|r| r.source == Source::Nel)
        .collect()
}

/// Every file under `dir`, read whole.
fn all_bytes_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push((path.clone(), std::fs::read(&path).unwrap()));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_nel_reports_are_stored_without_paths() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("vantage NEL test CA");
    let collector_cert = ca.leaf(&["collector.test", "127.0.0.1"]);
    let origin_cert = ca.leaf(&["origin.test"]);
    collector_cert.write_to(dir.path());
    write_collector_key(dir.path(), [4; 32]);
    let config = Config::from_toml_str(
        "[server]\nlisten_tls = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n\
         [keys]\nprivate_key_files = [\"collector.key\"]\n[store]\npath = \"data\"\n\
         [limits]\nnel_prefix_rps = 1000.0\nnel_prefix_burst = 1000\n[log]\nlevel = \"warn\"\n",
        dir.path(),
    )
    .unwrap();
    let collector = Collector::start(config).await.unwrap();
    let collector_addr: SocketAddr = collector.tls_addr().unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin_port = listener.local_addr().unwrap().port();
    let origin = Origin::start(listener, &origin_cert, collector_addr.port()).await;
    assert_eq!(origin.port, origin_port);
    let base = format!("https://origin.test:{origin_port}");

    let profile = tempfile::tempdir().unwrap();
    let mut browser = Browser::launch(
        profile.path(),
        &[spki_der_hex(&collector_cert), spki_der_hex(&origin_cert)],
    )
    .await;

    // 1. The policy, then an HTTP 500.
    let answer = browser.goto(&format!("{base}/")).await;
    assert_eq!(answer["status"], 200, "loading the origin: {answer}");
    let answer = browser.goto(&format!("{base}/fail/{SECRET_PATH}?{SECRET_QUERY}#frag")).await;
    assert_eq!(answer["status"], 500, "loading /fail: {answer}");

    // 1b. A subdomain that does not resolve: under the include_subdomains policy Chromium
    // reports the DNS failure (only DNS failures are reported for subdomains).
    let answer =
        browser.goto(&format!("https://missing.origin.test:{origin_port}/{SECRET_PATH}")).await;
    assert_eq!(answer["ok"], false, "an unresolvable host loaded: {answer}");

    // 2. The origin resets every connection.
    origin.stop().await;
    let reset_task = resetter(TcpListener::bind(("127.0.0.1", origin_port)).await.unwrap()).await;
    let answer = browser.goto(&format!("{base}/reset/{SECRET_PATH}?{SECRET_QUERY}")).await;
    assert_eq!(answer["ok"], false, "a reset connection loaded: {answer}");

    // 3. Nothing listens any more.
    reset_task.abort();
    let _ = reset_task.await;
    let answer = browser.goto(&format!("{base}/refused/{SECRET_PATH}?{SECRET_QUERY}")).await;
    assert_eq!(answer["ok"], false, "a closed port loaded: {answer}");

    // Chromium uploads after its (short) reporting delay; poll the store.
    let wanted: BTreeSet<&str> =
        ["http.error", "dns.name_not_resolved", "tcp.reset", "tcp.refused"].into();
    let deadline = Instant::now() + DEADLINE;
    let reports = loop {
        let reports = nel_reports(&collector);
        let seen: BTreeSet<String> =
            reports.iter().map(|r| r.error_type.as_str().to_owned()).collect();
        if wanted.iter().all(|w| seen.contains(*w)) {
            break reports;
        }
        assert!(
            Instant::now() < deadline,
            "after {DEADLINE:?} the store holds NEL types {seen:?}, wanted {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    browser.quit().await;

    for r in &reports {
        // The subdomain's report is filed under the service of its registrable domain.
        assert_eq!(r.service, "origin.test", "{r:?}");
        if r.error_type == ErrorType::DnsNameNotResolved {
            assert_eq!(r.host, "missing.origin.test", "{r:?}");
        } else {
            assert_eq!(r.host, "origin.test", "{r:?}");
        }
        assert_eq!(r.client, None);
        assert_eq!(r.count, 1);
        assert_eq!(r.sample_ppm, 1_000_000);
        assert!(r.event_at <= r.received_at);
        assert!(r.received_at.0 - r.event_at.0 < 60_000, "age over a minute: {r:?}");
        match r.error_type {
            ErrorType::HttpError => {
                assert_eq!(r.phase, Phase::Application);
                assert_eq!(r.status, Some(500));
            }
            ErrorType::DnsNameNotResolved => {
                assert_eq!(r.phase, Phase::Dns);
                assert_eq!(r.status, None);
            }
            ErrorType::TcpReset | ErrorType::TcpRefused => {
                assert_eq!(r.phase, Phase::Connection);
                assert_eq!(r.status, None);
            }
            ref other => panic!("unexpected NEL type {other} in {r:?}; all: {reports:?}"),
        }
    }
    eprintln!(
        "Chromium delivered {} NEL reports: {:?}",
        reports.len(),
        reports.iter().map(|r| r.error_type.as_str()).collect::<Vec<_>>()
    );

    // 4. The same upload delivered twice counts once (Chromium may retry an upload).
    let body = serde_json::json!([{
        "age": 10, "type": "network-error",
        "url": format!("{base}/fail/{SECRET_PATH}?{SECRET_QUERY}"),
        "user_agent": "Mozilla/5.0 HeadlessChrome-zq",
        "body": {"sampling_fraction": 1.0, "server_ip": "127.0.0.1", "protocol": "http/1.1",
                 "method": "GET", "status_code": 503, "elapsed_time": 12, "phase": "application",
                 "type": "http.error", "referrer": format!("{base}/{SECRET_PATH}")}
    }])
    .to_string();
    let before = nel_reports(&collector).len();
    let mut http =
        HttpClient::connect_tls(collector_addr, ca.root_store(), "collector.test").await.unwrap();
    for attempt in 0..2 {
        let (status, answer) = http
            .post("/v1/nel", "application/reports+json", Bytes::from(body.clone()))
            .await
            .unwrap();
        assert!(status.is_success(), "upload {attempt}: {status} {answer:?}");
    }
    let after = nel_reports(&collector);
    assert_eq!(after.len(), before + 1, "a duplicate upload was counted twice");
    assert_eq!(after.iter().filter(|r| r.status == Some(503)).count(), 1);
    drop(http);

    // Nothing of the paths, queries, server IP, user agent or referrer reached the disk.
    let store_dir = dir.path().join("data");
    collector.shutdown().await.unwrap();
    let files = all_bytes_under(&store_dir);
    assert!(!files.is_empty(), "the store wrote no files under {}", store_dir.display());
    for (path, bytes) in &files {
        for secret in [SECRET_PATH, SECRET_QUERY, "127.0.0.1", "HeadlessChrome", "/fail/"] {
            assert!(!contains(bytes, secret), "{secret:?} found in {}", path.display());
        }
    }
}
