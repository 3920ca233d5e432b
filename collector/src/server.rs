//! Listeners, connections, limits and graceful shutdown.
//!
//! [`Collector::start`] opens the store, loads enrichment, binds the listeners and returns a
//! [`RunningCollector`]; the binary and the in-process tests both use it.
//!
//! Connection handling:
//! - **Budgets.** The public listeners (TLS and plain) share `max_connections`; the admin
//!   listener has its own `max_admin_connections`, so a flood on the public port never starves
//!   health checks, metrics scrapes or the dashboard. A permit is taken before the TLS
//!   handshake.
//! - **Accept queue.** Each listener is bound with an accept queue of 4096 connections (the
//!   kernel caps it at `net.core.somaxconn`), so a /24 reconnecting in waves as fast as its
//!   per-prefix share closes it does not overflow the queue and delay everyone else's
//!   connections by a SYN-ACK retransmission.
//! - **Per-prefix share.** A source /24 (IPv4) or /48 (IPv6) holds at most
//!   `max_connections_per_prefix` public connections; more are closed at accept, before any
//!   TLS or HTTP work (the `conntrack` module).
//! - **Idle connections make room.** When a budget is full, a new connection asks one idle
//!   connection (no request in progress; from the prefix holding the most, least recently
//!   used first) to close and takes its place, waiting at most 1 s. Only if every connection
//!   is busy is it answered `503 Service Unavailable` with `Retry-After: 1` and
//!   `Connection: close` over HTTP/1.1 (for TLS, after a handshake that offers only
//!   `http/1.1`, so HTTP/2 clients also get a readable answer); at most 64 connections at a
//!   time wait or are answered so, further ones are closed at once. Nothing waits in a queue.
//! - **Slow and idle clients.** The TLS handshake, the request headers (HTTP/1.1, hyper's
//!   `header_read_timeout`) and the request body must each arrive within
//!   `header_read_timeout`. Only requests count as activity (bytes that are not a request,
//!   such as HTTP/2 PINGs or a trickled header, do not): a connection whose first request has
//!   not started within `header_read_timeout`, or with no request for `idle_timeout` after the
//!   last, is shut down gracefully (HTTP/2: GOAWAY) and dropped if it has not finished
//!   `header_read_timeout` later. HTTP/2 allows 64 concurrent streams and 16 KiB of headers.
//! - **Shutdown.** [`RunningCollector::shutdown`] marks the collector not ready, stops
//!   accepting, asks every connection to finish (HTTP/1.1: after the current response;
//!   HTTP/2: GOAWAY), waits up to `shutdown_grace` for them, drops what is left, then
//!   flushes and closes the store.
//! - **Retention.** A background task calls [`Store::enforce_retention`] at start and then
//!   every `store.retention_check_secs` (default [`crate::store::DEFAULT_RETENTION_CHECK`]),
//!   on a blocking thread; it sleeps in between.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::admin_guard::AdminGuard;
use crate::alerting::Alerting;
use crate::config::{Config, load_tls};
use crate::conntrack::{ConnState, ConnTracker, Registration};
use crate::enrich::{EnrichError, Enricher};
use crate::feed::Feed;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::respond::retry;
use crate::routes::Routes;
use crate::store::{Store, StoreConfig, StoreError};

/// Connections answered `503` (or waiting for a reaped connection's place) at the same time,
/// at most, when a budget is full (per budget).
const MAX_REJECTING: usize = 64;

/// Each listener's accept queue: connections the kernel has completed and the accept loop
/// has not taken yet (the kernel caps it at `net.core.somaxconn`, 4096 by default since Linux
/// 5.4). When it is full the kernel drops the handshake's last ACK and the client waits for
/// a retransmission (a second or more), whoever it is: a /24 reconnecting as fast as it can
/// (closed at accept by its per-prefix share, it comes back at once) sends connections in
/// waves that overflowed tokio's default of 1024 and delayed other clients' connections by
/// about 1 s (hostile bench, idle keep-alive and idle HTTP/2 attacks).
const LISTEN_BACKLOG: u32 = 4096;

