//! The failure-domain checker behind `vantage-collector check-domains`: do the collectors live
//! in other failure domains than the services they watch, and than each other?
//!
//! ```text
//!  domains.toml ──Spec::from_file──▶ Spec (services, collectors, dns, [enrich])
//!      │ gather (hickory-resolver: A/AAAA of every host, NS of every registrable domain)
//!      ▼
//!  Facts ──evaluate (pure; ASN from Enricher::lookup)──▶ Report: rows of
//!      check · subject · verdict (pass | warn | fail) · detail ──▶ table or JSON, exit 0/1
//! ```
//!
//! The checks, each printed as one row per subject or pair:
//!
//! | check | compares | fail | warn |
//! |---|---|---|---|
//! | `resolve` | each host name's A/AAAA answer | the name does not resolve (NXDOMAIN, SERVFAIL, timeout, no address) | |
//! | `domain` | registrable domains (public suffix list) | a collector's is a service's | two collectors share one |
//! | `prefix` | resolved and fixed addresses by /24 (IPv4) or /48 (IPv6) | a collector shares one with a service | two collectors share one |
//! | `asn` | the same addresses by ASN (the collector's enrichment databases) | a collector shares an ASN with a service | two collectors share one; an address has no ASN |
//! | `ns` | name-server operators: the registrable domains of the NS hosts of each registrable domain | every operator of a collector's domain also serves a service; the NS lookup fails | some are shared with a service; two collectors share one |
//! | `enrich` | the enrichment sources | | a file is missing; no ASN source at all |
//!
//! A collector's addresses are what its URL's host resolves to plus its fixed `addresses` (the
//! ones the agent falls back to when DNS fails). IP-literal hosts have no registrable domain
//! and no name servers; they are compared by address only. Pairs where one side has no address
//! (because resolution failed, which is its own `fail` row) get no `prefix` or `asn` row.
//!
//! # The spec file
//!
//! A TOML file of its own (the agent config has no enrichment and the collector config has no
//! services, so neither fits):
//!
//! ```toml
//! dns = ["127.0.0.1:5353"]   # optional: DNS servers (IP or IP:PORT); default: /etc/resolv.conf
//! timeout_ms = 3000          # optional: per DNS query (default 3000)
//!
//! [[services]]
//! name = "shop"
//! hosts = ["api.shop.example", "www.shop.example"]
//!
//! [[collectors]]
//! url = "https://c1.vantage-a.example"
//! addresses = ["192.0.2.10"]  # optional fixed addresses (IP or IP:PORT), as in the agent config
//!
//! [enrich]                    # the collector config's section: same keys, same files
//! asn_csv = ["asn-ipv4.csv", "asn-ipv6.csv"]
//! ```
//!
//! Relative paths are taken from the spec file's directory. `country_mmdb` and `country_csv`
//! are accepted (so a collector's `[enrich]` section can be pasted) and not loaded. Every
//! error names its field (`collectors[1].url: ...`).
//!
//! # Example
//!
//! ```
//! use std::collections::BTreeMap;
//! use vantage_collector::domains::{Facts, Spec, Verdict, evaluate};
//!
//! let spec = Spec::from_toml_str(
//!     r#"
//!     [[services]]
//!     name = "shop"
//!     hosts = ["api.shop.example"]
//!     [[collectors]]
//!     url = "https://c1.shop.example"
//!     "#,
//!     std::path::Path::new("."),
//! )?;
//! let facts = Facts {
//!     addresses: BTreeMap::from([
//!         ("api.shop.example".into(), Ok(vec!["198.51.100.7".parse()?])),
//!         ("c1.shop.example".into(), Ok(vec!["203.0.113.9".parse()?])),
//!     ]),
//!     name_servers: BTreeMap::from([("shop.example".into(), Ok(vec!["ns1.dns.example".into()]))]),
//! };
//! let report = evaluate(&spec, &facts, &|_| None);
//! assert!(report.has_fail()); // the collector lives under the service's own domain
//! assert!(report.rows.iter().any(|r| r.check.as_str() == "domain" && r.verdict == Verdict::Fail));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vantage_agent::report::Host;

use crate::enrich::{EnrichConfig, EnrichError, Enricher};

/// The default per-query DNS timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// What to check: the monitored services, the collectors, where to resolve, and the ASN data.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The monitored services (at least one).
    pub services: Vec<ServiceSpec>,
    /// The collectors (at least one).
    pub collectors: Vec<CollectorSpec>,
    /// DNS servers to ask; empty: the system configuration (`/etc/resolv.conf`).
    pub dns: Vec<SocketAddr>,
    /// Timeout of one DNS query.
    pub timeout: Duration,
    /// Where ASNs come from (only the ASN sources are loaded).
    pub enrich: EnrichConfig,
}

/// One monitored service.
#[derive(Clone, Debug)]
pub struct ServiceSpec {
    /// Its name, as in the agent config.
    pub name: String,
    /// The hosts it is reached at (DNS names or IP addresses; at least one).
    pub hosts: Vec<Host>,
}

