//! # vantage-ffi: the C ABI of the Vantage agent
//!
//! Mobile and desktop apps (Swift, Java/Kotlin through the JNI glue, C++, C) link `libvantage` (`cdylib` and
//! `staticlib`) and include the generated `include/vantage.h`. This crate is a thin shell
//! over the native agent ([`vantage_agent::native::Agent`]): it converts C strings and structs,
//! runs each call inside `catch_unwind`, and maps errors onto status codes plus a thread-local
//! message. It holds no reporting logic of its own, and it is the only crate in the workspace
//! that may contain `unsafe` code.
//!
//! ```text
//!  C / Swift / JNI                         libvantage (this crate)          vantage-agent
//!  ───────────────                         ───────────────────────          ─────────────
//!  vantage_agent_new(config, dir, flags) ─▶ parse TOML/JSON ─▶ runtime ─▶ Agent::start[_host_driven]
//!  vantage_agent_set_consent(a, true)    ─▶                              Agent::set_consent
//!  vantage_agent_record(a, &failure)     ─▶ classify (type | domain+code) ─▶ Agent::record
//!  vantage_agent_flush(a, ms, &left)     ─▶ block on the runtime       ─▶ Agent::flush
//!  host-driven: vantage_agent_next_upload ─▶ url, headers, body (owned here until answered)
//!               vantage_agent_upload_done/failed ─▶ Agent::handle_upload_outcome
//!  vantage_agent_free(a)                 ─▶ shutdown (seal to disk), join the runtime thread
//! ```
//!
//! ## Rules of the ABI
//! - Every function returns a [`VantageStatus`] (`VANTAGE_OK` = 0, errors negative); after an
//!   error, [`vantage_last_error`] returns a message owned by the library, valid on the calling
//!   thread until its next `vantage_*` call. No panic crosses the boundary (each export runs
//!   in `catch_unwind`; the library is built with `panic = "unwind"` for that reason).
//! - Strings in are NUL-terminated UTF-8, borrowed for the call only. Null or invalid
//!   arguments give `VANTAGE_ERR_INVALID_ARGUMENT`.
//! - A `vantage_agent*` may be used from any number of threads at once, except
//!   [`vantage_agent_free`], which must be the last call on it.
//! - Structs passed in or filled out start with `struct_size` (set it to `sizeof`), so they
//!   can grow without breaking old callers.
//!
//! ## What the C build leaves out
//! To keep the library small it depends on the agent's `native-base` feature only, without
//! `psl` and `hickory-dns` (`docs/ffi.md` has the sizes):
//! - config validation approximates registrable domains (the last two labels of a host, three
//!   under a built-in list of common suffixes such as `co.uk`): it never misses a collector
//!   that shares a service's domain, but may refuse one under a public suffix outside the list
//!   (`a.github.io` next to `b.github.io`); the message then says "approximate";
//! - names resolve through the system resolver only: a config naming `dns_servers` is refused
//!   (`VANTAGE_ERR_CONFIG`, the message names the field).
//!
//! ## The JVM binding (feature `jni`)
//! With the cargo feature `jni` the same library also exports the native methods of the Java
//! class `dev.vantage.Native` (`ffi/java`; module `jvm`, `Java_dev_vantage_Native_*`): the JNI
//! glue behind `dev.vantage.VantageAgent`, over the same handle, guard and last error. It
//! creates no JNI global reference and no thread. Off by default, so the C library carries
//! none of it. `docs/jvm.md` has the Java API and its tests.
//!
//! A Rust program would use the native agent directly; the example shows the calls as C
//! makes them:
//!
//! ```
//! use std::ffi::CStr;
//! // SAFETY: vantage_version returns a static NUL-terminated string.
//! let v = unsafe { CStr::from_ptr(vantage::vantage_version()) };
//! assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
//! ```

mod config;
mod error;
#[cfg(feature = "jni")]
mod jvm;

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char, c_void};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use vantage_agent::ErrorType;
use vantage_agent::classify::{self, ErrorDomain};
use vantage_agent::delivery::{Outcome, TransmitId};
use vantage_agent::native::{Agent, PlatformCode, Recorded, ReportInput};
use vantage_agent::report::{Protocol, ServiceId};
use vantage_agent::{NetworkType, Phase};

pub use crate::error::VantageStatus;
use crate::error::{FfiError, guard, guard_void};

/// `vantage_agent_new` flag: host-driven delivery. The library never uploads; the host takes
/// envelopes with `vantage_agent_next_upload`, POSTs them with its own HTTP stack, and answers
/// with `vantage_agent_upload_done` / `vantage_agent_upload_failed`.
pub const VANTAGE_AGENT_HOST_DRIVEN: u32 = 1;

/// Longest `vantage_agent_shutdown` (and `vantage_agent_free`) waits for the agent to seal
/// what is pending and close its buffer.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// Marks a live handle, to turn some use-after-free and garbage pointers into an error.
const MAGIC: u64 = 0x7661_6e74_6167_6521;

/// The opaque agent handle (`vantage_agent` in C).
pub struct VantageAgent {
    magic: u64,
    agent: Agent,
    runtime: AgentRuntime,
    closed: AtomicBool,
    /// Host-driven uploads handed out and not yet answered, by id: their memory is what the
    /// host's `vantage_upload` points into.
    uploads: Mutex<HashMap<u64, Box<PendingUpload>>>,
}