/// How long a connection that reaped an idle one waits for its place.
const REAP_WAIT: Duration = Duration::from_secs(1);

/// Why the collector did not start, or did not shut down cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The TLS certificate or key could not be loaded.
    #[error("{0}")]
    Tls(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {reason}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        reason: String,
    },
    /// The store could not be opened, or failed to close.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An enrichment file exists but could not be read.
    #[error(transparent)]
    Enrich(#[from] EnrichError),
    /// The ready file could not be written.
    #[error("cannot write ready file {path}: {reason}")]
    ReadyFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// Fleet mode could not start (its outbox or the NATS options).
    #[error("fleet: {0}")]
    Fleet(String),
}

/// Entry point of the collector.
pub struct Collector;

/// What connection tasks are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Serving,
    /// Finish the current requests, then close.
    Draining,
    /// Drop the connection now.
    Abort,
}

/// A started collector: listeners bound, serving until [`RunningCollector::shutdown`].
pub struct RunningCollector {
    tls_addr: Option<SocketAddr>,
    plain_addr: Option<SocketAddr>,
    routes: Arc<Routes>,
    phase: watch::Sender<Phase>,
    budgets: Vec<Arc<Budget>>,
    shutdown_grace: Duration,
    accept_tasks: Vec<JoinHandle<()>>,
    retention_task: JoinHandle<()>,
    admin_addr: Option<SocketAddr>,
    alerting_stop: watch::Sender<bool>,
    alerting_task: JoinHandle<()>,
}

/// A connection budget: the public listeners share one, the admin listener has its own, so
/// a flood on one never starves the other.
struct Budget {
    permits: Arc<Semaphore>,
    max: usize,
    tracker: Arc<ConnTracker>,
    /// Connections of this budget waiting for a reaped connection's place or being refused.
    rejecting: Arc<Semaphore>,
}

impl Budget {
    fn new(max: usize, per_prefix_max: usize) -> Arc<Budget> {
        Arc::new(Budget {
            permits: Arc::new(Semaphore::new(max)),
            max,
            tracker: ConnTracker::new(per_prefix_max),
            rejecting: Arc::new(Semaphore::new(MAX_REJECTING)),
        })
    }

    /// Waits until every connection of this budget has ended, or `limit` passes.
    async fn drained(&self, limit: Duration) -> bool {
        let all = u32::try_from(self.max).unwrap_or(u32::MAX);
        tokio::time::timeout(limit, self.permits.acquire_many(all)).await.is_ok()
    }

    fn open(&self) -> usize {
        self.max - self.permits.available_permits()
    }
}

/// What every accept loop and connection task needs.
struct Shared {
    routes: Arc<Routes>,
    builder: auto::Builder<TokioExecutor>,
    reject_builder: auto::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
}

