//! Delivery scheduling, sans-IO: which envelope goes to which collector, and when.
//!
//! The [`Scheduler`] knows envelopes by sequence number only (the bytes stay in the
//! [`EnvelopeStore`](crate::buffer::EnvelopeStore), so every retry sends the same bytes) and
//! collectors by their index in the configured order. A runtime drives it like this:
//!
//! ```text
//!  enqueue(seq) ─▶ poll_transmit(now) ─▶ Transmit { id, seq, collector } ─▶ POST the bytes
//!                        ▲                                                      │
//!                        └──── handle_outcome(id, Outcome, now, rng) ◀──────────┘
//!  poll_timeout() ─▶ when to call poll_transmit next; None = nothing to wake up for
//! ```
//!
//! Rules:
//! - **Order and failover.** An envelope goes to the first collector, in configured order,
//!   that it has not tried in the current round and that is available (not backing off, no
//!   `Retry-After` pending). A network error, a 5xx or a 429/503 sends it on to the next one.
//! - **Backoff with full jitter.** Each failure of a collector (network error, 5xx) makes it
//!   unavailable for a uniformly random time in `[0, min(cap, base * 2^(n-1))]`, `n` its
//!   consecutive failures; when an envelope has tried every collector in a round, it waits the
//!   same way (`n` = rounds) before the next round. Randomness comes from
//!   [`Entropy`].
//! - **Retry-After.** A 429 or 503 with `Retry-After` makes that collector unavailable for at
//!   least the given time (capped at [`MAX_RETRY_AFTER_MS`]); no request goes to it before.
//! - **At-least-once.** Only [`Outcome::Accepted`] resolves an envelope as delivered;
//!   [`Outcome::Rejected`] (400, 413) resolves it as dropped ([`DropReason::Rejected`]), since
//!   retrying a malformed envelope cannot help. Everything else retries.
//! - **Pacing.** At most `max_in_flight` transmits at once and at most `max_per_second` started
//!   in any 1000 ms, so a large backlog after an outage is flushed gently.
//! - **No idle wakeups.** [`Scheduler::poll_timeout`] is `None` when nothing is queued, or when
//!   everything waits on transmits in flight.

use std::collections::VecDeque;

use crate::drops::DropReason;
use crate::entropy::Entropy;
use crate::report::UnixMillis;
use crate::taxonomy::ErrorType;
use crate::vecmap::VecMap;

/// Default base of the exponential backoff: 1000 ms.
pub const DEFAULT_BASE_BACKOFF_MS: u64 = 1_000;
/// Default cap of the exponential backoff: 20 000 ms. A backlog must reach a collector within
/// about half a minute of it coming back (full jitter keeps the average wait at half the cap);
/// a failed attempt is one refused or timed-out connection, cheap enough every ~10 s.
pub const DEFAULT_MAX_BACKOFF_MS: u64 = 20_000;
/// Default limit of transmits in flight at once: 2.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2;
/// Default limit of transmits started per second: 10.
pub const DEFAULT_MAX_PER_SECOND: u32 = 10;
/// The longest `Retry-After` honoured: 6 hours. A longer one (or a hostile one) is cut to this.
pub const MAX_RETRY_AFTER_MS: u64 = 6 * 60 * 60 * 1000;
/// The most collectors a scheduler handles.
pub const MAX_COLLECTORS: usize = 64;

/// Tuning of the scheduler. Every field documents its default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// Backoff base in ms (default [`DEFAULT_BASE_BACKOFF_MS`], 1000).
    pub base_backoff_ms: u64,
    /// Backoff cap in ms (default [`DEFAULT_MAX_BACKOFF_MS`], 20 000).
    pub max_backoff_ms: u64,
    /// Transmits in flight at once, at least 1 (default [`DEFAULT_MAX_IN_FLIGHT`], 2).
    pub max_in_flight: usize,
    /// Transmits started per 1000 ms, at least 1 (default [`DEFAULT_MAX_PER_SECOND`], 10).
    pub max_per_second: u32,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            base_backoff_ms: DEFAULT_BASE_BACKOFF_MS,
            max_backoff_ms: DEFAULT_MAX_BACKOFF_MS,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_per_second: DEFAULT_MAX_PER_SECOND,
        }
    }
}

/// What a collector answered to one transmit (the runtime maps HTTP onto this).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `202`: durably stored (or a duplicate of something stored).
    Accepted,
    /// `400` or `413`: malformed or too large; never retried, dropped with
    /// [`DropReason::Rejected`].
    Rejected {
        /// The status.
        status: u16,
    },
    /// `429` or `503`, with `Retry-After` (0 when the header was absent or unreadable).
    RetryAfter {
        /// The status.
        status: u16,
        /// The delay asked for, in ms.
        delay_ms: u64,
    },
    /// Any other status (5xx, or something unexpected): the collector is unhealthy.
    ServerError {
        /// The status.
        status: u16,
    },
    /// No answer: DNS, connect, TLS, timeout, or the connection dropped before a status.
    NetworkError,
}

