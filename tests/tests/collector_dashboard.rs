#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! The collector's dashboard in Debian's Chromium shows a real alert: simulated clients (real
//! agent cores on distinct loopback /24s, mapped to test ASNs) report through a real collector
//! in process; one ASN's clients then fail to reach one service, the detector fires on that
//! service x ASN slice, and the page served by the admin listener must show the alert card,
//! mark that heat map cell as alerting with a failure ratio far above the others, and draw the
//! cell's series once clicked.
//!
//! ```text
//!  Population (160 clients, 80 /24s, 10 ASNs) ── POST /v1/envelopes ──▶ collector (plain listener)
//!     AS64503 x "shop" refused                                     │ store ─▶ detector
//!                                                                  ▼
//!  node tests/browser/dashboard.js ── playwright-core ── chromium ─▶ admin listener: / + /v1/*
//!     card "shop / AS64503", cell [data-row=shop][data-key=64503][data-alert], click, series
//!     ─▶ <target>/test-artifacts/dashboard.png
//! ```
//!
//! The fleet keeps reporting while the browser looks: the heat map only shows fresh windows.
//!
//! A further test sends envelopes carrying agent drop counts (one of them twice) and reads them
//! back from `GET /v1/agent_drops` and from the page's "Agent drops" panel
//! (`tests/browser/drops.js`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;
use vantage_agent::taxonomy::ErrorType;
use vantage_collector::config::Config;
use vantage_collector::dashboard::CONTENT_SECURITY_POLICY;
use vantage_collector::open::CollectorKey;
use vantage_tests::collector_proc::HttpClient;
use vantage_tests::sim::{
    ClientInfo, FAST_DETECTOR_TOML, Population, PopulationConfig, asn_of, country_of,
};

/// One browser test at a time: each runs a collector, a fleet and Chromium, which is plenty for
/// two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How often the fleet steps (its clients seal counts every 2 s).
const STEP: Duration = Duration::from_millis(500);
/// The network whose ASN fails. With [`fleet_config`] every test ASN has 8 networks of 2
/// clients: a slice that small needs failures in 6 or more networks to fire at all.
const FAILING_NET: u8 = 3;
const SERVICE: &str = "shop";

fn fleet_config() -> PopulationConfig {
    PopulationConfig { clients: 160, networks: 80, ..PopulationConfig::default() }
}

fn failing_asn() -> u32 {
    asn_of(FAILING_NET)
}

/// Normal traffic: a few clients fail a little everywhere, so baselines are not zero.
fn background(c: &ClientInfo, _: &str) -> Option<ErrorType> {
    (c.index % 29 == 0).then_some(ErrorType::TcpTimedOut)
}

/// The incident: every client in the failing ASN is refused by "shop".
fn incident(c: &ClientInfo, service: &str) -> Option<ErrorType> {
    if service == SERVICE && c.asn == failing_asn() {
        Some(ErrorType::TcpRefused)
    } else {
        background(c, service)
    }
}

fn warmup_windows() -> usize {
    FAST_DETECTOR_TOML
        .lines()
        .find_map(|l| l.strip_prefix("warmup_windows = "))
        .expect("FAST_DETECTOR_TOML sets warmup_windows")
        .parse()
        .unwrap()
}

fn config(dir: &Path, fleet: &Population) -> Config {
    let key = CollectorKey::from_seed([7; 32]);
    std::fs::write(dir.join("collector.key"), hex::encode(key.secret_bytes())).unwrap();
    let (asn, country) = fleet.write_enrichment(dir).unwrap();
    let text = format!(
        "[server]\nlisten_plain = \"127.0.0.1:0\"\nlisten_admin = \"127.0.0.1:0\"\n\
         [keys]\nprivate_key_files = [\"collector.key\"]\n[store]\npath = \"data\"\n\
         [enrich]\nasn_csv = [{asn:?}]\ncountry_csv = [{country:?}]\n\
         [log]\nlevel = \"warn\"\n{FAST_DETECTOR_TOML}"
    );
    Config::from_toml_str(&text, dir).unwrap()
}

