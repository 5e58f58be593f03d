//! Splitting a byte stream into complete lines, with a cap on line length. Pure: no I/O.

use std::ops::ControlFlow;

use memchr::memchr_iter;

/// What the splitter found; offsets are relative to the stream position of the first byte
/// ever fed (the caller adds its file offset).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// A complete line without its `\n`; `end` is the stream offset just after the `\n`.
    Line { bytes: &'a [u8], end: u64 },
    /// A line longer than the cap, skipped whole; `len` excludes the `\n`.
    TooLong { len: u64, end: u64 },
}

/// Holds the unfinished tail of the stream between reads.
///
/// Invariant: `buf[start..scanned]` is the pending partial line (no `\n` in it), and
/// `buf[scanned..end]` was read but not yet split (the caller stopped taking lines). Once all is
/// split, the pending line is never longer than `max_line`: a longer one is dropped and only its
/// length is kept (`skipping`).
pub(crate) struct LineBuf {
    buf: Vec<u8>,
    start: usize,
    /// Bytes before this were split into lines; `end` when the caller took every line.
    scanned: usize,
    end: usize,
    max_line: usize,
    /// Bytes of an over-long line dropped so far (`Some` while inside one).
    skipping: Option<u64>,
    /// Dropping the rest of a line that began before we started, silently (see `discard_rest`).
    discarding: bool,
    /// Stream offset of `buf[start]` (of the byte after the buffer while a line is dropped).
    base: u64,
    /// Stream offset just after the last line reported: the start of the pending line, also
    /// while an over-long one is being dropped, so a cursor never points into a line.
    consumed: u64,
}

/// Bytes asked of one `read`: large enough that following a big file is bound by memory
/// bandwidth, small enough that an idle follower holds little memory.
pub(crate) const READ_CHUNK: usize = 256 * 1024;

impl LineBuf {
    pub(crate) fn new(max_line: usize) -> LineBuf {
        LineBuf {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            end: 0,
            max_line: max_line.max(1),
            skipping: None,
            discarding: false,
            base: 0,
            consumed: 0,
        }
    }

    /// Forgets everything and restarts at stream offset `at`.
    pub(crate) fn reset(&mut self, at: u64) {
        self.start = 0;
        self.scanned = 0;
        self.end = 0;
        self.skipping = None;
        self.discarding = false;
        self.base = at;
        self.consumed = at;
    }

    /// Drops bytes up to and including the next `\n` without reporting them: used when we start
    /// in the middle of a line whose head we will never see.
    pub(crate) fn discard_rest(&mut self) {
        self.discarding = true;
    }

    /// Stream offset just after the last line reported (the start of the pending partial line).
    pub(crate) fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Whether a partial line (or part of an over-long one) is pending.
    #[cfg(test)]
    pub(crate) fn has_partial(&self) -> bool {
        self.end > self.start || self.skipping.is_some()
    }

    /// Bytes the buffer holds allocated.
    #[cfg(test)]
    pub(crate) fn allocated(&self) -> usize {
        self.buf.capacity()
    }

