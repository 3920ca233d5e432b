//! Network probes: [`check`] runs DNS → TCP → TLS → HTTP against a URL and classifies the phase
//! that failed; [`ping`] asks whether a collector answers.
//!
//! ```text
//!  url ──parse──▶ host ──DNS (hickory, /etc/resolv.conf)──▶ addresses ──TCP connect──▶ stream
//!                   │ (IP literal: no DNS)                     (each in turn)            │
//!                   ▼                                                                    ▼
//!            CheckOutcome ◀── status ◀── HTTP/1.1 GET (hyper) ◀── TLS (rustls, https only)
//! ```
//!
//! Every failure is one NEL [`ErrorType`] with its [`Phase`], measured from the start of the
//! check. What each phase gives (verified against real faults: in network namespaces by
//! `tests/tests/agent_faults.rs`, on loopback by this module's unit tests):
//!
//! | phase | what happened                                   | type                        |
//! |-------|-------------------------------------------------|-----------------------------|
//! | DNS   | NXDOMAIN, or the name has no address (NODATA)   | `dns.name_not_resolved`     |
//! | DNS   | SERVFAIL, REFUSED, any other error response code | `dns.failed`                |
//! | DNS   | no answer within the resolver's timeout × attempts, or [`ProbeConfig::dns_timeout`]; also an ICMP port unreachable from the resolver (hickory's unconnected UDP sockets never see it) | `dns.timed_out` |
//! | DNS   | no route to the resolver (link down)            | `dns.unreachable`           |
//! | TCP   | RST to the SYN (closed port, `REJECT --reject-with tcp-reset`), ICMP port unreachable | `tcp.refused` |
//! | TCP   | `ENETUNREACH`/`EHOSTUNREACH` (ICMP unreachable, `unreachable` route, link down), Linux `EINVAL` (`blackhole` route) | `tcp.address_unreachable` |
//! | TCP   | `EACCES` (a `prohibit` route, a local firewall) | `tcp.failed`                |
//! | TCP   | no answer to the SYN within [`ProbeConfig::connect_timeout`] | `tcp.timed_out`   |
//! | TLS   | certificate from an unknown CA / expired / for another name | `tls.cert.authority_invalid` / `tls.cert.date_invalid` / `tls.cert.name_invalid` |
//! | TLS   | the peer is not speaking TLS (a plaintext HTTP port answers `HTTP/1.1 400`) | `tls.protocol.error` |
//! | TLS   | the peer closed during the handshake            | `tcp.closed`                |
//! | TLS   | no handshake within [`ProbeConfig::tls_timeout`] | `tcp.timed_out`            |
//! | HTTP  | status ≥ 400                                    | `http.error` (with the status) |
//! | HTTP  | RST during the exchange                         | `tcp.reset`                 |
//! | HTTP  | a response that is not HTTP, or none at all before the close | `http.response.invalid` |
//! | HTTP  | no complete response within [`ProbeConfig::http_timeout`] | `tcp.timed_out`   |
//!
//! A connection-level type keeps the phase the taxonomy gives it (`tcp.reset` is
//! `connection` even when the reset arrives during the HTTP exchange), as NEL does.
//!
//! The DNS rows above need the `hickory-dns` feature (part of `native`). Without it (the C
//! library's build) names go through the system resolver (`getaddrinfo`, via
//! `tokio::net::lookup_host`), which says less: a name that does not exist or has no address
//! is `dns.name_not_resolved` (read from the `gai_strerror` text, English only, as
//! [`classify::io_error`] does), no answer within [`ProbeConfig::dns_timeout`] is
//! `dns.timed_out`, and everything else (SERVFAIL, REFUSED, glibc's own resolver timeout, an
//! unreachable resolver: `getaddrinfo` reports all of them as `EAI_AGAIN`) is `dns.failed`.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
#[cfg(feature = "hickory-dns")]
use hickory_resolver::config::LookupIpStrategy;
#[cfg(feature = "hickory-dns")]
use hickory_resolver::proto::ProtoErrorKind;
#[cfg(feature = "hickory-dns")]
use hickory_resolver::proto::op::ResponseCode;
#[cfg(feature = "hickory-dns")]
use hickory_resolver::{ResolveError, ResolveErrorKind, TokioResolver};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use super::uploader::Stream;
use crate::classify;
use crate::report::Protocol;
use crate::taxonomy::{ErrorType, Phase};

