//! A minimal HTTPS receiver for agent tests: a real hyper server behind tokio-rustls on
//! 127.0.0.1 that opens and verifies envelopes with [`Opener`], records what arrived, counts
//! TCP connections (accepted, and open now), and can be told to answer 5xx/429 (with `Retry-After`), to read a request
//! and hang up without answering, or to stop listening.
//!
//! It answers like a collector would: `202` for an envelope that opens, `400` for one that
//! does not, `204` for `GET /v1/ping`. It is not the collector (no replay window, no storage,
//! no timeouts: it never closes a kept-alive connection itself).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use vantage_agent::report::Batch;
use vantage_collector::open::{CollectorKey, Opener};

use crate::tls::TestCert;

/// How the receiver answers envelope POSTs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `202` for envelopes that open, `400` for the others.
    Accept,
    /// This status for every envelope, with this `Retry-After` value if given.
    Status {
        /// The status.
        status: u16,
        /// The `Retry-After` header value (`"2"`, or an HTTP date).
        retry_after: Option<String>,
    },
    /// Read the whole request, then close the connection without an answer.
    DropAfterRead,
}

/// One envelope POST as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// When it arrived (after the body was read).
    pub at: Instant,
    /// The request body.
    pub bytes: Vec<u8>,
    /// The content type sent.
    pub content_type: Option<String>,
    /// The verified batch, when the envelope opened.
    pub batch: Option<Batch>,
    /// Why it did not open.
    pub open_error: Option<String>,
    /// The status answered (`None`: the connection was dropped).
    pub answered: Option<u16>,
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    pings: usize,
}

struct Shared {
    opener: Opener,
    mode: Mutex<Mode>,
    inner: Mutex<Inner>,
    connections: AtomicUsize,
    open: AtomicUsize,
}

/// Counts a connection as open from accept until its task ends (or is aborted).
struct OpenGuard(Arc<Shared>);

impl OpenGuard {
    fn new(shared: Arc<Shared>) -> OpenGuard {
        shared.open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(shared)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running receiver. Dropping it stops it.
pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: Mutex<JoinSet<()>>,
}

impl Receiver {
    /// Starts a receiver on 127.0.0.1 (a free port) serving `cert`, opening with `key`.
    pub async fn start(cert: &TestCert, key: CollectorKey) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        Receiver::serve(listener, cert, key)
    }

    /// Starts a receiver on `addr` (for a restart on the same port).
    pub async fn start_on(addr: SocketAddr, cert: &TestCert, key: CollectorKey) -> Receiver {
        let listener = TcpListener::bind(addr).await.expect("bind the given address");
        Receiver::serve(listener, cert, key)
    }

    fn serve(listener: TcpListener, cert: &TestCert, key: CollectorKey) -> Receiver {
        let addr = listener.local_addr().expect("bound listener has an address");
        let mut config = cert.server_config();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let shared = Arc::new(Shared {
            opener: Opener::new(vec![key]),
            mode: Mutex::new(Mode::Accept),
            inner: Mutex::new(Inner::default()),
            connections: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
        });
        let mut tasks = JoinSet::new();
        let accept_shared = shared.clone();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                accept_shared.connections.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let shared = accept_shared.clone();
                let open = OpenGuard::new(shared.clone());
                conns.spawn(async move {
                    let _open = open;
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Receiver { addr, shared, tasks: Mutex::new(tasks) }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Changes how envelope POSTs are answered from now on.
    pub fn set_mode(&self, mode: Mode) {
        *self.shared.mode.lock().expect("mode lock") = mode;
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// TCP connections open now: accepted and not yet closed (by the client, or by
    /// [`Receiver::stop`]).
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// `GET /v1/ping` requests answered so far.
    pub fn pings(&self) -> usize {
        self.shared.inner.lock().expect("inner lock").pings
    }

    /// Every envelope POST received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.inner.lock().expect("inner lock").received.clone()
    }

    /// The batches answered with `202`, in arrival order.
    pub fn accepted(&self) -> Vec<Batch> {
        self.received()
            .into_iter()
            .filter(|r| r.answered == Some(202))
            .filter_map(|r| r.batch)
            .collect()
    }

    /// Polls every 20 ms until `pred` holds or `timeout` passes; returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&Receiver) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops listening and closes every connection: the port refuses from now on.
    pub fn stop(&self) {
        self.tasks.lock().expect("tasks lock").abort_all();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, retry_after: Option<&str>) -> Reply {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::from_u16(status).expect("a valid status");
    if let Some(v) = retry_after {
        r.headers_mut().insert(http::header::RETRY_AFTER, v.parse().expect("header value"));
    }
    r
}

#[derive(Debug)]
struct HangUp;

impl std::fmt::Display for HangUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hanging up without an answer")
    }
}

impl std::error::Error for HangUp {}

async fn handle(shared: Arc<Shared>, req: Request<hyper::body::Incoming>) -> Result<Reply, HangUp> {
    match (req.method().as_str(), req.uri().path()) {
        ("GET", "/v1/ping") => {
            shared.inner.lock().expect("inner lock").pings += 1;
            return Ok(reply(204, None));
        }
        ("POST", "/v1/envelopes") => {}
        _ => return Ok(reply(404, None)),
    }
    let content_type = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = match req.into_body().collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(_) => return Err(HangUp),
    };
    let (batch, open_error) = match shared.opener.open(&bytes) {
        Ok(opened) => (Some(opened.batch), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mode = shared.mode.lock().expect("mode lock").clone();
    let (result, answered) = match &mode {
        Mode::Accept if batch.is_some() => (Ok(reply(202, None)), Some(202)),
        Mode::Accept => (Ok(reply(400, None)), Some(400)),
        Mode::Status { status, retry_after } => {
            (Ok(reply(*status, retry_after.as_deref())), Some(*status))
        }
        Mode::DropAfterRead => (Err(HangUp), None),
    };
    shared.inner.lock().expect("inner lock").received.push(Received {
        at: Instant::now(),
        bytes,
        content_type,
        batch,
        open_error,
        answered,
    });
    result
}