/// One failed request (`vantage_failure` in C). Zero it, set `struct_size` to
/// `sizeof(vantage_failure)`, then fill in the fields; unset pointers are null.
///
/// The cause is either `error_type` (a NEL type label such as `"tcp.refused"`), or a platform
/// error: `domain` plus `code` (`"posix"`, `"getaddrinfo"`, `"curl"`, `"nsurl"`, `"http"`,
/// the Apple domains `"NSPOSIXErrorDomain"` / `"NSURLErrorDomain"`, flavoured names such as
/// `"posix.darwin"`), or `domain = "java"` plus `exception` (a Java exception class name).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VantageFailure {
    /// `sizeof(vantage_failure)`.
    pub struct_size: u32,
    /// The monitored service's id, as configured (required).
    pub service: *const c_char,
    /// The host, or a URL (only its host is kept) (required).
    pub host: *const c_char,
    /// A NEL type label (`"dns.name_not_resolved"`, `"tcp.refused"`, ...), or null when
    /// `domain` is given.
    pub error_type: *const c_char,
    /// A platform error domain, or null when `error_type` is given.
    pub domain: *const c_char,
    /// The code in `domain` (errno, EAI_*, CURLcode, NSURLError code, HTTP status).
    pub code: i64,
    /// The Java exception class name, for `domain = "java"`; else null.
    pub exception: *const c_char,
    /// The NEL phase (`"dns"`, `"connection"`, `"application"`), or null for the type's.
    pub phase: *const c_char,
    /// `"http/1.1"`, `"h2"`, `"h3"`, or null (unknown).
    pub protocol: *const c_char,
    /// `"wifi"`, `"cellular"`, `"ethernet"`, or null (unknown).
    pub network: *const c_char,
    /// Milliseconds from the start of the request to the failure.
    pub elapsed_ms: u32,
    /// The HTTP status for application-phase failures, or 0.
    pub status: u16,
}

/// One request header (`vantage_header` in C).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VantageHeader {
    /// Lower-case name.
    pub name: *const c_char,
    /// Value.
    pub value: *const c_char,
}

/// One envelope for the host to POST (`vantage_upload` in C), filled by
/// `vantage_agent_next_upload`. Set `struct_size` to `sizeof(vantage_upload)` before the call.
/// Every pointer is owned by the library and stays valid until the upload is answered
/// (`vantage_agent_upload_done` / `_failed`) or the agent is freed.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VantageUpload {
    /// `sizeof(vantage_upload)`.
    pub struct_size: u32,
    /// Pass back to `vantage_agent_upload_done` / `vantage_agent_upload_failed`.
    pub id: u64,
    /// Where to POST: `https://host[:port][/prefix]/v1/envelopes`.
    pub url: *const c_char,
    /// Headers to send besides those the HTTP stack adds (`host`, `content-length`):
    /// `content-type` and `vantage-sent-at`.
    pub headers: *const VantageHeader,
    /// Entries in `headers`.
    pub header_count: usize,
    /// The request body (the sealed envelope).
    pub body: *const u8,
    /// Bytes in `body`.
    pub body_len: usize,
}

/// The agent's own accounting (`vantage_stats` in C). Set `struct_size` to
/// `sizeof(vantage_stats)` before `vantage_agent_stats`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct VantageStats {
    /// `sizeof(vantage_stats)`.
    pub struct_size: u32,
    /// Failures admitted by consent and sampling.
    pub recorded: u64,
    /// Envelopes sealed and stored.
    pub sealed_envelopes: u64,
    /// Envelopes a collector accepted.
    pub delivered_envelopes: u64,
    /// Failures in accepted envelopes.
    pub delivered_failures: u64,
    /// Failures dropped, all reasons together.
    pub dropped: u64,
    /// Envelopes waiting for delivery or in flight.
    pub queued_envelopes: u64,
    /// Since 0.1 (callers built against an older header get the fields above only): the
    /// stable label of the most recent delivery failure (`tls.cert.invalid`, `tcp.refused`,
    /// `dns.name_not_resolved`, `http.error`, ...), NUL-terminated; empty when every
    /// collector's last answer was an acceptance. `vantage_agent_last_delivery_error` gives
    /// the whole message.
    pub last_delivery_error: [c_char; 64],
    /// Delivery attempts failed in a row at the collector of `last_delivery_error`.
    pub delivery_failures: u64,
}

impl Default for VantageStats {
    fn default() -> Self {
        VantageStats {
            struct_size: 0,
            recorded: 0,
            sealed_envelopes: 0,
            delivered_envelopes: 0,
            delivered_failures: 0,
            dropped: 0,
            queued_envelopes: 0,
            last_delivery_error: [0; 64],
            delivery_failures: 0,
        }
    }
}

/// The size of `vantage_stats` before `last_delivery_error` was added: callers built against
/// that header pass it and get the fields it has.
const STATS_V1_SIZE: usize = std::mem::offset_of!(VantageStats, last_delivery_error);

/// Log levels passed to the `vantage_log_callback`.
pub const VANTAGE_LOG_WARN: i32 = 2;
/// Log level: information (a collector accepts reports again).
pub const VANTAGE_LOG_INFO: i32 = 3;

/// A log callback (`vantage_set_log_callback`): `level` is `VANTAGE_LOG_WARN` or
/// `VANTAGE_LOG_INFO`, `message` a NUL-terminated line valid for the call only.
pub type VantageLogCallback =
    Option<unsafe extern "C" fn(level: i32, message: *const c_char, user_data: *mut c_void)>;

struct LogHook {
    callback: unsafe extern "C" fn(i32, *const c_char, *mut c_void),
    user_data: usize,
}

static LOG_HOOK: Mutex<Option<LogHook>> = Mutex::new(None);

/// Passes one line to the log callback, if one is set.
fn log_line(level: i32, line: &str) {
    let hook = LOG_HOOK.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(hook) = hook.as_ref() {
        let text = CString::new(line.replace('\0', " ")).unwrap_or_default();
        // SAFETY: the caller of vantage_set_log_callback promised a callback safe to call from
        // any thread with the user_data it gave, until it is replaced.
        unsafe { (hook.callback)(level, text.as_ptr(), hook.user_data as *mut c_void) };
    }
}

struct PendingUpload {
    url: CString,
    /// Keeps the strings `header_structs` points into.
    _header_strings: Vec<(CString, CString)>,
    header_structs: Vec<VantageHeader>,
    body: Vec<u8>,
}

