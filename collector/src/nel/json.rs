//! The one-pass reader behind [`parse_upload`](super::parse_upload): the fields it looks at,
//! as `serde_json::Value` would hold them (a repeated name: the last one wins; numbers typed
//! as `Value` types them), everything else parsed and checked as JSON (with serde_json's
//! nesting limit) and dropped. Strings borrow from the body unless they have escapes. Nothing
//! is refused while reading but invalid JSON, so invalid JSON anywhere is "not JSON" first, as
//! with a value tree; `parse_upload` then reads the entries in order. The unit tests below hold
//! it to `serde_json::Value` (valid JSON both or neither, the same value in every field kept).
//!
//! It is written by hand rather than through serde's visitors: a browser upload is mostly
//! strings the collector skips, and scanning them byte by byte here costs a fraction of
//! serde_json's per-value dispatch (`docs/performance.md`, nineteenth round).

use std::borrow::Cow;

/// The top level: `None` when it is not an array.
pub(super) struct Upload<'a>(pub(super) Option<Vec<Option<Entry<'a>>>>);

/// One entry's fields (`None` entry: not an object).
#[derive(Default)]
pub(super) struct Entry<'a> {
    pub(super) ty: Option<Lite<'a>>,
    pub(super) age: Option<Lite<'a>>,
    pub(super) url: Option<Lite<'a>>,
    pub(super) body: Option<Lite<'a>>,
}

/// An entry's `body` object: the fields read.
#[derive(Default)]
pub(super) struct Body<'a> {
    pub(super) ty: Option<Lite<'a>>,
    pub(super) phase: Option<Lite<'a>>,
    pub(super) sampling_fraction: Option<Lite<'a>>,
    pub(super) elapsed_time: Option<Lite<'a>>,
    pub(super) status_code: Option<Lite<'a>>,
}

/// A JSON value as far as a field read needs it.
pub(super) enum Lite<'a> {
    Null,
    /// Another kind of value: a boolean, an array, an object (not a `body`).
    Other,
    /// A number that `Value` would hold as a non-negative integer.
    Unsigned(u64),
    /// A negative integer.
    Signed(i64),
    Float(f64),
    Str(Cow<'a, str>),
    /// An object in the place of an entry's `body`.
    Body(Box<Body<'a>>),
}

impl Lite<'_> {
    pub(super) fn as_u64(&self) -> Option<u64> {
        match self {
            Lite::Unsigned(n) => Some(*n),
            _ => None,
        }
    }

    pub(super) fn as_f64(&self) -> Option<f64> {
        match self {
            Lite::Unsigned(n) => Some(*n as f64),
            Lite::Signed(n) => Some(*n as f64),
            Lite::Float(n) => Some(*n),
            _ => None,
        }
    }
}

/// Why a body is not JSON, and where: a message in serde_json's words, line and column.
#[derive(Debug, PartialEq)]
pub(super) struct NotJson {
    what: &'static str,
    line: usize,
    column: usize,
}

impl std::fmt::Display for NotJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at line {} column {}", self.what, self.line, self.column)
    }
}

/// Why a body was refused while reading it.
#[derive(Debug, PartialEq)]
pub(super) enum ReadError {
    NotJson(NotJson),
    /// More than the token bound: `{`, `[`, `:` and `,` outside strings.
    Tokens,
    /// More than the entry bound in the top-level array.
    Entries,
}

/// A control character in a string, which JSON requires escaped.
const CONTROL: &str = "control character (\\u0000-\\u001F) found while parsing a string";

/// The bytes that end a run of plain string content: `"`, `\\` and control characters.
const STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// serde_json's nesting limit: a value tree of `Value` refuses the 128th nested array or
/// object, and so does this reader.
const NESTING_LIMIT: u32 = 128;

