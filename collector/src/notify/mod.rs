//! Alert notifications: a durable outbox and a sender task that delivers [`AlertEvent`]s to
//! generic JSON webhooks, Slack-compatible webhooks and the Alertmanager v2 API.
//!
//! ```text
//!  alerting ──AlertEvent──▶ Outbox::enqueue ──▶ sled tree `outbox`, one entry per receiver
//!                              (flushed before it returns)  key = receiver name ‖ 0 ‖ seq
//!           ──wake()──▶ Notifier: one task per receiver, oldest entry first
//!                          POST payload (webhook | slack | alertmanager) over hyper + rustls
//!                          2xx ─▶ removed, counted as sent
//!                          4xx (not 408/429) ─▶ removed, counted as dropped (permanent)
//!                          error, timeout, 408, 429, 5xx ─▶ kept; retried after full-jitter
//!                                                          backoff or Retry-After
//!                          older than give_up_after_ms ─▶ removed, counted as dropped (expired)
//!           ──watch<Vec<Alert>>──▶ alertmanager receivers: the firing alerts are re-sent every
//!                          alertmanager_resend_ms with endsAt = now + 4 × resend
//! ```
//!
//! Entries of one receiver go out strictly in order (a resolved never overtakes its fired), and
//! stay in the outbox until they are delivered or dropped, so a restart sends what was pending
//! (at least once). Receivers are independent: a receiver that is down delays only itself.
//!
//! Receiver URLs and headers are credentials (a Slack webhook URL carries its secret in the
//! path; headers carry tokens): they are never logged and never shown by `Debug`. Logs name the
//! receiver by its `name`.

pub(crate) mod client;
mod outbox;
mod payload;
mod sender;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

pub use outbox::Outbox;
pub use payload::{alertmanager_payload, slack_payload, slice_label, webhook_payload};
pub use sender::{Notifier, NotifierHandle, NotifyStats, ReceiverStats};

#[cfg(doc)]
use crate::detect::AlertEvent;

/// `[notify]` section of the collector config. Every field has a default; no receivers by
/// default.
///
/// ```toml
/// [notify]
/// external_url = "https://vantage.example.net"
/// [[notify.receivers]]
/// name = "oncall"
/// kind = "alertmanager"
/// url = "http://127.0.0.1:9093"
/// [[notify.receivers]]
/// name = "chat"
/// kind = "slack"
/// url = "https://hooks.slack.com/services/T000/B000/XXXX"
/// ```
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Where notifications go (`[[notify.receivers]]`). Default: none.
    pub receivers: Vec<ReceiverConfig>,
    /// Base of the full-jitter exponential backoff between attempts, in ms. Default 1000.
    pub retry_base_ms: u64,
    /// Longest backoff between attempts, in ms. Default 300 000 (5 min).
    pub retry_cap_ms: u64,
    /// An entry not delivered this long after it was queued is dropped and counted, in ms.
    /// Default 86 400 000 (24 h).
    pub give_up_after_ms: u64,
    /// Firing alerts are re-sent to Alertmanager receivers this often, in ms, so Alertmanager
    /// does not resolve them on its own. Default 60 000.
    pub alertmanager_resend_ms: u64,
    /// The dashboard's URL, put in links and Alertmanager's `generatorURL`. Default: none.
    pub external_url: Option<String>,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            receivers: Vec::new(),
            retry_base_ms: 1000,
            retry_cap_ms: 300_000,
            give_up_after_ms: 86_400_000,
            alertmanager_resend_ms: 60_000,
            external_url: None,
        }
    }
}

impl fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("receivers", &self.receivers)
            .field("retry_base_ms", &self.retry_base_ms)
            .field("retry_cap_ms", &self.retry_cap_ms)
            .field("give_up_after_ms", &self.give_up_after_ms)
            .field("alertmanager_resend_ms", &self.alertmanager_resend_ms)
            .field("external_url", &self.external_url)
            .finish()
    }
}

/// What a receiver speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiverKind {
    /// Generic JSON webhook: `POST {url}` with [`webhook_payload`].
    Webhook,
    /// Slack-compatible incoming webhook: `POST {url}` with [`slack_payload`].
    Slack,
    /// Alertmanager v2 API: `POST {url}/api/v2/alerts` with [`alertmanager_payload`].
    Alertmanager,
}

