#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! Population mode end to end: a real `nats-server` (Debian's, JetStream on, a temp store dir, on
//! loopback) and in-process collectors sharing what they accept through it.
//!
//! - Three collectors, clients split across them: an outage of one service is detected by
//!   every collector under one alert id and paged exactly once; one collector is shut down
//!   mid-run and its clients fail over to another without an envelope lost.
//! - NATS stopped while reports flow, then restarted on the same store dir: collectors keep
//!   accepting (and detect locally), and afterwards every accepted batch is in the stream
//!   exactly once and every collector has seen every batch.
//!
//! `nats-server` comes from `.ci/install-nats.sh`.

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use vantage_agent::taxonomy::ErrorType;
use vantage_collector::config::Config;
use vantage_collector::open::CollectorKey;
use vantage_collector::server::Collector;
use vantage_tests::alert_sink::AlertSink;
use vantage_tests::collector_proc::HttpClient;
use vantage_tests::nats::{NatsServer, free_port};
use vantage_tests::sim::{ClientInfo, FAST_DETECTOR_TOML, Population, PopulationConfig};

const STEP: Duration = Duration::from_millis(500);

fn write_key(dir: &Path) -> CollectorKey {
    let key = CollectorKey::from_seed([9; 32]);
    std::fs::write(dir.join("collector.key"), hex::encode(key.secret_bytes())).unwrap();
    key
}

/// A collector config in `dir` with fleet mode on.
fn config(dir: &Path, fleet: &Population, nats: &str, id: &str, extra: &str) -> Config {
    write_key(dir);
    let (asn, country) = fleet.write_enrichment(dir).unwrap();
    let text = format!(
        "[server]\nlisten_plain = \"127.0.0.1:0\"\nlisten_admin = \"127.0.0.1:0\"\n\
         [keys]\nprivate_key_files = [\"collector.key\"]\n[store]\npath = \"data\"\n\
         [enrich]\nasn_csv = [{asn:?}]\ncountry_csv = [{country:?}]\n\
         [log]\nlevel = \"warn\"\n{FAST_DETECTOR_TOML}\
         [fleet]\nnats_url = {nats:?}\ncollector_id = {id:?}\npublish_timeout_ms = 500\n{extra}"
    );
    Config::from_toml_str(&text, dir).unwrap()
}

async fn get_json(admin: SocketAddr, path: &str) -> Value {
    let mut c = HttpClient::connect_plain(admin).await.unwrap();
    let (status, body) = c.get(path).await.unwrap();
    assert_eq!(status.as_u16(), 200, "{path}");
    serde_json::from_slice(&body).unwrap()
}

async fn metric(admin: SocketAddr, series: &str) -> u64 {
    let mut c = HttpClient::connect_plain(admin).await.unwrap();
    let (_, body) = c.get("/metrics").await.unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{series} not in metrics:\n{text}"))
}

fn shop_service_alert(alerts: &Value) -> Option<&Value> {
    alerts["firing"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["slice"]["service"] == "shop" && a["slice"]["dim"]["kind"] == "service")
}

/// One incident, paged once by the fleet: every `fired` page is a different alert (no collector
/// pages what another one already paged), exactly one of them opens the incident, and any other
/// is the documented widening update: a wider slice that `supersedes` an alert paged before it.
/// (Whether a narrow slice, an ASN with a zero baseline, crosses its judge one evaluation before
/// the service does depends on where the outage starts within the window.) The service's alert
/// `id` is among the pages.
fn assert_one_incident_paged(events: &[vantage_tests::alert_sink::Received], id: &str) {
    let fired: Vec<&Value> = events
        .iter()
        .filter(|r| r.accepted() && r.json["event"] == "fired")
        .map(|r| &r.json["alert"])
        .collect();
    let mut seen: Vec<&str> = Vec::new();
    let mut opened = 0;
    for alert in &fired {
        let this = alert["id"].as_str().unwrap();
        assert!(!seen.contains(&this), "alert {this} paged twice: {events:?}");
        match alert["supersedes"].as_str() {
            None => opened += 1,
            Some(head) => assert!(seen.contains(&head), "{this} supersedes an unpaged {head}"),
        }
        seen.push(this);
    }
    assert_eq!(opened, 1, "one incident, one opening page: {events:?}");
    assert!(seen.contains(&id), "the service alert {id} was not paged: {events:?}");
}

