//! The hostile-traffic benchmark (issue 15's goals): runs each attack against an in-process
//! collector and prints what a legitimate client got, goodput under load, one /24's store
//! growth against its budget, and the CPU cost of generated worst-case inputs against a valid
//! envelope measured in the same run. Not a timed test; run it by hand:
//!
//! ```text
//! cargo run --release -p vantage-tests --bin vantage-hostile-bench -- [--connections N]
//!     [--uploads N] [--only connections|goodput|volume|cpu]
//! ```
//!
//! The collector runs on a tokio runtime of its own (2 threads), attackers and load clients on
//! another (2 threads), the legitimate client on a third (1 thread): all share the machine.
//!
//! 1. **Connections.** For each attack (slowloris, idle HTTP/1.1 keep-alive, idle HTTP/2 with
//!    PINGs), one /24 (127.1.2.0/24) runs `--connections` (default 2000) attacking tasks, each
//!    holding a connection and reconnecting when closed, against the default limits
//!    (`max_connections` 1024, 64 per prefix). After 3 s a legitimate client on 127.9.9.0/24
//!    posts `--uploads` (default 200) sealed envelopes, each on a new connection, 10 ms apart;
//!    the table shows its success rate, p50 and p99 (connect to full answer), and whether
//!    admin `/healthz` answered 5 of 5.
//! 2. **Goodput.** 16, 64, 256 and 1000 closed-loop clients (keep-alive connections from 64
//!    /24s) post pre-sealed one-report envelopes for 4 s each: accepted envelopes per second,
//!    503s and 429s per second, and the rate at 1000 connections against the peak.
//! 3. **Volume.** One /24 posts 200-report batches back to back from 16 connections for 20 s
//!    with the default limits: store growth (logical bytes) against
//!    `prefix_store_bytes_burst + prefix_store_bytes_per_sec * t`, and the growth rate once the
//!    burst is spent.
//! 4. **CPU per request.** A generator of worst-case shapes (outer CBOR: many-key maps, long
//!    arrays, nesting, tag chains, noise, forged ciphertexts; sealed batches signed by an
//!    attacker's own agent key: 1000 minimal reports, reports with unknown keys, unknown keys
//!    holding big arrays and maps; NEL JSON: nesting, many objects, tiny values, escapes), each
//!    family at three sizes up to the 64 KiB body limit, through `Opener::open` or
//!    `nel::parse_upload` in a loop for ~0.3 s; CPU time from `/proc/thread-self/schedstat`.
//!    The table shows each family's worst size; the valid one-report envelope is the baseline.
//!
//! Goals: legit >= 99 % with p99 <= 50 ms under every attack, healthz answering; goodput at
//! 1000 connections >= 90 % of the peak; a /24's store growth within its budget; no input up
//! to the body limit costing more than 1 ms of CPU.
#![forbid(unsafe_code)]
// Printing the figures on stdout is this tool's interface.
#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use vantage_agent::entropy::SeededEntropy;
use vantage_agent::wire::AgentIdentity;
use vantage_collector::config::Config;
use vantage_collector::open::{CollectorKey, Opener};
use vantage_collector::server::Collector;
use vantage_tests::collector_proc::{seal_envelope, unix_now};
use vantage_tests::hostile::{self, Attack};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{name} takes a number")))
        .unwrap_or(default)
}

fn main() {
    let connections = arg("--connections", 2000);
    let uploads = arg("--uploads", 200);
    // The collector runs on a runtime of its own, as it would on its own machine; attackers
    // and load clients on another; the legitimate client, whose latency is measured, on a
    // third (one thread). All share the machine's cores.
    let rt = |threads: usize| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
            .unwrap()
    };
    let rts = Rts { server: rt(2), clients: rt(2), legit: rt(1) };
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    if run("connections") {
        connection_attacks(&rts, connections, uploads);
    }
    if run("goodput") {
        goodput(&rts);
    }
    if run("volume") {
        volume(&rts);
    }
    if run("cpu") {
        cpu_per_request();
    }
}

/// The runtimes: the collector's, the attackers' and load clients', the legitimate client's.
struct Rts {
    server: tokio::runtime::Runtime,
    clients: tokio::runtime::Runtime,
    legit: tokio::runtime::Runtime,
}

