//! Keys and the versioned binary encoding of stored records.
//!
//! Values start with a version byte, then fields in a fixed order: integers as LEB128
//! varints, strings as a varint length and UTF-8 bytes, labels (source, phase, error type,
//! network, scope) as their stable strings so a label this version does not know survives a
//! round trip (`ErrorType::Other`). The event time and report id live in the key, not the value.
//!
//! Target records are version 1. Report records are written as version 2: the fields of
//! version 1 and then one byte, 1 when the report's NEL count is derived from it rather than
//! stored as a target row (see the store's "NEL uploads"), else 0. Version 1 report records
//! (format 1 stores) still read, as records with no derived count.

use vantage_agent::report::UnixMillis;
use vantage_agent::taxonomy::{ErrorType, NetworkType, Phase, Scope};

use crate::model::{ClientKey, Country, Enrichment, NetTag, Source, StoredReport, StoredTargets};

/// Version of the target records (and of the report records format 1 wrote).
const RECORD_VERSION: u8 = 1;
/// Version of the report records this code writes: version 1 plus the derived-count byte.
const REPORT_VERSION: u8 = 2;
/// Upper bound on an encoded string, far above what the ingest path accepts.
const MAX_STRING: usize = 64 * 1024;

/// Report key: `event_at` (big-endian, so keys sort by time) then the report id.
pub(super) const REPORT_KEY_LEN: usize = 8 + 16;
/// Targets key: `event_at`, 16 bytes of the upload digest, index in the upload.
pub(super) const TARGET_KEY_LEN: usize = 8 + 16 + 4;

#[cfg(test)]
pub(super) fn report_key(event_at: UnixMillis, id: &[u8; 16]) -> [u8; REPORT_KEY_LEN] {
    let mut key = [0; REPORT_KEY_LEN];
    key[..8].copy_from_slice(&event_at.0.to_be_bytes());
    key[8..].copy_from_slice(id);
    key
}

#[cfg(test)]
pub(super) fn target_key(
    event_at: UnixMillis,
    digest: &[u8; 32],
    index: u32,
) -> [u8; TARGET_KEY_LEN] {
    let mut key = [0; TARGET_KEY_LEN];
    key[..8].copy_from_slice(&event_at.0.to_be_bytes());
    key[8..24].copy_from_slice(&digest[..16]);
    key[24..].copy_from_slice(&index.to_be_bytes());
    key
}

/// The event time at the front of a report or targets key.
pub(super) fn key_time(key: &[u8]) -> Result<u64, String> {
    let head: [u8; 8] = key
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| format!("key of {} bytes is too short", key.len()))?;
    Ok(u64::from_be_bytes(head))
}

/// A big-endian u64 value (counters, times).
pub(super) fn be_u64(bytes: &[u8]) -> Result<u64, String> {
    let arr: [u8; 8] =
        bytes.try_into().map_err(|_| format!("expected 8 bytes, found {}", bytes.len()))?;
    Ok(u64::from_be_bytes(arr))
}

/// A report record; `derived_count`: its NEL count is not a target row but derived from it.
pub(super) fn encode_report(r: &StoredReport, derived_count: bool) -> Result<Vec<u8>, String> {
    let mut w = Writer(Vec::with_capacity(96 + r.service.len() + r.host.len()));
    w.0.push(REPORT_VERSION);
    w.uint(r.received_at.0);
    w.str(r.source.as_str(), "source")?;
    w.str(&r.service, "service")?;
    w.str(&r.host, "host")?;
    w.str(r.phase.as_str(), "phase")?;
    w.str(r.error_type.as_str(), "error_type")?;
    w.uint(r.elapsed_ms.into());
    w.uint(r.status.map_or(0, |s| u64::from(s) + 1));
    w.str(r.network.as_str(), "network")?;
    w.str(r.scope.as_str(), "scope")?;
    w.uint(r.count.into());
    w.uint(r.sample_ppm.into());
    match &r.client {
        Some(key) => {
            w.0.push(1);
            w.0.extend_from_slice(key);
        }
        None => w.0.push(0),
    }
    w.0.extend_from_slice(&r.net.0.to_be_bytes());
    w.enrichment(&r.enrichment)?;
    w.0.push(u8::from(derived_count));
    Ok(w.0)
}

