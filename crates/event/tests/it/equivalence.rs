//! The fast paths equal the plain ones they replaced, byte for byte: the hand-written JSON writer
//! and serde_json over the `Serialize` impl; an event reset in place and a new one.

use proptest::prelude::*;
use shield_event::{Event, Source};

/// Strings that exercise the writer: any Unicode, quotes and backslashes, control characters,
/// and lengths around the 256-character cap.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,40}",
        "[\"\\\\a\\x00-\\x1f\\x7f\u{80}-\u{10ffff}]{0,20}",
        "[a\"\\\\é]{250,262}",
        Just(String::new()),
    ]
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![
        Just(Source::Audit),
        Just(Source::Dns),
        Just(Source::Nflog),
        Just(Source::Watch)
    ]
}

prop_compose! {
    fn event()(
        ts in text(), source in source(), action in text(), container in text(),
        domain in text(), query_type in text(), dest in text(), detail in text(),
        port in prop_oneof![Just(0i64), any::<i64>(), Just(i64::MIN), Just(i64::MAX)],
        proto in prop_oneof![Just(0i64), any::<i64>()],
        extra in proptest::collection::vec((text(), text()), 0..4),
    ) -> Event {
        let mut event = Event::new(ts, source, action, container);
        event.domain = domain;
        event.query_type = query_type;
        event.dest = dest;
        event.detail = detail;
        event.port = port;
        event.proto = proto;
        for (key, value) in extra {
            event.extra.insert(key, value);
        }
        event
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn the_json_writer_writes_what_serde_json_writes(event in event()) {
        let mut reference = serde_json::to_vec(&event).unwrap();
        reference.push(b'\n');
        let mut written = Vec::new();
        event.write_json(&mut written).unwrap();
        prop_assert_eq!(String::from_utf8(written).unwrap(), String::from_utf8(reference).unwrap());
    }

    #[test]
    fn a_reset_event_is_a_new_one(old in event(), source in source(), action in text(), container in text()) {
        let mut reused = old;
        reused.reset(source, &action, &container);
        prop_assert_eq!(reused, Event::new("", source, action, container));
    }
}
