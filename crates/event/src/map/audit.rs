//! audit: one `audit.jsonl` line to an event (pure: the clock is passed in).

use std::fmt;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use crate::event::{Event, Extra, Source};
use crate::proto::protocol_number;

/// Why an audit line produced no event. Each is counted by the caller; none is fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuditSkip {
    /// Empty or only white space.
    Blank,
    /// Not JSON.
    InvalidJson,
    /// JSON, but not an object.
    NotAnObject,
}

impl AuditSkip {
    /// A short name for summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditSkip::Blank => "blank",
            AuditSkip::InvalidJson => "invalid_json",
            AuditSkip::NotAnObject => "not_an_object",
        }
    }
}

impl fmt::Display for AuditSkip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuditSkip::Blank => "blank line",
            AuditSkip::InvalidJson => "line is not valid JSON",
            AuditSkip::NotAnObject => "line is JSON but not an object",
        })
    }
}

/// Parses one line of `audit.jsonl` (bytes, without the newline) into an `audit` event.
///
/// Invalid UTF-8 is decoded lossily. The entry's `ts`, `action`, `container`, `dest`, `detail`
/// and `domain` fill those fields when they are strings, `port` when it is an integer, `proto`
/// when it is an integer or a known protocol name; `ts` defaults to `now()`, `action` to
/// `unknown`, `container` to `default_container`. Every other key, and a known key whose value
/// does not fit its field, goes to `extra` as a string (nested objects flattened as
/// `outer.inner`, arrays as their compact JSON, `null` left out), so nothing the writer said is
/// lost. A key written twice counts once, with its last value, where it was first written.
pub fn parse_audit_line(
    line: &[u8],
    default_container: &str,
    now: impl FnOnce() -> String,
) -> Result<Event, AuditSkip> {
    let mut event = Event::new(String::new(), Source::Audit, "unknown", default_container);
    parse_audit_line_into(
        line,
        default_container,
        |ts| ts.push_str(&now()),
        &mut event,
    )?;
    Ok(event)
}

/// [`parse_audit_line`] into an event that is reused line after line: the event is reset, then
/// filled; `now` appends the default timestamp to the string it is given. On an error the event
/// holds nothing meaningful.
///
/// The common entry (no key written twice, at most 32 keys, keys without escapes) is read in one
/// pass over the text, strings borrowed from the line, into the event's own strings: no
/// `serde_json::Value`, and no allocation once the event's strings have grown. Anything else
/// (and any line that is not a JSON object) is read through a `Value`, whose map keeps a
/// repeated key at its first place with its last value; both ways give the same event, which a
/// property test checks on random objects.
pub fn parse_audit_line_into(
    line: &[u8],
    default_container: &str,
    now: impl FnOnce(&mut String),
    event: &mut Event,
) -> Result<(), AuditSkip> {
    // Valid UTF-8 (nearly every line) through std's fast validator; the lossy decoder only
    // for the rest.
    let text = match std::str::from_utf8(line) {
        Ok(text) => std::borrow::Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(line),
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(AuditSkip::Blank);
    }
    event.reset(Source::Audit, "unknown", default_container);
    if let Some(has_ts) = read_in_one_pass(text, event) {
        if !has_ts {
            now(&mut event.ts);
        }
        return Ok(());
    }
    *event = parse_through_value(text, default_container, || {
        let mut ts = String::new();
        now(&mut ts);
        ts
    })?;
    Ok(())
}

/// The one-pass reading of an entry into `event` (already reset); whether it had a `ts`. `None`
/// when the line needs the general reading: not an object, not JSON, a key written twice, more
/// than [`MAX_KEYS`] keys, or a key with an escape.
fn read_in_one_pass(text: &str, event: &mut Event) -> Option<bool> {
    let mut de = serde_json::Deserializer::from_str(text);
    let has_ts = OnePass { event }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(has_ts)
}

