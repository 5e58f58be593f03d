//! Property tests: whatever goes in, the stream carries valid, safe JSON.

use proptest::prelude::*;
use serde_json::Value;
use shield_event::map::audit::parse_audit_line;
use shield_event::map::nflog::{packet_event, LoggedPacket};
use shield_event::{sanitize, Event, Source, TextStyle, MAX_LEN};
use shield_nflog::Headers;

fn assert_safe(value: &Value) {
    match value {
        Value::String(s) => {
            assert!(s.chars().count() <= MAX_LEN, "too long: {}", s.len());
            assert!(s.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{s:?}");
        }
        Value::Object(map) => {
            for (key, inner) in map {
                assert_safe(&Value::String(key.clone()));
                assert_safe(inner);
            }
        }
        Value::Number(_) => {}
        other => panic!("unexpected JSON value {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_strings_give_one_line_of_safe_json(
        ts in any::<String>(), action in any::<String>(), container in any::<String>(),
        domain in any::<String>(), dest in any::<String>(), detail in ".{0,600}",
        port in any::<i64>(), key in any::<String>(), value in any::<String>(),
    ) {
        let mut event = Event::new(ts, Source::Dns, action, container);
        event.domain = domain;
        event.dest = dest;
        event.detail = detail;
        event.port = port;
        event.extra.insert(key, value);
        let line = event.to_json_line();
        prop_assert!(line.ends_with('\n'));
        prop_assert_eq!(line.matches('\n').count(), 1);
        let parsed: Value = serde_json::from_str(&line).unwrap();
        assert_safe(&parsed);
        let keys: Vec<&String> = parsed.as_object().unwrap().keys().collect();
        prop_assert_eq!(&keys[..4], &["ts", "source", "action", "container"]);
    }

    #[test]
    fn sanitize_keeps_length_in_characters_up_to_the_cap(input in any::<String>()) {
        let out = sanitize(&input);
        let chars = input.chars().count();
        prop_assert_eq!(out.len(), chars.min(MAX_LEN));
        if chars <= MAX_LEN {
            // Position-preserving: printable characters stay where they were.
            for (a, b) in input.chars().zip(out.chars()) {
                prop_assert!(a == b || b == ' ');
            }
        } else {
            prop_assert!(out.ends_with("..."));
        }
    }

    #[test]
    fn any_audit_bytes_never_panic_and_events_are_safe(line in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(event) = parse_audit_line(&line, "c", || "now".into()) {
            let parsed: Value = serde_json::from_str(&event.to_json_line()).unwrap();
            assert_safe(&parsed);
        }
    }

    #[test]
    fn audit_objects_with_arbitrary_strings_round_trip_safely(
        action in any::<String>(), detail in any::<String>(), key in "[a-z]{1,8}", value in any::<String>()
    ) {
        let mut object = serde_json::Map::new();
        object.insert("action".into(), Value::String(action.clone()));
        object.insert("detail".into(), Value::String(detail.clone()));
        object.insert(format!("x{key}"), Value::String(value.clone()));
        let line = Value::Object(object).to_string();
        let event = parse_audit_line(line.as_bytes(), "c", || "now".into()).unwrap();
        prop_assert_eq!(&event.action, &action);
        prop_assert_eq!(&event.detail, &detail);
        let key = format!("x{key}");
        prop_assert_eq!(event.extra.get(&key), Some(value.as_str()));
    }

    #[test]
    fn any_logged_packet_gives_safe_json_and_one_text_line(
        prefix in proptest::collection::vec(any::<u8>(), 0..80),
        src in any::<std::net::IpAddr>(), dest in any::<std::net::IpAddr>(), proto in any::<u8>(),
        sport in any::<Option<u16>>(), dport in any::<Option<u16>>(), icmp in any::<Option<(u8, u8)>>(),
        flags in any::<(bool, bool)>(), devs in any::<(Option<u32>, Option<u32>)>(),
        ids in any::<(Option<u32>, Option<u32>, Option<u32>)>(), hook in any::<Option<u8>>(),
        name in any::<Option<String>>(),
    ) {
        let packet = LoggedPacket {
            prefix: &prefix,
            headers: Headers { src, dest, proto, sport, dport, icmp, fragment: flags.0, truncated: flags.1 },
            indev: devs.0, outdev: devs.1,
            uid: ids.0, gid: ids.1, mark: ids.2, hook,
        };
        let event = packet_event(&packet, "now", "c", &|_| name.clone());
        let parsed: Value = serde_json::from_str(&event.to_json_line()).unwrap();
        assert_safe(&parsed);
        let mut text = Vec::new();
        event.write_text(TextStyle::default(), &mut text).unwrap();
        prop_assert_eq!(text.iter().filter(|&&b| b == b'\n').count(), 1);
        prop_assert!(text.iter().all(|&b| b == b'\n' || (0x20..=0x7e).contains(&b)));
    }
}
