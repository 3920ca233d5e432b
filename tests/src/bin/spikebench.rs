//! spikebench: drives the spike detector with a seeded simulated population and prints
//! event-level and alert-level outcomes (recall, delays, pages per incident, localisation of
//! every page, false pages, cost to forge), for one seed or a sweep over many.
//!
//! ```text
//! cargo run --release -p vantage-tests --bin spikebench -- --days 7 --seed 1
//! cargo run --release -p vantage-tests --bin spikebench -- --seeds 100..120 --days 2 --jobs 2
//! ```
//!
//! Exit status 0 when every goal is met (on every seed of a sweep), 1 otherwise, 2 on bad
//! arguments.
#![forbid(unsafe_code)]
// Printing the table on stdout is this tool's interface.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use vantage_agent::sampling::Sampling;
use vantage_tests::spikebench::{Report, SimConfig, forge_cost, run, sweep_table};

const USAGE: &str = "\
usage: spikebench [options]

Simulates client traffic, incidents and nuisances, feeds the spike detector, and scores it.

options:
  --seed S           seed of one run (default 1)
  --seeds A..B       sweep: one run per seed A..B (B excluded), then per-metric min/median/max
  --days N           simulated days after the 2 h warm-up (default 7)
  --hours N          extra simulated hours on top of --days (default 0)
  --clients N        ordinary clients (default 4000)
  --asns N           autonomous systems, Zipf-sized (default 150)
  --jobs N           runs in parallel in a sweep (default 1)
  --success-fraction F   the simulated agents' success sampling (default: the agent's default)
  --failure-fraction F   the simulated agents' failure sampling (default: the agent's default)
  --report-interval S    the simulated agents' heartbeat in seconds, 0 for none (default: the
                     agent's default)
  --no-forge         skip the cost-to-forge experiment
  --verbose          print every event and alert (single run only)
  -h, --help         this text

Exit status: 0 when every goal is met (on every seed), 1 otherwise, 2 on bad arguments.";

/// Parses `A..B` into the seeds A, A+1, ..., B-1.
fn parse_seeds(v: &str) -> Result<Vec<u64>, String> {
    let (a, b) = v.split_once("..").ok_or_else(|| format!("--seeds wants A..B, got {v:?}"))?;
    let a: u64 = a.parse().map_err(|_| format!("--seeds: {a:?} is not a number"))?;
    let b: u64 = b.parse().map_err(|_| format!("--seeds: {b:?} is not a number"))?;
    if b <= a {
        return Err(format!("--seeds {v}: the range is empty (B is excluded)"));
    }
    Ok((a..b).collect())
}

fn main() -> ExitCode {
    match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("spikebench: {e}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn real_main() -> Result<ExitCode, String> {
    let mut config = SimConfig::default();
    let mut seeds: Option<Vec<u64>> = None;
    let mut forge = true;
    let mut verbose = false;
    let mut jobs = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            let v = args.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.parse().map_err(|_| format!("{name} needs a number, got {v:?}"))
        };
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(ExitCode::SUCCESS);
            }
            "--days" => config.days = value("--days")?,
            "--hours" => config.hours = value("--hours")?,
            "--seed" => config.seed = value("--seed")?,
            "--clients" => config.clients = value("--clients")? as usize,
            "--asns" => config.asns = value("--asns")? as usize,
            "--jobs" => jobs = (value("--jobs")? as usize).max(1),
            "--seeds" => {
                let v = args.next().ok_or("--seeds needs a value")?;
                seeds = Some(parse_seeds(&v)?);
            }
            "--success-fraction" | "--failure-fraction" => {
                let v = args.next().ok_or_else(|| format!("{arg} needs a value"))?;
                let f: f64 = v.parse().map_err(|_| format!("{arg} needs a number, got {v:?}"))?;
                let s = config.agent.sampling;
                let (fail, succ) = if arg == "--success-fraction" {
                    (s.failure_fraction(), f)
                } else {
                    (f, s.success_fraction())
                };
                config.agent.sampling = Sampling::new(fail, succ).map_err(|e| e.to_string())?;
            }
            "--report-interval" => {
                let secs = value("--report-interval")?;
                config.agent.report_interval_ms = (secs > 0).then_some(secs * 1000);
            }
            "--no-forge" => forge = false,
            "--verbose" => verbose = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if config.days * 24 + config.hours == 0 {
        return Err("--days and --hours add up to nothing to simulate".to_owned());
    }
    let started = Instant::now();
    let one = |seed: u64| -> Report {
        let config = SimConfig { seed, ..config.clone() };
        let mut report = run(&config);
        if forge {
            report.forge = Some(forge_cost(seed, 1_500));
        }
        report
    };
    let Some(seeds) = seeds else {
        let report = one(config.seed);
        if verbose {
            for line in &report.log {
                println!("{line}");
            }
        }
        print!("{}", report.table());
        println!("wall time {:.1} s", started.elapsed().as_secs_f64());
        let met = report.goals().iter().all(|(_, met)| *met);
        return Ok(if met { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    };
    // Sweep: `jobs` workers take seeds in order; each run's table is printed as it ends.
    let queue = Mutex::new(seeds.clone().into_iter());
    let reports = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs.min(seeds.len()) {
            s.spawn(|| {
                loop {
                    let next = queue.lock().ok().and_then(|mut q| q.next());
                    let Some(seed) = next else { break };
                    let report = one(seed);
                    print!("{}", report.table());
                    if let Ok(mut r) = reports.lock() {
                        r.push(report);
                    }
                }
            });
        }
    });
    let mut reports = reports.into_inner().map_err(|_| "a sweep worker panicked".to_owned())?;
    reports.sort_by_key(|r| r.seed);
    println!();
    print!("{}", sweep_table(&reports));
    println!("wall time {:.1} s", started.elapsed().as_secs_f64());
    let met = reports.iter().all(|r| r.goals().iter().all(|(_, met)| *met));
    Ok(if met { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
