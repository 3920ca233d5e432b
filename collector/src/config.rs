//! The collector's configuration file (TOML) and its validation.
//!
//! Every field has a default or, when it cannot have one, an error that names it. Relative paths
//! are relative to the directory of the config file. Validation reads the files the config points
//! to (TLS certificate and key, collector keys, net-tag secret), so a config that passes
//! [`Config::from_file`] starts unless a port is taken or the store cannot be opened.
//!
//! ```toml
//! [server]
//! listen_tls = "127.0.0.1:8443"     # optional; needs tls_cert + tls_key
//! listen_plain = "127.0.0.1:8080"   # optional; at least one listener is required
//! tls_cert = "cert.pem"
//! tls_key = "key.pem"
//! [keys]
//! private_key_files = ["collector.key"]
//! [store]
//! path = "data"
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use crate::detect::DetectorConfig;
use crate::enrich::EnrichConfig;
use crate::model::NetTagKey;
use crate::notify::NotifyConfig;
use crate::open::CollectorKey;

/// A validated collector configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Listeners, TLS files and connection limits (`[server]`).
    pub server: ServerConfig,
    /// Collector keys and the net-tag secret (`[keys]`).
    pub keys: KeysConfig,
    /// Where and how long reports are kept (`[store]`).
    pub store: StoreSection,
    /// ASN and country sources (`[enrich]`); all optional.
    pub enrich: EnrichConfig,
    /// Rate limits and clock skew (`[limits]`).
    pub limits: LimitsConfig,
    /// Log output (`[log]`).
    pub log: LogConfig,
    /// Spike detection tuning (`[detector]`); every field has a default.
    pub detector: DetectorConfig,
    /// Where alerts are delivered (`[notify]`); none by default.
    pub notify: NotifyConfig,
    /// Fleet mode over NATS JetStream (`[fleet]`); `None` (off) when the section is absent.
    pub fleet: Option<FleetConfig>,
    /// Which service browser NEL reports belong to (`[nel]`); every field has a default.
    pub nel: NelConfig,
}

/// `[nel]`: how the host of a browser report maps to a service
/// ([`NelServices`](crate::nel::NelServices)).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NelConfig {
    /// `[[nel.services]]`: `id` and `hosts` (`shop.example` or `*.shop.example`); the first
    /// rule that matches wins. Hosts no rule matches go to their registrable domain.
    pub services: Vec<crate::nel::NelServiceRule>,
    /// Services at most minted from registrable domains no rule names (default
    /// [`DEFAULT_MAX_MINTED`](crate::nel::DEFAULT_MAX_MINTED)); past it, reports go to
    /// [`OTHER_SERVICE`](crate::nel::OTHER_SERVICE). Uploads are unauthenticated, so this
    /// bounds the services, slices and label values a sender can create.
    pub max_services: usize,
}

impl Default for NelConfig {
    fn default() -> Self {
        NelConfig { services: Vec::new(), max_services: crate::nel::DEFAULT_MAX_MINTED }
    }
}

impl NelConfig {
    /// The service map this section describes (validated when the config was read).
    pub fn services(&self) -> crate::nel::NelServices {
        crate::nel::NelServices::new(&self.services, self.max_services)
            .unwrap_or_else(|_| crate::nel::NelServices::default())
    }
}

/// `[server]`: listeners and connection limits.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// HTTPS listener (HTTP/1.1 and HTTP/2 by ALPN). Port 0 picks a free port.
    pub listen_tls: Option<SocketAddr>,
    /// Plain HTTP listener (HTTP/1.1 and HTTP/2 with prior knowledge), e.g. behind a proxy.
    pub listen_plain: Option<SocketAddr>,
    /// Admin listener (plain HTTP): the dashboard at `/`, `GET /v1/alerts`, `/v1/heatmap`,
    /// `/v1/strip`, `/v1/series`, `/v1/reports`, plus `/metrics` and the health checks. Off by default; bind it to a
    /// private address (it shows which networks fail), never to the public one.
    pub listen_admin: Option<SocketAddr>,
    /// PEM certificate chain, leaf first (required with `listen_tls`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (required with `listen_tls`).
    pub tls_key: Option<PathBuf>,
    /// Written after binding: `{"tls":"ADDR","plain":"ADDR"}` with the bound addresses.
    pub ready_file: Option<PathBuf>,
    /// Largest request body accepted; larger ones get `413`. Default 65536.
    pub max_body_bytes: usize,
    /// Time a client has to send a request's headers (and the TLS handshake, and the body).
    /// Default 5 s.
    pub header_read_timeout: Duration,
    /// A connection with no bytes moving for this long is closed. Default 60 s.
    pub idle_timeout: Duration,
    /// Open connections on the public listeners (TLS and plain together) at most. When all
    /// are taken, a new connection makes an idle one close (no request in progress, from the
    /// source prefix holding the most, least recently used first) and takes its place; if
    /// every connection is busy it gets `503` and is closed. Default 1024.
    pub max_connections: usize,
    /// Open public connections per source /24 (IPv4) or /48 (IPv6) at most; more are closed
    /// at once. Default 64.
    pub max_connections_per_prefix: usize,
    /// Open connections on the admin listener at most, a budget of its own so public traffic
    /// never starves monitoring. Default 64.
    pub max_admin_connections: usize,
    /// Uploads being opened or committed at most (the permit is taken after the body is read
    /// and before any decryption, and held until the store answers); more wait up to 250 ms
    /// for one, then get `503` + `Retry-After` without being opened. Default 512.
    pub max_inflight_commits: usize,
    /// How long shutdown waits for in-flight requests. Default 10 s.
    pub shutdown_grace: Duration,
    /// Bearer token the admin listener's JSON API and `/metrics` require, read from
    /// `server.admin_token_file` (mode 0600 or stricter, surrounding whitespace ignored).
    /// `None` (the default): no token.
    pub admin_token: Option<AdminToken>,
    /// `Host` names the admin listener answers (against DNS rebinding); lower case, without
    /// port or brackets. Default: `localhost`, `127.0.0.1`, `::1` and the admin listen
    /// address (unless it is unspecified, `0.0.0.0` or `::`: then list the names used).
    pub admin_hosts: Vec<String>,
}

