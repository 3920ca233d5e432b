//! Benchmarks of the native agent, printed as figures (not timed tests):
//!
//! ```text
//! cargo build --release -p vantage-tests --bin vantage-agent-proc --bin vantage-agent-bench
//! $CARGO_TARGET_DIR/release/vantage-agent-bench [--calls N] [--idle-secs S] [--backlog N]
//!                                               [--outage-secs S] [--burst N]
//!                                               [--only record|idle|backlog]
//! ```
//!
//! 1. `record()` latency on the caller thread (in this process, against a real collector on
//!    loopback): median and p99 over `--calls` calls (default 100 000), in bursts of 1000 with
//!    10 ms pauses (so that a queue of the old default, 1024, was not simply full), next to two baselines measured
//!    by the same harness in the same run: an empty call (the harness's own cost) and a
//!    `std::sync::mpsc::SyncSender::try_send` of a 64-byte message to a draining thread.
//!    Then `count_success()` timed the same way (the agent counts every success), a burst
//!    of `--burst` records (default 20 000) back to back from one thread and from two at once
//!    (how many the queue dropped), and one record after the agent went idle: the
//!    time until the collector accepted its envelope (the seal delay, 500 ms, plus the upload).
//! 2. Idle cost of an agent process (`vantage-agent-proc`, the sibling binary): after some
//!    reports were delivered and the queue is empty, per-thread context switches and CPU ticks
//!    from `/proc/PID/task/*` over `--idle-secs` (default 60), then `strace -c -f` over another
//!    `--idle-secs` when strace is installed. VmRSS right after consent and after the window.
//! 3. Backlog: `--backlog` reports (default 10 000, distinct so none coalesce) recorded by the
//!    agent process while the collector port refuses connections, an outage of
//!    `--outage-secs` (default 5), then the collector starts: time to first and last accepted
//!    envelope, envelope count, and VmRSS after delivery. The agent runs its default delivery
//!    config (1 s backoff base, 5 min cap, 2 in flight, 10 per second).
#![forbid(unsafe_code)]
// The figures on stdout are this tool's output.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use vantage_agent::native::{Agent, CollectorConfig, OsEntropy, Recorded, ReportInput};
use vantage_agent::report::{AppInfo, UnixMillis};
use vantage_agent::sampling::Sampling;
use vantage_collector::config::Config;
use vantage_collector::open::CollectorKey;
use vantage_collector::server::{Collector, RunningCollector};
use vantage_tests::tls::TestCa;

const BURST: usize = 1_000;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vantage-agent-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Opts {
    calls: usize,
    idle_secs: u64,
    backlog: u64,
    outage_secs: u64,
    burst: usize,
    only: Option<String>,
}

impl Opts {
    fn parse() -> Result<Opts, String> {
        let mut o = Opts {
            calls: 100_000,
            idle_secs: 60,
            backlog: 10_000,
            outage_secs: 5,
            burst: 20_000,
            only: None,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let num = || value.parse::<u64>().map_err(|e| format!("{flag} {value}: {e}"));
            match flag.as_str() {
                "--calls" => o.calls = usize::try_from(num()?).map_err(|e| e.to_string())?,
                "--idle-secs" => o.idle_secs = num()?,
                "--backlog" => o.backlog = num()?,
                "--outage-secs" => o.outage_secs = num()?,
                "--burst" => o.burst = usize::try_from(num()?).map_err(|e| e.to_string())?,
                "--only" => o.only = Some(value.clone()),
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(o)
    }

    fn wants(&self, section: &str) -> bool {
        self.only.as_deref().is_none_or(|s| s == section)
    }
}

/// A real collector on loopback (TLS, in this process), startable on a fixed port.
struct Lab {
    rt: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
    ca: TestCa,
    key: CollectorKey,
}

impl Lab {
    fn new() -> Result<Lab, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let ca = TestCa::new("vantage agent bench CA");
        ca.leaf(&["127.0.0.1"]).write_to(dir.path());
        std::fs::write(dir.path().join("ca.pem"), ca.cert_pem()).map_err(|e| e.to_string())?;
        let key = CollectorKey::from_seed([5; 32]);
        std::fs::write(dir.path().join("collector.key"), hex::encode(key.secret_bytes()))
            .map_err(|e| e.to_string())?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Lab { rt, dir, ca, key })
    }

