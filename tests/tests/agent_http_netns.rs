#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! Capture without code, for the faults that need network namespaces: a real reqwest client
//! with `VantageMiddleware` and a real hyper-util client with `VantageLayer`, run inside a
//! client namespace (`vantage-http-client`), resolve names through the system resolver against
//! a DNS server in the server namespace, and their agent delivers over the veth to a real
//! collector process in that namespace.
//!
//! ```text
//!  client netns 198.51.100.1                 server netns 198.51.100.2 (+ .3)
//!  vantage-http-client ─ http://nx.test/     DNS (vantage-probe serve): NXDOMAIN
//!    (reqwest | tower) ─ http://silent.test/ DNS: query dropped -> resolver timeout
//!                      ─ http://servfail.test/ DNS: SERVFAIL
//!                      ─ http://alt.test/    .3:80, SYN dropped by iptables -> connect timeout
//!                      ─ http://ok.test/     .2:80 HTTP 200 (counted as a success)
//!  agent ──TLS (fixed address, name collector.test)──▶ vantage-collector serve :8443 ─▶ sled
//! ```
//!
//! Both clients resolve through `getaddrinfo`, which reports a resolver timeout and a SERVFAIL
//! alike (`EAI_AGAIN`, "Temporary failure in name resolution"): the integrations classify both
//! as `dns.failed`, honestly, where the agent's own probe (its resolver sees the difference)
//! says `dns.timed_out` for the first (`agent_faults.rs`). NXDOMAIN (`EAI_NONAME`) is
//! `dns.name_not_resolved`, a connect timeout `tcp.timed_out`.
//!
//! Needs root, iproute2 and iptables (`.ci/install-netns-tools.sh`), like `agent_faults.rs`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use vantage_agent::report::UnixMillis;
use vantage_collector::store::{Store, StoreConfig};
use vantage_tests::collector_proc::{CollectorProc, collector_bin, write_collector_key};
use vantage_tests::netns::{NetnsPair, SERVER_ADDR, SERVER_ALT_ADDR};
use vantage_tests::tls::TestCa;

const PROBE: &str = env!("CARGO_BIN_EXE_vantage-probe");
const CLIENT: &str = env!("CARGO_BIN_EXE_vantage-http-client");
const COLLECTOR_PORT: u16 = 8443;

/// What the collector stored: error type per service, and success counts per service.
#[derive(Debug, Default)]
struct Stored {
    types: BTreeMap<String, String>,
    successes: BTreeMap<String, u64>,
}