fn connection_attacks(rts: &Rts, connections: usize, uploads: usize) {
    let dir = tempfile::tempdir().unwrap();
    let key = CollectorKey::from_seed([9; 32]);
    let running = rts.server.block_on(start_default(dir.path(), &key, ""));
    let (plain, admin) = (running.plain_addr().unwrap(), running.admin_addr().unwrap());
    let legit = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 9, 9, 9));

    println!(
        "connection attacks: one /24 with {connections} attacking connections; \
         legit: {uploads} uploads, each on a new connection"
    );
    println!(
        "| attack | attacker connects | legit ok | success | p50 ms | p99 ms | admin healthz |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (i, kind) in Attack::ALL.into_iter().enumerate() {
        let from = hostile::sources(127, 1, 2, connections);
        let attack = rts.clients.block_on(async { hostile::launch(kind, plain, &from) });
        std::thread::sleep(Duration::from_secs(3));
        let stats = rts.legit.block_on(hostile::legit_uploads(
            plain,
            legit,
            i as u8 + 1,
            &key.public_key(),
            uploads,
            Duration::from_millis(10),
            Duration::from_secs(10),
        ));
        let mut healthy = 0;
        for _ in 0..5 {
            let got = rts.legit.block_on(hostile::get(admin, "/healthz", Duration::from_secs(5)));
            if got == Ok(200) {
                healthy += 1;
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {} | {} | {}/{} | {:.1} % | {:.1} | {:.1} | {healthy}/5 |",
            kind.name(),
            attack.connects(),
            stats.accepted,
            stats.attempts(),
            100.0 * stats.accepted as f64 / stats.attempts().max(1) as f64,
            ms(stats.quantile(0.5)),
            ms(stats.quantile(0.99)),
        );
        let mut why = std::collections::BTreeMap::<String, usize>::new();
        for f in &stats.failures {
            *why.entry(f.chars().take(60).collect()).or_default() += 1;
        }
        if !why.is_empty() {
            println!("|   failures: {why:?} | | | | | | |");
        }
        rts.clients.block_on(attack.stop());
        // Let the collector close what the attack left before the next one.
        std::thread::sleep(Duration::from_secs(1));
    }
    rts.server.block_on(running.shutdown()).unwrap();
}

/// A collector with the default limits (and the plain and admin listeners) in `dir`.
async fn start_default(
    dir: &std::path::Path,
    key: &CollectorKey,
    extra: &str,
) -> vantage_collector::server::RunningCollector {
    let hex: String = key.secret_bytes().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.join("collector.key"), hex).unwrap();
    let text = format!(
        "[server]\nlisten_plain = \"127.0.0.1:0\"\nlisten_admin = \"127.0.0.1:0\"\n\
         [keys]\nprivate_key_files = [\"collector.key\"]\n[store]\npath = \"data\"\n{extra}"
    );
    let config = Config::from_toml_str(&text, dir).unwrap();
    Collector::start(config).await.unwrap()
}

