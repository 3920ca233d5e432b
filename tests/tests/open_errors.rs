//! Every way an envelope can be wrong gets its own typed error, and a changed byte anywhere
//! means the envelope does not open.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use vantage_agent::entropy::SeededEntropy;
use vantage_agent::wire::{
    self, AgentIdentity, Envelope, HPKE_INFO, MAX_ENVELOPE_BYTES, SignedBatch, seal_batch,
};
use vantage_collector::open::{CollectorKey, OpenError, Opener};
use vantage_tests::vectors;

fn setup() -> (CollectorKey, Opener, AgentIdentity, SeededEntropy) {
    let key = CollectorKey::from_seed([1; 32]);
    let opener = Opener::new(vec![CollectorKey::from_seed([9; 32]), key.clone()]);
    let mut rng = SeededEntropy::insecure_from_seed([2; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    (key, opener, agent, rng)
}

/// Seals arbitrary plaintext the way `seal_batch` does, so the inside can be made wrong.
fn seal_raw(key: &CollectorKey, plaintext: &[u8], version: u64) -> Vec<u8> {
    let ikm = [7u8; 32];
    let mut env = Envelope {
        version,
        key_id: key.key_id(),
        enc: wire::hpke::encapsulated_key(&ikm).unwrap(),
        ciphertext: Vec::new(),
    };
    let (_, ct) = wire::hpke::seal_base(
        key.public_key().as_bytes(),
        &ikm,
        HPKE_INFO,
        &env.header_bytes(),
        plaintext,
    )
    .unwrap();
    env.ciphertext = ct;
    env.encode()
}

#[test]
fn a_good_envelope_opens_from_any_live_key() {
    let (key, opener, agent, mut rng) = setup();
    let batch = vectors::basic_batch(&agent);
    let bytes = seal_batch(&batch, &agent, &key.public_key(), &mut rng).unwrap();
    let opened = opener.open(&bytes).unwrap();
    assert_eq!(opened.batch, batch);
    assert_eq!(opened.key_id, key.key_id());
    assert_eq!(opened.agent_key(), agent.public_key());
    // Two seals of the same batch differ (fresh ephemeral key) and have different digests.
    let again = seal_batch(&batch, &agent, &key.public_key(), &mut rng).unwrap();
    assert_ne!(again, bytes);
    assert_ne!(opener.open(&again).unwrap().digest, opened.digest);
}

#[test]
fn every_changed_byte_fails_to_open() {
    let (key, opener, agent, mut rng) = setup();
    let bytes =
        seal_batch(&vectors::basic_batch(&agent), &agent, &key.public_key(), &mut rng).unwrap();
    for i in 0..bytes.len() {
        for flip in [0x01u8, 0x80] {
            let mut t = bytes.clone();
            t[i] ^= flip;
            assert!(opener.open(&t).is_err(), "byte {i} ^ {flip:#x} still opened");
        }
    }
    // Truncation at every length, and an extra byte, fail too.
    for n in 0..bytes.len() {
        assert!(opener.open(&bytes[..n]).is_err(), "truncated to {n} opened");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(opener.open(&longer), Err(OpenError::Malformed(_))));
}

#[test]
fn the_error_table() {
    let (key, opener, agent, mut rng) = setup();
    let batch = vectors::basic_batch(&agent);
    let good = seal_batch(&batch, &agent, &key.public_key(), &mut rng).unwrap();
    let key_id = key.key_id();
    let signed = SignedBatch::sign(&batch, &agent, &key_id).unwrap();

    let mut bad_sig = signed.clone();
    bad_sig.signature[0] ^= 1;
    let other_agent = AgentIdentity::generate(&mut rng);
    let mut wrong_signer = signed.clone();
    wrong_signer.signature = other_agent.sign(b"anything");
    // Signed for another deployment's key id, then sealed to ours.
    let other_key_id = CollectorKey::from_seed([5; 32]).key_id();
    let resealed = SignedBatch::sign(&batch, &agent, &other_key_id).unwrap();
    let stranger = CollectorKey::from_seed([6; 32]);
    let mut big = vec![0u8; MAX_ENVELOPE_BYTES + 1];
    big[0] = 0xa4;

    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty body", vec![], "malformed"),
        ("truncated CBOR", good[..good.len() / 2].to_vec(), "malformed"),
        ("not a map", vec![0x83, 1, 2, 3], "malformed"),
        ("deeply nested", [vec![0x81u8; 10_000], vec![0]].concat(), "malformed"),
        ("oversized", big, "too_large"),
        ("unknown version", seal_raw(&key, &signed.encode(), 2), "bad_version"),
        (
            "unknown key id",
            seal_batch(&batch, &agent, &stranger.public_key(), &mut rng).unwrap(),
            "unknown_key_id",
        ),
        (
            "bad ciphertext",
            {
                let mut t = good.clone();
                let n = t.len();
                t[n - 20] ^= 1;
                t
            },
            "decrypt_failed",
        ),
        ("bad signature", seal_raw(&key, &bad_sig.encode(), 1), "bad_signature"),
        ("signed by another key", seal_raw(&key, &wrong_signer.encode(), 1), "bad_signature"),
        ("signed for another key id", seal_raw(&key, &resealed.encode(), 1), "bad_signature"),
        ("garbage inside", seal_raw(&key, b"\xff\x00garbage", 1), "malformed"),
        (
            "bad batch inside",
            seal_raw(&key, &SignedBatch { batch: vec![0xa0], signature: [0; 64] }.encode(), 1),
            "malformed",
        ),
    ];
    for (name, bytes, want) in cases {
        let err = opener.open(&bytes).err().unwrap_or_else(|| panic!("{name}: opened"));
        assert_eq!(err.as_str(), want, "{name}: {err}");
    }
    // Errors name what was wrong.
    let err = opener.open(&seal_raw(&key, &signed.encode(), 2)).unwrap_err();
    assert_eq!(err.to_string(), "unsupported envelope version 2");
    let err = opener
        .open(&seal_raw(&key, &SignedBatch { batch: vec![0xa0], signature: [0; 64] }.encode(), 1))
        .unwrap_err();
    assert_eq!(err.to_string(), "malformed: batch.agent_key: missing");
    assert_eq!(opener.open(&[]).unwrap_err().to_string(), "malformed: envelope: truncated CBOR");
}

#[test]
fn a_smaller_limit_is_honoured() {
    let (key, opener, agent, mut rng) = setup();
    let bytes =
        seal_batch(&vectors::basic_batch(&agent), &agent, &key.public_key(), &mut rng).unwrap();
    let strict = opener.max_envelope_bytes(bytes.len() - 1);
    assert_eq!(
        strict.open(&bytes).unwrap_err(),
        OpenError::TooLarge { len: bytes.len(), max: bytes.len() - 1 }
    );
}

#[test]
fn non_canonical_encodings_are_refused() {
    let (key, opener, agent, mut rng) = setup();
    let bytes =
        seal_batch(&vectors::empty_batch(&agent), &agent, &key.public_key(), &mut rng).unwrap();
    // Re-encode the version (key 1, value 1) with a two-byte head: same value, other bytes.
    assert_eq!(&bytes[..3], &[0xa4, 0x01, 0x01]);
    let mut long = vec![0xa4, 0x01, 0x18, 0x01];
    long.extend_from_slice(&bytes[3..]);
    let err = opener.open(&long).unwrap_err();
    assert_eq!(err.to_string(), "malformed: envelope: not in canonical CBOR encoding");
}
