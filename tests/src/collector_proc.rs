//! Runs `vantage-collector` as a real process for tests (spawn with a config, poll readiness,
//! kill -9 or SIGTERM).
//!
//! ```text
//!  collector_bin()  ── cargo build -p vantage-collector (once per process, same profile/target)
//!  CollectorProc::start(dir, toml) ── writes dir/collector.toml, spawns `serve --config`,
//!                                     polls dir/ready.json, stderr to dir/collector.stderr.log
//!  kill9() / terminate() / Drop ── SIGKILL, SIGTERM (via `kill -TERM`), SIGKILL
//! ```
//!
//! Configs come from [`CollectorConfig`], which always binds port 0 and writes the ready file,
//! so parallel tests never collide on ports.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use vantage_agent::entropy::Entropy;
use vantage_agent::report::{AppInfo, Batch, Report, ReportId, UnixMillis};
use vantage_agent::taxonomy::ErrorType;
use vantage_agent::wire::{AgentIdentity, CollectorPublicKey, seal_batch};
use vantage_collector::open::CollectorKey;

use crate::tls::{TestCa, TestCert};

/// The ready file every harness config names (relative to the config's directory).
pub const READY_FILE: &str = "ready.json";

/// The config file the harness writes into the collector's directory.
pub const CONFIG_FILE: &str = "collector.toml";

/// Where the collector's stderr (its logs) goes, in its directory.
pub const STDERR_FILE: &str = "collector.stderr.log";

/// How long a collector may take from spawn to its ready file.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// How long a collector may take to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(30);

const POLL: Duration = Duration::from_millis(10);

/// The `vantage-collector` binary of the profile and target directory this test runs from,
/// built (or brought up to date) once per process with `cargo build`.
///
/// The build runs every time a process first asks, not only when the file is missing: a stale
/// binary would silently test old code. `VANTAGE_COLLECTOR_BIN` overrides the path (no build).
pub fn collector_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("VANTAGE_COLLECTOR_BIN") {
            return PathBuf::from(path);
        }
        build_bin("vantage-collector")
    })
    .clone()
}

/// The `vantage-agent` command-line tool (crate `vantage-agent`, feature `cli`), built like
/// [`collector_bin`]. `VANTAGE_AGENT_CLI_BIN` overrides the path (no build).
pub fn agent_cli_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(path) = std::env::var_os("VANTAGE_AGENT_CLI_BIN") {
            return PathBuf::from(path);
        }
        build_bin("vantage-agent")
    })
    .clone()
}

/// Another binary of the workspace (e.g. `vantage-loadgen`, whose unit tests need it as a
/// separate process), built like [`collector_bin`].
pub fn workspace_bin(bin: &str) -> PathBuf {
    build_bin(bin)
}

/// Builds the workspace binary `bin` (all features: the `vantage-agent` tool needs `cli`) in the
/// profile and target directory this test runs from, and returns its path.
fn build_bin(bin: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let mut profile_dir = exe.parent().expect("an executable lives in a directory");
    if profile_dir.file_name().is_some_and(|n| n == "deps") {
        profile_dir = profile_dir.parent().expect("deps/ has a parent");
    }
    let target_dir = profile_dir.parent().expect("the profile dir sits in the target dir");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("profile directory {} has no name", profile_dir.display()),
    };
    const CRATE_VARS: [&str; 7] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_MANIFEST_LINKS",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
    ];
    let mut cargo = Command::new(env!("CARGO"));
    // `cargo test` gives the test process the variables of the crate under test
    // (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, ...). Build scripts such as ring's declare
    // `rerun-if-env-changed` on those names, so passing them on would make this build and
    // the next `cargo test` each rebuild ring and everything above it.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_") || CRATE_VARS.contains(&name.as_ref()) {
            cargo.env_remove(name.as_ref());
        }
    }
    // The workspace with all features (which include `features`): the feature set of the
    // test command's `cargo test --workspace --all-features`, so this finds the binary that
    // step built instead of building the agent and the collector again with other features.
    cargo.args(["build", "--quiet", "--workspace", "--all-features", "--bin", bin]);
    let output = cargo
        .args(["--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run cargo build for {bin}: {e}"));
    assert!(
        output.status.success(),
        "cargo build --workspace --all-features --bin {bin} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let path = profile_dir.join(bin);
    assert!(path.is_file(), "cargo build succeeded but {} is missing", path.display());
    path
}

