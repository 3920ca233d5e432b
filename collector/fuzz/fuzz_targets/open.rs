//! The collector's whole opening path on arbitrary bytes: envelope decode, key lookup, HPKE
//! open, signed-batch decode and signature check. It must reject, never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vantage_collector::open::{CollectorKey, Opener};

/// The collector seed of the golden vectors in tests/vectors/, which .ci/fuzz-smoke.sh uses as
/// seeds: with its key loaded, mutations of a real envelope get past HPKE into the batch code.
const VECTOR_COLLECTOR_SEED: [u8; 32] = [0xc0; 32];

fn opener() -> &'static Opener {
    static OPENER: OnceLock<Opener> = OnceLock::new();
    OPENER.get_or_init(|| {
        Opener::new(vec![
            CollectorKey::from_seed([7u8; 32]),
            CollectorKey::from_seed(VECTOR_COLLECTOR_SEED),
        ])
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = opener().open(data);
});