/// The admin bearer token, kept only as its SHA-256 digest; Debug shows nothing of it.
#[derive(Clone)]
pub struct AdminToken {
    digest: [u8; 32],
}

impl AdminToken {
    /// A token from its secret bytes.
    pub fn from_secret(secret: &[u8]) -> AdminToken {
        let mut digest = [0u8; 32];
        digest.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, secret).as_ref());
        AdminToken { digest }
    }

    /// True if `presented` is the token. Constant time: the SHA-256 digests (fixed length,
    /// so the token's length does not leak) are compared by OR-ing the XOR of every byte, with
    /// no early exit; and an attacker cannot steer a digest's bytes anyway.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let theirs = ring::digest::digest(&ring::digest::SHA256, presented);
        let diff = self.digest.iter().zip(theirs.as_ref()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

/// `[keys]`: what the collector opens envelopes with.
#[derive(Clone, Debug)]
pub struct KeysConfig {
    /// Live collector keys (several during rotation); never empty.
    pub collector_keys: Vec<CollectorKey>,
    /// Secret for the pseudonymous source-network tags.
    pub net_tag_key: NetTagKey,
}

/// `[store]`: the embedded store.
#[derive(Clone, Debug)]
pub struct StoreSection {
    /// Directory of the sled database.
    pub path: PathBuf,
    /// Reports older than this are deleted. Default 30 days.
    pub retention: Duration,
    /// Oldest reports are deleted above this logical size (reports, counts and envelope
    /// digests, 40 bytes each). Default 10 GiB.
    pub max_bytes: u64,
    /// Envelope digests are kept for the longer of this and `retention`
    /// (`store.dedup_days`). Default 10 days.
    pub dedup_horizon: Duration,
    /// What a `202` waits for (`store.sync`: `"data"`, default, or `"danger_none"`).
    pub sync: crate::store::SyncMode,
    /// Free-space guard (`store.min_free_bytes`, default 128 MiB; `store.reserve_bytes`,
    /// default 32 MiB).
    pub space: crate::store::SpaceLimits,
    /// sled's page cache in bytes (`store.cache_mib`, default 16; 1 to 4096).
    pub cache_bytes: u64,
    /// How often retention and `max_bytes` are enforced (`store.retention_check_secs`,
    /// default 300; 1 to 86400). Between two checks the store can exceed `max_bytes` by what
    /// arrives meanwhile.
    pub retention_check: Duration,
}

/// `[limits]`: rate limits (token buckets) and clock skew.
#[derive(Clone, Debug, PartialEq)]
pub struct LimitsConfig {
    /// Envelopes per second per source /24 (IPv4) or /48 (IPv6). Default 100.
    pub prefix_rps: f64,
    /// Bucket size for `prefix_rps`. Default 400.
    pub prefix_burst: u32,
    /// Envelopes per second per agent key, after verification. Default 10.
    pub agent_rps: f64,
    /// Bucket size for `agent_rps`. Default 50.
    pub agent_burst: u32,
    /// NEL uploads per second per source prefix. Default 20.
    pub nel_prefix_rps: f64,
    /// Bucket size for `nel_prefix_rps`. Default 100.
    pub nel_prefix_burst: u32,
    /// Request body bytes per second per source prefix, envelopes and NEL uploads together,
    /// charged after the body is read and before anything is opened. Default 1 MiB/s.
    pub prefix_bytes_per_sec: u64,
    /// Bucket size for `prefix_bytes_per_sec`. Default 8 MiB.
    pub prefix_bytes_burst: u64,
    /// Reports per second per source prefix (agent reports and NEL entries), charged after
    /// opening or parsing and before the commit. Default 2000.
    pub prefix_reports_per_sec: f64,
    /// Bucket size for `prefix_reports_per_sec`. Default 40000.
    pub prefix_reports_burst: u64,
    /// The source prefix's share of store growth: logical store bytes (the figure
    /// `store.max_bytes` bounds) per second its uploads may add, charged before the commit
    /// with an upper bound of what the batch adds. Default 512 KiB/s.
    pub prefix_store_bytes_per_sec: u64,
    /// Bucket size for `prefix_store_bytes_per_sec`. Default 8 MiB.
    pub prefix_store_bytes_burst: u64,
    /// Reports per second per agent key, after verification. Default 200.
    pub agent_reports_per_sec: f64,
    /// Bucket size for `agent_reports_per_sec`. Default 20000.
    pub agent_reports_burst: u64,
    /// Envelope bytes per second per agent key, after verification. Default 128 KiB/s.
    pub agent_bytes_per_sec: u64,
    /// Bucket size for `agent_bytes_per_sec`. Default 2 MiB.
    pub agent_bytes_burst: u64,
    /// A batch made further in the future than this is refused (`400`). Default 86400 s.
    pub max_clock_skew: Duration,
}

/// Log format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// `[log]`: log output on stderr.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `vantage_collector=debug`. Default `info`.
    pub level: String,
}

/// One thing wrong with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field, as written in the file (`server.tls_cert`).
    pub field: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.problem)
    }
}