/// How much of a response body a check reads before it stops: enough to see a reset or a
/// truncated body of an ordinary page, bounded so a probe never downloads a large file.
const MAX_BODY_BYTES: usize = 256 * 1024;

/// The `User-Agent` of probe requests.
const USER_AGENT: &str = concat!("vantage-probe/", env!("CARGO_PKG_VERSION"));

/// Trust and timeouts for [`check`] and [`ping`].
///
/// Cheap to clone: the TLS configuration is shared.
#[derive(Clone)]
pub struct ProbeConfig {
    tls: Arc<rustls::ClientConfig>,
    extra_roots: usize,
    dns_timeout: Duration,
    connect_timeout: Duration,
    tls_timeout: Duration,
    http_timeout: Duration,
}

impl fmt::Debug for ProbeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeConfig")
            .field("extra_roots", &self.extra_roots)
            .field("dns_timeout", &self.dns_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("tls_timeout", &self.tls_timeout)
            .field("http_timeout", &self.http_timeout)
            .finish_non_exhaustive()
    }
}

impl ProbeConfig {
    /// Trusts the webpki roots (Mozilla's CA list) plus `extra_roots` (DER certificates: a
    /// private CA, or the test CA in tests). An extra root that is not a usable CA certificate
    /// is ignored.
    ///
    /// TLS uses the *ring* provider with TLS 1.3, and 1.2 with the feature `tls12` (part of
    /// `native`), and offers ALPN `http/1.1` only, since the probe speaks HTTP/1.1.
    pub fn new(extra_roots: Vec<CertificateDer<'static>>) -> ProbeConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let (added, _ignored) = roots.add_parsable_certificates(extra_roots);
        let mut tls =
            rustls::ClientConfig::builder_with_provider(super::uploader::client_provider())
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports rustls' default protocol versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        ProbeConfig {
            tls: Arc::new(tls),
            extra_roots: added,
            dns_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            tls_timeout: Duration::from_secs(10),
            http_timeout: Duration::from_secs(15),
        }
    }

    /// Upper bound on name resolution (default 5 s). The resolver's own per-query timeout and
    /// attempts come from `/etc/resolv.conf` (`options timeout:N attempts:N`); whichever ends
    /// first gives `dns.timed_out`.
    pub fn dns_timeout(mut self, d: Duration) -> Self {
        self.dns_timeout = d;
        self
    }

    /// Upper bound on one TCP connect, per address tried (default 10 s).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Upper bound on the TLS handshake (default 10 s).
    pub fn tls_timeout(mut self, d: Duration) -> Self {
        self.tls_timeout = d;
        self
    }

    /// Upper bound on the HTTP exchange, from sending the request to the end of the (bounded)
    /// body read (default 15 s). [`ping`] also uses it as the bound on the whole ping.
    pub fn http_timeout(mut self, d: Duration) -> Self {
        self.http_timeout = d;
        self
    }
}

/// A failed check: what failed, in which phase, and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The NEL type of the failure.
    pub error_type: ErrorType,
    /// The phase of `error_type` in the taxonomy ([`ErrorType::phase`]).
    pub phase: Phase,
    /// Milliseconds from the start of the check to the failure.
    pub elapsed_ms: u32,
    /// The HTTP status, for `http.error`.
    pub status: Option<u16>,
    /// The HTTP protocol, once the HTTP exchange started ([`Protocol::Unknown`] before).
    pub protocol: Protocol,
}

