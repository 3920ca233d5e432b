//! The sender: one tokio task per receiver, draining that receiver's outbox entries in order,
//! with full-jitter backoff, `Retry-After`, expiry, and Alertmanager re-sends.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::client::{Answer, Endpoint, SendError};
use super::outbox::{Entry, Head, Outbox};
use super::payload::{alertmanager_payload, slack_payload, webhook_payload};
use super::{NotifyConfig, ReceiverConfig, ReceiverKind};
use crate::detect::{Alert, AlertEvent};

/// A store error is retried after this long.
const STORE_RETRY: Duration = Duration::from_secs(5);

fn wall_ms() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// A uniformly random delay in `[0, min(cap, base × 2^(failures − 1))]` (full jitter);
/// `unit` is a uniform draw from `[0, 1)`.
pub(crate) fn backoff_ms(base_ms: u64, cap_ms: u64, failures: u32, unit: f64) -> u64 {
    let exp = failures.saturating_sub(1).min(63);
    let ceiling = base_ms.saturating_mul(1u64 << exp).min(cap_ms);
    ((ceiling as f64) * unit.clamp(0.0, 1.0)) as u64
}

/// A uniform draw from `[0, 1)` from the system RNG.
fn unit_random() -> f64 {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    // The system RNG does not fail on Linux; if it did, the ceiling (no jitter) is still a
    // correct backoff.
    if ring::rand::SystemRandom::new().fill(&mut bytes).is_err() {
        return 1.0 - f64::EPSILON;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

/// What one attempt means for the entry.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// 2xx: remove it.
    Delivered,
    /// A 4xx other than 408/429: the receiver will never take it; drop it.
    Permanent(u16),
    /// Try again, after the receiver's `Retry-After` if it gave one.
    Retry(Option<u64>),
}

fn verdict(answer: &Result<Answer, SendError>) -> Verdict {
    match answer {
        Ok(a) => match a.status {
            200..=299 => Verdict::Delivered,
            408 | 429 => Verdict::Retry(a.retry_after_ms),
            400..=499 => Verdict::Permanent(a.status),
            // 5xx (503 with Retry-After), and 1xx/3xx (redirects are not followed): a
            // configuration fix or the receiver's recovery may still deliver it.
            _ => Verdict::Retry(a.retry_after_ms),
        },
        Err(_) => Verdict::Retry(None),
    }
}

/// Counters of one receiver.
#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    failed_attempts: AtomicU64,
    dropped_permanent: AtomicU64,
    dropped_expired: AtomicU64,
    resent: AtomicU64,
}

struct Shared {
    receivers: Vec<(String, ReceiverKind, Counters)>,
    outbox: Outbox,
}

/// What the notifier did, per receiver.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NotifyStats {
    /// One row per configured receiver, in config order.
    pub receivers: Vec<ReceiverStats>,
}

/// What the notifier did for one receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiverStats {
    /// The receiver's name.
    pub name: String,
    /// The receiver's kind.
    pub kind: ReceiverKind,
    /// Outbox entries delivered (2xx).
    pub sent: u64,
    /// Attempts that failed and will be retried (connect error, timeout, 408, 429, 5xx).
    pub failed_attempts: u64,
    /// Entries dropped because the receiver refused them (4xx other than 408/429).
    pub dropped_permanent: u64,
    /// Entries dropped because they were not delivered within `give_up_after_ms`.
    pub dropped_expired: u64,
    /// Alertmanager re-sends of firing alerts that were accepted.
    pub resent: u64,
    /// Entries waiting in the outbox.
    pub pending: u64,
}

