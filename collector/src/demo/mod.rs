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
//!
//! With `--collector URL --key FILE --dashboard URL` ([`remote`]) the same fleet and story run
//! against a collector that is already running (its own config, store and detector timing):
//! the fleet seals to the public key in FILE and sends to URL, the demo follows the story
//! through the admin API at the dashboard URL and waits as long as that detector needs.
//! Sources are `127.0.<net>.x` only when the collector is on loopback; towards another
//! address every client shares this host's address, one network, and by design the
//! detector pages for no single network.
//!
//! `--hold` keeps the outage going once the alert fires, so the dashboard shows it firing
//! until Ctrl-C.

pub mod remote;
pub mod sim;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use vantage_agent::taxonomy::ErrorType;

use crate::alerting::{Alerting, parse_series_query};
use crate::config::Config;
use crate::server::Collector;
use remote::Remote;
use sim::{ClientInfo, FAST_DETECTOR_TOML, Population, PopulationConfig, unix_now};

/// `--short`: half-second buckets, a smaller fleet; for the test suite.
const SHORT_DETECTOR_TOML: &str = "[detector]\nbucket_ms = 500\nwindow_buckets = 4\n\
    warmup_windows = 12\nlateness_ms = 5000\nclient_gap_ms = 5000\nflush_grace_ms = 1500\n\
    retro_settle_ms = 2500\nresolve_after = 3\nincident_cooldown_ms = 45000\nnet_tenure_ms = 3000\n";

/// How the demo runs.
#[derive(Clone, Debug, Default)]
pub struct DemoOptions {
    /// Half the time scale and a smaller fleet (what the test suite runs).
    pub short: bool,
    /// Keep the outage going after the alert fires, until SIGINT/SIGTERM.
    pub hold: bool,
    /// Where the key, the enrichment files and the sled store go (kept afterwards). `None`: a
    /// scratch directory under the system temp dir, removed at the end. Not with `remote`.
    pub dir: Option<PathBuf>,
    /// The admin listener (dashboard, `/v1/alerts`, `/metrics`); port 0 picks one. Not with
    /// `remote`.
    pub admin: Option<SocketAddr>,
    /// Drive a running collector instead of starting one.
    pub remote: Option<RemoteOptions>,
}

/// `--collector URL --key FILE --dashboard URL [--token-file FILE] [--ca FILE]`.
#[derive(Clone, Debug)]
pub struct RemoteOptions {
    /// The collector's ingest URL (`http://` plain listener or `https://` TLS listener).
    pub collector: String,
    /// The collector's public key file (`collector.pub`).
    pub key: PathBuf,
    /// The collector's admin listener URL (where the dashboard is).
    pub dashboard: String,
    /// The admin bearer token file (when the collector has `server.admin_token_file`).
    pub token_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) for `https://` URLs.
    pub ca: Option<PathBuf>,
}

/// Why the demo stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// Setting up the directory, key or enrichment files failed, or an option is invalid.
    #[error("setup: {0}")]
    Setup(String),
    /// The collector did not start or stop cleanly.
    #[error("collector: {0}")]
    Collector(#[from] crate::server::StartError),
    /// A stage did not reach its goal in time (with what was seen).
    #[error("{0}")]
    Timeout(String),
}

/// A stage's time limit with the demo's own collector (wall clock; the story needs well under
/// half of each). A running collector's detector takes what its config says: no limit there.
const STAGE_LIMIT: Duration = Duration::from_secs(90);

