//! History (`--since`, `--until`, `--last N`): what the containers' logs already hold, read
//! through every rotated and compressed file, merged across sources and containers in time
//! order, before the live stream goes on from exactly where the history ended.
//!
//! One reader thread per (container, source) turns its log's lines into events with the same
//! handlers as the live threads; `merge` takes the oldest head of all of them each time (memory:
//! a few batches per reader, never the history). NFLOG has no history: the kernel keeps none.

use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use jiff::{Timestamp, ZonedDateTime};
use shield_dnsmasq::DomainCache;
use shield_event::{Event, Source};
use shield_tail::{History, HistoryLine, Options, Start, Window};

use crate::containers::{Container, Voice};
use crate::output::Msg;
use crate::sources::audit::AuditLines;
use crate::sources::dns::{DnsLines, DnsOptions, SharedAllowList};
use crate::sources::follow::LineHandler;
use crate::summary::Summary;

/// What history is asked for.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `--since` / `--until`, in nanoseconds since the epoch.
    pub window: Window,
    /// `--last N`: the last N events that pass `actions` (within the window).
    pub last: Option<usize>,
    /// `--action`, applied here too so that `--last` counts only what would be written.
    pub actions: Vec<String>,
    /// `--all-query-types`.
    pub all_query_types: bool,
}

/// Events a reader hands the merge at once.
const BATCH: usize = 64;

/// What a reader thread sends.
enum Piece {
    /// Events, oldest first, each with the time it is ordered by.
    Events(Vec<(i64, Event)>),
    /// Done: the cursor key and where the live follower starts.
    End(String, Start),
}

/// Reads the history of `containers` for `sources` and sends its events to the writer in time
/// order. Returns where each file's live follower starts (by cursor key), so that the live
/// stream neither misses nor repeats a line; `None` when the writer went away.
pub fn replay(
    containers: &[Container],
    sources: &[Source],
    plan: &Plan,
    options: &Options,
    voice: Voice,
    tx: &Sender<Msg>,
    summary: &Summary,
) -> Option<BTreeMap<String, Start>> {
    let mut readers = Vec::new();
    for container in containers {
        for source in [Source::Audit, Source::Dns] {
            if !sources.contains(&source) {
                continue;
            }
            let (out, from) = crossbeam_channel::bounded(2);
            let reader = Reader {
                container: container.clone(),
                source,
                plan: plan.clone(),
                options: options.clone(),
                voice,
                summary: summary.clone(),
            };
            crate::spawn("history", move || reader.run(&out));
            readers.push(Feed {
                from,
                pending: VecDeque::new(),
                done: false,
            });
        }
    }
    merge(readers, plan.last, tx)
}

/// One reader's queue at the merge.
struct Feed {
    from: Receiver<Piece>,
    pending: VecDeque<(i64, Event)>,
    done: bool,
}

impl Feed {
    /// Makes sure the next event is pending, unless the reader is done; records its end.
    fn fill(&mut self, ends: &mut BTreeMap<String, Start>) {
        while self.pending.is_empty() && !self.done {
            match self.from.recv() {
                Ok(Piece::Events(events)) => self.pending.extend(events),
                Ok(Piece::End(key, start)) => {
                    ends.insert(key, start);
                    self.done = true;
                }
                Err(_) => self.done = true,
            }
        }
    }
}

/// The k-way merge: the oldest pending event of all readers next (ties in reader order, then
/// in each reader's order). With `last`, only the last `last` are written, at the end.
fn merge(
    mut feeds: Vec<Feed>,
    last: Option<usize>,
    tx: &Sender<Msg>,
) -> Option<BTreeMap<String, Start>> {
    let mut ends = BTreeMap::new();
    // (Reverse time, reader index): the heap's top is the oldest head.
    let mut heads = BinaryHeap::new();
    for (i, feed) in feeds.iter_mut().enumerate() {
        feed.fill(&mut ends);
        if let Some((time, _)) = feed.pending.front() {
            heads.push(std::cmp::Reverse((*time, i)));
        }
    }
    let mut tail: VecDeque<Event> = VecDeque::new();
    // Events go to the writer in batches (one message for many), at most `IN_FLIGHT` of them
    // out at once: the writer returns each once written, and the merge waits for one when all
    // are out (memory stays bounded whatever the history).
    let mut pool = Pool::new();
    let mut out = pool.take()?;
    while let Some(std::cmp::Reverse((_, i))) = heads.pop() {
        let feed = &mut feeds[i];
        let Some((_, event)) = feed.pending.pop_front() else {
            continue;
        };
        match last {
            Some(n) => {
                if tail.len() == n {
                    tail.pop_front();
                }
                if n > 0 {
                    tail.push_back(event);
                }
            }
            None => pool.add(&mut out, event, tx)?,
        }
        feed.fill(&mut ends);
        if let Some((time, _)) = feed.pending.front() {
            heads.push(std::cmp::Reverse((*time, i)));
        }
    }
    for event in tail {
        pool.add(&mut out, event, tx)?;
    }
    if !out.is_empty() && tx.send(Msg::Events(out)).is_err() {
        return None;
    }
    Some(ends)
}

