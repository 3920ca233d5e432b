//! The `vantage-collector` command line: `serve`, `keygen`, `check-config`, `check-domains`,
//! `demo`.
//!
//! Exit codes: 0 success; 1 runtime failure (cannot bind, store error, key file exists), or a
//! `fail` row from `check-domains`; 2 invalid configuration, spec or usage.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ring::rand::SecureRandom as _;

use crate::config::{Config, LogFormat};
use crate::enrich::Enricher;
use crate::open::CollectorKey;
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
        /// Keep the collector, the fleet and the dashboard up after the resolution.
        #[arg(long)]
        hold: bool,
        /// Keep the key, enrichment files and sled store in DIR (default: a scratch
        /// directory, removed at the end).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Address of the admin listener with the dashboard (default 127.0.0.1, any port).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
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

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Why `keygen` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeygenError {
    /// A key file is already there; keygen never overwrites one.
    #[error("{0} already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("{path}: {reason}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The operating system's random source failed.
    #[error("the system random source failed")]
    Random,
}

/// What `keygen` made.
#[derive(Clone, Debug)]
pub struct GeneratedKey {
    /// The secret key file (mode 0600).
    pub key_file: PathBuf,
    /// The public key file.
    pub pub_file: PathBuf,
    /// The new key (its `Debug` shows the key id only).
    pub key: CollectorKey,
}

/// Creates a new collector key from the OS random source and writes `dir/collector.key`
/// (hex secret, mode 0600, created exclusively) and `dir/collector.pub` (hex public key).
pub fn keygen(dir: &Path) -> Result<GeneratedKey, KeygenError> {
    let io = |path: &Path, e: std::io::Error| KeygenError::Io {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let key_file = dir.join("collector.key");
    let pub_file = dir.join("collector.pub");
    for f in [&key_file, &pub_file] {
        if f.exists() {
            return Err(KeygenError::Exists(f.clone()));
        }
    }
    let mut seed = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut seed).map_err(|_| KeygenError::Random)?;
    let key = CollectorKey::from_seed(seed);
    seed.fill(0);
    // Hex of the secret in a fixed buffer that is wiped after writing.
    let mut secret_hex = [0u8; 65];
    let mut secret = key.secret_bytes();
    for (i, b) in secret.iter().enumerate() {
        secret_hex[2 * i] = HEX[usize::from(b >> 4)];
        secret_hex[2 * i + 1] = HEX[usize::from(b & 0x0f)];
    }
    secret_hex[64] = b'\n';
    secret.fill(0);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_file)
        .and_then(|mut f| f.write_all(&secret_hex).and_then(|()| f.sync_all()));
    secret_hex.fill(0);
    written.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => KeygenError::Exists(key_file.clone()),
        _ => io(&key_file, e),
    })?;
    let public = format!("{}\n", key.public_key());
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&pub_file)
        .and_then(|mut f| f.write_all(public.as_bytes()))
        .map_err(|e| io(&pub_file, e))?;
    Ok(GeneratedKey { key_file, pub_file, key })
}

/// Sets up `tracing` on stderr per `[log]`.
fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
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
        Command::Demo { short, hold, dir, admin } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("cannot start the runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            let options = crate::demo::DemoOptions { short, hold, dir, admin };
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
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn keygen_writes_a_private_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("keys");
        let generated = keygen(&out).unwrap();
        let mode = std::fs::metadata(&generated.key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let hex = std::fs::read_to_string(&generated.key_file).unwrap();
        let secret = crate::config::decode_hex32(hex.trim()).unwrap();
        let back = CollectorKey::from_secret_bytes(&secret);
        assert_eq!(back.public_key(), generated.key.public_key());
        let public = std::fs::read_to_string(&generated.pub_file).unwrap();
        assert_eq!(public.trim(), generated.key.public_key().to_string());
        assert!(matches!(keygen(&out), Err(KeygenError::Exists(_))));
        assert_eq!(std::fs::read_to_string(&generated.key_file).unwrap(), hex);
        // Two runs give two different keys.
        let other = keygen(&dir.path().join("other")).unwrap();
        assert_ne!(other.key.key_id(), generated.key.key_id());
    }

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
