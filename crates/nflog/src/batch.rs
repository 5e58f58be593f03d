//! Raw datagrams read in one go, and the decoder that turns them into packets and counted losses.
//!
//! The split lets one thread do nothing per packet but copy datagrams out of the kernel while
//! another decodes them: a [`Batch`] carries the bytes and what the socket knew when it read
//! them (an overrun, the kernel's count of dropped messages); a [`Decoder`] follows the sequence
//! numbers and reports every loss exactly once. Both are pure: no I/O here.
//!
//! Losses are known two ways. A gap in the per-group sequence numbers counts every packet the
//! kernel numbered but did not deliver, but only once a later packet shows the gap. The socket's
//! drop counter (`SK_MEMINFO_DROPS`, read by the subscription when its queue runs dry) counts the
//! messages the kernel could not queue, at once, including the last ones of a flood that no
//! later packet follows. Each is a lower bound of the true loss at any moment; the decoder
//! reports their maximum, so nothing is counted twice and the tail of a flood is counted as soon
//! as the reader catches up.

use std::time::SystemTime;

use crate::wire::{frames, Frame, Packet};

/// One thing a [`Decoder`] (or [`Subscription::recv`](crate::Subscription::recv)) delivers.
// A packet borrows the datagram and lives for one callback on the stack; boxing it would
// allocate per packet to shrink a value nobody stores.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A logged packet.
    Packet(Packet<'a>),
    /// Packets lost in the kernel: `count` more than reported so far. `None` only where the
    /// kernel's drop counter cannot be read (an old kernel): the socket overran and no
    /// later packet has shown the gap yet; if one does, a `Lost` with the count follows.
    Lost {
        /// Number of packets lost, when known.
        count: Option<u64>,
    },
}

/// Counters of a subscription (and its decoder) since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Datagrams read from the socket.
    pub datagrams: u64,
    /// Packets delivered.
    pub packets: u64,
    /// Packets known lost (what the [`Message::Lost`] counts add up to).
    pub lost: u64,
    /// Times the kernel reported `ENOBUFS` (the receive buffer overran).
    pub overruns: u64,
    /// Messages the kernel dropped because the socket's queue was full (`SK_MEMINFO_DROPS`), as
    /// last read.
    pub kernel_drops: u64,
    /// Messages the codec rejected (malformed, truncated datagrams, asynchronous errors).
    pub malformed: u64,
    /// The socket's receive buffer as the kernel reports it (`SO_RCVBUF`, bytes).
    pub recv_buffer: usize,
}

/// Datagrams read from one subscription in one go, to be decoded on any thread by a
/// [`Decoder`]; fill it with [`Subscription::recv_batch`](crate::Subscription::recv_batch).
///
/// The bytes are kept back to back (a logged packet of the default 256-byte copy range takes
/// about 400 bytes here, against about 840 of kernel memory while it waits in the socket), so a
/// queue of batches is a cheap extension of the socket's buffer. Reuse a batch: its memory is
/// kept across fills.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    data: Vec<u8>,
    /// End offset in `data` of each datagram.
    ends: Vec<usize>,
    /// When the datagrams were read.
    pub(crate) received: Option<SystemTime>,
    /// The kernel reported `ENOBUFS` while this batch was read.
    pub(crate) overrun: bool,
    /// The socket's queue was found empty at the end of this batch.
    pub(crate) dry: bool,
    /// The kernel's drop counter of the socket, read after this batch's datagrams.
    pub(crate) kernel_drops: Option<u64>,
    /// Datagrams longer than the read slot: cut, so not kept (their packets show as a gap).
    pub(crate) truncated: u64,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Number of datagrams.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// No datagrams (the batch may still carry news of a loss; see [`Batch::is_news`]).
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Bytes of datagrams held.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// Whether decoding this batch can deliver anything: datagrams, or what the socket learnt
    /// of a loss while reading. An empty batch that is not news need not be passed on.
    pub fn is_news(&self) -> bool {
        !self.is_empty() || self.overrun || self.kernel_drops.is_some() || self.truncated > 0
    }

    /// When the datagrams were read (the subscription's clock, once per batch): the time to
    /// give packets that carry no timestamp of their own.
    pub fn received(&self) -> Option<SystemTime> {
        self.received
    }

    /// The datagrams, in the order they were read.
    pub fn datagrams(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let datagram = &self.data[start..end];
            start = end;
            datagram
        })
    }

    /// Empties the batch, keeping its memory.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
        self.received = None;
        self.overrun = false;
        self.dry = false;
        self.kernel_drops = None;
        self.truncated = 0;
    }

    pub(crate) fn push(&mut self, datagram: &[u8]) {
        self.data.extend_from_slice(datagram);
        self.ends.push(self.data.len());
    }
}

