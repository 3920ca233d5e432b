//! The native agent's configuration: typed values ([`AgentConfig`]), the builder
//! ([`AgentBuilder`]) and the TOML file format.
//!
//! ```toml
//! data_dir = "/var/lib/shop/vantage"        # created at opt-in, nothing before
//! collector_key = "4310ee97...662a"         # the deployment's X25519 public key (hex)
//! extra_ca_files = []                       # PEM files trusted besides the webpki roots
//! dns_servers = []                          # "ip:port"; empty = the system resolver
//!                                           # (needs feature `hickory-dns`, else refused)
//!
//! [app]
//! id = "com.example.shop"
//! version = "4.2.0"
//! platform = "linux"                        # sdk defaults to "vantage-rust/<version>"
//!
//! [[services]]
//! id = "checkout"
//! hosts = ["api.example.com", "*.pay.example.com"]   # "*." = any name under it
//!
//! [[collectors]]
//! url = "https://vantage-a.example.net"
//! fixed_addrs = ["192.0.2.10:443"]          # used when DNS fails; TLS still checks the name
//! asn = 64500                               # declared, for the failure-domain checks
//!
//! [buffer]     # max_bytes = 1048576, max_age_secs = 604800: <data_dir>/envelopes.log, an
//!              # append-only log (fsync per write, no background thread), oldest dropped
//!              # first and counted (queue_full, expired); see `native::log_store`
//! [delivery]   # base_backoff_ms = 1000, max_backoff_ms = 20000, max_in_flight = 2,
//!              # max_per_second = 10, request_timeout_ms = 30000, seal_delay_ms = 500,
//!              # queue_capacity = 65536
//! [sampling]   # failure_fraction = 1.0, success_fraction = 1.0,
//!              # report_interval_secs = 30 (success counts sealed at least this often)
//! [scope]      # enabled = true, interval_secs = 30
//! [capture]    # unmapped_service = (none): the service for requests the HTTP client
//!              # integrations see to hosts no service lists; none = not recorded
//! ```
//!
//! Every table refuses unknown fields, and every error names the field it is about
//! (`collectors[1].url: not an https URL`).

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::buffer::StoreLimits;
use crate::delivery::{DeliveryConfig, MAX_COLLECTORS};
use crate::pipeline::{
    DEFAULT_REPORT_INTERVAL_MS, DEFAULT_SCOPE_CHECK_INTERVAL_MS, DEFAULT_SEAL_DELAY_MS,
};
use crate::report::{AppInfo, Host, ServiceId};
use crate::sampling::Sampling;
use crate::wire::CollectorPublicKey;

use super::doc::{Doc, Fields};

/// Default request timeout of one upload: 30 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default capacity of the queue between `record()` and the background task: 65 536 failures
/// (about 200 bytes each while queued, memory allocated only while they are: a burst of tens
/// of thousands fits; see `native/inbox.rs`).
pub const DEFAULT_QUEUE_CAPACITY: usize = 65_536;
/// The SDK string used when the config does not give one.
pub const DEFAULT_SDK: &str = concat!("vantage-rust/", env!("CARGO_PKG_VERSION"));

/// A configuration value was wrong. The message starts with the field
/// (`collectors[1].url: not an https URL`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field had an invalid value.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as a path (`collectors[1].url`).
        field: String,
        /// What was wrong.
        reason: String,
    },
    /// The TOML (or JSON) did not parse or did not fit the schema (unknown field, wrong type,
    /// missing field); the message names the key and the line.
    #[error("config: {0}")]
    Toml(String),
    /// The config file could not be read.
    #[error("config file {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        reason: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid { field: field.into(), reason: reason.to_string() }
    }

    /// The field the error is about, when it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::Toml(_) | ConfigError::Read { .. } => None,
        }
    }
}

/// One collector, in delivery order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectorConfig {
    url: String,
    host: Host,
    port: u16,
    path: String,
    /// Addresses used when DNS fails (TLS still verifies the URL's host name).
    pub fixed_addrs: Vec<SocketAddr>,
    /// The autonomous system the collector is declared to be in (failure-domain checks only).
    pub asn: Option<u32>,
}

impl CollectorConfig {
    /// A collector at `url`: `https://host[:port][/prefix]`, no query, fragment or user info.
    /// An IP-literal host is allowed (tests; the certificate must name the IP).
    pub fn new(url: &str) -> Result<CollectorConfig, ConfigError> {
        Self::parse("url", url)
    }