    /// Starts a collector on `addr` (port 0: any) with its own store `store`. Its idle timeout
    /// is longer than any measurement window; that alone would not keep a connection open
    /// through one (hyper's `header_read_timeout`, 5 s, also runs between requests), but an
    /// idle agent closes its connections itself, so the collector has none to close (closing
    /// one would wake the agent).
    fn start(&self, addr: SocketAddr, store: &str) -> Result<RunningCollector, String> {
        let text = format!(
            r#"
            [server]
            listen_tls = "{addr}"
            tls_cert = "cert.pem"
            tls_key = "key.pem"
            idle_timeout_ms = 3600000
            shutdown_grace_ms = 300
            [keys]
            private_key_files = ["collector.key"]
            [store]
            path = "{store}"
            [log]
            level = "error"
            "#
        );
        let config = Config::from_toml_str(&text, self.dir.path()).map_err(|e| e.to_string())?;
        self.rt.block_on(Collector::start(config)).map_err(|e| e.to_string())
    }

    fn stop(&self, running: RunningCollector) {
        let _ = self.rt.block_on(running.shutdown());
    }

    fn agent_toml(&self, name: &str, collector: SocketAddr) -> Result<PathBuf, String> {
        let text = format!(
            r#"
            data_dir = "{data}"
            collector_key = "{key}"
            extra_ca_files = ["{ca}"]
            [app]
            id = "com.example.bench"
            version = "1.0"
            platform = "linux"
            [[services]]
            id = "checkout"
            hosts = ["api.example.com"]
            [[collectors]]
            url = "https://{collector}"
            "#,
            data = self.dir.path().join(format!("{name}-data")).display(),
            key = self.key.public_key(),
            ca = self.dir.path().join("ca.pem").display(),
        );
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
        Ok(path)
    }
}

fn free_port() -> Result<SocketAddr, String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.local_addr().map_err(|e| e.to_string())
}

fn run() -> Result<(), String> {
    let opts = Opts::parse()?;
    let lab = Lab::new()?;
    println!("# vantage-agent-bench ({} cores online)", cores());
    if opts.wants("record") {
        bench_record(&lab, opts.calls, opts.burst)?;
    }
    if opts.wants("idle") {
        bench_idle(&lab, opts.idle_secs)?;
    }
    if opts.wants("backlog") {
        bench_backlog(&lab, opts.backlog, opts.outage_secs)?;
    }
    Ok(())
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

// ---- 1. record() latency ----

/// Times `f(i)` for `n` calls, in bursts of [`BURST`] separated by 10 ms; returns nanoseconds.
fn measure(n: usize, mut f: impl FnMut(usize)) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        for _ in 0..BURST.min(n - i) {
            let t = Instant::now();
            f(i);
            out.push(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
            i += 1;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    out
}

struct Summary {
    median: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

fn summarise(mut ns: Vec<u64>) -> Summary {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 - 1.0) * q).round() as usize];
    Summary { median: at(0.5), p99: at(0.99), p999: at(0.999), max: at(1.0) }
}

fn show(name: &str, s: &Summary, base: Option<&Summary>) {
    let ratio = base.map_or(String::new(), |b| {
        format!(
            "  ({:.1}x / {:.1}x the baseline)",
            s.median as f64 / b.median.max(1) as f64,
            s.p99 as f64 / b.p99.max(1) as f64
        )
    });
    println!(
        "{name:<44} median {:>6} ns  p99 {:>6} ns  p99.9 {:>7} ns  max {:>9} ns{ratio}",
        s.median, s.p99, s.p999, s.max
    );
}

