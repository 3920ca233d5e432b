//! Prometheus metrics, written by hand in the text exposition format (version 0.0.4).
//!
//! Every label set is fixed in code (reject reasons, sources, endpoints), so a flood of odd
//! input cannot grow the number of series. Counters are atomics; rendering reads them without
//! stopping the ingest path.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::model::Source;
use crate::open::OpenError;

/// Why an envelope was refused: the `reason` label of `vantage_envelopes_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectReason {
    /// Not a valid v1 structure (outside or inside the ciphertext).
    Malformed,
    /// Unsupported envelope version.
    BadVersion,
    /// Sealed to a key this collector does not hold.
    UnknownKeyId,
    /// HPKE decryption failed.
    DecryptFailed,
    /// The signature does not verify.
    BadSignature,
    /// Body over the size limit (`413`).
    TooLarge,
    /// A per-prefix or per-agent token bucket was empty (`429`).
    RateLimited,
    /// Wrong `Content-Type` (`415`).
    BadContentType,
    /// Batch made too far in the future, or a report observed after its batch was made.
    Timestamp,
    /// Too many commits in flight, or shutting down (`503`).
    Overload,
    /// The store failed to write (`503`).
    StoreError,
    /// Free space below the store's guard (`503`).
    DiskFull,
}

impl RejectReason {
    /// Every reason, in exposition order.
    pub const ALL: [RejectReason; 12] = [
        RejectReason::Malformed,
        RejectReason::BadVersion,
        RejectReason::UnknownKeyId,
        RejectReason::DecryptFailed,
        RejectReason::BadSignature,
        RejectReason::TooLarge,
        RejectReason::RateLimited,
        RejectReason::BadContentType,
        RejectReason::Timestamp,
        RejectReason::Overload,
        RejectReason::StoreError,
        RejectReason::DiskFull,
    ];

    /// The stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Malformed => "malformed",
            RejectReason::BadVersion => "bad_version",
            RejectReason::UnknownKeyId => "unknown_key_id",
            RejectReason::DecryptFailed => "decrypt_failed",
            RejectReason::BadSignature => "bad_signature",
            RejectReason::TooLarge => "too_large",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::BadContentType => "bad_content_type",
            RejectReason::Timestamp => "timestamp",
            RejectReason::Overload => "overload",
            RejectReason::StoreError => "store_error",
            RejectReason::DiskFull => "disk_full",
        }
    }

    /// The reason for an opening error (same label as [`OpenError::as_str`]).
    pub fn of_open_error(e: &OpenError) -> RejectReason {
        match e {
            OpenError::TooLarge { .. } => RejectReason::TooLarge,
            OpenError::BadVersion(_) => RejectReason::BadVersion,
            OpenError::UnknownKeyId(_) => RejectReason::UnknownKeyId,
            OpenError::DecryptFailed => RejectReason::DecryptFailed,
            OpenError::BadSignature => RejectReason::BadSignature,
            OpenError::Malformed(_) => RejectReason::Malformed,
        }
    }

    fn index(self) -> usize {
        RejectReason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }
}

/// Which budget refused an upload with `429`: the `budget` label of
/// `vantage_budget_refusals_total` (a fixed set; the prefix or key itself is never a label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BudgetKind {
    /// Envelopes per second of the source prefix (`limits.prefix_rps`).
    PrefixEnvelopes,
    /// NEL uploads per second of the source prefix (`limits.nel_prefix_rps`).
    PrefixNelUploads,
    /// Body bytes per second of the source prefix (`limits.prefix_bytes_per_sec`).
    PrefixBytes,
    /// Reports per second of the source prefix (`limits.prefix_reports_per_sec`).
    PrefixReports,
    /// Store growth of the source prefix (`limits.prefix_store_bytes_per_sec`).
    PrefixStoreBytes,
    /// Envelopes per second of the agent key (`limits.agent_rps`).
    AgentEnvelopes,
    /// Reports per second of the agent key (`limits.agent_reports_per_sec`).
    AgentReports,
    /// Envelope bytes per second of the agent key (`limits.agent_bytes_per_sec`).
    AgentBytes,
}

impl BudgetKind {
    /// Every budget, in exposition order.
    pub const ALL: [BudgetKind; 8] = [
        BudgetKind::PrefixEnvelopes,
        BudgetKind::PrefixNelUploads,
        BudgetKind::PrefixBytes,
        BudgetKind::PrefixReports,
        BudgetKind::PrefixStoreBytes,
        BudgetKind::AgentEnvelopes,
        BudgetKind::AgentReports,
        BudgetKind::AgentBytes,
    ];