/// Turns the batches of one subscription into [`Message`]s, following its sequence numbers.
///
/// Feed it every batch of the subscription, in the order they were read; get it from
/// [`Subscription::decoder`](crate::Subscription::decoder) (or [`Decoder::new`] for a group
/// bound just now: the kernel numbers a fresh group's packets from 0).
#[derive(Clone, Debug)]
pub struct Decoder {
    /// The sequence number the next packet should carry, once known.
    next_seq: Option<u32>,
    /// Sum of the sequence gaps seen.
    gaps: u64,
    /// The kernel's drop counter, as last told by a batch.
    kernel_drops: u64,
    /// An overrun whose count nothing has told yet (only without the drop counter).
    overrun_pending: bool,
    packets: u64,
    lost: u64,
    malformed: u64,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder::new()
    }
}

impl Decoder {
    /// A decoder for a group bound just now (its first packet carries sequence number 0).
    pub fn new() -> Decoder {
        Decoder {
            next_seq: Some(0),
            gaps: 0,
            kernel_drops: 0,
            overrun_pending: false,
            packets: 0,
            lost: 0,
            malformed: 0,
        }
    }

    /// Delivers each packet of the batch, in order, and a [`Message::Lost`] wherever the
    /// sequence numbers or the kernel's drop counter show packets that were not delivered and
    /// not yet reported.
    pub fn decode(&mut self, batch: &Batch, on: &mut dyn FnMut(Message<'_>)) {
        if batch.overrun {
            self.overrun_pending = true;
        }
        for datagram in batch.datagrams() {
            for frame in frames(datagram) {
                match frame {
                    Ok(Frame::Packet(packet)) => {
                        if let Some(seq) = packet.seq() {
                            self.sequence(seq, on);
                        }
                        self.packets += 1;
                        on(Message::Packet(packet));
                    }
                    Ok(Frame::Failure { .. }) | Err(_) => self.malformed += 1,
                    Ok(_) => {}
                }
            }
        }
        self.malformed += batch.truncated;
        if let Some(drops) = batch.kernel_drops {
            self.kernel_drops = self.kernel_drops.max(drops);
            self.report(on);
            self.overrun_pending = false;
        } else if batch.dry && self.overrun_pending {
            // No drop counter: say that packets were lost; the next packet's gap tells how many.
            self.overrun_pending = false;
            on(Message::Lost { count: None });
        }
    }

    /// Counters: `packets`, `lost` and `malformed` (the rest are the subscription's).
    pub fn stats(&self) -> Stats {
        Stats {
            packets: self.packets,
            lost: self.lost,
            malformed: self.malformed,
            ..Stats::default()
        }
    }

    fn sequence(&mut self, seq: u32, on: &mut dyn FnMut(Message<'_>)) {
        if let Some(expected) = self.next_seq {
            let gap = seq.wrapping_sub(expected);
            // Netlink delivers in order, so a "negative" gap is a restarted counter, not a loss.
            if gap != 0 && gap < 1 << 31 {
                self.gaps += u64::from(gap);
                self.overrun_pending = false;
                self.report(on);
            }
        }
        self.next_seq = Some(seq.wrapping_add(1));
    }

    /// Reports what the gaps or the drop counter show beyond what was reported.
    fn report(&mut self, on: &mut dyn FnMut(Message<'_>)) {
        let known = self.gaps.max(self.kernel_drops);
        if known > self.lost {
            let count = known - self.lost;
            self.lost = known;
            on(Message::Lost { count: Some(count) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::tests::PacketMessage;

    const NFULA_SEQ: u16 = 12;

    fn datagram(seq: u32) -> Vec<u8> {
        let mut out = Vec::new();
        PacketMessage {
            family: 2,
            group: 100,
            ..PacketMessage::default()
        }
        .attr(NFULA_SEQ, seq.to_be_bytes())
        .encode(&mut out);
        out
    }

    fn batch(seqs: &[u32]) -> Batch {
        let mut batch = Batch::new();
        for &seq in seqs {
            batch.push(&datagram(seq));
        }
        batch
    }

    /// What a decode delivers: `Ok(seq)` per packet, `Err(count)` per loss.
    fn decode(decoder: &mut Decoder, batch: &Batch) -> Vec<Result<u32, Option<u64>>> {
        let mut seen = Vec::new();
        decoder.decode(batch, &mut |m| {
            seen.push(match m {
                Message::Packet(p) => Ok(p.seq().unwrap()),
                Message::Lost { count } => Err(count),
            })
        });
        seen
    }

    #[test]
    fn datagrams_come_back_in_order() {
        let b = batch(&[0, 1, 2]);
        assert_eq!(b.len(), 3);
        let back: Vec<Vec<u8>> = b.datagrams().map(<[u8]>::to_vec).collect();
        assert_eq!(back, [datagram(0), datagram(1), datagram(2)]);
        let mut b = b;
        b.clear();
        assert!(b.is_empty() && !b.is_news());
        assert_eq!(b.datagrams().count(), 0);
    }

    #[test]
    fn a_gap_is_reported_before_the_packet_that_shows_it() {
        let mut d = Decoder::new();
        assert_eq!(decode(&mut d, &batch(&[0, 1])), [Ok(0), Ok(1)]);
        assert_eq!(
            decode(&mut d, &batch(&[5, 6])),
            [Err(Some(3)), Ok(5), Ok(6)]
        );
        assert_eq!(d.stats().lost, 3);
        assert_eq!(d.stats().packets, 4);
    }

    #[test]
    fn the_first_packet_of_a_fresh_group_is_zero() {
        let mut d = Decoder::new();
        assert_eq!(decode(&mut d, &batch(&[2])), [Err(Some(2)), Ok(2)]);
    }

    #[test]
    fn the_drop_counter_reports_the_tail_at_once_and_the_gap_does_not_repeat_it() {
        let mut d = Decoder::new();
        // Packets 0..3 arrive, 3..10 were dropped; the queue ran dry and the counter says 7.
        let mut b = batch(&[0, 1, 2]);
        b.overrun = true;
        b.dry = true;
        b.kernel_drops = Some(7);
        assert_eq!(decode(&mut d, &b), [Ok(0), Ok(1), Ok(2), Err(Some(7))]);
        // The next packet shows the same 7 as a gap: already reported.
        assert_eq!(decode(&mut d, &batch(&[10])), [Ok(10)]);
        assert_eq!(d.stats().lost, 7);
    }

    #[test]
    fn drops_read_while_packets_still_wait_are_not_counted_twice() {
        let mut d = Decoder::new();
        // The counter was read after packet 101 was dropped but before 100 was read.
        let mut b = batch(&[]);
        b.kernel_drops = Some(1);
        d.next_seq = Some(100);
        assert_eq!(decode(&mut d, &b), [Err(Some(1))]);
        assert_eq!(decode(&mut d, &batch(&[100, 102])), [Ok(100), Ok(102)]);
        // A further drop shows in the gap beyond the counter.
        assert_eq!(decode(&mut d, &batch(&[105])), [Err(Some(2)), Ok(105)]);
        assert_eq!(d.stats().lost, 3);
    }

    #[test]
    fn gaps_beyond_the_counter_are_reported() {
        // A loss the socket did not see (the kernel numbered the packet and failed to send it).
        let mut d = Decoder::new();
        let mut b = batch(&[0, 3]);
        b.kernel_drops = Some(1);
        b.dry = true;
        assert_eq!(decode(&mut d, &b), [Ok(0), Err(Some(2)), Ok(3)]);
        assert_eq!(d.stats().lost, 2);
    }

    #[test]
    fn without_the_counter_an_overrun_is_reported_uncounted_when_the_queue_is_dry() {
        let mut d = Decoder::new();
        let mut b = batch(&[0]);
        b.overrun = true;
        assert_eq!(decode(&mut d, &b), [Ok(0)]);
        let mut b = batch(&[1]);
        b.dry = true;
        assert_eq!(decode(&mut d, &b), [Ok(1), Err(None)]);
        // Reported once; the gap gives the count later.
        let mut b = batch(&[]);
        b.dry = true;
        assert_eq!(decode(&mut d, &b), []);
        assert_eq!(decode(&mut d, &batch(&[9])), [Err(Some(7)), Ok(9)]);
    }

    #[test]
    fn an_overrun_told_by_a_gap_is_not_reported_again() {
        let mut d = Decoder::new();
        let mut b = batch(&[0, 4]);
        b.overrun = true;
        b.dry = true;
        assert_eq!(decode(&mut d, &b), [Ok(0), Err(Some(3)), Ok(4)]);
    }

    #[test]
    fn sequence_numbers_wrap() {
        let mut d = Decoder::new();
        d.next_seq = Some(u32::MAX - 1);
        assert_eq!(
            decode(&mut d, &batch(&[u32::MAX - 1, u32::MAX, 0, 2])),
            [Ok(u32::MAX - 1), Ok(u32::MAX), Ok(0), Err(Some(1)), Ok(2)]
        );
    }

    #[test]
    fn a_restarted_counter_is_not_a_loss() {
        let mut d = Decoder::new();
        assert_eq!(decode(&mut d, &batch(&[0, 1, 0])), [Ok(0), Ok(1), Ok(0)]);
        assert_eq!(d.stats().lost, 0);
    }

    #[test]
    fn truncated_and_malformed_datagrams_are_counted() {
        let mut d = Decoder::new();
        let mut b = batch(&[0]);
        b.push(&[1, 2, 3]);
        b.truncated = 2;
        assert_eq!(decode(&mut d, &b), [Ok(0)]);
        assert_eq!(d.stats().malformed, 3);
    }
}
