#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! `vantage-collector demo` (the README's main job), in its short mode: the simulated fleet's
//! outage raises an alert that the collector serves, it resolves, the sled store holds what
//! the fleet sent, and SIGINT stops the demo cleanly at any stage.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vantage_agent::report::UnixMillis;
use vantage_collector::store::{Store, StoreConfig};
use vantage_tests::collector_proc::collector_bin;

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
fn the_short_demo_raises_an_alert_serves_it_resolves_it_and_stops_on_ctrl_c() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let mut story =
        Story::start(&["--short", "--hold", "--dir", dir.to_str().unwrap()], tmp.path());
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

    story.wait_for("RESOLVED shop", Duration::from_secs(120));
    story.wait_for("--hold:", Duration::from_secs(10));
    let (status, page) = http_get(admin, "/");
    assert_eq!(status, 200);
    assert!(page.contains("<html") || page.contains("<!doctype") || page.contains("<!DOCTYPE"));
    let (_, body) = http_get(admin, "/v1/alerts");
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let recent = doc["recent"].as_array().unwrap();
    assert!(recent.iter().any(|a| a["id"] == id.as_str() && a["state"] == "resolved"), "{body}");

    story.signal("-INT");
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