    /// The stable label.
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetKind::PrefixEnvelopes => "prefix_envelopes",
            BudgetKind::PrefixNelUploads => "prefix_nel_uploads",
            BudgetKind::PrefixBytes => "prefix_bytes",
            BudgetKind::PrefixReports => "prefix_reports",
            BudgetKind::PrefixStoreBytes => "prefix_store_bytes",
            BudgetKind::AgentEnvelopes => "agent_envelopes",
            BudgetKind::AgentReports => "agent_reports",
            BudgetKind::AgentBytes => "agent_bytes",
        }
    }

    /// The `[limits]` setting that sets the rate.
    pub fn setting(self) -> &'static str {
        match self {
            BudgetKind::PrefixEnvelopes => "limits.prefix_rps",
            BudgetKind::PrefixNelUploads => "limits.nel_prefix_rps",
            BudgetKind::PrefixBytes => "limits.prefix_bytes_per_sec",
            BudgetKind::PrefixReports => "limits.prefix_reports_per_sec",
            BudgetKind::PrefixStoreBytes => "limits.prefix_store_bytes_per_sec",
            BudgetKind::AgentEnvelopes => "limits.agent_rps",
            BudgetKind::AgentReports => "limits.agent_reports_per_sec",
            BudgetKind::AgentBytes => "limits.agent_bytes_per_sec",
        }
    }

    fn index(self) -> usize {
        BudgetKind::ALL.iter().position(|b| *b == self).unwrap_or(0)
    }
}

/// Which ingest endpoint a duration belongs to (the `endpoint` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /v1/envelopes`.
    Envelopes,
    /// `POST /v1/nel`.
    Nel,
}

impl Endpoint {
    fn index(self) -> usize {
        match self {
            Endpoint::Envelopes => 0,
            Endpoint::Nel => 1,
        }
    }
}

const ENDPOINT_LABELS: [&str; 2] = ["envelopes", "nel"];

/// Upper bounds of the duration histogram buckets, in seconds.
pub const DURATION_BUCKETS: [f64; 13] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Default)]
struct Histogram {
    /// Per bucket (not cumulative); the last one is `+Inf`.
    counts: [AtomicU64; DURATION_BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = DURATION_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(DURATION_BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

/// Store figures shown as gauges (read from the store when `/metrics` is scraped).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreGauges {
    /// Reports stored.
    pub reports: u64,
    /// Target-count records stored.
    pub targets: u64,
    /// Envelope digests remembered for duplicate detection.
    pub envelope_digests: u64,
    /// Logical size of what is stored, in bytes.
    pub bytes: u64,
    /// Size on disk, in bytes.
    pub disk_bytes: u64,
    /// NEL upload digests in the duplicate test's window.
    pub nel_dedup_digests: u64,
    /// How far back that window reaches, in seconds.
    pub nel_dedup_window_seconds: u64,
}

/// The collector's counters.
#[derive(Default)]
pub struct Metrics {
    envelopes_accepted: AtomicU64,
    envelopes_duplicate: AtomicU64,
    envelopes_rejected: [AtomicU64; RejectReason::ALL.len()],
    reports_accepted: [AtomicU64; 2],
    nel_reports_accepted: AtomicU64,
    nel_uploads_duplicate: AtomicU64,
    nel_other_service: AtomicU64,
    // Keys are `&'static str` labels from a fixed set (`RejectReason` and `NelError::as_str`),
    // so the map cannot grow with input.
    nel_rejected: Mutex<BTreeMap<&'static str, u64>>,
    ingest_duration: [Histogram; 2],
    connections_open: AtomicU64,
    connections_rejected: AtomicU64,
    budget_refusals: [AtomicU64; BudgetKind::ALL.len()],
    /// Envelopes put through `Opener::open` (HPKE open, signature check, decode), and the CPU
    /// time of the threads that did it, in ns.
    opens: AtomicU64,
    open_cpu_nanos: AtomicU64,
}

/// Writes single-sample families `(name, kind, help, value)` in the Prometheus text format.
pub(crate) fn write_families(out: &mut String, families: &[(&str, &str, &str, u64)]) {
    use std::fmt::Write as _;
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    }
}

/// The process's own families, as Prometheus client libraries' process collector names them
/// (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
/// `process_start_time_seconds`, `process_open_fds`, `process_max_fds`, `process_threads`), from
/// `/proc/self`. With `vantage_envelope_open_cpu_seconds_total` the first gives the crypto's
/// share of the collector's CPU. Families whose source is unreadable are left out.
pub(crate) fn write_process(out: &mut String) {
    use std::fmt::Write as _;
    let mut family = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
    };
    if let Some(stat) = ProcStat::read() {
        family(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            stat.cpu_seconds.to_string(),
        );
        family(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            stat.resident_bytes.to_string(),
        );
        family(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            stat.virtual_bytes.to_string(),
        );
        family("process_threads", "gauge", "Number of OS threads.", stat.threads.to_string());
        if let Some(start) = stat.start_time_seconds {
            family(
                "process_start_time_seconds",
                "gauge",
                "Start time of the process since unix epoch in seconds.",
                start.to_string(),
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        // The directory listing holds one descriptor itself while it is read.
        let open = fds.count().saturating_sub(1);
        family("process_open_fds", "gauge", "Number of open file descriptors.", open.to_string());
    }
    if let Some(max) = max_open_files() {
        family(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max.to_string(),
        );
    }
}

/// What `process_*` reads from `/proc/self/stat`.
#[derive(Debug)]
struct ProcStat {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    threads: u64,
    start_time_seconds: Option<f64>,
}

impl ProcStat {
    fn read() -> Option<ProcStat> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse::<u64>().ok())
        });
        ProcStat::parse(
            &stat,
            rustix::param::clock_ticks_per_second(),
            rustix::param::page_size() as u64,
            boot,
        )
    }

    /// `stat` is `/proc/PID/stat`; `boot` the boot time (`btime` of `/proc/stat`), in seconds
    /// since the epoch.
    fn parse(stat: &str, ticks: u64, page: u64, boot: Option<u64>) -> Option<ProcStat> {
        // The command name may hold spaces and parentheses: the fields follow the last ')'.
        let (_, rest) = stat.rsplit_once(')')?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3 (state): field N is index N - 3.
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        let ticks = ticks.max(1) as f64;
        Some(ProcStat {
            cpu_seconds: (field(14)? + field(15)?) as f64 / ticks,
            threads: field(20)?,
            start_time_seconds: boot.map(|b| b as f64 + field(22).unwrap_or(0) as f64 / ticks),
            virtual_bytes: field(23)?,
            resident_bytes: field(24)?.saturating_mul(page),
        })
    }
}

