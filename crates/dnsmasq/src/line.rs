//! Parsing one dnsmasq 2.90 `log-queries` line into a [`Record`], borrowing the line.
//!
//! Shapes seen in real dnsmasq 2.90 output (see `tests/fixtures/`), after the
//! `Mon DD HH:MM:SS dnsmasq[PID]: ` prefix and, with `log-queries=extra`, a
//! `SERIAL CLIENT/PORT ` pair:
//!
//! ```text
//! query[A] NAME from 127.0.0.1          query[type=65534] NAME from ::1
//! forwarded NAME to 127.0.0.1#5354
//! reply NAME is 198.51.100.10           reply NAME is <CNAME>   reply NAME is NXDOMAIN
//! cached NAME is NODATA-IPv6            config NAME is 192.0.2.7
//! /etc/hosts NAME is 2001:db8::1        reply error is REFUSED (EDE: not ready)
//! nftset add 4 inet t allow_v4 198.51.100.10 NAME
//! ```
//!
//! dnsmasq prints a name with a space in it as is (`query[A] a b.example.com
//! from ...`), so the name is everything between the keyword and the *last*
//! ` from ` / ` to ` / ` is `: the client, server and address fields never
//! contain a space. A TXT answer can (`reply t.example is hello world is
//! 192.0.2.9`); when the text before the last ` is ` itself contains ` is `,
//! the line is ambiguous and its value is reported as [`AnswerValue::Other`]
//! so that nothing a container or an upstream can type ever maps an address.

use std::net::{IpAddr, Ipv4Addr};

/// Position of the first `b` in `s`. The fields of a log line are a few to a
/// few dozen bytes apart, where a plain loop beats memchr's dispatch and set-up.
#[inline(always)]
fn find(s: &[u8], b: u8) -> Option<usize> {
    s.iter().position(|&c| c == b)
}

/// Position of the last `b` in `s`. From the right the fields are longer
/// (a client address, then the name): eight bytes a step, in a register.
#[inline(always)]
fn rfind(s: &[u8], b: u8) -> Option<usize> {
    crate::swar::rfind_from(s, 0, b)
}

/// The text dnsmasq writes instead of a name holding bytes it will not print.
pub(crate) const UNPRINTABLE: &[u8] = b"<name unprintable>";

/// One parsed log line. Borrows the line; building it allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// `query[TYPE] NAME from CLIENT`: a client asked for NAME.
    Query {
        /// The query type as dnsmasq writes it: `A`, `AAAA`, `TXT`, `type=65534`, ...
        qtype: &'a str,
        /// The queried name, as written (case preserved).
        name: Name<'a>,
        /// The client address as written (`127.0.0.1`, `::1`).
        client: &'a [u8],
    },
    /// `forwarded NAME to SERVER`: the query went upstream.
    Forwarded {
        /// The forwarded name.
        name: Name<'a>,
    },
    /// `SOURCE NAME is VALUE`: one record of an answer.
    Answer {
        /// Where the answer came from.
        source: AnswerSource,
        /// The owner name of the record.
        name: Name<'a>,
        /// What the record says.
        value: AnswerValue,
    },
    /// Any other line (start-up notices, `nftset add`, DNSSEC, DHCP, garbage).
    Other,
}

/// A name field of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name<'a> {
    /// The name as dnsmasq printed it (never empty).
    Plain(&'a [u8]),
    /// dnsmasq wrote `<name unprintable>`: the name holds a control byte or non-ASCII.
    Unprintable,
}

impl<'a> Name<'a> {
    fn from_field(field: &'a [u8]) -> Self {
        if field == UNPRINTABLE {
            Name::Unprintable
        } else {
            Name::Plain(field)
        }
    }

    /// The bytes as they appear in the log (`<name unprintable>` for [`Name::Unprintable`]).
    pub fn as_bytes(&self) -> &'a [u8] {
        match self {
            Name::Plain(b) => b,
            Name::Unprintable => UNPRINTABLE,
        }
    }
}

/// The word that starts an answer line: who answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AnswerSource {
    /// `reply`: the upstream server answered.
    Reply,
    /// `cached`: answered from dnsmasq's cache.
    Cached,
    /// `cached-stale`: answered from an expired cache entry (`use-stale-cache`).
    CachedStale,
    /// `config`: answered from configuration (`address=`, `host-record=`, `local=`, ...).
    Config,
    /// `/path/to/hosts`: answered from a hosts file (`/etc/hosts`, `addn-hosts=`).
    Hosts,
    /// `DHCP`: answered from a DHCP lease name.
    Dhcp,
    /// `auth`: answered from one of dnsmasq's authoritative zones.
    Auth,
}

