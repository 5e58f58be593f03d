//! Integration tests for shield-lab: real namespaces, nftables and dnsmasq (needs root).

mod dnsmasq;
mod leftovers;
mod netns;
mod ruleset;
mod scene;
mod terok;

/// The namespace prefix of this run. The leftovers test re-runs the suite under its own prefix
/// (`SHIELD_LAB_PREFIX`) so that its check cannot see namespaces of tests still running here.
pub fn prefix() -> String {
    std::env::var("SHIELD_LAB_PREFIX").unwrap_or_else(|_| "labit".to_string())
}
