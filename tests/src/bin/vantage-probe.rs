//! Test helper for the network-namespace fault tests (`tests/tests/agent_faults.rs`). It runs
//! inside a namespace (`ip netns exec <ns> vantage-probe ...`), so that name resolution uses
//! that namespace's `/etc/netns/<ns>/resolv.conf` and sockets use its interfaces:
//!
//! ```text
//! vantage-probe check <url> [--ca FILE] [--dns-timeout-ms N] [--connect-timeout-ms N]
//!                           [--tls-timeout-ms N] [--http-timeout-ms N]
//!     runs probe::check and prints one JSON line: {"outcome":"failed","type":"tcp.refused",
//!     "phase":"connection","elapsed_ms":3,"status":null,"protocol":""} or
//!     {"outcome":"success","status":200,"elapsed_ms":9,"protocol":"http/1.1"}
//! vantage-probe ping <base-url> [--fixed IP:PORT]... [--ca FILE] [--http-timeout-ms N]
//!     runs probe::ping and prints {"reachable":true|false}
//! vantage-probe agent-check <url> --data-dir DIR [--ca FILE]
//!     starts a native Agent (consent granted, one service for the URL's host, scope checks
//!     off), runs Agent::check, waits until the agent has recorded the failure and prints
//!     {"outcome":"failed","type":...,"phase":...,"elapsed_ms":...,"recorded":1,
//!     "sealed_envelopes":1}
//! vantage-probe serve [--dns ADDR] [--a NAME=IP[,IP...]]... [--servfail NAME]...
//!                     [--refused NAME]... [--drop NAME]... [--http ADDR]...
//!                     [--https ADDR,CERT.pem,KEY.pem]... [--garbage ADDR]...
//!     serves until killed; prints "ready" once every socket is bound. HTTP(S) servers answer
//!     GET /v1/ping with 204, GET /status/NNN with NNN, anything else with 200; a garbage
//!     server answers every connection with bytes that are not HTTP.
//! ```
#![forbid(unsafe_code)]
// The output on stdout is this tool's interface.
#![allow(clippy::print_stdout)]

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vantage_agent::native::probe::{self, CheckOutcome, ProbeConfig};
use vantage_tests::dns_server::{Answer, DnsServer, Zone};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    match runtime.block_on(dispatch(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vantage-probe: {message}");
            ExitCode::from(2)
        }
    }
}

async fn dispatch(args: &[String]) -> Result<(), String> {
    match args.split_first() {
        Some((cmd, rest)) if cmd == "check" => check(rest).await,
        Some((cmd, rest)) if cmd == "ping" => ping(rest).await,
        Some((cmd, rest)) if cmd == "serve" => serve(rest).await,
        Some((cmd, rest)) if cmd == "agent-check" => agent_check(rest).await,
        _ => Err("usage: vantage-probe check|ping|serve ... (see the source's docs)".into()),
    }
}

/// Options as `--name value` pairs after positional arguments.
struct Opts {
    positional: Vec<String>,
    named: Vec<(String, String)>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let mut opts = Opts { positional: Vec::new(), named: Vec::new() };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if let Some(name) = arg.strip_prefix("--") {
                let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                opts.named.push((name.to_owned(), value.clone()));
            } else {
                opts.positional.push(arg.clone());
            }
        }
        Ok(opts)
    }

    fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.named.iter().filter(move |(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.all(name).last()
    }

    fn millis(&self, name: &str) -> Result<Option<Duration>, String> {
        self.one(name)
            .map(|v| v.parse().map(Duration::from_millis).map_err(|e| format!("--{name}: {e}")))
            .transpose()
    }

    fn probe_config(&self) -> Result<ProbeConfig, String> {
        let mut roots = Vec::new();
        for file in self.all("ca") {
            for cert in CertificateDer::pem_file_iter(file).map_err(|e| format!("{file}: {e}"))? {
                roots.push(cert.map_err(|e| format!("{file}: {e}"))?);
            }
        }
        let mut config = ProbeConfig::new(roots);
        if let Some(d) = self.millis("dns-timeout-ms")? {
            config = config.dns_timeout(d);
        }
        if let Some(d) = self.millis("connect-timeout-ms")? {
            config = config.connect_timeout(d);
        }
        if let Some(d) = self.millis("tls-timeout-ms")? {
            config = config.tls_timeout(d);
        }
        if let Some(d) = self.millis("http-timeout-ms")? {
            config = config.http_timeout(d);
        }
        Ok(config)
    }
}

