#![allow(clippy::unwrap_used)]
//! The C test program (`ffi/tests/c/vantage_test.c`, linked against `libvantage.so`) under
//! valgrind memcheck against a real collector: no leak (definite, indirect or possible), no
//! invalid read or write, no use of uninitialised memory (`--error-exitcode`). The suppressions
//! (`ffi/tests/c/valgrind.supp`) cover the TLS blocks of sled's global threads, which live for
//! the whole process by design, and memcheck's view of ring's AES-GCM tags inside rustls
//! records (the assembly reads an unused tail of the key schedule).
//!
//! Needs gcc and valgrind (`.ci/install-ffi-tools.sh`).

mod ffi_support;

use ffi_support::{Setup, by_host, root, shared_program};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_program_under_valgrind_has_no_leaks_and_no_invalid_access() {
    let program = shared_program();
    let s = Setup::new("[delivery]\nbase_backoff_ms = 100\nmax_backoff_ms = 400\n");
    let port = s.plain_port();
    let host_args = [port.as_str()];
    let suppressions =
        format!("--suppressions={}", root().join("ffi/tests/c/valgrind.supp").display());
    let valgrind = [
        "valgrind",
        "--tool=memcheck",
        "--error-exitcode=99",
        "--leak-check=full",
        "--show-leak-kinds=definite,indirect,possible",
        "--errors-for-leak-kinds=definite,indirect,possible",
        "--quiet",
        "--num-callers=40",
        &suppressions,
    ];
    // Four separate processes, one data dir each: run side by side.
    std::thread::scope(|scope| {
        let runs: [(&str, &str, &[&str]); 4] = [
            ("bad-args", "bad", &[]),
            ("consent-off", "off", &[]),
            ("domains", "domains", &[]),
            ("host", "host", &host_args),
        ];
        let (setup, valgrind) = (&s, &valgrind);
        let handles: Vec<_> = runs
            .into_iter()
            .map(|(mode, dir, args)| {
                scope.spawn(move || setup.run(valgrind, program, mode, dir, args))
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    let reports = s.stored_reports().await;
    let hosts = by_host(&reports);
    for host in ["gai.example.com", "host-a.example.com", "label.example.com"] {
        assert_eq!(hosts.get(host).map(Vec::len), Some(1), "{host}");
    }
}
