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
/// module (wasm/pkg-src/README.md, "Size"). Decoding reads the bytes directly ([`parse`], then
/// typed fields from borrowed slices).
pub(crate) fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(&mut out, value);
    out
}

/// Writes a head of major type `major` and argument `n` in its shortest form (canonical).
pub(crate) fn head(out: &mut Vec<u8>, major: u8, n: u64) {
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

/// Parses exactly one CBOR item that fills all of `bytes` into a value tree (tests only: the
/// decoders read the bytes directly, see [`parse`]).
#[cfg(test)]
pub(crate) fn from_slice(what: &str, bytes: &[u8]) -> Result<Value, DecodeError> {
    parse(what, bytes, Shape { max_entries: usize::MAX, max_items: usize::MAX })?;
    let mut rest = bytes;
    ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_CBOR_DEPTH + 1)
        .map_err(|_| DecodeError::new(what, "ciborium refused what parse accepted"))
}

/// Bounds on a document's shape, checked by [`parse`] from the CBOR heads alone, before any
/// field is decoded or anything allocated.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Shape {
    /// Entries (map) or elements (array) the top-level item may have.
    pub(crate) max_entries: usize,
    /// Data items in the whole document (every head counts: keys, values, tags).
    pub(crate) max_items: usize,
}

/// Where a decoded structure sits (`batch.reports[3]`), formatted only when an error names it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Path<'p> {
    base: &'p str,
    index: Option<usize>,
}

impl<'p> Path<'p> {
    pub(crate) const fn new(base: &'p str) -> Path<'p> {
        Path { base, index: None }
    }

    pub(crate) const fn indexed(base: &'p str, index: usize) -> Path<'p> {
        Path { base, index: Some(index) }
    }

    /// `path.name`, for an error message.
    pub(crate) fn field(&self, name: &str) -> String {
        format!("{self}.{name}")
    }
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.base)?;
        if let Some(i) = self.index {
            write!(f, "[{i}]")?;
        }
        Ok(())
    }
}

/// What is wrong with the bytes themselves (before any field is looked at).
#[derive(Debug)]
enum Malformed {
    Truncated,
    Reserved(usize),
    Indefinite(usize),
    NotUtf8(usize),
    TooDeep,
    TooManyItems(usize),
}

impl Malformed {
    fn reason(&self) -> String {
        match self {
            Malformed::Truncated => "truncated CBOR".to_owned(),
            Malformed::Reserved(at) => format!("invalid CBOR at byte {at}"),
            Malformed::Indefinite(at) => {
                format!("indefinite-length item at byte {at} (v1 uses definite lengths)")
            }
            Malformed::NotUtf8(at) => format!("invalid CBOR at byte {at}: text is not UTF-8"),
            Malformed::TooDeep => format!("nested deeper than {MAX_CBOR_DEPTH} levels"),
            Malformed::TooManyItems(max) => format!("more than {max} CBOR items"),
        }
    }
}

/// A CBOR head: major type, additional information, argument, and its own length in bytes.
#[derive(Clone, Copy, Debug)]
struct Head {
    major: u8,
    info: u8,
    arg: u64,
    len: usize,
}

fn read_head(buf: &[u8], at: usize) -> Result<Head, Malformed> {
    let first = *buf.get(at).ok_or(Malformed::Truncated)?;
    let (major, info) = (first >> 5, first & 0x1f);
    let width = match info {
        0..=23 => 0,
        24 => 1,
        25 => 2,
        26 => 4,
        27 => 8,
        28..=30 => return Err(Malformed::Reserved(at)),
        _ => return Err(Malformed::Indefinite(at)),
    };
    let arg = if width == 0 {
        u64::from(info)
    } else {
        let bytes = buf.get(at + 1..at + 1 + width).ok_or(Malformed::Truncated)?;
        bytes.iter().fold(0u64, |n, b| (n << 8) | u64::from(*b))
    };
    Ok(Head { major, info, arg, len: 1 + width })
}

