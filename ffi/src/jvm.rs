//! The JNI glue of the JVM binding (feature `jni`): the `native` methods of the Java class
//! `dev.vantage.Native` (`ffi/java/`), exported as `Java_dev_vantage_Native_*` from the same
//! library as the C ABI, over the same handle and the same agent.
//!
//! Every export runs in the C ABI's [`guard`] (`catch_unwind`, one error to status
//! conversion, the thread-local last error that `Native.lastError` reads) and returns a
//! [`VantageStatus`] as a Java `int`; the Java side turns errors into exceptions. The glue
//! holds no JNI global reference and attaches no thread to the JVM: it only reads its
//! arguments (each array element's local reference is deleted after use) and writes `long[]`
//! out-parameters; the agent's own thread never calls into Java.
//!
//! The cause chain of a `Throwable` is walked on the Java side (`getCause()`, cycles cut) and
//! arrives as a `String[]` of class names, outermost first: classified here with
//! [`java_exception_chain`], the most specific cause wins.

use std::ffi::CStr;

use jni::JNIEnv;
use jni::objects::{JClass, JLongArray, JObjectArray, JString};
use jni::sys::{jboolean, jint, jlong, jstring};
use vantage_agent::classify::java_exception_chain;
use vantage_agent::native::{HttpStatus, ReportInput};

use crate::error::{self, FfiError, guard, guard_void};
use crate::{
    VantageAgent, VantageStats, VantageStatus, vantage_agent_flush, vantage_agent_free,
    vantage_agent_stats,
};

/// How many class names of a cause chain are read (as `java_exception_chain` does).
const MAX_CHAIN: i32 = 64;

/// Reads a `String` argument. `what` names it in the error message.
fn string(env: &JNIEnv<'_>, s: &JString<'_>, what: &str) -> Result<String, FfiError> {
    if s.is_null() {
        return Err(FfiError::invalid(format!("{what} is null")));
    }
    // SAFETY: `s` is non-null and a java.lang.String: every caller passes a parameter or an
    // element of a `String[]` parameter of a native method declared with that type, which
    // the JVM checks before the call.
    let chars = unsafe { env.get_string_unchecked(s) }
        .map_err(|e| FfiError::invalid(format!("{what}: cannot be read ({e})")))?;
    Ok(String::from(chars))
}

/// Borrows the agent behind a Java `long` handle.
///
/// # Safety
/// `handle` is 0 or a pointer from `Native.open` not yet passed to `Native.free`
/// (`dev.vantage.VantageAgent` guarantees this with its lock).
unsafe fn agent<'a>(handle: jlong) -> Result<&'a VantageAgent, FfiError> {
    if handle == 0 {
        return Err(FfiError::Closed);
    }
    // SAFETY: forwarded from the caller.
    unsafe { crate::handle(handle as *const VantageAgent) }
}

fn status(s: VantageStatus) -> jint {
    s as jint
}

/// Writes `values` to the start of a `long[]` out-parameter of at least that length.
fn write_longs(env: &JNIEnv<'_>, out: &JLongArray<'_>, values: &[jlong]) -> Result<(), FfiError> {
    if out.is_null() {
        return Err(FfiError::invalid("out is null"));
    }
    let len = env.get_array_length(out).map_err(|e| FfiError::invalid(format!("out: {e}")))?;
    if (len as usize) < values.len() {
        return Err(FfiError::invalid(format!("out has {len} elements, needs {}", values.len())));
    }
    env.set_long_array_region(out, 0, values).map_err(|e| FfiError::invalid(format!("out: {e}")))
}

/// `static native int open(String config, String dataDir, long[] out)`: creates an agent
/// (`vantage_agent_new` without flags); `out[0]` is its handle.
#[unsafe(no_mangle)]
extern "system" fn Java_dev_vantage_Native_open<'l>(
    env: JNIEnv<'l>,
    _class: JClass<'l>,
    config: JString<'l>,
    data_dir: JString<'l>,
    out: JLongArray<'l>,
) -> jint {
    status(guard(|| {
        let config = string(&env, &config, "config")?;
        let dir = string(&env, &data_dir, "dataDir")?;
        let handle = crate::new_agent(&config, &dir, 0)?;
        let raw = Box::into_raw(handle);
        if let Err(e) = write_longs(&env, &out, &[raw as jlong]) {
            // SAFETY: `raw` came from Box::into_raw just above and was handed to nobody.
            unsafe { vantage_agent_free(raw) };
            return Err(e);
        }
        Ok(VantageStatus::VANTAGE_OK)
    }))
}

