//! A tour of the native agent against a real collector on an embedded sled store: the agent
//! detects real failures on loopback (a refused port, an HTTP 404), classifies them, seals and
//! signs them and delivers them over TLS; the tour prints what the collector stored and its
//! metrics. (The main job, with a simulated fleet, an outage and an alert, is
//! `vantage-collector demo`.)
//!
//! `cargo run --release -p vantage-tests --bin vantage-agent-tour`
#![allow(clippy::print_stdout)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use vantage_agent::entropy::Entropy;
use vantage_agent::native::{Agent, CollectorConfig, OsEntropy};
use vantage_agent::pipeline::ReportInput;
use vantage_agent::report::{AppInfo, UnixMillis};
use vantage_collector::config::Config;
use vantage_collector::open::CollectorKey;
use vantage_collector::server::Collector;
use vantage_tests::tls::TestCa;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let dir = tempfile::tempdir()?;
    let ca = TestCa::new("vantage demo CA");
    ca.leaf(&["localhost", "127.0.0.1"]).write_to(dir.path());
    let mut seed = [0u8; 32];
    OsEntropy.fill(&mut seed);
    let key = CollectorKey::from_seed(seed);
    let hex: String = key.secret_bytes().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.path().join("collector.key"), hex)?;
    let config = Config::from_toml_str(
        r#"
        [server]
        listen_tls = "127.0.0.1:0"
        listen_plain = "127.0.0.1:0"
        listen_admin = "127.0.0.1:0"
        tls_cert = "cert.pem"
        tls_key = "key.pem"
        [keys]
        private_key_files = ["collector.key"]
        [store]
        path = "collector-data"
        [log]
        level = "warn"
        "#,
        dir.path(),
    )?;
    let collector = Collector::start(config).await?;
    let tls = collector.tls_addr().ok_or("no TLS listener")?;
    let plain = collector.plain_addr().ok_or("no plain listener")?;
    let admin = collector.admin_addr().ok_or("no admin listener")?;
    println!("collector: https://{tls} and http://{plain}, key id {}", key.key_id());
    println!("           dashboard http://{admin}/");
    println!("           sled store in {}", dir.path().join("collector-data").display());

    let app = AppInfo::new("com.example.shop", "1.0", "linux", "vantage-demo")?;
    let agent = Agent::builder(app, key.public_key(), dir.path().join("agent-data"))
        .service("checkout", &["api.shop.test"])?
        .extra_root(ca.cert_der())
        .collector(CollectorConfig::new(&format!("https://{tls}"))?)
        .build_in(&tokio::runtime::Handle::current())?;
    for warning in agent.warnings() {
        println!("agent config warning: {warning}");
    }
    agent.set_consent(true)?;
    println!("agent: consent granted, key {}", agent.agent_key().ok_or("no agent key")?);

    // Real failures on loopback, detected and classified by the agent's probe.
    let refused = closed_port();
    let urls = [format!("http://{refused}/cart"), format!("http://{plain}/no-such-page")];
    for url in &urls {
        println!("check {url}: {:?}", agent.check(url).await?);
    }
    // And a failure the app saw itself.
    let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
    agent.record(ReportInput::new("checkout", "https://api.shop.test/pay?id=7", &reset));

    let outcome = agent.flush(Duration::from_secs(10)).await?;
    println!("agent flush: {outcome:?}");

    let store = collector.store().clone();
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.stats().reports < 3 {
        if Instant::now() > deadline {
            return Err(format!("only {} reports stored", store.stats().reports).into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("\nstored reports:");
    for report in store.scan_reports(UnixMillis(0), UnixMillis(u64::MAX)) {
        let r = report?;
        println!(
            "  {:<10} {:<16} {:<28} phase={:<11} scope={:<7} status={:?} source={}",
            r.service,
            r.host,
            r.error_type.as_str(),
            r.phase.as_str(),
            r.scope.as_str(),
            r.status,
            r.source.as_str()
        );
    }
    println!("\nmetrics (excerpt):");
    for line in http_get(plain, "/metrics")?.lines() {
        if !line.starts_with('#') && line.starts_with("vantage_") && !line.ends_with(" 0") {
            println!("  {line}");
        }
    }
    agent.shutdown().await?;
    println!("\nthe reports above went agent -> HPKE-sealed envelope -> collector -> sled.");
    collector.shutdown().await?;
    println!("\ndone.");
    Ok(())
}

fn closed_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("bound listener has an address")
}

fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default())
}