/// Walks the one item at `at` without building anything; returns where it ends. Nesting of
/// more than [`MAX_CBOR_DEPTH`] containers, more than `max_items` heads (counted into
/// `items`), reserved or indefinite-length heads, lengths past the end and (with `utf8`)
/// text that is not UTF-8 are refused. Linear in the bytes walked, with no recursion.
fn walk(
    buf: &[u8],
    at: usize,
    items: &mut usize,
    max_items: usize,
    utf8: bool,
) -> Result<usize, Malformed> {
    // Items still to read in each open container; level 0 is the item itself.
    let mut left = [0u64; MAX_CBOR_DEPTH + 1];
    let mut depth = 0;
    left[0] = 1;
    let mut pos = at;
    loop {
        while left[depth] == 0 {
            if depth == 0 {
                return Ok(pos);
            }
            depth -= 1;
        }
        left[depth] -= 1;
        *items += 1;
        if *items > max_items {
            return Err(Malformed::TooManyItems(max_items));
        }
        let head = read_head(buf, pos)?;
        pos += head.len;
        let rest = (buf.len() - pos) as u64;
        match head.major {
            2 | 3 => {
                if head.arg > rest {
                    return Err(Malformed::Truncated);
                }
                // Invariant: arg <= rest, which fits in usize.
                let end = pos + head.arg as usize;
                if head.major == 3 && utf8 && std::str::from_utf8(&buf[pos..end]).is_err() {
                    return Err(Malformed::NotUtf8(pos));
                }
                pos = end;
            }
            4 | 5 => {
                let n = if head.major == 4 { Some(head.arg) } else { head.arg.checked_mul(2) };
                // Every element takes at least one byte.
                let n = n.filter(|n| *n <= rest).ok_or(Malformed::Truncated)?;
                if n > 0 {
                    if depth == MAX_CBOR_DEPTH {
                        return Err(Malformed::TooDeep);
                    }
                    depth += 1;
                    left[depth] = n;
                }
            }
            // A tag is followed by the item it tags, at the same level.
            6 => left[depth] += 1,
            _ => {}
        }
    }
}

/// Checks that `bytes` hold exactly one well-formed CBOR item within `shape` (heads only:
/// nothing is allocated or decoded), and returns it for field-by-field reading.
pub(crate) fn parse<'a>(
    what: &str,
    bytes: &'a [u8],
    shape: Shape,
) -> Result<Item<'a>, DecodeError> {
    let fail = |m: Malformed| DecodeError::new(what, m.reason());
    let head = read_head(bytes, 0).map_err(fail)?;
    if matches!(head.major, 4 | 5) && head.arg > shape.max_entries as u64 {
        let kind = if head.major == 4 { "an array" } else { "a map" };
        return Err(DecodeError::new(
            what,
            format!("{kind} of {} entries, at most {} allowed", head.arg, shape.max_entries),
        ));
    }
    let mut items = 0;
    let end = walk(bytes, 0, &mut items, shape.max_items, true).map_err(fail)?;
    if end != bytes.len() {
        return Err(DecodeError::new(
            what,
            format!("{} bytes after the CBOR item", bytes.len() - end),
        ));
    }
    Ok(Item { bytes })
}

/// The encoding of one well-formed CBOR item (a part of what [`parse`] accepted).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Item<'a> {
    bytes: &'a [u8],
}

impl<'a> Item<'a> {
    fn head(&self) -> Result<Head, String> {
        read_head(self.bytes, 0).map_err(|m| m.reason())
    }

    /// The item starting at `at` within `buf`, and where it ends. Scalars and strings (nearly
    /// every item) end where their head says; only containers and tags are walked.
    fn at(buf: &'a [u8], at: usize) -> Result<(Item<'a>, usize), String> {
        let head = read_head(buf, at).map_err(|m| m.reason())?;
        let end = match head.major {
            0 | 1 | 7 => at + head.len,
            2 | 3 => usize::try_from(head.arg)
                .ok()
                .and_then(|n| (at + head.len).checked_add(n))
                .filter(|end| *end <= buf.len())
                .ok_or_else(|| Malformed::Truncated.reason())?,
            _ => walk(buf, at, &mut 0, usize::MAX, false).map_err(|m| m.reason())?,
        };
        Ok((Item { bytes: &buf[at..end] }, end))
    }