    pub(crate) fn parse(field: &str, url: &str) -> Result<CollectorConfig, ConfigError> {
        let bad = |reason: &str| ConfigError::invalid(field, reason);
        let rest = url.strip_prefix("https://").ok_or_else(|| bad("not an https URL"))?;
        if rest.contains(['?', '#', '@']) {
            return Err(bad("must not have a query, fragment or user info"));
        }
        let (authority, path) = rest.find('/').map_or((rest, ""), |i| rest.split_at(i));
        let (host, port) = split_host_port(authority).ok_or_else(|| bad("bad host or port"))?;
        let host = Host::parse(host).map_err(|e| bad(&e.to_string()))?;
        Ok(CollectorConfig {
            url: url.trim_end_matches('/').to_owned(),
            host,
            port,
            path: path.trim_end_matches('/').to_owned(),
            fixed_addrs: Vec::new(),
            asn: None,
        })
    }

    /// With these fixed addresses (default: none).
    pub fn fixed_addrs(mut self, addrs: Vec<SocketAddr>) -> Self {
        self.fixed_addrs = addrs;
        self
    }

    /// With a declared ASN (default: none).
    pub fn asn(mut self, asn: u32) -> Self {
        self.asn = Some(asn);
        self
    }

    /// The base URL, without a trailing slash.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The host (what TLS verifies, and what SNI carries).
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port (443 unless given).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The path of the envelope endpoint: `{prefix}/v1/envelopes`.
    pub fn envelopes_path(&self) -> String {
        format!("{}/v1/envelopes", self.path)
    }
}

fn split_host_port(authority: &str) -> Option<(&str, u16)> {
    if let Some(inner) = authority.strip_prefix('[') {
        let (host, rest) = inner.split_once(']')?;
        let port = match rest.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if rest.is_empty() => 443,
            None => return None,
        };
        return Some((host, port));
    }
    match authority.split_once(':') {
        Some((host, port)) => Some((host, port.parse().ok()?)),
        None => Some((authority, 443)),
    }
}

/// A monitored service: its id and the hosts it is reached at (the registrable-domain rule
/// compares collectors against these; the HTTP client integrations map a request's host to
/// its service with [`AgentConfig::service_for_host`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceConfig {
    /// The service id.
    pub id: ServiceId,
    /// Its hosts, matched exactly.
    pub hosts: Vec<Host>,
    /// Names given as `*.suffix` patterns (stored without the `*.`): any name under one of
    /// them (`a.suffix`, `a.b.suffix`) belongs to the service, the suffix itself does not.
    pub host_suffixes: Vec<Host>,
}

impl ServiceConfig {
    /// A service with these hosts: DNS names, IP addresses or URLs (only the host is kept),
    /// and `*.example.com` patterns for every name under `example.com`. A `*` anywhere else
    /// is refused (`services[0].hosts[1]: ...`): wildcards match whole labels at the front.
    pub fn new(id: &str, hosts: &[&str]) -> Result<ServiceConfig, ConfigError> {
        Self::parse(0, id, hosts.iter().copied())
    }

    fn parse<'a>(
        i: usize,
        id: &str,
        hosts: impl Iterator<Item = &'a str>,
    ) -> Result<ServiceConfig, ConfigError> {
        let id = id.parse().map_err(|e| ConfigError::invalid(format!("services[{i}].id"), e))?;
        let mut service = ServiceConfig { id, hosts: Vec::new(), host_suffixes: Vec::new() };
        for (j, h) in hosts.enumerate() {
            let bad =
                |e: &dyn fmt::Display| ConfigError::invalid(format!("services[{i}].hosts[{j}]"), e);
            match h.strip_prefix("*.") {
                Some(suffix) if !suffix.contains('*') && !suffix.contains("://") => {
                    service.host_suffixes.push(Host::parse(suffix).map_err(|e| bad(&e))?);
                }
                _ if h.contains('*') => {
                    return Err(bad(&format!(
                        "{h:?}: a wildcard must be the whole first label (\"*.example.com\")"
                    )));
                }
                _ => service.hosts.push(Host::from_url(h).map_err(|e| bad(&e))?),
            }
        }
        Ok(service)
    }

    /// How well `host` (lower-case, no brackets, no trailing dot) matches: `Some(usize::MAX)`
    /// for an exact host, `Some(len)` for a pattern with a suffix of that length, `None`.
    fn match_len(&self, host: &str) -> Option<usize> {
        if self.hosts.iter().any(|h| h.as_str().eq_ignore_ascii_case(host)) {
            return Some(usize::MAX);
        }
        self.host_suffixes
            .iter()
            .map(|s| s.as_str())
            .filter(|s| {
                host.len() > s.len() + 1
                    && host.as_bytes()[host.len() - s.len() - 1] == b'.'
                    && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
            })
            .map(str::len)
            .max()
    }
}

