//! Hostile clients for the collector's own test suite and the hostile-traffic benchmark:
//! connection attacks from one or more source prefixes on loopback (every 127/8 address is
//! local, so `127.1.2.x` and `127.9.9.x` are different /24s to the collector), and a legitimate
//! client that counts what got through.
//!
//! Attacks ([`Attack`]) run as tokio tasks that reconnect whenever the collector closes their
//! connection, until [`AttackHandle::stop`]. [`legit_uploads`] posts sealed envelopes, each on a
//! fresh connection (the worst case: every request needs a connection slot), and reports
//! successes and latencies. [`volume_flood`] posts big batches ([`big_envelopes`]) back to back
//! from one /24, as a volume attacker would, and counts what was acknowledged and refused.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use vantage_agent::entropy::SeededEntropy;
use vantage_agent::wire::{AgentIdentity, CollectorPublicKey};

use crate::collector_proc::{
    ENVELOPE_CONTENT_TYPE, HttpClient, SealedEnvelope, seal_envelope, unix_now,
};

/// An in-process collector for the hostile tests: plain and admin listeners on 127.0.0.1,
/// the key of seed `[7; 32]`, a store in a temp dir.
pub struct Target {
    _dir: tempfile::TempDir,
    /// The running collector.
    pub running: vantage_collector::server::RunningCollector,
    /// Its collector key (agents seal to its public half).
    pub key: vantage_collector::open::CollectorKey,
    /// The plain listener.
    pub plain: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
}

impl Target {
    /// Starts one with `server` lines added to `[server]` and `limits` as `[limits]`.
    pub async fn start(server: &str, limits: &str) -> Target {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = vantage_collector::open::CollectorKey::from_seed([7; 32]);
        let hex: String = key.secret_bytes().iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(dir.path().join("collector.key"), hex).expect("write the key");
        let text = format!(
            "[server]\nlisten_plain = \"127.0.0.1:0\"\nlisten_admin = \"127.0.0.1:0\"\n{server}\n\
             [keys]\nprivate_key_files = [\"collector.key\"]\n[store]\npath = \"data\"\n\
             [limits]\n{limits}\n"
        );
        let config = vantage_collector::config::Config::from_toml_str(&text, dir.path())
            .expect("a valid test config");
        let running =
            vantage_collector::server::Collector::start(config).await.expect("collector starts");
        let plain = running.plain_addr().expect("a plain listener");
        let admin = running.admin_addr().expect("an admin listener");
        Target { _dir: dir, running, key, plain, admin }
    }
}

/// A kind of connection attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    /// Slowloris: a request line, then one header byte per second, never finishing.
    Slowloris,
    /// HTTP/1.1 keep-alive connections sending `GET /v1/ping` every 3 s.
    IdleKeepAlive,
    /// HTTP/2 (prior knowledge) connections that never send a request, only a PING every 2 s.
    IdleH2Ping,
}

impl Attack {
    /// Every attack kind.
    pub const ALL: [Attack; 3] = [Attack::Slowloris, Attack::IdleKeepAlive, Attack::IdleH2Ping];

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Attack::Slowloris => "slowloris",
            Attack::IdleKeepAlive => "idle keep-alive",
            Attack::IdleH2Ping => "idle h2 + PING",
        }
    }
}

/// Connects to `target` from `source` (bound before connecting).
pub async fn connect_from(source: IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let tcp = socket.connect(target).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// `n` source addresses in `a.b.c.0/24`, starting at `.1` (wrapping within 1..=254).
pub fn sources(a: u8, b: u8, c: u8, n: usize) -> Vec<IpAddr> {
    (0..n).map(|i| IpAddr::V4(Ipv4Addr::new(a, b, c, 1 + (i % 254) as u8))).collect()
}

/// A running attack.
pub struct AttackHandle {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    connects: Arc<AtomicU64>,
}

impl AttackHandle {
    /// Connections made so far (each reconnect counts).
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    /// Stops every attacking task and closes its connection.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            task.abort();
            let _ = task.await;
        }
    }
}

/// Starts one attacking task per source address in `from`, each holding one connection to
/// `target` and reconnecting (after 200 ms) whenever it is closed.
pub fn launch(kind: Attack, target: SocketAddr, from: &[IpAddr]) -> AttackHandle {
    let (stop, stop_rx) = watch::channel(false);
    let connects = Arc::new(AtomicU64::new(0));
    let tasks = from
        .iter()
        .map(|&source| {
            let mut stop_rx = stop_rx.clone();
            let connects = connects.clone();
            tokio::spawn(async move {
                loop {
                    if *stop_rx.borrow() {
                        return;
                    }
                    if let Ok(tcp) = connect_from(source, target).await {
                        connects.fetch_add(1, Ordering::Relaxed);
                        tokio::select! {
                            _ = stop_rx.changed() => return,
                            _ = hold(kind, tcp) => {}
                        }
                    }
                    tokio::select! {
                        _ = stop_rx.changed() => return,
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    }
                }
            })
        })
        .collect();
    AttackHandle { stop, tasks, connects }
}

