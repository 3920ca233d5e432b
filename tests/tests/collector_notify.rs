#![allow(clippy::unwrap_used)]
//! Alert notifications with real parts: the collector's outbox in a real sled store (temp dir),
//! the notifier's real HTTP(S) client, webhook receivers on loopback (plain and TLS with a
//! generated CA), and Debian's real Alertmanager (`prometheus-alertmanager`, installed by
//! `.ci/install-alertmanager.sh`), started per test with clustering off.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::watch;
use vantage_collector::detect::{
    Alert, AlertEvent, AlertId, AlertKind, AlertState, FailureGroup, SliceDim, SliceKey,
};
use vantage_collector::notify::{
    Notifier, NotifierHandle, NotifyConfig, Outbox, ReceiverConfig, ReceiverKind, ReceiverStats,
};
use vantage_collector::store::{Store, StoreConfig};
use vantage_tests::alert_sink::{AlertSink, Answer, Received};
use vantage_tests::tls::TestCa;

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

fn alert(id: u64, dim: SliceDim) -> Alert {
    let now = now_ms();
    Alert {
        id: AlertId(id),
        slice: SliceKey::new("shop", dim),
        kind: AlertKind::Failures,
        state: AlertState::Firing,
        start_ms: now - 120_000,
        end_ms: None,
        raised_at_ms: now - 60_000,
        inhibited_by: None,
        score: 31.2,
        observed_ratio: 0.4,
        baseline_ratio: 0.01,
        clients: 40,
        networks: 30,
        active_clients: 80,
        breakdown: BTreeMap::from([("tcp".to_owned(), 12), ("dns".to_owned(), 3)]),
        top_asns: vec![(64500, 20)],
        top_countries: vec![("DE".to_owned(), 20)],
        supersedes: None,
    }
}

fn resolved(a: &Alert) -> Alert {
    let mut r = a.clone();
    r.state = AlertState::Resolved;
    r.end_ms = Some(now_ms() - 1000);
    r
}

/// A fresh store in `dir` and its outbox tree.
fn open_outbox(dir: &Path) -> (Store, Outbox) {
    let store = Store::open(StoreConfig::new(dir.join("data"))).unwrap();
    let outbox = Outbox::open(store.open_tree("outbox").unwrap());
    (store, outbox)
}

fn config(receivers: Vec<ReceiverConfig>) -> NotifyConfig {
    NotifyConfig {
        receivers,
        retry_base_ms: 50,
        retry_cap_ms: 400,
        external_url: Some("https://vantage.example.net/".into()),
        ..NotifyConfig::default()
    }
}

/// A running notifier with its shutdown switch and firing-alerts channel.
struct Running {
    handle: NotifierHandle,
    stop: watch::Sender<bool>,
    firing: watch::Sender<Vec<Alert>>,
}

impl Running {
    fn spawn(config: &NotifyConfig, outbox: &Outbox) -> Running {
        assert_eq!(config.validate(), Ok(()));
        let (firing, firing_rx) = watch::channel(Vec::new());
        let (stop, stop_rx) = watch::channel(false);
        let handle = Notifier::spawn(config.clone(), outbox.clone(), firing_rx, stop_rx);
        Running { handle, stop, firing }
    }

    fn stats(&self, name: &str) -> ReceiverStats {
        self.handle.stats().receivers.into_iter().find(|r| r.name == name).unwrap()
    }

    async fn wait_stats(&self, name: &str, pred: impl Fn(&ReceiverStats) -> bool) -> ReceiverStats {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let s = self.stats(name);
            if pred(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "stats of {name} never matched: {s:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Flips the shutdown switch and waits for the tasks; returns how long that took.
    async fn stop(self) -> Duration {
        let started = Instant::now();
        self.stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), self.handle.join())
            .await
            .expect("the notifier stops promptly after shutdown");
        started.elapsed()
    }
}