/// The whole configuration of a native agent. Made by [`AgentBuilder`] or
/// [`AgentConfig::from_toml_str`]; [`crate::native::validate::validate`] checks it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AgentConfig {
    /// The app.
    pub app: AppInfo,
    /// The deployment's collector key.
    pub collector_key: CollectorPublicKey,
    /// Where the identity key and the buffer (`envelopes.log`) live (created at opt-in).
    pub data_dir: PathBuf,
    /// Monitored services.
    pub services: Vec<ServiceConfig>,
    /// Collectors, in delivery order.
    pub collectors: Vec<CollectorConfig>,
    /// CA certificates trusted besides the webpki roots (default: none).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// DNS servers to use instead of the system resolver (default: none = system). Only a
    /// build with the `hickory-dns` feature can use them; without it validation refuses a
    /// non-empty list (field `dns_servers`).
    pub dns_servers: Vec<SocketAddr>,
    /// Sampling (default: every failure reported, every success counted).
    pub sampling: Sampling,
    /// Sampled success counts are sealed at least this often even when nothing fails (a
    /// heartbeat, so collectors see failure ratios and silence); `None`: only with failures.
    /// Default 30 s. Nothing is sent while no success is sampled.
    pub report_interval: Option<Duration>,
    /// Time a failure waits in memory before it is sealed to disk (default 500 ms,
    /// [`DEFAULT_SEAL_DELAY_MS`]).
    pub seal_delay: Duration,
    /// Buffer limits (default 1 MiB, 7 days).
    pub limits: StoreLimits,
    /// Delivery tuning (default: see [`DeliveryConfig`]).
    pub delivery: DeliveryConfig,
    /// Timeout of one upload, connect to response (default 30 s).
    pub request_timeout: Duration,
    /// Failures the queue between `record()` and the background task holds; a failure
    /// recorded when it is full is dropped and counted `queue_full` (default 65 536; success
    /// counts take no room in it).
    pub queue_capacity: usize,
    /// Minimum time between scope checks; `None` turns them off (default 30 s).
    pub scope_check_interval: Option<Duration>,
    /// The service that the HTTP client integrations record requests under when their host
    /// is in no service's `hosts`; must be a configured service. Default `None`: such
    /// requests are not recorded (TOML `[capture] unmapped_service`).
    pub unmapped_service: Option<ServiceId>,
}

impl AgentConfig {
    /// A configuration with the required values and every tuning at its default.
    pub fn new(app: AppInfo, collector_key: CollectorPublicKey, data_dir: PathBuf) -> AgentConfig {
        AgentConfig {
            app,
            collector_key,
            data_dir,
            services: Vec::new(),
            collectors: Vec::new(),
            extra_roots: Vec::new(),
            dns_servers: Vec::new(),
            sampling: Sampling::default(),
            report_interval: Some(Duration::from_millis(DEFAULT_REPORT_INTERVAL_MS)),
            seal_delay: Duration::from_millis(DEFAULT_SEAL_DELAY_MS),
            limits: StoreLimits::default(),
            delivery: DeliveryConfig::default(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            scope_check_interval: Some(Duration::from_millis(DEFAULT_SCOPE_CHECK_INTERVAL_MS)),
            unmapped_service: None,
        }
    }

    /// The service a request to `host` belongs to: the service that lists `host` exactly
    /// (the first one, in configured order), else the one with the longest matching
    /// `*.suffix` pattern (the first on a tie), else [`unmapped_service`](Self::unmapped_service).
    /// `host` is a bare host (no port); case, IPv6 brackets and a trailing dot do not matter.
    pub fn service_for_host(&self, host: &str) -> Option<&ServiceId> {
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let host = host.strip_suffix('.').unwrap_or(host);
        let mut best: Option<(usize, &ServiceId)> = None;
        for s in &self.services {
            if let Some(len) = s.match_len(host) {
                if len == usize::MAX {
                    return Some(&s.id);
                }
                if best.is_none_or(|(b, _)| len > b) {
                    best = Some((len, &s.id));
                }
            }
        }
        best.map(|(_, id)| id).or(self.unmapped_service.as_ref())
    }

    /// Parses a TOML config (see the [module docs](self)). Relative `extra_ca_files` are read
    /// relative to the current directory. Does not run [`validate`](super::validate::validate).
    pub fn from_toml_str(text: &str) -> Result<AgentConfig, ConfigError> {
        Self::from_toml_in(text, None)
    }

    /// Reads and parses a TOML config file; relative paths in it are relative to its folder.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<AgentConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::from_toml_in(&text, path.parent())
    }

    /// Parses a config given as JSON: the same schema as the TOML, the tables as objects
    /// (`{"app": {"id": ...}, "collectors": [{"url": ...}]}`). `data_dir`, when given, replaces
    /// the document's own (which may then be left out); the C library passes its argument here.
    pub fn from_json_str(
        text: &str,
        data_dir: Option<PathBuf>,
    ) -> Result<AgentConfig, ConfigError> {
        RawConfig::read(Doc::json(text)?, data_dir)?.into_config(None)
    }

