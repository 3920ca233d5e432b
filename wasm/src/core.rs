//! [`Core`]: the agent core as a JavaScript class. Every method takes `now` (Unix ms, from
//! `Date.now()`) where the core needs time; the JS side owns timers, storage and the network.

use js_sys::{Array, Object, Reflect, Uint8Array};
use vantage_agent::ErrorType;
use vantage_agent::buffer::{EnvelopeStore, StoreLimits, StoredEnvelope};
use vantage_agent::consent::ConsentAction;
use vantage_agent::delivery::{DeliveryError, Outcome, Resolution, TransmitId};
use vantage_agent::drops::DropReason;
use vantage_agent::pipeline::{AgentCore, CoreConfig, Recorded, ReportInput};
use vantage_agent::report::{AppInfo, Host, Protocol, ServiceId, UnixMillis};
use vantage_agent::sampling::Sampling;
use vantage_agent::wire::CollectorPublicKey;
use wasm_bindgen::prelude::*;

use crate::classify::{FetchFailure, Timing, classify_fetch};
use crate::entropy::BrowserEntropy;
use crate::error::WasmError;
use crate::store::{JournalOp, JournalStore};
use crate::transmit::Transmit;

fn millis(ms: f64) -> UnixMillis {
    // `as` saturates: NaN and negatives become 0.
    UnixMillis(ms as u64)
}

fn get(obj: &JsValue, key: &str) -> Option<JsValue> {
    let v = Reflect::get(obj, &JsValue::from_str(key)).ok()?;
    (!v.is_undefined() && !v.is_null()).then_some(v)
}

fn string(obj: &JsValue, key: &'static str) -> Result<Option<String>, WasmError> {
    get(obj, key).map(|v| v.as_string().ok_or(WasmError::Config(key))).transpose()
}

fn number(obj: &JsValue, key: &'static str) -> Result<Option<f64>, WasmError> {
    match get(obj, key).map(|v| v.as_f64()) {
        None => Ok(None),
        Some(Some(n)) if n.is_finite() && n >= 0.0 => Ok(Some(n)),
        Some(_) => Err(WasmError::Config(key)),
    }
}

fn set(obj: &Object, key: &str, value: impl Into<JsValue>) {
    // Reflect.set on a plain, extensible object cannot fail.
    let _ = Reflect::set(obj, &JsValue::from_str(key), &value.into());
}

/// Reads the core's configuration from a JS config object (see `Core::new`).
fn config_of(options: &JsValue) -> Result<CoreConfig, WasmError> {
    let key: CollectorPublicKey = string(options, "collectorKey")?
        .ok_or(WasmError::Config("collectorKey"))?
        .trim()
        .parse()
        .map_err(|_| WasmError::Config("collectorKey"))?;
    let collectors = get(options, "collectors")
        .map(|v| Array::from(&v).length() as usize)
        .filter(|n| *n > 0)
        .ok_or(WasmError::Config("collectors"))?;
    let app_id = string(options, "appId")?.ok_or(WasmError::Config("appId"))?;
    let version = string(options, "appVersion")?.unwrap_or_else(|| "0".into());
    let platform = string(options, "platform")?.unwrap_or_else(|| "web".into());
    let app = AppInfo::new(&app_id, &version, &platform, crate::SDK)
        .map_err(|_| WasmError::Config("appId"))?;
    let mut config = CoreConfig::new(app, key, collectors);
    let mut limits = StoreLimits::default();
    if let Some(n) = number(options, "maxBytes")? {
        limits.max_bytes = n as u64;
    }
    if let Some(n) = number(options, "maxAgeMs")? {
        limits.max_age_ms = n as u64;
    }
    config.limits = limits;
    if let Some(n) = number(options, "sealDelayMs")? {
        config.seal_delay_ms = n as u64;
    }
    if let Some(n) = number(options, "scopeCheckIntervalMs")? {
        config.scope_check_interval_ms = (n > 0.0).then_some(n as u64);
    }
    if let Some(n) = number(options, "baseBackoffMs")? {
        config.delivery.base_backoff_ms = n as u64;
    }
    if let Some(n) = number(options, "maxBackoffMs")? {
        config.delivery.max_backoff_ms = n as u64;
    }
    // Unset rates keep the agent crate's defaults (`Sampling::default()`).
    let failure =
        number(options, "failureSampleRate")?.unwrap_or(config.sampling.failure_fraction());
    let success =
        number(options, "successSampleRate")?.unwrap_or(config.sampling.success_fraction());
    config.sampling =
        Sampling::new(failure, success).map_err(|_| WasmError::Config("failureSampleRate"))?;
    Ok(config)
}