/// The result of a [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The server answered with a status below 400.
    Success {
        /// The HTTP status.
        status: u16,
        /// Milliseconds from the start of the check to the end of the response.
        elapsed_ms: u32,
        /// The HTTP protocol used.
        protocol: Protocol,
    },
    /// A phase failed.
    Failed(Failure),
}

/// Why a URL cannot be probed. Network failures are never errors: they are
/// [`CheckOutcome::Failed`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeError {
    /// The URL does not parse as an absolute URI.
    #[error("the URL does not parse as an absolute http(s) URL")]
    InvalidUrl,
    /// The scheme is not `http` or `https`.
    #[error("unsupported URL scheme {0:?} (expected http or https)")]
    UnsupportedScheme(String),
    /// The URL has no host.
    #[error("the URL has no host")]
    MissingHost,
}

/// Probes `url`: DNS (hickory-resolver with the system configuration, so `/etc/resolv.conf`
/// and its `timeout`/`attempts` options; the system resolver without the `hickory-dns`
/// feature, see the module docs), TCP to each resolved address in turn (the last
/// failure counts), TLS for `https` (SNI and verification against the URL's host), then an
/// HTTP/1.1 `GET` of the URL's path. A status of 400 or more is `http.error`.
///
/// The resolver follows `resolv.conf` as glibc does: `timeout:N` seconds per query,
/// `attempts:N` tries in all, A and AAAA queried in parallel; its addresses are tried in the
/// order it returns them.
///
/// `url` is `http://` or `https://`; an IP-literal host (`http://192.0.2.1/`,
/// `https://[2001:db8::1]:8443/`) skips DNS. The resolver is built for each check, so a
/// changed `resolv.conf` takes effect at the next check.
///
/// Errors only when the URL cannot be probed at all ([`ProbeError`]).
pub async fn check(url: &str, config: &ProbeConfig) -> Result<CheckOutcome, ProbeError> {
    let start = Instant::now();
    let target = Target::parse(url)?;
    Ok(match run(&target, config).await {
        Ok((status, protocol)) => match classify::http_status(status) {
            Some(error_type) => CheckOutcome::Failed(Failure {
                phase: error_type.phase(),
                error_type,
                elapsed_ms: elapsed_ms(start),
                status: Some(status),
                protocol,
            }),
            None => CheckOutcome::Success { status, elapsed_ms: elapsed_ms(start), protocol },
        },
        Err(stage) => CheckOutcome::Failed(Failure {
            phase: stage.error_type.phase(),
            error_type: stage.error_type,
            elapsed_ms: elapsed_ms(start),
            status: None,
            protocol: stage.protocol,
        }),
    })
}

/// Is a collector reachable? `GET {base_url}/v1/ping`, expecting `204 No Content`.
///
/// When the host of `base_url` does not resolve (any DNS failure), `fixed_addrs` are tried
/// instead, each through TCP, TLS and HTTP, in order, until one answers; TLS still verifies the certificate against the host of `base_url`, so a
/// fixed address only helps when it really serves that collector. The whole ping is bounded
/// by [`ProbeConfig::http_timeout`]. Never errors: any failure, including an unusable
/// `base_url`, is `false`.
pub async fn ping(base_url: &str, fixed_addrs: &[SocketAddr], config: &ProbeConfig) -> bool {
    let url = format!("{}/v1/ping", base_url.trim_end_matches('/'));
    let Ok(target) = Target::parse(&url) else {
        return false;
    };
    let attempt = async {
        match addresses(&target, config).await {
            Ok(addrs) => is_pong(exchange(&addrs, &target, config).await),
            Err(_) => {
                for addr in fixed_addrs {
                    if is_pong(exchange(&[*addr], &target, config).await) {
                        return true;
                    }
                }
                false
            }
        }
    };
    tokio::time::timeout(config.http_timeout, attempt).await.unwrap_or(false)
}

fn is_pong(result: Result<(u16, Protocol), Stage>) -> bool {
    matches!(result, Ok((204, _)))
}

/// A failure inside [`run`]: the type, and the protocol reached.
#[derive(Debug)]
struct Stage {
    error_type: ErrorType,
    protocol: Protocol,
}

