//! The native [`Agent`]: the sans-IO [`AgentCore`] driven by one tokio task.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::config::{AgentBuilder, AgentConfig, ConfigError};
use super::inbox::{Armed, Batch, Inbox};
use super::log_store::{LOG_FILE, LogStore, SEQ_JUMP, remove_log};
use super::probe::{self, CheckOutcome, ProbeConfig, ProbeError};
use super::uploader::Uploader;
use super::validate::{ConfigWarning, validate};
use crate::buffer::{
    EnvelopeMeta, EnvelopeStore, MemoryStore, Removal, StoreError, StoredEnvelope,
};
use crate::consent::{ConsentAction, ConsentState};
use crate::delivery::{CollectorStatus, DeliveryError, Outcome, TransmitId};
use crate::drops::DropCounts;
use crate::drops::DropReason;
use crate::entropy::Entropy;
use crate::pipeline::{AgentCore, CoreConfig, CoreStats, Recorded, ReportInput};
use crate::report::{AppInfo, Host, Report, ServiceId, UnixMillis};
use crate::wire::{AgentPublicKey, CollectorPublicKey};

/// File names inside the data dir.
/// The identity key's file name in the data dir (present while consent is granted).
pub const IDENTITY_FILE: &str = "identity.key";
/// The data dir's lock file: locked (`flock`, exclusive) by the agent for as long as it holds
/// consent, so that a second agent on the same data dir (another process, a forked child, a
/// second agent in this process) is refused instead of interleaving its writes with this
/// one's (its compaction would rename a new log over the other's, whose later envelopes would
/// go into a deleted file).
pub const LOCK_FILE: &str = "lock";
/// How long taking the lock waits for another holder to let go (an app restarted while its
/// previous process is still exiting) before the data dir is reported in use.
const LOCK_WAIT: Duration = Duration::from_secs(2);
/// Left by versions before the log store: a reserved high-water mark of sequence numbers,
/// taken over once (the log keeps the exact last one since) and deleted.
const LEGACY_SEQ_FILE: &str = "seq";
/// Left by versions before the log store: the sled buffer, deleted (counted as lost).
const LEGACY_BUFFER_DIR: &str = "buffer";
/// Messages handled per lock before the task looks at timers and uploads again.
const BATCH_MESSAGES: usize = 256;
/// Room in the channel of `flush` and `shutdown` requests (records and success counts go
/// through the [`Inbox`]); a sender waits when it is full.
const CONTROL_CAPACITY: usize = 64;
/// Most collectors asked in one scope check.
const SCOPE_PING_COLLECTORS: usize = 2;
/// Longest a `flush` waits for a scope check in flight before sealing anyway, so that reports
/// flushed right after a failure carry path/local rather than unknown.
const SCOPE_FLUSH_WAIT: Duration = Duration::from_secs(2);

type FlushReply = oneshot::Sender<Result<(), StoreError>>;

/// The operating system's RNG (*ring*'s `SystemRandom`).
#[derive(Clone, Copy, Debug, Default)]
pub struct OsEntropy;

impl Entropy for OsEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        use ring::rand::SecureRandom;
        // SystemRandom only fails when the OS has no randomness at all (getrandom failing),
        // where no key could be made safely either.
        ring::rand::SystemRandom::new().fill(dest).expect("the OS random number generator works");
    }
}

/// Report ids on the caller's thread: the operating system's RNG read in blocks of
/// [`ID_POOL_BYTES`] per thread, so `record()` makes one `getrandom` call per 409 reports
/// instead of one each (about 0.3 µs of a 0.6 µs call; a call's fixed cost in the kernel is
/// several times that of the 512 bytes it returned). The bytes are the OS RNG's own; a
/// block is used once.
///
/// A `fork`ed child inherits its parent's blocks: the forking thread's, the only thread a child
/// has. Drawn from, the same bytes would give the child's reports the ids the parent's get
/// next, and the collector keeps one report per id: a server that records once, then forks
/// workers that all see the same outage in the same millisecond, would lose all but one
/// worker's reports. A child's records reach no collector until it starts an agent of its
/// own (the parent's agent task did not survive the fork), and every agent start moves
/// [`ID_GENERATION`] on: a block filled under an earlier generation is wiped, never used.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct IdEntropy;

/// Moved on by every agent start (see [`IdEntropy`]): id blocks filled before it are not used.
static ID_GENERATION: AtomicU64 = AtomicU64::new(0);

/// Every id block filled so far is wiped before its next use (an agent is starting).
fn new_id_generation() {
    ID_GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Bytes read from the OS per refill of a thread's id pool (10 per report id).
const ID_POOL_BYTES: usize = 4096;

#[cfg_attr(test, derive(Clone))]
struct IdPool {
    bytes: [u8; ID_POOL_BYTES],
    used: usize,
    /// The [`ID_GENERATION`] the block was filled under.
    generation: u64,
}

thread_local! {
    static ID_POOL: std::cell::RefCell<IdPool> = const {
        std::cell::RefCell::new(IdPool { bytes: [0; ID_POOL_BYTES], used: ID_POOL_BYTES, generation: 0 })
    };
}

impl Entropy for IdEntropy {
    fn fill(&mut self, dest: &mut [u8]) {
        ID_POOL.with_borrow_mut(|pool| {
            let generation = ID_GENERATION.load(Ordering::Relaxed);
            if pool.generation != generation {
                pool.bytes.fill(0);
                pool.used = ID_POOL_BYTES;
                pool.generation = generation;
            }
            let mut done = 0;
            while done < dest.len() {
                if pool.used == ID_POOL_BYTES {
                    OsEntropy.fill(&mut pool.bytes);
                    pool.used = 0;
                }
                let n = (dest.len() - done).min(ID_POOL_BYTES - pool.used);
                dest[done..done + n].copy_from_slice(&pool.bytes[pool.used..pool.used + n]);
                // Used bytes are wiped: nothing read twice, nothing left to read back.
                pool.bytes[pool.used..pool.used + n].fill(0);
                pool.used += n;
                done += n;
            }
        });
    }
}

/// An error of the native agent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The envelope store failed and could not be replaced.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file in the data dir could not be written, read or deleted.
    #[error("{what} {path}: {reason}")]
    File {
        /// What was being done (`writing the identity key`).
        what: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The agent was shut down (or its task ended).
    #[error("the agent has shut down")]
    Closed,
    /// The background runtime could not start.
    #[error("starting the agent's runtime thread: {0}")]
    Runtime(String),
    /// `check()` was given a URL it cannot probe.
    #[error(transparent)]
    Probe(#[from] ProbeError),
}

fn file_error(what: &'static str, path: &Path, e: std::io::Error) -> AgentError {
    AgentError::File { what, path: path.display().to_string(), reason: e.to_string() }
}

/// What [`Agent::flush`] achieved before its timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlushOutcome {
    /// Envelopes still waiting for a collector (0: everything recorded was delivered). They
    /// are on disk and will be delivered later.
    pub undelivered: usize,
}

/// Either store: memory before consent (it stays empty), the log file after.
#[derive(Debug)]
enum NativeStore {
    Memory(MemoryStore),
    Log(LogStore),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            NativeStore::Memory($s) => $e,
            NativeStore::Log($s) => $e,
        }
    };
}

