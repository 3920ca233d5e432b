//! Who may use the admin listener: a Host allowlist (against DNS rebinding) and an optional
//! bearer token.
//!
//! A page on any web site can make a browser on the operator's machine send requests to a
//! private address by rebinding its own DNS name to it; the browser then sends that name in
//! `Host`. Answering only requests whose `Host` (HTTP/2: `:authority`) is in
//! `server.admin_hosts` (default: `localhost`, `127.0.0.1`, `::1` and the admin listener's own
//! address) defeats that. With `server.admin_token_file` set, the JSON API and `/metrics` also
//! need `Authorization: Bearer <token>`, compared in constant time (SHA-256 digests, so not
//! even the length leaks). The dashboard's static files need no token (the page asks for it
//! and keeps it in `sessionStorage`), and `/healthz` and `/readyz` need neither check: they
//! reveal nothing, and probes address the listener by whatever IP they have.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use crate::config::{AdminToken, normalise_host};
use crate::respond::{Body, text};

/// The admin listener's access rules. See the [module docs](self).
#[derive(Clone, Debug)]
pub(crate) struct AdminGuard {
    hosts: Vec<String>,
    token: Option<AdminToken>,
}

/// What a request to the admin listener needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// Health checks: nothing.
    Nothing,
    /// Dashboard assets: an allowed Host.
    Host,
    /// The JSON API and metrics: an allowed Host and, when configured, the token.
    HostAndToken,
}

impl AdminGuard {
    /// Rules from `server.admin_hosts` (already normalised) and the optional token.
    pub(crate) fn new(hosts: Vec<String>, token: Option<AdminToken>) -> AdminGuard {
        AdminGuard { hosts, token }
    }

    /// `None` if `req` may have what it asks for, else the answer to send instead (403 for a
    /// Host not allowed, 401 + `WWW-Authenticate` for a missing or wrong token).
    pub(crate) fn refuse<B>(&self, req: &Request<B>, need: Need) -> Option<Response<Body>> {
        if need == Need::Nothing {
            return None;
        }
        let host = req
            .uri()
            .authority()
            .map(|a| a.host().to_owned())
            .or_else(|| req.headers().get(header::HOST)?.to_str().ok().map(host_of));
        let allowed = host.map(|h| normalise_host(&h)).is_some_and(|h| self.hosts.contains(&h));
        if !allowed {
            return Some(text(
                StatusCode::FORBIDDEN,
                "host not allowed on the admin listener (see server.admin_hosts)\n",
            ));
        }
        if need == Need::Host {
            return None;
        }
        let Some(token) = &self.token else { return None };
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        if presented.is_some_and(|p| token.matches(p.trim().as_bytes())) {
            return None;
        }
        let mut r = text(StatusCode::UNAUTHORIZED, "admin token required\n");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"vantage admin\""),
        );
        Some(r)
    }
}

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]:port`).
fn host_of(value: &str) -> String {
    let value = value.trim();
    if let Some(rest) = value.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_owned();
    }
    match value.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host.to_owned(),
        _ => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(token: Option<&str>) -> AdminGuard {
        let hosts = ["localhost", "127.0.0.1", "::1", "10.0.0.5"].map(String::from).to_vec();
        AdminGuard::new(hosts, token.map(|t| AdminToken::from_secret(t.as_bytes())))
    }

    fn req(host: Option<&str>, auth: Option<&str>) -> Request<()> {
        let mut b = Request::get("/v1/alerts");
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    fn status(r: Option<Response<Body>>) -> StatusCode {
        r.map_or(StatusCode::OK, |r| r.status())
    }

    #[test]
    fn hosts_are_checked_by_name_without_port_case_or_brackets() {
        let g = guard(None);
        for ok in
            ["localhost:9464", "LOCALHOST", "127.0.0.1:1", "[::1]:9464", "10.0.0.5", "localhost."]
        {
            assert_eq!(status(g.refuse(&req(Some(ok), None), Need::Host)), StatusCode::OK, "{ok}");
        }
        for bad in ["evil.example:9464", "10.0.0.50", "localhost.evil.example", "[::2]:1", ""] {
            let r = g.refuse(&req(Some(bad), None), Need::HostAndToken);
            assert_eq!(status(r), StatusCode::FORBIDDEN, "{bad}");
        }
        assert_eq!(status(g.refuse(&req(None, None), Need::Host)), StatusCode::FORBIDDEN);
        // Health checks need nothing.
        assert_eq!(status(g.refuse(&req(Some("evil"), None), Need::Nothing)), StatusCode::OK);
        // HTTP/2 puts the host in the URI.
        let h2 = Request::get("http://127.0.0.1:9464/v1/alerts").body(()).unwrap();
        assert_eq!(status(g.refuse(&h2, Need::HostAndToken)), StatusCode::OK);
        let h2 = Request::get("http://rebound.example/v1/alerts").body(()).unwrap();
        assert_eq!(status(g.refuse(&h2, Need::HostAndToken)), StatusCode::FORBIDDEN);
    }

    #[test]
    fn the_token_is_needed_for_the_api_not_for_assets() {
        let g = guard(Some("s3cret-token"));
        let host = Some("localhost");
        let r = g.refuse(&req(host, None), Need::HostAndToken).unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert!(r.headers()[header::WWW_AUTHENTICATE].to_str().unwrap().starts_with("Bearer"));
        for wrong in
            ["Bearer s3cret-toke", "Bearer s3cret-token2", "Basic s3cret-token", "s3cret-token"]
        {
            let r = g.refuse(&req(host, Some(wrong)), Need::HostAndToken);
            assert_eq!(status(r), StatusCode::UNAUTHORIZED, "{wrong}");
        }
        let r = g.refuse(&req(host, Some("Bearer s3cret-token")), Need::HostAndToken);
        assert_eq!(status(r), StatusCode::OK);
        assert_eq!(status(g.refuse(&req(host, None), Need::Host)), StatusCode::OK);
        // The host is checked first, token or not.
        let r = g.refuse(&req(Some("evil.example"), Some("Bearer s3cret-token")), Need::Host);
        assert_eq!(status(r), StatusCode::FORBIDDEN);
    }
}
