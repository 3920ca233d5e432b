#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! Sampled agents give the detector unbiased failure ratios: 40 simulated clients (real agent
//! cores, seeded) that report every failure (`failure_fraction` 1.0) but count only 5 % of
//! their successes (`success_fraction` 0.05) send to a real collector (in-process, loopback);
//! every client's true failure ratio is exactly 0.2.
//!
//! Unscaled, the sampled counts say about 0.2 / (0.2 + 0.8 * 0.05) = 0.83. The collector scales
//! each part of the counts by its own rate (`ingest::accept::scaled_counts`), so:
//! - the detector's per-window mean per-client ratio (`/v1/series`) is within its confidence
//!   interval of 0.2, and
//! - the counts in the store, pooled, are within theirs.

use std::cell::Cell;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use vantage_agent::report::UnixMillis;
use vantage_agent::sampling::Sampling;
use vantage_agent::taxonomy::ErrorType;
use vantage_collector::config::Config;
use vantage_collector::open::CollectorKey;
use vantage_collector::server::Collector;
use vantage_collector::store::{Store, StoreConfig};
use vantage_tests::collector_proc::HttpClient;
use vantage_tests::sim::{FAST_DETECTOR_TOML, Population, PopulationConfig};

const STEP: Duration = Duration::from_millis(500);
/// Requests per client per step; every 5th fails.
const REQUESTS: u32 = 100;
const TRUE_RATIO: f64 = 0.2;
const SUCCESS_FRACTION: f64 = 0.05;
const CLIENTS: usize = 40;
/// Steps run: 18 s of traffic. A client's first counts are partial (the detector gives no
/// ratio for a window that holds them, `flush_grace_ms` = 3 s here), so ratios start a grace
/// and a window after the clients appear; 18 s leaves at least 4 full windows after that even
/// when a loaded machine stretches the steps.
const STEPS: usize = 36;