/// The value of an answer line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnswerValue {
    /// An address record.
    Ip(IpAddr),
    /// `<CNAME>`: the name is an alias; the next answer line names its target.
    Cname,
    /// `NXDOMAIN`: the name does not exist.
    NxDomain,
    /// `NODATA`, `NODATA-IPv4`, `NODATA-IPv6`: the name exists without records of that type.
    NoData,
    /// Anything else: `REFUSED`, `<MX>`, TXT text, reverse-lookup names, ambiguous lines.
    Other,
}

/// Parses one log line (a trailing `\n` or `\r\n` is ignored). Never panics, never allocates.
pub fn parse_line(line: &[u8]) -> Record<'_> {
    parse_with_serial(line).1
}

/// Parses a line and also returns the `log-queries=extra` serial number, when present.
///
/// The serial ties together the lines of one query, which the classifier uses
/// to end a CNAME chain exactly where dnsmasq ends the answer.
pub(crate) fn parse_with_serial(line: &[u8]) -> (Option<u64>, Record<'_>) {
    match split_body(line) {
        Some((serial, body)) => (serial, parse_body(body)),
        None => (None, Record::Other),
    }
}

/// The message part of a line (after the prefix and the extra serial/client),
/// with the serial. `None` for a line without the `program[PID]: ` prefix.
#[inline]
pub(crate) fn split_body(line: &[u8]) -> Option<(Option<u64>, &[u8])> {
    let body = strip_prefix(trim_newline(line))?;
    let (serial, body) = strip_extra(body);
    Some((serial, strip_note(body)))
}

/// Parses a message part as [`split_body`] returns it.
#[inline]
pub(crate) fn parse_body(body: &[u8]) -> Record<'_> {
    match body.first() {
        Some(b'q') => parse_query(body).unwrap_or(Record::Other),
        _ => parse_other(body),
    }
}

fn trim_newline(mut line: &[u8]) -> &[u8] {
    if let [rest @ .., b'\n'] = line {
        line = rest;
    }
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    line
}

/// Drops `Mon DD HH:MM:SS dnsmasq[PID]: `. The first `[` of a line is the PID's,
/// because the time stamp and the program name come before anything a client controls.
fn strip_prefix(line: &[u8]) -> Option<&[u8]> {
    // `Mmm dd hh:mm:ss dnsmasq[` is 24 bytes: check it in place rather than
    // scanning for the bracket, which is most of the cost of a short line.
    let open = if line.get(16..24) == Some(b"dnsmasq[") {
        23
    } else {
        find(line, b'[')?
    };
    let close = open + 1 + find(&line[open + 1..], b']')?;
    let rest = &line[close + 1..];
    rest.strip_prefix(b": ")
}

/// Drops the `SERIAL CLIENT/PORT ` pair `log-queries=extra` puts before the
/// message, or the bare `SERIAL ` of the lines dnsmasq logs without a client
/// (its own DNSSEC queries and retries).
fn strip_extra(body: &[u8]) -> (Option<u64>, &[u8]) {
    if !body.first().is_some_and(u8::is_ascii_digit) {
        return (None, body);
    }
    let Some(sp) = find(body, b' ') else {
        return (None, body);
    };
    let Some(serial) = parse_u64(&body[..sp]) else {
        return (None, body);
    };
    let rest = &body[sp + 1..];
    match find(rest, b' ') {
        Some(sp2) if is_client_field(&rest[..sp2]) => (Some(serial), &rest[sp2 + 1..]),
        _ => (Some(serial), rest),
    }
}

/// `ADDR/PORT` as `log-queries=extra` writes the client: not a hosts-file
/// path (which starts with `/`), and digits after the last slash.
fn is_client_field(f: &[u8]) -> bool {
    match rfind(f, b'/') {
        Some(slash) => {
            f[0] != b'/' && slash + 1 < f.len() && f[slash + 1..].iter().all(u8::is_ascii_digit)
        }
        None => false,
    }
}

/// Drops the note dnsmasq may append after the last field: ` (DNSSEC signed)`
/// with `log-queries=extra` and DNSSEC, ` (EDE: ...)` after an error code.
/// Only a line ending in `)` has one, and no address, client or server does.
fn strip_note(body: &[u8]) -> &[u8] {
    if body.last() != Some(&b')') {
        return body;
    }
    match rfind(body, b'(') {
        Some(open) if open > 0 && body[open - 1] == b' ' => &body[..open - 1],
        _ => body,
    }
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(d - b'0');
    }
    Some(n)
}

