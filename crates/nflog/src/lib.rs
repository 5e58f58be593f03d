//! The nfnetlink_log protocol, a layer-3/4 packet parser and an NFLOG subscription (Linux only).
//!
//! The main type is [`Subscription`], built with [`Subscription::builder`]: it binds one NFLOG
//! group (default 100) on a `NETLINK_NETFILTER` socket, optionally inside another network
//! namespace ([`Builder::open_in`] opens there and brings the calling thread back; a
//! [`NamespaceId`] tells namespaces apart), and [`Subscription::recv`] hands out each logged [`Packet`] or a
//! [`Message::Lost`] when the kernel dropped packets, with how many (from the per-group sequence
//! numbers and the socket's drop counter). [`Packet::headers`] reads addresses, protocol, ports
//! and ICMP type from the copied bytes. To keep the socket's queue short under a flood, one
//! thread can read raw [`Batch`]es with [`Subscription::recv_batch`] (or poll many
//! subscriptions and use [`Subscription::try_recv_batch`]) while another decodes them with a
//! [`Decoder`]. Opening can be split between two processes: one with the capabilities makes the
//! socket and sends the bind request ([`Builder::request_in`], a [`BindRequest`]), hands the
//! descriptors over, and one with none finishes it ([`Builder::finish`]).
//!
//! A protocol crate: it knows the kernel's messages and IP headers, not what shield-watch makes
//! of them (the prefix-to-action table and the event live in `shield_event::map::nflog`).
//!
//! **Invariant:** the codec ([`codec`]) and the packet parser ([`Headers::parse`]) are pure
//! functions over byte slices that never panic, whatever the bytes; only the subscription does
//! I/O, and only on Linux. Callers see [`Subscription`], [`Packet`], [`Headers`] and [`Error`],
//! never byte offsets.
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

mod batch;
mod error;
mod headers;
#[cfg(target_os = "linux")]
mod netns;
#[cfg(target_os = "linux")]
mod socket;
mod wire;

pub use batch::{Batch, Decoder, Message, Stats};
pub use error::{Error, ErrorKind};
pub use headers::Headers;
#[cfg(target_os = "linux")]
pub use netns::{same_namespace, NamespaceId};
#[cfg(target_os = "linux")]
pub use socket::{ifname, BindRequest, Builder, Interfaces, Subscription};
pub use wire::{Packet, Vlan};

/// The nfnetlink_log wire codec itself: configuration requests encoded and decoded, datagrams
/// split into messages.
///
/// **For this crate's property tests and the fuzz targets**, which drive the codec with bytes of
/// their own, and for tools that speak the protocol over a socket of their own. Reading packets
/// needs none of it: [`Subscription`] encodes its bind request and decodes what the kernel sends.
pub mod codec {
    pub use crate::wire::{
        frames, Command, Config, CopyMode, Frame, Frames, FLAG_CONNTRACK, FLAG_SEQ, FLAG_SEQ_GLOBAL,
    };
}