    /// What the item is, for error messages ("an array").
    pub(crate) fn kind(&self) -> &'static str {
        match self.head() {
            Ok(h) => match (h.major, h.info) {
                (0 | 1, _) => "an integer",
                (2, _) => "a byte string",
                (3, _) => "text",
                (4, _) => "an array",
                (5, _) => "a map",
                (6, _) => "a tagged item",
                (_, 20 | 21) => "a boolean",
                (_, 22) => "null",
                (_, 25..=27) => "a float",
                _ => "an unsupported item",
            },
            Err(_) => "an unsupported item",
        }
    }

    fn uint(self) -> Result<u64, String> {
        let h = self.head()?;
        match h.major {
            0 => Ok(h.arg),
            1 => Err("expected an unsigned integer, got a negative one".to_owned()),
            _ => Err(format!("expected an unsigned integer, got {}", self.kind())),
        }
    }

    fn payload(self, major: u8, want: &str) -> Result<&'a [u8], String> {
        let h = self.head()?;
        if h.major != major {
            return Err(format!("expected {want}, got {}", self.kind()));
        }
        self.bytes.get(h.len..).ok_or_else(|| Malformed::Truncated.reason())
    }

    fn byte_string(self) -> Result<&'a [u8], String> {
        self.payload(2, "a byte string")
    }

    fn text(self) -> Result<&'a str, String> {
        let bytes = self.payload(3, "text")?;
        std::str::from_utf8(bytes).map_err(|_| "text is not UTF-8".to_owned())
    }

    /// The elements of an array, or the keys and values of a map, in order.
    fn elements(self, major: u8) -> Result<Vec<Item<'a>>, String> {
        let h = self.head()?;
        if h.major != major {
            let want = if major == 4 { "an array" } else { "a map" };
            return Err(format!("expected {want}, got {}", self.kind()));
        }
        let n = if major == 4 { h.arg } else { h.arg.saturating_mul(2) };
        // `parse` checked that every length fits the bytes, so n is small.
        let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0).min(self.bytes.len()));
        let mut pos = h.len;
        for _ in 0..n {
            let (item, end) = Item::at(self.bytes, pos)?;
            out.push(item);
            pos = end;
        }
        Ok(out)
    }

    /// The elements of an array.
    pub(crate) fn array(self) -> Result<Vec<Item<'a>>, String> {
        self.elements(4)
    }

    /// The `(key, value)` pairs of a map.
    pub(crate) fn map_pairs(self) -> Result<Vec<(Item<'a>, Item<'a>)>, String> {
        let flat = self.elements(5)?;
        Ok(flat.chunks_exact(2).map(|kv| (kv[0], kv[1])).collect())
    }
}

/// The entries of a map with unsigned integer keys, for strict field-by-field reading.
pub(crate) struct Fields<'a, 'p> {
    what: Path<'p>,
    entries: Vec<(u64, Item<'a>)>,
}

impl<'a, 'p> Fields<'a, 'p> {
    pub(crate) fn new(what: Path<'p>, item: Item<'a>) -> Result<Fields<'a, 'p>, DecodeError> {
        Fields::read(what, item.bytes, 0).map(|(fields, _)| fields)
    }