    /// [`from_toml_str`](Self::from_toml_str) with `data_dir`, when given, replacing the
    /// document's own (which may then be left out).
    pub fn from_toml_str_with_data_dir(
        text: &str,
        data_dir: Option<PathBuf>,
    ) -> Result<AgentConfig, ConfigError> {
        RawConfig::read(Doc::toml(text)?, data_dir)?.into_config(None)
    }

    fn from_toml_in(text: &str, base: Option<&Path>) -> Result<AgentConfig, ConfigError> {
        RawConfig::read(Doc::toml(text)?, None)?.into_config(base)
    }
}

/// Builds an [`AgentConfig`] (and an agent): the required values in
/// [`Agent::builder`](super::Agent::builder), at least one [`service`](Self::service) and one
/// [`collector`](Self::collector), and setters for tuning that document their defaults.
#[derive(Clone, Debug)]
#[must_use]
pub struct AgentBuilder {
    pub(crate) config: AgentConfig,
}

impl AgentBuilder {
    pub(crate) fn new(app: AppInfo, key: CollectorPublicKey, data_dir: PathBuf) -> AgentBuilder {
        AgentBuilder { config: AgentConfig::new(app, key, data_dir) }
    }

    /// A monitored service and its hosts (hosts or URLs; only the host is kept), and
    /// `*.example.com` patterns for every name under a domain (see [`ServiceConfig::new`]).
    pub fn service(mut self, id: &str, hosts: &[&str]) -> Result<Self, ConfigError> {
        let i = self.config.services.len();
        let service = ServiceConfig::parse(i, id, hosts.iter().copied())?;
        self.config.services.push(service);
        Ok(self)
    }

    /// The service the HTTP client integrations record requests under when their host is
    /// in no service's hosts (must be a configured service, checked at build). Default: none,
    /// such requests are not recorded.
    pub fn unmapped_service(mut self, id: Option<&str>) -> Result<Self, ConfigError> {
        self.config.unmapped_service = id
            .map(|id| id.parse().map_err(|e| ConfigError::invalid("capture.unmapped_service", e)))
            .transpose()?;
        Ok(self)
    }

    /// A collector; collectors are tried in the order they are added.
    pub fn collector(mut self, collector: CollectorConfig) -> Self {
        self.config.collectors.push(collector);
        self
    }

    /// Trust this CA (DER) besides the webpki roots. Default: none.
    pub fn extra_root(mut self, der: CertificateDer<'static>) -> Self {
        self.config.extra_roots.push(der);
        self
    }

    /// Resolve collector names with these DNS servers instead of the system resolver.
    /// Default: the system resolver. Needs the `hickory-dns` feature: without it
    /// [`build`](Self::build) refuses a non-empty list.
    pub fn dns_servers(mut self, servers: Vec<SocketAddr>) -> Self {
        self.config.dns_servers = servers;
        self
    }

    /// Sampling. Default: every failure, no successes.
    pub fn sampling(mut self, sampling: Sampling) -> Self {
        self.config.sampling = sampling;
        self
    }

    /// Time a failure waits in memory before it is sealed to disk. Default: 500 ms.
    pub fn seal_delay(mut self, d: Duration) -> Self {
        self.config.seal_delay = d;
        self
    }

    /// Buffer byte budget (envelope bytes in `envelopes.log`; the oldest are dropped first,
    /// counted `queue_full`). Default: 1 MiB.
    pub fn max_buffer_bytes(mut self, bytes: u64) -> Self {
        self.config.limits.max_bytes = bytes;
        self
    }

    /// Oldest a buffered envelope may get. Default: 7 days.
    pub fn max_buffer_age(mut self, age: Duration) -> Self {
        self.config.limits.max_age_ms = age.as_millis().try_into().unwrap_or(u64::MAX);
        self
    }

    /// Delivery tuning (backoff, pacing). Default: [`DeliveryConfig::default`].
    pub fn delivery(mut self, delivery: DeliveryConfig) -> Self {
        self.config.delivery = delivery;
        self
    }

    /// Timeout of one upload. Default: 30 s.
    pub fn request_timeout(mut self, d: Duration) -> Self {
        self.config.request_timeout = d;
        self
    }

    /// Failures the queue between `record()` and the background task holds (a failure
    /// recorded when it is full is dropped, counted `queue_full`). Default: 65 536.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.config.queue_capacity = n;
        self
    }

    /// How often sampled success counts are sealed without failures (the heartbeat), `None`
    /// for only with failures. Default: 60 s.
    pub fn report_interval(mut self, d: Option<Duration>) -> Self {
        self.config.report_interval = d;
        self
    }

    /// Minimum time between scope checks, `None` for none. Default: 30 s.
    pub fn scope_check_interval(mut self, d: Option<Duration>) -> Self {
        self.config.scope_check_interval = d;
        self
    }

    /// The configuration built so far.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// The configuration, without building an agent.
    pub fn into_config(self) -> AgentConfig {
        self.config
    }
}

