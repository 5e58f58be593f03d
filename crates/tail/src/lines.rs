//! Splitting a byte stream into complete lines, with a cap on line length. Pure: no I/O.

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
/// Invariant: `buf[start..end]` is the pending partial line (no `\n` in it), and it is never
/// longer than `max_line`: a longer one is dropped and only its length is kept (`skipping`).
pub(crate) struct LineBuf {
    buf: Vec<u8>,
    start: usize,
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
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).min(want).max(self.buf.len() + 1);
            self.buf.resize(grown, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Gives back a large buffer while only a short partial line (or none) is pending.
    pub(crate) fn shrink(&mut self) {
        let pending = self.end - self.start;
        if self.buf.capacity() > 4096 && pending <= 1024 {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = pending;
            self.buf.truncate(pending);
            self.buf.shrink_to(pending);
        }
    }

    /// Accounts for `n` bytes written into [`LineBuf::spare`] and reports every line they
    /// complete, in order.
    pub(crate) fn filled(&mut self, n: usize, emit: &mut dyn FnMut(Piece<'_>)) {
        let scan_from = self.end;
        self.end += n;
        let mut line_start = self.start;
        for nl in memchr_iter(b'\n', &self.buf[scan_from..self.end]) {
            let nl = scan_from + nl;
            let len = (nl - line_start) as u64;
            let end = self.base + len + 1;
            if self.discarding {
                self.discarding = false;
            } else if let Some(skipped) = self.skipping.take() {
                emit(Piece::TooLong {
                    len: skipped + len,
                    end,
                });
            } else if len as usize > self.max_line {
                emit(Piece::TooLong { len, end });
            } else {
                emit(Piece::Line {
                    bytes: &self.buf[line_start..nl],
                    end,
                });
            }
            self.base = end;
            self.consumed = end;
            line_start = nl + 1;
        }
        self.start = line_start;
        let pending = self.end - self.start;
        if self.discarding || self.skipping.is_some() || pending > self.max_line {
            // Keep only the count: the line is already known to be too long (or unwanted),
            // so holding its bytes would only let one line grow memory without bound.
            if !self.discarding {
                *self.skipping.get_or_insert(0) += pending as u64;
            }
            self.base += pending as u64;
            self.start = 0;
            self.end = 0;
        }
    }

    /// The stream ended for good (the file was rotated away or truncated): reports the pending
    /// partial line, if any, as a line of its own, and returns the offset after it.
    pub(crate) fn finish(&mut self, emit: &mut dyn FnMut(Piece<'_>)) {
        let len = (self.end - self.start) as u64;
        if let Some(skipped) = self.skipping.take() {
            emit(Piece::TooLong {
                len: skipped + len,
                end: self.base + len,
            });
        } else if len > 0 && !self.discarding {
            emit(Piece::Line {
                bytes: &self.buf[self.start..self.end],
                end: self.base + len,
            });
        }
        self.base += len;
        self.consumed = self.base;
        self.start = 0;
        self.end = 0;
        self.discarding = false;
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
            lb.filled(n, &mut |p| {
                out.push(match p {
                    Piece::Line { bytes, end } => Out::L(bytes.to_vec(), end),
                    Piece::TooLong { len, end } => Out::T(len, end),
                })
            });
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
        lb.finish(&mut |p| {
            if let Piece::Line { bytes, end } = p {
                out.push(Out::L(bytes.to_vec(), end))
            }
        });
        assert_eq!(
            out,
            vec![Out::L(b"a".to_vec(), 2), Out::L(b"bc".to_vec(), 4)]
        );
        let mut again = 0;
        lb.finish(&mut |_| again += 1);
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

    #[test]
    fn nul_and_invalid_utf8_pass_through() {
        let mut lb = LineBuf::new(10);
        let mut out = Vec::new();
        feed(&mut lb, b"\0\xff\xfe\n", &mut out);
        assert_eq!(out, vec![Out::L(b"\0\xff\xfe".to_vec(), 4)]);
    }
}
