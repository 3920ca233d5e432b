//! Envelope parsing: the first thing the collector does with a request body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vantage_agent::wire::Envelope::decode(data);
});