impl Collector {
    /// Opens the store, loads enrichment data, binds the listeners and starts serving.
    ///
    /// Must be called inside a tokio runtime. When `server.ready_file` is set it is written
    /// after both listeners are bound.
    pub async fn start(config: Config) -> Result<RunningCollector, StartError> {
        let tls = match (&config.server.listen_tls, &config.server.tls_cert, &config.server.tls_key)
        {
            (Some(_), Some(cert), Some(key)) => {
                let server = load_tls(cert, key).map_err(|e| StartError::Tls(e.to_string()))?;
                // Answering 503 over HTTP/1.1 needs a config that does not offer h2.
                let mut h1_only = (*server).clone();
                h1_only.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some((TlsAcceptor::from(server), TlsAcceptor::from(Arc::new(h1_only))))
            }
            (Some(_), _, _) => {
                return Err(StartError::Tls("server.listen_tls needs tls_cert and tls_key".into()));
            }
            _ => None,
        };
        let (enricher, warnings) = Enricher::load(&config.enrich)?;
        for warning in warnings {
            tracing::warn!(%warning, "enrichment");
        }
        let mut store_config = StoreConfig::new(&config.store.path);
        store_config.retention = config.store.retention;
        store_config.max_bytes = config.store.max_bytes;
        store_config.dedup_horizon = config.store.dedup_horizon;
        store_config.sync = config.store.sync;
        store_config.space = config.store.space;
        store_config.cache_bytes = config.store.cache_bytes;
        let retention_check = config.store.retention_check;
        let store = Store::open(store_config)?;

        let bind = |addr: SocketAddr| async move {
            listen(addr).map_err(|e| StartError::Bind { addr, reason: e.to_string() })
        };
        let tls_listener = match config.server.listen_tls {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let plain_listener = match config.server.listen_plain {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let admin_listener = match config.server.listen_admin {
            Some(addr) => Some(bind(addr).await?),
            None => None,
        };
        let local = |l: &Option<TcpListener>| l.as_ref().and_then(|l| l.local_addr().ok());
        let (tls_addr, plain_addr) = (local(&tls_listener), local(&plain_listener));
        let admin_addr = local(&admin_listener);

        let s = &config.server;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(s.header_read_timeout)
            .max_buf_size(64 * 1024)
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(64)
            .max_header_list_size(16 * 1024);
        let mut reject_builder = auto::Builder::new(TokioExecutor::new()).http1_only();
        reject_builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(s.header_read_timeout)
            .keep_alive(false);

        let alerting = Alerting::start(
            &store,
            config.detector.clone(),
            config.notify.clone(),
            crate::clock::now_millis(),
        )?;
        let fleet = match config.fleet.clone() {
            Some(fleet) => Some(
                crate::fleet::Fleet::start(fleet, &store, alerting.clone())
                    .await
                    .map_err(|e| StartError::Fleet(e.to_string()))?,
            ),
            None => None,
        };
        let metrics = Arc::new(Metrics::new());
        let feed = Feed::new(alerting.clone(), fleet);
        let ingest = Ingest::new(&config, store.clone(), enricher, metrics.clone(), feed);
        let routes = Arc::new(Routes {
            ingest,
            alerting: alerting.clone(),
            store: store.clone(),
            metrics,
            ready: std::sync::atomic::AtomicBool::new(true),
            admin_guard: AdminGuard::new(s.admin_hosts.clone(), s.admin_token.clone()),
        });
        let public = Budget::new(s.max_connections, s.max_connections_per_prefix);
        // The admin listener is private: no per-prefix share, its own budget.
        let admin = Budget::new(s.max_admin_connections, s.max_admin_connections);
        let shared = Arc::new(Shared {
            routes: routes.clone(),
            builder,
            reject_builder,
            header_read_timeout: s.header_read_timeout,
            idle_timeout: s.idle_timeout,
        });
        let (phase, _) = watch::channel(Phase::Serving);
        let mut accept_tasks = Vec::new();
        if let (Some(listener), Some((acceptor, reject_acceptor))) = (tls_listener, tls) {
            let tls = Some((acceptor, reject_acceptor));
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                tls,
                Role::Public,
                public.clone(),
                shared.clone(),
                phase.subscribe(),
            )));
        }
        if let Some(listener) = plain_listener {
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                None,
                Role::Public,
                public.clone(),
                shared.clone(),
                phase.subscribe(),
            )));
        }
        if let Some(listener) = admin_listener {
            accept_tasks.push(tokio::spawn(accept_loop(
                listener,
                None,
                Role::Admin,
                admin.clone(),
                shared.clone(),
                phase.subscribe(),
            )));
        }
        let (alerting_stop, alerting_stop_rx) = watch::channel(false);
        let alerting_task = tokio::spawn(alerting.clone().run(alerting_stop_rx));
        let retention_task =
            tokio::spawn(retention_loop(store, retention_check, phase.subscribe()));

        if let Some(addr) = tls_addr {
            tracing::info!(%addr, "listening (HTTPS: HTTP/1.1 and HTTP/2)");
        }
        if let Some(addr) = plain_addr {
            tracing::info!(%addr, "listening (plain HTTP)");
        }
        if let Some(addr) = admin_addr {
            tracing::info!(%addr, "admin listening (dashboard, alerts API, metrics)");
        }
        let running = RunningCollector {
            tls_addr,
            plain_addr,
            admin_addr,
            alerting_stop,
            alerting_task,
            routes,
            phase,
            budgets: vec![public, admin],
            shutdown_grace: s.shutdown_grace,
            accept_tasks,
            retention_task,
        };
        if let Some(path) = &s.ready_file {
            if let Err(e) = write_ready_file(path, tls_addr, plain_addr, admin_addr) {
                let _ = running.shutdown_inner().await;
                return Err(e);
            }
        }
        Ok(running)
    }
}

