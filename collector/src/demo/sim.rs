//! A simulated population of real agent cores reporting to a collector over loopback: what
//! `vantage-collector demo` runs, and what the end-to-end detection tests drive.
//!
//! Every simulated client is a real [`AgentCore`] (consent granted, every failure and every
//! success sampled unless [`PopulationConfig::sampling`] says otherwise, counts sealed every `report_interval_ms`) with its own identity. Its
//! envelopes go over a real HTTP/1.1 keep-alive connection to the collector's plain listener,
//! bound to the source address `127.0.<net>.<host>`: Linux routes all of 127.0.0.0/8 to
//! loopback, so the collector sees distinct /24 networks without any namespace. Client `i`
//! sits in network `i % networks`.
//!
//! [`Population::write_enrichment`] writes ip-location-db style CSV files that map each of those
//! /24s to a test ASN ([`asn_of`]) and country ([`country_of`]), for the collector's `[enrich]`
//! section, so slices by ASN and country exist as they would in production.
//!
//! The population runs on the wall clock (the collector stamps what it receives with its own), so it
//! pairs with a `[detector]` tuned for seconds rather than minutes, e.g.
//! [`FAST_DETECTOR_TOML`].
//!
//! ```no_run
//! # async fn demo(collector: vantage_agent::wire::CollectorPublicKey, addr: std::net::SocketAddr) {
//! use vantage_agent::taxonomy::ErrorType;
//! use vantage_collector::demo::sim::{Population, PopulationConfig};
//!
//! let mut population = Population::new(PopulationConfig::default(), collector);
//! // One step: each client makes 5 requests per service; "shop" fails for network 3 only.
//! let stats = population
//!     .step(addr, 5, |c, service| (service == "shop" && c.net == 3).then_some(ErrorType::TcpRefused))
//!     .await;
//! assert_eq!(stats.rejected, 0);
//! # }
//! ```

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use vantage_agent::buffer::MemoryStore;
use vantage_agent::delivery::Outcome;
use vantage_agent::entropy::SeededEntropy;
use vantage_agent::pipeline::{AgentCore, CoreConfig, ReportInput};
use vantage_agent::report::{AppInfo, Host, ServiceId, UnixMillis};
use vantage_agent::sampling::Sampling;
use vantage_agent::taxonomy::ErrorType;
use vantage_agent::wire::CollectorPublicKey;

use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;

use crate::ingest::ENVELOPE_CONTENT_TYPE;

/// A `[detector]` section for tests on the wall clock: 1 s buckets, 4 s windows, 15 windows
/// of warm-up, resolution after 3 quiet windows, 10 s lateness, a 90 s incident cool-down (the
/// default's 90 buckets), networks established after 6 s working (the default's 6 buckets).
pub const FAST_DETECTOR_TOML: &str = "[detector]\nbucket_ms = 1000\nwindow_buckets = 4\n\
    warmup_windows = 15\nlateness_ms = 10000\nclient_gap_ms = 10000\nflush_grace_ms = 3000\n\
    retro_settle_ms = 5000\nresolve_after = 3\nincident_cooldown_ms = 90000\nnet_tenure_ms = 6000\n";

/// The test ASN of network `net` (127.0.`net`.0/24): ten ASNs, AS64500..AS64509.
pub fn asn_of(net: u8) -> u32 {
    64_500 + u32::from(net % 10)
}

/// The test country of network `net`.
pub fn country_of(net: u8) -> &'static str {
    ["DE", "FR", "US", "BR", "JP"][usize::from(net % 5)]
}

/// The shape of a population.
#[derive(Clone, Debug)]
pub struct PopulationConfig {
    /// Simulated clients.
    pub clients: usize,
    /// Distinct /24 networks (1..=250); client `i` is in network `i % networks`.
    pub networks: u8,
    /// Services every client uses, each on host `<service>.example`.
    pub services: Vec<String>,
    /// How often each client seals its success counts (the agent's heartbeat).
    pub report_interval_ms: u64,
    /// Seeds the clients' identities and randomness.
    pub seed: u8,
    /// What each client samples. Default: every failure and every success.
    pub sampling: Sampling,
}