fn parse_other(body: &[u8]) -> Record<'_> {
    match body.first() {
        Some(b'f') => body
            .strip_prefix(b"forwarded ")
            .and_then(|rest| split_last_field(rest, b" to"))
            .map_or(Record::Other, |(name, _server)| Record::Forwarded {
                name: Name::from_field(name),
            }),
        Some(b'r') => answer(body, b"reply ", AnswerSource::Reply),
        Some(b'c') => {
            if body.starts_with(b"cached-stale ") {
                answer(body, b"cached-stale ", AnswerSource::CachedStale)
            } else if body.starts_with(b"cached ") {
                answer(body, b"cached ", AnswerSource::Cached)
            } else {
                answer(body, b"config ", AnswerSource::Config)
            }
        }
        Some(b'D') => answer(body, b"DHCP ", AnswerSource::Dhcp),
        Some(b'a') => answer(body, b"auth ", AnswerSource::Auth),
        Some(b'/') => match find(body, b' ') {
            Some(sp) => parse_answer(&body[sp + 1..], AnswerSource::Hosts),
            None => Record::Other,
        },
        _ => Record::Other,
    }
}

// Always inlined: returned through memory, the record costs a
// store-forwarding stall on every query line.
#[inline(always)]
pub(crate) fn parse_query(body: &[u8]) -> Option<Record<'_>> {
    let rest = body.strip_prefix(b"query[")?;
    let close = find(rest, b']')?;
    let qtype = match &rest[..close] {
        // The two types nearly every line has, without a UTF-8 check.
        b"A" => "A",
        b"AAAA" => "AAAA",
        t => std::str::from_utf8(t).ok()?,
    };
    let rest = rest[close + 1..].strip_prefix(b" ")?;
    let (name, client) = split_last_field(rest, b" from")?;
    if qtype.is_empty() {
        return None;
    }
    Some(Record::Query {
        qtype,
        name: Name::from_field(name),
        client,
    })
}

fn answer<'a>(body: &'a [u8], keyword: &[u8], source: AnswerSource) -> Record<'a> {
    match body.strip_prefix(keyword) {
        Some(rest) => parse_answer(rest, source),
        None => Record::Other,
    }
}

/// `NAME is VALUE` where VALUE has no space; anything else is `Other` or ambiguous.
fn parse_answer(rest: &[u8], source: AnswerSource) -> Record<'_> {
    let Some((name, value)) = split_last_field(rest, b" is") else {
        return Record::Other;
    };
    let mut value = classify_value(value);
    // `reply t.example is hello world is 192.0.2.9` (a TXT answer) or a name
    // holding ` is `: we cannot tell which ` is ` is dnsmasq's, so nothing is claimed.
    if has_space(name) && memchr::memmem::find(name, b" is ").is_some() {
        value = AnswerValue::Other;
    }
    Record::Answer {
        source,
        name: Name::from_field(name),
        value,
    }
}

/// Whether `s` holds a space, eight bytes at a time: names are a few dozen
/// bytes and rarely have one, where memchr's dispatch and set-up dominate.
#[inline]
fn has_space(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    let mut chunks = s.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        // A zero byte in `x` is a space in `c` (the classic has-zero-byte test).
        let x = u64::from_le_bytes(w) ^ (ONES * u64::from(b' '));
        if x.wrapping_sub(ONES) & !x & (ONES << 7) != 0 {
            return true;
        }
    }
    chunks.remainder().contains(&b' ')
}

/// Splits `NAME<sep> FIELD` at the last space, requiring the text before it to end with `sep`.
/// FIELD (client, server, value) never holds a space; NAME may. NAME must not be empty.
/// Inlined so that `sep` is a constant (else its comparison is a `bcmp` call).
#[inline(always)]
fn split_last_field<'a>(rest: &'a [u8], sep: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    let sp = rfind(rest, b' ')?;
    let field = &rest[sp + 1..];
    let name = rest[..sp].strip_suffix(sep)?;
    if name.is_empty() || field.is_empty() {
        return None;
    }
    Some((name, field))
}

fn classify_value(value: &[u8]) -> AnswerValue {
    // An address starts with a hex digit or a colon: go straight to it.
    match value.first() {
        Some(b'<') if value == b"<CNAME>" => AnswerValue::Cname,
        Some(b'N') if value == b"NXDOMAIN" => AnswerValue::NxDomain,
        Some(b'N') if value.starts_with(b"NODATA") => AnswerValue::NoData,
        _ => parse_ip(value).map_or(AnswerValue::Other, AnswerValue::Ip),
    }
}