/// Runs the demo; `stop` resolves on SIGINT/SIGTERM. Prints the story on stdout.
#[allow(clippy::print_stdout, reason = "the demo's story is for the operator's terminal")]
pub async fn run(options: DemoOptions, stop: impl Future<Output = ()>) -> Result<(), DemoError> {
    if let Some(remote) = &options.remote {
        if options.dir.is_some() || options.admin.is_some() {
            return Err(DemoError::Setup(
                "--dir and --admin configure the demo's own collector; they do not go with \
                 --collector"
                    .into(),
            ));
        }
        return run_remote(remote, &options, stop).await;
    }
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

/// Where the story learns how far it got: the demo's own collector, or a running one's admin
/// API.
enum Watch<'a> {
    Local(&'a Alerting),
    Remote { admin: Remote, token: Option<String> },
}

impl Watch<'_> {
    /// `/v1/series?service=shop`; `None` when it cannot be read (printed for a remote).
    async fn shop_series(&self) -> Option<Value> {
        match self {
            Watch::Local(a) => a.series_json(&parse_series_query("service=shop").ok()?).ok(),
            Watch::Remote { .. } => self.get("/v1/series?service=shop").await,
        }
    }

    /// `/v1/alerts`.
    async fn alerts(&self) -> Option<Value> {
        match self {
            Watch::Local(a) => Some(a.alerts_json(unix_now())),
            Watch::Remote { .. } => self.get("/v1/alerts").await,
        }
    }

    #[allow(clippy::print_stdout, reason = "the demo's story is for the operator's terminal")]
    async fn get(&self, path: &str) -> Option<Value> {
        let Watch::Remote { admin, token } = self else { return None };
        match admin.get_json(path, token.as_deref()).await {
            Ok(v) => Some(v),
            Err(e) => {
                println!("  (admin API: {e})");
                None
            }
        }
    }
}

#[allow(clippy::print_stdout, reason = "the demo's story is for the operator's terminal")]
async fn run_remote(
    remote: &RemoteOptions,
    options: &DemoOptions,
    stop: impl Future<Output = ()>,
) -> Result<(), DemoError> {
    let setup = DemoError::Setup;
    let key = remote::read_public_key(&remote.key).map_err(setup)?;
    let token = remote.token_file.as_deref().map(remote::read_token).transpose().map_err(setup)?;
    let ca = remote.ca.as_deref();
    let ingest = Remote::resolve(&remote.collector, "--collector", ca).await.map_err(setup)?;
    let admin = Remote::resolve(&remote.dashboard, "--dashboard", ca).await.map_err(setup)?;
    let watch = Watch::Remote { admin, token };
    // Fail early on a wrong dashboard URL or token, before the fleet starts.
    if let Watch::Remote { admin, token } = &watch {
        admin.get_json("/v1/alerts", token.as_deref()).await.map_err(setup)?;
    }
    let fleet_config = if options.short { short_fleet() } else { PopulationConfig::default() };
    let mut fleet = Population::new(fleet_config, key);
    fleet.set_transport(ingest.transport.clone());
    println!("collector: ingest {}, key id {}", remote.collector, key.key_id());
    println!("dashboard: {}", remote.dashboard);
    if !ingest.addr.ip().is_loopback() {
        println!(
            "note: {} is not a loopback address, so every simulated agent sends from this \
             host's address (one network); the detector does not page for one network",
            ingest.addr
        );
    }
    let story = story(&mut fleet, ingest.addr, &remote.dashboard, &watch, options, None);
    tokio::select! {
        r = story => r,
        () = stop => {
            println!("\nstopping (signal)");
            Ok(())
        }
    }
}