/// Writes `dir/collector.key` (hex of the X25519 secret, mode 0600, as `keygen` does) for a
/// key derived from `seed`, and returns the key.
pub fn write_collector_key(dir: &Path, seed: [u8; 32]) -> CollectorKey {
    use std::os::unix::fs::PermissionsExt;
    let key = CollectorKey::from_seed(seed);
    let path = dir.join("collector.key");
    std::fs::write(&path, hex::encode(key.secret_bytes())).expect("write collector.key");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod collector.key");
    key
}

/// Generates a CA and a leaf for `names`, writes `dir/cert.pem` (chain) and `dir/key.pem`,
/// and returns both (the CA for clients' trust stores).
pub fn write_tls(dir: &Path, names: &[&str]) -> (TestCa, TestCert) {
    let ca = TestCa::new("vantage collector test CA");
    let leaf = ca.leaf(names);
    leaf.write_to(dir);
    (ca, leaf)
}

/// A collector config for the harness: listeners on port 0, the ready file, the key file and
/// the store under the collector's directory.
#[derive(Clone, Debug)]
pub struct CollectorConfig {
    /// Serve plain HTTP on `127.0.0.1:0`. Default: true.
    pub plain: bool,
    /// Serve HTTPS on `127.0.0.1:0` with `cert.pem`/`key.pem` (see [`write_tls`]). Default: false.
    pub tls: bool,
    /// `[limits]` rates high enough that no test or benchmark load is throttled. Default: false
    /// (the config file's defaults apply).
    pub unlimited: bool,
    /// Extra `[server]` lines (e.g. `max_connections = 4096`).
    pub server_extra: String,
    /// Log level. Default: `warn` (keeps stderr small under load).
    pub log_level: String,
}

impl Default for CollectorConfig {
    fn default() -> CollectorConfig {
        CollectorConfig {
            plain: true,
            tls: false,
            unlimited: false,
            server_extra: String::new(),
            log_level: "warn".into(),
        }
    }
}

impl CollectorConfig {
    /// The TOML text (paths relative to the config file's directory).
    pub fn to_toml(&self) -> String {
        let mut s = String::from("[server]\n");
        if self.plain {
            s.push_str("listen_plain = \"127.0.0.1:0\"\n");
        }
        if self.tls {
            s.push_str(
                "listen_tls = \"127.0.0.1:0\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n",
            );
        }
        let _ = writeln!(s, "ready_file = \"{READY_FILE}\"");
        s.push_str(&self.server_extra);
        if !self.server_extra.is_empty() && !self.server_extra.ends_with('\n') {
            s.push('\n');
        }
        s.push_str("[keys]\nprivate_key_files = [\"collector.key\"]\n[store]\npath = \"data\"\n");
        if self.unlimited {
            s.push_str(
                "[limits]\nprefix_rps = 1000000000.0\nprefix_burst = 1000000000\n\
                 agent_rps = 1000000000.0\nagent_burst = 1000000000\n\
                 nel_prefix_rps = 1000000000.0\nnel_prefix_burst = 1000000000\n\
                 prefix_bytes_per_sec = 1000000000000\nprefix_bytes_burst = 1000000000000\n\
                 prefix_reports_per_sec = 1000000000.0\nprefix_reports_burst = 1000000000\n\
                 prefix_store_bytes_per_sec = 1000000000000\n\
                 prefix_store_bytes_burst = 1000000000000\n\
                 agent_reports_per_sec = 1000000000.0\nagent_reports_burst = 1000000000\n\
                 agent_bytes_per_sec = 1000000000000\nagent_bytes_burst = 1000000000000\n",
            );
        }
        let _ = writeln!(s, "[log]\nformat = \"text\"\nlevel = \"{}\"", self.log_level);
        s
    }
}