/// Longest LEB128 varint of a u64.
const MAX_VARINT: usize = 10;
/// Longest varint length prefix of a string (at most [`MAX_STRING`] bytes).
const MAX_LEN_PREFIX: usize = 3;

/// An upper bound on `encode_report(r)`'s length, without encoding (no allocation).
pub(super) fn report_len_bound(r: &StoredReport) -> usize {
    let strings = [
        r.source.as_str().len(),
        r.service.len(),
        r.host.len(),
        r.phase.as_str().len(),
        r.error_type.as_str().len(),
        r.network.as_str().len(),
        r.scope.as_str().len(),
    ];
    // version, received_at, elapsed, status, count, ppm; client flag + key; net; enrichment;
    // the derived-count byte.
    2 + 6 * MAX_VARINT
        + strings.iter().map(|l| MAX_LEN_PREFIX + l).sum::<usize>()
        + 33
        + 8
        + enrichment_len_bound(&r.enrichment)
}

/// An upper bound on `encode_targets(t)`'s length, without encoding.
pub(super) fn targets_len_bound(t: &StoredTargets) -> usize {
    1 + 3 * MAX_VARINT
        + 2 * MAX_LEN_PREFIX
        + t.service.len()
        + t.host.len()
        + 32
        + 8
        + enrichment_len_bound(&t.enrichment)
}

fn enrichment_len_bound(e: &Enrichment) -> usize {
    MAX_VARINT + MAX_LEN_PREFIX + e.country.as_ref().map_or(0, |c| c.as_str().len())
}

#[cfg(test)]
pub(super) fn decode_report(key: &[u8], value: &[u8]) -> Result<StoredReport, String> {
    decode_report_and_count(key, value).map(|(r, _)| r)
}

/// A report record and whether its NEL count is derived from it (never for version 1).
#[cfg(test)]
pub(super) fn decode_report_and_count(
    key: &[u8],
    value: &[u8],
) -> Result<(StoredReport, bool), String> {
    if key.len() != REPORT_KEY_LEN {
        return Err(format!("report key of {} bytes, expected {REPORT_KEY_LEN}", key.len()));
    }
    let event_at = UnixMillis(key_time(key)?);
    let mut id = [0; 16];
    id.copy_from_slice(&key[8..]);
    decode_record(event_at, id, value)
}

/// A report record whose event time and id are known from elsewhere (a format 1/2 key or a
/// format 3 row entry), and whether its NEL count is derived from it.
pub(super) fn decode_record(
    event_at: UnixMillis,
    id: [u8; 16],
    value: &[u8],
) -> Result<(StoredReport, bool), String> {
    let (mut r, version) = Reader::with_versions(value, &[RECORD_VERSION, REPORT_VERSION])?;
    let received_at = UnixMillis(r.uint("received_at")?);
    let source = match r.str("source")? {
        "agent" => Source::Agent,
        "nel" => Source::Nel,
        other => return Err(format!("unknown source {other:?}")),
    };
    let service = r.str("service")?.to_owned();
    let host = r.str("host")?.to_owned();
    let phase: Phase = r.str("phase")?.parse().map_err(|e| format!("{e}"))?;
    let error_type = ErrorType::from_label(r.str("error_type")?).map_err(|e| format!("{e}"))?;
    let elapsed_ms = r.u32("elapsed_ms")?;
    let status = match r.uint("status")? {
        0 => None,
        n => Some(u16::try_from(n - 1).map_err(|_| format!("status {} out of range", n - 1))?),
    };
    // A network type or scope a newer version added reads as `Unknown` here: both enums have
    // that value for "not known", and detection treats it as such.
    let network = r.str("network")?.parse().unwrap_or(NetworkType::Unknown);
    let scope = r.str("scope")?.parse().unwrap_or(Scope::Unknown);
    let count = r.u32("count")?;
    let sample_ppm = r.u32("sample_ppm")?;
    let client = match r.byte("client flag")? {
        0 => None,
        1 => Some(r.array::<32>("client")?),
        f => return Err(format!("client flag {f}")),
    };
    let net = NetTag(u64::from_be_bytes(r.array::<8>("net")?));
    let enrichment = r.enrichment()?;
    let derived_count = match version {
        REPORT_VERSION => match r.byte("derived count")? {
            0 => false,
            1 => true,
            f => return Err(format!("derived count byte {f}")),
        },
        _ => false,
    };
    r.finish()?;
    let report = StoredReport {
        id,
        received_at,
        event_at,
        source,
        service,
        host,
        phase,
        error_type,
        elapsed_ms,
        status,
        network,
        scope,
        count,
        sample_ppm,
        client,
        net,
        enrichment,
    };
    Ok((report, derived_count))
}