/// CPU time of this process so far (`/proc/self/stat` utime + stime, clock ticks of 10 ms).
fn process_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &text[text.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

/// Goodput: `c` client connections (from 64 /24s, so no per-prefix limit is the bottleneck)
/// post pre-sealed one-report envelopes back to back for 4 s each; accepted envelopes per
/// second at each level, and at 1000 connections against the peak.
fn goodput(rts: &Rts) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let key = CollectorKey::from_seed([9; 32]);
    let running = rts.server.block_on(start_default(dir.path(), &key, ""));
    let plain = running.plain_addr().unwrap();
    let levels = [16usize, 64, 256, 1000];
    println!();
    println!(
        "goodput: closed-loop clients on new keep-alive connections from 64 /24s, one-report \
         envelopes (each from its own agent), 4 s per level, default limits"
    );
    // Pre-sealed, each from its own agent (the per-agent budget is not what is measured).
    let pool_size = 30_000;
    let public = key.public_key();
    let pool: Arc<Vec<bytes::Bytes>> = Arc::new(
        (0..pool_size as u64)
            .map(|i| {
                let mut seed = [0x60; 32];
                seed[..8].copy_from_slice(&i.to_le_bytes());
                let mut rng = SeededEntropy::insecure_from_seed(seed);
                let agent = AgentIdentity::generate(&mut rng);
                seal_envelope(&agent, &public, 1, 1, unix_now(), &mut rng).bytes
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    println!(
        "| connections | accepted/s | 503/s | 429/s | errors | CPU ms per accepted (whole process) |"
    );
    println!("|---|---|---|---|---|---|");
    let mut rates = Vec::new();
    for c in levels {
        let (ok, busy, limited, errors) = (
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
            Arc::new(AtomicU64::new(0)),
        );
        let deadline = Instant::now() + Duration::from_secs(4);
        let cpu0 = process_cpu();
        let tasks: Vec<_> = (0..c)
            .map(|i| {
                let (pool, next) = (pool.clone(), next.clone());
                let (ok, busy, limited, errors) =
                    (ok.clone(), busy.clone(), limited.clone(), errors.clone());
                let source = std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                    127,
                    30,
                    (i % 64) as u8,
                    1 + (i / 64) as u8,
                ));
                rts.clients.spawn(async move {
                    let mut client = None;
                    while Instant::now() < deadline {
                        if client.is_none() {
                            client = vantage_tests::collector_proc::HttpClient::connect_plain_from(
                                plain, source,
                            )
                            .await
                            .ok();
                            if client.is_none() {
                                errors.fetch_add(1, Ordering::Relaxed);
                                tokio::time::sleep(Duration::from_millis(50)).await;
                                continue;
                            }
                        }
                        let body = pool[next.fetch_add(1, Ordering::Relaxed) % pool.len()].clone();
                        let left = deadline.saturating_duration_since(Instant::now());
                        let Some(cl) = client.as_mut() else { continue };
                        match tokio::time::timeout(left, cl.post_envelope(body)).await {
                            Ok(Ok((s, _))) if s.as_u16() == 202 => {
                                ok.fetch_add(1, Ordering::Relaxed)
                            }
                            Ok(Ok((s, _))) if s.as_u16() == 503 => {
                                busy.fetch_add(1, Ordering::Relaxed)
                            }
                            Ok(Ok((s, _))) if s.as_u16() == 429 => {
                                limited.fetch_add(1, Ordering::Relaxed)
                            }
                            Ok(_) => {
                                client = None;
                                errors.fetch_add(1, Ordering::Relaxed)
                            }
                            Err(_) => 0,
                        };
                    }
                })
            })
            .collect();
        rts.clients.block_on(async {
            for t in tasks {
                let _ = t.await;
            }
        });
        let cpu = process_cpu() - cpu0;
        let n = ok.load(Ordering::Relaxed);
        let rate = n as f64 / 4.0;
        rates.push(rate);
        println!(
            "| {c} | {rate:.0} | {:.0} | {:.0} | {} | {:.2} |",
            busy.load(Ordering::Relaxed) as f64 / 4.0,
            limited.load(Ordering::Relaxed) as f64 / 4.0,
            errors.load(Ordering::Relaxed),
            cpu.as_secs_f64() * 1000.0 / n.max(1) as f64
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let peak = rates.iter().cloned().fold(0.0, f64::max);
    let at_1000 = *rates.last().unwrap();
    println!(
        "goodput at 1000 connections: {at_1000:.0}/s = {:.0} % of the peak {peak:.0}/s (goal >= 90 %)",
        100.0 * at_1000 / peak.max(1.0)
    );
    rts.server.block_on(running.shutdown()).unwrap();
}

/// Store growth of one /24 flooding 200-report batches with the default limits, against its
/// storage share (`limits.prefix_store_bytes_per_sec`, burst `prefix_store_bytes_burst`).
fn volume(rts: &Rts) {
    let dir = tempfile::tempdir().unwrap();
    let key = CollectorKey::from_seed([9; 32]);
    let running = rts.server.block_on(start_default(dir.path(), &key, ""));
    let plain = running.plain_addr().unwrap();
    let limits = Config::from_toml_str(
        "[server]\nlisten_plain = \"127.0.0.1:0\"\n[keys]\nprivate_key_files = [\"collector.key\"]\n[store]\npath = \"data\"\n",
        dir.path(),
    )
    .unwrap()
    .limits;
    let (rate, burst) =
        (limits.prefix_store_bytes_per_sec as f64, limits.prefix_store_bytes_burst as f64);
    let public = key.public_key();
    let envelopes = hostile::big_envelopes(&public, 0x77, 700, 200);
    let offered: u64 = envelopes.iter().map(|e| e.bytes.len() as u64).sum();
    let run_for = Duration::from_secs(20);
    let before = running.store().stats();
    let started = Instant::now();
    let sampler = {
        let store = running.store().clone();
        rts.clients.spawn(async move {
            // Logical bytes at 10 s and at the end (after the burst is spent).
            tokio::time::sleep(Duration::from_secs(10)).await;
            (store.stats().bytes, Instant::now())
        })
    };
    let from = hostile::sources(127, 1, 2, 16);
    let flood = rts.clients.block_on(hostile::volume_flood(plain, &from, envelopes, run_for));
    let elapsed = started.elapsed().as_secs_f64();
    let after = running.store().stats();
    let (mid_bytes, mid_at) = rts.clients.block_on(sampler).unwrap();
    let grown = after.bytes - before.bytes;
    let steady = (after.bytes - mid_bytes) as f64 / mid_at.elapsed().as_secs_f64().max(0.001);
    println!();
    println!(
        "volume: one /24, 16 connections posting 200-report batches back to back for {:.0} s \
         (700 distinct, {offered} bytes offered), default limits",
        run_for.as_secs_f64()
    );
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| batches accepted / refused 429 / other | {} / {} / {} |",
        flood.accepted,
        flood.refused,
        flood.failures.len()
    );
    println!("| reports stored | {} |", after.reports - before.reports);
    println!("| store growth (logical bytes) | {grown} in {elapsed:.1} s |");
    println!("| allowed: burst + rate x time | {:.0} |", burst + rate * elapsed);
    println!("| growth rate after the burst (last ~10 s) | {steady:.0} B/s |");
    println!("| prefix_store_bytes_per_sec | {rate:.0} B/s |");
    println!("| sled files on disk | {} -> {} bytes |", before.disk_bytes, after.disk_bytes);
    println!("| 429 bodies | {:?} |", flood.refusal_bodies);
    rts.server.block_on(running.shutdown()).unwrap();
}

/// CPU time of this thread so far (`/proc/thread-self/schedstat`, ns on CPU).
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    Duration::from_nanos(text.split_whitespace().next().unwrap().parse().unwrap())
}

/// Mean CPU time of `f` over about 0.3 s of calls.
fn cost(mut f: impl FnMut()) -> Duration {
    f();
    let (start, cpu) = (Instant::now(), thread_cpu());
    let mut n = 0u32;
    while start.elapsed() < Duration::from_millis(300) || n < 10 {
        f();
        n += 1;
    }
    (thread_cpu() - cpu) / n
}

/// A CBOR head: major type `major`, argument `n`, shortest form.
fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    match n {
        0..24 => out.push(m | n as u8),
        24..256 => out.extend([m | 24, n as u8]),
        256..65_536 => {
            out.push(m | 25);
            out.extend((n as u16).to_be_bytes());
        }
        _ => {
            out.push(m | 26);
            out.extend((n as u32).to_be_bytes());
        }
    }
}

