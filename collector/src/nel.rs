//! Browser Network Error Logging uploads (`POST /v1/nel`, `application/reports+json`).

use vantage_agent::report::UnixMillis;

use crate::model::{Enrichment, NetTag, StoredReport};

/// What the ingest path knows about one NEL upload besides its body.
#[derive(Clone, Debug)]
pub struct NelContext {
    /// When the upload was received (collector clock).
    pub received_at: UnixMillis,
    /// Pseudonymous tag of the source network.
    pub net: NetTag,
    /// ASN and country of the source address.
    pub enrichment: Enrichment,
}

/// Why a NEL upload was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NelError {
    /// The body is not a NEL report list.
    #[error("malformed NEL upload: {0}")]
    Malformed(String),
}

impl NelError {
    /// Stable label for metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            NelError::Malformed(_) => "malformed",
        }
    }
}

/// Parses one upload into stored reports, applying the NEL privacy rules.
pub fn parse_reports(body: &[u8], ctx: &NelContext) -> Result<Vec<StoredReport>, NelError> {
    let _ = (body, ctx);
    Err(NelError::Malformed("NEL parsing is not built yet".into()))
}
