//! Shared by the C library tests (`ffi_c.rs`, `ffi_valgrind.rs`): builds the C test program
//! against the shared and the static library, starts a real collector, runs the program,
//! and reads what the collector stored.

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use vantage_agent::report::UnixMillis;
use vantage_collector::model::StoredReport;
use vantage_collector::store::{Store, StoreConfig};
use vantage_tests::collector_proc::{
    CollectorConfig, CollectorProc, write_collector_key, write_tls,
};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// The profile directory this test runs from (`<target>/debug`) and its profile name.
pub fn profile_dir() -> (PathBuf, String) {
    let exe = std::env::current_exe().unwrap();
    let mut dir = exe.parent().unwrap();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent().unwrap();
    }
    let profile = match dir.file_name().and_then(|n| n.to_str()).unwrap() {
        "debug" => "dev".to_owned(),
        other => other.to_owned(),
    };
    (dir.to_owned(), profile)
}

/// A `cargo` command for a nested build, without the `CARGO_*` variables cargo set for this
/// test binary: build scripts that watch them (ring's `rerun-if-env-changed=CARGO_PKG_NAME`,
/// `CARGO_MANIFEST_DIR`, ...) would otherwise rebuild in the nested run and again in the next
/// `cargo test`.
pub fn nested_cargo_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = matches!(key, "CARGO" | "CARGO_HOME" | "CARGO_TARGET_DIR" | "CARGO_TERM_COLOR");
        if (key.starts_with("CARGO_") && !keep) || key == "OUT_DIR" {
            cmd.env_remove(key);
        }
    }
    cmd
}

pub fn run_checked(cmd: &mut Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Builds libvantage (cargo build of vantage-ffi, in this profile and target dir) once per
/// process; returns the directory holding `libvantage.so` and `libvantage.a`.
fn lib_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let started = std::time::Instant::now();
        let (dir, profile) = profile_dir();
        let target = dir.parent().unwrap();
        run_checked(
            nested_cargo_env(&mut Command::new(env!("CARGO")))
                // The C library's own features (native-base only: no hickory, no psl), which
                // its tests check; not the workspace's all-features set.
                .args(["build", "--quiet", "-p", "vantage-ffi", "--lib", "--profile", &profile])
                .arg("--target-dir")
                .arg(target)
                .current_dir(root()),
            "cargo build -p vantage-ffi",
        );
        eprintln!("cargo build -p vantage-ffi: {:?}", started.elapsed());
        dir
    })
}

/// Compiles `ffi/tests/c/vantage_test.c` with gcc (warnings are errors) into `name`.
fn compile(name: &str, link: &[&str]) -> PathBuf {
    let started = std::time::Instant::now();
    let out_dir = lib_dir().join("ffi-c-test");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join(name);
    let mut cmd = Command::new("gcc");
    cmd.args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-O1", "-g"])
        .arg("-I")
        .arg(root().join("ffi/include"))
        .arg(root().join("ffi/tests/c/vantage_test.c"))
        .arg("-o")
        .arg(&out)
        .args(link);
    run_checked(&mut cmd, &format!("gcc {}", out.display()));
    eprintln!("gcc {name}: {:?}", started.elapsed());
    out
}

/// The C test program linked against `libvantage.so` (built once per process).
pub fn shared_program() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = lib_dir().display().to_string();
        compile(
            "vantage_test_so",
            &[&format!("-L{dir}"), "-lvantage", &format!("-Wl,-rpath,{dir}")],
        )
    })
}

/// The C test program linked against `libvantage.a` (built once per process).
pub fn static_program() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let archive = lib_dir().join("libvantage.a").display().to_string();
        compile("vantage_test_a", &[&archive, "-lpthread", "-ldl", "-lm"])
    })
}

/// A running collector (TLS + plain) and an agent config file that points at it.
pub struct Setup {
    collector: CollectorProc,
    config_file: PathBuf,
    tmp: tempfile::TempDir,
}

