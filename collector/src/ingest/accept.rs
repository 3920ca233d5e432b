//! What the collector accepts, in one shape: both mappings into an [`IngestBatch`], side by side.
//!
//! ```text
//!  agent envelope ── Opener::open ──▶ Opened (signed Batch) ──▶ from_envelope ──┐
//!  browser upload ── nel::parse_upload ──▶ NelUpload ─────────▶ nel_batch ──────┴▶ IngestBatch
//! ```
//!
//! Both stamp the collector's receive time, the pseudonymous network tag and the enrichment
//! of the source address; the address itself never gets here. Event times are on the
//! collector's clock: the receive time minus the report's age as its sender measured it.

use ring::digest;
use vantage_agent::report::UnixMillis;

use crate::model::{
    Enrichment, IngestBatch, NetTag, Origin, Source, StoredReport, StoredTargets, nel_client_key,
};
use crate::nel::{NelServices, NelUpload};
use crate::open::Opened;

/// What the ingest path knows about an upload besides its body.
#[derive(Clone, Debug)]
pub(crate) struct NelContext {
    /// When the upload was received (collector clock).
    pub received_at: UnixMillis,
    /// Pseudonymous tag of the source network.
    pub net: NetTag,
    /// ASN and country of the source address.
    pub enrichment: Enrichment,
}

/// The same context, for an agent envelope (plus the agent's `vantage-sent-at`, if any).
pub(crate) struct EnvelopeContext {
    pub(crate) received_at: UnixMillis,
    pub(crate) sent_at: Option<UnixMillis>,
    pub(crate) net: NetTag,
    pub(crate) enrichment: Enrichment,
}

/// An opened, verified agent batch as stored: one [`StoredReport`] per report, one
/// [`StoredTargets`] per success/attempt count, deduplicated by the envelope digest and
/// `(agent key, sequence)`.
///
/// Takes the opened batch by value: each report's service and host move into its
/// [`StoredReport`] (two allocations fewer per report than copying them).
pub(crate) fn from_envelope(opened: Opened, ctx: &EnvelopeContext) -> IngestBatch {
    let Opened { batch, digest, .. } = opened;
    let agent_key = batch.agent_key.0;
    let received_at = ctx.received_at;
    let (created_at, failure_ppm) = (batch.created_at, batch.sampling.failure_ppm);
    let reports = batch
        .reports
        .into_iter()
        .map(|r| {
            let (id, observed_at, phase, error_type) =
                (r.id().0, r.observed_at(), r.phase(), r.error_type().clone());
            let (elapsed_ms, status, network, scope, count) =
                (r.elapsed_ms(), r.status(), r.network(), r.scope(), r.count());
            let (service, host) = r.into_service_and_host();
            StoredReport {
                id,
                received_at,
                event_at: event_time(received_at, created_at, ctx.sent_at, observed_at),
                source: Source::Agent,
                service: service.into_string(),
                host: host.into_string(),
                phase,
                error_type,
                elapsed_ms,
                status,
                network,
                scope,
                count,
                sample_ppm: failure_ppm,
                client: Some(agent_key),
                net: ctx.net,
                enrichment: ctx.enrichment.clone(),
            }
        })
        .collect();
    // The counts cover the time up to the batch's creation, which maps to `received_at` on
    // the collector's clock. They are stored as estimates of what really happened: each part
    // scaled up by its own sampling rate (see `scaled_counts`).
    let rates = batch.sampling;
    let targets = batch
        .targets
        .iter()
        .map(|t| {
            let (attempts, successes) =
                scaled_counts(t.attempts(), t.successes(), rates.failure_ppm, rates.success_ppm);
            (t, attempts, successes)
        })
        .map(|(t, attempts, successes)| StoredTargets {
            received_at,
            event_at: received_at,
            service: t.service().as_str().to_owned(),
            host: t.host().as_str().to_owned(),
            attempts,
            successes,
            client: agent_key,
            net: ctx.net,
            enrichment: ctx.enrichment.clone(),
        })
        .collect();
    IngestBatch {
        digest,
        origin: Origin::Agent { key: agent_key, seq: batch.seq, created_at },
        reports,
        targets,
        agent_drops: batch.drops.iter().filter(|(_, n)| *n > 0).collect(),
        agent_app: batch.app.id().to_owned(),
    }
}