fn events(received: &[Received]) -> Vec<(String, String)> {
    received
        .iter()
        .filter(|r| r.accepted())
        .map(|r| {
            (
                r.json["event"].as_str().unwrap_or("?").to_owned(),
                r.json["alert"]["id"].as_str().unwrap_or("?").to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_and_slack_payloads_arrive_fired_then_resolved() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, outbox) = open_outbox(dir.path());
    let hook_sink = AlertSink::start().await;
    // The Slack receiver is HTTPS with a certificate from a CA named in `ca_file`.
    let ca = TestCa::new("notify test CA");
    let slack_sink = AlertSink::start_tls(&ca.leaf(&["127.0.0.1"])).await;
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();

    let mut hook = ReceiverConfig::new("hook", ReceiverKind::Webhook, &hook_sink.url("/hook"));
    hook.headers.insert("Authorization".into(), "Bearer test-token".into());
    let mut slack =
        ReceiverConfig::new("chat", ReceiverKind::Slack, &slack_sink.url("/services/T/B/X"));
    slack.ca_file = Some(ca_file);
    let config = config(vec![hook, slack]);

    let fired = alert(0x00ab_0000_0000_0001, SliceDim::Asn(64500));
    let inhibited = {
        let mut a = alert(2, SliceDim::Country("DE".into()));
        a.inhibited_by = Some(fired.id);
        a
    };
    // Queued before the notifier runs (as after a restart), and while it runs.
    assert_eq!(outbox.enqueue(&config, &AlertEvent::Fired(fired.clone()), now_ms()).unwrap(), 2);
    assert_eq!(outbox.enqueue(&config, &AlertEvent::Fired(inhibited), now_ms()).unwrap(), 0);
    let running = Running::spawn(&config, &outbox);
    assert_eq!(
        outbox.enqueue(&config, &AlertEvent::Resolved(resolved(&fired)), now_ms()).unwrap(),
        2
    );
    running.handle.wake();

    let id = fired.id.to_string();
    let want = vec![("fired".to_owned(), id.clone()), ("resolved".to_owned(), id.clone())];
    assert!(hook_sink.wait_until(Duration::from_secs(10), |r| events(r).len() >= 2).await);
    assert_eq!(events(&hook_sink.received()), want);
    let got = hook_sink.received();
    assert_eq!(got.len(), 2, "each event once");
    let first = &got[0];
    assert_eq!(first.path, "/hook");
    assert_eq!(first.header("authorization"), Some("Bearer test-token"));
    assert_eq!(first.header("content-type"), Some("application/json"));
    assert_eq!(first.json["version"], "1");
    assert_eq!(first.json["alert"]["label"], "shop / AS64500");
    assert_eq!(
        first.json["alert"]["slice"]["dim"],
        serde_json::json!({"kind": "asn", "value": 64500})
    );
    assert_eq!(first.json["alert"]["state"], "firing");
    assert_eq!(first.json["dashboard_url"], format!("https://vantage.example.net/?alert={id}"));
    assert_eq!(got[1].json["alert"]["state"], "resolved");
    assert!(got[1].json["alert"]["end_ms"].is_u64());

    assert!(
        slack_sink
            .wait_until(Duration::from_secs(10), |r| r.iter().filter(|x| x.accepted()).count() >= 2)
            .await
    );
    let got = slack_sink.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].path, "/services/T/B/X");
    assert!(got[0].header("authorization").is_none(), "headers are per receiver");
    let text = |r: &Received| r.json["text"].as_str().unwrap().to_owned();
    assert!(
        text(&got[0]).contains("Client-side outage") && text(&got[0]).contains("shop / AS64500"),
        "{}",
        text(&got[0])
    );
    assert!(text(&got[0]).contains("AS64500 (20)") && text(&got[0]).contains("tcp 12, dns 3"));
    assert!(text(&got[1]).starts_with(":white_check_mark: *Resolved"), "{}", text(&got[1]));
    assert!(got[0].json["blocks"].as_array().is_some_and(|b| b.len() >= 2));

    let hook_stats = running.wait_stats("hook", |s| s.sent == 2).await;
    assert_eq!(
        (hook_stats.pending, hook_stats.failed_attempts, hook_stats.dropped_permanent),
        (0, 0, 0)
    );
    running.wait_stats("chat", |s| s.sent == 2 && s.pending == 0).await;
    assert_eq!(outbox.len(), 0);
    let mut metrics = String::new();
    running.handle.stats().render_prometheus(&mut metrics);
    assert!(
        metrics.contains("vantage_notifications_sent_total{receiver=\"chat\",kind=\"slack\"} 2"),
        "{metrics}"
    );
    assert!(!metrics.contains("test-token"));
    let took = running.stop().await;
    assert!(took < Duration::from_secs(1), "join took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_in_order_and_refusals_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, outbox) = open_outbox(dir.path());
    let flaky = AlertSink::start().await;
    flaky.push_answers(&[Answer::status(500), Answer::status(500)]);
    let limited = AlertSink::start().await;
    limited.push_answers(&[Answer { status: 429, retry_after: Some("1".into()) }]);
    let refusing = AlertSink::start().await;
    refusing.set_default(Answer::status(400));
    let config = config(vec![
        ReceiverConfig::new("flaky", ReceiverKind::Webhook, &flaky.url("/")),
        ReceiverConfig::new("limited", ReceiverKind::Webhook, &limited.url("/")),
        ReceiverConfig::new("refusing", ReceiverKind::Slack, &refusing.url("/")),
    ]);
    let running = Running::spawn(&config, &outbox);
    let a = alert(7, SliceDim::Group(FailureGroup::Tcp));
    outbox.enqueue(&config, &AlertEvent::Fired(a.clone()), now_ms()).unwrap();
    outbox.enqueue(&config, &AlertEvent::Resolved(resolved(&a)), now_ms()).unwrap();
    running.handle.wake();

    // 500 twice, then the third try of the fired gets through; only then the resolved.
    let s = running.wait_stats("flaky", |s| s.sent == 2).await;
    assert_eq!((s.failed_attempts, s.pending, s.dropped_permanent), (2, 0, 0));
    let got = flaky.received();
    let seq: Vec<(u16, &str)> =
        got.iter().map(|r| (r.answered, r.json["event"].as_str().unwrap())).collect();
    assert_eq!(seq, [(500, "fired"), (500, "fired"), (200, "fired"), (200, "resolved")]);

    // 429 with Retry-After: 1 is retried no sooner than a second later.
    running.wait_stats("limited", |s| s.sent == 2).await;
    let got = limited.received();
    assert_eq!(got.iter().map(|r| r.answered).collect::<Vec<_>>(), [429, 200, 200]);
    let waited = got[1].at - got[0].at;
    assert!(waited >= Duration::from_millis(950), "Retry-After ignored: retried after {waited:?}");

    // 400 is permanent: each entry tried once, dropped and counted.
    let s = running.wait_stats("refusing", |s| s.dropped_permanent == 2).await;
    assert_eq!((s.sent, s.failed_attempts, s.pending), (0, 0, 0));
    assert_eq!(refusing.received().len(), 2);
    assert_eq!(outbox.len(), 0);
    let mut metrics = String::new();
    running.handle.stats().render_prometheus(&mut metrics);
    assert!(metrics.contains(
        "vantage_notifications_dropped_total{receiver=\"refusing\",reason=\"permanent\"} 2"
    ));
    assert!(metrics.contains("vantage_notification_failures_total{receiver=\"flaky\"} 2"));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_survive_a_restart_and_are_delivered_once() {
    let dir = tempfile::tempdir().unwrap();
    let sink = AlertSink::start().await;
    sink.set_default(Answer::status(503));
    let mut config =
        config(vec![ReceiverConfig::new("hook", ReceiverKind::Webhook, &sink.url("/"))]);
    config.retry_base_ms = 200;
    let a = alert(9, SliceDim::Service);
    {
        let (store, outbox) = open_outbox(dir.path());
        let running = Running::spawn(&config, &outbox);
        outbox.enqueue(&config, &AlertEvent::Fired(a.clone()), now_ms()).unwrap();
        running.handle.wake();
        assert!(sink.wait_until(Duration::from_secs(10), |r| !r.is_empty()).await);
        // Stopped before any delivery: the entry stays.
        let took = running.stop().await;
        assert!(took < Duration::from_secs(1), "join took {took:?}");
        assert_eq!(outbox.len(), 1);
        drop(outbox);
        store.close().await.unwrap();
    }
    assert!(sink.received().iter().all(|r| r.answered == 503));

    sink.set_default(Answer::status(200));
    let (_store, outbox) = open_outbox(dir.path());
    assert_eq!(outbox.len(), 1, "the entry is on disk");
    let running = Running::spawn(&config, &outbox);
    running.wait_stats("hook", |s| s.sent == 1 && s.pending == 0).await;
    // Stopped: nothing more can arrive, so the count below is final.
    running.stop().await;
    let delivered: Vec<Received> = sink.received().into_iter().filter(Received::accepted).collect();
    assert_eq!(delivered.len(), 1, "delivered exactly once");
    assert_eq!(delivered[0].json["alert"]["id"], a.id.to_string());
    assert_eq!(outbox.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_past_give_up_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, outbox) = open_outbox(dir.path());
    let sink = AlertSink::start().await;
    let mut config =
        config(vec![ReceiverConfig::new("hook", ReceiverKind::Webhook, &sink.url("/"))]);
    config.give_up_after_ms = 60_000;
    let old = alert(10, SliceDim::Service);
    let fresh = alert(11, SliceDim::Service);
    outbox.enqueue(&config, &AlertEvent::Fired(old), now_ms() - 61_000).unwrap();
    outbox.enqueue(&config, &AlertEvent::Fired(fresh.clone()), now_ms()).unwrap();
    let running = Running::spawn(&config, &outbox);
    let s = running.wait_stats("hook", |s| s.sent == 1).await;
    assert_eq!((s.dropped_expired, s.pending), (1, 0));
    let got = sink.received();
    assert_eq!(got.len(), 1, "the expired entry was never sent");
    assert_eq!(got[0].json["alert"]["id"], fresh.id.to_string());
    running.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Real Alertmanager

/// Debian's Alertmanager on a free loopback port with a temp dir; killed on drop.
struct Alertmanager {
    child: tokio::process::Child,
    addr: SocketAddr,
    log: std::path::PathBuf,
}

impl Alertmanager {
    async fn start(dir: &Path, webhook_url: &str) -> Alertmanager {
        assert!(
            Path::new(ALERTMANAGER).exists(),
            "{ALERTMANAGER} is missing: run .ci/install-alertmanager.sh (Debian prometheus-alertmanager)"
        );
        let config = dir.join("am.yml");
        std::fs::write(
            &config,
            format!(
                "route:\n  receiver: sink\n  group_by: ['vantage_id']\n  group_wait: 0s\n  \
                 group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: sink\n    \
                 webhook_configs:\n      - url: '{webhook_url}'\n        send_resolved: true\n"
            ),
        )
        .unwrap();
        let storage = dir.join("am-data");
        std::fs::create_dir_all(&storage).unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = dir.join("am.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", storage.display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .expect("start prometheus-alertmanager");
        let mut am = Alertmanager { child, addr, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok((200, _)) = get(am.addr, "/-/ready").await {
                break;
            }
            if let Ok(Some(status)) = am.child.try_wait() {
                panic!("alertmanager exited with {status}: {}", am.log_text());
            }
            assert!(Instant::now() < deadline, "alertmanager not ready: {}", am.log_text());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        am
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Alertmanager's alerts (active, silenced, inhibited; resolved ones are not listed).
    async fn alerts(&self) -> Vec<Value> {
        let (status, body) = get(self.addr, "/api/v2/alerts").await.unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap().as_array().unwrap().clone()
    }

    async fn alert_with_id(&self, id: &str) -> Option<Value> {
        self.alerts().await.into_iter().find(|a| a["labels"]["vantage_id"] == id)
    }
}

async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let uri: http::Uri = format!("http://{addr}{path}").parse().unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Alertmanager webhook notifications (`{"status": .., "alerts": [..]}`) about `id`.
fn am_notifications(received: &[Received], id: &str) -> Vec<String> {
    received
        .iter()
        .filter(|r| {
            r.json["alerts"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["labels"]["vantage_id"] == id))
        })
        .map(|r| r.json["status"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_receives_the_alert_its_resends_and_its_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let am_sink = AlertSink::start().await;
    let am = Alertmanager::start(dir.path(), &am_sink.url("/am-hook")).await;
    let (_store, outbox) = open_outbox(dir.path());
    let mut config = config(vec![ReceiverConfig::new("am", ReceiverKind::Alertmanager, &am.url())]);
    // endsAt = now + 4 s while firing: without re-sends Alertmanager would resolve it itself.
    config.alertmanager_resend_ms = 1000;
    let running = Running::spawn(&config, &outbox);

    let a = alert(0x00ab_cdef_0000_0042, SliceDim::Asn(64500));
    let id = a.id.to_string();
    assert_eq!(outbox.enqueue(&config, &AlertEvent::Fired(a.clone()), now_ms()).unwrap(), 1);
    running.firing.send_replace(vec![a.clone()]);
    running.handle.wake();

    // Alertmanager holds it, active, with our labels.
    let deadline = Instant::now() + Duration::from_secs(10);
    let held = loop {
        if let Some(x) = am.alert_with_id(&id).await {
            break x;
        }
        assert!(Instant::now() < deadline, "not in alertmanager; log: {}", am.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(held["status"]["state"], "active");
    let labels = &held["labels"];
    assert_eq!(labels["alertname"], "VantageClientOutage");
    assert_eq!(labels["service"], "shop");
    assert_eq!(labels["slice"], "shop/asn=64500");
    assert_eq!(labels["dim"], "asn");
    assert_eq!(labels["asn"], "64500");
    assert_eq!(labels["severity"], "page");
    assert_eq!(held["annotations"]["summary"], "Client-side outage: shop / AS64500");
    assert_eq!(held["generatorURL"], "https://vantage.example.net/");

    // Alertmanager routed it to its webhook.
    assert!(
        am_sink
            .wait_until(Duration::from_secs(10), |r| am_notifications(r, &id)
                .contains(&"firing".to_owned()))
            .await,
        "no firing notification from alertmanager; log: {}",
        am.log_text()
    );

    // Re-sends move endsAt forward while it fires.
    let first_end = held["endsAt"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = am.alert_with_id(&id).await.expect("still active while re-sent");
        if now["endsAt"].as_str().unwrap() > first_end.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "endsAt never moved: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(running.stats("am").resent >= 1);

    // The resolution: gone from the active alerts, and a resolved notification.
    running.firing.send_replace(Vec::new());
    outbox.enqueue(&config, &AlertEvent::Resolved(resolved(&a)), now_ms()).unwrap();
    running.handle.wake();
    let deadline = Instant::now() + Duration::from_secs(10);
    while am.alert_with_id(&id).await.is_some() {
        assert!(Instant::now() < deadline, "still active after the resolution");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        am_sink
            .wait_until(Duration::from_secs(10), |r| am_notifications(r, &id)
                .contains(&"resolved".to_owned()))
            .await,
        "no resolved notification from alertmanager; log: {}",
        am.log_text()
    );
    let resolved_note =
        am_sink.received().into_iter().rfind(|r| r.json["status"] == "resolved").unwrap();
    let ended = &resolved_note.json["alerts"][0];
    assert_eq!(ended["labels"]["vantage_id"], id);
    assert_eq!(ended["status"], "resolved");
    let s = running.stats("am");
    assert_eq!((s.sent, s.pending, s.dropped_permanent), (2, 0, 0));
    running.stop().await;
    drop(am);
}