/// Batches the merge may have out at once (at the writer or in the channel).
const IN_FLIGHT: usize = 8;

/// The merge's batches: made up to [`IN_FLIGHT`], then only those the writer returns.
struct Pool {
    back: Sender<crate::output::Batch>,
    returned: Receiver<crate::output::Batch>,
    made: usize,
}

impl Pool {
    fn new() -> Pool {
        let (back, returned) = crossbeam_channel::bounded(IN_FLIGHT);
        Pool {
            back,
            returned,
            made: 0,
        }
    }

    /// Puts `event` in `out`, and sends `out` once full (a fresh one in its place); `None` when
    /// the writer is gone.
    fn add(
        &mut self,
        out: &mut crate::output::Batch,
        event: Event,
        tx: &Sender<Msg>,
    ) -> Option<()> {
        *out.next_slot() = event;
        out.push();
        if out.is_full() {
            let next = self.take()?;
            tx.send(Msg::Events(std::mem::replace(out, next))).ok()?;
        }
        Some(())
    }

    /// An empty batch; `None` when the writer is gone.
    fn take(&mut self) -> Option<crate::output::Batch> {
        if let Ok(batch) = self.returned.try_recv() {
            return Some(batch);
        }
        if self.made < IN_FLIGHT {
            self.made += 1;
            return Some(crate::output::Batch::new(self.back.clone()));
        }
        // The writer holds every batch; it returns each once written (the pool keeps a sender,
        // so wait with a timeout and give up only when nothing comes back for long).
        self.returned
            .recv_timeout(std::time::Duration::from_secs(600))
            .ok()
    }
}

/// One (container, source) history reader.
struct Reader {
    container: Container,
    source: Source,
    plan: Plan,
    options: Options,
    voice: Voice,
    summary: Summary,
}

impl Reader {
    fn run(self, out: &Sender<Piece>) {
        let name = match self.source {
            Source::Dns => "dnsmasq.log",
            _ => "audit.jsonl",
        };
        let key = self.container.cursor_key(self.source);
        let mut history = match History::open_at(&self.container.dir, name, &self.options) {
            Ok(history) => history,
            Err(err) => {
                self.voice.warn(
                    &self.container.name,
                    &format!(
                        "{}: no history: {}",
                        self.source.as_str(),
                        crate::diag::chain(&err)
                    ),
                );
                let _ = out.send(Piece::End(key, Start::End));
                return;
            }
        };
        let now = ZonedDateTime::now();
        let source = self.source;
        let mut minutes = MinuteCache::default();
        let mut time_of = move |line: &[u8]| match source {
            Source::Dns => minutes.time(line, &now),
            _ => line_time(source, line, &now),
        };
        let mut handler = self.handler();
        let plan = &self.plan;
        let admits =
            |event: &Event| plan.actions.is_empty() || plan.actions.contains(&event.action);
        let mut batch: Vec<(i64, Event)> = Vec::with_capacity(BATCH);
        let mut previous: Option<i64> = None;
        let mut closed = false;
        let mut stamps = StampText::default();
        let mut result = Ok(());
        let window = plan.window;
        let mut judge = self.handler();
        // The handler is set up once for the whole read (its cache locked once: it is this
        // reader's own), and each line is parsed into a reused event, moved out only when kept.
        handler.with_lines(&mut |lines| {
            let mut scratch = Event::new(String::new(), Source::Watch, "", "");
            let mut emit = |line: HistoryLine<'_>| -> bool {
                // A line without a time stands at the time of the one before it.
                let time = line.time.or(previous);
                if line.time.is_some() {
                    previous = line.time;
                }
                if lines.line(line.bytes, false, &mut scratch) && admits(&scratch) {
                    if source == Source::Dns {
                        stamps.stamp(&mut scratch, time);
                    }
                    let event = std::mem::replace(
                        &mut scratch,
                        Event::new(String::new(), Source::Watch, "", ""),
                    );
                    batch.push((time.unwrap_or(i64::MIN), event));
                    if batch.len() >= BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                        closed = out.send(Piece::Events(full)).is_err();
                    }
                }
                !closed
            };
            result = match plan.last {
                None => history.read(window, &mut *time_of_ref(&mut time_of), &mut emit),
                Some(n) => {
                    let keep = |bytes: &[u8], time: Option<i64>| {
                        let in_window = time.is_none_or(|t| {
                            window.since.is_none_or(|s| t >= s)
                                && window.until.is_none_or(|u| t <= u)
                        });
                        in_window
                            && event_of(&mut judge, source, bytes, time).is_some_and(|e| admits(&e))
                    };
                    history.last(n, &mut *time_of_ref(&mut time_of), keep, &mut emit)
                }
            };
        });
        if let Err(err) = result {
            self.voice.warn(
                &self.container.name,
                &format!(
                    "{}: history stopped: {}",
                    source.as_str(),
                    crate::diag::chain(&err)
                ),
            );
        }
        for notice in history.take_notices() {
            self.voice.warn(
                &self.container.name,
                &format!("{}: {notice}", source.as_str()),
            );
        }
        if !batch.is_empty() && !closed {
            closed = out.send(Piece::Events(batch)).is_err();
        }
        if !closed {
            let _ = out.send(Piece::End(key, history.live_end()));
        }
    }

    /// The same handler the live thread uses, for this container and source.
    fn handler(&self) -> Box<dyn LineHandler> {
        match self.source {
            Source::Dns => Box::new(DnsLines::new(
                DnsOptions {
                    all_query_types: self.plan.all_query_types,
                    prime_only_existing: false,
                    emit: true,
                },
                SharedAllowList::load(&self.container.dir, &Voice::Quiet, &self.container.name),
                // History names nothing: only nflog events are named, and NFLOG has no history.
                Arc::new(Mutex::new(DomainCache::new(16))),
                self.container.name.to_string(),
            )),
            _ => Box::new(AuditLines {
                container: self.container.name.to_string(),
                naming: self.container.audit_naming,
                summary: self.summary.clone(),
            }),
        }
    }
}