/// Runs one client family through the faults; returns what the caller saw per URL and what
/// the collector stored.
fn run(client: &str) -> (BTreeMap<String, serde_json::Value>, Stored) {
    // Field order is drop order: the collector stops before the namespaces go.
    struct Lab {
        collector: Option<CollectorProc>,
        ns: NetnsPair,
        dir: tempfile::TempDir,
    }
    let mut ns = NetnsPair::new().unwrap_or_else(|e| {
        panic!("these tests need network namespaces (root, iproute2, iptables): {e}")
    });
    let dir = tempfile::tempdir().unwrap();

    // DNS and HTTP in the server namespace.
    let mut serve = ns.server_command(PROBE);
    serve.args(["serve", "--dns", &format!("{SERVER_ADDR}:53")]);
    serve.args(["--a", &format!("ok.test={SERVER_ADDR}")]);
    serve.args(["--a", &format!("alt.test={SERVER_ALT_ADDR}")]);
    serve.args(["--drop", "silent.test", "--servfail", "servfail.test"]);
    serve.args(["--http", "0.0.0.0:80"]);
    let child = ns.spawn(serve).unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready", "the server helper did not start");
    // A silent peer: SYNs to .3:80 vanish.
    ns.server_iptables([
        "-A",
        "INPUT",
        "-d",
        &SERVER_ALT_ADDR.to_string(),
        "-p",
        "tcp",
        "--dport",
        "80",
        "-j",
        "DROP",
    ])
    .unwrap();

    // The collector, in the server namespace, with a certificate for its name and address.
    let collector_dir = dir.path().join("collector");
    std::fs::create_dir(&collector_dir).unwrap();
    let key = write_collector_key(&collector_dir, [9; 32]);
    let ca = TestCa::new("vantage netns collector CA");
    ca.leaf(&["collector.test", &SERVER_ADDR.to_string()]).write_to(&collector_dir);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    let toml = format!(
        "[server]\nlisten_tls = \"{SERVER_ADDR}:{COLLECTOR_PORT}\"\ntls_cert = \"cert.pem\"\n\
         tls_key = \"key.pem\"\nready_file = \"ready.json\"\n[keys]\n\
         private_key_files = [\"collector.key\"]\n[store]\npath = \"data\"\n[log]\n\
         format = \"text\"\nlevel = \"warn\"\n"
    );
    let collector =
        CollectorProc::start_command(ns.server_command(collector_bin()), &collector_dir, &toml);
    let mut lab = Lab { collector: Some(collector), ns, dir };

    // The agent's config: the collector by a name the namespace's DNS does not know, reached
    // through its fixed address; every success counted; one service per host.
    let agent_toml = lab.dir.path().join("agent.toml");
    std::fs::write(
        &agent_toml,
        format!(
            "data_dir = \"{data}\"\ncollector_key = \"{key}\"\nextra_ca_files = [\"{ca}\"]\n\
             [app]\nid = \"com.example.netns\"\nversion = \"1.0\"\nplatform = \"linux\"\n\
             [[services]]\nid = \"nx\"\nhosts = [\"nx.test\"]\n\
             [[services]]\nid = \"silent\"\nhosts = [\"silent.test\"]\n\
             [[services]]\nid = \"servfail\"\nhosts = [\"servfail.test\"]\n\
             [[services]]\nid = \"slow\"\nhosts = [\"alt.test\"]\n\
             [[services]]\nid = \"ok\"\nhosts = [\"ok.test\"]\n\
             [[collectors]]\nurl = \"https://collector.test:{COLLECTOR_PORT}\"\n\
             fixed_addrs = [\"{SERVER_ADDR}:{COLLECTOR_PORT}\"]\n\
             [sampling]\nsuccess_fraction = 1.0\n[scope]\nenabled = false\n",
            data = lab.dir.path().join("agent-data").display(),
            key = key.public_key(),
            ca = ca_file.display(),
        ),
    )
    .unwrap();
    let output = lab
        .ns
        .client_command(CLIENT)
        .args(["--config", agent_toml.to_str().unwrap(), "--client", client])
        .args(["--timeout-ms", "1500"])
        .args(["http://nx.test/", "http://silent.test/", "http://servfail.test/"])
        .arg("http://alt.test/")
        .args(["http://ok.test/", "http://ok.test/"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "vantage-http-client failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut seen = BTreeMap::new();
    let mut undelivered = None;
    for line in stdout.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        if let Some(n) = v.get("undelivered") {
            undelivered = n.as_u64();
        } else {
            seen.insert(v["url"].as_str().unwrap().to_owned(), v);
        }
    }
    assert_eq!(undelivered, Some(0), "not everything reached the collector: {stdout}");

    let collector = lab.collector.take().unwrap();
    let store_path = collector.store_path();
    let stderr = collector.stderr();
    assert_eq!(collector.terminate().code(), Some(0), "collector stderr:\n{stderr}");
    (seen, read_store(&store_path))
}

fn read_store(path: &Path) -> Stored {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let store = Store::open(StoreConfig::new(path)).unwrap();
        let mut stored = Stored::default();
        for r in store.scan_reports(UnixMillis(0), UnixMillis(u64::MAX)) {
            let r = r.unwrap();
            let t = r.error_type.as_str().to_owned();
            let before = stored.types.insert(r.service.clone(), t.clone());
            assert!(before.is_none_or(|b| b == t), "two types for {}", r.service);
        }
        for t in store.scan_targets(UnixMillis(0), UnixMillis(u64::MAX)) {
            let t = t.unwrap();
            *stored.successes.entry(t.service.clone()).or_insert(0) += t.successes;
        }
        store.close().await.unwrap();
        stored
    })
}

#[track_caller]
fn check(seen: &BTreeMap<String, serde_json::Value>, stored: &Stored) {
    // The callers saw errors for the three faults and 200 for the healthy host.
    for url in
        ["http://nx.test/", "http://silent.test/", "http://servfail.test/", "http://alt.test/"]
    {
        assert!(seen[url].get("error").is_some(), "{url}: {}", seen[url]);
    }
    assert_eq!(seen["http://ok.test/"]["status"], 200, "{seen:?}");
    let expected = [
        ("nx", "dns.name_not_resolved"),
        ("silent", "dns.failed"),
        ("servfail", "dns.failed"),
        ("slow", "tcp.timed_out"),
    ];
    for (service, error_type) in expected {
        assert_eq!(
            stored.types.get(service).map(String::as_str),
            Some(error_type),
            "service {service}; stored {:?}; the caller saw {:?}",
            stored.types,
            seen
        );
    }
    assert_eq!(stored.types.len(), 4, "unexpected reports: {:?}", stored.types);
    assert_eq!(stored.successes.get("ok"), Some(&2), "{:?}", stored.successes);
}

#[test]
fn reqwest_middleware_classifies_dns_and_timeouts_in_namespaces() {
    let (seen, stored) = run("reqwest");
    check(&seen, &stored);
}

#[test]
fn tower_layer_classifies_dns_and_timeouts_in_namespaces() {
    let (seen, stored) = run("tower");
    check(&seen, &stored);
}
