//! The agent core: everything between `record()` and the bytes on the wire, sans-IO.
//!
//! [`AgentCore`] ties together [`consent`](crate::consent), [`sampling`](crate::sampling),
//! [`coalesce`](crate::coalesce), batching, sealing ([`seal_batch`]), the envelope store
//! ([`EnvelopeStore`]) and the delivery [`Scheduler`]. Time comes in as `now`, randomness from
//! the [`Entropy`] it owns, and storage is whatever [`EnvelopeStore`] it is given, so the native
//! runtime, the C library's host-driven mode and the wasm module all drive the same code:
//!
//! ```text
//!  handle_record(report, now) ──consent?──sample?──scope──▶ coalescer ──┐ (≤ seal_delay_ms)
//!  handle_success(service, host, now) ──sample?──▶ target counts ───────┤
//!                                                                       ▼
//!  poll_seal(now) ──▶ Batch { seq, reports, drops, targets, sampling } ──seal──▶ store.put
//!                                                              evict(bytes, age) ─▶ drops
//!  poll_transmit(now) ──▶ CoreTransmit { id, collector, bytes } ──(runtime POSTs)──┐
//!  handle_outcome(id, outcome, now) ◀──────────────────────────────────────────────┘
//!  poll_timeout() ──▶ the next deadline (seal, retry, pacing); None when idle
//!  poll_scope_check(now) / handle_scope_result(reachable, now): see "Scope" below
//! ```
//!
//! ## Durability and batching
//! A recorded failure waits in memory at most `seal_delay_ms` (default 500 ms) after the first
//! pending one, then everything pending is sealed into envelopes of at most
//! [`MAX_REPORTS`] reports (split further if an envelope would exceed
//! [`MAX_ENVELOPE_BYTES`](crate::wire::MAX_ENVELOPE_BYTES)) and written to the store. Identical
//! failures within that time are coalesced into one report with a count.
//!
//! ## Accounting
//! Every sampled failure ends delivered or dropped with a [`DropReason`]; drops since the last
//! batch ride in the next one, except [`DropReason::ConsentWithdrawn`], which is kept in
//! [`CoreStats`] only (see [`consent`](crate::consent)).
//!
//! ## Scope
//! After a failure is recorded, the core asks (through [`AgentCore::poll_scope_check`], at most
//! once per `scope_check_interval_ms`, default 30 s, and only while consented) for a
//! reachability check of a collector. The answer ([`AgentCore::handle_scope_result`]) sets the
//! scope of every report observed from the check's start until one interval after its answer:
//! [`Scope::Path`] when the collector was reachable, [`Scope::Local`] when not. While a check
//! is pending, a due seal waits for its answer, at most [`SCOPE_HOLD_MS`] longer (a blackholed
//! ping answers only at its timeout); reports sealed before an answer, or recorded without a
//! check, stay [`Scope::Unknown`].

use crate::buffer::{EnvelopeStore, Removal, StoreError, StoreLimits, StoredEnvelope};
use crate::classify;
use crate::coalesce::{Coalescer, DEFAULT_MAX_OPEN};
use crate::consent::{Consent, ConsentAction, record_withdrawn_drops};
use crate::delivery::{
    CauseChange, CollectorStatus, DeliveryConfig, DeliveryError, Outcome, Resolution, Scheduler,
    TransmitId,
};
use crate::drops::{DropCounts, DropReason};
use crate::entropy::Entropy;
use crate::report::{
    AppInfo, Batch, Host, Protocol, Report, ReportError, ReportId, SampleRates, ServiceId,
    TargetCounts, UnixMillis,
};
use crate::sampling::{Sampling, TargetCounter};
use crate::taxonomy::{ErrorType, NetworkType, Phase, Scope};
use crate::wire::{CollectorPublicKey, MAX_REPORTS, WireError, seal_batch};

/// Default time a recorded failure waits before it is sealed and stored: 500 ms. Reports must
/// be durable within about a second of `record()`; the other half second is margin for the
/// seal, the fsync and a busy machine (the kill -9 test failed with 900 ms under full CI load).
pub const DEFAULT_SEAL_DELAY_MS: u64 = 500;

/// How much longer than `seal_delay_ms` pending failures wait for a scope check in flight, so
/// they carry path/local rather than unknown (see [Scope](self#scope)).
pub const SCOPE_HOLD_MS: u64 = 2_000;

/// Default minimum time between two scope checks: 30 000 ms.
pub const DEFAULT_SCOPE_CHECK_INTERVAL_MS: u64 = 30_000;

/// Something the agent can classify into an [`ErrorType`]: the error a request failed with.
pub trait Classifiable {
    /// The NEL type.
    fn error_type(&self) -> ErrorType;
    /// The HTTP status, for application-phase failures that have one.
    fn status(&self) -> Option<u16> {
        None
    }
}

impl Classifiable for ErrorType {
    fn error_type(&self) -> ErrorType {
        self.clone()
    }
}

impl Classifiable for std::io::Error {
    /// [`classify::io_error`].
    fn error_type(&self) -> ErrorType {
        classify::io_error(self)
    }
}

impl Classifiable for std::io::ErrorKind {
    /// [`classify::io_error_kind`].
    fn error_type(&self) -> ErrorType {
        classify::io_error_kind(*self)
    }
}

#[cfg(feature = "rustls")]
impl Classifiable for rustls::Error {
    /// `classify::rustls_error`.
    fn error_type(&self) -> ErrorType {
        classify::rustls_error(self)
    }
}

/// An HTTP response status that counts as a failure (4xx, 5xx).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpStatus(pub u16);

impl Classifiable for HttpStatus {
    /// [`classify::http_status`]; a status that is not an error gives `unknown`.
    fn error_type(&self) -> ErrorType {
        classify::http_status(self.0).unwrap_or(ErrorType::Unknown)
    }
    fn status(&self) -> Option<u16> {
        (100..=599).contains(&self.0).then_some(self.0)
    }
}

/// A `(domain, code)` pair, as the C library and Apple's `NSError` carry them: see
/// [`classify::platform`] for the domains (`posix`, `getaddrinfo`, `curl`, `nsurl`, `http`,
/// `NSURLErrorDomain`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformCode<'a> {
    /// The domain name.
    pub domain: &'a str,
    /// The code.
    pub code: i64,
}

