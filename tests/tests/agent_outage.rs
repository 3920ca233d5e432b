#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! Last-mile outages between the native agent and a real collector.
//!
//! - The collector is unreachable (not started yet, later stopped: connections are refused)
//!   while the app records failures; when it comes back, everything recorded meanwhile is
//!   delivered, oldest first, none lost, none stored twice, and nothing reached the collector
//!   twice (its duplicate counter stays 0: a refused connection never delivers half).
//! - DNS is broken for the collector's name (NXDOMAIN from the namespace's resolver): the agent
//!   process, in a client network namespace, reaches the collector process in the server
//!   namespace through the configured fixed address, with TLS still checking the name. Needs
//!   root, iproute2 and iptables (`.ci/install-netns-tools.sh`); fails loudly without them.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vantage_agent::delivery::DeliveryConfig;
use vantage_agent::native::{Agent, CollectorConfig, Recorded, ReportInput};
use vantage_agent::report::{AppInfo, UnixMillis};
use vantage_collector::config::Config;
use vantage_collector::model::StoredReport;
use vantage_collector::open::CollectorKey;
use vantage_collector::server::{Collector, RunningCollector};
use vantage_collector::store::{Store, StoreConfig};
use vantage_tests::collector_proc::{CollectorProc, READY_FILE, collector_bin};
use vantage_tests::netns::{NetnsPair, SERVER_ADDR};
use vantage_tests::tls::TestCa;