impl EnvelopeStore for NativeStore {
    fn put(&mut self, envelope: StoredEnvelope) -> Result<(), StoreError> {
        delegate!(self, s => s.put(envelope))
    }
    fn get(&self, seq: u64) -> Result<Option<StoredEnvelope>, StoreError> {
        delegate!(self, s => s.get(seq))
    }
    fn list(&self) -> Result<Vec<EnvelopeMeta>, StoreError> {
        delegate!(self, s => s.list())
    }
    fn remove(&mut self, seq: u64) -> Result<Option<EnvelopeMeta>, StoreError> {
        delegate!(self, s => s.remove(seq))
    }
    fn clear(&mut self) -> Result<u64, StoreError> {
        delegate!(self, s => s.clear())
    }
    fn bytes_used(&self) -> u64 {
        delegate!(self, s => s.bytes_used())
    }
    fn last_seq(&self) -> Option<u64> {
        delegate!(self, s => s.last_seq())
    }
    fn remove_as(
        &mut self,
        seq: u64,
        removal: Removal,
    ) -> Result<Option<EnvelopeMeta>, StoreError> {
        delegate!(self, s => s.remove_as(seq, removal))
    }
    fn unsent_drops(&self) -> DropCounts {
        delegate!(self, s => s.unsent_drops())
    }
    fn put_carrying(
        &mut self,
        envelope: StoredEnvelope,
        carried: &DropCounts,
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.put_carrying(envelope, carried))
    }
    fn carried_drops(&self, seq: u64) -> DropCounts {
        delegate!(self, s => s.carried_drops(seq))
    }
    fn mark_sending(&mut self, seq: u64) -> Result<(), StoreError> {
        delegate!(self, s => s.mark_sending(seq))
    }
    fn mark_answered(&mut self, seq: u64) -> Result<(), StoreError> {
        delegate!(self, s => s.mark_answered(seq))
    }
    fn maybe_delivered(&self) -> Vec<u64> {
        delegate!(self, s => s.maybe_delivered())
    }
}

type Core = AgentCore<NativeStore, OsEntropy>;

struct State {
    core: Core,
    /// The data dir's lock while consent is held ([`LOCK_FILE`]).
    data_dir_lock: Option<std::fs::File>,
    /// What the last drain of the inbox took, emptied: handed back at the next drain, so a
    /// steady state allocates nothing.
    batch: InboxBatch,
}

struct Paths {
    data_dir: PathBuf,
    lock: PathBuf,
    identity: PathBuf,
    log: PathBuf,
    legacy_seq: PathBuf,
    legacy_buffer: PathBuf,
}

struct Shared {
    state: Mutex<State>,
    config: AgentConfig,
    paths: Paths,
    probe: ProbeConfig,
    uploader: Arc<Uploader>,
    consented: AtomicBool,
    channel_drops: AtomicU64,
    epoch: AtomicU64,
    /// Failures and success tallies from app threads, drained by the task (see [`Inbox`]).
    inbox: AgentInbox,
    /// Wakes the task: a push that needs it, a full inbox, consent changes, host answers.
    wake: Notify,
    progress: watch::Sender<u64>,
    /// Host-driven delivery ([`Agent::start_host_driven`]): the task never uploads; the host
    /// takes envelopes with [`Agent::poll_upload`] and answers with
    /// [`Agent::handle_upload_outcome`].
    host_driven: bool,
    /// Told of every change of a collector's failure cause ([`Agent::set_delivery_listener`]).
    listener: Mutex<Option<DeliveryListener>>,
}

/// Called with a collector's URL and its new failure cause (`None`: it accepts envelopes
/// again), once per change ([`Agent::set_delivery_listener`]).
pub type DeliveryListener = Arc<dyn Fn(&str, Option<&DeliveryError>) + Send + Sync>;

/// One collector's delivery health ([`Agent::delivery_status`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectorDelivery {
    /// The collector's base URL, as configured.
    pub url: String,
    /// Last error, failures in a row, last delivery.
    pub status: CollectorStatus,
}