fn write_ready_file(
    path: &Path,
    tls: Option<SocketAddr>,
    plain: Option<SocketAddr>,
    admin: Option<SocketAddr>,
) -> Result<(), StartError> {
    let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string());
    let json = serde_json::json!({ "tls": addr(tls), "plain": addr(plain), "admin": addr(admin) });
    let err = |e: std::io::Error| StartError::ReadyFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    // Written under another name and renamed, so a reader never sees half a file.
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{json}\n")).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

impl RunningCollector {
    /// The bound HTTPS address.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls_addr
    }

    /// The bound plain HTTP address.
    pub fn plain_addr(&self) -> Option<SocketAddr> {
        self.plain_addr
    }

    /// The bound admin address (dashboard, alerts API).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The detector and its alerts.
    pub fn alerting(&self) -> &Alerting {
        &self.routes.alerting
    }

    /// The store the collector writes to.
    pub fn store(&self) -> &Store {
        &self.routes.store
    }

    /// The collector's counters (what `/metrics` shows).
    pub fn metrics(&self) -> &Metrics {
        &self.routes.metrics
    }

    /// Graceful shutdown: not ready, stop accepting, drain connections for up to
    /// `shutdown_grace`, drop the rest, flush and close the store.
    pub async fn shutdown(self) -> Result<(), StartError> {
        self.shutdown_inner().await
    }

    async fn shutdown_inner(self) -> Result<(), StartError> {
        self.routes.ready.store(false, Ordering::Relaxed);
        let _ = self.phase.send(Phase::Draining);
        for task in self.accept_tasks {
            let _ = task.await;
        }
        let grace_end = Instant::now() + self.shutdown_grace;
        let mut drained = true;
        for budget in &self.budgets {
            drained &= budget.drained(grace_end.saturating_duration_since(Instant::now())).await;
        }
        if !drained {
            let open: usize = self.budgets.iter().map(|b| b.open()).sum();
            tracing::warn!(open, "shutdown grace over; closing connections still open");
            let _ = self.phase.send(Phase::Abort);
            // Aborted tasks give their permits back as soon as they are polled.
            for budget in &self.budgets {
                budget.drained(Duration::from_secs(5)).await;
            }
        }
        let _ = self.phase.send(Phase::Abort);
        let _ = self.retention_task.await;
        // No more submits: stop publishing (the outbox keeps the rest for the next start).
        if let Some(fleet) = self.routes.ingest.feed().fleet() {
            fleet.stop().await;
        }
        // Last snapshot and notifier stop, before the store closes under them.
        let _ = self.alerting_stop.send(true);
        let _ = self.alerting_task.await;
        self.routes.store.close().await?;
        tracing::info!("collector stopped");
        Ok(())
    }
}

