//! Status codes, the one error type of the C ABI, the thread-local last-error message, and
//! the guard every export runs in (`catch_unwind`, error to status conversion in one place).

use std::cell::RefCell;
use std::ffi::{CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};

use vantage_agent::native::AgentError;

/// What a call did: `VANTAGE_OK` (0), a positive informational code, or a negative error.
/// After a negative code, `vantage_last_error()` says what was
/// wrong.
#[repr(i32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(non_camel_case_types)] // the C names, as they appear in vantage.h
pub enum VantageStatus {
    /// Done.
    VANTAGE_OK = 0,
    /// `vantage_agent_next_upload`: nothing to send now (ask again after
    /// `vantage_agent_next_wakeup_ms`).
    VANTAGE_NO_UPLOAD = 1,
    /// A null pointer, a string that is not UTF-8, a bad struct size, an unknown error
    /// domain, flag or upload id, an invalid service id or host.
    VANTAGE_ERR_INVALID_ARGUMENT = -1,
    /// The configuration did not parse or is invalid (the message names the field).
    VANTAGE_ERR_CONFIG = -2,
    /// A file in the data dir or the buffer could not be written, read or deleted, or the
    /// agent's thread could not start.
    VANTAGE_ERR_IO = -3,
    /// Consent is not granted: nothing was kept.
    VANTAGE_ERR_NOT_CONSENTED = -4,
    /// The timeout passed with envelopes still undelivered (they stay on disk and are
    /// delivered later).
    VANTAGE_ERR_TIMEOUT = -5,
    /// The agent has been shut down.
    VANTAGE_ERR_CLOSED = -6,
    /// A bug in the library panicked; the panic was caught at the boundary.
    VANTAGE_ERR_PANIC = -7,
    /// The failure was dropped: the agent's queue was full (counted as `queue_full`).
    VANTAGE_ERR_QUEUE_FULL = -8,
    /// A host-driven call on an agent that delivers by itself.
    VANTAGE_ERR_WRONG_MODE = -9,
    /// A well-formed service id that the config does not list (a typo would otherwise make a
    /// new service): nothing was kept; the message names the id and the configured ones.
    VANTAGE_ERR_UNKNOWN_SERVICE = -10,
}

/// The error of one call, converted to a status and a message in one place ([`status`]).
/// Messages name the argument or field; they carry no secret and no report content.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FfiError {
    /// A caller mistake in the arguments.
    #[error("{0}")]
    InvalidArgument(String),
    /// The config text did not parse as JSON or TOML, or did not fit the schema.
    #[error("{0}")]
    Config(String),
    /// The agent said no.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// Consent is not granted.
    #[error("consent is not granted: nothing was kept")]
    NotConsented,
    /// The queue was full.
    #[error("the agent's queue is full: the failure was dropped and counted")]
    QueueFull,
    /// Shut down.
    #[error("the agent has shut down")]
    Closed,
    /// Host-driven call on a self-delivering agent.
    #[error("the agent delivers by itself (not created with VANTAGE_AGENT_HOST_DRIVEN)")]
    WrongMode,
    /// Flush or shutdown did not finish in time.
    #[error("{0}")]
    Timeout(String),
    /// A service id the config does not list.
    #[error("{0}")]
    UnknownService(String),
}

impl FfiError {
    pub(crate) fn invalid(message: impl Into<String>) -> FfiError {
        FfiError::InvalidArgument(message.into())
    }

    fn status(&self) -> VantageStatus {
        use VantageStatus::*;
        match self {
            FfiError::InvalidArgument(_) => VANTAGE_ERR_INVALID_ARGUMENT,
            FfiError::Config(_) => VANTAGE_ERR_CONFIG,
            FfiError::Agent(e) => match e {
                AgentError::Config(_) => VANTAGE_ERR_CONFIG,
                AgentError::Closed => VANTAGE_ERR_CLOSED,
                AgentError::Probe(_) => VANTAGE_ERR_INVALID_ARGUMENT,
                _ => VANTAGE_ERR_IO,
            },
            FfiError::NotConsented => VANTAGE_ERR_NOT_CONSENTED,
            FfiError::QueueFull => VANTAGE_ERR_QUEUE_FULL,
            FfiError::Closed => VANTAGE_ERR_CLOSED,
            FfiError::WrongMode => VANTAGE_ERR_WRONG_MODE,
            FfiError::Timeout(_) => VANTAGE_ERR_TIMEOUT,
            FfiError::UnknownService(_) => VANTAGE_ERR_UNKNOWN_SERVICE,
        }
    }
}

thread_local! {
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(message: &str) {
    // An interior NUL cannot come from our messages, but a caller's string quoted in one
    // could carry one only if it was not NUL-terminated there: replace rather than lose it.
    let text = CString::new(message.replace('\0', "\u{fffd}"))
        .expect("interior NULs were replaced just above");
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(text));
}

fn clear_last_error() {
    LAST_ERROR.with(|e| *e.borrow_mut() = None);
}

/// The last error message of this thread, or null.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |s| s.as_ptr()))
}

/// Runs one export: clears this thread's last error, catches panics, and turns an error into
/// its status and message.
pub(crate) fn guard(f: impl FnOnce() -> Result<VantageStatus, FfiError>) -> VantageStatus {
    clear_last_error();
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            e.status()
        }
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            set_last_error(&format!("internal error (panic caught at the C boundary): {what}"));
            VantageStatus::VANTAGE_ERR_PANIC
        }
    }
}

/// Like [`guard`], for exports without a status (`vantage_agent_free`): a panic is swallowed.
pub(crate) fn guard_void(f: impl FnOnce()) {
    clear_last_error();
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        set_last_error("internal error (panic caught at the C boundary)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_turns_errors_and_panics_into_statuses_and_messages() {
        assert_eq!(guard(|| Ok(VantageStatus::VANTAGE_OK)), VantageStatus::VANTAGE_OK);
        assert!(last_error_ptr().is_null());
        assert_eq!(
            guard(|| Err(FfiError::invalid("service is null"))),
            VantageStatus::VANTAGE_ERR_INVALID_ARGUMENT
        );
        // SAFETY: non-null pointers from last_error_ptr point to this thread's CString.
        let msg = unsafe { std::ffi::CStr::from_ptr(last_error_ptr()) };
        assert_eq!(msg.to_str().unwrap(), "service is null");
        let status = guard(|| panic!("boom"));
        assert_eq!(status, VantageStatus::VANTAGE_ERR_PANIC);
        // SAFETY: as above.
        let msg = unsafe { std::ffi::CStr::from_ptr(last_error_ptr()) };
        assert!(msg.to_str().unwrap().contains("boom"));
        // The next call clears it.
        guard(|| Ok(VantageStatus::VANTAGE_OK));
        assert!(last_error_ptr().is_null());
    }
}
