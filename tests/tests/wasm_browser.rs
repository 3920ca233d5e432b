#![allow(clippy::unwrap_used)]
//! The browser package (`.ci/build-wasm-pkg.sh` output) in Debian's headless Chromium against a
//! real collector: failures seen by the instrumented `fetch` become envelopes that the
//! collector opens, verifies and stores; they survive an offline period and a reload in
//! IndexedDB; without consent nothing is stored or sent.
//!
//! ```text
//!  node tests/browser/driver.js ── playwright-core ── /usr/bin/chromium (headless,
//!        │ goto http://127.0.0.1:P/                         host-resolver-rules guard)
//!        ▼
//!  page server (this test)  /  wasm_page.html   /pkg/*  the package   /status/503
//!        │ fetch ─▶ 127.0.0.1:refused (nothing listens)  ─▶ 127.0.0.1:reset (RST on accept)
//!        ▼ POST /v1/envelopes (CORS), GET /v1/ping (no-cors)
//!  collector (in-process, plain HTTP, real key)  open ─▶ verify ─▶ sled store
//! ```
//!
//! Needs the package (VANTAGE_WASM_PKG_DIR, default `target/wasm-pkg`): run `.ci/test-wasm.sh`.
//! The `bench_*` test is ignored by default (`.ci/test-wasm.sh` runs it with
//! `VANTAGE_WASM_BENCH=1`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use vantage_agent::report::UnixMillis;
use vantage_agent::taxonomy::{ErrorType, Scope};
use vantage_collector::config::Config;
use vantage_collector::model::{Source, StoredReport};
use vantage_collector::open::CollectorKey;
use vantage_collector::server::{Collector, RunningCollector};
use vantage_tests::collector_proc::write_collector_key;

const SECRET_PATH: &str = "basket-k3v9";
const DEADLINE: Duration = Duration::from_secs(20);

fn pkg_dir() -> PathBuf {
    let dir = std::env::var_os("VANTAGE_WASM_PKG_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm-pkg"),
        PathBuf::from,
    );
    assert!(
        dir.join("vantage_wasm_bg.wasm").is_file() && dir.join("vantage.js").is_file(),
        "{} holds no built package: run .ci/build-wasm-pkg.sh (or .ci/test-wasm.sh)",
        dir.display()
    );
    dir
}

fn browser_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser")
}

/// Serves the test page, the package under /pkg/, and /status/N answers.
async fn page_server() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let pkg = Arc::new(pkg_dir());
    let page = Arc::new(std::fs::read(browser_dir().join("wasm_page.html")).unwrap());
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let (pkg, page) = (pkg.clone(), page.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let path = req.uri().path().to_owned();
                    let (pkg, page) = (pkg.clone(), page.clone());
                    async move { Ok::<_, std::convert::Infallible>(serve(&path, &pkg, &page)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, task)
}

fn serve(path: &str, pkg: &Path, page: &[u8]) -> http::Response<Full<Bytes>> {
    let answer = |status: u16, ct: &str, body: Vec<u8>| {
        http::Response::builder()
            .status(status)
            .header("content-type", ct)
            .header("cache-control", "no-store")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    if path == "/" {
        return answer(200, "text/html", page.to_vec());
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return answer(code.parse().unwrap_or(500), "text/plain", b"status\n".to_vec());
    }
    if let Some(name) = path.strip_prefix("/pkg/") {
        if !name.contains("..") {
            let ct = match name.rsplit('.').next() {
                Some("js") => "text/javascript",
                Some("wasm") => "application/wasm",
                Some("html") => "text/html",
                _ => "application/octet-stream",
            };
            if let Ok(body) = std::fs::read(pkg.join(name)) {
                return answer(200, ct, body);
            }
        }
    }
    answer(404, "text/plain", b"not found\n".to_vec())
}

/// A port nothing listens on (bound, then closed).
async fn refused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

/// A listener that resets every connection (RST right after accept).
async fn resetter() -> (u16, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            if let Ok((tcp, _)) = listener.accept().await {
                let _ = tcp.set_zero_linger();
                drop(tcp);
            }
        }
    });
    (port, task)
}