async fn get_json(admin: SocketAddr, path: &str) -> (u16, Value) {
    let mut c = HttpClient::connect_plain(admin).await.unwrap();
    let (status, body) = c.get(path).await.unwrap();
    (status.as_u16(), serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Steps the fleet every [`STEP`] until `done` (checked about once a second) holds or `limit`
/// passes; returns what `done` found.
async fn step_until<T>(
    fleet: &mut Population,
    plain: SocketAddr,
    admin: SocketAddr,
    limit: Duration,
    outcome: fn(&ClientInfo, &str) -> Option<ErrorType>,
    done: impl AsyncFn(SocketAddr) -> Option<T>,
) -> Option<T> {
    let started = Instant::now();
    let mut steps = 0u32;
    while started.elapsed() < limit {
        let next = Instant::now() + STEP;
        let stats = fleet.step(plain, 2, outcome).await;
        assert_eq!(stats.rejected, 0, "the collector refused envelopes: {stats:?}");
        steps += 1;
        if steps % 2 == 0
            && let Some(found) = done(admin).await
        {
            return Some(found);
        }
        // Pacing the simulated clients, not waiting for readiness.
        tokio::time::sleep_until(next.into()).await;
    }
    None
}

/// Points of a series whose baseline has learned something.
async fn learned_points(admin: SocketAddr, query: &str) -> usize {
    let (status, series) = get_json(admin, &format!("/v1/series?{query}")).await;
    if status != 200 {
        return 0;
    }
    series["points"].as_array().unwrap().iter().filter(|p| !p["baseline_ratio"].is_null()).count()
}

fn is_target(alert: &Value) -> bool {
    alert["slice"]["service"] == SERVICE
        && alert["slice"]["dim"]["kind"] == "asn"
        && alert["slice"]["dim"]["value"] == failing_asn()
}

/// Where a screenshot goes: `<target dir>/test-artifacts/<name>`.
fn artifact(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    path
}

/// Runs `tests/browser/dashboard.js` and returns its one JSON line.
async fn run_browser(config: Value) -> Value {
    run_driver("dashboard.js", config).await
}

/// Runs the driver `script` in tests/browser and returns its one JSON line.
async fn run_driver(script: &str, config: Value) -> Value {
    let browser_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        Path::new("/usr/bin/chromium").is_file(),
        "/usr/bin/chromium is missing: run .ci/install-chromium.sh"
    );
    assert!(
        browser_dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules/playwright-core is missing: run .ci/install-chromium.sh"
    );
    let child = tokio::process::Command::new("node")
        .arg(script)
        .arg(config.to_string())
        .current_dir(&browser_dir)
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run node (install it with .ci/install-chromium.sh)");
    let output = tokio::time::timeout(Duration::from_secs(45), child.wait_with_output())
        .await
        .expect("the dashboard driver did not finish within 45 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or_default();
    let answer: Value = serde_json::from_str(line)
        .unwrap_or_else(|_| panic!("the driver printed no JSON ({}): {stdout}", output.status));
    assert_eq!(answer["ok"], true, "the page did not show the alert: {answer:#}");
    assert!(output.status.success(), "driver exited with {}", output.status);
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_real_alert_and_its_heat_map_cell() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let key = CollectorKey::from_seed([7; 32]);
    let mut fleet = Population::new(fleet_config(), key.public_key());
    let running =
        vantage_collector::server::Collector::start(config(dir.path(), &fleet)).await.unwrap();
    let (plain, admin) = (running.plain_addr().unwrap(), running.admin_addr().unwrap());
    let slice_query = format!("service={SERVICE}&dim=asn&key={}", failing_asn());
    let label = format!("{SERVICE} / AS{}", failing_asn());

    // Warm-up: normal traffic until the slice's and its service's baselines have learned
    // enough windows to judge (a fault during warm-up would be learned as normal).
    let need = warmup_windows() + 2;
    let warm =
        step_until(&mut fleet, plain, admin, Duration::from_secs(45), background, async |a| {
            let slice = learned_points(a, &slice_query).await;
            let service = learned_points(a, &format!("service={SERVICE}")).await;
            (slice >= need && service >= need).then_some(())
        })
        .await;
    assert!(warm.is_some(), "the {label} baseline did not learn {need} windows");
    let (_, alerts) = get_json(admin, "/v1/alerts").await;
    assert_eq!(alerts["firing"], serde_json::json!([]), "fired during warm-up");

    // The incident: the detector fires on exactly that service x ASN slice.
    let fired =
        step_until(&mut fleet, plain, admin, Duration::from_secs(40), incident, async |a| {
            let (_, alerts) = get_json(a, "/v1/alerts").await;
            alerts["firing"].as_array().unwrap().iter().find(|x| is_target(x)).cloned()
        })
        .await;
    let Some(fired) = fired else {
        let (_, alerts) = get_json(admin, "/v1/alerts").await;
        let (_, series) = get_json(admin, &format!("/v1/series?{slice_query}")).await;
        let points = series["points"].as_array().map(|p| p.len()).unwrap_or(0);
        let tail: Vec<&Value> = series["points"]
            .as_array()
            .into_iter()
            .flatten()
            .skip(points.saturating_sub(8))
            .collect();
        panic!("no alert on {label}; alerts: {alerts:#}\nlast points: {tail:#?}");
    };
    assert_eq!(fired["label"], label.as_str());
    assert_eq!(fired["kind"], "failures");
    let id = fired["id"].as_str().unwrap().to_owned();

    // Keep reporting while the browser looks: the heat map shows fresh windows only.
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = tokio::spawn({
        let stop = stop.clone();
        async move {
            while !stop.load(Ordering::Relaxed) {
                let next = Instant::now() + STEP;
                fleet.step(plain, 2, incident).await;
                tokio::time::sleep_until(next.into()).await;
            }
        }
    });
    // The alert can fire a window or two into the incident, while the cell's window still
    // holds the successes from before it; on a loaded machine the browser then read 0.18.
    // Wait (polling, the feeder running) until the window is the incident's before looking.
    let key = failing_asn().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, heat) = get_json(admin, "/v1/heatmap?dim=asn").await;
        let ratio = heat["cells"].as_array().into_iter().flatten().find_map(|c| {
            (c["row"] == SERVICE && c["key"] == key.as_str())
                .then(|| c["failure_ratio"].as_f64())?
        });
        if ratio.is_some_and(|r| r > 0.5) {
            break;
        }
        assert!(Instant::now() < deadline, "the {label} cell stays at {ratio:?}: {heat:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let screenshot = artifact("dashboard.png");
    let user_data = tempfile::tempdir().unwrap();
    let seen = run_browser(serde_json::json!({
        "userDataDir": user_data.path(),
        "url": format!("http://{admin}/"),
        "screenshot": screenshot,
        "alertLabel": label,
        "row": SERVICE,
        "key": failing_asn().to_string(),
        "timeoutMs": 20_000,
    }))
    .await;
    stop.store(true, Ordering::Relaxed);
    feeder.await.unwrap();
    running.shutdown().await.unwrap();

    // The page loaded under the strict policy, without a script error or a failed request.
    assert_eq!(seen["status"], 200);
    assert_eq!(seen["csp"], CONTENT_SECURITY_POLICY);
    for list in ["pageErrors", "consoleErrors", "failedRequests"] {
        assert_eq!(seen[list], serde_json::json!([]), "{list}: {seen:#}");
    }
    let headings: Vec<&str> =
        seen["headings"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
    for h in ["Vantage collector", "Firing", "Heat map", "Time series", "Recent"] {
        assert!(headings.iter().any(|x| x.starts_with(h)), "no heading {h}: {headings:?}");
    }

    // The alert card.
    let cards = seen["cards"].as_array().unwrap();
    let card = cards.iter().find(|c| c["id"] == id.as_str()).unwrap_or_else(|| panic!("{seen:#}"));
    assert_eq!(card["label"], label.as_str());
    assert_eq!(card["kind"], "failures");
    assert!(
        card["text"].as_str().unwrap().contains("connections ("),
        "no failure breakdown: {card:#}"
    );

    // The heat map: the failing cell carries the alert and stands far above every other cell.
    let cells = seen["cells"].as_array().unwrap();
    let cell = cells
        .iter()
        .find(|c| c["row"] == SERVICE && c["key"] == key.as_str())
        .unwrap_or_else(|| panic!("no {label} cell: {seen:#}"));
    assert_eq!(cell["alert"], id.as_str(), "{cell:#}");
    assert_eq!(cell["outlined"], true, "the alerting cell is not outlined: {cell:#}");
    assert!(cell["title"].as_str().unwrap().contains(&label), "{cell:#}");
    let ratio = cell["ratio"].as_f64().unwrap();
    let others: Vec<f64> = cells
        .iter()
        .filter(|c| !(c["row"] == SERVICE && c["key"] == key.as_str()))
        .map(|c| c["ratio"].as_f64().unwrap_or(0.0))
        .collect();
    assert!(others.len() >= 15, "{} other cells: {seen:#}", others.len());
    let highest_other = others.iter().copied().fold(0.0, f64::max);
    println!("failing cell ratio {ratio:.3}, highest other {highest_other:.3}");
    // The alert fires within a window or two, while the cell's window still holds some of the
    // successes from before the incident.
    assert!(ratio > 0.3 && ratio > 4.0 * highest_other, "{ratio} vs {highest_other}: {seen:#}");
    for c in cells.iter().filter(|c| c["row"] != SERVICE) {
        assert_eq!(c["alert"], "", "an alert on another service: {c:#}");
    }

    // Clicking the cell drew its series: failure ratio and baseline, clients.
    let series = &seen["series"];
    assert_eq!(series["slice"], label.as_str());
    assert!(series["label"].as_str().unwrap().starts_with(&label), "{series:#}");
    assert!(series["points"].as_u64().unwrap() >= 10, "{series:#}");
    assert_eq!(series["charts"], 2);
    for line in ["ratio", "baseline", "active", "failing"] {
        let d = series["paths"][line].as_str().unwrap_or_default();
        assert!(d.starts_with('M') && d.matches('L').count() >= 5, "{line}: {series:#}");
    }
    assert_eq!(seen["selectedCell"], true);

    // A notification's link `/?alert=ID` opened the page on that alert's slice, moved the
    // selection into the fragment, and marked the alert's card; an unknown id is named.
    let linked = &seen["linked"];
    assert_eq!(linked["slice"], label.as_str(), "{linked:#}");
    assert_eq!(linked["search"], "", "{linked:#}");
    assert!(linked["hash"].as_str().unwrap().contains("dim=asn"), "{linked:#}");
    let id = seen["cards"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["label"] == label.as_str())
        .unwrap()["id"]
        .clone();
    assert!(linked["selectedCards"].as_array().unwrap().contains(&id), "{linked:#}");
    assert!(
        seen["linkedMissing"].as_str().unwrap().contains("Alert ffffffffffffffff is not among"),
        "{seen:#}"
    );

    // Countries as columns, coloured by failing clients: the failing ASN's country leads its
    // row, and every cell shows its count.
    let country = country_of(FAILING_NET);
    let by_country = seen["countryCells"].as_array().unwrap();
    assert!(by_country.iter().all(|c| c["dim"] == "country"), "{by_country:#?}");
    let failing_of = |key: &str| {
        by_country
            .iter()
            .find(|c| c["row"] == SERVICE && c["key"] == key)
            .unwrap_or_else(|| panic!("no {SERVICE} x {key} cell: {by_country:#?}"))["failing"]
            .as_u64()
            .unwrap()
    };
    let hit = failing_of(country);
    for c in by_country.iter().filter(|c| c["row"] == SERVICE && c["key"] != country) {
        assert!(c["failing"].as_u64().unwrap() < hit, "{c:#} vs {hit} in {country}");
    }
    for c in by_country {
        assert_eq!(c["shown"], c["failing"].to_string(), "{c:#}");
    }
    assert!(seen["legend"].as_str().unwrap().starts_with("failing clients"), "{seen:#}");

    // Without JavaScript: the title and a note pointing at the JSON.
    let no_script = &seen["noScript"];
    assert_eq!(no_script["refreshes"], Value::Null, "the page ran scripts: {no_script:#}");
    let text = no_script["text"].as_str().unwrap();
    for needle in ["Vantage collector", "JavaScript", "/v1/alerts"] {
        assert!(text.contains(needle), "no {needle:?} without JavaScript: {text}");
    }

    // The screenshot is a PNG.
    let png = std::fs::read(&screenshot).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{} bytes", png.len());
    println!("dashboard screenshot: {}", screenshot.display());
}

/// A service-wide outage: every client fails to reach "shop".
fn outage(c: &ClientInfo, service: &str) -> Option<ErrorType> {
    if service == SERVICE { Some(ErrorType::TcpRefused) } else { background(c, service) }
}

fn png_ok(path: &Path) {
    let png = std::fs::read(path).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{}", path.display());
}

/// The dashboard while a service-wide outage fires, at the scale of the demo (120 clients on
/// 40 networks): one incident card for the service with the narrower alerts it covers folded
/// under it, plain figures that agree with the heat map's whole-service cell (the same window),
/// the statistic only behind "Statistics", the strip marking the firing slices, the heat map's
/// filter and top-N (run by the collector), and the reports view, from the card's button and
/// from typed filters (a bad one named).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_folds_a_service_outage_under_one_incident_in_plain_words() {
    let _one = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let key = CollectorKey::from_seed([7; 32]);
    let mut fleet = Population::new(PopulationConfig::default(), key.public_key());
    let running =
        vantage_collector::server::Collector::start(config(dir.path(), &fleet)).await.unwrap();
    let (plain, admin) = (running.plain_addr().unwrap(), running.admin_addr().unwrap());

    let need = warmup_windows() + 2;
    let warm =
        step_until(&mut fleet, plain, admin, Duration::from_secs(45), background, async |a| {
            (learned_points(a, &format!("service={SERVICE}")).await >= need).then_some(())
        })
        .await;
    assert!(warm.is_some(), "the {SERVICE} baseline did not learn {need} windows");

    // The outage: the service alert fires and narrower alerts fire under it.
    let fired = step_until(&mut fleet, plain, admin, Duration::from_secs(40), outage, async |a| {
        let (_, alerts) = get_json(a, "/v1/alerts").await;
        let firing = alerts["firing"].as_array().unwrap();
        let parent = firing.iter().find(|x| x["label"] == SERVICE)?;
        let id = parent["id"].as_str()?;
        let children = firing.iter().filter(|x| x["inhibited_by"] == id).count();
        // Which narrower alerts fire, and when, is the detector's business: one is enough.
        (children >= 1).then(|| id.to_owned())
    })
    .await;
    let Some(parent) = fired else {
        let (_, alerts) = get_json(admin, "/v1/alerts").await;
        panic!("no service alert with narrower alerts under it: {alerts:#}");
    };

    let stop = Arc::new(AtomicBool::new(false));
    let recovered = Arc::new(AtomicBool::new(false));
    let feeder = tokio::spawn({
        let (stop, recovered) = (stop.clone(), recovered.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let next = Instant::now() + STEP;
                if recovered.load(Ordering::Relaxed) {
                    fleet.step(plain, 2, background).await;
                } else {
                    fleet.step(plain, 2, outage).await;
                }
                tokio::time::sleep_until(next.into()).await;
            }
        }
    });
    let shots = [
        ("incident", artifact("dashboard-incident.png")),
        ("expanded", artifact("dashboard-incident-unfolded.png")),
        ("reports", artifact("dashboard-reports.png")),
    ];
    let user_data = tempfile::tempdir().unwrap();
    let filter = format!("AS{}", failing_asn());
    let seen = run_driver(
        "dashboard_incident.js",
        serde_json::json!({
            "userDataDir": user_data.path(),
            "url": format!("http://{admin}/"),
            "service": SERVICE,
            "filter": filter,
            "screenshots": shots.iter().map(|(k, p)| (k.to_string(), p.clone())).collect::<std::collections::BTreeMap<_, _>>(),
            "timeoutMs": 20_000,
        }),
    )
    .await;
    let (_, alerts) = get_json(admin, "/v1/alerts").await;

    // The outage ends: once resolved, Recent lists the service's alert with the ones it
    // covered indented under it.
    recovered.store(true, Ordering::Relaxed);
    let recent_png = artifact("dashboard-resolved.png");
    let user_data = tempfile::tempdir().unwrap();
    let after = run_driver(
        "dashboard_incident.js",
        serde_json::json!({
            "mode": "recent",
            "userDataDir": user_data.path(),
            "url": format!("http://{admin}/"),
            "screenshots": { "recent": recent_png },
            "timeoutMs": 30_000,
        }),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    feeder.await.unwrap();
    running.shutdown().await.unwrap();
    let recent = after["recent"].as_array().unwrap();
    let at = recent
        .iter()
        .position(|r| r["id"] == parent.as_str())
        .unwrap_or_else(|| panic!("{after:#}"));
    assert_eq!(recent[at]["child"], false, "{after:#}");
    let under: Vec<&Value> = recent[at + 1..].iter().take_while(|r| r["child"] == true).collect();
    assert!(!under.is_empty(), "nothing under the resolved service alert: {after:#}");
    assert!(
        under.iter().all(|r| r["label"].as_str().unwrap().starts_with(&format!("↳ {SERVICE} / "))),
        "{after:#}"
    );
    assert_eq!(after["pageErrors"], serde_json::json!([]), "{after:#}");
    png_ok(&recent_png);
    println!("dashboard screenshot: {}", recent_png.display());

    // No script error; the one failed request is the bad filter typed on purpose.
    assert_eq!(seen["pageErrors"], serde_json::json!([]), "{seen:#}");
    let failed = seen["failedRequests"].as_array().unwrap();
    assert!(failed.len() == 1 && failed[0].as_str().unwrap().contains("asn=sixty"), "{failed:#?}");
    assert!(seen["consoleErrors"].as_array().unwrap().len() <= 1, "{seen:#}");

    // One incident, the service first, its children folded under it (and nowhere else).
    assert_eq!(seen["firstCardId"], parent.as_str(), "the parent is not first: {seen:#}");
    let incidents = seen["incidents"].as_array().unwrap();
    let card = &incidents[0];
    assert_eq!(card["label"], SERVICE);
    assert_eq!(card["inhibited"], "");
    let children: Vec<&str> =
        card["childIds"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    assert!(!children.is_empty(), "{card:#}");
    assert_eq!(card["foldCount"], children.len());
    assert!(
        card["foldSummary"]
            .as_str()
            .unwrap()
            .starts_with(&format!("+ {} narrower alert", children.len())),
        "{card:#}"
    );
    assert!(card["childInhibitedBy"].as_array().unwrap().iter().all(|p| p == parent.as_str()));
    for child in &children {
        assert!(incidents.iter().all(|i| i["id"] != *child), "{child} is also a top-level card");
        let api = alerts["firing"].as_array().unwrap().iter().find(|a| a["id"] == *child);
        assert_eq!(
            api.unwrap_or_else(|| panic!("{child}: {alerts:#}"))["inhibited_by"],
            parent.as_str()
        );
    }
    assert_eq!(card["foldOpen"], false, "children start folded");
    assert_eq!(seen["unfolded"], true);
    assert_eq!(seen["stillUnfolded"], true, "a poll folded them again");
    assert_eq!(seen["seriesAfterUnfold"], Value::Null, "unfolding chose a series");
    assert_eq!(seen["keyboardFolded"], true, "Enter on the summary does not fold");
    assert!(seen["firingCount"].as_str().unwrap().starts_with("(1 incident"), "{seen:#}");

    // Plain words, the same window as the map; the statistic only behind "Statistics".
    let headline = card["headline"].as_str().unwrap();
    let words: Vec<&str> = headline.split(' ').collect();
    let same = &seen["sameWindow"];
    assert_eq!(same["card"], same["cell"], "card and map disagree: {same:#}");
    assert_eq!(same["cellOutlined"], true, "the service alert's cell is not outlined");
    let (failing, active) =
        (same["card"]["failing"].as_u64().unwrap(), same["card"]["active"].as_u64().unwrap());
    assert_eq!(failing, active, "every client of {SERVICE} fails: {same:#}");
    let networks = words.get(6).and_then(|w| w.parse::<u64>().ok()).unwrap_or(0);
    assert_eq!(
        headline,
        format!("{failing} of {active} clients failing on {networks} networks"),
        "{headline}"
    );
    assert!(active >= 100 && (30..=40).contains(&networks), "{headline}");
    let visible = card["visibleText"].as_str().unwrap();
    assert!(!visible.contains("ln p") && !visible.contains("Evidence"), "{visible}");
    assert!(card["statsText"].as_str().unwrap().contains("−ln p = "), "{card:#}");
    assert!(visible.contains("of their requests fail"), "{visible}");
    assert!(seen["windowNote"].as_str().unwrap().contains("all come from the last"), "{seen:#}");

    // The strip: the service first, then the slices of its folded alerts, firing.
    let strip = seen["strip"].as_array().unwrap();
    assert_eq!(strip[0]["label"], SERVICE);
    assert_eq!(strip[0]["child"], false);
    assert!(strip[0]["firing"].as_u64().unwrap() >= 1, "{strip:#?}");
    let child_rows: Vec<&Value> = strip.iter().filter(|r| r["child"] == true).collect();
    assert!(child_rows.len() >= children.len(), "{strip:#?}");
    assert!(child_rows.iter().all(|r| r["firing"].as_u64().unwrap() >= 1), "{strip:#?}");
    assert!(strip.iter().all(|r| r["cells"] == strip[0]["cells"]));

    // Heat map: the filter and the top-N.
    let heat = &seen["heat"];
    assert_eq!(
        heat["filtered"]["keys"],
        serde_json::json!([failing_asn().to_string()]),
        "{heat:#}"
    );
    assert!(
        heat["filtered"]["note"].as_str().unwrap().starts_with("Showing 1 of 10 ASNs (1 match"),
        "{heat:#}"
    );
    assert_eq!(heat["top"]["keys"].as_array().unwrap().len(), 5, "{heat:#}");
    assert!(heat["top"]["note"].as_str().unwrap().starts_with("Showing 5 of 10 ASNs"), "{heat:#}");

    // Reports: the card's button filled the service; typed filters narrowed it; a bad one named.
    let reports = &seen["reports"];
    assert_eq!(reports["form"]["service"], SERVICE, "{reports:#}");
    let rows = reports["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 50, "one page of 50: {reports:#}");
    assert!(rows.iter().all(|r| r["service"] == SERVICE && r["type"] == "tcp.refused"));
    assert_eq!(reports["more"], true);
    for h in ["Time (UTC)", "Host", "Type", "ASN", "Country"] {
        assert!(reports["headers"].as_array().unwrap().iter().any(|x| x == h), "{reports:#}");
    }
    let filtered = seen["reportsFiltered"].as_array().unwrap();
    let asn = failing_asn().to_string();
    let country = country_of(FAILING_NET);
    assert!(!filtered.is_empty());
    assert!(
        filtered.iter().all(|r| r["asn"] == asn.as_str() && r["country"] == country),
        "{filtered:#?}"
    );
    assert!(seen["reportsError"].as_str().unwrap().contains("parameter `asn`"), "{seen:#}");

    for (_, path) in &shots {
        png_ok(path);
        println!("dashboard screenshot: {}", path.display());
    }
}

/// Agent drop counts reach the admin API and the dashboard panel, each envelope once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_what_agents_dropped() {
    use vantage_agent::drops::DropReason;
    use vantage_agent::entropy::SeededEntropy;
    use vantage_agent::report::{AppInfo, Batch, Report};
    use vantage_agent::wire::{AgentIdentity, seal_batch};
    use vantage_tests::collector_proc::unix_now;

    let dir = tempfile::tempdir().unwrap();
    let key = CollectorKey::from_seed([9; 32]);
    std::fs::write(dir.path().join("collector.key"), hex::encode(key.secret_bytes())).unwrap();
    let text = "[server]\nlisten_plain = \"127.0.0.1:0\"\nlisten_admin = \"127.0.0.1:0\"\n\
                [keys]\nprivate_key_files = [\"collector.key\"]\n[store]\npath = \"data\"\n\
                [log]\nlevel = \"warn\"\n";
    let running = vantage_collector::server::Collector::start(
        Config::from_toml_str(text, dir.path()).unwrap(),
    )
    .await
    .unwrap();
    let (plain, admin) = (running.plain_addr().unwrap(), running.admin_addr().unwrap());

    let mut rng = SeededEntropy::insecure_from_seed([4; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    let app = AppInfo::new("com.example.shop", "1.0", "android", "vantage-tests").unwrap();
    let now = unix_now();
    let sealed = |seq: u64, drops: &[(DropReason, u64)], rng: &mut SeededEntropy| {
        let report = Report::builder("checkout", "api.example.com", ErrorType::TcpRefused)
            .observed_at(vantage_agent::report::UnixMillis(now.0 - 1_000))
            .build(rng, now)
            .unwrap();
        let mut batch =
            Batch::new(agent.public_key(), seq, now, app.clone()).with_reports(vec![report]);
        for (reason, n) in drops {
            batch.drops.add(*reason, *n);
        }
        bytes::Bytes::from(seal_batch(&batch, &agent, &key.public_key(), rng).unwrap())
    };
    let first = sealed(1, &[(DropReason::QueueFull, 5), (DropReason::Expired, 2)], &mut rng);
    let second = sealed(2, &[(DropReason::QueueFull, 1)], &mut rng);
    let mut c = HttpClient::connect_plain(plain).await.unwrap();
    // The first envelope twice (a retry): its counts are added once.
    for (body, expect) in [(&first, "stored"), (&first, "duplicate"), (&second, "stored")] {
        let (status, answer) = c.post_envelope(body.clone()).await.unwrap();
        assert_eq!(status.as_u16(), 202);
        assert_eq!(String::from_utf8_lossy(&answer).trim(), expect);
    }

    let (status, api) = get_json(admin, "/v1/agent_drops").await;
    assert_eq!(status, 200, "{api}");
    assert_eq!(api["total"], 8, "{api:#}");
    let reasons = api["reasons"].as_array().unwrap();
    let count = |reason: &str| {
        reasons.iter().find(|r| r["reason"] == reason).map(|r| r["count"].as_u64().unwrap())
    };
    assert_eq!((count("queue_full"), count("expired")), (Some(6), Some(2)), "{api:#}");
    // Every reason is listed, at 0 when nothing was dropped for it.
    for reason in DropReason::KNOWN.iter().map(|r| r.as_str()).chain(["other"]) {
        assert!(count(reason).is_some(), "{reason} missing from {api:#}");
    }
    assert_eq!(reasons.len(), DropReason::KNOWN.len() + 1);

    let user_data = tempfile::tempdir().unwrap();
    let seen = run_driver(
        "drops.js",
        serde_json::json!({
            "userDataDir": user_data.path(),
            "url": format!("http://{admin}/"),
            "total": 8,
            "timeoutMs": 20_000,
        }),
    )
    .await;
    let rows: Vec<(String, u64)> = seen["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["reason"].as_str().unwrap().to_owned(), r["count"].as_u64().unwrap()))
        .collect();
    let mut rows = rows;
    rows.sort();
    assert_eq!(rows, [("expired".to_owned(), 2), ("queue_full".to_owned(), 6)], "{seen:#}");
    assert_eq!(seen["count"], "(8)", "{seen:#}");
    for list in ["consoleErrors", "pageErrors", "failedRequests"] {
        assert_eq!(seen[list].as_array().map(Vec::len), Some(0), "{list}: {seen:#}");
    }
    running.shutdown().await.unwrap();
}