    /// Free space to read into, compacting and growing the buffer as needed.
    pub(crate) fn spare(&mut self) -> &mut [u8] {
        let want = self.max_line + 1 + READ_CHUNK;
        if self.buf.len() < want {
            // Grow lazily: an idle follower of an empty file should not hold a large buffer.
            let grown = (self.end + READ_CHUNK).max(64 * 1024).min(want);
            if grown > self.buf.len() {
                self.buf.resize(grown, 0);
            }
        }
        if self.buf.len() - self.end < READ_CHUNK.min(self.buf.len() / 2) && self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.scanned -= self.start;
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).min(want).max(self.buf.len() + 1);
            self.buf.resize(grown, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Gives back a large buffer while only a short partial line (or none) is pending: the
    /// pending bytes move to a buffer of their size, and the large one is returned, for another
    /// `LineBuf` to [`LineBuf::adopt`] or to be freed.
    pub(crate) fn shrink(&mut self) -> Option<Vec<u8>> {
        let pending = self.end - self.start;
        if self.buf.capacity() <= 4096 || pending > 1024 {
            return None;
        }
        let small = self.buf[self.start..self.end].to_vec();
        self.scanned -= self.start;
        self.start = 0;
        self.end = pending;
        Some(std::mem::replace(&mut self.buf, small))
    }

    /// Takes over `large` (another `LineBuf`'s, from [`LineBuf::shrink`]) when it is larger than
    /// the buffer held: the pending bytes move into it, and reading goes on without allocating,
    /// zeroing and faulting in a large buffer of its own. Its other bytes are never read before
    /// a read fills them.
    pub(crate) fn adopt(&mut self, mut large: Vec<u8>) {
        let pending = self.end - self.start;
        if large.len() <= self.buf.len() || large.len() < pending {
            return;
        }
        large[..pending].copy_from_slice(&self.buf[self.start..self.end]);
        self.scanned -= self.start;
        self.start = 0;
        self.end = pending;
        self.buf = large;
    }

    /// Accounts for `n` bytes written into [`LineBuf::spare`]; [`LineBuf::scan`] reports the
    /// lines they complete.
    pub(crate) fn filled(&mut self, n: usize) {
        self.end += n;
    }

    /// Reports every line the bytes read so far complete, in order, until `emit` says stop:
    /// then the rest stays for the next call, and [`LineBuf::consumed`] is just after the last
    /// line reported.
    pub(crate) fn scan(
        &mut self,
        emit: &mut dyn FnMut(Piece<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        let scan_from = self.scanned;
        let mut line_start = self.start;
        for nl in memchr_iter(b'\n', &self.buf[scan_from..self.end]) {
            let nl = scan_from + nl;
            let len = (nl - line_start) as u64;
            let end = self.base + len + 1;
            let flow = if self.discarding {
                self.discarding = false;
                ControlFlow::Continue(())
            } else if let Some(skipped) = self.skipping.take() {
                emit(Piece::TooLong {
                    len: skipped + len,
                    end,
                })
            } else if len as usize > self.max_line {
                emit(Piece::TooLong { len, end })
            } else {
                emit(Piece::Line {
                    bytes: &self.buf[line_start..nl],
                    end,
                })
            };
            self.base = end;
            self.consumed = end;
            line_start = nl + 1;
            if flow.is_break() {
                self.start = line_start;
                self.scanned = line_start;
                return flow;
            }
        }
        self.start = line_start;
        self.scanned = self.end;
        let pending = self.end - self.start;
        if self.discarding || self.skipping.is_some() || pending > self.max_line {
            self.drop_pending(0);
        }
        ControlFlow::Continue(())
    }

    /// Keeps only the length of the pending line (and of `more` bytes after it): the line is
    /// already known to be too long (or unwanted), so holding its bytes would only let one line
    /// grow memory without bound. Everything read must have been split.
    fn drop_pending(&mut self, more: u64) {
        debug_assert_eq!(self.scanned, self.end);
        let pending = (self.end - self.start) as u64 + more;
        if !self.discarding {
            *self.skipping.get_or_insert(0) += pending;
        }
        self.base += pending;
        self.start = 0;
        self.scanned = 0;
        self.end = 0;
    }

    /// Accounts for `len` bytes that hold no line end (a hole in a sparse file: zeros), more
    /// than `max_line` of them, without reading them: the pending line is over-long. Everything
    /// read must have been split.
    pub(crate) fn skip(&mut self, len: u64) {
        debug_assert!(len > self.max_line as u64);
        self.drop_pending(len);
    }

    /// The longest line delivered.
    pub(crate) fn max_line(&self) -> usize {
        self.max_line
    }

    /// Whether bytes read are still to be split (the caller stopped taking lines).
    pub(crate) fn unscanned(&self) -> bool {
        self.scanned < self.end
    }

    /// The stream ended for good (the file was rotated away or truncated): reports the lines
    /// still to be split, then the pending partial line, if any, as a line of its own. Stops
    /// where `emit` says stop, like [`LineBuf::scan`].
    pub(crate) fn finish(
        &mut self,
        emit: &mut dyn FnMut(Piece<'_>) -> ControlFlow<()>,
    ) -> ControlFlow<()> {
        self.scan(emit)?;
        let len = (self.end - self.start) as u64;
        let flow = if let Some(skipped) = self.skipping.take() {
            emit(Piece::TooLong {
                len: skipped + len,
                end: self.base + len,
            })
        } else if len > 0 && !self.discarding {
            emit(Piece::Line {
                bytes: &self.buf[self.start..self.end],
                end: self.base + len,
            })
        } else {
            ControlFlow::Continue(())
        };
        self.base += len;
        self.consumed = self.base;
        self.start = 0;
        self.scanned = 0;
        self.end = 0;
        self.discarding = false;
        flow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    enum Out {
        L(Vec<u8>, u64),
        T(u64, u64),
    }

    fn feed(lb: &mut LineBuf, data: &[u8], out: &mut Vec<Out>) {
        let mut rest = data;
        while !rest.is_empty() {
            let spare = lb.spare();
            let n = spare.len().min(rest.len());
            spare[..n].copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            lb.filled(n);
            let flow = lb.scan(&mut |p| {
                out.push(Out::of(p));
                ControlFlow::Continue(())
            });
            assert!(flow.is_continue());
        }
    }

    impl Out {
        fn of(p: Piece<'_>) -> Out {
            match p {
                Piece::Line { bytes, end } => Out::L(bytes.to_vec(), end),
                Piece::TooLong { len, end } => Out::T(len, end),
            }
        }
    }

    #[test]
    fn splits_lines_and_holds_the_partial_one() {
        let mut lb = LineBuf::new(100);
        let mut out = Vec::new();
        feed(&mut lb, b"ab\n\ncd", &mut out);
        assert_eq!(out, vec![Out::L(b"ab".to_vec(), 3), Out::L(vec![], 4)]);
        assert!(lb.has_partial());
        assert_eq!(lb.consumed(), 4);
        out.clear();
        feed(&mut lb, b"e\n", &mut out);
        assert_eq!(out, vec![Out::L(b"cde".to_vec(), 8)]);
        assert!(!lb.has_partial());
    }

    #[test]
    fn over_long_line_is_skipped_whole_and_counted() {
        let mut lb = LineBuf::new(4);
        let mut out = Vec::new();
        feed(&mut lb, b"1234\n12345\nok\n", &mut out);
        assert_eq!(
            out,
            vec![
                Out::L(b"1234".to_vec(), 5),
                Out::T(5, 11),
                Out::L(b"ok".to_vec(), 14)
            ]
        );
        // Split across many reads, far over the cap.
        out.clear();
        let mut lb = LineBuf::new(4);
        for _ in 0..100 {
            feed(&mut lb, b"xxxxxxx", &mut out);
        }
        assert!(out.is_empty());
        assert_eq!(lb.consumed(), 0, "a cursor never points into a line");
        feed(&mut lb, b"\nz\n", &mut out);
        assert_eq!(out, vec![Out::T(700, 701), Out::L(b"z".to_vec(), 703)]);
    }

    #[test]
    fn finish_reports_the_unterminated_tail_once() {
        let mut lb = LineBuf::new(10);
        let mut out = Vec::new();
        feed(&mut lb, b"a\nbc", &mut out);
        let flow = lb.finish(&mut |p| {
            out.push(Out::of(p));
            ControlFlow::Continue(())
        });
        assert!(flow.is_continue());
        assert_eq!(
            out,
            vec![Out::L(b"a".to_vec(), 2), Out::L(b"bc".to_vec(), 4)]
        );
        let mut again = 0;
        let _ = lb.finish(&mut |_| {
            again += 1;
            ControlFlow::Continue(())
        });
        assert_eq!(again, 0);
    }

    #[test]
    fn discard_rest_drops_the_first_line_silently() {
        let mut lb = LineBuf::new(10);
        lb.reset(100);
        lb.discard_rest();
        let mut out = Vec::new();
        feed(&mut lb, b"tail of old\nnew\n", &mut out);
        assert_eq!(out, vec![Out::L(b"new".to_vec(), 116)]);
    }

    proptest::proptest! {
        /// However the stream is cut into reads, the lines come out the same as splitting it
        /// whole, and the cursor offsets are the real stream offsets.
        #[test]
        fn chunking_never_changes_the_lines(
            data in proptest::collection::vec(proptest::sample::select(vec![b'a', b'\n', 0u8]), 0..400),
            cuts in proptest::collection::vec(1usize..50, 1..20),
            max_line in 1usize..20,
        ) {
            let mut lb = LineBuf::new(max_line);
            let mut out = Vec::new();
            let mut rest = &data[..];
            for c in cuts.iter().cycle() {
                if rest.is_empty() { break; }
                let n = (*c).min(rest.len());
                feed(&mut lb, &rest[..n], &mut out);
                rest = &rest[n..];
            }
            let mut want = Vec::new();
            let mut at = 0u64;
            let mut parts: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
            parts.pop();
            for p in parts {
                at += p.len() as u64 + 1;
                want.push(if p.len() > max_line { Out::T(p.len() as u64, at) } else { Out::L(p.to_vec(), at) });
            }
            proptest::prop_assert_eq!(out, want);
            proptest::prop_assert_eq!(lb.consumed(), at);
        }
    }

    proptest::proptest! {
        /// A caller that stops taking lines after any of them, then takes them again, gets the
        /// same lines as one that never stops: none lost, none twice, and where it stopped
        /// `consumed` is just after the last line it took.
        #[test]
        fn stopping_and_going_on_never_changes_the_lines(
            data in proptest::collection::vec(proptest::sample::select(vec![b'a', b'\n', 0u8]), 0..400),
            chunk in 1usize..60,
            stop_every in 1usize..5,
            max_line in 1usize..20,
        ) {
            let mut whole = LineBuf::new(max_line);
            let mut want = Vec::new();
            feed(&mut whole, &data, &mut want);
            let _ = whole.finish(&mut |p| { want.push(Out::of(p)); ControlFlow::Continue(()) });

            let mut lb = LineBuf::new(max_line);
            let mut got = Vec::new();
            let mut taken = 0usize;
            let mut take = |p: Piece<'_>, got: &mut Vec<Out>, said_stop: &mut bool| {
                proptest::prop_assert!(!*said_stop, "a line after stop");
                got.push(Out::of(p));
                taken += 1;
                *said_stop = taken % stop_every == 0;
                Ok(())
            };
            let mut flow_of = |p: Piece<'_>, got: &mut Vec<Out>, said_stop: &mut bool, failed: &mut Option<proptest::test_runner::TestCaseError>| {
                if let Err(e) = take(p, got, said_stop) { *failed = Some(e); }
                if *said_stop { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
            };
            let mut failed = None;
            for part in data.chunks(chunk) {
                let spare = lb.spare();
                spare[..part.len()].copy_from_slice(part);
                lb.filled(part.len());
                loop {
                    let mut said_stop = false;
                    let flow = lb.scan(&mut |p| flow_of(p, &mut got, &mut said_stop, &mut failed));
                    if let Some(e) = failed.take() { return Err(e); }
                    proptest::prop_assert_eq!(flow.is_break(), said_stop);
                    if flow.is_continue() { break; }
                    let last = got.last().map(|o| match o { Out::L(_, e) | Out::T(_, e) => *e });
                    proptest::prop_assert_eq!(Some(lb.consumed()), last);
                }
            }
            loop {
                let mut said_stop = false;
                let flow = lb.finish(&mut |p| flow_of(p, &mut got, &mut said_stop, &mut failed));
                if let Some(e) = failed.take() { return Err(e); }
                proptest::prop_assert_eq!(flow.is_break(), said_stop);
                if flow.is_continue() { break; }
            }
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn nul_and_invalid_utf8_pass_through() {
        let mut lb = LineBuf::new(10);
        let mut out = Vec::new();
        feed(&mut lb, b"\0\xff\xfe\n", &mut out);
        assert_eq!(out, vec![Out::L(b"\0\xff\xfe".to_vec(), 4)]);
    }
}