/// One collector.
#[derive(Clone, Debug)]
pub struct CollectorSpec {
    /// Its URL, as the agent config has it.
    pub url: String,
    /// The URL's host.
    pub host: Host,
    /// Fixed addresses the agent uses when DNS fails.
    pub addresses: Vec<IpAddr>,
}

/// One invalid field of a spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field (`collectors[1].url`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Why a spec could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpecError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The spec file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The text is not TOML of the expected shape (the message has the line and key).
    #[error("{0}")]
    Toml(String),
    /// Fields with invalid values, one per line.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<FieldError>),
    /// An enrichment file exists but cannot be used.
    #[error("enrich: {0}")]
    Enrich(#[from] EnrichError),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    dns: Vec<String>,
    timeout_ms: Option<u64>,
    #[serde(default)]
    services: Vec<RawService>,
    #[serde(default)]
    collectors: Vec<RawCollector>,
    #[serde(default)]
    enrich: RawEnrich,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: Option<String>,
    #[serde(default)]
    hosts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCollector {
    url: Option<String>,
    #[serde(default)]
    addresses: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEnrich {
    asn_mmdb: Option<PathBuf>,
    // Accepted so that a collector's `[enrich]` section can be pasted; never loaded.
    #[allow(dead_code, reason = "accepted for compatibility, not used")]
    country_mmdb: Option<PathBuf>,
    asn_csv: Vec<PathBuf>,
    #[allow(dead_code, reason = "accepted for compatibility, not used")]
    country_csv: Vec<PathBuf>,
}

/// Parses a DNS server: `IP` (port 53) or `IP:PORT` (`[IPv6]:PORT`).
pub fn parse_dns_server(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

impl Spec {
    /// Reads and validates a spec file; relative paths are taken from its directory.
    pub fn from_file(path: &Path) -> Result<Spec, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SpecError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Spec::from_toml_str(&text, base)
    }

    /// Parses and validates spec text; relative paths are taken from `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Spec, SpecError> {
        let raw: RawSpec = toml::from_str(text).map_err(|e| SpecError::Toml(e.to_string()))?;
        let mut errors = Vec::new();
        let mut fail = |field: String, reason: String| errors.push(FieldError { field, reason });

        let mut dns = Vec::new();
        for (i, d) in raw.dns.iter().enumerate() {
            match parse_dns_server(d) {
                Ok(addr) => dns.push(addr),
                Err(reason) => fail(format!("dns[{i}]"), reason),
            }
        }
        let timeout = match raw.timeout_ms {
            None => DEFAULT_TIMEOUT,
            Some(0) => {
                fail("timeout_ms".into(), "must be greater than 0".into());
                DEFAULT_TIMEOUT
            }
            Some(ms) => Duration::from_millis(ms),
        };

        if raw.services.is_empty() {
            fail("services".into(), "at least one service is required".into());
        }
        let mut services = Vec::new();
        for (i, s) in raw.services.iter().enumerate() {
            let name = match s.name.as_deref().map(str::trim) {
                None => {
                    fail(format!("services[{i}].name"), "required".into());
                    String::new()
                }
                Some("") => {
                    fail(format!("services[{i}].name"), "must not be empty".into());
                    String::new()
                }
                Some(n) => n.to_owned(),
            };
            if s.hosts.is_empty() {
                fail(format!("services[{i}].hosts"), "at least one host is required".into());
            }
            let mut hosts = Vec::new();
            for (j, h) in s.hosts.iter().enumerate() {
                match Host::parse(h) {
                    Ok(host) => hosts.push(host),
                    Err(e) => fail(format!("services[{i}].hosts[{j}]"), e.to_string()),
                }
            }
            services.push(ServiceSpec { name, hosts });
        }

        if raw.collectors.is_empty() {
            fail("collectors".into(), "at least one collector is required".into());
        }
        let mut collectors: Vec<CollectorSpec> = Vec::new();
        for (i, c) in raw.collectors.iter().enumerate() {
            let field = format!("collectors[{i}].url");
            let host = match c.url.as_deref() {
                None => {
                    fail(field, "required".into());
                    None
                }
                Some(url) => match collector_host(url) {
                    Err(reason) => {
                        fail(field, reason);
                        None
                    }
                    Ok(host) => match collectors.iter().position(|o| o.url == url) {
                        Some(first) => {
                            fail(field, format!("the same URL as collectors[{first}]"));
                            None
                        }
                        None => Some(host),
                    },
                },
            };
            let mut addresses = Vec::new();
            for (j, a) in c.addresses.iter().enumerate() {
                match parse_dns_server(a) {
                    Ok(addr) => addresses.push(addr.ip()),
                    Err(reason) => fail(format!("collectors[{i}].addresses[{j}]"), reason),
                }
            }
            if let (Some(host), Some(url)) = (host, c.url.as_deref()) {
                collectors.push(CollectorSpec { url: url.to_owned(), host, addresses });
            }
        }

        if !errors.is_empty() {
            return Err(SpecError::Invalid(errors));
        }
        let resolve = |p: &Path| if p.is_absolute() { p.to_path_buf() } else { base_dir.join(p) };
        let enrich = EnrichConfig {
            asn_mmdb: raw.enrich.asn_mmdb.as_deref().map(resolve),
            country_mmdb: None,
            asn_csv: raw.enrich.asn_csv.iter().map(|p| resolve(p)).collect(),
            country_csv: Vec::new(),
        };
        Ok(Spec { services, collectors, dns, timeout, enrich })
    }
}

/// The host of a collector URL: `https://` or `http://`, a host, nothing after the path.
fn collector_host(url: &str) -> Result<Host, String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not a URL (expected https://host[:port][/path])"));
    };
    if !matches!(scheme, "https" | "http") {
        return Err(format!("scheme {scheme:?} is not https or http"));
    }
    if rest.split(['/', '?', '#']).next().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Host::from_url(url).map_err(|e| e.to_string())
}

