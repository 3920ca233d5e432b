//! The `vantage-collector` command line: `serve`, `keygen`, `check-config`, `check-domains`,
//! `demo`.
//!
//! Exit codes: 0 success; 1 runtime failure (cannot bind, store error, key file exists), or a
//! `fail` row from `check-domains`; 2 invalid configuration, spec or usage.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{Config, LogFormat};
use crate::enrich::Enricher;
use crate::keyfile::keygen;
use crate::server::Collector;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "vantage-collector",
    version,
    about = "Vantage collector: ingest, verify and store agent reports"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector until SIGTERM or SIGINT.
    Serve {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Create a collector key: DIR/collector.key (secret, mode 0600) and DIR/collector.pub.
    Keygen {
        /// Directory for the key files (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Validate a config file and the files it names, then exit (0 valid, 2 invalid).
    CheckConfig {
        /// The TOML config file.
        #[arg(long)]
        config: PathBuf,
    },
    /// The whole story on this machine: a collector with a fresh dev key on an embedded sled
    /// store, a simulated fleet of agents reporting through the real ingest path, an outage,
    /// the alert and the dashboard URL, the resolution (about a minute). Ctrl-C stops it.
    Demo {
        /// Twice as fast with a smaller fleet (what the test suite runs).
        #[arg(long)]
        short: bool,
        /// Keep the outage going once the alert fires (the dashboard shows it firing) until
        /// Ctrl-C.
        #[arg(long)]
        hold: bool,
        /// Keep the key, enrichment files and sled store in DIR (default: a scratch
        /// directory, removed at the end).
        #[arg(long, conflicts_with = "collector")]
        dir: Option<PathBuf>,
        /// Address of the admin listener with the dashboard (default 127.0.0.1, any port).
        #[arg(long, conflicts_with = "collector")]
        admin: Option<std::net::SocketAddr>,
        /// Drive a collector that is already running: its ingest URL (http:// for its plain
        /// listener, https:// for its TLS one), instead of starting one. Needs --key and
        /// --dashboard.
        #[arg(long, value_name = "URL", requires_all = ["key", "dashboard"])]
        collector: Option<String>,
        /// With --collector: the collector's public key file (collector.pub from keygen).
        #[arg(long, value_name = "FILE", requires = "collector")]
        key: Option<PathBuf>,
        /// With --collector: the collector's admin listener URL (where the dashboard is).
        #[arg(long, value_name = "URL", requires = "collector")]
        dashboard: Option<String>,
        /// With --collector: the admin bearer token file (server.admin_token_file).
        #[arg(long, value_name = "FILE", requires = "collector")]
        token_file: Option<PathBuf>,
        /// With --collector: extra CA certificates (PEM) to trust for https:// URLs.
        #[arg(long, value_name = "FILE", requires = "collector")]
        ca: Option<PathBuf>,
    },
    /// Check that collectors and services sit in separate failure domains (registrable
    /// domain, /24 or /48, ASN, name-server operator); prints a pass/warn/fail table and exits
    /// 1 on any fail, 2 on an invalid spec. See `vantage_collector::domains`.
    CheckDomains {
        /// The TOML spec: `[[services]]`, `[[collectors]]`, optional `dns` and `[enrich]`.
        #[arg(long)]
        spec: PathBuf,
        /// DNS server to ask (IP or IP:PORT; repeatable), instead of the spec's `dns`.
        #[arg(long, value_parser = crate::domains::parse_dns_server)]
        dns: Vec<std::net::SocketAddr>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Sets up `tracing` on stderr per `[log]`.
fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only on a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Runs the command line; returns the process exit code.
#[allow(clippy::print_stdout, reason = "the CLI's output is for the operator's terminal")]
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Keygen { out } => match keygen(&out) {
            Ok(generated) => {
                println!("wrote {} (secret, mode 0600)", generated.key_file.display());
                println!("wrote {}", generated.pub_file.display());
                println!("key id: {}", generated.key.key_id());
                println!("public key: {}", generated.key.public_key());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("keygen: {e}");
                ExitCode::from(1)
            }
        },
        Command::CheckConfig { config } => match Config::from_file(&config) {
            Err(e) => {
                eprintln!("{}: invalid configuration", config.display());
                for line in e.to_string().lines() {
                    eprintln!("  {line}");
                }
                ExitCode::from(2)
            }
            Ok(parsed) => match Enricher::load(&parsed.enrich) {
                Err(e) => {
                    eprintln!("{}: invalid configuration", config.display());
                    eprintln!("  enrich: {e}");
                    ExitCode::from(2)
                }
                Ok((_, warnings)) => {
                    for w in warnings {
                        eprintln!("warning: {w}");
                    }
                    println!("{}: ok", config.display());
                    for key in &parsed.keys.collector_keys {
                        println!("collector key id: {}", key.key_id());
                    }
                    ExitCode::SUCCESS
                }
            },
        },
        Command::CheckDomains { spec, dns, json } => check_domains(&spec, dns, json),
        Command::Demo { short, hold, dir, admin, collector, key, dashboard, token_file, ca } => {
            let remote = match (collector, key, dashboard) {
                (Some(collector), Some(key), Some(dashboard)) => {
                    Some(crate::demo::RemoteOptions { collector, key, dashboard, token_file, ca })
                }
                // clap's `requires` rules out the other combinations.
                _ => None,
            };
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let options = crate::demo::DemoOptions { short, hold, dir, admin, remote };
            runtime.block_on(async {
                let stop = StopSignals::install();
                match crate::demo::run(options, stop.wait()).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("vantage-collector demo: {e}");
                        ExitCode::from(1)
                    }
                }
            })
        }
        Command::Serve { config } => {
            let parsed = match Config::from_file(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{}: invalid configuration", config.display());
                    for line in e.to_string().lines() {
                        eprintln!("  {line}");
                    }
                    return ExitCode::from(2);
                }
            };
            init_logging(&parsed);
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            runtime.block_on(serve(parsed))
        }
    }
}