// SAFETY: the raw pointers in `header_structs` point into `_header_strings`, owned by the same
// value and never mutated, so moving or sharing it across threads is sound.
unsafe impl Send for PendingUpload {}

/// Borrows a required C string argument as UTF-8.
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string valid for the call.
unsafe fn required_str<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, FfiError> {
    if ptr.is_null() {
        return Err(FfiError::invalid(format!("{what} is null")));
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string alive for the call.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str().map_err(|_| FfiError::invalid(format!("{what} is not UTF-8")))
}

/// Like [`required_str`], with null meaning "not given".
///
/// # Safety
/// As [`required_str`].
unsafe fn optional_str<'a>(ptr: *const c_char, what: &str) -> Result<Option<&'a str>, FfiError> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded from the caller.
    unsafe { required_str(ptr, what) }.map(Some)
}

/// Borrows the handle.
///
/// # Safety
/// `agent` is null or a pointer returned by `vantage_agent_new` and not yet freed.
unsafe fn handle<'a>(agent: *const VantageAgent) -> Result<&'a VantageAgent, FfiError> {
    if agent.is_null() {
        return Err(FfiError::invalid("agent is null"));
    }
    // SAFETY: non-null, and the caller promises a live handle from vantage_agent_new.
    let a = unsafe { &*agent };
    if a.magic != MAGIC {
        return Err(FfiError::invalid("agent is not a live vantage_agent (freed?)"));
    }
    Ok(a)
}

/// The agent's tokio runtime: a current-thread runtime that its own thread (`vantage-agent`)
/// drives until [`AgentRuntime::stop`]. The blocking calls run their future on the caller's
/// thread through the handle while that thread drives the timers and sockets. A current-thread
/// runtime rather than a one-worker multi-thread one: the library then links no work-stealing
/// scheduler (tokio without `rt-multi-thread`, docs/ffi.md "Size").
struct AgentRuntime {
    handle: tokio::runtime::Handle,
    /// Ends the driving thread's `block_on`; `None` once sent.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AgentRuntime {
    /// Builds the runtime and starts the thread that drives it.
    fn start() -> std::io::Result<AgentRuntime> {
        type Ready = (Mutex<Option<std::io::Result<tokio::runtime::Handle>>>, Condvar);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let ready: Arc<Ready> = Arc::new((Mutex::new(None), Condvar::new()));
        let built = ready.clone();
        let thread = std::thread::Builder::new().name("vantage-agent".into()).spawn(move || {
            // Built on this thread, not the caller's: tokio takes `thread::current()` of the
            // thread that builds a current-thread runtime, and on a thread the C host made
            // std never frees that handle (valgrind: "possibly lost"). For the same reason the
            // caller waits on a condition variable, not a channel (which takes it too).
            let publish = |outcome| {
                let (slot, signal) = &*built;
                *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(outcome);
                signal.notify_all();
            };
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => return publish(Err(e)),
            };
            publish(Ok(runtime.handle().clone()));
            // Ok on stop, Err when the sender is dropped: either way the runtime winds down.
            let _ = runtime.block_on(stopped);
            runtime.shutdown_timeout(Duration::from_secs(2));
        })?;
        let (slot, signal) = &*ready;
        let mut built = slot.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = loop {
            if let Some(outcome) = built.take() {
                break outcome;
            }
            built = signal.wait(built).unwrap_or_else(|p| p.into_inner());
        };
        drop(built);
        match outcome {
            Ok(handle) => Ok(AgentRuntime { handle, stop: Some(stop), thread: Some(thread) }),
            Err(e) => {
                let _ = thread.join();
                Err(e)
            }
        }
    }

    /// Runs `future` to completion on the calling thread (which must not run a runtime).
    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.handle.block_on(future)
    }

    /// Stops the driving thread, which then shuts the runtime down (waiting at most 2 s for
    /// its blocking tasks); with `join`, waits for that thread to end.
    fn stop(mut self, join: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take().filter(|_| join) {
            let _ = thread.join();
        }
    }
}

impl Drop for AgentRuntime {
    fn drop(&mut self) {
        // A handle dropped without `stop` (a failed start): end the thread, do not wait.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The blocking calls (flush, shutdown) wait on the library's runtime, which tokio forbids on
/// a thread that runs a runtime itself (a Rust host calling the C ABI from async code).
fn not_in_runtime() -> Result<(), FfiError> {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => Err(FfiError::invalid(
            "a blocking vantage call was made on a thread that runs a tokio runtime",
        )),
        Err(_) => Ok(()),
    }
}

impl VantageAgent {
    fn open(&self) -> Result<(), FfiError> {
        if self.closed.load(Ordering::SeqCst) { Err(FfiError::Closed) } else { Ok(()) }
    }

    fn host_driven(&self) -> Result<(), FfiError> {
        if self.agent.is_host_driven() { Ok(()) } else { Err(FfiError::WrongMode) }
    }

    fn shutdown(&self) -> Result<(), FfiError> {
        not_in_runtime()?;
        if self.closed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let result = self
            .runtime
            .block_on(async { tokio::time::timeout(SHUTDOWN_WAIT, self.agent.shutdown()).await });
        match result {
            Ok(Ok(())) | Ok(Err(vantage_agent::native::AgentError::Closed)) => Ok(()),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(FfiError::Timeout(format!(
                "the agent did not shut down within {} s",
                SHUTDOWN_WAIT.as_secs()
            ))),
        }
    }

    /// Hands one classified failure to the agent (`vantage_agent_record` and the JNI glue).
    fn record(&self, input: ReportInput) -> Result<VantageStatus, FfiError> {
        match self.agent.record(input) {
            Recorded::Kept | Recorded::NotSampled => Ok(VantageStatus::VANTAGE_OK),
            Recorded::NotConsented => Err(FfiError::NotConsented),
            Recorded::Invalid => Err(FfiError::invalid(
                "failure: the service id or host is not valid (see the config's services)",
            )),
            Recorded::Dropped(_) => Err(FfiError::QueueFull),
            _ => Err(FfiError::invalid("failure: not kept")),
        }
    }