/// Parses an IPv4 dotted quad by hand (the common case, and std's parser
/// wants a `&str`), and anything with a colon through std as IPv6.
pub(crate) fn parse_ip(s: &[u8]) -> Option<IpAddr> {
    if s.len() > 45 || s.is_empty() {
        return None;
    }
    // Addresses are short: plain scans beat memchr's set-up here.
    if s.contains(&b':') {
        return parse_ipv6(s).map(IpAddr::V6);
    }
    parse_ipv4(s).map(IpAddr::V4)
}

/// `HEX[b]`: the value of the hex digit `b`, or [`NOT_HEX`].
const HEX: [u8; 256] = {
    let mut table = [NOT_HEX; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = match b as u8 {
            c @ b'0'..=b'9' => c - b'0',
            c @ b'a'..=b'f' => c - b'a' + 10,
            c @ b'A'..=b'F' => c - b'A' + 10,
            _ => NOT_HEX,
        };
        b += 1;
    }
    table
};

const NOT_HEX: u8 = 0xff;

/// RFC 4291 text form: eight groups of 1–4 hex digits, one `::` for a run of
/// zero groups, optionally ending in a dotted quad. Agrees with std's parser
/// (a property test checks) without the UTF-8 check and its generic reader.
fn parse_ipv6(s: &[u8]) -> Option<std::net::Ipv6Addr> {
    let mut g = [0u16; 8];
    let mut n = 0usize;
    // Where the `::` run of zero groups goes, once seen.
    let mut gap: Option<usize> = None;
    // A dotted quad can only follow the last colon.
    let last_colon = s.iter().rposition(|&b| b == b':')?;
    let v4_at = s[last_colon + 1..]
        .contains(&b'.')
        .then_some(last_colon + 1);
    let mut i = 0usize;
    if s.starts_with(b"::") {
        gap = Some(0);
        i = 2;
    } else if s.first() == Some(&b':') {
        return None;
    }
    while i < s.len() {
        if n >= 8 {
            return None;
        }
        // An embedded IPv4 address takes the place of the last two groups.
        if v4_at == Some(i) {
            if n > 6 {
                return None;
            }
            let v4 = parse_ipv4(&s[i..])?.octets();
            g[n] = u16::from_be_bytes([v4[0], v4[1]]);
            g[n + 1] = u16::from_be_bytes([v4[2], v4[3]]);
            n += 2;
            break;
        }
        let mut val: u16 = 0;
        let mut digits = 0;
        while i < s.len() && digits < 4 {
            // A table, not a match on ranges: in random addresses digits and
            // letters alternate unpredictably, and each mispredicted branch
            // cost more than the lookup.
            let d = HEX[usize::from(s[i])];
            if d == NOT_HEX {
                break;
            }
            val = (val << 4) | u16::from(d);
            digits += 1;
            i += 1;
        }
        if digits == 0 {
            return None;
        }
        g[n] = val;
        n += 1;
        if i == s.len() {
            break;
        }
        if s[i] != b':' {
            return None;
        }
        i += 1;
        if i < s.len() && s[i] == b':' {
            if gap.is_some() {
                return None;
            }
            gap = Some(n);
            i += 1;
        } else if i == s.len() {
            return None;
        }
    }
    match gap {
        None if n == 8 => {}
        Some(at) if n <= 7 => {
            // Move the groups after the gap to the end, zeros in between.
            let after = n - at;
            g.copy_within(at..n, 8 - after);
            g[at..8 - after].fill(0);
        }
        _ => return None,
    }
    Some(std::net::Ipv6Addr::from(g))
}

