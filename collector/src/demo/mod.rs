//! `vantage-collector demo`: the whole story on one machine, with nothing else installed.
//!
//! 1. A fresh dev key (`keygen`) and a collector on an embedded sled store in a scratch
//!    directory, listening on loopback (plain ingest, admin with the dashboard).
//! 2. A simulated fleet ([`sim`]): real agent cores with their own identities on distinct
//!    loopback /24s, mapped to test ASNs and countries, sealing and signing envelopes that go
//!    through the real ingest path (open, verify, enrich, durable write, detector).
//! 3. Normal traffic until the detector has learned its baselines, then an outage of the
//!    service `shop` (every request refused): the demo prints the alert the detector raises
//!    and the dashboard URL; then recovery and the resolution.
//!
//! The detector runs with second-scale buckets (`FAST_DETECTOR_TOML`, or twice as fast with
//! `--short`) so the story takes about a minute. `--hold` keeps the collector, the fleet and
//! the dashboard up afterwards. SIGINT (Ctrl-C) or SIGTERM at any point stops the fleet, shuts
//! the collector down (store flushed) and removes the scratch directory unless `--dir` named
//! one.

pub mod sim;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vantage_agent::taxonomy::ErrorType;

use crate::alerting::{Alerting, parse_series_query};
use crate::config::Config;
use crate::server::{Collector, RunningCollector};
use sim::{ClientInfo, FAST_DETECTOR_TOML, Population, PopulationConfig, unix_now};

/// `--short`: half-second buckets, a smaller fleet; for the test suite.
const SHORT_DETECTOR_TOML: &str = "[detector]\nbucket_ms = 500\nwindow_buckets = 4\n\
    warmup_windows = 12\nlateness_ms = 5000\nclient_gap_ms = 5000\nflush_grace_ms = 1500\n\
    retro_settle_ms = 2500\nresolve_after = 3\nincident_cooldown_ms = 45000\n";

/// How the demo runs.
#[derive(Clone, Debug, Default)]
pub struct DemoOptions {
    /// Half the time scale and a smaller fleet (what the test suite runs).
    pub short: bool,
    /// Keep running after the resolution until SIGINT/SIGTERM.
    pub hold: bool,
    /// Where the key, the enrichment files and the sled store go (kept afterwards). `None`: a
    /// scratch directory under the system temp dir, removed at the end.
    pub dir: Option<PathBuf>,
    /// The admin listener (dashboard, `/v1/alerts`, `/metrics`); port 0 picks one.
    pub admin: Option<SocketAddr>,
}

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// Setting up the directory, key or enrichment files failed.
    #[error("setup: {0}")]
    Setup(String),
    /// The collector did not start or stop cleanly.
    #[error("collector: {0}")]
    Collector(#[from] crate::server::StartError),
    /// A stage did not reach its goal in time (with what was seen).
    #[error("{0}")]
    Timeout(String),
}

/// A stage's time limit (wall clock; the story needs well under half of each).
const STAGE_LIMIT: Duration = Duration::from_secs(90);

/// Runs the demo; `stop` resolves on SIGINT/SIGTERM. Prints the story on stdout.
#[allow(clippy::print_stdout, reason = "the demo's story is for the operator's terminal")]
pub async fn run(options: DemoOptions, stop: impl Future<Output = ()>) -> Result<(), DemoError> {
    let (dir, scratch) = match &options.dir {
        Some(d) => (d.clone(), false),
        None => (scratch_dir(), true),
    };
    let result = run_in(&options, &dir, stop).await;
    if scratch {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("kept {} (key, enrichment files, sled store)", dir.display());
    }
    result
}

#[allow(clippy::print_stdout, reason = "the demo's story is for the operator's terminal")]
async fn run_in(
    options: &DemoOptions,
    dir: &Path,
    stop: impl Future<Output = ()>,
) -> Result<(), DemoError> {
    let setup = |e: &dyn std::fmt::Display| DemoError::Setup(e.to_string());
    std::fs::create_dir_all(dir).map_err(|e| setup(&format!("{}: {e}", dir.display())))?;
    let key_dir = dir.join("key");
    if !key_dir.join("collector.key").exists() {
        crate::keyfile::keygen(&key_dir).map_err(|e| setup(&e))?;
    }
    let admin = options.admin.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
    let detector = if options.short { SHORT_DETECTOR_TOML } else { FAST_DETECTOR_TOML };
    let config = Config::from_toml_str(
        &format!(
            r#"
        [server]
        listen_plain = "127.0.0.1:0"
        listen_admin = "{admin}"
        [keys]
        private_key_files = ["key/collector.key"]
        [store]
        path = "store"
        [enrich]
        asn_csv = ["asn.csv"]
        country_csv = ["country.csv"]
        [log]
        level = "warn"
        {detector}"#
        ),
        dir,
    )
    .map_err(|e| setup(&e))?;
    let key = config.keys.collector_keys.first().cloned().ok_or_else(|| setup(&"no key"))?;
    let fleet_config = if options.short {
        PopulationConfig {
            clients: 60,
            networks: 30,
            report_interval_ms: 1_000,
            ..PopulationConfig::default()
        }
    } else {
        PopulationConfig::default()
    };
    let mut fleet = Population::new(fleet_config, key.public_key());
    fleet.write_enrichment(dir).map_err(|e| setup(&e))?;
    let collector = Collector::start(config).await?;
    let story = async {
        let plain = collector.plain_addr().ok_or_else(|| setup(&"no plain listener"))?;
        let admin = collector.admin_addr().ok_or_else(|| setup(&"no admin listener"))?;
        println!("collector: ingest http://{plain}, key id {} (fresh dev key)", key.key_id());
        println!("dashboard: http://{admin}/   (alerts: http://{admin}/v1/alerts)");
        println!("sled store: {}", dir.join("store").display());
        story(&mut fleet, &collector, plain, admin, options.short, options.hold).await
    };
    let outcome = tokio::select! {
        r = story => r,
        () = stop => {
            println!("\nstopping (signal)");
            Ok(())
        }
    };
    collector.shutdown().await?;
    println!("collector stopped cleanly");
    outcome
}

