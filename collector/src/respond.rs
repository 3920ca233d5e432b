//! Small response builders shared by the routers and the ingest handlers.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::ratelimit::retry_after_secs;

/// The response body type of every endpoint.
pub(crate) type Body = Full<Bytes>;

/// A `text/plain` answer.
pub(crate) fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// An `application/json` answer that caches are told not to keep.
pub(crate) fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An answer without a body.
pub(crate) fn empty(status: StatusCode) -> Response<Body> {
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

/// A `429` or `503` with `Retry-After` in whole seconds, the body saying why.
pub(crate) fn retry_because(status: StatusCode, wait: Duration, why: &str) -> Response<Body> {
    let secs = retry_after_secs(wait);
    let mut r = text(status, &format!("{why}; retry after {secs} s\n"));
    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    r
}

/// `413` naming the limit.
pub(crate) fn too_large(max: usize) -> Response<Body> {
    text(StatusCode::PAYLOAD_TOO_LARGE, &format!("body exceeds {max} bytes\n"))
}

/// `405` with the `Allow` header.
pub(crate) fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}