/// A listener that only counts the connections made to it.
async fn counter() -> (u16, Arc<AtomicUsize>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let n = Arc::new(AtomicUsize::new(0));
    let seen = n.clone();
    let task = tokio::spawn(async move {
        loop {
            if let Ok((tcp, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                drop(tcp);
            }
        }
    });
    (port, n, task)
}

const COLLECTOR_SEED: [u8; 32] = [0x5a; 32];

fn collector_key_hex() -> String {
    CollectorKey::from_seed(COLLECTOR_SEED).public_key().to_string()
}

async fn start_collector(dir: &Path, listen: &str) -> RunningCollector {
    write_collector_key(dir, COLLECTOR_SEED);
    let config = Config::from_toml_str(
        &format!(
            "[server]\nlisten_plain = \"{listen}\"\n[keys]\nprivate_key_files = [\"collector.key\"]\n\
             [store]\npath = \"data\"\n[limits]\nprefix_rps = 1000.0\nprefix_burst = 1000\n\
             agent_rps = 1000.0\nagent_burst = 1000\n[log]\nlevel = \"warn\"\n"
        ),
        dir,
    )
    .unwrap();
    Collector::start(config).await.unwrap()
}

fn agent_reports(collector: &RunningCollector) -> Vec<StoredReport> {
    collector
        .store()
        .scan_reports(UnixMillis(0), UnixMillis(u64::MAX))
        .map(|r| r.unwrap())
        .filter(|r| r.source == Source::Agent)
        .collect()
}

/// Polls the collector's store until its agent reports count `want` failures (the sum of their
/// counts) or the deadline passes.
async fn wait_for_reports(collector: &RunningCollector, want: u32) -> Vec<StoredReport> {
    let started = Instant::now();
    loop {
        let reports = agent_reports(collector);
        let failures: u32 = reports.iter().map(|r| r.count).sum();
        if failures >= want || started.elapsed() > DEADLINE {
            return reports;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node driver around Chromium.
struct Browser {
    child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Browser {
    async fn launch(user_data_dir: &Path) -> Browser {
        assert!(
            Path::new("/usr/bin/chromium").is_file(),
            "/usr/bin/chromium is missing: run .ci/install-wasm-tools.sh"
        );
        assert!(
            browser_dir().join("node_modules/playwright-core").is_dir(),
            "tests/browser/node_modules/playwright-core is missing: run .ci/install-wasm-tools.sh"
        );
        let config = serde_json::json!({ "userDataDir": user_data_dir });
        let mut child = tokio::process::Command::new("node")
            .arg("driver.js")
            .arg(config.to_string())
            .current_dir(browser_dir())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        Browser { child, stdin, stdout }
    }

    async fn command(&mut self, cmd: Value) -> Value {
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(45), self.stdout.next_line())
            .await
            .expect("the driver answers within 45 s")
            .unwrap()
            .expect("the driver is still running");
        serde_json::from_str(&answer).unwrap()
    }

    async fn goto(&mut self, url: &str) {
        let a = self.command(serde_json::json!({ "cmd": "goto", "url": url })).await;
        assert_eq!(a["status"], 200, "loading {url}: {a}");
        self.eval("await window.vantageLoaded; return true;").await;
    }

    async fn reload(&mut self) {
        let a = self.command(serde_json::json!({ "cmd": "reload" })).await;
        assert_eq!(a["status"], 200, "reloading: {a}");
        self.eval("await window.vantageLoaded; return true;").await;
    }

    /// Runs `js` (an async function body) in the page and returns its value.
    async fn eval(&mut self, js: &str) -> Value {
        let a = self.command(serde_json::json!({ "cmd": "eval", "js": js })).await;
        assert_eq!(a["ok"], true, "in the page: {a}\n---\n{js}");
        a["value"].clone()
    }

    async fn quit(mut self) {
        let _ = self.command(serde_json::json!({ "cmd": "quit" })).await;
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// JS that creates the agent as `window.agent` with `config` (JSON) merged into the defaults.
fn create_agent(collector_url: &str, extra: Value) -> String {
    let mut config = serde_json::json!({
        "collectors": [collector_url],
        "collectorKey": collector_key_hex(),
        "appId": "com.example.web",
        "appVersion": "1.2.3",
        "service": "checkout",
        "sealDelayMs": 100,
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    format!("window.agent = await vantage.Vantage.create({config});")
}

/// Every file under `dir`, read whole.
fn all_bytes_under(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_failures_reach_the_collector_opened_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let collector = start_collector(dir.path(), "127.0.0.1:0").await;
    let collector_url = format!("http://{}", collector.plain_addr().unwrap());
    let (page_addr, page_task) = page_server().await;
    let refused = refused_port().await;
    let (reset, reset_task) = resetter().await;

    let profile = tempfile::tempdir().unwrap();
    let mut browser = Browser::launch(profile.path()).await;
    browser.goto(&format!("http://{page_addr}/")).await;
    let setup = create_agent(&collector_url, serde_json::json!({ "fetchTimeoutMs": 5000 }));
    let result = browser
        .eval(&format!(
            "{setup}
             await agent.setConsent(true);
             agent.instrumentFetch();
             const errors = [];
             for (const url of ['http://127.0.0.1:{refused}/{SECRET_PATH}?token=1',
                                'http://127.0.0.1:{reset}/{SECRET_PATH}']) {{
                 try {{ await fetch(url); errors.push('none'); }} catch (e) {{ errors.push(e.name); }}
             }}
             const status = (await fetch('/status/503?{SECRET_PATH}')).status;
             const stats = await agent.flush(15000);
             return {{ errors, status, stats, stored: await agent.storedEnvelopes() }};"
        ))
        .await;
    assert_eq!(result["errors"], serde_json::json!(["TypeError", "TypeError"]), "{result}");
    assert_eq!(result["status"], 503);
    let stats = &result["stats"];
    assert_eq!(stats["recorded"], 3, "{result}");
    assert!(stats["deliveredEnvelopes"].as_u64().unwrap() >= 1, "{result}");
    assert_eq!(stats["deliveredFailures"], 3, "{result}");
    assert_eq!(result["stored"], 0, "IndexedDB is empty once delivered: {result}");

    let reports = wait_for_reports(&collector, 3).await;
    // Failures by (host, type, status), summed over reports: a browser cannot tell a refused
    // port from a reset, so both are `tcp.failed` at the same host (coalesced into one report
    // counted twice when they fall within one seal delay).
    let mut seen = std::collections::BTreeMap::<(String, String, Option<u16>), u32>::new();
    for r in &reports {
        *seen.entry((r.host.clone(), r.error_type.as_str().to_owned(), r.status)).or_default() +=
            r.count;
    }
    let host = "127.0.0.1".to_owned();
    let want = std::collections::BTreeMap::from([
        ((host.clone(), "http.error".to_owned(), Some(503)), 1),
        ((host, "tcp.failed".to_owned(), None), 2),
    ]);
    assert_eq!(seen, want, "{reports:?}");
    for r in &reports {
        assert_eq!(r.service, "checkout");
        // The ping after the first failure found the collector: the network was fine.
        assert_eq!(r.scope, Scope::Path, "{r:?}");
        if r.error_type == ErrorType::HttpError {
            assert_eq!(r.status, Some(503));
        }
    }
    for bytes in all_bytes_under(&dir.path().join("data")) {
        assert!(
            !bytes.windows(SECRET_PATH.len()).any(|w| w == SECRET_PATH.as_bytes()),
            "a URL path reached the collector's files"
        );
    }

    browser.quit().await;
    page_task.abort();
    reset_task.abort();
    collector.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_reports_survive_a_reload_and_arrive_once() {
    let dir = tempfile::tempdir().unwrap();
    // The collector's port, reserved now; the collector starts on it later.
    let port = refused_port().await;
    let collector_url = format!("http://127.0.0.1:{port}");
    let (page_addr, page_task) = page_server().await;
    let refused = refused_port().await;

    let profile = tempfile::tempdir().unwrap();
    let mut browser = Browser::launch(profile.path()).await;
    browser.goto(&format!("http://{page_addr}/")).await;
    let setup = create_agent(
        &collector_url,
        serde_json::json!({ "baseBackoffMs": 100, "maxBackoffMs": 500, "sealDelayMs": 50 }),
    );
    // 1. Collector down: three different failures are recorded and stored.
    let offline = browser
        .eval(&format!(
            "{setup}
             await agent.setConsent(true);
             agent.instrumentFetch();
             const kept = [
                 agent.record({{ url: 'https://api.example.com/{SECRET_PATH}', type: 'tcp.refused' }}),
                 agent.record({{ url: 'https://cdn.example.net/', type: 'dns.name_not_resolved' }}),
             ];
             try {{ await fetch('http://127.0.0.1:{refused}/'); }} catch (e) {{ kept.push(e.name); }}
             const stats = await agent.flush(1500);
             return {{ kept, stats, stored: await agent.storedEnvelopes() }};"
        ))
        .await;
    assert_eq!(offline["kept"], serde_json::json!(["kept", "kept", "TypeError"]), "{offline}");
    assert_eq!(offline["stats"]["recorded"], 3, "{offline}");
    assert_eq!(offline["stats"]["deliveredEnvelopes"], 0, "{offline}");
    let stored = offline["stored"].as_u64().unwrap();
    assert!(stored >= 1, "envelopes are in IndexedDB: {offline}");

    // 2. Reload while still offline: the agent comes back with consent and its envelopes.
    browser.reload().await;
    let reloaded = browser
        .eval(&format!(
            "{setup}
             return {{ consented: agent.consented, stored: await agent.storedEnvelopes(),
                       stats: agent.stats() }};"
        ))
        .await;
    assert_eq!(reloaded["consented"], true, "{reloaded}");
    assert_eq!(reloaded["stored"], stored, "{reloaded}");
    assert_eq!(reloaded["stats"]["storedEnvelopes"], stored, "{reloaded}");

    // 3. The collector comes back: the envelopes from IndexedDB arrive.
    let collector = start_collector(dir.path(), &format!("127.0.0.1:{port}")).await;
    let online = browser
        .eval("const stats = await agent.flush(15000); return { stats, stored: await agent.storedEnvelopes() };")
        .await;
    assert_eq!(online["stored"], 0, "{online}");
    assert_eq!(online["stats"]["deliveredEnvelopes"], stored, "{online}");
    let reports = wait_for_reports(&collector, 3).await;
    let mut types: Vec<&str> = reports.iter().map(|r| r.error_type.as_str()).collect();
    types.sort_unstable();
    assert_eq!(types, ["dns.name_not_resolved", "tcp.failed", "tcp.refused"], "{reports:?}");
    // The ping found no collector while offline.
    assert!(reports.iter().all(|r| r.scope == Scope::Local || r.scope == Scope::Unknown));
    assert!(reports.iter().any(|r| r.scope == Scope::Local), "{reports:?}");

    // 4. Another reload sends nothing again: each report arrived once.
    browser.reload().await;
    let again = browser
        .eval(&format!(
            "{setup} const stats = await agent.flush(2000);
             return {{ stats, stored: await agent.storedEnvelopes() }};"
        ))
        .await;
    assert_eq!(again["stats"]["sealedEnvelopes"], 0, "{again}");
    assert_eq!(again["stats"]["deliveredEnvelopes"], 0, "{again}");
    assert_eq!(agent_reports(&collector).iter().map(|r| r.count).sum::<u32>(), 3);
    assert_eq!(agent_reports(&collector).len(), 3);

    browser.quit().await;
    page_task.abort();
    collector.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagehide_sends_pending_reports_without_credentials_and_a_resend_is_not_counted_twice() {
    let dir = tempfile::tempdir().unwrap();
    let collector = start_collector(dir.path(), "127.0.0.1:0").await;
    let collector_url = format!("http://{}", collector.plain_addr().unwrap());
    let (page_addr, page_task) = page_server().await;

    let profile = tempfile::tempdir().unwrap();
    let mut browser = Browser::launch(profile.path()).await;
    browser.goto(&format!("http://{page_addr}/")).await;
    // A long seal delay and no scope check: nothing leaves the page before it is hidden.
    let setup = create_agent(
        &collector_url,
        serde_json::json!({ "sealDelayMs": 600000, "scopeCheckIntervalMs": 0 }),
    );
    let recorded = browser
        .eval(&format!(
            "{setup}
             await agent.setConsent(true);
             return agent.record({{ url: 'https://api.example.com/', type: 'tcp.reset' }});"
        ))
        .await;
    assert_eq!(recorded, "kept");
    assert!(agent_reports(&collector).is_empty());

    // Leaving the page fires pagehide: the pending report is sealed and sent with
    // fetch(keepalive, credentials omit), which the collector's credential-less CORS allows.
    let left = browser.command(serde_json::json!({ "cmd": "goto", "url": "about:blank" })).await;
    assert_eq!(left["ok"], true, "{left}");
    let reports = wait_for_reports(&collector, 1).await;
    assert_eq!(reports.len(), 1, "the pagehide upload arrived: {reports:?}");
    assert_eq!(reports[0].error_type, ErrorType::TcpReset);

    // Back on the page, whatever IndexedDB kept is sent again; the collector does not count it
    // twice.
    browser.goto(&format!("http://{page_addr}/")).await;
    let back = browser
        .eval(&format!(
            "{setup} const stats = await agent.flush(10000);
             return {{ stats, stored: await agent.storedEnvelopes() }};"
        ))
        .await;
    assert_eq!(back["stored"], 0, "{back}");
    let reports = agent_reports(&collector);
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert_eq!(reports[0].count, 1);

    browser.quit().await;
    page_task.abort();
    collector.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_consent_nothing_is_stored_or_sent() {
    let (page_addr, page_task) = page_server().await;
    let (collector_port, connections, counter_task) = counter().await;
    let refused = refused_port().await;

    let profile = tempfile::tempdir().unwrap();
    let mut browser = Browser::launch(profile.path()).await;
    browser.goto(&format!("http://{page_addr}/")).await;
    let setup = create_agent(&format!("http://127.0.0.1:{collector_port}"), serde_json::json!({}));
    let js = format!(
        "{setup}
         agent.instrumentFetch();
         const recorded = agent.record({{ url: 'https://api.example.com/', type: 'tcp.refused' }});
         try {{ await fetch('http://127.0.0.1:{refused}/'); }} catch (e) {{}}
         await fetch('/status/500');
         await agent.setConsent(false);
         const stats = await agent.flush(1000);
         const dbs = (await indexedDB.databases()).map((d) => d.name);
         return {{ recorded, stats, dbs, consented: agent.consented }};"
    );
    let denied = browser.eval(&js).await;
    assert_eq!(denied["recorded"], "not_consented", "{denied}");
    assert_eq!(denied["consented"], false);
    assert_eq!(denied["stats"]["recorded"], 0, "{denied}");
    assert_eq!(denied["stats"]["storedEnvelopes"], 0, "{denied}");
    assert_eq!(denied["dbs"], serde_json::json!([]), "no IndexedDB database: {denied}");

    // After a reload, still nothing; and nothing ever reached the collector's port (a scope
    // check or an upload would have connected within the wait).
    browser.reload().await;
    let after = browser
        .eval(&format!(
            "{setup} await agent.flush(500);
             return (await indexedDB.databases()).map((d) => d.name);"
        ))
        .await;
    assert_eq!(after, serde_json::json!([]));
    assert_eq!(connections.load(Ordering::SeqCst), 0, "a connection reached the collector");

    browser.quit().await;
    page_task.abort();
    counter_task.abort();
}

/// Benchmark: record() -> envelope stored in IndexedDB, and main-thread time per record,
/// against a baseline (an empty call into the module), in the same page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: .ci/test-wasm.sh runs it with VANTAGE_WASM_BENCH=1"]
async fn bench_record_to_stored() {
    let (page_addr, page_task) = page_server().await;
    // Nothing listens at the collector URL: uploads fail fast and the envelopes stay stored.
    let refused = refused_port().await;
    let profile = tempfile::tempdir().unwrap();
    let mut browser = Browser::launch(profile.path()).await;
    browser.goto(&format!("http://{page_addr}/")).await;
    let setup = create_agent(
        &format!("http://127.0.0.1:{refused}"),
        serde_json::json!({ "sealDelayMs": 0, "scopeCheckIntervalMs": 0, "baseBackoffMs": 600000,
                            "maxBackoffMs": 600000 }),
    );
    let result = browser
        .eval(&format!(
            "{setup}
             await agent.setConsent(true);
             const N = 2000;
             const pct = (xs, p) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length * p)];
             // Baseline: an empty call into the module.
             let t = performance.now();
             for (let i = 0; i < N; i++) vantageCore.protocolVersion();
             const baselineUs = (performance.now() - t) * 1000 / N;
             // record() alone (classification, validation, coalescer), distinct hosts.
             t = performance.now();
             for (let i = 0; i < N; i++) agent.record({{ url: `https://h${{i}}.example.com/`, type: 'tcp.refused' }});
             const recordUs = (performance.now() - t) * 1000 / N;
             await agent.flush(100);
             // The core's whole main-thread share of one record: record + seal + journal.
             const core = new vantageCore.Core({{ collectors: ['http://127.0.0.1:{refused}'],
                 collectorKey: '{key}', appId: 'bench', sealDelayMs: 0 }});
             core.finishLoad(1); core.grant(Date.now());
             t = performance.now();
             for (let i = 0; i < 500; i++) {{
                 core.record('web', `https://h${{i}}.example.com/`, 'tcp.refused', 0, 1, '', Date.now());
                 core.sealPending(Date.now());
                 core.takeJournal();
             }}
             const recordSealUs = (performance.now() - t) * 1000 / 500;
             // record() -> stored: one record at a time, until its IndexedDB commit.
             const lat = [];
             for (let i = 0; i < 200; i++) {{
                 const stored = new Promise((r) => agent.addEventListener('stored', r, {{ once: true }}));
                 const t0 = performance.now();
                 agent.record({{ url: `https://l${{i}}.example.com/`, type: 'tcp.timed_out' }});
                 await stored;
                 lat.push(performance.now() - t0);
             }}
             return {{ baselineUs, recordUs, recordSealUs,
                       storedMsMedian: pct(lat, 0.5), storedMsP95: pct(lat, 0.95),
                       stats: agent.stats() }};",
            key = collector_key_hex()
        ))
        .await;
    println!("wasm bench (Chromium, this machine): {result:#}");
    assert!(result["recordUs"].as_f64().unwrap() > 0.0);
    browser.quit().await;
    page_task.abort();
}