impl Classifiable for PlatformCode<'_> {
    fn error_type(&self) -> ErrorType {
        classify::platform(self.domain, self.code)
    }
    fn status(&self) -> Option<u16> {
        let http = self.domain == "http" && (100..=599).contains(&self.code);
        http.then_some(self.code as u16)
    }
}

/// Any error with a `source()` chain (hyper, reqwest): [`classify::error_chain`], with
/// `unknown` when nothing in the chain is recognised.
#[derive(Clone, Copy, Debug)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl Classifiable for ErrorChain<'_> {
    fn error_type(&self) -> ErrorType {
        classify::error_chain(self.0).unwrap_or(ErrorType::Unknown)
    }
}

/// One failed request, as the app describes it: what [`Report`]s are made from.
///
/// Only the host of `host` is kept (a whole URL may be given; path, query and user info are
/// dropped). Every setter documents its default.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct ReportInput {
    service: String,
    host: String,
    error_type: ErrorType,
    phase: Option<Phase>,
    status: Option<u16>,
    elapsed_ms: u32,
    protocol: Protocol,
    network: NetworkType,
    observed_at: Option<UnixMillis>,
}

impl ReportInput {
    /// A failure of `service` at `host` (a host or a URL), classified from `cause`: a
    /// `std::io::Error`, a `rustls::Error`, an [`ErrorType`], an [`HttpStatus`], a
    /// [`PlatformCode`], an [`ErrorChain`].
    pub fn new<C: Classifiable + ?Sized>(service: &str, host: &str, cause: &C) -> ReportInput {
        ReportInput {
            service: service.to_owned(),
            host: host.to_owned(),
            error_type: cause.error_type(),
            phase: None,
            status: cause.status(),
            elapsed_ms: 0,
            protocol: Protocol::Unknown,
            network: NetworkType::Unknown,
            observed_at: None,
        }
    }

    /// Milliseconds from the start of the request to the failure. Default: 0.
    pub fn elapsed_ms(mut self, ms: u32) -> Self {
        self.elapsed_ms = ms;
        self
    }
    /// The protocol. Default: unknown.
    pub fn protocol(mut self, protocol: Protocol) -> Self {
        self.protocol = protocol;
        self
    }
    /// The network type. Default: unknown.
    pub fn network(mut self, network: NetworkType) -> Self {
        self.network = network;
        self
    }
    /// The phase, when it differs from the type's. Default: the type's phase.
    pub fn phase(mut self, phase: Phase) -> Self {
        self.phase = Some(phase);
        self
    }
    /// The HTTP status (application phase only). Default: the cause's, if any.
    pub fn status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }
    /// When the failure happened. Default: when it is recorded.
    pub fn observed_at(mut self, at: UnixMillis) -> Self {
        self.observed_at = Some(at);
        self
    }
    /// The classified type.
    pub fn error_type(&self) -> &ErrorType {
        &self.error_type
    }

    /// Validates the input and makes a report with a fresh id, observed at `now` unless set.
    pub fn build(self, rng: &mut impl Entropy, now: UnixMillis) -> Result<Report, ReportError> {
        let mut b = Report::builder_owned(self.service, self.host, self.error_type)
            .elapsed_ms(self.elapsed_ms)
            .protocol(self.protocol)
            .network(self.network);
        if let Some(phase) = self.phase {
            b = b.phase(phase);
        }
        if let Some(status) = self.status {
            b = b.status(status);
        }
        if let Some(at) = self.observed_at {
            b = b.observed_at(at);
        }
        b.build_with_id(ReportId::new(now, rng), now)
    }
}

/// Configuration of the core. Build with [`CoreConfig::new`]; every public field documents its
/// default.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// The app that sends reports.
    pub app: AppInfo,
    /// The deployment's collector key envelopes are sealed to.
    pub collector_key: CollectorPublicKey,
    /// How many collectors (in configured order) the scheduler delivers to.
    pub collectors: usize,
    /// Sampling (default: every failure reported, every success counted).
    pub sampling: Sampling,
    /// Time a failure waits in memory before it is sealed (default [`DEFAULT_SEAL_DELAY_MS`]).
    pub seal_delay_ms: u64,
    /// Most open coalescer groups (default [`DEFAULT_MAX_OPEN`], 256).
    pub coalesce_max_open: usize,
    /// Store limits (default 1 MiB, 7 days).
    pub limits: StoreLimits,
    /// Delivery tuning (default [`DeliveryConfig::default`]).
    pub delivery: DeliveryConfig,
    /// Minimum time between scope checks; `None` turns them off (default
    /// `Some(DEFAULT_SCOPE_CHECK_INTERVAL_MS)`).
    pub scope_check_interval_ms: Option<u64>,
    /// Sampled success counts are sealed at least this often, even without failures, so
    /// collectors see failure ratios and notice when a client's network goes quiet (a
    /// heartbeat). `None`: counts ride only with failures. Nothing is sent when no success
    /// was sampled since the last seal. Default `Some(DEFAULT_REPORT_INTERVAL_MS)`.
    pub report_interval_ms: Option<u64>,
}

/// Default [`CoreConfig::report_interval_ms`]: 30 s. The collector judges windows of 40 s
/// (`DetectorConfig::window_buckets`), so every active client's counts land in every window;
/// with 60 s a third of them miss each window, and spikebench paged a nuisance (1000 keys
/// behind one /24) it does not page at 30 s. What it costs is in docs/agent-config.md.
pub const DEFAULT_REPORT_INTERVAL_MS: u64 = 30_000;

impl CoreConfig {
    /// A configuration with every tuning at its default.
    pub fn new(app: AppInfo, collector_key: CollectorPublicKey, collectors: usize) -> CoreConfig {
        CoreConfig {
            app,
            collector_key,
            collectors,
            sampling: Sampling::default(),
            seal_delay_ms: DEFAULT_SEAL_DELAY_MS,
            coalesce_max_open: DEFAULT_MAX_OPEN,
            limits: StoreLimits::default(),
            delivery: DeliveryConfig::default(),
            scope_check_interval_ms: Some(DEFAULT_SCOPE_CHECK_INTERVAL_MS),
            report_interval_ms: Some(DEFAULT_REPORT_INTERVAL_MS),
        }
    }
}