impl Setup {
    pub fn new(extra_toml: &str) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let cdir = tmp.path().join("collector");
        std::fs::create_dir_all(&cdir).unwrap();
        let key = write_collector_key(&cdir, [7; 32]);
        let (ca, _leaf) = write_tls(&cdir, &["127.0.0.1"]);
        let config = CollectorConfig { tls: true, unlimited: true, ..CollectorConfig::default() };
        let collector = CollectorProc::start(&cdir, &config.to_toml());
        let ca_file = tmp.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        let agent_toml = format!(
            "data_dir = \"/nonexistent/replaced-by-the-c-argument\"\n\
             collector_key = \"{key}\"\n\
             extra_ca_files = [\"{ca}\"]\n\
             [app]\nid = \"com.example.ctest\"\nversion = \"1.0\"\nplatform = \"linux\"\n\
             [[services]]\nid = \"checkout\"\nhosts = [\"api.example.com\"]\n\
             [[collectors]]\nurl = \"https://127.0.0.1:{port}\"\n\
             [scope]\nenabled = false\n{extra_toml}",
            key = key.public_key(),
            ca = ca_file.display(),
            port = collector.tls_addr().unwrap().port(),
        );
        let config_file = tmp.path().join("agent.toml");
        std::fs::write(&config_file, agent_toml).unwrap();
        Setup { collector, config_file, tmp }
    }

    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Runs `program mode config data_dir args...` (under `wrapper` when given).
    pub fn run(
        &self,
        wrapper: &[&str],
        program: &Path,
        mode: &str,
        dir: &str,
        args: &[&str],
    ) -> String {
        self.run_with(None, wrapper, program, mode, dir, args)
    }

    /// A copy of the agent config with the collector URL and CA file replaced.
    #[allow(dead_code)] // not every test file that shares this module uses it
    pub fn config_for(&self, name: &str, url: &str, ca_pem: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.config_file).unwrap();
        let ca_file = self.tmp.path().join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, ca_pem).unwrap();
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("url = ") {
                    format!("url = \"{url}\"")
                } else if l.starts_with("extra_ca_files") {
                    format!("extra_ca_files = [\"{}\"]", ca_file.display())
                } else {
                    l.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let path = self.tmp.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }

    /// [`Setup::run`] with another config file (`None`: the setup's own).
    pub fn run_with(
        &self,
        config: Option<&Path>,
        wrapper: &[&str],
        program: &Path,
        mode: &str,
        dir: &str,
        args: &[&str],
    ) -> String {
        let (cmd, pre) = match wrapper.split_first() {
            Some((first, rest)) => (PathBuf::from(first), rest.to_vec()),
            None => (program.to_owned(), Vec::new()),
        };
        let mut c = Command::new(cmd);
        c.args(pre);
        if !wrapper.is_empty() {
            c.arg(program);
        }
        c.arg(mode).arg(config.unwrap_or(&self.config_file)).arg(self.data_dir(dir)).args(args);
        let started = std::time::Instant::now();
        let out: Output = c.stdin(Stdio::null()).output().unwrap();
        eprintln!("{} {mode}: {:?}", program.display(), started.elapsed());
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{} {mode} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}\ncollector:\n{}",
            program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.collector.stderr()
        );
        assert!(stdout.contains(&format!("ok {mode}")), "{mode}: {stdout}");
        stdout
    }

    pub fn plain_port(&self) -> String {
        self.collector.plain_addr().unwrap().port().to_string()
    }

    /// Stops the collector (SIGTERM: its store is flushed and closed) and reads every report.
    pub async fn stored_reports(self) -> Vec<StoredReport> {
        let path = self.collector.store_path();
        let status = self.collector.terminate();
        assert!(status.success(), "collector exit: {status}");
        let store = Store::open(StoreConfig::new(path)).unwrap();
        store.scan_reports(UnixMillis(0), UnixMillis(u64::MAX)).map(Result::unwrap).collect()
    }
}

/// `key=value` pairs of an `ok ...` line.
pub fn fields(line: &str) -> BTreeMap<String, u64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
        .collect()
}

pub fn by_host(reports: &[StoredReport]) -> BTreeMap<&str, Vec<&StoredReport>> {
    let mut map: BTreeMap<&str, Vec<&StoredReport>> = BTreeMap::new();
    for r in reports {
        map.entry(r.host.as_str()).or_default().push(r);
    }
    map
}