/// Why the last attempt to deliver to a collector failed: a classified cause with a stable
/// label ([`DeliveryError::as_str`]) and a message for people ([`DeliveryError::message`]).
///
/// The scheduler keeps the last one per collector ([`Scheduler::collector_status`]) and
/// forgets it when the collector accepts an envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryError {
    /// No HTTP answer: DNS, connect, TLS or timeout, classified as a NEL type
    /// (`dns.name_not_resolved`, `tcp.refused`, `tls.cert.authority_invalid`, ...).
    Network {
        /// The NEL type.
        kind: ErrorType,
        /// The underlying error in its own words (for TLS, rustls' reason, such as
        /// `CaUsedAsEndEntity`); never a URL, address or report content. May be empty.
        detail: String,
    },
    /// The collector answered with a status other than 2xx.
    Status {
        /// The status.
        status: u16,
    },
}

impl DeliveryError {
    /// A network error of `kind` with `detail`.
    pub fn network(kind: ErrorType, detail: impl Into<String>) -> DeliveryError {
        DeliveryError::Network { kind, detail: detail.into() }
    }

    /// The stable, low-cardinality label: the NEL type of a network error (`tcp.refused`,
    /// `tls.cert.invalid`, ...), `http.error` for a status.
    pub fn as_str(&self) -> &str {
        match self {
            DeliveryError::Network { kind, .. } => kind.as_str(),
            DeliveryError::Status { .. } => "http.error",
        }
    }

    /// The HTTP status, for [`DeliveryError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            DeliveryError::Status { status } => Some(*status),
            DeliveryError::Network { .. } => None,
        }
    }

    /// The underlying error's own words (empty for a status).
    pub fn detail(&self) -> &str {
        match self {
            DeliveryError::Network { detail, .. } => detail,
            DeliveryError::Status { .. } => "",
        }
    }

    /// One line for people: what failed, the underlying reason, and what usually fixes it.
    pub fn message(&self) -> String {
        let (what, hint) = match self {
            DeliveryError::Status { status } => {
                let hint = match status {
                    400 | 413 => "the collector refused the envelope as malformed or too large",
                    401 | 403 => "the collector refused the request; check the URL's path prefix",
                    404 => "no envelope endpoint at this URL; check the collector URL and prefix",
                    429 | 503 => "the collector asked to retry later (overloaded or low on disk)",
                    _ => "the collector answered with an error; see its log",
                };
                // Joined by hand, not with format!: see crate::text.
                let mut m = [self.as_str(), ": HTTP "].concat();
                crate::text::push_decimal(&mut m, u32::from(*status));
                m.push_str(": ");
                m.push_str(hint);
                return m;
            }
            DeliveryError::Network { kind, .. } => match kind {
                ErrorType::TlsCertInvalid if self.detail().contains("CaUsedAsEndEntity") => (
                    "the collector's TLS certificate is a CA certificate (basicConstraints CA:TRUE, as `openssl req -x509` makes) used as a server certificate",
                    "make a CA and a leaf certificate with CA:FALSE and a subjectAltName (docs/troubleshooting.md)",
                ),
                ErrorType::TlsCertAuthorityInvalid => (
                    "the collector's TLS certificate is signed by an unknown issuer",
                    "add the issuing CA to the agent's trusted roots (`extra_ca_files`, `extra_root`), or use a publicly trusted certificate",
                ),
                ErrorType::TlsCertNameInvalid => (
                    "the collector's TLS certificate does not name the host in the URL",
                    "add the host to the certificate's subjectAltName, or use a URL with a name it has",
                ),
                ErrorType::TlsCertDateInvalid => (
                    "the collector's TLS certificate is expired or not yet valid",
                    "renew it, and check both clocks",
                ),
                k if k.is_certificate() => {
                    ("the collector's TLS certificate was refused", "see docs/troubleshooting.md")
                }
                k if k.is_tls() => {
                    ("the TLS handshake failed", "check that the URL points at a TLS port")
                }
                ErrorType::TcpRefused => (
                    "the connection was refused",
                    "is the collector running, and listening on this port?",
                ),
                k if k.is_dns() => (
                    "the collector's name did not resolve",
                    "check the host name, the DNS servers, or set fixed addresses",
                ),
                k if k.is_timeout() => {
                    ("no answer in time", "check the network path and firewalls to the collector")
                }
                _ => ("the connection to the collector failed", "check the network path"),
            },
        };
        // Joined by hand, not with format!: see crate::text.
        if self.detail().is_empty() {
            [self.as_str(), ": ", what, "; ", hint].concat()
        } else {
            [self.as_str(), ": ", what, " (", self.detail(), "); ", hint].concat()
        }
    }

    /// The error an [`Outcome`] implies when the runtime has no better cause: a status, or an
    /// unclassified network error. `None` for [`Outcome::Accepted`].
    pub fn of_outcome(outcome: Outcome) -> Option<DeliveryError> {
        match outcome {
            Outcome::Accepted => None,
            Outcome::Rejected { status }
            | Outcome::RetryAfter { status, .. }
            | Outcome::ServerError { status } => Some(DeliveryError::Status { status }),
            Outcome::NetworkError => Some(DeliveryError::network(ErrorType::Unknown, "")),
        }
    }
}