    /// Refuses a well-formed service id that the config does not list
    /// (`VANTAGE_ERR_UNKNOWN_SERVICE`); a malformed one is left to `record`, which refuses
    /// it as an invalid argument.
    fn known_service(&self, service: &str) -> Result<(), FfiError> {
        let services = &self.agent.config().services;
        if service.parse::<ServiceId>().is_err()
            || services.iter().any(|s| s.id.as_str() == service)
        {
            return Ok(());
        }
        let known: Vec<&str> = services.iter().map(|s| s.id.as_str()).collect();
        Err(FfiError::UnknownService(format!(
            "service {service:?} is not in the config (services: {})",
            known.join(", ")
        )))
    }

    fn answer(&self, id: u64, outcome: Outcome) -> Result<VantageStatus, FfiError> {
        self.host_driven()?;
        let pending = self.uploads.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
        if pending.is_none() {
            return Err(FfiError::invalid(format!("no upload with id {id} is outstanding")));
        }
        self.agent.handle_upload_outcome(TransmitId(id), outcome)?;
        Ok(VantageStatus::VANTAGE_OK)
    }
}

/// The library version as a NUL-terminated string, valid for the life of the process.
/// Never fails; the caller must not free it.
#[unsafe(no_mangle)]
pub extern "C" fn vantage_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The message of the last error on the calling thread, or null when its last call
/// succeeded. Owned by the library: valid until the next `vantage_*` call on this thread;
/// copy it to keep it. Never fails.
#[unsafe(no_mangle)]
pub extern "C" fn vantage_last_error() -> *const c_char {
    error::last_error_ptr()
}

/// Creates an agent from `config` (the native agent's TOML schema, as TOML text or as the
/// equivalent JSON object) with its files under `data_dir` (which replaces any `data_dir` in
/// the config; nothing is written there before consent). `flags`: 0, or
/// `VANTAGE_AGENT_HOST_DRIVEN`. On success `*out` is the handle, freed with
/// `vantage_agent_free`; on error `*out` is set to null.
///
/// A grant persisted by an earlier run is restored, and its buffer delivered.
/// A data dir is one agent's: while an agent holds consent there, another one (in any
/// process) is refused it with `VANTAGE_ERR_IO`, here when a grant is persisted there,
/// else by `vantage_agent_set_consent`.
///
/// # Safety
/// `config` and `data_dir` are null or NUL-terminated strings; `out` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vantage_agent_new(
    config: *const c_char,
    data_dir: *const c_char,
    flags: u32,
    out: *mut *mut VantageAgent,
) -> VantageStatus {
    guard(|| {
        if out.is_null() {
            return Err(FfiError::invalid("out is null"));
        }
        // SAFETY: out is non-null and the caller promises it is writable.
        unsafe { out.write(std::ptr::null_mut()) };
        // SAFETY: the caller promises NUL-terminated strings (or null).
        let text = unsafe { required_str(config, "config") }?;
        // SAFETY: as above.
        let dir = unsafe { required_str(data_dir, "data_dir") }?;
        let handle = new_agent(text, dir, flags)?;
        // SAFETY: out is non-null and writable (checked above).
        unsafe { out.write(Box::into_raw(handle)) };
        Ok(VantageStatus::VANTAGE_OK)
    })
}

/// Parses the config and starts an agent with its runtime (`vantage_agent_new` and the JNI
/// glue's `open`).
fn new_agent(config: &str, data_dir: &str, flags: u32) -> Result<Box<VantageAgent>, FfiError> {
    if data_dir.is_empty() {
        return Err(FfiError::invalid("data_dir is empty"));
    }
    if flags & !VANTAGE_AGENT_HOST_DRIVEN != 0 {
        return Err(FfiError::invalid(format!("flags {flags:#x} has unknown bits")));
    }
    let config = config::parse(config, Some(Path::new(data_dir)))?;
    let runtime = AgentRuntime::start()
        .map_err(|e| vantage_agent::native::AgentError::Runtime(e.to_string()))?;
    let agent = if flags & VANTAGE_AGENT_HOST_DRIVEN != 0 {
        Agent::start_host_driven(config, Some(&runtime.handle))?
    } else {
        Agent::start(config, Some(&runtime.handle))?
    };
    agent.set_delivery_listener(Some(Arc::new(|url: &str, error: Option<&_>| match error {
        Some(e) => log_line(
            VANTAGE_LOG_WARN,
            &format!("vantage: reports are not being delivered to {url}: {}", e.message()),
        ),
        None => log_line(VANTAGE_LOG_INFO, &format!("vantage: {url} accepts reports again")),
    })));
    Ok(Box::new(VantageAgent {
        magic: MAGIC,
        agent,
        runtime,
        closed: AtomicBool::new(false),
        uploads: Mutex::new(HashMap::new()),
    }))
}

/// Shuts the agent down (seals what is pending to disk, as `vantage_agent_shutdown`), stops
/// its thread and frees the handle and every outstanding upload. Null is ignored. Must be the
/// last call on `agent`: no other thread may be using it.
///
/// # Safety
/// `agent` is null or a live handle from `vantage_agent_new`, not used by any other thread
/// during or after this call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vantage_agent_free(agent: *mut VantageAgent) {
    guard_void(|| {
        // SAFETY: the caller promises null or a live handle.
        if unsafe { handle(agent) }.is_err() {
            return;
        }
        // SAFETY: a live handle made by Box::into_raw in vantage_agent_new, and the caller
        // promises no other use during or after this call, so we may take it back.
        let mut boxed = unsafe { Box::from_raw(agent) };
        boxed.magic = 0;
        let blocking_allowed = not_in_runtime().is_ok();
        if blocking_allowed {
            let _ = boxed.shutdown();
        }
        let VantageAgent { agent, runtime, .. } = *boxed;
        drop(agent);
        // Joining the runtime's thread from inside another runtime would block it: there the
        // thread winds down on its own.
        runtime.stop(blocking_allowed);
    });
}

