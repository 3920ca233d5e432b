//! The config document: TOML (toml's parser, without serde) or JSON (a small parser here),
//! both read into one tree that [`config`](super::config) reads field by field.
//!
//! Why not serde: a derived `Deserialize` is compiled once per format and per struct, and
//! toml's serde layer alone was about 0.12 MB of the C library (docs/ffi.md, "Size"). Reading
//! the tree by hand costs a few kilobytes and keeps every message naming its key and line.

use std::fmt::Write as _;

use super::config::ConfigError;

/// One value of a config document, with the byte offset where it starts (for messages).
#[derive(Debug)]
pub(crate) struct Item {
    pub(crate) at: usize,
    pub(crate) node: Node,
}

/// The values a config can hold.
#[derive(Debug)]
pub(crate) enum Node {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Array(Vec<Item>),
    /// Keys in document order; each with the offset of the key.
    Table(Vec<(String, usize, Item)>),
    /// A value no field accepts (a TOML date-time): its kind, for the message.
    Other(&'static str),
}

impl Node {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Node::Str(_) => "a string",
            Node::Int(_) => "an integer",
            Node::Float(_) => "a float",
            Node::Bool(_) => "a boolean",
            Node::Array(_) => "an array",
            Node::Table(_) => "a table",
            Node::Other(kind) => kind,
        }
    }
}

/// A parsed document and its text (for line and column in messages).
pub(crate) struct Doc<'t> {
    text: &'t str,
    pub(crate) root: Item,
}

impl<'t> Doc<'t> {
    /// Parses TOML. Syntax errors keep toml's message (line, column and the line itself).
    pub(crate) fn toml(text: &'t str) -> Result<Doc<'t>, ConfigError> {
        let table = toml::de::DeTable::parse(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        let span = table.span();
        let root = Item { at: span.start, node: from_toml_table(table.into_inner())? };
        Ok(Doc { text, root })
    }

    /// Parses JSON (RFC 8259). Errors name the line and column.
    pub(crate) fn json(text: &'t str) -> Result<Doc<'t>, ConfigError> {
        let mut p = JsonParser { s: text.as_bytes(), i: 0, text, depth: 0 };
        p.ws();
        let root = p.value()?;
        p.ws();
        if p.i != p.s.len() {
            return Err(p.err("text after the JSON value"));
        }
        if !matches!(root.node, Node::Table(_)) {
            return Err(error_at(text, root.at, "the config must be a JSON object"));
        }
        Ok(Doc { text, root })
    }
}

/// `line L, column C: msg` (both from 1; the column counts characters).
fn error_at(text: &str, at: usize, msg: impl std::fmt::Display) -> ConfigError {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    let mut s = String::new();
    let _ = write!(s, "line {line}, column {column}: {msg}");
    ConfigError::Toml(s)
}

fn from_toml_table(t: toml::de::DeTable<'_>) -> Result<Node, ConfigError> {
    let mut entries = Vec::with_capacity(t.len());
    for (k, v) in t {
        let at = k.span().start;
        entries.push((k.into_inner().into_owned(), at, from_toml(v)?));
    }
    Ok(Node::Table(entries))
}

fn from_toml(v: toml::Spanned<toml::de::DeValue<'_>>) -> Result<Item, ConfigError> {
    use toml::de::DeValue;
    let at = v.span().start;
    let node = match v.into_inner() {
        DeValue::String(s) => Node::Str(s.into_owned()),
        DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
            Ok(n) => Node::Int(n),
            Err(_) => Node::Other("an integer out of range"),
        },
        DeValue::Float(f) => match f.as_str().parse() {
            Ok(x) => Node::Float(x),
            Err(_) => Node::Other("a float out of range"),
        },
        DeValue::Boolean(b) => Node::Bool(b),
        DeValue::Datetime(_) => Node::Other("a date-time"),
        DeValue::Array(a) => {
            let mut items = Vec::with_capacity(a.len());
            for v in a.into_iter() {
                items.push(from_toml(v)?);
            }
            Node::Array(items)
        }
        DeValue::Table(t) => from_toml_table(t)?,
    };
    Ok(Item { at, node })
}

/// Nesting limit of JSON documents (the schema needs 3).
const MAX_JSON_DEPTH: usize = 32;

struct JsonParser<'t> {
    s: &'t [u8],
    i: usize,
    text: &'t str,
    depth: usize,
}

impl JsonParser<'_> {
    fn err(&self, msg: &str) -> ConfigError {
        let what = match self.s.get(self.i) {
            None => "the end of the text".to_owned(),
            Some(_) => {
                let c = self.text.get(self.i..).and_then(|r| r.chars().next()).unwrap_or('?');
                format!("'{}'", c.escape_default())
            }
        };
        error_at(self.text, self.i, format_args!("{msg} (found {what})"))
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.s.get(self.i) {
            self.i += 1;
        }
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.s.get(self.i) == Some(&b);
        if hit {
            self.i += 1;
        }
        hit
    }

