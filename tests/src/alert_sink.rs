//! A webhook receiver for notification tests: a real hyper HTTP/1.1 server on 127.0.0.1 (plain
//! or behind tokio-rustls) that records every request (path, headers, JSON body) and answers
//! from a script: first the queued answers (for example `500` twice, or `429` with
//! `Retry-After`), then a default status (`200` unless told otherwise).

use std::collections::VecDeque;
use std::net::SocketAddr;
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

use crate::tls::TestCert;

/// One answer: a status and an optional `Retry-After` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The `Retry-After` header value, if any.
    pub retry_after: Option<String>,
}

impl Answer {
    /// `status` without `Retry-After`.
    pub fn status(status: u16) -> Answer {
        Answer { status, retry_after: None }
    }
}

/// One request as received.
#[derive(Clone, Debug)]
pub struct Received {
    /// When its body had been read.
    pub at: Instant,
    /// The request path (with the query).
    pub path: String,
    /// The request headers (names lower case).
    pub headers: Vec<(String, String)>,
    /// The body parsed as JSON (`Null` when it was not JSON).
    pub json: serde_json::Value,
    /// The status answered.
    pub answered: u16,
}

impl Received {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// True when it was answered with a 2xx.
    pub fn accepted(&self) -> bool {
        (200..300).contains(&self.answered)
    }
}

#[derive(Default)]
struct Script {
    queued: VecDeque<Answer>,
    default: Option<Answer>,
}

#[derive(Default)]
struct Shared {
    script: Mutex<Script>,
    received: Mutex<Vec<Received>>,
}

/// A running sink. Dropping it stops it.
pub struct AlertSink {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl AlertSink {
    /// A plain HTTP sink on a free port of 127.0.0.1.
    pub async fn start() -> AlertSink {
        AlertSink::serve(None).await
    }

    /// An HTTPS sink on a free port of 127.0.0.1 serving `cert`.
    pub async fn start_tls(cert: &TestCert) -> AlertSink {
        let mut config = cert.server_config();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        AlertSink::serve(Some(TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn serve(acceptor: Option<TlsAcceptor>) -> AlertSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let shared = Arc::new(Shared::default());
        let tls = acceptor.is_some();
        let mut tasks = JoinSet::new();
        let accept_shared = shared.clone();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let shared = accept_shared.clone();
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    let http = hyper::server::conn::http1::Builder::new();
                    match acceptor {
                        Some(a) => {
                            let Ok(tls) = a.accept(tcp).await else { return };
                            let _ = http.serve_connection(TokioIo::new(tls), service).await;
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        AlertSink { addr, tls, shared, tasks }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", if self.tls { "https" } else { "http" }, self.addr)
    }

    /// Queues answers given before the default one, in order.
    pub fn push_answers(&self, answers: &[Answer]) {
        self.shared.script.lock().expect("script lock").queued.extend(answers.iter().cloned());
    }

    /// The answer once the queued ones are used up (`200` until set).
    pub fn set_default(&self, answer: Answer) {
        self.shared.script.lock().expect("script lock").default = Some(answer);
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("received lock").clone()
    }

    /// The requests to `path` so far, in arrival order.
    pub fn received_at(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path).collect()
    }

    /// Polls every 20 ms until `pred` holds or `timeout` passes; returns whether it held.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Received]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if pred(&self.received()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for AlertSink {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or_default().to_owned()))
        .collect();
    let body = req.into_body().collect().await?.to_bytes();
    let answer = {
        let mut script = shared.script.lock().expect("script lock");
        script.queued.pop_front().or_else(|| script.default.clone()).unwrap_or(Answer::status(200))
    };
    shared.received.lock().expect("received lock").push(Received {
        at: Instant::now(),
        path,
        headers,
        json: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        answered: answer.status,
    });
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = StatusCode::from_u16(answer.status).expect("a valid status");
    if let Some(v) = answer.retry_after {
        response.headers_mut().insert(http::header::RETRY_AFTER, v.parse().expect("header value"));
    }
    Ok(response)
}
