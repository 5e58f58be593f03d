//! The nflog source: packets the kernel logged to the NFLOG group become `nflog` events, named
//! from the dns source's cache; lost packets become `watch`/`nflog_overrun` notices.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crossbeam_channel::Sender;
use shield_dnsmasq::DomainCache;
use shield_event::map::nflog::{lost_packets, name_destination, packet_event, LoggedPacket};
use shield_event::{format_timestamp, now_timestamp, Source};
use shield_nflog::{Headers, Message, Packet, Subscription};

use crate::confine::Confinement;
use crate::output::Msg;
use crate::sources::Ready;
use crate::summary::Summary;

/// How the NFLOG socket is opened.
pub struct NflogSource {
    /// `--nflog-group`.
    pub group: u16,
    /// `--nflog-buffer`: the receive buffer, set once before capabilities are dropped.
    pub buffer: usize,
    /// `--netns`: entered by this thread only, before the socket is made.
    pub netns: Option<PathBuf>,
    /// Name put on events.
    pub container: String,
    /// Address → name, kept by the dns source; `None` without one.
    pub cache: Option<Arc<Mutex<DomainCache>>>,
    /// Events go here.
    pub tx: Sender<Msg>,
    /// Shared counters.
    pub summary: Summary,
    /// Applied to this thread once the socket is bound (or binding failed).
    pub confinement: Confinement,
}

impl NflogSource {
    /// Binds the group (reporting readiness or the reason it cannot), then forwards packets
    /// until the process ends. Must run on its own thread: it may enter another namespace.
    pub fn run(self, ready: Sender<Ready>) {
        // The whole buffer is asked for at once: growing it after an overrun needs
        // SO_RCVBUFFORCE (CAP_NET_ADMIN) past net.core.rmem_max, and the capability is gone by
        // then. A receive buffer is a ceiling, not an allocation: the kernel charges memory only
        // for packets waiting in it.
        let opened = Subscription::builder()
            .group(self.group)
            .netns(self.netns.clone())
            .recv_buffer(self.buffer, self.buffer)
            .open();
        self.confinement.apply_here("nflog");
        let mut subscription = match opened {
            Ok(subscription) => subscription,
            Err(err) => {
                let _ = ready.send(Ready {
                    source: Source::Nflog,
                    result: Err(format!("{err}; packets will not be shown")),
                });
                return;
            }
        };
        let _ = ready.send(Ready {
            source: Source::Nflog,
            result: Ok(()),
        });
        drop(ready);

        // Interface indexes are only meaningful in the socket's namespace, which this thread is in.
        let interfaces = subscription.interfaces();
        let ifname = |index: u32| interfaces.name(index);
        loop {
            let mut closed = false;
            let result = subscription.recv(&mut |message| {
                if closed {
                    return;
                }
                let Some(event) = message_event(
                    message,
                    &self.container,
                    self.cache.as_deref(),
                    &ifname,
                    &self.summary,
                ) else {
                    return;
                };
                closed = self.tx.send(Msg::Event(event, None)).is_err();
            });
            if closed {
                return;
            }
            if let Err(err) = result {
                eprintln!(
                    "shield-watch: nflog: stopped reading NFLOG group {}: {err}",
                    self.group
                );
                return;
            }
        }
    }
}

/// The event for one NFLOG message of `container`'s group: a packet, named from the
/// container's own domain cache, or a loss notice. `None` for a packet whose headers cannot be
/// parsed (counted).
pub fn message_event(
    message: Message<'_>,
    container: &str,
    cache: Option<&Mutex<DomainCache>>,
    ifname: &dyn Fn(u32) -> Option<String>,
    summary: &Summary,
) -> Option<shield_event::Event> {
    match message {
        Message::Packet(packet) => {
            let ts = packet
                .timestamp()
                .and_then(|t| jiff::Timestamp::try_from(t).ok())
                .map_or_else(now_timestamp, format_timestamp);
            let Some(headers) = packet.headers() else {
                summary.skip(Source::Nflog, "unparsable_packet");
                return None;
            };
            let logged = logged_packet(&packet, &headers);
            let mut event = packet_event(&logged, &ts, container, ifname);
            if let Some(cache) = cache {
                let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(resolved) = cache.lookup(headers.dest) {
                    name_destination(&mut event, resolved.name, resolved.cname);
                }
            }
            Some(event)
        }
        Message::Lost { count } => {
            let mut counts = summary.lock();
            counts.overruns += 1;
            counts.lost += count.unwrap_or(0);
            drop(counts);
            Some(lost_packets(count, &now_timestamp(), container))
        }
    }
}

/// What the event mapping needs of a packet, read from the kernel's metadata and the headers.
fn logged_packet<'a>(packet: &Packet<'a>, headers: &Headers) -> LoggedPacket<'a> {
    LoggedPacket {
        prefix: packet.prefix(),
        src: headers.src,
        dest: headers.dest,
        proto: headers.proto,
        sport: headers.sport,
        dport: headers.dport,
        icmp: headers.icmp,
        fragment: headers.fragment,
        truncated: headers.truncated,
        indev: packet.indev(),
        outdev: packet.outdev(),
        uid: packet.uid(),
        gid: packet.gid(),
        mark: packet.mark(),
        hook: packet.hook(),
    }
}
