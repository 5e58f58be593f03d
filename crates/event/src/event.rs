//! The event type and its JSON-lines form.

use std::convert::Infallible;
use std::fmt;
use std::io;

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::sanitize::Sanitized;

/// Where an event came from: the one name of a source across the workspace (events, the
/// command line's `--source`, the summary's counters, the cursor file's keys).
///
/// Variants are declared in alphabetical order of their names, so `Ord` sorts sources by name
/// and maps keyed by source list them alphabetically (the summary line relies on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// An entry of the container's `audit.jsonl`.
    Audit,
    /// A blocked lookup in the container's dnsmasq query log.
    Dns,
    /// A packet the kernel logged to the NFLOG group.
    Nflog,
    /// shield-watch's own notices (for example lost packets).
    Watch,
}

impl Source {
    /// The sources that read an input (every one but [`Source::Watch`]), in name order.
    pub const INPUTS: [Source; 3] = [Source::Audit, Source::Dns, Source::Nflog];

    /// The name used in the stream, on the command line and in the cursor file.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Audit => "audit",
            Source::Dns => "dns",
            Source::Nflog => "nflog",
            Source::Watch => "watch",
        }
    }

    /// The source of a name written by [`Source::as_str`].
    pub fn from_name(name: &str) -> Option<Source> {
        [Source::Audit, Source::Dns, Source::Nflog, Source::Watch]
            .into_iter()
            .find(|source| source.as_str() == name)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `extra` object: string keys to string values, in insertion order, keys unique.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extra(Vec<(String, String)>);

impl Extra {
    /// Sets `key` to `value`; a key already present keeps its place and takes the new value (the
    /// way a JSON object with a repeated key is read).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// The value for `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Removes every entry (keeping the allocation of the list).
    pub fn clear(&mut self) {
        self.0.clear();
    }

    /// True when there is nothing in it (then `extra` is left out of the JSON).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl Serialize for Extra {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (key, value) in &self.0 {
            map.serialize_entry(&Sanitized(key), &Sanitized(value))?;
        }
        map.end()
    }
}

/// One line of the stream.
///
/// The four core fields are always written; every other field is written only when it is not
/// empty (`""`, `0`, no `extra`), in this declaration order, which is the reference's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// RFC 3339 UTC with microseconds, or an audit entry's own `ts`.
    pub ts: String,
    /// Which source produced it.
    pub source: Source,
    /// What happened, e.g. `blocked_query`.
    pub action: String,
    /// The container's name.
    pub container: String,
    /// Queried name (dns), name the destination was resolved from (nflog), or the entry's (audit).
    pub domain: String,
    /// DNS query type, e.g. `A`.
    pub query_type: String,
    /// Destination IP (nflog) or the entry's `dest` (audit).
    pub dest: String,
    /// Log prefix (nflog) or the entry's `detail` (audit).
    pub detail: String,
    /// Destination port; 0 is "none".
    pub port: i64,
    /// IP protocol number; 0 is "none".
    pub proto: i64,
    /// Everything else known about the event.
    pub extra: Extra,
}

impl Event {
    /// An event with its four core fields set and nothing else.
    pub fn new(
        ts: impl Into<String>,
        source: Source,
        action: impl Into<String>,
        container: impl Into<String>,
    ) -> Event {
        Event {
            ts: ts.into(),
            source,
            action: action.into(),
            container: container.into(),
            domain: String::new(),
            query_type: String::new(),
            dest: String::new(),
            detail: String::new(),
            port: 0,
            proto: 0,
            extra: Extra::default(),
        }
    }

    /// Makes this event what [`Event::new`] would make of the same values, keeping the
    /// allocations of its strings: an event reused for one line after another costs no
    /// allocation once its strings have grown to the lengths they carry.
    pub fn reset(&mut self, source: Source, action: &str, container: &str) {
        self.ts.clear();
        self.source = source;
        self.action.clear();
        self.action.push_str(action);
        self.container.clear();
        self.container.push_str(container);
        self.domain.clear();
        self.query_type.clear();
        self.dest.clear();
        self.detail.clear();
        self.port = 0;
        self.proto = 0;
        self.extra.clear();
    }

