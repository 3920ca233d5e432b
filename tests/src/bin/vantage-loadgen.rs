//! The collector benchmark: drives a real `vantage-collector` process with agent-sealed
//! envelopes and prints what it sustains. Not a timed test; run it by hand:
//!
//! ```text
//! cargo run --release -p vantage-tests --bin vantage-loadgen -- \
//!     [--tls | --both] [--duration SECS] [--connections N] [--rss-reports N] [--rss-step N] [--nel]
//!     [--nel-peer ADDR/PATH@PID] [--sync-cost] [--random-ids] [--store-max-mib N]
//! ```
//!
//! - `--tls` drives the HTTPS listener only, `--both` plain HTTP then HTTPS (default: plain).
//! - `--duration` (default 10) is the length of each measured phase.
//! - `--connections` (default 32) keep-alive HTTP/1.1 connections.
//! - `--sync-cost` instead measures what `store.sync = "data"` (`fdatasync` of the store's
//!   journal per group commit and of sled's files per checkpoint, the default) costs against
//!   `"danger_none"` (no `fdatasync`): two
//!   collectors one after the other, the same closed loop on plain HTTP, and the collector's
//!   CPU time per accepted envelope and envelopes/s of each, with their ratio.
//! - `--rss-reports N` (default 0 = skip) keeps sending until the collector has stored N
//!   reports, then reads its resident memory; 1000000 is the figure the docs quote. On the way
//!   it prints VmRSS every `--rss-step` reports (default 500000), and the growth per million
//!   reports over the second half of the run (flat memory: close to 0).
//! - `--store-max-mib N` sets `store.max_bytes` to N MiB and `store.retention_check_secs` to
//!   1, so the memory phase runs with the store held at its size bound, the oldest reports
//!   deleted as new ones arrive (a collector after months at its disk budget); each mark also
//!   prints the store directory's size on disk.
//! - `--random-ids` gives reports ids of 128 random bits (agents from before time-ordered
//!   ids, or any other sender) instead of the agent's ids (see "Report ids" below).
//! - `--nel` adds two browser NEL phases on the plain listener: closed loop of `POST /v1/nel`
//!   uploads of 3 `network-error` reports each (every body distinct, so none is a duplicate),
//!   and the collector's CPU time per upload. In the first, the reports of an upload share
//!   one `age` and uploads sent together have ages a few ms apart (the row kept since the
//!   first round); in the second, every report has its own age in the last minute, as a
//!   browser's reports have when it delivers what it queued for up to a minute (rows
//!   `nel_spread_*`).
//! - `--nel-peer ADDR/PATH@PID` (implies `--nel`) then measures another NEL collector already
//!   running on this machine (e.g. `127.0.0.1:8080/nel@4242`: it takes the same uploads on
//!   `POST http://ADDR/PATH`, and PID is the process whose CPU time they cost) against this
//!   one: five rounds, each a closed loop on this collector and one on the peer (which goes
//!   first alternates), CPU per upload of each (min and median) and the ratio of the medians
//!   (row `nel_cpu_ratio_to_peer`): a comparison that the machine's slow and fast moments hit
//!   alike, where two runs minutes apart are not comparable.
//!
//! Every figure also goes to a `bench-row:` line (`bench-row: key value unit`) that
//! `.ci/bench.sh` collects into its table.
//!
//! Phases, per listener:
//! 1. **Crypto bound** (once): `Opener::open` per second on one core, in this process, on
//!    envelopes of the same shape: the most any collector core could open; and its CPU time
//!    per open (this thread's, from `/proc/thread-self/schedstat`).
//! 2. **Max rate**, closed loop: every connection sends its next pre-sealed envelope as soon as
//!    the previous one is answered. Envelopes/s and reports/s (202 only), the collector's CPU
//!    cores (utime+stime from `/proc/<pid>/stat` over wall time), and
//!    `ratio = (envelopes/s per collector core) / crypto bound`, and the collector's CPU time
//!    per accepted envelope against the crypto bound's CPU per open (the same ratio, in CPU
//!    time, steady when wall-clock rates swing). Also the open's CPU time inside the collector
//!    during the phase (`vantage_envelope_open_cpu_seconds_total` from its `/metrics`, before
//!    and after): per envelope, and as a share of the collector's CPU, the same ratio with both
//!    sides measured in one process at the same moments (rows `ingest_*_open_*`).
//!    Then the **floor**: the same envelopes on as many connections to a bare server on the
//!    collector's stack (tokio, hyper, rustls with the same certificate; this binary run with
//!    `--serve-floor`) that answers 202 without opening or storing anything: its CPU per
//!    request is what the connections, TLS and HTTP cost this machine at that moment, and the
//!    collector's CPU beyond the floor and the open is its own work (rows `*_floor_*`,
//!    `*_beyond_floor_and_open_us`). The NEL phase (clustered ages) is followed by the same
//!    on the floor's `/v1/nel` (rows `nel_floor_cpu_us_per_upload`, `nel_beyond_floor_us`).
//! 3. **Latency at half the max rate**, open loop: requests are due on a fixed schedule and
//!    latency is measured from when each was due (no coordinated omission).
//!
//! Report ids are made as agents make them (`ReportId::new`: the time the report was made,
//! then random bits), on a clock that moves as a busy collector's traffic does: the pool's
//! envelopes are 1/3 ms apart (3,000 envelopes/s), each report made up to 2.5 s before its
//! envelope (the agent's seal delay and scope hold), on its agent's clock (each agent off by up
//! to +-1 s). So ids arrive roughly, not exactly, in time order.
//!
//! Envelopes carry 10 reports each, come from 1000 agent identities, and are sealed before a
//! phase starts, so the generator spends its CPU on HTTP only. The collector runs with rate
//! limits lifted (see `CollectorConfig::unlimited`). The generator itself uses one core (a
//! current-thread runtime); on a 2-core machine that leaves one for the collector.
#![forbid(unsafe_code)]
// Printing the figures on stdout is this tool's interface.
#![allow(clippy::print_stdout)]

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use vantage_agent::entropy::{Entropy, SeededEntropy};
use vantage_agent::report::{ReportId, UnixMillis};
use vantage_agent::wire::{AgentIdentity, CollectorPublicKey};
use vantage_collector::open::{CollectorKey, Opener};
use vantage_tests::collector_proc::{
    CollectorConfig, CollectorProc, HttpClient, seal_envelope_with_ids, unix_now,
    write_collector_key, write_tls,
};
use vantage_tests::tls::TestCa;

const REPORTS_PER_ENVELOPE: usize = 10;
const AGENTS: usize = 1000;

const USAGE: &str = "usage: vantage-loadgen [--tls | --both] [--duration SECS] [--connections N] \
                     [--rss-reports N] [--rss-step N] [--nel] [--nel-peer ADDR/PATH@PID] [--sync-cost] \
                     [--random-ids] [--store-max-mib N]";
/// Reports per NEL upload in the `--nel` phase.
const NEL_REPORTS_PER_UPLOAD: usize = 3;

/// Which listeners to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listeners {
    Plain,
    Tls,
    Both,
}

#[derive(Clone, Debug)]
struct Args {
    listeners: Listeners,
    duration: Duration,
    connections: usize,
    rss_reports: u64,
    /// Print VmRSS every this many stored reports in the memory phase.
    rss_step: u64,
    /// Caps every pre-sealed pool (for the smoke test); `None` sizes pools from the crypto bound.
    max_pool: Option<usize>,
    /// Compare `store.sync = "data"` with `"danger_none"` instead of the usual phases.
    sync_cost: bool,
    /// Add the NEL phase.
    nel: bool,
    /// Another NEL collector to measure in alternation with this one (`--nel-peer`).
    nel_peer: Option<NelTarget>,
    random_ids: bool,
    /// `store.max_bytes` in MiB, enforced every second (`--store-max-mib`).
    store_max_mib: Option<u64>,
}

/// A NEL collector on this machine: where it takes uploads and the process whose CPU time
/// they cost. This one's `/v1/nel`, or another one's (`--nel-peer`), already running.
#[derive(Clone, Debug, PartialEq, Eq)]
struct NelTarget {
    addr: std::net::SocketAddr,
    path: String,
    pid: u32,
}

impl NelTarget {
    /// `ADDR/PATH@PID`, e.g. `127.0.0.1:8080/nel@4242`.
    fn parse(value: &str) -> Result<NelTarget, String> {
        let usage = "--nel-peer: ADDR/PATH@PID, e.g. 127.0.0.1:8080/nel@4242";
        let (target, pid) = value.rsplit_once('@').ok_or(usage)?;
        let pid: u32 = pid.parse().map_err(|e| format!("--nel-peer: pid {pid:?}: {e}"))?;
        let (addr, path) = target.split_once('/').ok_or(usage)?;
        let addr = addr.parse().map_err(|e| format!("--nel-peer: address {addr:?}: {e}"))?;
        if !std::path::Path::new(&format!("/proc/{pid}/stat")).exists() {
            return Err(format!("--nel-peer: no process {pid} on this machine"));
        }
        Ok(NelTarget { addr, path: format!("/{path}"), pid })
    }
}

