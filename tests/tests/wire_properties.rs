//! Property tests: every codec round-trips, and no decoder or the opener panics on any bytes.

#![allow(clippy::unwrap_used)] // a panic is how a test reports failure

use proptest::prelude::*;
use vantage_agent::drops::DropReason;
use vantage_agent::entropy::SeededEntropy;
use vantage_agent::report::{
    AppInfo, Batch, Host, Protocol, Report, ReportId, TargetCounts, UnixMillis,
};
use vantage_agent::wire::{AgentIdentity, AgentPublicKey, Envelope, SignedBatch, seal_batch};
use vantage_agent::{ErrorType, NetworkType, Scope};
use vantage_collector::open::{CollectorKey, Opener};

fn host() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,10}[a-z0-9](\\.[a-z][a-z0-9]{0,8}){1,3}",
        any::<[u8; 4]>().prop_map(|b| std::net::Ipv4Addr::from(b).to_string()),
        any::<[u16; 8]>().prop_map(|s| std::net::Ipv6Addr::from(s).to_string()),
    ]
}

fn error_type() -> impl Strategy<Value = ErrorType> {
    prop_oneof![
        proptest::sample::select(ErrorType::KNOWN.to_vec()),
        "[a-z]{1,8}\\.[a-z_]{1,12}".prop_map(|s| ErrorType::from_label(&s).unwrap()),
    ]
}

prop_compose! {
    fn report()(
        id in any::<[u8; 16]>(),
        at in any::<u64>(),
        service in "[a-zA-Z0-9._-]{1,64}",
        host in host(),
        t in error_type(),
        elapsed in any::<u32>(),
        protocol in proptest::sample::select(Protocol::ALL.to_vec()),
        status in proptest::option::of(100u16..=599),
        network in proptest::sample::select(NetworkType::ALL.to_vec()),
        scope in proptest::sample::select(Scope::ALL.to_vec()),
        count in 1u32..,
    ) -> Report {
        let mut b = Report::builder(&service, &host, t.clone())
            .observed_at(UnixMillis(at)).elapsed_ms(elapsed).protocol(protocol)
            .network(network).scope(scope).count(count);
        if let Some(s) = status.filter(|_| t.phase() == vantage_agent::Phase::Application) {
            b = b.status(s);
        }
        b.build_with_id(ReportId(id), UnixMillis(0)).unwrap()
    }
}

prop_compose! {
    fn batch()(
        key in any::<[u8; 32]>(),
        seq in any::<u64>(),
        at in any::<u64>(),
        app in ("[a-z.]{1,20}", "[0-9.]{1,10}", "[a-z]{1,10}", "[a-z/0-9.]{1,20}"),
        reports in proptest::collection::vec(report(), 0..20),
        drops in proptest::collection::vec((0u16..500, 0u64..1_000_000), 0..8),
        targets in proptest::collection::vec(("[a-z]{1,10}", host(), 0u64..1_000_000, 0u64..1_000_000), 0..5),
        rates in (0u32..=1_000_000, 0u32..=1_000_000),
    ) -> Batch {
        let mut b = Batch::new(AgentPublicKey(key), seq, UnixMillis(at),
            AppInfo::new(&app.0, &app.1, &app.2, &app.3).unwrap()).with_reports(reports);
        for (code, n) in drops {
            b.drops.add(DropReason::from_code(code), n);
        }
        for (s, h, a, succ) in targets {
            b.targets.push(TargetCounts::new(s.parse().unwrap(), Host::parse(&h).unwrap(),
                a.max(succ), succ.min(a.max(succ))).unwrap());
        }
        b.sampling = vantage_agent::report::SampleRates { failure_ppm: rates.0, success_ppm: rates.1 };
        b
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn report_round_trips(r in report()) {
        prop_assert_eq!(Report::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn batch_round_trips_deterministically(b in batch()) {
        let bytes = b.encode();
        let back = Batch::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &b);
        prop_assert_eq!(back.encode(), bytes);
    }

    #[test]
    fn envelope_and_signed_batch_round_trip(
        key_id in any::<[u8; 8]>(), enc in any::<[u8; 32]>(),
        ct in proptest::collection::vec(any::<u8>(), 16..2000),
        batch in proptest::collection::vec(any::<u8>(), 0..2000), sig in any::<[u8; 32]>(),
    ) {
        let e = Envelope { version: 1, key_id: vantage_agent::wire::KeyId(key_id), enc, ciphertext: ct };
        prop_assert_eq!(Envelope::decode(&e.encode()).unwrap(), e);
        let s = SignedBatch { batch, signature: [sig, sig].concat().try_into().unwrap() };
        prop_assert_eq!(SignedBatch::decode(&s.encode()).unwrap(), s);
    }

    #[test]
    fn sealed_batches_open(b in batch(), seed in any::<[u8; 32]>()) {
        let mut rng = SeededEntropy::insecure_from_seed(seed);
        let agent = AgentIdentity::generate(&mut rng);
        let mut b = b;
        b.agent_key = agent.public_key();
        let key = CollectorKey::from_seed(seed);
        let bytes = seal_batch(&b, &agent, &key.public_key(), &mut rng).unwrap();
        prop_assert_eq!(Opener::new(vec![key]).open(&bytes).unwrap().batch, b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::decode(&bytes);
        let _ = SignedBatch::decode(&bytes);
        let _ = Batch::decode(&bytes);
        let _ = Report::decode(&bytes);
        let _ = Opener::new(vec![CollectorKey::from_seed([1; 32])]).open(&bytes);
    }

    #[test]
    fn decoders_never_panic_on_mutated_valid_batches(
        seed in any::<u64>(), edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
    ) {
        let agent = AgentIdentity::from_secret_bytes([3; 32]);
        let mut bytes = vantage_tests::vectors::basic_batch(&agent).encode();
        for (at, v) in edits {
            let i = at % bytes.len();
            bytes[i] = v ^ (seed as u8);
        }
        let _ = Batch::decode(&bytes);
    }
}
