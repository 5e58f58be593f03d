//! Nothing the lab creates outlives its owner: `leftovers` sees it while held and not after.

use std::net::SocketAddr;

use shield_lab::{leftovers, Dnsmasq, Netns, Ruleset};

#[test]
fn leftovers_sees_what_is_held_and_nothing_after_drop() {
    // Its own prefix, so the check is not confused by other tests running in parallel.
    let prefix = format!("{}held", crate::prefix());
    let ns = Netns::create(&prefix).unwrap();
    Ruleset::shield(100).load(&ns).unwrap();
    let upstream: SocketAddr = "127.0.0.2:5353".parse().unwrap();
    let dnsmasq = Dnsmasq::upstream(Some(&ns), upstream.ip(), upstream.port(), &[]).unwrap();
    let found = leftovers(&prefix);
    assert!(
        found.iter().any(|f| f == &format!("netns {}", ns.name())),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with("nft table inet terok_shield")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|f| f.starts_with(&format!("dnsmasq pid {}", dnsmasq.pid()))),
        "{found:?}"
    );
    drop(dnsmasq);
    drop(ns);
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
}

/// Runs this whole suite again under a fresh prefix (all tests, the panicking ones included),
/// then checks that it left nothing behind.
#[test]
fn after_all_tests_leftovers_is_empty() {
    if std::env::var_os("SHIELD_LAB_PREFIX").is_some() {
        return; // we are the inner run
    }
    let prefix = format!("labclean{}", std::process::id());
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--skip",
            "after_all_tests_leftovers_is_empty",
            "--test-threads=2",
        ])
        .env("SHIELD_LAB_PREFIX", &prefix)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inner run failed:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("test result: ok."), "{report}");
    assert_eq!(leftovers(&prefix), Vec::<String>::new());
}