impl Shared {
    /// Logs each change of a collector's failure cause once (not once per attempt), and tells
    /// the listener. Call after every outcome.
    fn report_cause_changes(&self, state: &mut State) {
        while let Some(change) = state.core.poll_cause_change() {
            let url = self.config.collectors.get(change.collector).map_or("?", |c| c.url());
            match &change.error {
                Some(e) => tracing::warn!(
                    collector = url,
                    cause = e.as_str(),
                    "vantage: reports are not being delivered: {}",
                    e.message()
                ),
                None => {
                    tracing::info!(collector = url, "vantage: the collector accepts reports again")
                }
            }
            let listener = self.listener.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(listener) = listener {
                listener(url, change.error.as_ref());
            }
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held cannot leave the core half-updated in a way that
        // matters more than stopping the app's reporting: keep going with the state as is.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What app threads hand the task: failures (with when they were recorded) in a queue, and
/// success counts tallied per target.
type AgentInbox = Inbox<(Report, UnixMillis), (ServiceId, Host)>;
type InboxBatch = Batch<(Report, UnixMillis), (ServiceId, Host)>;

/// Requests that are waited for, through the control channel.
enum Msg {
    Flush(oneshot::Sender<Result<(), StoreError>>),
    Shutdown(oneshot::Sender<()>),
}

/// The Vantage agent for native apps. See the [module docs](super) for a tour.
///
/// Cheap calls (`record`, `count_success`) never block and never panic: `record` hands the
/// report to one background task through a bounded queue of `queue_capacity` failures (65 536
/// by default; a full queue drops it and counts `queue_full`), `count_success` adds one to a
/// per-target tally, and both wake the task only when it has no deadline of its own that
/// will bring it back in time (see `native/inbox.rs`). The task seals pending reports into
/// envelopes at most `seal_delay` (500 ms) after the first one, writes them to the buffer (an
/// append-only log), and delivers them. It sleeps when there is nothing to do.
pub struct Agent {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    warnings: Vec<ConfigWarning>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("data_dir", &self.shared.paths.data_dir)
            .field("consented", &self.shared.consented.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn now_ms() -> UnixMillis {
    let d = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    UnixMillis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl AgentBuilder {
    /// Validates the configuration and starts the agent on a runtime thread of its own (a
    /// current-thread tokio runtime on a thread named `vantage-agent`), so it works in apps
    /// with or without tokio.
    pub fn build(self) -> Result<Agent, AgentError> {
        Agent::start(self.config, None)
    }

    /// Validates the configuration and starts the agent's task on the app's tokio runtime.
    pub fn build_in(self, handle: &tokio::runtime::Handle) -> Result<Agent, AgentError> {
        Agent::start(self.config, Some(handle))
    }
}

impl Agent {
    /// Starts a configuration: the required values; add services, collectors and tuning on the
    /// builder, then [`AgentBuilder::build`].
    pub fn builder(
        app: AppInfo,
        collector_key: CollectorPublicKey,
        data_dir: impl Into<PathBuf>,
    ) -> AgentBuilder {
        AgentBuilder::new(app, collector_key, data_dir.into())
    }

    /// Parses a TOML config and starts the agent on its own runtime thread.
    pub fn from_toml_str(text: &str) -> Result<Agent, AgentError> {
        Agent::start(AgentConfig::from_toml_str(text)?, None)
    }

    /// Reads a TOML config file and starts the agent on its own runtime thread.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Agent, AgentError> {
        Agent::start(AgentConfig::from_toml_file(path)?, None)
    }

    /// Validates `config` and starts the agent: on `handle`, or on a runtime thread of its own.
    /// A grant persisted by an earlier run is restored, and its buffer delivered.
    pub fn start(
        config: AgentConfig,
        handle: Option<&tokio::runtime::Handle>,
    ) -> Result<Agent, AgentError> {
        Agent::start_mode(config, handle, false)
    }

    /// Like [`Agent::start`], in host-driven delivery mode, for platforms whose uploads must go
    /// through their own HTTP stack (iOS background sessions, Android WorkManager): the agent
    /// records, seals and buffers as usual, but never uploads. The host asks
    /// [`Agent::poll_upload`] for the next envelope to send, POSTs it, and reports the answer
    /// with [`Agent::handle_upload_outcome`]; [`Agent::upload_wait`] says when to ask again.
    /// Delivery order, failover, backoff, `Retry-After` and pacing stay with the agent (the
    /// same sans-IO scheduler). Scope checks still ping collectors with the built-in prober.
    pub fn start_host_driven(
        config: AgentConfig,
        handle: Option<&tokio::runtime::Handle>,
    ) -> Result<Agent, AgentError> {
        Agent::start_mode(config, handle, true)
    }

    fn start_mode(
        config: AgentConfig,
        handle: Option<&tokio::runtime::Handle>,
        host_driven: bool,
    ) -> Result<Agent, AgentError> {
        let warnings = validate(&config)?;
        for w in &warnings {
            tracing::warn!(field = %w.field, "vantage config: {}", w.message);
        }
        // A process forked after recording starts its own agent: ids from fresh bytes.
        new_id_generation();
        let paths = Paths {
            lock: config.data_dir.join(LOCK_FILE),
            identity: config.data_dir.join(IDENTITY_FILE),
            log: config.data_dir.join(LOG_FILE),
            legacy_seq: config.data_dir.join(LEGACY_SEQ_FILE),
            legacy_buffer: config.data_dir.join(LEGACY_BUFFER_DIR),
            data_dir: config.data_dir.clone(),
        };
        let mut core_config =
            CoreConfig::new(config.app.clone(), config.collector_key, config.collectors.len());
        core_config.sampling = config.sampling;
        core_config.seal_delay_ms = millis(config.seal_delay);
        core_config.limits = config.limits;
        core_config.delivery = config.delivery;
        core_config.scope_check_interval_ms = config.scope_check_interval.map(millis);
        core_config.report_interval_ms = config.report_interval.map(millis);
        let core = AgentCore::new(core_config, NativeStore::Memory(MemoryStore::new()), OsEntropy)?;
        let uploader = Arc::new(Uploader::new(
            &config.collectors,
            &config.extra_roots,
            &config.dns_servers,
            config.request_timeout,
        ));
        let probe = ProbeConfig::new(config.extra_roots.clone())
            .dns_timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(3))
            .tls_timeout(Duration::from_secs(3))
            .http_timeout(Duration::from_secs(3));
        let (tx, rx) = mpsc::channel(CONTROL_CAPACITY);
        let inbox = Inbox::new(config.queue_capacity);
        let shared = Arc::new(Shared {
            state: Mutex::new(State { core, data_dir_lock: None, batch: Batch::default() }),
            paths,
            probe,
            uploader,
            consented: AtomicBool::new(false),
            channel_drops: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            inbox,
            wake: Notify::new(),
            progress: watch::channel(0).0,
            host_driven,
            listener: Mutex::new(None),
            config,
        });
        restore(&shared)?;
        let task = run(shared.clone(), rx);
        match handle {
            Some(h) => {
                h.spawn(task);
            }
            None => {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| AgentError::Runtime(e.to_string()))?;
                std::thread::Builder::new()
                    .name("vantage-agent".into())
                    .spawn(move || rt.block_on(task))
                    .map_err(|e| AgentError::Runtime(e.to_string()))?;
            }
        }
        Ok(Agent { shared, tx, warnings })
    }

    /// The configuration's failure-domain warnings (also logged at start).
    pub fn warnings(&self) -> &[ConfigWarning] {
        &self.warnings
    }

    /// The configuration.
    pub fn config(&self) -> &AgentConfig {
        &self.shared.config
    }

    /// Grants (`true`) or withdraws (`false`) consent, synchronously.
    ///
    /// Granting creates the data dir, its lock ([`LOCK_FILE`], held while consent is: another
    /// agent, in this process or another, is refused the data dir), a new identity key
    /// (`identity.key`, mode 0600) and the buffer (`envelopes.log`); nothing exists on disk
    /// before. Withdrawing stops uploads in flight, deletes
    /// the buffer and the identity key, and forgets what was pending; a later grant gets a new,
    /// unlinkable key. Either is a no-op when already in that state.
    pub fn set_consent(&self, granted: bool) -> Result<(), AgentError> {
        let shared = &self.shared;
        let mut state = shared.lock();
        let now = now_ms();
        if granted {
            if state.data_dir_lock.is_none() {
                // Before anything is written: another agent's files are never touched.
                create_data_dir(&shared.paths.data_dir)?;
                match lock_data_dir(&shared.paths) {
                    Ok(lock) => state.data_dir_lock = Some(lock),
                    Err(e) => {
                        // Ours only if this call created it (then it is empty).
                        let _ = std::fs::remove_dir(&shared.paths.data_dir);
                        return Err(e);
                    }
                }
            }
            for action in state.core.grant(now) {
                if let ConsentAction::PersistIdentity { since } = action {
                    let Some(identity) = state.core.consent().identity() else { continue };
                    let secret = *identity.secret_bytes();
                    if let Err(e) = persist_identity(&shared.paths, &secret, since) {
                        let _ = state.core.withdraw(now);
                        unlock_data_dir(&shared.paths, &mut state);
                        return Err(e);
                    }
                }
            }
            if matches!(state.core.store(), NativeStore::Memory(_)) {
                open_buffer(shared, &mut state)?;
            }
            shared.consented.store(true, Ordering::SeqCst);
        } else {
            let (actions, cleared) = state.core.withdraw(now);
            shared.consented.store(false, Ordering::SeqCst);
            for action in actions {
                match action {
                    ConsentAction::StopSending => {
                        shared.epoch.fetch_add(1, Ordering::SeqCst);
                        shared.uploader.close_idle();
                    }
                    ConsentAction::DeleteBuffer => {
                        if let Err(e) = &cleared {
                            tracing::warn!(error = %e, "clearing the buffer failed; deleting its files");
                        }
                        let old = state.core.replace_store(NativeStore::Memory(MemoryStore::new()));
                        drop(old);
                        remove_log(&shared.paths.log)?;
                        remove_dir(&shared.paths.legacy_buffer)?;
                    }
                    ConsentAction::DeleteIdentity => {
                        remove_file(&shared.paths.identity)?;
                        remove_file(&shared.paths.legacy_seq)?;
                    }
                    _ => {}
                }
            }
            unlock_data_dir(&shared.paths, &mut state);
            let _ = std::fs::remove_dir(&shared.paths.data_dir);
        }
        drop(state);
        shared.wake.notify_one();
        Ok(())
    }

    /// Where consent stands.
    pub fn consent_state(&self) -> ConsentState {
        self.shared.lock().core.consent().state()
    }

    /// The install's public key while consented (a new grant gives a new one).
    pub fn agent_key(&self) -> Option<AgentPublicKey> {
        self.shared.lock().core.consent().identity().map(|i| i.public_key())
    }

    /// Records a failed request. Never blocks, never panics: before consent it keeps nothing
    /// ([`Recorded::NotConsented`]); an invalid service id or host gives
    /// [`Recorded::Invalid`]; a full queue drops it, counted as `queue_full`
    /// ([`Recorded::Dropped`]). [`Recorded::Kept`] means handed to the background task
    /// (sampling happens there).
    pub fn record(&self, input: ReportInput) -> Recorded {
        if !self.shared.consented.load(Ordering::SeqCst) {
            return Recorded::NotConsented;
        }
        let now = now_ms();
        let Ok(report) = input.build(&mut IdEntropy, now) else {
            return Recorded::Invalid;
        };
        let count = u64::from(report.count());
        match self.shared.inbox.push((report, now)) {
            Ok(queued) => {
                if queued.wake {
                    self.shared.wake.notify_one();
                }
                Recorded::Kept
            }
            Err(_) => {
                self.shared.channel_drops.fetch_add(count, Ordering::Relaxed);
                self.shared.wake.notify_one();
                Recorded::Dropped(DropReason::QueueFull)
            }
        }
    }

    /// Counts a successful request (sampled with the success fraction, default 1: all), for
    /// failure ratios. Never blocks; ignored without consent, with an invalid id or host, or
    /// when 4096 other targets were counted since the agent's task last took the counts in.
    pub fn count_success(&self, service: &str, host: &str) {
        if !self.counts_successes() {
            return;
        }
        if let (Ok(s), Ok(h)) = (service.parse(), Host::from_url(host)) {
            self.count_success_parsed(s, h);
        }
    }

    /// True while consent is granted (a relaxed read: a hint for skipping work).
    #[cfg(any(feature = "reqwest", feature = "tower"))]
    pub(crate) fn is_consented(&self) -> bool {
        self.shared.consented.load(Ordering::Relaxed)
    }

    /// True when a success now could be counted: consent is granted and the success
    /// fraction is above 0 (with 0 the core would discard every success, so callers skip
    /// the work).
    pub(crate) fn counts_successes(&self) -> bool {
        self.shared.config.sampling.success_fraction() > 0.0
            && self.shared.consented.load(Ordering::Relaxed)
    }

    /// [`Agent::count_success`] with parsed values (sampling happens in the core).
    pub(crate) fn count_success_parsed(&self, service: ServiceId, host: Host) {
        let now = now_ms();
        match self.shared.inbox.count((service, host), now.0) {
            Ok(queued) if !queued.wake => {}
            // Too many targets tallied: the count is ignored (documented), and the task told
            // to drain.
            _ => self.shared.wake.notify_one(),
        }
    }

    /// Probes `url` (DNS, TCP, TLS, HTTP GET: see [`probe::check`]) and records a failure
    /// when it fails, for the URL's host's service ([`AgentConfig::service_for_host`]; else
    /// the first configured service). Must run inside a tokio runtime.
    pub async fn check(&self, url: &str) -> Result<CheckOutcome, AgentError> {
        let outcome = probe::check(url, &self.shared.probe).await?;
        if let CheckOutcome::Failed(f) = &outcome {
            let config = &self.shared.config;
            let host = Host::from_url(url).ok();
            let service = host
                .and_then(|h| config.service_for_host(h.as_str()))
                .or(config.services.first().map(|s| &s.id));
            if let Some(service) = service {
                let mut input = ReportInput::new(service.as_str(), url, &f.error_type)
                    .elapsed_ms(f.elapsed_ms)
                    .protocol(f.protocol)
                    .phase(f.phase);
                if let Some(status) = f.status {
                    input = input.status(status);
                }
                let _ = self.record(input);
            }
        }
        Ok(outcome)
    }

    /// Seals everything recorded so far and writes it to disk (at once, not after the seal
    /// delay; this part is waited for whatever `timeout` says), then attempts delivery until
    /// `timeout` has passed or nothing is left. Backoff and `Retry-After` still apply.
    pub async fn flush(&self, timeout: Duration) -> Result<FlushOutcome, AgentError> {
        let deadline = tokio::time::Instant::now() + timeout;
        // Sealing is local work and is waited for whatever the timeout: when flush returns,
        // everything recorded before it is on disk.
        let (reply, sealed) = oneshot::channel();
        self.tx.send(Msg::Flush(reply)).await.map_err(|_| AgentError::Closed)?;
        sealed.await.map_err(|_| AgentError::Closed)??;
        let mut progress = self.shared.progress.subscribe();
        loop {
            let undelivered = self.queued_envelopes();
            if undelivered == 0 {
                return Ok(FlushOutcome { undelivered });
            }
            match tokio::time::timeout_at(deadline, progress.changed()).await {
                Ok(Ok(())) => {}
                _ => return Ok(FlushOutcome { undelivered: self.queued_envelopes() }),
            }
        }
    }

    /// Stops the agent gracefully: seals what is pending to disk, cancels uploads in flight
    /// (they are sent again at the next start) and closes the buffer. Later calls to `record`
    /// are dropped; `flush` fails with [`AgentError::Closed`].
    pub async fn shutdown(&self) -> Result<(), AgentError> {
        let (reply, done) = oneshot::channel();
        self.tx.send(Msg::Shutdown(reply)).await.map_err(|_| AgentError::Closed)?;
        done.await.map_err(|_| AgentError::Closed)
    }

    /// The agent's own accounting (recorded, delivered, dropped by reason).
    pub fn stats(&self) -> CoreStats {
        self.shared.lock().core.stats().clone()
    }

    /// Each collector's delivery health, in configured order: the classified last error
    /// (`tls.cert.invalid` with rustls' reason, `tcp.refused`, `dns.name_not_resolved`,
    /// `http.error` with the status, ...), failures in a row, and the last delivery.
    pub fn delivery_status(&self) -> Vec<CollectorDelivery> {
        let state = self.shared.lock();
        self.shared
            .config
            .collectors
            .iter()
            .zip(state.core.collector_statuses())
            .map(|(c, status)| CollectorDelivery {
                url: c.url().to_owned(),
                status: status.clone(),
            })
            .collect()
    }

    /// The most recent failure cause among the collectors that have one (`None` when every
    /// collector's last answer was an acceptance).
    pub fn last_delivery_error(&self) -> Option<DeliveryError> {
        let state = self.shared.lock();
        state
            .core
            .collector_statuses()
            .iter()
            .filter_map(|s| Some((s.last_error_at?, s.last_error.clone()?)))
            .max_by_key(|(at, _)| *at)
            .map(|(_, e)| e)
    }

    /// Calls `listener` once per change of a collector's failure cause (the same moments the
    /// agent logs a warning), from the agent's task. Replaces any earlier listener.
    pub fn set_delivery_listener(&self, listener: Option<DeliveryListener>) {
        *self.shared.listener.lock().unwrap_or_else(|p| p.into_inner()) = listener;
    }

    /// Envelopes waiting for delivery or in flight.
    pub fn queued_envelopes(&self) -> usize {
        self.shared.lock().core.queued_envelopes()
    }

    /// Envelopes in the buffer.
    pub fn buffered_envelopes(&self) -> usize {
        self.shared.lock().core.store().list().map_or(0, |l| l.len())
    }

    /// The data dir.
    pub fn data_dir(&self) -> &Path {
        &self.shared.paths.data_dir
    }

    /// True when the agent was started with [`Agent::start_host_driven`].
    pub fn is_host_driven(&self) -> bool {
        self.shared.host_driven
    }

    /// Host-driven mode: the next envelope to POST now, or `None` (nothing due, no consent,
    /// or an agent that delivers by itself). Also seals what is due, so a host that polls
    /// never waits for the background task. Every upload taken must be answered with
    /// [`Agent::handle_upload_outcome`]; until then it counts against the in-flight limit.
    pub fn poll_upload(&self) -> Result<Option<HostUpload>, AgentError> {
        if !self.shared.host_driven {
            return Ok(None);
        }
        let shared = &self.shared;
        let mut state = shared.lock();
        let now = now_ms();
        seal_due(shared, &mut state, now);
        let transmit = match state.core.poll_transmit(now) {
            Ok(Some(t)) => t,
            Ok(None) => return Ok(None),
            Err(e) => {
                replace_broken_store(shared, &mut state, &e);
                return Err(e.into());
            }
        };
        drop(state);
        let Some(collector) = shared.config.collectors.get(transmit.collector) else {
            // The core only names configured collectors; answer so it is not stuck in flight.
            self.handle_upload_outcome(transmit.id, Outcome::NetworkError)?;
            return Ok(None);
        };
        // `url()` is the base URL with its prefix and no trailing slash.
        let url = format!("{}/v1/envelopes", collector.url());
        Ok(Some(HostUpload {
            id: transmit.id,
            collector: transmit.collector,
            url,
            headers: vec![
                ("content-type", super::ENVELOPE_MEDIA_TYPE.to_owned()),
                (super::SENT_AT_HEADER, now.0.to_string()),
            ],
            body: transmit.bytes,
        }))
    }

    /// Host-driven mode: the answer to upload `id` (from [`Agent::poll_upload`]). An answer
    /// for an upload the agent no longer knows (consent withdrawn meanwhile, answered twice)
    /// is ignored.
    pub fn handle_upload_outcome(
        &self,
        id: TransmitId,
        outcome: Outcome,
    ) -> Result<(), AgentError> {
        self.handle_upload_outcome_with_cause(id, outcome, None)
    }

    /// Host-driven mode: [`Agent::handle_upload_outcome`] with the classified cause of a
    /// failure, kept as the collector's last error ([`Agent::delivery_status`]).
    pub fn handle_upload_outcome_with_cause(
        &self,
        id: TransmitId,
        outcome: Outcome,
        cause: Option<DeliveryError>,
    ) -> Result<(), AgentError> {
        let shared = &self.shared;
        let result = {
            let mut state = shared.lock();
            let result = state.core.handle_outcome_with_cause(id, outcome, cause, now_ms());
            shared.report_cause_changes(&mut state);
            match result {
                Ok(_) => Ok(()),
                Err(e) => {
                    replace_broken_store(shared, &mut state, &e);
                    Err(e.into())
                }
            }
        };
        shared.progress.send_modify(|n| *n = n.wrapping_add(1));
        shared.wake.notify_one();
        result
    }

    /// Host-driven mode: how long until [`Agent::poll_upload`] may have something
    /// (`Duration::ZERO`: now); `None` when nothing is pending, in flight answers aside.
    pub fn upload_wait(&self) -> Option<Duration> {
        let at = self.shared.lock().core.poll_timeout()?;
        Some(Duration::from_millis(at.since(now_ms())))
    }
}

/// One envelope for the host to POST ([`Agent::poll_upload`]), with everything the request
/// needs: the same request the built-in uploader makes.
#[derive(Clone, PartialEq, Eq)]
pub struct HostUpload {
    /// Pass back to [`Agent::handle_upload_outcome`].
    pub id: TransmitId,
    /// The collector's index in the configured order.
    pub collector: usize,
    /// Where to POST: `https://host[:port][/prefix]/v1/envelopes`.
    pub url: String,
    /// Request headers besides those the HTTP stack adds (`host`, `content-length`):
    /// `content-type` and `vantage-sent-at` (the agent clock now, in Unix ms; send at once).
    pub headers: Vec<(&'static str, String)>,
    /// The sealed envelope: the request body.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for HostUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostUpload")
            .field("id", &self.id)
            .field("collector", &self.collector)
            .field("url", &self.url)
            .field("len", &self.body.len())
            .finish_non_exhaustive()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn remove_file(path: &Path) -> Result<(), AgentError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(file_error("deleting", path, e)),
    }
}

fn create_data_dir(dir: &Path) -> Result<(), AgentError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| file_error("creating the data dir", dir, e))
}

/// Writes `path` atomically (temp file, fsync, rename), readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn persist_identity(paths: &Paths, secret: &[u8; 32], since: UnixMillis) -> Result<(), AgentError> {
    create_data_dir(&paths.data_dir)?;
    let mut bytes = zeroize::Zeroizing::new([0u8; 41]);
    bytes[0] = 1;
    bytes[1..33].copy_from_slice(secret);
    bytes[33..].copy_from_slice(&since.0.to_be_bytes());
    write_private(&paths.identity, bytes.as_ref())
        .map_err(|e| file_error("writing the identity key", &paths.identity, e))
}

