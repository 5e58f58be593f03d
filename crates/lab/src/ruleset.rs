//! The shield's nftables ruleset for one namespace: same table, sets, chains and log prefixes as
//! the reference shield, so NFLOG packets and `nft list` output look like the field's. One
//! deliberate difference: the private-range rules carry a `counter` too, so tests can see them hit.

use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::process::Stdio;

use crate::cmd;
use crate::error::{Error, ErrorKind};
use crate::netns::Netns;

/// The shield's table: family `inet`, name `terok_shield`.
pub const TABLE: &str = "inet terok_shield";
/// The IPv4 allow set, filled by dnsmasq `nftset=` and [`Ruleset::allow`].
pub const ALLOW_V4: &str = "allow_v4";
/// The IPv6 allow set.
pub const ALLOW_V6: &str = "allow_v6";
/// The IPv4 deny set (destinations the operator refused).
pub const DENY_V4: &str = "deny_v4";
/// The IPv6 deny set.
pub const DENY_V6: &str = "deny_v6";

/// Log prefix of the terminal default-deny rule (nothing else matched).
pub const PREFIX_BLOCKED: &str = "TEROK_SHIELD_BLOCKED: ";
/// Log prefix of the deny-set rules.
pub const PREFIX_DENIED: &str = "TEROK_SHIELD_DENIED: ";
/// Log prefix of the private-range rules.
pub const PREFIX_PRIVATE: &str = "TEROK_SHIELD_PRIVATE: ";
/// Log prefix of the allow-set rules (new connections to allowed addresses).
pub const PREFIX_ALLOWED: &str = "TEROK_SHIELD_ALLOWED: ";

/// The shield's private ranges: RFC 1918, IPv4 link-local, IPv6 ULA and link-local.
pub const PRIVATE_RANGES: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

/// How the terminal rule ends a packet nothing else matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Terminal {
    /// `reject with icmpx admin-prohibited`, as the shield does: the sender fails at once.
    Reject,
    /// `drop`: the sender waits for its timeout.
    Drop,
}

/// The shield's default-deny ruleset, as a builder.
///
/// | setting | default |
/// |---|---|
/// | NFLOG group | the one given to [`Ruleset::shield`] |
/// | DNS server accepted on port 53 | `127.0.0.1` |
/// | static allowed addresses | none |
/// | denied addresses | none |
/// | private ranges | [`PRIVATE_RANGES`] |
/// | allow-set element timeout | none (elements stay) |
/// | terminal rule | [`Terminal::Reject`] |
///
/// The private ranges are configurable because tests may only send to TEST-NET: a test that
/// wants a `TEROK_SHIELD_PRIVATE` packet declares, say, `192.0.2.0/24` private.
#[derive(Debug, Clone)]
pub struct Ruleset {
    group: u16,
    dns: IpAddr,
    allowed: Vec<IpAddr>,
    denied: Vec<IpAddr>,
    private: Vec<String>,
    set_timeout: Option<String>,
    terminal: Terminal,
}

impl Ruleset {
    /// The shield's ruleset logging to NFLOG group `group`, with the defaults in the table above.
    pub fn shield(group: u16) -> Ruleset {
        Ruleset {
            group,
            dns: IpAddr::from([127, 0, 0, 1]),
            allowed: Vec::new(),
            denied: Vec::new(),
            private: PRIVATE_RANGES.iter().map(|r| r.to_string()).collect(),
            set_timeout: None,
            terminal: Terminal::Reject,
        }
    }

    /// The resolver the container may reach on port 53 (besides anything on `lo`).
    pub fn dns(mut self, dns: IpAddr) -> Ruleset {
        self.dns = dns;
        self
    }

    /// Addresses put into the allow sets from the start (the shield's static allow list).
    pub fn allow(mut self, ips: &[IpAddr]) -> Ruleset {
        self.allowed.extend_from_slice(ips);
        self
    }

