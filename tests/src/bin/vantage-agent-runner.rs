//! Runs a native `Agent` from a TOML config and drives it with one command per stdin line, so
//! process-level tests (kill -9, restarts, last-mile outages) can work with a real process.
//!
//! Usage: `vantage-agent-runner <config.toml>`. Every command answers exactly one stdout line:
//!
//! | command                                        | answer                                  |
//! |------------------------------------------------|-----------------------------------------|
//! | `consent true` / `consent false`               | `ok` or `error <message>`               |
//! | `record <service> <host> <type> [elapsed_ms]`  | `kept`, `not_consented`, `dropped queue_full`, `invalid`, ... |
//! | `success <service> <host>`                     | `ok`                                    |
//! | `flush <timeout_ms>`                           | `flushed undelivered=<n>` (sealed and on disk first) |
//! | `stats`                                        | `stats recorded=<n> sealed=<n> delivered_envelopes=<n> delivered_failures=<n> dropped=<reason>:<n>,...` |
//! | `buffered`                                     | `buffered <envelopes>`                  |
//! | `key`                                          | `key <hex>` or `key none`               |
//! | `shutdown`                                     | `ok`, then the process exits 0          |
//!
//! `<type>` is a NEL label (`tcp.refused`, `dns.name_not_resolved`, `http.error`, ...). At
//! start it prints `ready` once the agent runs (after restoring a persisted grant).
#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::time::Duration;

use vantage_agent::ErrorType;
use vantage_agent::native::{Agent, AgentConfig, Recorded, ReportInput};

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn recorded(r: Recorded) -> String {
    match r {
        Recorded::Kept => "kept".into(),
        Recorded::NotSampled => "not_sampled".into(),
        Recorded::NotConsented => "not_consented".into(),
        Recorded::Dropped(reason) => format!("dropped {reason}"),
        Recorded::Invalid => "invalid".into(),
        other => format!("{other:?}"),
    }
}

async fn command(agent: &Agent, line: &str) -> (String, bool) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let answer = match words.as_slice() {
        ["consent", value] => match value.parse::<bool>() {
            Ok(granted) => match agent.set_consent(granted) {
                Ok(()) => "ok".into(),
                Err(e) => format!("error {e}"),
            },
            Err(_) => "error consent takes true or false".into(),
        },
        ["record", service, host, label, rest @ ..] => match ErrorType::from_label(label) {
            Ok(t) => {
                let elapsed = rest.first().and_then(|e| e.parse().ok()).unwrap_or(0);
                recorded(agent.record(ReportInput::new(service, host, &t).elapsed_ms(elapsed)))
            }
            Err(e) => format!("error {e}"),
        },
        ["success", service, host] => {
            agent.count_success(service, host);
            "ok".into()
        }
        ["flush", ms] => match ms.parse() {
            Ok(ms) => match agent.flush(Duration::from_millis(ms)).await {
                Ok(out) => format!("flushed undelivered={}", out.undelivered),
                Err(e) => format!("error {e}"),
            },
            Err(_) => "error flush takes a timeout in ms".into(),
        },
        ["stats"] => {
            let s = agent.stats();
            let dropped: Vec<String> = s.dropped.iter().map(|(r, n)| format!("{r}:{n}")).collect();
            format!(
                "stats recorded={} sealed={} delivered_envelopes={} delivered_failures={} dropped={}",
                s.recorded,
                s.sealed_envelopes,
                s.delivered_envelopes,
                s.delivered_failures,
                dropped.join(",")
            )
        }
        ["buffered"] => format!("buffered {}", agent.buffered_envelopes()),
        ["key"] => match agent.agent_key() {
            Some(k) => format!("key {k}"),
            None => "key none".into(),
        },
        ["shutdown"] => {
            return match agent.shutdown().await {
                Ok(()) => ("ok".into(), true),
                Err(e) => (format!("error {e}"), true),
            };
        }
        _ => format!("error unknown command {line:?}"),
    };
    (answer, false)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: vantage-agent-runner <config.toml>");
        std::process::exit(2);
    };
    let agent = match AgentConfig::from_toml_file(&path)
        .map_err(vantage_agent::native::AgentError::from)
        .and_then(|c| Agent::start(c, None))
    {
        Ok(agent) => agent,
        Err(e) => {
            eprintln!("vantage-agent-runner: {e}");
            std::process::exit(1);
        }
    };
    say("ready");
    // stdin is read on a plain thread (tokio's stdin needs a feature this crate does not use).
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = lines.recv().await {
        if line.trim().is_empty() {
            continue;
        }
        let (answer, exit) = command(&agent, line.trim()).await;
        say(&answer);
        if exit {
            return;
        }
    }
    let _ = agent.shutdown().await;
}