impl NotifyStats {
    /// Appends Prometheus text exposition (with HELP and TYPE lines):
    /// `vantage_notifications_sent_total{receiver,kind}`,
    /// `vantage_notification_failures_total{receiver}`,
    /// `vantage_notifications_dropped_total{receiver,reason}` (`permanent`, `expired`),
    /// `vantage_notifications_pending{receiver}` and
    /// `vantage_alertmanager_resends_total{receiver}`. Labels are configured receiver names
    /// (`[A-Za-z0-9_-]+`), so the label set is bounded and needs no escaping.
    pub fn render_prometheus(&self, out: &mut String) {
        let family = |out: &mut String, name: &str, kind: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };
        family(
            out,
            "vantage_notifications_sent_total",
            "counter",
            "Notifications delivered (2xx answer), by receiver and receiver kind.",
        );
        for r in &self.receivers {
            let _ = writeln!(
                out,
                "vantage_notifications_sent_total{{receiver=\"{}\",kind=\"{}\"}} {}",
                r.name,
                r.kind.as_str(),
                r.sent
            );
        }
        family(
            out,
            "vantage_notification_failures_total",
            "counter",
            "Notification attempts that failed and will be retried.",
        );
        for r in &self.receivers {
            let _ = writeln!(
                out,
                "vantage_notification_failures_total{{receiver=\"{}\"}} {}",
                r.name, r.failed_attempts
            );
        }
        family(
            out,
            "vantage_notifications_dropped_total",
            "counter",
            "Notifications given up: refused by the receiver (permanent) or too old (expired).",
        );
        for r in &self.receivers {
            for (reason, n) in [("permanent", r.dropped_permanent), ("expired", r.dropped_expired)]
            {
                let _ = writeln!(
                    out,
                    "vantage_notifications_dropped_total{{receiver=\"{}\",reason=\"{reason}\"}} {n}",
                    r.name
                );
            }
        }
        family(
            out,
            "vantage_notifications_pending",
            "gauge",
            "Notifications waiting in the durable outbox.",
        );
        for r in &self.receivers {
            let _ = writeln!(
                out,
                "vantage_notifications_pending{{receiver=\"{}\"}} {}",
                r.name, r.pending
            );
        }
        family(
            out,
            "vantage_alertmanager_resends_total",
            "counter",
            "Re-sends of firing alerts accepted by Alertmanager receivers.",
        );
        for r in self.receivers.iter().filter(|r| r.kind == ReceiverKind::Alertmanager) {
            let _ = writeln!(
                out,
                "vantage_alertmanager_resends_total{{receiver=\"{}\"}} {}",
                r.name, r.resent
            );
        }
    }
}

/// Starts the notification sender; see the [module docs](super).
#[derive(Debug)]
pub struct Notifier;

/// The running notifier. Dropping it (or flipping the shutdown signal) stops the sender tasks;
/// what they had not delivered stays in the outbox.
pub struct NotifierHandle {
    wake: watch::Sender<u64>,
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for NotifierHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifierHandle").field("tasks", &self.tasks.len()).finish_non_exhaustive()
    }
}

impl Notifier {
    /// Spawns one sender task per receiver on the current tokio runtime (call inside one).
    ///
    /// Per receiver, entries go out in order (a resolved never overtakes its fired). A failed
    /// POST (connect error, timeout, 408, 5xx, 429 with `Retry-After` honoured) is retried
    /// with full-jitter exponential backoff (`retry_base_ms`, capped at `retry_cap_ms`), and
    /// the entry stays in the outbox until a 2xx. A 4xx other than 408/429 is permanent:
    /// dropped, counted, logged with the status (never the URL or headers). Entries older
    /// than `give_up_after_ms` are dropped and counted. Firing alerts from `firing` are
    /// re-sent to Alertmanager receivers every `alertmanager_resend_ms` (first after one
    /// period; alerts with an entry still pending go through the outbox instead, in order).
    ///
    /// Entries of receivers that are no longer configured are removed (and logged) at start.
    pub fn spawn(
        config: NotifyConfig,
        outbox: Outbox,
        firing: watch::Receiver<Vec<Alert>>,
        shutdown: watch::Receiver<bool>,
    ) -> NotifierHandle {
        let names: Vec<&str> = config.receivers.iter().map(|r| r.name.as_str()).collect();
        for (name, count) in outbox.remove_unknown(&names) {
            tracing::warn!(
                receiver = %name,
                entries = count,
                "dropped queued notifications of a receiver that is no longer configured"
            );
        }
        let shared = Arc::new(Shared {
            receivers: config
                .receivers
                .iter()
                .map(|r| (r.name.clone(), r.kind, Counters::default()))
                .collect(),
            outbox,
        });
        let (wake, _) = watch::channel(0u64);
        let config = Arc::new(config);
        let mut tasks = Vec::new();
        for index in 0..config.receivers.len() {
            let receiver = &config.receivers[index];
            let endpoint = match Endpoint::new(receiver) {
                Ok(e) => e,
                Err(e) => {
                    // validate() refuses such configs; a config built in code may not have
                    // been validated.
                    tracing::error!(receiver = %receiver.name, problem = %e, "receiver disabled: invalid config");
                    continue;
                }
            };
            let task = ReceiverTask {
                index,
                config: config.clone(),
                endpoint,
                shared: shared.clone(),
                wake: wake.subscribe(),
                shutdown: shutdown.clone(),
                firing: firing.clone(),
            };
            tasks.push(tokio::spawn(task.run()));
        }
        NotifierHandle { wake, shared, tasks }
    }
}

