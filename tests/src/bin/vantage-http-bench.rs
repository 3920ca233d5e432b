//! What the HTTP client integrations cost per request, printed as figures (not a timed test):
//!
//! ```text
//! cargo build --release -p vantage-tests --bin vantage-http-bench
//! $CARGO_TARGET_DIR/release/vantage-http-bench [--requests N] [--rounds R]
//! ```
//!
//! One process, one run: a keep-alive HTTP/1.1 server on loopback (its own thread and
//! runtime) answers `200` with an empty body; on the main thread (a current-thread runtime,
//! so the clients' connection tasks run there too) each client family makes `--requests`
//! sequential GETs per variant (default 20 000), in `--rounds` interleaved rounds (default
//! 20) so drift hits every variant alike, after a warm-up:
//!
//! - hyper-util legacy `Client`: bare; with `VantageLayer` (default sampling: successes are
//!   not counted); with `VantageLayer` counting every success (`success_fraction = 1.0`);
//! - reqwest: bare `reqwest::Client`; `ClientWithMiddleware` with no middleware; with a
//!   middleware that does nothing but call the next one (what reqwest-middleware itself costs
//!   per middleware: its boxed futures); with `VantageMiddleware` (default sampling); with it
//!   counting every success.
//!
//! The agents are consented and map the server's host to a service, so every request takes
//! the whole path (host lookup, service mapping, outcome). Printed per variant: median and p99
//! wall time per request, CPU time per request of the client thread (`/proc/thread-self/
//! schedstat`, nanoseconds, no unsafe code needed), and the differences to the bare client.
//! The goal: the layer or middleware adds at most 1 µs median per request.
#![forbid(unsafe_code)]
// The figures on stdout are this tool's output.
#![allow(clippy::print_stdout)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower_layer::Layer;
use tower_service::Service;
use vantage_agent::native::integrations::reqwest::VantageMiddleware;
use vantage_agent::native::integrations::tower::VantageLayer;
use vantage_agent::native::{Agent, CollectorConfig};
use vantage_agent::report::AppInfo;
use vantage_agent::sampling::Sampling;

/// CPU time of the calling thread so far, in nanoseconds (first field of schedstat).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// A keep-alive HTTP/1.1 server answering 200 with an empty body, on its own thread.
fn start_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("local addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|_req| async {
                        Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    });
    addr
}

/// A consented agent whose service owns 127.0.0.1 (its collector is never reached: the
/// success-count heartbeat is off, and the bench sends no failure).
fn agent(dir: &std::path::Path, success_fraction: f64) -> Arc<Agent> {
    let app = AppInfo::new("com.example.bench", "1.0", "linux", "vantage-bench").expect("app");
    let key = vantage_collector::open::CollectorKey::from_seed([1; 32]).public_key();
    let agent = Agent::builder(app, key, dir)
        .service("bench", &["127.0.0.1"])
        .expect("service")
        .collector(CollectorConfig::new("https://127.0.0.1:9").expect("collector"))
        .sampling(Sampling::new(1.0, success_fraction).expect("sampling"))
        .report_interval(None)
        .scope_check_interval(None)
        .build()
        .expect("agent");
    agent.set_consent(true).expect("consent");
    Arc::new(agent)
}

type BoxFut<'a> = std::pin::Pin<Box<dyn Future<Output = ()> + 'a>>;

/// One variant: a name and a function making one request.
struct Variant<'a> {
    name: &'static str,
    request: Box<dyn FnMut() -> BoxFut<'a> + 'a>,
    samples: Vec<u64>,
    cpu_ns: u64,
}

fn hyper_variant<'a, S>(name: &'static str, url: &'a str, service: S) -> Variant<'a>
where
    S: Service<http::Request<Empty<Bytes>>, Response = http::Response<hyper::body::Incoming>>
        + Clone
        + 'a,
    S::Error: std::fmt::Debug,
{
    Variant {
        name,
        request: Box::new(move || {
            let mut service = service.clone();
            Box::pin(async move {
                std::future::poll_fn(|cx| service.poll_ready(cx)).await.expect("ready");
                let req = http::Request::get(url).body(Empty::new()).expect("request");
                let response = service.call(req).await.expect("response");
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.expect("body");
            })
        }),
        samples: Vec::new(),
        cpu_ns: 0,
    }
}

fn reqwest_variant<'a>(name: &'static str, url: &'a str, client: reqwest::Client) -> Variant<'a> {
    Variant {
        name,
        request: Box::new(move || {
            let client = client.clone();
            Box::pin(async move {
                let response = client.get(url).send().await.expect("response");
                assert_eq!(response.status(), 200);
                response.bytes().await.expect("body");
            })
        }),
        samples: Vec::new(),
        cpu_ns: 0,
    }
}

