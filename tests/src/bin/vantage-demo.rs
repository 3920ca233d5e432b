//! The main job: a real collector on an embedded sled store, and
//! 1. a real agent that detects real failures on loopback and delivers them, signed and sealed,
//!    through the real ingest path (the demo prints what the collector stored);
//! 2. a simulated fleet of 120 agent cores on 40 loopback /24s (mapped to 10 test ASNs) that
//!    report normal traffic until the detector has learned it, then an outage of the service
//!    `shop`: the demo prints the alert the detector raises, the dashboard URL, and the
//!    resolution after recovery.
//!
//! `cargo run --release -p vantage-tests --bin vantage-demo [-- --hold]` (what `.ci/main.sh`
//! runs). The detector runs with 1 s buckets here (`FAST_DETECTOR_TOML`) so the story takes
//! about a minute; `--hold` keeps the collector and its dashboard up until Ctrl-C.
#![allow(clippy::print_stdout)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use vantage_agent::entropy::Entropy;
use vantage_agent::native::{Agent, CollectorConfig, OsEntropy};
use vantage_agent::pipeline::ReportInput;
use vantage_agent::report::{AppInfo, UnixMillis};
use vantage_agent::taxonomy::ErrorType;
use vantage_collector::config::Config;
use vantage_collector::open::CollectorKey;
use vantage_collector::server::Collector;
use vantage_tests::fleet::{FAST_DETECTOR_TOML, Fleet, FleetConfig};
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
    let mut fleet = Fleet::new(FleetConfig::default(), key.public_key());
    let (asn_csv, country_csv) = fleet.write_enrichment(dir.path())?;
    let config = Config::from_toml_str(
        &format!(
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
        [enrich]
        asn_csv = [{asn_csv:?}]
        country_csv = [{country_csv:?}]
        [log]
        level = "warn"
        {FAST_DETECTOR_TOML}"#
        ),
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

    println!("\nsimulated fleet: 120 agents on 40 /24s, services shop and search");
    let learned = |doc: &serde_json::Value| {
        doc["points"]
            .as_array()
            .is_some_and(|p| p.iter().filter(|x| !x["baseline_ratio"].is_null()).count() >= 20)
    };
    run_fleet(
        &mut fleet,
        plain,
        admin,
        "/v1/series?service=shop",
        Duration::from_secs(60),
        |_, _| None,
        learned,
    )
    .await?;
    println!("  baselines learned; injecting an outage: every request to shop is refused");
    let started = Instant::now();
    let firing = |doc: &serde_json::Value| {
        doc["firing"].as_array().is_some_and(|a| a.iter().any(|x| x["inhibited_by"].is_null()))
    };
    let outage = |_: &vantage_tests::fleet::ClientInfo, s: &str| {
        (s == "shop").then_some(ErrorType::TcpRefused)
    };
    let doc =
        run_fleet(&mut fleet, plain, admin, "/v1/alerts", Duration::from_secs(60), outage, firing)
            .await?;
    let page = doc["firing"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["inhibited_by"].is_null()))
        .ok_or("no alert fired")?
        .clone();
    println!(
        "\nALERT {} {} [{}] after {:.1} s: {} failing clients on {} networks, failure ratio {:.2} (baseline {:.3}), breakdown {}, top ASNs {}",
        page["id"].as_str().unwrap_or("?"),
        page["label"].as_str().unwrap_or("?"),
        page["kind"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64(),
        page["clients"],
        page["networks"],
        page["observed_ratio"].as_f64().unwrap_or(0.0),
        page["baseline_ratio"].as_f64().unwrap_or(0.0),
        page["breakdown"],
        page["top_asns"],
    );
    println!("      dashboard: http://{admin}/");
    let id = page["id"].clone();
    println!("\nrecovery: shop answers again");
    let resolved = move |doc: &serde_json::Value| {
        doc["recent"].as_array().is_some_and(|a| a.iter().any(|x| x["id"] == id))
    };
    run_fleet(
        &mut fleet,
        plain,
        admin,
        "/v1/alerts",
        Duration::from_secs(60),
        |_, _| None,
        resolved,
    )
    .await?;
    println!("RESOLVED {}", page["label"].as_str().unwrap_or("?"));
    if std::env::args().any(|a| a == "--hold") {
        println!("\n--hold: the collector stays up; dashboard http://{admin}/ ; Ctrl-C stops");
        tokio::signal::ctrl_c().await?;
    }
    collector.shutdown().await?;
    println!("\ndone.");
    Ok(())
}

/// Steps the fleet twice a second until `done(GET path)` holds; errors after `limit`.
async fn run_fleet(
    fleet: &mut Fleet,
    plain: SocketAddr,
    admin: SocketAddr,
    path: &str,
    limit: Duration,
    failing: impl Fn(&vantage_tests::fleet::ClientInfo, &str) -> Option<ErrorType>,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value, BoxError> {
    let start = Instant::now();
    while start.elapsed() < limit {
        let next = Instant::now() + Duration::from_millis(500);
        fleet.step(plain, 2, &failing).await;
        let doc: serde_json::Value =
            serde_json::from_str(&http_get(admin, path)?).unwrap_or(serde_json::Value::Null);
        if done(&doc) {
            return Ok(doc);
        }
        // Pacing the simulated clients.
        tokio::time::sleep_until(next.into()).await;
    }
    Err(format!("gave up after {limit:?} waiting on {path}").into())
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
