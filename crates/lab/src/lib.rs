//! Stands up a real shielded "container" (network namespace, nftables ruleset, dnsmasq) for tests and the demo.
//!
//! This crate is the one place that knows how to build, on this machine, what the shield builds
//! around a container: a network namespace ([`Netns`]) with a route out, the shield's nftables
//! ruleset ([`Ruleset`]), a per-container dnsmasq resolver that fills the allow sets, in front of a
//! fake "internet" dnsmasq ([`Dnsmasq`]), and a state directory ([`StateDir`]). Everything is real:
//! `ip netns`, veth, `nft`, `dnsmasq`, `dig`. It needs root; call [`preflight`] first.
//!
//! [`journald::Journald`] is a `systemd-journald` of a test's own, in a private mount
//! namespace, for the tests of shield-watch's journal output.
//!
//! On top of these, [`Scene`] plays a scripted scene on such a container while the real
//! `shield-watch` follows it: the end-to-end test of the whole product and `cargo xtask demo`.
//!
//! [`Watch`] is the one driver of the `shield-watch` binary: start it, wait for its ready line,
//! read its stdout and stderr lines with deadlines, stop it with a signal and collect its exit
//! status. The scene, the CLI's integration tests, its benches and xtask all run it through
//! this.
//!
//! The same container can also be shielded by the **real terok-shield 0.9.0** from PyPI:
//! [`TerokShield`] keeps it in a venv (`target/terok-venv`, needs a Python >= 3.12, found by
//! [`find_python`]) and runs its `setup` in a home of its own, with a stand-in `podman` (and
//! `dig`) on PATH; [`TerokContainer`] runs its `prepare` and its OCI hooks on a namespace of the
//! lab, so terok-shield applies its own ruleset and starts its own dnsmasq there
//! (`dnsmasq --conf-file=STATE/dnsmasq.conf`, pid in `STATE/dnsmasq.pid`); [`TerokReader`] is its
//! clearance reader holding NFLOG group 100. What terok-shield does, with references into its
//! source, is in `docs/DECISIONS.md` ("terok-shield 0.9.0 as measured").
//!
//! ```no_run
//! use shield_lab::{TerokContainer, TerokLayout, TerokShield};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let shield = TerokShield::ensure("demo")?;
//! let root = std::path::PathBuf::from("/tmp/demo-root"); // ROOT/containers/alpha/ is its state
//! let records = [("api.github.com", "203.0.113.10".parse()?), ("example.org", "203.0.113.20".parse()?)];
//! let c = TerokContainer::start(&shield, "demo", "alpha", TerokLayout::StateRoot(root), &["github.com"], &records)?;
//! assert_eq!(c.dig("api.github.com", "A")?.trim(), "203.0.113.10"); // through terok's dnsmasq
//! assert!(c.connect("203.0.113.20:443".parse()?, std::time::Duration::from_secs(2)).is_err());
//! let before = c.dnsmasq_pid()?;
//! c.allow("example.org")?; // terok-shield allow alpha example.org: dnsmasq restarted
//! assert_ne!(c.dnsmasq_pid()?, before);
//! c.stop()?; // poststop hooks; the namespace and everything in it go
//! # Ok(()) }
//! ```
//!
//! **Invariant:** everything the lab creates is owned by a value and removed by its `Drop`,
//! also when a test panics; [`leftovers`] says what is still there. Only TEST-NET and loopback
//! addresses are used, inside namespaces the lab made, so nothing leaves the machine.
//!
//! A shielded container in a few lines (the integration tests and `cargo xtask demo` do this):
//!
//! ```no_run
//! use shield_lab::{dig, preflight, Dnsmasq, Netns, Ruleset, StateDir};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! preflight()?;
//! let ns = Netns::create("demo")?; // `demo-PID-N`, deleted on drop
//! ns.with_uplink()?; // 198.51.100.1/24, 2001:db8:1::1/64, default routes
//! Ruleset::shield(100).load(&ns)?; // table inet terok_shield, default deny, NFLOG group 100
//! let internet = Dnsmasq::upstream(Some(&ns), "127.0.0.2".parse()?, 5353, &[("api.github.com", "203.0.113.10".parse()?)])?;
//! let state = std::path::Path::new("/tmp/demo-state");
//! StateDir::domain_files(state, "dnsmasq-live", &["github.com"], &[])?;
//! let resolver = Dnsmasq::shielded(&ns, state, internet.addr(), &["github.com"])?;
//! assert_eq!(dig(&ns, resolver.addr(), "api.github.com", "A")?.trim(), "203.0.113.10");
//! // 203.0.113.10 is now in `nft list set inet terok_shield allow_v4`, and the query in
//! // /tmp/demo-state/dnsmasq.log.
//! # Ok(()) }
//! ```

mod cmd;
mod dig;
mod dnsmasq;
mod error;
pub mod journald;
mod leftovers;
mod logrotate;
mod netns;
mod preflight;
mod probe;
mod ruleset;
mod scene;
mod statedir;
mod terok;
mod watch;

pub use dig::{dig, dig_status};
pub use dnsmasq::{Dnsmasq, ShieldedOptions};
pub use error::{Error, ErrorKind};
pub use leftovers::{leftovers, snapshot};
pub use logrotate::Logrotate;
pub use netns::{enter_netns, Netns};
pub use preflight::preflight;
pub use probe::{send_one_syn, send_ping};
pub use ruleset::{
    Ruleset, Terminal, ALLOW_V4, ALLOW_V6, DENY_V4, DENY_V6, PREFIX_ALLOWED, PREFIX_BLOCKED,
    PREFIX_DENIED, PREFIX_PRIVATE, PRIVATE_RANGES, TABLE,
};
pub use scene::{
    normalize, Finish, Scene, Step, StepReport, BETA_RECORDS, CONTAINER, HOST, RECORDS,
};
pub use statedir::StateDir;
pub use terok::{
    find_python, TerokContainer, TerokLayout, TerokReader, TerokShield, PRIVATE_PROBE,
    TEROK_SHIELD_VERSION,
};
pub use watch::{lines_of, Watch, READY};