    /// The map starting at `at` within `buf` (a part of what [`parse`] accepted), and where
    /// it ends: its entries are read once, and its end is where the last one ends, so a map
    /// read this way is not walked a second time.
    fn read(
        what: Path<'p>,
        buf: &'a [u8],
        at: usize,
    ) -> Result<(Fields<'a, 'p>, usize), DecodeError> {
        let bad = |r: String| DecodeError::new(what.to_string(), r);
        let h = read_head(buf, at).map_err(|m| bad(m.reason()))?;
        if h.major != 5 {
            let kind = Item { bytes: &buf[at..] }.kind();
            return Err(bad(format!("expected a map, got {kind}")));
        }
        let mut entries = Vec::with_capacity(usize::try_from(h.arg).unwrap_or(0).min(64));
        let mut pos = at + h.len;
        for _ in 0..h.arg {
            let (key, end) = Item::at(buf, pos).map_err(bad)?;
            let key = key.uint().map_err(|_| {
                DecodeError::new(what.to_string(), "map key is not an unsigned integer")
            })?;
            let (value, end) = Item::at(buf, end).map_err(bad)?;
            entries.push((key, value));
            pos = end;
        }
        if let (Some(key), _) = first_duplicate(&entries) {
            return Err(DecodeError::new(what.to_string(), format!("duplicate key {key}")));
        }
        Ok((Fields { what, entries }, pos))
    }

    fn error(&self, name: &str, reason: String) -> DecodeError {
        DecodeError::new(self.what.field(name), reason)
    }

    pub(crate) fn take(&mut self, key: u64) -> Option<Item<'a>> {
        let at = self.entries.iter().position(|(k, _)| *k == key)?;
        Some(self.entries.swap_remove(at).1)
    }

    pub(crate) fn required(&mut self, key: u64, name: &str) -> Result<Item<'a>, DecodeError> {
        self.take(key).ok_or_else(|| self.error(name, "missing".to_owned()))
    }

    pub(crate) fn uint(&mut self, key: u64, name: &str) -> Result<u64, DecodeError> {
        let v = self.required(key, name)?;
        v.uint().map_err(|r| self.error(name, r))
    }

    pub(crate) fn opt_uint(&mut self, key: u64, name: &str) -> Result<Option<u64>, DecodeError> {
        self.take(key).map(|v| v.uint().map_err(|r| self.error(name, r))).transpose()
    }

    pub(crate) fn bytes<const N: usize>(
        &mut self,
        key: u64,
        name: &str,
    ) -> Result<[u8; N], DecodeError> {
        let b = self.byte_string(key, name)?;
        b.try_into().map_err(|_| self.error(name, format!("expected {N} bytes, got {}", b.len())))
    }

    pub(crate) fn byte_string(&mut self, key: u64, name: &str) -> Result<&'a [u8], DecodeError> {
        let v = self.required(key, name)?;
        v.byte_string().map_err(|r| self.error(name, r))
    }

    pub(crate) fn text(&mut self, key: u64, name: &str) -> Result<&'a str, DecodeError> {
        let v = self.required(key, name)?;
        v.text().map_err(|r| self.error(name, r))
    }

    pub(crate) fn array(
        &mut self,
        key: u64,
        name: &str,
        max: usize,
    ) -> Result<Vec<Item<'a>>, DecodeError> {
        let Some(v) = self.take(key) else { return Ok(Vec::new()) };
        let h = v.head().map_err(|r| self.error(name, r))?;
        if h.major == 4 && h.arg > max as u64 {
            return Err(self.error(name, format!("{} items, at most {max} allowed", h.arg)));
        }
        v.array().map_err(|r| self.error(name, r))
    }

    /// An array of maps (`max` at most), read one map at a time with [`Maps::next`]: each is
    /// read once, where [`Fields::array`] then [`Fields::new`] would walk each map twice.
    pub(crate) fn maps(
        &mut self,
        key: u64,
        name: &str,
        max: usize,
    ) -> Result<Maps<'a>, DecodeError> {
        let Some(v) = self.take(key) else { return Ok(Maps { buf: &[], pos: 0, left: 0 }) };
        let h = v.head().map_err(|r| self.error(name, r))?;
        if h.major != 4 {
            return Err(self.error(name, format!("expected an array, got {}", v.kind())));
        }
        if h.arg > max as u64 {
            return Err(self.error(name, format!("{} items, at most {max} allowed", h.arg)));
        }
        // Invariant: arg <= max, a usize.
        Ok(Maps { buf: v.bytes, pos: h.len, left: h.arg as usize })
    }

    /// Fails if any key is left (for structures that must not grow within a version).
    pub(crate) fn finish_strict(self) -> Result<(), DecodeError> {
        match self.entries.first() {
            None => Ok(()),
            Some((k, _)) => {
                Err(DecodeError::new(self.what.to_string(), format!("unknown key {k}")))
            }
        }
    }

    /// The path of this map, for an error message.
    pub(crate) fn what(&self) -> String {
        self.what.to_string()
    }
}

