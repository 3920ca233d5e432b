//! What Vantage can do today, end to end on this machine: a real failed connection on loopback
//! is classified, reported, signed and sealed by the agent core, and opened and verified by the
//! collector code. (The collector server, store and alerting arrive with later issues; this
//! demo becomes `vantage-collector demo` then.)
//!
//! Run: `cargo run --release -p vantage-collector --example wire_demo`

use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vantage_agent::classify;
use vantage_agent::entropy::Entropy;
use vantage_agent::report::{AppInfo, Batch, Protocol, Report, UnixMillis};
use vantage_agent::wire::{AgentIdentity, Envelope, seal_batch};
use vantage_collector::open::{CollectorKey, Opener};

/// The operating system's RNG, through ring.
struct OsEntropy(ring::rand::SystemRandom);

impl Entropy for OsEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        ring::rand::SecureRandom::fill(&self.0, dest).expect("the OS RNG is available");
    }
}

fn now() -> UnixMillis {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970");
    UnixMillis(since.as_millis() as u64)
}

#[allow(clippy::print_stdout)]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = OsEntropy(ring::rand::SystemRandom::new());

    // The deployment's collector key (the collector issue adds `keygen` and key files).
    let mut seed = [0u8; 32];
    rng.fill(&mut seed);
    let collector = CollectorKey::from_seed(seed);
    println!("collector key id      {}", collector.key_id());

    // An agent that has been granted consent: a fresh install identity.
    let agent = AgentIdentity::generate(&mut rng);
    println!("agent public key      {}", agent.public_key());

    // A real failure: connect to a loopback port that nobody listens on any more.
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let started = Instant::now();
    let err = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2))
        .expect_err("the port was closed");
    let elapsed = started.elapsed().as_millis() as u32;
    let error_type = classify::io_error(&err);
    println!(
        "connect 127.0.0.1:{port:<5} failed: {err} -> {error_type} ({} phase)",
        error_type.phase()
    );

    let report =
        Report::builder("demo", &format!("http://127.0.0.1:{port}/secret/path?q=1"), error_type)
            .elapsed_ms(elapsed)
            .protocol(Protocol::Http1)
            .build(&mut rng, now())?;
    let batch = Batch::new(
        agent.public_key(),
        1,
        now(),
        AppInfo::new("vantage-demo", "0.1.0", "linux", "rust")?,
    )
    .with_reports(vec![report]);
    let bytes = seal_batch(&batch, &agent, &collector.public_key(), &mut rng)?;
    let envelope = Envelope::decode(&bytes)?;
    println!(
        "sealed envelope       {} bytes (v{}, key id {}, ciphertext {} bytes)",
        bytes.len(),
        envelope.version,
        envelope.key_id,
        envelope.ciphertext.len()
    );

    // The collector side: open (HPKE, hpke crate) and verify (Ed25519).
    let opened = Opener::new(vec![collector]).open(&bytes)?;
    let digest: String = opened.digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    println!(
        "opened and verified   digest {digest}..., agent {}, seq {}",
        opened.agent_key(),
        opened.batch.seq
    );
    for r in &opened.batch.reports {
        println!(
            "  report {}  service={} host={} phase={} type={} elapsed={}ms count={}",
            r.id(),
            r.service(),
            r.host(),
            r.phase(),
            r.error_type(),
            r.elapsed_ms(),
            r.count()
        );
    }
    println!("(the URL's path and query never left the agent: only the host was kept)");
    Ok(())
}