const PROC: &str = env!("CARGO_BIN_EXE_vantage-agent-proc");
const PROBE: &str = env!("CARGO_BIN_EXE_vantage-probe");

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// The report number in a host made by this file (`r<n>.reports.example`).
fn number_of(host: &str) -> u64 {
    host.strip_prefix('r')
        .and_then(|h| h.strip_suffix(".reports.example"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a report the test did not make: {host}"))
}

fn scan(store: &Store) -> Vec<StoredReport> {
    store.scan_reports(UnixMillis(0), UnixMillis(u64::MAX)).collect::<Result<_, _>>().unwrap()
}

/// A real collector in this process (TLS on a fixed loopback port, its store in a temp dir)
/// that can be started, stopped and started again on the same port and store.
struct Lab {
    dir: tempfile::TempDir,
    ca: TestCa,
    key: CollectorKey,
    addr: SocketAddr,
    running: Option<RunningCollector>,
    accepted: u64,
    duplicates: u64,
}

impl Lab {
    fn new() -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("agent outage test CA");
        ca.leaf(&["127.0.0.1"]).write_to(dir.path());
        let key = CollectorKey::from_seed([9; 32]);
        std::fs::write(dir.path().join("collector.key"), hex::encode(key.secret_bytes())).unwrap();
        // A free port, released at once: nothing listens there until the collector starts.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        Lab { dir, ca, key, addr, running: None, accepted: 0, duplicates: 0 }
    }

    async fn start(&mut self) {
        let text = format!(
            r#"
            [server]
            listen_tls = "{}"
            tls_cert = "cert.pem"
            tls_key = "key.pem"
            shutdown_grace_ms = 300
            [keys]
            private_key_files = ["collector.key"]
            [store]
            path = "store"
            [log]
            level = "error"
            "#,
            self.addr
        );
        let config = Config::from_toml_str(&text, self.dir.path()).unwrap();
        self.running = Some(Collector::start(config).await.unwrap());
    }

    async fn stop(&mut self) {
        let running = self.running.take().unwrap();
        self.accepted += running.metrics().accepted_count();
        self.duplicates += running.metrics().duplicate_count();
        running.shutdown().await.unwrap();
    }

    fn stored(&self) -> Vec<StoredReport> {
        scan(self.running.as_ref().unwrap().store())
    }
}

/// One wave of reports recorded during the test, sealed into one envelope.
struct Wave {
    numbers: std::ops::Range<u64>,
    /// Wall clock before the first and after the last record.
    from_ms: u64,
    to_ms: u64,
}

async fn record_wave(agent: &Agent, numbers: std::ops::Range<u64>) -> Wave {
    let from_ms = now_ms();
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    for n in numbers.clone() {
        let host = format!("r{n}.reports.example");
        assert_eq!(agent.record(ReportInput::new("checkout", &host, &refused)), Recorded::Kept);
    }
    let to_ms = now_ms();
    // Seal now (one envelope per wave, so envelope order is wave order) without waiting for
    // delivery.
    agent.flush(Duration::ZERO).await.unwrap();
    Wave { numbers, from_ms, to_ms }
}

/// Every report of `waves` is stored exactly once and the waves arrived in order (each
/// envelope is accepted before the next one is sent).
#[track_caller]
fn assert_delivered_in_order(stored: &[StoredReport], waves: &[Wave]) {
    let mut by_number: BTreeMap<u64, &StoredReport> = BTreeMap::new();
    for r in stored {
        assert!(by_number.insert(number_of(&r.host), r).is_none(), "stored twice: {}", r.host);
    }
    let expected: u64 = waves.iter().map(|w| w.numbers.end - w.numbers.start).sum();
    assert_eq!(by_number.len() as u64, expected, "reports lost or unexpected");
    let mut previous_latest = UnixMillis(0);
    for (i, wave) in waves.iter().enumerate() {
        let reports: Vec<&StoredReport> =
            wave.numbers.clone().map(|n| *by_number.get(&n).unwrap()).collect();
        let earliest = reports.iter().map(|r| r.received_at).min().unwrap();
        let latest = reports.iter().map(|r| r.received_at).max().unwrap();
        assert!(
            earliest >= previous_latest,
            "wave {i} (received from {earliest:?}) arrived before the older wave {} (received \
             until {previous_latest:?})",
            i.saturating_sub(1)
        );
        previous_latest = latest;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_recorded_during_an_outage_arrive_in_order_once() {
    let mut lab = Lab::new();
    let tmp = tempfile::tempdir().unwrap();
    let app = AppInfo::new("com.example.outage", "1.0", "linux", "vantage-tests").unwrap();
    let agent = Agent::builder(app, lab.key.public_key(), tmp.path().join("agent"))
        .service("checkout", &["api.example.com"])
        .unwrap()
        .collector(CollectorConfig::new(&format!("https://{}", lab.addr)).unwrap())
        .extra_root(lab.ca.cert_der())
        .delivery(DeliveryConfig {
            base_backoff_ms: 100,
            max_backoff_ms: 1_000,
            // One upload at a time: the collector then sees envelopes exactly in the order
            // they were sent, which is what the order check below reads.
            max_in_flight: 1,
            ..DeliveryConfig::default()
        })
        .build()
        .unwrap();
    agent.set_consent(true).unwrap();

    // The collector has not started: connections to its port are refused.
    let mut waves = Vec::new();
    for w in 0..4u64 {
        waves.push(record_wave(&agent, w * 40..(w + 1) * 40).await);
    }
    let out = agent.flush(Duration::from_millis(500)).await.unwrap();
    assert_eq!(out.undelivered, 4, "nothing can be delivered while the port refuses");
    assert_eq!(agent.buffered_envelopes(), 4);

    lab.start().await;
    assert_eq!(agent.flush(Duration::from_secs(20)).await.unwrap().undelivered, 0);
    assert_delivered_in_order(&lab.stored(), &waves);
    assert_eq!(agent.buffered_envelopes(), 0, "delivered envelopes leave the buffer");

    // The collector stops; more failures are recorded; it comes back on the same port and
    // store.
    lab.stop().await;
    let mut later = Vec::new();
    for w in 4..9u64 {
        later.push(record_wave(&agent, w * 40..(w + 1) * 40).await);
    }
    let out = agent.flush(Duration::from_millis(500)).await.unwrap();
    assert_eq!(out.undelivered, 5);
    lab.start().await;
    assert_eq!(agent.flush(Duration::from_secs(20)).await.unwrap().undelivered, 0);
    let stored = lab.stored();
    let (first_phase, second_phase): (Vec<_>, Vec<_>) =
        stored.into_iter().partition(|r| number_of(&r.host) < 160);
    assert_delivered_in_order(&second_phase, &later);
    waves.extend(later);
    let mut all = first_phase;
    all.extend(second_phase);
    assert_delivered_in_order(&all, &waves);

    let stats = agent.stats();
    assert_eq!(stats.recorded, 360);
    assert_eq!(stats.delivered_failures, 360);
    assert_eq!(stats.sealed_envelopes, 9);
    assert_eq!(stats.delivered_envelopes, 9);
    assert!(stats.dropped.is_empty(), "{:?}", stats.dropped);
    lab.stop().await;
    assert_eq!(lab.accepted, 9, "one accepted upload per envelope");
    assert_eq!(lab.duplicates, 0, "no envelope reached the collector twice");
    agent.shutdown().await.unwrap();
}

/// The collector's event time of a report delivered late must still be when it was observed
/// (DESIGN.md: "a flush of late reports after a last-mile outage becomes a retrospective
/// alert, not a current page").
///
/// `batch.created_at` is when the agent *sealed* the batch, and a buffered envelope is sent
/// unchanged (signed) long after; the agent's `vantage-sent-at` header lets the collector
/// measure each report's age at sending instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_delivered_after_an_outage_keep_their_observation_time() {
    let mut lab = Lab::new();
    let tmp = tempfile::tempdir().unwrap();
    let app = AppInfo::new("com.example.outage", "1.0", "linux", "vantage-tests").unwrap();
    let agent = Agent::builder(app, lab.key.public_key(), tmp.path().join("agent"))
        .service("checkout", &["api.example.com"])
        .unwrap()
        .collector(CollectorConfig::new(&format!("https://{}", lab.addr)).unwrap())
        .extra_root(lab.ca.cert_der())
        .delivery(DeliveryConfig {
            base_backoff_ms: 100,
            max_backoff_ms: 500,
            ..Default::default()
        })
        .build()
        .unwrap();
    agent.set_consent(true).unwrap();
    let wave = record_wave(&agent, 0..20).await;
    // The outage lasts at least two seconds (what is measured is its effect on event times).
    let out = agent.flush(Duration::from_secs(2)).await.unwrap();
    assert_eq!(out.undelivered, 1);
    lab.start().await;
    assert_eq!(agent.flush(Duration::from_secs(20)).await.unwrap().undelivered, 0);
    for r in lab.stored() {
        // Same clock on both sides: the event time is the observation time plus the upload's
        // transit (sending to the collector's receipt stamp, well under the 2 s outage that
        // dating by sealing time would add).
        assert!(
            r.event_at.0 + 2 >= wave.from_ms && r.event_at.0 <= wave.to_ms + 500,
            "{} observed in [{}, {}] but dated {} ({} ms late) by the collector",
            r.host,
            wave.from_ms,
            wave.to_ms,
            r.event_at.0,
            r.event_at.0.saturating_sub(wave.to_ms)
        );
    }
    lab.stop().await;
    agent.shutdown().await.unwrap();
}

/// Writes an agent TOML for the process in the client namespace.
fn agent_toml(dir: &Path, name: &str, key: &CollectorKey, fixed: Option<SocketAddr>) -> String {
    let fixed = fixed.map(|a| format!("fixed_addrs = [\"{a}\"]")).unwrap_or_default();
    let text = format!(
        r#"
        data_dir = "{data}"
        collector_key = "{key}"
        extra_ca_files = ["{ca}"]
        [app]
        id = "com.example.netns"
        version = "1.0"
        platform = "linux"
        [[services]]
        id = "checkout"
        hosts = ["api.example.com"]
        [[collectors]]
        url = "https://collector.vantage.test:8443"
        {fixed}
        [delivery]
        base_backoff_ms = 100
        max_backoff_ms = 1000
        "#,
        data = dir.join(format!("{name}-data")).display(),
        key = key.public_key(),
        ca = dir.join("ca.pem").display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Runs the agent process in the client namespace, records `count` reports and flushes with
/// `flush_ms`; returns the number of envelopes left undelivered.
fn run_agent_in_client(ns: &mut NetnsPair, config: &str, count: u64, flush_ms: u64) -> u64 {
    let mut command = ns.client_command(PROC);
    command.arg(config).stdin(Stdio::piped());
    let child = ns.spawn(command).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let answer = |stdout: &mut BufReader<_>, line: &mut String| {
        line.clear();
        stdout.read_line(line).unwrap();
        assert!(!line.is_empty(), "the agent process ended (see its stderr above)");
        line.trim().to_owned()
    };
    assert!(answer(&mut stdout, &mut line).starts_with("ready "));
    writeln!(stdin, "burst 0 {count}").unwrap();
    assert_eq!(answer(&mut stdout, &mut line), format!("acked 0 {count} {count}"));
    writeln!(stdin, "flush {flush_ms}").unwrap();
    let flushed = answer(&mut stdout, &mut line);
    writeln!(stdin, "shutdown").unwrap();
    assert_eq!(answer(&mut stdout, &mut line), "bye");
    flushed.strip_prefix("flushed ").unwrap().parse().unwrap()
}

#[test]
fn broken_dns_for_the_collector_name_falls_back_to_its_fixed_address() {
    let mut ns = NetnsPair::new().unwrap_or_else(|e| {
        panic!("this test needs network namespaces (root, iproute2, iptables): {e}")
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("agent netns outage CA");
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();

    // The namespace's resolver (resolv.conf -> 198.51.100.2:53) answers NXDOMAIN for every
    // name, the collector's included.
    let mut dns = ns.server_command(PROBE);
    dns.args(["serve", "--dns", &format!("{SERVER_ADDR}:53")]);
    let child = ns.spawn(dns).unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the DNS server did not start");

    // The real collector, as a process in the server namespace, with a certificate for the
    // name only (not the address): a connection to the fixed address must still verify it.
    let collector_dir = dir.path().join("collector");
    std::fs::create_dir(&collector_dir).unwrap();
    ca.leaf(&["collector.vantage.test"]).write_to(&collector_dir);
    let key = CollectorKey::from_seed([11; 32]);
    std::fs::write(collector_dir.join("collector.key"), hex::encode(key.secret_bytes())).unwrap();
    let wrapper = dir.path().join("collector-in-netns.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec ip netns exec {} {} \"$@\"\n",
            ns.server,
            collector_bin().display()
        ),
    )
    .unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let fixed: SocketAddr = format!("{SERVER_ADDR}:8443").parse().unwrap();
    let toml = format!(
        r#"
        [server]
        listen_tls = "{fixed}"
        tls_cert = "cert.pem"
        tls_key = "key.pem"
        ready_file = "{READY_FILE}"
        shutdown_grace_ms = 300
        [keys]
        private_key_files = ["collector.key"]
        [store]
        path = "data"
        [log]
        level = "warn"
        "#
    );
    let collector = CollectorProc::start_with(&wrapper, &collector_dir, &toml);
    assert_eq!(collector.tls_addr(), Some(fixed));

    // DNS really is broken for the name in the client namespace.
    let output = ns
        .client_command(PROBE)
        .args(["check", "https://collector.vantage.test:8443/v1/ping", "--ca"])
        .arg(dir.path().join("ca.pem"))
        .output()
        .unwrap();
    let outcome: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(outcome["type"], "dns.name_not_resolved", "{outcome}");

    // Without fixed addresses the agent cannot deliver...
    let config = agent_toml(dir.path(), "no-fixed", &key, None);
    assert_eq!(run_agent_in_client(&mut ns, &config, 5, 1_500), 1, "delivered without DNS?");
    // ...with the fixed address it does, and TLS checked the name.
    let config = agent_toml(dir.path(), "fixed", &key, Some(fixed));
    assert_eq!(run_agent_in_client(&mut ns, &config, 50, 20_000), 0, "not delivered");

    assert!(collector.terminate().success());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let stored = rt.block_on(async {
        let store = Store::open(StoreConfig::new(collector_dir.join("data"))).unwrap();
        let stored = scan(&store);
        store.close().await.unwrap();
        stored
    });
    let mut numbers: Vec<u64> = stored.iter().map(|r| number_of(&r.host)).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (0..50).collect::<Vec<_>>(), "the 50 reports, each once");
}