impl std::fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

/// A collector's delivery health, as the scheduler sees it ([`Scheduler::collector_status`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CollectorStatus {
    /// Why the last attempt failed; `None` when the last answer was an acceptance, or no
    /// attempt failed yet.
    pub last_error: Option<DeliveryError>,
    /// When `last_error` happened.
    pub last_error_at: Option<UnixMillis>,
    /// Attempts failed in a row (any error, status or network).
    pub consecutive_failures: u32,
    /// When the collector last accepted an envelope.
    pub last_delivered_at: Option<UnixMillis>,
}

/// The cause of a collector's failures changed ([`Scheduler::poll_cause_change`]): the moment
/// for one log line, instead of one per attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CauseChange {
    /// The collector's index in the configured order.
    pub collector: usize,
    /// The new cause; `None`: the collector accepts envelopes again.
    pub error: Option<DeliveryError>,
}

/// Identifies one transmit, so an outcome that arrives after its envelope was removed
/// ([`Scheduler::remove`], [`Scheduler::clear`]) is recognised as stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransmitId(pub u64);

/// One envelope to send to one collector, now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// Pass back to [`Scheduler::handle_outcome`].
    pub id: TransmitId,
    /// The envelope's sequence number.
    pub seq: u64,
    /// The collector's index in the configured order.
    pub collector: usize,
}

/// What [`Scheduler::handle_outcome`] did with the envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// Delivered: remove it from the store.
    Delivered {
        /// The envelope.
        seq: u64,
    },
    /// Refused for good: remove it from the store and count its failures with `reason`.
    Dropped {
        /// The envelope.
        seq: u64,
        /// Why ([`DropReason::Rejected`]).
        reason: DropReason,
    },
    /// Queued again for another attempt (same bytes).
    Retry {
        /// The envelope.
        seq: u64,
    },
    /// The transmit was unknown (already resolved, or its envelope was removed): ignore it.
    Stale,
}

#[derive(Clone, Copy, Debug, Default)]
struct CollectorState {
    failures: u32,
    backoff_until: UnixMillis,
    retry_after_until: UnixMillis,
}

