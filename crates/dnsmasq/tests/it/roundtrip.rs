//! Property: a generated well-formed line parses back to what generated it; any bytes never panic.

use std::net::IpAddr;

use proptest::prelude::*;
use shield_dnsmasq::{
    parse_line, AllowList, AnswerSource, AnswerValue, Classifier, DomainCache, Name, Record,
};

/// What a line is generated from (owned, so proptest can shrink it).
#[derive(Clone, Debug)]
enum Spec {
    Query {
        qtype: String,
        name: Option<String>,
        client: String,
    },
    Forwarded {
        name: Option<String>,
        server: String,
    },
    Answer {
        source: AnswerSource,
        path: String,
        name: Option<String>,
        value: Value,
    },
}

#[derive(Clone, Debug)]
enum Value {
    Ip(IpAddr),
    Text(&'static str, AnswerValue),
}

/// A printable name; `None` stands for `<name unprintable>`.
fn name(spaces: bool) -> BoxedStrategy<Option<String>> {
    let label = if spaces {
        "[A-Za-z0-9_;*-]([A-Za-z0-9_; -]{0,12}[A-Za-z0-9_-])?"
    } else {
        "[A-Za-z0-9_;*-]{1,14}"
    };
    prop_oneof![
        9 => proptest::collection::vec(proptest::string::string_regex(label).unwrap(), 1..5)
            .prop_map(|ls| Some(ls.join("."))),
        1 => Just(None),
    ]
    .boxed()
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    let qtype = prop_oneof![
        Just("A".to_owned()),
        Just("AAAA".to_owned()),
        Just("TXT".to_owned()),
        Just("HTTPS".to_owned()),
        (1u16..65535).prop_map(|t| format!("type={t}")),
    ];
    let value = prop_oneof![
        ip().prop_map(Value::Ip),
        Just(Value::Text("<CNAME>", AnswerValue::Cname)),
        Just(Value::Text("NXDOMAIN", AnswerValue::NxDomain)),
        Just(Value::Text("NODATA", AnswerValue::NoData)),
        Just(Value::Text("NODATA-IPv4", AnswerValue::NoData)),
        Just(Value::Text("NODATA-IPv6", AnswerValue::NoData)),
        Just(Value::Text("REFUSED", AnswerValue::Other)),
        Just(Value::Text("<MX>", AnswerValue::Other)),
    ];
    let source = prop_oneof![
        Just(AnswerSource::Reply),
        Just(AnswerSource::Cached),
        Just(AnswerSource::CachedStale),
        Just(AnswerSource::Config),
        Just(AnswerSource::Hosts),
        Just(AnswerSource::Dhcp),
        Just(AnswerSource::Auth),
    ];
    prop_oneof![
        (qtype, name(true), ip()).prop_map(|(qtype, name, c)| Spec::Query {
            qtype,
            name,
            client: c.to_string()
        }),
        (name(true), ip(), 1u16..).prop_map(|(name, s, p)| Spec::Forwarded {
            name,
            server: format!("{s}#{p}")
        }),
        (source, "/[a-z0-9._/-]{1,30}", name(false), value).prop_map(
            |(source, path, name, value)| {
                Spec::Answer {
                    source,
                    path,
                    name,
                    value,
                }
            }
        ),
    ]
}

/// `(serial, client)` of `log-queries=extra` (client absent on lines dnsmasq
/// logs for itself), and whether a ` (DNSSEC signed)` note follows.
type Extra = (Option<(u32, Option<(IpAddr, u16)>)>, bool);

fn render(spec: &Spec, (extra, note): Extra) -> String {
    let n = |n: &Option<String>| n.clone().unwrap_or_else(|| "<name unprintable>".to_owned());
    let body = match spec {
        Spec::Query {
            qtype,
            name,
            client,
        } => format!("query[{qtype}] {} from {client}", n(name)),
        Spec::Forwarded { name, server } => format!("forwarded {} to {server}", n(name)),
        Spec::Answer {
            source,
            path,
            name,
            value,
        } => {
            let word = match source {
                AnswerSource::Reply => "reply",
                AnswerSource::Cached => "cached",
                AnswerSource::CachedStale => "cached-stale",
                AnswerSource::Config => "config",
                AnswerSource::Hosts => path,
                AnswerSource::Dhcp => "DHCP",
                AnswerSource::Auth => "auth",
                _ => unreachable!(),
            };
            let v = match value {
                Value::Ip(ip) => ip.to_string(),
                Value::Text(t, _) => (*t).to_owned(),
            };
            format!("{word} {} is {v}", n(name))
        }
    };
    let note = if note { " (DNSSEC signed)" } else { "" };
    match extra {
        Some((serial, Some((addr, port)))) => {
            format!("Mar 31 12:00:00 dnsmasq[123]: {serial} {addr}/{port} {body}{note}\n")
        }
        Some((serial, None)) => format!("Mar 31 12:00:00 dnsmasq[123]: {serial} {body}{note}\n"),
        None => format!("Mar 31 12:00:00 dnsmasq[123]: {body}{note}\n"),
    }
}

fn expected_name(n: &Option<String>) -> Name<'_> {
    match n {
        Some(s) if s == "<name unprintable>" => Name::Unprintable,
        Some(s) => Name::Plain(s.as_bytes()),
        None => Name::Unprintable,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn generated_lines_parse_back(spec in spec(),
                                  extra in proptest::option::of((any::<u32>(), proptest::option::of((ip(), any::<u16>())))),
                                  note in any::<bool>()) {
        let line = render(&spec, (extra, note));
        let got = parse_line(line.as_bytes());
        let client_text;
        let want = match &spec {
            Spec::Query { qtype, name, client } => {
                client_text = client.clone();
                Record::Query { qtype, name: expected_name(name), client: client_text.as_bytes() }
            }
            Spec::Forwarded { name, .. } => Record::Forwarded { name: expected_name(name) },
            Spec::Answer { source, name, value, .. } => Record::Answer {
                source: *source,
                name: expected_name(name),
                value: match value {
                    Value::Ip(ip) => AnswerValue::Ip(*ip),
                    Value::Text(_, v) => *v,
                },
            },
        };
        prop_assert_eq!(got, want, "line {:?}", line);
    }

    #[test]
    fn any_bytes_never_panic(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 1..8),
                             name in proptest::collection::vec(any::<u8>(), 0..300)) {
        let allow = AllowList::from_domain_files("example.com\n*.example.org\n", "", "").list;
        let mut cache = DomainCache::new(4);
        let mut c = Classifier::new(true);
        for l in &lines {
            let _ = parse_line(l);
            let _ = c.classify(l, &allow, Some(&mut cache));
        }
        prop_assert!(cache.len() <= 4);
        let _ = allow.allows(&name);
    }

    #[test]
    fn prefixed_garbage_never_panics(body in proptest::collection::vec(
        prop_oneof![Just(b' '), Just(b'['), Just(b']'), Just(b'/'), Just(b':'), Just(b'.'), b'0'..=b'9', b'a'..=b'z',
                    Just(b'<'), Just(b'>'), any::<u8>()], 0..80),
        kw in prop_oneof![Just("query[A] "), Just("reply "), Just("cached "), Just("forwarded "), Just("/h "), Just("1 a/2 "), Just("")]) {
        let mut line = b"Mar 31 12:00:00 dnsmasq[123]: ".to_vec();
        line.extend_from_slice(kw.as_bytes());
        line.extend_from_slice(&body);
        let mut cache = DomainCache::new(4);
        let mut c = Classifier::new(false);
        let _ = c.classify(&line, &AllowList::empty(), Some(&mut cache));
        if let Record::Query { name: Name::Plain(n), .. } = parse_line(&line) {
            prop_assert!(!n.is_empty());
        }
    }
}