fn protocol(label: &str) -> Protocol {
    match label {
        "http/1.1" | "http/1.0" => Protocol::Http1,
        "h2" => Protocol::H2,
        "h3" => Protocol::H3,
        _ => Protocol::Unknown,
    }
}

fn recorded_label(r: Recorded) -> &'static str {
    match r {
        Recorded::Kept => "kept",
        Recorded::NotSampled => "not_sampled",
        Recorded::NotConsented => "not_consented",
        Recorded::Dropped(_) => "dropped",
        Recorded::Invalid => "invalid",
        _ => "other",
    }
}

/// The collector's answer to an upload, as the native uploader maps it: `status` 0 means no
/// answer (a network error).
fn outcome(status: u16, retry_after_ms: f64) -> Outcome {
    match status {
        0 => Outcome::NetworkError,
        200..=299 => Outcome::Accepted,
        400 | 413 => Outcome::Rejected { status },
        429 | 503 => Outcome::RetryAfter { status, delay_ms: retry_after_ms as u64 },
        _ => Outcome::ServerError { status },
    }
}

/// The sans-IO agent core (`AgentCore`) with the browser's store mirror and RNG.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Core {
    inner: AgentCore<JournalStore, BrowserEntropy>,
    /// Envelopes read back from IndexedDB, until `finishLoad`.
    staged: Option<JournalStore>,
}

#[wasm_bindgen]
impl Core {
    /// A core with consent denied. `options` is the package's config object: `collectorKey`
    /// (hex), `collectors` (array of base URLs; their count is used here), `appId`,
    /// `appVersion` (default "0"), `platform` (default "web"), and optional tuning: `maxBytes`
    /// (1 MiB), `maxAgeMs` (7 days), `sealDelayMs` (500), `scopeCheckIntervalMs` (30 000; 0
    /// turns checks off), `baseBackoffMs`/`maxBackoffMs` (the delivery scheduler's),
    /// `failureSampleRate` (1), `successSampleRate` (1). Throws an `Error`
    /// naming the first invalid field.
    #[wasm_bindgen(constructor)]
    pub fn new(options: &JsValue) -> Result<Core, JsValue> {
        let config = config_of(options)?;
        let inner = AgentCore::new(config, JournalStore::new(), BrowserEntropy::new())
            .map_err(WasmError::from)?;
        Ok(Core { inner, staged: Some(JournalStore::new()) })
    }

    /// Puts back an envelope that IndexedDB held (before `finishLoad`).
    #[wasm_bindgen(js_name = loadEnvelope)]
    pub fn load_envelope(
        &mut self,
        seq: f64,
        created_at: f64,
        failures: f64,
        bytes: Vec<u8>,
    ) -> Result<(), JsValue> {
        let staged =
            self.staged.as_mut().ok_or(WasmError::Usage("loadEnvelope after finishLoad"))?;
        let envelope = StoredEnvelope {
            seq: seq as u64,
            created_at: millis(created_at),
            failures: failures as u64,
            bytes,
        };
        staged.load(envelope).map_err(WasmError::from)?;
        Ok(())
    }