impl CollectorState {
    fn available_at(&self) -> UnixMillis {
        self.backoff_until.max(self.retry_after_until)
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// Collectors tried in the current round (bit i = collector i).
    tried: u64,
    rounds: u32,
    not_before: UnixMillis,
}

/// The delivery state machine. See the [module docs](self).
#[derive(Debug)]
pub struct Scheduler {
    config: DeliveryConfig,
    collectors: Vec<CollectorState>,
    /// Envelopes waiting (not in flight), by seq: oldest first.
    queued: VecMap<u64, Entry>,
    in_flight: VecMap<TransmitId, (u64, usize, Entry)>,
    /// The seqs of `in_flight`, ascending (at most `max_in_flight`).
    in_flight_seqs: Vec<u64>,
    starts: VecDeque<UnixMillis>,
    next_id: u64,
    status: Vec<CollectorStatus>,
    changes: VecDeque<CauseChange>,
}

impl Scheduler {
    /// A scheduler for `collectors` collectors (capped at [`MAX_COLLECTORS`]). `max_in_flight`
    /// and `max_per_second` below 1 count as 1.
    pub fn new(collectors: usize, mut config: DeliveryConfig) -> Scheduler {
        config.max_in_flight = config.max_in_flight.max(1);
        config.max_per_second = config.max_per_second.max(1);
        Scheduler {
            config,
            collectors: vec![CollectorState::default(); collectors.min(MAX_COLLECTORS)],
            queued: VecMap::new(),
            in_flight: VecMap::new(),
            in_flight_seqs: Vec::new(),
            starts: VecDeque::new(),
            next_id: 0,
            status: vec![CollectorStatus::default(); collectors.min(MAX_COLLECTORS)],
            changes: VecDeque::new(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    /// Queues envelope `seq` for delivery (no-op if already queued or in flight).
    pub fn enqueue(&mut self, seq: u64) {
        if self.in_flight_seqs.binary_search(&seq).is_err() {
            self.queued.get_or_insert_with(seq, Entry::default);
        }
    }

    /// Forgets envelope `seq` (evicted from the store); an outcome for it in flight becomes
    /// [`Resolution::Stale`].
    pub fn remove(&mut self, seq: u64) {
        self.queued.remove(&seq);
        if let Ok(i) = self.in_flight_seqs.binary_search(&seq) {
            self.in_flight_seqs.remove(i);
            self.in_flight.retain(|_, (s, _, _)| *s != seq);
        }
    }

    /// Forgets every envelope and every transmit in flight (consent withdrawn); collector
    /// health is kept.
    pub fn clear(&mut self) {
        self.queued.clear();
        self.in_flight.clear();
        self.in_flight_seqs.clear();
    }

    /// Envelopes waiting or in flight.
    pub fn len(&self) -> usize {
        self.queued.len() + self.in_flight_seqs.len()
    }

    /// True when nothing is waiting or in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sequence numbers of envelopes in flight, ascending (the store must not evict them).
    pub fn in_flight(&self) -> &[u64] {
        &self.in_flight_seqs
    }

    /// The next transmit to start at `now`, if pacing, backoff and `Retry-After` allow one.
    /// Call it until it returns `None`.
    pub fn poll_transmit(&mut self, now: UnixMillis) -> Option<Transmit> {
        if self.in_flight.len() >= self.config.max_in_flight {
            return None;
        }
        while self.starts.front().is_some_and(|t| now.since(*t) >= 1_000 || *t > now) {
            self.starts.pop_front();
        }
        if self.starts.len() >= self.config.max_per_second as usize {
            return None;
        }
        // Oldest first, strictly: the oldest queued envelope goes next or nothing does, so a
        // backlog reaches the collector in order of age (a younger envelope whose backoff
        // happens to end sooner does not overtake it).
        let (seq, entry) = self.queued.first()?;
        if entry.not_before > now {
            return None;
        }
        let collector = self.untried(entry).find(|&c| self.collectors[c].available_at() <= now)?;
        let seq = *seq;
        let entry = self.queued.pop_first().map(|(_, e)| e).unwrap_or_default();
        let id = TransmitId(self.next_id);
        self.next_id += 1;
        self.in_flight.insert(id, (seq, collector, entry));
        if let Err(i) = self.in_flight_seqs.binary_search(&seq) {
            self.in_flight_seqs.insert(i, seq);
        }
        self.starts.push_back(now);
        Some(Transmit { id, seq, collector })
    }

    /// Takes the collector's answer to transmit `id` at `now`; `rng` draws the jitter. A
    /// network error is recorded without a cause (`unknown`); runtimes that know the cause
    /// call [`handle_outcome_with_cause`](Self::handle_outcome_with_cause).
    pub fn handle_outcome(
        &mut self,
        id: TransmitId,
        outcome: Outcome,
        now: UnixMillis,
        rng: &mut impl Entropy,
    ) -> Resolution {
        self.handle_outcome_with_cause(id, outcome, None, now, rng)
    }

    /// [`handle_outcome`](Self::handle_outcome) with the classified cause of a failure, kept
    /// as the collector's [`CollectorStatus::last_error`]. `cause` is ignored for an
    /// acceptance; `None` records what the outcome implies ([`DeliveryError::of_outcome`]).
    pub fn handle_outcome_with_cause(
        &mut self,
        id: TransmitId,
        outcome: Outcome,
        cause: Option<DeliveryError>,
        now: UnixMillis,
        rng: &mut impl Entropy,
    ) -> Resolution {
        let Some((seq, c, mut entry)) = self.in_flight.remove(&id) else {
            return Resolution::Stale;
        };
        self.note_status(c, outcome, cause, now);
        if let Ok(i) = self.in_flight_seqs.binary_search(&seq) {
            self.in_flight_seqs.remove(i);
        }
        let Some(collector) = self.collectors.get_mut(c) else {
            return Resolution::Stale;
        };
        match outcome {
            Outcome::Accepted => {
                *collector = CollectorState {
                    retry_after_until: collector.retry_after_until,
                    ..Default::default()
                };
                return Resolution::Delivered { seq };
            }
            Outcome::Rejected { .. } => {
                collector.failures = 0;
                collector.backoff_until = UnixMillis(0);
                return Resolution::Dropped { seq, reason: DropReason::Rejected };
            }
            Outcome::RetryAfter { delay_ms, .. } => {
                let until = now.plus_ms(delay_ms.min(MAX_RETRY_AFTER_MS));
                collector.retry_after_until = collector.retry_after_until.max(until);
            }
            Outcome::ServerError { .. } | Outcome::NetworkError => {
                collector.failures = collector.failures.saturating_add(1);
                let delay = full_jitter(&self.config, collector.failures, rng);
                collector.backoff_until = now.plus_ms(delay);
            }
        }
        entry.tried |= 1u64 << c;
        if self.untried(&entry).next().is_none() {
            entry.tried = 0;
            entry.rounds = entry.rounds.saturating_add(1);
            entry.not_before = now.plus_ms(full_jitter(&self.config, entry.rounds, rng));
        }
        self.queued.insert(seq, entry);
        Resolution::Retry { seq }
    }

    fn note_status(
        &mut self,
        c: usize,
        outcome: Outcome,
        cause: Option<DeliveryError>,
        now: UnixMillis,
    ) {
        let Some(status) = self.status.get_mut(c) else {
            return;
        };
        let error = match outcome {
            Outcome::Accepted => None,
            _ => cause.or_else(|| DeliveryError::of_outcome(outcome)),
        };
        match &error {
            None => {
                status.consecutive_failures = 0;
                status.last_delivered_at = Some(now);
            }
            Some(_) => {
                status.consecutive_failures = status.consecutive_failures.saturating_add(1);
                status.last_error_at = Some(now);
            }
        }
        // A change of cause is the label and the detail (the same label with another TLS
        // reason is news; the same reason again is not).
        let key = |e: &Option<DeliveryError>| {
            e.as_ref().map(|e| (e.as_str().to_owned(), e.detail().to_owned()))
        };
        if key(&status.last_error) != key(&error) {
            if self.changes.len() >= MAX_COLLECTORS {
                self.changes.pop_front();
            }
            self.changes.push_back(CauseChange { collector: c, error: error.clone() });
        }
        status.last_error = error;
    }

    /// The delivery health of collector `index` (configured order), or `None` past the end.
    pub fn collector_status(&self, index: usize) -> Option<&CollectorStatus> {
        self.status.get(index)
    }

    /// Every collector's delivery health, in configured order.
    pub fn collector_statuses(&self) -> &[CollectorStatus] {
        &self.status
    }

    /// The next change of a collector's failure cause, oldest first (at most
    /// [`MAX_COLLECTORS`] are kept). Runtimes log these, once each.
    pub fn poll_cause_change(&mut self) -> Option<CauseChange> {
        self.changes.pop_front()
    }

    /// When [`poll_transmit`](Self::poll_transmit) may next return something: a time at or
    /// before the current one means "now". `None` when nothing is queued, or when the only
    /// thing to wait for is a transmit in flight (its outcome is the wakeup).
    pub fn poll_timeout(&self) -> Option<UnixMillis> {
        if self.in_flight.len() >= self.config.max_in_flight {
            return None;
        }
        // Only the oldest envelope can go next (see `poll_transmit`).
        let (_, entry) = self.queued.first()?;
        let collector = self.untried(entry).map(|c| self.collectors[c].available_at()).min()?;
        let ready = collector.max(entry.not_before);
        let rate = if self.starts.len() >= self.config.max_per_second as usize {
            self.starts.front().map_or(UnixMillis(0), |t| t.plus_ms(1_000))
        } else {
            UnixMillis(0)
        };
        Some(ready.max(rate))
    }

    fn untried<'a>(&'a self, entry: &'a Entry) -> impl Iterator<Item = usize> + 'a {
        (0..self.collectors.len()).filter(move |c| entry.tried & (1u64 << c) == 0)
    }
}

/// A uniformly random delay in `[0, min(cap, base * 2^(n-1))]` (full jitter).
fn full_jitter(config: &DeliveryConfig, n: u32, rng: &mut impl Entropy) -> u64 {
    let exp = n.saturating_sub(1).min(63);
    let ceiling = config.base_backoff_ms.saturating_mul(1u64 << exp).min(config.max_backoff_ms);
    if ceiling == 0 { 0 } else { rng.next_u64() % (ceiling + 1) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::SeededEntropy;

    fn rng() -> SeededEntropy {
        SeededEntropy::insecure_from_seed([5; 32])
    }

    fn config() -> DeliveryConfig {
        DeliveryConfig { max_in_flight: 8, max_per_second: 100, ..DeliveryConfig::default() }
    }

    /// Drains everything sendable at `now`.
    fn drain(s: &mut Scheduler, now: UnixMillis) -> Vec<Transmit> {
        std::iter::from_fn(|| s.poll_transmit(now)).collect()
    }

    #[test]
    fn idle_scheduler_has_no_timeout() {
        let mut s = Scheduler::new(2, config());
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(s.poll_transmit(UnixMillis(0)), None);
        s.enqueue(1);
        assert_eq!(s.poll_timeout(), Some(UnixMillis(0)));
        let t = s.poll_transmit(UnixMillis(5)).unwrap();
        // Everything is in flight: the outcome is the wakeup, not a timer.
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(
            s.handle_outcome(t.id, Outcome::Accepted, UnixMillis(6), &mut rng()),
            Resolution::Delivered { seq: 1 }
        );
        assert_eq!(s.poll_timeout(), None);
        assert!(s.is_empty());
    }

    #[test]
    fn the_oldest_envelope_goes_first_even_when_a_younger_one_is_ready_sooner() {
        let mut r = rng();
        let mut s = Scheduler::new(1, config());
        s.enqueue(1);
        // Envelope 1 fails several rounds, so its backoff grows; envelope 2 is queued later.
        let mut now = UnixMillis(0);
        for _ in 0..4 {
            now = s.poll_timeout().unwrap().max(now);
            let t = s.poll_transmit(now).unwrap();
            assert_eq!(t.seq, 1);
            s.handle_outcome(t.id, Outcome::NetworkError, now, &mut r);
        }
        s.enqueue(2);
        let due = s.poll_timeout().unwrap();
        // Nothing overtakes envelope 1 while it waits, and the timer is its deadline.
        if due > now {
            assert_eq!(s.poll_transmit(now), None);
        }
        let sent = drain(&mut s, due);
        assert_eq!(sent.first().map(|t| t.seq), Some(1), "{sent:?}");
    }

    #[test]
    fn fails_over_in_configured_order() {
        let mut r = rng();
        let mut s = Scheduler::new(3, config());
        s.enqueue(7);
        let now = UnixMillis(1_000);
        let t0 = s.poll_transmit(now).unwrap();
        assert_eq!((t0.seq, t0.collector), (7, 0));
        assert_eq!(
            s.handle_outcome(t0.id, Outcome::NetworkError, now, &mut r),
            Resolution::Retry { seq: 7 }
        );
        let t1 = s.poll_transmit(now).unwrap();
        assert_eq!(t1.collector, 1, "failover to the next collector at once");
        let _ = s.handle_outcome(t1.id, Outcome::ServerError { status: 500 }, now, &mut r);
        let t2 = s.poll_transmit(now).unwrap();
        assert_eq!(t2.collector, 2);
        let _ =
            s.handle_outcome(t2.id, Outcome::RetryAfter { status: 429, delay_ms: 0 }, now, &mut r);
        // A full round failed: the envelope waits for its round backoff, then starts again at
        // the first collector that is available.
        let wake = s.poll_timeout().unwrap();
        assert!(wake <= now.plus_ms(DEFAULT_BASE_BACKOFF_MS), "{wake:?}");
        let later = now.plus_ms(DEFAULT_MAX_BACKOFF_MS);
        let t3 = s.poll_transmit(later).unwrap();
        assert_eq!(t3.collector, 0);
        assert_eq!(
            s.handle_outcome(t3.id, Outcome::Accepted, later, &mut r),
            Resolution::Delivered { seq: 7 }
        );
    }

    #[test]
    fn new_envelopes_skip_a_collector_that_is_backing_off() {
        let mut r = rng();
        let cfg = DeliveryConfig { base_backoff_ms: 10_000, ..config() };
        let mut s = Scheduler::new(2, cfg);
        s.enqueue(1);
        let now = UnixMillis(0);
        let t = s.poll_transmit(now).unwrap();
        let _ = s.handle_outcome(t.id, Outcome::NetworkError, now, &mut r);
        s.enqueue(2);
        let sent = drain(&mut s, now.plus_ms(1));
        // The seeded jitter put the primary into backoff beyond `now + 1`: both go to 1.
        assert!(s.collectors[0].backoff_until > now.plus_ms(1));
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|t| t.collector == 1), "{sent:?}");
    }

    #[test]
    fn backoff_stays_within_full_jitter_bounds() {
        let cfg = DeliveryConfig { base_backoff_ms: 100, max_backoff_ms: 5_000, ..config() };
        let mut r = rng();
        for n in 1..=12u32 {
            let ceiling = (100u64 << (n - 1)).min(5_000);
            let draws: Vec<u64> = (0..400).map(|_| full_jitter(&cfg, n, &mut r)).collect();
            assert!(draws.iter().all(|d| *d <= ceiling), "n={n}");
            // Full jitter spreads over the whole range, down to near zero.
            assert!(draws.iter().any(|d| *d < ceiling / 4), "n={n}");
            assert!(draws.iter().any(|d| *d > ceiling * 3 / 4), "n={n}");
        }
        // A single collector: consecutive failures back off within the growing ceiling.
        let mut s = Scheduler::new(1, cfg);
        s.enqueue(1);
        let mut now = UnixMillis(0);
        for n in 1..=10u32 {
            let t = s.poll_transmit(now).unwrap();
            let _ = s.handle_outcome(t.id, Outcome::NetworkError, now, &mut r);
            let wake = s.poll_timeout().unwrap();
            let ceiling = (100u64 << (n - 1)).min(5_000);
            assert!(wake.since(now) <= ceiling, "n={n}: waits {} > {ceiling}", wake.since(now));
            assert_eq!(
                s.poll_transmit(UnixMillis(wake.0.saturating_sub(1)).max(now)).is_some(),
                wake <= now
            );
            now = wake;
        }
    }

    #[test]
    fn retry_after_is_honoured_per_collector() {
        let mut r = rng();
        let mut s = Scheduler::new(1, config());
        s.enqueue(1);
        let now = UnixMillis(10_000);
        let t = s.poll_transmit(now).unwrap();
        let _ = s.handle_outcome(
            t.id,
            Outcome::RetryAfter { status: 503, delay_ms: 30_000 },
            now,
            &mut r,
        );
        assert!(s.poll_timeout().unwrap() >= now.plus_ms(30_000));
        assert_eq!(s.poll_transmit(now.plus_ms(29_999)), None);
        let t = s.poll_transmit(now.plus_ms(30_000 + DEFAULT_BASE_BACKOFF_MS)).unwrap();
        assert_eq!(t.seq, 1);
        // With two collectors, a 429 from the first fails over to the second at once, and the
        // first is not used again before its Retry-After.
        let mut s = Scheduler::new(2, config());
        s.enqueue(1);
        s.enqueue(2);
        let t = s.poll_transmit(now).unwrap();
        let _ = s.handle_outcome(
            t.id,
            Outcome::RetryAfter { status: 429, delay_ms: 5_000 },
            now,
            &mut r,
        );
        let sent = drain(&mut s, now);
        assert_eq!(sent.len(), 2);
        assert!(sent.iter().all(|t| t.collector == 1));
        // Absurd delays are capped.
        let t = sent[0];
        let _ = s.handle_outcome(
            t.id,
            Outcome::RetryAfter { status: 429, delay_ms: u64::MAX },
            now,
            &mut r,
        );
        assert!(s.collectors[1].retry_after_until <= now.plus_ms(MAX_RETRY_AFTER_MS));
    }

    #[test]
    fn rejected_is_dropped_and_never_retried() {
        let mut s = Scheduler::new(2, config());
        s.enqueue(3);
        let t = s.poll_transmit(UnixMillis(0)).unwrap();
        assert_eq!(
            s.handle_outcome(t.id, Outcome::Rejected { status: 400 }, UnixMillis(0), &mut rng()),
            Resolution::Dropped { seq: 3, reason: DropReason::Rejected }
        );
        assert!(s.is_empty());
        assert_eq!(s.poll_timeout(), None);
        assert_eq!(
            s.handle_outcome(t.id, Outcome::Accepted, UnixMillis(0), &mut rng()),
            Resolution::Stale
        );
    }

    #[test]
    fn paces_a_backlog() {
        let cfg =
            DeliveryConfig { max_in_flight: 3, max_per_second: 5, ..DeliveryConfig::default() };
        let mut s = Scheduler::new(1, cfg);
        for seq in 1..=20 {
            s.enqueue(seq);
        }
        let mut now = UnixMillis(0);
        let sent = drain(&mut s, now);
        assert_eq!(
            sent.iter().map(|t| t.seq).collect::<Vec<_>>(),
            [1, 2, 3],
            "oldest first, 3 in flight"
        );
        assert_eq!(s.poll_timeout(), None, "in flight is full: wait for outcomes");
        let mut r = rng();
        let mut delivered = 0;
        let mut started_at = Vec::new();
        let mut pending: Vec<Transmit> = sent;
        started_at.extend(pending.iter().map(|_| now));
        while delivered < 20 {
            for t in pending.drain(..) {
                assert_eq!(
                    s.handle_outcome(t.id, Outcome::Accepted, now, &mut r),
                    Resolution::Delivered { seq: t.seq }
                );
                delivered += 1;
            }
            if delivered == 20 {
                break;
            }
            now = s.poll_timeout().unwrap().max(now);
            pending = drain(&mut s, now);
            assert!(!pending.is_empty(), "the timeout was a real wakeup");
            started_at.extend(pending.iter().map(|_| now));
        }
        for (i, t) in started_at.iter().enumerate() {
            let in_window = started_at.iter().filter(|u| **u >= *t && u.since(*t) < 1_000).count();
            assert!(in_window <= 5, "start {i}: {in_window} starts within a second");
        }
        assert!(now >= UnixMillis(3_000), "20 envelopes at 5/s take 3 s or more: {now:?}");
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn removed_and_cleared_envelopes_become_stale() {
        let mut s = Scheduler::new(1, config());
        s.enqueue(1);
        s.enqueue(2);
        let t1 = s.poll_transmit(UnixMillis(0)).unwrap();
        s.remove(1);
        assert!(s.in_flight().is_empty());
        assert_eq!(
            s.handle_outcome(t1.id, Outcome::Accepted, UnixMillis(0), &mut rng()),
            Resolution::Stale
        );
        let t2 = s.poll_transmit(UnixMillis(0)).unwrap();
        s.clear();
        assert_eq!(
            s.handle_outcome(t2.id, Outcome::NetworkError, UnixMillis(0), &mut rng()),
            Resolution::Stale
        );
        assert!(s.is_empty());
        assert_eq!(s.poll_timeout(), None);
    }

    #[test]
    fn last_error_per_collector_and_one_change_per_cause() {
        let mut s =
            Scheduler::new(2, DeliveryConfig { max_per_second: 1000, ..Default::default() });
        let mut r = rng();
        let refused = DeliveryError::network(ErrorType::TcpRefused, "Connection refused");
        let mut now = UnixMillis(0);
        // Three refusals at collector 0, each failing over to collector 1, which answers 503.
        for seq in 0..3 {
            s.enqueue(seq);
            let t = loop {
                if let Some(t) = s.poll_transmit(now) {
                    break t;
                }
                now = s.poll_timeout().unwrap().max(now.plus_ms(1));
            };
            let (outcome, cause) = if t.collector == 0 {
                (Outcome::NetworkError, Some(refused.clone()))
            } else {
                (Outcome::RetryAfter { status: 503, delay_ms: 0 }, None)
            };
            let _ = s.handle_outcome_with_cause(t.id, outcome, cause, now, &mut r);
        }
        let c0 = s.collector_status(0).unwrap();
        assert_eq!(c0.last_error.as_ref().map(DeliveryError::as_str), Some("tcp.refused"));
        assert!(c0.consecutive_failures >= 1);
        assert!(c0.last_error_at.is_some());
        let changes: Vec<CauseChange> = std::iter::from_fn(|| s.poll_cause_change()).collect();
        let for_c0: Vec<_> = changes.iter().filter(|c| c.collector == 0).collect();
        assert_eq!(for_c0.len(), 1, "one change however many refusals: {changes:?}");
        if let Some(c1) = s.collector_status(1).and_then(|c| c.last_error.clone()) {
            assert_eq!(c1, DeliveryError::Status { status: 503 });
            assert!(c1.message().contains("HTTP 503"));
        }
        // An acceptance clears the error and is one more change (recovery).
        s.clear();
        s.enqueue(10);
        let t = loop {
            now = now.plus_ms(MAX_RETRY_AFTER_MS);
            if let Some(t) = s.poll_transmit(now) {
                break t;
            }
        };
        let _ = s.handle_outcome(t.id, Outcome::Accepted, now, &mut r);
        let status = s.collector_status(t.collector).unwrap();
        assert_eq!(status.last_error, None);
        assert_eq!(status.consecutive_failures, 0);
        assert_eq!(status.last_delivered_at, Some(now));
        assert_eq!(
            s.poll_cause_change(),
            Some(CauseChange { collector: t.collector, error: None })
        );
        assert_eq!(s.poll_cause_change(), None);
        // A network error without a cause is `unknown`; labels are stable.
        assert_eq!(DeliveryError::of_outcome(Outcome::NetworkError).unwrap().as_str(), "unknown");
        let ca = DeliveryError::network(
            ErrorType::TlsCertInvalid,
            "invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))",
        );
        assert_eq!(ca.as_str(), "tls.cert.invalid");
        assert!(ca.message().contains("CA:TRUE") && ca.message().contains("CaUsedAsEndEntity"));
    }

    #[test]
    fn messages_are_label_what_detail_and_hint() {
        assert_eq!(
            DeliveryError::Status { status: 503 }.message(),
            "http.error: HTTP 503: the collector asked to retry later (overloaded or low on disk)"
        );
        assert_eq!(
            DeliveryError::Status { status: 0 }.message(),
            "http.error: HTTP 0: the collector answered with an error; see its log"
        );
        assert_eq!(
            DeliveryError::network(ErrorType::TcpRefused, "").message(),
            "tcp.refused: the connection was refused; \
             is the collector running, and listening on this port?"
        );
        let timeout = DeliveryError::network(ErrorType::TcpTimedOut, "no answer in time");
        assert_eq!(
            timeout.message(),
            "tcp.timed_out: no answer in time (no answer in time); \
             check the network path and firewalls to the collector"
        );
        assert_eq!(timeout.to_string(), timeout.message());
        // Hints are one line of prose: no runs of spaces from a string literal's wrapping.
        for kind in [
            ErrorType::TlsCertInvalid,
            ErrorType::TlsCertAuthorityInvalid,
            ErrorType::TlsCertNameInvalid,
            ErrorType::TlsCertDateInvalid,
            ErrorType::TcpRefused,
            ErrorType::TcpTimedOut,
        ] {
            let message = DeliveryError::network(kind, "CaUsedAsEndEntity").message();
            assert!(!message.contains("  "), "{message}");
        }
    }
}