/// Why a configuration was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{path}: cannot read: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// Not TOML, an unknown key, or a value of the wrong type (the message names the key).
    #[error("{origin}: {message}")]
    Parse {
        /// The file, or `config` for a string.
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// Parsed, but fields are missing or wrong; every problem found is listed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    /// The field errors (empty for read and parse errors).
    pub fn fields(&self) -> &[FieldError] {
        match self {
            ConfigError::Invalid(errors) => errors,
            _ => &[],
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    keys: Option<RawKeys>,
    store: Option<RawStore>,
    #[serde(default)]
    enrich: RawEnrich,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    detector: DetectorConfig,
    #[serde(default)]
    notify: NotifyConfig,
    fleet: Option<FleetConfig>,
    #[serde(default)]
    nel: NelConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen_tls: Option<String>,
    listen_plain: Option<String>,
    listen_admin: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    ready_file: Option<PathBuf>,
    max_body_bytes: u64,
    header_read_timeout_ms: u64,
    idle_timeout_ms: u64,
    max_connections: u64,
    max_connections_per_prefix: u64,
    max_admin_connections: u64,
    max_inflight_commits: u64,
    shutdown_grace_ms: u64,
    admin_token_file: Option<PathBuf>,
    admin_hosts: Option<Vec<String>>,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen_tls: None,
            listen_plain: None,
            listen_admin: None,
            tls_cert: None,
            tls_key: None,
            ready_file: None,
            max_body_bytes: 65_536,
            header_read_timeout_ms: 5_000,
            idle_timeout_ms: 60_000,
            max_connections: 1_024,
            max_connections_per_prefix: 64,
            max_admin_connections: 64,
            max_inflight_commits: 512,
            shutdown_grace_ms: 10_000,
            admin_token_file: None,
            admin_hosts: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKeys {
    private_key_files: Option<Vec<PathBuf>>,
    net_tag_secret_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    path: Option<PathBuf>,
    #[serde(default = "default_retention_days")]
    retention_days: u64,
    #[serde(default = "default_max_bytes")]
    max_bytes: u64,
    #[serde(default = "default_dedup_days")]
    dedup_days: u64,
    sync: Option<String>,
    min_free_bytes: Option<u64>,
    reserve_bytes: Option<u64>,
    cache_mib: Option<u64>,
    retention_check_secs: Option<u64>,
}

fn default_dedup_days() -> u64 {
    10
}

fn default_retention_days() -> u64 {
    30
}

fn default_max_bytes() -> u64 {
    10 * 1024 * 1024 * 1024
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawEnrich {
    asn_mmdb: Option<PathBuf>,
    country_mmdb: Option<PathBuf>,
    asn_csv: Vec<PathBuf>,
    country_csv: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    prefix_rps: f64,
    prefix_burst: u32,
    agent_rps: f64,
    agent_burst: u32,
    nel_prefix_rps: f64,
    nel_prefix_burst: u32,
    prefix_bytes_per_sec: u64,
    prefix_bytes_burst: u64,
    prefix_reports_per_sec: f64,
    prefix_reports_burst: u64,
    prefix_store_bytes_per_sec: u64,
    prefix_store_bytes_burst: u64,
    agent_reports_per_sec: f64,
    agent_reports_burst: u64,
    agent_bytes_per_sec: u64,
    agent_bytes_burst: u64,
    max_clock_skew_secs: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            prefix_rps: 100.0,
            prefix_burst: 400,
            agent_rps: 10.0,
            agent_burst: 50,
            nel_prefix_rps: 20.0,
            nel_prefix_burst: 100,
            prefix_bytes_per_sec: 1 << 20,
            prefix_bytes_burst: 8 << 20,
            prefix_reports_per_sec: 2_000.0,
            prefix_reports_burst: 40_000,
            prefix_store_bytes_per_sec: 512 << 10,
            prefix_store_bytes_burst: 8 << 20,
            agent_reports_per_sec: 200.0,
            agent_reports_burst: 20_000,
            agent_bytes_per_sec: 128 << 10,
            agent_bytes_burst: 2 << 20,
            max_clock_skew_secs: 86_400,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    format: LogFormat,
    level: String,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog { format: LogFormat::Text, level: "info".into() }
    }
}

/// Collects field errors while a raw config is turned into a [`Config`].
struct Checker<'a> {
    base: &'a Path,
    errors: Vec<FieldError>,
}

impl Checker<'_> {
    fn fail(&mut self, field: &str, problem: impl Into<String>) {
        self.errors.push(FieldError { field: field.into(), problem: problem.into() });
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.base.join(p) }
    }

    /// Reads a file the config points to; `None` (with an error for `field`) if it cannot.
    fn read(&mut self, field: &str, path: &Path) -> Option<Vec<u8>> {
        match std::fs::read(path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.fail(field, format!("file not found: {}", path.display()));
                None
            }
            Err(e) => {
                self.fail(field, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }

    /// Reads a file holding 32 bytes in hex (surrounding whitespace allowed).
    fn read_hex32(&mut self, field: &str, path: &Path) -> Option<[u8; 32]> {
        let bytes = self.read(field, path)?;
        match std::str::from_utf8(&bytes).ok().and_then(|s| decode_hex32(s.trim())) {
            Some(key) => Some(key),
            None => {
                self.fail(field, format!("{}: expected 64 hex digits", path.display()));
                None
            }
        }
    }

    fn listen(&mut self, field: &str, value: Option<&str>) -> Option<SocketAddr> {
        let value = value?;
        match value.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.fail(field, format!("{value:?} is not an IP address and port"));
                None
            }
        }
    }

    fn positive_ms(&mut self, field: &str, ms: u64) -> Duration {
        if ms == 0 {
            self.fail(field, "must be greater than 0");
        }
        Duration::from_millis(ms)
    }

    fn rate(&mut self, field: &str, rps: f64) -> f64 {
        if !(rps.is_finite() && rps > 0.0) {
            self.fail(field, format!("must be a positive number, got {rps}"));
        }
        rps
    }

    fn amount(&mut self, field: &str, n: u64) -> u64 {
        if n == 0 {
            self.fail(field, "must be at least 1");
        }
        n
    }

    fn burst(&mut self, field: &str, burst: u32) -> u32 {
        if burst == 0 {
            self.fail(field, "must be at least 1");
        }
        burst
    }

    fn count(&mut self, field: &str, n: u64, max: u64) -> usize {
        if n == 0 || n > max {
            self.fail(field, format!("must be between 1 and {max}, got {n}"));
        }
        usize::try_from(n.min(max)).unwrap_or(usize::MAX)
    }
}

/// Reads `server.admin_token_file`: private to its owner (no group or other permission bits),
/// one token of visible ASCII, at most 4096 bytes.
fn read_admin_token(c: &mut Checker<'_>, path: &Path) -> Option<AdminToken> {
    const FIELD: &str = "server.admin_token_file";
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                c.fail(
                    FIELD,
                    format!("{}: readable by others (mode {mode:o}); chmod 600 it", path.display()),
                );
                return None;
            }
        }
    }
    let bytes = c.read(FIELD, path)?;
    let token = std::str::from_utf8(&bytes).map(str::trim).unwrap_or("");
    if token.is_empty() || token.len() > 4096 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        c.fail(
            FIELD,
            format!("{}: expected one token of 1 to 4096 visible ASCII characters", path.display()),
        );
        return None;
    }
    Some(AdminToken::from_secret(token.as_bytes()))
}