fn read_identity(path: &Path) -> Option<([u8; 32], UnixMillis)> {
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).ok()?);
    if bytes.len() != 41 || bytes[0] != 1 {
        return None;
    }
    let mut secret = [0u8; 32];
    secret.copy_from_slice(&bytes[1..33]);
    let mut since = [0u8; 8];
    since.copy_from_slice(&bytes[33..]);
    Some((secret, UnixMillis(u64::from_be_bytes(since))))
}

/// Deletes a folder and what is in it (missing is fine).
fn remove_dir(dir: &Path) -> Result<(), AgentError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(file_error("deleting", dir, e)),
    }
}

fn read_seq(path: &Path) -> u64 {
    std::fs::read(path)
        .ok()
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(0, u64::from_be_bytes)
}

/// At start: bring back a persisted grant and its buffer, or remove leftovers of a withdrawal
/// that did not finish.
fn restore(shared: &Shared) -> Result<(), AgentError> {
    let mut state = shared.lock();
    if !shared.paths.data_dir.exists() {
        // Never consented, or withdrawn: nothing to bring back, nothing to create.
        return Ok(());
    }
    // Whatever is in the data dir is read, and maybe deleted, under its lock only.
    state.data_dir_lock = Some(lock_data_dir(&shared.paths)?);
    match read_identity(&shared.paths.identity) {
        Some((secret, since)) => {
            state.core.restore_consent(secret, since);
            if let Err(e) = open_buffer(shared, &mut state) {
                state.data_dir_lock = None;
                return Err(e);
            }
            shared.consented.store(true, Ordering::SeqCst);
        }
        None => {
            if shared.paths.identity.exists() {
                tracing::warn!("the identity key file is unreadable; starting without consent");
            }
            remove_log(&shared.paths.log)?;
            remove_dir(&shared.paths.legacy_buffer)?;
            remove_file(&shared.paths.identity)?;
            remove_file(&shared.paths.legacy_seq)?;
            unlock_data_dir(&shared.paths, &mut state);
            let _ = std::fs::remove_dir(&shared.paths.data_dir);
        }
    }
    Ok(())
}