async fn check(args: &[String]) -> Result<(), String> {
    let opts = Opts::parse(args)?;
    let [url] = opts.positional.as_slice() else {
        return Err("check needs exactly one URL".into());
    };
    let config = opts.probe_config()?;
    let outcome = probe::check(url, &config).await.map_err(|e| e.to_string())?;
    let line = match outcome {
        CheckOutcome::Success { status, elapsed_ms, protocol } => serde_json::json!({
            "outcome": "success",
            "status": status,
            "elapsed_ms": elapsed_ms,
            "protocol": protocol.as_str(),
        }),
        CheckOutcome::Failed(f) => serde_json::json!({
            "outcome": "failed",
            "type": f.error_type.as_str(),
            "phase": f.phase.as_str(),
            "elapsed_ms": f.elapsed_ms,
            "status": f.status,
            "protocol": f.protocol.as_str(),
        }),
    };
    println!("{line}");
    Ok(())
}

/// A collector key for an agent that never delivers (the key of the crate docs' example).
const UNUSED_COLLECTOR_KEY: &str =
    "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a";

async fn agent_check(args: &[String]) -> Result<(), String> {
    use vantage_agent::native::{Agent, CollectorConfig};
    use vantage_agent::report::AppInfo;

    let opts = Opts::parse(args)?;
    let [url] = opts.positional.as_slice() else {
        return Err("agent-check needs exactly one URL".into());
    };
    let data_dir = opts.one("data-dir").ok_or("agent-check needs --data-dir")?;
    let app = AppInfo::new("vantage-probe", "1.0", "linux", "rust").map_err(|e| e.to_string())?;
    let key = UNUSED_COLLECTOR_KEY.parse().map_err(|e| format!("collector key: {e:?}"))?;
    let collector = CollectorConfig::new("https://collector.invalid").map_err(|e| e.to_string())?;
    let mut builder = Agent::builder(app, key, data_dir)
        .service("probe", &[url.as_str()])
        .map_err(|e| e.to_string())?
        .collector(collector)
        .scope_check_interval(None);
    for file in opts.all("ca") {
        for cert in CertificateDer::pem_file_iter(file).map_err(|e| format!("{file}: {e}"))? {
            builder = builder.extra_root(cert.map_err(|e| format!("{file}: {e}"))?);
        }
    }
    let agent = builder.build().map_err(|e| e.to_string())?;
    agent.set_consent(true).map_err(|e| e.to_string())?;
    let outcome = agent.check(url).await.map_err(|e| e.to_string())?;
    let CheckOutcome::Failed(failure) = outcome else {
        println!("{}", serde_json::json!({ "outcome": "success" }));
        return Ok(());
    };
    // record() hands the failure to the agent's task; wait until the task has taken it, then
    // seal it to disk.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while agent.stats().recorded == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = agent.flush(Duration::from_millis(500)).await;
    let stats = agent.stats();
    agent.shutdown().await.map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::json!({
            "outcome": "failed",
            "type": failure.error_type.as_str(),
            "phase": failure.phase.as_str(),
            "elapsed_ms": failure.elapsed_ms,
            "recorded": stats.recorded,
            "sealed_envelopes": stats.sealed_envelopes,
        })
    );
    Ok(())
}

