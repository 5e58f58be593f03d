//! The nfnetlink_log protocol, a layer-3/4 packet parser and an NFLOG subscription (Linux only).
//!
//! The main type is [`Subscription`], built with [`Subscription::builder`]: it binds one NFLOG
//! group (default 100) on a `NETLINK_NETFILTER` socket, optionally inside another network
//! namespace, and [`Subscription::recv`] hands out each logged [`Packet`] or a
//! [`Message::Lost`] when the kernel dropped packets. [`Packet::headers`] reads addresses,
//! protocol, ports and ICMP type from the copied bytes; [`packet_event`] turns a packet into the
//! shield-watch [`shield_event::Event`].
//!
//! **Invariant:** the codec ([`frames`], [`Config`]) and the packet parser ([`Headers::parse`])
//! are pure functions over byte slices that never panic, whatever the bytes; only the
//! subscription does I/O, and only on Linux.
//!
//! ```no_run
//! use shield_nflog::{Message, Subscription};
//!
//! let mut sub = Subscription::builder().group(100).open()?;
//! loop {
//!     sub.recv(&mut |message| match message {
//!         Message::Packet(p) => {
//!             if let Some(h) = p.headers() {
//!                 println!("{:?} -> {} port {:?}", p.prefix(), h.dest, h.dport);
//!             }
//!         }
//!         Message::Lost { count } => eprintln!("lost {count:?} packets"),
//!     })?;
//! }
//! # Ok::<(), shield_nflog::Error>(())
//! ```

mod error;
mod headers;
mod report;
#[cfg(target_os = "linux")]
mod socket;
mod wire;

pub use error::{Error, ErrorKind};
pub use headers::Headers;
pub use report::{action_for_prefix, detail_for_prefix, lost_event, packet_event};
#[cfg(target_os = "linux")]
pub use socket::{ifname, Builder, Interfaces, Message, Stats, Subscription};
pub use wire::{
    frames, Command, Config, CopyMode, Frame, Frames, Packet, Vlan, FLAG_CONNTRACK, FLAG_SEQ,
    FLAG_SEQ_GLOBAL,
};