fn short_fleet() -> PopulationConfig {
    PopulationConfig {
        clients: 60,
        networks: 30,
        report_interval_ms: 1_000,
        ..PopulationConfig::default()
    }
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
    let fleet_config = if options.short { short_fleet() } else { PopulationConfig::default() };
    let mut fleet = Population::new(fleet_config, key.public_key());
    fleet.write_enrichment(dir).map_err(|e| setup(&e))?;
    let collector = Collector::start(config).await?;
    let story = async {
        let plain = collector.plain_addr().ok_or_else(|| setup(&"no plain listener"))?;
        let admin = collector.admin_addr().ok_or_else(|| setup(&"no admin listener"))?;
        println!("collector: ingest http://{plain}, key id {} (fresh dev key)", key.key_id());
        println!("dashboard: http://{admin}/   (alerts: http://{admin}/v1/alerts)");
        println!("sled store: {}", dir.join("store").display());
        let watch = Watch::Local(collector.alerting());
        let dashboard = format!("http://{admin}/");
        story(&mut fleet, plain, &dashboard, &watch, options, Some(STAGE_LIMIT)).await
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
    ingest: SocketAddr,
    dashboard: &str,
    watch: &Watch<'_>,
    options: &DemoOptions,
    limit: Option<Duration>,
) -> Result<(), DemoError> {
    let c = fleet.config().clone();
    println!(
        "\nsimulated fleet: {} agents on {} loopback /24s (10 test ASNs), services {}",
        c.clients,
        c.networks,
        c.services.join(" and ")
    );
    println!("learning baselines from normal traffic ...");
    let learned_points = if options.short { 12 } else { 20 };
    let pace = Pace::new(options.short);
    let stage = Stage { ingest, pace: &pace, limit };
    let normal = |_: &ClientInfo, _: &str| None;
    let learned = |doc: &Value| {
        doc["points"]
            .as_array()
            .is_some_and(|p| {
                p.iter().filter(|x| !x["baseline_ratio"].is_null()).count() >= learned_points
            })
            .then_some(())
    };
    stage.run(fleet, normal, || watch.shop_series(), learned, "baselines").await?;

    println!("outage: every request to shop is refused from now on");
    let started = Instant::now();
    let outage = |_: &ClientInfo, s: &str| (s == "shop").then_some(ErrorType::TcpRefused);
    let first_page = |doc: &Value| {
        doc["firing"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["inhibited_by"].is_null()).cloned())
    };
    let page = stage.run(fleet, outage, || watch.alerts(), first_page, "an alert").await?;
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
    println!("      see it on the dashboard: {dashboard}\n");
    if options.hold {
        println!(
            "--hold: the outage goes on and the alert stays firing on {dashboard} ; Ctrl-C stops"
        );
        loop {
            let next = Instant::now() + pace.step;
            fleet.step(ingest, pace.requests, outage).await;
            tokio::time::sleep_until(next.into()).await;
        }
    }
    println!("recovery: shop answers again");
    let id = page["id"].clone();
    let resolved = |doc: &Value| {
        doc["recent"].as_array().and_then(|a| a.iter().find(|x| x["id"] == id).cloned())
    };
    stage.run(fleet, normal, || watch.alerts(), resolved, "the resolution").await?;
    println!("RESOLVED {}", page["label"].as_str().unwrap_or("?"));
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

/// One stage of the story: the fleet steps at `pace` until a watched document says it is done.
struct Stage<'a> {
    ingest: SocketAddr,
    pace: &'a Pace,
    /// `None`: wait as long as it takes (a running collector's detector timing is its own).
    limit: Option<Duration>,
}

impl Stage<'_> {
    /// Steps the fleet until `done(fetch())` gives a value. Prints progress every minute
    /// when there is no limit.
    #[allow(clippy::print_stdout, reason = "the demo's story is for the operator's terminal")]
    async fn run<T, F: Future<Output = Option<Value>>>(
        &self,
        fleet: &mut Population,
        outcome: impl Fn(&ClientInfo, &str) -> Option<ErrorType>,
        fetch: impl Fn() -> F,
        done: impl Fn(&Value) -> Option<T>,
        what: &str,
    ) -> Result<T, DemoError> {
        let start = Instant::now();
        let mut said = start;
        loop {
            if self.limit.is_some_and(|l| start.elapsed() >= l) {
                let secs = self.limit.map_or(0, |l| l.as_secs());
                return Err(DemoError::Timeout(format!("no {what} within {secs} s")));
            }
            let next = Instant::now() + self.pace.step;
            let stats = fleet.step(self.ingest, self.pace.requests, &outcome).await;
            if stats.rejected > 0 && stats.accepted == 0 {
                return Err(DemoError::Timeout(format!(
                    "the collector refused every envelope while waiting for {what} (a wrong \
                     --key, or a collector over its limits?)"
                )));
            }
            if let Some(v) = fetch().await.as_ref().and_then(&done) {
                return Ok(v);
            }
            if self.limit.is_none() && said.elapsed() >= Duration::from_secs(60) {
                said = Instant::now();
                println!("  still waiting for {what} ({} s)", start.elapsed().as_secs());
            }
            // The simulated clients' request rate.
            tokio::time::sleep_until(next.into()).await;
        }
    }
}

fn scratch_dir() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("vantage-demo-{}-{nanos}", std::process::id()))
}