pub(super) fn encode_targets(t: &StoredTargets) -> Result<Vec<u8>, String> {
    let mut w = Writer(Vec::with_capacity(80 + t.service.len() + t.host.len()));
    w.0.push(RECORD_VERSION);
    w.uint(t.received_at.0);
    w.str(&t.service, "service")?;
    w.str(&t.host, "host")?;
    w.uint(t.attempts);
    w.uint(t.successes);
    w.0.extend_from_slice(&t.client);
    w.0.extend_from_slice(&t.net.0.to_be_bytes());
    w.enrichment(&t.enrichment)?;
    Ok(w.0)
}

/// A targets record whose event time is known from elsewhere.
pub(super) fn decode_targets_record(
    event_at: UnixMillis,
    value: &[u8],
) -> Result<StoredTargets, String> {
    let mut r = Reader::new(value)?;
    let received_at = UnixMillis(r.uint("received_at")?);
    let service = r.str("service")?.to_owned();
    let host = r.str("host")?.to_owned();
    let attempts = r.uint("attempts")?;
    let successes = r.uint("successes")?;
    let client: ClientKey = r.array::<32>("client")?;
    let net = NetTag(u64::from_be_bytes(r.array::<8>("net")?));
    let enrichment = r.enrichment()?;
    r.finish()?;
    Ok(StoredTargets {
        received_at,
        event_at,
        service,
        host,
        attempts,
        successes,
        client,
        net,
        enrichment,
    })
}

/// Whether a report record (any version) is an agent report: its source field, read without
/// decoding the rest. A record too short to say is not.
pub(super) fn record_is_agent(record: &[u8]) -> bool {
    let Ok((mut r, _)) = Reader::with_versions(record, &[RECORD_VERSION, REPORT_VERSION]) else {
        return false;
    };
    r.uint("received_at").is_ok() && r.str("source").is_ok_and(|s| s == "agent")
}

/// Version of the format 3 row values (see "Rows" in the store docs).
const ROW_VERSION: u8 = 3;

/// One entry of a format 3 row: its event time, its id (reports; zeros for targets) and its
/// record (`encode_report` / `encode_targets`), owned or borrowed from a row being merged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Entry<R = Vec<u8>> {
    pub(super) event_at: u64,
    pub(super) id: [u8; 16],
    pub(super) record: R,
}

/// Bytes an entry adds to a row, at most (varint event delta, id, varint length, record).
pub(super) fn entry_len_bound(record_len: usize) -> usize {
    MAX_VARINT + 16 + MAX_VARINT + record_len
}

/// A row value: the version, the number of entries, then per entry the event time as a
/// varint delta from the previous entry's (the first from `base`, the row's bucket), the id
/// when `with_ids`, and the record with a varint length. Entries must be in event order.
pub(super) fn encode_row<'a, R: AsRef<[u8]> + 'a>(
    base: u64,
    with_ids: bool,
    entries: impl ExactSizeIterator<Item = &'a Entry<R>>,
) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(1024));
    w.0.push(ROW_VERSION);
    w.uint(entries.len() as u64);
    let mut last = base;
    for e in entries {
        // Invariant: entries are sorted and not before `base` (callers bucket and sort them).
        w.uint(e.event_at.saturating_sub(last));
        last = e.event_at;
        if with_ids {
            w.0.extend_from_slice(&e.id);
        }
        let record = e.record.as_ref();
        w.uint(record.len() as u64);
        w.0.extend_from_slice(record);
    }
    w.0
}

