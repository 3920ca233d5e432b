//! Golden vectors: fixed keys, seeds and timestamps, and the exact bytes they must give.
//!
//! Files in `tests/vectors/*.txt` hold `name = hex` lines (`#` starts a comment). The native
//! tests here check them; the wasm and FFI tests are meant to read the same files.

use std::collections::BTreeMap;
use std::path::PathBuf;

use vantage_agent::drops::DropReason;
use vantage_agent::entropy::Entropy;
use vantage_agent::report::{
    AppInfo, Batch, Host, Protocol, Report, ReportId, SampleRates, TargetCounts, UnixMillis,
};
use vantage_agent::wire::AgentIdentity;
use vantage_agent::{ErrorType, NetworkType, Scope};

/// The folder of the vector files.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("vectors")
}

/// Reads a vector file into `name -> bytes`.
pub fn read(name: &str) -> BTreeMap<String, Vec<u8>> {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses `name = hex` lines.
pub fn parse(text: &str) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) =
            line.split_once('=').ok_or_else(|| format!("line {}: expected name = hex", n + 1))?;
        let bytes = hex::decode(value.trim()).map_err(|e| format!("line {}: {e}", n + 1))?;
        out.insert(name.trim().to_owned(), bytes);
    }
    Ok(out)
}

/// Formats `name = hex` lines with a header comment.
pub fn format(header: &str, entries: &[(&str, &[u8])]) -> String {
    let mut s = String::new();
    for line in header.lines() {
        s.push_str("# ");
        s.push_str(line);
        s.push('\n');
    }
    for (name, bytes) in entries {
        s.push_str(&format!("{name} = {}\n", hex::encode(bytes)));
    }
    s
}

/// An entropy source that hands out fixed bytes, for the ephemeral key of a golden envelope.
pub struct FixedEntropy(pub Vec<u8>);

impl Entropy for FixedEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        assert!(self.0.len() >= dest.len(), "FixedEntropy ran out of bytes");
        let rest = self.0.split_off(dest.len());
        dest.copy_from_slice(&self.0);
        self.0 = rest;
    }
}

/// The fixed batch of the `basic` vector: three reports (one coalesced, one HTTP error with a
/// status, one type this version does not know), drop counts and target counts.
pub fn basic_batch(agent: &AgentIdentity) -> Batch {
    let now = UnixMillis(1_767_225_600_000); // 2026-01-01T00:00:00Z
    let report = |host: &str, t: ErrorType| Report::builder("checkout", host, t);
    let r1 = report("api.example.com", ErrorType::TcpRefused)
        .observed_at(UnixMillis(now.0 - 5_000))
        .elapsed_ms(12)
        .network(NetworkType::Wifi)
        .scope(Scope::Path)
        .count(3)
        .build_with_id(ReportId([1; 16]), now)
        .expect("valid");
    let r2 = report("api.example.com", ErrorType::HttpError)
        .status(503)
        .protocol(Protocol::H2)
        .elapsed_ms(250)
        .network(NetworkType::Cellular)
        .build_with_id(ReportId([2; 16]), now)
        .expect("valid");
    let r3 = report("cdn.example.net", ErrorType::Other("quic.handshake_timeout".into()))
        .elapsed_ms(3_000)
        .scope(Scope::Local)
        .build_with_id(ReportId([3; 16]), now)
        .expect("valid");
    let mut batch = Batch::new(
        agent.public_key(),
        42,
        now,
        AppInfo::new("com.example.shop", "3.1.4", "android", "vantage-rust/0.1.0").expect("valid"),
    )
    .with_reports(vec![r1, r2, r3]);
    batch.drops.add(DropReason::QueueFull, 2);
    batch.drops.add(DropReason::Expired, 1);
    batch.targets.push(
        TargetCounts::new(
            "checkout".parse().expect("valid"),
            Host::parse("api.example.com").expect("valid"),
            1_000,
            987,
        )
        .expect("valid"),
    );
    batch.sampling = SampleRates::from_fractions(1.0, 0.1);
    batch
}

/// The fixed batch of the `empty` vector: no reports, no drops, no targets.
pub fn empty_batch(agent: &AgentIdentity) -> Batch {
    Batch::new(
        agent.public_key(),
        0,
        UnixMillis(0),
        AppInfo::new("a", "0", "web", "vantage-wasm/0.1.0").expect("valid"),
    )
}