impl Args {
    fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut args = Args {
            listeners: Listeners::Plain,
            duration: Duration::from_secs(10),
            connections: 32,
            rss_reports: 0,
            rss_step: 500_000,
            max_pool: None,
            sync_cost: false,
            nel: false,
            nel_peer: None,
            random_ids: false,
            store_max_mib: None,
        };
        while let Some(arg) = it.next() {
            let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                "--tls" => args.listeners = Listeners::Tls,
                "--both" => args.listeners = Listeners::Both,
                "--sync-cost" => args.sync_cost = true,
                "--nel" => args.nel = true,
                "--nel-peer" => {
                    args.nel_peer = Some(NelTarget::parse(&value("--nel-peer")?)?);
                    args.nel = true;
                }
                "--random-ids" => args.random_ids = true,
                "--duration" => {
                    let secs: f64 =
                        value("--duration")?.parse().map_err(|e| format!("--duration: {e}"))?;
                    if !(secs > 0.0 && secs <= 3600.0) {
                        return Err("--duration: between 0 and 3600 seconds".into());
                    }
                    args.duration = Duration::from_secs_f64(secs);
                }
                "--connections" => {
                    args.connections = value("--connections")?
                        .parse()
                        .map_err(|e| format!("--connections: {e}"))?;
                    if args.connections == 0 {
                        return Err("--connections: at least 1".into());
                    }
                }
                "--rss-reports" => {
                    args.rss_reports = value("--rss-reports")?
                        .parse()
                        .map_err(|e| format!("--rss-reports: {e}"))?;
                }
                "--store-max-mib" => {
                    let mib: u64 = value("--store-max-mib")?
                        .parse()
                        .map_err(|e| format!("--store-max-mib: {e}"))?;
                    if !(1..=1 << 20).contains(&mib) {
                        return Err("--store-max-mib: from 1 to 1048576".into());
                    }
                    args.store_max_mib = Some(mib);
                }
                "--rss-step" => {
                    args.rss_step =
                        value("--rss-step")?.parse().map_err(|e| format!("--rss-step: {e}"))?;
                    if args.rss_step == 0 {
                        return Err("--rss-step: at least 1".into());
                    }
                }
                "-h" | "--help" => return Err(USAGE.into()),
                other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
            }
        }
        Ok(args)
    }
}

/// Per-agent sequence numbers, so every envelope of the run is fresh to the replay window.
struct Agents {
    identities: Vec<AgentIdentity>,
    next_seq: Vec<u64>,
    /// Each agent's clock error, in ms (-1000 to 999).
    skew_ms: Vec<i64>,
    /// The traffic clock (see "Report ids" above), in µs: the next envelope's time.
    clock_us: u64,
    random_ids: bool,
    rng: SeededEntropy,
}

/// The traffic clock's step per envelope (3,000 envelopes/s).
const ENVELOPE_STEP_US: u64 = 333;
/// How long before its envelope a report may have been made, in ms.
const MADE_BEFORE_MS: u64 = 2_500;

/// An envelope's report ids: made up to [`MADE_BEFORE_MS`] before `at` (its agent's clock),
/// or 128 random bits each.
fn report_ids(random: bool, at: u64, rng: &mut impl Entropy) -> Vec<ReportId> {
    (0..REPORTS_PER_ENVELOPE)
        .map(|_| {
            if random {
                return ReportId::random(rng);
            }
            let before = rng.next_u64() % MADE_BEFORE_MS;
            ReportId::new(UnixMillis(at.saturating_sub(before)), rng)
        })
        .collect()
}

impl Agents {
    fn new(seed: [u8; 32], random_ids: bool) -> Agents {
        let mut rng = SeededEntropy::insecure_from_seed(seed);
        let identities = (0..AGENTS).map(|_| AgentIdentity::generate(&mut rng)).collect();
        let skew_ms = (0..AGENTS).map(|_| (rng.next_u64() % 2_000) as i64 - 1_000).collect();
        let clock_us = unix_now().0 * 1_000;
        Agents { identities, next_seq: vec![1; AGENTS], skew_ms, clock_us, random_ids, rng }
    }

    /// `n` fresh envelopes, sealed on all cores; agents interleave so that envelopes sent
    /// concurrently come from different agents.
    fn seal(&mut self, collector: &CollectorPublicKey, n: usize) -> Vec<Bytes> {
        let now = unix_now();
        let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
        let jobs: Vec<(usize, u64, [u8; 32], u64)> = (0..n)
            .map(|i| {
                let agent = i % AGENTS;
                let seq = self.next_seq[agent];
                self.next_seq[agent] += 1;
                let mut seed = [0u8; 32];
                self.rng.fill(&mut seed);
                self.clock_us += ENVELOPE_STEP_US;
                let at = (self.clock_us / 1_000).saturating_add_signed(self.skew_ms[agent]);
                (agent, seq, seed, at)
            })
            .collect();
        let random_ids = self.random_ids;
        let chunk = n.div_ceil(threads).max(1);
        std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .chunks(chunk)
                .map(|part| {
                    s.spawn(|| {
                        part.iter()
                            .map(|&(agent, seq, seed, at)| {
                                let mut rng = SeededEntropy::insecure_from_seed(seed);
                                let ids = report_ids(random_ids, at, &mut rng);
                                seal_envelope_with_ids(
                                    &self.identities[agent],
                                    collector,
                                    seq,
                                    &ids,
                                    now,
                                    &mut rng,
                                )
                                .bytes
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().flat_map(|h| h.join().expect("sealing thread panicked")).collect()
        })
    }
}

/// `Opener::open` per second on this thread, over `envelopes` (opened round-robin), and this
/// thread's CPU time per open in µs.
fn crypto_bound(key: &CollectorKey, envelopes: &[Bytes], min_time: Duration) -> (f64, f64) {
    let opener = Opener::new(vec![key.clone()]);
    let start = Instant::now();
    let cpu_start = thread_cpu_ns();
    let mut opened = 0usize;
    while start.elapsed() < min_time || opened < envelopes.len().min(100) {
        let env = &envelopes[opened % envelopes.len()];
        let batch = opener.open(env).expect("envelopes sealed here open");
        std::hint::black_box(batch);
        opened += 1;
    }
    let cpu_us = (thread_cpu_ns().saturating_sub(cpu_start)) as f64 / 1e3 / opened as f64;
    (opened as f64 / start.elapsed().as_secs_f64(), cpu_us)
}

/// This thread's time on a CPU in ns (`/proc/thread-self/schedstat`, first field); 0 when
/// unreadable.
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// A `bench-row:` line for `.ci/bench.sh`: `bench-row: KEY VALUE UNIT`.
fn row(key: &str, value: f64, unit: &str) {
    println!("bench-row: {key} {value:.3} {unit}");
}

/// CPU time (user + system, seconds) of a process's live threads, summed by thread name
/// (`/proc/<pid>/task/*/stat`): the collector's `tokio-rt-worker`s, its `store-writer`, ...
/// A thread that is gone is not counted (the process's total still has it).
fn thread_cpu_by_name(
    pid: u32,
    ticks_per_sec: f64,
) -> Result<std::collections::BTreeMap<String, f64>, String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|e| format!("read /proc/{pid}/task: {e}"))?;
    let mut by_name = std::collections::BTreeMap::new();
    for task in tasks.flatten() {
        // A thread may exit between the listing and the read: skip it.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { continue };
        let Some((name, cpu)) = stat_cpu(&stat, ticks_per_sec) else { continue };
        *by_name.entry(name.to_owned()).or_insert(0.0) += cpu;
    }
    Ok(by_name)
}

/// CPU seconds per thread kind between two [`thread_cpu_by_name`] readings: (tokio workers,
/// store writer).
fn workers_and_writer(
    before: &std::collections::BTreeMap<String, f64>,
    after: &std::collections::BTreeMap<String, f64>,
) -> (f64, f64) {
    let spent = |name: &str| {
        (after.get(name).copied().unwrap_or(0.0) - before.get(name).copied().unwrap_or(0.0))
            .max(0.0)
    };
    (spent("tokio-rt-worker"), spent("store-writer"))
}

/// Collector CPU time (user + system) from `/proc/<pid>/stat`, in seconds.
fn cpu_seconds(pid: u32, ticks_per_sec: f64) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("read /proc/{pid}/stat: {e}"))?;
    stat_cpu(&stat, ticks_per_sec)
        .map(|(_, cpu)| cpu)
        .ok_or_else(|| format!("/proc/{pid}/stat: utime or stime unreadable"))
}