impl NotifierHandle {
    /// Says that new entries were queued.
    pub fn wake(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// What was sent, retried and dropped, and what waits, per receiver.
    pub fn stats(&self) -> NotifyStats {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        NotifyStats {
            receivers: self
                .shared
                .receivers
                .iter()
                .map(|(name, kind, c)| ReceiverStats {
                    name: name.clone(),
                    kind: *kind,
                    sent: load(&c.sent),
                    failed_attempts: load(&c.failed_attempts),
                    dropped_permanent: load(&c.dropped_permanent),
                    dropped_expired: load(&c.dropped_expired),
                    resent: load(&c.resent),
                    pending: self.shared.outbox.pending(name) as u64,
                })
                .collect(),
        }
    }

    /// Waits for the sender tasks to end. They end promptly once the shutdown signal given
    /// to [`Notifier::spawn`] is true (an attempt in flight is abandoned; its entry stays).
    pub async fn join(mut self) {
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for NotifierHandle {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct ReceiverTask {
    index: usize,
    config: Arc<NotifyConfig>,
    endpoint: Endpoint,
    shared: Arc<Shared>,
    wake: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    firing: watch::Receiver<Vec<Alert>>,
}

/// Backoff state of the entry at the head of a receiver's queue.
struct Retrying {
    key: sled::IVec,
    failures: u32,
    not_before: Instant,
}

impl ReceiverTask {
    fn receiver(&self) -> &ReceiverConfig {
        &self.config.receivers[self.index]
    }

    fn counters(&self) -> &Counters {
        &self.shared.receivers[self.index].2
    }

    fn is_alertmanager(&self) -> bool {
        self.receiver().kind == ReceiverKind::Alertmanager
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// One attempt, abandoned when shutdown flips. `None`: shutting down.
    async fn post(&mut self, body: Bytes) -> Option<Result<Answer, SendError>> {
        let endpoint = &self.endpoint;
        let shutdown = &mut self.shutdown;
        tokio::select! {
            answer = endpoint.post(body) => Some(answer),
            _ = wait_for_true(shutdown) => None,
        }
    }

    fn body(&self, event: &AlertEvent, now_ms: u64) -> Bytes {
        let external = self.config.external_url.as_deref();
        let value = match self.receiver().kind {
            ReceiverKind::Webhook => webhook_payload(event, external),
            ReceiverKind::Slack => slack_payload(event, external),
            ReceiverKind::Alertmanager => alertmanager_payload(
                &[(event.alert(), now_ms)],
                self.config.alertmanager_resend_ms,
                external,
            ),
        };
        Bytes::from(value.to_string())
    }

    async fn run(mut self) {
        let resend = Duration::from_millis(self.config.alertmanager_resend_ms.max(1));
        let mut next_resend = self.is_alertmanager().then(|| Instant::now() + resend);
        let mut retrying: Option<Retrying> = None;
        loop {
            if self.stopping() {
                return;
            }
            // Seen before the outbox is read: a wake after this point is not lost.
            self.wake.borrow_and_update();
            if let Some(at) = next_resend
                && Instant::now() >= at
            {
                if !self.resend_firing().await {
                    return;
                }
                next_resend = Some(Instant::now() + resend);
                continue;
            }
            let mut deadline = next_resend;
            match self.shared.outbox.head(&self.receiver().name) {
                Err(e) => {
                    tracing::error!(receiver = %self.receiver().name, error = %e, "cannot read the notification outbox");
                    deadline = earliest(deadline, Instant::now() + STORE_RETRY);
                }
                Ok(None) => retrying = None,
                Ok(Some(Head::Corrupt(key, problem))) => {
                    tracing::error!(receiver = %self.receiver().name, problem = %problem, "dropping an unreadable notification");
                    self.counters().dropped_permanent.fetch_add(1, Ordering::Relaxed);
                    self.remove(&key);
                    continue;
                }
                Ok(Some(Head::Entry(key, entry))) => {
                    if retrying.as_ref().is_none_or(|r| r.key != key) {
                        retrying = Some(Retrying {
                            key: key.clone(),
                            failures: 0,
                            not_before: Instant::now(),
                        });
                    }
                    let state = retrying.as_mut().expect("set just above");
                    let now_ms = wall_ms();
                    let expires_ms = entry.enqueued_ms.saturating_add(self.config.give_up_after_ms);
                    if now_ms >= expires_ms {
                        self.counters().dropped_expired.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            receiver = %self.receiver().name,
                            alert = %entry.event.alert().id,
                            failed_attempts = state.failures,
                            "notification expired undelivered; dropped"
                        );
                        self.remove(&key);
                        continue;
                    }
                    if Instant::now() >= state.not_before {
                        let failures = state.failures;
                        match self.attempt(&key, &entry, now_ms, failures).await {
                            None => return,
                            Some(None) => continue,
                            Some(Some(delay)) => {
                                let state = retrying.as_mut().expect("set above");
                                state.failures += 1;
                                state.not_before = Instant::now() + delay;
                            }
                        }
                    }
                    let state = retrying.as_ref().expect("set above");
                    let expiry = Instant::now() + Duration::from_millis(expires_ms - now_ms);
                    deadline = earliest(deadline, state.not_before.min(expiry));
                }
            }
            let (wake, shutdown) = (&mut self.wake, &mut self.shutdown);
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                changed = wake.changed() => if changed.is_err() { return },
                _ = wait_for_true(shutdown) => return,
                () = sleep => {}
            }
        }
    }

    /// Sends the head entry once. `None`: shutting down. `Some(None)`: the entry is gone
    /// (delivered or dropped). `Some(Some(delay))`: retry after `delay`.
    async fn attempt(
        &mut self,
        key: &sled::IVec,
        entry: &Entry,
        now_ms: u64,
        failures: u32,
    ) -> Option<Option<Duration>> {
        let body = self.body(&entry.event, now_ms);
        let answer = self.post(body).await?;
        let name = self.receiver().name.clone();
        let alert = entry.event.alert().id;
        match verdict(&answer) {
            Verdict::Delivered => {
                self.counters().sent.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(receiver = %name, alert = %alert, "notification delivered");
                self.remove(key);
                Some(None)
            }
            Verdict::Permanent(status) => {
                self.counters().dropped_permanent.fetch_add(1, Ordering::Relaxed);
                tracing::error!(receiver = %name, alert = %alert, status, "receiver refused a notification; dropped");
                self.remove(key);
                Some(None)
            }
            Verdict::Retry(retry_after) => {
                self.counters().failed_attempts.fetch_add(1, Ordering::Relaxed);
                let c = &self.config;
                let delay_ms = match retry_after {
                    // Honoured as given, even beyond retry_cap_ms: the receiver asked for
                    // it. Bounded by give_up_after_ms, when the entry expires anyway.
                    Some(ms) => ms.min(c.give_up_after_ms),
                    None => {
                        backoff_ms(c.retry_base_ms, c.retry_cap_ms, failures + 1, unit_random())
                    }
                };
                match &answer {
                    Ok(a) => {
                        tracing::warn!(receiver = %name, status = a.status, retry_in_ms = delay_ms, "notification attempt failed")
                    }
                    Err(e) => {
                        tracing::warn!(receiver = %name, error = %e, retry_in_ms = delay_ms, "notification attempt failed")
                    }
                }
                Some(Some(Duration::from_millis(delay_ms)))
            }
        }
    }

    /// Re-sends the firing alerts that have no entry pending here. False: shutting down.
    async fn resend_firing(&mut self) -> bool {
        let name = self.receiver().name.clone();
        let pending = self.shared.outbox.pending_ids(&name);
        let alerts: Vec<Alert> =
            self.firing.borrow().iter().filter(|a| !pending.contains(&a.id)).cloned().collect();
        if alerts.is_empty() {
            return true;
        }
        let now_ms = wall_ms();
        let list: Vec<(&Alert, u64)> = alerts.iter().map(|a| (a, now_ms)).collect();
        let body = alertmanager_payload(
            &list,
            self.config.alertmanager_resend_ms,
            self.config.external_url.as_deref(),
        );
        let Some(answer) = self.post(Bytes::from(body.to_string())).await else {
            return false;
        };
        match answer {
            Ok(a) if (200..300).contains(&a.status) => {
                self.counters().resent.fetch_add(1, Ordering::Relaxed);
            }
            // The next period tries again; Alertmanager keeps the alerts for 4 periods.
            Ok(a) => {
                self.counters().failed_attempts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(receiver = %name, status = a.status, alerts = alerts.len(), "re-sending firing alerts failed");
            }
            Err(e) => {
                self.counters().failed_attempts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(receiver = %name, error = %e, alerts = alerts.len(), "re-sending firing alerts failed");
            }
        }
        true
    }

    fn remove(&self, key: &[u8]) {
        if let Err(e) = self.shared.outbox.remove(key) {
            // The entry will be sent again (at least once).
            tracing::error!(receiver = %self.receiver().name, error = %e, "cannot remove a notification from the outbox");
        }
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// Resolves when the shutdown value is (or becomes) true, or its sender is gone.
async fn wait_for_true(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_full_jitter_within_the_exponential_ceiling() {
        assert_eq!(backoff_ms(1000, 300_000, 1, 0.999_999), 999);
        assert_eq!(backoff_ms(1000, 300_000, 2, 0.5), 1000);
        assert_eq!(backoff_ms(1000, 300_000, 4, 1.0), 8000);
        assert_eq!(backoff_ms(1000, 300_000, 20, 1.0), 300_000, "capped");
        assert_eq!(backoff_ms(1000, 300_000, u32::MAX, 1.0), 300_000, "no overflow");
        assert_eq!(backoff_ms(1000, 300_000, 3, 0.0), 0);
        // Draws spread over the whole range.
        let draws: Vec<u64> =
            (0..2000).map(|_| backoff_ms(1000, 300_000, 3, unit_random())).collect();
        assert!(draws.iter().all(|&d| d <= 4000));
        assert!(draws.iter().any(|&d| d < 400) && draws.iter().any(|&d| d > 3600));
        let mean = draws.iter().sum::<u64>() as f64 / draws.len() as f64;
        assert!((1700.0..2300.0).contains(&mean), "mean {mean}");
    }

    #[test]
    fn statuses_map_to_verdicts() {
        let a = |status, retry_after_ms| Ok(Answer { status, retry_after_ms });
        assert_eq!(verdict(&a(200, None)), Verdict::Delivered);
        assert_eq!(verdict(&a(204, None)), Verdict::Delivered);
        assert_eq!(verdict(&a(400, None)), Verdict::Permanent(400));
        assert_eq!(verdict(&a(404, None)), Verdict::Permanent(404));
        assert_eq!(verdict(&a(408, None)), Verdict::Retry(None));
        assert_eq!(verdict(&a(429, Some(2000))), Verdict::Retry(Some(2000)));
        assert_eq!(verdict(&a(500, None)), Verdict::Retry(None));
        assert_eq!(verdict(&a(503, Some(5))), Verdict::Retry(Some(5)));
        assert_eq!(verdict(&a(302, None)), Verdict::Retry(None));
        assert_eq!(verdict(&Err(SendError::Timeout(5))), Verdict::Retry(None));
    }

    #[test]
    fn metrics_have_help_type_and_bounded_labels() {
        let stats = NotifyStats {
            receivers: vec![
                ReceiverStats {
                    name: "am".into(),
                    kind: ReceiverKind::Alertmanager,
                    sent: 3,
                    failed_attempts: 2,
                    dropped_permanent: 1,
                    dropped_expired: 0,
                    resent: 7,
                    pending: 4,
                },
                ReceiverStats {
                    name: "chat".into(),
                    kind: ReceiverKind::Slack,
                    sent: 1,
                    failed_attempts: 0,
                    dropped_permanent: 0,
                    dropped_expired: 5,
                    resent: 0,
                    pending: 0,
                },
            ],
        };
        let mut out = String::new();
        stats.render_prometheus(&mut out);
        for line in [
            "# TYPE vantage_notifications_sent_total counter",
            "vantage_notifications_sent_total{receiver=\"am\",kind=\"alertmanager\"} 3",
            "vantage_notifications_sent_total{receiver=\"chat\",kind=\"slack\"} 1",
            "vantage_notification_failures_total{receiver=\"am\"} 2",
            "vantage_notifications_dropped_total{receiver=\"am\",reason=\"permanent\"} 1",
            "vantage_notifications_dropped_total{receiver=\"chat\",reason=\"expired\"} 5",
            "# TYPE vantage_notifications_pending gauge",
            "vantage_notifications_pending{receiver=\"am\"} 4",
            "vantage_alertmanager_resends_total{receiver=\"am\"} 7",
        ] {
            assert!(out.lines().any(|l| l == line), "{line:?} not in\n{out}");
        }
        assert!(!out.contains("vantage_alertmanager_resends_total{receiver=\"chat\"}"));
        let families = out.lines().filter(|l| l.starts_with("# HELP")).count();
        assert_eq!(families, out.lines().filter(|l| l.starts_with("# TYPE")).count());
        assert_eq!(families, 5);
    }
}
