//! The agent as spikebench runs it: each simulated client is a `vantage-agent` with its default
//! configuration, so the detector sees what a default deployment sends, not idealised counts.
//!
//! The agent's own sans-IO parts do the work: [`Sampling`] decides which failures become
//! reports and which successes are counted, the [`Coalescer`] merges identical failures and
//! the [`TargetCounter`] keeps the per-target counts. What [`AgentModel`] reproduces instead of
//! calling is `AgentCore`'s seal schedule (`agent/src/pipeline.rs`), because sealing there
//! encrypts and signs every envelope, which a simulated fleet of thousands cannot afford:
//!
//! ```text
//!  failure ─sample_failure?─▶ coalescer + counts(failure)   first_pending ?= t   (handle_record)
//!  success ─sample_success?─▶ counts(success)               targets_since ?= t   (handle_success)
//!  seal due at min(first_pending + seal_delay_ms,                                (poll_seal)
//!                  targets_since + report_interval_ms)
//!  seal: every coalesced report + every count, both clocks reset                 (seal_pending)
//! ```
//!
//! Not modelled: the seal's wait for a scope check in flight (at most `SCOPE_HOLD_MS`; the
//! simulation sets each report's scope itself), envelope size splits (one batch per seal) and
//! drop counts (nothing is dropped here). The test at the bottom drives the real `AgentCore`
//! and this model with the same requests and compares what they seal.

use vantage_agent::coalesce::Coalescer;
use vantage_agent::entropy::Entropy;
use vantage_agent::pipeline::{DEFAULT_REPORT_INTERVAL_MS, DEFAULT_SEAL_DELAY_MS};
use vantage_agent::report::{Host, Report, ReportId, SampleRates, ServiceId, UnixMillis};
use vantage_agent::sampling::{Sampling, TargetCounter};
use vantage_agent::taxonomy::{ErrorType, Scope};

use super::rng::Rng;

/// The agent settings a simulated client runs with. [`Default`] is the agent crate's own
/// defaults (`Sampling::default()`, `DEFAULT_SEAL_DELAY_MS`, `DEFAULT_REPORT_INTERVAL_MS`),
/// never a copy of their numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AgentConfig {
    /// Which failures and successes are sampled.
    pub sampling: Sampling,
    /// `CoreConfig::seal_delay_ms`.
    pub seal_delay_ms: u64,
    /// `CoreConfig::report_interval_ms` (the heartbeat of success counts).
    pub report_interval_ms: Option<u64>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            sampling: Sampling::default(),
            seal_delay_ms: DEFAULT_SEAL_DELAY_MS,
            report_interval_ms: Some(DEFAULT_REPORT_INTERVAL_MS),
        }
    }
}

impl AgentConfig {
    /// The rates a batch carries (`Batch::sampling`), which the collector scales by.
    pub fn rates(&self) -> SampleRates {
        SampleRates::from_fractions(
            self.sampling.failure_fraction(),
            self.sampling.success_fraction(),
        )
    }
}

/// What one seal produced: the batch's reports and raw (unscaled) target counts.
#[derive(Clone, Debug, PartialEq)]
pub struct Sealed {
    /// When it was sealed (simulated ms).
    pub at_ms: u64,
    /// Coalesced reports.
    pub reports: Vec<Report>,
    /// (service, host, sampled attempts, sampled successes), ordered by service then host.
    pub targets: Vec<(String, String, u64, u64)>,
}

/// The simulation's [`Rng`] as the agent's [`Entropy`], so sampling draws exactly as the agent
/// does (one `next_f64` per draw, none for fractions 0 and 1).
struct SimEntropy<'a>(&'a mut Rng);