fn middleware_variant<'a>(
    name: &'static str,
    url: &'a str,
    client: reqwest_middleware::ClientWithMiddleware,
) -> Variant<'a> {
    Variant {
        name,
        request: Box::new(move || {
            let client = client.clone();
            Box::pin(async move {
                let response = client.get(url).send().await.expect("response");
                assert_eq!(response.status(), 200);
                response.bytes().await.expect("body");
            })
        }),
        samples: Vec::new(),
        cpu_ns: 0,
    }
}

/// A middleware that only calls the next one: what one middleware costs in reqwest-middleware
/// whatever it does (its `async_trait` future and `Next` are boxed per request).
struct NoopMiddleware;

#[async_trait::async_trait]
impl reqwest_middleware::Middleware for NoopMiddleware {
    async fn handle(
        &self,
        req: reqwest::Request,
        extensions: &mut http::Extensions,
        next: reqwest_middleware::Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        next.run(req, extensions).await
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Runs the variants in interleaved rounds and prints the table.
async fn run(title: &str, variants: &mut [Variant<'_>], requests: usize, rounds: usize) {
    for v in variants.iter_mut() {
        for _ in 0..requests.min(2000) {
            (v.request)().await;
        }
    }
    let per_round = (requests / rounds).max(1);
    for _ in 0..rounds {
        for v in variants.iter_mut() {
            let cpu = thread_cpu_ns();
            for _ in 0..per_round {
                let start = Instant::now();
                (v.request)().await;
                v.samples.push(start.elapsed().as_nanos() as u64);
            }
            v.cpu_ns += thread_cpu_ns() - cpu;
        }
    }
    println!("\n{title} ({} requests per variant, {rounds} rounds)", per_round * rounds);
    println!(
        "{:<44} {:>10} {:>10} {:>12} {:>14} {:>14}",
        "variant", "median µs", "p99 µs", "CPU µs/req", "Δmedian µs", "ΔCPU µs/req"
    );
    let mut base: Option<(f64, f64)> = None;
    for v in variants.iter_mut() {
        v.samples.sort_unstable();
        let median = percentile(&v.samples, 0.5) as f64 / 1000.0;
        let p99 = percentile(&v.samples, 0.99) as f64 / 1000.0;
        let cpu = v.cpu_ns as f64 / v.samples.len() as f64 / 1000.0;
        let (bm, bc) = *base.get_or_insert((median, cpu));
        println!(
            "{:<44} {median:>10.2} {p99:>10.2} {cpu:>12.2} {:>+14.2} {:>+14.2}",
            v.name,
            median - bm,
            cpu - bc
        );
    }
}

fn main() -> ExitCode {
    let mut requests = 20_000usize;
    let mut rounds = 20usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (a.as_str(), value) {
            ("--requests", Some(n)) => requests = n,
            ("--rounds", Some(n)) => rounds = n,
            _ => {
                eprintln!("usage: vantage-http-bench [--requests N] [--rounds R]");
                return ExitCode::from(2);
            }
        }
    }
    let rounds = rounds.max(1);
    let addr = start_server();
    let url = format!("http://{addr}/");
    let dir = tempfile::tempdir().expect("temp dir");
    let quiet = agent(&dir.path().join("a"), 0.0);
    let counting = agent(&dir.path().join("b"), 1.0);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    rt.block_on(async {
        let bare = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut hyper = [
            hyper_variant("hyper-util Client (bare)", &url, bare.clone()),
            hyper_variant(
                "+ VantageLayer (successes not sampled)",
                &url,
                VantageLayer::new(quiet.clone()).layer(bare.clone()),
            ),
            hyper_variant(
                "+ VantageLayer (every success counted)",
                &url,
                VantageLayer::new(counting.clone()).layer(bare),
            ),
        ];
        run("hyper-util legacy client", &mut hyper, requests, rounds).await;

        // reqwest with `rustls-no-provider` needs a TLS config even for plain HTTP: ring's.
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let bare = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .build()
            .expect("reqwest client");
        let with = |m: Option<VantageMiddleware>| {
            let b = reqwest_middleware::ClientBuilder::new(bare.clone());
            match m {
                Some(m) => b.with(m).build(),
                None => b.build(),
            }
        };
        let noop =
            reqwest_middleware::ClientBuilder::new(bare.clone()).with(NoopMiddleware).build();
        let mut reqwest = [
            reqwest_variant("reqwest Client (bare)", &url, bare.clone()),
            middleware_variant("ClientWithMiddleware, no middleware", &url, with(None)),
            middleware_variant("+ a no-op middleware (the framework's cost)", &url, noop),
            middleware_variant(
                "+ VantageMiddleware (successes not sampled)",
                &url,
                with(Some(VantageMiddleware::new(quiet.clone()))),
            ),
            middleware_variant(
                "+ VantageMiddleware (every success counted)",
                &url,
                with(Some(VantageMiddleware::new(counting.clone()))),
            ),
        ];
        run("reqwest", &mut reqwest, requests, rounds).await;
    });
    let stats = counting.stats();
    println!("\n(counting agent: {stats:?})");
    ExitCode::SUCCESS
}
