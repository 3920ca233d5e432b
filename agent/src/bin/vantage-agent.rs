//! `vantage-agent`: the native agent from a shell (feature `cli`).
//!
//! - `send-test --config F`: grants consent in the config's data dir, records one synthetic
//!   failure, delivers it within `--timeout`, and prints `delivered` or why not (exit 1).
//! - `check URL`: one classified request (`native::probe::check`).
//! - `status DIR`: what an agent's data dir holds (buffered envelopes, drops, identity),
//!   read without changing it.
//! - `check-config F`: parses and validates a config, printing warnings and errors with their
//!   fields (exit 1 on an error).
//!
//! Logs go to stderr, without colour codes unless stderr is a terminal (`RUST_LOG` filters,
//! default `warn`).
#![forbid(unsafe_code)]
#![allow(clippy::print_stdout)] // a command-line tool: its output is the point

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use vantage_agent::ErrorType;
use vantage_agent::buffer::EnvelopeStore as _;
use vantage_agent::native::log_store::{LOG_FILE, LogStore};
use vantage_agent::native::probe::{self, CheckOutcome, ProbeConfig};
use vantage_agent::native::{Agent, AgentConfig, IDENTITY_FILE, Recorded, ReportInput, validate};

/// The Vantage agent from a shell: test delivery to a collector, probe a URL, inspect a
/// data dir, check a config.
#[derive(Debug, Parser)]
#[command(name = "vantage-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Record one synthetic failure and deliver it to the configured collectors. Grants
    /// consent in the config's data dir: point it at a scratch dir (or use --data-dir).
    SendTest {
        /// The agent config (TOML; docs/agent-config.md).
        #[arg(long)]
        config: PathBuf,
        /// Use this data dir instead of the config's.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// How long to wait for delivery, in seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Probe a URL once (DNS, TCP, TLS, HTTP) and print the classified result.
    Check {
        /// `https://` or `http://` URL.
        url: String,
        /// A PEM file of CA certificates to trust besides the webpki roots.
        #[arg(long)]
        ca: Option<PathBuf>,
    },
    /// Show what an agent's data dir holds, without changing it.
    Status {
        /// The agent's data dir.
        dir: PathBuf,
    },
    /// Parse and validate a config; print warnings and errors with their fields.
    CheckConfig {
        /// The agent config (TOML).
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let result = match cli.command {
        Command::SendTest { config, data_dir, timeout } => {
            send_test(&config, data_dir, Duration::from_secs(timeout))
        }
        Command::Check { url, ca } => check(&url, ca.as_deref()),
        Command::Status { dir } => status(&dir),
        Command::CheckConfig { file } => check_config(&file),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))
}

/// A host of the first service for the synthetic failure.
fn test_host(config: &AgentConfig) -> Option<(String, String)> {
    let service = config.services.first()?;
    let host = match (service.hosts.first(), service.host_suffixes.first()) {
        (Some(h), _) => h.as_str().to_owned(),
        (None, Some(suffix)) => format!("vantage-send-test.{}", suffix.as_str()),
        (None, None) => return None,
    };
    Some((service.id.as_str().to_owned(), host))
}

fn send_test(path: &Path, data_dir: Option<PathBuf>, timeout: Duration) -> Result<bool, String> {
    let mut config = AgentConfig::from_toml_file(path).map_err(|e| e.to_string())?;
    if let Some(dir) = data_dir {
        config.data_dir = dir;
    }
    for w in validate(&config).map_err(|e| e.to_string())? {
        println!("warning: {w}");
    }
    let (service, host) =
        test_host(&config).ok_or("services: at least one service with a host is needed")?;
    let rt = runtime()?;
    let agent = Agent::start(config, Some(rt.handle())).map_err(|e| e.to_string())?;
    rt.block_on(async {
        agent.set_consent(true).map_err(|e| e.to_string())?;
        let input = ReportInput::new(&service, &host, &ErrorType::TcpRefused);
        match agent.record(input) {
            Recorded::Kept => {}
            other => return Err(format!("the synthetic failure was not kept: {other:?}")),
        }
        let out = agent.flush(timeout).await.map_err(|e| e.to_string())?;
        let delivered = out.undelivered == 0;
        if delivered {
            println!("delivered: 1 synthetic failure ({service} at {host}, tcp.refused)");
        } else {
            println!(
                "not delivered within {} s: {} envelope(s) still buffered",
                timeout.as_secs(),
                out.undelivered
            );
        }
        for c in agent.delivery_status() {
            match &c.status.last_error {
                Some(e) => println!(
                    "collector {}: {} ({} failed attempts in a row)\n  {}",
                    c.url,
                    e.as_str(),
                    c.status.consecutive_failures,
                    e.message()
                ),
                None if c.status.last_delivered_at.is_some() => {
                    println!("collector {}: ok", c.url);
                }
                None => println!("collector {}: not tried", c.url),
            }
        }
        agent.shutdown().await.map_err(|e| e.to_string())?;
        Ok(delivered)
    })
}

