//! `vantage-collector demo --collector URL --key FILE --dashboard URL`: the simulated fleet
//! against a collector that is already running, followed through its admin API.
//!
//! The fleet sends to the collector's ingest URL (`http://` for a plain listener, `https://`
//! for a TLS one, trusted through the web roots plus `--ca`), sealing to the public key in
//! `--key` (the `collector.pub` that `keygen` wrote). The demo learns where the story stands
//! from the admin listener (`GET /v1/series?service=shop`, `GET /v1/alerts`, with the bearer
//! token of `--token-file` when the collector has `server.admin_token_file`).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use vantage_agent::wire::CollectorPublicKey;

use super::sim::Transport;
use crate::notify::client::{read_ca_file, tls_config};

/// Largest admin answer read (the alert list and one series are far smaller).
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// A collector named by URL, resolved once.
#[derive(Debug)]
pub(crate) struct Remote {
    /// Where to connect.
    pub(crate) addr: SocketAddr,
    /// TLS and `Host` for the connections.
    pub(crate) transport: Transport,
    /// The URL's path without its trailing `/` (`""` for the root).
    pub(crate) base: String,
}

impl Remote {
    /// Parses and resolves `url` (`what` names the option in errors); `ca` adds trusted CAs.
    pub(crate) async fn resolve(
        url: &str,
        what: &str,
        ca: Option<&Path>,
    ) -> Result<Remote, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("{what} {url:?}: {e}"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!("{what} {url:?}: the URL must start with http:// or https://"));
            }
        };
        if uri.query().is_some() {
            return Err(format!("{what} {url:?}: a query string is not allowed"));
        }
        let authority =
            uri.authority().ok_or_else(|| format!("{what} {url:?}: no host"))?.as_str().to_owned();
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let addr = match host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => tokio::net::lookup_host((host, port))
                .await
                .map_err(|e| format!("{what} {url:?}: {host} does not resolve: {e}"))?
                .next()
                .ok_or_else(|| format!("{what} {url:?}: {host} has no address"))?,
        };
        let tls = if https {
            let extra = match ca {
                Some(p) => read_ca_file(p).map_err(|e| format!("--ca: {e}"))?,
                None => Vec::new(),
            };
            let name = match host.parse::<IpAddr>() {
                Ok(ip) => ServerName::IpAddress(ip.into()),
                Err(_) => ServerName::try_from(host.to_owned())
                    .map_err(|e| format!("{what} {url:?}: not a TLS server name: {e}"))?,
            };
            Some((tokio_rustls::TlsConnector::from(tls_config(&extra)), name))
        } else {
            None
        };
        let base = uri.path().trim_end_matches('/').to_owned();
        Ok(Remote { addr, transport: Transport { tls, host: Some(authority) }, base })
    }

    /// `GET {base}{path_and_query}` with an optional bearer token; the JSON answer of a 200.
    pub(crate) async fn get_json(
        &self,
        path_and_query: &str,
        token: Option<&str>,
    ) -> Result<Value, String> {
        let target = format!("{}{path_and_query}", self.base);
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("{}: {e}", self.addr))?;
        let mut request = http::Request::get(target.as_str())
            .header(http::header::HOST, self.transport.host.as_deref().unwrap_or_default())
            .header(http::header::ACCEPT, "application/json");
        if let Some(token) = token {
            let mut value = http::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| "the admin token is not a valid header value".to_owned())?;
            value.set_sensitive(true);
            request = request.header(http::header::AUTHORIZATION, value);
        }
        let request = request.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
        let (status, body) = match &self.transport.tls {
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|e| format!("TLS to {}: {e}", self.addr))?;
                exchange(tls, request).await?
            }
            None => exchange(tcp, request).await?,
        };
        match status {
            200 => serde_json::from_slice(&body)
                .map_err(|e| format!("GET {target}: the answer is not JSON: {e}")),
            401 => Err(format!(
                "GET {target}: 401, the admin API wants a bearer token (--token-file FILE)"
            )),
            403 => Err(format!(
                "GET {target}: 403, the Host is not in the collector's server.admin_hosts"
            )),
            s => Err(format!("GET {target}: HTTP {s}: {}", String::from_utf8_lossy(&body))),
        }
    }
}

async fn exchange<T>(io: T, request: http::Request<Empty<Bytes>>) -> Result<(u16, Vec<u8>), String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP: {e}"))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let result = async {
        let response = sender.send_request(request).await.map_err(|e| format!("HTTP: {e}"))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("HTTP: {e}"))?;
            if let Some(data) = frame.data_ref() {
                if bytes.len() + data.len() > MAX_ANSWER_BYTES {
                    return Err(format!("the answer is over {MAX_ANSWER_BYTES} bytes"));
                }
                bytes.extend_from_slice(data);
            }
        }
        Ok((status, bytes))
    }
    .await;
    driver.abort();
    result
}

/// Reads a collector public key file (`collector.pub`: the hex key, blank lines and `#`
/// comments allowed).
pub(crate) fn read_public_key(path: &Path) -> Result<CollectorPublicKey, String> {
    // The secret key is hex of the same length: refuse it by its name, it must not travel.
    if path.extension().is_some_and(|e| e == "key") {
        return Err(format!(
            "--key {}: this is a secret key file; give the collector.pub that \
             `vantage-collector keygen` wrote next to it",
            path.display()
        ));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("--key {}: {e}", path.display()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| format!("--key {}: the file is empty", path.display()))?;
    line.parse().map_err(|e| {
        format!(
            "--key {}: not a collector public key ({e}); give the collector.pub that \
             `vantage-collector keygen` wrote, not the secret collector.key",
            path.display()
        )
    })
}

/// Reads a bearer token file (first line, trimmed).
pub(crate) fn read_token(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or_default().trim().to_owned();
    if token.is_empty() {
        return Err(format!("--token-file {}: the file is empty", path.display()));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn urls_are_checked() {
        let r = Remote::resolve("http://127.0.0.1:8080/", "--collector", None).await.unwrap();
        assert_eq!(r.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(r.base, "");
        assert!(r.transport.tls.is_none());
        assert_eq!(r.transport.host.as_deref(), Some("127.0.0.1:8080"));
        let r = Remote::resolve("https://[::1]/admin/", "--dashboard", None).await.unwrap();
        assert_eq!(r.addr, "[::1]:443".parse().unwrap());
        assert_eq!(r.base, "/admin");
        assert!(r.transport.tls.is_some());
        for (bad, says) in [
            ("ftp://127.0.0.1/", "http:// or https://"),
            ("127.0.0.1:8080", "http:// or https://"),
            ("http://127.0.0.1/?x=1", "query string"),
        ] {
            let e = Remote::resolve(bad, "--collector", None).await.unwrap_err();
            assert!(e.contains(says) && e.contains("--collector"), "{bad}: {e}");
        }
    }

    #[test]
    fn key_files_name_the_mistake() {
        let dir = std::env::temp_dir().join(format!("vantage-remote-key-{}", std::process::id()));
        let generated = crate::keyfile::keygen(&dir).unwrap();
        let key = read_public_key(&generated.pub_file).unwrap();
        assert_eq!(key, generated.key.public_key());
        let e = read_public_key(&generated.key_file).unwrap_err();
        assert!(e.contains("collector.pub"), "{e}");
        std::fs::write(dir.join("empty"), "\n# nothing\n").unwrap();
        assert!(read_public_key(&dir.join("empty")).unwrap_err().contains("empty"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
