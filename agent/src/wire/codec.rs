//! CBOR encoding of reports and batches (schema: `docs/protocol.md`).
//!
//! Decoding is strict about what it knows (types, sizes, limits, validity of every value) and
//! ignores unknown integer keys, so a v1 agent can add optional fields that older v1 collectors
//! skip. Unknown enum codes are refused, except error types, whose labels travel as text and
//! become `ErrorType::Other`, and drop reasons, which become `DropReason::Other`.

use ciborium::Value;

use super::cbor::{DecodeError, Fields, Item, Path, Shape, as_uint, map, parse, to_vec, uint};
use super::{AgentPublicKey, MAX_REPORTS, MAX_TARGETS};
use crate::drops::{DropCounts, DropReason};
use crate::report::{
    AppInfo, Batch, Host, Protocol, Report, ReportError, ReportId, SampleRates, ServiceId,
    TargetCounts, UnixMillis, app_field, check_status,
};
use crate::taxonomy::{ErrorType, NetworkType, Phase, Scope};

/// A batch: a map of at most 64 entries (the v1 fields and room for optional ones a later
/// v1 agent may add), at most 64 Ki CBOR items in all (every legitimate batch of up to
/// [`MAX_REPORTS`] reports has fewer; a 64 KiB envelope cannot carry more heads anyway).
const BATCH_SHAPE: Shape = Shape { max_entries: 64, max_items: 64 * 1024 };
/// A report alone (agent and collector buffers).
const REPORT_SHAPE: Shape = Shape { max_entries: 64, max_items: 1024 };

fn phase_code(p: Phase) -> u8 {
    match p {
        Phase::Dns => 0,
        Phase::Connection => 1,
        Phase::Application => 2,
    }
}

impl Report {
    pub(crate) fn to_value(&self) -> Value {
        let mut e = vec![
            (1, Value::Bytes(self.id.0.to_vec())),
            (2, uint(self.observed_at.0)),
            (3, Value::Text(self.service.as_str().to_owned())),
            (4, Value::Text(self.host.as_str().to_owned())),
            (5, uint(phase_code(self.phase))),
            (6, Value::Text(self.error_type.as_str().to_owned())),
            (7, uint(self.elapsed_ms)),
            (8, uint(self.protocol.code())),
        ];
        if let Some(status) = self.status {
            e.push((9, uint(status)));
        }
        e.push((10, uint(self.network.code())));
        e.push((11, uint(self.scope.code())));
        e.push((12, uint(self.count)));
        map(e)
    }

    pub(crate) fn from_item(what: Path<'_>, v: Item<'_>) -> Result<Report, DecodeError> {
        Report::from_fields(what, Fields::new(what, v)?)
    }

    fn from_fields(what: Path<'_>, mut f: Fields<'_, '_>) -> Result<Report, DecodeError> {
        let invalid =
            |field: &str, e: ReportError| DecodeError::new(what.field(field), e.to_string());
        let id = ReportId(f.bytes::<16>(1, "id")?);
        let observed_at = UnixMillis(f.uint(2, "observed_at")?);
        let service: ServiceId =
            f.text(3, "service")?.parse().map_err(|e| invalid("service", e))?;
        let host = Host::parse(f.text(4, "host")?).map_err(|e| invalid("host", e))?;
        let phase = match f.uint(5, "phase")? {
            0 => Phase::Dns,
            1 => Phase::Connection,
            2 => Phase::Application,
            n => {
                return Err(DecodeError::new(
                    what.field("phase"),
                    format!("unknown phase code {n}"),
                ));
            }
        };
        let error_type = ErrorType::from_label(f.text(6, "type")?)
            .map_err(|e| DecodeError::new(what.field("type"), e.to_string()))?;
        let elapsed_ms = u32::try_from(f.uint(7, "elapsed_ms")?)
            .map_err(|_| DecodeError::new(what.field("elapsed_ms"), "larger than u32"))?;
        let protocol = code(what, "protocol", f.uint(8, "protocol")?, Protocol::from_code)?;
        // Out-of-range values become u16::MAX, which check_status refuses with its own message.
        let status = f.opt_uint(9, "status")?.map(|s| u16::try_from(s).unwrap_or(u16::MAX));
        check_status(phase, status).map_err(|e| invalid("status", e))?;
        let network = code(what, "network", f.uint(10, "network")?, NetworkType::from_code)?;
        let scope = code(what, "scope", f.uint(11, "scope")?, Scope::from_code)?;
        let count = u32::try_from(f.uint(12, "count")?)
            .ok()
            .filter(|c| *c >= 1)
            .ok_or_else(|| DecodeError::new(what.field("count"), "must be 1..=4294967295"))?;
        Ok(Report {
            id,
            observed_at,
            service,
            host,
            phase,
            error_type,
            elapsed_ms,
            protocol,
            status,
            network,
            scope,
            count,
        })
    }

