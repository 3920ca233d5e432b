#![allow(clippy::unwrap_used)]
//! The C library through a real C compiler: `ffi/tests/c/vantage_test.c` is compiled with the
//! system `gcc` against `ffi/include/vantage.h` and the built `libvantage.so` and
//! `libvantage.a`, and run against a real collector process (TLS for the library's own
//! uploads, the plain listener for the C host's uploads in host-driven mode). What the
//! collector stored is then read from its sled store and checked report by report.
//!
//! Needs gcc (`.ci/install-ffi-tools.sh`). The same program under valgrind: `ffi_valgrind.rs`.

mod ffi_support;

use ffi_support::{Setup, by_host, fields, shared_program, static_program};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_program_with_shared_and_static_library_delivers_every_domain() {
    let s = Setup::new("[delivery]\nbase_backoff_ms = 100\nmax_backoff_ms = 400\n");
    let port = s.plain_port();
    for (name, program) in [("so", shared_program()), ("a", static_program())] {
        s.run(&[], program, "consent-off", &format!("off-{name}"), &[]);
        s.run(&[], program, "bad-args", &format!("bad-{name}"), &[]);
        s.run(&[], program, "domains", &format!("domains-{name}"), &[]);
        let out = s.run(&[], program, "host", &format!("host-{name}"), &[&port]);
        let f = fields(out.lines().last().unwrap());
        assert_eq!(f["delivered"], 3, "{out}");
        assert!(f["posted"] >= 1, "{out}");
    }
    // Nothing from the consent-off runs; the bad-args runs kept one valid failure each on
    // disk at shutdown (posix.example.com), which may or may not have been sent before.
    let reports = s.stored_reports().await;
    let hosts = by_host(&reports);
    let expect = [
        ("posix.example.com", "tcp.refused", "connection", None),
        ("gai.example.com", "dns.name_not_resolved", "dns", None),
        ("curl.example.com", "tls.cert.authority_invalid", "connection", None),
        ("nsurl.example.com", "tcp.timed_out", "connection", None),
        ("java.example.com", "dns.name_not_resolved", "dns", None),
        ("http.example.com", "http.error", "application", Some(503)),
        ("label.example.com", "tls.cert.date_invalid", "connection", None),
        ("host-a.example.com", "tcp.reset", "connection", None),
        ("host-b.example.com", "tcp.reset", "connection", None),
        ("host-c.example.com", "tcp.reset", "connection", None),
    ];
    for (host, error_type, phase, status) in expect {
        let got = hosts.get(host).unwrap_or_else(|| panic!("nothing stored for {host}"));
        let domains_runs: Vec<_> =
            got.iter().filter(|r| host != "posix.example.com" || r.elapsed_ms == 120).collect();
        // One from the .so program and one from the .a program.
        assert_eq!(domains_runs.len(), 2, "{host}: {got:?}");
        for r in domains_runs {
            assert_eq!(r.error_type.as_str(), error_type, "{host}");
            assert_eq!(r.phase.as_str(), phase, "{host}");
            assert_eq!(r.status, status, "{host}");
            assert_eq!(r.service, "checkout");
            assert_eq!(r.count, 1);
        }
    }
    let posix = &hosts["posix.example.com"];
    let from_domains = posix.iter().find(|r| r.elapsed_ms == 120).unwrap();
    assert_eq!(from_domains.network.as_str(), "wifi");
    assert_eq!(hosts["nsurl.example.com"][0].network.as_str(), "cellular");
    // The URL's path and query never reach the collector.
    assert!(reports.iter().all(|r| !r.host.contains('/') && !r.host.contains('?')));
    // host-d was taken by the C host and never answered: not stored.
    assert!(!hosts.contains_key("host-d.example.com"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_c_threads_record_concurrently_and_the_counts_add_up_at_the_collector() {
    // The default queue (65 536) and buffer (1 MiB): records that find the queue full get
    // VANTAGE_ERR_QUEUE_FULL and are counted as dropped; 8 threads recording flat out outrun
    // a loaded machine's debug collector, and then the buffer drops its oldest envelopes,
    // counted too (CI saw 206,941 of 1,223,514 evicted while other jobs held the CPU). Either
    // way every record a thread got VANTAGE_OK for ends delivered xor counted as dropped.
    let s = Setup::new("[delivery]\nbase_backoff_ms = 100\n");
    let out = s.run(&[], shared_program(), "threads", "threads", &["8", "3000"]);
    let f = fields(out.lines().last().unwrap());
    assert!(f["ok"] > 1000, "{out}");
    assert!(f["delivered"] > 1000, "{out}");
    assert_eq!(f["recorded"], f["ok"], "{out}");
    assert!(f["dropped"] >= f["queue_full"], "{out}");
    let evicted = f["dropped"] - f["queue_full"];
    assert_eq!(f["delivered"] + evicted, f["ok"], "delivered xor dropped: {out}");
    let reports = s.stored_reports().await;
    let stored: u64 = reports
        .iter()
        .filter(|r| r.host.starts_with('t') && r.host.ends_with(".example.com"))
        .map(|r| u64::from(r.count))
        .sum();
    eprintln!("{out}stored at the collector (sum of coalesced counts): {stored}");
    assert_eq!(stored, f["delivered"], "every failure the agent counts delivered is stored");
    let threads: std::collections::BTreeSet<&str> =
        reports.iter().map(|r| r.host.as_str()).collect();
    assert_eq!(threads.len(), 8, "{threads:?}");
}

/// A server that recorded once, then forked a worker (as prefork servers do): the child starts
/// an agent of its own, and parent and child record the same 300 failures at the same moment.
/// Both sets reach the collector whole. The child inherits the recording thread's report-id
/// randomness; had it drawn from it, its ids would repeat the parent's (same millisecond, same
/// random bytes) and the collector, which keeps one report per id, would drop them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_child_with_its_own_agent_delivers_reports_the_parents_ids_do_not_shadow() {
    let s = Setup::new("[delivery]\nbase_backoff_ms = 100\n");
    let n = 300;
    let out = s.run(&[], shared_program(), "fork", "fork", &[&n.to_string()]);
    assert!(out.contains("ok fork child delivered=300"), "{out}");
    assert!(out.contains("ok fork parent delivered=301"), "{out}");
    let reports = s.stored_reports().await;
    let hosts = by_host(&reports);
    let ids: std::collections::HashSet<_> = reports.iter().map(|r| r.id).collect();
    assert_eq!(ids.len(), reports.len(), "a report id stored twice");
    let short: Vec<String> = (0..n)
        .map(|i| format!("f-{i}.example.com"))
        .filter(|host| {
            hosts.get(host.as_str()).map_or(0, |r| r.iter().map(|r| r.count).sum::<u32>()) != 2
        })
        .collect();
    assert!(
        short.is_empty(),
        "{} of {n} hosts without one report from the parent and one from the child: {:?}",
        short.len(),
        &short[..short.len().min(5)]
    );
    assert_eq!(hosts["before-fork.example.com"].len(), 1);
}

/// Delivery that cannot succeed: a collector serving a self-signed CA:TRUE certificate (as
/// `openssl req -x509` makes) and a refused port. The C stats, the message and the log
/// callback name the cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_stats_and_log_callback_name_why_delivery_fails() {
    use vantage_tests::collector_proc::{CollectorConfig, CollectorProc, write_collector_key};
    use vantage_tests::tls::TestCert;
    let s = Setup::new("[delivery]\nbase_backoff_ms = 100\nmax_backoff_ms = 400\n");
    let tmp = tempfile::tempdir().unwrap();
    let cdir = tmp.path().join("ca-collector");
    std::fs::create_dir_all(&cdir).unwrap();
    write_collector_key(&cdir, [7; 32]);
    let cert = TestCert::self_signed_ca(&["127.0.0.1"]);
    cert.write_to(&cdir);
    let config = CollectorConfig { tls: true, plain: false, ..CollectorConfig::default() };
    let collector = CollectorProc::start(&cdir, &config.to_toml());
    let url = format!("https://127.0.0.1:{}", collector.tls_addr().unwrap().port());
    let ca_config = s.config_for("ca-true", &url, &cert.cert_pem);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let refused_config = s.config_for("refused", &format!("https://{closed}"), &cert.cert_pem);
    for (name, program) in [("so", shared_program()), ("a", static_program())] {
        let out = s.run_with(
            Some(&ca_config),
            &[],
            program,
            "diagnose",
            &format!("ca-{name}"),
            &["tls.cert.invalid"],
        );
        assert!(out.contains("CaUsedAsEndEntity"), "{out}");
        let out = s.run_with(
            Some(&refused_config),
            &[],
            program,
            "diagnose",
            &format!("refused-{name}"),
            &["tcp.refused"],
        );
        assert!(out.contains("refused"), "{out}");
    }
}