/// The maps of an array, in order (from [`Fields::maps`]).
pub(crate) struct Maps<'a> {
    buf: &'a [u8],
    pos: usize,
    left: usize,
}

impl<'a> Maps<'a> {
    /// Maps not read yet.
    pub(crate) fn len(&self) -> usize {
        self.left
    }

    /// The next map's fields, named `what` in errors; `None` after the last.
    pub(crate) fn next<'p>(
        &mut self,
        what: Path<'p>,
    ) -> Option<Result<Fields<'a, 'p>, DecodeError>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        Some(Fields::read(what, self.buf, self.pos).map(|(fields, end)| {
            self.pos = end;
            fields
        }))
    }
}

/// The smallest key that occurs twice, and how many key comparisons finding it took.
///
/// Linear for maps in key order (what every Vantage encoder writes: one pass); other orders
/// are sorted first, O(n log n). Never quadratic: an attacker's 16k-key map costs a pass or
/// a sort, not 16k x 16k comparisons.
fn first_duplicate<V>(entries: &[(u64, V)]) -> (Option<u64>, usize) {
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

/// An unsigned integer item, or an error naming `path`.
pub(crate) fn as_uint(path: &str, v: Item<'_>) -> Result<u64, DecodeError> {
    v.uint().map_err(|r| DecodeError::new(path, r))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANY: Shape = Shape { max_entries: usize::MAX, max_items: usize::MAX };

    fn fields<'a>(bytes: &'a [u8]) -> Result<Fields<'a, 'static>, DecodeError> {
        Fields::new(Path::new("t"), parse("t", bytes, ANY)?)
    }

    #[test]
    fn strict_reader_rejects_trailing_bytes_depth_and_duplicates() {
        let v = map(vec![(1, uint(5u8)), (2, Value::Text("x".into()))]);
        let mut bytes = to_vec(&v);
        assert_eq!(from_slice("t", &bytes).unwrap(), v);
        let mut f = fields(&bytes).unwrap();
        assert_eq!(f.uint(1, "one").unwrap(), 5);
        assert_eq!(f.text(2, "two").unwrap(), "x");
        f.finish_strict().unwrap();
        bytes.push(0);
        assert_eq!(parse("t", &bytes, ANY).unwrap_err().reason(), "1 bytes after the CBOR item");
        let deep = [0x81u8; 20].iter().copied().chain([0x01]).collect::<Vec<_>>();
        assert!(parse("t", &deep, ANY).unwrap_err().reason().contains("nested deeper"));
        // Eight levels are fine, nine are not.
        let eight = [0x81u8; 8].iter().copied().chain([0x01]).collect::<Vec<_>>();
        parse("t", &eight, ANY).unwrap();
        let nine = [0x81u8; 9].iter().copied().chain([0x01]).collect::<Vec<_>>();
        assert!(parse("t", &nine, ANY).unwrap_err().reason().contains("nested deeper"));
        let dup = to_vec(&Value::Map(vec![(uint(1u8), uint(1u8)), (uint(1u8), uint(2u8))]));
        assert_eq!(fields(&dup).err().unwrap().to_string(), "t: duplicate key 1");
        assert!(
            parse("t", &[0x5a, 0xff, 0xff, 0xff, 0xff], ANY)
                .unwrap_err()
                .reason()
                .contains("truncated")
        );
    }

    #[test]
    fn heads_are_checked_before_anything_is_built() {
        // Lengths past the end, reserved and indefinite heads, bad UTF-8 anywhere.
        for (bytes, want) in [
            (vec![0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], "truncated CBOR"),
            (vec![0xbb, 0x80, 0, 0, 0, 0, 0, 0, 0], "truncated CBOR"),
            (vec![0x1c], "invalid CBOR at byte 0"),
            (vec![0x9f, 0x01, 0xff], "indefinite-length item at byte 0"),
            (vec![0x82, 0x01, 0x62, 0xc3, 0x28], "invalid CBOR at byte 3: text is not UTF-8"),
            (vec![], "truncated CBOR"),
        ] {
            let err = parse("t", &bytes, ANY).unwrap_err();
            assert!(err.reason().starts_with(want), "{bytes:02x?}: {err}");
        }
        // Shape: entries of the top-level item and items overall.
        let many = to_vec(&Value::Map((0..100u64).map(|k| (uint(k), Value::Null)).collect()));
        let err = parse("t", &many, Shape { max_entries: 16, max_items: 1000 }).unwrap_err();
        assert_eq!(err.to_string(), "t: a map of 100 entries, at most 16 allowed");
        let err = parse("t", &many, Shape { max_entries: 100, max_items: 150 }).unwrap_err();
        assert_eq!(err.to_string(), "t: more than 150 CBOR items");
        parse("t", &many, Shape { max_entries: 100, max_items: 201 }).unwrap();
        // Tags count as items, never as depth.
        let tagged: Vec<u8> = std::iter::repeat_n(0xc0u8, 1000).chain([0x01]).collect();
        parse("t", &tagged, ANY).unwrap();
        assert!(parse("t", &tagged, Shape { max_entries: 1, max_items: 500 }).is_err());
    }

    #[test]
    fn field_types_are_named() {
        let v = map(vec![
            (1, Value::Integer((-3).into())),
            (2, Value::Float(1.5)),
            (3, Value::Array(vec![uint(1u8)])),
            (4, Value::Bytes(vec![1, 2])),
            (5, Value::Tag(1, Box::new(uint(1u8)))),
            (6, Value::Bool(true)),
            (7, Value::Null),
        ]);
        let bytes = to_vec(&v);
        let mut f = fields(&bytes).unwrap();
        let e = |r: Result<u64, DecodeError>| r.unwrap_err().to_string();
        assert_eq!(e(f.uint(1, "a")), "t.a: expected an unsigned integer, got a negative one");
        assert_eq!(e(f.uint(2, "b")), "t.b: expected an unsigned integer, got a float");
        assert_eq!(e(f.uint(3, "c")), "t.c: expected an unsigned integer, got an array");
        assert_eq!(f.bytes::<2>(4, "d").unwrap(), [1, 2]);
        assert_eq!(e(f.uint(5, "e")), "t.e: expected an unsigned integer, got a tagged item");
        assert_eq!(f.text(6, "f").unwrap_err().to_string(), "t.f: expected text, got a boolean");
        assert_eq!(f.array(7, "g", 4).unwrap_err().to_string(), "t.g: expected an array, got null");
        let arr = to_vec(&map(vec![(1, Value::Array(vec![uint(1u8); 5]))]));
        let err = fields(&arr).unwrap().array(1, "list", 4).unwrap_err().to_string();
        assert_eq!(err, "t.list: 5 items, at most 4 allowed");
        let not_map = to_vec(&Value::Array(vec![]));
        assert_eq!(fields(&not_map).err().unwrap().to_string(), "t: expected a map, got an array");
        let text_key = to_vec(&Value::Map(vec![(Value::Text("k".into()), uint(1u8))]));
        assert_eq!(
            fields(&text_key).err().unwrap().to_string(),
            "t: map key is not an unsigned integer"
        );
    }

    #[test]
    fn duplicate_keys_are_found_in_any_order() {
        let unordered = to_vec(&Value::Map(vec![
            (uint(3u8), uint(0u8)),
            (uint(1u8), uint(0u8)),
            (uint(2u8), uint(0u8)),
        ]));
        let mut f = fields(&unordered).unwrap();
        assert_eq!(f.uint(1, "one").unwrap(), 0);
        let dup = to_vec(&Value::Map(vec![
            (uint(9u8), uint(0u8)),
            (uint(4u8), uint(0u8)),
            (uint(7u8), uint(0u8)),
            (uint(4u8), uint(1u8)),
        ]));
        assert_eq!(fields(&dup).err().unwrap().to_string(), "t: duplicate key 4");
    }

    /// The duplicate-key check of an attacker's many-key map is not quadratic: comparisons for
    /// 16k keys stay within n log2 n (a quadratic check needs n^2 / 2 = 134M), and 4x the keys
    /// cost at most ~5x the comparisons.
    #[test]
    fn duplicate_key_check_is_near_linear() {
        // 0: in key order, 1: reversed, 2: scrambled (an odd multiplier permutes 0..2^k).
        let entries = |n: u64, order: u8| -> Vec<(u64, ())> {
            (0..n)
                .map(|k| match order {
                    0 => k,
                    1 => n - 1 - k,
                    _ => k.wrapping_mul(40_503) % n,
                })
                .map(|k| (k, ()))
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
        assert_eq!(fields(&bytes).unwrap().finish_strict().unwrap_err().reason(), "unknown key 0");
    }

    #[test]
    fn field_errors_carry_the_path() {
        let v = to_vec(&map(vec![(1, Value::Text("no".into()))]));
        let mut f =
            Fields::new(Path::indexed("batch.reports", 3), parse("t", &v, ANY).unwrap()).unwrap();
        assert_eq!(
            f.uint(1, "seq").unwrap_err().to_string(),
            "batch.reports[3].seq: expected an unsigned integer, got text"
        );
        assert_eq!(
            f.uint(2, "created_at").unwrap_err().to_string(),
            "batch.reports[3].created_at: missing"
        );
    }

    #[test]
    fn maps_of_an_array_are_read_in_order_each_once() {
        // Maps with nested containers (walked) and strings (skipped by their head), then a
        // map whose end is where its last entry ends.
        let inner = |i: u64| {
            map(vec![
                (1, uint(i)),
                (2, Value::Array(vec![uint(1u8), map(vec![(1, Value::Text("x".into()))])])),
                (3, Value::Text("t".repeat(30))),
            ])
        };
        let v = to_vec(&map(vec![(5, Value::Array((0..3).map(inner).collect())), (6, uint(9u8))]));
        let mut f = fields(&v).unwrap();
        let mut maps = f.maps(5, "list", 4).unwrap();
        assert_eq!(maps.len(), 3);
        let mut seen = Vec::new();
        while let Some(m) = maps.next(Path::indexed("t.list", seen.len())) {
            let mut m = m.unwrap();
            seen.push(m.uint(1, "n").unwrap());
            assert_eq!(m.text(3, "s").unwrap(), "t".repeat(30));
        }
        assert_eq!(seen, [0, 1, 2]);
        assert_eq!(f.uint(6, "after").unwrap(), 9);
        // Absent: no maps. Too many, not an array, an element that is not a map: named.
        assert_eq!(fields(&v).unwrap().maps(7, "none", 4).unwrap().len(), 0);
        let err = fields(&v).unwrap().maps(5, "list", 2).err().unwrap().to_string();
        assert_eq!(err, "t.list: 3 items, at most 2 allowed");
        let err = fields(&v).unwrap().maps(6, "after", 2).err().unwrap().to_string();
        assert_eq!(err, "t.after: expected an array, got an integer");
        let mixed = to_vec(&map(vec![(5, Value::Array(vec![inner(0), uint(1u8)]))]));
        let mut f = fields(&mixed).unwrap();
        let mut maps = f.maps(5, "list", 4).unwrap();
        maps.next(Path::indexed("t.list", 0)).unwrap().unwrap();
        let err = maps.next(Path::indexed("t.list", 1)).unwrap().err().unwrap().to_string();
        assert_eq!(err, "t.list[1]: expected a map, got an integer");
        assert!(maps.next(Path::indexed("t.list", 2)).is_none());
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
