//! The nflog source: packets the kernel logged to the NFLOG group become `nflog` events, named
//! from the dns source's cache; lost packets become `watch`/`nflog_overrun` notices.
//!
//! Two threads: `nflog` enters the namespace, binds the group and then only copies datagrams
//! out of the socket in batches; `nflog-events` decodes each batch, counts losses and builds
//! the events.

use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use shield_dnsmasq::DomainCache;
use shield_event::map::nflog::{lost_packets, name_destination, packet_event, LoggedPacket};
use shield_event::{format_timestamp, now_timestamp, Source};
use shield_nflog::{Batch, Decoder, Headers, Interfaces, Message, Packet, Subscription};

use crate::confine::Confinement;
use crate::output::Msg;
use crate::sources::Ready;
use crate::summary::Summary;

/// Batches read but not yet turned into events, at most (a batch holds up to about 256 KiB, so
/// up to about 32 MiB of logged packets wait here when the writer is slow, on top of the
/// kernel's buffer).
const QUEUED_BATCHES: usize = 128;
/// After a read of fewer datagrams than this, the reader pauses for `COALESCE` before reading
/// again. A packet after a quiet spell is read at once; within a stream a packet waits at most
/// this long (plus the timer's slack), and a flood costs one wake-up per batch instead of one
/// per packet.
const COALESCE_BELOW: usize = 64;
const COALESCE: Duration = Duration::from_micros(200);
/// Emptied batches kept for reuse; more are freed.
const SPARE_BATCHES: usize = 4;

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
        // This thread only empties the socket; decoding, naming and building events happen on
        // another (started after the confinement above, so it inherits it). A slow moment
        // downstream then fills memory here (a few hundred bytes a packet) rather than the
        // kernel's queue, whose overflow loses packets.
        let group = self.group;
        let decoder = subscription.decoder();
        let interfaces = subscription.interfaces();
        let (batches, queued) = crossbeam_channel::bounded::<Batch>(QUEUED_BATCHES);
        let (spare, spares) = crossbeam_channel::bounded::<Batch>(SPARE_BATCHES);
        let events = crate::try_spawn("nflog-events", move || {
            self.forward(decoder, &interfaces, &queued, &spare)
        });
        if let Err(err) = events {
            let _ = ready.send(Ready {
                source: Source::Nflog,
                result: Err(format!("cannot start its event thread: {err}")),
            });
            return;
        }
        let _ = ready.send(Ready {
            source: Source::Nflog,
            result: Ok(()),
        });
        drop(ready);

        let mut batch = Batch::new();
        loop {
            if let Err(err) = subscription.recv_batch(&mut batch) {
                eprintln!("shield-watch: nflog: stopped reading NFLOG group {group}: {err}");
                return;
            }
            if !batch.is_news() {
                continue;
            }
            let small = !batch.is_empty() && batch.len() < COALESCE_BELOW;
            let next = spares.try_recv().unwrap_or_default();
            if batches.send(std::mem::replace(&mut batch, next)).is_err() {
                // The event thread ended: stdout is closed.
                return;
            }
            if small {
                // Packets are arriving one by one: let a few more gather so that the next read
                // (and everything downstream) is woken once for many, not once per packet.
                std::thread::sleep(COALESCE);
            }
        }
    }

    /// Decodes the batches in order and sends one event per packet or loss, until the reading
    /// thread ends or the writer is gone. Emptied batches go back to the reader through `spare`.
    fn forward(
        self,
        mut decoder: Decoder,
        interfaces: &Interfaces,
        batches: &Receiver<Batch>,
        spare: &Sender<Batch>,
    ) {
        // Interface indexes are only meaningful in the socket's namespace: `Interfaces` answers
        // for it from any thread. Names are looked up once per batch and index (one ioctl each).
        let names: RefCell<Vec<(u32, Option<String>)>> = RefCell::new(Vec::new());
        let ifname = |index: u32| {
            let mut names = names.borrow_mut();
            if let Some((_, name)) = names.iter().find(|(i, _)| *i == index) {
                return name.clone();
            }
            let name = interfaces.name(index);
            names.push((index, name.clone()));
            name
        };
        for batch in batches {
            names.borrow_mut().clear();
            let read_at = batch
                .received()
                .and_then(|t| jiff::Timestamp::try_from(t).ok())
                .map(format_timestamp);
            let mut closed = false;
            decoder.decode(&batch, &mut |message| {
                if closed {
                    return;
                }
                let Some(event) = message_event_read_at(
                    message,
                    read_at.as_deref(),
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
            let _ = spare.try_send(batch);
        }
    }
}

/// The event for one NFLOG message of `container`'s group: a packet, named from the
/// container's own domain cache, or a loss notice. `None` for a packet whose headers cannot be
/// parsed (counted). A packet that carries no timestamp of its own (packets logged on output)
/// gets `read_at`, the time its batch was read, else the time the event is built.
pub fn message_event_read_at(
    message: Message<'_>,
    read_at: Option<&str>,
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
                .map(format_timestamp)
                .or_else(|| read_at.map(str::to_string))
                .unwrap_or_else(now_timestamp);
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
        headers: *headers,
        indev: packet.indev(),
        outdev: packet.outdev(),
        uid: packet.uid(),
        gid: packet.gid(),
        mark: packet.mark(),
        hook: packet.hook(),
    }
}