/// A decoded row entry: event time, id (zeros in a targets row) and the record, borrowed.
pub(super) type RowEntry<'a> = (u64, [u8; 16], &'a [u8]);

/// The entries of a row value (see [`encode_row`]), records borrowed from it.
pub(super) fn decode_row(
    base: u64,
    with_ids: bool,
    value: &[u8],
) -> Result<Vec<RowEntry<'_>>, String> {
    let (mut r, _) = Reader::with_versions(value, &[ROW_VERSION])?;
    let n = r.uint("entry count")?;
    // Every entry takes at least 2 bytes: a count beyond that is damage, not an allocation.
    let n = usize::try_from(n)
        .ok()
        .filter(|&n| n <= value.len() / 2)
        .ok_or_else(|| format!("entry count {n} larger than the row"))?;
    let mut out = Vec::with_capacity(n);
    let mut last = base;
    for _ in 0..n {
        let delta = r.uint("event time")?;
        last = last.checked_add(delta).ok_or("event time overflows")?;
        let id = if with_ids { r.array::<16>("id")? } else { [0; 16] };
        let len = usize::try_from(r.uint("record length")?).map_err(|_| "record length")?;
        out.push((last, id, r.take(len, "record")?));
    }
    r.finish()?;
    Ok(out)
}

struct Writer(Vec<u8>);