impl From<ErrorType> for Stage {
    fn from(error_type: ErrorType) -> Self {
        Stage { error_type, protocol: Protocol::Unknown }
    }
}

/// The probe proper: the status and protocol of the response, or the failure.
async fn run(target: &Target, config: &ProbeConfig) -> Result<(u16, Protocol), Stage> {
    let addrs = addresses(target, config).await?;
    exchange(&addrs, target, config).await
}

/// The addresses to connect to: the IP literal, or what the resolver returns.
async fn addresses(target: &Target, config: &ProbeConfig) -> Result<Vec<SocketAddr>, ErrorType> {
    match &target.host {
        Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, target.port)]),
        Host::Name(name) => {
            let ips = resolve(name, config.dns_timeout).await?;
            Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, target.port)).collect())
        }
    }
}

/// TCP to the first of `addrs` that accepts, TLS for https, then the HTTP exchange.
async fn exchange(
    addrs: &[SocketAddr],
    target: &Target,
    config: &ProbeConfig,
) -> Result<(u16, Protocol), Stage> {
    let tcp = connect(addrs, config.connect_timeout).await?;
    let io: Box<dyn Stream> = if target.https {
        Box::new(handshake(tcp, &target.host, config).await?)
    } else {
        Box::new(tcp)
    };
    let status = with_timeout(config.http_timeout, http_get(io, target))
        .await
        .map_err(|error_type| Stage { error_type, protocol: Protocol::Http1 })?;
    Ok((status, Protocol::Http1))
}

/// `Ok(value)` of `fut`, or `tcp.timed_out` when it takes longer than `limit`.
async fn with_timeout<T>(
    limit: Duration,
    fut: impl Future<Output = Result<T, ErrorType>>,
) -> Result<T, ErrorType> {
    tokio::time::timeout(limit, fut).await.unwrap_or(Err(ErrorType::TcpTimedOut))
}

#[cfg(feature = "hickory-dns")]
async fn resolve(name: &str, limit: Duration) -> Result<Vec<IpAddr>, ErrorType> {
    let mut builder = TokioResolver::builder_tokio().map_err(|e| dns_error(&e))?;
    let options = builder.options_mut();
    // resolv.conf's `attempts:N` counts tries (glibc); hickory's `attempts` counts retries
    // after the first try, so `timeout:1 attempts:1` would take two seconds per query.
    options.attempts = options.attempts.saturating_sub(1);
    // A and AAAA in parallel, as glibc does: a silent resolver then costs one timeout, not two
    // (the default A-then-AAAA strategy waits for each in turn).
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    let resolver = builder.build();
    let lookup = match tokio::time::timeout(limit, resolver.lookup_ip(name)).await {
        Ok(result) => result.map_err(|e| dns_error(&e))?,
        Err(_) => return Err(ErrorType::DnsTimedOut),
    };
    let ips: Vec<IpAddr> = lookup.iter().collect();
    if ips.is_empty() { Err(ErrorType::DnsNameNotResolved) } else { Ok(ips) }
}

/// Resolves `name` with the system resolver (a build without the `hickory-dns` feature).
#[cfg(not(feature = "hickory-dns"))]
async fn resolve(name: &str, limit: Duration) -> Result<Vec<IpAddr>, ErrorType> {
    let addrs = match tokio::time::timeout(limit, tokio::net::lookup_host((name, 0))).await {
        Ok(result) => result.map_err(|e| system_dns_error(&e))?,
        Err(_) => return Err(ErrorType::DnsTimedOut),
    };
    let mut ips: Vec<IpAddr> = Vec::new();
    for addr in addrs {
        // getaddrinfo lists an address once per socket type unless hints say otherwise.
        if !ips.contains(&addr.ip()) {
            ips.push(addr.ip());
        }
    }
    if ips.is_empty() { Err(ErrorType::DnsNameNotResolved) } else { Ok(ips) }
}

