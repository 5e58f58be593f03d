//! Property: `AllowList::allows` agrees with a naive model written straight from `docs/CONTRACT.md` §2.

use std::collections::HashSet;

use proptest::prelude::*;
use shield_dnsmasq::{AllowList, PolicyTier};

/// Few labels, so generated entries and names overlap often.
fn domain() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![Just("a"), Just("b"), Just("ex"), Just("x-1")],
        1..4,
    )
    .prop_map(|mut ls| {
        ls.push("com");
        ls.join(".")
    })
}

fn entry() -> impl Strategy<Value = String> {
    (any::<bool>(), domain()).prop_map(|(w, d)| if w { format!("*.{d}") } else { d })
}

/// Queried names: like entries, with random case and an optional trailing dot.
fn query() -> impl Strategy<Value = String> {
    (domain(), any::<u64>(), any::<bool>()).prop_map(|(d, bits, dot)| {
        let mut s: String = d
            .chars()
            .enumerate()
            .map(|(i, c)| {
                if bits >> (i % 64) & 1 == 1 {
                    c.to_ascii_uppercase()
                } else {
                    c
                }
            })
            .collect();
        if dot {
            s.push('.');
        }
        s
    })
}

/// The parents of a (normalised) name, itself first.
fn walk(name: &str) -> Vec<&str> {
    let mut out = vec![name];
    let mut rest = name;
    while let Some(i) = rest.find('.') {
        rest = &rest[i + 1..];
        out.push(rest);
    }
    out
}

fn normal(q: &str) -> String {
    q.strip_suffix('.').unwrap_or(q).to_ascii_lowercase()
}

/// Does `entry` (maybe `*.`) cover `name` at all?
fn covers(entry: &str, name: &str) -> bool {
    match entry.strip_prefix("*.") {
        Some(base) => name.ends_with(&format!(".{base}")),
        None => name == entry || name.ends_with(&format!(".{entry}")),
    }
}

fn model_a(profile: &[String], live: &[String], denied: &[String], q: &str) -> bool {
    let denied: HashSet<&String> = denied.iter().collect();
    let name = normal(q);
    profile
        .iter()
        .chain(live)
        .filter(|e| !denied.contains(e))
        .any(|e| covers(e, &name))
}

fn model_b(tiers: &[(PolicyTier, bool, String)], q: &str) -> bool {
    let name = normal(q);
    let applies = |e: &str, at: &str| -> bool {
        // An entry "has" the name `at` on the walk when it is `at` itself, or `*.at` and `at` is a proper parent.
        match e.strip_prefix("*.") {
            Some(base) => base == at && at != name,
            None => e == at,
        }
    };
    // Override `+` anywhere on the way.
    if tiers
        .iter()
        .any(|(t, plus, e)| *t == PolicyTier::Override && *plus && covers(e, &name))
    {
        return true;
    }
    for at in walk(&name) {
        let deny = tiers.iter().any(|(t, plus, e)| {
            !*plus && matches!(t, PolicyTier::SecurityDeny | PolicyTier::Live) && applies(e, at)
        });
        let allow = tiers.iter().any(|(t, plus, e)| {
            *plus
                && matches!(
                    t,
                    PolicyTier::ProviderAllow | PolicyTier::ProjectAllow | PolicyTier::Live
                )
                && applies(e, at)
        });
        if deny {
            return false;
        }
        if allow {
            return true;
        }
    }
    false
}

fn tier() -> impl Strategy<Value = PolicyTier> {
    proptest::sample::select(PolicyTier::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn domain_files_matches_model(profile in proptest::collection::vec(entry(), 0..5),
                              live in proptest::collection::vec(entry(), 0..3),
                              denied in proptest::collection::vec(entry(), 0..3),
                              queries in proptest::collection::vec(query(), 1..10)) {
        let l = AllowList::from_domain_files(profile.join("\n"), live.join("\n"), denied.join("\n"));
        prop_assert!(l.warnings.is_empty());
        for q in &queries {
            prop_assert_eq!(l.list.allows(q.as_bytes()), model_a(&profile, &live, &denied, q), "query {}", q);
        }
    }

    #[test]
    fn policy_dir_matches_model(entries in proptest::collection::vec((tier(), any::<bool>(), entry()), 0..8),
                              queries in proptest::collection::vec(query(), 1..10)) {
        let mut texts: Vec<(PolicyTier, String)> = PolicyTier::ALL.iter().map(|t| (*t, String::new())).collect();
        for (t, plus, e) in &entries {
            let text = &mut texts.iter_mut().find(|(x, _)| x == t).unwrap().1;
            text.push_str(&format!("{}{e} %src=prop # generated\n", if *plus { '+' } else { '-' }));
        }
        let borrowed: Vec<(PolicyTier, &str)> = texts.iter().map(|(t, s)| (*t, s.as_str())).collect();
        let l = AllowList::from_policy(&borrowed);
        for q in &queries {
            prop_assert_eq!(l.list.allows(q.as_bytes()), model_b(&entries, q), "query {} entries {:?}", q, entries);
        }
    }
}
