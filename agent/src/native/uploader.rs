//! The uploader: `POST {url}/v1/envelopes` over hyper 1 (HTTP/1.1, keep-alive) and
//! tokio-rustls (ring), mapping each answer onto a delivery [`Outcome`].
//!
//! Names are resolved with the system resolver (`getaddrinfo` through tokio), or with
//! hickory-resolver when the config names DNS servers (feature `hickory-dns`; without it
//! validation refuses `dns_servers`, so the list is empty here). When resolution fails, the
//! collector's fixed addresses are used; TLS still verifies the URL's host name (SNI = that
//! name), so a fixed address can only reach a server holding a certificate for the name.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::config::CollectorConfig;
use crate::classify;
use crate::delivery::{DeliveryError, Outcome};
use crate::taxonomy::ErrorType;

/// Header carrying the agent's clock (Unix ms) when an upload attempt is sent. It is outside
/// the signed envelope, so retries never alter the envelope; the collector uses it only to
/// compute report ages, clamped to sane bounds.
pub const SENT_AT_HEADER: &str = "vantage-sent-at";

fn unix_millis_now() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
}

/// The media type of an envelope.
pub const ENVELOPE_MEDIA_TYPE: &str = "application/vnd.vantage.envelope+cbor";

const USER_AGENT: &str = concat!("vantage-agent/", env!("CARGO_PKG_VERSION"));
const MAX_IDLE_PER_COLLECTOR: usize = 4;

/// A rustls client config trusting the webpki roots plus `extra` (ring provider).
pub(crate) fn tls_config(extra: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let (_added, _ignored) = roots.add_parsable_certificates(extra.iter().cloned());
    let mut config = rustls::ClientConfig::builder_with_provider(client_provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports rustls' default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// rustls' *ring* provider as a client without a certificate needs it: every cipher suite,
/// key exchange and signature check of `default_provider()`, but a key provider that loads no
/// private key. The agent never signs in TLS, and the default key provider kept RSA, ECDSA and
/// Ed25519 signing linked in (about 30 kB of the C library, docs/ffi.md "Size").
pub(crate) fn client_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::CryptoProvider {
        key_provider: &NoPrivateKeys,
        ..rustls::crypto::ring::default_provider()
    })
}

/// A [`KeyProvider`](rustls::crypto::KeyProvider) that refuses every key (see
/// [`client_provider`]).
#[derive(Debug)]
struct NoPrivateKeys;

impl rustls::crypto::KeyProvider for NoPrivateKeys {
    fn load_private_key(
        &self,
        _key: rustls::pki_types::PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn rustls::sign::SigningKey>, rustls::Error> {
        Err(rustls::Error::General("the Vantage agent uses no TLS client key".into()))
    }
}

enum Resolver {
    System,
    #[cfg(feature = "hickory-dns")]
    Hickory(Box<hickory_resolver::TokioResolver>),
}

struct Target {
    config: CollectorConfig,
    server_name: ServerName<'static>,
    authority: String,
}

/// The resolver for collector names: hickory-resolver asking `dns_servers`, or the system's
/// when the list is empty.
#[cfg(feature = "hickory-dns")]
fn resolver(dns_servers: &[SocketAddr], timeout: Duration) -> Resolver {
    if dns_servers.is_empty() {
        return Resolver::System;
    }
    use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig};
    let ips: Vec<IpAddr> = dns_servers.iter().map(SocketAddr::ip).collect();
    let port = dns_servers[0].port();
    let group = NameServerConfigGroup::from_ips_clear(&ips, port, true);
    let config = ResolverConfig::from_parts(None, vec![], group);
    let mut builder = hickory_resolver::Resolver::builder_with_config(
        config,
        hickory_resolver::name_server::TokioConnectionProvider::default(),
    );
    builder.options_mut().timeout = (timeout / 3).min(Duration::from_secs(5));
    builder.options_mut().attempts = 1;
    Resolver::Hickory(Box::new(builder.build()))
}