/// What DNS said: the input of [`evaluate`], gathered by [`gather`] (or written by hand in
/// tests). Keys are lower-case names without the trailing dot.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// The A and AAAA addresses of each host name, or why it did not resolve.
    pub addresses: BTreeMap<String, Result<Vec<IpAddr>, String>>,
    /// The NS host names of each registrable domain, or why there are none.
    pub name_servers: BTreeMap<String, Result<Vec<String>, String>>,
}

/// Which check a row is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Check {
    /// Enrichment sources.
    Enrich,
    /// Resolving a host name.
    Resolve,
    /// Registrable domains.
    Domain,
    /// Address prefixes (/24, /48).
    Prefix,
    /// Autonomous systems.
    Asn,
    /// Name-server operators.
    Ns,
}

impl Check {
    /// The stable label (`domain`, `ns`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Check::Enrich => "enrich",
            Check::Resolve => "resolve",
            Check::Domain => "domain",
            Check::Prefix => "prefix",
            Check::Asn => "asn",
            Check::Ns => "ns",
        }
    }
}

/// The outcome of one row, ordered from good to bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Separated.
    Pass,
    /// Weaker separation than it should be, or not fully checked.
    Warn,
    /// One outage could take out a service and the collector meant to report it, or the
    /// check could not be made.
    Fail,
}

impl Verdict {
    /// `pass`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Row {
    /// Which check.
    pub check: Check,
    /// What was checked: a name, a domain, or a pair (`c1.example vs service shop`).
    pub subject: String,
    /// The outcome.
    pub verdict: Verdict,
    /// Why.
    pub detail: String,
}

/// Counts of rows by verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Rows that passed.
    pub pass: usize,
    /// Rows with a warning.
    pub warn: usize,
    /// Rows that failed.
    pub fail: usize,
}

/// The checker's result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The rows, in check order.
    pub rows: Vec<Row>,
}

impl Report {
    /// True when any row failed (the command then exits 1).
    pub fn has_fail(&self) -> bool {
        self.rows.iter().any(|r| r.verdict == Verdict::Fail)
    }

    /// Counts by verdict.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for r in &self.rows {
            match r.verdict {
                Verdict::Pass => s.pass += 1,
                Verdict::Warn => s.warn += 1,
                Verdict::Fail => s.fail += 1,
            }
        }
        s
    }

    /// An aligned text table (`CHECK SUBJECT VERDICT DETAIL`) and a summary line.
    pub fn to_table(&self) -> String {
        let header = ["CHECK", "SUBJECT", "VERDICT", "DETAIL"];
        let cells: Vec<[&str; 4]> = self
            .rows
            .iter()
            .map(|r| [r.check.as_str(), r.subject.as_str(), r.verdict.as_str(), r.detail.as_str()])
            .collect();
        let mut widths = header.map(str::len);
        for row in &cells {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in std::iter::once(&header).chain(&cells) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    let pad = widths[i] - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let s = self.summary();
        out.push_str(&format!("{} pass, {} warn, {} fail\n", s.pass, s.warn, s.fail));
        out
    }

    /// `{"rows": [{check, subject, verdict, detail}], "summary": {pass, warn, fail}}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({ "rows": self.rows, "summary": self.summary() }).to_string()
    }
}

/// The registrable domain of `host` (public suffix list; `None` for IP addresses).
pub fn registrable_domain(host: &str) -> Option<String> {
    if host.parse::<IpAddr>().is_ok() {
        return None;
    }
    psl::domain_str(host.trim_end_matches('.')).map(str::to_ascii_lowercase)
}

/// The /24 (IPv4) or /48 (IPv6) of `ip`, as text.
fn prefix(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
        }
    }
}

/// The operator of a name server: its registrable domain (the name itself when it has none).
fn operator(ns_host: &str) -> String {
    let host = ns_host.trim_end_matches('.').to_ascii_lowercase();
    registrable_domain(&host).unwrap_or(host)
}