/// Takes the data dir's lock ([`LOCK_FILE`]), waiting up to [`LOCK_WAIT`] for another holder.
/// The data dir exists. Where the file system has no locks, the file is returned unlocked.
fn lock_data_dir(paths: &Paths) -> Result<std::fs::File, AgentError> {
    lock_file_with(&paths.lock, fs2::FileExt::try_lock_exclusive)
}

/// [`lock_data_dir`] with the non-blocking lock call given (tests stand in for a file system
/// without locks).
fn lock_file_with(
    path: &Path,
    try_lock: impl Fn(&std::fs::File) -> std::io::Result<()>,
) -> Result<std::fs::File, AgentError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).map_err(|e| file_error("opening the lock", path, e))?;
    let contended = fs2::lock_contended_error().raw_os_error();
    let until = Instant::now() + LOCK_WAIT;
    loop {
        match try_lock(&file) {
            Ok(()) => return Ok(file),
            Err(e) if e.raw_os_error() == contended => {
                if Instant::now() >= until {
                    return Err(AgentError::File {
                        what: "locking the data dir",
                        path: path.display().to_string(),
                        reason: "another agent holds it (another process, or another agent in \
                                 this process); each agent needs a data dir of its own"
                            .into(),
                    });
                }
                // No event says when another process lets go: polled, briefly.
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                // A file system without locks (some network and FUSE mounts): the agent works
                // as it did before the lock, unguarded, rather than not at all.
                tracing::warn!(path = %path.display(), error = %e,
                    "the data dir cannot be locked here; another agent on it would not be refused");
                return Ok(file);
            }
        }
    }
}