fn bench_record(lab: &Lab, calls: usize, burst: usize) -> Result<(), String> {
    println!("\n## record() latency on the caller thread ({calls} calls, bursts of {BURST})");
    let collector = lab.start(free_port()?, "store-record")?;
    let addr = collector.tls_addr().ok_or("the collector has no TLS address")?;
    let data = lab.dir.path().join("record-data");
    let app =
        AppInfo::new("com.example.bench", "1.0", "linux", "bench").map_err(|e| e.to_string())?;
    let agent = Agent::builder(app, lab.key.public_key(), &data)
        .service("checkout", &["api.example.com"])
        .map_err(|e| e.to_string())?
        .collector(CollectorConfig::new(&format!("https://{addr}")).map_err(|e| e.to_string())?)
        .extra_root(lab.ca.cert_der())
        // Every success counted (the default in apps that want failure ratios).
        .sampling(Sampling::new(1.0, 1.0).map_err(|e| e.to_string())?)
        .build()
        .map_err(|e| e.to_string())?;
    agent.set_consent(true).map_err(|e| e.to_string())?;

    // Baseline 1: the harness around an empty call.
    let empty = summarise(measure(calls, |i| {
        black_box(i);
    }));
    // Baseline 2: a bounded std channel's try_send of 64 bytes to a draining thread.
    let (tx, rx) = std::sync::mpsc::sync_channel::<[u8; 64]>(1024);
    let drain = std::thread::spawn(move || rx.iter().count());
    let mpsc = summarise(measure(calls, |i| {
        let _ = tx.try_send(black_box([i as u8; 64]));
    }));
    drop(tx);
    let _ = drain.join();

    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    let mut outcomes: BTreeMap<String, u64> = BTreeMap::new();
    // The input built outside the timed call: record() alone.
    let mut inputs: Vec<Option<ReportInput>> = (0..calls)
        .map(|i| Some(ReportInput::new("checkout", &format!("h{}.example.com", i % 64), &refused)))
        .collect();
    let mut results = Vec::with_capacity(calls);
    let prebuilt = summarise(measure(calls, |i| {
        if let Some(input) = inputs[i].take() {
            results.push(agent.record(input));
        }
    }));
    for r in results.drain(..) {
        *outcomes.entry(format!("{r:?}")).or_default() += 1;
    }
    // What an app writes at the call site: build the input and record it.
    let with_input = summarise(measure(calls, |i| {
        let host = if i % 2 == 0 { "api.example.com" } else { "cdn.example.com" };
        results.push(agent.record(ReportInput::new("checkout", host, &refused).elapsed_ms(120)));
    }));
    for r in results.drain(..) {
        *outcomes.entry(format!("{r:?}")).or_default() += 1;
    }
    // Parts of the call, for the breakdown: what a report id's randomness would cost with
    // one getrandom(2) per id (record() reads the OS RNG in 4 KiB blocks per thread instead),
    // and building the report (validation, id, timestamps) without sending it, with a
    // seeded generator so no system call is in it.
    let entropy = summarise(measure(calls, |_| {
        let mut id = [0u8; 10];
        vantage_agent::entropy::Entropy::fill(&mut OsEntropy, &mut id);
        black_box(id);
    }));
    let mut seeded = vantage_agent::entropy::SeededEntropy::insecure_from_seed([9; 32]);
    let build = summarise(measure(calls, |i| {
        let input = ReportInput::new("checkout", "api.example.com", &refused).elapsed_ms(i as u32);
        black_box(input.build(&mut seeded, UnixMillis(1_700_000_000_000)).is_ok());
    }));
    show("baseline: empty call through the harness", &empty, None);
    show("baseline: std sync_channel try_send (64 B)", &mpsc, None);
    show("record(prebuilt input)", &prebuilt, Some(&mpsc));
    // For .ci/bench.sh: `bench-row: KEY VALUE UNIT`.
    println!("bench-row: record_median_us {:.3} us", with_input.median as f64 / 1e3);
    println!("bench-row: record_p99_us {:.3} us", with_input.p99 as f64 / 1e3);
    show("record(ReportInput::new(..)) (call site)", &with_input, Some(&mpsc));
    show("part: getrandom(2) of 10 B (an id unpooled)", &entropy, None);
    show("part: ReportInput::new(..).build(..) only", &build, None);
    // A success count on the caller thread (parsing the id and host, then the queue).
    let success = summarise(measure(calls, |i| {
        agent.count_success(
            "checkout",
            if i % 2 == 0 { "api.example.com" } else { "cdn.example.com" },
        );
    }));
    show("count_success(service, host)", &success, Some(&mpsc));
    println!("bench-row: count_success_median_us {:.3} us", success.median as f64 / 1e3);
    println!("bench-row: count_success_p99_us {:.3} us", success.p99 as f64 / 1e3);
    println!(
        "  ratios to the empty call: record {:.1}x median, call site {:.1}x median",
        prebuilt.median as f64 / empty.median.max(1) as f64,
        with_input.median as f64 / empty.median.max(1) as f64
    );
    println!("  outcomes: {outcomes:?}");
    // Back to back, no pauses: what the queue drops when callers outrun the task.
    for threads in [1usize, 2] {
        let per = burst / threads;
        let started = Instant::now();
        let kept: Vec<(usize, usize)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let agent = &agent;
                    let refused = &refused;
                    s.spawn(move || {
                        let mut kept = 0;
                        let mut dropped = 0;
                        for i in 0..per {
                            let host = format!("b{}.example.com", (t * per + i) % 64);
                            match agent.record(ReportInput::new("checkout", &host, refused)) {
                                Recorded::Kept => kept += 1,
                                _ => dropped += 1,
                            }
                        }
                        (kept, dropped)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or((0, per))).collect()
        });
        let took = started.elapsed();
        let (k, d) = kept.iter().fold((0, 0), |(a, b), (k, d)| (a + k, b + d));
        println!(
            "burst: {} records back to back from {threads} thread(s) in {:.1} ms: {k} kept, {d} \
             dropped (queue full)",
            per * threads,
            took.as_secs_f64() * 1e3
        );
        println!("bench-row: burst_{threads}t_dropped {d} records");
    }
    let flushed =
        lab.rt.block_on(agent.flush(Duration::from_secs(30))).map_err(|e| format!("flush: {e}"))?;
    let stats = agent.stats();
    println!(
        "  agent: recorded {} failures, sealed {} envelopes, delivered {}, undelivered {}, \
         dropped {:?}",
        stats.recorded,
        stats.sealed_envelopes,
        stats.delivered_envelopes,
        flushed.undelivered,
        stats.dropped.iter().collect::<Vec<_>>()
    );
    // One record on an idle agent (queue empty, nothing pending): until its envelope is
    // accepted. The seal delay is 500 ms; a queue that waited for more would show here.
    std::thread::sleep(Duration::from_millis(200));
    let mut single = Vec::new();
    for _ in 0..3 {
        let before = collector.metrics().accepted_count();
        let started = Instant::now();
        agent.record(ReportInput::new("checkout", "api.example.com", &refused));
        let deadline = started + Duration::from_secs(30);
        while collector.metrics().accepted_count() == before {
            if Instant::now() > deadline {
                return Err("a single record was not delivered within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        single.push(started.elapsed().as_millis());
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "single record on an idle agent -> envelope accepted after {single:?} ms (seal delay 500 ms)"
    );
    lab.rt.block_on(agent.shutdown()).map_err(|e| e.to_string())?;
    lab.stop(collector);
    Ok(())
}

// ---- the agent process ----

/// `vantage-agent-proc`, next to this binary.
fn proc_bin() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin = exe.with_file_name("vantage-agent-proc");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: cargo build --release -p vantage-tests --bin vantage-agent-proc",
            bin.display()
        ))
    }
}

