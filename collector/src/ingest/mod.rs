//! The ingest handlers: `POST /v1/envelopes` and `POST /v1/nel`, each ending in one
//! [`IngestBatch`] committed to the store and handed to the [`Feed`].
//!
//! Each step refuses as early and as cheaply as it can, and the peer address is used only to
//! pick a rate-limit bucket, an [`Enrichment`](crate::model::Enrichment) and a
//! [`NetTag`](crate::model::NetTag); it is never stored or logged. Routing (which path goes
//! where, health, metrics, the admin API) is [`routes`](crate::routes)' job; both mappings
//! into the accepted-batch type are in [`accept`].
//!
//! ```text
//!  POST /v1/envelopes
//!   content type ──415   Content-Length > max ──413   /24 or /48 envelopes/s ──429 + Retry-After
//!   read body (capped at max_body_bytes, within header_read_timeout) ──413 / 408
//!   /24 body bytes/s ──429 + Retry-After
//!   in-flight permit (held to the end; waits up to 250 ms) ──503 + Retry-After, nothing opened
//!   Opener::open: version, key id, then HPKE, signature ──400 "<reason>: <detail>"
//!   created_at vs now, observed_at vs created_at ──400 "timestamp: ..."
//!   agent key envelopes/s, reports/s, bytes/s ──429 + Retry-After
//!   enrich + net tag; drop the IP ──▶ accept::from_envelope
//!   /24 reports/s and store bytes/s (its storage share) ──429 + Retry-After
//!   Store::commit (group commit, on disk) ──503 + Retry-After on error
//!   (fleet mode: the stream message in the same group commit, see feed)
//!   Feed::committed ──▶ 202 (stored or duplicate)
//!  POST /v1/nel
//!   content type ──415   Content-Length ──413   /24 uploads/s ──429   body ──413 / 408
//!   /24 body bytes/s ──429   in-flight permit ──503
//!   nel::parse_upload ──400 "malformed NEL upload: <field>: .." ──▶ accept::nel_batch
//!   /24 reports/s and store bytes/s ──429   commit, feed (as above) ──▶ 204
//!
//! A `429` body names the budget's setting ("rate limited: source network over its budget
//! (limits.prefix_store_bytes_per_sec); retry after 3 s") and counts in
//! `vantage_budget_refusals_total{budget}`. The per-/24 volume budgets (body bytes, reports,
//! store bytes) are shared by both endpoints.
//! ```

pub(crate) mod accept;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::sync::{Semaphore, SemaphorePermit};
use vantage_agent::report::UnixMillis;

use crate::clock::now_millis;
use crate::config::{Config, LimitsConfig};
use crate::enrich::Enricher;
use crate::feed::Feed;
use crate::metrics::{BudgetKind, Metrics, RejectReason};
use crate::model::{IngestBatch, NetTagKey};
use crate::nel;
use crate::open::Opener;
use crate::ratelimit::{Budget, RateLimiter, Refused, SourcePrefix};
use crate::respond::{Body, empty, retry, retry_because, text, too_large};
use crate::store::{CommitOutcome, Store, StoreError};
use accept::{EnvelopeContext, NelContext};
pub use accept::{event_time, scaled_counts};

/// Media type of `POST /v1/envelopes`.
pub const ENVELOPE_CONTENT_TYPE: &str = "application/vnd.vantage.envelope+cbor";
/// Media type of `POST /v1/nel` (the Reporting API).
pub const NEL_CONTENT_TYPE: &str = "application/reports+json";

/// Header an agent may send with each upload attempt: its clock (Unix ms) at sending. It is
/// outside the signed envelope, because a buffered envelope is sent unchanged long after it
/// was sealed.
pub const SENT_AT_HEADER: &str = "vantage-sent-at";

/// How long an upload waits for an in-flight permit before `503` (its body is read and
/// nothing is opened while it waits).
const INFLIGHT_WAIT: Duration = Duration::from_millis(250);

/// How many sources and agent keys each rate limiter tracks individually (memory bound).
const MAX_LIMITER_KEYS: usize = 100_000;

