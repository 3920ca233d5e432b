//! The `vantage-collector` binary: `serve`, `keygen`, `check-config` (see [`vantage_collector::cli`]).
#![forbid(unsafe_code)]

use clap::Parser as _;

fn main() -> std::process::ExitCode {
    vantage_collector::cli::run(vantage_collector::cli::Cli::parse())
}