/// Binds a listener with a [`LISTEN_BACKLOG`] accept queue (`SO_REUSEADDR` set, as
/// `TcpListener::bind` does).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Uploads (envelopes, NEL), ping, health, metrics.
    Public,
    /// The dashboard and its JSON API, health and metrics.
    Admin,
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<(TlsAcceptor, TlsAcceptor)>,
    role: Role,
    budget: Arc<Budget>,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) {
    loop {
        let accepted = tokio::select! {
            biased;
            _ = phase.changed() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                // Typically EMFILE: pause briefly instead of spinning on the error.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let peer = peer.ip();
        // Its prefix holds its share already: closed at once, it costs nothing more (not even
        // a setsockopt).
        let Some(registration) = budget.tracker.register(peer, Instant::now()) else {
            tracing::debug!("connection over the per-prefix limit closed");
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let conn = Conn { peer, role };
        match budget.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let acceptor = tls.as_ref().map(|(a, _)| a.clone());
                let slot = Slot { _permit: permit, registration };
                tokio::spawn(serve(tcp, acceptor, conn, shared.clone(), phase.clone(), slot));
            }
            Err(_) => {
                // Full: reap an idle connection and take its place, or answer 503.
                if let Ok(waiting) = budget.rejecting.clone().try_acquire_owned() {
                    let (shared, budget, phase) = (shared.clone(), budget.clone(), phase.clone());
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        let permit = if budget.tracker.reap_idle() {
                            let permits = budget.permits.clone();
                            tokio::time::timeout(REAP_WAIT, permits.acquire_owned()).await.ok()
                        } else {
                            None
                        };
                        match permit {
                            Some(Ok(permit)) => {
                                drop(waiting);
                                let acceptor = tls.as_ref().map(|(a, _)| a.clone());
                                let slot = Slot { _permit: permit, registration };
                                serve(tcp, acceptor, conn, shared, phase, slot).await;
                            }
                            _ => {
                                shared.routes.metrics.connection_rejected();
                                let acceptor = tls.as_ref().map(|(_, r)| r.clone());
                                refuse(tcp, acceptor, shared.clone(), waiting).await;
                                drop(registration);
                            }
                        }
                    });
                } else {
                    shared.routes.metrics.connection_rejected();
                    // Dropping `tcp` closes it.
                }
            }
        }
    }
}

/// What a served connection holds until it ends: a place in the listener's budget and in
/// its prefix's share.
struct Slot {
    _permit: OwnedSemaphorePermit,
    registration: Registration,
}

/// Who is on a connection and which listener it came in on.
#[derive(Clone, Copy, Debug)]
struct Conn {
    peer: IpAddr,
    role: Role,
}

