#![allow(clippy::unwrap_used)]
//! The wire protocol's golden vectors under wasm (headless Chromium through
//! wasm-bindgen-test): the same vector files and the same batch builders as the native test
//! (`tests/tests/golden_vectors.rs`), so the browser's sealing and signing are byte-for-byte the
//! native ones. Run with `.ci/test-wasm.sh`.
#![cfg(all(target_arch = "wasm32", target_os = "unknown"))]

use vantage_agent::report::Batch;
use vantage_agent::wire::{
    AgentIdentity, CollectorPublicKey, Envelope, SignedBatch, hpke, seal_batch,
};
use wasm_bindgen_test::{wasm_bindgen_test, wasm_bindgen_test_configure};

wasm_bindgen_test_configure!(run_in_browser);

// The native test's builders (basic_batch, empty_batch), parser and fixed entropy, compiled
// here as they are; the file-reading helpers are unused in a browser.
#[allow(dead_code, unreachable_pub, missing_docs)]
#[path = "../../tests/src/vectors.rs"]
mod vectors;

const COLLECTOR_SEED: [u8; 32] = [0xc0; 32];
const AGENT_SECRET: [u8; 32] = [0xa9; 32];
const IKM_E: [u8; 32] = [0xe5; 32];

fn check(file_text: &str, build: fn(&AgentIdentity) -> Batch) {
    let want = vectors::parse(file_text).unwrap();
    let hex = |name: &str| hex::encode(&want[name]);
    assert_eq!(hex::encode(COLLECTOR_SEED), hex("collector_seed"));
    assert_eq!(hex::encode(AGENT_SECRET), hex("agent_secret"));
    assert_eq!(hex::encode(IKM_E), hex("ikm_e"));

    // The collector's public key is DeriveKeyPair(seed)'s: the same derivation as the
    // ephemeral key of a seal.
    let collector_pk = hpke::encapsulated_key(&COLLECTOR_SEED).unwrap();
    assert_eq!(hex::encode(collector_pk), hex("collector_public_key"));
    let collector: CollectorPublicKey = hex::encode(collector_pk).parse().unwrap();
    let key_id = collector.key_id();
    assert_eq!(hex::encode(key_id.as_bytes()), hex("key_id"));

    let agent = AgentIdentity::from_secret_bytes(AGENT_SECRET);
    assert_eq!(hex::encode(agent.public_key().as_bytes()), hex("agent_public_key"));
    let batch = build(&agent);
    assert_eq!(hex::encode(batch.encode()), hex("batch"));
    let signed = SignedBatch::sign(&batch, &agent, &key_id).unwrap();
    assert_eq!(hex::encode(signed.encode()), hex("signed_batch"));
    let envelope =
        seal_batch(&batch, &agent, &collector, &mut vectors::FixedEntropy(IKM_E.to_vec())).unwrap();
    assert_eq!(hex::encode(&envelope), hex("envelope"));
    let outer = Envelope::decode(&envelope).unwrap();
    assert_eq!(outer.key_id, key_id);
}

#[wasm_bindgen_test]
fn basic_vector() {
    check(include_str!("../../tests/vectors/envelope-v1-basic.txt"), vectors::basic_batch);
}

#[wasm_bindgen_test]
fn empty_vector() {
    check(include_str!("../../tests/vectors/envelope-v1-empty.txt"), vectors::empty_batch);
}

#[wasm_bindgen_test]
fn a_tampered_vector_file_fails() {
    // The check can fail: one flipped byte of the expected envelope is noticed.
    let text = include_str!("../../tests/vectors/envelope-v1-basic.txt");
    let mut want = vectors::parse(text).unwrap();
    let env = want.get_mut("envelope").unwrap();
    let last = env.len() - 1;
    env[last] ^= 1;
    let agent = AgentIdentity::from_secret_bytes(AGENT_SECRET);
    let collector: CollectorPublicKey =
        hex::encode(hpke::encapsulated_key(&COLLECTOR_SEED).unwrap()).parse().unwrap();
    let batch = vectors::basic_batch(&agent);
    let got =
        seal_batch(&batch, &agent, &collector, &mut vectors::FixedEntropy(IKM_E.to_vec())).unwrap();
    assert_ne!(got, want["envelope"]);
}
