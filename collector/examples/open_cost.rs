//! Opens one 10-report envelope N times, with the collector's receiver (`Opener::open`) or with
//! the hpke crate's single-shot open (the path before it), for instruction counts under
//! `valgrind --tool=callgrind`, which stay the same however loaded the machine is:
//!
//! ```text
//! cargo build --profile bench -p vantage-collector --example open_cost
//! valgrind --tool=callgrind target/release/examples/open_cost new 200
//! valgrind --tool=callgrind target/release/examples/open_cost old 200
//! ```
#![allow(clippy::print_stdout, clippy::unwrap_used, reason = "a measuring tool")]

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR};
use vantage_agent::entropy::SeededEntropy;
use vantage_agent::report::{AppInfo, Batch, UnixMillis};
use vantage_agent::wire::{AgentIdentity, Envelope, HPKE_INFO, SignedBatch, seal_batch};
use vantage_collector::open::{CollectorKey, Opener};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("new", String::as_str);
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100);
    let mut rng = SeededEntropy::insecure_from_seed([1; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    let key = CollectorKey::from_seed([2; 32]);
    let batch = Batch::new(
        agent.public_key(),
        1,
        UnixMillis(1_700_000_000_000),
        AppInfo::new("a", "1", "linux", "rust").unwrap(),
    );
    let envelope = seal_batch(&batch, &agent, &key.public_key(), &mut rng).unwrap();
    let opener = Opener::new(vec![key.clone()]);
    let secret =
        <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(&key.secret_bytes()).unwrap();
    let mut ok = 0;
    for _ in 0..n {
        match mode {
            "new" => {
                opener.open(&envelope).unwrap();
            }
            _ => {
                let env = Envelope::decode(&envelope).unwrap();
                let enc =
                    <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&env.enc).unwrap();
                let pt = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                    &OpModeR::Base,
                    &secret,
                    &enc,
                    HPKE_INFO,
                    &env.ciphertext,
                    &env.header_bytes(),
                )
                .unwrap();
                SignedBatch::decode(&pt).unwrap().verify(&env.key_id).unwrap();
            }
        }
        ok += 1;
    }
    println!("{mode}: {ok} opens");
}