fn check(url: &str, ca: Option<&Path>) -> Result<bool, String> {
    let mut roots = Vec::new();
    if let Some(path) = ca {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        let bytes = std::fs::read(path).map_err(|e| format!("--ca {}: {e}", path.display()))?;
        roots = CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("--ca {}: not PEM certificates: {e}", path.display()))?;
    }
    let rt = runtime()?;
    let outcome = rt
        .block_on(probe::check(url, &ProbeConfig::new(roots)))
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(match outcome {
        CheckOutcome::Success { status, elapsed_ms, protocol } => {
            println!("ok: HTTP {status} in {elapsed_ms} ms ({})", protocol.as_str());
            true
        }
        CheckOutcome::Failed(f) => {
            let status = f.status.map(|s| format!(" (HTTP {s})")).unwrap_or_default();
            println!(
                "failed: {}{status}, {} phase, after {} ms",
                f.error_type.as_str(),
                f.phase.as_str(),
                f.elapsed_ms
            );
            false
        }
    })
}

fn status(dir: &Path) -> Result<bool, String> {
    if !dir.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    let identity = dir.join(IDENTITY_FILE).is_file();
    println!("data dir: {}", dir.display());
    println!(
        "identity: {}",
        if identity { "present (consent granted)" } else { "absent (no consent)" }
    );
    let log = dir.join(LOG_FILE);
    if !log.is_file() {
        println!("buffer: no {LOG_FILE}: 0 envelopes");
        return Ok(true);
    }
    // Opened on a copy: opening repairs a damaged tail, and this tool changes nothing.
    let scratch = std::env::temp_dir().join(format!("vantage-agent-status-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let copy = scratch.join(LOG_FILE);
    let result = (|| {
        std::fs::copy(&log, &copy).map_err(|e| format!("{}: {e}", log.display()))?;
        let store = LogStore::open(&copy).map_err(|e| format!("{}: {e}", log.display()))?;
        let list = store.list().map_err(|e| format!("{}: {e}", log.display()))?;
        let failures: u64 = list.iter().map(|m| m.failures).sum();
        let bytes: u64 = list.iter().map(|m| m.len).sum();
        println!(
            "buffer: {} envelope(s), {failures} failure(s), {bytes} bytes ({} on disk)",
            list.len(),
            store.file_len()
        );
        if let (Some(first), Some(last)) = (list.first(), list.last()) {
            println!(
                "  sealed between {} and {} (Unix ms), seq {}..={}",
                first.created_at.0, last.created_at.0, first.seq, last.seq
            );
        }
        if let Some(repair) = store.repair() {
            println!("  damaged tail (would be cut at the next start): {repair:?}");
        }
        let drops = store.unsent_drops();
        if drops.total() == 0 {
            println!("drops not yet reported: none");
        } else {
            let parts: Vec<String> = drops.iter().map(|(r, n)| format!("{r}={n}")).collect();
            println!("drops not yet reported: {}", parts.join(" "));
        }
        Ok(true)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn check_config(path: &Path) -> Result<bool, String> {
    let config = match AgentConfig::from_toml_file(path) {
        Ok(c) => c,
        Err(e) => {
            println!("error: {e}");
            return Ok(false);
        }
    };
    let warnings = match validate(&config) {
        Ok(w) => w,
        Err(e) => {
            println!("error: {e}");
            return Ok(false);
        }
    };
    for w in &warnings {
        println!("warning: {w}");
    }
    for (i, c) in config.collectors.iter().enumerate() {
        println!("collectors[{i}]: {}", c.url());
    }
    println!(
        "ok: {} service(s), {} collector(s), {} warning(s)",
        config.services.len(),
        config.collectors.len(),
        warnings.len()
    );
    Ok(true)
}
