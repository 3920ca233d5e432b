//! Network namespaces with veth pairs for fault injection; torn down on drop.
//!
//! [`NetnsPair::new`] creates a client and a server namespace joined by a veth pair:
//!
//! ```text
//!  client netns                               server netns
//!  198.51.100.1/24  ── veth (vc<pid>x<n>) ── (vs<pid>x<n>) ── 198.51.100.2/24 (+ .3/24)
//!  /etc/netns/<client>/resolv.conf: nameserver 198.51.100.2, options timeout:1 attempts:1
//! ```
//!
//! Names include the process id and a counter, so tests in one process and concurrent test
//! processes never collide. Faults are injected with the helpers ([`NetnsPair::server_iptables`],
//! [`NetnsPair::client_route`], [`NetnsPair::set_client_link`]); the host's own firewall and
//! routes are never touched. Processes started with [`NetnsPair::spawn`] are killed
//! before the namespaces are deleted.
//!
//! Needs root and `ip`/`iptables` (`.ci/install-netns-tools.sh`); without them
//! [`NetnsPair::new`] returns an error that says what is missing, and the tests fail on it.

use std::ffi::OsStr;
use std::fmt;
use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Per-process counter that makes namespace and interface names unique.
static NEXT: AtomicU32 = AtomicU32::new(0);

/// The client's address.
pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// The server's address; the DNS server listens here.
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// A second server address on the same interface, for faults that must not hit DNS.
pub const SERVER_ALT_ADDR: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);

/// Why the namespaces could not be set up or a command in them failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum NetnsError {
    /// A command could not be started at all (missing binary).
    Spawn {
        /// The command line.
        command: String,
        /// The error from `exec`.
        source: io::Error,
    },
    /// A command ran and failed.
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its standard error.
        stderr: String,
    },
    /// Writing the namespace's resolv.conf failed.
    ResolvConf {
        /// The file.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

impl fmt::Display for NetnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsError::Spawn { command, source } => write!(
                f,
                "cannot run `{command}` ({source}); are iproute2 and iptables installed \
                 (.ci/install-netns-tools.sh)?"
            ),
            NetnsError::Failed { command, status, stderr } => write!(
                f,
                "`{command}` failed with {status}: {stderr} (network namespaces need root)"
            ),
            NetnsError::ResolvConf { path, source } => {
                write!(f, "cannot write {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for NetnsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            NetnsError::Spawn { source, .. } | NetnsError::ResolvConf { source, .. } => {
                Some(source)
            }
            NetnsError::Failed { .. } => None,
        }
    }
}

/// A client and a server network namespace joined by a veth pair.
pub struct NetnsPair {
    /// The client namespace's name.
    pub client: String,
    /// The server namespace's name.
    pub server: String,
    /// The client end of the veth pair.
    pub client_if: String,
    /// The server end of the veth pair.
    pub server_if: String,
    children: Vec<Child>,
    created: Vec<String>,
    etc_dir: Option<PathBuf>,
}

/// The client's resolver options as [`NetnsPair::new`] writes them: one query, given up after
/// one second (what the resolver-timeout tests measure against).
pub const DEFAULT_RESOLVER_OPTIONS: &str = "timeout:1 attempts:1";