/// The host names and registrable domains `spec` needs DNS answers for.
fn names_of(spec: &Spec) -> (BTreeSet<String>, BTreeSet<String>) {
    let hosts = spec
        .services
        .iter()
        .flat_map(|s| s.hosts.iter())
        .chain(spec.collectors.iter().map(|c| &c.host))
        .map(|h| h.as_str().to_owned())
        .filter(|h| h.parse::<IpAddr>().is_err());
    let hosts: BTreeSet<String> = hosts.collect();
    let domains = hosts.iter().filter_map(|h| registrable_domain(h)).collect();
    (hosts, domains)
}

/// Asks DNS for everything [`evaluate`] needs: A and AAAA of every host name, NS of every
/// registrable domain, all at once. Never fails: a lookup that fails is recorded as its
/// error, and so is a resolver that cannot be set up.
pub async fn gather(spec: &Spec) -> Facts {
    use hickory_resolver::config::{LookupIpStrategy, NameServerConfigGroup, ResolverConfig};
    use hickory_resolver::name_server::TokioConnectionProvider;

    let (hosts, domains) = names_of(spec);
    let mut facts = Facts::default();
    let builder = if spec.dns.is_empty() {
        hickory_resolver::TokioResolver::builder_tokio().map_err(|e| e.to_string())
    } else {
        // hickory takes one port for a group; servers on other ports become groups of one.
        let mut group = NameServerConfigGroup::new();
        for server in &spec.dns {
            group.merge(NameServerConfigGroup::from_ips_clear(&[server.ip()], server.port(), true));
        }
        Ok(hickory_resolver::Resolver::builder_with_config(
            ResolverConfig::from_parts(None, vec![], group),
            TokioConnectionProvider::default(),
        ))
    };
    let mut builder = match builder {
        Ok(b) => b,
        Err(e) => {
            let why = format!("no DNS resolver: {e}");
            for h in hosts {
                facts.addresses.insert(h, Err(why.clone()));
            }
            for d in domains {
                facts.name_servers.insert(d, Err(why.clone()));
            }
            return facts;
        }
    };
    let options = builder.options_mut();
    options.timeout = spec.timeout;
    // One try per server: the checker reports what it saw, it does not insist.
    options.attempts = 0;
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.cache_size = 0;
    let resolver = Arc::new(builder.build());
    // A guard above the resolver's own timeout, so no lookup can hang the command.
    let limit = spec.timeout.saturating_mul(3);

    let mut tasks = tokio::task::JoinSet::new();
    for host in hosts.iter().cloned() {
        let resolver = Arc::clone(&resolver);
        tasks.spawn(async move {
            // The trailing dot: never append the system's search domains.
            let answer = tokio::time::timeout(limit, resolver.lookup_ip(format!("{host}.")))
                .await
                .map_err(|_| format!("no answer within {} ms", limit.as_millis()))
                .and_then(|r| r.map_err(|e| describe(&e)))
                .and_then(|lookup| {
                    let mut ips: Vec<IpAddr> = lookup.iter().collect();
                    ips.sort();
                    ips.dedup();
                    if ips.is_empty() { Err("no A or AAAA records".to_owned()) } else { Ok(ips) }
                });
            Lookup::Host(host, answer)
        });
    }
    for domain in domains.iter().cloned() {
        let resolver = Arc::clone(&resolver);
        tasks.spawn(async move {
            let answer = tokio::time::timeout(limit, resolver.ns_lookup(format!("{domain}.")))
                .await
                .map_err(|_| format!("no answer within {} ms", limit.as_millis()))
                .and_then(|r| r.map_err(|e| describe(&e)))
                .and_then(|lookup| {
                    let mut names: Vec<String> = lookup
                        .iter()
                        .map(|ns| ns.0.to_ascii().trim_end_matches('.').to_ascii_lowercase())
                        .collect();
                    names.sort();
                    names.dedup();
                    if names.is_empty() { Err("no NS records".to_owned()) } else { Ok(names) }
                });
            Lookup::Domain(domain, answer)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Lookup::Host(name, answer)) => {
                facts.addresses.insert(name, answer);
            }
            Ok(Lookup::Domain(name, answer)) => {
                facts.name_servers.insert(name, answer);
            }
            // A lookup task that did not finish (cancelled or panicked) is filled in below.
            Err(_) => {}
        }
    }
    let lost = "the lookup did not finish";
    for host in hosts {
        facts.addresses.entry(host).or_insert_with(|| Err(lost.to_owned()));
    }
    for domain in domains {
        facts.name_servers.entry(domain).or_insert_with(|| Err(lost.to_owned()));
    }
    facts
}

/// What one lookup task found.
enum Lookup {
    /// A host name's addresses.
    Host(String, Result<Vec<IpAddr>, String>),
    /// A registrable domain's name servers.
    Domain(String, Result<Vec<String>, String>),
}

/// A resolver error as an operator reads it: the response code when there was one.
fn describe(e: &hickory_resolver::ResolveError) -> String {
    use hickory_resolver::proto::ProtoErrorKind;
    match e.proto().map(|p| p.kind()) {
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. }) => {
            format!("{response_code} (no records)")
        }
        Some(ProtoErrorKind::Timeout) => "timed out".to_owned(),
        _ => e.to_string(),
    }
}