    /// The CBOR encoding of this report alone (as stored in agent and collector buffers).
    pub fn encode(&self) -> Vec<u8> {
        to_vec(&self.to_value())
    }

    /// Decodes one report from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Report, DecodeError> {
        Report::from_item(Path::new("report"), parse("report", bytes, REPORT_SHAPE)?)
    }
}

fn code<T>(
    what: Path<'_>,
    field: &str,
    n: u64,
    from: fn(u64) -> Option<T>,
) -> Result<T, DecodeError> {
    from(n).ok_or_else(|| DecodeError::new(what.field(field), format!("unknown code {n}")))
}

impl Batch {
    /// The CBOR encoding of this batch: the bytes the agent signs.
    pub fn encode(&self) -> Vec<u8> {
        let app = map(vec![
            (1, Value::Text(self.app.id.clone())),
            (2, Value::Text(self.app.version.clone())),
            (3, Value::Text(self.app.platform.clone())),
            (4, Value::Text(self.app.sdk.clone())),
        ]);
        let mut e = vec![
            (1, Value::Bytes(self.agent_key.0.to_vec())),
            (2, uint(self.seq)),
            (3, uint(self.created_at.0)),
            (4, app),
            (5, Value::Array(self.reports.iter().map(Report::to_value).collect())),
        ];
        if !self.drops.is_empty() {
            let drops = self.drops.iter().map(|(r, n)| (uint(r.code()), uint(n))).collect();
            e.push((6, Value::Map(drops)));
        }
        if !self.targets.is_empty() {
            let targets = self
                .targets
                .iter()
                .map(|t| {
                    map(vec![
                        (1, Value::Text(t.service.as_str().to_owned())),
                        (2, Value::Text(t.host.as_str().to_owned())),
                        (3, uint(t.attempts)),
                        (4, uint(t.successes)),
                    ])
                })
                .collect();
            e.push((7, Value::Array(targets)));
        }
        if self.sampling != SampleRates::ALL {
            let rates = map(vec![
                (1, uint(self.sampling.failure_ppm)),
                (2, uint(self.sampling.success_ppm)),
            ]);
            e.push((8, rates));
        }
        to_vec(&map(e))
    }