/// Lets go of the data dir's lock, deleting the lock file first (consent withdrawn, or never
/// granted: the data dir is being emptied).
fn unlock_data_dir(paths: &Paths, state: &mut State) {
    if let Some(lock) = state.data_dir_lock.take() {
        let _ = std::fs::remove_file(&paths.lock);
        drop(lock);
    }
}

/// Opens the log buffer (replacing one that is not a log) and puts it under the core. What
/// the log lost to damage is counted by the store itself (unsent `store_error` drops, which
/// the core sends in its next batch).
fn open_buffer(shared: &Shared, state: &mut State) -> Result<(), AgentError> {
    let paths = &shared.paths;
    let (mut store, replaced) = match LogStore::open(&paths.log) {
        Ok(store) => (store, None),
        Err(first) => {
            remove_log(&paths.log)?;
            (LogStore::open(&paths.log)?, Some(first))
        }
    };
    if let Some(repair) = store.repair() {
        tracing::warn!(
            discarded_bytes = repair.discarded_bytes,
            lost_failures = repair.lost_failures,
            "the envelope buffer had a damaged end (a write cut short); it was cut off and counted"
        );
    }
    let mut lost = 0;
    if let Some(e) = replaced {
        tracing::warn!(error = %e, "the envelope buffer was unreadable and has been replaced");
        // How many failures it held is unknown: at least one envelope's worth was lost. So is
        // its last sequence number: jump, so that numbers it may have sent are not reused.
        lost += 1;
        store.raise_last_seq(SEQ_JUMP)?;
    }
    if paths.legacy_buffer.exists() {
        tracing::warn!(
            "deleting the buffer of an earlier agent version (sled); its envelopes are lost"
        );
        remove_dir(&paths.legacy_buffer)?;
        lost += 1;
    }
    // An earlier version reserved sequence numbers up to this mark; never go below it.
    let legacy = read_seq(&paths.legacy_seq);
    if legacy > 0 {
        store.raise_last_seq(legacy - 1)?;
        remove_file(&paths.legacy_seq)?;
    }
    let floor = state.core.next_seq().saturating_sub(1);
    if floor > 0 {
        store.raise_last_seq(floor)?;
    }
    let _old = state.core.replace_store(NativeStore::Log(store))?;
    if lost > 0 {
        state.core.count_drop(DropReason::StoreError, lost);
    }
    Ok(())
}

/// A store operation failed: count, warn, and start a fresh store (which continues the
/// sequence numbers).
fn replace_broken_store(shared: &Shared, state: &mut State, error: &StoreError) {
    tracing::warn!(error = %error, "the envelope buffer failed; replacing it with a fresh one");
    if !state.core.consent().is_granted() {
        return;
    }
    let lost = state.core.store().list().map_or(1, |l| l.len().max(1) as u64);
    drop(state.core.replace_store(NativeStore::Memory(MemoryStore::new())));
    let _ = remove_log(&shared.paths.log);
    let floor = state.core.next_seq().saturating_sub(1);
    match LogStore::open(&shared.paths.log).and_then(|mut s| s.raise_last_seq(floor).map(|()| s)) {
        Ok(store) => {
            let _ = state.core.replace_store(NativeStore::Log(store));
        }
        Err(e) => {
            tracing::warn!(error = %e, "a fresh buffer could not be opened; keeping envelopes in memory")
        }
    }
    state.core.count_drop(DropReason::StoreError, lost);
}

struct Step {
    timeout: Option<UnixMillis>,
    transmits: Vec<(TransmitId, usize, Bytes)>,
    scope_check: bool,
}

/// Hands everything in the inbox to the core: failures in the order they were pushed, then
/// each target's successes at the time of its first.
fn absorb(shared: &Shared, state: &mut State) {
    let State { core, batch, .. } = state;
    shared.inbox.take(batch);
    for chunk in &mut batch.chunks {
        for (report, at) in chunk.drain(..) {
            let _ = core.handle_record(report, at);
        }
    }
    batch.emptied();
    for ((service, host), tally) in batch.counts.drain() {
        let at = UnixMillis(tally.first_ms);
        for _ in 0..tally.n {
            core.handle_success(&service, &host, at);
        }
    }
}

/// Which of the task's deadlines cover messages left in the inbox (see [`Inbox`]).
fn armed(shared: &Shared, state: &State) -> Armed {
    let failures = state.core.failures_seal_at().is_some();
    Armed {
        failures,
        counts: failures
            || state.core.counts_seal_at().is_some()
            || shared.config.report_interval.is_none(),
    }
}