/// A parsed browser upload as stored, deduplicated by the digest of its source network and
/// body ([`upload_digest`]).
///
/// Service is what `services` maps the origin's host to (a configured service, else the
/// registrable domain); scope and network are unknown (the browser delivers after the fact,
/// possibly over another network); client is `None` (NEL is unauthenticated). Every entry,
/// failure or success (`ok`), also counts as attempts (1 / its sampling fraction, rounded) in
/// a [`StoredTargets`] of the network's stand-in client ([`nel_client_key`]), successes for
/// `ok`, so browser traffic has failure ratios. Ids are the first 16 bytes of
/// SHA-256(upload digest ‖ index as u32 big-endian), so an upload replayed from the same network
/// yields the same ids while two entries of one upload never share one.
pub(crate) fn nel_batch(
    body: &[u8],
    upload: NelUpload,
    ctx: &NelContext,
    services: &NelServices,
) -> IngestBatch {
    let body_digest = upload_digest(ctx.net, body);
    let mut d = [0u8; 32];
    d.copy_from_slice(body_digest.as_ref());
    let mut targets = Vec::with_capacity(upload.ok.len() + upload.entries.len());
    for ok in upload.ok {
        let host = ok.host.into_string();
        let weight = scale_up(1, ok.sample_ppm);
        targets.push(StoredTargets {
            received_at: ctx.received_at,
            event_at: UnixMillis(ctx.received_at.0.saturating_sub(ok.age_ms)),
            service: services.service_for(&host),
            host,
            attempts: weight,
            successes: weight,
            client: nel_client_key(ctx.net),
            net: ctx.net,
            enrichment: ctx.enrichment.clone(),
        });
    }
    let reports: Vec<StoredReport> = upload
        .entries
        .into_iter()
        .map(|e| {
            let host = e.host.into_string();
            let service = services.service_for(&host);
            StoredReport {
                id: report_id(&d, e.index),
                received_at: ctx.received_at,
                event_at: UnixMillis(ctx.received_at.0.saturating_sub(e.age_ms)),
                source: Source::Nel,
                service,
                host,
                phase: e.phase,
                error_type: e.error_type,
                elapsed_ms: e.elapsed_ms,
                status: e.status,
                network: vantage_agent::taxonomy::NetworkType::Unknown,
                scope: vantage_agent::taxonomy::Scope::Unknown,
                count: 1,
                sample_ppm: e.sample_ppm,
                client: None,
                net: ctx.net,
                enrichment: ctx.enrichment.clone(),
            }
        })
        .collect();
    // Each failure also counts as attempts: derived from the report, so the store can tell
    // these counts from the report alone and need not write them (see the store docs).
    targets.extend(reports.iter().filter_map(StoredReport::nel_targets));
    IngestBatch {
        digest: d,
        origin: Origin::Nel,
        reports,
        targets,
        agent_drops: Vec::new(),
        agent_app: String::new(),
    }
}

pub(crate) use crate::model::scale_up;

/// An agent's per-target counts (`attempts` = sampled failures + sampled successes) scaled to
/// estimates of all requests: `(F + S, S)` with `F = scale_up(attempts - successes,
/// failure_ppm)` and `S = scale_up(successes, success_ppm)`, so `1 - S / (F + S)` estimates
/// the failure ratio whatever the two fractions are (`agent/src/sampling.rs`: the raw ratio is
/// biased by `failure_fraction / success_fraction`). Public so replays (spikebench) scale
/// sampled counts exactly as ingest does.
pub fn scaled_counts(
    attempts: u64,
    successes: u64,
    failure_ppm: u32,
    success_ppm: u32,
) -> (u64, u64) {
    let failures = scale_up(attempts.saturating_sub(successes), failure_ppm);
    let successes = scale_up(successes.min(attempts), success_ppm);
    (failures.saturating_add(successes), successes)
}

/// SHA-256 of the source network's tag then the body: the key a browser upload is
/// deduplicated by. A browser that retries an upload sends the same bytes from the same network
/// and is stored once; two browsers on different networks that happen to send byte-identical
/// bodies (the same page, the same age and timing: common for `ok` reports of one URL) are two
/// uploads, and both count. The tag is keyed by the deployment's secret, so collectors of one
/// fleet agree on it.
fn upload_digest(net: NetTag, body: &[u8]) -> digest::Digest {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&net.0.to_be_bytes());
    ctx.update(body);
    ctx.finish()
}

