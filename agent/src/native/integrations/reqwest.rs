//! [`VantageMiddleware`]: a `reqwest-middleware` middleware that records every request's
//! outcome (feature `reqwest`). See the [integrations](super) for what becomes what.
//!
//! ```no_run
//! # fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use vantage_agent::native::Agent;
//! use vantage_agent::native::integrations::reqwest::VantageMiddleware;
//!
//! let agent = Arc::new(Agent::from_toml_file("vantage.toml")?);
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(VantageMiddleware::new(agent))
//!     .build();
//! # Ok(()) }
//! ```
//!
//! Placed after a retry middleware (`.with(retry).with(vantage)`), it sees every attempt;
//! placed before, one outcome per call.

use std::sync::Arc;

use reqwest_middleware::reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};

use super::HttpCapture;
use crate::native::Agent;

/// Records the outcome of every request that passes through it into an [`Agent`]. Cheap to
/// clone.
#[derive(Clone, Debug)]
pub struct VantageMiddleware {
    capture: HttpCapture,
}

impl VantageMiddleware {
    /// A middleware recording into `agent`.
    pub fn new(agent: Arc<Agent>) -> VantageMiddleware {
        VantageMiddleware { capture: HttpCapture::new(agent) }
    }
}

impl From<HttpCapture> for VantageMiddleware {
    fn from(capture: HttpCapture) -> Self {
        VantageMiddleware { capture }
    }
}

#[async_trait::async_trait]
impl Middleware for VantageMiddleware {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let flight = self.capture.start(req.url().host_str());
        let result = next.run(req, extensions).await;
        match &result {
            Ok(response) => {
                self.capture.response(&flight, response.status().as_u16(), response.version())
            }
            Err(reqwest_middleware::Error::Reqwest(e)) => self.capture.error(&flight, e),
            Err(reqwest_middleware::Error::Middleware(e)) => {
                let e: &(dyn std::error::Error + 'static) = e.as_ref();
                self.capture.error(&flight, e)
            }
        }
        result
    }
}
