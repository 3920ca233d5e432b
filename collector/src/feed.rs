//! The post-commit feed: where a durably stored batch goes next, decided in one place.
//!
//! ```text
//!  Store::commit ─ Stored ─▶ Feed::accepted
//!                              ├─ standalone ────────────▶ Alerting::observe (local detector)
//!                              └─ fleet mode ─ online ───▶ Fleet::submit (outbox ─▶ stream ─▶
//!                                  │                        every detector, this one included)
//!                                  └ offline or outbox ───▶ Alerting::observe now, and the
//!                                    append failed           outbox entry says "fed locally"
//! ```
//!
//! Duplicates are never fed: the store answered `Duplicate` and nothing is counted twice.

use std::sync::Arc;

use crate::alerting::Alerting;
use crate::fleet::Fleet;
use crate::model::IngestBatch;

/// Hands accepted batches to the local detector or to the fleet. See the [module docs](self).
pub(crate) struct Feed {
    alerting: Arc<Alerting>,
    fleet: Option<Arc<Fleet>>,
}

impl Feed {
    /// A feed into `alerting` alone (standalone) or through `fleet` (fleet mode).
    pub(crate) fn new(alerting: Arc<Alerting>, fleet: Option<Arc<Fleet>>) -> Feed {
        Feed { alerting, fleet }
    }

    /// The fleet, in fleet mode.
    pub(crate) fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.as_ref()
    }

    /// One batch the store just made durable (not a duplicate).
    pub(crate) async fn accepted(&self, batch: &IngestBatch) {
        let Some(fleet) = &self.fleet else {
            self.alerting.observe(&batch.reports, &batch.targets);
            return;
        };
        let fed_locally = !fleet.is_online();
        if fed_locally {
            self.alerting.observe(&batch.reports, &batch.targets);
        }
        if let Err(e) =
            fleet.submit(batch.digest, &batch.reports, &batch.targets, fed_locally).await
        {
            // The batch is in the store already: a failed outbox append loses it from the
            // fleet view only, so it is fed locally instead.
            tracing::error!(error = %e, "fleet outbox append failed");
            if !fed_locally {
                self.alerting.observe(&batch.reports, &batch.targets);
            }
        }
    }
}