impl ReceiverKind {
    /// Stable label (`webhook`, `slack`, `alertmanager`).
    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverKind::Webhook => "webhook",
            ReceiverKind::Slack => "slack",
            ReceiverKind::Alertmanager => "alertmanager",
        }
    }
}

/// One `[[notify.receivers]]` entry.
///
/// `Debug` shows the URL's scheme and authority only, and header names only: both may hold
/// credentials.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(from = "RawReceiver")]
pub struct ReceiverConfig {
    /// Unique name, `[A-Za-z0-9_-]+`: the metrics label and the name in logs.
    pub name: String,
    /// `webhook`, `slack` or `alertmanager`.
    pub kind: ReceiverKind,
    /// `http://` or `https://` URL; for Alertmanager the base URL (the API path is appended).
    pub url: String,
    /// Time for one attempt (connect, TLS, request, answer), in ms. Default 10 000.
    pub timeout_ms: u64,
    /// Extra PEM CA certificates trusted besides the webpki roots. Default: none.
    pub ca_file: Option<PathBuf>,
    /// Extra request headers (for example `Authorization`). Never logged or printed.
    pub headers: BTreeMap<String, String>,
    /// Send resolved events. Default true.
    pub send_resolved: bool,
    /// Send retrospective events (past incidents found in late data). Default true for
    /// webhook and Slack receivers, false for Alertmanager (it would page for the past).
    pub send_retrospective: bool,
}

impl fmt::Debug for ReceiverConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceiverConfig")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &redacted_url(&self.url))
            .field("timeout_ms", &self.timeout_ms)
            .field("ca_file", &self.ca_file)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("send_resolved", &self.send_resolved)
            .field("send_retrospective", &self.send_retrospective)
            .finish()
    }
}

/// `scheme://authority/…` (the path and query may hold a token).
fn redacted_url(url: &str) -> String {
    match url.parse::<http::Uri>() {
        Ok(uri) => match (uri.scheme_str(), uri.authority()) {
            (Some(s), Some(a)) => {
                let host_port = a.as_str().rsplit('@').next().unwrap_or_default();
                format!("{s}://{host_port}/…")
            }
            _ => "<redacted>".to_owned(),
        },
        Err(_) => "<redacted>".to_owned(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    name: String,
    kind: ReceiverKind,
    url: String,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default)]
    ca_file: Option<PathBuf>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default = "default_true")]
    send_resolved: bool,
    #[serde(default)]
    send_retrospective: Option<bool>,
}

fn default_timeout_ms() -> u64 {
    10_000
}

fn default_true() -> bool {
    true
}

impl From<RawReceiver> for ReceiverConfig {
    fn from(r: RawReceiver) -> Self {
        ReceiverConfig {
            send_retrospective: r
                .send_retrospective
                .unwrap_or(r.kind != ReceiverKind::Alertmanager),
            name: r.name,
            kind: r.kind,
            url: r.url,
            timeout_ms: r.timeout_ms,
            ca_file: r.ca_file,
            headers: r.headers,
            send_resolved: r.send_resolved,
        }
    }
}

impl ReceiverConfig {
    /// A receiver with every optional field at its default.
    pub fn new(name: &str, kind: ReceiverKind, url: &str) -> ReceiverConfig {
        ReceiverConfig {
            name: name.to_owned(),
            kind,
            url: url.to_owned(),
            timeout_ms: default_timeout_ms(),
            ca_file: None,
            headers: BTreeMap::new(),
            send_resolved: true,
            send_retrospective: kind != ReceiverKind::Alertmanager,
        }
    }
}

/// Headers the notifier sets itself.
const RESERVED_HEADERS: [&str; 5] =
    ["host", "content-type", "content-length", "connection", "transfer-encoding"];

