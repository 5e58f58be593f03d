//! Fuzz target: any text as allow-list files never panics, and lookups of any name never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shield_dnsmasq::{AllowList, PolicyTier};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Split the input into parts: tier texts, then names to look up.
    let mut parts = text.split('\u{0}');
    let files: Vec<&str> = (0..5).map(|_| parts.next().unwrap_or("")).collect();
    let names: Vec<&str> = parts.collect();

    let a = AllowList::from_domain_files(files[0], files[1], files[2]);
    let tiers: Vec<(PolicyTier, &str)> = PolicyTier::ALL
        .iter()
        .copied()
        .zip(files.iter().copied())
        .collect();
    let b = AllowList::from_policy(&tiers);
    for w in a.warnings.iter().chain(&b.warnings) {
        // Warnings reach a terminal: printable ASCII only.
        assert!(w.bytes().all(|c| (0x20..=0x7e).contains(&c)), "{w:?}");
    }
    for name in names.iter().chain(files.iter()) {
        for list in [&a.list, &b.list] {
            let verdict = list.allows(name.as_bytes());
            // Case and one trailing dot never change the verdict.
            assert_eq!(verdict, list.allows(name.to_ascii_uppercase().as_bytes()));
            if !name.ends_with('.') {
                assert_eq!(verdict, list.allows(format!("{name}.").as_bytes()));
            }
        }
    }
});
