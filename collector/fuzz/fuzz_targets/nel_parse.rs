//! The browser Network Error Logging parser: the only decoder of untrusted input that is not
//! CBOR. Anything may be refused; nothing may panic, and an accepted upload stays within the
//! documented bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vantage_collector::nel::{MAX_REPORTS_PER_UPLOAD, MAX_URL_BYTES, parse_upload};

fuzz_target!(|data: &[u8]| {
    if let Ok(upload) = parse_upload(data) {
        assert!(upload.entries.len() <= MAX_REPORTS_PER_UPLOAD);
        for entry in &upload.entries {
            // What is kept of a URL is never longer than what may come in.
            assert!(format!("{entry:?}").len() < 4 * MAX_URL_BYTES + 4096);
        }
    }
});