    fn value(&mut self) -> Result<Item, ConfigError> {
        let at = self.i;
        let node = match self.s.get(self.i) {
            Some(b'{') => self.nested(Self::object)?,
            Some(b'[') => self.nested(Self::array)?,
            Some(b'"') => Node::Str(self.string()?),
            Some(b'-' | b'0'..=b'9') => self.number()?,
            _ if self.word("true") => Node::Bool(true),
            _ if self.word("false") => Node::Bool(false),
            _ if self.word("null") => {
                self.i = at;
                return Err(self.err("null is not a config value (leave the key out)"));
            }
            _ => return Err(self.err("expected a JSON value")),
        };
        Ok(Item { at, node })
    }

    fn nested(
        &mut self,
        f: fn(&mut Self) -> Result<Node, ConfigError>,
    ) -> Result<Node, ConfigError> {
        if self.depth == MAX_JSON_DEPTH {
            return Err(self.err("nested too deeply"));
        }
        self.depth += 1;
        self.i += 1;
        let node = f(self)?;
        self.depth -= 1;
        Ok(node)
    }

    fn word(&mut self, w: &str) -> bool {
        let hit = self.s[self.i..].starts_with(w.as_bytes());
        if hit {
            self.i += w.len();
        }
        hit
    }

    fn object(&mut self) -> Result<Node, ConfigError> {
        let mut entries: Vec<(String, usize, Item)> = Vec::new();
        self.ws();
        if self.eat(b'}') {
            return Ok(Node::Table(entries));
        }
        loop {
            self.ws();
            let at = self.i;
            if self.s.get(self.i) != Some(&b'"') {
                return Err(self.err("expected a key in double quotes"));
            }
            let key = self.string()?;
            if entries.iter().any(|(k, _, _)| *k == key) {
                return Err(error_at(self.text, at, format_args!("duplicate key `{key}`")));
            }
            self.ws();
            if !self.eat(b':') {
                return Err(self.err("expected ':'"));
            }
            self.ws();
            let value = self.value()?;
            entries.push((key, at, value));
            self.ws();
            if self.eat(b'}') {
                return Ok(Node::Table(entries));
            }
            if !self.eat(b',') {
                return Err(self.err("expected ',' or '}'"));
            }
        }
    }

    fn array(&mut self) -> Result<Node, ConfigError> {
        let mut items = Vec::new();
        self.ws();
        if self.eat(b']') {
            return Ok(Node::Array(items));
        }
        loop {
            self.ws();
            items.push(self.value()?);
            self.ws();
            if self.eat(b']') {
                return Ok(Node::Array(items));
            }
            if !self.eat(b',') {
                return Err(self.err("expected ',' or ']'"));
            }
        }
    }