/// The two upload handlers and what they share. See the [module docs](self).
pub(crate) struct Ingest {
    opener: Opener,
    store: Store,
    enricher: Enricher,
    net_tag_key: NetTagKey,
    metrics: std::sync::Arc<Metrics>,
    feed: Feed,
    prefix_limiter: RateLimiter<SourcePrefix>,
    /// Per source prefix, envelopes and NEL together: [body bytes, reports, store bytes].
    prefix_volume: RateLimiter<SourcePrefix, 3>,
    /// Per agent key: [envelopes, reports, envelope bytes].
    agent_limiter: RateLimiter<[u8; 32], 3>,
    nel_limiter: RateLimiter<SourcePrefix>,
    nel_services: nel::NelServices,
    inflight: Semaphore,
    limits: LimitsConfig,
    max_body_bytes: usize,
    body_timeout: Duration,
}

impl Ingest {
    pub(crate) fn new(
        config: &Config,
        store: Store,
        enricher: Enricher,
        metrics: std::sync::Arc<Metrics>,
        feed: Feed,
    ) -> Ingest {
        let now = Instant::now();
        let l = &config.limits;
        Ingest {
            opener: Opener::new(config.keys.collector_keys.clone())
                .max_envelope_bytes(config.server.max_body_bytes),
            store,
            enricher,
            net_tag_key: config.keys.net_tag_key.clone(),
            metrics,
            feed,
            prefix_limiter: RateLimiter::new(l.prefix_rps, l.prefix_burst, MAX_LIMITER_KEYS, now),
            prefix_volume: RateLimiter::with_budgets(
                [
                    Budget::new(l.prefix_bytes_per_sec as f64, l.prefix_bytes_burst as f64),
                    Budget::new(l.prefix_reports_per_sec, l.prefix_reports_burst as f64),
                    Budget::new(
                        l.prefix_store_bytes_per_sec as f64,
                        l.prefix_store_bytes_burst as f64,
                    ),
                ],
                MAX_LIMITER_KEYS,
                now,
            ),
            agent_limiter: RateLimiter::with_budgets(
                [
                    Budget::new(l.agent_rps, f64::from(l.agent_burst)),
                    Budget::new(l.agent_reports_per_sec, l.agent_reports_burst as f64),
                    Budget::new(l.agent_bytes_per_sec as f64, l.agent_bytes_burst as f64),
                ],
                MAX_LIMITER_KEYS,
                now,
            ),
            nel_limiter: RateLimiter::new(
                l.nel_prefix_rps,
                l.nel_prefix_burst,
                MAX_LIMITER_KEYS,
                now,
            ),
            nel_services: config.nel.services(),
            inflight: Semaphore::new(config.server.max_inflight_commits),
            limits: l.clone(),
            max_body_bytes: config.server.max_body_bytes,
            body_timeout: config.server.header_read_timeout,
        }
    }

    /// The in-flight commit bound (tests take its permits to force overload).
    #[cfg(test)]
    pub(crate) fn inflight(&self) -> &Semaphore {
        &self.inflight
    }

    /// The post-commit feed (fleet mode or not).
    pub(crate) fn feed(&self) -> &Feed {
        &self.feed
    }