#[allow(clippy::print_stdout, reason = "the report is for the operator's terminal")]
fn check_domains(path: &Path, dns: Vec<std::net::SocketAddr>, json: bool) -> ExitCode {
    use crate::domains::{Spec, check};
    let invalid = |e: &dyn std::fmt::Display| {
        eprintln!("{}: invalid spec", path.display());
        for line in e.to_string().lines() {
            eprintln!("  {line}");
        }
        ExitCode::from(2)
    };
    let mut parsed = match Spec::from_file(path) {
        Ok(s) => s,
        Err(e) => return invalid(&e),
    };
    if !dns.is_empty() {
        parsed.dns = dns;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(check(&parsed)) {
        Err(e) => invalid(&e),
        Ok(report) => {
            if json {
                println!("{}", report.to_json());
            } else {
                print!("{}", report.to_table());
            }
            if report.has_fail() { ExitCode::from(1) } else { ExitCode::SUCCESS }
        }
    }
}

#[allow(clippy::print_stdout, reason = "where the collector listens is for the operator")]
async fn serve(config: Config) -> ExitCode {
    // Handlers go in before anything announces readiness (stdout, the ready file):
    // a SIGTERM sent right after "listening on" must stop the collector cleanly, not
    // kill it with the default action.
    let stop = StopSignals::install();
    let running = match Collector::start(config).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "collector did not start");
            eprintln!("vantage-collector: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(addr) = running.tls_addr() {
        println!("listening on https://{addr}");
    }
    if let Some(addr) = running.plain_addr() {
        println!("listening on http://{addr}");
    }
    let _ = std::io::stdout().flush();
    stop.wait().await;
    tracing::info!("shutting down");
    match running.shutdown().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "shutdown failed");
            eprintln!("vantage-collector: {e}");
            ExitCode::from(1)
        }
    }
}

/// SIGTERM and SIGINT, listened for from the moment of `install`.
enum StopSignals {
    Unix(tokio::signal::unix::Signal, tokio::signal::unix::Signal),
    CtrlC,
}

impl StopSignals {
    fn install() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            (Ok(term), Ok(int)) => Self::Unix(term, int),
            _ => {
                // Without signal handlers, Ctrl-C is the only way to stop.
                tracing::warn!("cannot install SIGTERM handler; waiting for Ctrl-C");
                Self::CtrlC
            }
        }
    }

    async fn wait(self) {
        match self {
            Self::Unix(mut term, mut int) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            Self::CtrlC => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_parses() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["vantage-collector", "serve", "--config", "c.toml"]).unwrap();
        assert!(matches!(cli.command, Command::Serve { .. }));
        assert!(Cli::try_parse_from(["vantage-collector", "serve"]).is_err());
    }
}