/// Plays `kind` on one connection until the collector closes it.
async fn hold(kind: Attack, tcp: TcpStream) {
    let (mut rd, mut wr) = tcp.into_split();
    let reader = async move {
        let mut buf = vec![0u8; 4096];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    let writer = async move {
        let result: std::io::Result<()> = async {
            match kind {
                Attack::Slowloris => {
                    wr.write_all(b"GET /v1/ping HTTP/1.1\r\nhost: collector\r\nx-slow: ").await?;
                    loop {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        wr.write_all(b"a").await?;
                    }
                }
                Attack::IdleKeepAlive => loop {
                    wr.write_all(b"GET /v1/ping HTTP/1.1\r\nhost: collector\r\n\r\n").await?;
                    tokio::time::sleep(Duration::from_secs(3)).await;
                },
                Attack::IdleH2Ping => {
                    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
                    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]); // SETTINGS
                    hello.extend_from_slice(&[0, 0, 0, 4, 1, 0, 0, 0, 0]); // SETTINGS ack
                    wr.write_all(&hello).await?;
                    loop {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        let ping = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
                        wr.write_all(&ping).await?;
                    }
                }
            }
        }
        .await;
        let _ = result;
        // A write failed: the peer is gone. Wait for the reader to see it too.
        std::future::pending::<()>().await;
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
}

/// What a legitimate client got.
#[derive(Clone, Debug, Default)]
pub struct LegitStats {
    /// Uploads answered `202`.
    pub accepted: usize,
    /// Uploads that failed (any other status, a refused or dropped connection, a timeout),
    /// with what happened, for assertion messages.
    pub failures: Vec<String>,
    /// Latency of every attempt (connect to full answer), successful or not.
    pub latencies: Vec<Duration>,
}

impl LegitStats {
    /// Attempts made.
    pub fn attempts(&self) -> usize {
        self.accepted + self.failures.len()
    }

    /// The `q` quantile (0..=1) of the latencies.
    pub fn quantile(&self, q: f64) -> Duration {
        let mut l = self.latencies.clone();
        l.sort();
        if l.is_empty() {
            return Duration::ZERO;
        }
        let i = ((l.len() - 1) as f64 * q).round() as usize;
        l[i.min(l.len() - 1)]
    }
}

/// Posts `n` sealed envelopes (one report each, each from a new agent made from `agent_seed`
/// and its number, so the per-agent rate limit stays out of the way) from `source`, each on a
/// new connection, `gap` apart, to the plain listener at `target`. Each attempt has `timeout`.
pub async fn legit_uploads(
    target: SocketAddr,
    source: IpAddr,
    agent_seed: u8,
    collector: &CollectorPublicKey,
    n: usize,
    gap: Duration,
    timeout: Duration,
) -> LegitStats {
    let mut stats = LegitStats::default();
    for seq in 1..=n as u64 {
        let mut seed = [agent_seed; 32];
        seed[..8].copy_from_slice(&seq.to_le_bytes());
        let mut rng = SeededEntropy::insecure_from_seed(seed);
        let agent = AgentIdentity::generate(&mut rng);
        let sealed = seal_envelope(&agent, collector, seq, 1, unix_now(), &mut rng);
        let started = Instant::now();
        let attempt = async {
            let mut client =
                HttpClient::connect_plain_from(target, source).await.map_err(|e| e.to_string())?;
            client
                .post("/v1/envelopes", ENVELOPE_CONTENT_TYPE, sealed.bytes.clone())
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok((status, _))) if status.as_u16() == 202 => stats.accepted += 1,
            Ok(Ok((status, body))) => {
                stats.failures.push(format!("{status} {}", String::from_utf8_lossy(&body)))
            }
            Ok(Err(e)) => stats.failures.push(e),
            Err(_) => stats.failures.push("timed out".into()),
        }
        stats.latencies.push(started.elapsed());
        tokio::time::sleep(gap).await;
    }
    stats
}

/// `GET path` on a new plain connection to `target`; the status, or the error.
pub async fn get(target: SocketAddr, path: &str, timeout: Duration) -> Result<u16, String> {
    let attempt = async {
        let mut client = HttpClient::connect_plain(target).await.map_err(|e| e.to_string())?;
        client.get(path).await.map(|(s, _)| s.as_u16()).map_err(|e| e.to_string())
    };
    tokio::time::timeout(timeout, attempt).await.map_err(|_| "timed out".to_owned())?
}

/// `vantage_connections_open` from the `/metrics` page at `target` (admin or public).
pub async fn connections_open(target: SocketAddr) -> Option<u64> {
    let mut client = HttpClient::connect_plain(target).await.ok()?;
    let (_, body) = client.get("/metrics").await.ok()?;
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("vantage_connections_open "))
        .and_then(|v| v.trim().parse().ok())
}

