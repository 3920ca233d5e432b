#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! Issue 14's reproduction with real processes: the collector is down; the real agent
//! (`vantage-agent-runner`) is started four times, each time recording one failure, flushing
//! (which fails: connection refused) and shutting down, so every restart moves its sequence
//! numbers up by 10,000. Then the collector starts and the agent delivers all four: the agent
//! counts four delivered envelopes and the collector four accepted, none a "duplicate".

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use vantage_agent::report::UnixMillis;
use vantage_collector::store::{Store, StoreConfig};
use vantage_tests::collector_proc::{CollectorProc, READY_FILE, write_collector_key, write_tls};

const RUNNER: &str = env!("CARGO_BIN_EXE_vantage-agent-runner");
const RESTARTS: usize = 4;

struct Runner {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Runner {
    fn start(config: &Path, log: &Path) -> Runner {
        let mut child = Command::new(RUNNER)
            .arg(config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "{}", std::fs::read_to_string(log).unwrap());
        Runner { child, stdin, stdout }
    }

    fn command(&mut self, line: &str) -> String {
        writeln!(self.stdin, "{line}").unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        answer.trim().to_owned()
    }

    fn shutdown(mut self) {
        assert_eq!(self.command("shutdown"), "ok");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{status}");
    }
}

fn stat(stats: &str, name: &str) -> u64 {
    stats
        .split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in {stats:?}"))
}

#[test]
fn envelopes_buffered_across_agent_restarts_are_all_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let collector_dir = dir.path().join("collector");
    std::fs::create_dir(&collector_dir).unwrap();
    let key = write_collector_key(&collector_dir, [21; 32]);
    let (ca, _) = write_tls(&collector_dir, &["127.0.0.1"]);
    std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).unwrap();
    // A port nothing listens on until the collector starts.
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let agent_config = dir.path().join("agent.toml");
    std::fs::write(
        &agent_config,
        format!(
            r#"
            data_dir = "{data}"
            collector_key = "{key}"
            extra_ca_files = ["{ca}"]
            [app]
            id = "com.example.restarts"
            version = "1.0.0"
            platform = "linux"
            [[services]]
            id = "checkout"
            hosts = ["api.example.com"]
            [[collectors]]
            url = "https://127.0.0.1:{port}"
            [delivery]
            base_backoff_ms = 50
            max_backoff_ms = 200
            max_in_flight = 4
            [scope]
            enabled = false
            "#,
            data = dir.path().join("agent").display(),
            key = key.public_key(),
            ca = dir.path().join("ca.pem").display(),
            port = addr.port(),
        ),
    )
    .unwrap();
    let log = dir.path().join("agent.stderr.log");

    for i in 0..RESTARTS {
        let mut agent = Runner::start(&agent_config, &log);
        assert_eq!(agent.command("consent true"), "ok");
        assert_eq!(agent.command("record checkout api.example.com tcp.refused 12"), "kept");
        let flushed = agent.command("flush 300");
        assert_eq!(flushed, format!("flushed undelivered={}", i + 1));
        agent.shutdown();
    }

    let toml = format!(
        "[server]\nlisten_tls = \"{addr}\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n\
         ready_file = \"{READY_FILE}\"\n[keys]\nprivate_key_files = [\"collector.key\"]\n\
         [store]\npath = \"data\"\n[log]\nlevel = \"warn\"\n"
    );
    let collector = CollectorProc::start(&collector_dir, &toml);
    let mut agent = Runner::start(&agent_config, &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let flushed = agent.command("flush 2000");
        if flushed == "flushed undelivered=0" {
            break;
        }
        assert!(Instant::now() < deadline, "still undelivered: {flushed}");
    }
    let stats = agent.command("stats");
    assert_eq!(stat(&stats, "delivered_envelopes"), RESTARTS as u64, "{stats}");
    agent.shutdown();
    let stderr = collector.stderr();
    assert!(collector.terminate().success(), "{stderr}");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Store::open(StoreConfig::new(collector_dir.join("data"))).unwrap();
        let reports: Vec<_> = store
            .scan_reports(UnixMillis(0), UnixMillis(u64::MAX))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(reports.len(), RESTARTS, "every buffered report stored once");
        eprintln!(
            "agent restarted {RESTARTS} times while the collector was down: agent \
             delivered_envelopes={}, collector stored {} reports",
            stat(&stats, "delivered_envelopes"),
            reports.len()
        );
        store.close().await.unwrap();
    });
}