/// What happened to a recorded failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recorded {
    /// Kept; it will be sealed within `seal_delay_ms`.
    Kept,
    /// Not sampled (counted only in [`CoreStats::not_sampled`]).
    NotSampled,
    /// Refused: consent is not granted. Nothing was kept or counted.
    NotConsented,
    /// Dropped on the way in, with this reason (for example a full queue in a runtime).
    Dropped(DropReason),
    /// The input was invalid (a bad service id or host): a caller bug; nothing was kept.
    Invalid,
}

/// The agent's own accounting (for its stats and metrics; never sent as such).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CoreStats {
    /// Failures admitted by consent and sampling.
    pub recorded: u64,
    /// Failures not sampled.
    pub not_sampled: u64,
    /// Envelopes sealed and stored.
    pub sealed_envelopes: u64,
    /// Envelopes a collector accepted.
    pub delivered_envelopes: u64,
    /// Failures in accepted envelopes.
    pub delivered_failures: u64,
    /// Failures dropped, by reason (including consent withdrawal).
    pub dropped: DropCounts,
}

/// One envelope to POST to one collector.
#[derive(Clone, PartialEq, Eq)]
pub struct CoreTransmit {
    /// Pass back to [`AgentCore::handle_outcome`].
    pub id: TransmitId,
    /// The envelope's sequence number.
    pub seq: u64,
    /// The collector's index in the configured order.
    pub collector: usize,
    /// The sealed envelope: the request body.
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for CoreTransmit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CoreTransmit")
            .field("id", &self.id)
            .field("seq", &self.seq)
            .field("collector", &self.collector)
            .field("len", &self.bytes.len())
            .finish()
    }
}

#[derive(Debug, Default)]
struct ScopeState {
    wanted: bool,
    in_flight_since: Option<UnixMillis>,
    last_request: Option<UnixMillis>,
    /// (check started, answered, scope).
    result: Option<(UnixMillis, UnixMillis, Scope)>,
}

/// The sans-IO agent. See the [module docs](self).
#[derive(Debug)]
pub struct AgentCore<S, R> {
    config: CoreConfig,
    consent: Consent,
    store: S,
    scheduler: Scheduler,
    coalescer: Coalescer,
    /// Reports out of the coalescer, waiting to be sealed (at most MAX_REPORTS).
    ready: Vec<Report>,
    first_pending: Option<UnixMillis>,
    targets: TargetCounter,
    /// When the oldest success count not yet sealed was recorded.
    targets_since: Option<UnixMillis>,
    /// Drops that ride in the next batch.
    drops: DropCounts,
    stats: CoreStats,
    next_seq: u64,
    scope: ScopeState,
    rng: R,
}

impl<S: EnvelopeStore, R: Entropy> AgentCore<S, R> {
    /// A core with consent denied, delivering what `store` already holds (after a restart)
    /// once consent is granted or restored. Sequence numbers continue after `store.last_seq()`.
    pub fn new(config: CoreConfig, store: S, rng: R) -> Result<AgentCore<S, R>, StoreError> {
        let mut core = AgentCore {
            scheduler: Scheduler::new(config.collectors, config.delivery),
            coalescer: Coalescer::new(config.seal_delay_ms, config.coalesce_max_open),
            config,
            consent: Consent::new(),
            store,
            ready: Vec::new(),
            first_pending: None,
            targets: TargetCounter::default(),
            targets_since: None,
            drops: DropCounts::new(),
            stats: CoreStats::default(),
            next_seq: 1,
            scope: ScopeState::default(),
            rng,
        };
        core.load_store()?;
        Ok(core)
    }

    fn load_store(&mut self) -> Result<(), StoreError> {
        self.scheduler.clear();
        self.next_seq = self.next_seq.max(self.store.last_seq().map_or(1, |s| s.saturating_add(1)));
        for meta in self.store.list()? {
            self.scheduler.enqueue(meta.seq);
        }
        // Drops an earlier process wrote with their removals but sealed into no batch yet.
        let unsent = self.store.unsent_drops();
        self.drops.merge(&unsent);
        Ok(())
    }

    /// The configuration.
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Consent.
    pub fn consent(&self) -> &Consent {
        &self.consent
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The agent's own accounting.
    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    /// Drop counts waiting to ride in the next batch.
    pub fn pending_drops(&self) -> &DropCounts {
        &self.drops
    }

    /// The sequence number the next envelope gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Raises the next sequence number to at least `seq` (a runtime that persists a
    /// high-water mark outside the store restores it with this).
    pub fn ensure_next_seq(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq);
    }

    /// Failures recorded but not sealed yet.
    pub fn pending_failures(&self) -> usize {
        self.ready.len() + self.coalescer.len()
    }

    /// Envelopes waiting for delivery or in flight.
    pub fn queued_envelopes(&self) -> usize {
        self.scheduler.len()
    }

    /// The user opts in: a new identity (from the core's entropy). Returns the actions for the
    /// runtime ([`ConsentAction::PersistIdentity`]); empty when already granted.
    #[must_use = "the runtime must persist the identity"]
    pub fn grant(&mut self, now: UnixMillis) -> Vec<ConsentAction> {
        self.consent.grant(now, &mut self.rng)
    }

    /// Brings back a grant persisted earlier (after a restart).
    pub fn restore_consent(&mut self, identity_secret: [u8; 32], since: UnixMillis) {
        self.consent = Consent::restore(identity_secret, since);
    }

