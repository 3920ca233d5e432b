#![allow(clippy::unwrap_used)]
//! Real network faults, injected in network namespaces, classified by the agent's probe.
//!
//! Each test builds its own client and server namespace pair ([`NetnsPair`]), starts the
//! `vantage-probe serve` helper in the server namespace (a DNS server on 198.51.100.2:53 and
//! HTTP/TLS servers), injects one fault with iptables or `ip route`/`ip link`, and runs
//! `vantage-probe check <url>` in the client namespace, where `resolv.conf` points at that DNS
//! server. The probe prints its outcome as JSON; each test asserts the exact NEL type and phase.
//!
//! Needs root, iproute2 and iptables (`.ci/install-netns-tools.sh`): without them every test
//! fails with the reason. Namespace names are unique per process and test, so the tests run in
//! parallel.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;

use serde_json::Value;
use vantage_tests::netns::{DEFAULT_RESOLVER_OPTIONS, NetnsPair, SERVER_ADDR, SERVER_ALT_ADDR};
use vantage_tests::tls::TestCa;

const PROBE: &str = env!("CARGO_BIN_EXE_vantage-probe");

/// Ports of the servers in the server namespace.
const HTTP: u16 = 80;
const GARBAGE: u16 = 81;
const HTTPS: u16 = 443;
const HTTPS_UNTRUSTED: u16 = 8443;
const HTTPS_WRONG_NAME: u16 = 8444;
const HTTPS_EXPIRED: u16 = 8445;

/// A namespace pair with the servers running, and the trusted CA on disk.
struct Lab {
    ns: NetnsPair,
    ca_file: PathBuf,
    _dir: tempfile::TempDir,
}

/// The client's resolver options for tests that need DNS to answer: a reply the loaded CI
/// machine delays past one second (`http_500` once met `dns.timed_out` after 1,003 ms) is
/// waited for, and a lost query asked again.
const PATIENT_RESOLVER: &str = "timeout:3 attempts:2";

impl Lab {
    /// A lab whose resolver waits out a slow DNS reply ([`PATIENT_RESOLVER`]).
    fn new() -> Lab {
        Lab::with_resolver(PATIENT_RESOLVER)
    }

    fn with_resolver(options: &str) -> Lab {
        let mut ns = NetnsPair::new().unwrap_or_else(|e| {
            panic!("these tests need network namespaces (root, iproute2, iptables): {e}")
        });
        ns.set_resolver_options(options).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("vantage faults CA");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let certs = [
            ("good", HTTPS, ca.leaf(&["ok.test", "collector.nx.test", "198.51.100.2"])),
            ("untrusted", HTTPS_UNTRUSTED, TestCa::new("stranger").leaf(&["ok.test"])),
            ("wrong-name", HTTPS_WRONG_NAME, ca.leaf(&["other.example"])),
            ("expired", HTTPS_EXPIRED, ca.expired_leaf(&["ok.test"])),
        ];
        let mut serve = ns.server_command(PROBE);
        serve.args(["serve", "--dns", &format!("{SERVER_ADDR}:53")]);
        serve.args(["--a", &format!("ok.test={SERVER_ADDR}")]);
        serve.args(["--a", &format!("alt.test={SERVER_ALT_ADDR}")]);
        serve.args(["--servfail", "servfail.test", "--refused", "refused.test"]);
        serve.args(["--drop", "silent.test"]);
        serve.args(["--http", &format!("0.0.0.0:{HTTP}")]);
        serve.args(["--garbage", &format!("0.0.0.0:{GARBAGE}")]);
        for (name, port, cert) in &certs {
            let sub = dir.path().join(name);
            std::fs::create_dir(&sub).unwrap();
            let (cert, key) = cert.write_to(&sub);
            serve
                .args(["--https", &format!("0.0.0.0:{port},{},{}", cert.display(), key.display())]);
        }
        let child = ns.spawn(serve).unwrap();
        // Readiness: the helper prints "ready" once every socket is bound.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the server helper did not start");
        Lab { ns, ca_file, _dir: dir }
    }

