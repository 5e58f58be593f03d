//! From each source's input to an [`Event`](crate::Event): the one place that decides what an
//! event of each source says.
//!
//! - [`audit`]: a line of `audit.jsonl`;
//! - [`dns`]: a lookup the allow-list refused (classified by shield-dnsmasq);
//! - [`nflog`]: a packet the kernel logged (parsed by shield-nflog), and lost packets.
//!
//! Each mapping takes plain values (bytes, strings, addresses, numbers, and shield-nflog's
//! `Headers`) and the clock's reading from its caller, so this crate does no I/O and runs no
//! parser of the sources.

pub mod audit;
pub mod dns;
pub mod nflog;