/// Shuts the agent down gracefully: seals what is pending to disk and closes the buffer
/// (undelivered envelopes are sent at the next start). Later records give
/// `VANTAGE_ERR_CLOSED`. A second call is a no-op. Waits at most 10 s
/// (`VANTAGE_ERR_TIMEOUT`).
///
/// # Safety
/// `agent` is null or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vantage_agent_shutdown(agent: *const VantageAgent) -> VantageStatus {
    guard(|| {
        // SAFETY: the caller promises null or a live handle.
        let a = unsafe { handle(agent) }?;
        a.shutdown()?;
        Ok(VantageStatus::VANTAGE_OK)
    })
}

/// Grants (`true`) or withdraws (`false`) the user's consent, synchronously. Granting creates
/// the data dir, a new identity key and the buffer; withdrawing deletes them and forgets what
/// was pending (a later grant gets a new, unlinkable key).
///
/// # Safety
/// `agent` is null or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vantage_agent_set_consent(
    agent: *const VantageAgent,
    granted: bool,
) -> VantageStatus {
    guard(|| {
        // SAFETY: the caller promises null or a live handle.
        let a = unsafe { handle(agent) }?;
        a.open()?;
        a.agent.set_consent(granted)?;
        Ok(VantageStatus::VANTAGE_OK)
    })
}

fn classify_failure(f: &VantageFailure) -> Result<ReportInput, FfiError> {
    // SAFETY (for every *_str call below): the caller of vantage_agent_record promises that
    // each non-null pointer in the struct is a NUL-terminated string valid for the call.
    let service = unsafe { required_str(f.service, "failure.service") }?;
    // SAFETY: as above.
    let host = unsafe { required_str(f.host, "failure.host") }?;
    // SAFETY: as above.
    let label = unsafe { optional_str(f.error_type, "failure.error_type") }?;
    // SAFETY: as above.
    let domain = unsafe { optional_str(f.domain, "failure.domain") }?;
    let mut input = match (label, domain) {
        (Some(label), None) => {
            let t = ErrorType::from_label(label)
                .map_err(|e| FfiError::invalid(format!("failure.error_type: {e}")))?;
            ReportInput::new(service, host, &t)
        }
        (None, Some("java")) => {
            // SAFETY: as above.
            let class = unsafe { required_str(f.exception, "failure.exception (domain java)") }?;
            ReportInput::new(service, host, &classify::java_exception(class))
        }
        (None, Some(domain)) => {
            domain
                .parse::<ErrorDomain>()
                .map_err(|e| FfiError::invalid(format!("failure.domain: {e}")))?;
            ReportInput::new(service, host, &PlatformCode { domain, code: f.code })
        }
        (Some(_), Some(_)) => {
            return Err(FfiError::invalid("failure: give error_type or domain, not both"));
        }
        (None, None) => return Err(FfiError::invalid("failure: error_type or domain is required")),
    };
    // SAFETY: as above.
    if let Some(phase) = unsafe { optional_str(f.phase, "failure.phase") }? {
        let phase =
            phase.parse::<Phase>().map_err(|e| FfiError::invalid(format!("failure.phase: {e}")))?;
        input = input.phase(phase);
    }
    // SAFETY: as above.
    if let Some(p) = unsafe { optional_str(f.protocol, "failure.protocol") }? {
        let protocol = Protocol::ALL
            .into_iter()
            .find(|k| *k != Protocol::Unknown && k.as_str() == p)
            .ok_or_else(|| FfiError::invalid(format!("failure.protocol: unknown {p:?}")))?;
        input = input.protocol(protocol);
    }
    // SAFETY: as above.
    if let Some(n) = unsafe { optional_str(f.network, "failure.network") }? {
        let network = n
            .parse::<NetworkType>()
            .map_err(|e| FfiError::invalid(format!("failure.network: {e}")))?;
        input = input.network(network);
    }
    if f.status != 0 {
        input = input.status(f.status);
    }
    Ok(input.elapsed_ms(f.elapsed_ms))
}

/// Refuses a caller's struct whose `struct_size` is below ours (built against an older
/// header), naming the field and the size expected.
fn struct_size_fits<T>(size: u32, field: &str, c_type: &str) -> Result<(), FfiError> {
    if (size as usize) < size_of::<T>() {
        return Err(FfiError::invalid(format!(
            "{field} is {size}, expected sizeof({c_type}) = {}",
            size_of::<T>()
        )));
    }
    Ok(())
}

/// Records a failed request. Never blocks on I/O. `VANTAGE_OK`: handed to the agent (it is
/// sealed and stored within about a second); `VANTAGE_ERR_NOT_CONSENTED`: nothing was kept;
/// `VANTAGE_ERR_QUEUE_FULL`: dropped and counted; `VANTAGE_ERR_INVALID_ARGUMENT`: a null
/// or non-UTF-8 string, a bad `struct_size`, an unknown label or domain, or a service id or
/// host the agent refuses.
///
/// # Safety
/// `agent` is null or a live handle; `failure` is null or points to a `vantage_failure`
/// whose non-null string fields are NUL-terminated and valid for the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vantage_agent_record(
    agent: *const VantageAgent,
    failure: *const VantageFailure,
) -> VantageStatus {
    guard(|| {
        // SAFETY: the caller promises null or a live handle.
        let a = unsafe { handle(agent) }?;
        if failure.is_null() {
            return Err(FfiError::invalid("failure is null"));
        }
        // SAFETY: non-null; the caller promises a vantage_failure. struct_size is read first
        // and alone, so a caller built against a smaller (older) struct is refused before
        // the rest is read.
        let size = unsafe { std::ptr::addr_of!((*failure).struct_size).read_unaligned() };
        struct_size_fits::<VantageFailure>(size, "failure.struct_size", "vantage_failure")?;
        // SAFETY: as above, and at least our struct's size is there.
        let f = unsafe { failure.read_unaligned() };
        a.open()?;
        let input = classify_failure(&f)?;
        // SAFETY: classify_failure read the same pointer as a NUL-terminated string just now.
        a.known_service(unsafe { required_str(f.service, "failure.service") }?)?;
        a.record(input)
    })
}