impl Default for PopulationConfig {
    fn default() -> Self {
        PopulationConfig {
            clients: 120,
            networks: 40,
            services: vec!["shop".into(), "search".into()],
            report_interval_ms: 2_000,
            seed: 1,
            sampling: Sampling::new(1.0, 1.0).expect("full sampling is a valid rate"),
        }
    }
}

/// What a client is, for the outcome function of [`Population::step`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientInfo {
    /// Index in the population.
    pub index: usize,
    /// Its network: it sends from 127.0.`net`.x.
    pub net: u8,
    /// Its network's test ASN.
    pub asn: u32,
}

/// What one step sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StepStats {
    /// Failures recorded.
    pub failures: u64,
    /// Successes counted.
    pub successes: u64,
    /// Envelopes the collector accepted (`202`).
    pub accepted: u64,
    /// Envelopes answered with anything else, or not answered.
    pub rejected: u64,
}

impl std::ops::AddAssign for StepStats {
    fn add_assign(&mut self, o: StepStats) {
        self.failures += o.failures;
        self.successes += o.successes;
        self.accepted += o.accepted;
        self.rejected += o.rejected;
    }
}

struct SimClient {
    info: ClientInfo,
    source: IpAddr,
    core: AgentCore<MemoryStore, SeededEntropy>,
    rng: SeededEntropy,
    conn: Option<Conn>,
    /// Where `conn` goes.
    conn_addr: Option<SocketAddr>,
}

/// How the clients reach the collector: plain HTTP by default; TLS and the `Host` header for
/// a collector named by URL (`vantage-collector demo --collector https://...`).
#[derive(Clone, Default)]
pub struct Transport {
    /// TLS to the collector: the connector (its roots) and the name the certificate must carry.
    pub tls: Option<(tokio_rustls::TlsConnector, rustls::pki_types::ServerName<'static>)>,
    /// The `Host` header (default: the address).
    pub host: Option<String>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("tls", &self.tls.as_ref().map(|(_, name)| name))
            .field("host", &self.host)
            .finish()
    }
}

/// Simulated clients; see the [module docs](self).
pub struct Population {
    config: PopulationConfig,
    clients: Vec<SimClient>,
    services: Vec<(String, ServiceId, Host)>,
    transport: Arc<Transport>,
}

impl Population {
    /// A population sealing to `collector`, consent granted at the wall clock's now.
    pub fn new(config: PopulationConfig, collector: CollectorPublicKey) -> Population {
        assert!((1..=250).contains(&config.networks), "networks must be 1..=250");
        let app = AppInfo::new("com.example.fleet", "1.0.0", "linux", "vantage-tests")
            .expect("fixed app info is valid");
        let now = unix_now();
        let clients = (0..config.clients)
            .map(|i| {
                let net = (i % usize::from(config.networks)) as u8;
                let host = 1 + (i / usize::from(config.networks)) as u8;
                let mut seed = [config.seed; 32];
                seed[..8].copy_from_slice(&(i as u64).to_be_bytes());
                let mut core_config = CoreConfig::new(app.clone(), collector, 1);
                core_config.sampling = config.sampling;
                core_config.report_interval_ms = Some(config.report_interval_ms);
                core_config.delivery.max_per_second = 1_000;
                core_config.scope_check_interval_ms = None;
                let mut core = AgentCore::new(
                    core_config,
                    MemoryStore::new(),
                    SeededEntropy::insecure_from_seed(seed),
                )
                .expect("a memory store opens");
                // The identity stays in memory: a simulated client never restarts.
                let _ = core.grant(now);
                seed[31] ^= 0xff;
                SimClient {
                    info: ClientInfo { index: i, net, asn: asn_of(net) },
                    source: IpAddr::V4(Ipv4Addr::new(127, 0, net, host)),
                    core,
                    rng: SeededEntropy::insecure_from_seed(seed),
                    conn: None,
                    conn_addr: None,
                }
            })
            .collect();
        let services = config
            .services
            .iter()
            .map(|s| {
                let id: ServiceId = s.parse().expect("test service ids are valid");
                let host = Host::parse(&format!("{s}.example")).expect("test hosts are valid");
                (s.clone(), id, host)
            })
            .collect();
        Population { config, clients, services, transport: Arc::new(Transport::default()) }
    }

