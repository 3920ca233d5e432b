//! A small HTTP(S) client for receivers: one connection per POST (notifications are rare),
//! hyper 1 HTTP/1.1 over tokio (and tokio-rustls with the ring provider for `https`).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::payload::days_from_civil;
use super::{ReceiverConfig, ReceiverKind};

const USER_AGENT: &str = concat!("vantage-collector/", env!("CARGO_PKG_VERSION"));
/// Bytes of an answer body read (and discarded) at most.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Reads a PEM file of CA certificates; at least one must be there.
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no PEM certificate in it", path.display()));
    }
    Ok(certs)
}

/// Why an attempt got no HTTP answer. Never carries the URL (it may hold a secret).
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// Name resolution found no address.
    #[error("the receiver's host name did not resolve")]
    Resolve,
    /// Every address refused or timed out.
    #[error("connecting failed: {0}")]
    Connect(std::io::Error),
    /// The TLS handshake failed (certificate, protocol).
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The HTTP exchange failed (connection closed, malformed answer).
    #[error("HTTP exchange failed: {0}")]
    Http(hyper::Error),
    /// No answer within the receiver's timeout.
    #[error("no answer within {0} ms")]
    Timeout(u64),
}

/// An HTTP answer: the status and a parsed `Retry-After` (ms from now).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) retry_after_ms: Option<u64>,
}

/// A receiver's endpoint, parsed once.
pub(crate) struct Endpoint {
    tls: Option<(TlsConnector, ServerName<'static>)>,
    host: String,
    port: u16,
    authority: String,
    path: String,
    headers: Vec<(http::HeaderName, http::HeaderValue)>,
    timeout: Duration,
}

impl Endpoint {
    /// Parses a validated receiver config (the POST path for Alertmanager is
    /// `{url}/api/v2/alerts`). Fails only for what `NotifyConfig::validate` refuses.
    pub(crate) fn new(r: &ReceiverConfig) -> Result<Endpoint, String> {
        let uri: http::Uri = r.url.parse().map_err(|e| format!("url: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err("url: not http or https".into()),
        };
        let authority = uri.authority().ok_or("url: no host")?.as_str().to_owned();
        let host = uri.host().ok_or("url: no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let mut path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        if r.kind == ReceiverKind::Alertmanager {
            let base = uri.path().trim_end_matches('/');
            path = format!("{base}/api/v2/alerts");
        }
        if path.is_empty() {
            path = "/".into();
        }
        let tls = if https {
            let extra = match &r.ca_file {
                Some(p) => read_ca_file(p).map_err(|e| format!("ca_file: {e}"))?,
                None => Vec::new(),
            };
            let server_name = match host.parse::<IpAddr>() {
                Ok(ip) => ServerName::IpAddress(ip.into()),
                Err(_) => ServerName::try_from(host.clone())
                    .map_err(|e| format!("url: host is not a TLS server name: {e}"))?,
            };
            Some((TlsConnector::from(tls_config(&extra)), server_name))
        } else {
            None
        };
        let mut headers = Vec::new();
        for (name, value) in &r.headers {
            let name = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("headers.{name}: not a header name"))?;
            let mut value = http::HeaderValue::from_str(value)
                .map_err(|_| format!("headers.{name}: not a header value"))?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        Ok(Endpoint {
            tls,
            host,
            port,
            authority,
            path,
            headers,
            timeout: Duration::from_millis(r.timeout_ms.max(1)),
        })
    }

    /// POSTs `body` as JSON; the whole attempt is bounded by the receiver's timeout.
    pub(crate) async fn post(&self, body: Bytes) -> Result<Answer, SendError> {
        let ms = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        tokio::time::timeout(self.timeout, self.post_inner(body))
            .await
            .unwrap_or(Err(SendError::Timeout(ms)))
    }

    async fn post_inner(&self, body: Bytes) -> Result<Answer, SendError> {
        let addrs: Vec<SocketAddr> = match self.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, self.port)],
            Err(_) => tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|_| SendError::Resolve)?
                .collect(),
        };
        if addrs.is_empty() {
            return Err(SendError::Resolve);
        }
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = tcp.ok_or_else(|| {
            SendError::Connect(last.unwrap_or_else(|| std::io::ErrorKind::NotFound.into()))
        })?;
        let _ = tcp.set_nodelay(true);
        let mut request = http::Request::post(self.path.as_str())
            .header(http::header::HOST, self.authority.as_str())
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, USER_AGENT)
            .header(http::header::CONNECTION, "close")
            .body(Full::new(body))
            .expect("the path, authority and fixed headers were checked when parsed");
        for (name, value) in &self.headers {
            request.headers_mut().append(name.clone(), value.clone());
        }
        match &self.tls {
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await.map_err(SendError::Tls)?;
                exchange(tls, request).await
            }
            None => exchange(tcp, request).await,
        }
    }
}