/// Reads a whole body: the top-level array's entries, or `None` when the top level is valid
/// JSON but not an array. The reader stops at the `max_tokens + 1`th token (`{`, `[`, `:` or
/// `,`) and at the `max_entries + 1`th entry, so what a body can make it do is bounded by
/// those as well as by its length.
pub(super) fn read(
    body: &[u8],
    max_tokens: usize,
    max_entries: usize,
) -> Result<Upload<'_>, ReadError> {
    // Invalid UTF-8 anywhere is invalid JSON (outside a string it is a syntax error, inside
    // one serde_json refuses it too), so it is checked once for the whole body; from then on
    // every string is a slice of valid UTF-8 cut at ASCII quotes.
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        Err(e) => {
            let r = Reader { text: "", b: body, i: e.valid_up_to(), ..Reader::new("", 0) };
            return Err(r.error("invalid unicode code point"));
        }
    };
    let mut r = Reader::new(text, max_tokens);
    r.ws();
    let upload = if r.peek() == Some(b'[') {
        r.open()?;
        let mut entries = Vec::new();
        if r.first_element()? {
            loop {
                r.ws();
                let entry = if r.peek() == Some(b'{') {
                    Some(r.entry()?)
                } else {
                    r.value(Kind::Skip)?;
                    None
                };
                entries.push(entry);
                if !r.next_element()? {
                    break;
                }
                if entries.len() == max_entries {
                    return Err(ReadError::Entries);
                }
            }
        }
        Upload(Some(entries))
    } else {
        r.value(Kind::Skip)?;
        Upload(None)
    };
    r.ws();
    if r.i < r.b.len() {
        return Err(r.error("trailing characters"));
    }
    Ok(upload)
}

/// What a value is read into.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Checked and dropped.
    Skip,
    /// A field's value: an object in it is [`Lite::Other`].
    Plain,
    /// An entry's `body`: an object in it is [`Lite::Body`].
    Body,
}

struct Reader<'a> {
    /// The body as text (valid UTF-8), `b` its bytes.
    text: &'a str,
    b: &'a [u8],
    i: usize,
    /// Arrays and objects that may still be opened inside the current one.
    depth: u32,
    /// Tokens that may still be read.
    tokens: usize,
}

/// A reader's error: not JSON, or over a bound.
type Step<T> = Result<T, ReadError>;

impl<'a> Reader<'a> {
    fn new(text: &'a str, max_tokens: usize) -> Reader<'a> {
        Reader { text, b: text.as_bytes(), i: 0, depth: NESTING_LIMIT, tokens: max_tokens }
    }

    /// Counts one token against the bound.
    fn token(&mut self) -> Step<()> {
        self.tokens = self.tokens.checked_sub(1).ok_or(ReadError::Tokens)?;
        Ok(())
    }

    fn error(&self, what: &'static str) -> ReadError {
        let before = &self.b[..self.i.min(self.b.len())];
        let line = 1 + before.iter().filter(|&&c| c == b'\n').count();
        let column = before.len() - before.iter().rposition(|&c| c == b'\n').map_or(0, |n| n + 1);
        ReadError::NotJson(NotJson { what, line, column: column + 1 })
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    /// Steps over the `[` or `{` at the cursor, one level deeper.
    fn open(&mut self) -> Step<()> {
        self.token()?;
        self.depth -= 1;
        if self.depth == 0 {
            return Err(self.error("recursion limit exceeded"));
        }
        self.i += 1;
        Ok(())
    }

    /// Steps over the `]` or `}` at the cursor, one level up.
    fn close(&mut self) {
        self.i += 1;
        self.depth += 1;
    }

    /// After `[`: true if an element follows, false (past the `]`) if the array is empty.
    fn first_element(&mut self) -> Step<bool> {
        self.ws();
        if self.peek() == Some(b']') {
            self.close();
            return Ok(false);
        }
        Ok(true)
    }

    /// After an array's element or an object's member (`close`: its `]` or `}`): true past a
    /// `,`, false past the closing byte.
    fn separator(&mut self, close: u8) -> Step<bool> {
        self.ws();
        match self.peek() {
            Some(b',') => {
                self.token()?;
                self.i += 1;
                self.ws();
                if self.peek() == Some(close) {
                    return Err(self.error("trailing comma"));
                }
                Ok(true)
            }
            Some(c) if c == close => {
                self.close();
                Ok(false)
            }
            Some(_) if close == b']' => Err(self.error("expected `,` or `]`")),
            Some(_) => Err(self.error("expected `,` or `}`")),
            None if close == b']' => Err(self.error("EOF while parsing a list")),
            None => Err(self.error("EOF while parsing an object")),
        }
    }

    /// After an element: true past a `,`, false past the closing `]`.
    fn next_element(&mut self) -> Step<bool> {
        self.separator(b']')
    }

    /// After `{`: the first key, or `None` (past the `}`) if the object is empty.
    fn first_key(&mut self) -> Step<Option<Cow<'a, str>>> {
        self.ws();
        if self.peek() == Some(b'}') {
            self.close();
            return Ok(None);
        }
        self.key().map(Some)
    }

    /// After a member's value: the next key past a `,`, or `None` past the closing `}`.
    fn next_key(&mut self) -> Step<Option<Cow<'a, str>>> {
        if self.separator(b'}')? { self.key().map(Some) } else { Ok(None) }
    }

