#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! `vantage-collector demo` (the README's main job), in its short mode: the simulated fleet's
//! outage raises an alert that the collector serves, it resolves, the sled store holds what
//! the fleet sent, and SIGINT stops the demo cleanly at any stage. With `--collector URL --key
//! FILE --dashboard URL` the same story drives a collector process started here, and `--hold`
//! keeps its alert firing until Ctrl-C.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vantage_agent::report::UnixMillis;
use vantage_collector::demo::sim::{Population, PopulationConfig};
use vantage_collector::store::{Store, StoreConfig};
use vantage_tests::collector_proc::{
    CollectorConfig, CollectorProc, collector_bin, write_collector_key,
};

/// The demo's stdout, line by line, with a deadline per wait.
struct Story {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Story {
    fn start(args: &[&str], tmpdir: &std::path::Path) -> Story {
        let mut child = Command::new(collector_bin())
            .arg("demo")
            .args(args)
            .env("TMPDIR", tmpdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Story { child, lines, seen: Vec::new() }
    }

    /// Waits for the first line starting with `prefix`.
    fn wait_for(&mut self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(e) => {
                    panic!("no line {prefix:?} ({e}); the demo printed:\n{}", self.seen.join("\n"))
                }
            }
        }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill").args([name, &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// The exit code, polled up to `limit`.
    fn exit_code(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "the demo did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every remaining line, once stdout closed.
    fn rest(&mut self) -> Vec<String> {
        let rest: Vec<String> = self.lines.iter().collect();
        self.seen.extend(rest.iter().cloned());
        rest
    }
}

impl Drop for Story {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

#[test]
fn the_short_demo_raises_an_alert_serves_it_resolves_it_and_exits() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let mut story = Story::start(&["--short", "--dir", dir.to_str().unwrap()], tmp.path());
    let dashboard = story.wait_for("dashboard: http://", Duration::from_secs(30));
    let admin: SocketAddr = dashboard
        .trim_start_matches("dashboard: http://")
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let alert = story.wait_for("ALERT ", Duration::from_secs(120));
    let id = alert.split(' ').nth(1).unwrap().to_owned();
    assert!(alert.contains(" shop [failures] "), "{alert}");
    // The collector serves the same alert, about the service that failed, with its evidence.
    let (status, body) = http_get(admin, "/v1/alerts");
    assert_eq!(status, 200);
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let all: Vec<&serde_json::Value> = ["firing", "recent"]
        .iter()
        .flat_map(|k| doc[k].as_array().unwrap().iter())
        .filter(|a| a["id"] == id.as_str())
        .collect();
    assert_eq!(all.len(), 1, "alert {id} not served: {body}");
    assert_eq!(all[0]["slice"]["service"], "shop", "{body}");
    assert!(all[0]["clients"].as_u64().unwrap() >= 5, "{body}");
    assert!(all[0]["breakdown"]["tcp"].as_u64().unwrap() > 0, "{body}");

