//! Small CBOR helpers over `ciborium::Value`: maps with unsigned integer keys, written in key
//! order with minimal-length heads (so encodings are deterministic), and a strict reader.

use ciborium::Value;

use super::MAX_CBOR_DEPTH;

/// Untrusted bytes did not decode. The message names the field and what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct DecodeError {
    field: String,
    reason: String,
}

impl DecodeError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        DecodeError { field: field.into(), reason: reason.into() }
    }

    /// The field (a path such as `batch.reports[3].host`) that was wrong.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// What was wrong with it.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

/// Builds a map from `(key, value)` pairs given in increasing key order.
pub(crate) fn map(entries: Vec<(u64, Value)>) -> Value {
    debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "keys in order");
    Value::Map(entries.into_iter().map(|(k, v)| (Value::Integer(k.into()), v)).collect())
}

pub(crate) fn uint(n: impl Into<u64>) -> Value {
    Value::Integer(n.into().into())
}

/// Encodes `value` exactly as `ciborium::into_writer` does (minimal-length heads, definite
/// lengths, floats in the shortest of 16/32/64 bits that keeps the value bit for bit), by hand:
/// ciborium's writer goes through serde's `Serializer`, several kilobytes of the WebAssembly
/// module (wasm/pkg-src/README.md, "Size"). The agent only encodes; decoding stays ciborium's.
pub(crate) fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut out, value);
    out
}