async fn ping(args: &[String]) -> Result<(), String> {
    let opts = Opts::parse(args)?;
    let [base] = opts.positional.as_slice() else {
        return Err("ping needs exactly one base URL".into());
    };
    let fixed = opts
        .all("fixed")
        .map(|a| a.parse::<SocketAddr>().map_err(|e| format!("--fixed {a}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let reachable = probe::ping(base, &fixed, &opts.probe_config()?).await;
    println!("{}", serde_json::json!({ "reachable": reachable }));
    Ok(())
}

async fn serve(args: &[String]) -> Result<(), String> {
    let opts = Opts::parse(args)?;
    let mut zone = Zone::new();
    for spec in opts.all("a") {
        let (name, ips) = spec.split_once('=').ok_or_else(|| format!("--a {spec}: NAME=IP"))?;
        let ips = ips
            .split(',')
            .map(|ip| ip.parse::<Ipv4Addr>().map_err(|e| format!("--a {spec}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        zone.set(name, Answer::A(ips));
    }
    for (flag, answer) in
        [("servfail", Answer::ServFail), ("refused", Answer::Refused), ("drop", Answer::Drop)]
    {
        for name in opts.all(flag) {
            zone.set(name, answer.clone());
        }
    }
    if let Some(addr) = opts.one("dns") {
        let addr: SocketAddr = addr.parse().map_err(|e| format!("--dns {addr}: {e}"))?;
        let server = DnsServer::bind(addr, zone).map_err(|e| format!("bind DNS {addr}: {e}"))?;
        let _thread = server.spawn();
    }
    let mut tasks = tokio::task::JoinSet::new();
    for addr in opts.all("http") {
        let listener = bind(addr).await?;
        tasks.spawn(serve_http(listener, None));
    }
    for spec in opts.all("https") {
        let mut parts = spec.split(',');
        let (Some(addr), Some(cert), Some(key), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("--https {spec}: ADDR,CERT,KEY"));
        };
        let acceptor = tls_acceptor(Path::new(cert), Path::new(key))?;
        tasks.spawn(serve_http(bind(addr).await?, Some(acceptor)));
    }
    for addr in opts.all("garbage") {
        tasks.spawn(serve_garbage(bind(addr).await?));
    }
    println!("ready");
    // Serves until killed; a listener task only ends on an accept error.
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| format!("server task: {e}"))?;
    }
    std::future::pending::<()>().await;
    Ok(())
}

async fn bind(addr: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| format!("bind {addr}: {e}"))
}

fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| e.to_string())?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

async fn serve_http(listener: TcpListener, tls: Option<tokio_rustls::TlsAcceptor>) {
    while let Ok((tcp, _)) = listener.accept().await {
        let tls = tls.clone();
        tokio::spawn(async move {
            let service = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                Ok::<_, std::convert::Infallible>(respond(req.uri().path()))
            });
            let http = hyper::server::conn::http1::Builder::new();
            // Handshake and protocol errors are what the tests provoke: ignore them.
            match tls {
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(tcp).await {
                        let _ = http.serve_connection(TokioIo::new(stream), service).await;
                    }
                }
                None => {
                    let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                }
            }
        });
    }
}

fn respond(path: &str) -> hyper::Response<Full<Bytes>> {
    let status = match path.strip_prefix("/status/") {
        Some(code) => code.parse::<u16>().ok().and_then(|c| hyper::StatusCode::from_u16(c).ok()),
        None if path == "/v1/ping" => Some(hyper::StatusCode::NO_CONTENT),
        None => Some(hyper::StatusCode::OK),
    }
    .unwrap_or(hyper::StatusCode::BAD_REQUEST);
    let body = if status == hyper::StatusCode::NO_CONTENT { "" } else { "vantage test server\n" };
    let mut response = hyper::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response
}

async fn serve_garbage(listener: TcpListener) {
    while let Ok((mut tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
            let _ = tcp.write_all(b"SSH-2.0-not-http\r\n\r\n").await;
            let _ = tcp.shutdown().await;
        });
    }
}