struct AgentProc {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl AgentProc {
    fn start(config: &Path) -> Result<AgentProc, String> {
        let mut child = Command::new(proc_bin()?)
            .arg(config)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn vantage-agent-proc: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout pipe")?);
        let mut p = AgentProc { child, stdin, stdout };
        let ready = p.read()?;
        if !ready.starts_with("ready ") {
            return Err(format!("agent process: {ready:?}"));
        }
        Ok(p)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn read(&mut self) -> Result<String, String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        if line.is_empty() {
            return Err("the agent process ended".into());
        }
        Ok(line.trim().to_owned())
    }

    fn command(&mut self, line: &str) -> Result<String, String> {
        writeln!(self.stdin, "{line}").map_err(|e| e.to_string())?;
        self.read()
    }

    fn stats(&mut self) -> Result<serde_json::Value, String> {
        let line = self.command("stats")?;
        let json = line.strip_prefix("stats ").ok_or_else(|| format!("stats: {line:?}"))?;
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    fn stop(mut self) -> Result<(), String> {
        let bye = self.command("shutdown")?;
        let _ = self.child.wait();
        if bye == "bye" { Ok(()) } else { Err(format!("shutdown: {bye:?}")) }
    }
}

/// A field of `/proc/PID/status` (`VmRSS`, `VmHWM`), as written there (`12345 kB`).
fn proc_status(pid: u32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(&format!("{field}:")).map(|v| v.trim().to_owned()))
        })
        .unwrap_or_else(|| "?".into())
}