    /// Decodes a batch from untrusted bytes (the signature is checked elsewhere:
    /// [`crate::wire::SignedBatch::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Batch, DecodeError> {
        let mut f = Fields::new(Path::new("batch"), parse("batch", bytes, BATCH_SHAPE)?)?;
        let agent_key = AgentPublicKey(f.bytes::<32>(1, "agent_key")?);
        let seq = f.uint(2, "seq")?;
        let created_at = UnixMillis(f.uint(3, "created_at")?);
        let app = decode_app(f.required(4, "app")?)?;
        // Each report map is read once (not walked, then read).
        let mut maps = f.maps(5, "reports", MAX_REPORTS)?;
        let mut reports = Vec::with_capacity(maps.len());
        while let Some(fields) = maps.next(Path::indexed("batch.reports", reports.len())) {
            reports
                .push(Report::from_fields(Path::indexed("batch.reports", reports.len()), fields?)?);
        }
        let mut drops = DropCounts::new();
        if let Some(v) = f.take(6) {
            let Ok(pairs) = v.map_pairs() else {
                return Err(DecodeError::new("batch.drops", "expected a map"));
            };
            if pairs.len() > 64 {
                return Err(DecodeError::new("batch.drops", "more than 64 reasons"));
            }
            for (k, n) in pairs {
                let code = u16::try_from(as_uint("batch.drops", k)?)
                    .map_err(|_| DecodeError::new("batch.drops", "reason code larger than u16"))?;
                let reason = DropReason::from_code(code);
                if drops.count(reason) != 0 {
                    return Err(DecodeError::new(
                        "batch.drops",
                        format!("duplicate reason {code}"),
                    ));
                }
                drops.add(reason, as_uint("batch.drops", n)?);
            }
        }
        let targets = f
            .array(7, "targets", MAX_TARGETS)?
            .into_iter()
            .enumerate()
            .map(|(i, v)| decode_target(Path::indexed("batch.targets", i), v))
            .collect::<Result<Vec<_>, _>>()?;
        let sampling = match f.take(8) {
            None => SampleRates::ALL,
            Some(v) => {
                let mut r = Fields::new(Path::new("batch.sampling"), v)?;
                let mut ppm = |key, name: &str| -> Result<u32, DecodeError> {
                    u32::try_from(r.uint(key, name)?).ok().filter(|p| *p <= 1_000_000).ok_or_else(
                        || {
                            DecodeError::new(
                                format!("batch.sampling.{name}"),
                                "must be 0..=1000000 (ppm)",
                            )
                        },
                    )
                };
                SampleRates {
                    failure_ppm: ppm(1, "failure_ppm")?,
                    success_ppm: ppm(2, "success_ppm")?,
                }
            }
        };
        Ok(Batch { agent_key, seq, created_at, app, reports, drops, targets, sampling })
    }
}

fn decode_app(v: Item<'_>) -> Result<AppInfo, DecodeError> {
    let mut f = Fields::new(Path::new("batch.app"), v)?;
    let mut field = |key, name: &'static str| -> Result<String, DecodeError> {
        let text = f.text(key, name)?;
        app_field(name, text)
            .map_err(|e| DecodeError::new(format!("batch.app.{name}"), e.to_string()))
    };
    Ok(AppInfo {
        id: field(1, "id")?,
        version: field(2, "version")?,
        platform: field(3, "platform")?,
        sdk: field(4, "sdk")?,
    })
}