impl Entropy for SimEntropy<'_> {
    fn fill(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let b = self.0.next_u64().to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

/// One simulated agent's state between seals.
#[derive(Debug)]
pub struct AgentModel {
    coalescer: Coalescer,
    /// Reports the coalescer handed back early (a full set of open groups).
    ready: Vec<Report>,
    /// `AgentCore::first_pending`.
    first_pending: Option<u64>,
    counts: TargetCounter,
    /// `AgentCore::targets_since`.
    targets_since: Option<u64>,
}

impl AgentModel {
    /// An agent with nothing pending.
    pub fn new(config: &AgentConfig) -> AgentModel {
        AgentModel {
            // The core's coalescer window is its seal delay (`AgentCore::new`).
            coalescer: Coalescer::new(
                config.seal_delay_ms,
                vantage_agent::coalesce::DEFAULT_MAX_OPEN,
            ),
            ready: Vec::new(),
            first_pending: None,
            counts: TargetCounter::default(),
            targets_since: None,
        }
    }

    /// When the next seal is due, if anything is pending (`AgentCore::poll_timeout`, without
    /// the scope hold).
    pub fn due_ms(&self, config: &AgentConfig) -> Option<u64> {
        let seal = self.first_pending.map(|t| t + config.seal_delay_ms);
        let counts = config.report_interval_ms.and_then(|i| self.targets_since.map(|t| t + i));
        match (seal, counts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Seals at its due time if that is at or before `now` (`AgentCore::poll_seal`).
    pub fn poll_seal(&mut self, config: &AgentConfig, now: u64) -> Option<Sealed> {
        let due = self.due_ms(config)?;
        (due <= now).then(|| self.seal(due)).flatten()
    }

    /// Seals everything pending at `now` (`AgentCore::seal_pending`: a flush, or shutdown).
    pub fn seal(&mut self, now: u64) -> Option<Sealed> {
        let mut reports = std::mem::take(&mut self.ready);
        reports.extend(self.coalescer.flush_all());
        self.first_pending = None;
        self.targets_since = None;
        if reports.is_empty() && self.counts.is_empty() {
            return None;
        }
        let targets = self
            .counts
            .take()
            .into_iter()
            .map(|t| {
                let (s, h) = (t.service().as_str().to_owned(), t.host().as_str().to_owned());
                (s, h, t.attempts(), t.successes())
            })
            .collect();
        Some(Sealed { at_ms: now, reports, targets })
    }

    /// A request to `host` of `service` at `at` (ms): `failure` is its error type and scope
    /// when it failed. Sampled as the agent samples (`handle_record`, `handle_success`).
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        config: &AgentConfig,
        rng: &mut Rng,
        at: u64,
        service: &ServiceId,
        host: &Host,
        failure: Option<(ErrorType, Scope, Option<u16>)>,
    ) {
        let mut entropy = SimEntropy(rng);
        match failure {
            Some((error_type, scope, status)) => {
                if !config.sampling.sample_failure(&mut entropy) {
                    return;
                }
                let mut b = Report::builder(service.as_str(), host.as_str(), error_type)
                    .observed_at(UnixMillis(at))
                    .scope(scope);
                if let Some(s) = status {
                    b = b.status(s);
                }
                let Ok(report) = b.build_with_id(ReportId([0; 16]), UnixMillis(at)) else {
                    return;
                };
                self.counts.record_attempt(service, host, false);
                if let Some(out) = self.coalescer.push(report, UnixMillis(at)) {
                    self.ready.push(out);
                }
                self.first_pending.get_or_insert(at);
            }
            None => {
                if config.sampling.sample_success(&mut entropy) {
                    self.counts.record_attempt(service, host, true);
                    self.targets_since.get_or_insert(at);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use vantage_agent::buffer::MemoryStore;
    use vantage_agent::entropy::SeededEntropy;
    use vantage_agent::pipeline::{AgentCore, CoreConfig};
    use vantage_agent::report::AppInfo;
    use vantage_collector::open::{CollectorKey, Opener};

    use super::*;

    /// (sealed at, (service, type, count) per report, (service, attempts, successes) per target).
    type SealedSummary = (u64, Vec<(String, String, u32)>, Vec<(String, u64, u64)>);

    /// One client's small day: successes on two services, a burst of failures, a lone failure
    /// and quiet stretches, through the real `AgentCore` (with its default seal delay and
    /// report interval, every failure and success sampled so both draw nothing) and through
    /// the model; they seal the same batches at the same times.
    #[test]
    fn the_model_seals_what_the_real_pipeline_seals() {
        let collector = CollectorKey::from_seed([7; 32]);
        let app = AppInfo::new("app", "1", "linux", "rust").unwrap();
        let mut core_config = CoreConfig::new(app, collector.public_key(), 1);
        core_config.sampling = Sampling::new(1.0, 1.0).unwrap();
        core_config.scope_check_interval_ms = None;
        core_config.delivery.max_per_second = 1_000;
        let config = AgentConfig {
            sampling: core_config.sampling,
            seal_delay_ms: core_config.seal_delay_ms,
            report_interval_ms: core_config.report_interval_ms,
        };
        let mut core = AgentCore::new(
            core_config,
            MemoryStore::new(),
            SeededEntropy::insecure_from_seed([3; 32]),
        )
        .unwrap();
        let _ = core.grant(UnixMillis(0));
        let mut model = AgentModel::new(&config);
        let mut rng = Rng::new(9);

        let shop: ServiceId = "shop".parse().unwrap();
        let api: ServiceId = "api".parse().unwrap();
        let shop_host = Host::parse("shop.example").unwrap();
        let api_host = Host::parse("api.example").unwrap();
        // (ms, service, failure)
        let mut script: Vec<(u64, bool, Option<ErrorType>)> = Vec::new();
        for i in 0..40u64 {
            script.push((1_000 + i * 7_000, i % 3 == 0, None));
        }
        for i in 0..6u64 {
            script.push((95_000 + i * 150, false, Some(ErrorType::TcpRefused)));
        }
        script.push((95_300, true, Some(ErrorType::DnsTimedOut)));
        script.push((96_200, false, Some(ErrorType::TcpRefused)));
        script.push((200_000, true, Some(ErrorType::HttpError)));
        script.push((400_000, false, None));
        script.sort_by_key(|s| s.0);

        let mut real: Vec<SealedSummary> = Vec::new();
        let opener = Opener::new(vec![collector]);
        let mut drain = |core: &mut AgentCore<MemoryStore, SeededEntropy>, now: u64| {
            core.poll_seal(UnixMillis(now)).unwrap();
            while let Some(tx) = core.poll_transmit(UnixMillis(now)).unwrap() {
                let batch = opener.open(&tx.bytes).unwrap().batch;
                let mut reports: Vec<_> = batch
                    .reports
                    .iter()
                    .map(|r| (r.service().to_string(), r.error_type().to_string(), r.count()))
                    .collect();
                reports.sort();
                let targets = batch
                    .targets
                    .iter()
                    .map(|t| (t.service().to_string(), t.attempts(), t.successes()))
                    .collect();
                real.push((batch.created_at.0, reports, targets));
                core.handle_outcome(
                    tx.id,
                    vantage_agent::delivery::Outcome::Accepted,
                    UnixMillis(now),
                )
                .unwrap();
            }
        };
        let mut modelled = Vec::new();
        let mut keep = |s: Sealed| {
            let mut reports: Vec<_> = s
                .reports
                .iter()
                .map(|r| (r.service().to_string(), r.error_type().to_string(), r.count()))
                .collect();
            reports.sort();
            let targets = s.targets.iter().map(|t| (t.0.clone(), t.2, t.3)).collect();
            modelled.push((s.at_ms, reports, targets));
        };
        for (at, on_api, failure) in &script {
            // The real core is polled at each deadline before the next request.
            while let Some(due) = core.poll_timeout().map(|t| t.0).filter(|d| d <= at) {
                drain(&mut core, due);
            }
            while let Some(s) = model.poll_seal(&config, *at) {
                keep(s);
            }
            let (svc, host) = if *on_api { (&api, &api_host) } else { (&shop, &shop_host) };
            match failure {
                Some(t) => {
                    let r = Report::builder(svc.as_str(), host.as_str(), t.clone())
                        .scope(Scope::Path)
                        .build_with_id(ReportId([1; 16]), UnixMillis(*at))
                        .unwrap();
                    core.handle_record(r, UnixMillis(*at));
                    model.request(
                        &config,
                        &mut rng,
                        *at,
                        svc,
                        host,
                        Some((t.clone(), Scope::Path, None)),
                    );
                }
                None => {
                    core.handle_success(svc, host, UnixMillis(*at));
                    model.request(&config, &mut rng, *at, svc, host, None);
                }
            }
        }
        let end = 1_000_000;
        while let Some(due) = core.poll_timeout().map(|t| t.0).filter(|d| *d <= end) {
            drain(&mut core, due);
        }
        while let Some(s) = model.poll_seal(&config, end) {
            keep(s);
        }
        assert!(real.len() >= 6, "{real:?}");
        assert!(real.iter().any(|b| b.1.is_empty()), "a counts-only heartbeat: {real:?}");
        assert!(real.iter().any(|b| b.1.iter().any(|r| r.2 > 1)), "coalesced: {real:?}");
        assert_eq!(modelled, real);
    }
}