impl NotifyConfig {
    /// Checks everything that can be checked before starting: every problem, each naming its
    /// field (`notify.receivers[1].url: ...`). Reads `ca_file`s (relative paths must already be
    /// resolved). Never echoes a URL's path or a header value (they may be secrets).
    pub fn validate(&self) -> Result<(), Vec<(String, String)>> {
        let mut problems = Vec::new();
        let mut fail = |field: String, problem: String| problems.push((field, problem));
        if self.retry_base_ms == 0 {
            fail("notify.retry_base_ms".into(), "must be at least 1".into());
        }
        if self.retry_cap_ms < self.retry_base_ms {
            fail(
                "notify.retry_cap_ms".into(),
                format!("must be at least retry_base_ms ({})", self.retry_base_ms),
            );
        }
        if self.give_up_after_ms == 0 {
            fail("notify.give_up_after_ms".into(), "must be at least 1".into());
        }
        if self.alertmanager_resend_ms == 0 {
            fail("notify.alertmanager_resend_ms".into(), "must be at least 1".into());
        }
        if let Some(url) = &self.external_url
            && let Err(e) = check_url(url)
        {
            fail("notify.external_url".into(), e);
        }
        let mut names = BTreeSet::new();
        for (i, r) in self.receivers.iter().enumerate() {
            let field = |name: &str| format!("notify.receivers[{i}].{name}");
            if r.name.is_empty()
                || !r.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                fail(field("name"), format!("{:?} must be non-empty [A-Za-z0-9_-]+", r.name));
            } else if !names.insert(r.name.as_str()) {
                fail(field("name"), format!("{:?} is used by an earlier receiver", r.name));
            }
            if let Err(e) = check_url(&r.url) {
                fail(field("url"), e);
            }
            if r.timeout_ms == 0 {
                fail(field("timeout_ms"), "must be at least 1".into());
            }
            if let Some(path) = &r.ca_file {
                if let Err(e) = client::read_ca_file(path) {
                    fail(field("ca_file"), e);
                }
            }
            for (name, value) in &r.headers {
                let lower = name.to_ascii_lowercase();
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    fail(field(&format!("headers.{name}")), "is not a valid header name".into());
                } else if RESERVED_HEADERS.contains(&lower.as_str()) {
                    fail(field(&format!("headers.{name}")), "is set by the notifier".into());
                }
                if http::HeaderValue::from_str(value).is_err() {
                    // The value may be a secret: say what is wrong, never what it is.
                    fail(
                        field(&format!("headers.{name}")),
                        "the value is not a valid header value (visible ASCII only)".into(),
                    );
                }
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

/// An absolute `http(s)` URL with a host, no user info and no fragment. The message never
/// includes the URL.
fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(other) => return Err(format!("scheme {other:?} is not http or https")),
        None => return Err("must be an absolute http:// or https:// URL".into()),
    }
    let Some(authority) = uri.authority() else {
        return Err("has no host".into());
    };
    if authority.as_str().contains('@') {
        return Err("must not carry user info; put credentials in `headers`".into());
    }
    if authority.host().is_empty() {
        return Err("has no host".into());
    }
    if url.contains('#') {
        return Err("must not have a fragment".into());
    }
    Ok(())
}