/// Counts a successful request of `service` at `host`, for failure ratios (sampled with the
/// config's `success_fraction`, default 1: every one). Never blocks; ignored without consent.
///
/// # Safety
/// `agent` is null or a live handle; `service` and `host` are null or NUL-terminated.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vantage_agent_count_success(
    agent: *const VantageAgent,
    service: *const c_char,
    host: *const c_char,
) -> VantageStatus {
    guard(|| {
        // SAFETY: the caller promises null or a live handle.
        let a = unsafe { handle(agent) }?;
        // SAFETY: the caller promises NUL-terminated strings (or null).
        let service = unsafe { required_str(service, "service") }?;
        // SAFETY: as above.
        let host = unsafe { required_str(host, "host") }?;
        a.open()?;
        a.known_service(service)?;
        a.agent.count_success(service, host);
        Ok(VantageStatus::VANTAGE_OK)
    })
}

/// Seals everything recorded so far and writes it to disk (always waited for), then waits up
/// to `timeout_ms` for delivery. `VANTAGE_OK`: nothing is left undelivered;
/// `VANTAGE_ERR_TIMEOUT`: `*undelivered` envelopes are still on disk (delivered later).
/// `undelivered` may be null. In host-driven mode, delivery is the host's: pass 0 unless
/// another thread is delivering.
///
/// # Safety
/// `agent` is null or a live handle; `undelivered` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vantage_agent_flush(
    agent: *const VantageAgent,
    timeout_ms: u32,
    undelivered: *mut u64,
) -> VantageStatus {
    guard(|| {
        // SAFETY: the caller promises null or a live handle.
        let a = unsafe { handle(agent) }?;
        a.open()?;
        not_in_runtime()?;
        let timeout = Duration::from_millis(u64::from(timeout_ms));
        let outcome = a.runtime.block_on(a.agent.flush(timeout))?;
        if !undelivered.is_null() {
            // SAFETY: non-null, and the caller promises it is writable.
            unsafe { undelivered.write(outcome.undelivered as u64) };
        }
        if outcome.undelivered == 0 {
            Ok(VantageStatus::VANTAGE_OK)
        } else {
            Err(FfiError::Timeout(format!(
                "{} envelope(s) still undelivered after {timeout_ms} ms (kept on disk)",
                outcome.undelivered
            )))
        }
    })
}

/// Fills `*out` with the agent's accounting.
///
/// # Safety
/// `agent` is null or a live handle; `out` is null or points to a `vantage_stats` whose
/// `struct_size` is set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vantage_agent_stats(
    agent: *const VantageAgent,
    out: *mut VantageStats,
) -> VantageStatus {
    guard(|| {
        // SAFETY: the caller promises null or a live handle.
        let a = unsafe { handle(agent) }?;
        if out.is_null() {
            return Err(FfiError::invalid("out is null"));
        }
        // SAFETY: non-null; the caller promises a vantage_stats.
        let size = unsafe { std::ptr::addr_of!((*out).struct_size).read_unaligned() };
        if (size as usize) < STATS_V1_SIZE {
            return Err(FfiError::invalid(format!(
                "out->struct_size is {size}, expected sizeof(vantage_stats) = {}",
                size_of::<VantageStats>()
            )));
        }
        let s = a.agent.stats();
        let written = (size as usize).min(size_of::<VantageStats>());
        let mut stats = VantageStats {
            struct_size: written as u32,
            recorded: s.recorded,
            sealed_envelopes: s.sealed_envelopes,
            delivered_envelopes: s.delivered_envelopes,
            delivered_failures: s.delivered_failures,
            dropped: s.dropped.total(),
            queued_envelopes: a.agent.queued_envelopes() as u64,
            ..VantageStats::default()
        };
        if let Some((failures, error)) = latest_delivery_error(&a.agent) {
            let label = error.as_str().as_bytes();
            let n = label.len().min(stats.last_delivery_error.len() - 1);
            for (dst, src) in stats.last_delivery_error.iter_mut().zip(&label[..n]) {
                *dst = *src as c_char;
            }
            stats.delivery_failures = u64::from(failures);
        }
        // SAFETY: `out` is non-null and the caller promises `written` (<= its struct_size)
        // writable bytes; `stats` is a plain repr(C) value at least that long.
        unsafe {
            std::ptr::copy_nonoverlapping(
                std::ptr::addr_of!(stats).cast::<u8>(),
                out.cast::<u8>(),
                written,
            );
        }
        Ok(VantageStatus::VANTAGE_OK)
    })
}

/// The most recent delivery failure among the collectors, with the failures in a row there.
fn latest_delivery_error(agent: &Agent) -> Option<(u32, vantage_agent::native::DeliveryError)> {
    agent
        .delivery_status()
        .into_iter()
        .filter_map(|c| {
            let at = c.status.last_error_at?;
            Some((at, c.status.consecutive_failures, c.status.last_error?))
        })
        .max_by_key(|(at, _, _)| *at)
        .map(|(_, n, e)| (n, e))
}