/// The command name and the CPU seconds (utime + stime, fields 14 and 15) of a
/// `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line.
fn stat_cpu(stat: &str, ticks_per_sec: f64) -> Option<(&str, f64)> {
    // The name may hold spaces and parentheses: the fields follow the last ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let (_, name) = head.split_once('(')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field 14 is index 11.
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some((name, (ticks(11)? + ticks(12)?) as f64 / ticks_per_sec))
}

/// A `/proc/<pid>/status` value in kB (`VmRSS`, `VmHWM`).
fn status_kb(pid: u32, key: &str) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("read /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("{key} missing from /proc/{pid}/status"))
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// How to reach the collector.
#[derive(Clone)]
enum Target {
    Plain(std::net::SocketAddr),
    Tls(std::net::SocketAddr, rustls::RootCertStore),
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Plain(_) => "plain HTTP/1.1",
            Target::Tls(..) => "TLS HTTP/1.1",
        }
    }

    async fn connect(&self) -> Result<HttpClient, String> {
        match self {
            Target::Plain(addr) => HttpClient::connect_plain(*addr).await,
            Target::Tls(addr, roots) => {
                HttpClient::connect_tls(*addr, roots.clone(), "collector.test").await
            }
        }
        .map_err(|e| format!("connect to the collector: {e}"))
    }

    async fn connect_all(&self, n: usize) -> Result<Vec<HttpClient>, String> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.connect().await?);
        }
        Ok(out)
    }
}

/// What one phase saw.
#[derive(Default, Debug)]
struct Tally {
    accepted: u64,
    /// Non-202 answers by status code.
    refused: std::collections::BTreeMap<u16, u64>,
    errors: u64,
    latencies: Vec<Duration>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.accepted += other.accepted;
        for (k, v) in other.refused {
            *self.refused.entry(k).or_default() += v;
        }
        self.errors += other.errors;
        self.latencies.extend(other.latencies);
    }

    fn record(
        &mut self,
        result: Result<(http::StatusCode, Bytes), hyper::Error>,
        latency: Duration,
    ) {
        match result {
            Ok((status, _)) if status == http::StatusCode::ACCEPTED => {
                self.accepted += 1;
                self.latencies.push(latency);
            }
            Ok((status, _)) => *self.refused.entry(status.as_u16()).or_default() += 1,
            Err(_) => self.errors += 1,
        }
    }

    fn percentile(&mut self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[i]
    }

    fn problems(&self) -> String {
        if self.refused.is_empty() && self.errors == 0 {
            "none".into()
        } else {
            format!("refused {:?}, transport errors {}", self.refused, self.errors)
        }
    }
}

/// Closed loop: each connection sends the next envelope as soon as the last is answered, until
/// `duration` is over or the pool is used up. Returns the tally and the wall time.
async fn closed_loop(
    clients: Vec<HttpClient>,
    pool: Arc<Vec<Bytes>>,
    duration: Duration,
) -> (Tally, Duration) {
    closed_loop_over(clients, pool, duration, false).await
}

/// [`closed_loop`], going round the pool again when `cycle` (the floor: it stores nothing, so
/// a body sent twice costs it what it costs once).
async fn closed_loop_over(
    clients: Vec<HttpClient>,
    pool: Arc<Vec<Bytes>>,
    duration: Duration,
    cycle: bool,
) -> (Tally, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let end = start + duration;
    let workers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let (pool, next) = (pool.clone(), next.clone());
            tokio::spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < end {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let i = if cycle { i % pool.len().max(1) } else { i };
                    let Some(env) = pool.get(i) else { break };
                    let sent = Instant::now();
                    let result = client.post_envelope(env.clone()).await;
                    let failed = result.is_err();
                    tally.record(result, sent.elapsed());
                    if failed {
                        break;
                    }
                }
                tally
            })
        })
        .collect();
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await.expect("worker panicked"));
    }
    (tally, start.elapsed())
}

/// Open loop at `rate` envelopes/s: envelope k is due at start + k/rate; latency counts from
/// when it was due.
async fn open_loop(clients: Vec<HttpClient>, pool: Vec<Bytes>, rate: f64) -> (Tally, Duration) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Bytes)>();
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    let workers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            let rx = rx.clone();
            tokio::spawn(async move {
                let mut tally = Tally::default();
                loop {
                    let job = rx.lock().await.recv().await;
                    let Some((due, env)) = job else { break };
                    let result = client.post_envelope(env).await;
                    tally.record(result, due.elapsed());
                }
                tally
            })
        })
        .collect();
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let total = pool.len();
    let mut pool = pool.into_iter();
    let mut sent = 0usize;
    while sent < total {
        // Hand out every envelope that is due (the timer wakes at millisecond granularity).
        let due_count = ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(total);
        while sent < due_count {
            let due = start + interval.mul_f64(sent as f64);
            let env = pool.next().expect("sent < total");
            if tx.send((due, env)).is_err() {
                break;
            }
            sent += 1;
        }
        let next_due = start + interval.mul_f64(sent as f64);
        tokio::time::sleep_until(next_due.into()).await;
    }
    drop(tx);
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await.expect("worker panicked"));
    }
    (tally, start.elapsed())
}

/// Figures for one listener.
#[derive(Debug)]
struct ListenerFigures {
    name: &'static str,
    envelopes_per_sec: f64,
    collector_cores: f64,
    ratio: f64,
    half_rate: f64,
    p50: Duration,
    p99: Duration,
    accepted: u64,
    /// The open's share of the collector's CPU in the max-rate phase (its own
    /// `vantage_envelope_open_cpu_seconds_total`); `None` when nothing was opened.
    open_share: Option<f64>,
    /// The floor's CPU µs per request (see `floor`).
    floor_us: f64,
    /// The collector's tokio workers' and store writer's CPU µs per envelope.
    workers_us: f64,
    writer_us: f64,
}

struct Bench {
    args: Args,
    key: CollectorKey,
    agents: Agents,
    proc: CollectorProc,
    ticks: f64,
    crypto_per_sec: f64,
    /// CPU µs per open on this process's thread.
    crypto_cpu_us: f64,
    /// Index of the next NEL body (`nel_body`): no two phases send the same upload.
    nel_next: usize,
    /// The store's directory when its size is bounded (`--store-max-mib`).
    store_dir: Option<std::path::PathBuf>,
    /// The bare server the max-rate and NEL phases are set against (see `floor`).
    floor: floor::Floor,
    out: std::io::Stdout,
}

/// Alternating rounds of `--nel-peer`.
const PEER_ROUNDS: usize = 5;

/// One NEL closed loop.
struct NelRun {
    tally: Tally,
    wall: f64,
    /// CPU seconds of the process that took the uploads.
    cpu: f64,
}

impl NelRun {
    fn cpu_us_per_upload(&self) -> f64 {
        self.cpu / self.tally.accepted.max(1) as f64 * 1e6
    }

    fn uploads_per_sec(&self) -> f64 {
        self.tally.accepted as f64 / self.wall
    }
}

/// Min and median of `v` (not empty).
fn min_median(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    let median = if v.len() % 2 == 0 { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] };
    (v[0], median)
}

impl Bench {
    fn say(&self, line: &str) {
        let _ = writeln!(self.out.lock(), "{line}");
    }

    fn pool_size(&self, rate: f64) -> usize {
        let n = (rate * self.args.duration.as_secs_f64()).ceil() as usize;
        let n = n.max(self.args.connections * 4);
        self.args.max_pool.map_or(n, |max| n.min(max))
    }