async fn exchange<T>(io: T, request: http::Request<Full<Bytes>>) -> Result<Answer, SendError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(SendError::Http)?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = async {
        let response = sender.send_request(request).await.map_err(SendError::Http)?;
        let status = response.status().as_u16();
        let retry_after_ms = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // Read (a bounded part of) the answer so the receiver sees a clean close.
        let mut body = response.into_body();
        let mut read = 0usize;
        while read < MAX_ANSWER_BYTES {
            match body.frame().await {
                Some(Ok(f)) => read += f.data_ref().map_or(0, Bytes::len),
                _ => break,
            }
        }
        Ok(Answer { status, retry_after_ms })
    }
    .await;
    driver.abort();
    result
}

/// A rustls client config (ring) trusting the webpki roots plus `extra`; HTTP/1.1 by ALPN.
pub(crate) fn tls_config(extra: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let (_added, _ignored) = roots.add_parsable_certificates(extra.iter().cloned());
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("the ring provider supports rustls' default protocol versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// Parses `Retry-After`: delay-seconds, or an HTTP date (IMF-fixdate), as ms from `now`.
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at = parse_http_date(value)?;
    let now_secs = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(at.saturating_sub(now_secs).saturating_mul(1000))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` -> seconds since the epoch.
fn parse_http_date(s: &str) -> Option<u64> {
    let (_, rest) = s.split_once(", ")?;
    let mut parts = rest.split(' ');
    let day: u32 = parts.next()?.parse().ok()?;
    const MONTHS: [&str; 12] =
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month_name = parts.next()?;
    let month = MONTHS.iter().position(|m| *m == month_name)? as u32 + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':');
    let h: u64 = hms.next()?.parse().ok()?;
    let m: u64 = hms.next()?.parse().ok()?;
    let sec: u64 = hms.next()?.parse().ok()?;
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, day)).ok()?;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37
        assert_eq!(parse_retry_after("120", now), Some(120_000));
        assert_eq!(parse_retry_after(" 0 ", now), Some(0));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now), Some(0));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now), Some(30_000));
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now), Some(0));
        assert_eq!(
            parse_retry_after("Sat, 01 Jan 2000 00:00:00 GMT", UNIX_EPOCH),
            Some(946_684_800_000)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", now), None);
        assert_eq!(parse_retry_after("Sun, 06 Nov 1994 08:49:37 CET", now), None);
    }

    #[test]
    fn endpoints_from_urls() {
        let am = ReceiverConfig::new("am", ReceiverKind::Alertmanager, "http://127.0.0.1:9093/am/");
        let e = Endpoint::new(&am).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("127.0.0.1", 9093, "/am/api/v2/alerts")
        );
        assert_eq!(e.authority, "127.0.0.1:9093");
        assert!(e.tls.is_none());
        let bare = ReceiverConfig::new("am", ReceiverKind::Alertmanager, "http://10.0.0.1");
        assert_eq!(Endpoint::new(&bare).unwrap().path, "/api/v2/alerts");
        let hook = ReceiverConfig::new("h", ReceiverKind::Webhook, "https://[::1]/hook?x=1");
        let e = Endpoint::new(&hook).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.path.as_str()), ("::1", 443, "/hook?x=1"));
        assert!(e.tls.is_some());
        let named = ReceiverConfig::new("s", ReceiverKind::Slack, "https://hooks.example.net");
        assert_eq!(Endpoint::new(&named).unwrap().path, "/");
    }

    #[tokio::test]
    async fn unreachable_receivers_fail_fast_with_a_reason() {
        // A port that was just free: connecting is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let r =
            ReceiverConfig::new("h", ReceiverKind::Webhook, &format!("http://127.0.0.1:{port}/"));
        let err = Endpoint::new(&r).unwrap().post(Bytes::from_static(b"{}")).await.unwrap_err();
        assert!(matches!(err, SendError::Connect(_)), "{err}");
        assert!(!err.to_string().contains("127.0.0.1"));
    }
}