#[allow(clippy::print_stdout, reason = "the demo's story is for the operator's terminal")]
async fn story(
    fleet: &mut Population,
    collector: &RunningCollector,
    plain: SocketAddr,
    admin: SocketAddr,
    short: bool,
    hold: bool,
) -> Result<(), DemoError> {
    let alerting = collector.alerting();
    let c = fleet.config().clone();
    println!(
        "\nsimulated fleet: {} agents on {} loopback /24s (10 test ASNs), services {}",
        c.clients,
        c.networks,
        c.services.join(" and ")
    );
    println!("learning baselines from normal traffic ...");
    let shop = parse_series_query("service=shop").map_err(DemoError::Setup)?;
    let learned_points = if short { 12 } else { 20 };
    let pace = Pace::new(short);
    let learned = |a: &Alerting| {
        a.series_json(&shop).ok().is_some_and(|doc| {
            doc["points"].as_array().is_some_and(|p| {
                p.iter().filter(|x| !x["baseline_ratio"].is_null()).count() >= learned_points
            })
        })
    };
    let normal = |_: &ClientInfo, _: &str| None;
    run_until(fleet, plain, &pace, normal, || learned(alerting).then_some(()), "baselines").await?;

    println!("outage: every request to shop is refused from now on");
    let started = Instant::now();
    let outage = |_: &ClientInfo, s: &str| (s == "shop").then_some(ErrorType::TcpRefused);
    let page = run_until(
        fleet,
        plain,
        &pace,
        outage,
        || {
            let doc = alerting.alerts_json(unix_now());
            doc["firing"]
                .as_array()
                .and_then(|a| a.iter().find(|x| x["inhibited_by"].is_null()).cloned())
        },
        "an alert",
    )
    .await?;
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
    println!("      see it on the dashboard: http://{admin}/\n");
    println!("recovery: shop answers again");
    let id = page["id"].clone();
    run_until(
        fleet,
        plain,
        &pace,
        normal,
        || {
            let doc = alerting.alerts_json(unix_now());
            doc["recent"].as_array().and_then(|a| a.iter().find(|x| x["id"] == id).cloned())
        },
        "the resolution",
    )
    .await?;
    println!("RESOLVED {}", page["label"].as_str().unwrap_or("?"));
    if hold {
        println!("\n--hold: fleet and dashboard stay up at http://{admin}/ ; Ctrl-C stops");
        loop {
            let next = Instant::now() + pace.step;
            fleet.step(plain, pace.requests, normal).await;
            tokio::time::sleep_until(next.into()).await;
        }
    }
    Ok(())
}

/// How fast the fleet steps.
struct Pace {
    step: Duration,
    requests: u32,
}

impl Pace {
    fn new(short: bool) -> Pace {
        if short {
            Pace { step: Duration::from_millis(250), requests: 1 }
        } else {
            Pace { step: Duration::from_millis(500), requests: 2 }
        }
    }
}

/// Steps the fleet at `pace` until `done()` gives a value; a timeout after [`STAGE_LIMIT`].
async fn run_until<T>(
    fleet: &mut Population,
    plain: SocketAddr,
    pace: &Pace,
    outcome: impl Fn(&ClientInfo, &str) -> Option<ErrorType>,
    done: impl Fn() -> Option<T>,
    what: &str,
) -> Result<T, DemoError> {
    let start = Instant::now();
    while start.elapsed() < STAGE_LIMIT {
        let next = Instant::now() + pace.step;
        let stats = fleet.step(plain, pace.requests, &outcome).await;
        if stats.rejected > 0 && stats.accepted == 0 {
            return Err(DemoError::Timeout(format!(
                "the collector refused every envelope while waiting for {what}"
            )));
        }
        if let Some(v) = done() {
            return Ok(v);
        }
        // The simulated clients' request rate.
        tokio::time::sleep_until(next.into()).await;
    }
    Err(DemoError::Timeout(format!("no {what} within {} s", STAGE_LIMIT.as_secs())))
}

fn scratch_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("vantage-demo-{}-{nanos}", std::process::id()))
}
