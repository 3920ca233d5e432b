//! The two routers: what each listener serves, and the answers that are not ingest.
//!
//! ```text
//!  public listener (TLS and/or plain)           admin listener (server.listen_admin)
//!   POST /v1/envelopes ─▶ Ingest::envelope        GET /            dashboard assets
//!   OPTIONS /v1/envelopes  CORS preflight         GET /v1/alerts   Alerting::alerts_json
//!   POST /v1/nel ─▶ Ingest::nel (+ CORS)          GET /v1/heatmap  Alerting::heatmap_json
//!   OPTIONS /v1/nel        CORS preflight         GET /v1/series   Alerting::series_json
//!   GET /v1/ping  204                             GET /v1/strip    Alerting::strip_json
//!   GET /healthz  /readyz  /metrics               GET /v1/reports  reports::reports_json
//!                                                 GET /v1/agent_drops  Store::agent_drops
//!                                                 /metrics /healthz /readyz (as public)
//! ```
//!
//! `/metrics` merges the ingest counters, the store gauges, alerting and (fleet mode) the
//! fleet's families into one Prometheus text page. The admin router only reads, and only
//! answers requests its `AdminGuard` lets through: an allowed `Host` for everything but the
//! health checks, and the bearer token (when configured) for the JSON API and `/metrics`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::admin_guard::{AdminGuard, Need};
use crate::alerting::Alerting;
use crate::clock::now_millis;
use crate::ingest::Ingest;
use crate::metrics::{Endpoint, Metrics, StoreGauges};
use crate::respond::{Body, empty, json, not_allowed, text};
use crate::store::Store;

/// What the routers answer from. See the [module docs](self).
pub(crate) struct Routes {
    pub(crate) ingest: Ingest,
    pub(crate) alerting: Arc<Alerting>,
    pub(crate) store: Store,
    pub(crate) metrics: Arc<Metrics>,
    /// `/readyz`: false once shutdown began.
    pub(crate) ready: AtomicBool,
    /// Host allowlist and token of the admin listener.
    pub(crate) admin_guard: AdminGuard,
}

impl Routes {
    /// Routes one request on a public listener. `peer` is the TCP peer address.
    pub(crate) async fn public<B>(&self, peer: IpAddr, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let method = req.method().clone();
        match (req.uri().path(), method) {
            ("/v1/envelopes", Method::POST) => {
                let started = Instant::now();
                let mut response = self.ingest.envelope(peer, req).await;
                self.metrics.observe_ingest(Endpoint::Envelopes, started.elapsed());
                allow_browser_uploads(&mut response);
                response
            }
            ("/v1/envelopes", Method::OPTIONS) => envelopes_preflight(),
            ("/v1/envelopes", _) => {
                let mut response = not_allowed("POST");
                allow_browser_uploads(&mut response);
                response
            }
            ("/v1/nel", Method::OPTIONS) => nel_preflight(),
            ("/v1/nel", Method::POST) => {
                let started = Instant::now();
                let mut response = self.ingest.nel(peer, req).await;
                self.metrics.observe_ingest(Endpoint::Nel, started.elapsed());
                response
                    .headers_mut()
                    .insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
                response
            }
            ("/v1/nel", _) => not_allowed("POST, OPTIONS"),
            ("/v1/ping", Method::GET | Method::HEAD) => empty(StatusCode::NO_CONTENT),
            (path, method) => self.health_and_metrics(path, &method),
        }
    }

