//! Stands up a real shielded "container" (network namespace, nftables ruleset, dnsmasq) for tests and the demo.
//!
//! This crate is the one place that knows how to build, on this machine, what the shield builds
//! around a container: a network namespace ([`Netns`]) with a route out, the shield's nftables
//! ruleset ([`Ruleset`]), a per-container dnsmasq resolver that fills the allow sets, in front of a
//! fake "internet" dnsmasq ([`Dnsmasq`]), and a state directory ([`StateDir`]). Everything is real:
//! `ip netns`, veth, `nft`, `dnsmasq`, `dig`. It needs root; call [`preflight`] first.
//!
//! **Invariant:** everything the lab creates is owned by a value and removed by its `Drop`,
//! also when a test panics; [`leftovers`] says what is still there. Only TEST-NET and loopback
//! addresses are used, inside namespaces the lab made, so nothing leaves the machine.
//!
//! ```no_run
//! use shield_lab::{preflight, Netns};
//!
//! preflight()?;
//! let ns = Netns::create("demo")?;
//! ns.with_uplink()?;
//! let out = ns.exec_ok(&["ip", "-br", "addr"])?;
//! assert!(out.contains("198.51.100.1/24"));
//! # Ok::<(), shield_lab::Error>(())
//! ```

mod cmd;
mod error;
mod netns;
mod preflight;

pub use error::{Error, ErrorKind};
pub use netns::Netns;
pub use preflight::preflight;
