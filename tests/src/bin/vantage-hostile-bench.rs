//! The hostile-traffic benchmark (issue 15's goals): runs each attack against an in-process
//! collector and prints what a legitimate client got, then the CPU cost of worst-case inputs
//! against a valid envelope measured in the same run. Not a timed test; run it by hand:
//!
//! ```text
//! cargo run --release -p vantage-tests --bin vantage-hostile-bench -- [--connections N]
//!     [--uploads N]
//! ```
//!
//! 1. **Connections.** For each attack (slowloris, idle HTTP/1.1 keep-alive, idle HTTP/2 with
//!    PINGs), one /24 (127.1.2.0/24) runs `--connections` (default 2000) attacking tasks, each
//!    holding a connection and reconnecting when closed, against the default limits
//!    (`max_connections` 1024, 64 per prefix). After 3 s a legitimate client on 127.9.9.0/24
//!    posts `--uploads` (default 200) sealed envelopes, each on a new connection, 10 ms apart;
//!    the table shows its success rate, p50 and p99 (connect to full answer), and whether
//!    admin `/healthz` answered 5 of 5.
//! 2. **CPU per request.** `Opener::open` (or `nel::parse_upload`) on each input shape, in a
//!    loop for about a second on this thread; CPU time from `/proc/thread-self/schedstat`
//!    (nanoseconds). The valid envelope is the baseline (ratio 1.0).
//!
//! Goals: legit >= 99 % with p99 <= 50 ms under every attack, healthz answering; no input up
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
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let rt = rt.unwrap();
    let only = std::env::args().skip_while(|a| a != "--only").nth(1);
    let run = |part: &str| only.as_deref().is_none_or(|o| o == part);
    if run("connections") {
        rt.block_on(connection_attacks(connections, uploads));
    }
    if run("cpu") {
        cpu_per_request();
    }
}