    /// Runs `vantage-probe check <url> --ca <test CA> <extra>` in the client namespace.
    fn check(&self, url: &str, extra: &[&str]) -> Value {
        self.run_probe("check", url, extra)
    }

    fn run_probe(&self, mode: &str, url: &str, extra: &[&str]) -> Value {
        let output = self
            .ns
            .client_command(PROBE)
            .args([mode, url, "--ca"])
            .arg(&self.ca_file)
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "vantage-probe {mode} {url} failed: {}{}",
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    /// Appends an iptables rule to the server namespace's INPUT chain.
    fn server_input(&self, rule: &str) {
        let mut args = vec!["-A", "INPUT"];
        args.extend(rule.split_whitespace());
        self.ns.server_iptables(args).unwrap();
    }
}

/// Asserts a failure of `expected_type` in `phase`, returning its elapsed milliseconds.
#[track_caller]
fn assert_failed(outcome: &Value, expected_type: &str, phase: &str) -> u64 {
    assert_eq!(outcome["outcome"], "failed", "{outcome}");
    assert_eq!(outcome["type"], expected_type, "{outcome}");
    assert_eq!(outcome["phase"], phase, "{outcome}");
    outcome["elapsed_ms"].as_u64().unwrap()
}

#[test]
fn success_over_http_and_https() {
    let lab = Lab::new();
    for url in ["http://ok.test/", &format!("https://ok.test:{HTTPS}/"), "https://198.51.100.2/"] {
        let outcome = lab.check(url, &[]);
        assert_eq!(outcome["outcome"], "success", "{url}: {outcome}");
        assert_eq!(outcome["status"], 200, "{url}: {outcome}");
        assert_eq!(outcome["protocol"], "http/1.1", "{url}: {outcome}");
    }
}

#[test]
fn dns_nxdomain() {
    let lab = Lab::new();
    assert_failed(&lab.check("http://nx.test/", &[]), "dns.name_not_resolved", "dns");
}

#[test]
fn dns_servfail_and_refused() {
    let lab = Lab::new();
    assert_failed(&lab.check("http://servfail.test/", &[]), "dns.failed", "dns");
    assert_failed(&lab.check("http://refused.test/", &[]), "dns.failed", "dns");
}

/// The server never answers; resolv.conf says `timeout:1 attempts:1`, so the resolver gives up
/// after about one second, well before the probe's own 5 s DNS bound.
#[test]
fn dns_resolver_timeout() {
    let lab = Lab::with_resolver(DEFAULT_RESOLVER_OPTIONS);
    let elapsed = assert_failed(&lab.check("http://silent.test/", &[]), "dns.timed_out", "dns");
    assert!((900..3000).contains(&elapsed), "resolv.conf timeout not honoured: {elapsed} ms");
}

/// The resolver is unreachable (the only link is down): a named URL fails in DNS.
#[test]
fn dns_unreachable_when_link_down() {
    let lab = Lab::new();
    lab.ns.set_client_link(false).unwrap();
    assert_failed(&lab.check("http://ok.test/", &[]), "dns.unreachable", "dns");
}

/// Nothing listens on the resolver's port and the server says so with ICMP port unreachable.
/// hickory sends from unconnected UDP sockets, which the kernel does not tell about ICMP
/// errors, so the query times out (glibc, with connected sockets, fails at once).
#[test]
fn dns_port_unreachable_times_out() {
    let lab = Lab::with_resolver(DEFAULT_RESOLVER_OPTIONS);
    lab.server_input("-p udp --dport 53 -j REJECT --reject-with icmp-port-unreachable");
    let elapsed = assert_failed(&lab.check("http://ok.test/", &[]), "dns.timed_out", "dns");
    assert!((900..3000).contains(&elapsed), "{elapsed} ms");
}

#[test]
fn tcp_refused() {
    let lab = Lab::new();
    lab.server_input("-p tcp --dport 80 -j REJECT --reject-with tcp-reset");
    assert_failed(&lab.check("http://ok.test/", &[]), "tcp.refused", "connection");
}

/// The handshake completes, then the first data segment is answered with a RST: the reset
/// arrives during the HTTP exchange, and keeps the taxonomy's `connection` phase.
#[test]
fn tcp_reset_after_handshake() {
    let lab = Lab::new();
    lab.server_input(
        "-p tcp --dport 80 -m conntrack --ctstate ESTABLISHED -m length --length 53:65535 \
         -j REJECT --reject-with tcp-reset",
    );
    let outcome = lab.check("http://ok.test/", &[]);
    assert_failed(&outcome, "tcp.reset", "connection");
    assert_eq!(outcome["protocol"], "http/1.1", "the reset came during HTTP: {outcome}");
}

#[test]
fn tcp_connect_timeout() {
    let lab = Lab::new();
    lab.server_input("-p tcp --dport 80 -j DROP");
    let outcome = lab.check("http://ok.test/", &["--connect-timeout-ms", "700"]);
    let elapsed = assert_failed(&outcome, "tcp.timed_out", "connection");
    assert!((700..3000).contains(&elapsed), "{elapsed} ms");
}

#[test]
fn unreachable_route() {
    let lab = Lab::new();
    lab.ns.client_route(&["unreachable", &format!("{SERVER_ALT_ADDR}/32")]).unwrap();
    // alt.test resolves (the DNS server is on the other address) and then has no route.
    assert_failed(&lab.check("http://alt.test/", &[]), "tcp.address_unreachable", "connection");
    assert_eq!(lab.check("http://ok.test/", &[])["outcome"], "success");
}

/// A blackhole route fails `connect()` with EINVAL at once on Linux; the errno table maps it to
/// `tcp.address_unreachable` (see `classify`'s module docs).
#[test]
fn blackhole_route() {
    let lab = Lab::new();
    lab.ns.client_route(&["blackhole", &format!("{SERVER_ALT_ADDR}/32")]).unwrap();
    assert_failed(&lab.check("http://alt.test/", &[]), "tcp.address_unreachable", "connection");
}

#[test]
fn icmp_unreachable_rejects() {
    let lab = Lab::new();
    lab.server_input("-p tcp --dport 80 -j REJECT --reject-with icmp-host-unreachable");
    lab.server_input("-p tcp --dport 81 -j REJECT --reject-with icmp-net-unreachable");
    assert_failed(&lab.check("http://ok.test/", &[]), "tcp.address_unreachable", "connection");
    assert_failed(&lab.check("http://ok.test:81/", &[]), "tcp.address_unreachable", "connection");
}

/// The other ICMP rejects Linux maps to an errno: port unreachable is ECONNREFUSED,
/// administratively prohibited is EHOSTUNREACH.
#[test]
fn icmp_port_unreachable_and_admin_prohibited() {
    let lab = Lab::new();
    lab.server_input("-p tcp --dport 80 -j REJECT --reject-with icmp-port-unreachable");
    lab.server_input("-p tcp --dport 81 -j REJECT --reject-with icmp-admin-prohibited");
    assert_failed(&lab.check("http://ok.test/", &[]), "tcp.refused", "connection");
    assert_failed(&lab.check("http://ok.test:81/", &[]), "tcp.address_unreachable", "connection");
}

/// A `prohibit` route fails `connect()` with EACCES: a local policy, `tcp.failed` (see
/// `classify`'s module docs).
#[test]
fn prohibit_route() {
    let lab = Lab::new();
    lab.ns.client_route(&["prohibit", &format!("{SERVER_ALT_ADDR}/32")]).unwrap();
    assert_failed(&lab.check("http://alt.test/", &[]), "tcp.failed", "connection");
}

/// With the client's link down there is no route at all (ENETUNREACH); an IP-literal URL
/// skips DNS and fails in TCP.
#[test]
fn link_down() {
    let lab = Lab::new();
    assert_eq!(lab.check("http://198.51.100.2/", &[])["outcome"], "success");
    lab.ns.set_client_link(false).unwrap();
    assert_failed(&lab.check("http://198.51.100.2/", &[]), "tcp.address_unreachable", "connection");
}

#[test]
fn tls_unknown_ca() {
    let lab = Lab::new();
    let url = format!("https://ok.test:{HTTPS_UNTRUSTED}/");
    assert_failed(&lab.check(&url, &[]), "tls.cert.authority_invalid", "connection");
}

#[test]
fn tls_wrong_name() {
    let lab = Lab::new();
    let url = format!("https://ok.test:{HTTPS_WRONG_NAME}/");
    assert_failed(&lab.check(&url, &[]), "tls.cert.name_invalid", "connection");
}

#[test]
fn tls_expired() {
    let lab = Lab::new();
    let url = format!("https://ok.test:{HTTPS_EXPIRED}/");
    assert_failed(&lab.check(&url, &[]), "tls.cert.date_invalid", "connection");
}

/// The plaintext HTTP server reads the ClientHello as a bad request and answers
/// `HTTP/1.1 400`, which is not a TLS record.
#[test]
fn tls_to_plaintext_port() {
    let lab = Lab::new();
    let url = format!("https://ok.test:{HTTP}/");
    assert_failed(&lab.check(&url, &[]), "tls.protocol.error", "connection");
}

#[test]
fn http_500() {
    let lab = Lab::new();
    for url in ["http://ok.test/status/500", "https://ok.test/status/500"] {
        let outcome = lab.check(url, &[]);
        assert_failed(&outcome, "http.error", "application");
        assert_eq!(outcome["status"], 500, "{url}: {outcome}");
        assert_eq!(outcome["protocol"], "http/1.1", "{url}: {outcome}");
    }
}

#[test]
fn garbage_response() {
    let lab = Lab::new();
    let url = format!("http://ok.test:{GARBAGE}/");
    assert_failed(&lab.check(&url, &[]), "http.response.invalid", "application");
}

/// `collector.nx.test` does not resolve (NXDOMAIN); the fixed address serves a certificate for
/// that name, so the ping succeeds through it. A fixed address whose certificate is not for
/// that name, or none at all, fails.
#[test]
fn ping_uses_fixed_addresses_when_dns_fails() {
    let lab = Lab::new();
    let base = format!("https://collector.nx.test:{HTTPS}");
    let ping = |extra: &[&str]| lab.run_probe("ping", &base, extra)["reachable"].clone();
    assert_eq!(ping(&[]), false);
    assert_eq!(ping(&["--fixed", &format!("{SERVER_ADDR}:{HTTPS}")]), true);
    // Each fixed address is tried in full: a refused one, then one whose certificate is for
    // another name, then the right one.
    let refused = format!("{SERVER_ADDR}:9");
    let wrong_name = format!("{SERVER_ALT_ADDR}:{HTTPS_WRONG_NAME}");
    let untrusted = format!("{SERVER_ADDR}:{HTTPS_UNTRUSTED}");
    let good = format!("{SERVER_ALT_ADDR}:{HTTPS}");
    assert_eq!(ping(&["--fixed", &refused, "--fixed", &wrong_name, "--fixed", &untrusted]), false);
    assert_eq!(ping(&["--fixed", &refused, "--fixed", &wrong_name, "--fixed", &good]), true);
    // A name that resolves needs no fixed address; under a base path the server does not
    // know, the ping gets 400, which is not a pong.
    assert_eq!(lab.run_probe("ping", "https://ok.test", &[])["reachable"], true);
    assert_eq!(lab.run_probe("ping", "https://ok.test/status", &[])["reachable"], false);
}

/// The native Agent, running in the client namespace, records what its `check` classifies:
/// the TLS failure is counted as recorded and sealed into an envelope on disk.
#[test]
fn agent_check_records_the_classified_failure() {
    let lab = Lab::new();
    let data = tempfile::tempdir().unwrap();
    let url = format!("https://ok.test:{HTTPS_EXPIRED}/");
    let data_dir = data.path().to_str().unwrap();
    let outcome = lab.run_probe("agent-check", &url, &["--data-dir", data_dir]);
    assert_failed(&outcome, "tls.cert.date_invalid", "connection");
    assert_eq!(outcome["recorded"], 1, "{outcome}");
    assert_eq!(outcome["sealed_envelopes"], 1, "{outcome}");
}