/// `static native void free(long handle)`: `vantage_agent_free` (shuts down, joins the
/// agent's thread). 0 is ignored.
///
/// # Safety
/// `handle` is 0 or a live handle from `open`, used by no other thread during or after the
/// call (the Java class holds its write lock).
#[unsafe(no_mangle)]
unsafe extern "system" fn Java_dev_vantage_Native_free<'l>(
    _env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
) {
    guard_void(|| {
        // SAFETY: forwarded from the caller; null (0) is ignored by vantage_agent_free.
        unsafe { vantage_agent_free(handle as *mut VantageAgent) };
    });
}

/// `static native int setConsent(long handle, boolean granted)`.
///
/// # Safety
/// `handle` is 0 or a live handle from `open`.
#[unsafe(no_mangle)]
unsafe extern "system" fn Java_dev_vantage_Native_setConsent<'l>(
    _env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
    granted: jboolean,
) -> jint {
    status(guard(|| {
        // SAFETY: forwarded from the caller.
        let a = unsafe { agent(handle) }?;
        a.open()?;
        a.agent.set_consent(granted != 0)?;
        Ok(VantageStatus::VANTAGE_OK)
    }))
}

/// `static native int recordThrowable(long handle, String service, String url,
/// String[] causeChain, int elapsedMs)`: records a failure classified from the class names of
/// a `Throwable` and its causes, outermost first (the most specific known cause wins).
///
/// # Safety
/// `handle` is 0 or a live handle from `open`.
#[unsafe(no_mangle)]
unsafe extern "system" fn Java_dev_vantage_Native_recordThrowable<'l>(
    mut env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
    service: JString<'l>,
    url: JString<'l>,
    chain: JObjectArray<'l>,
    elapsed_ms: jint,
) -> jint {
    status(guard(|| {
        // SAFETY: forwarded from the caller.
        let a = unsafe { agent(handle) }?;
        a.open()?;
        let service = string(&env, &service, "service")?;
        a.known_service(&service)?;
        let url = string(&env, &url, "url")?;
        let elapsed_ms = millis(elapsed_ms)?;
        if chain.is_null() {
            return Err(FfiError::invalid("causeChain is null"));
        }
        let len = env
            .get_array_length(&chain)
            .map_err(|e| FfiError::invalid(format!("causeChain: {e}")))?;
        let mut names = Vec::with_capacity(len.clamp(0, MAX_CHAIN) as usize);
        for i in 0..len.min(MAX_CHAIN) {
            let element = env
                .get_object_array_element(&chain, i)
                .map_err(|e| FfiError::invalid(format!("causeChain[{i}]: {e}")))?;
            let element = JString::from(element);
            let name = string(&env, &element, &format!("causeChain[{i}]"));
            // Freed now rather than when the method returns: a long chain would otherwise
            // exceed the 16 local references JNI guarantees a native method.
            env.delete_local_ref(element)
                .map_err(|e| FfiError::invalid(format!("causeChain[{i}]: {e}")))?;
            names.push(name?);
        }
        let error_type = java_exception_chain(names.iter().map(String::as_str));
        a.record(ReportInput::new(&service, &url, &error_type).elapsed_ms(elapsed_ms))
    }))
}

/// `static native int recordHttpStatus(long handle, String service, String url, int status,
/// int elapsedMs)`: records an HTTP response that counts as a failure (4xx, 5xx).
///
/// # Safety
/// `handle` is 0 or a live handle from `open`.
#[unsafe(no_mangle)]
unsafe extern "system" fn Java_dev_vantage_Native_recordHttpStatus<'l>(
    env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
    service: JString<'l>,
    url: JString<'l>,
    http_status: jint,
    elapsed_ms: jint,
) -> jint {
    status(guard(|| {
        // SAFETY: forwarded from the caller.
        let a = unsafe { agent(handle) }?;
        a.open()?;
        let service = string(&env, &service, "service")?;
        a.known_service(&service)?;
        let url = string(&env, &url, "url")?;
        let code = u16::try_from(http_status)
            .ok()
            .filter(|c| (400..=599).contains(c))
            .ok_or_else(|| FfiError::invalid(format!("status {http_status} is not 400..=599")))?;
        let input = ReportInput::new(&service, &url, &HttpStatus(code));
        a.record(input.elapsed_ms(millis(elapsed_ms)?))
    }))
}

/// `static native int countSuccess(long handle, String service, String url)`:
/// `vantage_agent_count_success`.
///
/// # Safety
/// `handle` is 0 or a live handle from `open`.
#[unsafe(no_mangle)]
unsafe extern "system" fn Java_dev_vantage_Native_countSuccess<'l>(
    env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
    service: JString<'l>,
    url: JString<'l>,
) -> jint {
    status(guard(|| {
        // SAFETY: forwarded from the caller.
        let a = unsafe { agent(handle) }?;
        a.open()?;
        let service = string(&env, &service, "service")?;
        a.known_service(&service)?;
        let url = string(&env, &url, "url")?;
        a.agent.count_success(&service, &url);
        Ok(VantageStatus::VANTAGE_OK)
    }))
}