    /// Appends the event to `out` as one line of compact JSON, newline included.
    ///
    /// The bytes are those of its `Serialize` form written by serde_json (a property test holds
    /// the two equal), appended piece by piece: no formatter, and no allocation once `out` has
    /// grown to the length of a line. A plain value (printable ASCII but `"` and `\\`, at most
    /// [`MAX_LEN`](crate::MAX_LEN) bytes: nearly every one) is copied whole; a key is written
    /// together with the quotes around it, the closing one of the value before it included.
    pub fn write_json_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"ts\":\"");
        push_string(out, &self.ts);
        match self.source {
            Source::Audit => out.extend_from_slice(b"\",\"source\":\"audit\",\"action\":\""),
            Source::Dns => out.extend_from_slice(b"\",\"source\":\"dns\",\"action\":\""),
            Source::Nflog => out.extend_from_slice(b"\",\"source\":\"nflog\",\"action\":\""),
            Source::Watch => out.extend_from_slice(b"\",\"source\":\"watch\",\"action\":\""),
        }
        push_string(out, &self.action);
        out.extend_from_slice(b"\",\"container\":\"");
        push_string(out, &self.container);
        for (key, value) in [
            (&b"\",\"domain\":\""[..], &self.domain),
            (b"\",\"query_type\":\"", &self.query_type),
            (b"\",\"dest\":\"", &self.dest),
            (b"\",\"detail\":\"", &self.detail),
        ] {
            if !value.is_empty() {
                out.extend_from_slice(key);
                push_string(out, value);
            }
        }
        // The last string value is closed here, not by its own code: each key above opens with
        // the quote that closes the value before it.
        out.push(b'"');
        if self.port != 0 {
            out.extend_from_slice(b",\"port\":");
            push_integer(out, self.port);
        }
        if self.proto != 0 {
            out.extend_from_slice(b",\"proto\":");
            push_integer(out, self.proto);
        }
        if !self.extra.is_empty() {
            out.extend_from_slice(b",\"extra\":{\"");
            for (i, (key, value)) in self.extra.iter().enumerate() {
                if i > 0 {
                    out.extend_from_slice(b"\",\"");
                }
                push_string(out, key);
                out.extend_from_slice(b"\":\"");
                push_string(out, value);
            }
            out.extend_from_slice(b"\"}");
        }
        out.extend_from_slice(b"}\n");
    }

    /// Writes the event as one line of compact JSON, newline included: the bytes of
    /// [`Event::write_json_into`], built in a buffer and written in one `write_all` (a caller
    /// with a `Vec<u8>` calls [`Event::write_json_into`] and appends to it directly).
    pub fn write_json<W: io::Write>(&self, out: &mut W) -> io::Result<()> {
        let mut line = Vec::with_capacity(256);
        self.write_json_into(&mut line);
        out.write_all(&line)
    }

    /// The event as one line of compact JSON, newline included.
    pub fn to_json_line(&self) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_json_into(&mut out);
        String::from_utf8(out).expect("the sanitised JSON is ASCII")
    }

    /// The key used by `--dedup`: the domain when there is one, else the destination.
    pub fn subject(&self) -> &str {
        if self.domain.is_empty() {
            &self.dest
        } else {
            &self.domain
        }
    }
}

/// Appends `value` sanitised, as the inside of a JSON string (the quotes are the caller's):
/// after the sanitiser only printable ASCII is left, of which JSON escapes `"` and `\\` (as
/// serde_json writes them; nothing else).
#[inline(always)]
fn push_string(out: &mut Vec<u8>, value: &str) {
    if goes_in_as_it_is(value) {
        out.extend_from_slice(value.as_bytes());
    } else {
        push_sanitized(out, value);
    }
}

/// [`push_string`] of a value that is not its own JSON text: out of line, it is rare.
#[cold]
#[inline(never)]
fn push_sanitized(out: &mut Vec<u8>, value: &str) {
    let escaped = Sanitized(value).pieces(|piece| {
        let bytes = piece.as_bytes();
        let mut run = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if b == b'"' || b == b'\\' {
                out.extend_from_slice(&bytes[run..i]);
                out.extend_from_slice(if b == b'"' { b"\\\"" } else { b"\\\\" });
                run = i + 1;
            }
        }
        out.extend_from_slice(&bytes[run..]);
        Ok::<(), Infallible>(())
    });
    match escaped {
        Ok(()) => {}
        Err(never) => match never {},
    }
}