/// A running `vantage-collector serve` process. Dropping it kills the process (SIGKILL).
pub struct CollectorProc {
    child: Option<Child>,
    dir: PathBuf,
    plain: Option<SocketAddr>,
    tls: Option<SocketAddr>,
    admin: Option<SocketAddr>,
}

impl CollectorProc {
    /// Writes `config_toml` to `dir/collector.toml` and starts `vantage-collector serve` on it,
    /// returning once the ready file names the bound addresses.
    ///
    /// The config must name [`READY_FILE`] as `ready_file` (what [`CollectorConfig`] writes). A
    /// stale ready file from an earlier run in `dir` is removed first. Panics, showing the
    /// collector's stderr, when it exits or is not ready within 30 s.
    pub fn start(dir: &Path, config_toml: &str) -> CollectorProc {
        Self::start_with(&collector_bin(), dir, config_toml)
    }

    /// Like [`CollectorProc::start`], with a given binary.
    pub fn start_with(bin: &Path, dir: &Path, config_toml: &str) -> CollectorProc {
        Self::start_command(Command::new(bin), dir, config_toml)
    }

    /// Like [`CollectorProc::start`], running the collector through `command` (the collector
    /// binary itself, or a wrapper such as `ip netns exec NS vantage-collector`), to which
    /// `serve --config FILE` is appended.
    pub fn start_command(mut command: Command, dir: &Path, config_toml: &str) -> CollectorProc {
        let config = dir.join(CONFIG_FILE);
        std::fs::write(&config, config_toml).expect("write collector.toml");
        let ready = dir.join(READY_FILE);
        match std::fs::remove_file(&ready) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("remove stale {}: {e}", ready.display()),
        }
        let stderr = std::fs::File::create(dir.join(STDERR_FILE)).expect("create stderr log");
        let shown = format!("{command:?}");
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {shown}: {e}"));
        let mut proc = CollectorProc {
            child: Some(child),
            dir: dir.to_owned(),
            plain: None,
            tls: None,
            admin: None,
        };
        proc.wait_ready(&ready);
        proc
    }

    fn wait_ready(&mut self, ready: &Path) {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            // The file may be seen half-written; it parses once complete.
            let text = std::fs::read_to_string(ready).unwrap_or_default();
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) {
                let addr = |k: &str| -> Option<SocketAddr> {
                    json.get(k)?
                        .as_str()
                        .map(|s| s.parse().unwrap_or_else(|e| panic!("ready file {k} {s:?}: {e}")))
                };
                self.plain = addr("plain");
                self.tls = addr("tls");
                self.admin = addr("admin");
                assert!(
                    self.plain.is_some() || self.tls.is_some(),
                    "ready file names no listener: {text}"
                );
                return;
            }
            let child = self.child.as_mut().expect("child present until stopped");
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("collector exited before ready ({status}); stderr:\n{}", self.stderr());
            }
            if Instant::now() > deadline {
                panic!("collector not ready within {START_DEADLINE:?}; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(POLL);
        }
    }

    /// The plain HTTP listener's address, if configured.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain
    }

    /// The admin listener's address (dashboard, `/v1/alerts`), if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
    }

    /// The HTTPS listener's address, if configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls
    }

    /// The process id (for /proc readings).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child present until stopped").id()
    }

    /// The collector's directory (config, keys, ready file, `data/` store, stderr log).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The store directory (`dir/data`).
    pub fn store_path(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// What the collector has written to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join(STDERR_FILE)).unwrap_or_default()
    }

    /// SIGKILL, then reaps the process.
    pub fn kill9(mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL the collector");
            child.wait().expect("reap the collector");
        }
    }

    /// SIGTERM (graceful shutdown), then waits up to 30 s for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("child present until stopped");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill -TERM");
        assert!(status.success(), "kill -TERM {} failed: {status}", child.id());
        let deadline = Instant::now() + STOP_DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "collector did not exit within {STOP_DEADLINE:?} of SIGTERM; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