async fn get_json(admin: SocketAddr, path: &str) -> Value {
    let mut c = HttpClient::connect_plain(admin).await.unwrap();
    let (status, body) = c.get(path).await.unwrap();
    assert_eq!(status.as_u16(), 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap()
}

fn config(dir: &Path, fleet: &Population) -> Config {
    let (asn, country) = fleet.write_enrichment(dir).unwrap();
    let text = format!(
        "[server]\nlisten_plain = \"127.0.0.1:0\"\nlisten_admin = \"127.0.0.1:0\"\n\
         [keys]\nprivate_key_files = [\"collector.key\"]\n[store]\npath = \"data\"\n\
         [enrich]\nasn_csv = [{asn:?}]\ncountry_csv = [{country:?}]\n\
         [log]\nlevel = \"warn\"\n{FAST_DETECTOR_TOML}"
    );
    Config::from_toml_str(&text, dir).unwrap()
}

/// Standard error of `F / (F + S / q)` with `S ~ Binomial(successes, q)` (delta method), and
/// its second-order bias (the ratio is convex in `S`, so it leans high): the ratio estimator
/// of `failures` exact failures and `successes` successes sampled at `q`.
fn ratio_error(failures: f64, successes: f64, q: f64) -> (f64, f64) {
    let var_scaled = successes * (1.0 - q) / q; // var(S / q) = n q (1 - q) / q^2
    let total = failures + successes;
    let d1 = failures / (total * total);
    let d2 = 2.0 * failures / (total * total * total);
    (d1 * var_scaled.sqrt(), 0.5 * d2 * var_scaled)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_successes_are_scaled_so_the_detector_sees_the_true_failure_ratio() {
    let dir = tempfile::tempdir().unwrap();
    let key = CollectorKey::from_seed([9; 32]);
    std::fs::write(dir.path().join("collector.key"), hex::encode(key.secret_bytes())).unwrap();
    let mut fleet = Population::new(
        PopulationConfig {
            clients: CLIENTS,
            networks: 20,
            services: vec!["shop".into()],
            report_interval_ms: 1_000,
            seed: 7,
            sampling: Sampling::new(1.0, SUCCESS_FRACTION).unwrap(),
        },
        key.public_key(),
    );
    let running = Collector::start(config(dir.path(), &fleet)).await.unwrap();
    let (plain, admin) = (running.plain_addr().unwrap(), running.admin_addr().unwrap());

    // Every 5th request of every client fails (REQUESTS is a multiple of 5): the true ratio is
    // exactly 0.2 for every client in every step.
    let n = Cell::new(0u64);
    let outcome = |_: &vantage_tests::sim::ClientInfo, _: &str| {
        n.set(n.get() + 1);
        n.get().is_multiple_of(5).then_some(ErrorType::TcpReset)
    };
    let started = Instant::now();
    let (mut failures, mut successes) = (0, 0);
    for _ in 0..STEPS {
        let next = Instant::now() + STEP;
        let stats = fleet.step(plain, REQUESTS, outcome).await;
        assert_eq!(stats.rejected, 0, "{stats:?}");
        failures += stats.failures;
        successes += stats.successes;
        tokio::time::sleep_until(next.into()).await;
    }
    let stats = fleet.flush(plain).await;
    assert_eq!(stats.rejected, 0, "{stats:?}");
    assert_eq!(failures * 4, successes, "the outcome function keeps the ratio at 0.2");
    let elapsed = started.elapsed();

    // The detector: each point is the mean per-client ratio over a 4 s window (4 buckets).
    let series = get_json(admin, "/v1/series?service=shop").await;
    let points: Vec<(u64, f64)> = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["active_clients"].as_u64() == Some(CLIENTS as u64))
        .filter_map(|p| Some((p["t_ms"].as_u64()?, p["failure_ratio"].as_f64()?)))
        .collect();
    // Full windows only: from the 5th second of traffic on.
    let t0 = points.first().map_or(0, |p| p.0);
    let full: Vec<f64> = points.iter().filter(|p| p.0 >= t0 + 4_000).map(|p| p.1).collect();
    assert!(full.len() >= 4, "too few full windows in {series}");
    // Per client and window: up to 8 steps of 100 requests (160 failures, 640 successes);
    // taken as 6, in case a slow machine stretches the steps (a wider interval).
    let steps_per_window = 6.0;
    let per_window = steps_per_window * f64::from(REQUESTS);
    let (se_client, bias) =
        ratio_error(per_window * TRUE_RATIO, per_window * (1.0 - TRUE_RATIO), SUCCESS_FRACTION);
    let se = se_client / (CLIENTS as f64).sqrt();
    // 99.99 % (z = 3.9) around the truth, plus the estimator's own second-order bias.
    let (low, high) = (TRUE_RATIO - 3.9 * se, TRUE_RATIO + bias + 3.9 * se);
    for ratio in &full {
        assert!(
            (low..=high).contains(ratio),
            "window ratio {ratio:.4} outside [{low:.4}, {high:.4}] (unscaled would be ~0.83): \
             {full:?}"
        );
    }
    let mean = full.iter().sum::<f64>() / full.len() as f64;

    // The store: every target count of the run, pooled. `successes` stored are
    // 20 * Binomial(all successes, 0.05); failures are exact.
    running.shutdown().await.unwrap();
    let store = Store::open(StoreConfig::new(dir.path().join("data"))).unwrap();
    let (mut attempts, mut stored_successes) = (0u64, 0u64);
    for t in store.scan_targets(UnixMillis(0), UnixMillis(u64::MAX)) {
        let t = t.unwrap();
        attempts += t.attempts;
        stored_successes += t.successes;
    }
    store.close().await.unwrap();
    assert_eq!(attempts - stored_successes, failures, "failures are sampled at 1.0: exact");
    let pooled = 1.0 - stored_successes as f64 / attempts as f64;
    let (se_pooled, bias_pooled) = ratio_error(failures as f64, successes as f64, SUCCESS_FRACTION);
    let (low_p, high_p) =
        (TRUE_RATIO - 3.9 * se_pooled, TRUE_RATIO + bias_pooled + 3.9 * se_pooled);
    assert!(
        (low_p..=high_p).contains(&pooled),
        "pooled stored ratio {pooled:.4} outside [{low_p:.4}, {high_p:.4}]"
    );
    eprintln!(
        "{failures} failures, {successes} successes ({stored_successes} estimated) in \
         {elapsed:?}; detector windows {} mean {mean:.4} in [{low:.4}, {high:.4}]; pooled \
         {pooled:.4} in [{low_p:.4}, {high_p:.4}]",
        full.len()
    );
}