fn report_id(body_digest: &[u8; 32], index: usize) -> [u8; 16] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(body_digest);
    // Invariant: index < nel::MAX_REPORTS_PER_UPLOAD, far below u32::MAX.
    ctx.update(&(index as u32).to_be_bytes());
    let mut id = [0u8; 16];
    id.copy_from_slice(&ctx.finish().as_ref()[..16]);
    id
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_counts_scale_each_part_by_its_own_rate() {
        // Every failure, 5 % of successes: 10 failures and 4 counted successes stand for 10
        // failures and 80 successes.
        assert_eq!(scaled_counts(14, 4, 1_000_000, 50_000), (90, 80));
        // Full sampling leaves the counts alone; so does a rate that cannot have sampled.
        assert_eq!(scaled_counts(14, 4, 1_000_000, 1_000_000), (14, 4));
        assert_eq!(scaled_counts(14, 0, 1_000_000, 0), (14, 0));
        assert_eq!(scaled_counts(14, 4, 500_000, 0), (24, 4));
        // Successes beyond attempts (a broken sender) are cut, nothing overflows.
        assert_eq!(scaled_counts(3, 9, 1_000_000, 250_000), (12, 12));
        assert_eq!(scale_up(u64::MAX, 1), u64::MAX);
        // NEL's weight of one entry: 1 / fraction, rounded.
        assert_eq!(scale_up(1, 300_000), 3);
        assert_eq!(scale_up(1, 1), 1_000_000);
    }

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

    /// An opened envelope of `n` reports to one service and host, as an agent's batch usually is.
    fn opened(n: usize) -> Opened {
        use vantage_agent::report::{AppInfo, Batch, Report, ReportId};
        use vantage_agent::taxonomy::ErrorType;
        use vantage_agent::wire::{AgentPublicKey, KeyId};
        let now = UnixMillis(1_700_000_000_000);
        let reports = (0..n as u64)
            .map(|i| {
                let mut id = [0u8; 16];
                id[..8].copy_from_slice(&i.to_be_bytes());
                Report::builder("checkout", "api.example.com", ErrorType::HttpError)
                    .status(503)
                    .observed_at(UnixMillis(now.0 - 1_000))
                    .build_with_id(ReportId(id), now)
                    .expect("a valid report")
            })
            .collect();
        let app = AppInfo::new("com.example.app", "1.0.0", "linux", "rust/0.1.0").expect("valid");
        let batch = Batch::new(AgentPublicKey([7; 32]), 1, now, app).with_reports(reports);
        Opened { batch, key_id: KeyId([1; 8]), digest: [2; 32] }
    }

    /// Heap allocations of `f` on this thread.
    fn allocations(f: impl FnOnce()) -> u64 {
        allocation_counter::measure(f).count_total
    }

    /// The mapping moves each report's service and host into its stored report: no allocation
    /// per report (copying them was two), a fixed few per envelope.
    #[test]
    fn an_envelopes_mapping_allocates_nothing_per_report() {
        let ctx = EnvelopeContext {
            received_at: UnixMillis(1_700_000_001_000),
            sent_at: None,
            net: NetTag(9),
            enrichment: Enrichment::default(),
        };
        let count = |n| {
            let opened = opened(n);
            allocations(|| drop(from_envelope(opened, &ctx)))
        };
        let (ten, twenty) = (count(10), count(20));
        assert_eq!(twenty, ten, "allocations per report: {} for 10 reports, {twenty} for 20", ten);
        // The reports' vector and the app id.
        assert!(ten <= 2, "{ten} allocations for an envelope of 10 reports");
    }

    /// A NEL upload's mapping: per failure report its service (the registrable domain, a new
    /// string) and the derived attempt count's copies of service and host; the hosts parsed
    /// from the upload are moved in, not copied or lower-cased again (that was two more).
    #[test]
    fn a_nel_uploads_mapping_allocates_three_times_per_report() {
        let body = |n: usize| {
            let entries: Vec<String> = (0..n)
                .map(|i| {
                    format!(
                        r#"{{"age":10,"type":"network-error","url":"https://shop{i}.example/p","body":{{"sampling_fraction":1.0,"phase":"dns","type":"dns.name_not_resolved","elapsed_time":20}}}}"#
                    )
                })
                .collect();
            format!("[{}]", entries.join(",")).into_bytes()
        };
        let ctx = NelContext {
            received_at: UnixMillis(1_700_000_001_000),
            net: NetTag(9),
            enrichment: Enrichment::default(),
        };
        let services = NelServices::default();
        let count = |n| {
            let body = body(n);
            // Once first, so the services minted on the way are not counted.
            drop(nel_batch(&body, crate::nel::parse_upload(&body).unwrap(), &ctx, &services));
            let upload = crate::nel::parse_upload(&body).unwrap();
            allocations(|| drop(nel_batch(&body, upload, &ctx, &services)))
        };
        let (three, six) = (count(3), count(6));
        assert_eq!(six - three, 3 * 3, "{three} allocations for 3 reports, {six} for 6");
    }
}