fn head(out: &mut Vec<u8>, major: u8, n: u64) {
    let m = major << 5;
    if n < 24 {
        out.push(m | n as u8);
    } else if n <= u8::MAX.into() {
        out.extend_from_slice(&[m | 24, n as u8]);
    } else if n <= u16::MAX.into() {
        out.push(m | 25);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else if n <= u32::MAX.into() {
        out.push(m | 26);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

fn write(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Integer(i) => {
            // ciborium's integers are -2^64..2^64: every one has a major-0 or -1 head.
            let n = i128::from(*i);
            if n >= 0 {
                head(out, 0, n as u64);
            } else {
                head(out, 1, (-1 - n) as u64);
            }
        }
        Value::Bytes(b) => {
            head(out, 2, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Text(t) => {
            head(out, 3, t.len() as u64);
            out.extend_from_slice(t.as_bytes());
        }
        Value::Array(items) => {
            head(out, 4, items.len() as u64);
            for v in items {
                write(out, v);
            }
        }
        Value::Map(entries) => {
            head(out, 5, entries.len() as u64);
            for (k, v) in entries {
                write(out, k);
                write(out, v);
            }
        }
        Value::Tag(tag, v) => {
            head(out, 6, *tag);
            write(out, v);
        }
        Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
        Value::Null => out.push(0xf6),
        Value::Float(x) => write_float(out, *x),
        // `Value` is non-exhaustive; ciborium 0.2 has no other variant.
        _ => unreachable!("a CBOR value kind this encoder does not know"),
    }
}

/// The float as ciborium writes it: half precision when that is exact (bit for bit, NaN
/// payloads included, as the `half` crate converts), else single, else double.
fn write_float(out: &mut Vec<u8>, x: f64) {
    let single = x as f32;
    if f64::from(single).to_bits() != x.to_bits() {
        out.push(0xfb);
        out.extend_from_slice(&x.to_be_bytes());
    } else if let Some(h) = exact_half(single) {
        out.push(0xf9);
        out.extend_from_slice(&h.to_be_bytes());
    } else {
        out.push(0xfa);
        out.extend_from_slice(&single.to_be_bytes());
    }
}

/// The IEEE half-precision bits of `x` when converting to half and back gives `x` again.
fn exact_half(x: f32) -> Option<u16> {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        // Infinity, or a NaN: half keeps the top 10 payload bits and sets the quiet bit.
        let quiet_ok = man == 0 || man & 0x40_0000 != 0;
        return (man & 0x1fff == 0 && quiet_ok).then_some(sign | 0x7c00 | (man >> 13) as u16);
    }
    if exp == 0 {
        // Zero; single-precision subnormals are far below half's range.
        return (man == 0).then_some(sign);
    }
    let e = exp - 127;
    if (-14..=15).contains(&e) {
        return (man & 0x1fff == 0)
            .then_some(sign | (((e + 15) as u16) << 10) | (man >> 13) as u16);
    }
    if (-24..-14).contains(&e) {
        // A half subnormal: k * 2^-24 with k < 1024.
        let full = man | 0x80_0000;
        let shift = (13 + (-14 - e)) as u32;
        return (full & ((1 << shift) - 1) == 0).then_some(sign | (full >> shift) as u16);
    }
    None
}

/// Parses exactly one CBOR item that fills all of `bytes`, nesting at most `MAX_CBOR_DEPTH`.
pub(crate) fn from_slice(what: &str, bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_CBOR_DEPTH)
        .map_err(|e| {
            let reason = match e {
                ciborium::de::Error::RecursionLimitExceeded => {
                    format!("nested deeper than {MAX_CBOR_DEPTH} levels")
                }
                ciborium::de::Error::Io(_) => "truncated CBOR".to_owned(),
                ciborium::de::Error::Syntax(at) => format!("invalid CBOR at byte {at}"),
                ciborium::de::Error::Semantic(at, msg) => {
                    format!("invalid CBOR at byte {}: {msg}", at.unwrap_or(0))
                }
            };
            DecodeError::new(what, reason)
        })?;
    if !rest.is_empty() {
        return Err(DecodeError::new(what, format!("{} bytes after the CBOR item", rest.len())));
    }
    Ok(value)
}

/// The entries of a map with unsigned integer keys, for strict field-by-field reading.
pub(crate) struct Fields {
    what: String,
    entries: Vec<(u64, Value)>,
}

impl Fields {
    pub(crate) fn new(what: &str, value: Value) -> Result<Fields, DecodeError> {
        let Value::Map(pairs) = value else {
            return Err(DecodeError::new(what, format!("expected a map, got {}", kind(&value))));
        };
        let mut entries: Vec<(u64, Value)> = Vec::with_capacity(pairs.len());
        for (k, v) in pairs {
            let key = match k {
                Value::Integer(i) => u64::try_from(i).ok(),
                _ => None,
            }
            .ok_or_else(|| DecodeError::new(what, "map key is not an unsigned integer"))?;
            entries.push((key, v));
        }
        if let (Some(key), _) = first_duplicate(&entries) {
            return Err(DecodeError::new(what, format!("duplicate key {key}")));
        }
        Ok(Fields { what: what.to_owned(), entries })
    }

    fn path(&self, name: &str) -> String {
        format!("{}.{name}", self.what)
    }

    pub(crate) fn take(&mut self, key: u64) -> Option<Value> {
        let at = self.entries.iter().position(|(k, _)| *k == key)?;
        Some(self.entries.swap_remove(at).1)
    }

    pub(crate) fn required(&mut self, key: u64, name: &str) -> Result<Value, DecodeError> {
        self.take(key).ok_or_else(|| DecodeError::new(self.path(name), "missing"))
    }

    pub(crate) fn uint(&mut self, key: u64, name: &str) -> Result<u64, DecodeError> {
        let v = self.required(key, name)?;
        as_uint(&self.path(name), v)
    }

    pub(crate) fn opt_uint(&mut self, key: u64, name: &str) -> Result<Option<u64>, DecodeError> {
        self.take(key).map(|v| as_uint(&self.path(name), v)).transpose()
    }

    pub(crate) fn bytes<const N: usize>(
        &mut self,
        key: u64,
        name: &str,
    ) -> Result<[u8; N], DecodeError> {
        let v = self.required(key, name)?;
        let path = self.path(name);
        let b = as_bytes(&path, v)?;
        let len = b.len();
        b.try_into().map_err(|_| DecodeError::new(path, format!("expected {N} bytes, got {len}")))
    }

    pub(crate) fn byte_string(&mut self, key: u64, name: &str) -> Result<Vec<u8>, DecodeError> {
        let v = self.required(key, name)?;
        as_bytes(&self.path(name), v)
    }

    pub(crate) fn text(&mut self, key: u64, name: &str) -> Result<String, DecodeError> {
        let v = self.required(key, name)?;
        match v {
            Value::Text(s) => Ok(s),
            other => Err(DecodeError::new(
                self.path(name),
                format!("expected text, got {}", kind(&other)),
            )),
        }
    }

    pub(crate) fn array(
        &mut self,
        key: u64,
        name: &str,
        max: usize,
    ) -> Result<Vec<Value>, DecodeError> {
        let Some(v) = self.take(key) else { return Ok(Vec::new()) };
        match v {
            Value::Array(items) if items.len() <= max => Ok(items),
            Value::Array(items) => Err(DecodeError::new(
                self.path(name),
                format!("{} items, at most {max} allowed", items.len()),
            )),
            other => Err(DecodeError::new(
                self.path(name),
                format!("expected an array, got {}", kind(&other)),
            )),
        }
    }

    /// Fails if any key is left (for structures that must not grow within a version).
    pub(crate) fn finish_strict(self) -> Result<(), DecodeError> {
        match self.entries.first() {
            None => Ok(()),
            Some((k, _)) => Err(DecodeError::new(self.what, format!("unknown key {k}"))),
        }
    }

    pub(crate) fn what(&self) -> &str {
        &self.what
    }
}

/// The smallest key that occurs twice, and how many key comparisons finding it took.
///
/// Linear for maps in key order (what every Vantage encoder writes: one pass); other orders
/// are sorted first, O(n log n). Never quadratic: an attacker's 16k-key map costs a pass or
/// a sort, not 16k x 16k comparisons.
fn first_duplicate(entries: &[(u64, Value)]) -> (Option<u64>, usize) {
    let mut comparisons = 0usize;
    let in_order = entries.windows(2).all(|w| {
        comparisons += 1;
        w[0].0 < w[1].0
    });
    if in_order {
        return (None, comparisons);
    }
    let mut keys: Vec<u64> = entries.iter().map(|(k, _)| *k).collect();
    keys.sort_unstable_by(|a, b| {
        comparisons += 1;
        a.cmp(b)
    });
    let duplicate = keys.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]);
    (duplicate, comparisons + keys.len())
}