    /// `POST /v1/envelopes`. `peer` is the TCP peer address of the connection.
    pub(crate) async fn envelope<B>(&self, peer: IpAddr, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let reject = |reason: RejectReason, response: Response<Body>| {
            self.metrics.envelope_rejected(reason);
            response
        };
        if !content_type_is(req.headers(), ENVELOPE_CONTENT_TYPE) {
            return reject(
                RejectReason::BadContentType,
                text(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "expected application/vnd.vantage.envelope+cbor\n",
                ),
            );
        }
        if declared_length(req.headers()).is_some_and(|n| n > self.max_body_bytes as u64) {
            return reject(RejectReason::TooLarge, too_large(self.max_body_bytes));
        }
        let prefix = SourcePrefix::of(peer);
        if let Err(wait) = self.prefix_limiter.check(prefix, Instant::now()) {
            return reject(
                RejectReason::RateLimited,
                self.over_budget(BudgetKind::PrefixEnvelopes, wait),
            );
        }
        let sent_at = sent_at(req.headers());
        let body = match read_body(req.into_body(), self.max_body_bytes, self.body_timeout).await {
            Ok(body) => body,
            Err(e) => return reject(e.reason(), e.response(self.max_body_bytes)),
        };
        if let Some(refused) = self.charge_prefix(prefix, [body.len() as f64, 0.0, 0.0]) {
            return reject(RejectReason::RateLimited, refused);
        }
        // Overload is answered before any crypto: the permit is held through the commit.
        let Some(permit) = self.inflight_permit().await else {
            return reject(
                RejectReason::Overload,
                retry(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(1)),
            );
        };
        // Its CPU time (the thread's, the open being synchronous) is what
        // vantage_envelope_open_cpu_seconds_total sums: the crypto's share of the collector.
        let cpu_before = crate::clock::thread_cpu();
        let opened = self.opener.open(&body);
        self.metrics.envelope_opened(crate::clock::thread_cpu().saturating_sub(cpu_before));
        let opened = match opened {
            Ok(opened) => opened,
            Err(e) => {
                let status = match e {
                    crate::open::OpenError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                    _ => StatusCode::BAD_REQUEST,
                };
                // The body starts with the stable label: "bad_signature: bad signature".
                let detail = e.to_string();
                let label = e.as_str();
                let body = if detail.starts_with(label) {
                    format!("{detail}\n")
                } else {
                    format!("{label}: {detail}\n")
                };
                return reject(RejectReason::of_open_error(&e), text(status, &body));
            }
        };
        let body_len = body.len();
        drop(body);
        let received_at = now_millis();
        let batch = &opened.batch;
        let skew = u64::try_from(self.limits.max_clock_skew.as_millis()).unwrap_or(u64::MAX);
        if batch.created_at.0 > received_at.0.saturating_add(skew) {
            let ahead = (batch.created_at.0 - received_at.0) / 1000;
            let msg = format!("timestamp: batch.created_at is {ahead} s in the future\n");
            return reject(RejectReason::Timestamp, text(StatusCode::BAD_REQUEST, &msg));
        }
        if let Some(i) = batch.reports.iter().position(|r| r.observed_at() > batch.created_at) {
            let msg =
                format!("timestamp: batch.reports[{i}].observed_at is after batch.created_at\n");
            return reject(RejectReason::Timestamp, text(StatusCode::BAD_REQUEST, &msg));
        }
        // Refuse what the store could not keep or could not recognise as a retry (store::admit).
        let admission = self.store.admission();
        if let Err(e) =
            admission.check_created_at(batch.created_at, received_at, self.limits.max_clock_skew)
        {
            return reject(
                RejectReason::Timestamp,
                text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
            );
        }
        let sent_at = admission.plausible_sent_at(batch.created_at, sent_at);
        let agent_key = batch.agent_key.0;
        let cost = [1.0, batch.reports.len() as f64, body_len as f64];
        if let Err(Refused { dim, wait }) = self.agent_limiter.take(agent_key, cost, Instant::now())
        {
            let budget =
                [BudgetKind::AgentEnvelopes, BudgetKind::AgentReports, BudgetKind::AgentBytes][dim];
            return reject(RejectReason::RateLimited, self.over_budget(budget, wait));
        }

        let ctx = EnvelopeContext {
            received_at,
            sent_at,
            net: self.net_tag_key.tag(peer),
            enrichment: self.enricher.lookup(peer),
        };
        let ingest = accept::from_envelope(opened, &ctx);
        if let Err(e) = admission.check_reports(&ingest.reports, received_at) {
            return reject(
                RejectReason::Timestamp,
                text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
            );
        }
        if let Some(refused) = self.charge_prefix(prefix, volume(&ingest)) {
            return reject(RejectReason::RateLimited, refused);
        }
        match self.commit(ingest, permit).await {
            Ok(CommitOutcome::Duplicate) => {
                self.metrics.envelope_duplicate();
                text(StatusCode::ACCEPTED, "duplicate\n")
            }
            Ok(CommitOutcome::Stored { reports, .. }) => {
                self.metrics.envelope_accepted(reports);
                text(StatusCode::ACCEPTED, "stored\n")
            }
            Err(reason) => {
                reject(reason, retry(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(1)))
            }
        }
    }