    /// Routes one request on the admin listener: the dashboard and its JSON API, then the
    /// metrics and health checks. Read-only: nothing here writes.
    pub(crate) async fn admin<B>(&self, req: Request<B>) -> Response<Body> {
        let path = req.uri().path();
        let need = match path {
            "/healthz" | "/readyz" => Need::Nothing,
            "/metrics" => Need::HostAndToken,
            p if p.starts_with("/v1/") => Need::HostAndToken,
            _ => Need::Host,
        };
        if let Some(refused) = self.admin_guard.refuse(&req, need) {
            return refused;
        }
        let query = req.uri().query().unwrap_or("");
        let get = matches!(*req.method(), Method::GET | Method::HEAD);
        let bad = |e: String| json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": e }));
        let now = now_millis();
        match path {
            "/v1/alerts" | "/v1/heatmap" | "/v1/series" | "/v1/strip" | "/v1/reports"
            | "/v1/agent_drops"
                if !get =>
            {
                not_allowed("GET, HEAD")
            }
            "/v1/agent_drops" => match self
                .store
                .agent_drops()
                .and_then(|t| self.store.agent_drops_by_app().map(|a| (t, a)))
            {
                Ok((totals, by_app)) => {
                    json(StatusCode::OK, &crate::metrics::agent_drops_json(&totals, &by_app))
                }
                Err(e) => {
                    tracing::error!(error = %e, "agent drop totals unreadable");
                    json(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        &serde_json::json!({ "error": "agent drop totals unreadable" }),
                    )
                }
            },
            "/v1/alerts" => json(StatusCode::OK, &self.alerting.alerts_json(now)),
            "/v1/heatmap" => match crate::alerting::parse_heatmap_query(query) {
                Ok(q) => json(StatusCode::OK, &self.alerting.heatmap_json(&q, now)),
                Err(e) => bad(e),
            },
            "/v1/series" => match crate::alerting::parse_series_query(query) {
                Ok(slice) => match self.alerting.series_json(&slice) {
                    Ok(v) => json(StatusCode::OK, &v),
                    Err(e) => json(StatusCode::NOT_FOUND, &serde_json::json!({ "error": e })),
                },
                Err(e) => bad(e),
            },
            "/v1/strip" if query.is_empty() => json(StatusCode::OK, &self.alerting.strip_json(now)),
            "/v1/strip" => bad("`/v1/strip` takes no parameters".into()),
            "/v1/reports" => match crate::reports::parse_reports_query(query, now) {
                Ok(q) => match crate::reports::reports_json(&self.store, &q) {
                    Ok(v) => json(StatusCode::OK, &v),
                    Err(e) => {
                        tracing::error!(error = %e, "reports unreadable");
                        json(
                            StatusCode::INTERNAL_SERVER_ERROR,
                            &serde_json::json!({ "error": "the store could not be read" }),
                        )
                    }
                },
                Err(e) => bad(e),
            },
            "/metrics" | "/healthz" | "/readyz" => self.health_and_metrics(path, req.method()),
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

    /// `/healthz`, `/readyz` and `/metrics` (on both listeners); 404 for anything else.
    fn health_and_metrics(&self, path: &str, method: &Method) -> Response<Body> {
        let read = matches!(*method, Method::GET | Method::HEAD);
        match path {
            "/healthz" if read => text(StatusCode::OK, "ok\n"),
            "/readyz" if read => {
                if !self.ready.load(Ordering::Relaxed) {
                    text(StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                } else if let Err(why) = self.store.readiness() {
                    text(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {why}\n"))
                } else {
                    text(StatusCode::OK, "ready\n")
                }
            }
            "/metrics" if *method == Method::GET => {
                let mut r = Response::new(Full::new(Bytes::from(self.metrics_text())));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                r
            }
            "/v1/ping" | "/healthz" | "/readyz" | "/metrics" => not_allowed("GET, HEAD"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// The `/metrics` page: ingest counters and store gauges, alerting, the fleet.
    fn metrics_text(&self) -> String {
        let stats = self.store.stats();
        let (nel_digests, nel_reach) = self.store.nel_dedup_window();
        let mut body = self.metrics.render(StoreGauges {
            reports: stats.reports,
            targets: stats.targets,
            envelope_digests: stats.digests,
            bytes: stats.bytes,
            disk_bytes: stats.disk_bytes,
            nel_dedup_digests: nel_digests,
            nel_dedup_window_seconds: nel_reach.as_secs(),
        });
        match self.store.agent_drops() {
            Ok(totals) => crate::metrics::write_agent_drops(&mut body, &totals),
            Err(e) => tracing::error!(error = %e, "agent drop totals unreadable"),
        }
        self.alerting.render_metrics(&mut body);
        crate::metrics::write_process(&mut body);
        if let Some(fleet) = self.ingest.feed().fleet() {
            fleet.render_metrics(&mut body);
        }
        body
    }
}

/// CORS for browser uploads (the wasm agent in a page on another origin). Envelopes carry their
/// own authentication (signature, HPKE) and the collector reads no cookies, so any origin may
/// POST them: `Access-Control-Allow-Origin: *` and never `Allow-Credentials`, so no page can
/// make a browser send cookies or HTTP authentication along (the wasm agent uploads with
/// `fetch(credentials: 'omit')`, also on pagehide, instead of `navigator.sendBeacon`, which
/// always includes credentials). The preflight allows the envelope media type and the
/// `vantage-sent-at` header; answers expose `Retry-After` so a page can honour it.
fn envelopes_preflight() -> Response<Body> {
    let mut r = empty(StatusCode::NO_CONTENT);
    allow_browser_uploads(&mut r);
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST, OPTIONS"));
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type, vantage-sent-at"),
    );
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    r
}

/// Lets a page read the answer to its upload (see [`envelopes_preflight`]).
fn allow_browser_uploads(r: &mut Response<Body>) {
    let h = r.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("retry-after"));
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
    use http_body_util::Full;

    use super::*;
    use crate::config::Config;
    use crate::enrich::Enricher;
    use crate::ingest::ENVELOPE_CONTENT_TYPE;
    use crate::metrics::RejectReason;
    use crate::store::Store;

    struct Fixture {
        _dir: tempfile::TempDir,
        routes: Routes,
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
        let metrics = Arc::new(Metrics::new());
        let feed = crate::feed::Feed::new(alerting.clone(), None);
        let ingest =
            Ingest::new(&config, store.clone(), Enricher::disabled(), metrics.clone(), feed);
        let admin_guard = AdminGuard::new(vec!["localhost".into()], None);
        let routes =
            Routes { ingest, alerting, store, metrics, ready: AtomicBool::new(true), admin_guard };
        Fixture { _dir: dir, routes, key }
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
        let resp = f.routes.public(PEER, envelope(&f.key, 1)).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);

        // Every in-flight slot taken: the next commit waits 250 ms for one, then is refused.
        let held = f.routes.ingest.inflight().try_acquire().unwrap();
        let resp = f.routes.public(PEER, envelope(&f.key, 2)).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert_eq!(f.routes.metrics.rejected_count(RejectReason::Overload), 1);
        drop(held);
        let resp = f.routes.public(PEER, envelope(&f.key, 2)).await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);

        // Shutting down: not ready, and commits to the closed store get 503 too.
        f.routes.ready.store(false, Ordering::Relaxed);
        let readyz = Request::get("/readyz").body(Full::new(Bytes::new())).unwrap();
        assert_eq!(f.routes.public(PEER, readyz).await.status(), StatusCode::SERVICE_UNAVAILABLE);
        f.routes.store.close().await.unwrap();
        let resp = f.routes.public(PEER, envelope(&f.key, 3)).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(resp.headers().contains_key(header::RETRY_AFTER));
        assert_eq!(f.routes.metrics.rejected_count(RejectReason::Overload), 2);
        assert_eq!(f.routes.metrics.accepted_count(), 2);
    }

    #[tokio::test]
    async fn envelope_cors_allows_any_origin_without_credentials() {
        let f = fixture("");
        let preflight = Request::options("/v1/envelopes")
            .header(header::ORIGIN, "https://shop.example")
            .header(header::ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let post = Request::post("/v1/envelopes")
            .header(header::ORIGIN, "https://shop.example")
            .header(header::CONTENT_TYPE, ENVELOPE_CONTENT_TYPE)
            .body(Full::new(Bytes::new()))
            .unwrap();
        for req in [preflight, post] {
            let resp = f.routes.public(PEER, req).await;
            let h = resp.headers();
            assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
            assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
            assert_eq!(h[header::ACCESS_CONTROL_EXPOSE_HEADERS], "retry-after");
        }
        f.routes.store.close().await.unwrap();
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
        assert_eq!(status(f.routes.public(PEER, post()).await), StatusCode::BAD_REQUEST);
        let same_24: IpAddr = "192.0.2.200".parse().unwrap();
        let resp = f.routes.public(same_24, post()).await;
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "100");
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(status(f.routes.public(other, post()).await), StatusCode::BAD_REQUEST);
        let v6: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6_same_48: IpAddr = "2001:db8:1:ffff::9".parse().unwrap();
        assert_eq!(status(f.routes.public(v6, post()).await), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(f.routes.public(v6_same_48, post()).await),
            StatusCode::TOO_MANY_REQUESTS
        );
        f.routes.store.close().await.unwrap();
    }
}