/// A map of `n` unsigned keys in the given order (0: ascending, 1: descending, 2: scrambled).
fn many_keys(n: u64, order: u8) -> Vec<u8> {
    let key = |k: u64| match order {
        0 => k,
        1 => n - 1 - k,
        _ => k.wrapping_mul(40_503) % n,
    };
    let mut out = Vec::new();
    head(&mut out, 5, n);
    for k in 0..n {
        head(&mut out, 0, key(k));
        out.push(0xf6); // null
    }
    out
}

/// Seals `plaintext` (a signed batch's bytes, or anything) to `key`, as an attacker with the
/// collector's public key can.
fn seal_raw(key: &CollectorKey, plaintext: &[u8]) -> Vec<u8> {
    use vantage_agent::wire::{Envelope, HPKE_INFO, hpke};
    let ikm = [7u8; 32];
    let mut env = Envelope {
        version: 1,
        key_id: key.key_id(),
        enc: hpke::encapsulated_key(&ikm).unwrap(),
        ciphertext: Vec::new(),
    };
    let header = env.header_bytes();
    let (_, ct) =
        hpke::seal_base(key.public_key().as_bytes(), &ikm, HPKE_INFO, &header, plaintext).unwrap();
    env.ciphertext = ct;
    env.encode()
}

/// `batch` signed by `agent` for `key` and sealed: a valid envelope whatever the batch holds.
fn sign_and_seal(key: &CollectorKey, agent: &AgentIdentity, batch: Vec<u8>) -> Vec<u8> {
    use vantage_agent::wire::{SIGNATURE_TAG, SignedBatch};
    let mut message = SIGNATURE_TAG.to_vec();
    message.extend_from_slice(&key.key_id().0);
    message.extend_from_slice(&batch);
    let signature = agent.sign(&message);
    seal_raw(key, &SignedBatch { batch, signature }.encode())
}

