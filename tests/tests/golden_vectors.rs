//! Golden vectors: fixed keys, seeds and timestamps give exact envelope bytes, and the
//! collector opens them. Regenerate (only for a deliberate format change, which v1 forbids
//! for existing fields) with `VANTAGE_BLESS=1 cargo test -p vantage-tests --test golden_vectors`.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use vantage_agent::report::Batch;
use vantage_agent::wire::{AgentIdentity, Envelope, SignedBatch, seal_batch};
use vantage_collector::open::{CollectorKey, Opener};
use vantage_tests::vectors::{self, FixedEntropy};

const COLLECTOR_SEED: [u8; 32] = [0xc0; 32];
const AGENT_SECRET: [u8; 32] = [0xa9; 32];
const IKM_E: [u8; 32] = [0xe5; 32];

struct Made {
    collector_public_key: Vec<u8>,
    key_id: Vec<u8>,
    agent_public_key: Vec<u8>,
    batch: Vec<u8>,
    signed_batch: Vec<u8>,
    envelope: Vec<u8>,
}

fn make(build: fn(&AgentIdentity) -> Batch) -> Made {
    let collector = CollectorKey::from_seed(COLLECTOR_SEED);
    let agent = AgentIdentity::from_secret_bytes(AGENT_SECRET);
    let batch = build(&agent);
    let key_id = collector.public_key().key_id();
    let signed = SignedBatch::sign(&batch, &agent, &key_id).unwrap();
    let envelope =
        seal_batch(&batch, &agent, &collector.public_key(), &mut FixedEntropy(IKM_E.to_vec()))
            .unwrap();
    Made {
        collector_public_key: collector.public_key().as_bytes().to_vec(),
        key_id: key_id.as_bytes().to_vec(),
        agent_public_key: agent.public_key().as_bytes().to_vec(),
        batch: batch.encode(),
        signed_batch: signed.encode(),
        envelope,
    }
}

fn check(file: &str, build: fn(&AgentIdentity) -> Batch) {
    let made = make(build);
    let entries: [(&str, &[u8]); 9] = [
        ("collector_seed", &COLLECTOR_SEED),
        ("collector_public_key", &made.collector_public_key),
        ("key_id", &made.key_id),
        ("agent_secret", &AGENT_SECRET),
        ("agent_public_key", &made.agent_public_key),
        ("ikm_e", &IKM_E),
        ("batch", &made.batch),
        ("signed_batch", &made.signed_batch),
        ("envelope", &made.envelope),
    ];
    if std::env::var_os("VANTAGE_BLESS").is_some() {
        let header = "Vantage wire protocol v1 golden vector. Inputs: collector_seed (RFC 9180 \
DeriveKeyPair ikm),\nagent_secret (Ed25519 seed), ikm_e (HPKE ephemeral ikm); the batch is built \
in tests/src/vectors.rs.\nEvery other line is the exact output. Do not edit by hand.";
        std::fs::write(vectors::dir().join(file), vectors::format(header, &entries)).unwrap();
    }
    let want = vectors::read(file);
    for (name, got) in entries {
        let expected = want.get(name).unwrap_or_else(|| panic!("{file}: no {name}"));
        assert_eq!(hex::encode(got), hex::encode(expected), "{file}: {name} differs");
    }

    // The stored envelope opens in the collector and gives back the very batch.
    let opener = Opener::new(vec![CollectorKey::from_seed(COLLECTOR_SEED)]);
    let opened = opener.open(&want["envelope"]).unwrap();
    let agent = AgentIdentity::from_secret_bytes(AGENT_SECRET);
    assert_eq!(opened.batch, build(&agent));
    assert_eq!(opened.batch.encode(), want["batch"]);
    let envelope = Envelope::decode(&want["envelope"]).unwrap();
    assert_eq!(envelope.key_id.as_bytes().as_slice(), want["key_id"].as_slice());
}

#[test]
fn basic_vector() {
    check("envelope-v1-basic.txt", vectors::basic_batch);
}

#[test]
fn empty_vector() {
    check("envelope-v1-empty.txt", vectors::empty_batch);
}
