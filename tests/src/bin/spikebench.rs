//! spikebench: drives the spike detector with a seeded simulated population and prints
//! event-level outcomes (recall, precision, delays, false alerts, localisation, cost to forge).
//!
//! ```text
//! cargo run --release -p vantage-tests --bin spikebench -- --days 7 --seed 1 [--clients N] [--asns N] [--no-forge] [--verbose]
//! ```
//!
//! Exit status 0 when every goal is met, 1 otherwise, 2 on bad arguments.
#![forbid(unsafe_code)]
// Printing the table on stdout is this tool's interface.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::time::Instant;

use vantage_tests::spikebench::{SimConfig, forge_cost, run};

fn main() -> ExitCode {
    let mut config = SimConfig::default();
    let mut forge = true;
    let mut verbose = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> Option<u64> {
            let v = args.next().and_then(|v| v.parse().ok());
            if v.is_none() {
                eprintln!("{name} needs a number");
            }
            v
        };
        match arg.as_str() {
            "--days" => match value("--days") {
                Some(v) => config.days = v,
                None => return ExitCode::from(2),
            },
            "--seed" => match value("--seed") {
                Some(v) => config.seed = v,
                None => return ExitCode::from(2),
            },
            "--clients" => match value("--clients") {
                Some(v) => config.clients = v as usize,
                None => return ExitCode::from(2),
            },
            "--asns" => match value("--asns") {
                Some(v) => config.asns = v as usize,
                None => return ExitCode::from(2),
            },
            "--no-forge" => forge = false,
            "--verbose" => verbose = true,
            other => {
                eprintln!(
                    "unknown argument {other:?}; usage: spikebench [--days N] [--seed S] [--clients N] [--asns N] [--no-forge] [--verbose]"
                );
                return ExitCode::from(2);
            }
        }
    }
    let started = Instant::now();
    let mut report = run(&config);
    if forge {
        report.forge = Some(forge_cost(config.seed, 1_500));
    }
    if verbose {
        for line in &report.log {
            println!("{line}");
        }
    }
    print!("{}", report.table());
    println!("wall time {:.1} s", started.elapsed().as_secs_f64());
    if report.goals().iter().all(|(_, met)| *met) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
