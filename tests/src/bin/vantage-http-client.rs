//! A real HTTP client with the agent's capture integration, for tests that must run it inside a
//! network namespace (`ip netns exec`), where DNS and routing faults are injected:
//!
//! ```text
//! vantage-http-client --config agent.toml --client reqwest|tower [--timeout-ms N] URL...
//! ```
//!
//! Starts the native agent from the TOML config (consent granted), requests each URL once with
//! `reqwest` + `VantageMiddleware` or hyper-util's legacy client + `VantageLayer` (the system
//! resolver, as apps use them), prints one JSON line per URL (`{"url":..,"status":200}` or
//! `{"url":..,"error":".."}`: what the caller saw; a connect timeout of `--timeout-ms`), then flushes the agent and prints
//! `{"undelivered":N}`. Exit 0 when it ran (whatever the requests gave), 2 on a usage error.
#![forbid(unsafe_code)]
// The JSON lines on stdout are this tool's output.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use tower_layer::Layer as _;
use tower_service::Service as _;
use vantage_agent::native::integrations::reqwest::VantageMiddleware;
use vantage_agent::native::integrations::tower::VantageLayer;
use vantage_agent::native::{Agent, AgentConfig};

struct Args {
    config: String,
    client: String,
    timeout: Duration,
    urls: Vec<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1);
    let (mut config, mut client, mut timeout, mut urls) = (None, None, 2_000u64, Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" => config = args.next(),
            "--client" => client = args.next(),
            "--timeout-ms" => {
                timeout = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--timeout-ms needs a number of milliseconds")?;
            }
            url if !url.starts_with("--") => urls.push(url.to_owned()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    let client = client.ok_or("--client reqwest|tower is required")?;
    if client != "reqwest" && client != "tower" {
        return Err(format!("--client {client}: expected reqwest or tower"));
    }
    Ok(Args {
        config: config.ok_or("--config FILE is required")?,
        client,
        timeout: Duration::from_millis(timeout),
        urls,
    })
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("vantage-http-client: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime starts");
    let config = match AgentConfig::from_toml_file(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vantage-http-client: {}: {e}", args.config);
            return ExitCode::from(2);
        }
    };
    let agent = Arc::new(Agent::start(config, Some(rt.handle())).expect("the agent starts"));
    agent.set_consent(true).expect("consent is stored");
    rt.block_on(async {
        for url in &args.urls {
            let seen = match args.client.as_str() {
                "reqwest" => via_reqwest(&agent, url, args.timeout).await,
                _ => via_tower(&agent, url, args.timeout).await,
            };
            let line = match seen {
                Ok(status) => serde_json::json!({ "url": url, "status": status }),
                Err(e) => serde_json::json!({ "url": url, "error": e }),
            };
            println!("{line}");
        }
        let out = agent.flush(Duration::from_secs(20)).await.expect("flush runs");
        println!("{}", serde_json::json!({ "undelivered": out.undelivered }));
        agent.shutdown().await.expect("the agent shuts down");
    });
    ExitCode::SUCCESS
}

async fn via_reqwest(agent: &Arc<Agent>, url: &str, timeout: Duration) -> Result<u16, String> {
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(true))
        .no_proxy()
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())?;
    let client = reqwest_middleware::ClientBuilder::new(client)
        .with(VantageMiddleware::new(agent.clone()))
        .build();
    client.get(url).send().await.map(|r| r.status().as_u16()).map_err(|e| format!("{e:?}"))
}

async fn via_tower(agent: &Arc<Agent>, url: &str, timeout: Duration) -> Result<u16, String> {
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_tls(false))
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, Empty<Bytes>>(https);
    let mut client = VantageLayer::new(agent.clone()).layer(client);
    std::future::poll_fn(|cx| client.poll_ready(cx)).await.map_err(|e| format!("{e:?}"))?;
    let req = http::Request::get(url).body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    // The connector's connect timeout bounds a silent peer; no outer deadline (dropping the
    // call would leave the layer nothing to record).
    client.call(req).await.map(|r| r.status().as_u16()).map_err(|e| format!("{e:?}"))
}

/// rustls on ring trusting no CA (the namespace tests request `http://` URLs; a TLS server
/// gives `tls.cert.authority_invalid`); HTTP/1.1 by ALPN for reqwest (hyper-rustls sets its
/// own).
fn client_tls(alpn: bool) -> rustls::ClientConfig {
    let roots = rustls::RootCertStore::empty();
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    if alpn {
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    tls
}