/// `static native int flush(long handle, int timeoutMs, long[] undelivered)`:
/// `vantage_agent_flush`; `undelivered[0]` is the count of envelopes left on disk.
///
/// # Safety
/// `handle` is 0 or a live handle from `open`.
#[unsafe(no_mangle)]
unsafe extern "system" fn Java_dev_vantage_Native_flush<'l>(
    env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
    timeout_ms: jint,
    undelivered: JLongArray<'l>,
) -> jint {
    status(guard(|| {
        // SAFETY: forwarded from the caller.
        let a = unsafe { agent(handle) }?;
        let timeout = u32::try_from(timeout_ms)
            .map_err(|_| FfiError::invalid(format!("timeoutMs {timeout_ms} is negative")))?;
        let mut left = 0u64;
        // SAFETY: a live handle (checked by `agent`) and a writable u64.
        let s = unsafe { vantage_agent_flush(a, timeout, &mut left) };
        // The C call's last error (if any) stays set: nothing below touches it on success.
        write_longs(&env, &undelivered, &[i64::try_from(left).unwrap_or(i64::MAX)])?;
        Ok(s)
    }))
}

/// `static native int stats(long handle, long[] out)`: `vantage_agent_stats` as
/// `{recorded, sealedEnvelopes, deliveredEnvelopes, deliveredFailures, dropped,
/// queuedEnvelopes}`.
///
/// # Safety
/// `handle` is 0 or a live handle from `open`.
#[unsafe(no_mangle)]
unsafe extern "system" fn Java_dev_vantage_Native_stats<'l>(
    env: JNIEnv<'l>,
    _class: JClass<'l>,
    handle: jlong,
    out: JLongArray<'l>,
) -> jint {
    status(guard(|| {
        // SAFETY: forwarded from the caller.
        let a = unsafe { agent(handle) }?;
        let mut s = VantageStats {
            struct_size: size_of::<VantageStats>() as u32,
            ..VantageStats::default()
        };
        // SAFETY: a live handle and a vantage_stats with its struct_size set.
        let code = unsafe { vantage_agent_stats(a, &mut s) };
        if code != VantageStatus::VANTAGE_OK {
            return Ok(code);
        }
        let l = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        write_longs(
            &env,
            &out,
            &[
                l(s.recorded),
                l(s.sealed_envelopes),
                l(s.delivered_envelopes),
                l(s.delivered_failures),
                l(s.dropped),
                l(s.queued_envelopes),
            ],
        )?;
        Ok(VantageStatus::VANTAGE_OK)
    }))
}

/// `static native String lastError()`: the message of the calling thread's last failed call,
/// or null. Leaves it in place (it is not a `vantage_*` call).
#[unsafe(no_mangle)]
extern "system" fn Java_dev_vantage_Native_lastError<'l>(
    env: JNIEnv<'l>,
    _class: JClass<'l>,
) -> jstring {
    let ptr = error::last_error_ptr();
    if ptr.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: non-null pointers from last_error_ptr are this thread's NUL-terminated message,
    // valid until its next vantage call (none happens before the copy below).
    let message = unsafe { CStr::from_ptr(ptr) }.to_string_lossy();
    // On failure (out of memory) a Java exception is pending and is thrown on return.
    env.new_string(message.as_ref()).map_or(std::ptr::null_mut(), JString::into_raw)
}

/// `static native String version()`: the library version.
#[unsafe(no_mangle)]
extern "system" fn Java_dev_vantage_Native_version<'l>(
    env: JNIEnv<'l>,
    _class: JClass<'l>,
) -> jstring {
    env.new_string(env!("CARGO_PKG_VERSION")).map_or(std::ptr::null_mut(), JString::into_raw)
}

/// A Java `int` of milliseconds as the agent's `u32`.
fn millis(ms: jint) -> Result<u32, FfiError> {
    u32::try_from(ms).map_err(|_| FfiError::invalid(format!("elapsedMs {ms} is negative")))
}

// The exports need a running JVM: tests/tests/ffi_jvm.rs runs them on one (`java -Xcheck:jni`)
// against a real collector. What does not need a JVM is tested here.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_times_are_errors_naming_the_argument() {
        assert_eq!(millis(0).unwrap(), 0);
        assert_eq!(millis(jint::MAX).unwrap(), 2_147_483_647);
        let e = millis(-5).unwrap_err();
        assert_eq!(e.to_string(), "elapsedMs -5 is negative");
    }

    #[test]
    fn a_zero_handle_is_a_closed_agent_and_not_dereferenced() {
        // SAFETY: 0 is an allowed argument and is never dereferenced.
        let e = unsafe { agent(0) }.err().unwrap();
        assert!(matches!(e, FfiError::Closed), "{e}");
    }
}