    async fn drive(&mut self, target: &Target) -> Result<ListenerFigures, String> {
        let pid = self.proc.pid();
        // Closed loop: at most two cores' worth of the crypto bound can be taken.
        let pool =
            self.agents.seal(&self.key.public_key(), self.pool_size(self.crypto_per_sec * 2.0));
        let pool = Arc::new(pool);
        let clients = target.connect_all(self.args.connections).await?;
        let open_before = self.open_cpu().await?;
        let threads_before = thread_cpu_by_name(pid, self.ticks)?;
        let cpu_before = cpu_seconds(pid, self.ticks)?;
        let (mut tally, wall) = closed_loop(clients, pool.clone(), self.args.duration).await;
        let cpu = cpu_seconds(pid, self.ticks)? - cpu_before;
        let (workers_cpu, writer_cpu) =
            workers_and_writer(&threads_before, &thread_cpu_by_name(pid, self.ticks)?);
        let open_after = self.open_cpu().await?;
        let wall_s = wall.as_secs_f64();
        let eps = tally.accepted as f64 / wall_s;
        let cores = cpu / wall_s;
        let ratio = if cores > 0.0 { eps / cores / self.crypto_per_sec } else { 0.0 };
        let cpu_per_env_us =
            if tally.accepted > 0 { cpu / tally.accepted as f64 * 1e6 } else { 0.0 };
        let slug = if matches!(target, Target::Tls(..)) { "tls" } else { "plain" };
        self.say(&format!(
            "[{}] collector CPU per accepted envelope {cpu_per_env_us:.0} us vs open+verify \
             {:.0} us in this process: {:.2} x crypto bound (CPU time)",
            target.name(),
            self.crypto_cpu_us,
            if cpu_per_env_us > 0.0 { self.crypto_cpu_us / cpu_per_env_us } else { 0.0 },
        ));
        row(&format!("ingest_{slug}_cpu_us_per_envelope"), cpu_per_env_us, "us");
        row(
            &format!("ingest_{slug}_cpu_ratio_to_crypto"),
            if cpu_per_env_us > 0.0 { self.crypto_cpu_us / cpu_per_env_us } else { 0.0 },
            "x",
        );
        row(&format!("ingest_{slug}_envelopes_per_sec"), eps, "env/s");
        // The same ratio with the open's cost taken inside the collector, on its own threads,
        // while it served this phase (vantage_envelope_open_cpu_seconds_total): the crypto's
        // share of the collector's CPU. The bound above was measured here before the phase,
        // with this machine otherwise idle; under load the same open costs the collector more
        // CPU time (the other core busy, caches shared with the rest of the request), so the
        // two ratios differ by that much.
        let opens = open_after.0.saturating_sub(open_before.0);
        let mut open_share = None;
        if opens > 0 && cpu > 0.0 && tally.accepted > 0 {
            let open_cpu = (open_after.1 - open_before.1).max(0.0);
            let per_open = open_cpu / opens as f64 * 1e6;
            let share = open_cpu / cpu;
            self.say(&format!(
                "[{}] open+verify inside the collector during the phase: {per_open:.0} us of \
                 thread CPU per envelope ({opens} opens), {:.0} % of the collector's CPU: \
                 {share:.2} x crypto bound in the same process and moments",
                target.name(),
                share * 100.0,
            ));
            row(&format!("ingest_{slug}_open_cpu_us_per_envelope"), per_open, "us");
            row(&format!("ingest_{slug}_open_share_of_cpu"), share, "x");
            open_share = Some(share);
        }
        // The floor: the same envelopes, connections and stack, to a server that only
        // answers (see `floor`), right after; and what the collector spends beyond it.
        let floor_target = match target {
            Target::Plain(_) => Target::Plain(self.floor.plain),
            Target::Tls(_, roots) => Target::Tls(self.floor.tls, roots.clone()),
        };
        let floor_pid = self.floor.pid();
        let clients = floor_target.connect_all(self.args.connections).await?;
        let floor_before = cpu_seconds(floor_pid, self.ticks)?;
        let (floor_tally, floor_wall) =
            closed_loop_over(clients, pool, self.args.duration, true).await;
        let floor_cpu = cpu_seconds(floor_pid, self.ticks)? - floor_before;
        if floor_tally.accepted == 0 {
            return Err(format!(
                "[{}] the floor answered nothing: {}",
                target.name(),
                floor_tally.problems()
            ));
        }
        let floor_us = floor_cpu / floor_tally.accepted as f64 * 1e6;
        let open_us = open_share.map_or(0.0, |s| s * cpu_per_env_us);
        let beyond = cpu_per_env_us - floor_us - open_us;
        self.say(&format!(
            "[{}] floor (a bare server on the same stack answering the same envelopes, no \
             open, no store): {floor_us:.0} us CPU per request at {:.0} requests/s; the \
             collector beyond the floor and the open (checks, enrichment, detector, store, \
             durability): {beyond:.0} us per envelope",
            target.name(),
            floor_tally.accepted as f64 / floor_wall.as_secs_f64(),
        ));
        row(&format!("ingest_{slug}_floor_cpu_us_per_request"), floor_us, "us");
        row(&format!("ingest_{slug}_beyond_floor_and_open_us"), beyond, "us");
        let per_env = |secs: f64| secs / tally.accepted.max(1) as f64 * 1e6;
        let (workers_us, writer_us) = (per_env(workers_cpu), per_env(writer_cpu));
        self.say(&format!(
            "[{}] the collector's CPU per envelope by thread: tokio workers {workers_us:.0} us \
             (the open {open_us:.0}, the rest {:.0}), store writer {writer_us:.0} us, other \
             threads {:.0} us",
            target.name(),
            workers_us - open_us,
            (cpu_per_env_us - workers_us - writer_us).max(0.0),
        ));
        row(&format!("ingest_{slug}_workers_cpu_us_per_envelope"), workers_us, "us");
        row(&format!("ingest_{slug}_writer_cpu_us_per_envelope"), writer_us, "us");
        self.say(&format!(
            "[{}] max rate (closed loop, {} connections, {:.1} s): {:.0} envelopes/s = {:.0} reports/s; \
             collector CPU {:.2} cores; {:.0} envelopes/s per core = {:.2} x crypto bound; \
             closed-loop p50 {:.2} ms; problems: {}",
            target.name(),
            self.args.connections,
            wall_s,
            eps,
            eps * REPORTS_PER_ENVELOPE as f64,
            cores,
            if cores > 0.0 { eps / cores } else { 0.0 },
            ratio,
            ms(tally.percentile(0.5)),
            tally.problems(),
        ));
        if tally.accepted == 0 {
            return Err(format!(
                "[{}] no envelope was accepted: {}",
                target.name(),
                tally.problems()
            ));
        }
        let accepted_max = tally.accepted;

        let half = eps / 2.0;
        let pool = self.agents.seal(&self.key.public_key(), self.pool_size(half));
        let clients = target.connect_all(self.args.connections).await?;
        let (mut lat, wall) = open_loop(clients, pool, half).await;
        let (p50, p99) = (lat.percentile(0.5), lat.percentile(0.99));
        self.say(&format!(
            "[{}] latency at half the max rate (open loop, {:.0} envelopes/s offered, {:.1} s): \
             p50 {:.2} ms, p99 {:.2} ms, {:.0} envelopes/s accepted; problems: {}",
            target.name(),
            half,
            wall.as_secs_f64(),
            ms(p50),
            ms(p99),
            lat.accepted as f64 / wall.as_secs_f64(),
            lat.problems(),
        ));
        Ok(ListenerFigures {
            name: target.name(),
            envelopes_per_sec: eps,
            collector_cores: cores,
            ratio,
            half_rate: half,
            p50,
            p99,
            accepted: accepted_max + lat.accepted,
            open_share,
            floor_us,
            workers_us,
            writer_us,
        })
    }

