//! The ingest endpoints: `POST /v1/envelopes` and `POST`/`OPTIONS /v1/nel`.
//!
//! Each step refuses as early and as cheaply as it can, and the peer address is used only to
//! pick a rate-limit bucket, an [`Enrichment`](crate::model::Enrichment) and a
//! [`NetTag`](crate::model::NetTag); it is never stored or logged.
//!
//! ```text
//!  POST /v1/envelopes
//!   content type ──415   Content-Length > max ──413   /24 or /48 bucket ──429 + Retry-After
//!   read body (capped at max_body_bytes, within header_read_timeout) ──413 / 408
//!   Opener::open ──400 "<reason>: <detail>" (413 for too_large)
//!   created_at vs now, observed_at vs created_at ──400 "timestamp: ..."
//!   agent key bucket ──429 + Retry-After
//!   event_at = received_at - (created_at - observed_at); enrich + net tag; drop the IP
//!   in-flight commit permit ──503 + Retry-After
//!   Store::commit (group commit, on disk) ──503 + Retry-After on error
//!   202 (stored or duplicate)
//! ```

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tokio::sync::Semaphore;
use vantage_agent::report::UnixMillis;

use crate::alerting::Alerting;
use crate::config::{Config, LimitsConfig};
use crate::enrich::Enricher;
use crate::metrics::{Endpoint, Metrics, RejectReason, StoreGauges};
use crate::model::{IngestBatch, NetTagKey, StoredReport, StoredTargets};
use crate::nel::{self, NelContext};
use crate::open::Opener;
use crate::ratelimit::{RateLimiter, SourcePrefix, retry_after_secs};
use crate::store::{CommitOutcome, Store, StoreError};

/// Media type of `POST /v1/envelopes`.
pub const ENVELOPE_CONTENT_TYPE: &str = "application/vnd.vantage.envelope+cbor";
/// Media type of `POST /v1/nel` (the Reporting API).
pub const NEL_CONTENT_TYPE: &str = "application/reports+json";

/// How many sources and agent keys each rate limiter tracks individually (memory bound).
const MAX_LIMITER_KEYS: usize = 100_000;

/// The response body type of every endpoint.
pub(crate) type Body = Full<Bytes>;