/// `f` as a `&mut dyn FnMut`, so one closure can be lent to `History::read` or `History::last`
/// from inside another closure.
fn time_of_ref<F: FnMut(&[u8]) -> Option<i64>>(f: &mut F) -> &mut dyn FnMut(&[u8]) -> Option<i64> {
    f
}

/// A dnsmasq event's `ts` from its line's time, formatted once per second (lines of one second
/// share it).
#[derive(Default)]
struct StampText {
    second: Option<i64>,
    text: String,
}

impl StampText {
    fn stamp(&mut self, event: &mut Event, time: Option<i64>) {
        let Some(t) = time else { return };
        let second = t.div_euclid(1_000_000_000);
        if self.second != Some(second) || t.rem_euclid(1_000_000_000) != 0 {
            let Ok(ts) = Timestamp::from_nanosecond(i128::from(t)) else {
                return;
            };
            self.text = shield_event::format_timestamp(ts);
            self.second = (t.rem_euclid(1_000_000_000) == 0).then_some(second);
        }
        event.ts.clear();
        event.ts.push_str(&self.text);
    }
}

/// The event a history line gives, if any, stamped with the line's own time (dnsmasq lines;
/// audit entries carry their own `ts`).
fn event_of(
    handler: &mut Box<dyn LineHandler>,
    source: Source,
    bytes: &[u8],
    time: Option<i64>,
) -> Option<Event> {
    let mut event = Event::new(String::new(), Source::Watch, "", "");
    let mut produced = false;
    handler.with_lines(&mut |lines| produced = lines.line(bytes, false, &mut event));
    if !produced {
        return None;
    }
    if source == Source::Dns {
        if let Some(ts) = time.and_then(|t| Timestamp::from_nanosecond(i128::from(t)).ok()) {
            event.ts = shield_event::format_timestamp(ts);
        }
    }
    Some(event)
}

/// A line's time in nanoseconds: a dnsmasq line's syslog stamp in the host's zone (the year the
/// latest that does not put it after `now`), an audit entry's `ts`.
pub fn line_time(source: Source, line: &[u8], now: &ZonedDateTime) -> Option<i64> {
    let ts = match source {
        Source::Dns => shield_dnsmasq::parse_stamp(line)?.resolve(now)?.timestamp(),
        _ => audit_ts(line)?,
    };
    i64::try_from(ts.as_nanosecond()).ok()
}

/// The time of dnsmasq lines, resolved (year, zone) once per minute of stamps rather than once
/// per line: a line's time is its minute's plus its seconds. Zone changes happen on minute
/// boundaries, so this is exact; a long history has many lines per minute.
#[derive(Default)]
struct MinuteCache {
    /// `Mon dd hh:mm` of the last minute resolved, and its time in nanoseconds.
    last: Option<([u8; 12], Option<i64>)>,
}