/// Polls `/metrics` at `admin` until at least `n` connections are open, or `within` passes;
/// the last count seen.
pub async fn wait_for_open(admin: SocketAddr, n: u64, within: Duration) -> u64 {
    let deadline = Instant::now() + within;
    loop {
        let open = connections_open(admin).await.unwrap_or(0);
        if open >= n || Instant::now() >= deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `n` sealed envelopes of `reports` reports each, every one from its own agent (made from
/// `seed` and its number), so only per-source budgets apply to them.
pub fn big_envelopes(
    collector: &CollectorPublicKey,
    seed: u8,
    n: usize,
    reports: usize,
) -> Vec<SealedEnvelope> {
    (0..n as u64)
        .map(|i| {
            let mut s = [seed; 32];
            s[..8].copy_from_slice(&i.to_le_bytes());
            let mut rng = SeededEntropy::insecure_from_seed(s);
            let agent = AgentIdentity::generate(&mut rng);
            seal_envelope(&agent, collector, 1, reports, unix_now(), &mut rng)
        })
        .collect()
}

/// What a volume flood got.
#[derive(Clone, Debug, Default)]
pub struct FloodStats {
    /// Envelopes answered `202` (stored or duplicate).
    pub accepted: usize,
    /// Report ids of the accepted envelopes.
    pub accepted_ids: Vec<[u8; 16]>,
    /// Body bytes of the accepted envelopes.
    pub accepted_bytes: u64,
    /// `429` answers.
    pub refused: usize,
    /// `429` answers without a `Retry-After` header of whole seconds.
    pub refused_without_retry_after: usize,
    /// The first line of each distinct `429` body.
    pub refusal_bodies: Vec<String>,
    /// Any other outcome (status and body, or the error).
    pub failures: Vec<String>,
    /// Posts made.
    pub attempts: usize,
}

/// How long a flood post started before the flood's end may take to be answered. A post is
/// never abandoned at the deadline: the collector would go on and might store it, and then
/// the store would hold reports nobody saw acknowledged (the count checks would fail under a
/// slow run, when more posts are in flight at the deadline).
pub const FLOOD_ANSWER_LIMIT: Duration = Duration::from_secs(30);

/// Floods `target`'s `/v1/envelopes` from `from` (one keep-alive connection per address,
/// posting back to back, ignoring `Retry-After`) with `envelopes`, until each was accepted
/// once or `within` passes; no post starts after that, and the posts in flight are answered
/// before it returns (a post not answered within [`FLOOD_ANSWER_LIMIT`] is a failure). A
/// refused envelope is posted again later, as a retrying agent would.
pub async fn volume_flood(
    target: SocketAddr,
    from: &[IpAddr],
    envelopes: Vec<SealedEnvelope>,
    within: Duration,
) -> FloodStats {
    let queue = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(envelopes)));
    let stats = Arc::new(std::sync::Mutex::new(FloodStats::default()));
    let deadline = Instant::now() + within;
    let tasks: Vec<_> = from
        .iter()
        .map(|&source| {
            let (queue, stats) = (queue.clone(), stats.clone());
            tokio::spawn(async move {
                let mut client = None;
                while Instant::now() < deadline {
                    let Some(envelope) = queue.lock().expect("queue lock").pop_front() else {
                        return;
                    };
                    if client.is_none() {
                        client = HttpClient::connect_plain_from(target, source).await.ok();
                    }
                    let Some(c) = client.as_mut() else {
                        queue.lock().expect("queue lock").push_back(envelope);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    };
                    let answer = tokio::time::timeout(
                        FLOOD_ANSWER_LIMIT,
                        c.post_with_headers(
                            "/v1/envelopes",
                            ENVELOPE_CONTENT_TYPE,
                            envelope.bytes.clone(),
                        ),
                    )
                    .await;
                    let mut s = stats.lock().expect("stats lock");
                    s.attempts += 1;
                    match answer {
                        Ok(Ok((status, _, _))) if status.as_u16() == 202 => {
                            s.accepted += 1;
                            s.accepted_bytes += envelope.bytes.len() as u64;
                            s.accepted_ids.extend_from_slice(&envelope.report_ids);
                            continue;
                        }
                        Ok(Ok((status, headers, body))) if status.as_u16() == 429 => {
                            s.refused += 1;
                            let retry = headers
                                .get(http::header::RETRY_AFTER)
                                .and_then(|v| v.to_str().ok())
                                .and_then(|v| v.parse::<u64>().ok());
                            if retry.is_none_or(|r| r < 1) {
                                s.refused_without_retry_after += 1;
                            }
                            let text = String::from_utf8_lossy(&body);
                            let line = text.lines().next().unwrap_or("").to_owned();
                            // "…; retry after N s": keep the part before the wait.
                            let why = line.split("; retry after").next().unwrap_or("").to_owned();
                            if !s.refusal_bodies.contains(&why) {
                                s.refusal_bodies.push(why);
                            }
                        }
                        Ok(Ok((status, _, body))) => s
                            .failures
                            .push(format!("{status} {}", String::from_utf8_lossy(&body).trim())),
                        Ok(Err(e)) => {
                            s.failures.push(e.to_string());
                            client = None;
                        }
                        Err(_) => {
                            s.failures.push(format!("no answer within {FLOOD_ANSWER_LIMIT:?}"));
                            client = None;
                        }
                    }
                    drop(s);
                    queue.lock().expect("queue lock").push_back(envelope);
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let guard = stats.lock().expect("stats lock");
    guard.clone()
}
