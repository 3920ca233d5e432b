#![allow(clippy::unwrap_used)] // a panic is how a test reports failure
//! The `vantage-collector` binary: `keygen`, `check-config`, and `serve` until SIGTERM.

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use vantage_agent::entropy::SeededEntropy;
use vantage_agent::report::UnixMillis;
use vantage_agent::wire::AgentIdentity;
use vantage_collector::open::CollectorKey;
use vantage_collector::store::{Store, StoreConfig};
use vantage_tests::collector_proc::{
    CollectorConfig, CollectorProc, HttpClient, collector_bin, seal_envelope, unix_now,
    write_collector_key, write_tls,
};

fn run(args: &[&str]) -> Output {
    Command::new(collector_bin()).args(args).stdin(Stdio::null()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value after `prefix` on the line that starts with it.
fn line_value(out: &str, prefix: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{out}"))
        .trim()
        .to_owned()
}

#[test]
fn keygen_writes_a_0600_key_once_and_prints_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("keys");
    let out = run(&["keygen", "--out", out_dir.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let key_id = line_value(&stdout, "key id:");
    let public = line_value(&stdout, "public key:");

    let key_file = out_dir.join("collector.key");
    let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "key file mode {mode:o}");
    let secret_hex = std::fs::read_to_string(&key_file).unwrap();
    assert!(!stdout.contains(secret_hex.trim()), "keygen printed the secret");
    let secret: [u8; 32] = hex::decode(secret_hex.trim()).unwrap().try_into().unwrap();
    let key = CollectorKey::from_secret_bytes(&secret);
    assert_eq!(key.public_key().to_string(), public);
    assert_eq!(key.key_id().to_string(), key_id);
    assert_eq!(std::fs::read_to_string(out_dir.join("collector.pub")).unwrap().trim(), public);

    // A second run refuses and leaves the key alone.
    let again = run(&["keygen", "--out", out_dir.to_str().unwrap()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("already exists"), "{}", text(&again.stderr));
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), secret_hex);
}

/// A directory with TLS files, a collector key and a good config; returns the config text.
fn good_dir(dir: &Path) -> String {
    write_tls(dir, &["localhost"]);
    write_collector_key(dir, [1; 32]);
    CollectorConfig { tls: true, ..Default::default() }.to_toml()
}

fn check(dir: &Path, config: &str) -> Output {
    let path = dir.join("check.toml");
    std::fs::write(&path, config).unwrap();
    run(&["check-config", "--config", path.to_str().unwrap()])
}

#[test]
fn check_config_names_the_field_that_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let good = good_dir(dir.path());
    let out = check(dir.path(), &good);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let key_id = CollectorKey::from_seed([1; 32]).key_id().to_string();
    assert!(text(&out.stdout).contains(&key_id), "{}", text(&out.stdout));

    let missing_cert = dir.path().join("nope/cert.pem");
    let cases: Vec<(String, String)> = vec![
        (
            good.replace(
                "tls_cert = \"cert.pem\"",
                &format!("tls_cert = \"{}\"", missing_cert.display()),
            ),
            format!("server.tls_cert: file not found: {}", missing_cert.display()),
        ),
        (
            good.replace("tls_key = \"key.pem\"\n", ""),
            "server.tls_key: required with listen_tls".into(),
        ),
        (good.replace("[store]", "[store]\nretension_days = 3"), "retension_days".into()),
        (good.replace("path = \"data\"", ""), "store.path: required".into()),
        (
            good.replace("collector.key", "missing.key"),
            "keys.private_key_files[0]: file not found".into(),
        ),
        (good.replace("format = \"text\"", "format = \"xml\""), "xml".into()),
        (
            format!("{good}[limits]\nagent_rps = 0\n"),
            "limits.agent_rps: must be a positive number".into(),
        ),
        (
            good.replace("listen_plain = \"127.0.0.1:0\"", "listen_plain = \"localhost:80\""),
            "server.listen_plain".into(),
        ),
        ("not toml [".into(), "check.toml".into()),
    ];
    for (config, want) in cases {
        let out = check(dir.path(), &config);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{want}: {stderr}");
        assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
    }
    let out = run(&["check-config", "--config", dir.path().join("absent.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("absent.toml"));
}

#[test]
fn serve_stores_envelopes_and_exits_0_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = write_tls(dir.path(), &["localhost"]);
    let key = write_collector_key(dir.path(), [2; 32]);
    let config = CollectorConfig { tls: true, log_level: "info".into(), ..Default::default() };
    let proc = CollectorProc::start(dir.path(), &config.to_toml());
    let mut rng = SeededEntropy::insecure_from_seed([9; 32]);
    let agent = AgentIdentity::generate(&mut rng);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut ids = Vec::new();
    rt.block_on(async {
        let mut tls =
            HttpClient::connect_tls(proc.tls_addr().unwrap(), ca.root_store(), "localhost")
                .await
                .unwrap();
        let mut plain = HttpClient::connect_plain(proc.plain_addr().unwrap()).await.unwrap();
        for seq in 1..=4u64 {
            let env = seal_envelope(&agent, &key.public_key(), seq, 3, unix_now(), &mut rng);
            let client = if seq % 2 == 0 { &mut tls } else { &mut plain };
            let (status, body) = client.post_envelope(env.bytes).await.unwrap();
            assert_eq!(status, http::StatusCode::ACCEPTED, "{body:?}");
            ids.extend(env.report_ids);
        }
    });
    let store_path = proc.store_path();
    let stderr_path = dir.path().join(vantage_tests::collector_proc::STDERR_FILE);
    let status = proc.terminate();
    let stderr = std::fs::read_to_string(stderr_path).unwrap();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");
    assert!(stderr.contains("collector stopped"), "{stderr}");
    // Text logs to a file: no colour codes (stderr is not a terminal).
    assert!(!stderr.contains('\u{1b}'), "colour codes in the log file: {stderr:?}");

    rt.block_on(async {
        let store = Store::open(StoreConfig::new(&store_path)).unwrap();
        let mut stored: Vec<[u8; 16]> = store
            .scan_reports(UnixMillis(0), UnixMillis(u64::MAX))
            .map(|r| r.unwrap().id)
            .collect();
        stored.sort();
        ids.sort();
        assert_eq!(stored, ids);
        store.close().await.unwrap();
    });
}

#[test]
fn serve_prints_where_it_listens_and_logs_json() {
    let dir = tempfile::tempdir().unwrap();
    write_tls(dir.path(), &["localhost"]);
    write_collector_key(dir.path(), [3; 32]);
    let config = CollectorConfig { tls: true, log_level: "info".into(), ..Default::default() }
        .to_toml()
        .replace("format = \"text\"", "format = \"json\"");
    let config_path = dir.path().join("collector.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new(collector_bin())
        .args(["serve", "--config", config_path.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let second = lines.next().unwrap().unwrap();
    let ready: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("ready.json")).unwrap())
            .unwrap();
    assert_eq!(first, format!("listening on https://{}", ready["tls"].as_str().unwrap()));
    assert_eq!(second, format!("listening on http://{}", ready["plain"].as_str().unwrap()));

    let kill = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(logs.iter().any(|l| l["fields"]["message"] == "collector stopped"), "{stderr}");
}