/// Whether `value` is its own sanitised JSON text: printable ASCII but `"` and `\\`, and not over
/// the cap: nearly every value, which is then copied whole rather than piece by piece. Sixteen
/// bytes at a time, in blocks the compiler tests as one vector (the last sixteen bytes of a
/// longer value are one block, overlapping the one before). A shorter value is one block padded
/// with spaces, read as two overlapping words (eight to sixteen bytes), two overlapping halves
/// (four to seven) or its first, middle and last bytes (one to three): no length takes a byte
/// loop or a copy of unknown length.
#[inline]
fn goes_in_as_it_is(value: &str) -> bool {
    let bytes = value.as_bytes();
    let n = bytes.len();
    if n <= 16 {
        let mut block = [b' '; 16];
        if n >= 8 {
            block[..8].copy_from_slice(&bytes[..8]);
            block[8..].copy_from_slice(&bytes[n - 8..]);
        } else if n >= 4 {
            block[..4].copy_from_slice(&bytes[..4]);
            block[4..8].copy_from_slice(&bytes[n - 4..]);
        } else if n > 0 {
            block[0] = bytes[0];
            block[1] = bytes[n / 2];
            block[2] = bytes[n - 1];
        }
        return all_plain(block);
    }
    if n > crate::sanitize::MAX_LEN {
        return false;
    }
    let mut plain = all_plain(block_at(bytes, n - 16));
    let mut at = 0;
    while at + 16 < n {
        plain &= all_plain(block_at(bytes, at));
        at += 16;
    }
    plain
}

/// The sixteen bytes of `bytes` from `at`.
#[inline(always)]
fn block_at(bytes: &[u8], at: usize) -> [u8; 16] {
    let mut block = [0u8; 16];
    block.copy_from_slice(&bytes[at..at + 16]);
    block
}

/// Whether each byte of `block` is printable ASCII but `"` and `\\`. Written without a branch
/// per byte, so that it compiles to a few vector compares.
#[inline(always)]
fn all_plain(block: [u8; 16]) -> bool {
    let mut unplain = 0u8;
    for b in block {
        unplain |= u8::from(!(0x20..=0x7e).contains(&b) | (b == b'"') | (b == b'\\'));
    }
    unplain == 0
}

