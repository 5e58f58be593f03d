//! Stands up a real shielded "container" (network namespace, nftables ruleset, dnsmasq) for tests and the demo.
