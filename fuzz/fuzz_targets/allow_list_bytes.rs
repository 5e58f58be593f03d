//! Fuzz target: the allow-list built from any bytes as its files (invalid UTF-8, NULs, CRs
//! included, as `shield-watch` reads them off disk) never panics, its warnings are printable,
//! and lookups of any name never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shield_dnsmasq::{AllowList, PolicyTier};

fuzz_target!(|input: ([Vec<u8>; 5], Vec<Vec<u8>>)| {
    let (files, names) = input;
    let a = AllowList::from_domain_files(&files[0], &files[1], &files[2]);
    let tiers: Vec<(PolicyTier, &[u8])> = PolicyTier::ALL
        .iter()
        .copied()
        .zip(files.iter().map(Vec::as_slice))
        .collect();
    let b = AllowList::from_policy(&tiers);
    // The same bytes give the same warnings, so a reloading caller can compare them.
    assert_eq!(
        AllowList::from_domain_files(&files[0], &files[1], &files[2]).warnings,
        a.warnings
    );
    for w in a.warnings.iter().chain(&b.warnings) {
        // Warnings reach a terminal: printable ASCII only.
        assert!(w.bytes().all(|c| (0x20..=0x7e).contains(&c)), "{w:?}");
    }
    for name in names.iter().chain(files.iter()) {
        for list in [&a.list, &b.list] {
            let verdict = list.allows(name);
            // Case never changes the verdict.
            assert_eq!(verdict, list.allows(&name.to_ascii_uppercase()));
        }
    }
});