/// `server.admin_hosts`, normalised, or the default (loopback names and the listen address).
fn admin_hosts(
    c: &mut Checker<'_>,
    hosts: Option<&[String]>,
    listen: Option<SocketAddr>,
) -> Vec<String> {
    match hosts {
        Some(hosts) => {
            let hosts: Vec<String> = hosts.iter().map(|h| normalise_host(h)).collect();
            let bad = |h: &String| {
                h.is_empty() || (h.contains([':', '/']) && h.parse::<std::net::IpAddr>().is_err())
            };
            if hosts.is_empty() || hosts.iter().any(bad) {
                c.fail("server.admin_hosts", "needs host names or IP addresses, without port");
            }
            hosts
        }
        None => {
            let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).into();
            if let Some(addr) = listen.filter(|a| !a.ip().is_unspecified()) {
                let ip = addr.ip().to_string();
                if !hosts.contains(&ip) {
                    hosts.push(ip);
                }
            }
            hosts
        }
    }
}

/// Range checks of `[detector]`, each naming its field.
fn check_detector(c: &mut Checker<'_>, d: &DetectorConfig) {
    let mut positive = |field: &str, ok: bool, what: &str| {
        if !ok {
            c.fail(&format!("detector.{field}"), what.to_owned());
        }
    };
    positive("bucket_ms", d.bucket_ms >= 100, "must be at least 100");
    positive("window_buckets", (1..=360).contains(&d.window_buckets), "must be between 1 and 360");
    positive("fire_score", d.fire_score.is_finite() && d.fire_score > 0.0, "must be positive");
    positive(
        "resolve_score",
        d.resolve_score.is_finite() && d.resolve_score > 0.0 && d.resolve_score < d.fire_score,
        "must be positive and below fire_score",
    );
    positive("resolve_after", d.resolve_after >= 1, "must be at least 1");
    for (field, v) in [
        ("min_effect", d.min_effect),
        ("min_client_share", d.min_client_share),
        ("baseline_alpha", d.baseline_alpha),
        ("silence_ratio", d.silence_ratio),
        ("silence_resolve_ratio", d.silence_resolve_ratio),
        ("global_min_ratio", d.global_min_ratio),
        ("dominance", d.dominance),
        ("small_min_share", d.small_min_share),
        ("child_min_net_share", d.child_min_net_share),
    ] {
        positive(field, (0.0..=1.0).contains(&v), "must be between 0 and 1");
    }
    positive("baseline_alpha", d.baseline_alpha > 0.0, "must be greater than 0");
    positive("max_slices", d.max_slices >= 1, "must be at least 1");
    positive("max_clients", d.max_clients >= 1, "must be at least 1");
    positive(
        "small_max_clients",
        d.small_max_clients >= d.min_clients,
        "must be at least min_clients",
    );
}

/// Decodes exactly 64 hex digits.
pub(crate) fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

/// Lower-case hex.
#[cfg(test)]
fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The net-tag secret derived from a collector key when no secret file is configured:
/// HKDF-SHA256(salt = "vantage/v1 net tag", ikm = the key's secret bytes).
fn derive_net_tag_secret(key: &CollectorKey) -> [u8; 32] {
    struct Len32;
    impl ring::hkdf::KeyType for Len32 {
        fn len(&self) -> usize {
            32
        }
    }
    let salt = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, b"vantage/v1 net tag");
    let prk = salt.extract(&key.secret_bytes());
    let mut out = [0u8; 32];
    prk.expand(&[b"net-tag"], Len32)
        .and_then(|okm| okm.fill(&mut out))
        .expect("32 bytes is within HKDF-SHA256's output limit");
    out
}