/// Writes the message of the most recent delivery failure (label, reason, what usually fixes
/// it; no URL) into `buf` (`len` bytes, NUL-terminated, cut if too long) and its full length
/// without the NUL into `*needed` (if not null). With no failure the message is empty and
/// `*needed` is 0.
///
/// # Safety
/// `agent` is null or a live handle; `buf` is null (then `len` must be 0) or has `len`
/// writable bytes; `needed` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vantage_agent_last_delivery_error(
    agent: *const VantageAgent,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> VantageStatus {
    guard(|| {
        // SAFETY: the caller promises null or a live handle.
        let a = unsafe { handle(agent) }?;
        if buf.is_null() && len != 0 {
            return Err(FfiError::invalid("buf is null but len is not 0"));
        }
        let message = latest_delivery_error(&a.agent).map(|(_, e)| e.message()).unwrap_or_default();
        let bytes = message.as_bytes();
        if !needed.is_null() {
            // SAFETY: non-null; the caller promises it is writable.
            unsafe { needed.write(bytes.len()) };
        }
        if len > 0 {
            let n = bytes.len().min(len - 1);
            // SAFETY: buf has len >= n + 1 writable bytes (the caller's promise).
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr().cast::<c_char>(), buf, n);
                buf.add(n).write(0);
            }
        }
        Ok(VantageStatus::VANTAGE_OK)
    })
}

/// Sets (or, with a null `callback`, removes) the library's log callback, for every agent of
/// the process: one line each time a collector's delivery failure cause changes (not once per
/// attempt), and when it accepts reports again. Called from the agents' threads; it must not
/// call back into the library. `user_data` is passed through.
///
/// # Safety
/// `callback` is null or a function safe to call from any thread with `user_data` until it
/// is replaced.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vantage_set_log_callback(
    callback: VantageLogCallback,
    user_data: *mut c_void,
) {
    guard_void(|| {
        *LOG_HOOK.lock().unwrap_or_else(|p| p.into_inner()) =
            callback.map(|callback| LogHook { callback, user_data: user_data as usize });
    })
}

/// Host-driven mode: the next envelope to POST now. `VANTAGE_OK`: `*out` is filled (its
/// pointers stay valid until the upload is answered); `VANTAGE_NO_UPLOAD`: nothing to send
/// now (see `vantage_agent_next_wakeup_ms`). Every upload taken must be answered with
/// `vantage_agent_upload_done` or `vantage_agent_upload_failed`; until then it counts against
/// the agent's in-flight limit (2).
///
/// # Safety
/// `agent` is null or a live handle; `out` is null or points to a `vantage_upload` whose
/// `struct_size` is set.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vantage_agent_next_upload(
    agent: *const VantageAgent,
    out: *mut VantageUpload,
) -> VantageStatus {
    guard(|| {
        // SAFETY: the caller promises null or a live handle.
        let a = unsafe { handle(agent) }?;
        if out.is_null() {
            return Err(FfiError::invalid("out is null"));
        }
        // SAFETY: non-null; the caller promises a vantage_upload.
        let size = unsafe { std::ptr::addr_of!((*out).struct_size).read_unaligned() };
        struct_size_fits::<VantageUpload>(size, "out->struct_size", "vantage_upload")?;
        a.host_driven()?;
        a.open()?;
        let Some(upload) = a.agent.poll_upload()? else {
            return Ok(VantageStatus::VANTAGE_NO_UPLOAD);
        };
        let c = |s: String| {
            CString::new(s).map_err(|_| FfiError::invalid("an upload string has a NUL byte"))
        };
        let header_strings = upload
            .headers
            .into_iter()
            .map(|(n, v)| Ok((c(n.to_owned())?, c(v)?)))
            .collect::<Result<Vec<_>, FfiError>>()?;
        let header_structs = header_strings
            .iter()
            .map(|(n, v)| VantageHeader { name: n.as_ptr(), value: v.as_ptr() })
            .collect();
        let pending = Box::new(PendingUpload {
            url: c(upload.url)?,
            _header_strings: header_strings,
            header_structs,
            body: upload.body,
        });
        let filled = VantageUpload {
            struct_size: size_of::<VantageUpload>() as u32,
            id: upload.id.0,
            url: pending.url.as_ptr(),
            headers: pending.header_structs.as_ptr(),
            header_count: pending.header_structs.len(),
            body: pending.body.as_ptr(),
            body_len: pending.body.len(),
        };
        // The heap data the pointers refer to does not move when the Box moves into the map.
        a.uploads.lock().unwrap_or_else(|p| p.into_inner()).insert(upload.id.0, pending);
        // SAFETY: non-null, writable, and at least sizeof(vantage_upload) (checked above).
        unsafe { out.write_unaligned(filled) };
        Ok(VantageStatus::VANTAGE_OK)
    })
}

/// Host-driven mode: the collector answered upload `id` with `http_status`;
/// `retry_after_secs` is the `Retry-After` delay in seconds, or negative when absent. 2xx is
/// delivered; 400/413 rejected (dropped, counted); 429/503 retried after the delay; anything
/// else is a server error (failover, backoff). Frees the upload's memory.
///
/// # Safety
/// `agent` is null or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vantage_agent_upload_done(
    agent: *const VantageAgent,
    id: u64,
    http_status: u16,
    retry_after_secs: i64,
) -> VantageStatus {
    guard(|| {
        // SAFETY: the caller promises null or a live handle.
        let a = unsafe { handle(agent) }?;
        if !(100..=599).contains(&http_status) {
            return Err(FfiError::invalid(format!("http_status {http_status} is not 100..=599")));
        }
        let delay_ms = u64::try_from(retry_after_secs).map_or(0, |s| s.saturating_mul(1000));
        let outcome = match http_status {
            200..=299 => Outcome::Accepted,
            400 | 413 => Outcome::Rejected { status: http_status },
            429 | 503 => Outcome::RetryAfter { status: http_status, delay_ms },
            _ => Outcome::ServerError { status: http_status },
        };
        a.answer(id, outcome)
    })
}

/// Host-driven mode: upload `id` got no HTTP answer (DNS, connect, TLS, timeout, connection
/// lost). The agent fails over and backs off. Frees the upload's memory.
///
/// # Safety
/// `agent` is null or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vantage_agent_upload_failed(
    agent: *const VantageAgent,
    id: u64,
) -> VantageStatus {
    guard(|| {
        // SAFETY: the caller promises null or a live handle.
        let a = unsafe { handle(agent) }?;
        a.answer(id, Outcome::NetworkError)
    })
}