/// Per thread: name, voluntary and involuntary context switches, utime + stime ticks.
/// [`thread_counters`] once two readings 500 ms apart agree (at most 10 s of polling).
fn settled_counters(pid: u32) -> BTreeMap<u32, (String, u64, u64, u64)> {
    let mut last = thread_counters(pid);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let now = thread_counters(pid);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

fn thread_counters(pid: u32) -> BTreeMap<u32, (String, u64, u64, u64)> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let dir = task.path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_owned();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let field = |f: &str| -> u64 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(f))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        };
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the ")" that ends the command name: utime is the 12th, stime the 13th.
        let ticks = stat
            .rsplit_once(')')
            .map(|(_, rest)| {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                n(11) + n(12)
            })
            .unwrap_or(0);
        out.insert(
            tid,
            (name, field("voluntary_ctxt_switches:"), field("nonvoluntary_ctxt_switches:"), ticks),
        );
    }
    out
}

// ---- 2. idle cost ----

fn bench_idle(lab: &Lab, secs: u64) -> Result<(), String> {
    println!("\n## idle agent process ({secs} s windows)");
    let collector = lab.start(free_port()?, "store-idle")?;
    let addr = collector.tls_addr().ok_or("the collector has no TLS address")?;
    let config = lab.agent_toml("idle", addr)?;
    let mut agent = AgentProc::start(&config)?;
    let pid = agent.pid();
    // Settle after start-up (runtime, buffer open) before reading the memory of an idle agent.
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "VmRSS after consent, idle, nothing recorded: {} (VmHWM {})",
        proc_status(pid, "VmRSS"),
        proc_status(pid, "VmHWM")
    );
    let acked = agent.command("burst 0 10")?;
    let flushed = agent.command("flush 20000")?;
    if flushed != "flushed 0" {
        return Err(format!("{acked}; could not deliver before the idle window: {flushed}"));
    }
    // Let the scope check and the upload's connection settle.
    std::thread::sleep(Duration::from_secs(2));
    println!(
        "after 10 reports delivered, queue empty: VmRSS {}, stats {}",
        proc_status(pid, "VmRSS"),
        agent.stats()?
    );

    // The stats command just answered wakes both threads; start the window once they are
    // back asleep (counters unchanged over 500 ms), or the window counts the answer's wakeups.
    let before = settled_counters(pid);
    std::thread::sleep(Duration::from_secs(secs));
    let after = thread_counters(pid);
    println!("per-thread activity over {secs} s with an empty queue (/proc/{pid}/task/*):");
    let mut total = 0;
    for (tid, (name, vol, invol, ticks)) in &after {
        let (b_vol, b_invol, b_ticks) =
            before.get(tid).map_or((0, 0, 0), |(_, v, i, t)| (*v, *i, *t));
        let switches = (vol - b_vol) + (invol - b_invol);
        total += switches;
        println!(
            "  tid {tid:<8} {name:<16} context switches {switches:>6} ({:>5} voluntary)  cpu ticks {}",
            vol - b_vol,
            ticks - b_ticks
        );
    }
    println!("  total context switches: {total} ({:.2}/s)", total as f64 / secs as f64);
    println!(
        "bench-row: idle_agent_context_switches_per_min {:.3} /min",
        total as f64 * 60.0 / secs as f64
    );

    match strace_window(pid, secs) {
        Ok(summary) => {
            println!("strace -c -f -p {pid} over {secs} s:");
            for line in summary.lines() {
                println!("  {line}");
            }
        }
        Err(e) => println!("strace window skipped: {e}"),
    }
    println!(
        "VmRSS after the idle windows: {} (VmHWM {})",
        proc_status(pid, "VmRSS"),
        proc_status(pid, "VmHWM")
    );
    agent.stop()?;
    lab.stop(collector);
    Ok(())
}