/// Everything the request handlers share.
pub(crate) struct Ingest {
    pub(crate) opener: Opener,
    pub(crate) store: Store,
    pub(crate) enricher: Enricher,
    pub(crate) net_tag_key: NetTagKey,
    pub(crate) metrics: Metrics,
    pub(crate) ready: AtomicBool,
    /// Fed after every durable commit; also answers the admin API.
    pub(crate) alerting: Arc<Alerting>,
    /// Fleet mode: batches go to the fleet stream (and the detector through it).
    pub(crate) fleet: Option<Arc<crate::fleet::Fleet>>,
    prefix_limiter: RateLimiter<SourcePrefix>,
    agent_limiter: RateLimiter<[u8; 32]>,
    nel_limiter: RateLimiter<SourcePrefix>,
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
        alerting: Arc<Alerting>,
    ) -> Ingest {
        let now = Instant::now();
        let l = &config.limits;
        Ingest {
            opener: Opener::new(config.keys.collector_keys.clone())
                .max_envelope_bytes(config.server.max_body_bytes),
            store,
            enricher,
            net_tag_key: config.keys.net_tag_key.clone(),
            metrics: Metrics::new(),
            ready: AtomicBool::new(true),
            alerting,
            fleet: None,
            prefix_limiter: RateLimiter::new(l.prefix_rps, l.prefix_burst, MAX_LIMITER_KEYS, now),
            agent_limiter: RateLimiter::new(l.agent_rps, l.agent_burst, MAX_LIMITER_KEYS, now),
            nel_limiter: RateLimiter::new(
                l.nel_prefix_rps,
                l.nel_prefix_burst,
                MAX_LIMITER_KEYS,
                now,
            ),
            inflight: Semaphore::new(config.server.max_inflight_commits),
            limits: l.clone(),
            max_body_bytes: config.server.max_body_bytes,
            body_timeout: config.server.header_read_timeout,
        }
    }

    /// Routes one request on the admin listener: the dashboard and its JSON API, then the
    /// metrics and health checks. Read-only: nothing here writes.
    pub(crate) async fn handle_admin<B>(&self, peer: IpAddr, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path().to_owned();
        let query = req.uri().query().unwrap_or("").to_owned();
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        let json = |status: StatusCode, value: serde_json::Value| {
            let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
            *r.status_mut() = status;
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        };
        let bad = |e: String| json(StatusCode::BAD_REQUEST, serde_json::json!({ "error": e }));
        let now = now_millis();
        match path.as_str() {
            "/v1/alerts" | "/v1/heatmap" | "/v1/series" if !get => not_allowed("GET, HEAD"),
            "/v1/alerts" => json(StatusCode::OK, self.alerting.alerts_json(now)),
            "/v1/heatmap" => match crate::alerting::parse_heatmap_query(&query) {
                Ok(dim) => json(StatusCode::OK, self.alerting.heatmap_json(dim, now)),
                Err(e) => bad(e),
            },
            "/v1/series" => match crate::alerting::parse_series_query(&query) {
                Ok(slice) => match self.alerting.series_json(&slice) {
                    Ok(v) => json(StatusCode::OK, v),
                    Err(e) => json(StatusCode::NOT_FOUND, serde_json::json!({ "error": e })),
                },
                Err(e) => bad(e),
            },
            "/metrics" | "/healthz" | "/readyz" => self.handle(peer, req).await,
            p => match crate::dashboard::asset(p) {
                Some(_) if !get => not_allowed("GET, HEAD"),
                Some(asset) => {
                    let mut r = Response::new(Full::new(Bytes::from_static(asset.body)));
                    let h = r.headers_mut();
                    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
                    h.insert(
                        header::CONTENT_SECURITY_POLICY,
                        HeaderValue::from_static(crate::dashboard::CONTENT_SECURITY_POLICY),
                    );
                    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
                    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    r
                }
                None => text(StatusCode::NOT_FOUND, "not found\n"),
            },
        }
    }

    /// Routes one request. `peer` is the TCP peer address of the connection.
    pub(crate) async fn handle<B>(&self, peer: IpAddr, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let method = req.method().clone();
        match (req.uri().path(), method) {
            ("/v1/envelopes", Method::POST) => {
                let started = Instant::now();
                let response = self.envelope(peer, req).await;
                self.metrics.observe_ingest(Endpoint::Envelopes, started.elapsed());
                response
            }
            ("/v1/envelopes", _) => not_allowed("POST"),
            ("/v1/nel", Method::OPTIONS) => nel_preflight(),
            ("/v1/nel", Method::POST) => {
                let started = Instant::now();
                let mut response = self.nel(peer, req).await;
                self.metrics.observe_ingest(Endpoint::Nel, started.elapsed());
                response
                    .headers_mut()
                    .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
                response
            }
            ("/v1/nel", _) => not_allowed("POST, OPTIONS"),
            ("/v1/ping", Method::GET | Method::HEAD) => empty(StatusCode::NO_CONTENT),
            ("/healthz", Method::GET | Method::HEAD) => text(StatusCode::OK, "ok\n"),
            ("/readyz", Method::GET | Method::HEAD) => {
                if !self.ready.load(Ordering::Relaxed) {
                    text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                } else if let Err(why) = self.store.readiness() {
                    text(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {why}\n"))
                } else {
                    text(StatusCode::OK, "ready\n")
                }
            }
            ("/metrics", Method::GET) => {
                let stats = self.store.stats();
                let mut body = self.metrics.render(StoreGauges {
                    reports: stats.reports,
                    targets: stats.targets,
                    bytes: stats.bytes,
                    disk_bytes: stats.disk_bytes,
                });
                self.alerting.render_metrics(&mut body);
                if let Some(fleet) = &self.fleet {
                    fleet.render_metrics(&mut body);
                }
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            ("/v1/ping" | "/healthz" | "/readyz" | "/metrics", _) => not_allowed("GET, HEAD"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    async fn envelope<B>(&self, peer: IpAddr, req: Request<B>) -> Response<Body>
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
        if let Err(wait) = self.prefix_limiter.check(SourcePrefix::of(peer), Instant::now()) {
            return reject(RejectReason::RateLimited, retry(StatusCode::TOO_MANY_REQUESTS, wait));
        }
        let sent_at = sent_at(req.headers());
        let body = match read_body(req.into_body(), self.max_body_bytes, self.body_timeout).await {
            Ok(body) => body,
            Err(e) => return reject(e.reason(), e.response(self.max_body_bytes)),
        };
        let opened = match self.opener.open(&body) {
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
        if let Err(wait) = self.agent_limiter.check(agent_key, Instant::now()) {
            return reject(RejectReason::RateLimited, retry(StatusCode::TOO_MANY_REQUESTS, wait));
        }

        let enrichment = self.enricher.lookup(peer);
        let net = self.net_tag_key.tag(peer);
        let reports = batch
            .reports
            .iter()
            .map(|r| StoredReport {
                id: r.id().0,
                received_at,
                event_at: event_time(received_at, batch.created_at, sent_at, r.observed_at()),
                source: crate::model::Source::Agent,
                service: r.service().as_str().to_owned(),
                host: r.host().as_str().to_owned(),
                phase: r.phase(),
                error_type: r.error_type().clone(),
                elapsed_ms: r.elapsed_ms(),
                status: r.status(),
                network: r.network(),
                scope: r.scope(),
                count: r.count(),
                sample_ppm: batch.sampling.failure_ppm,
                client: Some(agent_key),
                net,
                enrichment: enrichment.clone(),
            })
            .collect::<Vec<_>>();
        if let Err(e) = admission.check_reports(&reports, received_at) {
            return reject(
                RejectReason::Timestamp,
                text(StatusCode::BAD_REQUEST, &format!("{e}\n")),
            );
        }
        // The counts cover the time up to the batch's creation, which maps to `received_at`
        // on the collector's clock.
        let targets = batch
            .targets
            .iter()
            .map(|t| StoredTargets {
                received_at,
                event_at: received_at,
                service: t.service().as_str().to_owned(),
                host: t.host().as_str().to_owned(),
                attempts: t.attempts(),
                successes: t.successes(),
                client: agent_key,
                net,
                enrichment: enrichment.clone(),
            })
            .collect();
        let ingest = IngestBatch {
            digest: opened.digest,
            sequence: Some((agent_key, batch.seq)),
            reports,
            targets,
        };
        match self.commit(ingest).await {
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

    async fn nel<B>(&self, peer: IpAddr, req: Request<B>) -> Response<Body>
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
        if let Err(wait) = self.nel_limiter.check(SourcePrefix::of(peer), Instant::now()) {
            return reject(
                RejectReason::RateLimited.as_str(),
                retry(StatusCode::TOO_MANY_REQUESTS, wait),
            );
        }
        let body = match read_body(req.into_body(), self.max_body_bytes, self.body_timeout).await {
            Ok(body) => body,
            Err(e) => return reject(e.reason().as_str(), e.response(self.max_body_bytes)),
        };
        let ctx = NelContext {
            received_at: now_millis(),
            net: self.net_tag_key.tag(peer),
            enrichment: self.enricher.lookup(peer),
        };
        let reports = match nel::parse_reports(&body, &ctx) {
            Ok(reports) => reports,
            Err(e) => return reject(e.as_str(), text(StatusCode::BAD_REQUEST, &format!("{e}\n"))),
        };
        if let Err(e) = self.store.admission().check_reports(&reports, ctx.received_at) {
            let msg = format!("{e}\n").replace("batch.reports", "reports");
            return reject(RejectReason::Timestamp.as_str(), text(StatusCode::BAD_REQUEST, &msg));
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, &body);
        let mut d = [0u8; 32];
        d.copy_from_slice(digest.as_ref());
        drop(body);
        let batch = IngestBatch { digest: d, sequence: None, reports, targets: Vec::new() };
        match self.commit(batch).await {
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

    /// Commits under the in-flight bound; the error is the reject reason (`overload` when
    /// the bound is reached or the store is closing, `store_error` when the write failed).
    async fn commit(&self, batch: IngestBatch) -> Result<CommitOutcome, RejectReason> {
        let Ok(_permit) = self.inflight.try_acquire() else {
            return Err(RejectReason::Overload);
        };
        // Detection sees a batch only once it is durable; the copy is what the store consumes.
        let feed = (batch.digest, batch.reports.clone(), batch.targets.clone());
        match self.store.commit(batch).await {
            Ok(outcome) => {
                if matches!(outcome, CommitOutcome::Stored { .. }) {
                    match &self.fleet {
                        None => self.alerting.observe(&feed.1, &feed.2),
                        // The batch is in the store already: a failed outbox append loses
                        // it from the fleet view only, so it is fed locally instead.
                        Some(fleet) => {
                            if let Err(e) = fleet.submit(feed.0, &feed.1, &feed.2).await {
                                tracing::error!(error = %e, "fleet outbox append failed");
                                self.alerting.observe(&feed.1, &feed.2);
                            }
                        }
                    }
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

/// Header an agent may send with each upload attempt: its clock (Unix ms) at sending. It is
/// outside the signed envelope, because a buffered envelope is sent unchanged long after it
/// was sealed.
pub const SENT_AT_HEADER: &str = "vantage-sent-at";

/// Event time on the collector clock: `received_at` minus the report's age at sending.
///
/// The age is measured on the agent's own clock, so its skew cancels out: `sent_at -
/// observed_at` when the agent said when it sent the upload, else `created_at - observed_at`
/// (the age at sealing, which dates reports delivered after an outage too late). A `sent_at`
/// before `created_at` is ignored as nonsense. Never later than `received_at`.
pub fn event_time(
    received_at: UnixMillis,
    created_at: UnixMillis,
    sent_at: Option<UnixMillis>,
    observed_at: UnixMillis,
) -> UnixMillis {
    let reference = match sent_at {
        Some(sent) if sent >= created_at => sent,
        _ => created_at,
    };
    UnixMillis(received_at.0.saturating_sub(reference.0.saturating_sub(observed_at.0)))
}

/// The `vantage-sent-at` header, when present and a number.
fn sent_at(headers: &HeaderMap) -> Option<UnixMillis> {
    let value = headers.get(SENT_AT_HEADER)?.to_str().ok()?;
    value.trim().parse().ok().map(UnixMillis)
}

/// Milliseconds since the Unix epoch on the collector clock.
pub(crate) fn now_millis() -> UnixMillis {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    UnixMillis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
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

pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// A `429` or `503` with `Retry-After` in whole seconds.
pub(crate) fn retry(status: StatusCode, wait: Duration) -> Response<Body> {
    let secs = retry_after_secs(wait);
    let mut r = text(status, &format!("retry after {secs} s\n"));
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

fn too_large(max: usize) -> Response<Body> {
    text(StatusCode::PAYLOAD_TOO_LARGE, &format!("body exceeds {max} bytes\n"))
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn nel_preflight() -> Response<Body> {
    let mut r = empty(StatusCode::NO_CONTENT);
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static("content-type"));
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_time_subtracts_the_age_and_saturates() {
        let t = |ms| UnixMillis(ms);
        assert_eq!(event_time(t(10_000), t(5_000), None, t(4_000)), t(9_000));
        // Client clock far behind or ahead does not matter: only the age counts.
        assert_eq!(event_time(t(10_000), t(1_000_000), None, t(999_000)), t(9_000));
        assert_eq!(event_time(t(500), t(5_000), None, t(0)), t(0));
        assert_eq!(event_time(t(10_000), t(5_000), None, t(6_000)), t(10_000));
        // Sent an hour after sealing (buffered through an outage): the age counts from sending.
        assert_eq!(event_time(t(10_000_000), t(5_000), Some(t(3_605_000)), t(4_000)), t(6_399_000));
        // A sent_at before the sealing is ignored.
        assert_eq!(event_time(t(10_000), t(5_000), Some(t(1_000)), t(4_000)), t(9_000));
    }

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

    struct Fixture {
        _dir: tempfile::TempDir,
        ingest: Ingest,
        key: crate::open::CollectorKey,
    }

    fn fixture(limits: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let key = crate::open::CollectorKey::from_seed([4; 32]);
        let hex: String = key.secret_bytes().iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(dir.path().join("k"), hex).unwrap();
        let text = format!(
            "[server]\nlisten_plain = \"127.0.0.1:0\"\nmax_inflight_commits = 1\n\
             [keys]\nprivate_key_files = [\"k\"]\n[store]\npath = \"data\"\n[limits]\n{limits}"
        );
        let config = Config::from_toml_str(&text, dir.path()).unwrap();
        let store = Store::open(crate::store::StoreConfig::new(&config.store.path)).unwrap();
        let alerting =
            Alerting::start(&store, config.detector.clone(), config.notify.clone(), now_millis())
                .unwrap();
        let ingest = Ingest::new(&config, store, Enricher::disabled(), alerting);
        Fixture { _dir: dir, ingest, key }
    }

    fn envelope(key: &crate::open::CollectorKey, seq: u64) -> Request<Body> {
        use vantage_agent::entropy::SeededEntropy;
        use vantage_agent::report::{AppInfo, Batch};
        use vantage_agent::wire::{AgentIdentity, seal_batch};
        let mut rng = SeededEntropy::insecure_from_seed([seq as u8; 32]);
        let agent = AgentIdentity::generate(&mut rng);
        let app = AppInfo::new("a", "1", "linux", "rust").unwrap();
        let batch = Batch::new(agent.public_key(), seq, now_millis(), app);
        let bytes = seal_batch(&batch, &agent, &key.public_key(), &mut rng).unwrap();
        Request::post("/v1/envelopes")
            .header(header::CONTENT_TYPE, ENVELOPE_CONTENT_TYPE)
            .body(Full::new(Bytes::from(bytes)))
            .unwrap()
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));

    #[tokio::test]
    async fn overload_and_a_closed_store_answer_503_with_retry_after() {
        let f = fixture("");
        let resp = f.ingest.handle(PEER, envelope(&f.key, 1)).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);

        // Every in-flight slot taken: the next commit is refused, not queued.
        let held = f.ingest.inflight.try_acquire().unwrap();
        let resp = f.ingest.handle(PEER, envelope(&f.key, 2)).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert_eq!(f.ingest.metrics.rejected_count(RejectReason::Overload), 1);
        drop(held);
        let resp = f.ingest.handle(PEER, envelope(&f.key, 2)).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);

        // Shutting down: not ready, and commits to the closed store get 503 too.
        f.ingest.ready.store(false, Ordering::Relaxed);
        let readyz = Request::get("/readyz").body(Full::new(Bytes::new())).unwrap();
        assert_eq!(f.ingest.handle(PEER, readyz).await.status(), StatusCode::SERVICE_UNAVAILABLE);
        f.ingest.store.close().await.unwrap();
        let resp = f.ingest.handle(PEER, envelope(&f.key, 3)).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
        assert_eq!(f.ingest.metrics.rejected_count(RejectReason::Overload), 2);
        assert_eq!(f.ingest.metrics.accepted_count(), 2);
    }

    #[tokio::test]
    async fn prefixes_share_a_bucket_and_others_do_not() {
        let f = fixture("prefix_rps = 0.01\nprefix_burst = 1");
        let post = || {
            Request::post("/v1/envelopes")
                .header(header::CONTENT_TYPE, ENVELOPE_CONTENT_TYPE)
                .body(Full::new(Bytes::new()))
                .unwrap()
        };
        let status = |r: Response<Body>| r.status();
        assert_eq!(status(f.ingest.handle(PEER, post()).await), StatusCode::BAD_REQUEST);
        let same_24: IpAddr = "192.0.2.200".parse().unwrap();
        let resp = f.ingest.handle(same_24, post()).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "100");
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(status(f.ingest.handle(other, post()).await), StatusCode::BAD_REQUEST);
        let v6: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6_same_48: IpAddr = "2001:db8:1:ffff::9".parse().unwrap();
        assert_eq!(status(f.ingest.handle(v6, post()).await), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(f.ingest.handle(v6_same_48, post()).await),
            StatusCode::TOO_MANY_REQUESTS
        );
        f.ingest.store.close().await.unwrap();
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
