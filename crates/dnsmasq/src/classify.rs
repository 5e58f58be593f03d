//! The single pass over the log: report blocked lookups, keep the cache current.

use std::borrow::Cow;

use crate::allow::AllowList;
use crate::cache::{normalize, DomainCache};
use crate::line::{
    parse_body, parse_query, parse_with_serial, split_body, AnswerValue, Name, Record,
};

/// A lookup the allow-list does not allow: one `blocked_query` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockedQuery<'a> {
    /// The query type as dnsmasq wrote it (`A`, `AAAA`, `TXT`, `type=65534`, ...).
    pub qtype: &'a str,
    /// The queried name: lower case, trailing dot removed, invalid UTF-8
    /// replaced; `<name unprintable>` verbatim. Not yet sanitised for output.
    pub domain: Cow<'a, str>,
}

/// Where a CNAME chain stands. dnsmasq logs an aliased answer as
/// `reply alias is <CNAME>`, then each further link, then the target's
/// records (`reply target is 198.51.100.20`), on consecutive lines.
#[derive(Debug, Default)]
struct Chain {
    active: bool,
    /// The last line was `<CNAME>`: the next answer names its target.
    expect_target: bool,
    /// The name that was queried (the first alias), as logged.
    head: Vec<u8>,
    /// The current target, as logged.
    target: Vec<u8>,
    serial: Option<u64>,
}

/// Classifies dnsmasq log lines one at a time. Holds only the CNAME state
/// between lines; cheap to create, one per followed log.
#[derive(Debug)]
pub struct Classifier {
    all_query_types: bool,
    chain: Chain,
}

impl Classifier {
    /// `all_query_types`: report blocked lookups of every type, not only `A` and `AAAA`.
    pub fn new(all_query_types: bool) -> Self {
        Classifier {
            all_query_types,
            chain: Chain::default(),
        }
    }

    /// Classifies one line (with or without its newline). Returns the blocked
    /// lookup it reports, if any, and feeds answer lines to `cache`.
    pub fn classify<'l>(
        &mut self,
        line: &'l [u8],
        allow: &AllowList,
        cache: Option<&mut DomainCache>,
    ) -> Option<BlockedQuery<'l>> {
        let (serial, body) = split_body(line)?;
        // Without a cache only query lines matter: skip parsing the rest.
        let record = if body.starts_with(b"query[") {
            parse_query(body).unwrap_or(Record::Other)
        } else if cache.is_none() {
            self.chain.active = false;
            return None;
        } else if !self.chain.active && body.starts_with(b"forwarded ") {
            // A `forwarded` line only ends a CNAME chain: with none open,
            // whatever it parses to changes nothing.
            return None;
        } else {
            parse_body(body)
        };
        match record {
            Record::Query { qtype, name, .. } => {
                self.chain.active = false;
                if !self.all_query_types && qtype != "A" && qtype != "AAAA" {
                    return None;
                }
                match name {
                    // Never allowed: dnsmasq hid bytes an attacker chose.
                    Name::Unprintable => Some(BlockedQuery {
                        qtype,
                        domain: Cow::Borrowed("<name unprintable>"),
                    }),
                    Name::Plain(n) if !allow.allows(n) => Some(BlockedQuery {
                        qtype,
                        domain: normalize(n),
                    }),
                    Name::Plain(_) => None,
                }
            }
            Record::Forwarded { .. } => {
                self.chain.active = false;
                None
            }
            Record::Answer { name, value, .. } => {
                if let Some(cache) = cache {
                    self.answer(serial, name.as_bytes(), value, cache);
                }
                None
            }
            Record::Other => None,
        }
    }

    /// Feeds one line to the cache only (priming from existing log content).
    pub fn observe(&mut self, line: &[u8], cache: &mut DomainCache) {
        let (serial, record) = parse_with_serial(line);
        match record {
            Record::Query { .. } | Record::Forwarded { .. } => self.chain.active = false,
            Record::Answer { name, value, .. } => {
                self.answer(serial, name.as_bytes(), value, cache)
            }
            Record::Other => {}
        }
    }

    fn answer(
        &mut self,
        serial: Option<u64>,
        name: &[u8],
        value: AnswerValue,
        cache: &mut DomainCache,
    ) {
        let chain = &mut self.chain;
        // With log-queries=extra every line carries its query's serial: a new
        // serial is a new answer even when no query line came between.
        if chain.active && serial.is_some() && chain.serial.is_some() && serial != chain.serial {
            chain.active = false;
        }
        if chain.active {
            if chain.expect_target {
                chain.target.clear();
                chain.target.extend_from_slice(name);
                match value {
                    AnswerValue::Cname => {}
                    AnswerValue::Ip(ip) => {
                        chain.expect_target = false;
                        cache.insert_raw(ip, &chain.head, Some(&chain.target));
                    }
                    AnswerValue::NxDomain | AnswerValue::NoData => chain.expect_target = false,
                    AnswerValue::Other => chain.active = false,
                }
                return;
            }
            if name == chain.target.as_slice() {
                // Further addresses of the same target (several A records).
                match value {
                    AnswerValue::Ip(ip) => cache.insert_raw(ip, &chain.head, Some(&chain.target)),
                    _ => chain.active = false,
                }
                return;
            }
            // Another name: a different answer follows directly (interleaved
            // replies without extra serials). It starts afresh.
            chain.active = false;
        }
        match value {
            AnswerValue::Cname => {
                chain.active = true;
                chain.expect_target = true;
                chain.head.clear();
                chain.head.extend_from_slice(name);
                chain.serial = serial;
            }
            // A reverse answer can carry an address-looking PTR target as
            // its "name"; an address is never a name worth mapping to.
            AnswerValue::Ip(ip) if !looks_like_address(name) => {
                cache.insert_raw(ip, name, None);
            }
            _ => {}
        }
    }
}