    /// Uses `transport` (TLS, `Host`) for the connections opened from now on.
    pub fn set_transport(&mut self, transport: Transport) {
        self.transport = Arc::new(transport);
        for client in &mut self.clients {
            client.conn = None;
        }
    }

    /// The population's shape.
    pub fn config(&self) -> &PopulationConfig {
        &self.config
    }

    /// Writes `asn.csv` and `country.csv` into `dir` mapping every simulated network to its test
    /// ASN and country; returns their paths (for `[enrich] asn_csv` / `country_csv`).
    pub fn write_enrichment(&self, dir: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
        let mut asn = String::new();
        let mut country = String::new();
        for net in 0..self.config.networks {
            let _ =
                writeln!(asn, "127.0.{net}.0,127.0.{net}.255,{},\"Test AS {net}\"", asn_of(net));
            let _ = writeln!(country, "127.0.{net}.0,127.0.{net}.255,{}", country_of(net));
        }
        let (a, c) = (dir.join("asn.csv"), dir.join("country.csv"));
        std::fs::write(&a, asn)?;
        std::fs::write(&c, country)?;
        Ok((a, c))
    }

    /// One step at the wall clock's now: every client makes `requests` requests to every
    /// service; `outcome(client, service)` says which fail and how (`None`: success). Then
    /// each client seals what is due and delivers what its scheduler lets it send to the
    /// collector's plain listener at `addr`.
    pub async fn step(
        &mut self,
        addr: SocketAddr,
        requests: u32,
        outcome: impl Fn(&ClientInfo, &str) -> Option<ErrorType>,
    ) -> StepStats {
        self.step_routed(|_| vec![addr], requests, outcome).await
    }

    /// [`Population::step`] over several collectors: `route(client)` lists the collectors a client
    /// delivers to, in order; an envelope that gets no answer from one (connection refused or
    /// dropped) goes to the next, as an agent's failover does.
    pub async fn step_routed(
        &mut self,
        route: impl Fn(&ClientInfo) -> Vec<SocketAddr>,
        requests: u32,
        outcome: impl Fn(&ClientInfo, &str) -> Option<ErrorType>,
    ) -> StepStats {
        let mut stats = StepStats::default();
        let now = unix_now();
        for client in &mut self.clients {
            for (name, id, host) in &self.services {
                for _ in 0..requests {
                    match outcome(&client.info, name) {
                        Some(error) => {
                            let report = ReportInput::new(name, host.as_str(), &error)
                                .build(&mut client.rng, now)
                                .expect("test reports are valid");
                            client.core.handle_record(report, now);
                            stats.failures += 1;
                        }
                        None => {
                            client.core.handle_success(id, host, now);
                            stats.successes += 1;
                        }
                    }
                }
            }
            let addrs = route(&client.info);
            stats += client.deliver(&addrs, &self.transport, now).await;
        }
        stats
    }

    /// Seals everything pending in every client and delivers it.
    pub async fn flush(&mut self, addr: SocketAddr) -> StepStats {
        let mut stats = StepStats::default();
        let now = unix_now();
        for client in &mut self.clients {
            let _ = client.core.seal_pending(now);
            stats += client.deliver(&[addr], &self.transport, now).await;
        }
        stats
    }
}