    /// Ends loading: the loaded envelopes are queued for delivery, and sequence numbers
    /// continue at `nextSeq` at least (the high-water mark persisted beside them).
    #[wasm_bindgen(js_name = finishLoad)]
    pub fn finish_load(&mut self, next_seq: f64) -> Result<(), JsValue> {
        let staged = self.staged.take().ok_or(WasmError::Usage("finishLoad called twice"))?;
        let _empty = self.inner.replace_store(staged).map_err(WasmError::from)?;
        self.inner.ensure_next_seq(next_seq as u64);
        Ok(())
    }

    /// Brings back a grant persisted earlier: the 32-byte identity secret and when it was given.
    #[wasm_bindgen(js_name = restoreConsent)]
    pub fn restore_consent(&mut self, secret: &[u8], since: f64) -> Result<(), JsValue> {
        let secret: [u8; 32] =
            secret.try_into().map_err(|_| WasmError::Usage("identity secret is not 32 bytes"))?;
        self.inner.restore_consent(secret, millis(since));
        Ok(())
    }

    /// The user opts in. Returns the new identity secret (32 bytes) to persist, or `undefined`
    /// when consent was already granted.
    pub fn grant(&mut self, now: f64) -> Option<Vec<u8>> {
        let actions = self.inner.grant(millis(now));
        let persist = actions.iter().any(|a| matches!(a, ConsentAction::PersistIdentity { .. }));
        if !persist {
            return None;
        }
        self.inner.consent().identity().map(|id| id.secret_bytes().to_vec())
    }

    /// The user opts out: everything collected is deleted (the journal then holds a `clear`)
    /// and the identity is forgotten. The JS side cancels uploads and deletes the database.
    pub fn withdraw(&mut self, now: f64) -> Result<(), JsValue> {
        let (_actions, cleared) = self.inner.withdraw(millis(now));
        cleared.map_err(WasmError::from)?;
        Ok(())
    }

    /// True while consent is granted.
    #[wasm_bindgen(js_name = isGranted)]
    pub fn is_granted(&self) -> bool {
        self.inner.consent().is_granted()
    }

    /// The NEL label for a failed fetch: `kind` is `"http"` (with `status`), `"timeout"`,
    /// `"abort"` or `"network"`; `connectEnd`/`responseStart` come from a Resource Timing entry
    /// (0 when unknown). See `classify` in the crate docs.
    #[wasm_bindgen(js_name = classifyFetch)]
    pub fn classify_fetch(
        kind: &str,
        status: u16,
        connect_end: f64,
        response_start: f64,
    ) -> String {
        let timing = Timing { connect_end, response_start };
        match FetchFailure::from_kind(kind, status) {
            Some(f) => classify_fetch(f, Some(timing)).as_str().to_owned(),
            None => ErrorType::Unknown.as_str().to_owned(),
        }
    }

