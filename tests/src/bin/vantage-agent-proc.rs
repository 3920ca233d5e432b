//! A process that embeds the native agent, for the crash, outage and benchmark harnesses.
//!
//! ```text
//! vantage-agent-proc CONFIG.toml
//! ```
//!
//! Builds an [`Agent`] from the TOML file, grants consent (a grant persisted by an earlier run
//! is restored, with its buffer), prints `ready <pid>`, then reads commands from stdin, one per
//! line, and answers each with one line on stdout (flushed before the next command is read):
//!
//! | command               | what it does                                       | answer                      |
//! |-----------------------|----------------------------------------------------|-----------------------------|
//! | `<n>`                 | records report `n` (host `r<n>.reports.example`)   | `ack <n> <outcome>`         |
//! | `sealed <n>`          | records report `n`, then seals it to disk (`flush(0)`) | `sealed <n> <outcome>`  |
//! | `burst <from> <count>`| records reports `from..from+count`                 | `acked <from> <count> <kept>` |
//! | `flush <ms>`          | [`Agent::flush`] with that timeout                 | `flushed <undelivered>`     |
//! | `stats`               | the agent's accounting                             | `stats {json}`              |
//! | `shutdown`            | [`Agent::shutdown`], then exit 0                   | `bye`                       |
//!
//! Every report is a `tcp.refused` failure of service `checkout`; the number `n` is encoded in
//! the host (`r<n>.reports.example`) so a test recognises each report at the collector, and no
//! two reports coalesce. `<outcome>` is `kept`, `dropped:<reason>`, `not_consented`,
//! `not_sampled` or `invalid`. End of input (the test closed the pipe) is a graceful shutdown.
//! Errors go to stderr with exit status 1.
#![forbid(unsafe_code)]

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use vantage_agent::native::{Agent, Recorded, ReportInput};

/// The host name that carries report number `n`.
fn host_of(n: u64) -> String {
    format!("r{n}.reports.example")
}

fn outcome(r: Recorded) -> String {
    match r {
        Recorded::Kept => "kept".into(),
        Recorded::NotSampled => "not_sampled".into(),
        Recorded::NotConsented => "not_consented".into(),
        Recorded::Dropped(reason) => format!("dropped:{}", reason.as_str()),
        Recorded::Invalid => "invalid".into(),
        other => format!("{other:?}"),
    }
}

fn record(agent: &Agent, n: u64) -> Recorded {
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    agent.record(ReportInput::new("checkout", &host_of(n), &refused))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vantage-agent-proc: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [config] = args.as_slice() else {
        return Err("usage: vantage-agent-proc CONFIG.toml".into());
    };
    // The agent runs on its own runtime thread; this small runtime only drives the async
    // calls (flush, shutdown) of the command loop.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting a runtime: {e}"))?;
    let agent = Agent::from_toml_file(config).map_err(|e| format!("starting the agent: {e}"))?;
    agent.set_consent(true).map_err(|e| format!("granting consent: {e}"))?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut say = |line: String| -> Result<(), String> {
        writeln!(out, "{line}").and_then(|()| out.flush()).map_err(|e| format!("stdout: {e}"))
    };
    say(format!("ready {}", std::process::id()))?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let number = |i: usize| -> Result<u64, String> {
            words
                .get(i)
                .and_then(|w| w.parse().ok())
                .ok_or_else(|| format!("bad command {line:?}: expected a number at word {i}"))
        };
        match words.first().copied() {
            None => {}
            Some("burst") => {
                let (from, count) = (number(1)?, number(2)?);
                let kept =
                    (from..from + count).filter(|&n| record(&agent, n) == Recorded::Kept).count();
                say(format!("acked {from} {count} {kept}"))?;
            }
            Some("sealed") => {
                let n = number(1)?;
                let recorded = outcome(record(&agent, n));
                rt.block_on(agent.flush(Duration::ZERO)).map_err(|e| format!("flush: {e}"))?;
                say(format!("sealed {n} {recorded}"))?;
            }
            Some("flush") => {
                let timeout = Duration::from_millis(number(1)?);
                let done = rt.block_on(agent.flush(timeout)).map_err(|e| format!("flush: {e}"))?;
                say(format!("flushed {}", done.undelivered))?;
            }
            Some("stats") => {
                let s = agent.stats();
                let dropped: serde_json::Map<String, serde_json::Value> =
                    s.dropped.iter().map(|(r, n)| (r.as_str().to_owned(), n.into())).collect();
                let json = serde_json::json!({
                    "recorded": s.recorded,
                    "sealed_envelopes": s.sealed_envelopes,
                    "delivered_envelopes": s.delivered_envelopes,
                    "delivered_failures": s.delivered_failures,
                    "dropped": dropped,
                    "queued_envelopes": agent.queued_envelopes(),
                    "buffered_envelopes": agent.buffered_envelopes(),
                });
                say(format!("stats {json}"))?;
            }
            Some("shutdown") => break,
            Some(_) => {
                let n = number(0)?;
                say(format!("ack {n} {}", outcome(record(&agent, n))))?;
            }
        }
    }
    rt.block_on(agent.shutdown()).map_err(|e| format!("shutdown: {e}"))?;
    say("bye".into())
}