/// Takes in the inbox, counts channel drops and seals what is due at `now`.
fn seal_due(shared: &Shared, state: &mut State, now: UnixMillis) {
    absorb(shared, state);
    let dropped = shared.channel_drops.swap(0, Ordering::Relaxed);
    if dropped > 0 && state.core.consent().is_granted() {
        state.core.count_drop(DropReason::QueueFull, dropped);
    }
    if let Err(e) = state.core.poll_seal(now) {
        replace_broken_store(shared, state, &e);
    }
}

fn step(shared: &Shared) -> Step {
    let mut state = shared.lock();
    let now = now_ms();
    seal_due(shared, &mut state, now);
    let mut transmits = Vec::new();
    // Host-driven: the host takes transmits itself (`Agent::poll_upload`).
    if !shared.host_driven {
        loop {
            match state.core.poll_transmit(now) {
                Ok(Some(t)) => transmits.push((t.id, t.collector, Bytes::from(t.bytes))),
                Ok(None) => break,
                Err(e) => {
                    replace_broken_store(shared, &mut state, &e);
                    break;
                }
            }
        }
    }
    let scope_check = state.core.poll_scope_check(now);
    if shared.inbox.arm(armed(shared, &state)) {
        // Pushed meanwhile: drain again before sleeping (the task is awake anyway).
        shared.wake.notify_one();
    }
    let mut timeout = state.core.poll_timeout();
    if shared.host_driven {
        // An envelope due now is the host's to take (`poll_upload`), so a due deadline is not
        // the task's: it wakes for future deadlines, and for sealing while failures are
        // pending (a due send deadline hides the seal deadline in `poll_timeout`).
        timeout = timeout.filter(|t| *t > now);
        if timeout.is_none() && state.core.pending_failures() > 0 {
            timeout = Some(now.plus_ms(millis(shared.config.seal_delay).max(1)));
        }
    }
    Step { timeout, transmits, scope_check }
}

fn seal_now(shared: &Shared) -> Result<(), StoreError> {
    let mut state = shared.lock();
    absorb(shared, &mut state);
    let dropped = shared.channel_drops.swap(0, Ordering::Relaxed);
    if dropped > 0 && state.core.consent().is_granted() {
        state.core.count_drop(DropReason::QueueFull, dropped);
    }
    match state.core.seal_pending(now_ms()) {
        Ok(_) => Ok(()),
        Err(e) => {
            replace_broken_store(shared, &mut state, &e);
            Err(e)
        }
    }
}

enum Flow {
    Continue,
    Exit(Option<oneshot::Sender<()>>),
}

fn handle(msg: Msg, flushes: &mut Vec<oneshot::Sender<Result<(), StoreError>>>) -> Flow {
    match msg {
        Msg::Flush(reply) => flushes.push(reply),
        Msg::Shutdown(reply) => return Flow::Exit(Some(reply)),
    }
    Flow::Continue
}

/// Handles one message and whatever else is already queued (up to a batch), under one lock.
/// Flushes that arrive while a scope check is pending are parked in `deferred` (see
/// [`SCOPE_FLUSH_WAIT`]); the run loop answers them when the check answers or the wait ends.
fn handle_messages(
    shared: &Shared,
    rx: &mut mpsc::Receiver<Msg>,
    first: Msg,
    deferred: &mut Vec<(FlushReply, Instant)>,
) -> Flow {
    let mut flushes = Vec::new();
    let mut flow = {
        let mut state = shared.lock();
        // What was recorded before these requests, before a flush checks for a scope check.
        absorb(shared, &mut state);
        let mut flow = handle(first, &mut flushes);
        let mut n = 1;
        while matches!(flow, Flow::Continue) && n < BATCH_MESSAGES && flushes.is_empty() {
            match rx.try_recv() {
                Ok(msg) => flow = handle(msg, &mut flushes),
                Err(_) => break,
            }
            n += 1;
        }
        flow
    };
    let exit = matches!(flow, Flow::Exit(_));
    if !flushes.is_empty() && !exit && shared.lock().core.scope_pending() {
        let until = Instant::now() + SCOPE_FLUSH_WAIT;
        deferred.extend(flushes.drain(..).map(|reply| (reply, until)));
    }
    if !flushes.is_empty() || exit {
        let result = seal_now(shared);
        for reply in flushes.into_iter().chain(deferred.drain(..).map(|(reply, _)| reply)) {
            let _ = reply.send(result.clone());
        }
    }
    if let Flow::Exit(reply) = &mut flow {
        close(shared);
        if let Some(reply) = reply.take() {
            let _ = reply.send(());
        }
        return Flow::Exit(None);
    }
    flow
}

fn close(shared: &Shared) {
    let mut state = shared.lock();
    // Every write of the log store is already on disk: dropping it only closes the file.
    drop(state.core.replace_store(NativeStore::Memory(MemoryStore::new())));
    // Nothing more is written: the data dir is free for a restarted agent (its lock file stays,
    // with the grant).
    state.data_dir_lock = None;
    shared.consented.store(false, Ordering::SeqCst);
    shared.uploader.close_idle();
}

