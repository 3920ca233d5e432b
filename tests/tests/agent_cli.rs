#![allow(clippy::unwrap_used)]
//! The `vantage-agent` command-line tool as a process (crate `vantage-agent`, feature `cli`),
//! against real collector processes: one with a proper CA and leaf certificate, one with a
//! self-signed CA:TRUE certificate (what `openssl req -x509` makes), and a refused port.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use vantage_tests::collector_proc::{
    CollectorConfig, CollectorProc, agent_cli_bin, write_collector_key, write_tls,
};
use vantage_tests::tls::TestCert;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Run {
    let out: Output = Command::new(agent_cli_bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let run = Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    eprintln!("vantage-agent {args:?} -> {}\n{}{}", run.code, run.stdout, run.stderr);
    run
}

/// A TLS collector in `dir` serving `cert`; returns it with the key's public half (hex).
fn collector(dir: &Path, cert: Option<&TestCert>) -> (CollectorProc, String, Option<String>) {
    std::fs::create_dir_all(dir).unwrap();
    let key = write_collector_key(dir, [9; 32]);
    let ca = match cert {
        Some(c) => {
            c.write_to(dir);
            None
        }
        None => Some(write_tls(dir, &["127.0.0.1"]).0.cert_pem()),
    };
    let config = CollectorConfig { tls: true, plain: false, ..CollectorConfig::default() };
    let proc = CollectorProc::start(dir, &config.to_toml());
    (proc, key.public_key().to_string(), ca)
}

fn agent_config(dir: &Path, key: &str, url: &str, ca_pem: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
    let text = format!(
        "data_dir = \"data\"\ncollector_key = \"{key}\"\nextra_ca_files = [\"ca.pem\"]\n\
         [app]\nid = \"com.example.cli\"\nversion = \"1.0\"\nplatform = \"linux\"\n\
         [[services]]\nid = \"checkout\"\nhosts = [\"api.example.com\"]\n\
         [[collectors]]\nurl = \"{url}\"\n\
         [delivery]\nbase_backoff_ms = 100\nmax_backoff_ms = 400\n"
    );
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn send_test_delivers_to_a_working_collector_and_status_reads_the_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, key, ca) = collector(&tmp.path().join("collector"), None);
    let url = format!("https://127.0.0.1:{}", c.tls_addr().unwrap().port());
    let config = agent_config(&tmp.path().join("agent"), &key, &url, &ca.unwrap());
    let config = config.to_str().unwrap();

    let checked = run(&["check-config", config]);
    assert_eq!(checked.code, 0);
    assert!(checked.stdout.contains("ok: 1 service(s), 1 collector(s)"), "{}", checked.stdout);

    let data = tmp.path().join("agent/data");
    let status = run(&["status", tmp.path().join("agent").to_str().unwrap()]);
    assert_eq!(status.code, 0);
    assert!(status.stdout.contains("identity: absent"), "{}", status.stdout);

    let sent = run(&["send-test", "--config", config, "--timeout", "20"]);
    assert_eq!(sent.code, 0, "{}{}", sent.stdout, sent.stderr);
    assert!(sent.stdout.contains("delivered: 1 synthetic failure"), "{}", sent.stdout);
    assert!(sent.stdout.contains(&format!("collector {url}: ok")), "{}", sent.stdout);

    let status = run(&["status", data.to_str().unwrap()]);
    assert_eq!(status.code, 0);
    assert!(status.stdout.contains("identity: present"), "{}", status.stdout);
    assert!(status.stdout.contains("buffer: 0 envelope(s)"), "{}", status.stdout);

    let ping = format!("{url}/v1/ping");
    let ca_file = tmp.path().join("agent/ca.pem");
    let checked = run(&["check", &ping, "--ca", ca_file.to_str().unwrap()]);
    assert_eq!(checked.code, 0, "{}", checked.stdout);
    assert!(checked.stdout.starts_with("ok: HTTP 204"), "{}", checked.stdout);
    // Without the CA the same URL is an unknown issuer.
    let checked = run(&["check", &ping]);
    assert_eq!(checked.code, 1);
    assert!(checked.stdout.contains("failed: tls.cert.authority_invalid"), "{}", checked.stdout);
}

#[test]
fn send_test_names_a_ca_certificate_used_as_the_server_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = TestCert::self_signed_ca(&["127.0.0.1"]);
    let (c, key, _) = collector(&tmp.path().join("collector"), Some(&cert));
    let url = format!("https://127.0.0.1:{}", c.tls_addr().unwrap().port());
    let config = agent_config(&tmp.path().join("agent"), &key, &url, &cert.cert_pem);
    // check-config cannot see the certificate: it passes.
    assert_eq!(run(&["check-config", config.to_str().unwrap()]).code, 0);

    let sent = run(&["send-test", "--config", config.to_str().unwrap(), "--timeout", "3"]);
    assert_eq!(sent.code, 1, "{}", sent.stdout);
    assert!(sent.stdout.contains("not delivered within 3 s"), "{}", sent.stdout);
    assert!(sent.stdout.contains(&format!("collector {url}: tls.cert.invalid")), "{}", sent.stdout);
    assert!(sent.stdout.contains("CaUsedAsEndEntity"), "{}", sent.stdout);
    assert!(sent.stdout.contains("CA:FALSE"), "{}", sent.stdout);
    // One warning on stderr for the one cause, in plain text (stderr is a pipe, not a
    // terminal: no colour codes).
    assert_eq!(
        sent.stderr.matches("reports are not being delivered").count(),
        1,
        "{}",
        sent.stderr
    );
    assert!(!sent.stderr.contains('\u{1b}'), "colour codes in {:?}", sent.stderr);

    let status = run(&["status", tmp.path().join("agent/data").to_str().unwrap()]);
    assert_eq!(status.code, 0);
    assert!(status.stdout.contains("buffer: 1 envelope(s), 1 failure(s)"), "{}", status.stdout);
}

#[test]
fn refused_ports_and_bad_configs_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let url = format!("https://{closed}");
    let key = "4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a";
    let ca = TestCert::self_signed_ca(&["unused.test"]).cert_pem;
    let config = agent_config(&tmp.path().join("agent"), key, &url, &ca);

    let sent = run(&["send-test", "--config", config.to_str().unwrap(), "--timeout", "2"]);
    assert_eq!(sent.code, 1);
    assert!(sent.stdout.contains(&format!("collector {url}: tcp.refused")), "{}", sent.stdout);

    let checked = run(&["check", &format!("{url}/v1/ping")]);
    assert_eq!(checked.code, 1);
    assert!(
        checked.stdout.starts_with("failed: tcp.refused, connection phase"),
        "{}",
        checked.stdout
    );

    let bad = tmp.path().join("bad.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&bad, text.replace(&url, "http://plain.example.com")).unwrap();
    let checked = run(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(checked.code, 1);
    assert!(checked.stdout.contains("collectors[0].url"), "{}", checked.stdout);
    std::fs::write(&bad, text.replace("[delivery]", "[delivery]\nmax_backof_ms = 5")).unwrap();
    let checked = run(&["check-config", bad.to_str().unwrap()]);
    assert_eq!(checked.code, 1);
    assert!(checked.stdout.contains("max_backof_ms"), "{}", checked.stdout);

    let missing = run(&["status", tmp.path().join("nowhere").to_str().unwrap()]);
    assert_eq!(missing.code, 2);
    assert!(missing.stderr.contains("not a directory"), "{}", missing.stderr);
}
