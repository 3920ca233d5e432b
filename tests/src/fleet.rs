//! Fleet-mode harness shared by the fleet tests: collector processes that share one fleet key
//! ([`KEY_SEED`]), each in its own directory with its own TLS CA and `[fleet]` section, their
//! `/metrics`, a poll-until helper, and an agent's record-and-flush steps.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vantage_agent::native::{Agent, HttpStatus, Recorded, ReportInput};

use crate::collector_proc::{
    CollectorConfig, CollectorProc, HttpClient, write_collector_key, write_tls,
};
use crate::tls::TestCa;

/// Every member holds the key made from this seed: the agent seals to one public key.
pub const KEY_SEED: [u8; 32] = [9; 32];
/// The service the fleet tests' agents report for.
pub const SERVICE: &str = "checkout";
/// The host of every recorded failure.
pub const HOST: &str = "api.example.com";
/// How long any one wait may take.
pub const DEADLINE: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// The unlabelled samples of a collector's `/metrics` (plain listener).
pub async fn metrics(addr: SocketAddr) -> HashMap<String, u64> {
    let mut c = HttpClient::connect_plain(addr).await.expect("connect to /metrics");
    let (status, body) = c.get("/metrics").await.expect("GET /metrics");
    assert_eq!(status.as_u16(), 200);
    String::from_utf8_lossy(&body)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains('{'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            Some((name.to_owned(), value.trim().parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// One unlabelled sample of `addr`'s `/metrics`; panics when it is missing.
pub async fn metric(addr: SocketAddr, name: &str) -> u64 {
    *metrics(addr).await.get(name).unwrap_or_else(|| panic!("{name} not in {addr}/metrics"))
}

/// Polls `probe` until it returns `Ok`, failing with `what` and the last value seen after
/// [`DEADLINE`].
pub async fn wait_for<T>(what: &str, mut probe: impl AsyncFnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(last) => assert!(Instant::now() < deadline, "{what} within {DEADLINE:?}: {last}"),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A fleet collector's directory, config and (while running) process.
pub struct FleetMember {
    /// Its `collector_id`.
    pub id: &'static str,
    /// Its directory (key, TLS files, `data/` store).
    pub dir: PathBuf,
    /// Its config text.
    pub config: String,
    /// The process, while it runs.
    pub proc: Option<CollectorProc>,
}

impl FleetMember {
    /// Sets up `root/id`: the fleet key, its own TLS CA and certificate, and a config with TLS,
    /// the plain listener (for `/metrics`) and `[fleet]` on `nats_url`; `unlimited` lifts the
    /// rate limits. Not started.
    pub fn new(root: &Path, id: &'static str, nats_url: &str, unlimited: bool) -> (Self, TestCa) {
        let dir = root.join(id);
        std::fs::create_dir_all(&dir).expect("member dir");
        write_collector_key(&dir, KEY_SEED);
        let (ca, _) = write_tls(&dir, &["127.0.0.1", "localhost"]);
        let mut config = CollectorConfig { tls: true, unlimited, ..Default::default() }.to_toml();
        config.push_str(&format!(
            "[fleet]\nnats_url = {nats_url:?}\ncollector_id = {id:?}\npublish_timeout_ms = 500\n"
        ));
        (FleetMember { id, dir, config, proc: None }, ca)
    }

    /// Starts the process (it must not be running).
    pub fn start(&mut self) {
        assert!(self.proc.is_none(), "{} runs already", self.id);
        self.proc = Some(CollectorProc::start(&self.dir, &self.config));
    }

    /// The running process.
    pub fn proc(&self) -> &CollectorProc {
        self.proc.as_ref().unwrap_or_else(|| panic!("{} is not running", self.id))
    }

    /// The plain listener's address.
    pub fn plain(&self) -> SocketAddr {
        self.proc().plain_addr().expect("a plain listener")
    }

    /// Its unlabelled `/metrics` samples.
    pub async fn metrics(&self) -> HashMap<String, u64> {
        metrics(self.plain()).await
    }
}

/// Records one failure per HTTP status on [`HOST`] (distinct statuses: nothing coalesces).
pub fn record(agent: &Agent, statuses: Range<u16>) {
    for status in statuses {
        let input = ReportInput::new(SERVICE, &format!("https://{HOST}/pay"), &HttpStatus(status));
        assert_eq!(agent.record(input), Recorded::Kept, "status {status}");
    }
}

/// Flushes until nothing is left for a collector, returning the envelopes delivered meanwhile.
pub async fn flush_all(agent: &Agent) -> u64 {
    let before = agent.stats().delivered_envelopes;
    let deadline = Instant::now() + DEADLINE;
    loop {
        let out = agent.flush(Duration::from_secs(2)).await.expect("flush");
        if out.undelivered == 0 {
            return agent.stats().delivered_envelopes - before;
        }
        assert!(Instant::now() < deadline, "{} envelopes undelivered", out.undelivered);
    }
}