async fn sleep_until(at: Option<UnixMillis>) {
    match at {
        Some(at) => {
            let wait = at.since(now_ms());
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until_instant(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn ping_collectors(shared: Arc<Shared>) -> bool {
    for c in shared.config.collectors.iter().take(SCOPE_PING_COLLECTORS) {
        if probe::ping(c.url(), &c.fixed_addrs, &shared.probe).await {
            return true;
        }
    }
    false
}

/// The background task. It sleeps on the channel, on upload outcomes, on scope checks and on
/// the core's next deadline only: no timer runs while nothing is pending.
async fn run(shared: Arc<Shared>, mut rx: mpsc::Receiver<Msg>) {
    let mut uploads: JoinSet<(u64, TransmitId, (Outcome, Option<DeliveryError>))> = JoinSet::new();
    let mut checks: JoinSet<(u64, bool)> = JoinSet::new();
    let mut epoch = shared.epoch.load(Ordering::SeqCst);
    let started = Instant::now();
    let mut deferred: Vec<(FlushReply, Instant)> = Vec::new();
    loop {
        if !deferred.is_empty()
            && (!shared.lock().core.scope_pending()
                || deferred.iter().any(|(_, until)| Instant::now() >= *until))
        {
            let result = seal_now(&shared);
            for (reply, _) in deferred.drain(..) {
                let _ = reply.send(result.clone());
            }
        }
        let current = shared.epoch.load(Ordering::SeqCst);
        if current != epoch {
            uploads.abort_all();
            checks.abort_all();
            epoch = current;
        }
        let step = step(&shared);
        for (id, collector, bytes) in step.transmits {
            let uploader = shared.uploader.clone();
            uploads.spawn(async move { (epoch, id, uploader.send(collector, bytes).await) });
        }
        if step.scope_check {
            let shared = shared.clone();
            checks.spawn(async move { (epoch, ping_collectors(shared).await) });
        }
        // Nothing pending, due or in flight (what this step started is in the join sets): the
        // task sleeps until a message or an app thread wakes it. A kept-alive upload
        // connection would wake it all the same when the collector closes it (after its
        // `header_read_timeout` or `idle_timeout`), so an idle agent holds none.
        if step.timeout.is_none() && uploads.is_empty() && checks.is_empty() && deferred.is_empty()
        {
            shared.uploader.close_idle();
        }
        tokio::select! {
            msg = rx.recv() => {
                let flow = match msg {
                    Some(msg) => handle_messages(&shared, &mut rx, msg, &mut deferred),
                    None => {
                        let result = seal_now(&shared);
                        for (reply, _) in deferred.drain(..) {
                            let _ = reply.send(result.clone());
                        }
                        close(&shared);
                        Flow::Exit(None)
                    }
                };
                if let Flow::Exit(_) = flow {
                    uploads.abort_all();
                    checks.abort_all();
                    tracing::debug!(uptime_ms = started.elapsed().as_millis() as u64, "vantage agent task ended");
                    return;
                }
            }
            Some(joined) = uploads.join_next(), if !uploads.is_empty() => {
                if let Ok((sent_in, id, (outcome, cause))) = joined {
                    if sent_in == shared.epoch.load(Ordering::SeqCst) {
                        let mut state = shared.lock();
                        let result =
                            state.core.handle_outcome_with_cause(id, outcome, cause, now_ms());
                        shared.report_cause_changes(&mut state);
                        if let Err(e) = result {
                            replace_broken_store(&shared, &mut state, &e);
                        }
                    }
                }
                shared.progress.send_modify(|n| *n = n.wrapping_add(1));
            }
            Some(joined) = checks.join_next(), if !checks.is_empty() => {
                if let Ok((sent_in, reachable)) = joined {
                    if sent_in == shared.epoch.load(Ordering::SeqCst) {
                        shared.lock().core.handle_scope_result(reachable, now_ms());
                    }
                }
            }
            () = sleep_until(step.timeout) => {}
            () = sleep_until_instant(deferred.iter().map(|(_, until)| *until).min()) => {}
            () = shared.wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// Where the file system has no locks (`flock` fails with `ENOLCK`, as on NFS without a
    /// lock daemon, or with another error that is not contention) the data dir's lock is
    /// skipped and the agent runs unguarded; contention is waited for up to [`LOCK_WAIT`],
    /// then refused by name.
    #[test]
    fn a_file_system_without_locks_is_used_unguarded_and_contention_is_refused() {
        use std::cell::Cell;
        let dir = std::env::temp_dir().join(format!("vantage-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(LOCK_FILE);
        let no_locks = [
            || std::io::Error::from_raw_os_error(libc::ENOLCK),
            || std::io::Error::new(std::io::ErrorKind::Unsupported, "no locks here"),
        ];
        for error in no_locks {
            let calls = Cell::new(0);
            let file = lock_file_with(&path, |_| {
                calls.set(calls.get() + 1);
                Err(error())
            })
            .expect("used unguarded");
            assert_eq!(calls.get(), 1, "not retried");
            drop(file);
            assert!(path.exists());
        }
        // Contended, then free: waited for.
        let calls = Cell::new(0);
        lock_file_with(&path, |_| {
            calls.set(calls.get() + 1);
            if calls.get() < 3 { Err(fs2::lock_contended_error()) } else { Ok(()) }
        })
        .expect("taken once free");
        assert_eq!(calls.get(), 3);
        // Contended throughout: refused by name after the wait.
        let start = Instant::now();
        let err = lock_file_with(&path, |_| Err(fs2::lock_contended_error())).unwrap_err();
        assert!(start.elapsed() >= LOCK_WAIT);
        let text = err.to_string();
        assert!(
            text.contains("locking the data dir") && text.contains("another agent holds it"),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn id_entropy_never_repeats_a_block_across_refills_and_threads() {
        // 16-byte ids over several refills (odd sizes too, so draws straddle a refill), and
        // from a second thread: every id differs, which a pool that re-served bytes, did not
        // advance or was shared between threads without care would break.
        let draw = |n: usize| {
            let mut ids = Vec::with_capacity(n);
            for i in 0..n {
                let mut id = vec![0u8; if i % 7 == 0 { 23 } else { 16 }];
                IdEntropy.fill(&mut id);
                ids.push(id);
            }
            ids
        };
        let here = draw(5 * ID_POOL_BYTES / 16);
        let there = std::thread::spawn(move || draw(5 * ID_POOL_BYTES / 16)).join().unwrap();
        let mut seen = HashSet::new();
        for id in here.iter().chain(&there) {
            assert!(id.iter().any(|&b| b != 0), "an all-zero id: the pool served wiped bytes");
            assert!(seen.insert(id.clone()), "an id repeated");
        }
        // Larger than the pool in one call.
        let mut big = vec![0u8; 3 * ID_POOL_BYTES + 5];
        IdEntropy.fill(&mut big);
        assert!(big.chunks(16).all(|c| c.iter().any(|&b| b != 0)));
    }

    #[test]
    fn a_forked_child_that_starts_an_agent_does_not_reuse_its_parents_id_bytes() {
        // What fork does to the recording thread's pool, done by hand: the child gets a copy
        // of the parent's block, part used.
        let mut first = [0u8; 10];
        IdEntropy.fill(&mut first);
        let inherited = ID_POOL.with_borrow(IdPool::clone);
        let mut parent_next = [0u8; 10];
        IdEntropy.fill(&mut parent_next);
        // The child: its copy of the block, then an agent of its own started (before consent,
        // so it writes nothing; the data dir does not exist).
        ID_POOL.with_borrow_mut(|pool| *pool = inherited.clone());
        let config = AgentConfig::from_toml_str(
            "data_dir = \"/nonexistent/vantage-fork-test\"\n\
             collector_key = \"4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a\"\n\
             [app]\nid = \"app\"\nversion = \"1\"\nplatform = \"linux\"\n\
             [[services]]\nid = \"checkout\"\nhosts = [\"api.example.com\"]\n\
             [[collectors]]\nurl = \"https://collector.example.net\"\n",
        )
        .unwrap();
        let agent = Agent::start(config, None).unwrap();
        let mut child_next = [0u8; 10];
        IdEntropy.fill(&mut child_next);
        assert_ne!(child_next, parent_next, "the child drew the bytes the parent draws next");
        drop(agent);
        // The control: the same copy, under the current generation, serves those bytes again
        // (so the check above is not passing by accident). Other tests start agents in
        // parallel; a generation moved meanwhile makes the draw fresh, and the check retries.
        let again = (0..100)
            .find_map(|_| {
                let mut copy = inherited.clone();
                copy.generation = ID_GENERATION.load(Ordering::Relaxed);
                ID_POOL.with_borrow_mut(|pool| *pool = copy.clone());
                let mut again = [0u8; 10];
                IdEntropy.fill(&mut again);
                (ID_GENERATION.load(Ordering::Relaxed) == copy.generation).then_some(again)
            })
            .unwrap();
        assert_eq!(again, parent_next);
    }

    /// docs/agent-config.md and `DEFAULT_QUEUE_CAPACITY` say a queued failure takes about 200
    /// bytes: this much in its chunk, plus the service id's and host's own allocations.
    #[test]
    fn a_queued_failure_is_small() {
        assert!(size_of::<(Report, UnixMillis)>() <= 128);
    }
}
