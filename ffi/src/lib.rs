//! # vantage-ffi: the C ABI of the Vantage agent
//!
//! Mobile and desktop apps (Swift, Kotlin/JNI, C++, C) will link this library. So far it exports
//! only [`vantage_version`]; the agent handle, consent, recording, the host-driven delivery mode,
//! the generated header and the C tests come with the FFI issue. This is the only crate in the
//! workspace that may contain `unsafe` code.

use std::ffi::c_char;

/// The library version as a NUL-terminated string, valid for the life of the process.
/// Never fails; the caller must not free it.
#[unsafe(no_mangle)]
pub extern "C" fn vantage_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_a_static_c_string() {
        // SAFETY: vantage_version returns a pointer to a NUL-terminated static string.
        let v = unsafe { std::ffi::CStr::from_ptr(vantage_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