    /// Addresses put into the deny sets: rejected and logged with [`PREFIX_DENIED`].
    pub fn deny(mut self, ips: &[IpAddr]) -> Ruleset {
        self.denied.extend_from_slice(ips);
        self
    }

    /// Replaces the private ranges (CIDRs, either family), rejected and logged with [`PREFIX_PRIVATE`].
    pub fn private_ranges(mut self, cidrs: &[&str]) -> Ruleset {
        self.private = cidrs.iter().map(|c| c.to_string()).collect();
        self
    }

    /// Gives allow-set elements a default timeout (the shield uses `30m` with dnsmasq).
    pub fn set_timeout(mut self, timeout: &str) -> Ruleset {
        self.set_timeout = Some(timeout.to_string());
        self
    }

    /// How the terminal rule ends unmatched packets.
    pub fn terminal(mut self, terminal: Terminal) -> Ruleset {
        self.terminal = terminal;
        self
    }

    /// The ruleset as `nft -f` input. It starts by removing an earlier copy of the table, so
    /// loading twice replaces rather than fails.
    pub fn render(&self) -> String {
        let group = self.group;
        let reject = "reject with icmpx admin-prohibited";
        let mut s = String::new();
        // `add` then `delete` makes the load idempotent on nft versions without `destroy`.
        let _ = writeln!(
            s,
            "add table {TABLE}\ndelete table {TABLE}\ntable {TABLE} {{"
        );
        for (name, ty, timeout, ips) in [
            (
                ALLOW_V4,
                "ipv4_addr",
                self.set_timeout.as_deref(),
                self.v4(&self.allowed),
            ),
            (
                ALLOW_V6,
                "ipv6_addr",
                self.set_timeout.as_deref(),
                self.v6(&self.allowed),
            ),
            (DENY_V4, "ipv4_addr", None, self.v4(&self.denied)),
            (DENY_V6, "ipv6_addr", None, self.v6(&self.denied)),
        ] {
            let _ = write!(s, "\tset {name} {{ type {ty}; ");
            match timeout {
                Some(t) => {
                    let _ = write!(s, "flags interval, timeout; timeout {t}; ");
                }
                None => s.push_str("flags interval; "),
            }
            if !ips.is_empty() {
                let _ = write!(s, "elements = {{ {} }}; ", ips.join(", "));
            }
            s.push_str("}\n");
        }
        let dns_family = if self.dns.is_ipv4() { "ip" } else { "ip6" };
        let dns = self.dns;
        let _ = writeln!(s, "\tchain output {{");
        let _ = writeln!(
            s,
            "\t\ttype filter hook output priority filter; policy drop;"
        );
        let _ = writeln!(s, "\t\toifname \"lo\" accept");
        let _ = writeln!(s, "\t\tct state established,related accept");
        let _ = writeln!(s, "\t\tudp dport 53 {dns_family} daddr {dns} accept");
        let _ = writeln!(s, "\t\ttcp dport 53 {dns_family} daddr {dns} accept");
        let _ = writeln!(
            s,
            "\t\tip daddr @{ALLOW_V4} log group {group} prefix \"{PREFIX_ALLOWED}\" counter accept"
        );
        let _ = writeln!(s, "\t\tip6 daddr @{ALLOW_V6} log group {group} prefix \"{PREFIX_ALLOWED}\" counter accept");
        let _ = writeln!(
            s,
            "\t\tip daddr @{DENY_V4} log group {group} prefix \"{PREFIX_DENIED}\" counter {reject}"
        );
        let _ = writeln!(s, "\t\tip6 daddr @{DENY_V6} log group {group} prefix \"{PREFIX_DENIED}\" counter {reject}");
        for range in &self.private {
            let family = if range.contains(':') { "ip6" } else { "ip" };
            let _ = writeln!(
                s,
                "\t\t{family} daddr {range} log group {group} prefix \"{PREFIX_PRIVATE}\" counter {reject}"
            );
        }
        let end = match self.terminal {
            Terminal::Reject => reject,
            Terminal::Drop => "drop",
        };
        let _ = writeln!(
            s,
            "\t\tlog group {group} prefix \"{PREFIX_BLOCKED}\" counter {end}"
        );
        let _ = writeln!(s, "\t}}");
        let _ = writeln!(s, "\tchain input {{");
        let _ = writeln!(
            s,
            "\t\ttype filter hook input priority filter; policy drop;"
        );
        let _ = writeln!(s, "\t\tiifname \"lo\" accept");
        let _ = writeln!(s, "\t\tct state established,related accept");
        let _ = writeln!(s, "\t\tudp sport 53 accept");
        let _ = writeln!(s, "\t\ttcp sport 53 accept");
        let _ = writeln!(s, "\t\tdrop");
        let _ = writeln!(s, "\t}}\n}}");
        s
    }