    /// The collector's `vantage_envelope_opens_total` and `vantage_envelope_open_cpu_seconds_total`
    /// (from `GET /metrics` on its plain listener).
    async fn open_cpu(&self) -> Result<(u64, f64), String> {
        let addr = self.proc.plain_addr().ok_or("the collector has no plain listener")?;
        let mut client = HttpClient::connect_plain(addr)
            .await
            .map_err(|e| format!("connect for /metrics: {e}"))?;
        let (status, body) =
            client.get("/metrics").await.map_err(|e| format!("GET /metrics: {e}"))?;
        let text = String::from_utf8_lossy(&body);
        if status != http::StatusCode::OK {
            return Err(format!("GET /metrics: {status}: {text}"));
        }
        let sample = |name: &str| -> Result<f64, String> {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("GET /metrics: no {name}"))
        };
        Ok((
            sample("vantage_envelope_opens_total")? as u64,
            sample("vantage_envelope_open_cpu_seconds_total")?,
        ))
    }

    /// The NEL phase: closed loop of distinct 3-report uploads on the plain listener; prints
    /// uploads/s and the collector's CPU µs per upload.
    async fn nel_phase(&mut self, plain: std::net::SocketAddr, ages: Ages) -> Result<(), String> {
        let ours = NelTarget { addr: plain, path: "/v1/nel".into(), pid: self.proc.pid() };
        let threads_before = thread_cpu_by_name(ours.pid, self.ticks)?;
        let mut run = self.nel_closed_loop(&ours, ages).await?;
        let (workers_cpu, writer_cpu) =
            workers_and_writer(&threads_before, &thread_cpu_by_name(ours.pid, self.ticks)?);
        if run.tally.accepted == 0 {
            return Err(format!("NEL phase: nothing stored: {}", run.tally.problems()));
        }
        self.say(&format!(
            "[NEL{}] closed loop, {} connections, {:.1} s: {:.0} uploads/s of {} reports; \
             collector CPU {:.0} us per upload; p50 {:.2} ms; problems: {}",
            ages.label(),
            self.args.connections,
            run.wall,
            run.uploads_per_sec(),
            NEL_REPORTS_PER_UPLOAD,
            run.cpu_us_per_upload(),
            ms(run.tally.percentile(0.5)),
            run.tally.problems()
        ));
        let prefix = ages.row_prefix();
        row(&format!("{prefix}_cpu_us_per_upload"), run.cpu_us_per_upload(), "us");
        row(&format!("{prefix}_uploads_per_sec"), run.uploads_per_sec(), "req/s");
        if ages == Ages::Clustered {
            // The floor (see `floor`) right after, on uploads of the same shape.
            let floor =
                NelTarget { addr: self.floor.plain, path: "/v1/nel".into(), pid: self.floor.pid() };
            let floor_run = self.nel_closed_loop(&floor, ages).await?;
            if floor_run.tally.accepted == 0 {
                return Err(format!("NEL floor answered nothing: {}", floor_run.tally.problems()));
            }
            let floor_us = floor_run.cpu_us_per_upload();
            self.say(&format!(
                "[NEL] floor (a bare server on the same stack answering 204, no parse, no \
                 store): {floor_us:.1} us CPU per upload at {:.0} uploads/s; the collector \
                 beyond it: {:.1} us per upload",
                floor_run.uploads_per_sec(),
                run.cpu_us_per_upload() - floor_us,
            ));
            row("nel_floor_cpu_us_per_upload", floor_us, "us");
            row("nel_beyond_floor_us", run.cpu_us_per_upload() - floor_us, "us");
            let per_upload = |secs: f64| secs / run.tally.accepted.max(1) as f64 * 1e6;
            let (workers_us, writer_us) = (per_upload(workers_cpu), per_upload(writer_cpu));
            self.say(&format!(
                "[NEL] the collector's CPU per upload by thread: tokio workers {workers_us:.1} \
                 us, store writer {writer_us:.1} us, other threads {:.1} us",
                (run.cpu_us_per_upload() - workers_us - writer_us).max(0.0),
            ));
            row("nel_workers_cpu_us_per_upload", workers_us, "us");
            row("nel_writer_cpu_us_per_upload", writer_us, "us");
        }
        Ok(())
    }

    /// This collector and `peer` in turn (this one first in odd rounds, the peer first in even
    /// ones), [`PEER_ROUNDS`] closed loops each of the same kind of uploads (clustered ages,
    /// every body distinct): CPU µs per upload of each process, min and median, and the ratio
    /// of the medians. Alternating puts the machine's slow and fast moments on both.
    async fn nel_peer_rounds(
        &mut self,
        plain: std::net::SocketAddr,
        peer: &NelTarget,
    ) -> Result<(), String> {
        let ours = NelTarget { addr: plain, path: "/v1/nel".into(), pid: self.proc.pid() };
        let (mut mine, mut theirs) = (Vec::new(), Vec::new());
        for round in 1..=PEER_ROUNDS {
            // ABBA: a drift within a round falls on both.
            let mut turns = [("vantage", &ours, &mut mine), ("peer", peer, &mut theirs)];
            if round % 2 == 0 {
                turns.reverse();
            }
            for (who, target, out) in turns {
                let mut run = self.nel_closed_loop(target, Ages::Clustered).await?;
                if run.tally.accepted == 0 {
                    return Err(format!(
                        "NEL vs peer, round {round}: {who} ({}{}) took nothing: {}",
                        target.addr,
                        target.path,
                        run.tally.problems()
                    ));
                }
                self.say(&format!(
                    "[NEL vs peer] round {round}, {who} (pid {}, {}{}): {:.0} uploads/s, CPU \
                     {:.1} us per upload; p50 {:.2} ms; problems: {}",
                    target.pid,
                    target.addr,
                    target.path,
                    run.uploads_per_sec(),
                    run.cpu_us_per_upload(),
                    ms(run.tally.percentile(0.5)),
                    run.tally.problems()
                ));
                out.push(run.cpu_us_per_upload());
            }
        }
        let (mine, theirs) = (min_median(&mut mine), min_median(&mut theirs));
        self.say(&format!(
            "[NEL vs peer] CPU per upload, min / median of {PEER_ROUNDS}: vantage {:.1} / {:.1} \
             us (durable 204), peer {:.1} / {:.1} us: {:.2} x the peer's",
            mine.0,
            mine.1,
            theirs.0,
            theirs.1,
            mine.1 / theirs.1
        ));
        row("nel_peer_cpu_us_per_upload", theirs.1, "us");
        row("nel_cpu_ratio_to_peer", mine.1 / theirs.1, "x");
        Ok(())
    }

    /// One closed loop of `--duration` of distinct NEL uploads to `target`, and the CPU time
    /// its process spent meanwhile.
    async fn nel_closed_loop(&mut self, target: &NelTarget, ages: Ages) -> Result<NelRun, String> {
        // Enough distinct bodies for the phase at a generous rate, none sent before.
        let n = self.args.max_pool.unwrap_or(200_000);
        let first = self.nel_next;
        self.nel_next += n;
        let pool: Vec<Bytes> = (first..first + n).map(|i| nel_body(i, ages)).collect();
        let clients = Target::Plain(target.addr)
            .connect_all(self.args.connections)
            .await
            .map_err(|e| format!("{} ({}): {e}", target.addr, target.path))?;
        let cpu_before = cpu_seconds(target.pid, self.ticks)?;
        let next = Arc::new(AtomicUsize::new(0));
        let pool = Arc::new(pool);
        let path: Arc<str> = target.path.as_str().into();
        let start = Instant::now();
        let end = start + self.args.duration;
        let workers: Vec<_> = clients
            .into_iter()
            .map(|mut client| {
                let (pool, next, path) = (pool.clone(), next.clone(), path.clone());
                tokio::spawn(async move {
                    let mut tally = Tally::default();
                    while Instant::now() < end {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(body) = pool.get(i) else { break };
                        let sent = Instant::now();
                        let result = client
                            .post(&path, vantage_collector::NEL_CONTENT_TYPE, body.clone())
                            .await
                            // NEL answers 204 when stored: count it like a 202.
                            .map(|(status, b)| match status {
                                http::StatusCode::NO_CONTENT | http::StatusCode::OK => {
                                    (http::StatusCode::ACCEPTED, b)
                                }
                                other => (other, b),
                            });
                        let failed = result.is_err();
                        tally.record(result, sent.elapsed());
                        if failed {
                            break;
                        }
                    }
                    tally
                })
            })
            .collect();
        let mut tally = Tally::default();
        for w in workers {
            tally.merge(w.await.map_err(|e| format!("NEL worker: {e}"))?);
        }
        let wall = start.elapsed().as_secs_f64();
        let cpu = cpu_seconds(target.pid, self.ticks)? - cpu_before;
        Ok(NelRun { tally, wall, cpu })
    }

    /// Sends fresh envelopes until `total` reports are stored (counting `already`), then reads
    /// the collector's memory. Returns (VmRSS kB, VmHWM kB, seconds taken, checkpoints: stored
    /// reports and VmRSS kB every `--rss-step` reports).
    async fn rss_phase(
        &mut self,
        target: &Target,
        already: u64,
    ) -> Result<(u64, u64, f64, Vec<Mark>), String> {
        let start = Instant::now();
        let mut stored = already;
        let chunk = 20_000usize;
        let pid = self.proc.pid();
        let mut checkpoints = Vec::new();
        let mut next_mark = (stored / self.args.rss_step + 1) * self.args.rss_step;
        while stored < self.args.rss_reports {
            if stored >= next_mark {
                let rss = status_kb(pid, "VmRSS")?;
                let disk_bytes = self.store_dir.as_deref().map(dir_bytes);
                let disk = match disk_bytes {
                    Some(b) => format!("; store on disk {:.1} MiB", b as f64 / MIB),
                    None => String::new(),
                };
                self.say(&format!(
                    "  at {stored} reports: VmRSS {:.1} MiB{disk}",
                    rss as f64 / 1024.0
                ));
                let cpu = cpu_seconds(pid, self.ticks)?;
                checkpoints.push(Mark { stored, rss_kb: rss, cpu, disk_bytes });
                next_mark = (stored / self.args.rss_step + 1) * self.args.rss_step;
            }
            let want = (self.args.rss_reports - stored).div_ceil(REPORTS_PER_ENVELOPE as u64);
            let n = (want as usize).min(chunk);
            let pool = Arc::new(self.agents.seal(&self.key.public_key(), n));
            let clients = target.connect_all(self.args.connections).await?;
            let (tally, _) = closed_loop(clients, pool, Duration::from_secs(3600)).await;
            if tally.accepted == 0 {
                return Err(format!("memory phase: nothing accepted: {}", tally.problems()));
            }
            stored += tally.accepted * REPORTS_PER_ENVELOPE as u64;
        }
        let rss = status_kb(pid, "VmRSS")?;
        let disk_bytes = self.store_dir.as_deref().map(dir_bytes);
        checkpoints.push(Mark {
            stored,
            rss_kb: rss,
            cpu: cpu_seconds(pid, self.ticks)?,
            disk_bytes,
        });
        Ok((rss, status_kb(pid, "VmHWM")?, start.elapsed().as_secs_f64(), checkpoints))
    }
}