    /// The user opts out. The core stops sending (the scheduler forgets everything in flight),
    /// deletes everything collected (store, open groups, pending counts; counted as
    /// [`DropReason::ConsentWithdrawn`] in [`CoreStats`] only) and forgets the identity.
    /// Returns the actions the runtime must still carry out on its side, in order
    /// ([`ConsentAction::StopSending`]: cancel requests in flight; `DeleteBuffer`: delete the
    /// store's files; `DeleteIdentity`: delete the persisted key). A store that fails to clear
    /// is reported; the runtime must then delete it by other means.
    #[must_use = "the runtime must carry out the returned actions"]
    pub fn withdraw(&mut self, now: UnixMillis) -> (Vec<ConsentAction>, Result<(), StoreError>) {
        let actions = self.consent.withdraw(now);
        if actions.is_empty() {
            return (actions, Ok(()));
        }
        self.scheduler.clear();
        let open: u64 = self
            .coalescer
            .flush_all()
            .into_iter()
            .chain(self.ready.drain(..))
            .map(|r| u64::from(r.count()))
            .sum();
        let stored = self.store.clear();
        let withdrawn = open.saturating_add(*stored.as_ref().unwrap_or(&0));
        record_withdrawn_drops(&mut self.stats.dropped, withdrawn);
        self.drops = DropCounts::new();
        let _ = self.targets.take();
        self.targets_since = None;
        self.first_pending = None;
        self.scope = ScopeState::default();
        // A new opt-in starts a new sequence space: continuing the old one would link the keys.
        self.next_seq = 1;
        (actions, stored.map(|_| ()))
    }

    /// Replaces the store (the runtime found the old one corrupt), returning the old one.
    /// Envelopes in the new store are queued; the sequence number never goes back.
    pub fn replace_store(&mut self, store: S) -> Result<S, StoreError> {
        let old = std::mem::replace(&mut self.store, store);
        self.load_store()?;
        Ok(old)
    }

    /// Counts `n` failures dropped by the runtime (a full channel, a store it lost) with
    /// `reason`; they ride in the next batch (except [`DropReason::ConsentWithdrawn`]).
    pub fn count_drop(&mut self, reason: DropReason, n: u64) {
        self.stats.dropped.add(reason, n);
        if reason != DropReason::ConsentWithdrawn {
            self.drops.add(reason, n);
        }
    }

    /// A failed request at `now`. Refused without a trace when consent is not granted.
    pub fn handle_record(&mut self, mut report: Report, now: UnixMillis) -> Recorded {
        if self.consent.admit().is_err() {
            return Recorded::NotConsented;
        }
        if !self.config.sampling.sample_failure(&mut self.rng) {
            self.stats.not_sampled += 1;
            return Recorded::NotSampled;
        }
        self.stats.recorded = self.stats.recorded.saturating_add(u64::from(report.count()));
        self.targets.record_attempt(report.service(), report.host(), false);
        if report.scope() == Scope::Unknown {
            if let Some(scope) = self.fresh_scope(now) {
                report.set_scope(scope);
            } else {
                self.want_scope_check(now);
            }
        }
        if let Some(out) = self.coalescer.push(report, now) {
            self.ready.push(out);
        }
        self.first_pending.get_or_insert(now);
        Recorded::Kept
    }

    /// A successful request to `host` of `service` at `now` (counted when sampled, for failure
    /// ratios). Ignored without consent or with an invalid id or host.
    pub fn handle_success(&mut self, service: &ServiceId, host: &Host, now: UnixMillis) {
        if self.consent.is_granted() && self.config.sampling.sample_success(&mut self.rng) {
            self.targets.record_attempt(service, host, true);
            self.targets_since.get_or_insert(now);
        }
    }

    /// When failures pending since `first` are due to be sealed: `seal_delay_ms` after the
    /// first, held up to [`SCOPE_HOLD_MS`] longer while a scope check started by the runtime
    /// has not answered.
    fn seal_due_at(&self, first: UnixMillis) -> UnixMillis {
        let due = first.plus_ms(self.config.seal_delay_ms);
        let in_flight = self.consent.is_granted() && self.scope.in_flight_since.is_some();
        if in_flight { due.plus_ms(SCOPE_HOLD_MS) } else { due }
    }

    /// When sampled success counts are due to be sealed on their own (the heartbeat).
    fn counts_due_at(&self) -> Option<UnixMillis> {
        let interval = self.config.report_interval_ms?;
        self.targets_since.map(|t| t.plus_ms(interval))
    }

    /// Seals what is pending when it is due (`seal_delay_ms` after the first pending failure,
    /// or at once when a full envelope's worth is waiting). Returns the envelopes stored.
    ///
    /// On a store error the envelope that failed is counted as [`DropReason::StoreError`] and
    /// the error is returned: the runtime should replace the store ([`Self::replace_store`]).
    pub fn poll_seal(&mut self, now: UnixMillis) -> Result<usize, StoreError> {
        let due = self.first_pending.is_some_and(|t| now >= self.seal_due_at(t) || now < t);
        let counts_due = self.counts_due_at().is_some_and(|at| now >= at)
            || self.targets_since.is_some_and(|t| now < t);
        if due || counts_due || self.ready.len() >= MAX_REPORTS {
            self.seal_pending(now)
        } else {
            Ok(0)
        }
    }