/// Errors of the notification outbox.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The outbox tree could not be read, written or flushed.
    #[error("notification outbox: {0}")]
    Store(String),
    /// An event could not be encoded for the outbox.
    #[error("encoding a notification: {0}")]
    Encode(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(config: &NotifyConfig) -> Vec<String> {
        config.validate().unwrap_err().into_iter().map(|(f, _)| f).collect()
    }

    #[test]
    fn defaults_and_toml() {
        let c: NotifyConfig = toml::from_str("").unwrap();
        assert_eq!(c, NotifyConfig::default());
        assert_eq!(c.retry_base_ms, 1000);
        assert_eq!(c.retry_cap_ms, 300_000);
        assert_eq!(c.give_up_after_ms, 86_400_000);
        assert_eq!(c.alertmanager_resend_ms, 60_000);
        assert!(c.validate().is_ok());

        let c: NotifyConfig = toml::from_str(
            r#"
            external_url = "https://vantage.example.net/"
            [[receivers]]
            name = "am"
            kind = "alertmanager"
            url = "http://127.0.0.1:9093"
            [[receivers]]
            name = "chat"
            kind = "slack"
            url = "https://hooks.example.net/services/T/B/secret"
            send_resolved = false
            headers = { Authorization = "Bearer s3cret" }
            "#,
        )
        .unwrap();
        assert!(c.validate().is_ok(), "{:?}", c.validate());
        let am = &c.receivers[0];
        assert_eq!(
            (am.kind, am.timeout_ms, am.send_resolved),
            (ReceiverKind::Alertmanager, 10_000, true)
        );
        assert!(!am.send_retrospective, "alertmanager receivers skip retrospectives by default");
        let chat = &c.receivers[1];
        assert!(chat.send_retrospective && !chat.send_resolved);

        let unknown = toml::from_str::<NotifyConfig>(
            "[[receivers]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:1\"\nretries = 3\n",
        );
        assert!(unknown.unwrap_err().to_string().contains("retries"));
        assert!(toml::from_str::<NotifyConfig>("retry_ms = 1").is_err());
        let bad_kind = toml::from_str::<NotifyConfig>(
            "[[receivers]]\nname = \"a\"\nkind = \"email\"\nurl = \"http://127.0.0.1:1\"\n",
        );
        assert!(bad_kind.unwrap_err().to_string().contains("email"));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let mut r = ReceiverConfig::new(
            "chat",
            ReceiverKind::Slack,
            "https://hooks.example.net/services/T/B/pathsecret",
        );
        r.headers.insert("Authorization".into(), "Bearer headersecret".into());
        let c = NotifyConfig { receivers: vec![r], ..NotifyConfig::default() };
        let shown = format!("{c:?}");
        assert!(!shown.contains("pathsecret") && !shown.contains("headersecret"), "{shown}");
        assert!(shown.contains("https://hooks.example.net/…") && shown.contains("Authorization"));
        let with_user = ReceiverConfig::new("x", ReceiverKind::Webhook, "http://u:pw@10.0.0.1/");
        assert!(!format!("{with_user:?}").contains("pw"));
    }

    #[test]
    fn every_problem_names_its_field() {
        let mut bad_header =
            ReceiverConfig::new("ok", ReceiverKind::Webhook, "http://127.0.0.1:1/x");
        bad_header.headers.insert("Bad Name".into(), "v".into());
        bad_header.headers.insert("X-Token".into(), "line\nbreak-secret".into());
        bad_header.headers.insert("Content-Type".into(), "text/plain".into());
        let mut zero_timeout = ReceiverConfig::new("t", ReceiverKind::Slack, "https://10.0.0.1/");
        zero_timeout.timeout_ms = 0;
        zero_timeout.ca_file = Some(PathBuf::from("/nonexistent/ca.pem"));
        let c = NotifyConfig {
            receivers: vec![
                bad_header,
                ReceiverConfig::new("ok", ReceiverKind::Webhook, "http://127.0.0.1:2/"),
                ReceiverConfig::new("bad name", ReceiverKind::Webhook, "ftp://127.0.0.1/"),
                ReceiverConfig::new("rel", ReceiverKind::Alertmanager, "/api/v2/alerts"),
                ReceiverConfig::new("user", ReceiverKind::Webhook, "http://u:pw@127.0.0.1/"),
                zero_timeout,
            ],
            retry_base_ms: 0,
            retry_cap_ms: 0,
            give_up_after_ms: 0,
            alertmanager_resend_ms: 0,
            external_url: Some("not a url".into()),
        };
        let problems = c.validate().unwrap_err();
        let got = fields(&c);
        for want in [
            "notify.retry_base_ms",
            "notify.give_up_after_ms",
            "notify.alertmanager_resend_ms",
            "notify.external_url",
            "notify.receivers[0].headers.Bad Name",
            "notify.receivers[0].headers.X-Token",
            "notify.receivers[0].headers.Content-Type",
            "notify.receivers[1].name",
            "notify.receivers[2].name",
            "notify.receivers[2].url",
            "notify.receivers[3].url",
            "notify.receivers[4].url",
            "notify.receivers[5].timeout_ms",
            "notify.receivers[5].ca_file",
        ] {
            assert!(got.iter().any(|f| f == want), "missing {want} in {problems:?}");
        }
        let shown = format!("{problems:?}");
        assert!(!shown.contains("break-secret") && !shown.contains("pw@"), "{shown}");
        let cap = NotifyConfig { retry_base_ms: 10, retry_cap_ms: 5, ..NotifyConfig::default() };
        assert_eq!(fields(&cap), ["notify.retry_cap_ms"]);
    }
}