impl Drop for CollectorProc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The content type of `POST /v1/envelopes`.
pub const ENVELOPE_CONTENT_TYPE: &str = "application/vnd.vantage.envelope+cbor";

/// One sealed envelope and the ids of the reports inside it.
#[derive(Clone, Debug)]
pub struct SealedEnvelope {
    /// The bytes to `POST /v1/envelopes`.
    pub bytes: Bytes,
    /// The report ids, in batch order.
    pub report_ids: Vec<[u8; 16]>,
}

/// Seals a batch of `reports` `http.error` reports (fresh ids made at `now`, random parts from
/// `rng`) from `agent` with sequence number `seq`, made at `now`, to `collector`.
pub fn seal_envelope(
    agent: &AgentIdentity,
    collector: &CollectorPublicKey,
    seq: u64,
    reports: usize,
    now: UnixMillis,
    rng: &mut impl Entropy,
) -> SealedEnvelope {
    let ids: Vec<ReportId> = (0..reports).map(|_| ReportId::new(now, rng)).collect();
    seal_envelope_with_ids(agent, collector, seq, &ids, now, rng)
}

/// [`seal_envelope`] with the given report ids (one report each).
pub fn seal_envelope_with_ids(
    agent: &AgentIdentity,
    collector: &CollectorPublicKey,
    seq: u64,
    ids: &[ReportId],
    now: UnixMillis,
    rng: &mut impl Entropy,
) -> SealedEnvelope {
    let app = AppInfo::new("com.example.loadtest", "1.0.0", "linux", "rust/0.1.0")
        .expect("fixed app info is valid");
    let reports: Vec<Report> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            Report::builder("checkout", "api.example.com", ErrorType::HttpError)
                .status(500 + (i % 4) as u16)
                .elapsed_ms(20 + i as u32)
                .observed_at(UnixMillis(now.0.saturating_sub(1000)))
                .build_with_id(*id, now)
                .expect("fixed report fields are valid")
        })
        .collect();
    let report_ids = reports.iter().map(|r| r.id().0).collect();
    let batch = Batch::new(agent.public_key(), seq, now, app).with_reports(reports);
    let bytes = seal_batch(&batch, agent, collector, rng).expect("a small batch seals");
    SealedEnvelope { bytes: Bytes::from(bytes), report_ids }
}

/// The wall clock as [`UnixMillis`].
pub fn unix_now() -> UnixMillis {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970");
    UnixMillis(u64::try_from(since.as_millis()).expect("milliseconds fit u64 until year 584556019"))
}

/// A TLS client config (ring, the default protocol versions, ALPN `http/1.1`) trusting only
/// `roots`.
pub fn tls_client_config(roots: rustls::RootCertStore) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::ring::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// An HTTP/1.1 keep-alive connection to a collector (plain or TLS), one request at a time.
pub struct HttpClient {
    sender: http1::SendRequest<Full<Bytes>>,
    authority: String,
}