/// A reading of the memory phase.
#[derive(Clone, Copy)]
struct Mark {
    /// Reports stored.
    stored: u64,
    rss_kb: u64,
    /// The collector's CPU time so far, seconds.
    cpu: f64,
    /// The store directory's size (`--store-max-mib` runs).
    disk_bytes: Option<u64>,
}

/// How the `age`s of a NEL phase's reports are spread.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ages {
    /// One age per upload, `i % 60,000` ms: uploads sent together are a few ms apart.
    Clustered,
    /// Each report its own age in the last minute (a hash of upload and entry).
    Spread,
}

impl Ages {
    fn label(self) -> &'static str {
        match self {
            Ages::Clustered => "",
            Ages::Spread => ", report ages spread over a minute",
        }
    }

    fn row_prefix(self) -> &'static str {
        match self {
            Ages::Clustered => "nel",
            Ages::Spread => "nel_spread",
        }
    }

    /// The age of entry `k` of upload `i`, in ms.
    fn age(self, i: usize, k: usize) -> u64 {
        match self {
            Ages::Clustered => (i % 60_000) as u64,
            Ages::Spread => {
                // splitmix64 of (i, k): any second of the minute, independently per report.
                let mut z = (i as u64 * 3 + k as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) % 60_000
            }
        }
    }
}

/// The `i`-th NEL upload: 3 `network-error` reports (DNS, TCP, HTTP), distinct per `i` and
/// between the two phases.
fn nel_body(i: usize, ages: Ages) -> Bytes {
    let entry = |k: usize, phase: &str, t: &str, status: u16| {
        format!(
            r#"{{"age":{age},"type":"network-error","url":"https://shop{k}.example/p?i={i}&a={a}","user_agent":"Mozilla/5.0 (X11; Linux x86_64) loadgen","body":{{"sampling_fraction":1.0,"server_ip":"","protocol":"http/1.1","method":"GET","status_code":{status},"elapsed_time":{el},"phase":"{phase}","type":"{t}","referrer":""}}}}"#,
            age = ages.age(i, k),
            a = ages.row_prefix(),
            el = 10 + i % 500,
        )
    };
    Bytes::from(format!(
        "[{},{},{}]",
        entry(0, "dns", "dns.name_not_resolved", 0),
        entry(1, "connection", "tcp.refused", 0),
        entry(2, "application", "http.error", 503)
    ))
}

const MIB: f64 = 1024.0 * 1024.0;