/// The resolver for collector names: always the system's, since validation refuses
/// `dns_servers` in a build without the `hickory-dns` feature.
#[cfg(not(feature = "hickory-dns"))]
fn resolver(dns_servers: &[SocketAddr], _timeout: Duration) -> Resolver {
    debug_assert!(dns_servers.is_empty(), "validate() refuses dns_servers without hickory-dns");
    Resolver::System
}

/// A byte stream hyper runs HTTP/1.1 over: TLS over TCP here, TCP or TLS in the probes. Both
/// hand hyper a `Box<dyn Stream>` and a `Full<Bytes>` body, so the library holds one copy of
/// hyper's HTTP/1.1 client, not one per stream type (about 0.03 MB of the C library).
pub(crate) trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

/// Sends envelopes to the configured collectors, reusing connections.
pub(crate) struct Uploader {
    targets: Vec<Target>,
    tls: TlsConnector,
    resolver: Resolver,
    timeout: Duration,
    idle: Mutex<HashMap<usize, Vec<SendRequest<Full<Bytes>>>>>,
}

impl Uploader {
    pub(crate) fn new(
        collectors: &[CollectorConfig],
        extra_roots: &[CertificateDer<'static>],
        dns_servers: &[SocketAddr],
        timeout: Duration,
    ) -> Uploader {
        let targets = collectors
            .iter()
            .map(|c| {
                let host = c.host().as_str();
                let server_name = match host.parse::<IpAddr>() {
                    Ok(ip) => ServerName::IpAddress(ip.into()),
                    Err(_) => ServerName::try_from(host.to_owned()).unwrap_or_else(|_| {
                        ServerName::IpAddress(IpAddr::from([0, 0, 0, 0]).into())
                    }),
                };
                let host_text =
                    if host.contains(':') { format!("[{host}]") } else { host.to_owned() };
                let authority =
                    if c.port() == 443 { host_text } else { format!("{host_text}:{}", c.port()) };
                Target { config: c.clone(), server_name, authority }
            })
            .collect();
        Uploader {
            targets,
            tls: TlsConnector::from(tls_config(extra_roots)),
            resolver: resolver(dns_servers, timeout),
            timeout,
            idle: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `body` to collector `index` and maps the answer; a failure comes with its
    /// classified cause (no URL or address in it).
    pub(crate) async fn send(&self, index: usize, body: Bytes) -> (Outcome, Option<DeliveryError>) {
        match tokio::time::timeout(self.timeout, self.send_inner(index, body)).await {
            Ok(Ok(outcome)) => (outcome, DeliveryError::of_outcome(outcome)),
            Ok(Err(cause)) => (Outcome::NetworkError, Some(cause)),
            Err(_) => (
                Outcome::NetworkError,
                Some(DeliveryError::network(
                    ErrorType::TcpTimedOut,
                    format!("no answer within {} ms", self.timeout.as_millis()),
                )),
            ),
        }
    }

    async fn send_inner(&self, index: usize, body: Bytes) -> Result<Outcome, DeliveryError> {
        let Some(target) = self.targets.get(index) else {
            return Err(DeliveryError::network(ErrorType::Unknown, "no such collector"));
        };
        let mut sender = match self.idle_sender(index).await {
            Some(s) => s,
            None => match self.connect(target).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(collector = index, error = %e, "collector connection failed");
                    return Err(e);
                }
            },
        };
        let request = http::Request::post(target.config.envelopes_path())
            .header(http::header::HOST, &target.authority)
            .header(http::header::CONTENT_TYPE, ENVELOPE_MEDIA_TYPE)
            .header(http::header::USER_AGENT, USER_AGENT)
            // Outside the (unchanging, signed) envelope: the agent clock when this attempt is
            // sent, so the collector dates a buffered report by its age, not by its sealing.
            .header(SENT_AT_HEADER, unix_millis_now().to_string())
            .body(Full::new(body));
        let request =
            request.map_err(|e| DeliveryError::network(ErrorType::HttpFailed, e.to_string()))?;
        let response = match sender.send_request(request).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(collector = index, error = %e, "collector request failed");
                let kind = classify::error_chain(&e).unwrap_or(ErrorType::HttpProtocolError);
                return Err(DeliveryError::network(kind, e.to_string()));
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // Read the (small) body so the connection can carry the next request.
        let mut body = response.into_body();
        let mut read = 0usize;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => read += f.data_ref().map_or(0, |d| d.len()),
                Err(_) => break,
            }
            if read > 64 * 1024 {
                break;
            }
        }
        if hyper::body::Body::is_end_stream(&body) {
            self.return_sender(index, sender);
        }
        Ok(outcome_of(status, retry_after))
    }

    async fn idle_sender(&self, index: usize) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let candidate = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.get_mut(&index).and_then(Vec::pop)
            }?;
            let mut candidate = candidate;
            if !candidate.is_closed() && candidate.ready().await.is_ok() {
                return Some(candidate);
            }
        }
    }

    fn return_sender(&self, index: usize, sender: SendRequest<Full<Bytes>>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(index).or_default();
        if list.len() < MAX_IDLE_PER_COLLECTOR {
            list.push(sender);
        }
    }

    /// Drops every idle connection (consent withdrawn, shutdown, the agent's task going idle).
    pub(crate) fn close_idle(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Name resolution gets a third of the request timeout (at most 5 s), so that a failing
    /// resolver leaves time to try the fixed addresses.
    fn dns_timeout(&self) -> Duration {
        (self.timeout / 3).min(Duration::from_secs(5))
    }

    /// The addresses to try, or the DNS failure when there are none.
    async fn resolve(&self, target: &Target) -> Result<Vec<SocketAddr>, DeliveryError> {
        let host = target.config.host().as_str();
        let port = target.config.port();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let timed_out = || {
            DeliveryError::network(
                ErrorType::DnsTimedOut,
                format!("no answer within {} ms", self.dns_timeout().as_millis()),
            )
        };
        let resolved: Result<Vec<SocketAddr>, DeliveryError> = match &self.resolver {
            Resolver::System => {
                let lookup = tokio::net::lookup_host((host, port));
                match tokio::time::timeout(self.dns_timeout(), lookup).await {
                    Ok(Ok(addrs)) => Ok(addrs.collect()),
                    Ok(Err(e)) => {
                        let kind = match classify::io_error(&e) {
                            k if k.is_dns() => k,
                            _ => ErrorType::DnsFailed,
                        };
                        Err(DeliveryError::network(kind, e.to_string()))
                    }
                    Err(_) => Err(timed_out()),
                }
            }
            #[cfg(feature = "hickory-dns")]
            Resolver::Hickory(r) => {
                match tokio::time::timeout(self.dns_timeout(), r.lookup_ip(host)).await {
                    Ok(Ok(ips)) => Ok(ips.iter().map(|ip| SocketAddr::new(ip, port)).collect()),
                    Ok(Err(e)) => {
                        let kind = if e.is_no_records_found() {
                            ErrorType::DnsNameNotResolved
                        } else {
                            ErrorType::DnsFailed
                        };
                        Err(DeliveryError::network(kind, e.to_string()))
                    }
                    Err(_) => Err(timed_out()),
                }
            }
        };
        match resolved {
            Ok(addrs) if !addrs.is_empty() => Ok(addrs),
            other => {
                tracing::debug!(host, "collector name did not resolve; using its fixed addresses");
                if target.config.fixed_addrs.is_empty() {
                    Err(other.err().unwrap_or_else(|| {
                        DeliveryError::network(ErrorType::DnsNameNotResolved, "no address")
                    }))
                } else {
                    Ok(target.config.fixed_addrs.clone())
                }
            }
        }
    }

    async fn connect(&self, target: &Target) -> Result<SendRequest<Full<Bytes>>, DeliveryError> {
        let addrs = self.resolve(target).await?;
        let io = |e: std::io::Error| DeliveryError::network(classify::io_error(&e), tls_detail(&e));
        let mut last = DeliveryError::network(ErrorType::TcpFailed, "no address for the collector");
        for addr in addrs {
            let tcp = match tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
                .await
            {
                Ok(Ok(tcp)) => tcp,
                Ok(Err(e)) => {
                    last = io(e);
                    continue;
                }
                Err(_) => {
                    last = DeliveryError::network(
                        ErrorType::TcpTimedOut,
                        "connect: no answer within 10 s",
                    );
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let tls = self.tls.connect(target.server_name.clone(), tcp).await.map_err(io)?;
            let io: Box<dyn Stream> = Box::new(tls);
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| {
                    let kind = classify::error_chain(&e).unwrap_or(ErrorType::HttpProtocolError);
                    DeliveryError::network(kind, e.to_string())
                })?;
            // The connection future itself, as the probes spawn it: one task type for both.
            drop(tokio::spawn(connection));
            return Ok(sender);
        }
        Err(last)
    }
}

/// The words of an I/O error for a diagnosis: the rustls error inside it when there is one
/// (its `Debug` names the reason, such as `CaUsedAsEndEntity`, which `Display` may hide).
fn tls_detail(e: &std::io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(cert)) => {
            format!("invalid peer certificate: {cert:?}")
        }
        Some(tls) => tls.to_string(),
        None => e.to_string(),
    }
}