    /// A member's key and its `:`, the cursor on the whitespace before the value.
    fn key(&mut self) -> Step<Cow<'a, str>> {
        match self.peek() {
            Some(b'"') => {}
            None => return Err(self.error("EOF while parsing an object")),
            Some(_) => return Err(self.error("key must be a string")),
        }
        let key = self.string()?;
        self.ws();
        match self.peek() {
            Some(b':') => {
                self.token()?;
                self.i += 1;
                Ok(key)
            }
            None => Err(self.error("EOF while parsing an object")),
            Some(_) => Err(self.error("expected `:`")),
        }
    }

    /// One entry of the top-level array, the cursor on its `{`.
    fn entry(&mut self) -> Step<Entry<'a>> {
        self.open()?;
        let mut entry = Entry::default();
        let mut key = self.first_key()?;
        while let Some(k) = key {
            match &*k {
                "type" => entry.ty = Some(self.value(Kind::Plain)?),
                "age" => entry.age = Some(self.value(Kind::Plain)?),
                "url" => entry.url = Some(self.value(Kind::Plain)?),
                "body" => entry.body = Some(self.value(Kind::Body)?),
                _ => {
                    self.value(Kind::Skip)?;
                }
            }
            key = self.next_key()?;
        }
        Ok(entry)
    }

    /// An entry's `body` object, the cursor on its `{`.
    fn body(&mut self) -> Step<Body<'a>> {
        self.open()?;
        let mut body = Body::default();
        let mut key = self.first_key()?;
        while let Some(k) = key {
            let slot = match &*k {
                "type" => &mut body.ty,
                "phase" => &mut body.phase,
                "sampling_fraction" => &mut body.sampling_fraction,
                "elapsed_time" => &mut body.elapsed_time,
                "status_code" => &mut body.status_code,
                _ => {
                    self.value(Kind::Skip)?;
                    key = self.next_key()?;
                    continue;
                }
            };
            *slot = Some(self.value(Kind::Plain)?);
            key = self.next_key()?;
        }
        Ok(body)
    }

    /// One value after optional whitespace.
    fn value(&mut self, kind: Kind) -> Step<Lite<'a>> {
        self.ws();
        match self.peek() {
            None => Err(self.error("EOF while parsing a value")),
            Some(b'"') => {
                let s = self.string()?;
                Ok(if kind == Kind::Skip { Lite::Other } else { Lite::Str(s) })
            }
            Some(b'{') if kind == Kind::Body => Ok(Lite::Body(Box::new(self.body()?))),
            Some(b'{') => {
                self.open()?;
                let mut key = self.first_key()?;
                while key.is_some() {
                    self.value(Kind::Skip)?;
                    key = self.next_key()?;
                }
                Ok(Lite::Other)
            }
            Some(b'[') => {
                self.open()?;
                if self.first_element()? {
                    loop {
                        self.value(Kind::Skip)?;
                        if !self.next_element()? {
                            break;
                        }
                    }
                }
                Ok(Lite::Other)
            }
            Some(b't') => self.literal(b"true", Lite::Other),
            Some(b'f') => self.literal(b"false", Lite::Other),
            Some(b'n') => self.literal(b"null", Lite::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expected value")),
        }
    }

    fn literal(&mut self, word: &[u8], lite: Lite<'a>) -> Step<Lite<'a>> {
        for &c in word {
            match self.peek() {
                Some(x) if x == c => self.i += 1,
                None => return Err(self.error("EOF while parsing a value")),
                Some(_) => return Err(self.error("expected ident")),
            }
        }
        Ok(lite)
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// The digits a fraction or an exponent must have at least one of.
    fn required_digits(&mut self) -> Step<()> {
        if self.digits() > 0 {
            return Ok(());
        }
        Err(self.error(match self.peek() {
            None => "EOF while parsing a value",
            Some(_) => "invalid number",
        }))
    }

    /// A number, typed as `Value` types it: an integer that fits `u64` (non-negative) or `i64`
    /// (negative), else a float, correctly rounded (serde_json's `float_roundtrip`, which the
    /// collector builds with); `-0` is the float -0.0; a float too large to hold is an error.
    fn number(&mut self) -> Step<Lite<'a>> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let int_start = self.i;
        match self.peek() {
            Some(b'0') => {
                self.i += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return Err(self.error("invalid number"));
                }
            }
            Some(b'1'..=b'9') => {
                self.digits();
            }
            None => return Err(self.error("EOF while parsing a value")),
            Some(_) => return Err(self.error("invalid number")),
        }
        let int_end = self.i;
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.required_digits()?;
            float = true;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.required_digits()?;
            float = true;
        }
        if !float {
            let digits = &self.text[int_start..int_end];
            if let Ok(n) = digits.parse::<u64>() {
                if !negative {
                    return Ok(Lite::Unsigned(n));
                }
                if n != 0 && n <= 1 << 63 {
                    return Ok(Lite::Signed((n as i64).wrapping_neg()));
                }
            }
        }
        match self.text[start..self.i].parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Lite::Float(n)),
            _ => {
                self.i = start;
                Err(self.error("number out of range"))
            }
        }
    }

    /// A string, the cursor on its opening quote: borrowed from the body when it has no
    /// escapes, else decoded.
    fn string(&mut self) -> Step<Cow<'a, str>> {
        self.i += 1;
        let start = self.i;
        // The first quote, backslash or control character, one table lookup a byte.
        let end = self.b[start..]
            .iter()
            .position(|&c| STOP[usize::from(c)])
            .map_or(self.b.len(), |n| start + n);
        if let Some(0..=0x1f) = self.b.get(end) {
            self.i = end;
            return Err(self.error(CONTROL));
        }
        self.i = end;
        match self.peek() {
            Some(b'"') => {
                self.i += 1;
                return Ok(Cow::Borrowed(&self.text[start..end]));
            }
            Some(_) => {}
            None => return Err(self.error("EOF while parsing a string")),
        }
        let mut out = String::from(&self.text[start..self.i]);
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = match self.peek() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.i += 1;
                            out.push(self.unicode_escape()?);
                            continue;
                        }
                        None => return Err(self.error("EOF while parsing a string")),
                        Some(_) => return Err(self.error("invalid escape")),
                    };
                    self.i += 1;
                    out.push(c);
                }
                Some(0..=0x1f) => {
                    return Err(self.error(CONTROL));
                }
                Some(_) => {
                    // Copy up to the next quote, backslash or control character at once.
                    let from = self.i;
                    while let Some(c) = self.peek() {
                        if STOP[usize::from(c)] {
                            break;
                        }
                        self.i += 1;
                    }
                    out.push_str(&self.text[from..self.i]);
                }
                None => return Err(self.error("EOF while parsing a string")),
            }
        }
    }

    /// Four hex digits after `\u`.
    fn hex4(&mut self) -> Step<u16> {
        let mut n = 0u16;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                None => return Err(self.error("EOF while parsing a string")),
                Some(_) => return Err(self.error("invalid escape")),
            };
            n = n * 16 + u16::from(d);
            self.i += 1;
        }
        Ok(n)
    }

    /// The character of a `\uXXXX` escape (the cursor after the `u`): a surrogate pair makes
    /// one character, and a lone surrogate is an error, as serde_json makes it for a string.
    fn unicode_escape(&mut self) -> Step<char> {
        let first = self.hex4()?;
        let code = match first {
            0xDC00..=0xDFFF => return Err(self.error("lone leading surrogate in hex escape")),
            0xD800..=0xDBFF => {
                if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                    return Err(self.error("lone leading surrogate in hex escape"));
                }
                self.i += 2;
                let second = self.hex4()?;
                if !(0xDC00..=0xDFFF).contains(&second) {
                    return Err(self.error("lone leading surrogate in hex escape"));
                }
                0x10000 + ((u32::from(first) - 0xD800) << 10) + (u32::from(second) - 0xDC00)
            }
            n => u32::from(n),
        };
        char::from_u32(code).ok_or_else(|| self.error("invalid unicode code point"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// True if `lite` holds what `value` holds, as far as the reader keeps it.
    fn same(lite: Option<&Lite<'_>>, value: Option<&Value>, body: bool) -> bool {
        match (lite, value) {
            (None, None) => true,
            (Some(Lite::Null), Some(Value::Null)) => true,
            (Some(Lite::Other), Some(Value::Bool(_) | Value::Array(_))) => true,
            (Some(Lite::Other), Some(Value::Object(_))) => !body,
            (Some(Lite::Unsigned(n)), Some(Value::Number(v))) => v.as_u64() == Some(*n),
            (Some(Lite::Signed(n)), Some(Value::Number(v))) => {
                v.as_u64().is_none() && v.as_i64() == Some(*n)
            }
            (Some(Lite::Float(n)), Some(Value::Number(v))) => {
                v.is_f64() && v.as_f64().map(f64::to_bits) == Some(n.to_bits())
            }
            (Some(Lite::Str(s)), Some(Value::String(v))) => s == v,
            (Some(Lite::Body(b)), Some(Value::Object(v))) => body && same_body(b, v),
            _ => false,
        }
    }

    fn same_body(b: &Body<'_>, v: &Map<String, Value>) -> bool {
        same(b.ty.as_ref(), v.get("type"), false)
            && same(b.phase.as_ref(), v.get("phase"), false)
            && same(b.sampling_fraction.as_ref(), v.get("sampling_fraction"), false)
            && same(b.elapsed_time.as_ref(), v.get("elapsed_time"), false)
            && same(b.status_code.as_ref(), v.get("status_code"), false)
    }

    /// The reader agrees with a `serde_json::Value` parse: valid JSON both or neither, the
    /// same top-level shape, and the same value in every field it keeps.
    fn agrees(body: &[u8]) -> Result<(), String> {
        let lite = read(body, usize::MAX, usize::MAX);
        let value = serde_json::from_slice::<Value>(body);
        let (lite, value) = match (lite, value) {
            (Err(_), Err(_)) => return Ok(()),
            (Ok(l), Ok(v)) => (l, v),
            (l, v) => {
                return Err(format!("valid JSON differs: {:?} vs {:?}", l.is_ok(), v.is_ok()));
            }
        };
        let (Some(entries), Value::Array(values)) = (&lite.0, &value) else {
            return if lite.0.is_none() && !value.is_array() {
                Ok(())
            } else {
                Err("top level differs".into())
            };
        };
        if entries.len() != values.len() {
            return Err("entry count differs".into());
        }
        for (i, (e, v)) in entries.iter().zip(values).enumerate() {
            match (e, v) {
                (None, v) if !v.is_object() => {}
                (Some(e), Value::Object(v)) => {
                    let ok = same(e.ty.as_ref(), v.get("type"), false)
                        && same(e.age.as_ref(), v.get("age"), false)
                        && same(e.url.as_ref(), v.get("url"), false)
                        && same(e.body.as_ref(), v.get("body"), true);
                    if !ok {
                        return Err(format!("entry {i} differs"));
                    }
                }
                _ => return Err(format!("entry {i}: object or not differs")),
            }
        }
        Ok(())
    }

    /// JSON-ish text from the names and value kinds the reader cares about: repeated names,
    /// escapes, every number form, nesting, and now and then a syntax error.
    fn text() -> impl Strategy<Value = String> {
        let name = prop_oneof![
            Just("type"),
            Just("age"),
            Just("url"),
            Just("body"),
            Just("phase"),
            Just("sampling_fraction"),
            Just("elapsed_time"),
            Just("status_code"),
            Just("typ\\u0065"),
            Just("x"),
        ];
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("0".to_string()),
            Just("-0".to_string()),
            Just("-1".to_string()),
            Just("1.5".to_string()),
            Just("1e3".to_string()),
            Just("-0.0".to_string()),
            Just("18446744073709551615".to_string()),
            Just("18446744073709551616".to_string()),
            Just("-9223372036854775809".to_string()),
            Just("1e400".to_string()),
            Just("\"network-error\"".to_string()),
            Just("\"network-\\u0065rror\"".to_string()),
            Just("\"https://a.example/\"".to_string()),
            Just("\"dns\"".to_string()),
            Just("\"\\ud800\"".to_string()),
            Just("\"\\udc00\"".to_string()),
            Just("\"\\ud83d\\ude00\"".to_string()),
            Just("\"\\ud800\\u0041\"".to_string()),
            Just("\"a\\tb\\\"c\\/\\u00e9\"".to_string()),
            Just("\"\u{e9}\\n\u{1f600}\"".to_string()),
            Just("1.0e-2".to_string()),
            Just("1E+2".to_string()),
            Just("-9223372036854775808".to_string()),
            Just("123456789012345678901234567890".to_string()),
            Just("\"\"".to_string()),
            Just("[".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| n.to_string()),
        ];
        leaf.prop_recursive(4, 64, 6, move |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                proptest::collection::vec((name.clone(), inner), 0..7).prop_map(|fields| {
                    let fields: Vec<String> =
                        fields.into_iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", fields.join(","))
                }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        #[test]
        fn reads_what_a_json_value_holds(body in text()) {
            prop_assert_eq!(agrees(body.as_bytes()), Ok(()), "{}", body);
        }

        /// Near-valid bodies: one byte of a generated text replaced, removed or inserted
        /// (quotes, backslashes, digits, signs, control and non-ASCII bytes among them), where
        /// a reader's edge cases are.
        #[test]
        fn near_valid_bodies_are_json_exactly_when_a_value_parses(
            body in text(),
            at in any::<prop::sample::Index>(),
            edit in 0u8..3,
            byte in prop_oneof![
                Just(b'"'), Just(b'\\'), Just(b'u'), Just(b'0'), Just(b'9'), Just(b'-'),
                Just(b'+'), Just(b'.'), Just(b'e'), Just(b','), Just(b':'), Just(b'}'),
                Just(b']'), Just(b'{'), Just(b'['), Just(b' '), Just(b'\n'), Just(0x01),
                Just(0x1f), Just(0x7f), Just(0xc3), Just(0xa9), Just(0xff), any::<u8>(),
            ],
        ) {
            let mut body = body.into_bytes();
            let i = at.index(body.len() + 1);
            match edit {
                0 if i < body.len() => body[i] = byte,
                1 if i < body.len() => {
                    body.remove(i);
                }
                _ => body.insert(i, byte),
            }
            prop_assert_eq!(agrees(&body), Ok(()), "{}", String::from_utf8_lossy(&body));
        }

        #[test]
        fn arbitrary_bytes_are_json_exactly_when_a_value_parses(
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            prop_assert_eq!(agrees(&body), Ok(()));
        }
    }

    /// The nesting limit at its edge, in every position a value can open a level: as a
    /// `Value` refuses it, so does the reader, one level either side.
    #[test]
    fn nesting_is_refused_exactly_where_a_value_refuses_it() {
        for n in 120..=130 {
            for body in [
                format!("{}{}", "[".repeat(n), "]".repeat(n)),
                format!("[{{\"x\":{}{}}}]", "[".repeat(n), "]".repeat(n)),
                format!("[{{\"body\":{}{}}}]", "{\"a\":".repeat(n) + "1", "}".repeat(n)),
                format!("[{{\"body\":{{\"type\":{}{}}}}}]", "[".repeat(n), "]".repeat(n)),
            ] {
                assert_eq!(agrees(body.as_bytes()), Ok(()), "{n}: {body}");
            }
        }
    }

    fn not_json(body: &[u8]) -> String {
        match read(body, usize::MAX, usize::MAX) {
            Err(ReadError::NotJson(e)) => e.to_string(),
            other => panic!("not a JSON error: {:?}", other.err()),
        }
    }

    /// The token and entry bounds hold exactly: a body at a bound is read, one more token or
    /// entry is refused, whatever follows it (even invalid JSON).
    #[test]
    fn the_reader_stops_at_its_bounds() {
        // [ {"a" : 1 , "b" : [ 1 , 2 ] } , 3 ]: tokens [ { : , : [ , ] ,  = 8, entries 2.
        let body = br#"[{"a":1,"b":[1,2]},3]"#;
        assert!(read(body, 8, 2).is_ok());
        assert_eq!(read(body, 7, 2).err(), Some(ReadError::Tokens));
        assert_eq!(read(body, 8, 1).err(), Some(ReadError::Entries));
        assert_eq!(read(b"[1,2,x", 10, 2).err(), Some(ReadError::Entries));
        assert_eq!(read(b"[[0,0,0,x", 3, 10).err(), Some(ReadError::Tokens));
        // Commas in strings and nested arrays are not entries.
        assert!(read(br#"["a,b",[1,2,3]]"#, 100, 2).is_ok());
    }

    /// Errors name where the body stopped being JSON, never its content.
    #[test]
    fn errors_give_line_and_column() {
        let e = not_json(b"[{\"type\": \"network-error\",}]");
        assert_eq!(e, "trailing comma at line 1 column 27");
        let e = not_json(b"[\n  {\"age\": 01}]");
        assert_eq!(e, "invalid number at line 2 column 12");
        let e = not_json(b"[\"secret\xff\"]");
        assert_eq!(e, "invalid unicode code point at line 1 column 9");
        let e = not_json(b"[1] x");
        assert_eq!(e, "trailing characters at line 1 column 5");
        let e = not_json(b"");
        assert_eq!(e, "EOF while parsing a value at line 1 column 1");
    }

    #[test]
    fn nesting_deeper_than_serde_json_allows_is_refused_as_a_value_would_be() {
        let deep = format!("[{{\"x\":{}{}}}]", "[".repeat(200), "]".repeat(200));
        assert!(serde_json::from_str::<Value>(&deep).is_err());
        assert!(read(deep.as_bytes(), usize::MAX, usize::MAX).is_err());
        let shallow = format!("[{{\"x\":{}{}}}]", "[".repeat(100), "]".repeat(100));
        assert!(read(shallow.as_bytes(), usize::MAX, usize::MAX).is_ok());
    }
}