/// Loads the certificate chain and key and builds the TLS server config (ring provider,
/// ALPN `h2` and `http/1.1`). Errors are field errors naming `server.tls_cert`/`server.tls_key`.
pub(crate) fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, FieldError> {
    let field_err = |field: &str, problem: String| FieldError { field: field.into(), problem };
    let not_found = |field: &str, path: &Path| {
        if path.exists() {
            None
        } else {
            Some(field_err(field, format!("file not found: {}", path.display())))
        }
    };
    if let Some(e) = not_found("server.tls_cert", cert) {
        return Err(e);
    }
    if let Some(e) = not_found("server.tls_key", key) {
        return Err(e);
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<_, _>>())
        .map_err(|e| field_err("server.tls_cert", format!("{}: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(field_err("server.tls_cert", format!("{}: no certificate", cert.display())));
    }
    let private = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| field_err("server.tls_key", format!("{}: {e}", key.display())))?;
    let mut config = rustls::ServerConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .map_err(|e| field_err("server.tls_key", e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, private)
    .map_err(|e| {
        field_err("server.tls_key", format!("{}: does not fit the certificate: {e}", key.display()))
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

impl Config {
    /// Reads and validates a config file; relative paths are taken from the file's directory.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Read { path: path.to_path_buf(), reason: e.to_string() })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Config::parse(&text, base, &path.display().to_string())
    }

    /// Parses and validates config text; relative paths are taken from `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        Config::parse(text, base_dir, "config")
    }

    fn parse(text: &str, base: &Path, origin: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            origin: origin.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let mut c = Checker { base, errors: Vec::new() };

        let s = raw.server;
        let listen_tls = c.listen("server.listen_tls", s.listen_tls.as_deref());
        let listen_plain = c.listen("server.listen_plain", s.listen_plain.as_deref());
        let listen_admin = c.listen("server.listen_admin", s.listen_admin.as_deref());
        if s.listen_tls.is_none() && s.listen_plain.is_none() {
            c.fail("server", "no listener: set listen_tls, listen_plain or both");
        }
        let tls_cert = s.tls_cert.as_deref().map(|p| c.resolve(p));
        let tls_key = s.tls_key.as_deref().map(|p| c.resolve(p));
        if s.listen_tls.is_some() {
            match (&tls_cert, &tls_key) {
                (Some(cert), Some(key)) => {
                    if let Err(e) = load_tls(cert, key) {
                        c.errors.push(e);
                    }
                }
                (cert, key) => {
                    if cert.is_none() {
                        c.fail("server.tls_cert", "required with listen_tls");
                    }
                    if key.is_none() {
                        c.fail("server.tls_key", "required with listen_tls");
                    }
                }
            }
        }
        let server = ServerConfig {
            listen_tls,
            listen_plain,
            listen_admin,
            tls_cert,
            tls_key,
            ready_file: s.ready_file.as_deref().map(|p| c.resolve(p)),
            max_body_bytes: c.count("server.max_body_bytes", s.max_body_bytes, 16 << 20),
            header_read_timeout: c
                .positive_ms("server.header_read_timeout_ms", s.header_read_timeout_ms),
            idle_timeout: c.positive_ms("server.idle_timeout_ms", s.idle_timeout_ms),
            max_connections: c.count("server.max_connections", s.max_connections, 1 << 20),
            max_connections_per_prefix: c.count(
                "server.max_connections_per_prefix",
                s.max_connections_per_prefix,
                1 << 20,
            ),
            max_admin_connections: c.count(
                "server.max_admin_connections",
                s.max_admin_connections,
                1 << 16,
            ),
            max_inflight_commits: c.count(
                "server.max_inflight_commits",
                s.max_inflight_commits,
                1 << 20,
            ),
            shutdown_grace: Duration::from_millis(s.shutdown_grace_ms),
            admin_token: s.admin_token_file.as_deref().and_then(|p| {
                let path = c.resolve(p);
                read_admin_token(&mut c, &path)
            }),
            admin_hosts: admin_hosts(&mut c, s.admin_hosts.as_deref(), listen_admin),
        };

        let mut collector_keys = Vec::new();
        let mut net_tag_secret = None;
        match raw.keys {
            None => c.fail("keys.private_key_files", "required ([keys] section missing)"),
            Some(keys) => {
                match keys.private_key_files {
                    None => c.fail("keys.private_key_files", "required"),
                    Some(files) if files.is_empty() => {
                        c.fail("keys.private_key_files", "needs at least one key file")
                    }
                    Some(files) => {
                        for (i, file) in files.iter().enumerate() {
                            let path = c.resolve(file);
                            let field = format!("keys.private_key_files[{i}]");
                            if let Some(secret) = c.read_hex32(&field, &path) {
                                collector_keys.push(CollectorKey::from_secret_bytes(&secret));
                            }
                        }
                    }
                }
                if let Some(file) = keys.net_tag_secret_file {
                    let path = c.resolve(&file);
                    net_tag_secret = c.read_hex32("keys.net_tag_secret_file", &path);
                }
            }
        }

        let store = match raw.store {
            None => {
                c.fail("store.path", "required ([store] section missing)");
                None
            }
            Some(st) => {
                if st.retention_days == 0 {
                    c.fail("store.retention_days", "must be at least 1");
                }
                if st.max_bytes == 0 {
                    c.fail("store.max_bytes", "must be greater than 0");
                }
                if st.dedup_days == 0 {
                    c.fail("store.dedup_days", "must be at least 1");
                }
                let sync = match st.sync.as_deref().map(str::parse) {
                    None => crate::store::SyncMode::default(),
                    Some(Ok(mode)) => mode,
                    Some(Err(e)) => {
                        c.fail("store.sync", &e);
                        crate::store::SyncMode::default()
                    }
                };
                let cache_mib = st.cache_mib.unwrap_or(crate::store::DEFAULT_CACHE_BYTES >> 20);
                if !(1..=4096).contains(&cache_mib) {
                    c.fail("store.cache_mib", "must be from 1 to 4096 (MiB)");
                }
                let retention_check = st
                    .retention_check_secs
                    .unwrap_or(crate::store::DEFAULT_RETENTION_CHECK.as_secs());
                if !(1..=86_400).contains(&retention_check) {
                    c.fail("store.retention_check_secs", "must be from 1 to 86400 (seconds)");
                }
                let defaults = crate::store::SpaceLimits::default();
                let space = crate::store::SpaceLimits {
                    min_free_bytes: st.min_free_bytes.unwrap_or(defaults.min_free_bytes),
                    reserve_bytes: st.reserve_bytes.unwrap_or(defaults.reserve_bytes),
                };
                match st.path {
                    None => {
                        c.fail("store.path", "required");
                        None
                    }
                    Some(p) if p.as_os_str().is_empty() => {
                        c.fail("store.path", "must not be empty");
                        None
                    }
                    Some(p) => Some(StoreSection {
                        path: c.resolve(&p),
                        retention: Duration::from_secs(st.retention_days.saturating_mul(86_400)),
                        max_bytes: st.max_bytes,
                        dedup_horizon: Duration::from_secs(st.dedup_days.saturating_mul(86_400)),
                        sync,
                        space,
                        cache_bytes: cache_mib << 20,
                        retention_check: Duration::from_secs(retention_check),
                    }),
                }
            }
        };

        let e = raw.enrich;
        let enrich = EnrichConfig {
            asn_mmdb: e.asn_mmdb.as_deref().map(|p| c.resolve(p)),
            country_mmdb: e.country_mmdb.as_deref().map(|p| c.resolve(p)),
            asn_csv: e.asn_csv.iter().map(|p| c.resolve(p)).collect(),
            country_csv: e.country_csv.iter().map(|p| c.resolve(p)).collect(),
        };

        let l = raw.limits;
        let limits = LimitsConfig {
            prefix_rps: c.rate("limits.prefix_rps", l.prefix_rps),
            prefix_burst: c.burst("limits.prefix_burst", l.prefix_burst),
            agent_rps: c.rate("limits.agent_rps", l.agent_rps),
            agent_burst: c.burst("limits.agent_burst", l.agent_burst),
            nel_prefix_rps: c.rate("limits.nel_prefix_rps", l.nel_prefix_rps),
            nel_prefix_burst: c.burst("limits.nel_prefix_burst", l.nel_prefix_burst),
            prefix_bytes_per_sec: c.amount("limits.prefix_bytes_per_sec", l.prefix_bytes_per_sec),
            prefix_bytes_burst: c.amount("limits.prefix_bytes_burst", l.prefix_bytes_burst),
            prefix_reports_per_sec: c
                .rate("limits.prefix_reports_per_sec", l.prefix_reports_per_sec),
            prefix_reports_burst: c.amount("limits.prefix_reports_burst", l.prefix_reports_burst),
            prefix_store_bytes_per_sec: c
                .amount("limits.prefix_store_bytes_per_sec", l.prefix_store_bytes_per_sec),
            prefix_store_bytes_burst: c
                .amount("limits.prefix_store_bytes_burst", l.prefix_store_bytes_burst),
            agent_reports_per_sec: c.rate("limits.agent_reports_per_sec", l.agent_reports_per_sec),
            agent_reports_burst: c.amount("limits.agent_reports_burst", l.agent_reports_burst),
            agent_bytes_per_sec: c.amount("limits.agent_bytes_per_sec", l.agent_bytes_per_sec),
            agent_bytes_burst: c.amount("limits.agent_bytes_burst", l.agent_bytes_burst),
            max_clock_skew: Duration::from_secs(l.max_clock_skew_secs),
        };

        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.level) {
            c.fail("log.level", format!("{:?} is not a log filter: {e}", raw.log.level));
        }
        let log = LogConfig { format: raw.log.format, level: raw.log.level };

        let detector = raw.detector;
        check_detector(&mut c, &detector);
        let mut notify = raw.notify;
        for receiver in &mut notify.receivers {
            if let Some(ca) = &receiver.ca_file {
                receiver.ca_file = Some(c.resolve(ca));
            }
        }
        if let Err(problems) = notify.validate() {
            for (field, problem) in problems {
                c.fail(&field, problem);
            }
        }

        if let Some(Err(problems)) = raw.fleet.as_ref().map(FleetConfig::validate) {
            for (field, problem) in problems {
                c.fail(&field, problem);
            }
        }

        if let Err(problem) = crate::nel::NelServices::new(&raw.nel.services, raw.nel.max_services)
        {
            // The message starts with the field ("nel.services[0].hosts: ...").
            let (field, problem) = problem.split_once(": ").unwrap_or(("nel.services", &problem));
            c.fail(field, problem);
        }
        if raw.nel.max_services > 100_000 {
            c.fail("nel.max_services", "at most 100000 (each one is a detector slice)");
        }

        match (c.errors.is_empty(), store) {
            (true, Some(store)) if !collector_keys.is_empty() => {
                let net_tag_secret =
                    net_tag_secret.unwrap_or_else(|| derive_net_tag_secret(&collector_keys[0]));
                Ok(Config {
                    server,
                    keys: KeysConfig {
                        collector_keys,
                        net_tag_key: NetTagKey::new(&net_tag_secret),
                    },
                    store,
                    enrich,
                    limits,
                    log,
                    detector,
                    notify,
                    fleet: raw.fleet,
                    nel: raw.nel,
                })
            }
            _ => Err(ConfigError::Invalid(c.errors)),
        }
    }
}

/// `[fleet]`: where the fleet's NATS JetStream is and who this collector is.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetConfig {
    /// NATS server URL(s), comma separated (`nats://10.0.0.5:4222,nats://10.0.1.5:4222`).
    /// Required.
    #[serde(default)]
    pub nats_url: String,
    /// Stream of accepted batches; default `VANTAGE`. Alert events go to `{stream}_ALERTS`.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Subject batches are published on; default `vantage.batches`.
    #[serde(default = "default_subject")]
    pub subject: String,
    /// Subject alert events are published on; default `vantage.alerts`.
    #[serde(default = "default_alert_subject")]
    pub alert_subject: String,
    /// This collector's name in the fleet, `[a-z0-9-]+` (at most 64). Required.
    #[serde(default)]
    pub collector_id: String,
    /// How long a publish may wait for JetStream's ack before NATS counts as unreachable;
    /// default 2000.
    #[serde(default = "default_publish_timeout_ms")]
    pub publish_timeout_ms: u64,
    /// Bound of the outbox of unpublished batches; beyond it the oldest are dropped and
    /// counted. Default 256 MiB.
    #[serde(default = "default_max_buffer_bytes")]
    pub max_buffer_bytes: u64,
    /// Most digests the duplicate test of the fleet's batches holds (in memory, with a copy
    /// on disk); past it the oldest are forgotten, and a copy of one of those batches that
    /// comes later is fed to the detector again (`vantage_fleet_seen_evicted_total`). Default
    /// 262144 (about 42 MiB): at 100 batches per second across the fleet, the last 44 minutes.
    /// 1024 to 67108864.
    #[serde(default = "default_max_seen_digests")]
    pub max_seen_digests: usize,
}

fn default_stream() -> String {
    "VANTAGE".into()
}
fn default_subject() -> String {
    "vantage.batches".into()
}
fn default_alert_subject() -> String {
    "vantage.alerts".into()
}
fn default_publish_timeout_ms() -> u64 {
    2_000
}
/// Default of `fleet.max_seen_digests`. At 100 batches per second across the fleet, the last 44
/// minutes. Measured (`docs/fleet.md`): 2,000,000 digests through a set of this bound left the
/// process 42 MiB larger, level from the bound on, where the earlier trees took 1 GiB for
/// 400,000.
pub const DEFAULT_MAX_SEEN_DIGESTS: usize = 262_144;

fn default_max_seen_digests() -> usize {
    DEFAULT_MAX_SEEN_DIGESTS
}
fn default_max_buffer_bytes() -> u64 {
    256 * 1024 * 1024
}

impl FleetConfig {
    /// A config with the defaults for everything but the two required fields.
    pub fn new(nats_url: impl Into<String>, collector_id: impl Into<String>) -> FleetConfig {
        FleetConfig {
            nats_url: nats_url.into(),
            stream: default_stream(),
            subject: default_subject(),
            alert_subject: default_alert_subject(),
            collector_id: collector_id.into(),
            publish_timeout_ms: default_publish_timeout_ms(),
            max_buffer_bytes: default_max_buffer_bytes(),
            max_seen_digests: default_max_seen_digests(),
        }
    }

    /// Checks every field; the errors are `(field, problem)` with `fleet.` field names.
    pub fn validate(&self) -> Result<(), Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut fail = |field: &str, problem: &str| {
            errors.push((format!("fleet.{field}"), problem.to_owned()));
        };
        if self.nats_url.trim().is_empty() {
            fail("nats_url", "required");
        } else if self.nats_url.chars().any(char::is_whitespace) {
            fail("nats_url", "must not contain whitespace");
        }
        let id = &self.collector_id;
        if id.is_empty() {
            fail("collector_id", "required");
        } else if id.len() > 64
            || !id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            fail("collector_id", "must be 1 to 64 of [a-z0-9-]");
        }
        let stream_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 32
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !stream_ok(&self.stream) {
            fail("stream", "must be 1 to 32 of [A-Za-z0-9_-]");
        }
        let subject_ok = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && !s.ends_with('.')
                && !s.contains("..")
                && s.bytes().all(|b| b.is_ascii_graphic() && b != b'*' && b != b'>')
        };
        if !subject_ok(&self.subject) {
            fail("subject", "must be a NATS subject without wildcards (e.g. vantage.batches)");
        }
        if !subject_ok(&self.alert_subject) {
            fail("alert_subject", "must be a NATS subject without wildcards (e.g. vantage.alerts)");
        } else if self.alert_subject == self.subject {
            fail("alert_subject", "must differ from fleet.subject");
        }
        if !(100..=60_000).contains(&self.publish_timeout_ms) {
            fail("publish_timeout_ms", "must be between 100 and 60000");
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.max_seen_digests) {
            fail("max_seen_digests", "must be from 1024 to 67108864");
        }
        if self.max_buffer_bytes < 64 * 1024 {
            fail("max_buffer_bytes", "must be at least 65536");
        }
        if errors.is_empty() { Ok(()) } else { Err(errors) }
    }

    /// The stream alert events go to: `{stream}_ALERTS`.
    pub(crate) fn alert_stream(&self) -> String {
        format!("{}_ALERTS", self.stream)
    }
}