/// Classifies a failed system lookup: a DNS type from [`classify::io_error`] (which reads the
/// `gai_strerror` text), otherwise (`EAI_SYSTEM` arrives as an OS error) `dns.failed`.
#[cfg(not(feature = "hickory-dns"))]
fn system_dns_error(err: &std::io::Error) -> ErrorType {
    match classify::io_error(err) {
        t if t.phase() == Phase::Dns => t,
        _ => ErrorType::DnsFailed,
    }
}

/// Classifies a resolver error by its kind (see the module docs' table).
#[cfg(feature = "hickory-dns")]
fn dns_error(err: &ResolveError) -> ErrorType {
    let ResolveErrorKind::Proto(proto) = err.kind() else {
        // Message/Msg: hickory's own failures (no configuration, invalid name).
        return ErrorType::DnsFailed;
    };
    match proto.kind() {
        // NoError without records: the name exists but has no address (NODATA).
        ProtoErrorKind::NoRecordsFound {
            response_code: ResponseCode::NXDomain | ResponseCode::NoError,
            ..
        } => ErrorType::DnsNameNotResolved,
        // SERVFAIL, REFUSED and the other error codes.
        ProtoErrorKind::NoRecordsFound { .. } => ErrorType::DnsFailed,
        ProtoErrorKind::Timeout => ErrorType::DnsTimedOut,
        ProtoErrorKind::NoConnections => ErrorType::DnsUnreachable,
        ProtoErrorKind::Io(io) => match classify::io_error(io) {
            ErrorType::TcpTimedOut => ErrorType::DnsTimedOut,
            t if t.is_unreachable() || t == ErrorType::TcpRefused => ErrorType::DnsUnreachable,
            _ => ErrorType::DnsFailed,
        },
        _ => ErrorType::DnsFailed,
    }
}

/// Connects to each address in turn; the last failure counts.
async fn connect(addrs: &[SocketAddr], limit: Duration) -> Result<TcpStream, ErrorType> {
    let mut last = ErrorType::DnsNameNotResolved;
    for addr in addrs {
        match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last = classify::io_error(&e),
            Err(_) => last = ErrorType::TcpTimedOut,
        }
    }
    Err(last)
}

async fn handshake(
    tcp: TcpStream,
    host: &Host,
    config: &ProbeConfig,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ErrorType> {
    let name = match host {
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
        Host::Name(name) => {
            ServerName::try_from(name.clone()).map_err(|_| ErrorType::TlsCertNameInvalid)?
        }
    };
    let connector = tokio_rustls::TlsConnector::from(config.tls.clone());
    with_timeout(config.tls_timeout, async {
        connector.connect(name, tcp).await.map_err(|e| classify::io_error(&e))
    })
    .await
}

async fn http_get(io: Box<dyn Stream>, target: &Target) -> Result<u16, ErrorType> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| hyper_error(&e))?;
    // The connection task drives the socket; it ends with the response (no keep-alive reuse)
    // and is aborted when the exchange fails or times out.
    let driver = AbortOnDrop(tokio::spawn(conn));
    let request = http::Request::get(target.path_and_query.as_str())
        .header(http::header::HOST, target.authority.as_str())
        .header(http::header::USER_AGENT, USER_AGENT)
        .header(http::header::CONNECTION, "close")
        // `Full` of nothing (no body, no Content-Length) rather than `Empty`: the uploader's
        // body type, so both share one instantiation of hyper's client (`Stream`).
        .body(Full::new(Bytes::new()))
        .map_err(|_| ErrorType::HttpFailed)?;
    let response = sender.send_request(request).await.map_err(|e| hyper_error(&e))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut read = 0usize;
    while read < MAX_BODY_BYTES {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            Some(Err(e)) => return Err(hyper_error(&e)),
        }
    }
    drop(driver);
    Ok(status)
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), hyper::Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Classifies an error of the HTTP exchange: a transport error inside it (reset, TLS alert)
/// decides; otherwise a response that is not HTTP, or no response before the close, is
/// `http.response.invalid` (as curl's `WEIRD_SERVER_REPLY` and `GOT_NOTHING` are); anything
/// else is `http.failed`.
pub(crate) fn hyper_error(err: &hyper::Error) -> ErrorType {
    if let Some(t) = classify::error_chain(err) {
        return t;
    }
    if err.is_parse() || err.is_parse_status() || err.is_incomplete_message() {
        ErrorType::HttpResponseInvalid
    } else if err.is_timeout() {
        ErrorType::TcpTimedOut
    } else {
        ErrorType::HttpFailed
    }
}