/// Maps a status (and a parsed `Retry-After`, in ms) onto an [`Outcome`].
pub(crate) fn outcome_of(status: u16, retry_after_ms: Option<u64>) -> Outcome {
    match status {
        200..=299 => Outcome::Accepted,
        400 | 413 => Outcome::Rejected { status },
        429 | 503 => Outcome::RetryAfter { status, delay_ms: retry_after_ms.unwrap_or(0) },
        _ => Outcome::ServerError { status },
    }
}

/// Parses `Retry-After`: delay-seconds, or an HTTP date (IMF-fixdate), as ms from `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at = parse_http_date(value)?;
    let now_secs = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    Some(at.saturating_sub(now_secs).saturating_mul(1000))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` -> seconds since the epoch.
fn parse_http_date(s: &str) -> Option<u64> {
    let (_, rest) = s.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let sec: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, mo) = if month <= 2 { (year - 1, month + 9) } else { (year, month - 3) };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * mo as i64 + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days).ok().map(|d| d * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37
        assert_eq!(parse_retry_after("120", now), Some(120_000));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(0));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(30_000));
        assert_eq!(
            parse_retry_after("Sat, 01 Jan 2000 00:00:00 GMT", SystemTime::UNIX_EPOCH),
            Some(946_684_800_000)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", now), None);
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(outcome_of(202, None), Outcome::Accepted);
        assert_eq!(outcome_of(400, None), Outcome::Rejected { status: 400 });
        assert_eq!(outcome_of(413, None), Outcome::Rejected { status: 413 });
        assert_eq!(outcome_of(429, Some(5)), Outcome::RetryAfter { status: 429, delay_ms: 5 });
        assert_eq!(outcome_of(503, None), Outcome::RetryAfter { status: 503, delay_ms: 0 });
        assert_eq!(outcome_of(500, None), Outcome::ServerError { status: 500 });
        assert_eq!(outcome_of(404, None), Outcome::ServerError { status: 404 });
    }

    #[test]
    fn the_client_provider_keeps_every_suite_and_group_and_loads_no_key() {
        let ours = client_provider();
        let default = rustls::crypto::ring::default_provider();
        let suites = |p: &rustls::crypto::CryptoProvider| {
            p.cipher_suites.iter().map(|s| s.suite()).collect::<Vec<_>>()
        };
        assert_eq!(suites(&ours), suites(&default));
        let groups = |p: &rustls::crypto::CryptoProvider| {
            p.kx_groups.iter().map(|g| g.name()).collect::<Vec<_>>()
        };
        assert_eq!(groups(&ours), groups(&default));
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(vec![0x30, 0x00].into());
        assert!(ours.key_provider.load_private_key(key).is_err());
    }
}