impl Writer {
    fn uint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8 & 0x7f) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn str(&mut self, s: &str, field: &str) -> Result<(), String> {
        if s.len() > MAX_STRING {
            return Err(format!("{field} is {} bytes, more than {MAX_STRING}", s.len()));
        }
        self.uint(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn enrichment(&mut self, e: &Enrichment) -> Result<(), String> {
        self.uint(e.asn.map_or(0, |a| u64::from(a) + 1));
        self.str(e.country.as_ref().map_or("", Country::as_str), "country")
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Result<Reader<'a>, String> {
        Reader::with_versions(buf, &[RECORD_VERSION]).map(|(r, _)| r)
    }

    /// A reader past the version byte, which must be one of `versions`; and that version.
    fn with_versions(buf: &'a [u8], versions: &[u8]) -> Result<(Reader<'a>, u8), String> {
        match buf.first() {
            Some(v) if versions.contains(v) => Ok((Reader { buf, pos: 1 }, *v)),
            Some(v) => {
                Err(format!("record version {v} is not supported (this build reads {versions:?})"))
            }
            None => Err("empty record".into()),
        }
    }

    fn byte(&mut self, field: &str) -> Result<u8, String> {
        let b = *self.buf.get(self.pos).ok_or_else(|| format!("truncated at {field}"))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| format!("truncated at {field}"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: &str) -> Result<[u8; N], String> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    fn uint(&mut self, field: &str) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte(field)?;
            let part = u64::from(b & 0x7f);
            if shift == 63 && part > 1 {
                return Err(format!("{field} overflows 64 bits"));
            }
            v |= part << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(format!("{field} overflows 64 bits"))
    }

    fn u32(&mut self, field: &str) -> Result<u32, String> {
        let v = self.uint(field)?;
        u32::try_from(v).map_err(|_| format!("{field} {v} out of range"))
    }

    fn str(&mut self, field: &str) -> Result<&'a str, String> {
        let len = self.uint(field)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= MAX_STRING)
            .ok_or_else(|| format!("{field} length {len} too large"))?;
        let bytes = self.take(len, field)?;
        std::str::from_utf8(bytes).map_err(|_| format!("{field} is not UTF-8"))
    }

    fn enrichment(&mut self) -> Result<Enrichment, String> {
        let asn = match self.uint("asn")? {
            0 => None,
            n => Some(u32::try_from(n - 1).map_err(|_| format!("asn {} out of range", n - 1))?),
        };
        let country = match self.str("country")? {
            "" => None,
            code => Some(Country::parse(code).ok_or_else(|| format!("country {code:?}"))?),
        };
        Ok(Enrichment { asn, country })
    }

    fn finish(self) -> Result<(), String> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(format!("{} trailing bytes", self.buf.len() - self.pos))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_at_the_edges() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX - 1, u64::MAX] {
            let mut w = Writer(vec![RECORD_VERSION]);
            w.uint(v);
            let mut r = Reader::new(&w.0).unwrap();
            assert_eq!(r.uint("v").unwrap(), v);
            r.finish().unwrap();
        }
        // Eleven continuation bytes can never be a u64.
        let mut bad = vec![RECORD_VERSION];
        bad.extend([0xff; 10]);
        bad.push(0x01);
        assert!(Reader::new(&bad).unwrap().uint("v").unwrap_err().contains("overflows"));
        // The tenth byte may only carry the top bit.
        let mut bad = vec![RECORD_VERSION];
        bad.extend([0xff; 9]);
        bad.push(0x02);
        assert!(Reader::new(&bad).unwrap().uint("v").unwrap_err().contains("overflows"));
    }

    #[test]
    fn keys_sort_by_event_time() {
        let a = report_key(UnixMillis(255), &[0xff; 16]);
        let b = report_key(UnixMillis(256), &[0; 16]);
        assert!(a < b);
        assert_eq!(key_time(&b).unwrap(), 256);
        let t = target_key(UnixMillis(9), &[3; 32], 2);
        assert_eq!(key_time(&t).unwrap(), 9);
        assert_eq!(&t[24..], &2u32.to_be_bytes());
    }

    #[test]
    fn rows_round_trip_and_damage_is_an_error() {
        let entries = [
            Entry { event_at: 1_000, id: [1; 16], record: vec![9, 9] },
            Entry { event_at: 1_000, id: [2; 16], record: vec![] },
            Entry { event_at: 1_999, id: [3; 16], record: vec![7; 300] },
        ];
        for with_ids in [true, false] {
            let row = encode_row(1_000, with_ids, entries.iter());
            let back = decode_row(1_000, with_ids, &row).unwrap();
            let want: Vec<_> = entries
                .iter()
                .map(|e| (e.event_at, if with_ids { e.id } else { [0; 16] }, &e.record[..]))
                .collect();
            assert_eq!(back, want);
            assert!(decode_row(1_000, with_ids, &row[..row.len() - 1]).is_err());
        }
        // An entry count larger than the row could hold is refused before allocating.
        assert!(decode_row(0, true, &[ROW_VERSION, 0x7f]).unwrap_err().contains("entry count"));
        assert!(decode_row(0, true, &[RECORD_VERSION, 0]).unwrap_err().contains("version 1"));
        let record = |source| {
            let r = StoredReport {
                id: [0; 16],
                received_at: UnixMillis(5),
                event_at: UnixMillis(1),
                source,
                service: String::new(),
                host: String::new(),
                phase: Phase::Dns,
                error_type: ErrorType::Other("x".into()),
                elapsed_ms: 0,
                status: None,
                network: NetworkType::Unknown,
                scope: Scope::Unknown,
                count: 1,
                sample_ppm: 1,
                client: None,
                net: NetTag(0),
                enrichment: Enrichment::default(),
            };
            encode_report(&r, false).unwrap()
        };
        assert!(record_is_agent(&record(Source::Agent)));
        assert!(!record_is_agent(&record(Source::Nel)));
        assert!(!record_is_agent(&record(Source::Agent)[..3]));
        assert!(!record_is_agent(&[]));
    }

    #[test]
    fn unknown_versions_and_truncation_are_errors() {
        assert!(Reader::new(&[2]).err().unwrap().contains("version 2"));
        assert!(Reader::new(&[]).err().unwrap().contains("empty"));
        let mut r = Reader::new(&[RECORD_VERSION, 5, b'a']).unwrap();
        assert!(r.str("host").unwrap_err().contains("truncated at host"));
    }
}
