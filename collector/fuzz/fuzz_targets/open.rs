//! The collector's whole opening path on arbitrary bytes: envelope decode, key lookup, HPKE
//! open, signed-batch decode and signature check. It must reject, never panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use vantage_collector::open::{CollectorKey, Opener};

fn opener() -> &'static Opener {
    static OPENER: OnceLock<Opener> = OnceLock::new();
    OPENER.get_or_init(|| Opener::new(vec![CollectorKey::from_seed([7u8; 32])]))
}

fuzz_target!(|data: &[u8]| {
    let _ = opener().open(data);
});