/// Host-driven mode: in how many milliseconds `vantage_agent_next_upload` may have something
/// (0: now), or -1 when nothing is pending (ask again after the next record or answer).
///
/// # Safety
/// `agent` is null or a live handle; `out_ms` is null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn vantage_agent_next_wakeup_ms(
    agent: *const VantageAgent,
    out_ms: *mut i64,
) -> VantageStatus {
    guard(|| {
        // SAFETY: the caller promises null or a live handle.
        let a = unsafe { handle(agent) }?;
        if out_ms.is_null() {
            return Err(FfiError::invalid("out_ms is null"));
        }
        a.host_driven()?;
        let ms =
            a.agent.upload_wait().map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        // SAFETY: non-null, and the caller promises it is writable.
        unsafe { out_ms.write(ms) };
        Ok(VantageStatus::VANTAGE_OK)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_a_static_c_string() {
        // SAFETY: vantage_version returns a pointer to a NUL-terminated static string.
        let v = unsafe { CStr::from_ptr(vantage_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn blocking_calls_inside_a_tokio_runtime_are_errors_not_panics() {
        let dir = std::env::temp_dir().join(format!("vantage-ffi-rt-{}", std::process::id()));
        let config = CString::new(
            "collector_key = \"4310ee97e1bc2f0fcd1ac8b1e9e2ab5d5a9a1e4b1f0b4b38d1a4e2b6d4f1662a\"\n\
             [app]\nid = \"com.example.app\"\nversion = \"1.0\"\nplatform = \"linux\"\n\
             [[services]]\nid = \"checkout\"\nhosts = [\"api.example.com\"]\n\
             [[collectors]]\nurl = \"https://127.0.0.1:9\"\n",
        )
        .unwrap();
        let dir_c = CString::new(dir.to_str().unwrap()).unwrap();
        let mut agent = std::ptr::null_mut();
        // SAFETY: valid C strings and a writable out pointer.
        let s = unsafe { vantage_agent_new(config.as_ptr(), dir_c.as_ptr(), 0, &mut agent) };
        assert_eq!(s, VantageStatus::VANTAGE_OK);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            // SAFETY: a live handle from vantage_agent_new.
            let s = unsafe { vantage_agent_flush(agent, 0, std::ptr::null_mut()) };
            assert_eq!(s, VantageStatus::VANTAGE_ERR_INVALID_ARGUMENT);
            // SAFETY: as above.
            let s = unsafe { vantage_agent_shutdown(agent) };
            assert_eq!(s, VantageStatus::VANTAGE_ERR_INVALID_ARGUMENT);
            // SAFETY: as above; the last use of the handle.
            unsafe { vantage_agent_free(agent) };
            assert!(vantage_last_error().is_null(), "free inside a runtime did not panic");
        });
        assert!(!dir.exists(), "nothing was written without consent");
    }

    /// The C library leaves out the agent's `hickory-dns` feature: a config naming custom DNS
    /// servers is refused, with a message naming the field (built with the feature, as in a
    /// whole-workspace build, it is accepted).
    #[test]
    fn dns_servers_are_refused_unless_the_agent_can_use_them() {
        let dir = std::env::temp_dir().join(format!("vantage-ffi-dns-{}", std::process::id()));
        let config = CString::new(
            "collector_key = \"4310ee97e1bc2f0fcd1ac8b1e9e2ab5d5a9a1e4b1f0b4b38d1a4e2b6d4f1662a\"\n\
             dns_servers = [\"127.0.0.1:53\"]\n\
             [app]\nid = \"com.example.app\"\nversion = \"1.0\"\nplatform = \"linux\"\n\
             [[services]]\nid = \"checkout\"\nhosts = [\"api.example.com\"]\n\
             [[collectors]]\nurl = \"https://127.0.0.1:9\"\n",
        )
        .unwrap();
        let dir_c = CString::new(dir.to_str().unwrap()).unwrap();
        let mut agent = std::ptr::null_mut();
        // SAFETY: valid C strings and a writable out pointer.
        let s = unsafe { vantage_agent_new(config.as_ptr(), dir_c.as_ptr(), 0, &mut agent) };
        if vantage_agent::native::validate::DNS_SERVERS_SUPPORTED {
            assert_eq!(s, VantageStatus::VANTAGE_OK);
            // SAFETY: a live handle from vantage_agent_new; its last use.
            unsafe { vantage_agent_free(agent) };
        } else {
            assert_eq!(s, VantageStatus::VANTAGE_ERR_CONFIG);
            assert!(agent.is_null());
            // SAFETY: the last error is a NUL-terminated string owned by this thread.
            let msg = unsafe { CStr::from_ptr(vantage_last_error()) }.to_str().unwrap();
            assert!(msg.contains("dns_servers") && msg.contains("hickory-dns"), "{msg}");
        }
        assert!(!dir.exists(), "nothing was written without consent");
    }

    #[test]
    fn null_arguments_are_errors_with_messages() {
        let mut out = std::ptr::null_mut();
        // SAFETY: null pointers are allowed arguments; out is writable.
        let s = unsafe { vantage_agent_new(std::ptr::null(), c"/tmp/x".as_ptr(), 0, &mut out) };
        assert_eq!(s, VantageStatus::VANTAGE_ERR_INVALID_ARGUMENT);
        assert!(out.is_null());
        // SAFETY: the last error is a NUL-terminated string owned by this thread.
        let msg = unsafe { CStr::from_ptr(vantage_last_error()) };
        assert_eq!(msg.to_str().unwrap(), "config is null");
        // SAFETY: null handles are allowed arguments.
        let s = unsafe { vantage_agent_record(std::ptr::null(), std::ptr::null()) };
        assert_eq!(s, VantageStatus::VANTAGE_ERR_INVALID_ARGUMENT);
        // SAFETY: as above.
        unsafe { vantage_agent_free(std::ptr::null_mut()) };
    }
}