/// One side of a comparison: what a collector or a service is made of.
struct Side {
    label: String,
    domains: BTreeSet<String>,
    ips: BTreeSet<IpAddr>,
    operators: Option<BTreeSet<String>>,
}

fn side(label: String, hosts: &[&Host], fixed: &[IpAddr], facts: &Facts) -> Side {
    let mut domains = BTreeSet::new();
    let mut ips: BTreeSet<IpAddr> = fixed.iter().map(|ip| ip.to_canonical()).collect();
    for h in hosts {
        match h.as_str().parse::<IpAddr>() {
            Ok(ip) => {
                ips.insert(ip.to_canonical());
            }
            Err(_) => {
                if let Some(d) = registrable_domain(h.as_str()) {
                    domains.insert(d);
                }
                if let Some(Ok(resolved)) = facts.addresses.get(h.as_str()) {
                    ips.extend(resolved.iter().map(|ip| ip.to_canonical()));
                }
            }
        }
    }
    // Operators are known only when every domain's NS lookup succeeded; a failed one is its
    // own `fail` row.
    let mut operators = BTreeSet::new();
    let mut complete = !domains.is_empty();
    for d in &domains {
        match facts.name_servers.get(d) {
            Some(Ok(ns)) => operators.extend(ns.iter().map(|n| operator(n))),
            _ => complete = false,
        }
    }
    Side { label, domains, ips, operators: complete.then_some(operators) }
}

fn join<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    items.into_iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// Runs every check on what DNS said. `asn_of` gives the ASN of an address (`None` when
/// unknown); it is [`Enricher::lookup`] in [`check`]. Pure: same inputs, same rows.
pub fn evaluate(spec: &Spec, facts: &Facts, asn_of: &dyn Fn(IpAddr) -> Option<u32>) -> Report {
    let mut rows = Vec::new();
    let mut row = |check, subject: String, verdict, detail: String| {
        rows.push(Row { check, subject, verdict, detail });
    };

    // Resolution of every name, in name order.
    for (name, answer) in &facts.addresses {
        match answer {
            Ok(ips) => row(Check::Resolve, name.clone(), Verdict::Pass, join(ips)),
            Err(e) => {
                row(Check::Resolve, name.clone(), Verdict::Fail, format!("does not resolve: {e}"))
            }
        }
    }

    let collectors: Vec<Side> = spec
        .collectors
        .iter()
        .map(|c| side(c.host.as_str().to_owned(), &[&c.host], &c.addresses, facts))
        .collect();
    let services: Vec<Side> = spec
        .services
        .iter()
        .map(|s| {
            side(format!("service {}", s.name), &s.hosts.iter().collect::<Vec<_>>(), &[], facts)
        })
        .collect();
    let mut pairs: Vec<(&Side, &Side, bool)> = Vec::new();
    for c in &collectors {
        for s in &services {
            pairs.push((c, s, true));
        }
    }
    for (i, a) in collectors.iter().enumerate() {
        for b in &collectors[i + 1..] {
            pairs.push((a, b, false));
        }
    }
    // Against a service a shared domain is a failure; between collectors a warning.
    let bad = |vs_service: bool| if vs_service { Verdict::Fail } else { Verdict::Warn };
    let subject = |a: &Side, b: &Side| format!("{} vs {}", a.label, b.label);

    for &(a, b, vs_service) in &pairs {
        let (verdict, detail) = if a.domains.is_empty() || b.domains.is_empty() {
            (Verdict::Pass, "an IP-literal host has no registrable domain".to_owned())
        } else {
            let shared: Vec<&String> = a.domains.intersection(&b.domains).collect();
            if shared.is_empty() {
                (Verdict::Pass, format!("{} / {}", join(&a.domains), join(&b.domains)))
            } else {
                (
                    bad(vs_service),
                    format!(
                        "both under {}: one outage of that domain (its DNS, registrar or account) hits both",
                        join(shared)
                    ),
                )
            }
        };
        row(Check::Domain, subject(a, b), verdict, detail);
    }

    for &(a, b, vs_service) in &pairs {
        if a.ips.is_empty() || b.ips.is_empty() {
            continue;
        }
        let pa: BTreeSet<String> = a.ips.iter().map(|ip| prefix(*ip)).collect();
        let pb: BTreeSet<String> = b.ips.iter().map(|ip| prefix(*ip)).collect();
        let shared: Vec<&String> = pa.intersection(&pb).collect();
        let (verdict, detail) = if shared.is_empty() {
            (Verdict::Pass, "no shared /24 or /48".to_owned())
        } else {
            (bad(vs_service), format!("both in {}", join(shared)))
        };
        row(Check::Prefix, subject(a, b), verdict, detail);
    }

    let has_any_asn =
        collectors.iter().chain(&services).flat_map(|s| &s.ips).any(|ip| asn_of(*ip).is_some());
    if has_any_asn {
        let mut unknown_reported = BTreeSet::new();
        for side in collectors.iter().chain(&services) {
            for ip in &side.ips {
                if asn_of(*ip).is_none() && unknown_reported.insert(*ip) {
                    row(
                        Check::Asn,
                        ip.to_string(),
                        Verdict::Warn,
                        format!(
                            "no ASN known for this address of {}: it is compared by prefix only",
                            side.label
                        ),
                    );
                }
            }
        }
        for &(a, b, vs_service) in &pairs {
            let aa: BTreeSet<u32> = a.ips.iter().filter_map(|ip| asn_of(*ip)).collect();
            let ab: BTreeSet<u32> = b.ips.iter().filter_map(|ip| asn_of(*ip)).collect();
            if aa.is_empty() || ab.is_empty() {
                continue;
            }
            let shared: Vec<String> = aa.intersection(&ab).map(|n| format!("AS{n}")).collect();
            let (verdict, detail) = if shared.is_empty() {
                (
                    Verdict::Pass,
                    format!(
                        "{} / {}",
                        join(aa.iter().map(|n| format!("AS{n}"))),
                        join(ab.iter().map(|n| format!("AS{n}")))
                    ),
                )
            } else {
                (
                    bad(vs_service),
                    format!("both in {}: one network's outage hits both", join(shared)),
                )
            };
            row(Check::Asn, subject(a, b), verdict, detail);
        }
    } else if collectors.iter().chain(&services).any(|s| !s.ips.is_empty()) {
        row(
            Check::Asn,
            "enrichment".into(),
            Verdict::Warn,
            "no address has a known ASN (no ASN source in [enrich]?): ASNs are not compared".into(),
        );
    }

    for (domain, answer) in &facts.name_servers {
        match answer {
            Ok(ns) => {
                let ops: BTreeSet<String> = ns.iter().map(|n| operator(n)).collect();
                row(
                    Check::Ns,
                    domain.clone(),
                    Verdict::Pass,
                    format!("operators {} ({})", join(ops), join(ns)),
                );
            }
            Err(e) => {
                row(Check::Ns, domain.clone(), Verdict::Fail, format!("no name servers: {e}"))
            }
        }
    }
    for &(a, b, vs_service) in &pairs {
        let (Some(oa), Some(ob)) = (&a.operators, &b.operators) else { continue };
        let shared: BTreeSet<&String> = oa.intersection(ob).collect();
        let (verdict, detail) = if shared.is_empty() {
            (Verdict::Pass, format!("{} / {}", join(oa), join(ob)))
        } else if vs_service && shared.len() == oa.len() {
            (
                Verdict::Fail,
                format!(
                    "every name-server operator of {} ({}) also serves {}",
                    a.label,
                    join(shared),
                    b.label
                ),
            )
        } else {
            (Verdict::Warn, format!("name-server operator {} serves both", join(shared)))
        };
        row(Check::Ns, subject(a, b), verdict, detail);
    }

    Report { rows }
}