/// Serves one connection until it ends, idles out, is reaped, or shutdown says so.
async fn serve(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    peer: Conn,
    shared: Arc<Shared>,
    phase: watch::Receiver<Phase>,
    slot: Slot,
) {
    let metrics = &shared.routes.metrics;
    metrics.connection_opened();
    slot.registration.serving();
    let state = slot.registration.state().clone();
    match tls {
        None => drive(tcp, peer, state, &shared, phase).await,
        Some(acceptor) => {
            let handshake = acceptor.accept(tcp);
            tokio::select! {
                done = tokio::time::timeout(shared.header_read_timeout, handshake) => match done {
                    Ok(Ok(stream)) => drive(stream, peer, state, &shared, phase).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
                _ = state.reaped() => tracing::debug!("handshaking connection reaped"),
            }
        }
    }
    metrics.connection_closed();
    drop(slot);
}

async fn drive<I>(
    io: I,
    who: Conn,
    state: Arc<ConnState>,
    shared: &Shared,
    mut phase: watch::Receiver<Phase>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let routes = shared.routes.clone();
    let requests = state.clone();
    let service = service_fn(move |req| {
        let routes = routes.clone();
        let guard = requests.request_started();
        async move {
            let response = match who.role {
                Role::Public => routes.public(who.peer, req).await,
                Role::Admin => routes.admin(req).await,
            };
            drop(guard);
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let conn = shared.builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    // No request within `header_read_timeout` of connecting (an HTTP/2 connection that only
    // sends PINGs, say), or none for `idle_timeout` after the last: graceful close, then drop
    // after `header_read_timeout` more. Only requests count as activity.
    let (first, idle) = (shared.header_read_timeout, shared.idle_timeout);
    let mut limit = idle;
    let mut draining = false;
    if *phase.borrow() != Phase::Serving {
        conn.as_mut().graceful_shutdown();
        draining = true;
    }
    loop {
        let deadline = state.idle_deadline(first, limit);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            changed = phase.changed() => {
                let now = if changed.is_ok() { *phase.borrow_and_update() } else { Phase::Abort };
                match now {
                    Phase::Serving => {}
                    Phase::Draining => {
                        if !draining {
                            conn.as_mut().graceful_shutdown();
                            draining = true;
                        }
                    }
                    Phase::Abort => return,
                }
            }
            _ = state.reaped() => {
                // Nothing in progress: nothing acknowledged is lost by dropping it.
                if state.active() == 0 {
                    return;
                }
                conn.as_mut().graceful_shutdown();
                draining = true;
            }
            _ = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                if state.idle_expired(first, limit, now) {
                    if draining {
                        return;
                    }
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                    limit = first;
                    state.restart_clock(now);
                }
            }
        }
    }
}

/// Answers `503` + `Retry-After` on a connection over the limit, then closes it.
async fn refuse(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let deadline = shared.header_read_timeout * 2;
    let service = service_fn(|_req| async {
        let mut r = retry(http::StatusCode::SERVICE_UNAVAILABLE, Duration::from_secs(1));
        r.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        Ok::<_, std::convert::Infallible>(r)
    });
    let work = async {
        match tls {
            None => {
                let _ = shared.reject_builder.serve_connection(TokioIo::new(tcp), service).await;
            }
            Some(acceptor) => {
                if let Ok(stream) = acceptor.accept(tcp).await {
                    let _ =
                        shared.reject_builder.serve_connection(TokioIo::new(stream), service).await;
                }
            }
        }
    };
    let _ = tokio::time::timeout(deadline, work).await;
}

async fn retention_loop(store: Store, every: Duration, mut phase: watch::Receiver<Phase>) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = phase.changed() => return,
            _ = interval.tick() => {}
        }
        let store = store.clone();
        let now = crate::clock::now_millis();
        match tokio::task::spawn_blocking(move || store.enforce_retention(now)).await {
            Ok(Ok(stats)) => tracing::debug!(?stats, "retention"),
            Ok(Err(e)) => tracing::error!(error = %e, "retention failed"),
            Err(e) => tracing::error!(error = %e, "retention task panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    /// A wave of 2000 connections completes while nothing accepts: the queue is
    /// [`LISTEN_BACKLOG`], not tokio's default 1024 (with which the 1026th connection's
    /// handshake is dropped and every later one waits for retransmissions). Skipped when the
    /// kernel caps queues lower (`net.core.somaxconn` < 2048).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wave_of_connections_fits_the_accept_queue() {
        let cap: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        if cap < 2048 {
            eprintln!("net.core.somaxconn is {cap}: the kernel caps the queue below 2048");
            return;
        }
        let listener = listen(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut wave = tokio::task::JoinSet::new();
        for i in 0..2000u32 {
            // From many source addresses, so no source runs short of ports.
            let source = Ipv4Addr::new(127, 41, (i / 250) as u8, 1 + (i % 250) as u8);
            wave.spawn(async move {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(SocketAddr::from((source, 0)))?;
                tokio::time::timeout(Duration::from_secs(10), socket.connect(addr))
                    .await
                    .map_err(|_| std::io::Error::other("no handshake within 10 s"))?
            });
        }
        let (mut connected, mut failed) = (Vec::new(), Vec::new());
        while let Some(joined) = wave.join_next().await {
            match joined.unwrap() {
                Ok(tcp) => connected.push(tcp),
                Err(e) => failed.push(e.to_string()),
            }
        }
        assert!(failed.is_empty(), "{} of 2000 failed: {:?}", failed.len(), &failed[..1]);
        // The queue holds them all: accepting now takes them without waiting for anyone.
        for _ in 0..2000 {
            tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.unwrap().unwrap();
        }
        drop(connected);
    }
}