/// A batch of `reports` (each an encoded report map) with `extra` appended entries (keys from
/// 99 up, already encoded as key/value bytes).
fn raw_batch(agent: &AgentIdentity, reports: &[Vec<u8>], extra: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    head(&mut out, 5, 5 + extra.len() as u64);
    head(&mut out, 0, 1);
    head(&mut out, 2, 32);
    out.extend_from_slice(agent.public_key().as_bytes());
    head(&mut out, 0, 2);
    head(&mut out, 0, 1);
    head(&mut out, 0, 3);
    head(&mut out, 0, unix_now().0);
    head(&mut out, 0, 4);
    head(&mut out, 5, 4);
    for (k, v) in [(1, "app"), (2, "1"), (3, "linux"), (4, "rust")] {
        head(&mut out, 0, k);
        head(&mut out, 3, v.len() as u64);
        out.extend_from_slice(v.as_bytes());
    }
    head(&mut out, 0, 5);
    head(&mut out, 4, reports.len() as u64);
    reports.iter().for_each(|r| out.extend_from_slice(r));
    extra.iter().for_each(|e| out.extend_from_slice(e));
    out
}

/// A minimal valid report, encoded, with `unknown` extra small entries (keys 100...).
fn raw_report(rng: &mut SeededEntropy, unknown: u64) -> Vec<u8> {
    use vantage_agent::report::Report;
    use vantage_agent::taxonomy::ErrorType;
    let r = Report::builder("a", "b.c", ErrorType::TcpRefused).build(rng, unix_now()).unwrap();
    let bytes = r.encode();
    let n = u64::from(bytes[0] & 0x1f);
    let mut out = Vec::new();
    head(&mut out, 5, n + unknown);
    out.extend_from_slice(&bytes[1..]);
    for k in 0..unknown {
        head(&mut out, 0, 100 + k);
        out.push(0);
    }
    out
}

/// Reports of `unknown` extra entries each, as many as fit in `budget` bytes of batch.
fn reports_filling(
    rng: &mut SeededEntropy,
    unknown: u64,
    budget: usize,
    max: usize,
) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut used = 0;
    loop {
        let r = raw_report(rng, unknown);
        if used + r.len() > budget || out.len() == max {
            return out;
        }
        used += r.len();
        out.push(r);
    }
}

/// One generated input: its family, bytes, and how to feed it.
struct Input {
    family: &'static str,
    shape: String,
    bytes: Vec<u8>,
    nel: bool,
}

