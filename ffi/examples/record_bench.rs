//! Baseline for the record-call benchmark of `.ci/test-ffi.sh`: the cost of one
//! `Agent::record` through the Rust API, with the same config and the same failure as the C
//! program's `bench` mode measures through the C ABI.
//!
//! `cargo run -p vantage-ffi --profile release-ffi --example record_bench -- <config.toml> <data-dir> <calls>`

#![allow(clippy::print_stdout)] // a benchmark prints its result

use std::time::Instant;

use vantage_agent::native::{Agent, AgentConfig, PlatformCode, Recorded, ReportInput};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, config, dir, calls] = args.as_slice() else {
        return Err("usage: record_bench <config.toml> <data-dir> <calls>".into());
    };
    let calls: u64 = calls.parse()?;
    let mut config = AgentConfig::from_toml_str(&std::fs::read_to_string(config)?)?;
    config.data_dir = dir.into();
    let agent = Agent::start(config, None)?;
    agent.set_consent(true)?;
    // ECONNREFUSED on Linux, as the C program records it.
    let cause = PlatformCode { domain: "posix", code: 111 };
    let mut kept = 0u64;
    let start = Instant::now();
    for _ in 0..calls {
        let input = ReportInput::new("checkout", "bench.example.com", &cause);
        if agent.record(input) == Recorded::Kept {
            kept += 1;
        }
    }
    let elapsed = start.elapsed();
    println!(
        "ok rust-bench calls={calls} kept={kept} ns_per_call={:.0}",
        elapsed.as_nanos() as f64 / calls as f64
    );
    agent.set_consent(false)?;
    Ok(())
}
