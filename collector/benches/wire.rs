//! Wire protocol costs per envelope of 10 reports: seal, open, sign, verify, CBOR encode and
//! decode, and the "crypto bound": envelopes per second per core for open + verify, the ceiling
//! the collector's ingest will be compared against.
//!
//! Run: `cargo bench -p vantage-collector --bench wire`. Each figure is also reported as a ratio
//! to `baseline/sha256_envelope` (hashing the same envelope once, measured in the same run).
//!
//! The `nel_upload_3_reports` group times `nel::parse_upload` on a browser upload of 3
//! `network-error` reports against `serde_json::Value` parsing of the same body alone (what
//! the parser did first until December 2026: then about 10.5 us against 5-6 us on a loaded
//! 2-core machine; a parser borrowing from the body through `RawValue` measured the same 10.5
//! us, its second pass over each entry costing what the value tree saved). The parser then read
//! the body in one pass into the fields it uses through serde's visitors: 3.5 us against 4.4 us
//! for the `Value` parse alone in the same run. Since the nineteenth round of
//! `docs/performance.md` that pass is written by hand (`nel/json.rs`), with the token and entry
//! bounds counted in it instead of in a pass of their own: 1.59 us against 3.67 us for `Value`
//! in the same run, where the visitors measured 3.24 us against 3.9.
//!
//! The `ed25519_per_signature` group weighs batched Ed25519 verification (`docs/performance.md`,
//! eighteenth round) against the collector's single check: the same cofactorless equation as
//! `open/ed25519.rs` on curve25519-dalek, then batches of 2, 4 and 8 signatures of different
//! agents checked in one multiscalar equation with random 128-bit coefficients, per signature.
//! The batch check is here only to be measured; the collector does not use it.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;
use vantage_agent::entropy::SeededEntropy;
use vantage_agent::report::{AppInfo, Batch, Report, UnixMillis};
use vantage_agent::wire::{AgentIdentity, Envelope, SignedBatch, seal_batch};
use vantage_agent::{ErrorType, NetworkType, Scope};
use vantage_collector::open::{CollectorKey, Opener};

fn ten_report_batch(agent: &AgentIdentity, rng: &mut SeededEntropy) -> Batch {
    let now = UnixMillis(1_767_225_600_000);
    let types =
        [ErrorType::TcpRefused, ErrorType::DnsNameNotResolved, ErrorType::TlsCertDateInvalid];
    let reports = (0..10)
        .map(|i| {
            Report::builder("checkout", &format!("api{}.example.com", i % 3), types[i % 3].clone())
                .elapsed_ms(10 + i as u32)
                .network(NetworkType::Wifi)
                .scope(Scope::Path)
                .build(rng, now)
                .expect("valid report")
        })
        .collect();
    Batch::new(
        agent.public_key(),
        1,
        now,
        AppInfo::new("com.example", "1.0", "android", "rust/0.1").expect("valid"),
    )
    .with_reports(reports)
}

fn wire(c: &mut Criterion) {
    let mut rng = SeededEntropy::insecure_from_seed([1; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    let key = CollectorKey::from_seed([2; 32]);
    let opener = Opener::new(vec![key.clone()]);
    let batch = ten_report_batch(&agent, &mut rng);
    let batch_bytes = batch.encode();
    let envelope = seal_batch(&batch, &agent, &key.public_key(), &mut rng).expect("seals");
    let signed = SignedBatch::sign(&batch, &agent, &key.key_id()).expect("signs");
    eprintln!(
        "envelope of 10 reports: batch {} bytes, envelope {} bytes",
        batch_bytes.len(),
        envelope.len()
    );

    let mut g = c.benchmark_group("envelope_10_reports");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline/sha256_envelope", |b| {
        b.iter(|| ring::digest::digest(&ring::digest::SHA256, black_box(&envelope)))
    });
    g.bench_function("cbor_encode_batch", |b| b.iter(|| black_box(&batch).encode()));
    g.bench_function("cbor_decode_batch", |b| b.iter(|| Batch::decode(black_box(&batch_bytes))));
    g.bench_function("sign", |b| {
        b.iter(|| SignedBatch::sign(black_box(&batch), &agent, &key.key_id()))
    });
    g.bench_function("verify", |b| b.iter(|| black_box(&signed).verify(&key.key_id())));
    g.bench_function("seal (sign + HPKE seal, ring)", |b| {
        b.iter(|| seal_batch(black_box(&batch), &agent, &key.public_key(), &mut rng))
    });
    g.bench_function("envelope_decode", |b| b.iter(|| Envelope::decode(black_box(&envelope))));
    g.bench_function("crypto_bound/open+verify (collector receiver + ring)", |b| {
        b.iter(|| opener.open(black_box(&envelope)).expect("opens"))
    });
    // The open as it was before the collector's own receiver: the hpke crate's single-shot
    // open, which derives the recipient public key again on every call. Same envelope, same
    // run, so the two rows compare directly.
    {
        use hpke::aead::ChaCha20Poly1305;
        use hpke::kdf::HkdfSha256;
        use hpke::kem::X25519HkdfSha256;
        use hpke::{Deserializable, OpModeR};
        let secret = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(&key.secret_bytes())
            .expect("32 bytes");
        g.bench_function(
            "crypto_bound_before/open+verify (hpke crate single_shot_open + ring)",
            |b| {
                b.iter(|| {
                    let env = Envelope::decode(black_box(&envelope)).expect("decodes");
                    let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&env.enc)
                        .expect("32 bytes");
                    let pt =
                        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                            &OpModeR::Base,
                            &secret,
                            &enc,
                            vantage_agent::wire::HPKE_INFO,
                            &env.ciphertext,
                            &env.header_bytes(),
                        )
                        .expect("opens");
                    let signed = SignedBatch::decode(&pt).expect("decodes");
                    signed.verify(&env.key_id).expect("verifies")
                })
            },
        );
    }
    g.finish();

    let mut g = c.benchmark_group("nel_upload_3_reports");
    g.throughput(Throughput::Elements(1));
    let upload = nel_upload();
    g.bench_function("baseline/serde_json_value_parse", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&upload)).expect("json"))
    });
    g.bench_function("parse_upload", |b| {
        b.iter(|| vantage_collector::nel::parse_upload(black_box(&upload)).expect("parses"))
    });
    g.finish();

    verify_batches(c);
}