// ---- TOML and JSON ----

// The documents' tables, read by hand from `doc::Fields` (no serde: see `doc`). The field
// lists here are what docs/agent-config.md is checked against (`fields_in_source`).

struct RawConfig {
    data_dir: PathBuf,
    collector_key: String,
    extra_ca_files: Vec<PathBuf>,
    dns_servers: Vec<String>,
    app: RawApp,
    services: Vec<RawService>,
    collectors: Vec<RawCollector>,
    buffer: RawBuffer,
    delivery: RawDelivery,
    sampling: RawSampling,
    scope: RawScope,
    capture: RawCapture,
}

#[derive(Default)]
struct RawCapture {
    unmapped_service: Option<String>,
}

struct RawApp {
    id: String,
    version: String,
    platform: String,
    sdk: Option<String>,
}

struct RawService {
    id: String,
    hosts: Vec<String>,
}

struct RawCollector {
    url: String,
    fixed_addrs: Vec<String>,
    asn: Option<u32>,
}

#[derive(Default)]
struct RawBuffer {
    max_bytes: Option<u64>,
    max_age_secs: Option<u64>,
}

#[derive(Default)]
struct RawDelivery {
    base_backoff_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    max_in_flight: Option<usize>,
    max_per_second: Option<u32>,
    request_timeout_ms: Option<u64>,
    seal_delay_ms: Option<u64>,
    queue_capacity: Option<usize>,
}

#[derive(Default)]
struct RawSampling {
    failure_fraction: Option<f64>,
    success_fraction: Option<f64>,
    report_interval_secs: Option<u64>,
}

#[derive(Default)]
struct RawScope {
    enabled: Option<bool>,
    interval_secs: Option<u64>,
}

/// Reads an optional sub-table with `read`, refusing its unknown keys.
fn sub<T: Default>(
    f: &mut Fields<'_>,
    key: &'static str,
    read: impl FnOnce(&mut Fields<'_>) -> Result<T, ConfigError>,
) -> Result<T, ConfigError> {
    match f.table(key)? {
        None => Ok(T::default()),
        Some(mut t) => {
            let v = read(&mut t)?;
            t.finish()?;
            Ok(v)
        }
    }
}

impl RawConfig {
    /// Reads a document; `data_dir`, when given, replaces the document's own.
    fn read(doc: Doc<'_>, data_dir: Option<PathBuf>) -> Result<RawConfig, ConfigError> {
        let mut f = Fields::root(doc)?;
        let own_dir = f.str("data_dir")?;
        let data_dir = match data_dir {
            Some(d) => d,
            None => PathBuf::from(f.required("data_dir", own_dir)?),
        };
        let key = f.str("collector_key")?;
        let collector_key = f.required("collector_key", key)?;
        let extra_ca_files = f.strs("extra_ca_files")?.into_iter().map(PathBuf::from).collect();
        let dns_servers = f.strs("dns_servers")?;
        let app = f.table("app")?;
        let mut t = f.required("app", app)?;
        let (id, version, platform) = (t.str("id")?, t.str("version")?, t.str("platform")?);
        let app = RawApp {
            id: t.required("id", id)?,
            version: t.required("version", version)?,
            platform: t.required("platform", platform)?,
            sdk: t.str("sdk")?,
        };
        t.finish()?;
        let mut services = Vec::new();
        for mut t in f.tables("services")? {
            let id = t.str("id")?;
            services.push(RawService { id: t.required("id", id)?, hosts: t.strs("hosts")? });
            t.finish()?;
        }
        let mut collectors = Vec::new();
        for mut t in f.tables("collectors")? {
            let url = t.str("url")?;
            collectors.push(RawCollector {
                url: t.required("url", url)?,
                fixed_addrs: t.strs("fixed_addrs")?,
                asn: t.uint("asn")?,
            });
            t.finish()?;
        }
        let buffer = sub(&mut f, "buffer", |t| {
            Ok(RawBuffer { max_bytes: t.uint("max_bytes")?, max_age_secs: t.uint("max_age_secs")? })
        })?;
        let delivery = sub(&mut f, "delivery", |t| {
            Ok(RawDelivery {
                base_backoff_ms: t.uint("base_backoff_ms")?,
                max_backoff_ms: t.uint("max_backoff_ms")?,
                max_in_flight: t.uint("max_in_flight")?,
                max_per_second: t.uint("max_per_second")?,
                request_timeout_ms: t.uint("request_timeout_ms")?,
                seal_delay_ms: t.uint("seal_delay_ms")?,
                queue_capacity: t.uint("queue_capacity")?,
            })
        })?;
        let sampling = sub(&mut f, "sampling", |t| {
            Ok(RawSampling {
                failure_fraction: t.float("failure_fraction")?,
                success_fraction: t.float("success_fraction")?,
                report_interval_secs: t.uint("report_interval_secs")?,
            })
        })?;
        let scope = sub(&mut f, "scope", |t| {
            Ok(RawScope { enabled: t.bool("enabled")?, interval_secs: t.uint("interval_secs")? })
        })?;
        let capture = sub(&mut f, "capture", |t| {
            Ok(RawCapture { unmapped_service: t.str("unmapped_service")? })
        })?;
        f.finish()?;
        Ok(RawConfig {
            data_dir,
            collector_key,
            extra_ca_files,
            dns_servers,
            app,
            services,
            collectors,
            buffer,
            delivery,
            sampling,
            scope,
            capture,
        })
    }
}

fn socket_addr(field: String, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| ConfigError::invalid(field, format!("{s:?} is not an ip:port address")))
}

