//! Decoding what sits inside an opened envelope: the signed batch, and the batch it carries.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vantage_agent::wire::SignedBatch::decode(data);
    let _ = vantage_agent::report::Batch::decode(data);
});
