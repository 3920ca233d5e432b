//! The feed: where a batch goes once the store made it durable, decided in one place.
//!
//! ```text
//!  ingest ─ Feed::outbox_entry (fleet mode: the stream message, written by the store in the
//!    │      batch's own commit)      ─▶ Store::commit / commit_with_outbox ─▶ Feed::committed
//!    │                          ├─ standalone, Stored ────▶ Alerting::observe (local detector)
//!    │                          └─ fleet mode ─ online ───▶ publisher (outbox ─▶ stream ─▶
//!    │                              │                        every detector, this one included)
//!    │                              └ offline ─────────────▶ Fleet::feed_locally now; the outbox
//!    │                                                        entry says "fed locally"
//! ```
//!
//! Standalone, duplicates are never fed: the store answered `Duplicate` and nothing is counted
//! twice. In fleet mode a duplicate's outbox entry is published again (the first copy may
//! never have been), and every consumer feeds a digest once.

use std::sync::Arc;

use crate::alerting::Alerting;
use crate::fleet::Fleet;
use crate::model::IngestBatch;
use crate::store::CommitOutcome;

/// Hands accepted batches to the local detector or to the fleet. See the [module docs](self).
pub(crate) struct Feed {
    alerting: Arc<Alerting>,
    fleet: Option<Arc<Fleet>>,
}

/// A fleet outbox entry for one batch, before the commit.
pub(crate) struct OutboxEntry {
    /// What the store writes with the batch's group commit.
    pub(crate) value: Vec<u8>,
    /// The entry says "fed locally": NATS was unreachable when the batch arrived.
    pub(crate) fed_locally: bool,
}

/// What [`Feed::committed`] needs of an [`OutboxEntry`] the store consumed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Enqueued {
    len: usize,
    fed_locally: bool,
}

impl OutboxEntry {
    /// Its size and flag, kept while the store takes the bytes.
    pub(crate) fn enqueued(&self) -> Enqueued {
        Enqueued { len: self.value.len(), fed_locally: self.fed_locally }
    }
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

    /// In fleet mode, the outbox entry to commit with `batch` ([`Store::commit_with_outbox`](
    /// crate::store::Store::commit_with_outbox)); `None` standalone.
    pub(crate) fn outbox_entry(&self, batch: &IngestBatch) -> Option<OutboxEntry> {
        let fleet = self.fleet.as_ref()?;
        let fed_locally = !fleet.is_online();
        let value = fleet.outbox_entry(&batch.digest, &batch.reports, &batch.targets, fed_locally);
        Some(OutboxEntry { value, fed_locally })
    }

    /// One batch the store answered for; `enqueued` describes the outbox entry it wrote with
    /// it (fleet mode).
    pub(crate) fn committed(
        &self,
        batch: &IngestBatch,
        outcome: CommitOutcome,
        enqueued: Option<Enqueued>,
    ) {
        let stored = matches!(outcome, CommitOutcome::Stored { .. });
        match (&self.fleet, enqueued) {
            (Some(fleet), Some(entry)) => {
                fleet.enqueued(entry.len);
                if entry.fed_locally && stored {
                    fleet.feed_locally(&batch.digest, &batch.reports, &batch.targets);
                }
            }
            // Standalone (or an entry that was not written): the local detector, once.
            _ if stored => self.alerting.observe(&batch.reports, &batch.targets),
            _ => {}
        }
    }
}