/// Bytes of the regular files under `dir` (unreadable entries count 0).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir).into_iter().flatten().flatten().fold(0, |sum, entry| {
        match entry.metadata() {
            Ok(m) if m.is_dir() => sum + dir_bytes(&entry.path()),
            Ok(m) => sum + m.len(),
            Err(_) => sum,
        }
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the whole benchmark; returns the per-listener figures.
fn run(args: Args) -> Result<Vec<ListenerFigures>, String> {
    let out = std::io::stdout();
    let bin = vantage_tests::collector_proc::collector_bin();
    let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
    let key = write_collector_key(dir.path(), [0x1d; 32]);
    let (ca, _leaf): (TestCa, _) = write_tls(dir.path(), &["collector.test", "127.0.0.1"]);
    let config = CollectorConfig {
        plain: true,
        tls: true,
        unlimited: true,
        server_extra: format!(
            "max_connections = {}\nmax_inflight_commits = {}\n",
            args.connections * 2 + 16,
            args.connections * 2 + 16
        ),
        ..CollectorConfig::default()
    };
    let mut toml = config.to_toml();
    if let Some(mib) = args.store_max_mib {
        let store = "[store]\npath = \"data\"\n";
        if !toml.contains(store) {
            return Err(format!("--store-max-mib: no `{store}` in the collector config to extend"));
        }
        toml = toml.replace(
            store,
            &format!("{store}max_bytes = {}\nretention_check_secs = 1\n", mib << 20),
        );
    }
    let proc = CollectorProc::start_with(&bin, dir.path(), &toml);
    let plain = proc.plain_addr().ok_or("the collector has no plain listener")?;
    let tls = proc.tls_addr().ok_or("the collector has no TLS listener")?;
    let _ = writeln!(
        out.lock(),
        "collector {} (pid {}), {} cores on this machine, generator on 1 core",
        bin.display(),
        proc.pid(),
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    if bin.components().any(|c| c.as_os_str() == "debug") {
        let _ = writeln!(out.lock(), "WARNING: a debug build; run with --release for real figures");
    }

    let mut agents = Agents::new([0xa7; 32], args.random_ids);
    let sample = agents.seal(&key.public_key(), 2000.min(args.max_pool.unwrap_or(2000)));
    let crypto_time = Duration::from_secs(2).min(args.duration);
    let (crypto_per_sec, crypto_cpu_us) = crypto_bound(&key, &sample, crypto_time);
    let _ = writeln!(
        out.lock(),
        "crypto bound: {crypto_per_sec:.0} Opener::open/s on one core, {crypto_cpu_us:.1} us CPU \
         per open ({} B envelopes of {} reports)",
        sample[0].len(),
        REPORTS_PER_ENVELOPE
    );
    row("crypto_cpu_us_per_open", crypto_cpu_us, "us");

    let mut bench = Bench {
        args: args.clone(),
        key,
        agents,
        proc,
        ticks: clock_ticks(),
        crypto_per_sec,
        crypto_cpu_us,
        nel_next: 0,
        store_dir: args.store_max_mib.map(|_| dir.path().join("data")),
        floor: floor::Floor::start(dir.path())?,
        out,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let targets = match args.listeners {
        Listeners::Plain => vec![Target::Plain(plain)],
        Listeners::Tls => vec![Target::Tls(tls, ca.root_store())],
        Listeners::Both => vec![Target::Plain(plain), Target::Tls(tls, ca.root_store())],
    };
    let mut figures = Vec::new();
    for target in &targets {
        figures.push(rt.block_on(bench.drive(target))?);
    }
    if args.nel {
        rt.block_on(bench.nel_phase(plain, Ages::Clustered))?;
        rt.block_on(bench.nel_phase(plain, Ages::Spread))?;
        if let Some(peer) = &args.nel_peer {
            rt.block_on(bench.nel_peer_rounds(plain, peer))?;
        }
    }
    if args.rss_reports > 0 {
        let already: u64 =
            figures.iter().map(|f| f.accepted).sum::<u64>() * REPORTS_PER_ENVELOPE as u64;
        let (rss, hwm, secs, checkpoints) = rt.block_on(bench.rss_phase(&targets[0], already))?;
        // With a size bound the store keeps only the newest of what it accepted.
        let stored = match args.store_max_mib {
            Some(mib) => format!(
                "accepting {} reports (the store held at {mib} MiB)",
                args.rss_reports.max(already)
            ),
            None => format!("storing {} reports", args.rss_reports.max(already)),
        };
        bench.say(&format!(
            "memory after {stored}: VmRSS {:.1} MiB (peak VmHWM {:.1} MiB); the phase took {secs:.1} s",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0,
        ));
        row("collector_rss_mib", rss as f64 / 1024.0, "MiB");
        row("collector_rss_reports", args.rss_reports.max(already) as f64, "reports");
        // Flat memory: VmRSS growth per million reports over the second half of the run; and
        // what an envelope costs the collector once its store is that large.
        let last = *checkpoints.last().unwrap_or(&Mark {
            stored: 0,
            rss_kb: rss,
            cpu: 0.0,
            disk_bytes: None,
        });
        if let Some(&mid) = checkpoints.iter().find(|m| m.stored >= last.stored / 2)
            && last.stored > mid.stored
        {
            let (mid_n, last_n) = (mid.stored, last.stored);
            let per_m =
                (last.rss_kb as f64 - mid.rss_kb as f64) / 1024.0 / ((last_n - mid_n) as f64 / 1e6);
            bench.say(&format!(
                "memory growth from {mid_n} to {last_n} reports: {per_m:.1} MiB per million"
            ));
            row("collector_rss_growth_mib_per_million", per_m, "MiB");
            // Held at a size bound, the store's files should be level too.
            if let (Some(a), Some(b)) = (mid.disk_bytes, last.disk_bytes) {
                let per_m = (b as f64 - a as f64) / MIB / ((last_n - mid_n) as f64 / 1e6);
                bench.say(&format!(
                    "store on disk from {mid_n} to {last_n} reports: {:.1} to {:.1} MiB, \
                     {per_m:.1} MiB per million",
                    a as f64 / MIB,
                    b as f64 / MIB
                ));
                row("store_disk_mib", b as f64 / MIB, "MiB");
                row("store_disk_growth_mib_per_million", per_m, "MiB");
            }
            let envelopes = (last_n - mid_n) as f64 / REPORTS_PER_ENVELOPE as f64;
            let cpu_us = (last.cpu - mid.cpu) * 1e6 / envelopes;
            bench.say(&format!(
                "collector CPU per envelope from {mid_n} to {last_n} reports stored: {cpu_us:.0} us"
            ));
            row("collector_cpu_us_per_envelope_large_store", cpu_us, "us");
        }
    }
    for f in &figures {
        bench.say(&format!(
            "summary [{}]: {:.0} env/s, {:.0} reports/s, {:.2} collector cores, ratio {:.2} \
             (open's share of the collector's CPU {}; floor {:.0} us per request; workers {:.0} \
             us, writer {:.0} us per envelope), p50 {:.2} ms / p99 {:.2} ms at {:.0} env/s",
            f.name,
            f.envelopes_per_sec,
            f.envelopes_per_sec * REPORTS_PER_ENVELOPE as f64,
            f.collector_cores,
            f.ratio,
            f.open_share.map_or("not measured".into(), |s| format!("{s:.2}")),
            f.floor_us,
            f.workers_us,
            f.writer_us,
            ms(f.p50),
            ms(f.p99),
            f.half_rate
        ));
    }
    // Dropping the runtime closes the keep-alive connections its tasks still hold, so the
    // collector's graceful shutdown does not wait for them.
    drop(rt);
    let status = bench.proc.terminate();
    if !status.success() {
        return Err(format!("the collector exited with {status} after SIGTERM"));
    }
    Ok(figures)
}

/// One collector per sync mode, the same closed loop each: CPU per envelope with and without
/// the data sync.
fn sync_cost(args: &Args) -> Result<(), String> {
    let out = std::io::stdout();
    let bin = vantage_tests::collector_proc::collector_bin();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    let mut agents = Agents::new([0xa7; 32], args.random_ids);
    let mut figures = Vec::new();
    for mode in ["data", "danger_none"] {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let key = write_collector_key(dir.path(), [0x1d; 32]);
        let config = CollectorConfig {
            unlimited: true,
            server_extra: format!(
                "max_connections = {}\nmax_inflight_commits = {}\n",
                args.connections * 2 + 16,
                args.connections * 2 + 16
            ),
            ..CollectorConfig::default()
        }
        .to_toml()
        .replace("path = \"data\"\n", &format!("path = \"data\"\nsync = \"{mode}\"\n"));
        let proc = CollectorProc::start_with(&bin, dir.path(), &config);
        let target = Target::Plain(proc.plain_addr().ok_or("no plain listener")?);
        let pool = agents.seal(&key.public_key(), args.max_pool.unwrap_or(60_000));
        let ticks = clock_ticks();
        let (tally, wall) = rt.block_on(async {
            let clients = target.connect_all(args.connections).await?;
            let before = cpu_seconds(proc.pid(), ticks)?;
            let (tally, wall) = closed_loop(clients, Arc::new(pool), args.duration).await;
            let cpu = cpu_seconds(proc.pid(), ticks)? - before;
            Ok::<_, String>(((tally, cpu), wall))
        })?;
        let ((mut tally, cpu), wall) = (tally, wall);
        let p50 = ms(tally.percentile(0.5));
        if tally.accepted == 0 {
            return Err(format!("sync = {mode}: nothing accepted: {}", tally.problems()));
        }
        let per_env_us = cpu / tally.accepted as f64 * 1e6;
        let eps = tally.accepted as f64 / wall.as_secs_f64();
        let _ = writeln!(
            out.lock(),
            "store.sync = {mode:<11}: {} envelopes in {:.1} s = {eps:.0} envelopes/s; collector \
             CPU {cpu:.2} s = {per_env_us:.0} us per envelope; p50 {:.2} ms; problems: {}",
            tally.accepted,
            wall.as_secs_f64(),
            p50,
            tally.problems()
        );
        figures.push((per_env_us, eps));
        let status = proc.terminate();
        if !status.success() {
            return Err(format!("the collector exited with {status} after SIGTERM"));
        }
    }
    let _ = writeln!(
        out.lock(),
        "sync cost: CPU per envelope x{:.2} with fdatasync (data vs danger_none), throughput x{:.2}",
        figures[0].0 / figures[1].0,
        figures[0].1 / figures[1].1
    );
    Ok(())
}

/// The floor: a bare server on the collector's HTTP stack (tokio's multi-thread runtime, hyper
/// through hyper-util's `auto` builder with the collector's HTTP/1 settings, rustls with ring
/// and the same certificate) that reads each request's body and answers `202` on
/// `/v1/envelopes` and `204` on `/v1/nel`, nothing else: no open, no parse, no store. Its CPU
/// time per request, measured in the same run right after the collector's, is what this
/// machine charges for the connections, TLS records and HTTP alone; the collector's figure
/// above it is its own work.
mod floor {
    use std::io::BufRead as _;
    use std::net::SocketAddr;
    use std::path::Path;
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http_body_util::{BodyExt as _, Full, Limited};
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    /// The hidden argument that makes this binary a floor server.
    pub(super) const SERVE: &str = "--serve-floor";

    /// A floor server in a child process (killed on drop).
    pub(super) struct Floor {
        child: Child,
        pub(super) plain: SocketAddr,
        pub(super) tls: SocketAddr,
    }

    impl Floor {
        /// Starts `this binary --serve-floor DIR`, with `DIR/cert.pem` and `DIR/key.pem`.
        pub(super) fn start(dir: &Path) -> Result<Floor, String> {
            // A unit test runs in the test harness, which is not this program: it runs the
            // built `vantage-loadgen` instead.
            let exe = if cfg!(test) {
                vantage_tests::collector_proc::workspace_bin("vantage-loadgen")
            } else {
                std::env::current_exe().map_err(|e| format!("floor: own path: {e}"))?
            };
            let mut child = Command::new(exe)
                .arg(SERVE)
                .arg(dir)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("floor: start: {e}"))?;
            let mut line = String::new();
            let stdout = child.stdout.take().ok_or("floor: no stdout")?;
            std::io::BufReader::new(stdout)
                .read_line(&mut line)
                .map_err(|e| format!("floor: read its addresses: {e}"))?;
            let addrs: Vec<SocketAddr> =
                line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
            let [plain, tls] = addrs[..] else {
                let _ = child.kill();
                return Err(format!("floor: expected \"plain ADDR tls ADDR\", got {line:?}"));
            };
            Ok(Floor { child, plain, tls })
        }

        pub(super) fn pid(&self) -> u32 {
            self.child.id()
        }
    }

    impl Drop for Floor {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    /// The child's side: serves until killed, or until its stdin closes (the benchmark that
    /// started it is gone, however it ended). Prints `plain ADDR tls ADDR` once listening.
    pub(super) fn serve(dir: &Path) -> Result<(), String> {
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
            std::process::exit(0);
        });
        let chain: Vec<CertificateDer<'static>> =
            CertificateDer::pem_file_iter(dir.join("cert.pem"))
                .and_then(|it| it.collect::<Result<_, _>>())
                .map_err(|e| format!("floor: cert.pem: {e}"))?;
        let key = PrivateKeyDer::from_pem_file(dir.join("key.pem"))
            .map_err(|e| format!("floor: key.pem: {e}"))?;
        let mut config = rustls::ServerConfig::builder_with_provider(
            rustls::crypto::ring::default_provider().into(),
        )
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("floor: TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| format!("floor: TLS key: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("floor: runtime: {e}"))?;
        rt.block_on(async move {
            let plain = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("floor: bind: {e}"))?;
            let tls = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("floor: bind: {e}"))?;
            let addr = |l: &tokio::net::TcpListener| l.local_addr().map_err(|e| e.to_string());
            println!("plain {} tls {}", addr(&plain)?, addr(&tls)?);
            let mut builder = auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .max_buf_size(64 * 1024);
            let builder = Arc::new(builder);
            let accept_plain = {
                let builder = builder.clone();
                async move {
                    while let Ok((tcp, _)) = plain.accept().await {
                        let _ = tcp.set_nodelay(true);
                        let builder = builder.clone();
                        tokio::spawn(async move {
                            let _ = builder
                                .serve_connection(TokioIo::new(tcp), service_fn(answer))
                                .await;
                        });
                    }
                }
            };
            let accept_tls = async move {
                while let Ok((tcp, _)) = tls.accept().await {
                    let _ = tcp.set_nodelay(true);
                    let (builder, acceptor) = (builder.clone(), acceptor.clone());
                    tokio::spawn(async move {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service_fn(answer))
                                .await;
                        }
                    });
                }
            };
            tokio::join!(accept_plain, accept_tls);
            Ok(())
        })
    }

    /// Reads the whole body (at most 1 MiB) and answers by path.
    async fn answer(
        req: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
        let status = match req.uri().path() {
            "/v1/envelopes" => http::StatusCode::ACCEPTED,
            "/v1/nel" => http::StatusCode::NO_CONTENT,
            _ => http::StatusCode::NOT_FOUND,
        };
        let status = match Limited::new(req.into_body(), 1 << 20).collect().await {
            Ok(_) => status,
            Err(_) => http::StatusCode::BAD_REQUEST,
        };
        let mut response = hyper::Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        Ok(response)
    }
}