/// Client `i` delivers to collector `i % n` first, then to the next one.
fn route(addrs: &[SocketAddr]) -> impl Fn(&ClientInfo) -> Vec<SocketAddr> + '_ {
    move |c| (0..addrs.len()).map(|k| addrs[(c.index + k) % addrs.len()]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_collectors_page_once_for_a_split_spike_and_clients_fail_over() {
    let tmp = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&tmp.path().join("nats"), free_port(), free_port()).await;
    let key = CollectorKey::from_seed([9; 32]);
    let mut fleet = Population::new(PopulationConfig::default(), key.public_key());
    let sink = AlertSink::start().await;
    let notify = format!(
        "[notify]\nretry_base_ms = 100\n[[notify.receivers]]\nname = \"ops\"\nkind = \"webhook\"\n\
         url = {:?}\n",
        sink.url("/hook")
    );
    let mut collectors = Vec::new();
    for i in 0..3 {
        let dir = tmp.path().join(format!("c{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = config(&dir, &fleet, &nats.url(), &format!("c-{i}"), &notify);
        collectors.push(Some(Collector::start(cfg).await.unwrap()));
    }
    let plain: Vec<_> =
        collectors.iter().map(|c| c.as_ref().unwrap().plain_addr().unwrap()).collect();
    let admin: Vec<_> =
        collectors.iter().map(|c| c.as_ref().unwrap().admin_addr().unwrap()).collect();

    let background =
        |c: &ClientInfo, _: &str| (c.index % 29 == 0).then_some(ErrorType::TcpTimedOut);
    let outage = |_: &ClientInfo, s: &str| (s == "shop").then_some(ErrorType::TcpRefused);
    // Warm-up (the fast detector learns 15 windows of 1 s buckets), then the outage.
    let started = Instant::now();
    let mut ids: Vec<Option<String>> = vec![None; 3];
    let mut outage_on = false;
    while ids.iter().any(Option::is_none) {
        assert!(started.elapsed() < Duration::from_secs(50), "not every collector fired: {ids:?}");
        let next = Instant::now() + STEP;
        outage_on |= started.elapsed() > Duration::from_secs(22);
        let stats = if outage_on {
            fleet.step_routed(route(&plain), 2, outage).await
        } else {
            fleet.step_routed(route(&plain), 2, background).await
        };
        assert_eq!(stats.rejected, 0, "{stats:?}");
        for (i, a) in admin.iter().enumerate() {
            let alerts = get_json(*a, "/v1/alerts").await;
            if !outage_on {
                assert!(alerts["firing"].as_array().unwrap().is_empty(), "c{i}: {alerts:#}");
            }
            ids[i] = shop_service_alert(&alerts).map(|x| x["id"].as_str().unwrap().to_owned());
        }
        // Pacing the simulated clients, not waiting for readiness.
        tokio::time::sleep_until(next.into()).await;
    }
    // Every detector saw the whole fleet: one incident, one id.
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    let id = ids[0].clone().unwrap();
    // Each collector saw batches accepted by the other two through the stream.
    for a in &admin {
        let consumed = metric(*a, "vantage_fleet_consumed_total").await;
        let accepted = metric(*a, "vantage_envelopes_accepted_total").await;
        assert!(consumed > accepted, "consumed {consumed}, accepted {accepted}");
    }

    // One collector goes away mid-run: its clients fail over, nothing is refused.
    let gone = collectors[1].take().unwrap();
    gone.shutdown().await.unwrap();
    let before: u64 = metric(admin[0], "vantage_envelopes_accepted_total").await
        + metric(admin[2], "vantage_envelopes_accepted_total").await;
    let mut sent = 0;
    for _ in 0..8 {
        let next = Instant::now() + STEP;
        let stats = fleet.step_routed(route(&plain), 2, outage).await;
        assert_eq!(stats.rejected, 0, "failover lost envelopes: {stats:?}");
        sent += stats.accepted;
        tokio::time::sleep_until(next.into()).await;
    }
    let after: u64 = metric(admin[0], "vantage_envelopes_accepted_total").await
        + metric(admin[2], "vantage_envelopes_accepted_total").await;
    assert_eq!(after - before, sent, "the two survivors accepted every envelope");
    assert!(sent > 0);
    for i in [0, 2] {
        let alerts = get_json(admin[i], "/v1/alerts").await;
        let firing = shop_service_alert(&alerts).map(|x| x["id"].as_str().unwrap());
        assert_eq!(firing, Some(id.as_str()), "c{i}: {alerts:#}");
    }

    // The service's page arrives; one incident paged across the three collectors.
    assert!(
        sink.wait_until(Duration::from_secs(10), |r| r.iter().any(|r| r.accepted()
            && r.json["event"] == "fired"
            && r.json["alert"]["id"] == id.as_str()))
            .await,
        "no page: {:?}",
        sink.received()
    );
    // Of the two survivors at most one was first for the shop event: the other one found
    // its publish a duplicate and stayed quiet.
    let mut suppressed = 0;
    for i in [0, 2] {
        suppressed += metric(admin[i], "vantage_fleet_alerts_suppressed_total").await;
    }
    let hook = sink.received();
    assert_one_incident_paged(&hook, &id);
    assert!(suppressed >= 1, "no duplicate alert publish on the survivors");
    for c in collectors.into_iter().flatten() {
        c.shutdown().await.unwrap();
    }
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_down_and_back_loses_nothing_and_the_fleet_view_recovers() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, monitor) = (free_port(), free_port());
    let store = tmp.path().join("nats");
    let mut nats = NatsServer::start(&store, port, monitor).await;
    let key = CollectorKey::from_seed([9; 32]);
    let mut fleet = Population::new(
        PopulationConfig { clients: 40, networks: 20, ..PopulationConfig::default() },
        key.public_key(),
    );
    let mut collectors = Vec::new();
    for i in 0..2 {
        let dir = tmp.path().join(format!("c{i}"));
        std::fs::create_dir_all(&dir).unwrap();
        let cfg = config(&dir, &fleet, &nats.url(), &format!("c-{i}"), "");
        collectors.push(Collector::start(cfg).await.unwrap());
    }
    let plain: Vec<_> = collectors.iter().map(|c| c.plain_addr().unwrap()).collect();
    let admin: Vec<_> = collectors.iter().map(|c| c.admin_addr().unwrap()).collect();
    let run = async |fleet: &mut Population, steps: usize| {
        for _ in 0..steps {
            let next = Instant::now() + STEP;
            let stats = fleet
                .step_routed(route(&plain), 1, |c, _| {
                    (c.index % 7 == 0).then_some(ErrorType::TcpReset)
                })
                .await;
            assert_eq!(stats.rejected, 0, "{stats:?}");
            tokio::time::sleep_until(next.into()).await;
        }
    };
    run(&mut fleet, 6).await;

    // NATS goes away; the collectors keep accepting, buffer, and detect locally.
    nats.stop();
    run(&mut fleet, 10).await;
    for a in &admin {
        assert_eq!(metric(*a, "vantage_fleet_connected").await, 0);
        assert!(metric(*a, "vantage_fleet_outbox_batches").await > 0);
        assert!(metric(*a, "vantage_fleet_fed_locally_total").await > 0);
    }

    // Back on the same store dir: the outboxes drain, the consumers catch up.
    let nats = NatsServer::start(&store, port, monitor).await;
    run(&mut fleet, 4).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let accepted;
    loop {
        let mut drained = true;
        for a in &admin {
            drained &= metric(*a, "vantage_fleet_outbox_batches").await == 0;
        }
        if drained {
            let mut total = 0;
            for a in &admin {
                total += metric(*a, "vantage_envelopes_accepted_total").await;
            }
            let in_stream = nats.stream_messages("VANTAGE").await;
            let mut seen_all = true;
            for a in &admin {
                let consumed = metric(*a, "vantage_fleet_consumed_total").await;
                let skipped = metric(*a, "vantage_fleet_skipped_local_total").await;
                seen_all &= consumed + skipped == in_stream;
            }
            if in_stream == total && seen_all {
                accepted = total;
                break;
            }
            assert!(in_stream <= total, "{in_stream} stream messages for {total} batches");
        }
        assert!(Instant::now() < deadline, "the fleet did not catch up");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(accepted > 0);
    for a in &admin {
        assert_eq!(metric(*a, "vantage_fleet_outbox_dropped_total").await, 0);
        assert_eq!(metric(*a, "vantage_fleet_connected").await, 1);
    }
    for c in collectors {
        c.shutdown().await.unwrap();
    }
}