    /// A failed request of `service` to `url` (only its host is kept), of NEL type
    /// `errorType` (an unknown but well-formed label is kept as is), with `status` (0: none),
    /// `elapsedMs` and the `protocol` label (`"h2"`, `"http/1.1"`, `""`). Returns `"kept"`,
    /// `"not_sampled"`, `"not_consented"`, `"dropped"` or `"invalid"`.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        service: &str,
        url: &str,
        error_type: &str,
        status: u16,
        elapsed_ms: f64,
        protocol_label: &str,
        now: f64,
    ) -> String {
        let Ok(error_type) = ErrorType::from_label(error_type) else {
            return recorded_label(Recorded::Invalid).into();
        };
        let mut input = ReportInput::new(service, url, &error_type)
            .elapsed_ms(elapsed_ms.min(f64::from(u32::MAX)) as u32)
            .protocol(protocol(protocol_label));
        if status != 0 {
            input = input.status(status);
        }
        let now = millis(now);
        let built = input.build(&mut BrowserEntropy::new(), now);
        let recorded = match built {
            Ok(report) => self.inner.handle_record(report, now),
            Err(_) => Recorded::Invalid,
        };
        recorded_label(recorded).into()
    }

    /// A successful request of `service` to `url` (counted when sampled, for failure ratios).
    #[wasm_bindgen(js_name = recordSuccess)]
    pub fn record_success(&mut self, service: &str, url: &str, now: f64) {
        if let (Ok(service), Ok(host)) = (service.parse::<ServiceId>(), Host::from_url(url)) {
            self.inner.handle_success(&service, &host, millis(now));
        }
    }

    /// Seals what is due; returns the number of envelopes stored.
    #[wasm_bindgen(js_name = pollSeal)]
    pub fn poll_seal(&mut self, now: f64) -> Result<u32, JsValue> {
        Ok(self.inner.poll_seal(millis(now)).map_err(WasmError::from)? as u32)
    }

    /// Seals everything pending now (flush, page hide).
    #[wasm_bindgen(js_name = sealPending)]
    pub fn seal_pending(&mut self, now: f64) -> Result<u32, JsValue> {
        Ok(self.inner.seal_pending(millis(now)).map_err(WasmError::from)? as u32)
    }

    /// The next envelope to send now, or `undefined`.
    #[wasm_bindgen(js_name = pollTransmit)]
    pub fn poll_transmit(&mut self, now: f64) -> Result<Option<Transmit>, JsValue> {
        let t = self.inner.poll_transmit(millis(now)).map_err(WasmError::from)?;
        Ok(t.map(Transmit::from))
    }

    /// The collector's answer to transmit `id`: the HTTP `status` (0: no answer) and the
    /// `Retry-After` delay in ms (0 when absent); for status 0, `error` is what `fetch` threw
    /// (`"timeout"` for a timeout; browsers do not say more, such as a TLS reason). Returns
    /// `"delivered"`, `"dropped"`, `"retry"` or `"stale"`.
    #[wasm_bindgen(js_name = handleOutcome)]
    pub fn handle_outcome(
        &mut self,
        id: f64,
        status: u16,
        retry_after_ms: f64,
        now: f64,
        error: Option<String>,
    ) -> Result<String, JsValue> {
        let outcome = outcome(status, retry_after_ms);
        let cause = match (outcome, error) {
            (Outcome::NetworkError, Some(e)) if e == "timeout" => {
                Some(DeliveryError::network(ErrorType::TcpTimedOut, "no answer in time"))
            }
            (Outcome::NetworkError, Some(e)) => Some(DeliveryError::network(
                ErrorType::Unknown,
                e.chars().take(200).collect::<String>(),
            )),
            _ => None,
        };
        let r = self
            .inner
            .handle_outcome_with_cause(TransmitId(id as u64), outcome, cause, millis(now))
            .map_err(WasmError::from)?;
        Ok(match r {
            Resolution::Delivered { .. } => "delivered",
            Resolution::Dropped { .. } => "dropped",
            Resolution::Retry { .. } => "retry",
            _ => "stale",
        }
        .into())
    }

    /// The stable label of the most recent delivery failure (`tcp.timed_out`, `http.error`,
    /// `unknown`, ...), or `undefined` when every collector's last answer was an acceptance.
    #[wasm_bindgen(js_name = deliveryErrorLabel)]
    pub fn delivery_error_label(&self) -> Option<String> {
        self.latest_delivery_error().map(|e| e.as_str().to_owned())
    }

    /// The message of the most recent delivery failure (label, reason, what usually fixes
    /// it), or `undefined`.
    #[wasm_bindgen(js_name = deliveryErrorMessage)]
    pub fn delivery_error_message(&self) -> Option<String> {
        self.latest_delivery_error().map(|e| e.message())
    }

    fn latest_delivery_error(&self) -> Option<DeliveryError> {
        self.inner
            .collector_statuses()
            .iter()
            .filter_map(|s| Some((s.last_error_at?, s.last_error.clone()?)))
            .max_by_key(|(at, _)| *at)
            .map(|(_, e)| e)
    }

    /// When to call `pollSeal`/`pollTransmit` next (Unix ms), or `undefined` when idle.
    #[wasm_bindgen(js_name = pollTimeout)]
    pub fn poll_timeout(&self) -> Option<f64> {
        self.inner.poll_timeout().map(|t| t.0 as f64)
    }

    /// True once when a scope check (a `/v1/ping`) should start now.
    #[wasm_bindgen(js_name = pollScopeCheck)]
    pub fn poll_scope_check(&mut self, now: f64) -> bool {
        self.inner.poll_scope_check(millis(now))
    }

    /// The scope check's answer: did a collector answer?
    #[wasm_bindgen(js_name = handleScopeResult)]
    pub fn handle_scope_result(&mut self, reachable: bool, now: f64) {
        self.inner.handle_scope_result(reachable, millis(now));
    }

    /// True while a scope check was asked for and has not answered.
    #[wasm_bindgen(js_name = scopePending)]
    pub fn scope_pending(&self) -> bool {
        self.inner.scope_pending()
    }

    /// The store changes since the last call, in order, as objects:
    /// `{op: "put", seq, createdAt, failures, bytes}`, `{op: "remove", seq}`, `{op: "clear"}`.
    #[wasm_bindgen(js_name = takeJournal)]
    pub fn take_journal(&self) -> Array {
        let ops = self.inner.store().take_journal();
        let out = Array::new();
        for op in ops {
            let o = Object::new();
            match op {
                JournalOp::Put(e) => {
                    set(&o, "op", "put");
                    set(&o, "seq", e.seq as f64);
                    set(&o, "createdAt", e.created_at.0 as f64);
                    set(&o, "failures", e.failures as f64);
                    set(&o, "bytes", Uint8Array::from(e.bytes.as_slice()));
                }
                JournalOp::Remove(seq) => {
                    set(&o, "op", "remove");
                    set(&o, "seq", seq as f64);
                }
                JournalOp::Clear => set(&o, "op", "clear"),
            }
            out.push(&o);
        }
        out
    }

    /// True when store changes wait for `takeJournal`.
    #[wasm_bindgen(js_name = hasJournal)]
    pub fn has_journal(&self) -> bool {
        self.inner.store().has_journal()
    }

    /// The bytes of every stored envelope, oldest first (for the last `fetch(keepalive)` on page hide).
    pub fn envelopes(&self) -> Result<Array, JsValue> {
        let store = self.inner.store();
        let out = Array::new();
        for meta in store.list().map_err(WasmError::from)? {
            if let Some(e) = store.get(meta.seq).map_err(WasmError::from)? {
                out.push(&Uint8Array::from(e.bytes.as_slice()));
            }
        }
        Ok(out)
    }

    /// The sequence number the next envelope gets (persisted as a high-water mark).
    #[wasm_bindgen(js_name = nextSeq)]
    pub fn next_seq(&self) -> f64 {
        self.inner.next_seq() as f64
    }

    /// The agent's own accounting: `{recorded, notSampled, sealedEnvelopes, deliveredEnvelopes,
    /// deliveredFailures, pendingFailures, queuedEnvelopes, storedEnvelopes, storedBytes,
    /// dropped: {reason: failures}}`.
    pub fn stats(&self) -> Object {
        let s = self.inner.stats();
        let o = Object::new();
        set(&o, "recorded", s.recorded as f64);
        set(&o, "notSampled", s.not_sampled as f64);
        set(&o, "sealedEnvelopes", s.sealed_envelopes as f64);
        set(&o, "deliveredEnvelopes", s.delivered_envelopes as f64);
        set(&o, "deliveredFailures", s.delivered_failures as f64);
        set(&o, "pendingFailures", self.inner.pending_failures() as f64);
        set(&o, "queuedEnvelopes", self.inner.queued_envelopes() as f64);
        set(&o, "storedEnvelopes", self.inner.store().len() as f64);
        set(&o, "storedBytes", self.inner.store().bytes_used() as f64);
        let dropped = Object::new();
        for reason in DropReason::KNOWN {
            set(&dropped, reason.as_str(), s.dropped.count(reason) as f64);
        }
        set(&o, "dropped", dropped);
        o
    }
}
