//! audit: one `audit.jsonl` line to an event (pure: the clock is passed in).

use std::fmt;

use serde_json::{Map, Value};

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
/// lost.
pub fn parse_audit_line(
    line: &[u8],
    default_container: &str,
    now: impl FnOnce() -> String,
) -> Result<Event, AuditSkip> {
    let text = String::from_utf8_lossy(line);
    let text = text.trim();
    if text.is_empty() {
        return Err(AuditSkip::Blank);
    }
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
}