    /// `POST /v1/nel` (the caller adds the CORS header).
    pub(crate) async fn nel<B>(&self, peer: IpAddr, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let reject = |reason: &'static str, response: Response<Body>| {
            self.metrics.nel_rejected(reason);
            response
        };
        if !content_type_is(req.headers(), NEL_CONTENT_TYPE) {
            return reject(
                RejectReason::BadContentType.as_str(),
                text(StatusCode::UNSUPPORTED_MEDIA_TYPE, "expected application/reports+json\n"),
            );
        }
        if declared_length(req.headers()).is_some_and(|n| n > self.max_body_bytes as u64) {
            return reject(RejectReason::TooLarge.as_str(), too_large(self.max_body_bytes));
        }
        let prefix = SourcePrefix::of(peer);
        if let Err(wait) = self.nel_limiter.check(prefix, Instant::now()) {
            return reject(
                RejectReason::RateLimited.as_str(),
                self.over_budget(BudgetKind::PrefixNelUploads, wait),
            );
        }
        let body = match read_body(req.into_body(), self.max_body_bytes, self.body_timeout).await {
            Ok(body) => body,
            Err(e) => return reject(e.reason().as_str(), e.response(self.max_body_bytes)),
        };
        if let Some(refused) = self.charge_prefix(prefix, [body.len() as f64, 0.0, 0.0]) {
            return reject(RejectReason::RateLimited.as_str(), refused);
        }
        let Some(permit) = self.inflight_permit().await else {
            return reject(
                RejectReason::Overload.as_str(),
                retry(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(1)),
            );
        };
        let upload = match nel::parse_upload(&body) {
            Ok(upload) => upload,
            Err(e) => return reject(e.as_str(), text(StatusCode::BAD_REQUEST, &format!("{e}\n"))),
        };
        let ctx = NelContext {
            received_at: now_millis(),
            net: self.net_tag_key.tag(peer),
            enrichment: self.enricher.lookup(peer),
        };
        let batch = accept::nel_batch(&body, upload, &ctx, &self.nel_services);
        self.metrics.nel_other_service(self.nel_services.refused());
        drop(body);
        if let Err(e) = self.store.admission().check_reports(&batch.reports, ctx.received_at) {
            let msg = format!("{e}\n").replace("batch.reports", "reports");
            return reject(RejectReason::Timestamp.as_str(), text(StatusCode::BAD_REQUEST, &msg));
        }
        if let Some(refused) = self.charge_prefix(prefix, volume(&batch)) {
            return reject(RejectReason::RateLimited.as_str(), refused);
        }
        match self.commit(batch, permit).await {
            Ok(CommitOutcome::Duplicate) => {
                self.metrics.nel_duplicate();
                empty(StatusCode::NO_CONTENT)
            }
            Ok(CommitOutcome::Stored { reports, .. }) => {
                self.metrics.nel_accepted(reports);
                empty(StatusCode::NO_CONTENT)
            }
            Err(reason) => reject(
                reason.as_str(),
                retry(StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(1)),
            ),
        }
    }

    /// An in-flight permit: at once if one is free, else the first to free up within
    /// [`INFLIGHT_WAIT`] (a queue, not a spin: a burst of uploads waits briefly instead of
    /// bouncing off `503`s that cost as much to answer as to retry); `None` after that.
    async fn inflight_permit(&self) -> Option<SemaphorePermit<'_>> {
        if let Ok(permit) = self.inflight.try_acquire() {
            return Some(permit);
        }
        tokio::time::timeout(INFLIGHT_WAIT, self.inflight.acquire()).await.ok()?.ok()
    }

    /// Charges `cost` ([body bytes, reports, store bytes]) to the source prefix's volume
    /// budget; the `429` naming the budget when it is short (`None`: charged).
    fn charge_prefix(&self, prefix: SourcePrefix, cost: [f64; 3]) -> Option<Response<Body>> {
        self.prefix_volume.take(prefix, cost, Instant::now()).err().map(|Refused { dim, wait }| {
            let budget =
                [BudgetKind::PrefixBytes, BudgetKind::PrefixReports, BudgetKind::PrefixStoreBytes]
                    [dim];
            self.over_budget(budget, wait)
        })
    }

    /// Counts the refusal and answers `429` + `Retry-After`, naming the budget's setting.
    fn over_budget(&self, budget: BudgetKind, wait: Duration) -> Response<Body> {
        self.metrics.budget_refused(budget);
        let whose = match budget {
            BudgetKind::AgentEnvelopes | BudgetKind::AgentReports | BudgetKind::AgentBytes => {
                "agent key"
            }
            _ => "source network",
        };
        let why = format!("rate limited: {whose} over its budget ({})", budget.setting());
        retry_because(StatusCode::TOO_MANY_REQUESTS, wait, &why)
    }

    /// Commits under the in-flight permit the caller took before opening, then hands a
    /// stored batch to the feed; the error is the reject reason (`overload` when the store is
    /// closing, `store_error` when the write failed).
    async fn commit(
        &self,
        batch: IngestBatch,
        _permit: SemaphorePermit<'_>,
    ) -> Result<CommitOutcome, RejectReason> {
        // Fleet mode: the stream message is written with the batch's own group commit.
        let entry = self.feed.outbox_entry(&batch);
        let enqueued = entry.as_ref().map(crate::feed::OutboxEntry::enqueued);
        let (result, batch) =
            self.store.commit_with_outbox(batch, entry.map(|entry| entry.value)).await;
        match result {
            Ok(outcome) => {
                // Detection sees a batch only once it is durable (the store hands it back).
                if let Some(batch) = &batch {
                    self.feed.committed(batch, outcome, enqueued);
                }
                Ok(outcome)
            }
            Err(StoreError::Closed) => Err(RejectReason::Overload),
            Err(StoreError::DiskFull { .. }) => Err(RejectReason::DiskFull),
            Err(e) => {
                tracing::error!(error = %e, "store commit failed");
                Err(RejectReason::StoreError)
            }
        }
    }
}