/// The soft limit on open files (`Max open files` of `/proc/self/limits`); `None` when
/// unreadable or unlimited.
fn max_open_files() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

/// Writes `vantage_agent_dropped_reports_total{reason}`: what agents reported dropping before
/// delivery, summed over stored envelopes ([`Store::agent_drops`](crate::store::Store::agent_drops)).
/// Every known reason has a series from the start (0 until the first drop), so rules and panels
/// see data; the label set is the agent's fixed reason list plus `other`.
pub(crate) fn write_agent_drops(out: &mut String, totals: &[(&'static str, u64)]) {
    use std::fmt::Write as _;
    let name = "vantage_agent_dropped_reports_total";
    let _ = writeln!(
        out,
        "# HELP {name} Reports agents dropped before delivery, by reason (from stored envelopes).\n# TYPE {name} counter"
    );
    for (label, n) in agent_drop_rows(totals) {
        let _ = writeln!(out, "{name}{{reason=\"{label}\"}} {n}");
    }
}

/// Every reason label (the agent's known reasons, then `other`) with its total from `totals`
/// (0 when absent): the rows of the metric and of `GET /v1/agent_drops`.
fn agent_drop_rows(totals: &[(&'static str, u64)]) -> Vec<(&'static str, u64)> {
    let mut labels: Vec<&'static str> =
        vantage_agent::drops::DropReason::KNOWN.iter().map(|r| r.as_str()).collect();
    labels.push("other");
    labels
        .into_iter()
        .map(|label| {
            let n = totals.iter().filter(|(l, _)| *l == label).map(|(_, n)| *n).sum::<u64>();
            (label, n)
        })
        .collect()
}

/// `GET /v1/agent_drops` (admin): `{"total": N, "reasons": [{"reason": "queue_full", "count":
/// N}, ...], "apps": [{"app": "com.example.shop", "total": N, "reasons": [...]}, ...]}`: every
/// reason listed (the same rows as `vantage_agent_dropped_reports_total`), then per app (at
/// most `store::MAX_DROP_APPS`, plus `(other)`), most drops first, reasons with drops only.
pub(crate) fn agent_drops_json(
    totals: &[(&'static str, u64)],
    by_app: &[(String, &'static str, u64)],
) -> serde_json::Value {
    let rows = agent_drop_rows(totals);
    let total = rows.iter().map(|(_, n)| *n).fold(0u64, u64::saturating_add);
    let mut apps: Vec<(&str, u64, Vec<serde_json::Value>)> = Vec::new();
    for (app, reason, count) in by_app {
        let entry = match apps.iter_mut().find(|(a, _, _)| *a == app.as_str()) {
            Some(e) => e,
            None => {
                apps.push((app.as_str(), 0, Vec::new()));
                apps.last_mut().expect("just pushed")
            }
        };
        entry.1 = entry.1.saturating_add(*count);
        entry.2.push(serde_json::json!({ "reason": reason, "count": count }));
    }
    apps.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    serde_json::json!({
        "total": total,
        "reasons": rows
            .into_iter()
            .map(|(reason, count)| serde_json::json!({ "reason": reason, "count": count }))
            .collect::<Vec<_>>(),
        "apps": apps
            .into_iter()
            .map(|(app, total, reasons)| {
                serde_json::json!({ "app": app, "total": total, "reasons": reasons })
            })
            .collect::<Vec<_>>(),
    })
}

fn source_index(source: Source) -> usize {
    match source {
        Source::Agent => 0,
        Source::Nel => 1,
    }
}

impl Metrics {
    /// All counters at zero.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    /// An envelope was stored with `reports` reports.
    pub fn envelope_accepted(&self, reports: usize) {
        self.envelopes_accepted.fetch_add(1, Ordering::Relaxed);
        self.add_reports(Source::Agent, reports);
    }

    /// An envelope was a duplicate of one already stored.
    pub fn envelope_duplicate(&self) {
        self.envelopes_duplicate.fetch_add(1, Ordering::Relaxed);
    }

    /// An envelope was refused.
    pub fn envelope_rejected(&self, reason: RejectReason) {
        self.envelopes_rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// A NEL upload was stored with `reports` reports.
    pub fn nel_accepted(&self, reports: usize) {
        self.nel_reports_accepted.fetch_add(reports as u64, Ordering::Relaxed);
        self.add_reports(Source::Nel, reports);
    }

    /// A NEL upload was a duplicate (same body) of one already stored.
    pub fn nel_duplicate(&self) {
        self.nel_uploads_duplicate.fetch_add(1, Ordering::Relaxed);
    }

    /// Browser reports filed under [`OTHER_SERVICE`](crate::nel::OTHER_SERVICE) so far (the
    /// service map's running total: kept as the largest value seen).
    pub fn nel_other_service(&self, total: u64) {
        self.nel_other_service.fetch_max(total, Ordering::Relaxed);
    }

    /// A NEL upload was refused; `reason` is a fixed label.
    pub fn nel_rejected(&self, reason: &'static str) {
        let mut map = self.nel_rejected.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry(reason).or_default() += 1;
    }

    fn add_reports(&self, source: Source, n: usize) {
        self.reports_accepted[source_index(source)].fetch_add(n as u64, Ordering::Relaxed);
    }

    /// An envelope went through `Opener::open` (opened or refused) at a cost of `cpu` of the
    /// calling thread's CPU time.
    pub fn envelope_opened(&self, cpu: Duration) {
        self.opens.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX);
        self.open_cpu_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Envelopes put through `Opener::open` so far, and the CPU time that took.
    pub fn open_cpu(&self) -> (u64, Duration) {
        let nanos = self.open_cpu_nanos.load(Ordering::Relaxed);
        (self.opens.load(Ordering::Relaxed), Duration::from_nanos(nanos))
    }

    /// How long one ingest request took, from headers read to response.
    pub fn observe_ingest(&self, endpoint: Endpoint, d: Duration) {
        self.ingest_duration[endpoint.index()].observe(d);
    }

    /// A connection was accepted and is being served.
    pub fn connection_opened(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    /// A served connection ended.
    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection was refused because `max_connections` were open.
    pub fn connection_rejected(&self) {
        self.connections_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// An upload was refused with `429` by `budget`.
    pub fn budget_refused(&self, budget: BudgetKind) {
        self.budget_refusals[budget.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Uploads refused by `budget` so far.
    pub fn budget_refusal_count(&self, budget: BudgetKind) -> u64 {
        self.budget_refusals[budget.index()].load(Ordering::Relaxed)
    }

    /// Envelopes refused for `reason` so far.
    pub fn rejected_count(&self, reason: RejectReason) -> u64 {
        self.envelopes_rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// Duplicate envelopes so far.
    pub fn duplicate_count(&self) -> u64 {
        self.envelopes_duplicate.load(Ordering::Relaxed)
    }

    /// Envelopes stored so far.
    pub fn accepted_count(&self) -> u64 {
        self.envelopes_accepted.load(Ordering::Relaxed)
    }

    /// The exposition text.
    pub fn render(&self, store: StoreGauges) -> String {
        let mut out = String::with_capacity(4096);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        family(
            "vantage_envelopes_accepted_total",
            "counter",
            "Envelopes opened, verified and durably stored.",
            &[(String::new(), load(&self.envelopes_accepted))],
        );
        family(
            "vantage_envelopes_duplicate_total",
            "counter",
            "Envelopes answered 202 without storing: same digest or (agent key, sequence) seen.",
            &[(String::new(), load(&self.envelopes_duplicate))],
        );
        family(
            "vantage_envelope_opens_total",
            "counter",
            "Envelopes put through the open (HPKE open, Ed25519 verify, decode), opened or refused.",
            &[(String::new(), load(&self.opens))],
        );
        let rejected: Vec<_> = RejectReason::ALL
            .iter()
            .map(|r| {
                (
                    format!("{{reason=\"{}\"}}", r.as_str()),
                    load(&self.envelopes_rejected[r.index()]),
                )
            })
            .collect();
        family(
            "vantage_envelopes_rejected_total",
            "counter",
            "Envelopes refused, by reason.",
            &rejected,
        );
        let reports: Vec<_> = [Source::Agent, Source::Nel]
            .iter()
            .map(|s| {
                (
                    format!("{{source=\"{}\"}}", s.as_str()),
                    load(&self.reports_accepted[source_index(*s)]),
                )
            })
            .collect();
        family("vantage_reports_accepted_total", "counter", "Reports stored, by source.", &reports);
        family(
            "vantage_nel_reports_accepted_total",
            "counter",
            "Browser NEL reports stored.",
            &[(String::new(), load(&self.nel_reports_accepted))],
        );
        family(
            "vantage_nel_duplicate_total",
            "counter",
            "NEL uploads answered without storing: the same body was stored before.",
            &[(String::new(), load(&self.nel_uploads_duplicate))],
        );
        family(
            "vantage_nel_other_service_total",
            "counter",
            "Browser NEL reports filed under nel-other: their domain matched no [[nel.services]] rule after nel.max_services were minted.",
            &[(String::new(), load(&self.nel_other_service))],
        );
        // Every reason a NEL upload can be refused for has a series from the start (0 until
        // the first refusal), so rules and panels see data; the labels are a fixed set.
        let nel_rejected: Vec<_> = {
            let mut map = self.nel_rejected.lock().unwrap_or_else(|p| p.into_inner()).clone();
            for reason in RejectReason::ALL {
                map.entry(reason.as_str()).or_default();
            }
            map.entry(crate::nel::NelError::Malformed(String::new()).as_str()).or_default();
            map.iter().map(|(k, v)| (format!("{{reason=\"{k}\"}}"), *v)).collect()
        };
        family(
            "vantage_nel_rejected_total",
            "counter",
            "NEL uploads refused, by reason.",
            &nel_rejected,
        );
        family(
            "vantage_connections_open",
            "gauge",
            "Connections being served.",
            &[(String::new(), load(&self.connections_open))],
        );
        family(
            "vantage_connections_rejected_total",
            "counter",
            "Connections refused with 503 because max_connections were open.",
            &[(String::new(), load(&self.connections_rejected))],
        );
        let budgets: Vec<_> = BudgetKind::ALL
            .iter()
            .map(|b| {
                (format!("{{budget=\"{}\"}}", b.as_str()), load(&self.budget_refusals[b.index()]))
            })
            .collect();
        family(
            "vantage_budget_refusals_total",
            "counter",
            "Uploads refused with 429 by a per-source-prefix or per-agent budget, by budget.",
            &budgets,
        );
        family(
            "vantage_store_reports",
            "gauge",
            "Reports in the store.",
            &[(String::new(), store.reports)],
        );
        family(
            "vantage_store_targets",
            "gauge",
            "Target-count records in the store.",
            &[(String::new(), store.targets)],
        );
        family(
            "vantage_store_envelope_digests",
            "gauge",
            "Envelope digests remembered to recognise a re-send (40 logical bytes each).",
            &[(String::new(), store.envelope_digests)],
        );
        family(
            "vantage_store_bytes",
            "gauge",
            "Logical size of the stored records and envelope digests, in bytes: what \
             store.max_bytes bounds.",
            &[(String::new(), store.bytes)],
        );
        family(
            "vantage_store_disk_bytes",
            "gauge",
            "Size of the store on disk, in bytes.",
            &[(String::new(), store.disk_bytes)],
        );
        family(
            "vantage_store_nel_dedup_digests",
            "gauge",
            "NEL upload digests in the window a re-send of the same bytes is a duplicate within.",
            &[(String::new(), store.nel_dedup_digests)],
        );
        family(
            "vantage_store_nel_dedup_window_seconds",
            "gauge",
            "How far back that window reaches: 600, or less while more than 131072 NEL uploads \
             arrived within 10 minutes.",
            &[(String::new(), store.nel_dedup_window_seconds)],
        );
        family(
            "vantage_build_info",
            "gauge",
            "Always 1; the label carries the collector version.",
            &[(format!("{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")), 1)],
        );

        // CPU time, not wall time: with vantage_envelope_opens_total, the cryptographic cost
        // per envelope; against the process's CPU (process_cpu_seconds_total or
        // /proc/PID/stat), the share of the collector's CPU that the crypto takes.
        let name = "vantage_envelope_open_cpu_seconds_total";
        let _ = writeln!(
            out,
            "# HELP {name} CPU time of the collector's threads spent in the open (HPKE open, \
             Ed25519 verify, decode).\n# TYPE {name} counter\n{name} {}",
            load(&self.open_cpu_nanos) as f64 / 1e9
        );
        let name = "vantage_ingest_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from request headers to response on the ingest endpoints."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (endpoint, h) in ENDPOINT_LABELS.iter().zip(&self.ingest_duration) {
            let mut cumulative = 0u64;
            for (i, le) in DURATION_BUCKETS.iter().enumerate() {
                cumulative += load(&h.counts[i]);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{endpoint=\"{endpoint}\",le=\"{le}\"}} {cumulative}"
                );
            }
            cumulative += load(&h.counts[DURATION_BUCKETS.len()]);
            let _ =
                writeln!(out, "{name}_bucket{{endpoint=\"{endpoint}\",le=\"+Inf\"}} {cumulative}");
            let sum = load(&h.sum_nanos) as f64 / 1e9;
            let _ = writeln!(out, "{name}_sum{{endpoint=\"{endpoint}\"}} {sum}");
            let _ = writeln!(out, "{name}_count{{endpoint=\"{endpoint}\"}} {cumulative}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    struct Sample {
        name: String,
        labels: BTreeMap<String, String>,
        value: f64,
    }

    /// A strict reader of the exposition format: HELP and TYPE before samples, one TYPE per
    /// family, metric and label names valid, label values quoted, values numbers.
    fn parse(text: &str) -> (BTreeMap<String, String>, Vec<Sample>) {
        let valid_name = |s: &str| {
            !s.is_empty()
                && s.chars().enumerate().all(|(i, c)| {
                    c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
                })
        };
        let mut types = BTreeMap::new();
        let mut helped = BTreeSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            assert!(!line.is_empty(), "empty line in exposition");
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has text");
                assert!(valid_name(name) && !help.is_empty(), "{line}");
                assert!(helped.insert(name.to_owned()), "second HELP for {name}");
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(helped.contains(name), "TYPE before HELP: {line}");
                assert!(
                    types.insert(name.to_owned(), kind.to_owned()).is_none(),
                    "second TYPE {name}"
                );
                continue;
            }
            assert!(!line.starts_with('#'), "unknown comment {line}");
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line}"));
            let (name, labels) = match series.split_once('{') {
                None => (series, BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels end with }");
                    let mut labels = BTreeMap::new();
                    for pair in body.split(',') {
                        let (k, v) = pair.split_once('=').expect("label k=v");
                        assert!(valid_name(k), "{line}");
                        let v =
                            v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).expect("quoted");
                        assert!(!v.contains('"') && !v.contains('\\'), "{line}");
                        labels.insert(k.to_owned(), v.to_owned());
                    }
                    (name, labels)
                }
            };
            assert!(valid_name(name), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| {
                    name.strip_suffix(s).filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
                })
                .unwrap_or(name);
            assert!(types.contains_key(family), "sample before its TYPE: {line}");
            samples.push(Sample { name: name.to_owned(), labels, value });
        }
        (types, samples)
    }

    fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
        let want: BTreeMap<String, String> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let found: Vec<_> = samples.iter().filter(|s| s.name == name && s.labels == want).collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}");
        found[0].value
    }

    #[test]
    fn exposition_parses_and_counts() {
        let m = Metrics::new();
        m.envelope_accepted(3);
        m.envelope_accepted(2);
        m.envelope_duplicate();
        m.envelope_rejected(RejectReason::BadSignature);
        m.envelope_rejected(RejectReason::BadSignature);
        m.envelope_rejected(RejectReason::RateLimited);
        m.nel_accepted(4);
        m.nel_rejected("malformed");
        m.nel_rejected("bad_content_type");
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.connection_rejected();
        m.budget_refused(BudgetKind::PrefixStoreBytes);
        m.budget_refused(BudgetKind::PrefixStoreBytes);
        m.observe_ingest(Endpoint::Envelopes, Duration::from_micros(300));
        m.envelope_opened(Duration::from_micros(150));
        m.envelope_opened(Duration::from_micros(1_250_100));
        m.observe_ingest(Endpoint::Envelopes, Duration::from_millis(30));
        m.observe_ingest(Endpoint::Envelopes, Duration::from_secs(60));
        let text = m.render(StoreGauges {
            reports: 9,
            envelope_digests: 4,
            targets: 1,
            bytes: 1234,
            disk_bytes: 4096,
            nel_dedup_digests: 3,
            nel_dedup_window_seconds: 600,
        });
        let (types, samples) = parse(&text);

        assert_eq!(types["vantage_ingest_duration_seconds"], "histogram");
        assert_eq!(types["vantage_connections_open"], "gauge");
        assert_eq!(value(&samples, "vantage_envelopes_accepted_total", &[]), 2.0);
        assert_eq!(value(&samples, "vantage_envelopes_duplicate_total", &[]), 1.0);
        assert_eq!(types["vantage_envelope_open_cpu_seconds_total"], "counter");
        assert_eq!(value(&samples, "vantage_envelope_opens_total", &[]), 2.0);
        let open_cpu = value(&samples, "vantage_envelope_open_cpu_seconds_total", &[]);
        assert!((open_cpu - 1.25025).abs() < 1e-9, "{open_cpu}");
        assert_eq!(m.open_cpu(), (2, Duration::from_micros(1_250_250)));
        assert_eq!(value(&samples, "vantage_store_envelope_digests", &[]), 4.0);
        assert_eq!(value(&samples, "vantage_reports_accepted_total", &[("source", "agent")]), 5.0);
        assert_eq!(value(&samples, "vantage_reports_accepted_total", &[("source", "nel")]), 4.0);
        assert_eq!(value(&samples, "vantage_nel_reports_accepted_total", &[]), 4.0);
        let rejected =
            |r: &str| value(&samples, "vantage_envelopes_rejected_total", &[("reason", r)]);
        assert_eq!(rejected("bad_signature"), 2.0);
        assert_eq!(rejected("rate_limited"), 1.0);
        assert_eq!(rejected("store_error"), 0.0);
        // Every reason is always exposed, so rates work from the first scrape.
        let reasons =
            samples.iter().filter(|s| s.name == "vantage_envelopes_rejected_total").count();
        assert_eq!(reasons, RejectReason::ALL.len());
        assert_eq!(value(&samples, "vantage_nel_rejected_total", &[("reason", "malformed")]), 1.0);
        // NEL refusals too: a series per reason before the first refusal of that reason.
        assert_eq!(value(&samples, "vantage_nel_rejected_total", &[("reason", "too_large")]), 0.0);
        assert_eq!(
            value(
                &parse(&Metrics::new().render(StoreGauges::default())).1,
                "vantage_nel_rejected_total",
                &[("reason", "malformed")]
            ),
            0.0
        );
        assert_eq!(value(&samples, "vantage_connections_open", &[]), 1.0);
        assert_eq!(value(&samples, "vantage_connections_rejected_total", &[]), 1.0);
        let budget = |b: &str| value(&samples, "vantage_budget_refusals_total", &[("budget", b)]);
        assert_eq!(budget("prefix_store_bytes"), 2.0);
        assert_eq!(budget("agent_reports"), 0.0);
        let n = samples.iter().filter(|s| s.name == "vantage_budget_refusals_total").count();
        assert_eq!(n, BudgetKind::ALL.len());
        assert_eq!(value(&samples, "vantage_store_reports", &[]), 9.0);
        assert_eq!(value(&samples, "vantage_store_bytes", &[]), 1234.0);
        assert_eq!(value(&samples, "vantage_store_nel_dedup_digests", &[]), 3.0);
        assert_eq!(value(&samples, "vantage_store_nel_dedup_window_seconds", &[]), 600.0);
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(value(&samples, "vantage_build_info", &[("version", version)]), 1.0);

        // Histogram: cumulative, ends in +Inf equal to _count, sum in seconds.
        let bucket = |le: &str| {
            value(
                &samples,
                "vantage_ingest_duration_seconds_bucket",
                &[("endpoint", "envelopes"), ("le", le)],
            )
        };
        assert_eq!(bucket("0.0005"), 1.0);
        assert_eq!(bucket("0.025"), 1.0);
        assert_eq!(bucket("0.05"), 2.0);
        assert_eq!(bucket("5"), 2.0);
        assert_eq!(bucket("+Inf"), 3.0);
        let env = [("endpoint", "envelopes")];
        assert_eq!(value(&samples, "vantage_ingest_duration_seconds_count", &env), 3.0);
        let sum = value(&samples, "vantage_ingest_duration_seconds_sum", &env);
        assert!((sum - 60.0303).abs() < 1e-9, "{sum}");
        let mut last = 0.0;
        for s in samples.iter().filter(|s| {
            s.name == "vantage_ingest_duration_seconds_bucket" && s.labels["endpoint"] == "nel"
        }) {
            assert!(s.value >= last);
            last = s.value;
        }
    }

    #[test]
    fn process_families_describe_this_process() {
        let mut text = String::new();
        write_process(&mut text);
        let (types, samples) = parse(&text);
        assert_eq!(types["process_cpu_seconds_total"], "counter");
        for name in [
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_threads",
            "process_start_time_seconds",
            "process_open_fds",
            "process_max_fds",
        ] {
            assert_eq!(types[name], "gauge", "{name}");
        }
        let v = |name: &str| value(&samples, name, &[]);
        // Burn some CPU: the counter moves with it.
        let before = v("process_cpu_seconds_total");
        let start = std::time::Instant::now();
        let mut x = 1u64;
        while start.elapsed() < Duration::from_millis(120) {
            x = std::hint::black_box(x.rotate_left(5) ^ 0x5bd1_e995);
        }
        let mut again = String::new();
        write_process(&mut again);
        let after = value(&parse(&again).1, "process_cpu_seconds_total", &[]);
        assert!(after > before, "{before} -> {after}");
        // Plausible values: memory in use and mapped, this test's threads, a start time in
        // the past day, descriptors open (stdio at least) and under the limit.
        assert!(v("process_resident_memory_bytes") > 1e6);
        assert!(v("process_virtual_memory_bytes") >= v("process_resident_memory_bytes"));
        assert!(v("process_threads") >= 1.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = v("process_start_time_seconds");
        assert!(started <= now + 1.0 && started > now - 86_400.0, "{started} vs {now}");
        assert!(v("process_open_fds") >= 3.0 && v("process_open_fds") < v("process_max_fds"));
    }

    #[test]
    fn proc_stat_fields_are_read_after_the_command_name() {
        // A command name with a space and a ')' in it; utime 250 and stime 50 ticks, 7
        // threads, started 1000 ticks after boot, 8192 B mapped, 3 pages resident.
        let line = "42 (a b) c) S 1 42 42 0 -1 4194560 0 0 0 0 250 50 0 0 20 0 7 0 1000 8192 3 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let s = ProcStat::parse(line, 100, 4096, Some(1_700_000_000)).unwrap();
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!((s.threads, s.virtual_bytes, s.resident_bytes), (7, 8192, 3 * 4096));
        assert_eq!(s.start_time_seconds, Some(1_700_000_010.0));
        assert!(ProcStat::parse("42 (truncated", 100, 4096, None).is_none());
        assert!(ProcStat::parse("42 (x) S 1 2", 100, 4096, None).is_none());
    }

    #[test]
    fn reject_reasons_match_open_error_labels() {
        use vantage_agent::wire::KeyId;
        let malformed = crate::open::Opener::new(Vec::new()).open(&[]).unwrap_err();
        let errors = [
            OpenError::TooLarge { len: 2, max: 1 },
            OpenError::BadVersion(2),
            OpenError::UnknownKeyId(KeyId([0; 8])),
            OpenError::DecryptFailed,
            OpenError::BadSignature,
            malformed,
        ];
        for e in errors {
            assert_eq!(RejectReason::of_open_error(&e).as_str(), e.as_str());
        }
    }
}