/// Signatures of 1,000-byte messages under 64 agent keys, checked one by one and in batches.
fn verify_batches(c: &mut Criterion) {
    use ring::signature::{Ed25519KeyPair, KeyPair};
    let signed: Vec<([u8; 32], Vec<u8>, [u8; 64])> = (0..64u8)
        .map(|i| {
            let pair = Ed25519KeyPair::from_seed_unchecked(&[i + 1; 32]).expect("seed");
            let message = vec![i; 1000];
            let sig = pair.sign(&message).as_ref().try_into().expect("64 bytes");
            (pair.public_key().as_ref().try_into().expect("32 bytes"), message, sig)
        })
        .collect();
    assert!(signed.iter().all(|(a, m, s)| ed25519::single(a, m, s)));
    let mut coefficients = SeededEntropy::insecure_from_seed([3; 32]);
    let mut tampered = signed[..4].to_vec();
    tampered[2].1[7] ^= 1;
    assert!(ed25519::batch(&signed[..4], &mut coefficients));
    assert!(!ed25519::batch(&tampered, &mut coefficients));

    let mut g = c.benchmark_group("ed25519_per_signature");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("single (the collector's check)", |b| {
        b.iter(|| {
            i = (i + 1) % signed.len();
            let (a, m, s) = &signed[i];
            assert!(ed25519::single(black_box(a), m, s));
        })
    });
    for n in [2usize, 4, 8] {
        g.throughput(Throughput::Elements(n as u64));
        let mut at = 0;
        g.bench_function(format!("batch of {n}"), |b| {
            b.iter(|| {
                at = (at + n) % (signed.len() - n);
                assert!(ed25519::batch(black_box(&signed[at..at + n]), &mut coefficients));
            })
        });
    }
    g.finish();
}

mod ed25519 {
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
    use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
    use sha2::{Digest, Sha512};
    use vantage_agent::entropy::{Entropy, SeededEntropy};

    fn parts(
        public: &[u8; 32],
        message: &[u8],
        sig: &[u8; 64],
    ) -> Option<(EdwardsPoint, Scalar, Scalar)> {
        let s: [u8; 32] = sig[32..].try_into().ok()?;
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s))?;
        let a = CompressedEdwardsY(*public).decompress()?;
        let mut hash = Sha512::new();
        hash.update(&sig[..32]);
        hash.update(public);
        hash.update(message);
        Some((a, s, Scalar::from_bytes_mod_order_wide(&hash.finalize().into())))
    }

    /// The collector's check: `[S]B - [k]A` encoded equals `R`'s bytes.
    pub(crate) fn single(public: &[u8; 32], message: &[u8], sig: &[u8; 64]) -> bool {
        let Some((a, s, k)) = parts(public, message, sig) else { return false };
        EdwardsPoint::vartime_double_scalar_mul_basepoint(&k, &-a, &s).compress().as_bytes()
            == &sig[..32]
    }

    /// `sum z_i ([S_i]B - R_i - [k_i]A_i) = 0` (times the cofactor), random 128-bit `z_i`.
    pub(crate) fn batch(items: &[([u8; 32], Vec<u8>, [u8; 64])], rng: &mut SeededEntropy) -> bool {
        let mut scalars = Vec::with_capacity(2 * items.len() + 1);
        let mut points = Vec::with_capacity(2 * items.len() + 1);
        let mut base = Scalar::ZERO;
        for (public, message, sig) in items {
            let Some((a, s, k)) = parts(public, message, sig) else { return false };
            let r: [u8; 32] = sig[..32].try_into().expect("32 bytes");
            let Some(r) = CompressedEdwardsY(r).decompress() else { return false };
            let mut z = [0u8; 32];
            rng.fill(&mut z[..16]);
            let z = Scalar::from_bytes_mod_order(z);
            base += z * s;
            scalars.extend([-z, -(z * k)]);
            points.extend([r, a]);
        }
        scalars.push(base);
        points.push(ED25519_BASEPOINT_POINT);
        EdwardsPoint::vartime_multiscalar_mul(scalars, points).mul_by_cofactor().is_identity()
    }
}

/// A browser upload of 3 `network-error` reports (DNS, TCP, HTTP), as `vantage-loadgen --nel`
/// sends them.
fn nel_upload() -> Vec<u8> {
    let entry = |k: usize, phase: &str, t: &str, status: u16| {
        format!(
            r#"{{"age":1200,"type":"network-error","url":"https://shop{k}.example/p?i=7","user_agent":"Mozilla/5.0 (X11; Linux x86_64) bench","body":{{"sampling_fraction":1.0,"server_ip":"","protocol":"http/1.1","method":"GET","status_code":{status},"elapsed_time":38,"phase":"{phase}","type":"{t}","referrer":""}}}}"#
        )
    };
    format!(
        "[{},{},{}]",
        entry(1, "dns", "dns.name_not_resolved", 0),
        entry(2, "connection", "tcp.refused", 0),
        entry(3, "application", "http.error", 503)
    )
    .into_bytes()
}

criterion_group!(benches, wire);
criterion_main!(benches);
