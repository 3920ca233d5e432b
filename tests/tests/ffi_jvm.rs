#![allow(clippy::unwrap_used)]
//! The JVM binding (`ffi/java`, the JNI glue of `ffi/src/jvm.rs`) on a real JVM: `.ci/build-jvm.sh`
//! builds libvantage with the `jni` feature and `vantage.jar` with javac and jar, and the test
//! program `ffi/java/src/test/java/dev/vantage/test/JvmTest.java` runs under
//! `java -Xcheck:jni` (any JNI misuse warning fails the test) against a real collector process.
//! What the collector stored is then read from its sled store and checked report by report.
//!
//! Needs a JDK (`.ci/install-ffi-tools.sh`: openjdk-17-jdk-headless).

mod ffi_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ffi_support::{Setup, by_host, fields, nested_cargo_env, profile_dir, root, run_checked};

/// Builds the library and the jars once per process (`.ci/build-jvm.sh --with-tests`, this
/// test's profile and target dir); returns the output directory.
fn jvm_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let started = std::time::Instant::now();
        let (dir, profile) = profile_dir();
        let out = dir.join("ffi-jvm-test");
        run_checked(
            nested_cargo_env(&mut Command::new("bash"))
                .arg(root().join(".ci/build-jvm.sh"))
                .args(["--profile", &profile, "--with-tests", "--out"])
                .arg(&out)
                .env("CARGO_TARGET_DIR", dir.parent().unwrap())
                .env("CARGO", env!("CARGO")),
            ".ci/build-jvm.sh",
        );
        eprintln!(".ci/build-jvm.sh: {:?}", started.elapsed());
        out
    })
}

/// `java -Xcheck:jni -Dvantage.library=... -cp vantage.jar:test-classes`, for `Setup::run`.
fn java() -> Vec<String> {
    let dir = jvm_dir();
    vec![
        "java".into(),
        "-Xcheck:jni".into(),
        format!("-Dvantage.library={}", dir.join("libvantage.so").display()),
        "-cp".into(),
        format!("{}:{}", dir.join("vantage.jar").display(), dir.join("test-classes").display()),
    ]
}

const PROGRAM: &str = "dev.vantage.test.JvmTest";

fn run(s: &Setup, jvm_args: &[&str], mode: &str, dir: &str, args: &[&str]) -> String {
    let mut java = java();
    java.splice(1..1, jvm_args.iter().map(|a| (*a).to_owned()));
    let wrapper: Vec<&str> = java.iter().map(String::as_str).collect();
    let out = s.run(&wrapper, Path::new(PROGRAM), mode, dir, args);
    // -Xcheck:jni reports misuse (local reference overflow, a pending exception ignored, a
    // wrong type) as warnings on stdout.
    assert!(!out.contains("WARNING"), "-Xcheck:jni warned in {mode}:\n{out}");
    eprintln!("{}", out.trim_end());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jvm_program_classifies_real_exceptions_and_sends_nothing_without_consent() {
    let s = Setup::new("[delivery]\nbase_backoff_ms = 100\nmax_backoff_ms = 400\n");
    run(&s, &[], "consent-off", "off", &[]);
    run(&s, &[], "bad-args", "bad", &[]);
    run(&s, &[], "classify", "classify", &[]);
    let reports = s.stored_reports().await;
    let hosts = by_host(&reports);
    assert!(
        !hosts.keys().any(|h| h.starts_with("off.")),
        "a consent-off record reached the collector: {hosts:?}"
    );
    assert!(!hosts.contains_key("x.example.com"), "a bad call was sent");
    let expect = [
        ("refused.example.com", "tcp.refused", None, 3),
        ("wrapped.example.com", "tcp.refused", None, 4),
        ("httpclient.example.com", "tcp.refused", None, 5),
        ("timeout.example.com", "tcp.timed_out", None, 100),
        ("http.example.com", "http.error", Some(503), 6),
        ("unknown.example.com", "unknown", None, 7),
        ("cycle.example.com", "tcp.refused", None, 8),
        ("deep.example.com", "unknown", None, 9),
    ];
    for (host, error_type, status, elapsed_ms) in expect {
        let got = hosts.get(host).unwrap_or_else(|| panic!("nothing stored for {host}"));
        assert_eq!(got.len(), 1, "{host}: {got:?}");
        let r = got[0];
        assert_eq!(r.error_type.as_str(), error_type, "{host}");
        assert_eq!(r.status, status, "{host}");
        assert_eq!(r.elapsed_ms, elapsed_ms, "{host}");
        assert_eq!(r.service, "checkout");
        assert_eq!(r.count, 1);
    }
    assert_eq!(reports.len(), expect.len(), "{reports:?}");
    // The URL's path and query never reach the collector.
    assert!(reports.iter().all(|r| !r.host.contains('/') && !r.host.contains('?')));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_jvm_threads_record_at_once_and_close_leaves_no_thread_or_global_ref() {
    let s = Setup::new("[delivery]\nbase_backoff_ms = 100\n");
    // -Xint: the JVM's count of JNI global references also counts the JIT compiler's, which
    // come and go while a compilation is in flight (measured: +1 now and then, back at the next
    // reading); the interpreter keeps the count exact, so "as many as before" can be asserted.
    let out = run(&s, &["-Xint"], "threads", "threads", &["8", "2000"]);
    let f = fields(out.lines().find(|l| l.starts_with("ok threads")).unwrap());
    assert!(f["ok"] > 1000, "{out}");
    assert_eq!(f["recorded"], f["ok"], "{out}");
    assert_eq!(f["delivered"], f["ok"], "{out}");
    assert_eq!(f["dropped"], f["queue_full"], "{out}");
    assert_eq!(f["global_refs_before"], f["global_refs_open"], "{out}");
    assert_eq!(f["global_refs_before"], f["global_refs_after"], "{out}");
    let reports = s.stored_reports().await;
    let stored: u64 = reports
        .iter()
        .filter(|r| r.host.starts_with('t') && r.host.ends_with(".example.com"))
        .map(|r| u64::from(r.count))
        .sum();
    assert_eq!(stored, f["ok"], "every failure a Java thread got ACCEPTED for is stored");
    let threads: std::collections::BTreeSet<&str> =
        reports.iter().filter(|r| r.host.starts_with('t')).map(|r| r.host.as_str()).collect();
    assert_eq!(threads.len(), 8, "{threads:?}");
}