/// Lower case, no IPv6 brackets, no trailing dot: how `admin_hosts` entries are compared.
pub(crate) fn normalise_host(host: &str) -> String {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    h.trim_end_matches('.').to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_HEX: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    fn dir_with_key() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("collector.key"), format!("{KEY_HEX}\n")).unwrap();
        dir
    }

    const MINIMAL: &str = r#"
        [server]
        listen_plain = "127.0.0.1:0"
        [keys]
        private_key_files = ["collector.key"]
        [store]
        path = "data"
    "#;

    #[test]
    fn a_minimal_config_gets_the_defaults() {
        let dir = dir_with_key();
        let config = Config::from_toml_str(MINIMAL, dir.path()).unwrap();
        assert_eq!(config.server.listen_plain, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(config.server.max_body_bytes, 65_536);
        assert_eq!(config.server.header_read_timeout, Duration::from_secs(5));
        assert_eq!(config.server.max_connections, 1024);
        assert_eq!(config.server.max_connections_per_prefix, 64);
        assert_eq!(config.server.max_admin_connections, 64);
        assert_eq!(config.store.path, dir.path().join("data"));
        assert_eq!(config.store.retention, Duration::from_secs(30 * 86_400));
        assert_eq!(config.store.retention_check, Duration::from_secs(300));
        assert_eq!(config.limits.prefix_burst, 400);
        assert_eq!(config.limits.prefix_bytes_per_sec, 1 << 20);
        assert_eq!(config.limits.prefix_store_bytes_per_sec, 512 << 10);
        assert_eq!(config.limits.agent_reports_burst, 20_000);
        assert_eq!(config.log.format, LogFormat::Text);
        let key = CollectorKey::from_secret_bytes(&[1; 32]);
        assert_eq!(config.keys.collector_keys[0].key_id(), key.key_id());
        // The derived net-tag secret is stable and differs from the key itself.
        let again = Config::from_toml_str(MINIMAL, dir.path()).unwrap();
        let ip = "192.0.2.1".parse().unwrap();
        assert_eq!(config.keys.net_tag_key.tag(ip), again.keys.net_tag_key.tag(ip));
        assert_ne!(config.keys.net_tag_key.tag(ip), NetTagKey::new(&[1; 32]).tag(ip));
        let checked =
            MINIMAL.replace("path = \"data\"", "path = \"data\"\nretention_check_secs = 5");
        let checked = Config::from_toml_str(&checked, dir.path()).unwrap();
        assert_eq!(checked.store.retention_check, Duration::from_secs(5));
    }

    #[test]
    fn admin_token_file_must_be_private_and_hosts_default_to_loopback_and_the_listener() {
        use std::os::unix::fs::PermissionsExt;
        let dir = dir_with_key();
        let config = Config::from_toml_str(MINIMAL, dir.path()).unwrap();
        assert!(config.server.admin_token.is_none());
        assert_eq!(config.server.admin_hosts, ["localhost", "127.0.0.1", "::1"]);
        let text = MINIMAL.replace(
            "[keys]",
            "listen_admin = \"10.1.2.3:9464\"\nadmin_token_file = \"admin.token\"\n[keys]",
        );
        let token = dir.path().join("admin.token");
        std::fs::write(&token, "  s3cret \n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
        let errors = errors_of(&text, dir.path());
        assert!(
            errors.iter().any(|e| e.contains("server.admin_token_file") && e.contains("mode 644")),
            "{errors:?}"
        );
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = Config::from_toml_str(&text, dir.path()).unwrap();
        let t = config.server.admin_token.unwrap();
        assert!(t.matches(b"s3cret") && !t.matches(b"s3cret ") && !t.matches(b""));
        assert_eq!(format!("{t:?}"), "AdminToken(..)");
        assert_eq!(config.server.admin_hosts, ["localhost", "127.0.0.1", "::1", "10.1.2.3"]);
        std::fs::write(&token, "two words").unwrap();
        let errors = errors_of(&text, dir.path());
        assert!(errors.iter().any(|e| e.contains("visible ASCII")), "{errors:?}");
        let text =
            MINIMAL.replace("[keys]", "admin_hosts = [\"Admin.Example.\", \"[::1]\"]\n[keys]");
        let config = Config::from_toml_str(&text, dir.path()).unwrap();
        assert_eq!(config.server.admin_hosts, ["admin.example", "::1"]);
        let bad = MINIMAL.replace("[keys]", "admin_hosts = [\"admin.example:9464\"]\n[keys]");
        assert!(errors_of(&bad, dir.path()).iter().any(|e| e.contains("server.admin_hosts")));
    }

    fn errors_of(text: &str, dir: &Path) -> Vec<String> {
        match Config::from_toml_str(text, dir) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string().lines().map(str::to_owned).collect(),
        }
    }

    #[test]
    fn every_invalid_field_is_named() {
        let dir = dir_with_key();
        std::fs::write(dir.path().join("short.key"), "abcd").unwrap();
        std::fs::write(dir.path().join("bad.pem"), "not a pem").unwrap();
        let with =
            |section: &str, line: &str| MINIMAL.replace(section, &format!("{section}\n{line}"));
        let cases: Vec<(String, &str)> = vec![
            (with("[server]", "listen_tls = \"127.0.0.1:0\""), "server.tls_cert: required"),
            (
                with(
                    "[server]",
                    "listen_tls = \"127.0.0.1:0\"\ntls_cert = \"/x/cert.pem\"\ntls_key = \"k.pem\"",
                ),
                "server.tls_cert: file not found: /x/cert.pem",
            ),
            (
                with(
                    "[server]",
                    "listen_tls = \"127.0.0.1:0\"\ntls_cert = \"bad.pem\"\ntls_key = \"bad.pem\"",
                ),
                "server.tls_cert: ",
            ),
            (
                with("[server]", "listen_tls = \"localhost:1\""),
                "server.listen_tls: \"localhost:1\" is not",
            ),
            (MINIMAL.replace("listen_plain = \"127.0.0.1:0\"", ""), "server: no listener"),
            (with("[server]", "max_body_bytes = 0"), "server.max_body_bytes: must be between"),
            (
                with("[server]", "header_read_timeout_ms = 0"),
                "server.header_read_timeout_ms: must be",
            ),
            (with("[server]", "max_connections = 0"), "server.max_connections: must be between"),
            (
                format!("{MINIMAL}\n[detector]\nchild_min_net_share = 1.5\n"),
                "detector.child_min_net_share: must be between 0 and 1",
            ),
            (
                format!("{MINIMAL}\n[detector]\nsmall_max_clients = 4\n"),
                "detector.small_max_clients: must be at least min_clients",
            ),
            (
                MINIMAL.replace("collector.key", "missing.key"),
                "keys.private_key_files[0]: file not found",
            ),
            (MINIMAL.replace("collector.key", "short.key"), "keys.private_key_files[0]: "),
            (
                MINIMAL.replace("[\"collector.key\"]", "[]"),
                "keys.private_key_files: needs at least one",
            ),
            (with("[keys]", "net_tag_secret_file = \"short.key\""), "keys.net_tag_secret_file: "),
            (MINIMAL.replace("path = \"data\"", ""), "store.path: required"),
            (with("[store]", "retention_days = 0"), "store.retention_days: must be at least 1"),
            (with("[store]", "cache_mib = 0"), "store.cache_mib: must be from 1 to 4096"),
            (
                with("[store]", "retention_check_secs = 0"),
                "store.retention_check_secs: must be from 1 to 86400",
            ),
            (
                with("[store]", "retention_check_secs = 86401"),
                "store.retention_check_secs: must be from 1 to 86400",
            ),
            (
                format!("{MINIMAL}\n[limits]\nprefix_rps = 0"),
                "limits.prefix_rps: must be a positive",
            ),
            (
                format!("{MINIMAL}\n[limits]\nagent_rps = -1.5"),
                "limits.agent_rps: must be a positive",
            ),
            (
                format!("{MINIMAL}\n[limits]\nnel_prefix_burst = 0"),
                "limits.nel_prefix_burst: must be at least 1",
            ),
            (
                format!("{MINIMAL}\n[limits]\nprefix_store_bytes_per_sec = 0"),
                "limits.prefix_store_bytes_per_sec: must be at least 1",
            ),
            (
                format!("{MINIMAL}\n[limits]\nprefix_reports_per_sec = -1.0"),
                "limits.prefix_reports_per_sec: must be a positive",
            ),
            (format!("{MINIMAL}\n[log]\nlevel = \"info,=[\""), "log.level: "),
        ];
        for (text, want) in cases {
            let errors = errors_of(&text, dir.path());
            assert!(errors.iter().any(|e| e.starts_with(want)), "want {want:?}, got {errors:?}");
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key() {
        let dir = dir_with_key();
        let text = MINIMAL.replace("[store]", "[store]\nretension_days = 3");
        let err = Config::from_toml_str(&text, dir.path()).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        assert!(err.to_string().contains("retension_days"), "{err}");
        let err = Config::from_toml_str(&format!("{MINIMAL}\n[bogus]\n"), dir.path()).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let text = format!("{MINIMAL}\n[log]\nformat = \"xml\"");
        let err = Config::from_toml_str(&text, dir.path()).unwrap_err();
        assert!(err.to_string().contains("xml"), "{err}");
        let err = Config::from_toml_str("", dir.path()).unwrap_err();
        assert!(err.to_string().contains("keys.private_key_files"), "{err}");
        assert!(err.to_string().contains("store.path"), "{err}");
    }

    #[test]
    fn hex_round_trips() {
        let bytes: [u8; 32] = std::array::from_fn(|i| i as u8 * 7);
        assert_eq!(decode_hex32(&encode_hex(&bytes)), Some(bytes));
        assert_eq!(decode_hex32("zz"), None);
        assert_eq!(decode_hex32(&"g".repeat(64)), None);
    }

    #[test]
    fn fleet_config_errors_name_fields() {
        assert!(FleetConfig::new("nats://127.0.0.1:4222", "c-1").validate().is_ok());
        let mut c = FleetConfig::new("", "C_1");
        c.subject = "vantage.*".into();
        c.publish_timeout_ms = 1;
        c.max_seen_digests = 1023;
        let fields: Vec<_> = c.validate().unwrap_err().into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "fleet.nats_url",
                "fleet.collector_id",
                "fleet.subject",
                "fleet.publish_timeout_ms",
                "fleet.max_seen_digests"
            ]
        );
        let mut c = FleetConfig::new("nats://127.0.0.1:4222", "c-1");
        c.max_seen_digests = 64 * 1024 * 1024 + 1;
        assert_eq!(c.validate().unwrap_err()[0].0, "fleet.max_seen_digests");
        c.max_seen_digests = 1024;
        assert!(c.validate().is_ok());
    }
}