pub(crate) fn as_uint(path: &str, v: Value) -> Result<u64, DecodeError> {
    match v {
        Value::Integer(i) => u64::try_from(i).map_err(|_| {
            DecodeError::new(path, "expected an unsigned integer, got a negative one")
        }),
        other => Err(DecodeError::new(
            path,
            format!("expected an unsigned integer, got {}", kind(&other)),
        )),
    }
}

pub(crate) fn as_bytes(path: &str, v: Value) -> Result<Vec<u8>, DecodeError> {
    match v {
        Value::Bytes(b) => Ok(b),
        other => {
            Err(DecodeError::new(path, format!("expected a byte string, got {}", kind(&other))))
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Integer(_) => "an integer",
        Value::Bytes(_) => "a byte string",
        Value::Float(_) => "a float",
        Value::Text(_) => "text",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
        Value::Tag(..) => "a tagged item",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        _ => "an unsupported item",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_reader_rejects_trailing_bytes_depth_and_duplicates() {
        let v = map(vec![(1, uint(5u8)), (2, Value::Text("x".into()))]);
        let mut bytes = to_vec(&v);
        assert_eq!(from_slice("t", &bytes).unwrap(), v);
        bytes.push(0);
        assert_eq!(from_slice("t", &bytes).unwrap_err().reason(), "1 bytes after the CBOR item");
        let deep = [0x81u8; 20].iter().copied().chain([0x01]).collect::<Vec<_>>();
        assert!(from_slice("t", &deep).unwrap_err().reason().contains("nested deeper"));
        let dup = Value::Map(vec![(uint(1u8), uint(1u8)), (uint(1u8), uint(2u8))]);
        let err = Fields::new("t", dup).err().unwrap();
        assert_eq!(err.to_string(), "t: duplicate key 1");
        assert!(
            from_slice("t", &[0x5a, 0xff, 0xff, 0xff, 0xff])
                .unwrap_err()
                .reason()
                .contains("truncated")
        );
    }

    #[test]
    fn duplicate_keys_are_found_in_any_order() {
        let unordered = Value::Map(vec![
            (uint(3u8), uint(0u8)),
            (uint(1u8), uint(0u8)),
            (uint(2u8), uint(0u8)),
        ]);
        let mut f = Fields::new("t", unordered).unwrap();
        assert_eq!(f.uint(1, "one").unwrap(), 0);
        let dup = Value::Map(vec![
            (uint(9u8), uint(0u8)),
            (uint(4u8), uint(0u8)),
            (uint(7u8), uint(0u8)),
            (uint(4u8), uint(1u8)),
        ]);
        assert_eq!(Fields::new("t", dup).err().unwrap().to_string(), "t: duplicate key 4");
    }

    /// The duplicate-key check of an attacker's many-key map is not quadratic: comparisons for
    /// 16k keys stay within n log2 n (a quadratic check needs n^2 / 2 = 134M), and 4x the keys
    /// cost at most ~5x the comparisons.
    #[test]
    fn duplicate_key_check_is_near_linear() {
        // 0: in key order, 1: reversed, 2: scrambled (an odd multiplier permutes 0..2^k).
        let entries = |n: u64, order: u8| -> Vec<(u64, Value)> {
            (0..n)
                .map(|k| match order {
                    0 => k,
                    1 => n - 1 - k,
                    _ => k.wrapping_mul(40_503) % n,
                })
                .map(|k| (k, Value::Null))
                .collect()
        };
        for order in 0..3 {
            let (dup4, small) = first_duplicate(&entries(4096, order));
            let (dup16, big) = first_duplicate(&entries(16_384, order));
            assert_eq!((dup4, dup16), (None, None));
            assert!(big <= 16_384 * 20, "{big} comparisons for 16k keys (order {order})");
            assert!(big <= small * 6, "4k: {small}, 16k: {big} (order {order})");
        }
        // In key order (every Vantage encoder): one pass.
        assert_eq!(first_duplicate(&entries(16_384, 0)).1, 16_383);
        let mut dup = entries(16_384, 2);
        dup[9_000].0 = dup[3].0;
        assert_eq!(first_duplicate(&dup).0, Some(dup[3].0));
        // And the decoder on a real 16k-key map agrees.
        let map = Value::Map((0..16_384u64).map(|k| (uint(k), Value::Null)).collect());
        let bytes = to_vec(&map);
        let value = from_slice("t", &bytes).unwrap();
        assert_eq!(
            Fields::new("t", value).unwrap().finish_strict().unwrap_err().reason(),
            "unknown key 0"
        );
    }

    #[test]
    fn field_errors_carry_the_path() {
        let v = map(vec![(1, Value::Text("no".into()))]);
        let mut f = Fields::new("batch", v).unwrap();
        assert_eq!(
            f.uint(1, "seq").unwrap_err().to_string(),
            "batch.seq: expected an unsigned integer, got text"
        );
        assert_eq!(f.uint(2, "created_at").unwrap_err().to_string(), "batch.created_at: missing");
    }

    #[test]
    fn the_encoder_writes_what_ciborium_writes() {
        let mut values = vec![
            Value::Null,
            Value::Bool(true),
            Value::Bool(false),
            Value::Bytes(vec![7; 300]),
            Value::Text("h\u{e9}llo".repeat(20)),
            Value::Tag(1, Box::new(uint(1_700_000_000u64))),
            Value::Tag(70_000, Box::new(Value::Text(String::new()))),
        ];
        for n in [0u64, 23, 24, 255, 256, 65_535, 65_536, u32::MAX.into(), 1 << 32, u64::MAX] {
            values.push(uint(n));
            values.push(Value::Integer((-1 - i128::from(n)).try_into().unwrap()));
        }
        let floats = [
            0.0,
            -0.0,
            1.0,
            -2.5,
            65504.0,
            65520.0,
            1e-5,
            5.960464477539063e-8,
            6.1e-5,
            0.1,
            1.0e300,
            3.4028234663852886e38,
            1.401298464324817e-45,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            f64::from_bits(0x7ff0_0000_0000_0001),
            f64::from_bits(0x7ff4_0000_0000_0000),
            f64::from_bits(0xfff8_0000_0000_0000),
            f64::from(f32::from_bits(0x7fa0_0000)),
            f64::MIN_POSITIVE,
            1.0 / 3.0,
        ];
        values.extend(floats.iter().map(|x| Value::Float(*x)));
        for e in -30..20 {
            values.push(Value::Float(2f64.powi(e)));
            values.push(Value::Float(3.0 * 2f64.powi(e)));
            values.push(Value::Float(1025.0 * 2f64.powi(e)));
        }
        values.push(Value::Array(values.clone()));
        values.push(map(vec![
            (1, uint(2u8)),
            (3, Value::Array(vec![])),
            (300, Value::Map(vec![])),
        ]));
        for v in &values {
            let mut want = Vec::new();
            ciborium::into_writer(v, &mut want).unwrap();
            assert_eq!(to_vec(v), want, "{v:?}");
        }
    }
}