fn main() -> ExitCode {
    let mut raw = std::env::args().skip(1);
    if raw.next().as_deref() == Some(floor::SERVE) {
        let dir = raw.next().unwrap_or_default();
        if let Err(e) = floor::serve(std::path::Path::new(&dir)) {
            eprintln!("vantage-loadgen {}: {e}", floor::SERVE);
        }
        return ExitCode::FAILURE;
    }
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let result = if args.sync_cost { sync_cost(&args) } else { run(args).map(drop) };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vantage-loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spread phase's reports fall in any second of the minute, the three of one upload
    /// apart, and no body of one phase is a body of the other.
    #[test]
    fn nel_ages_are_spread_over_the_minute_or_clustered() {
        let spread: Vec<u64> =
            (0..2_000).flat_map(|i| (0..3).map(move |k| Ages::Spread.age(i, k))).collect();
        let seconds: std::collections::BTreeSet<u64> = spread.iter().map(|a| a / 1000).collect();
        assert_eq!(seconds.len(), 60, "every second of the minute");
        assert!(spread.iter().all(|a| *a < 60_000));
        let apart = (0..2_000)
            .filter(|i| Ages::Spread.age(*i, 0) / 1000 != Ages::Spread.age(*i, 1) / 1000)
            .count();
        assert!(
            apart > 1_900,
            "{apart} of 2000 uploads have their first two reports in different seconds"
        );
        assert!((0..100).all(|i| (0..3).all(|k| Ages::Clustered.age(i, k) == i as u64)));
        let clustered: std::collections::HashSet<Bytes> =
            (0..1_000).map(|i| nel_body(i, Ages::Clustered)).collect();
        assert_eq!(clustered.len(), 1_000);
        assert!((0..1_000).all(|i| !clustered.contains(&nel_body(i, Ages::Spread))));
    }

    #[test]
    fn args_parse_and_refuse_nonsense() {
        let parse = |s: &str| Args::parse(s.split_whitespace().map(String::from));
        let a = parse("--both --duration 2.5 --connections 8 --rss-reports 1000000").unwrap();
        assert_eq!(a.listeners, Listeners::Both);
        assert_eq!(a.duration, Duration::from_millis(2500));
        assert_eq!((a.connections, a.rss_reports, a.rss_step), (8, 1_000_000, 500_000));
        let a = parse("--rss-reports 10 --rss-step 5").unwrap();
        assert_eq!((a.rss_reports, a.rss_step), (10, 5));
        assert!(parse("--rss-step 0").unwrap_err().contains("--rss-step"));
        assert_eq!(parse("").unwrap().listeners, Listeners::Plain);
        assert!(parse("--connections 0").is_err());
        assert!(parse("--duration -1").is_err());
        assert!(parse("--bogus").unwrap_err().contains("--bogus"));
        assert!(parse("--duration").unwrap_err().contains("needs a value"));
        assert!(parse("--random-ids").unwrap().random_ids && !parse("").unwrap().random_ids);
        assert_eq!(parse("--store-max-mib 256").unwrap().store_max_mib, Some(256));
        assert_eq!(parse("").unwrap().store_max_mib, None);
        for bad in ["0", "x", "-1", "1048577"] {
            let e = parse(&format!("--store-max-mib {bad}")).unwrap_err();
            assert!(e.contains("--store-max-mib"), "{bad}: {e}");
        }
        let me = std::process::id();
        let a = parse(&format!("--nel-peer 127.0.0.1:8080/nel@{me}")).unwrap();
        let peer =
            NelTarget { addr: "127.0.0.1:8080".parse().unwrap(), path: "/nel".into(), pid: me };
        assert!(a.nel && a.nel_peer == Some(peer));
        for (bad, says) in [
            ("127.0.0.1:8080/nel", "ADDR/PATH@PID"),
            ("127.0.0.1:8080@1", "ADDR/PATH@PID"),
            ("127.0.0.1:8080/nel@x", "pid \"x\""),
            ("localhost:8080/nel@1", "address \"localhost:8080\""),
            ("127.0.0.1:8080/nel@4294967295", "no process 4294967295"),
        ] {
            let e = parse(&format!("--nel-peer {bad}")).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn report_ids_are_made_before_their_envelope_or_random() {
        let mut rng = SeededEntropy::insecure_from_seed([3; 32]);
        let at = 1_700_000_000_000u64;
        let made = |id: &ReportId| {
            let mut ms = [0u8; 8];
            ms[2..].copy_from_slice(&id.0[..6]);
            u64::from_be_bytes(ms)
        };
        let ids = report_ids(false, at, &mut rng);
        assert_eq!(ids.len(), REPORTS_PER_ENVELOPE);
        assert!(ids.iter().all(|id| (at - MADE_BEFORE_MS..=at).contains(&made(id))), "{ids:?}");
        let random = report_ids(true, at, &mut rng);
        assert!(random.iter().any(|id| !(at - MADE_BEFORE_MS..=at).contains(&made(id))));
    }

    #[test]
    fn proc_readings_parse() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid, clock_ticks()).unwrap() >= 0.0);
        assert!(status_kb(pid, "VmRSS").unwrap() > 0);
    }

    /// The whole benchmark in a tiny mode: a few hundred envelopes per phase, both listeners,
    /// the NEL phase.
    #[test]
    fn min_and_median_of_rounds() {
        assert_eq!(min_median(&mut [35.0, 31.0, 33.0]), (31.0, 33.0));
        assert_eq!(min_median(&mut [4.0, 1.0, 3.0, 2.0]), (1.0, 2.5));
        assert_eq!(min_median(&mut [7.0]), (7.0, 7.0));
    }

    #[test]
    fn tiny_run_accepts_envelopes_on_both_listeners() {
        // A second collector stands in for `--nel-peer`'s other NEL collector.
        let peer_dir = tempfile::tempdir().unwrap();
        write_collector_key(peer_dir.path(), [0x2e; 32]);
        let peer_config = CollectorConfig { plain: true, unlimited: true, ..Default::default() };
        let peer_proc = CollectorProc::start_with(
            &vantage_tests::collector_proc::collector_bin(),
            peer_dir.path(),
            &peer_config.to_toml(),
        );
        let peer = NelTarget {
            addr: peer_proc.plain_addr().unwrap(),
            path: "/v1/nel".into(),
            pid: peer_proc.pid(),
        };
        let args = Args {
            listeners: Listeners::Both,
            duration: Duration::from_millis(500),
            connections: 4,
            rss_reports: 3_000,
            rss_step: 1_000,
            max_pool: Some(200),
            sync_cost: false,
            nel: true,
            nel_peer: Some(peer),
            random_ids: false,
            // The bounded-store path: the config it writes must start a collector.
            store_max_mib: Some(1),
        };
        let figures = run(args).unwrap();
        assert_eq!(figures.len(), 2);
        for f in figures {
            assert!(f.accepted > 0 && f.envelopes_per_sec > 0.0, "{f:?}");
            assert!(f.ratio.is_finite() && f.collector_cores >= 0.0, "{f:?}");
            assert!(f.p50 <= f.p99, "{f:?}");
            // The collector timed its opens; their CPU is part of its CPU (up to the 10 ms
            // ticks of /proc/PID/stat over a short phase).
            assert!(f.open_share.is_some_and(|s| s > 0.0 && s < 1.5), "{f:?}");
            // The floor answered the same envelopes, at some CPU cost of its own.
            assert!(f.floor_us > 0.0 && f.floor_us.is_finite(), "{f:?}");
            // The collector's threads were found by name, and both kinds worked.
            assert!(f.workers_us > 0.0 && f.writer_us > 0.0, "{f:?}");
        }
    }
}
