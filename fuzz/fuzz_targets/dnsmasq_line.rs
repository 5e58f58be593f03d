//! Fuzz target: any bytes as a dnsmasq log line never panic, and what the parser and classifier say is consistent.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shield_dnsmasq::{parse_line, AllowList, Classifier, DomainCache, Name, Record};

fuzz_target!(|data: &[u8]| {
    // The first byte chooses how the rest is used, so one corpus covers
    // single lines and sequences (CNAME chains need several lines).
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let allow = AllowList::from_domain_files("example.com\n*.example.org\n", "", "").list;
    let mut cache = DomainCache::new(8);
    let mut classifier = Classifier::new(mode & 1 == 1);
    for line in rest.split(|&b| b == b'\n') {
        let record = parse_line(line);
        // Every borrowed field is a slice of the line.
        if let Record::Query {
            name: Name::Plain(n),
            client,
            ..
        } = record
        {
            assert!(!n.is_empty() && !client.is_empty());
            assert!(n.len() + client.len() < line.len());
        }
        let blocked = classifier.classify(line, &allow, Some(&mut cache));
        match (&record, &blocked) {
            (
                Record::Query {
                    name: Name::Unprintable,
                    qtype,
                    ..
                },
                _,
            ) if mode & 1 == 1 || *qtype == "A" || *qtype == "AAAA" => {
                assert_eq!(
                    blocked.as_ref().map(|b| b.domain.as_ref()),
                    Some("<name unprintable>")
                );
            }
            (Record::Query { .. }, _) => {}
            (_, None) => {}
            (_, Some(_)) => panic!("only query lines report"),
        }
        if let Some(b) = blocked {
            assert!(!b.domain.bytes().any(|c| c.is_ascii_uppercase()));
        }
        assert!(cache.len() <= 8);
    }
    // Lookups work whatever went in.
    let _ = cache.lookup("192.0.2.1".parse().unwrap());
});