/// Keys of an entry compared for repeats by the one-pass reading; an entry with more goes
/// through a `Value`.
const MAX_KEYS: usize = 32;

/// Reads the top-level object into the event.
struct OnePass<'e> {
    event: &'e mut Event,
}

impl<'de> DeserializeSeed<'de> for OnePass<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<bool, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for OnePass<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        let event = self.event;
        let mut keys: [&str; MAX_KEYS] = [""; MAX_KEYS];
        let mut count = 0;
        let mut has_ts = false;
        while let Some(BorrowedKey(key)) = map.next_key()? {
            if count == MAX_KEYS || keys[..count].contains(&key) {
                return Err(de::Error::custom("read through a Value"));
            }
            keys[count] = key;
            count += 1;
            match map.next_value::<Entry<'de>>()? {
                Entry::Str(s) => has_ts |= set_text(event, key, &s),
                Entry::Borrowed(s) => has_ts |= set_text(event, key, s),
                Entry::Number(n) => match (key, n.as_i64()) {
                    ("port", Some(port)) => event.port = port,
                    ("proto", Some(proto)) => event.proto = proto,
                    _ => event.extra.insert(key, n.to_string()),
                },
                Entry::Other(value) => flatten_into(&mut event.extra, key.to_string(), value),
            }
        }
        Ok(has_ts)
    }
}

/// A string value of an entry: its field, `proto` by name, or `extra`. True when it was `ts`.
fn set_text(event: &mut Event, key: &str, value: &str) -> bool {
    if key == "ts" {
        event.ts.push_str(value);
        return true;
    }
    match text_field(event, key) {
        Some(field) => {
            field.clear();
            field.push_str(value);
        }
        None => match (key, protocol_number(value)) {
            ("proto", Some(number)) => event.proto = number,
            _ => event.extra.insert(key, value),
        },
    }
    false
}

/// A key without escapes, borrowed from the line; any other key sends the line through a
/// `Value`.
struct BorrowedKey<'de>(&'de str);

impl<'de> Deserialize<'de> for BorrowedKey<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = BorrowedKey<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key without escapes")
            }
            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Self::Value, E> {
                Ok(BorrowedKey(key))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// An entry's value as the one-pass reading keeps it: strings borrowed where they hold no
/// escape, numbers as serde_json's `Number` (as a `Value` holds them), `null`, booleans, arrays
/// and objects as the `Value` the general reading would have built.
enum Entry<'de> {
    Borrowed(&'de str),
    Str(String),
    Number(Number),
    Other(Value),
}

impl<'de> Deserialize<'de> for Entry<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(EntryVisitor)
    }
}

/// Builds what `Value`'s own visitor builds, for every kind of JSON value.
struct EntryVisitor;

