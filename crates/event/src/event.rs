//! The event type and its JSON-lines form.

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

    /// Writes the event as one line of compact JSON, newline included.
    ///
    /// The bytes are those of its `Serialize` form written by serde_json (a property test holds
    /// the two equal), produced piece by piece straight into `out`: no allocation, no formatter.
    pub fn write_json<W: io::Write>(&self, out: &mut W) -> io::Result<()> {
        out.write_all(b"{\"ts\":")?;
        json_string(out, &self.ts)?;
        out.write_all(b",\"source\":\"")?;
        out.write_all(self.source.as_str().as_bytes())?;
        out.write_all(b"\",\"action\":")?;
        json_string(out, &self.action)?;
        out.write_all(b",\"container\":")?;
        json_string(out, &self.container)?;
        for (key, value) in [
            (&b",\"domain\":"[..], &self.domain),
            (b",\"query_type\":", &self.query_type),
            (b",\"dest\":", &self.dest),
            (b",\"detail\":", &self.detail),
        ] {
            if !value.is_empty() {
                out.write_all(key)?;
                json_string(out, value)?;
            }
        }
        if self.port != 0 {
            out.write_all(b",\"port\":")?;
            json_integer(out, self.port)?;
        }
        if self.proto != 0 {
            out.write_all(b",\"proto\":")?;
            json_integer(out, self.proto)?;
        }
        if !self.extra.is_empty() {
            out.write_all(b",\"extra\":{")?;
            for (i, (key, value)) in self.extra.iter().enumerate() {
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

    /// The event as one line of compact JSON, newline included.
    pub fn to_json_line(&self) -> String {
        let mut out = Vec::with_capacity(256);
        self.write_json(&mut out)
            .expect("writing into a Vec cannot fail");
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

/// Writes `value` sanitised, as a JSON string: after the sanitiser only printable ASCII is left,
/// of which JSON escapes `"` and `\\` (as serde_json writes them; nothing else).
fn json_string<W: io::Write>(out: &mut W, value: &str) -> io::Result<()> {
    out.write_all(b"\"")?;
    if goes_in_as_it_is(value) {
        out.write_all(value.as_bytes())?;
        return out.write_all(b"\"");
    }
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

/// Whether `value` is its own sanitised JSON text: printable ASCII but `"` and `\`, and not over
/// the cap: nearly every value, which is then copied whole rather than piece by piece. Eight
/// bytes at a time, each byte tested in its lane of a register (the last eight bytes of a
/// longer value are one word, overlapping the one before; a shorter one is padded with spaces).
#[inline]
fn goes_in_as_it_is(value: &str) -> bool {
    let bytes = value.as_bytes();
    let n = bytes.len();
    if n < 8 {
        let mut word = u64::from_le_bytes([b' '; 8]);
        for (lane, &b) in bytes.iter().enumerate() {
            word ^= u64::from(b ^ b' ') << (8 * lane);
        }
        return unplain_lanes(word) == 0;
    }
    if n > crate::sanitize::MAX_LEN {
        return false;
    }
    let mut unplain = unplain_lanes(word_at(bytes, n - 8));
    let mut at = 0;
    while at + 8 < n {
        unplain |= unplain_lanes(word_at(bytes, at));
        at += 8;
    }
    unplain == 0
}

/// The eight bytes of `bytes` from `at`, as one word.
#[inline(always)]
fn word_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The high bit of each of the eight bytes of `word` that is not printable ASCII, or is `"` or
/// `\`. On the low seven bits of each byte no sum carries into the next lane (at most
/// 0x7f + 0x7f); a byte with its high bit set is not ASCII at all.
#[inline(always)]
fn unplain_lanes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let low7 = word & !HIGH;
    let del = low7 + ONES;
    let printable = low7 + ONES * 0x60;
    let not_quote = (low7 ^ (ONES * u64::from(b'"'))) + ONES * 0x7f;
    let not_backslash = (low7 ^ (ONES * u64::from(b'\\'))) + ONES * 0x7f;
    (word | del | !(printable & not_quote & not_backslash)) & HIGH
}

/// Writes `n` in decimal, as serde_json does.
fn json_integer<W: io::Write>(out: &mut W, n: i64) -> io::Result<()> {
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
        out.write_all(b"-")?;
    }
    out.write_all(&digits[at..])
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