/// What a batch costs its source prefix after opening: [0 body bytes (charged earlier),
/// reports, an upper bound of the store bytes it adds].
fn volume(batch: &IngestBatch) -> [f64; 3] {
    [0.0, batch.reports.len() as f64, crate::store::logical_bytes_bound(batch) as f64]
}

/// The `vantage-sent-at` header, when present and a number.
fn sent_at(headers: &HeaderMap) -> Option<UnixMillis> {
    let value = headers.get(SENT_AT_HEADER)?.to_str().ok()?;
    value.trim().parse().ok().map(UnixMillis)
}

/// True if the `Content-Type` is `expected` (case-insensitive, parameters ignored).
fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

/// The declared `Content-Length`; an unparsable one counts as too large.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    let value = headers.get(header::CONTENT_LENGTH)?;
    Some(value.to_str().ok().and_then(|v| v.trim().parse().ok()).unwrap_or(u64::MAX))
}

enum BodyError {
    TooLarge,
    Timeout,
    Aborted,
}

impl BodyError {
    fn reason(&self) -> RejectReason {
        match self {
            BodyError::TooLarge => RejectReason::TooLarge,
            BodyError::Timeout | BodyError::Aborted => RejectReason::Malformed,
        }
    }

    fn response(&self, max: usize) -> Response<Body> {
        match self {
            BodyError::TooLarge => too_large(max),
            BodyError::Timeout => text(StatusCode::REQUEST_TIMEOUT, "body not received in time\n"),
            BodyError::Aborted => text(StatusCode::BAD_REQUEST, "body incomplete\n"),
        }
    }
}

/// Reads at most `max` bytes of body within `timeout`; never buffers more than `max` bytes.
async fn read_body<B>(body: B, max: usize, timeout: Duration) -> Result<Bytes, BodyError>
where
    B: hyper::body::Body<Data = Bytes> + Send,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(timeout, Limited::new(body, max).collect()).await {
        Err(_) => Err(BodyError::Timeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => Err(BodyError::TooLarge),
        Ok(Err(_)) => Err(BodyError::Aborted),
    }
}

#[cfg(test)]
mod tests {
    use http::header::HeaderValue;

    use super::*;

    #[test]
    fn content_types_ignore_case_and_parameters() {
        let mut h = HeaderMap::new();
        assert!(!content_type_is(&h, NEL_CONTENT_TYPE));
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("Application/Reports+JSON; charset=utf-8"),
        );
        assert!(content_type_is(&h, NEL_CONTENT_TYPE));
        assert!(!content_type_is(&h, ENVELOPE_CONTENT_TYPE));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(!content_type_is(&h, NEL_CONTENT_TYPE));
    }

    #[test]
    fn declared_lengths() {
        let mut h = HeaderMap::new();
        assert_eq!(declared_length(&h), None);
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("12"));
        assert_eq!(declared_length(&h), Some(12));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("x"));
        assert_eq!(declared_length(&h), Some(u64::MAX));
    }
}
