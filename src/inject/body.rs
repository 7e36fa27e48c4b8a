/*!
What the body policy needs of a request body, read in one pass without
building a JSON tree (a 32 MiB body of small values would take many times
its size as a tree): the top-level `model` and `stream` for the audit, and
whether it names remote tool servers (a top-level `mcp_servers`, or a
`tools` element of `"type": "mcp"`). Everything else is skipped. Escapes
count (`"mcp\u005fservers"` is `mcp_servers`), and a key the policy reads
given twice is refused: parsers that keep the first and the last would
disagree about what was checked.
*/
#![forbid(unsafe_code)]

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The `visit_*` methods of a visitor that answers `$value` for every
/// scalar JSON value.
macro_rules! scalars_are {
    ($ty:ty, $value:expr, [$($skip:ident),*]) => {
        $(scalars_are!(@one $skip, $ty, $value);)*
    };
    (@one bool, $ty:ty, $value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$ty, E> { Ok($value) }
    };
    (@one str, $ty:ty, $value:expr) => {
        fn visit_str<E: de::Error>(self, _: &str) -> Result<$ty, E> { Ok($value) }
    };
    (@one numbers, $ty:ty, $value:expr) => {
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<$ty, E> { Ok($value) }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<$ty, E> { Ok($value) }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<$ty, E> { Ok($value) }
        fn visit_unit<E: de::Error>(self) -> Result<$ty, E> { Ok($value) }
    };
}

/// The facts of one body.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BodyFacts {
    pub model: Option<String>,
    pub stream: Option<bool>,
    /// Names remote tool servers.
    pub mcp: bool,
}

/// Reads `body`; an error when it is not one JSON object.
pub fn facts(body: &[u8]) -> Result<BodyFacts, serde_json::Error> {
    serde_json::from_slice(body)
}

impl<'de> Deserialize<'de> for BodyFacts {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FactsVisitor)
    }
}

struct FactsVisitor;

impl<'de> Visitor<'de> for FactsVisitor {
    type Value = BodyFacts;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<BodyFacts, A::Error> {
        let mut facts = BodyFacts::default();
        let mut seen = [false; 4];
        while let Some(key) = map.next_key::<String>()? {
            let slot = match key.as_str() {
                "model" => 0,
                "stream" => 1,
                "mcp_servers" => 2,
                "tools" => 3,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if std::mem::replace(&mut seen[slot], true) {
                return Err(de::Error::custom("a key given twice"));
            }
            match slot {
                0 => facts.model = map.next_value::<Scalar>()?.text,
                1 => facts.stream = map.next_value::<Scalar>()?.flag,
                2 => {
                    map.next_value::<IgnoredAny>()?;
                    facts.mcp = true;
                }
                _ => facts.mcp |= map.next_value::<Tools>()?.0,
            }
        }
        Ok(facts)
    }
}

/// A value read only when it is a string or a bool; anything else skipped.
#[derive(Default)]
struct Scalar {
    text: Option<String>,
    flag: Option<bool>,
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
        Ok(Scalar { text: Some(v.to_owned()), flag: None })
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
        Ok(Scalar { text: None, flag: Some(v) })
    }
    scalars_are!(Scalar, Scalar::default(), [numbers]);
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::default())
    }
}

/// A `tools` value: whether an element's `type` is `mcp`.
struct Tools(bool);

impl<'de> Deserialize<'de> for Tools {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ToolsVisitor)
    }
}

struct ToolsVisitor;

impl<'de> Visitor<'de> for ToolsVisitor {
    type Value = Tools;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tools, A::Error> {
        let mut mcp = false;
        while let Some(tool) = seq.next_element::<Tool>()? {
            mcp |= tool.0;
        }
        Ok(Tools(mcp))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tools, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Tools(false))
    }
    scalars_are!(Tools, Tools(false), [str, bool, numbers]);
}

/// One `tools` element: whether its `type` is `mcp`.
struct Tool(bool);

impl<'de> Deserialize<'de> for Tool {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let kind = d.deserialize_any(ToolVisitor)?;
        Ok(Tool(kind.text.as_deref() == Some("mcp")))
    }
}

/// Reads a tool element's `type` (any other shape is a tool without one).
struct ToolVisitor;

impl<'de> Visitor<'de> for ToolVisitor {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        let mut kind = Scalar::default();
        let mut seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "type" {
                if std::mem::replace(&mut seen, true) {
                    return Err(de::Error::custom("a key given twice"));
                }
                kind = map.next_value::<Scalar>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(kind)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::default())
    }
    scalars_are!(Scalar, Scalar::default(), [str, bool, numbers]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_facts_come_from_the_parsed_object_only() {
        let f = facts(br#"{"model":"m-1","stream":true,"messages":[{"content":"mcp_servers type mcp"}],"tools":[{"type":"function","name":"mcp"}]}"#).unwrap();
        assert_eq!(f, BodyFacts { model: Some("m-1".into()), stream: Some(true), mcp: false });
        assert!(facts(br#"{"mcp\u005fservers":[{"url":"https://x"}]}"#).unwrap().mcp);
        assert!(
            facts(br#"{"tools":[{"type":"web_search"},{"server_url":"https://x","type":"mcp"}]}"#)
                .unwrap()
                .mcp
        );
        assert!(facts(br#"{"tools":[{"type":"mcp","type":"function"}]}"#).is_err(), "a duplicate type");
        assert!(
            facts(br#"{"tools":[],"tools":[{"type":"mcp"}]}"#).is_err(),
            "a duplicate key the policy reads"
        );
        assert!(facts(br#"[1,2]"#).is_err() && facts(b"nope").is_err() && facts(br#"{"a":1} x"#).is_err());
        let odd = facts(br#"{"model":{"x":[1,2,{"y":null}]},"stream":"yes","tools":"none"}"#).unwrap();
        assert_eq!(odd, BodyFacts::default());
    }
}
