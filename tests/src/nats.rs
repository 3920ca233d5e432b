//! A real `nats-server` (Debian's, from `.ci/install-nats.sh`) for the fleet-mode tests:
//! JetStream on, a store directory the test owns, client and monitoring ports on 127.0.0.1.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::collector_proc::HttpClient;

/// A `nats-server` child; killed when dropped.
pub struct NatsServer {
    child: Child,
    port: u16,
    monitor: u16,
}

/// A port on 127.0.0.1 that was free a moment ago (for a server started next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port on loopback")
        .port()
}

impl NatsServer {
    /// Starts `nats-server -js -sd <store>` on `port` (clients) and `monitor` (HTTP), and
    /// returns once `/healthz` answers 200. Panics when the binary is missing or it is not
    /// healthy within 15 s.
    pub async fn start(store: &Path, port: u16, monitor: u16) -> NatsServer {
        let bin = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nats-server is not installed: run .ci/install-nats.sh");
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-m", &monitor.to_string()])
            .arg("-js")
            .arg("-sd")
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server starts");
        let nats = NatsServer { child, port, monitor };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(mut c) = HttpClient::connect_plain(nats.monitor_addr()).await
                && let Ok((status, _)) = c.get("/healthz").await
                && status.as_u16() == 200
            {
                return nats;
            }
            assert!(Instant::now() < deadline, "nats-server did not become healthy");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The monitoring endpoint.
    pub fn monitor_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.monitor))
    }

    /// The client endpoint.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr())
    }

    /// Kills the server and waits for it (its store directory stays).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Messages in `stream`, from the monitoring endpoint (`/jsz`).
    pub async fn stream_messages(&self, stream: &str) -> u64 {
        let mut c = HttpClient::connect_plain(self.monitor_addr())
            .await
            .expect("the monitoring endpoint answers");
        let (_, body) = c.get("/jsz?accounts=true&streams=true").await.expect("/jsz answers");
        let jsz: serde_json::Value = serde_json::from_slice(&body).expect("/jsz is JSON");
        jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
            .filter(|s| s["name"] == stream)
            .filter_map(|s| s["state"]["messages"].as_u64())
            .sum()
    }
}

impl NatsServer {
    /// Creates a JetStream stream with `config` (the JSON of `$JS.API.STREAM.CREATE`, e.g.
    /// `{"name":"VANTAGE","subjects":["vantage.batches"],"duplicate_window":200000000}`,
    /// durations in ns) over the plain NATS client protocol, and returns the API's answer.
    /// Panics when the server does not answer within 10 s or answers with an error.
    pub async fn create_stream(&self, config: &serde_json::Value) -> serde_json::Value {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let name = config["name"].as_str().expect("the stream config has a name");
        let body = config.to_string();
        let stream = tokio::net::TcpStream::connect(self.addr()).await.expect("NATS accepts");
        let (rx, mut tx) = stream.into_split();
        let mut rx = BufReader::new(rx);
        let request = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false}}\r\nSUB _INBOX.vt 1\r\n\
             PUB $JS.API.STREAM.CREATE.{name} _INBOX.vt {}\r\n{body}\r\nPING\r\n",
            body.len()
        );
        tx.write_all(request.as_bytes()).await.expect("NATS takes the request");
        let answer = tokio::time::timeout(Duration::from_secs(10), async {
            let mut line = String::new();
            loop {
                line.clear();
                assert!(rx.read_line(&mut line).await.expect("NATS answers") > 0, "NATS closed");
                if line.starts_with("PING") {
                    tx.write_all(b"PONG\r\n").await.expect("PONG");
                }
                assert!(!line.starts_with("-ERR"), "NATS refused: {line}");
                if let Some(rest) = line.strip_prefix("MSG _INBOX.vt ") {
                    let len: usize =
                        rest.split_whitespace().last().and_then(|n| n.parse().ok()).expect("size");
                    let mut payload = vec![0u8; len + 2];
                    rx.read_exact(&mut payload).await.expect("the payload");
                    payload.truncate(len);
                    return payload;
                }
            }
        })
        .await
        .expect("the JetStream API answers within 10 s");
        let answer: serde_json::Value = serde_json::from_slice(&answer).expect("JSON");
        assert!(answer.get("error").is_none(), "stream {name} not created: {answer}");
        answer
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
