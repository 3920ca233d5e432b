#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! Connection attacks on an in-process collector over loopback: one /24 (127.1.2.x) or several
//! hold many connections (slowloris, idle HTTP/1.1 keep-alive, idle HTTP/2 with PINGs) while a
//! legitimate client on another /24 (127.9.9.x) uploads envelopes, each on a new connection.
//! Every legitimate upload is acknowledged, the admin listener answers throughout, and every
//! acknowledged report is in the store. Success counts are asserted, never latencies.

use std::time::{Duration, Instant};

use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vantage_tests::hostile::{self, Attack};

type Setup = hostile::Target;

async fn start(server: &str) -> Setup {
    Setup::start(server, "").await
}

const LEGIT: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 9, 9, 9));
const UPLOADS: usize = 30;

/// Legit uploads and admin health checks while an attack runs; asserts all succeed and that
/// the store holds every acknowledged report.
async fn legit_gets_through(s: &Setup, what: &str, agent_seed: u8) {
    let stats = hostile::legit_uploads(
        s.plain,
        LEGIT,
        agent_seed,
        &s.key.public_key(),
        UPLOADS,
        Duration::from_millis(20),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(stats.accepted, UPLOADS, "{what}: legit failures {:?}", stats.failures);
    for _ in 0..3 {
        let healthz = hostile::get(s.admin, "/healthz", Duration::from_secs(5)).await;
        assert_eq!(healthz, Ok(200), "{what}: admin /healthz");
    }
    // Acknowledged means durable: every acknowledged report is in the store.
    assert!(s.running.store().stats().reports >= stats.accepted as u64, "{what}");
}

/// One /24 opens 200 connections of each kind against a budget of 256 (64 per prefix): it is
/// held to its share and the legit client on another /24 never waits for a slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_prefix_cannot_take_the_connections() {
    let s = start("max_connections = 256\nmax_connections_per_prefix = 64").await;
    let mut uploaded = 0u64;
    for kind in Attack::ALL {
        let attack = hostile::launch(kind, s.plain, &hostile::sources(127, 1, 2, 200));
        // The attacker holds its full share (plus the /metrics probe's own connection).
        let open = hostile::wait_for_open(s.admin, 64, Duration::from_secs(10)).await;
        assert!(open >= 64, "{}: only {open} attack connections open", kind.name());
        legit_gets_through(&s, kind.name(), kind as u8 + 1).await;
        uploaded += UPLOADS as u64;
        // The share held: the whole time, at most 64 public connections from 127.1.2.0/24.
        let open = hostile::connections_open(s.admin).await.unwrap();
        assert!(open <= 64 + 2, "{}: {open} connections open", kind.name());
        assert!(attack.connects() >= 64, "{}", kind.name());
        attack.stop().await;
    }
    assert_eq!(s.running.store().stats().reports, uploaded);
    s.running.shutdown().await.unwrap();
}

/// Six /24s of idle connections (24 each) fill a budget of 128: a newcomer makes an idle
/// connection of the biggest holder close and takes its place, so the legit client still gets
/// every upload through, and the admin listener (a budget of its own) answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_budget_makes_room_by_closing_idle_connections() {
    let s = start("max_connections = 128\nmax_connections_per_prefix = 32").await;
    let mut uploaded = 0u64;
    for kind in Attack::ALL {
        let from: Vec<_> = (10..16).flat_map(|c| hostile::sources(127, 1, c, 24)).collect();
        let attack = hostile::launch(kind, s.plain, &from);
        let open = hostile::wait_for_open(s.admin, 128, Duration::from_secs(10)).await;
        assert!(open >= 128, "{}: the budget never filled ({open} open)", kind.name());
        legit_gets_through(&s, kind.name(), kind as u8 + 1).await;
        uploaded += UPLOADS as u64;
        attack.stop().await;
    }
    assert_eq!(s.running.store().stats().reports, uploaded);
    s.running.shutdown().await.unwrap();
}

/// HTTP/2 connections are closed when no request comes, whatever else they send: one that
/// only PINGs is closed `header_read_timeout` after connecting; one that made a request and
/// then only PINGs is closed `idle_timeout` after it. An HTTP/1.1 connection that trickles
/// a header is closed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_and_trickles_do_not_keep_connections_open() {
    let s = start("header_read_timeout_ms = 1000\nidle_timeout_ms = 2000").await;

    // Raw h2c: preface, SETTINGS, then a PING every 300 ms, never a request.
    let mut tcp = hostile::connect_from(LEGIT, s.plain).await.unwrap();
    let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    hello.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0]);
    tcp.write_all(&hello).await.unwrap();
    let started = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 1024];
        let mut ping = tokio::time::interval(Duration::from_millis(300));
        loop {
            tokio::select! {
                n = tcp.read(&mut buf) => if matches!(n, Ok(0) | Err(_)) { return },
                _ = ping.tick() => {
                    let frame = [0, 0, 8, 6, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9];
                    if tcp.write_all(&frame).await.is_err() { return }
                }
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an h2 connection sending only PINGs stayed open for 15 s");
    assert!(started.elapsed() >= Duration::from_millis(900), "{:?}", started.elapsed());

    // hyper's h2 client, PINGing every 200 ms while idle, after one request.
    let tcp = hostile::connect_from(LEGIT, s.plain).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(200))
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{}/v1/ping", s.plain))
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(req).await.unwrap().status(), 204);
    let asked = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(15), conn).await;
    assert!(ended.is_ok(), "an h2 connection PINGing after its request stayed open for 15 s");
    assert!(asked.elapsed() >= Duration::from_millis(1500), "{:?}", asked.elapsed());

    // Slowloris on HTTP/1.1: a byte every 200 ms never completes the head.
    let mut tcp = hostile::connect_from(LEGIT, s.plain).await.unwrap();
    tcp.write_all(b"GET /v1/ping HTTP/1.1\r\nhost: x\r\nx-slow: ").await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        let mut buf = [0u8; 1024];
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                n = tcp.read(&mut buf) => if matches!(n, Ok(0) | Err(_)) { return },
                _ = tick.tick() => if tcp.write_all(b"a").await.is_err() { return },
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a trickled header kept a connection open for 15 s");
    s.running.shutdown().await.unwrap();
}
