//! Integration tests for shield-lab: real namespaces, nftables and dnsmasq (needs root).

mod netns;