fn decode_target(what: Path<'_>, v: Item<'_>) -> Result<TargetCounts, DecodeError> {
    let mut f = Fields::new(what, v)?;
    let service: ServiceId = f
        .text(1, "service")?
        .parse()
        .map_err(|e: ReportError| DecodeError::new(what.field("service"), e.to_string()))?;
    let host = Host::parse(f.text(2, "host")?)
        .map_err(|e| DecodeError::new(what.field("host"), e.to_string()))?;
    let attempts = f.uint(3, "attempts")?;
    let successes = f.uint(4, "successes")?;
    TargetCounts::new(service, host, attempts, successes)
        .map_err(|e| DecodeError::new(f.what(), e.to_string()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    type CborMap = Vec<(Value, Value)>;
    use crate::entropy::SeededEntropy;

    pub(crate) fn sample_batch() -> Batch {
        let mut rng = SeededEntropy::insecure_from_seed([1; 32]);
        let now = UnixMillis(1_700_000_000_000);
        let r1 = Report::builder("checkout", "https://api.example.com/pay", ErrorType::TcpRefused)
            .elapsed_ms(12)
            .network(NetworkType::Wifi)
            .scope(Scope::Path)
            .count(3)
            .build(&mut rng, now)
            .unwrap();
        let r2 = Report::builder("checkout", "api.example.com", ErrorType::HttpError)
            .status(503)
            .protocol(Protocol::H2)
            .build(&mut rng, now)
            .unwrap();
        let r3 = Report::builder("search", "s.example.net", ErrorType::Other("quic.x".into()))
            .build(&mut rng, now)
            .unwrap();
        let mut b = Batch::new(
            AgentPublicKey([5; 32]),
            7,
            now,
            AppInfo::new("app", "1", "linux", "rust").unwrap(),
        )
        .with_reports(vec![r1, r2, r3]);
        b.drops.add(DropReason::QueueFull, 4);
        b.drops.add(DropReason::Other(300), 1);
        b.targets.push(
            TargetCounts::new(
                "checkout".parse().unwrap(),
                Host::parse("api.example.com").unwrap(),
                100,
                96,
            )
            .unwrap(),
        );
        b.sampling = SampleRates { failure_ppm: 1_000_000, success_ppm: 100_000 };
        b
    }

    #[test]
    fn batch_round_trips() {
        let b = sample_batch();
        let bytes = b.encode();
        assert_eq!(Batch::decode(&bytes).unwrap(), b);
        assert_eq!(bytes, Batch::decode(&bytes).unwrap().encode(), "deterministic");
    }

    #[test]
    fn unknown_keys_are_skipped_but_bad_values_are_named() {
        let b = sample_batch();
        let Value::Map(mut entries) = super::super::cbor::from_slice("x", &b.encode()).unwrap()
        else {
            panic!()
        };
        entries.push((uint(99u8), Value::Text("future".into())));
        assert_eq!(Batch::decode(&to_vec(&Value::Map(entries.clone()))).unwrap(), b);

        let report = |f: &dyn Fn(&mut CborMap)| {
            let mut e = entries.clone();
            let Value::Array(reports) = &mut e[4].1 else { panic!() };
            let Value::Map(r) = &mut reports[0] else { panic!() };
            f(r);
            Batch::decode(&to_vec(&Value::Map(e))).unwrap_err().to_string()
        };
        let err = report(&|r| r[3].1 = Value::Text("a.example/path".into()));
        assert!(err.starts_with("batch.reports[0].host: invalid host"), "{err}");
        let err = report(&|r| r[4].1 = uint(9u8));
        assert_eq!(err, "batch.reports[0].phase: unknown phase code 9");
        let err = report(&|r| r[0].1 = Value::Bytes(vec![1, 2]));
        assert_eq!(err, "batch.reports[0].id: expected 16 bytes, got 2");
        let err = report(&|r| r.retain(|(k, _)| k != &uint(12u8)));
        assert_eq!(err, "batch.reports[0].count: missing");
    }

    #[test]
    fn sampling_rates_are_checked() {
        let mut b = sample_batch();
        b.sampling.success_ppm = 1_000_001;
        let err = Batch::decode(&b.encode()).unwrap_err().to_string();
        assert_eq!(err, "batch.sampling.success_ppm: must be 0..=1000000 (ppm)");
        b.sampling = SampleRates::ALL;
        let bytes = b.encode();
        let mut fields =
            Fields::new(Path::new("batch"), parse("x", &bytes, BATCH_SHAPE).unwrap()).unwrap();
        assert!(fields.take(8).is_none(), "full sampling is omitted from the wire");
    }

    #[test]
    fn limits_are_enforced() {
        let mut b = sample_batch();
        let one = b.reports[0].clone();
        b.reports = vec![one; MAX_REPORTS + 1];
        let err = Batch::decode(&b.encode()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("batch.reports: {} items, at most {MAX_REPORTS} allowed", MAX_REPORTS + 1)
        );
    }

    #[test]
    fn single_report_round_trips() {
        let b = sample_batch();
        for r in &b.reports {
            assert_eq!(&Report::decode(&r.encode()).unwrap(), r);
        }
    }
}