/// Appends `n` in decimal, as serde_json writes it.
fn push_integer(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[at..]);
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("ts", &Sanitized(&self.ts))?;
        map.serialize_entry("source", self.source.as_str())?;
        map.serialize_entry("action", &Sanitized(&self.action))?;
        map.serialize_entry("container", &Sanitized(&self.container))?;
        for (key, value) in [
            ("domain", &self.domain),
            ("query_type", &self.query_type),
            ("dest", &self.dest),
            ("detail", &self.detail),
        ] {
            if !value.is_empty() {
                map.serialize_entry(key, &Sanitized(value))?;
            }
        }
        if self.port != 0 {
            map.serialize_entry("port", &self.port)?;
        }
        if self.proto != 0 {
            map.serialize_entry("proto", &self.proto)?;
        }
        if !self.extra.is_empty() {
            map.serialize_entry("extra", &self.extra)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        /// The word-at-a-time test is the byte-by-byte one.
        #[test]
        fn goes_in_as_it_is_agrees_with_a_byte_loop(value in {
            // Mostly printable (which has `"` and `\\` among it), a few others: a string with
            // just one of a kind shows whether that kind is told apart.
            let byte = prop_oneof![
                60 => 0x20u8..0x7f,
                1 => proptest::sample::select(b"\x00\x1f\x7f\x80\xff".to_vec()),
                1 => any::<char>().prop_map(|c| c.to_string().into_bytes()[0]),
            ];
            prop_oneof![
                proptest::collection::vec(byte.clone(), 0..40),
                proptest::collection::vec(byte, 250..270),
            ]
        }) {
            let value = String::from_utf8_lossy(&value).into_owned();
            let plain = value.len() <= crate::sanitize::MAX_LEN
                && value.bytes().all(|b| (0x20..=0x7e).contains(&b) && b != b'"' && b != b'\\');
            prop_assert_eq!(goes_in_as_it_is(&value), plain, "{:?}", value);
        }
    }

    use super::*;

    /// The writer before `write_json_into` (commit 92c6071), kept as the reference its
    /// replacement is held to, byte for byte: every piece through `io::Write`, one string at a
    /// time, the same sanitiser.
    mod reference {
        use std::io;

        use super::super::{Event, Sanitized};

        pub fn write_json<W: io::Write>(event: &Event, out: &mut W) -> io::Result<()> {
            out.write_all(b"{\"ts\":")?;
            json_string(out, &event.ts)?;
            out.write_all(b",\"source\":\"")?;
            out.write_all(event.source.as_str().as_bytes())?;
            out.write_all(b"\",\"action\":")?;
            json_string(out, &event.action)?;
            out.write_all(b",\"container\":")?;
            json_string(out, &event.container)?;
            for (key, value) in [
                (&b",\"domain\":"[..], &event.domain),
                (b",\"query_type\":", &event.query_type),
                (b",\"dest\":", &event.dest),
                (b",\"detail\":", &event.detail),
            ] {
                if !value.is_empty() {
                    out.write_all(key)?;
                    json_string(out, value)?;
                }
            }
            if event.port != 0 {
                out.write_all(b",\"port\":")?;
                out.write_all(event.port.to_string().as_bytes())?;
            }
            if event.proto != 0 {
                out.write_all(b",\"proto\":")?;
                out.write_all(event.proto.to_string().as_bytes())?;
            }
            if !event.extra.is_empty() {
                out.write_all(b",\"extra\":{")?;
                for (i, (key, value)) in event.extra.iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    json_string(out, key)?;
                    out.write_all(b":")?;
                    json_string(out, value)?;
                }
                out.write_all(b"}")?;
            }
            out.write_all(b"}\n")
        }

        fn json_string<W: io::Write>(out: &mut W, value: &str) -> io::Result<()> {
            // Without the old writer's shortcut for plain values (the test it shares with the
            // new one): every value through the sanitiser, which passes a clean one whole.
            out.write_all(b"\"")?;
            Sanitized(value).pieces(|piece| {
                let bytes = piece.as_bytes();
                let mut run = 0;
                for (i, &b) in bytes.iter().enumerate() {
                    if b == b'"' || b == b'\\' {
                        out.write_all(&bytes[run..i])?;
                        out.write_all(if b == b'"' { b"\\\"" } else { b"\\\\" })?;
                        run = i + 1;
                    }
                }
                out.write_all(&bytes[run..])
            })?;
            out.write_all(b"\"")
        }
    }

    /// Values as the writer meets them: mostly plain, of every length around the word size and
    /// the cap, some with one byte of another kind (a quote, a backslash, a control character,
    /// DEL, a non-ASCII character) anywhere in them, and empty ones (an optional key left out).
    fn value() -> BoxedStrategy<String> {
        let odd = prop_oneof![
            Just("\"".to_string()),
            Just("\\".to_string()),
            Just("\u{0}".to_string()),
            Just("\u{1f}".to_string()),
            Just("\u{7f}".to_string()),
            Just("\u{80}".to_string()),
            Just("\u{e9}".to_string()),
            Just("\u{202e}".to_string()),
            Just("\u{1f600}".to_string()),
        ];
        prop_oneof![
            4 => "[ -~]{0,40}",
            1 => "[ -~]{250,262}",
            1 => Just(String::new()),
            2 => ("[ -~]{0,40}", any::<prop::sample::Index>(), odd.clone()).prop_map(|(s, at, c)| {
                let at = at.index(s.len() + 1);
                format!("{}{c}{}", &s[..at], &s[at..])
            }),
            1 => ("[ -~]{250,262}", any::<prop::sample::Index>(), odd).prop_map(|(s, at, c)| {
                let at = at.index(s.len() + 1);
                format!("{}{c}{}", &s[..at], &s[at..])
            }),
            1 => any::<String>(),
        ]
        .boxed()
    }

    fn any_event() -> BoxedStrategy<Event> {
        let source = prop_oneof![
            Just(Source::Audit),
            Just(Source::Dns),
            Just(Source::Nflog),
            Just(Source::Watch)
        ];
        let number = prop_oneof![Just(0i64), any::<i64>(), Just(i64::MIN), Just(i64::MAX)];
        (
            (value(), source, value(), value()),
            (value(), value(), value(), value()),
            (number.clone(), number),
            proptest::collection::vec((value(), value()), 0..4),
        )
            .prop_map(
                |((ts, source, action, container), strings, (port, proto), extra)| {
                    let mut event = Event::new(ts, source, action, container);
                    (event.domain, event.query_type, event.dest, event.detail) = strings;
                    (event.port, event.proto) = (port, proto);
                    for (key, value) in extra {
                        event.extra.insert(key, value);
                    }
                    event
                },
            )
            .boxed()
    }

    /// A writer that is not a `Vec`: the line reaches it through `io::Write`.
    struct Other(Vec<u8>);

    impl io::Write for Other {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.write(buf)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// The writer writes what the one before it wrote, appended after what the buffer
        /// holds, and the same into any other writer.
        #[test]
        fn the_writer_writes_what_the_one_before_it_wrote(event in any_event(), before in value()) {
            let mut expected = before.clone().into_bytes();
            reference::write_json(&event, &mut expected).unwrap();
            let mut written = before.clone().into_bytes();
            event.write_json_into(&mut written);
            prop_assert_eq!(String::from_utf8_lossy(&written), String::from_utf8_lossy(&expected));
            let mut written = before.clone().into_bytes();
            event.write_json(&mut written).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&written), String::from_utf8_lossy(&expected));
            let mut other = Other(before.into_bytes());
            event.write_json(&mut other).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(&other.0), String::from_utf8_lossy(&expected));
        }
    }

    fn core() -> Event {
        Event::new("T", Source::Nflog, "blocked_connection", "c")
    }

    #[test]
    fn core_keys_are_always_present_even_when_empty() {
        let event = Event::new("", Source::Audit, "", "");
        assert_eq!(
            event.to_json_line(),
            "{\"ts\":\"\",\"source\":\"audit\",\"action\":\"\",\"container\":\"\"}\n"
        );
    }

    #[test]
    fn every_key_in_contract_order() {
        let mut event = core();
        event.extra.insert("src", "198.51.100.1");
        event.proto = 6;
        event.port = 443;
        event.detail = "TEROK_SHIELD_DENIED:".into();
        event.dest = "192.0.2.1".into();
        event.query_type = "A".into();
        event.domain = "x.example".into();
        assert_eq!(
            event.to_json_line(),
            concat!(
                "{\"ts\":\"T\",\"source\":\"nflog\",\"action\":\"blocked_connection\",\"container\":\"c\",",
                "\"domain\":\"x.example\",\"query_type\":\"A\",\"dest\":\"192.0.2.1\",",
                "\"detail\":\"TEROK_SHIELD_DENIED:\",\"port\":443,\"proto\":6,",
                "\"extra\":{\"src\":\"198.51.100.1\"}}\n"
            )
        );
    }

    #[test]
    fn empty_optional_keys_are_omitted() {
        let mut event = core();
        event.port = 0;
        event.proto = 17;
        assert_eq!(
            event.to_json_line(),
            "{\"ts\":\"T\",\"source\":\"nflog\",\"action\":\"blocked_connection\",\"container\":\"c\",\"proto\":17}\n"
        );
    }

    #[test]
    fn negative_numbers_are_not_empty() {
        let mut event = core();
        event.port = -1;
        assert!(event.to_json_line().contains("\"port\":-1"));
    }

    #[test]
    fn strings_are_sanitised_and_json_escaped() {
        let mut event = core();
        event.detail = "say \"hi\" \\ \u{202e}\x1b[2J".into();
        event.extra.insert("k\u{7}ey", "v\nal");
        let line = event.to_json_line();
        assert!(
            line.contains("\"detail\":\"say \\\"hi\\\" \\\\   [2J\""),
            "{line}"
        );
        assert!(line.contains("\"extra\":{\"k ey\":\"v al\"}"), "{line}");
    }

    #[test]
    fn extra_keeps_insertion_order_and_replaces_repeats() {
        let mut extra = Extra::default();
        extra.insert("b", "1");
        extra.insert("a", "2");
        extra.insert("b", "3");
        assert_eq!(extra.iter().collect::<Vec<_>>(), [("b", "3"), ("a", "2")]);
        assert_eq!(extra.get("a"), Some("2"));
        assert_eq!(extra.len(), 2);
    }

    #[test]
    fn sources_order_by_name_and_names_round_trip() {
        let all = [Source::Audit, Source::Dns, Source::Nflog, Source::Watch];
        let mut by_name = all;
        by_name.sort_by_key(|s| s.as_str());
        let mut by_ord = all;
        by_ord.sort();
        assert_eq!(by_ord, by_name);
        for source in all {
            assert_eq!(Source::from_name(source.as_str()), Some(source));
        }
        assert_eq!(Source::from_name("DNS"), None);
    }

    #[test]
    fn subject_prefers_domain() {
        let mut event = core();
        event.dest = "192.0.2.1".into();
        assert_eq!(event.subject(), "192.0.2.1");
        event.domain = "x.example".into();
        assert_eq!(event.subject(), "x.example");
    }
}