/// Loads the ASN sources, asks DNS ([`gather`]) and runs every check ([`evaluate`]).
/// Missing enrichment files become `warn` rows; a file that exists but cannot be parsed is
/// an error.
pub async fn check(spec: &Spec) -> Result<Report, SpecError> {
    let (enricher, warnings) = Enricher::load(&spec.enrich)?;
    let facts = gather(spec).await;
    let mut report = evaluate(spec, &facts, &|ip| enricher.lookup(ip).asn);
    let enrich_rows = warnings.into_iter().map(|w| Row {
        check: Check::Enrich,
        subject: "enrich".into(),
        verdict: Verdict::Warn,
        detail: w,
    });
    report.rows.splice(0..0, enrich_rows);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> Spec {
        Spec::from_toml_str(text, Path::new("/base")).unwrap()
    }

    fn invalid(text: &str) -> Vec<String> {
        match Spec::from_toml_str(text, Path::new(".")) {
            Err(SpecError::Invalid(errors)) => errors.iter().map(ToString::to_string).collect(),
            other => panic!("expected invalid fields, got {other:?}"),
        }
    }

    const TWO_COLLECTORS: &str = r#"
        dns = ["127.0.0.1:5353", "::1"]
        timeout_ms = 500
        [[services]]
        name = "shop"
        hosts = ["api.shop.example", "WWW.shop.example."]
        [[collectors]]
        url = "https://c1.vantage-a.example:8443/v1"
        addresses = ["192.0.2.10", "192.0.2.11:443"]
        [[collectors]]
        url = "https://c2.vantage-b.example"
        [enrich]
        asn_csv = ["asn.csv", "/abs/asn6.csv"]
        country_csv = ["country.csv"]
    "#;

    #[test]
    fn parses_a_spec() {
        let s = spec(TWO_COLLECTORS);
        assert_eq!(s.dns, ["127.0.0.1:5353".parse().unwrap(), "[::1]:53".parse().unwrap()]);
        assert_eq!(s.timeout, Duration::from_millis(500));
        assert_eq!(s.services[0].hosts[1].as_str(), "www.shop.example");
        assert_eq!(s.collectors[0].host.as_str(), "c1.vantage-a.example");
        assert_eq!(s.collectors[0].addresses.len(), 2);
        assert_eq!(
            s.enrich.asn_csv,
            [PathBuf::from("/base/asn.csv"), PathBuf::from("/abs/asn6.csv")]
        );
        assert!(s.enrich.country_csv.is_empty());
    }

    #[test]
    fn errors_name_their_fields() {
        let errors = invalid(
            r#"
            dns = ["nameserver"]
            timeout_ms = 0
            [[services]]
            hosts = ["https://api.shop.example/x"]
            [[collectors]]
            url = "ftp://c1.example"
            addresses = ["not-an-ip"]
            [[collectors]]
            addresses = []
            "#,
        );
        let fields: Vec<&str> = errors.iter().map(|e| e.split(':').next().unwrap()).collect();
        assert_eq!(
            fields,
            [
                "dns[0]",
                "timeout_ms",
                "services[0].name",
                "services[0].hosts[0]",
                "collectors[0].url",
                "collectors[0].addresses[0]",
                "collectors[1].url"
            ],
            "{errors:#?}"
        );
        assert_eq!(
            invalid(""),
            [
                "services: at least one service is required",
                "collectors: at least one collector is required"
            ]
        );
        let dup = invalid(
            r#"
            [[services]]
            name = "s"
            hosts = ["a.example"]
            [[collectors]]
            url = "https://c.example"
            [[collectors]]
            url = "https://c.example"
            "#,
        );
        assert_eq!(dup, ["collectors[1].url: the same URL as collectors[0]"]);
        match Spec::from_toml_str("[[services]]\nname = \"s\"\nhostz = []\n", Path::new(".")) {
            Err(SpecError::Toml(msg)) => assert!(msg.contains("hostz"), "{msg}"),
            other => panic!("expected a TOML error, got {other:?}"),
        }
    }

    fn facts(addrs: &[(&str, &[&str])], ns: &[(&str, &[&str])]) -> Facts {
        Facts {
            addresses: addrs
                .iter()
                .map(|(n, ips)| {
                    let ips: Vec<IpAddr> = ips.iter().map(|i| i.parse().unwrap()).collect();
                    ((*n).to_owned(), if ips.is_empty() { Err("NXDOMAIN".into()) } else { Ok(ips) })
                })
                .collect(),
            name_servers: ns
                .iter()
                .map(|(d, hosts)| {
                    ((*d).to_owned(), Ok(hosts.iter().map(|h| (*h).to_owned()).collect()))
                })
                .collect(),
        }
    }

    fn verdicts(report: &Report, check: Check) -> Vec<(String, Verdict)> {
        report
            .rows
            .iter()
            .filter(|r| r.check == check)
            .map(|r| (r.subject.clone(), r.verdict))
            .collect()
    }

    fn asn(ip: IpAddr) -> Option<u32> {
        match ip {
            IpAddr::V4(v4) if v4.octets()[0] == 192 => Some(64_500),
            IpAddr::V4(v4) if v4.octets()[0] == 198 => Some(64_501),
            IpAddr::V4(v4) if v4.octets()[0] == 203 => Some(64_502),
            _ => None,
        }
    }

    #[test]
    fn separated_domains_pass_and_shared_ones_do_not() {
        let s = spec(TWO_COLLECTORS);
        let f = facts(
            &[
                ("api.shop.example", &["198.51.100.1"]),
                ("www.shop.example", &["198.51.100.2"]),
                ("c1.vantage-a.example", &["203.0.113.1"]),
                ("c2.vantage-b.example", &["203.0.113.2", "2001:db8::1"]),
            ],
            &[
                ("shop.example", &["ns1.dns-s.example"]),
                ("vantage-a.example", &["ns1.dns-a.example", "ns2.dns-s.example"]),
                ("vantage-b.example", &["ns.dns-a.example"]),
            ],
        );
        let r = evaluate(&s, &f, &asn);
        let c1 = "c1.vantage-a.example";
        let c2 = "c2.vantage-b.example";
        assert!(verdicts(&r, Check::Domain).iter().all(|(_, v)| *v == Verdict::Pass));
        assert_eq!(
            verdicts(&r, Check::Prefix),
            [
                (format!("{c1} vs service shop"), Verdict::Pass),
                (format!("{c2} vs service shop"), Verdict::Pass),
                (format!("{c1} vs {c2}"), Verdict::Warn),
            ]
        );
        let asn_rows = verdicts(&r, Check::Asn);
        // 2001:db8::1 has no ASN: one warning for it, then the pairs.
        assert_eq!(asn_rows[0], ("2001:db8::1".to_owned(), Verdict::Warn));
        assert_eq!(
            asn_rows[1..],
            [
                (format!("{c1} vs service shop"), Verdict::Pass),
                (format!("{c2} vs service shop"), Verdict::Pass),
                (format!("{c1} vs {c2}"), Verdict::Warn),
            ]
        );
        // c1 shares one of its two operators with the service: warn; c1 and c2 share dns-a.
        assert_eq!(
            verdicts(&r, Check::Ns)[3..],
            [
                (format!("{c1} vs service shop"), Verdict::Warn),
                (format!("{c2} vs service shop"), Verdict::Pass),
                (format!("{c1} vs {c2}"), Verdict::Warn),
            ]
        );
        assert!(!r.has_fail());
    }

    #[test]
    fn one_failure_domain_fails() {
        let s = spec(
            r#"
            [[services]]
            name = "shop"
            hosts = ["api.shop.example", "198.51.100.77"]
            [[collectors]]
            url = "https://collect.shop.example"
            [[collectors]]
            url = "https://[2001:db8::5]:8443"
            "#,
        );
        let f = facts(
            &[("api.shop.example", &["198.51.100.1"]), ("collect.shop.example", &["192.0.2.1"])],
            &[("shop.example", &["ns1.dns-s.example"])],
        );
        let r = evaluate(&s, &f, &asn);
        let domain = verdicts(&r, Check::Domain);
        assert_eq!(domain[0], ("collect.shop.example vs service shop".to_owned(), Verdict::Fail));
        assert_eq!(domain[1].1, Verdict::Pass, "an IP literal has no domain");
        // Same operator for every name server of the collector's domain: fail.
        assert_eq!(
            verdicts(&r, Check::Ns)[1],
            ("collect.shop.example vs service shop".to_owned(), Verdict::Fail)
        );
        // The IPv6 collector has no ASN, so only the IPv4 pair is compared by ASN.
        assert!(r.rows.iter().any(|x| x.check == Check::Asn && x.subject == "2001:db8::5"));
        assert!(r.has_fail());
        // Shared ASN and prefix with a service: fail.
        let f = facts(
            &[("api.shop.example", &["198.51.100.1"]), ("collect.shop.example", &["198.51.100.9"])],
            &[],
        );
        let r = evaluate(&s, &f, &asn);
        assert_eq!(verdicts(&r, Check::Prefix)[0].1, Verdict::Fail);
        let asn_row = r
            .rows
            .iter()
            .find(|x| x.check == Check::Asn && x.subject.starts_with("collect"))
            .unwrap();
        assert_eq!(
            (asn_row.verdict, asn_row.detail.starts_with("both in AS64501")),
            (Verdict::Fail, true)
        );
    }

    #[test]
    fn unresolved_names_are_fail_rows_and_skip_comparisons() {
        let s = spec(TWO_COLLECTORS);
        let f = facts(
            &[
                ("api.shop.example", &[]),
                ("www.shop.example", &[]),
                ("c1.vantage-a.example", &["203.0.113.1"]),
                ("c2.vantage-b.example", &["198.51.100.3"]),
            ],
            &[],
        );
        let r = evaluate(&s, &f, &|_| None);
        let failed: Vec<&Row> = r.rows.iter().filter(|x| x.verdict == Verdict::Fail).collect();
        assert_eq!(failed.len(), 2);
        assert!(failed.iter().all(|x| x.check == Check::Resolve && x.detail.contains("NXDOMAIN")));
        // Only the collectors' pair has addresses on both sides.
        assert_eq!(verdicts(&r, Check::Prefix).len(), 1);
        assert_eq!(verdicts(&r, Check::Asn), [("enrichment".to_owned(), Verdict::Warn)]);
    }

    #[test]
    fn renders_an_aligned_table_and_json() {
        let report = Report {
            rows: vec![
                Row {
                    check: Check::Domain,
                    subject: "a vs b".into(),
                    verdict: Verdict::Pass,
                    detail: "x".into(),
                },
                Row {
                    check: Check::Ns,
                    subject: "longer subject".into(),
                    verdict: Verdict::Fail,
                    detail: "y z".into(),
                },
            ],
        };
        let table = report.to_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "CHECK   SUBJECT         VERDICT  DETAIL");
        assert_eq!(lines[1], "domain  a vs b          pass     x");
        assert_eq!(lines[2], "ns      longer subject  fail     y z");
        assert_eq!(lines[3], "1 pass, 0 warn, 1 fail");
        let json: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
        assert_eq!(json["rows"][1]["check"], "ns");
        assert_eq!(json["rows"][1]["verdict"], "fail");
        assert_eq!(json["summary"]["fail"], 1);
    }

    #[test]
    fn operators_and_prefixes() {
        assert_eq!(operator("NS1.Dns-A.example."), "dns-a.example");
        assert_eq!(operator("a.ns.example.co.uk"), "example.co.uk");
        assert_eq!(prefix("192.0.2.77".parse().unwrap()), "192.0.2.0/24");
        assert_eq!(prefix("::ffff:192.0.2.77".parse().unwrap()), "192.0.2.0/24");
        assert_eq!(prefix("2001:db8:1:2::9".parse().unwrap()), "2001:db8:1::/48");
        assert_eq!(registrable_domain("c1.vantage-a.test").as_deref(), Some("vantage-a.test"));
    }
}