/// Runs `strace -c -f -p PID` for `secs` seconds and returns its summary.
fn strace_window(pid: u32, secs: u64) -> Result<String, String> {
    let out = tempfile::NamedTempFile::new().map_err(|e| e.to_string())?;
    let status = Command::new("timeout")
        .args(["--signal=INT", &secs.to_string(), "strace", "-c", "-f", "-p", &pid.to_string()])
        .arg("-o")
        .arg(out.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("timeout/strace: {e} (apt-get install strace)"))?;
    let text = std::fs::read_to_string(out.path()).map_err(|e| e.to_string())?;
    if text.trim().is_empty() {
        // timeout's 124: strace ran the whole window and was stopped by SIGINT; an empty
        // summary then means the process made no system call at all.
        if status.code() == Some(124) {
            return Ok("no system call in the window".to_owned());
        }
        return Err(format!("strace wrote nothing ({status}); is strace installed?"));
    }
    Ok(text)
}

// ---- 3. backlog ----

fn bench_backlog(lab: &Lab, reports: u64, outage_secs: u64) -> Result<(), String> {
    println!("\n## backlog: {reports} reports buffered during an outage, then delivered");
    let addr = free_port()?;
    let config = lab.agent_toml("backlog", addr)?;
    let mut agent = AgentProc::start(&config)?;
    let pid = agent.pid();
    let recording = Instant::now();
    let mut kept = 0u64;
    let mut from = 0;
    while from < reports {
        let count = (reports - from).min(BURST as u64);
        let acked = agent.command(&format!("burst {from} {count}"))?;
        kept += acked.rsplit(' ').next().and_then(|k| k.parse::<u64>().ok()).unwrap_or(0);
        // Seal what was recorded (the flush waits for the seal, not for delivery).
        agent.command("flush 0")?;
        from += count;
    }
    let stats = agent.stats()?;
    println!(
        "recorded {reports} ({kept} kept) in {:?} while {addr} refused connections: {} envelopes \
         sealed, {} buffered, VmRSS {}",
        recording.elapsed(),
        stats["sealed_envelopes"],
        stats["buffered_envelopes"],
        proc_status(pid, "VmRSS")
    );
    // The deliberate length of the outage (the agent keeps retrying with backoff meanwhile).
    std::thread::sleep(Duration::from_secs(outage_secs));
    let started = Instant::now();
    let collector = lab.start(addr, "store-backlog")?;
    let sealed = stats["sealed_envelopes"].as_u64().unwrap_or(0);
    let mut first = None;
    let deadline = started + Duration::from_secs(900);
    loop {
        let accepted = collector.metrics().accepted_count();
        if accepted > 0 && first.is_none() {
            first = Some(started.elapsed());
        }
        if accepted >= sealed {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("only {accepted} of {sealed} envelopes after 900 s"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let all = started.elapsed();
    let first = first.unwrap_or(all);
    let stored = collector.store().scan_reports(UnixMillis(0), UnixMillis(u64::MAX)).count();
    println!(
        "collector up -> first envelope accepted {:.2} s, all {} accepted {:.2} s (drain {:.2} s); \
         {} reports stored, {} duplicates",
        first.as_secs_f64(),
        collector.metrics().accepted_count(),
        all.as_secs_f64(),
        (all - first).as_secs_f64(),
        stored,
        collector.metrics().duplicate_count()
    );
    // Let the agent take the last answers in before reading its stats and memory.
    std::thread::sleep(Duration::from_secs(1));
    let stats = agent.stats()?;
    println!(
        "after the backlog: VmRSS {} (VmHWM {}); agent stats {stats}",
        proc_status(pid, "VmRSS"),
        proc_status(pid, "VmHWM")
    );
    agent.stop()?;
    lab.stop(collector);
    Ok(())
}
