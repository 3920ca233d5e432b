//! [`VantageLayer`]: a `tower::Layer` that records every request's outcome (feature `tower`),
//! for `hyper_util::client::legacy::Client` and any other `Service<http::Request<B>>` that
//! answers `http::Response<_>`. See the [integrations](super) for what becomes what.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use hyper_util::client::legacy::Client;
//! use hyper_util::rt::TokioExecutor;
//! use tower_layer::Layer;
//! use vantage_agent::native::Agent;
//! use vantage_agent::native::integrations::tower::VantageLayer;
//!
//! let agent = Arc::new(Agent::from_toml_file("vantage.toml")?);
//! let client = Client::builder(TokioExecutor::new())
//!     .build_http::<http_body_util::Empty<bytes::Bytes>>();
//! let client = VantageLayer::new(agent).layer(client); // a Service<http::Request<_>>
//! # Ok(()) }
//! ```
//!
//! The service keeps the inner service's error type: callers match on the same errors as
//! before. The error must be something the layer can read as a `std::error::Error`
//! ([`CaptureError`]: hyper-util's and hyper's errors, `std::io::Error`, tower's
//! `Box<dyn Error + Send + Sync>`).

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower_layer::Layer;
use tower_service::Service;

use super::{HttpCapture, InFlight};
use crate::native::Agent;

/// An error the layer can classify: it shows itself as a `std::error::Error`. Implemented
/// for hyper-util's and hyper's client errors, `std::io::Error` and tower's
/// `Box<dyn Error + Send + Sync>`; a service with its own error type implements it in one
/// line (a blanket impl over every `Error` would conflict with the boxed one).
pub trait CaptureError {
    /// The error, to walk its `source()` chain.
    fn as_std_error(&self) -> &(dyn StdError + 'static);
}

macro_rules! capture_error {
    ($($t:ty),*) => {$(
        impl CaptureError for $t {
            fn as_std_error(&self) -> &(dyn StdError + 'static) {
                self
            }
        }
    )*};
}

capture_error!(hyper_util::client::legacy::Error, hyper::Error, std::io::Error);

impl CaptureError for Box<dyn StdError + Send + Sync> {
    fn as_std_error(&self) -> &(dyn StdError + 'static) {
        &**self
    }
}

/// A `tower::Layer` that wraps a service in [`VantageService`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct VantageLayer {
    capture: HttpCapture,
}

impl VantageLayer {
    /// A layer recording into `agent`.
    pub fn new(agent: Arc<Agent>) -> VantageLayer {
        VantageLayer { capture: HttpCapture::new(agent) }
    }
}

impl From<HttpCapture> for VantageLayer {
    fn from(capture: HttpCapture) -> Self {
        VantageLayer { capture }
    }
}

impl<S> Layer<S> for VantageLayer {
    type Service = VantageService<S>;

    fn layer(&self, inner: S) -> VantageService<S> {
        VantageService { inner, capture: self.capture.clone() }
    }
}

/// The service [`VantageLayer`] makes: the inner service, recording each outcome.
#[derive(Clone, Debug)]
pub struct VantageService<S> {
    inner: S,
    capture: HttpCapture,
}

impl<S> VantageService<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, back.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B, R> Service<http::Request<B>> for VantageService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Error: CaptureError,
{
    type Response = http::Response<R>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let flight = self.capture.start(req.uri().host());
        ResponseFuture { inner: self.inner.call(req), capture: self.capture.clone(), flight }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`VantageService`]: the inner future, recording its outcome.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        capture: HttpCapture,
        flight: InFlight,
    }
}

impl<F: std::fmt::Debug> std::fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").field("inner", &self.inner).finish_non_exhaustive()
    }
}

impl<F, R, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
    E: CaptureError,
{
    type Output = Result<http::Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        match &result {
            Ok(response) => {
                this.capture.response(this.flight, response.status().as_u16(), response.version())
            }
            Err(e) => this.capture.error(this.flight, e.as_std_error()),
        }
        Poll::Ready(result)
    }
}
