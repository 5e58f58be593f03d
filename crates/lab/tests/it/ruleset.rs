//! The shield ruleset loads into a namespace and really judges packets there.

use std::io::ErrorKind as IoKind;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use shield_lab::{Netns, Ruleset};

/// The packet count of the first rule in the output chain whose text contains `needle`.
fn counter(ns: &Netns, needle: &str) -> u64 {
    let chain = ns
        .exec_ok(&["nft", "list", "chain", "inet", "terok_shield", "output"])
        .unwrap();
    let rule = chain
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no rule with {needle}:\n{chain}"));
    let packets = rule
        .split("counter packets ")
        .nth(1)
        .unwrap_or_else(|| panic!("no counter: {rule}"));
    packets.split_whitespace().next().unwrap().parse().unwrap()
}

/// A TCP connect from inside the namespace; the shield must refuse it quickly.
fn connect(ns: &Netns, dest: &str) -> std::io::Result<()> {
    let addr: SocketAddr = dest.parse().unwrap();
    ns.run_in(move || TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map(drop))
        .unwrap()
}

#[test]
fn ruleset_loads_and_shows_in_nft_list_ruleset() {
    let ns = Netns::create(&crate::prefix()).unwrap();
    Ruleset::shield(100).load(&ns).unwrap();
    let listed = ns.exec_ok(&["nft", "list", "ruleset"]).unwrap();
    assert!(listed.contains("table inet terok_shield {"), "{listed}");
    for needle in [
        "set allow_v4",
        "set allow_v6",
        "set deny_v4",
        "set deny_v6",
        "chain output",
        "chain input",
    ] {
        assert!(listed.contains(needle), "{needle} missing:\n{listed}");
    }
    assert!(
        listed.contains("log prefix \"TEROK_SHIELD_BLOCKED: \" group 100"),
        "{listed}"
    );
    // Loading again replaces the table instead of failing or duplicating it.
    Ruleset::shield(100).load(&ns).unwrap();
    let again = ns.exec_ok(&["nft", "list", "ruleset"]).unwrap();
    assert_eq!(
        again.matches("table inet terok_shield").count(),
        1,
        "{again}"
    );
}

#[test]
fn the_host_ruleset_is_untouched() {
    let ns = Netns::create(&crate::prefix()).unwrap();
    Ruleset::shield(100).load(&ns).unwrap();
    let host = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&host.stdout).contains("terok_shield"));
}

#[test]
fn connections_hit_the_deny_private_and_terminal_rules() {
    let ns = Netns::create(&crate::prefix()).unwrap();
    ns.with_uplink().unwrap();
    let denied: IpAddr = "198.51.100.77".parse().unwrap();
    // Tests may only send to TEST-NET, so one TEST-NET block plays the private range.
    Ruleset::shield(100)
        .deny(&[denied])
        .private_ranges(&["192.0.2.0/24"])
        .load(&ns)
        .unwrap();

    for (dest, prefix) in [
        ("198.51.100.77:443", "TEROK_SHIELD_DENIED"),
        ("192.0.2.9:22", "TEROK_SHIELD_PRIVATE"),
        ("203.0.113.7:80", "TEROK_SHIELD_BLOCKED"),
        ("[2001:db8:ffff::7]:80", "TEROK_SHIELD_BLOCKED"),
    ] {
        let before = counter(&ns, prefix);
        let err = connect(&ns, dest).expect_err(dest);
        // reject with icmpx admin-prohibited fails the connect at once; a timeout would mean
        // the packet was not judged by our rule.
        assert_ne!(err.kind(), IoKind::TimedOut, "{dest}: {err}");
        assert!(
            counter(&ns, prefix) > before,
            "{dest} did not hit the {prefix} rule"
        );
    }
}

#[test]
fn statically_allowed_addresses_pass_the_allowed_rule() {
    let ns = Netns::create(&crate::prefix()).unwrap();
    ns.with_uplink().unwrap();
    let allowed: IpAddr = "203.0.113.50".parse().unwrap();
    Ruleset::shield(100).allow(&[allowed]).load(&ns).unwrap();
    let set = ns
        .exec_ok(&["nft", "list", "set", "inet", "terok_shield", "allow_v4"])
        .unwrap();
    assert!(set.contains("203.0.113.50"), "{set}");
    let blocked_before = counter(&ns, "TEROK_SHIELD_BLOCKED");
    // Accepted and sent out on up0, where nobody answers: the connect times out.
    let err = connect(&ns, "203.0.113.50:80").expect_err("nobody listens on TEST-NET");
    assert_eq!(err.kind(), IoKind::TimedOut, "{err}");
    assert!(counter(&ns, "TEROK_SHIELD_ALLOWED") >= 1);
    assert_eq!(counter(&ns, "TEROK_SHIELD_BLOCKED"), blocked_before);
}