    /// Loads the ruleset into `ns` with `nft -f -` (one atomic transaction).
    pub fn load(&self, ns: &Netns) -> Result<(), Error> {
        let argv = ["ip", "netns", "exec", ns.name(), "nft", "-f", "-"];
        let spawn_err =
            |e: std::io::Error| Error::new(ErrorKind::Spawn, cmd::describe(&argv), e.to_string());
        let mut child = ns
            .command(&["nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_err)?;
        let written = child
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(self.render().as_bytes()));
        let out = child.wait_with_output().map_err(spawn_err)?;
        cmd::check(&argv, out)?;
        match written {
            Some(Err(e)) => Err(Error::io("writing the ruleset to nft", e)),
            _ => Ok(()),
        }
    }

    fn v4(&self, ips: &[IpAddr]) -> Vec<String> {
        ips.iter()
            .filter(|ip| ip.is_ipv4())
            .map(IpAddr::to_string)
            .collect()
    }

    fn v6(&self, ips: &[IpAddr]) -> Vec<String> {
        ips.iter()
            .filter(|ip| ip.is_ipv6())
            .map(IpAddr::to_string)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shield_ruleset_has_the_reference_names_and_prefixes() {
        let text = Ruleset::shield(100).render();
        assert!(text.contains("table inet terok_shield {"), "{text}");
        for set in [ALLOW_V4, ALLOW_V6, DENY_V4, DENY_V6] {
            assert!(text.contains(&format!("set {set} {{")), "{set} missing");
        }
        assert!(text.contains("policy drop;"));
        let last_rule = text.lines().rfind(|l| l.contains("log group")).unwrap();
        assert_eq!(
            last_rule.trim(),
            "log group 100 prefix \"TEROK_SHIELD_BLOCKED: \" counter reject with icmpx admin-prohibited"
        );
        assert!(
            text.contains("ip daddr 10.0.0.0/8 log group 100 prefix \"TEROK_SHIELD_PRIVATE: \"")
        );
        assert!(text.contains("ip6 daddr fc00::/7 log group 100"));
    }

    #[test]
    fn builder_settings_reach_the_text() {
        let text = Ruleset::shield(7)
            .allow(&[
                "203.0.113.5".parse().unwrap(),
                "2001:db8::5".parse().unwrap(),
            ])
            .deny(&["198.51.100.9".parse().unwrap()])
            .private_ranges(&["192.0.2.0/24"])
            .set_timeout("30m")
            .terminal(Terminal::Drop)
            .render();
        assert!(text.contains("set allow_v4 { type ipv4_addr; flags interval, timeout; timeout 30m; elements = { 203.0.113.5 }; }"), "{text}");
        assert!(text.contains("elements = { 2001:db8::5 }"));
        assert!(text.contains(
            "set deny_v4 { type ipv4_addr; flags interval; elements = { 198.51.100.9 }; }"
        ));
        assert!(
            text.contains("ip daddr 192.0.2.0/24 log group 7 prefix \"TEROK_SHIELD_PRIVATE: \"")
        );
        assert!(!text.contains("10.0.0.0/8"));
        assert!(text.contains("prefix \"TEROK_SHIELD_BLOCKED: \" counter drop"));
    }
}