fn elapsed_ms(start: Instant) -> u32 {
    u32::try_from(start.elapsed().as_millis()).unwrap_or(u32::MAX)
}

/// The host of a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Host {
    /// An IP literal (IPv6 without brackets).
    Ip(IpAddr),
    /// A DNS name, lower case.
    Name(String),
}

/// What a probe needs from a URL.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    https: bool,
    host: Host,
    port: u16,
    /// `host[:port]` as written in the URL, for the `Host` header.
    authority: String,
    /// The path and query, `/` when the URL has none.
    path_and_query: String,
}

impl Target {
    fn parse(url: &str) -> Result<Target, ProbeError> {
        let uri: http::Uri = url.parse().map_err(|_| ProbeError::InvalidUrl)?;
        let https = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("https") => true,
            Some(s) if s.eq_ignore_ascii_case("http") => false,
            Some(other) => return Err(ProbeError::UnsupportedScheme(other.to_owned())),
            None => return Err(ProbeError::InvalidUrl),
        };
        let authority = uri.authority().ok_or(ProbeError::MissingHost)?;
        if authority.as_str().contains('@') {
            // Credentials in a probe URL would be sent nowhere and logged nowhere: refuse them.
            return Err(ProbeError::InvalidUrl);
        }
        let raw_host = authority.host();
        if raw_host.is_empty() {
            return Err(ProbeError::MissingHost);
        }
        let unbracketed = raw_host.trim_start_matches('[').trim_end_matches(']');
        let host = match unbracketed.parse::<IpAddr>() {
            Ok(ip) => Host::Ip(ip),
            Err(_) if raw_host.starts_with('[') => return Err(ProbeError::InvalidUrl),
            Err(_) => Host::Name(raw_host.to_ascii_lowercase()),
        };
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let path_and_query =
            uri.path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned());
        let path_and_query =
            if path_and_query.is_empty() { "/".to_owned() } else { path_and_query };
        Ok(Target { https, host, port, authority: authority.as_str().to_owned(), path_and_query })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "hickory-dns")]
    use hickory_resolver::proto::ProtoError;
    use std::io;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn parse(url: &str) -> Target {
        Target::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"))
    }

    #[test]
    fn parses_urls() {
        let t = parse("https://API.Example.com/v1/x?y=1");
        assert!(t.https);
        assert_eq!(t.host, Host::Name("api.example.com".into()));
        assert_eq!(t.port, 443);
        assert_eq!(t.authority, "API.Example.com");
        assert_eq!(t.path_and_query, "/v1/x?y=1");

        let t = parse("http://example.test:8080");
        assert!(!t.https);
        assert_eq!(t.port, 8080);
        assert_eq!(t.path_and_query, "/");

        let t = parse("HTTP://192.0.2.7/");
        assert_eq!(t.host, Host::Ip(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))));
        assert_eq!(t.port, 80);

        let t = parse("https://[2001:db8::1]:8443/p");
        assert_eq!(t.host, Host::Ip(IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap())));
        assert_eq!(t.port, 8443);
        assert_eq!(t.authority, "[2001:db8::1]:8443");
    }

    #[test]
    fn rejects_unusable_urls() {
        assert_eq!(
            Target::parse("ftp://example.test/"),
            Err(ProbeError::UnsupportedScheme("ftp".into()))
        );
        assert_eq!(Target::parse("/just/a/path"), Err(ProbeError::InvalidUrl));
        assert_eq!(Target::parse("not a url"), Err(ProbeError::InvalidUrl));
        assert_eq!(Target::parse(""), Err(ProbeError::InvalidUrl));
        assert_eq!(Target::parse("https://user:pw@example.test/"), Err(ProbeError::InvalidUrl));
        assert_eq!(Target::parse("https://[not-an-ip]/"), Err(ProbeError::InvalidUrl));
    }

    #[cfg(feature = "hickory-dns")]
    fn no_records(code: ResponseCode) -> ResolveError {
        ProtoError::nx_error(Box::default(), None, None, None, code, false, None).into()
    }

    #[cfg(feature = "hickory-dns")]
    #[test]
    fn dns_errors_by_kind() {
        let cases = [
            (no_records(ResponseCode::NXDomain), ErrorType::DnsNameNotResolved),
            (no_records(ResponseCode::NoError), ErrorType::DnsNameNotResolved),
            (no_records(ResponseCode::ServFail), ErrorType::DnsFailed),
            (no_records(ResponseCode::Refused), ErrorType::DnsFailed),
            (ProtoError::from(ProtoErrorKind::Timeout).into(), ErrorType::DnsTimedOut),
            (ProtoError::from(ProtoErrorKind::NoConnections).into(), ErrorType::DnsUnreachable),
            (
                ResolveError::from(io::Error::from_raw_os_error(libc::ENETUNREACH)),
                ErrorType::DnsUnreachable,
            ),
            (
                ResolveError::from(io::Error::from_raw_os_error(libc::ECONNREFUSED)),
                ErrorType::DnsUnreachable,
            ),
            (ResolveError::from(io::Error::from(io::ErrorKind::TimedOut)), ErrorType::DnsTimedOut),
            (ResolveError::from(io::Error::other("boom")), ErrorType::DnsFailed),
            (ResolveError::from("no nameservers"), ErrorType::DnsFailed),
            (ProtoError::from(ProtoErrorKind::Busy).into(), ErrorType::DnsFailed),
        ];
        for (err, expected) in cases {
            assert_eq!(dns_error(&err), expected, "{err:?}");
        }
    }

    #[cfg(not(feature = "hickory-dns"))]
    #[test]
    fn system_dns_errors() {
        let lookup = |detail: &str| {
            io::Error::other(format!("failed to lookup address information: {detail}"))
        };
        let cases = [
            (lookup("Name or service not known"), ErrorType::DnsNameNotResolved),
            (lookup("No address associated with hostname"), ErrorType::DnsNameNotResolved),
            (lookup("Temporary failure in name resolution"), ErrorType::DnsFailed),
            (lookup("Non-recoverable failure in name resolution"), ErrorType::DnsFailed),
            // EAI_SYSTEM: the OS error, which is no DNS type of its own.
            (io::Error::from_raw_os_error(libc::ECONNREFUSED), ErrorType::DnsFailed),
            (io::Error::other("boom"), ErrorType::DnsFailed),
        ];
        for (err, expected) in cases {
            assert_eq!(system_dns_error(&err), expected, "{err:?}");
        }
    }

    /// The system resolver answers `localhost` from /etc/hosts (no DNS server is asked), each
    /// address once.
    #[cfg(not(feature = "hickory-dns"))]
    #[tokio::test]
    async fn system_resolver_resolves_localhost() {
        let ips = resolve("localhost", Duration::from_secs(5)).await.unwrap();
        assert!(!ips.is_empty());
        assert!(ips.iter().all(IpAddr::is_loopback), "{ips:?}");
        let mut unique = ips.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ips.len(), "{ips:?}");
    }

    /// A real hyper client against real loopback servers that misbehave.
    #[tokio::test]
    async fn http_errors_from_real_servers() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpListener;

        async fn serve_once(reply: &'static [u8]) -> u16 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                let (mut sock, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = sock.read(&mut buf).await;
                sock.write_all(reply).await.unwrap();
                sock.shutdown().await.unwrap();
            });
            port
        }
        let config = ProbeConfig::new(Vec::new()).http_timeout(Duration::from_secs(5));
        let failure = |outcome: CheckOutcome| match outcome {
            CheckOutcome::Failed(f) => f,
            other => panic!("expected a failure, got {other:?}"),
        };

        let port = serve_once(b"this is not http\r\n\r\n").await;
        let f = failure(check(&format!("http://127.0.0.1:{port}/"), &config).await.unwrap());
        assert_eq!(
            (f.error_type, f.phase, f.protocol),
            (ErrorType::HttpResponseInvalid, Phase::Application, Protocol::Http1)
        );

        let port = serve_once(b"").await;
        let f = failure(check(&format!("http://127.0.0.1:{port}/"), &config).await.unwrap());
        assert_eq!(f.error_type, ErrorType::HttpResponseInvalid);

        let port =
            serve_once(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        let f = failure(check(&format!("http://127.0.0.1:{port}/"), &config).await.unwrap());
        assert_eq!((f.error_type, f.status), (ErrorType::HttpError, Some(503)));

        let port = serve_once(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        match check(&format!("http://127.0.0.1:{port}/x"), &config).await.unwrap() {
            CheckOutcome::Success { status, protocol, .. } => {
                assert_eq!((status, protocol), (204, Protocol::Http1));
            }
            other => panic!("{other:?}"),
        }

        // A closed port refuses; an IP literal never touches DNS.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let f = failure(check(&format!("https://127.0.0.1:{port}/"), &config).await.unwrap());
        assert_eq!(
            (f.error_type, f.phase, f.protocol),
            (ErrorType::TcpRefused, Phase::Connection, Protocol::Unknown)
        );
        assert!(!ping(&format!("http://127.0.0.1:{port}"), &[], &config).await);
    }

    /// Servers that accept and then stall or close, on loopback.
    #[tokio::test]
    async fn stalls_and_closes_during_tls_and_http() {
        use tokio::io::AsyncReadExt;
        use tokio::net::TcpListener;

        /// Accepts one connection; reads what comes if `read`, then holds it open for a while
        /// or closes it at once.
        async fn server(read: bool, hold: bool) -> u16 {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(async move {
                let (mut sock, _) = listener.accept().await.unwrap();
                if read {
                    let mut buf = [0u8; 4096];
                    let _ = sock.read(&mut buf).await;
                }
                if hold {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            });
            port
        }
        let config = ProbeConfig::new(Vec::new())
            .tls_timeout(Duration::from_millis(300))
            .http_timeout(Duration::from_millis(300));
        let failure = |outcome: CheckOutcome| match outcome {
            CheckOutcome::Failed(f) => f,
            other => panic!("expected a failure, got {other:?}"),
        };

        let port = server(true, false).await;
        let f = failure(check(&format!("https://127.0.0.1:{port}/"), &config).await.unwrap());
        assert_eq!((f.error_type, f.protocol), (ErrorType::TcpClosed, Protocol::Unknown));

        let port = server(true, true).await;
        let f = failure(check(&format!("https://127.0.0.1:{port}/"), &config).await.unwrap());
        assert_eq!((&f.error_type, f.protocol), (&ErrorType::TcpTimedOut, Protocol::Unknown));
        assert!((300..5000).contains(&f.elapsed_ms), "{f:?}");

        let port = server(true, true).await;
        let f = failure(check(&format!("http://127.0.0.1:{port}/"), &config).await.unwrap());
        assert_eq!((&f.error_type, f.protocol), (&ErrorType::TcpTimedOut, Protocol::Http1));
        assert!((300..5000).contains(&f.elapsed_ms), "{f:?}");
    }

    #[test]
    fn debug_shows_timeouts_not_keys() {
        let config = ProbeConfig::new(Vec::new()).connect_timeout(Duration::from_millis(250));
        let text = format!("{config:?}");
        assert!(text.contains("connect_timeout: 250ms"), "{text}");
        assert!(text.contains("extra_roots: 0"), "{text}");
    }
}