async fn connection_attacks(connections: usize, uploads: usize) {
    let dir = tempfile::tempdir().unwrap();
    let key = CollectorKey::from_seed([9; 32]);
    let hex: String = key.secret_bytes().iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(dir.path().join("collector.key"), hex).unwrap();
    let text = "[server]\nlisten_plain = \"127.0.0.1:0\"\nlisten_admin = \"127.0.0.1:0\"\n\
                [keys]\nprivate_key_files = [\"collector.key\"]\n[store]\npath = \"data\"\n";
    let config = Config::from_toml_str(text, dir.path()).unwrap();
    let running = Collector::start(config).await.unwrap();
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
        let attack = hostile::launch(kind, plain, &hostile::sources(127, 1, 2, connections));
        tokio::time::sleep(Duration::from_secs(3)).await;
        let stats = hostile::legit_uploads(
            plain,
            legit,
            i as u8 + 1,
            &key.public_key(),
            uploads,
            Duration::from_millis(10),
            Duration::from_secs(10),
        )
        .await;
        let mut healthy = 0;
        for _ in 0..5 {
            if hostile::get(admin, "/healthz", Duration::from_secs(5)).await == Ok(200) {
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
        attack.stop().await;
        // Let the collector close what the attack left before the next one.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    running.shutdown().await.unwrap();
}

/// CPU time of this thread so far (`/proc/thread-self/schedstat`, ns on CPU).
fn thread_cpu() -> Duration {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
    Duration::from_nanos(text.split_whitespace().next().unwrap().parse().unwrap())
}

/// Mean CPU time of `f` over about a second of calls.
fn cost(mut f: impl FnMut()) -> Duration {
    f();
    let (start, cpu) = (Instant::now(), thread_cpu());
    let mut n = 0u32;
    while start.elapsed() < Duration::from_secs(1) || n < 10 {
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

fn cpu_per_request() {
    let key = CollectorKey::from_seed([9; 32]);
    let opener = Opener::new(vec![key.clone()]);
    let mut rng = SeededEntropy::insecure_from_seed([3; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    let valid = seal_envelope(&agent, &key.public_key(), 1, 1, unix_now(), &mut rng).bytes;
    let full = seal_envelope(&agent, &key.public_key(), 2, 200, unix_now(), &mut rng).bytes;
    // A well-formed header to this collector's key with a 60 KiB ciphertext that fails its tag.
    let mut forged = vantage_agent::wire::Envelope::decode(&valid).unwrap();
    forged.ciphertext = vec![0x55; 60 * 1024];
    let forged = forged.encode();
    let deep_nel = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let wide_nel = format!(
        "[{}]",
        (0..1500)
            .map(|i| format!("{{\"k{i}\":{{\"a\":1,\"b\":[1,2,3],\"c\":\"xxxxxxxx\"}}}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let keys_16k = (many_keys(16_000, 0), many_keys(16_000, 1), many_keys(16_000, 2));
    let garbage: Vec<u8> =
        (0..64 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let deep_cbor: Vec<u8> = std::iter::repeat_n(0x81u8, 64 * 1024 - 1).chain([0]).collect();
    let mut long_array = Vec::new();
    head(&mut long_array, 4, 20_000);
    (0..20_000).for_each(|i| head(&mut long_array, 0, i));

    type Case<'a> = (&'a str, usize, Box<dyn FnMut() + 'a>);
    let open = |bytes: &'static [u8]| -> Box<dyn FnMut()> {
        let opener = opener.clone();
        Box::new(move || {
            let _ = std::hint::black_box(opener.open(bytes));
        })
    };
    let leak = |b: Vec<u8>| -> &'static [u8] { Box::leak(b.into_boxed_slice()) };
    let nel = |s: String| -> Box<dyn FnMut()> {
        let s: &'static str = Box::leak(s.into_boxed_str());
        Box::new(move || {
            let _ = std::hint::black_box(vantage_collector::nel::parse_upload(s.as_bytes()));
        })
    };
    let cases: Vec<Case<'_>> = vec![
        ("valid envelope, 1 report (baseline)", valid.len(), open(leak(valid.to_vec()))),
        ("valid envelope, 200 reports", full.len(), open(leak(full.to_vec()))),
        ("forged: 60 KiB ciphertext, bad tag", forged.len(), open(leak(forged))),
        ("CBOR map, 16k keys ascending", keys_16k.0.len(), open(leak(keys_16k.0))),
        ("CBOR map, 16k keys descending", keys_16k.1.len(), open(leak(keys_16k.1))),
        ("CBOR map, 16k keys scrambled", keys_16k.2.len(), open(leak(keys_16k.2))),
        ("CBOR nested arrays, 64 KiB", deep_cbor.len(), open(leak(deep_cbor))),
        ("CBOR array, 20k integers", long_array.len(), open(leak(long_array))),
        ("64 KiB of noise", garbage.len(), open(leak(garbage))),
        ("NEL: 30k nested arrays", deep_nel.len(), nel(deep_nel.clone())),
        ("NEL: 1500 objects", wide_nel.len(), nel(wide_nel.clone())),
    ];
    println!();
    println!("CPU per request (this thread, ~1 s of calls each):");
    println!("| input | bytes | us CPU | x valid envelope |");
    println!("|---|---|---|---|");
    let mut baseline = None;
    let mut worst = (Duration::ZERO, "");
    for (name, len, mut f) in cases {
        let c = cost(&mut f);
        let base = *baseline.get_or_insert(c);
        if c > worst.0 {
            worst = (c, name);
        }
        let ratio = c.as_secs_f64() / base.as_secs_f64().max(1e-9);
        println!("| {name} | {len} | {:.1} | {ratio:.2} |", c.as_secs_f64() * 1e6);
    }
    println!("worst: {} at {:.1} us (goal <= 1000 us)", worst.1, worst.0.as_secs_f64() * 1e6);
}