impl HttpClient {
    /// Connects over plain TCP.
    pub async fn connect_plain(addr: SocketAddr) -> std::io::Result<HttpClient> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Self::handshake(tcp, addr.to_string()).await
    }

    /// Connects over plain TCP from `source` (any 127.x.y.z works on loopback), so the
    /// collector sees that address as the client's and its /24 as the client's network.
    pub async fn connect_plain_from(
        addr: SocketAddr,
        source: std::net::IpAddr,
    ) -> std::io::Result<HttpClient> {
        let tcp = tcp_from(addr, source).await?;
        Self::handshake(tcp, addr.to_string()).await
    }

    /// Connects over TLS, trusting only `roots` and checking the certificate for `server_name`
    /// (a DNS name or an IP literal).
    pub async fn connect_tls(
        addr: SocketAddr,
        roots: rustls::RootCertStore,
        server_name: &str,
    ) -> std::io::Result<HttpClient> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        Self::tls_over(tcp, addr, tls_client_config(roots), server_name).await
    }

    /// Connects over TLS from `source` (bound before connecting, as in
    /// [`HttpClient::connect_plain_from`]) with a shared client `config` (see
    /// [`tls_client_config`]: many connections share one, as one client process would).
    pub async fn connect_tls_from(
        addr: SocketAddr,
        source: std::net::IpAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> std::io::Result<HttpClient> {
        let tcp = tcp_from(addr, source).await?;
        Self::tls_over(tcp, addr, config, server_name).await
    }

    async fn tls_over(
        tcp: tokio::net::TcpStream,
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
    ) -> std::io::Result<HttpClient> {
        let name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp).await?;
        Self::handshake(tls, format!("{server_name}:{}", addr.port())).await
    }

    async fn handshake<S>(stream: S, authority: String) -> std::io::Result<HttpClient>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) =
            http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            // Ends when the peer closes or dies; the error then shows up on the next request.
            let _ = conn.await;
        });
        Ok(HttpClient { sender, authority })
    }

    /// Sends one POST and reads the whole answer.
    pub async fn post(
        &mut self,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(http::StatusCode, Bytes), hyper::Error> {
        let (status, _, body) = self.post_with_headers(path, content_type, body).await?;
        Ok((status, body))
    }

    /// Sends one POST and reads the whole answer, with its headers.
    pub async fn post_with_headers(
        &mut self,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<(http::StatusCode, http::HeaderMap, Bytes), hyper::Error> {
        let request = http::Request::post(path)
            .header(http::header::HOST, &self.authority)
            .header(http::header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .expect("a request from fixed parts is valid");
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, headers, body))
    }

    /// Sends one GET and reads the whole answer.
    pub async fn get(&mut self, path: &str) -> Result<(http::StatusCode, Bytes), hyper::Error> {
        let request = http::Request::get(path)
            .header(http::header::HOST, &self.authority)
            .body(Full::new(Bytes::new()))
            .expect("a request from fixed parts is valid");
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Sends one GET with extra headers (a `host` among them replaces the default `Host`) and
    /// reads the whole answer.
    pub async fn get_with(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<(http::StatusCode, Bytes), hyper::Error> {
        let mut builder = http::Request::get(path);
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            builder = builder.header(http::header::HOST, &self.authority);
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let request =
            builder.body(Full::new(Bytes::new())).expect("test headers are valid header values");
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// `POST /v1/envelopes` with `envelope`.
    pub async fn post_envelope(
        &mut self,
        envelope: Bytes,
    ) -> Result<(http::StatusCode, Bytes), hyper::Error> {
        self.post("/v1/envelopes", ENVELOPE_CONTENT_TYPE, envelope).await
    }
}

/// A TCP connection to `addr` from `source` (bound before connecting), with Nagle off.
async fn tcp_from(
    addr: SocketAddr,
    source: std::net::IpAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = match source {
        std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_text_has_the_harness_fixed_points() {
        let text = CollectorConfig { tls: true, unlimited: true, ..Default::default() }.to_toml();
        for needle in [
            "listen_plain = \"127.0.0.1:0\"",
            "listen_tls = \"127.0.0.1:0\"",
            "ready_file = \"ready.json\"",
            "private_key_files = [\"collector.key\"]",
            "path = \"data\"",
            "agent_rps = 1000000000.0",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        let plain_only = CollectorConfig::default().to_toml();
        assert!(!plain_only.contains("listen_tls") && !plain_only.contains("[limits]"));
    }

    #[test]
    fn key_file_is_hex_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = write_collector_key(dir.path(), [3; 32]);
        let text = std::fs::read_to_string(dir.path().join("collector.key")).unwrap();
        assert_eq!(hex::decode(text.trim()).unwrap(), key.secret_bytes());
        let mode =
            std::fs::metadata(dir.path().join("collector.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
