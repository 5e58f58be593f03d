//! Property: building an allow-list from any bytes as its files never panics, warns only in
//! printable ASCII, warns the same for the same bytes, and any lookup answers.

use proptest::prelude::*;
use shield_dnsmasq::{AllowList, PolicyTier};

/// Pieces of the two grammars and of what breaks them: markers, comments, wildcards, labels,
/// addresses, ports, white space of every kind, invalid UTF-8, NUL and control bytes.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop_oneof![
            Just("+"),
            Just("-"),
            Just("*."),
            Just("."),
            Just("#"),
            Just("%"),
            Just("%k=v"),
            Just("="),
            Just(" "),
            Just("\t"),
            Just("\n"),
            Just("\r\n"),
            Just("\u{b}"),
            Just("a"),
            Just("Example"),
            Just("com"),
            Just("x-1"),
            Just(":"),
            Just(":443"),
            Just("["),
            Just("]"),
            Just("/24"),
            Just("203.0.113.5"),
            Just("2001:db8::1"),
            Just("localhost"),
            Just("é"),
            Just("\u{fffd}"),
        ]
        .prop_map(|s| s.as_bytes().to_vec()),
        Just(vec![0xff]),
        Just(vec![0xc3]),
        Just(vec![0]),
        Just(vec![0x1b]),
        proptest::collection::vec(any::<u8>(), 0..8),
    ]
}

fn file() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(piece(), 0..40).prop_map(|ps| ps.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_build_a_list_without_panicking(
        files in proptest::array::uniform5(file()),
        names in proptest::collection::vec(file(), 0..8),
    ) {
        let a = AllowList::from_domain_files(&files[0], &files[1], &files[2]);
        let tiers: Vec<(PolicyTier, &[u8])> = PolicyTier::ALL
            .iter()
            .copied()
            .zip(files.iter().map(Vec::as_slice))
            .collect();
        let b = AllowList::from_policy(&tiers);
        for w in a.warnings.iter().chain(&b.warnings) {
            prop_assert!(w.bytes().all(|c| (0x20..=0x7e).contains(&c)), "{:?}", w);
        }
        prop_assert_eq!(
            &AllowList::from_policy(&tiers).warnings,
            &b.warnings,
            "the same bytes give the same warnings"
        );
        for name in names.iter().chain(files.iter()) {
            for list in [&a.list, &b.list] {
                let verdict = list.allows(name);
                prop_assert_eq!(verdict, list.allows(&name.to_ascii_uppercase()));
            }
        }
    }
}