    fn string(&mut self) -> Result<String, ConfigError> {
        self.i += 1; // the opening quote
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(&b) = self.s.get(self.i) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            // Breaks only at ASCII bytes, so both ends are character boundaries.
            out.push_str(self.text.get(start..self.i).unwrap_or(""));
            match self.s.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let esc = self.s.get(self.i + 1).copied();
                    self.i += 2;
                    let c = match esc {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => self.unicode_escape()?,
                        _ => {
                            self.i -= 1;
                            return Err(self.err("invalid escape in a string"));
                        }
                    };
                    out.push(c);
                }
                None => return Err(self.err("unterminated string")),
                Some(_) => return Err(self.err("control character in a string")),
            }
        }
    }

    /// The 4 hex digits after `\u` (and a second `\uXXXX` for a surrogate pair).
    fn unicode_escape(&mut self) -> Result<char, ConfigError> {
        let hi = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&hi) {
            if !self.word("\\u") {
                return Err(self.err("expected the low half of a surrogate pair"));
            }
            let lo = self.hex4()?;
            if !(0xDC00..0xE000).contains(&lo) {
                return Err(self.err("invalid low surrogate"));
            }
            0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
        } else {
            hi
        };
        char::from_u32(code).ok_or_else(|| self.err("lone surrogate in a \\u escape"))
    }

    fn hex4(&mut self) -> Result<u32, ConfigError> {
        let digits = self.s.get(self.i..self.i + 4).and_then(|d| std::str::from_utf8(d).ok());
        match digits.and_then(|d| u32::from_str_radix(d, 16).ok().filter(|_| !d.starts_with('+'))) {
            Some(v) => {
                self.i += 4;
                Ok(v)
            }
            None => Err(self.err("expected 4 hex digits after \\u")),
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.s.get(self.i) {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<Node, ConfigError> {
        let start = self.i;
        self.eat(b'-');
        let int_start = self.i;
        let n = self.digits();
        if n == 0 || (n > 1 && self.s[int_start] == b'0') {
            self.i = int_start;
            return Err(self.err("invalid number"));
        }
        let mut float = false;
        if self.eat(b'.') {
            float = true;
            if self.digits() == 0 {
                return Err(self.err("expected digits after '.'"));
            }
        }
        if self.eat(b'e') || self.eat(b'E') {
            float = true;
            if !self.eat(b'+') {
                self.eat(b'-');
            }
            if self.digits() == 0 {
                return Err(self.err("expected digits in the exponent"));
            }
        }
        let text = self.text.get(start..self.i).unwrap_or("");
        Ok(if float {
            match text.parse::<f64>() {
                Ok(x) if x.is_finite() => Node::Float(x),
                _ => Node::Other("a float out of range"),
            }
        } else {
            match text.parse::<i64>() {
                Ok(v) => Node::Int(v),
                Err(_) => Node::Other("an integer out of range"),
            }
        })
    }
}

/// The entries of one table, taken field by field. `finish` refuses what no one took.
pub(crate) struct Fields<'t> {
    text: &'t str,
    /// `delivery`, `collectors[1]`; empty for the top level.
    path: String,
    at: usize,
    entries: Vec<(String, usize, Item)>,
    known: Vec<&'static str>,
}

impl<'t> Fields<'t> {
    /// The top-level table of a document.
    pub(crate) fn root(doc: Doc<'t>) -> Result<Fields<'t>, ConfigError> {
        Fields::of(doc.text, String::new(), doc.root)
    }

    fn of(text: &'t str, path: String, item: Item) -> Result<Fields<'t>, ConfigError> {
        match item.node {
            Node::Table(entries) => {
                Ok(Fields { text, path, at: item.at, entries, known: Vec::new() })
            }
            other => Err(error_at(
                text,
                item.at,
                format_args!("`{path}`: expected a table, found {}", other.kind()),
            )),
        }
    }

    fn name(&self, key: &str) -> String {
        if self.path.is_empty() { key.to_owned() } else { format!("{}.{key}", self.path) }
    }

    fn take(&mut self, key: &'static str) -> Option<Item> {
        self.known.push(key);
        let i = self.entries.iter().position(|(k, _, _)| k == key)?;
        Some(self.entries.swap_remove(i).2)
    }

    fn wrong(&self, key: &str, item: &Item, expected: &str) -> ConfigError {
        let name = self.name(key);
        let found = item.node.kind();
        error_at(self.text, item.at, format_args!("`{name}`: expected {expected}, found {found}"))
    }

    /// A field that must be there.
    pub(crate) fn required<T>(&self, key: &str, v: Option<T>) -> Result<T, ConfigError> {
        v.ok_or_else(|| {
            let within =
                if self.path.is_empty() { String::new() } else { format!(" in `{}`", self.path) };
            error_at(self.text, self.at, format_args!("missing field `{key}`{within}"))
        })
    }

    pub(crate) fn str(&mut self, key: &'static str) -> Result<Option<String>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Item { node: Node::Str(s), .. }) => Ok(Some(s)),
            Some(item) => Err(self.wrong(key, &item, "a string")),
        }
    }

    /// A non-negative integer that fits `T`.
    pub(crate) fn uint<T: TryFrom<i64>>(
        &mut self,
        key: &'static str,
    ) -> Result<Option<T>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(item) => match item.node {
                Node::Int(v) => match T::try_from(v) {
                    Ok(v) => Ok(Some(v)),
                    _ => Err(self.wrong(key, &item, "a non-negative integer in range")),
                },
                _ => Err(self.wrong(key, &item, "a non-negative integer")),
            },
        }
    }

    /// A float (an integer is taken as one).
    pub(crate) fn float(&mut self, key: &'static str) -> Result<Option<f64>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Item { node: Node::Float(x), .. }) => Ok(Some(x)),
            Some(Item { node: Node::Int(v), .. }) => Ok(Some(v as f64)),
            Some(item) => Err(self.wrong(key, &item, "a number")),
        }
    }

    pub(crate) fn bool(&mut self, key: &'static str) -> Result<Option<bool>, ConfigError> {
        match self.take(key) {
            None => Ok(None),
            Some(Item { node: Node::Bool(b), .. }) => Ok(Some(b)),
            Some(item) => Err(self.wrong(key, &item, "a boolean")),
        }
    }

    /// An array of strings; absent = empty.
    pub(crate) fn strs(&mut self, key: &'static str) -> Result<Vec<String>, ConfigError> {
        let items = self.array(key)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            match item.node {
                Node::Str(s) => out.push(s),
                _ => return Err(self.wrong(&format!("{key}[{i}]"), &item, "a string")),
            }
        }
        Ok(out)
    }

    fn array(&mut self, key: &'static str) -> Result<Vec<Item>, ConfigError> {
        match self.take(key) {
            None => Ok(Vec::new()),
            Some(Item { node: Node::Array(items), .. }) => Ok(items),
            Some(item) => Err(self.wrong(key, &item, "an array")),
        }
    }

    /// A sub-table; absent = `None`.
    pub(crate) fn table(&mut self, key: &'static str) -> Result<Option<Fields<'t>>, ConfigError> {
        let name = self.name(key);
        self.take(key).map(|item| Fields::of(self.text, name, item)).transpose()
    }

    /// An array of tables (`[[key]]`); absent = empty.
    pub(crate) fn tables(&mut self, key: &'static str) -> Result<Vec<Fields<'t>>, ConfigError> {
        let name = self.name(key);
        let items = self.array(key)?;
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            out.push(Fields::of(self.text, format!("{name}[{i}]"), item)?);
        }
        Ok(out)
    }

    /// Refuses any key that was not taken.
    pub(crate) fn finish(self) -> Result<(), ConfigError> {
        let Some((key, at, _)) = self.entries.iter().min_by_key(|(_, at, _)| *at) else {
            return Ok(());
        };
        let mut msg = format!("unknown field `{key}`");
        if !self.path.is_empty() {
            let _ = write!(msg, " in `{}`", self.path);
        }
        msg.push_str(", expected one of ");
        for (i, k) in self.known.iter().enumerate() {
            let _ = write!(msg, "{}`{k}`", if i == 0 { "" } else { ", " });
        }
        Err(error_at(self.text, *at, msg))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn msg(e: ConfigError) -> String {
        e.to_string()
    }

    fn json(text: &str) -> Node {
        Doc::json(text).unwrap().root.node
    }

    #[test]
    fn json_values_strings_and_numbers() {
        let Node::Table(t) = json(
            r#" { "s": "a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00é", "i": -42, "z": 0, "f": 1.5e2,
                  "g": -0.25, "t": true, "n": false, "a": [1, [2], {}], "o": {"k": []} } "#,
        ) else {
            panic!("not a table")
        };
        let get = |k: &str| &t.iter().find(|(n, _, _)| n == k).unwrap().2.node;
        assert!(
            matches!(get("s"), Node::Str(s) if s == "a\"b\\c/d\u{8}\u{c}\n\r\t\u{e9}\u{1f600}\u{e9}")
        );
        assert!(matches!(get("i"), Node::Int(-42)));
        assert!(matches!(get("z"), Node::Int(0)));
        assert!(matches!(get("f"), Node::Float(x) if *x == 150.0));
        assert!(matches!(get("g"), Node::Float(x) if *x == -0.25));
        assert!(matches!(get("t"), Node::Bool(true)));
        assert!(matches!(get("n"), Node::Bool(false)));
        assert!(matches!(get("a"), Node::Array(a) if a.len() == 3));
        assert!(matches!(get("o"), Node::Table(o) if o.len() == 1));
        assert!(matches!(json(r#"{"big": 9223372036854775808}"#), Node::Table(t)
            if matches!(t[0].2.node, Node::Other("an integer out of range"))));
    }

    #[test]
    fn json_errors_name_line_column_and_what_was_found() {
        let cases = [
            ("", "line 1, column 1: expected a JSON value (found the end of the text)"),
            ("[1]", "line 1, column 1: the config must be a JSON object"),
            ("{\"a\": 1,}", "line 1, column 9: expected a key in double quotes (found '}')"),
            ("{\n  \"a\": nul}", "line 2, column 8: expected a JSON value (found 'n')"),
            ("{\"a\": null}", "line 1, column 7: null is not a config value (leave the key out)"),
            ("{\"a\": 1, \"a\": 2}", "line 1, column 10: duplicate key `a`"),
            ("{\"a\": 01}", "line 1, column 7: invalid number (found '0')"),
            ("{\"a\": 1.}", "line 1, column 9: expected digits after '.' (found '}')"),
            ("{\"a\": \"x\\q\"}", "line 1, column 10: invalid escape in a string (found 'q')"),
            ("{\"a\": \"\\ud800x\"}", "expected the low half of a surrogate pair"),
            ("{\"a\": \"\\udc00\"}", "lone surrogate"),
            ("{\"a\": \"tab\there\"}", "control character in a string"),
            ("{\"a\": \"open", "unterminated string"),
            ("{\"a\": 1} x", "line 1, column 10: text after the JSON value (found 'x')"),
            ("{\"a\" 1}", "expected ':'"),
            ("{\"a\": [1 2]}", "expected ',' or ']'"),
        ];
        for (text, want) in cases {
            let e = msg(Doc::json(text).err().unwrap_or_else(|| panic!("{text:?} parsed")));
            assert!(e.contains(want), "{text:?}: {e}");
        }
        let deep = format!("{{\"a\": {}{}}}", "[".repeat(40), "]".repeat(40));
        assert!(msg(Doc::json(&deep).err().unwrap()).contains("nested too deeply"));
    }

    #[test]
    fn fields_refuse_wrong_types_unknown_keys_and_missing_ones() {
        let text = "a = 1\nb = \"x\"\nn = -3\n[t]\nk = 1\nextra = 2\n";
        let mut f = Fields::root(Doc::toml(text).unwrap()).unwrap();
        assert_eq!(f.uint::<u64>("a").unwrap(), Some(1));
        let e = msg(f.uint::<u64>("b").unwrap_err());
        assert!(
            e.contains("line 2, column 5: `b`: expected a non-negative integer, found a string"),
            "{e}"
        );
        let e = msg(f.uint::<u64>("n").unwrap_err());
        assert!(
            e.contains("`n`: expected a non-negative integer in range, found an integer"),
            "{e}"
        );
        let mut t = f.table("t").unwrap().unwrap();
        assert_eq!(t.float("k").unwrap(), Some(1.0));
        let e = msg(t.required::<u8>("gone", None).unwrap_err());
        assert!(e.contains("missing field `gone` in `t`"), "{e}");
        let e = msg(t.finish().unwrap_err());
        assert!(
            e.contains("line 6, column 1: unknown field `extra` in `t`, expected one of `k`"),
            "{e}"
        );
        let e = msg(Fields::root(Doc::toml("x = 1979-05-27\n").unwrap())
            .unwrap()
            .str("x")
            .unwrap_err());
        assert!(e.contains("expected a string, found a date-time"), "{e}");
        let e = msg(Doc::toml("a = \n").err().unwrap());
        assert!(e.contains("TOML parse error"), "{e}");
    }
}