fn positive<T: PartialOrd + Default + Copy>(field: &str, v: T) -> Result<T, ConfigError> {
    if v > T::default() { Ok(v) } else { Err(ConfigError::invalid(field, "must be at least 1")) }
}

impl RawConfig {
    fn into_config(self, base: Option<&Path>) -> Result<AgentConfig, ConfigError> {
        let sdk = self.app.sdk.as_deref().unwrap_or(DEFAULT_SDK);
        // AppInfo::new names the field in its error; check each on its own to say which.
        for (field, value) in [
            ("id", self.app.id.as_str()),
            ("version", &self.app.version),
            ("platform", &self.app.platform),
            ("sdk", sdk),
        ] {
            crate::report::app_field(field, value)
                .map_err(|e| ConfigError::invalid(format!("app.{field}"), e))?;
        }
        let app = AppInfo::new(&self.app.id, &self.app.version, &self.app.platform, sdk)
            .map_err(|e| ConfigError::invalid("app", e))?;
        let key =
            self.collector_key.parse().map_err(|e| ConfigError::invalid("collector_key", e))?;
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::invalid("data_dir", "must not be empty"));
        }
        let data_dir = match base {
            Some(b) if self.data_dir.is_relative() => b.join(&self.data_dir),
            _ => self.data_dir,
        };
        let mut c = AgentConfig::new(app, key, data_dir);
        for (i, s) in self.services.into_iter().enumerate() {
            c.services.push(ServiceConfig::parse(i, &s.id, s.hosts.iter().map(String::as_str))?);
        }
        if let Some(id) = &self.capture.unmapped_service {
            c.unmapped_service =
                Some(id.parse().map_err(|e| ConfigError::invalid("capture.unmapped_service", e))?);
        }
        for (i, raw) in self.collectors.into_iter().enumerate() {
            let mut col = CollectorConfig::parse(&format!("collectors[{i}].url"), &raw.url)?;
            for (j, a) in raw.fixed_addrs.iter().enumerate() {
                col.fixed_addrs.push(socket_addr(format!("collectors[{i}].fixed_addrs[{j}]"), a)?);
            }
            col.asn = raw.asn;
            c.collectors.push(col);
        }
        for (i, path) in self.extra_ca_files.iter().enumerate() {
            let field = format!("extra_ca_files[{i}]");
            let path = match base {
                Some(b) if path.is_relative() => b.join(path),
                _ => path.clone(),
            };
            let bytes = std::fs::read(&path)
                .map_err(|e| ConfigError::invalid(&field, format!("{}: {e}", path.display())))?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
                .collect::<Result<_, _>>()
                .map_err(|e| ConfigError::invalid(&field, format!("not PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(ConfigError::invalid(field, "no PEM certificate in the file"));
            }
            c.extra_roots.extend(certs);
        }
        for (i, s) in self.dns_servers.iter().enumerate() {
            c.dns_servers.push(socket_addr(format!("dns_servers[{i}]"), s)?);
        }
        if let Some(v) = self.buffer.max_bytes {
            c.limits.max_bytes = positive("buffer.max_bytes", v)?;
        }
        if let Some(v) = self.buffer.max_age_secs {
            c.limits.max_age_ms = positive("buffer.max_age_secs", v)?.saturating_mul(1000);
        }
        let d = self.delivery;
        if let Some(v) = d.base_backoff_ms {
            c.delivery.base_backoff_ms = positive("delivery.base_backoff_ms", v)?;
        }
        if let Some(v) = d.max_backoff_ms {
            c.delivery.max_backoff_ms = positive("delivery.max_backoff_ms", v)?;
        }
        if c.delivery.max_backoff_ms < c.delivery.base_backoff_ms {
            return Err(ConfigError::invalid(
                "delivery.max_backoff_ms",
                "must not be below delivery.base_backoff_ms",
            ));
        }
        if let Some(v) = d.max_in_flight {
            c.delivery.max_in_flight = positive("delivery.max_in_flight", v)?;
        }
        if let Some(v) = d.max_per_second {
            c.delivery.max_per_second = positive("delivery.max_per_second", v)?;
        }
        if let Some(v) = d.request_timeout_ms {
            c.request_timeout = Duration::from_millis(positive("delivery.request_timeout_ms", v)?);
        }
        if let Some(v) = d.seal_delay_ms {
            c.seal_delay = Duration::from_millis(v);
        }
        if let Some(v) = d.queue_capacity {
            c.queue_capacity = positive("delivery.queue_capacity", v)?;
        }
        let failure = self.sampling.failure_fraction.unwrap_or(c.sampling.failure_fraction());
        let success = self.sampling.success_fraction.unwrap_or(c.sampling.success_fraction());
        c.sampling = Sampling::new(failure, success).map_err(|e| match e {
            crate::sampling::SamplingError::FractionOutOfRange { field, value } => {
                ConfigError::invalid(
                    format!("sampling.{field}"),
                    format!("{value} is outside 0.0..=1.0"),
                )
            }
        })?;
        if let Some(secs) = self.sampling.report_interval_secs {
            c.report_interval =
                Some(Duration::from_secs(positive("sampling.report_interval_secs", secs)?));
        }
        if self.scope.enabled == Some(false) {
            c.scope_check_interval = None;
        } else if let Some(secs) = self.scope.interval_secs {
            c.scope_check_interval =
                Some(Duration::from_secs(positive("scope.interval_secs", secs)?));
        }
        if c.collectors.len() > MAX_COLLECTORS {
            return Err(ConfigError::invalid("collectors", format!("at most {MAX_COLLECTORS}")));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config(services: &[(&str, &[&str])]) -> AgentConfig {
        let app = AppInfo::new("com.example.app", "1.0", "linux", "test").unwrap();
        let key: CollectorPublicKey =
            "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a".parse().unwrap();
        let mut b = AgentBuilder::new(app, key, PathBuf::from("/tmp/x"));
        for (id, hosts) in services {
            b = b.service(id, hosts).unwrap();
        }
        b.into_config()
    }

    #[test]
    fn hosts_map_to_services_exact_first_then_longest_pattern() {
        let c = config(&[
            ("wide", &["*.example.com"]),
            ("pay", &["*.pay.example.com", "checkout.example.com"]),
            ("api", &["https://API.example.com:8443/x", "[::1]", "10.0.0.1"]),
        ]);
        let of = |h: &str| c.service_for_host(h).map(|s| s.as_str().to_owned());
        assert_eq!(of("api.example.com").as_deref(), Some("api"));
        assert_eq!(of("Api.Example.COM.").as_deref(), Some("api"));
        assert_eq!(of("checkout.example.com").as_deref(), Some("pay"));
        assert_eq!(of("eu.pay.example.com").as_deref(), Some("pay"));
        assert_eq!(of("a.b.example.com").as_deref(), Some("wide"));
        assert_eq!(of("pay.example.com").as_deref(), Some("wide"));
        assert_eq!(of("[::1]").as_deref(), Some("api"));
        assert_eq!(of("10.0.0.1").as_deref(), Some("api"));
        // The pattern's suffix itself, and names that only end in the same letters, do not.
        assert_eq!(of("example.com"), None);
        assert_eq!(of("badexample.com"), None);
        assert_eq!(of("other.test"), None);
    }

    #[test]
    fn unmapped_hosts_go_to_the_configured_service() {
        let mut c = config(&[("api", &["api.example.com"])]);
        c.unmapped_service = Some("api".parse().unwrap());
        assert_eq!(c.service_for_host("other.test").unwrap().as_str(), "api");
    }

    #[test]
    fn bad_patterns_name_the_field() {
        for bad in ["*", "*example.com", "a.*.example.com", "*.*.example.com", "*.", "x*.com"] {
            let e = ServiceConfig::new("api", &["ok.example", bad]).unwrap_err();
            assert_eq!(e.field(), Some("services[0].hosts[1]"), "{bad}: {e}");
        }
        let text = |extra: &str| {
            format!(
                "data_dir = \"/tmp/x\"\ncollector_key = \"{}\"\n[app]\nid = \"a.b\"\n\
                 version = \"1\"\nplatform = \"linux\"\n[[services]]\nid = \"api\"\n\
                 hosts = [\"*.example.com\"]\n{extra}",
                "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a"
            )
        };
        let c =
            AgentConfig::from_toml_str(&text("[capture]\nunmapped_service = \"api\"\n")).unwrap();
        assert_eq!(c.services[0].host_suffixes[0].as_str(), "example.com");
        assert_eq!(c.unmapped_service.unwrap().as_str(), "api");
        let e = AgentConfig::from_toml_str(&text("[capture]\nunmapped_service = \"no way\"\n"))
            .unwrap_err();
        assert_eq!(e.field(), Some("capture.unmapped_service"), "{e}");
    }

    /// The TOML tables: each `Raw*` struct of this file and the key prefix of its fields.
    const TABLES: &[(&str, &str)] = &[
        ("RawConfig", ""),
        ("RawCapture", "capture."),
        ("RawApp", "app."),
        ("RawService", "services[]."),
        ("RawCollector", "collectors[]."),
        ("RawBuffer", "buffer."),
        ("RawDelivery", "delivery."),
        ("RawSampling", "sampling."),
        ("RawScope", "scope."),
    ];

    /// The fields of every `Raw*` struct in this file's source, as documented keys
    /// (`delivery.base_backoff_ms`); a `Raw*` struct missing from [`TABLES`] fails.
    fn fields_in_source() -> Vec<String> {
        let source = include_str!("config.rs");
        let mut keys = Vec::new();
        let mut prefix: Option<&str> = None;
        for line in source.lines() {
            if let Some(rest) = line.strip_prefix("struct Raw") {
                let name = format!("Raw{}", rest.trim_end_matches(" {"));
                let table = TABLES.iter().find(|(n, _)| *n == name);
                prefix = Some(table.unwrap_or_else(|| panic!("{name} is not in TABLES")).1);
                continue;
            }
            if line == "}" {
                prefix = None;
            }
            let Some(prefix) = prefix else { continue };
            let Some((name, ty)) = line.trim().split_once(": ") else { continue };
            if line.starts_with("    ") && !name.starts_with('#') && !name.starts_with("//") {
                // Sub-tables (`app: RawApp`) are documented through their own fields.
                if !ty.contains("Raw") {
                    keys.push(format!("{prefix}{name}"));
                }
            }
        }
        keys
    }

    /// `| `key` | default | meaning |` rows of docs/agent-config.md.
    fn documented() -> std::collections::BTreeMap<String, String> {
        include_str!("../../../docs/agent-config.md")
            .lines()
            .filter_map(|l| {
                let mut cells = l.split('|').map(str::trim).skip(1);
                let key = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
                Some((key.to_owned(), cells.next()?.to_owned()))
            })
            .collect()
    }

    #[test]
    fn the_reference_lists_every_field_with_its_default() {
        let doc = documented();
        let fields = fields_in_source();
        assert!(fields.len() >= 25, "parsed only {fields:?}");
        for key in &fields {
            assert!(doc.contains_key(key), "docs/agent-config.md does not list `{key}`");
        }
        for key in doc.keys() {
            assert!(fields.contains(key), "docs/agent-config.md lists `{key}`, not in the code");
        }
        let d = config(&[]);
        let secs = |x: Option<Duration>| x.map_or(0, |x| x.as_secs()).to_string();
        let defaults = [
            ("buffer.max_bytes", d.limits.max_bytes.to_string()),
            ("buffer.max_age_secs", (d.limits.max_age_ms / 1000).to_string()),
            ("delivery.base_backoff_ms", d.delivery.base_backoff_ms.to_string()),
            ("delivery.max_backoff_ms", d.delivery.max_backoff_ms.to_string()),
            ("delivery.max_in_flight", d.delivery.max_in_flight.to_string()),
            ("delivery.max_per_second", d.delivery.max_per_second.to_string()),
            ("delivery.request_timeout_ms", d.request_timeout.as_millis().to_string()),
            ("delivery.seal_delay_ms", d.seal_delay.as_millis().to_string()),
            ("delivery.queue_capacity", d.queue_capacity.to_string()),
            ("sampling.failure_fraction", format!("{:?}", d.sampling.failure_fraction())),
            ("sampling.success_fraction", format!("{:?}", d.sampling.success_fraction())),
            ("sampling.report_interval_secs", secs(d.report_interval)),
            ("scope.enabled", d.scope_check_interval.is_some().to_string()),
            ("scope.interval_secs", secs(d.scope_check_interval)),
            ("extra_ca_files", "`[]`".into()),
            ("dns_servers", "`[]`".into()),
            ("capture.unmapped_service", "(none)".into()),
        ];
        for (key, value) in defaults {
            assert_eq!(doc[key], value, "docs/agent-config.md: default of `{key}`");
        }
        // And the defaults are what a file without the field gives.
        let text = format!(
            "data_dir = \"/tmp/x\"\ncollector_key = \"{}\"\n[app]\nid = \"a.b\"\n\
             version = \"1\"\nplatform = \"linux\"\n",
            "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a"
        );
        let parsed = AgentConfig::from_toml_str(&text).unwrap();
        assert_eq!(parsed.delivery, d.delivery);
        assert_eq!(parsed.limits, d.limits);
        assert_eq!(parsed.request_timeout, d.request_timeout);
        assert_eq!(parsed.queue_capacity, d.queue_capacity);
        assert_eq!(parsed.report_interval, d.report_interval);
        assert_eq!(parsed.scope_check_interval, d.scope_check_interval);
    }
}
