//! The one-pass reader behind [`parse_upload`](super::parse_upload): the fields it looks at,
//! as `serde_json::Value` would hold them (a repeated name: the last one wins; numbers typed
//! as `Value` types them), everything else parsed and checked as JSON (with serde_json's
//! nesting limit, since nesting goes through `deserialize_any`) and dropped. Strings borrow
//! from the body unless they have escapes. Nothing is refused while parsing but invalid JSON,
//! so invalid JSON anywhere is "not JSON" first, as with a value tree; `parse_upload` then
//! reads the entries in order. The unit test below holds it to a `Value`-based reader.

use std::borrow::Cow;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

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

/// Any JSON value, parsed (so checked) and dropped; nesting goes through `deserialize_any`,
/// so serde_json's recursion limit applies as it does to a value tree.
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(LiteVisitor { body: false }).map(|_| Skip)
    }
}

/// Reads one value into a [`Lite`]; an object becomes a [`Body`] when `body` is set.
struct LiteVisitor {
    body: bool,
}

impl<'de> Visitor<'de> for LiteVisitor {
    type Value = Lite<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Lite<'de>, E> {
        Ok(Lite::Other)
    }
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Lite<'de>, E> {
        Ok(Lite::Unsigned(n))
    }
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Lite<'de>, E> {
        // As `Value`: a non-negative i64 is a positive integer.
        Ok(u64::try_from(n).map_or(Lite::Signed(n), Lite::Unsigned))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Lite<'de>, E> {
        // As `Value`: a non-finite float is `null`.
        Ok(if n.is_finite() { Lite::Float(n) } else { Lite::Null })
    }
    fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Lite<'de>, E> {
        Ok(Lite::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Lite<'de>, E> {
        Ok(Lite::Str(Cow::Owned(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Lite<'de>, E> {
        Ok(Lite::Str(Cow::Owned(s)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Lite<'de>, E> {
        Ok(Lite::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Lite<'de>, E> {
        Ok(Lite::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lite<'de>, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Lite::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Lite<'de>, A::Error> {
        if !self.body {
            while map.next_key::<Skip>()?.is_some() {
                map.next_value::<Skip>()?;
            }
            return Ok(Lite::Other);
        }
        let mut body = Body::default();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let slot = match &*key.0 {
                "type" => &mut body.ty,
                "phase" => &mut body.phase,
                "sampling_fraction" => &mut body.sampling_fraction,
                "elapsed_time" => &mut body.elapsed_time,
                "status_code" => &mut body.status_code,
                _ => {
                    map.next_value::<Skip>()?;
                    continue;
                }
            };
            *slot = Some(map.next_value::<Plain<'de>>()?.0);
        }
        Ok(Lite::Body(Box::new(body)))
    }
}

/// A field's value (an object in it is [`Lite::Other`]).
struct Plain<'a>(Lite<'a>);

impl<'de> Deserialize<'de> for Plain<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Plain<'de>, D::Error> {
        d.deserialize_any(LiteVisitor { body: false }).map(Plain)
    }
}

/// An entry's `body` value (an object in it is [`Lite::Body`]).
struct BodyValue<'a>(Lite<'a>);

impl<'de> Deserialize<'de> for BodyValue<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BodyValue<'de>, D::Error> {
        d.deserialize_any(LiteVisitor { body: true }).map(BodyValue)
    }
}

/// An object key, unescaped (borrowed when it has no escapes).
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        match d.deserialize_any(LiteVisitor { body: false })? {
            Lite::Str(s) => Ok(Key(s)),
            _ => Err(de::Error::custom("object key is not a string")),
        }
    }
}

/// One element of the top-level array: an entry, or `None` when it is not an object.
struct MaybeEntry<'a>(Option<Entry<'a>>);

impl<'de> Deserialize<'de> for MaybeEntry<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<MaybeEntry<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MaybeEntry<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a report object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entry = Entry::default();
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    match &*key.0 {
                        "type" => entry.ty = Some(map.next_value::<Plain<'de>>()?.0),
                        "age" => entry.age = Some(map.next_value::<Plain<'de>>()?.0),
                        "url" => entry.url = Some(map.next_value::<Plain<'de>>()?.0),
                        "body" => entry.body = Some(map.next_value::<BodyValue<'de>>()?.0),
                        _ => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(MaybeEntry(Some(entry)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                LiteVisitor { body: false }.visit_seq(seq).map(|_| MaybeEntry(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(MaybeEntry(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(MaybeEntry(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(MaybeEntry(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(MaybeEntry(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(MaybeEntry(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(MaybeEntry(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Upload<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Upload<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Upload<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON array of reports")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
                while let Some(MaybeEntry(entry)) = seq.next_element()? {
                    entries.push(entry);
                }
                Ok(Upload(Some(entries)))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                LiteVisitor { body: false }.visit_map(map).map(|_| Upload(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Upload(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Upload(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Upload(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Upload(None))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Upload(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Upload(None))
            }
        }
        d.deserialize_any(V)
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
        let lite = serde_json::from_slice::<Upload<'_>>(body);
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
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn reads_what_a_json_value_holds(body in text()) {
            prop_assert_eq!(agrees(body.as_bytes()), Ok(()), "{}", body);
        }

        #[test]
        fn arbitrary_bytes_are_json_exactly_when_a_value_parses(
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            prop_assert_eq!(agrees(&body), Ok(()));
        }
    }

    #[test]
    fn nesting_deeper_than_serde_json_allows_is_refused_as_a_value_would_be() {
        let deep = format!("[{{\"x\":{}{}}}]", "[".repeat(200), "]".repeat(200));
        assert!(serde_json::from_str::<Value>(&deep).is_err());
        assert!(serde_json::from_str::<Upload<'_>>(&deep).is_err());
        let shallow = format!("[{{\"x\":{}{}}}]", "[".repeat(100), "]".repeat(100));
        assert!(serde_json::from_str::<Upload<'_>>(&shallow).is_ok());
    }
}