/// The generator: families of worst-case shapes for each decoder, each at several sizes up to
/// the 64 KiB body limit. Envelope shapes go through `Opener::open` as a body; "sealed" shapes
/// are valid envelopes (an attacker's own agent key signs whatever batch it likes) so the
/// inner decoders see them after decryption; NEL shapes go through `nel::parse_upload`.
fn generate(key: &CollectorKey, agent: &AgentIdentity, rng: &mut SeededEntropy) -> Vec<Input> {
    const LIMIT: usize = 64 * 1024;
    let mut inputs = Vec::new();
    let mut add = |family: &'static str, shape: String, bytes: Vec<u8>, nel: bool| {
        if bytes.len() <= LIMIT {
            inputs.push(Input { family, shape, bytes, nel });
        }
    };
    for fill in [LIMIT / 4, LIMIT / 2, LIMIT - 1600] {
        // Outer envelope shapes.
        let n = (fill / 4) as u64;
        for (order, name) in [(0u8, "ascending"), (1, "descending"), (2, "scrambled")] {
            add("CBOR map of uint keys", format!("{n} keys {name}"), many_keys(n, order), false);
        }
        let mut arr = Vec::new();
        head(&mut arr, 4, (fill / 3) as u64);
        (0..fill as u64 / 3).for_each(|i| head(&mut arr, 0, i % 1000));
        add("CBOR array of ints", format!("{} ints", fill / 3), arr, false);
        let mut text_keys = Vec::new();
        head(&mut text_keys, 5, (fill / 8) as u64);
        for i in 0..fill / 8 {
            let k = format!("{i:06}");
            head(&mut text_keys, 3, 6);
            text_keys.extend_from_slice(k.as_bytes());
            text_keys.push(0xf6);
        }
        add("CBOR map of text keys", format!("{} keys", fill / 8), text_keys, false);
        add(
            "CBOR nested arrays",
            format!("{fill} levels"),
            std::iter::repeat_n(0x81u8, fill - 1).chain([0]).collect(),
            false,
        );
        add(
            "CBOR tag chain",
            format!("{fill} tags"),
            std::iter::repeat_n(0xc6u8, fill - 1).chain([0]).collect(),
            false,
        );
        add(
            "noise",
            format!("{fill} bytes"),
            (0..fill as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect(),
            false,
        );
        let mut forged = vantage_agent::wire::Envelope::decode(&seal_raw(key, b"x")).unwrap();
        forged.ciphertext = vec![0x55; fill - 100];
        add("forged ciphertext (bad tag)", format!("{} bytes", fill - 100), forged.encode(), false);

        // Sealed shapes: valid signature, worst-case batches inside.
        let budget = fill - 400;
        let minimal = reports_filling(rng, 0, budget, 1000);
        add(
            "sealed: minimal reports",
            format!("{} reports", minimal.len()),
            sign_and_seal(key, agent, raw_batch(agent, &minimal, &[])),
            false,
        );
        let wide = reports_filling(rng, 40, budget, 1000);
        add(
            "sealed: reports with unknown keys",
            format!("{} reports x 40 unknown keys", wide.len()),
            sign_and_seal(key, agent, raw_batch(agent, &wide, &[])),
            false,
        );
        let mut big_array = Vec::new();
        head(&mut big_array, 0, 99);
        let items = (budget as u64).min(60_000);
        head(&mut big_array, 4, items);
        big_array.extend(std::iter::repeat_n(0u8, items as usize));
        add(
            "sealed: unknown key holding an int array",
            format!("{items} ints"),
            sign_and_seal(key, agent, raw_batch(agent, &[], &[big_array])),
            false,
        );
        let mut big_map = Vec::new();
        head(&mut big_map, 0, 99);
        big_map.extend(many_keys(budget as u64 / 4, 2));
        add(
            "sealed: unknown key holding a scrambled map",
            format!("{} keys", budget / 4),
            sign_and_seal(key, agent, raw_batch(agent, &[], &[big_map])),
            false,
        );
        let mut bad_last = minimal.clone();
        if let Some(last) = bad_last.last_mut() {
            // The last report's count (its final entry, `12: 1`) becomes 0: decoded to the end,
            // then refused.
            let n = last.len();
            last[n - 1] = 0;
        }
        add(
            "sealed: minimal reports, last one invalid",
            format!("{} reports", bad_last.len()),
            sign_and_seal(key, agent, raw_batch(agent, &bad_last, &[])),
            false,
        );

        // NEL shapes.
        add(
            "NEL nested arrays",
            format!("{} levels", fill / 2),
            format!("{}{}", "[".repeat(fill / 2), "]".repeat(fill / 2)).into_bytes(),
            true,
        );
        let objects = fill / 44;
        let wide_nel = format!(
            "[{}]",
            (0..objects)
                .map(|i| format!("{{\"k{i}\":{{\"a\":1,\"b\":[1,2,3],\"c\":\"xxxx\"}}}}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        add("NEL many objects", format!("{objects} objects"), wide_nel.into_bytes(), true);
        let tokens = format!("[[{}]]", vec!["0"; (fill / 2).min(8_000)].join(","));
        add(
            "NEL tiny values",
            format!("{} values", (fill / 2).min(8_000)),
            tokens.into_bytes(),
            true,
        );
        let entry = |i: usize, pad: usize| {
            format!(
                r#"{{"age":1,"type":"network-error","url":"https://h{i}.example/{}","body":{{"sampling_fraction":1.0,"phase":"connection","type":"tcp.refused","elapsed_time":5}}}}"#,
                "\\u0041".repeat(pad)
            )
        };
        let pad = (fill / 100).saturating_sub(150) / 6;
        let escaped =
            format!("[{}]", (0..100).map(|i| entry(i, pad)).collect::<Vec<_>>().join(","));
        add(
            "NEL 100 entries, escaped URLs",
            format!("{pad} escapes each"),
            escaped.into_bytes(),
            true,
        );
    }
    inputs
}

fn cpu_per_request() {
    let key = CollectorKey::from_seed([9; 32]);
    let opener = Opener::new(vec![key.clone()]);
    let mut rng = SeededEntropy::insecure_from_seed([3; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    let valid = seal_envelope(&agent, &key.public_key(), 1, 1, unix_now(), &mut rng).bytes;
    let full = seal_envelope(&agent, &key.public_key(), 2, 200, unix_now(), &mut rng).bytes;
    let valid_nel = br#"[{"age":1200,"type":"network-error","url":"https://shop.example/cart","user_agent":"Mozilla/5.0","body":{"sampling_fraction":1.0,"server_ip":"192.0.2.1","protocol":"http/1.1","method":"GET","status_code":500,"elapsed_time":38,"phase":"application","type":"http.error","referrer":"https://shop.example/"}}]"#;
    let run = |bytes: &[u8], nel: bool| {
        if nel {
            let _ = std::hint::black_box(vantage_collector::nel::parse_upload(bytes));
        } else {
            let _ = std::hint::black_box(opener.open(bytes));
        }
    };
    let baseline = cost(|| run(&valid, false));
    println!();
    println!("CPU per request (this thread; each input run for ~0.3 s):");
    println!("| input | shape | bytes | us CPU | x valid envelope | outcome |");
    println!("|---|---|---|---|---|---|");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let ratio = |d: Duration| d.as_secs_f64() / baseline.as_secs_f64().max(1e-9);
    println!(
        "| valid envelope (baseline) | 1 report | {} | {:.1} | 1.00 | opened |",
        valid.len(),
        us(baseline)
    );
    let c = cost(|| run(&full, false));
    println!(
        "| valid envelope | 200 reports | {} | {:.1} | {:.2} | opened |",
        full.len(),
        us(c),
        ratio(c)
    );
    let c = cost(|| run(valid_nel, true));
    println!(
        "| valid NEL upload | 1 entry | {} | {:.1} | {:.2} | parsed |",
        valid_nel.len(),
        us(c),
        ratio(c)
    );
    let inputs = generate(&key, &agent, &mut rng);
    // The worst size of each family, and the worst overall.
    let mut per_family: Vec<(&str, String, usize, Duration, String)> = Vec::new();
    for input in &inputs {
        let c = cost(|| run(&input.bytes, input.nel));
        let outcome = if input.nel {
            match vantage_collector::nel::parse_upload(&input.bytes) {
                Ok(_) => "parsed".to_owned(),
                Err(e) => e.to_string().chars().take(60).collect(),
            }
        } else {
            match opener.open(&input.bytes) {
                Ok(_) => "opened".to_owned(),
                Err(e) => e.to_string().chars().take(60).collect(),
            }
        };
        match per_family.iter_mut().find(|f| f.0 == input.family) {
            Some(f) if f.3 >= c => {}
            Some(f) => *f = (input.family, input.shape.clone(), input.bytes.len(), c, outcome),
            None => {
                per_family.push((input.family, input.shape.clone(), input.bytes.len(), c, outcome))
            }
        }
    }
    for (family, shape, len, c, outcome) in &per_family {
        println!("| {family} | {shape} | {len} | {:.1} | {:.2} | {outcome} |", us(*c), ratio(*c));
    }
    let worst = per_family.iter().max_by_key(|f| f.3).unwrap();
    println!(
        "worst of {} generated inputs: {} ({}, {} bytes) at {:.1} us CPU, {:.2} x the valid \
         envelope's {:.1} us (goal <= 1000 us)",
        inputs.len(),
        worst.0,
        worst.1,
        worst.2,
        us(worst.3),
        ratio(worst.3),
        us(baseline)
    );
}