impl NetnsPair {
    /// Creates both namespaces, the veth pair, the addresses ([`CLIENT_ADDR`], [`SERVER_ADDR`],
    /// [`SERVER_ALT_ADDR`]) and the client's resolv.conf pointing at [`SERVER_ADDR`] with
    /// [`DEFAULT_RESOLVER_OPTIONS`].
    pub fn new() -> Result<NetnsPair, NetnsError> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        // Interface names must fit IFNAMSIZ-1 = 15 bytes: "vc" + pid (<= 7 digits) + "x" + n.
        let mut pair = NetnsPair {
            client: format!("vantage-c-{pid}-{n}"),
            server: format!("vantage-s-{pid}-{n}"),
            client_if: format!("vc{pid}x{n}"),
            server_if: format!("vs{pid}x{n}"),
            children: Vec::new(),
            created: Vec::new(),
            etc_dir: None,
        };
        debug_assert!(pair.client_if.len() <= 15 && pair.server_if.len() <= 15);
        // On any error below, Drop removes what was created so far.
        for ns in [pair.client.clone(), pair.server.clone()] {
            run("ip", ["netns", "add", &ns])?;
            pair.created.push(ns);
        }
        let (c, s) = (pair.client.clone(), pair.server.clone());
        let (cif, sif) = (pair.client_if.clone(), pair.server_if.clone());
        run("ip", ["link", "add", &cif, "type", "veth", "peer", "name", &sif])?;
        run("ip", ["link", "set", &cif, "netns", &c])?;
        run("ip", ["link", "set", &sif, "netns", &s])?;
        run("ip", ["-n", &c, "addr", "add", &format!("{CLIENT_ADDR}/24"), "dev", &cif])?;
        run("ip", ["-n", &s, "addr", "add", &format!("{SERVER_ADDR}/24"), "dev", &sif])?;
        run("ip", ["-n", &s, "addr", "add", &format!("{SERVER_ALT_ADDR}/24"), "dev", &sif])?;
        for (ns, ifname) in [(&c, &cif), (&s, &sif)] {
            run("ip", ["-n", ns, "link", "set", "lo", "up"])?;
            run("ip", ["-n", ns, "link", "set", ifname, "up"])?;
        }
        let dir = PathBuf::from("/etc/netns").join(&c);
        let path = dir.join("resolv.conf");
        std::fs::create_dir_all(&dir)
            .map_err(|source| NetnsError::ResolvConf { path: path.clone(), source })?;
        pair.etc_dir = Some(dir);
        pair.set_resolver_options(DEFAULT_RESOLVER_OPTIONS)?;
        Ok(pair)
    }

    /// Replaces the `options` line of the client's resolv.conf ([`DEFAULT_RESOLVER_OPTIONS`] as
    /// created): for tests that need DNS to answer even when a loaded machine delays a reply
    /// past one second, while those that measure the resolver's timeout keep the default.
    pub fn set_resolver_options(&self, options: &str) -> Result<(), NetnsError> {
        let path = PathBuf::from("/etc/netns").join(&self.client).join("resolv.conf");
        let conf = format!("nameserver {SERVER_ADDR}\noptions {options}\n");
        std::fs::write(&path, conf).map_err(|source| NetnsError::ResolvConf { path, source })
    }

    /// A command that runs `program` inside the client namespace (with its resolv.conf).
    pub fn client_command(&self, program: impl AsRef<OsStr>) -> Command {
        netns_command(&self.client, program)
    }

    /// A command that runs `program` inside the server namespace.
    pub fn server_command(&self, program: impl AsRef<OsStr>) -> Command {
        netns_command(&self.server, program)
    }

    /// Starts `command` (from [`NetnsPair::server_command`] or [`NetnsPair::client_command`])
    /// with piped stdout; it is killed when the pair is dropped.
    pub fn spawn(&mut self, mut command: Command) -> io::Result<&mut Child> {
        let child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn()?;
        self.children.push(child);
        Ok(self.children.last_mut().expect("pushed just now"))
    }

    /// Appends an iptables rule in the server namespace: `iptables <args>`.
    pub fn server_iptables<S: AsRef<OsStr>>(
        &self,
        args: impl IntoIterator<Item = S>,
    ) -> Result<(), NetnsError> {
        let mut all: Vec<&OsStr> = vec!["netns".as_ref(), "exec".as_ref(), self.server.as_ref()];
        all.push("iptables".as_ref());
        let args: Vec<S> = args.into_iter().collect();
        all.extend(args.iter().map(AsRef::as_ref));
        run("ip", all)
    }

    /// Adds a route in the client namespace: `ip route add <args>` (e.g. `unreachable
    /// 198.51.100.3/32`, `blackhole 198.51.100.3/32`).
    pub fn client_route(&self, args: &[&str]) -> Result<(), NetnsError> {
        let mut all = vec!["-n", &self.client, "route", "add"];
        all.extend_from_slice(args);
        run("ip", all)
    }

    /// Sets the client's veth end up or down.
    pub fn set_client_link(&self, up: bool) -> Result<(), NetnsError> {
        run(
            "ip",
            ["-n", &self.client, "link", "set", &self.client_if, if up { "up" } else { "down" }],
        )
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Deleting a namespace destroys the veth pair with it.
        for ns in &self.created {
            let _ = run("ip", ["netns", "del", ns]);
        }
        if let Some(dir) = &self.etc_dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn netns_command(ns: &str, program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("ip");
    command.args(["netns", "exec", ns]).arg(program);
    command
}

/// Runs `program args` to completion; an error unless it exits with 0.
pub fn run<S: AsRef<OsStr>>(
    program: &str,
    args: impl IntoIterator<Item = S>,
) -> Result<(), NetnsError> {
    let args: Vec<S> = args.into_iter().collect();
    let line = std::iter::once(program.to_owned())
        .chain(args.iter().map(|a| a.as_ref().to_string_lossy().into_owned()))
        .collect::<Vec<_>>()
        .join(" ");
    let output: Output = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| NetnsError::Spawn { command: line.clone(), source })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(NetnsError::Failed {
            command: line,
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        })
    }
}