/// Whether `name` is an address: an address ends in a hex digit or a colon,
/// so most names are ruled out by their last byte without a parse.
fn looks_like_address(name: &[u8]) -> bool {
    name.last()
        .is_some_and(|b| b.is_ascii_hexdigit() || *b == b':')
        && crate::line::parse_ip(name).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allow::PolicyTier;
    use std::net::IpAddr;

    const FORMS: &str = include_str!("../tests/fixtures/forms.log");
    const FORMS_EXTRA: &str = include_str!("../tests/fixtures/forms-extra.log");
    const NFTSET: &str = include_str!("../tests/fixtures/nftset-cached.log");
    const NFTSET_EXTRA: &str = include_str!("../tests/fixtures/nftset-cached-extra.log");
    const NODATA: &str = include_str!("../tests/fixtures/nodata.log");
    const NODATA_EXTRA: &str = include_str!("../tests/fixtures/nodata-extra.log");

    fn allow(domains: &str) -> AllowList {
        AllowList::from_domain_files(domains, "", "").list
    }

    fn blocked(fx: &str, all: bool, allow: &AllowList) -> Vec<(String, String)> {
        let mut c = Classifier::new(all);
        fx.lines()
            .filter_map(|l| c.classify(l.as_bytes(), allow, None))
            .map(|b| (b.qtype.to_owned(), b.domain.into_owned()))
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// Every A/AAAA query of forms.log not under example.com, in log order.
    const FORMS_BLOCKED: [(&str, &str); 15] = [
        ("A", "multi.example.org"),
        ("A", "multi.example.org"),
        ("A", "missing.nx.example"),
        ("A", "sink.example"),
        ("A", "blocked.example"),
        ("AAAA", "blocked.example"),
        ("A", "fixed.example"),
        ("AAAA", "fixed6.example"),
        ("A", "nothere.example.org"),
        ("PTR", "10.100.51.198.in-addr.arpa"),
        ("PTR", "1.0.2.192.in-addr.arpa"),
        ("A", "<name unprintable>"),
        ("AAAA", "<name unprintable>"),
        ("TXT", "<name unprintable>"),
        // The root: dnsmasq logs `.`, the reference strips the dot to "".
        ("A", ""),
    ];

    #[test]
    fn blocked_a_and_aaaa_by_default() {
        let list = allow("example.com\n");
        let want: Vec<_> = FORMS_BLOCKED
            .iter()
            .filter(|(t, _)| *t == "A" || *t == "AAAA")
            .copied()
            .collect();
        for fx in [FORMS, FORMS_EXTRA] {
            assert_eq!(blocked(fx, false, &list), pairs(&want));
        }
    }

    #[test]
    fn all_query_types_reports_every_type() {
        let list = allow("example.com\n");
        for fx in [FORMS, FORMS_EXTRA] {
            assert_eq!(blocked(fx, true, &list), pairs(&FORMS_BLOCKED));
        }
        // With nothing allowed, every query line of the log is reported.
        let all = blocked(FORMS, true, &AllowList::empty());
        assert_eq!(
            all.len(),
            FORMS.lines().filter(|l| l.contains(" query[")).count()
        );
        assert!(all.contains(&("type=65534".into(), "upstream.example.com".into())));
        assert!(all.contains(&("HTTPS".into(), "upstream.example.com".into())));
    }

    #[test]
    fn domain_is_lower_cased_without_trailing_dot() {
        let list = AllowList::empty();
        let got = blocked(FORMS, false, &list);
        assert!(got.contains(&("A".into(), "mixed.case.example.com".into())));
        assert!(got.contains(&("A".into(), "a b.example.com".into())));
        let mut c = Classifier::new(false);
        let b = c
            .classify(
                b"Nov 27 15:08:33 dnsmasq[1]: query[A] Evil.EXAMPLE. from 127.0.0.1\n",
                &list,
                None,
            )
            .unwrap();
        assert_eq!(b.domain, "evil.example");
        let b = c
            .classify(
                b"Nov 27 15:08:33 dnsmasq[1]: query[A] ok.example from 127.0.0.1\n",
                &list,
                None,
            )
            .unwrap();
        assert!(
            matches!(b.domain, Cow::Borrowed("ok.example")),
            "no allocation when already normal"
        );
        let b = c
            .classify(
                b"Nov 27 15:08:33 dnsmasq[1]: query[AAAA] b\xffd.example from 127.0.0.1",
                &list,
                None,
            )
            .unwrap();
        assert_eq!(b.domain, "b\u{fffd}d.example");
    }

    #[test]
    fn policy_dir_classification() {
        let list = AllowList::from_policy(&[
            (PolicyTier::ProviderAllow, "+example.com\n"),
            (PolicyTier::SecurityDeny, "-alias.example.com\n"),
        ])
        .list;
        let got = blocked(FORMS, false, &list);
        assert!(got.contains(&("A".into(), "alias.example.com".into())));
        assert!(got.contains(&("AAAA".into(), "alias.example.com".into())));
        assert!(!got.iter().any(|(_, d)| d == "upstream.example.com"));
    }

    fn primed(fx: &str) -> DomainCache {
        let mut cache = DomainCache::new(1024);
        let mut c = Classifier::new(false);
        let list = AllowList::empty();
        for l in fx.lines() {
            c.classify(l.as_bytes(), &list, Some(&mut cache));
        }
        cache
    }

    fn get(cache: &mut DomainCache, ip: &str) -> Option<(String, Option<String>)> {
        cache
            .peek(ip.parse::<IpAddr>().unwrap())
            .map(|r| (r.name.to_owned(), r.cname.map(str::to_owned)))
    }

    fn named(n: &str) -> Option<(String, Option<String>)> {
        Some((n.to_owned(), None))
    }

    fn aliased(n: &str, t: &str) -> Option<(String, Option<String>)> {
        Some((n.to_owned(), Some(t.to_owned())))
    }

    #[test]
    fn cache_from_real_logs() {
        for fx in [FORMS, FORMS_EXTRA] {
            let mut c = primed(fx);
            assert_eq!(get(&mut c, "198.51.100.10"), named("upstream.example.com"));
            assert_eq!(get(&mut c, "2001:db8::10"), named("upstream.example.com"));
            // chain1 -> chain2 -> target: the address belongs to what was queried.
            assert_eq!(
                get(&mut c, "198.51.100.20"),
                aliased("chain1.example.com", "target.example.net")
            );
            assert_eq!(
                get(&mut c, "2001:db8::20"),
                aliased("alias.example.com", "target.example.net")
            );
            assert_eq!(get(&mut c, "198.51.100.31"), named("multi.example.org"));
            assert_eq!(get(&mut c, "198.51.100.32"), named("multi.example.org"));
            // config, hosts files.
            assert_eq!(get(&mut c, "192.0.2.7"), named("fixed.example"));
            assert_eq!(get(&mut c, "2001:db8::7"), named("fixed6.example"));
            assert_eq!(
                get(&mut c, "192.0.2.1"),
                aliased("localalias.example.com", "local.example.com")
            );
            assert_eq!(get(&mut c, "2001:db8::1"), named("local.example.com"));
            assert_eq!(get(&mut c, "203.0.113.50"), named("hf-alias.example.com"));
            assert_eq!(get(&mut c, "2001:db8::50"), named("hostsfile.example.com"));
            // The PTR answer `reply 198.51.100.10 is upstream.example.com` maps nothing new.
            assert_eq!(c.len(), 12, "only real addresses are mapped");
        }
    }

    #[test]
    fn cache_cached_lines_cname_and_ambiguous_txt() {
        for fx in [NFTSET, NFTSET_EXTRA] {
            let mut c = primed(fx);
            assert_eq!(get(&mut c, "198.51.100.10"), named("upstream.example.com"));
            assert_eq!(get(&mut c, "2001:db8::10"), named("upstream.example.com"));
            assert_eq!(get(&mut c, "198.51.100.11"), named("v4only.example"));
            // Last answer for .20 in the log: the alias query (after the concurrent batch).
            assert_eq!(
                get(&mut c, "2001:db8::20"),
                aliased("chain1.example.com", "target.example.net")
            );
            // `reply txt.example.com is hello world is 192.0.2.99` maps nothing.
            assert_eq!(get(&mut c, "192.0.2.99"), None);
        }
        // The concurrent batch at the end: queries interleave, and the alias's
        // answer comes last in both runs (in the extra run right after serial
        // 22's plain answer for the target).
        for fx in [NFTSET, NFTSET_EXTRA] {
            let mut c = primed(fx);
            assert_eq!(
                get(&mut c, "198.51.100.20"),
                aliased("alias.example.com", "target.example.net")
            );
        }
        // Cut just before the alias's answer: the target's own answer is the latest.
        let cut: String = NFTSET_EXTRA
            .lines()
            .take(81)
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            get(&mut primed(&cut), "198.51.100.20"),
            named("target.example.net")
        );
    }

    #[test]
    fn cache_ignores_non_addresses() {
        for fx in [NODATA, NODATA_EXTRA] {
            let mut c = primed(fx);
            // NODATA-IPv6 after a CNAME, NXDOMAIN, config NODATA: nothing but the one A record.
            assert_eq!(get(&mut c, "192.0.2.5"), named("h.loc.example"));
            assert_eq!(c.len(), 1);
        }
    }

    #[test]
    fn cname_chain_ends_at_a_different_name() {
        let mut cache = DomainCache::new(16);
        let mut c = Classifier::new(false);
        let list = AllowList::empty();
        for l in [
            "Nov 27 15:21:02 dnsmasq[1]: reply alias.example is <CNAME>",
            "Nov 27 15:21:02 dnsmasq[1]: reply target.example is 192.0.2.1",
            "Nov 27 15:21:02 dnsmasq[1]: reply target.example is 192.0.2.2",
            // An unrelated answer logged right after (interleaved replies).
            "Nov 27 15:21:02 dnsmasq[1]: reply other.example is 192.0.2.3",
            "Nov 27 15:21:02 dnsmasq[1]: cached other.example is 192.0.2.4",
        ] {
            c.classify(l.as_bytes(), &list, Some(&mut cache));
        }
        assert_eq!(
            get(&mut cache, "192.0.2.1"),
            aliased("alias.example", "target.example")
        );
        assert_eq!(
            get(&mut cache, "192.0.2.2"),
            aliased("alias.example", "target.example")
        );
        assert_eq!(get(&mut cache, "192.0.2.3"), named("other.example"));
        assert_eq!(get(&mut cache, "192.0.2.4"), named("other.example"));
    }

    #[test]
    fn cname_chain_ends_at_a_new_serial() {
        let mut cache = DomainCache::new(16);
        let mut c = Classifier::new(false);
        for l in [
            "Nov 27 15:21:02 dnsmasq[1]: 7 127.0.0.1/1 reply alias.example is <CNAME>",
            "Nov 27 15:21:02 dnsmasq[1]: 7 127.0.0.1/1 reply target.example is 192.0.2.1",
            "Nov 27 15:21:02 dnsmasq[1]: 8 127.0.0.1/2 reply target.example is 192.0.2.2",
        ] {
            c.observe(l.as_bytes(), &mut cache);
        }
        assert_eq!(
            get(&mut cache, "192.0.2.1"),
            aliased("alias.example", "target.example")
        );
        assert_eq!(get(&mut cache, "192.0.2.2"), named("target.example"));
    }

    #[test]
    fn query_line_ends_a_chain_and_nftset_lines_do_not() {
        let mut cache = DomainCache::new(16);
        let mut c = Classifier::new(false);
        for l in [
            "Nov 27 15:21:02 dnsmasq[1]: reply alias.example is <CNAME>",
            "Nov 27 15:21:02 dnsmasq[1]: nftset add 4 inet t allow_v4 192.0.2.1 target.example",
            "Nov 27 15:21:02 dnsmasq[1]: reply target.example is 192.0.2.1",
            "Nov 27 15:21:02 dnsmasq[1]: query[A] target.example from 127.0.0.1",
            "Nov 27 15:21:02 dnsmasq[1]: reply target.example is 192.0.2.2",
        ] {
            c.observe(l.as_bytes(), &mut cache);
        }
        assert_eq!(
            get(&mut cache, "192.0.2.1"),
            aliased("alias.example", "target.example")
        );
        assert_eq!(get(&mut cache, "192.0.2.2"), named("target.example"));
    }

    #[test]
    fn classify_without_cache_still_reports() {
        let list = allow("example.com\n");
        let mut c = Classifier::new(false);
        assert!(c
            .classify(
                b"Nov 27 15:21:02 dnsmasq[1]: reply evil.example is 192.0.2.1",
                &list,
                None
            )
            .is_none());
        assert!(c
            .classify(
                b"Nov 27 15:21:02 dnsmasq[1]: query[A] evil.example from 127.0.0.1",
                &list,
                None
            )
            .is_some());
    }
}