impl MinuteCache {
    fn time(&mut self, line: &[u8], now: &ZonedDateTime) -> Option<i64> {
        let stamp = line.get(..15)?;
        let seconds = match (stamp[12], stamp[13], stamp[14]) {
            (b':', a @ b'0'..=b'5', b @ b'0'..=b'9') => i64::from((a - b'0') * 10 + (b - b'0')),
            _ => return None,
        };
        let key: [u8; 12] = stamp[..12].try_into().ok()?;
        let base = match self.last {
            Some((k, base)) if k == key => base,
            _ => {
                let mut minute = [0u8; 15];
                minute[..12].copy_from_slice(&key);
                minute[12..].copy_from_slice(b":00");
                let base = line_time(Source::Dns, &minute, now);
                self.last = Some((key, base));
                base
            }
        };
        Some(base? + seconds * 1_000_000_000)
    }
}

/// An audit entry's `ts` (RFC 3339), read without parsing the whole entry.
fn audit_ts(line: &[u8]) -> Option<Timestamp> {
    let key = b"\"ts\":\"";
    let at = memchr::memmem::find(line, key)? + key.len();
    let rest = &line[at..];
    let end = memchr::memchr(b'"', rest)?;
    std::str::from_utf8(&rest[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The merge writes every reader's events once, oldest first across readers (ties in
        /// reader order), each reader's own order kept; with `last`, only the newest N of that.
        #[test]
        fn the_merge_is_a_reference_sort_of_every_reader(
            streams in proptest::collection::vec(
                (proptest::collection::vec(0i64..50, 0..40), 1usize..8), 0..6),
            last in proptest::option::of(0usize..30),
        ) {
            let mut feeds = Vec::new();
            let mut reference = Vec::new();
            for (i, (mut times, batch)) in streams.into_iter().enumerate() {
                times.sort_unstable();
                let (out, from) = crossbeam_channel::unbounded();
                let events: Vec<(i64, Event)> = times
                    .iter()
                    .enumerate()
                    .map(|(seq, t)| {
                        let tag = format!("s{i}-{seq}");
                        reference.push((*t, i, seq, tag.clone()));
                        (*t, Event::new(String::new(), Source::Audit, "denied", tag))
                    })
                    .collect();
                for chunk in events.chunks(batch) {
                    out.send(Piece::Events(chunk.to_vec())).unwrap();
                }
                out.send(Piece::End(format!("key{i}"), Start::End)).unwrap();
                feeds.push(Feed { from, pending: VecDeque::new(), done: false });
            }
            reference.sort();
            let mut want: Vec<String> = reference.into_iter().map(|r| r.3).collect();
            if let Some(n) = last {
                want = want.split_off(want.len().saturating_sub(n));
            }
            let readers = feeds.len();
            let (tx, rx) = crossbeam_channel::unbounded();
            let ends = merge(feeds, last, &tx).unwrap();
            prop_assert_eq!(ends.len(), readers);
            drop(tx);
            let got: Vec<String> = rx
                .iter()
                .flat_map(|m| match m {
                    Msg::Events(batch) => {
                        batch.events().iter().map(|e| e.container.clone()).collect()
                    }
                    _ => vec![String::new()],
                })
                .collect();
            prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn audit_and_dnsmasq_lines_have_their_times() {
        let now: ZonedDateTime = "2026-12-04T12:00:00[UTC]".parse().unwrap();
        let audit = br#"{"ts":"2026-12-04T10:00:00+00:00","action":"denied"}"#;
        let t = line_time(Source::Audit, audit, &now).unwrap();
        assert_eq!(t, 1_796_378_400_000_000_000);
        let dns = b"Dec  4 10:00:00 dnsmasq[1]: query[A] x.example from 10.0.2.100";
        assert_eq!(line_time(Source::Dns, dns, &now), Some(t));
        // A December line read in January belongs to the year before.
        let january: ZonedDateTime = "2027-01-01T00:10:00[UTC]".parse().unwrap();
        let dec31 = b"Dec 31 23:59:00 dnsmasq[1]: query[A] x.example from 10.0.2.100";
        let t = line_time(Source::Dns, dec31, &january).unwrap();
        assert_eq!(
            Timestamp::from_nanosecond(i128::from(t))
                .unwrap()
                .to_string(),
            "2026-12-31T23:59:00Z"
        );
        assert_eq!(line_time(Source::Audit, b"{\"ts\":\"t1\"}", &now), None);
        // Once per minute or per line, the same times.
        let mut minutes = MinuteCache::default();
        for line in [
            &b"Dec  4 10:00:00 dnsmasq[1]: x"[..],
            b"Dec  4 10:00:59 dnsmasq[1]: x",
            b"Dec  4 10:01:07 dnsmasq[1]: x",
            b"Dec 31 23:59:30 dnsmasq[1]: x",
        ] {
            assert_eq!(minutes.time(line, &now), line_time(Source::Dns, line, &now));
        }
        assert_eq!(minutes.time(b"Dec  4 10:00:6x dnsmasq", &now), None);
    }
}