impl<'de> Visitor<'de> for EntryVisitor {
    type Value = Entry<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Entry<'de>, E> {
        Ok(Entry::Other(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Entry<'de>, E> {
        Ok(Entry::Number(v.into()))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Entry<'de>, E> {
        Ok(Entry::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Entry<'de>, E> {
        Ok(Number::from_f64(v).map_or(Entry::Other(Value::Null), Entry::Number))
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Entry<'de>, E> {
        Ok(Entry::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Entry<'de>, E> {
        Ok(Entry::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Entry<'de>, E> {
        Ok(Entry::Str(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Entry<'de>, E> {
        Ok(Entry::Other(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Entry<'de>, E> {
        Ok(Entry::Other(Value::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Entry<'de>, D::Error> {
        Deserialize::deserialize(deserializer)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Entry<'de>, A::Error> {
        Value::deserialize(SeqAccessDeserializer::new(seq)).map(Entry::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Entry<'de>, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Entry::Other)
    }
}

/// The general reading, through a `serde_json::Value` (`text` trimmed, not blank).
fn parse_through_value(
    text: &str,
    default_container: &str,
    now: impl FnOnce() -> String,
) -> Result<Event, AuditSkip> {
    let value: Value = serde_json::from_str(text).map_err(|_| AuditSkip::InvalidJson)?;
    let Value::Object(entry) = value else {
        return Err(AuditSkip::NotAnObject);
    };

    let mut event = Event::new(String::new(), Source::Audit, "unknown", default_container);
    let mut ts = None;
    for (key, value) in entry {
        let leftover = match value {
            Value::String(s) if key == "ts" => {
                ts = Some(s);
                None
            }
            Value::String(s) => match text_field(&mut event, &key) {
                Some(field) => {
                    *field = s;
                    None
                }
                None => match (key.as_str(), protocol_number(&s)) {
                    ("proto", Some(number)) => {
                        event.proto = number;
                        None
                    }
                    _ => Some(Value::String(s)),
                },
            },
            Value::Number(n) => match (key.as_str(), n.as_i64()) {
                ("port", Some(port)) => {
                    event.port = port;
                    None
                }
                ("proto", Some(proto)) => {
                    event.proto = proto;
                    None
                }
                _ => Some(Value::Number(n)),
            },
            other => Some(other),
        };
        if let Some(value) = leftover {
            flatten_into(&mut event.extra, key, value);
        }
    }
    event.ts = ts.unwrap_or_else(now);
    Ok(event)
}

/// The event's string field an entry key fills, if any (`ts` is handled apart: it has a default).
fn text_field<'e>(event: &'e mut Event, key: &str) -> Option<&'e mut String> {
    match key {
        "action" => Some(&mut event.action),
        "container" => Some(&mut event.container),
        "dest" => Some(&mut event.dest),
        "detail" => Some(&mut event.detail),
        "domain" => Some(&mut event.domain),
        _ => None,
    }
}

fn flatten_into(extra: &mut Extra, key: String, value: Value) {
    match value {
        Value::Null => {}
        Value::String(s) => extra.insert(key, s),
        Value::Bool(b) => extra.insert(key, b.to_string()),
        Value::Number(n) => extra.insert(key, n.to_string()),
        Value::Array(_) => extra.insert(key, value.to_string()),
        Value::Object(inner) => flatten_object(extra, &key, inner),
    }
}

fn flatten_object(extra: &mut Extra, prefix: &str, inner: Map<String, Value>) {
    for (key, value) in inner {
        flatten_into(extra, format!("{prefix}.{key}"), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Event, AuditSkip> {
        parse_audit_line(line.as_bytes(), "ctr", || "NOW".to_string())
    }

    #[test]
    fn a_full_entry_fills_every_field() {
        let event = parse(
            r#"{"ts":"2026-03-31T12:00:00+00:00","container":"web","action":"denied","dest":"192.0.2.7","detail":"by rule","domain":"x.example","port":443,"proto":"tcp"}"#,
        )
        .unwrap();
        assert_eq!(
            event.to_json_line(),
            concat!(
                "{\"ts\":\"2026-03-31T12:00:00+00:00\",\"source\":\"audit\",\"action\":\"denied\",",
                "\"container\":\"web\",\"domain\":\"x.example\",\"dest\":\"192.0.2.7\",",
                "\"detail\":\"by rule\",\"port\":443,\"proto\":6}\n"
            )
        );
    }

    #[test]
    fn missing_core_keys_take_their_defaults() {
        let event = parse("{}").unwrap();
        assert_eq!(
            event.to_json_line(),
            "{\"ts\":\"NOW\",\"source\":\"audit\",\"action\":\"unknown\",\"container\":\"ctr\"}\n"
        );
    }

    #[test]
    fn mistyped_known_keys_keep_defaults_and_go_to_extra() {
        let event = parse(r#"{"ts":5,"action":null,"port":"443","proto":"gre","container":["a"]}"#)
            .unwrap();
        assert_eq!(event.ts, "NOW");
        assert_eq!(event.action, "unknown");
        assert_eq!(event.container, "ctr");
        assert_eq!(event.port, 0);
        assert_eq!(event.proto, 0);
        let extra: Vec<_> = event.extra.iter().collect();
        assert_eq!(
            extra,
            [
                ("ts", "5"),
                ("port", "443"),
                ("proto", "gre"),
                ("container", "[\"a\"]")
            ]
        );
    }

    #[test]
    fn proto_names_map_to_numbers() {
        for (name, number) in [
            ("tcp", 6),
            ("UDP", 17),
            ("icmp", 1),
            ("icmpv6", 58),
            ("ipv6-icmp", 58),
        ] {
            let event = parse(&format!(r#"{{"proto":"{name}"}}"#)).unwrap();
            assert_eq!(event.proto, number, "{name}");
        }
        assert_eq!(parse(r#"{"proto":17}"#).unwrap().proto, 17);
    }

    #[test]
    fn other_scalars_and_nested_objects_go_to_extra_flattened() {
        let event = parse(
            r#"{"action":"setup","ok":true,"n":1.5,"nothing":null,"dossier":{"image":"alpine","layers":{"count":3}}}"#,
        )
        .unwrap();
        let extra: Vec<_> = event.extra.iter().collect();
        assert_eq!(
            extra,
            [
                ("ok", "true"),
                ("n", "1.5"),
                ("dossier.image", "alpine"),
                ("dossier.layers.count", "3")
            ]
        );
    }

    #[test]
    fn skips_are_classified() {
        assert_eq!(parse("").unwrap_err(), AuditSkip::Blank);
        assert_eq!(parse(" \t\r").unwrap_err(), AuditSkip::Blank);
        assert_eq!(parse("{not json").unwrap_err(), AuditSkip::InvalidJson);
        assert_eq!(parse("[1,2]").unwrap_err(), AuditSkip::NotAnObject);
        assert_eq!(parse("\"s\"").unwrap_err(), AuditSkip::NotAnObject);
    }

    #[test]
    fn invalid_utf8_is_decoded_lossily_then_sanitised() {
        let line = b"{\"action\":\"denied\",\"detail\":\"a\xff\xfeb\"}";
        let event = parse_audit_line(line, "ctr", || "NOW".into()).unwrap();
        assert_eq!(event.detail, "a\u{fffd}\u{fffd}b");
        assert!(event.to_json_line().contains("\"detail\":\"a  b\""));
    }

    #[test]
    fn surrounding_white_space_is_ignored() {
        assert_eq!(parse("  {\"action\":\"x\"}\r").unwrap().action, "x");
    }

    // ---- the one-pass reading against the reading through a `Value` ----

    use proptest::prelude::*;

    /// Keys: the known ones (so every branch of the mapping is taken), others, and keys with
    /// escapes or non-ASCII characters.
    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec![
                "ts", "action", "container", "dest", "detail", "domain", "port", "proto", "extra",
                "a", "a.b",
            ])
            .prop_map(|k| format!("\"{k}\"")),
            1 => any::<String>().prop_map(|k| Value::String(k).to_string()),
            1 => Just("\"p\\u006frt\"".to_string()),
            1 => Just("\"a\\\"b\"".to_string()),
        ]
    }

    /// Numbers as they may be written: integers of every size, fractions, exponents, `-0`.
    fn number() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            Just("18446744073709551616".to_string()),
            Just("123456789012345678901234567890".to_string()),
            Just("-0".to_string()),
            Just("1.0".to_string()),
            Just("1e2".to_string()),
            Just("-2.5E-3".to_string()),
            Just("443.0".to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| f.to_string()),
        ]
    }

    /// String values: protocol names, plain text, escapes, any Unicode.
    fn string() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "tcp",
                "UDP",
                "icmpv6",
                "gre",
                "",
                "denied",
                "192.0.2.1"
            ])
            .prop_map(|s| format!("\"{s}\"")),
            any::<String>().prop_map(|s| Value::String(s).to_string()),
            Just("\"a\\u0000b\\n\\\"\\\\\\ud83d\\ude00\"".to_string()),
        ]
    }

    /// Any JSON value as text; objects may repeat a key.
    fn value() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            number(),
            string(),
        ];
        leaf.prop_recursive(3, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                prop::collection::vec((key(), inner), 0..5)
                    .prop_map(|entries| object(&entries, " ")),
            ]
        })
    }

    fn object(entries: &[(String, String)], space: &str) -> String {
        let body: Vec<String> = entries
            .iter()
            .map(|(k, v)| format!("{k}{space}:{space}{v}"))
            .collect();
        format!("{{{space}{}{space}}}", body.join(","))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Whatever the entry, both readings give the same event, or the same skip.
        #[test]
        fn one_pass_equals_the_reading_through_a_value(
            entries in prop::collection::vec((key(), value()), 0..12),
            space in prop::sample::select(vec!["", " ", "\t", "\r\n "]),
            around in prop::sample::select(vec!["", " ", "\u{a0}", "\u{3000}\t"]),
        ) {
            let line = format!("{around}{}{around}", object(&entries, space));
            let reference = parse_through_value(line.trim(), "ctr", || "NOW".to_string());
            let mut reused = Event::new("old", Source::Nflog, "old", "old");
            reused.extra.insert("old", "old");
            let fast = parse_audit_line_into(line.as_bytes(), "ctr", |ts| ts.push_str("NOW"), &mut reused);
            match reference {
                Ok(event) => {
                    prop_assert_eq!(fast, Ok(()));
                    prop_assert_eq!(&reused, &event);
                    prop_assert_eq!(reused.to_json_line(), event.to_json_line());
                }
                Err(skip) => prop_assert_eq!(fast, Err(skip)),
            }
            // The one pass itself is what is being compared, not its fallback: it reads every
            // object without repeated or escaped keys.
            let keys: Vec<&String> = entries.iter().map(|(k, _)| k).collect();
            let plain = keys.iter().all(|k| !k[1..k.len() - 1].contains('\\'));
            let distinct = (1..keys.len()).all(|i| !keys[..i].contains(&keys[i]));
            if plain && distinct {
                let mut event = Event::new("", Source::Audit, "unknown", "ctr");
                prop_assert!(read_in_one_pass(line.trim(), &mut event).is_some(), "{}", line);
            }
        }

        /// Lines that are not objects, or not JSON, are skipped the same way.
        #[test]
        fn one_pass_skips_what_the_value_reading_skips(line in prop_oneof![
            value(),
            any::<String>(),
            value().prop_map(|v| format!("{{\"a\":{v}")),
            value().prop_map(|v| format!("{{\"a\":{v}}} x")),
        ]) {
            let text = line.trim();
            let mut event = Event::new("", Source::Audit, "", "");
            let fast = parse_audit_line_into(line.as_bytes(), "ctr", |ts| ts.push_str("NOW"), &mut event);
            if text.is_empty() {
                prop_assert_eq!(fast, Err(AuditSkip::Blank));
            } else {
                match parse_through_value(text, "ctr", || "NOW".to_string()) {
                    Ok(reference) => {
                        prop_assert_eq!(fast, Ok(()));
                        prop_assert_eq!(event, reference);
                    }
                    Err(skip) => prop_assert_eq!(fast, Err(skip)),
                }
            }
        }
    }

    #[test]
    fn a_repeated_key_keeps_its_first_place_and_last_value() {
        // A `Value` map's rule, kept by the one pass sending such lines through a `Value`.
        let event = parse(r#"{"ts":"a","x":1,"ts":5,"y":2,"x":3,"port":"p","port":80}"#).unwrap();
        assert_eq!(event.ts, "NOW");
        assert_eq!(event.port, 80);
        let extra: Vec<_> = event.extra.iter().collect();
        assert_eq!(extra, [("ts", "5"), ("x", "3"), ("y", "2")]);
    }
}