    let (status, page) = http_get(admin, "/");
    assert_eq!(status, 200);
    assert!(page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"));

    story.wait_for("RESOLVED shop", Duration::from_secs(120));
    // Without --hold the story ends by itself, with the collector shut down cleanly.
    assert_eq!(story.exit_code(Duration::from_secs(30)), Some(0), "{}", story.seen.join("\n"));
    let rest = story.rest();
    assert!(rest.iter().any(|l| l == "collector stopped cleanly"), "{rest:?}");

    // What the fleet sent went through the real ingest path into sled, and survives.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Store::open(StoreConfig::new(dir.join("store"))).unwrap();
        let reports = store.scan_reports(UnixMillis(0), UnixMillis(u64::MAX)).count();
        assert!(reports > 100, "only {reports} reports stored");
        store.close().await.unwrap();
    });
}

#[test]
fn ctrl_c_while_learning_stops_cleanly_and_removes_the_scratch_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let mut story = Story::start(&["--short"], tmp.path());
    story.wait_for("learning baselines", Duration::from_secs(30));
    let scratch: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(scratch.len(), 1, "one scratch directory while running");
    story.signal("-INT");
    assert_eq!(story.exit_code(Duration::from_secs(30)), Some(0), "{}", story.seen.join("\n"));
    let rest = story.rest();
    assert!(rest.iter().any(|l| l.starts_with("stopping (signal)")), "{rest:?}");
    assert!(rest.iter().any(|l| l == "collector stopped cleanly"), "{rest:?}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "scratch directory left behind");
}

/// The demo's short detector timing, for the collector process the remote demo drives.
const SHORT_DETECTOR: &str = "[detector]\nbucket_ms = 500\nwindow_buckets = 4\n\
    warmup_windows = 12\nlateness_ms = 5000\nclient_gap_ms = 5000\nflush_grace_ms = 1500\n\
    retro_settle_ms = 2500\nresolve_after = 3\nnet_tenure_ms = 3000\n";

#[test]
fn the_demo_drives_a_running_collector_and_hold_keeps_its_alert_firing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("collector");
    std::fs::create_dir_all(&dir).unwrap();
    let key = write_collector_key(&dir, [42; 32]);
    std::fs::write(dir.join("collector.pub"), format!("{}\n", key.public_key())).unwrap();
    // The enrichment the demo's fleet maps its loopback /24s with, as an operator would have.
    Population::new(PopulationConfig::default(), key.public_key()).write_enrichment(&dir).unwrap();
    let config = CollectorConfig {
        server_extra: "listen_admin = \"127.0.0.1:0\"\n".into(),
        ..CollectorConfig::default()
    };
    let toml = format!(
        "{}[enrich]\nasn_csv = [\"asn.csv\"]\ncountry_csv = [\"country.csv\"]\n{SHORT_DETECTOR}",
        config.to_toml()
    );
    let collector = CollectorProc::start(&dir, &toml);
    let plain = collector.plain_addr().unwrap();
    let admin = collector.admin_addr().unwrap();
    let (url, dashboard) = (format!("http://{plain}"), format!("http://{admin}/"));
    let public = dir.join("collector.pub");
    let args = |key: &std::path::Path| {
        let key = key.to_str().unwrap().to_owned();
        vec![
            "--short".into(),
            "--hold".into(),
            "--collector".into(),
            url.clone(),
            "--key".into(),
            key,
            "--dashboard".into(),
            dashboard.clone(),
        ]
    };

    // Mistakes are named before anything is sent: the secret key instead of the public one,
    // a missing --dashboard (a usage error, exit 2).
    let secret = Command::new(collector_bin())
        .arg("demo")
        .args(args(&dir.join("collector.key")))
        .output()
        .unwrap();
    assert_eq!(secret.status.code(), Some(1));
    let said = String::from_utf8_lossy(&secret.stderr);
    assert!(said.contains("secret key") && said.contains("collector.pub"), "{said}");
    let usage = Command::new(collector_bin())
        .args(["demo", "--collector", &url, "--key", public.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2), "{}", String::from_utf8_lossy(&usage.stderr));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("--dashboard"));

    let args: Vec<String> = args(&public);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut story = Story::start(&args, tmp.path());
    story.wait_for("learning baselines", Duration::from_secs(30));
    let alert = story.wait_for("ALERT ", Duration::from_secs(120));
    let id = alert.split(' ').nth(1).unwrap().to_owned();
    assert!(alert.contains(" shop [failures] "), "{alert}");
    story.wait_for("--hold:", Duration::from_secs(10));

    // The running collector serves the alert, and it stays firing while the demo holds the
    // outage: for four times the detector's resolution period (3 quiet windows of 2 s).
    let firing = || {
        let (status, body) = http_get(admin, "/v1/alerts");
        assert_eq!(status, 200, "{body}");
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        doc["firing"].as_array().unwrap().iter().any(|a| a["id"] == id.as_str())
    };
    let held_until = Instant::now() + Duration::from_secs(24);
    while Instant::now() < held_until {
        assert!(firing(), "alert {id} stopped firing while the demo held the outage");
        std::thread::sleep(Duration::from_millis(500));
    }

    story.signal("-INT");
    assert_eq!(story.exit_code(Duration::from_secs(30)), Some(0), "{}", story.seen.join("\n"));
    assert!(story.rest().iter().any(|l| l.starts_with("stopping (signal)")));
    // The collector is the operator's: the demo leaves it running.
    assert_eq!(http_get(admin, "/v1/alerts").0, 200);
    drop(collector);
}