    /// Seals everything pending now, whatever the delay (flush, shutdown).
    pub fn seal_pending(&mut self, now: UnixMillis) -> Result<usize, StoreError> {
        let mut reports = std::mem::take(&mut self.ready);
        reports.extend(self.coalescer.flush_all());
        self.first_pending = None;
        self.targets_since = None;
        if reports.is_empty() {
            if self.targets.is_empty() || !self.consent.is_granted() {
                return Ok(0);
            }
            // Counts only: the heartbeat (or a flush) of a client with nothing failing.
            let drops = self.drops.take();
            let targets = self.targets.take();
            return self.seal_chunk(Vec::new(), drops, targets, now);
        }
        self.apply_scope(&mut reports);
        let mut sealed = 0;
        let mut rest = reports;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(MAX_REPORTS));
            let drops = self.drops.take();
            let targets = self.targets.take();
            sealed += self.seal_chunk(rest, drops, targets, now)?;
            rest = tail;
        }
        Ok(sealed)
    }

    fn seal_chunk(
        &mut self,
        reports: Vec<Report>,
        drops: DropCounts,
        targets: Vec<TargetCounts>,
        now: UnixMillis,
    ) -> Result<usize, StoreError> {
        let Some(identity) = self.consent.identity() else {
            return Ok(0);
        };
        let failures: u64 = reports.iter().map(|r| u64::from(r.count())).sum();
        let sampling = self.config.sampling;
        let mut batch =
            Batch::new(identity.public_key(), self.next_seq, now, self.config.app.clone())
                .with_reports(reports);
        batch.drops = drops;
        batch.targets = targets;
        batch.sampling =
            SampleRates::from_fractions(sampling.failure_fraction(), sampling.success_fraction());
        match seal_batch(&batch, identity, &self.config.collector_key, &mut self.rng) {
            Ok(bytes) => {
                self.next_seq += 1;
                let envelope = StoredEnvelope { seq: batch.seq, created_at: now, failures, bytes };
                if let Err(e) = self.store.put_carrying(envelope, &batch.drops) {
                    self.drops.merge(&batch.drops);
                    self.count_drop(DropReason::StoreError, failures);
                    return Err(e);
                }
                self.stats.sealed_envelopes += 1;
                self.scheduler.enqueue(batch.seq);
                self.evict(now)?;
                Ok(1)
            }
            Err(WireError::TooLarge { .. }) if batch.reports.len() > 1 => {
                let mut first = batch.reports;
                let second = first.split_off(first.len() / 2);
                let sealed = self.seal_chunk(first, batch.drops, batch.targets, now)?;
                Ok(sealed + self.seal_chunk(second, DropCounts::new(), Vec::new(), now)?)
            }
            Err(_) => {
                // Unreachable with a well-formed config (the key is the identity's, chunks are
                // within limits, one report fits); counted rather than lost silently.
                self.drops.merge(&batch.drops);
                self.count_drop(DropReason::StoreError, failures);
                Ok(0)
            }
        }
    }

    fn evict(&mut self, now: UnixMillis) -> Result<(), StoreError> {
        // Never evicted: envelopes being sent, and those that may have been delivered before a
        // crash (counting them dropped could count a delivered envelope twice).
        let mut keep = self.store.maybe_delivered();
        keep.extend_from_slice(self.scheduler.in_flight());
        // Drop counts carried by envelopes that may be evicted: they must travel again.
        let carried: Vec<(u64, DropCounts)> = self
            .store
            .list()?
            .iter()
            .map(|m| (m.seq, self.store.carried_drops(m.seq)))
            .filter(|(_, c)| !c.is_empty())
            .collect();
        let (drops, removed) = self.store.evict(self.config.limits, now, &keep)?;
        for seq in removed {
            self.scheduler.remove(seq);
            if let Some((_, c)) = carried.iter().find(|(s, _)| *s == seq) {
                self.drops.merge(c);
            }
        }
        for (reason, n) in drops.iter() {
            self.count_drop(reason, n);
        }
        Ok(())
    }

    /// The next envelope to send at `now`, with its bytes (the same bytes on every attempt).
    /// Envelopes past the maximum age are dropped ([`DropReason::Expired`]) instead of sent,
    /// except those that may have been delivered before a crash
    /// ([`EnvelopeStore::maybe_delivered`]). The store marks the envelope as being sent
    /// ([`EnvelopeStore::mark_sending`]) before it is returned.
    pub fn poll_transmit(&mut self, now: UnixMillis) -> Result<Option<CoreTransmit>, StoreError> {
        if !self.consent.is_granted() {
            return Ok(None);
        }
        while let Some(t) = self.scheduler.poll_transmit(now) {
            match self.store.get(t.seq)? {
                Some(env)
                    if now.since(env.created_at) < self.config.limits.max_age_ms
                        || self.store.maybe_delivered().contains(&t.seq) =>
                {
                    if let Err(e) = self.store.mark_sending(t.seq) {
                        // Not sent: it waits for its next turn in a working store.
                        let _ = self.scheduler.handle_outcome(
                            t.id,
                            Outcome::NetworkError,
                            now,
                            &mut self.rng,
                        );
                        return Err(e);
                    }
                    return Ok(Some(CoreTransmit {
                        id: t.id,
                        seq: t.seq,
                        collector: t.collector,
                        bytes: env.bytes,
                    }));
                }
                Some(env) => {
                    self.scheduler.remove(t.seq);
                    let carried = self.store.carried_drops(t.seq);
                    self.store.remove_as(t.seq, Removal::Dropped(DropReason::Expired))?;
                    self.count_drop(DropReason::Expired, env.failures);
                    self.drops.merge(&carried);
                }
                None => self.scheduler.remove(t.seq),
            }
        }
        Ok(None)
    }

    /// The collector's answer to transmit `id` (a network error without a classified cause;
    /// see [`AgentCore::handle_outcome_with_cause`]).
    pub fn handle_outcome(
        &mut self,
        id: TransmitId,
        outcome: Outcome,
        now: UnixMillis,
    ) -> Result<Resolution, StoreError> {
        self.handle_outcome_with_cause(id, outcome, None, now)
    }

    /// The collector's answer to transmit `id`, with the classified cause of a failure (kept
    /// as the collector's last error: [`AgentCore::collector_statuses`]).
    pub fn handle_outcome_with_cause(
        &mut self,
        id: TransmitId,
        outcome: Outcome,
        cause: Option<DeliveryError>,
        now: UnixMillis,
    ) -> Result<Resolution, StoreError> {
        let resolution =
            self.scheduler.handle_outcome_with_cause(id, outcome, cause, now, &mut self.rng);
        match resolution {
            Resolution::Delivered { seq } => {
                if let Some(meta) = self.store.remove_as(seq, Removal::Delivered)? {
                    self.stats.delivered_envelopes += 1;
                    self.stats.delivered_failures += meta.failures;
                }
            }
            Resolution::Dropped { seq, reason } => {
                let carried = self.store.carried_drops(seq);
                if let Some(meta) = self.store.remove_as(seq, Removal::Dropped(reason))? {
                    self.count_drop(reason, meta.failures);
                    self.drops.merge(&carried);
                }
            }
            Resolution::Retry { seq } => {
                // A status other than acceptance means not stored; a network error may have
                // come after the collector stored it, so the mark stays.
                if matches!(outcome, Outcome::RetryAfter { .. } | Outcome::ServerError { .. }) {
                    self.store.mark_answered(seq)?;
                }
            }
            Resolution::Stale => {}
        }
        Ok(resolution)
    }

    /// Every collector's delivery health (last error, failures in a row, last delivery), in
    /// configured order.
    pub fn collector_statuses(&self) -> &[CollectorStatus] {
        self.scheduler.collector_statuses()
    }

    /// The next change of a collector's failure cause, for one log line per change
    /// ([`Scheduler::poll_cause_change`](crate::delivery::Scheduler::poll_cause_change)).
    pub fn poll_cause_change(&mut self) -> Option<CauseChange> {
        self.scheduler.poll_cause_change()
    }

    /// When to call `poll_seal`/`poll_transmit` next: a time at or before now means at once;
    /// `None` when nothing is pending or due (an idle agent never wakes up).
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        let seal = match (self.failures_seal_at(), self.counts_due_at()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let send = if self.consent.is_granted() { self.scheduler.poll_timeout() } else { None };
        match (seal, send) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When the failures pending now are due to be sealed (`None`: none pending). A runtime
    /// that lets new failures wait in its own queue may leave them there until this moment
    /// (they are sealed with these, no later than their own seal delay), but must hand a
    /// failure over at once while this is `None`.
    pub fn failures_seal_at(&self) -> Option<UnixMillis> {
        self.first_pending
            .map(|t| if self.ready.len() >= MAX_REPORTS { t } else { self.seal_due_at(t) })
    }

    /// When the success counts pending now are due to be sealed on their own (`None`: none
    /// pending, or no `report_interval_ms`). Like [`Self::failures_seal_at`], for successes.
    pub fn counts_seal_at(&self) -> Option<UnixMillis> {
        self.counts_due_at()
    }

    /// True while a failure has asked for a scope check that has not answered yet (and
    /// consent is granted): reports sealed now would carry `unknown` instead of path/local.
    pub fn scope_pending(&self) -> bool {
        self.consent.is_granted() && (self.scope.wanted || self.scope.in_flight_since.is_some())
    }

    /// True once when a scope check should start now (see the [module docs](self)); the
    /// runtime pings a collector and answers with [`Self::handle_scope_result`].
    pub fn poll_scope_check(&mut self, now: UnixMillis) -> bool {
        if !self.scope.wanted || !self.consent.is_granted() {
            return false;
        }
        self.scope.wanted = false;
        // The check covers the failure that asked for it, which was observed before now.
        self.scope.in_flight_since = Some(self.scope.last_request.map_or(now, |t| t.min(now)));
        true
    }

    /// The answer of a scope check: was a collector reachable?
    pub fn handle_scope_result(&mut self, reachable: bool, now: UnixMillis) {
        let Some(started) = self.scope.in_flight_since.take() else {
            return;
        };
        let scope = if reachable { Scope::Path } else { Scope::Local };
        self.scope.result = Some((started, now, scope));
    }

    fn fresh_scope(&self, now: UnixMillis) -> Option<Scope> {
        let interval = self.config.scope_check_interval_ms?;
        let (_, answered, scope) = self.scope.result?;
        (now >= answered && now.since(answered) < interval).then_some(scope)
    }

    fn want_scope_check(&mut self, now: UnixMillis) {
        let Some(interval) = self.config.scope_check_interval_ms else {
            return;
        };
        let idle = self.scope.in_flight_since.is_none() && !self.scope.wanted;
        let due = self.scope.last_request.is_none_or(|t| now.since(t) >= interval || now < t);
        if idle && due {
            self.scope.wanted = true;
            self.scope.last_request = Some(now);
        }
    }

    fn apply_scope(&self, reports: &mut [Report]) {
        let (Some(interval), Some((started, answered, scope))) =
            (self.config.scope_check_interval_ms, self.scope.result)
        else {
            return;
        };
        let until = answered.plus_ms(interval);
        for r in reports.iter_mut().filter(|r| r.scope() == Scope::Unknown) {
            if r.observed_at() >= started && r.observed_at() < until {
                r.set_scope(scope);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::MemoryStore;
    use crate::entropy::SeededEntropy;
    use crate::wire::Envelope;

    // The agent crate has no opener (that is the collector's, with another HPKE library), so
    // these tests check the envelope's outside and rely on tests/ for the opened contents.
    fn key() -> CollectorPublicKey {
        "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a".parse().unwrap()
    }

    fn core(collectors: usize) -> AgentCore<MemoryStore, SeededEntropy> {
        let app = AppInfo::new("app", "1", "linux", "rust").unwrap();
        let mut config = CoreConfig::new(app, key(), collectors);
        config.delivery.max_per_second = 1_000;
        AgentCore::new(config, MemoryStore::new(), SeededEntropy::insecure_from_seed([1; 32]))
            .unwrap()
    }

    fn report(t: ErrorType, at: u64) -> Report {
        let mut rng = SeededEntropy::insecure_from_seed([at as u8; 32]);
        ReportInput::new("svc", "https://api.example.com/x", &t)
            .build(&mut rng, UnixMillis(at))
            .unwrap()
    }

    #[test]
    fn nothing_is_kept_before_consent() {
        let mut c = core(1);
        assert_eq!(
            c.handle_record(report(ErrorType::TcpRefused, 0), UnixMillis(0)),
            Recorded::NotConsented
        );
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(c.pending_failures(), 0);
        assert_eq!(c.stats(), &CoreStats::default());
    }

    #[test]
    fn records_are_sealed_after_the_delay_and_delivered_once() {
        let mut c = core(2);
        assert_eq!(c.grant(UnixMillis(0)).len(), 1);
        assert_eq!(c.poll_timeout(), None, "idle");
        let t0 = UnixMillis(1_000);
        for _ in 0..3 {
            assert_eq!(c.handle_record(report(ErrorType::TcpRefused, 1_000), t0), Recorded::Kept);
        }
        c.handle_record(report(ErrorType::DnsNameNotResolved, 1_000), t0.plus_ms(10));
        assert_eq!(c.poll_timeout(), Some(t0.plus_ms(DEFAULT_SEAL_DELAY_MS)));
        assert_eq!(c.poll_seal(t0.plus_ms(DEFAULT_SEAL_DELAY_MS - 1)).unwrap(), 0);
        assert_eq!(c.poll_seal(t0.plus_ms(DEFAULT_SEAL_DELAY_MS)).unwrap(), 1);
        assert_eq!(c.store().len(), 1);
        let now = t0.plus_ms(DEFAULT_SEAL_DELAY_MS);
        let tx = c.poll_transmit(now).unwrap().unwrap();
        assert_eq!((tx.seq, tx.collector), (1, 0));
        let env = Envelope::decode(&tx.bytes).unwrap();
        assert_eq!(env.key_id, key().key_id());
        // Failover keeps the same bytes.
        c.handle_outcome(tx.id, Outcome::NetworkError, now).unwrap();
        let again = c.poll_transmit(now).unwrap().unwrap();
        assert_eq!((again.collector, &again.bytes), (1, &tx.bytes));
        assert_eq!(
            c.handle_outcome(again.id, Outcome::Accepted, now).unwrap(),
            Resolution::Delivered { seq: 1 }
        );
        assert!(c.store().is_empty());
        assert_eq!(c.stats().delivered_failures, 4);
        assert_eq!(c.poll_timeout(), None, "idle again");
    }

    #[test]
    fn success_counts_are_sealed_on_the_report_interval_without_failures() {
        let svc: ServiceId = "svc".parse().unwrap();
        let host = Host::parse("api.example.com").unwrap();
        // Sampling that counts no successes: nothing to send, never a wake-up.
        let mut quiet = core(1);
        quiet.config.sampling = Sampling::new(1.0, 0.0).unwrap();
        let _ = quiet.grant(UnixMillis(0));
        quiet.handle_success(&svc, &host, UnixMillis(1_000));
        assert_eq!(quiet.poll_timeout(), None);
        assert_eq!(quiet.poll_seal(UnixMillis(1_000_000)).unwrap(), 0);

        let mut c = core(1);
        c.config.sampling = Sampling::new(1.0, 1.0).unwrap();
        c.config.report_interval_ms = Some(30_000);
        let _ = c.grant(UnixMillis(0));
        let t0 = UnixMillis(1_000);
        for i in 0..5 {
            c.handle_success(&svc, &host, t0.plus_ms(i * 1_000));
        }
        assert_eq!(c.poll_timeout(), Some(t0.plus_ms(30_000)), "due one interval after the first");
        assert_eq!(c.poll_seal(t0.plus_ms(29_999)).unwrap(), 0);
        assert_eq!(c.poll_seal(t0.plus_ms(30_000)).unwrap(), 1, "a counts-only envelope");
        assert_eq!(c.stats().sealed_envelopes, 1);
        assert_eq!(c.poll_seal(t0.plus_ms(90_000)).unwrap(), 0, "nothing new counted");
        let tx = c.poll_transmit(t0.plus_ms(30_000)).unwrap().unwrap();
        c.handle_outcome(tx.id, Outcome::Accepted, t0.plus_ms(30_000)).unwrap();
        assert_eq!(c.poll_timeout(), None, "idle again");
        // Withdrawal forgets the counts.
        c.handle_success(&svc, &host, t0.plus_ms(40_000));
        let _ = c.withdraw(t0.plus_ms(41_000));
        assert_eq!(c.poll_timeout(), None);
    }

    /// What the default heartbeat costs: a counts-only envelope for one and for four targets
    /// (the figures docs/agent-config.md quotes per hour).
    #[test]
    fn a_heartbeat_envelope_is_small() {
        let size = |targets: usize| {
            let mut c = core(1);
            c.config.sampling = Sampling::new(1.0, 1.0).unwrap();
            let _ = c.grant(UnixMillis(0));
            let svc: ServiceId = "checkout".parse().unwrap();
            for i in 0..targets {
                let host = Host::parse(&format!("api{i}.shop.example")).unwrap();
                for _ in 0..50 {
                    c.handle_success(&svc, &host, UnixMillis(1_000));
                }
            }
            let due = c.poll_timeout().expect("a heartbeat is due");
            assert_eq!(c.poll_seal(due).unwrap(), 1);
            c.poll_transmit(due).unwrap().unwrap().bytes.len()
        };
        let (one, four) = (size(1), size(4));
        eprintln!("heartbeat envelope: {one} bytes with 1 target, {four} with 4");
        assert!(one <= 400 && four <= 600, "{one} {four}");
    }

    #[test]
    fn rejected_envelopes_are_dropped_and_counted_in_the_next_batch() {
        let mut c = core(1);
        let _ = c.grant(UnixMillis(0));
        c.handle_record(report(ErrorType::TcpReset, 0), UnixMillis(0));
        c.seal_pending(UnixMillis(0)).unwrap();
        let tx = c.poll_transmit(UnixMillis(0)).unwrap().unwrap();
        c.handle_outcome(tx.id, Outcome::Rejected { status: 400 }, UnixMillis(0)).unwrap();
        assert_eq!(c.pending_drops().count(DropReason::Rejected), 1);
        assert!(c.store().is_empty());
        c.handle_record(report(ErrorType::TcpReset, 5), UnixMillis(5));
        c.seal_pending(UnixMillis(5)).unwrap();
        assert!(c.pending_drops().is_empty(), "the counts went into the second batch");
        assert_eq!(c.next_seq(), 3);
    }

    #[test]
    fn small_store_drops_oldest_and_counts_it() {
        let mut c = core(1);
        let _ = c.grant(UnixMillis(0));
        c.config.limits.max_bytes = 1;
        for i in 0..3u64 {
            c.handle_record(report(ErrorType::TcpTimedOut, i), UnixMillis(i));
            c.seal_pending(UnixMillis(i)).unwrap();
        }
        // Each new envelope pushes the previous one out (the newest alone exceeds 1 byte too).
        assert_eq!(c.stats().dropped.count(DropReason::QueueFull), 3);
        assert!(c.store().is_empty());
        assert_eq!(c.poll_timeout(), None);
    }

    #[test]
    fn withdrawal_deletes_everything_and_a_new_grant_starts_over() {
        let mut c = core(1);
        let _ = c.grant(UnixMillis(0));
        c.handle_record(report(ErrorType::TcpRefused, 0), UnixMillis(0));
        c.seal_pending(UnixMillis(0)).unwrap();
        c.handle_record(report(ErrorType::TcpReset, 1), UnixMillis(1));
        let (actions, result) = c.withdraw(UnixMillis(2));
        result.unwrap();
        assert_eq!(actions, crate::consent::WITHDRAWAL_ACTIONS);
        assert!(c.store().is_empty());
        assert_eq!(c.pending_failures(), 0);
        assert_eq!(c.stats().dropped.count(DropReason::ConsentWithdrawn), 2);
        assert!(c.pending_drops().is_empty(), "withdrawal counts never travel");
        assert_eq!(c.poll_timeout(), None);
        assert_eq!(c.poll_transmit(UnixMillis(3)).unwrap(), None);
        let _ = c.grant(UnixMillis(4));
        assert_eq!(c.next_seq(), 1);
    }

    #[test]
    fn scope_check_sets_path_or_local() {
        let mut c = core(1);
        let _ = c.grant(UnixMillis(0));
        c.handle_record(report(ErrorType::TcpRefused, 100), UnixMillis(100));
        assert!(c.poll_scope_check(UnixMillis(100)));
        assert!(!c.poll_scope_check(UnixMillis(101)), "one check at a time");
        c.handle_record(report(ErrorType::TcpRefused, 150), UnixMillis(150));
        c.handle_scope_result(true, UnixMillis(200));
        c.handle_record(report(ErrorType::TcpReset, 300), UnixMillis(300));
        let mut reports = std::mem::take(&mut c.ready);
        reports.extend(c.coalescer.flush_all());
        c.apply_scope(&mut reports);
        assert!(reports.iter().all(|r| r.scope() == Scope::Path), "{reports:?}");
        // Rate-limited: no new check within the interval, even after a failure.
        c.handle_record(report(ErrorType::TcpReset, 5_000), UnixMillis(5_000));
        assert!(!c.poll_scope_check(UnixMillis(5_000)));
        // After the interval, a new check; unreachable means local.
        let later = UnixMillis(100 + DEFAULT_SCOPE_CHECK_INTERVAL_MS + 1_000);
        c.handle_record(report(ErrorType::TcpReset, later.0), later);
        assert!(c.poll_scope_check(later));
        c.handle_scope_result(false, later.plus_ms(5));
        c.handle_record(report(ErrorType::DnsFailed, later.0 + 10), later.plus_ms(10));
        let last = c.coalescer.flush_all();
        assert!(last.iter().any(|r| r.scope() == Scope::Local), "{last:?}");
    }

    #[test]
    fn a_due_seal_waits_for_the_scope_check_at_most_the_hold() {
        let delay = DEFAULT_SEAL_DELAY_MS;
        let mut c = core(1);
        let _ = c.grant(UnixMillis(0));
        c.handle_record(report(ErrorType::TcpRefused, 100), UnixMillis(100));
        assert!(c.poll_scope_check(UnixMillis(100)));
        assert_eq!(c.poll_timeout(), Some(UnixMillis(100 + delay + SCOPE_HOLD_MS)));
        assert_eq!(c.poll_seal(UnixMillis(100 + delay)).unwrap(), 0, "held for the check");
        // The check answers (a blackholed ping would answer late): the seal is due at once.
        c.handle_scope_result(false, UnixMillis(100 + delay + 300));
        assert_eq!(c.poll_timeout(), Some(UnixMillis(100 + delay)));
        assert_eq!(c.poll_seal(UnixMillis(100 + delay + 300)).unwrap(), 1);

        // A check that never answers holds the seal for SCOPE_HOLD_MS only.
        let t = 100 + DEFAULT_SCOPE_CHECK_INTERVAL_MS + 1_000;
        c.handle_record(report(ErrorType::TcpReset, t), UnixMillis(t));
        assert!(c.poll_scope_check(UnixMillis(t)));
        assert_eq!(c.poll_seal(UnixMillis(t + delay + SCOPE_HOLD_MS - 1)).unwrap(), 0);
        assert_eq!(c.poll_seal(UnixMillis(t + delay + SCOPE_HOLD_MS)).unwrap(), 1);
    }

    #[test]
    fn restored_store_is_delivered_and_seq_continues() {
        let mut first = core(1);
        let _ = first.grant(UnixMillis(0));
        first.handle_record(report(ErrorType::TcpRefused, 0), UnixMillis(0));
        first.seal_pending(UnixMillis(0)).unwrap();
        let secret = *first.consent().identity().unwrap().secret_bytes();
        let store = first.store().clone();
        let app = AppInfo::new("app", "1", "linux", "rust").unwrap();
        let mut second = AgentCore::new(
            CoreConfig::new(app, key(), 1),
            store,
            SeededEntropy::insecure_from_seed([2; 32]),
        )
        .unwrap();
        assert_eq!(second.next_seq(), 2);
        assert_eq!(second.poll_transmit(UnixMillis(1)).unwrap(), None, "not before consent");
        second.restore_consent(secret, UnixMillis(0));
        let tx = second.poll_transmit(UnixMillis(1)).unwrap().unwrap();
        assert_eq!(tx.seq, 1);
        // The signed batch inside cannot be read here (sealed to the collector), but its
        // outer envelope is intact.
        assert!(Envelope::decode(&tx.bytes).is_ok());
    }

    #[test]
    fn inputs_classify_their_causes() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert_eq!(ReportInput::new("s", "h", &io).error_type(), &ErrorType::TcpRefused);
        let http = ReportInput::new("s", "h", &HttpStatus(503));
        let mut rng = SeededEntropy::insecure_from_seed([0; 32]);
        let r = http.build(&mut rng, UnixMillis(0)).unwrap();
        assert_eq!(
            (r.error_type(), r.status(), r.phase()),
            (&ErrorType::HttpError, Some(503), Phase::Application)
        );
        let gai = PlatformCode { domain: "getaddrinfo.linux", code: -2 };
        assert_eq!(ReportInput::new("s", "h", &gai).error_type(), &ErrorType::DnsNameNotResolved);
        let bad =
            ReportInput::new("bad id", "h", &ErrorType::Unknown).build(&mut rng, UnixMillis(0));
        assert!(bad.is_err());
    }
}