impl SimClient {
    async fn deliver(
        &mut self,
        addrs: &[SocketAddr],
        transport: &Transport,
        now: UnixMillis,
    ) -> StepStats {
        let mut stats = StepStats::default();
        if self.core.poll_seal(now).is_err() {
            return stats;
        }
        while let Ok(Some(tx)) = self.core.poll_transmit(now) {
            let body = Bytes::from(tx.bytes);
            let mut answer = None;
            for addr in addrs {
                answer = self.post(*addr, transport, body.clone()).await;
                if answer.is_some() {
                    break;
                }
            }
            let outcome = match answer {
                Some(202) => Outcome::Accepted,
                Some(status @ (400 | 413)) => Outcome::Rejected { status },
                Some(status @ (429 | 503)) => Outcome::RetryAfter { status, delay_ms: 1_000 },
                Some(status) => Outcome::ServerError { status },
                None => Outcome::NetworkError,
            };
            if outcome == Outcome::Accepted {
                stats.accepted += 1;
            } else {
                stats.rejected += 1;
            }
            if self.core.handle_outcome(tx.id, outcome, now).is_err() {
                break;
            }
        }
        stats
    }

    /// POSTs on the kept-alive connection, reconnecting once if it went away.
    async fn post(&mut self, addr: SocketAddr, transport: &Transport, body: Bytes) -> Option<u16> {
        if self.conn_addr != Some(addr) {
            self.conn = None;
            self.conn_addr = Some(addr);
        }
        for _ in 0..2 {
            if self.conn.is_none() {
                self.conn = Conn::open(addr, self.source, transport).await.ok();
            }
            let conn = self.conn.as_mut()?;
            match conn.post_envelope(body.clone()).await {
                Ok(status) => return Some(status),
                Err(_) => self.conn = None,
            }
        }
        None
    }
}

/// The wall clock in ms since the epoch (0 if the clock is before 1970).
pub fn unix_now() -> UnixMillis {
    let since =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    UnixMillis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

/// An HTTP/1.1 keep-alive connection (plain or TLS) from a chosen source address.
struct Conn {
    sender: http1::SendRequest<Full<Bytes>>,
    authority: String,
}

impl Conn {
    /// Binds `source` when the collector is on loopback (every 127/8 address is local there);
    /// towards any other address the system picks the source, so all clients share one network.
    async fn open(
        addr: SocketAddr,
        source: IpAddr,
        transport: &Transport,
    ) -> std::io::Result<Conn> {
        let socket = match addr.ip() {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        if addr.ip().is_loopback() && addr.is_ipv4() == source.is_ipv4() {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let tcp = socket.connect(addr).await?;
        tcp.set_nodelay(true)?;
        let sender = match &transport.tls {
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                Conn::handshake(tls).await?
            }
            None => Conn::handshake(tcp).await?,
        };
        let authority = transport.host.clone().unwrap_or_else(|| addr.to_string());
        Ok(Conn { sender, authority })
    }

    async fn handshake<T>(io: T) -> std::io::Result<http1::SendRequest<Full<Bytes>>>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) =
            http1::handshake(TokioIo::new(io)).await.map_err(std::io::Error::other)?;
        tokio::spawn(async move {
            // Ends when the peer closes; the error then shows up on the next request.
            let _ = conn.await;
        });
        Ok(sender)
    }

    /// `POST /v1/envelopes`; the answer's status (its body is read and dropped).
    async fn post_envelope(&mut self, envelope: Bytes) -> Result<u16, hyper::Error> {
        let request = http::Request::post("/v1/envelopes")
            .header(http::header::HOST, &self.authority)
            .header(http::header::CONTENT_TYPE, ENVELOPE_CONTENT_TYPE)
            .body(Full::new(envelope))
            .expect("a request from fixed parts is valid");
        self.sender.ready().await?;
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let _ = response.into_body().collect().await?;
        Ok(status)
    }
}