fn parse_ipv4(s: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut idx = 0;
    let mut val: u32 = 0;
    let mut digits = 0;
    for &b in s {
        match b {
            b'0'..=b'9' => {
                // No leading zeros, like std: `01.2.3.4` is not an address.
                if digits == 1 && val == 0 {
                    return None;
                }
                val = val * 10 + u32::from(b - b'0');
                digits += 1;
                if val > 255 {
                    return None;
                }
            }
            b'.' => {
                if digits == 0 || idx == 3 {
                    return None;
                }
                octets[idx] = val as u8;
                idx += 1;
                val = 0;
                digits = 0;
            }
            _ => return None,
        }
    }
    if idx != 3 || digits == 0 {
        return None;
    }
    octets[3] = val as u8;
    Some(Ipv4Addr::from(octets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    const FORMS: &str = include_str!("../tests/fixtures/forms.log");
    const FORMS_EXTRA: &str = include_str!("../tests/fixtures/forms-extra.log");
    const NFTSET: &str = include_str!("../tests/fixtures/nftset-cached.log");
    const NFTSET_EXTRA: &str = include_str!("../tests/fixtures/nftset-cached-extra.log");
    const NODATA: &str = include_str!("../tests/fixtures/nodata.log");
    const NODATA_EXTRA: &str = include_str!("../tests/fixtures/nodata-extra.log");

    /// The first fixture line containing `needle`, parsed.
    fn rec<'a>(fixture: &'a str, needle: &str) -> Record<'a> {
        let line = fixture
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("fixture has no line with {needle:?}"));
        parse_line(line.as_bytes())
    }

    fn plain(s: &str) -> Name<'_> {
        Name::Plain(s.as_bytes())
    }

    fn ip(s: &str) -> AnswerValue {
        AnswerValue::Ip(s.parse().unwrap())
    }

    #[test]
    fn query_lines_plain_and_extra() {
        for fx in [FORMS, FORMS_EXTRA] {
            assert_eq!(
                rec(fx, "query[AAAA] upstream.example.com"),
                Record::Query {
                    qtype: "AAAA",
                    name: plain("upstream.example.com"),
                    client: b"127.0.0.1"
                }
            );
            assert_eq!(
                rec(fx, "query[TXT] txt.example.com"),
                Record::Query {
                    qtype: "TXT",
                    name: plain("txt.example.com"),
                    client: b"127.0.0.1"
                }
            );
            assert_eq!(
                rec(fx, "query[type=65534]"),
                Record::Query {
                    qtype: "type=65534",
                    name: plain("upstream.example.com"),
                    client: b"127.0.0.1"
                }
            );
            // dnsmasq keeps the case the client used and drops the trailing dot itself.
            assert_eq!(
                rec(fx, "query[A] Mixed.Case"),
                Record::Query {
                    qtype: "A",
                    name: plain("Mixed.Case.Example.COM"),
                    client: b"127.0.0.1"
                }
            );
            // The root name is logged as a lone dot.
            assert_eq!(
                rec(fx, "query[A] . from"),
                Record::Query {
                    qtype: "A",
                    name: plain("."),
                    client: b"127.0.0.1"
                }
            );
        }
        assert_eq!(
            rec(NODATA_EXTRA, "9 ::1/40801 query[A]"),
            Record::Query {
                qtype: "A",
                name: plain("h.loc.example"),
                client: b"::1"
            }
        );
    }

    #[test]
    fn a_space_in_a_name_is_printed_and_kept() {
        for fx in [FORMS, FORMS_EXTRA] {
            assert_eq!(
                rec(fx, "query[A] a b.example.com"),
                Record::Query {
                    qtype: "A",
                    name: plain("a b.example.com"),
                    client: b"127.0.0.1"
                }
            );
            assert_eq!(
                rec(fx, "forwarded a b.example.com"),
                Record::Forwarded {
                    name: plain("a b.example.com")
                }
            );
        }
    }

    #[test]
    fn unprintable_names() {
        for fx in [FORMS, FORMS_EXTRA] {
            let qs: Vec<_> = fx
                .lines()
                .filter(|l| l.contains("query[") && l.contains("<name unprintable>"))
                .map(|l| parse_line(l.as_bytes()))
                .collect();
            // \001 (A), non-ASCII (AAAA) and \009 (TXT) became `<name unprintable>`.
            assert_eq!(qs.len(), 3);
            for (q, want) in qs.iter().zip(["A", "AAAA", "TXT"]) {
                assert!(
                    matches!(q, Record::Query { qtype, name: Name::Unprintable, .. } if *qtype == want),
                    "{q:?}"
                );
            }
            assert_eq!(
                rec(fx, "forwarded <name unprintable>"),
                Record::Forwarded {
                    name: Name::Unprintable
                }
            );
        }
        assert_eq!(
            rec(NODATA, "reply <name unprintable>"),
            Record::Answer {
                source: AnswerSource::Reply,
                name: Name::Unprintable,
                value: AnswerValue::NxDomain
            }
        );
    }

    #[test]
    fn forwarded_lines() {
        for fx in [FORMS, FORMS_EXTRA] {
            assert_eq!(
                rec(fx, "forwarded multi.example.org"),
                Record::Forwarded {
                    name: plain("multi.example.org")
                }
            );
        }
    }

    #[test]
    fn answer_sources_and_values() {
        use AnswerSource::*;
        let cases: [(&str, &str, AnswerSource, &str, AnswerValue); 14] = [
            (
                FORMS,
                "reply upstream.example.com is 198",
                Reply,
                "upstream.example.com",
                ip("198.51.100.10"),
            ),
            (
                FORMS,
                "reply upstream.example.com is 2001",
                Reply,
                "upstream.example.com",
                ip("2001:db8::10"),
            ),
            (
                FORMS,
                "reply alias.example.com is",
                Reply,
                "alias.example.com",
                AnswerValue::Cname,
            ),
            (
                FORMS,
                "reply missing.nx.example",
                Reply,
                "missing.nx.example",
                AnswerValue::NxDomain,
            ),
            (
                FORMS,
                "config blocked.example",
                Config,
                "blocked.example",
                AnswerValue::NxDomain,
            ),
            (
                FORMS,
                "config fixed6.example",
                Config,
                "fixed6.example",
                ip("2001:db8::7"),
            ),
            (
                FORMS,
                "config localalias.example.com",
                Config,
                "localalias.example.com",
                AnswerValue::Cname,
            ),
            (
                FORMS,
                "hosts.extra hostsfile.example.com is 2001",
                Hosts,
                "hostsfile.example.com",
                ip("2001:db8::50"),
            ),
            (
                FORMS,
                "reply example.com is <MX>",
                Reply,
                "example.com",
                AnswerValue::Other,
            ),
            (
                FORMS,
                "reply error is REFUSED",
                Reply,
                "error",
                AnswerValue::Other,
            ),
            // A reverse answer: the "name" is an address and the value a name; not an address record.
            (
                FORMS,
                "reply 198.51.100.10 is",
                Reply,
                "198.51.100.10",
                AnswerValue::Other,
            ),
            (
                NFTSET,
                "cached upstream.example.com is 2001",
                Cached,
                "upstream.example.com",
                ip("2001:db8::10"),
            ),
            (
                NODATA,
                "reply six.loc.example",
                Reply,
                "six.loc.example",
                AnswerValue::NoData,
            ),
            (
                NODATA,
                "config d.dl.example",
                Config,
                "d.dl.example",
                AnswerValue::NoData,
            ),
        ];
        for (fx, needle, source, name, value) in cases {
            assert_eq!(
                rec(fx, needle),
                Record::Answer {
                    source,
                    name: plain(name),
                    value
                },
                "{needle}"
            );
        }
        assert_eq!(
            rec(FORMS_EXTRA, "hosts.extra hf-alias"),
            Record::Answer {
                source: Hosts,
                name: plain("hf-alias.example.com"),
                value: ip("203.0.113.50")
            }
        );
        assert_eq!(
            rec(NODATA_EXTRA, "cached h.loc.example is NODATA-IPv6"),
            Record::Answer {
                source: Cached,
                name: plain("h.loc.example"),
                value: AnswerValue::NoData
            }
        );
    }

    #[test]
    fn txt_answer_holding_is_and_an_address_is_ambiguous() {
        for fx in [NFTSET, NFTSET_EXTRA] {
            assert_eq!(
                rec(fx, "reply txt.example.com is hello world is 192.0.2.99"),
                Record::Answer {
                    source: AnswerSource::Reply,
                    name: plain("txt.example.com is hello world"),
                    value: AnswerValue::Other
                }
            );
        }
    }

    #[test]
    fn other_lines() {
        for fx in [FORMS, FORMS_EXTRA, NFTSET, NFTSET_EXTRA] {
            for needle in [
                "started, version",
                "compile time options",
                "using nameserver",
                "exiting on receipt",
            ] {
                assert_eq!(rec(fx, needle), Record::Other, "{needle}");
            }
        }
        assert_eq!(rec(FORMS, "read /tmp/dq/hosts.extra"), Record::Other);
        assert_eq!(rec(NFTSET, "nftset add 4"), Record::Other);
        assert_eq!(rec(NFTSET_EXTRA, "nftset add 6"), Record::Other);
        assert_eq!(rec(NODATA, "cleared cache"), Record::Other);
        // `config error is REFUSED (EDE: not ready)` from the upstream's own log:
        // the note goes, and REFUSED is not an address.
        let line = b"Nov 27 15:08:33 dnsmasq[6486]: config error is REFUSED (EDE: not ready)";
        assert_eq!(
            parse_line(line),
            Record::Answer {
                source: AnswerSource::Config,
                name: plain("error"),
                value: AnswerValue::Other
            }
        );
    }

    #[test]
    fn every_fixture_line_parses_to_the_expected_kind() {
        for fx in [
            FORMS,
            FORMS_EXTRA,
            NFTSET,
            NFTSET_EXTRA,
            NODATA,
            NODATA_EXTRA,
        ] {
            for line in fx.lines() {
                let r = parse_line(line.as_bytes());
                let kind = match r {
                    Record::Query { .. } => "query[",
                    Record::Forwarded { .. } => " forwarded ",
                    Record::Answer { .. } => " is ",
                    Record::Other => "",
                };
                assert!(line.contains(kind), "{line} -> {r:?}");
                if line.contains(" query[") {
                    assert!(matches!(r, Record::Query { .. }), "{line}");
                }
                if line.contains(" forwarded ") {
                    assert!(matches!(r, Record::Forwarded { .. }), "{line}");
                }
            }
        }
    }

    /// Shapes taken from dnsmasq's `log_query()` format strings that the
    /// fixtures do not show (they need DNSSEC validation or an auth zone).
    #[test]
    fn notes_bare_serials_and_auth() {
        let p = "Nov 27 15:21:23 dnsmasq[7]: ";
        let cases = [
            (
                "12 127.0.0.1/4000 reply a.example is 192.0.2.1 (DNSSEC signed)",
                Some(12),
                Record::Answer {
                    source: AnswerSource::Reply,
                    name: plain("a.example"),
                    value: ip("192.0.2.1"),
                },
            ),
            (
                "reply error is SERVFAIL (EDE: DNSSEC bogus)",
                None,
                Record::Answer {
                    source: AnswerSource::Reply,
                    name: plain("error"),
                    value: AnswerValue::Other,
                },
            ),
            (
                "13 dnssec-retry[DNSKEY] example.com to 127.0.0.1",
                Some(13),
                Record::Other,
            ),
            (
                "14 cached b.example is 2001:db8::2",
                Some(14),
                Record::Answer {
                    source: AnswerSource::Cached,
                    name: plain("b.example"),
                    value: ip("2001:db8::2"),
                },
            ),
            (
                "auth c.example is 198.51.100.3",
                None,
                Record::Answer {
                    source: AnswerSource::Auth,
                    name: plain("c.example"),
                    value: ip("198.51.100.3"),
                },
            ),
            (
                "cached-stale d.example is 203.0.113.4",
                None,
                Record::Answer {
                    source: AnswerSource::CachedStale,
                    name: plain("d.example"),
                    value: ip("203.0.113.4"),
                },
            ),
            (
                "DHCP e.lan is 192.0.2.5",
                None,
                Record::Answer {
                    source: AnswerSource::Dhcp,
                    name: plain("e.lan"),
                    value: ip("192.0.2.5"),
                },
            ),
            ("reply t.example is (text in parens)", None, Record::Other),
            (
                "query[A] x (y).example from 192.0.2.9",
                None,
                Record::Query {
                    qtype: "A",
                    name: plain("x (y).example"),
                    client: b"192.0.2.9",
                },
            ),
        ];
        for (body, serial, want) in cases {
            let line = format!("{p}{body}");
            assert_eq!(parse_with_serial(line.as_bytes()), (serial, want), "{body}");
        }
    }

    #[test]
    fn extra_serial_is_returned() {
        let line = b"Nov 27 15:21:23 dnsmasq[11449]: 10 ::1/52446 reply h.loc.example is 192.0.2.5";
        let (serial, r) = parse_with_serial(line);
        assert_eq!(serial, Some(10));
        assert!(matches!(r, Record::Answer { .. }));
        let line = b"Nov 27 15:21:23 dnsmasq[11449]: reply h.loc.example is 192.0.2.5";
        assert_eq!(parse_with_serial(line).0, None);
    }

    #[test]
    fn newline_and_crlf_are_ignored() {
        let a = parse_line(b"Nov 27 15:21:23 dnsmasq[1]: query[A] x.example from 127.0.0.1\n");
        let b = parse_line(b"Nov 27 15:21:23 dnsmasq[1]: query[A] x.example from 127.0.0.1\r\n");
        let want = Record::Query {
            qtype: "A",
            name: plain("x.example"),
            client: b"127.0.0.1",
        };
        assert_eq!(a, want);
        assert_eq!(b, want);
    }

    #[test]
    fn malformed_lines_are_other() {
        for line in [
            &b""[..],
            b"\n",
            b"no prefix at all",
            b"Nov 27 15:21:23 dnsmasq[1]:query[A] x from y",
            b"Nov 27 15:21:23 dnsmasq[1]: query[A] x.example",
            b"Nov 27 15:21:23 dnsmasq[1]: query[A]  from 127.0.0.1",
            b"Nov 27 15:21:23 dnsmasq[1]: query[] x from 127.0.0.1",
            b"Nov 27 15:21:23 dnsmasq[1]: query[A x from 127.0.0.1",
            b"Nov 27 15:21:23 dnsmasq[1]: forwarded x.example",
            b"Nov 27 15:21:23 dnsmasq[1]: reply x.example",
            b"Nov 27 15:21:23 dnsmasq[1]: reply x.example is ",
            b"Nov 27 15:21:23 dnsmasq[1",
            b"Nov 27 15:21:23 dnsmasq[1]: /etc/hosts",
            b"Nov 27 15:21:23 dnsmasq[1]: 12",
        ] {
            assert_eq!(
                parse_line(line),
                Record::Other,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn has_space_agrees_with_contains(v in proptest::collection::vec(
            proptest::sample::select(vec![b' ', b'!', 0x1f, 0xa0, 0x00, b'a', 0xff]), 0..40)) {
            proptest::prop_assert_eq!(has_space(&v), v.contains(&b' '));
        }

        #[test]
        fn ip_parser_agrees_with_std_on_noise(s in "[0-9a-fA-F:.]{0,42}") {
            let std = s.parse::<IpAddr>().ok();
            proptest::prop_assert_eq!(parse_ip(s.as_bytes()), std);
        }

        #[test]
        fn ip_parser_reads_every_address(b in proptest::prelude::any::<[u8; 16]>(), v4 in proptest::prelude::any::<[u8; 4]>()) {
            let v6 = IpAddr::from(b);
            proptest::prop_assert_eq!(parse_ip(v6.to_string().as_bytes()), Some(v6));
            let v4 = IpAddr::from(v4);
            proptest::prop_assert_eq!(parse_ip(v4.to_string().as_bytes()), Some(v4));
            // The long forms std does not print.
            if let IpAddr::V6(a) = v6 {
                let s = a.segments();
                let full = format!("{:X}:{:x}:{:04x}:{:x}:{:x}:{:x}:{:x}:{:x}", s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]);
                proptest::prop_assert_eq!(parse_ip(full.as_bytes()), Some(v6));
                let o = a.octets();
                let mixed = format!("{:x}:{:x}:{:x}:{:x}:{:x}:{:x}:{}.{}.{}.{}", s[0], s[1], s[2], s[3], s[4], s[5], o[12], o[13], o[14], o[15]);
                proptest::prop_assert_eq!(parse_ip(mixed.as_bytes()), Some(v6));
            }
        }
    }

    #[test]
    fn ipv6_parser_agrees_with_std() {
        for s in [
            "::",
            "::1",
            "1::",
            "2001:db8::1",
            "2001:DB8:0:0:0:0:0:1",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6:7:8:9",
            "1:2:3:4:5:6:7",
            ":1:2:3:4:5:6:7",
            "1:2:3:4:5:6:7:",
            "1::2::3",
            ":::",
            "1:::2",
            "12345::",
            "::ffff:192.0.2.1",
            "::192.0.2.1",
            "1:2:3:4:5:6:192.0.2.1",
            "1:2:3:4:5:6:7:192.0.2.1",
            "1::192.0.2.1",
            "::1.2.3",
            "fe80::1%eth0",
            "1:2:3:4:5:6:7::",
            "::1:2:3:4:5:6:7",
            "::1:2:3:4:5:6:7:8",
            "1:2:3:4::5:6:7:8",
            "g::1",
            "1:",
            ":",
            "0:0:0:0:0:0:0:0",
            "::0001",
            "::00001",
            "1.2.3.4::",
            "1:2:3:4:5:6:1.2.3.4:8",
            "::1.2.3.4.5",
        ] {
            let std = s.parse::<Ipv6Addr>().ok();
            assert_eq!(parse_ipv6(s.as_bytes()), std, "{s}");
        }
    }

    #[test]
    fn ipv4_parser_agrees_with_std() {
        for s in [
            "0.0.0.0",
            "1.2.3.4",
            "255.255.255.255",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1..2.3",
            ".1.2.3",
            "1.2.3.",
            "a.b.c.d",
            "1.2.3.4x",
            "",
            "1.2.3.04",
            "10.0.0.0",
        ] {
            let std = s.parse::<Ipv4Addr>().ok();
            assert_eq!(parse_ipv4(s.as_bytes()), std, "{s}");
        }
        assert_eq!(
            parse_ip(b"2001:db8::1"),
            Some(IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap()))
        );
        assert_eq!(
            parse_ip(b"::ffff:192.0.2.1").map(|i| i.is_ipv6()),
            Some(true)
        );
        assert_eq!(parse_ip(b"2001:zz::1"), None);
    }
}
