//! The lines of one history file, forwards (plain or through a decoder) or backwards (plain),
//! in one bounded buffer.

use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::decompress::{decoder, Compression, CHUNK, DECODE_CHUNK};
use crate::file::{pread, pread_full};

/// Bytes asked of one plain read (as the follower reads).
const PLAIN_READ: usize = 256 * 1024;

enum Source {
    Plain { file: File, at: u64, limit: u64 },
    Decoded(Box<dyn Read + Send>),
}

/// The lines of one file from a line start, each handed out as a range of [`FileLines::buf`]
/// valid until the next call.
pub(super) struct FileLines {
    source: Source,
    /// Bytes asked of one read.
    read_size: usize,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    eof: bool,
    max_line: usize,
    /// Inside a line over `max_line` whose bytes were dropped.
    skipping: bool,
    /// A last line without its `\n` is a line (a rotated file; not the live one).
    unterminated: bool,
    /// Lines over `max_line`, skipped.
    pub(super) too_long: u64,
    /// Bytes read from a plain file.
    plain_read: u64,
    /// Compressed bytes read by the decoder.
    compressed_read: Arc<AtomicU64>,
    /// Bytes that came out of the decoder.
    pub(super) decoded: u64,
}

impl FileLines {
    /// Lines of `file` from `from` (a line start) to `limit`; a compressed file from its start
    /// to its end (`from` and `limit` are then ignored).
    pub(super) fn new(
        file: File,
        compression: Compression,
        from: u64,
        limit: u64,
        max_line: usize,
        unterminated: bool,
    ) -> io::Result<FileLines> {
        let compressed_read = Arc::new(AtomicU64::new(0));
        let read_size = if compression.is_compressed() {
            PLAIN_READ
        } else {
            PLAIN_READ.min(usize::try_from(limit.saturating_sub(from)).unwrap_or(PLAIN_READ))
        };
        let source = if compression.is_compressed() {
            Source::Decoded(decoder(compression, file, compressed_read.clone())?)
        } else {
            Source::Plain {
                file,
                at: from,
                limit,
            }
        };
        Ok(FileLines {
            source,
            read_size,
            buf: Vec::new(),
            pos: 0,
            end: 0,
            eof: false,
            max_line,
            skipping: false,
            unterminated,
            too_long: 0,
            plain_read: 0,
            compressed_read,
            decoded: 0,
        })
    }

    /// The buffer the ranges handed out index.
    pub(super) fn buf(&self) -> &[u8] {
        &self.buf
    }

    /// Bytes read from the file so far (compressed bytes for a compressed file).
    pub(super) fn bytes_read(&self) -> u64 {
        self.plain_read + self.compressed_read.load(Ordering::Relaxed)
    }

    /// The next line (without its `\n`), or `None` at the end. An error from a decoder is
    /// damaged data: the lines before it were handed out, the partial one is dropped.
    pub(super) fn next(&mut self) -> io::Result<Option<Range<usize>>> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.buf[self.pos..self.end]) {
                let start = self.pos;
                let nl = start + i;
                self.pos = nl + 1;
                if self.skipping || nl - start > self.max_line {
                    self.skipping = false;
                    self.too_long += 1;
                    continue;
                }
                return Ok(Some(start..nl));
            }
            if self.eof {
                let rest = self.pos..self.end;
                self.pos = self.end;
                if self.skipping || rest.len() > self.max_line {
                    self.skipping = false;
                    self.too_long += 1;
                } else if !rest.is_empty() && self.unterminated {
                    return Ok(Some(rest));
                }
                return Ok(None);
            }
            // Keep the partial line at the front; drop it if it is already too long.
            self.buf.copy_within(self.pos..self.end, 0);
            self.end -= self.pos;
            self.pos = 0;
            if self.end > self.max_line {
                self.skipping = true;
                self.end = 0;
            }
            // Room for a partial line and one read, allocated once: a read no larger than the
            // file had left when it was opened (a window near the end of a hundred logs holds
            // a few KiB of each, not a whole read's buffer).
            let want = self.max_line + 1 + self.read_size;
            if self.buf.len() < want {
                self.buf.resize(want, 0);
            }
            let n = self.fill()?;
            if n == 0 {
                self.eof = true;
            }
            self.end += n;
        }
    }

    fn fill(&mut self) -> io::Result<usize> {
        let space = &mut self.buf[self.end..];
        match &mut self.source {
            Source::Plain { file, at, limit } => {
                let want = space.len().min(limit.saturating_sub(*at) as usize);
                if want == 0 {
                    return Ok(0);
                }
                let n = pread(file, &mut space[..want], *at)?;
                *at += n as u64;
                self.plain_read += n as u64;
                Ok(n)
            }
            Source::Decoded(r) => {
                // Small steps: finding a compressed file's first line decodes little more.
                let want = space.len().min(DECODE_CHUNK);
                loop {
                    match r.read(&mut space[..want]) {
                        Ok(n) => {
                            self.decoded += n as u64;
                            return Ok(n);
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }
}

/// Hands the lines of `file` before `limit` to `line`, last first, until it returns false;
/// lines over `max_line` are skipped. Returns the bytes read.
pub(super) fn rev_lines(
    file: &File,
    limit: u64,
    max_line: usize,
    line: &mut dyn FnMut(&[u8]) -> bool,
) -> io::Result<u64> {
    let mut read = 0u64;
    let mut end = limit;
    // A final `\n` ends the last line; it does not start an empty one.
    if end > 0 {
        let mut one = [0u8];
        if pread_full(file, &mut one, end - 1)? == 1 && one[0] == b'\n' {
            end -= 1;
        }
    }
    // `carry` is the head of the line that starts before the chunk read last (no `\n` in it).
    let mut carry: Vec<u8> = Vec::new();
    let mut skipping = false;
    let mut chunk = vec![0u8; CHUNK];
    let mut pos = end;
    while pos > 0 {
        let lo = pos.saturating_sub(CHUNK as u64);
        let len = (pos - lo) as usize;
        let got = pread_full(file, &mut chunk[..len], lo)?;
        read += got as u64;
        if got < len {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank"));
        }
        let data = &chunk[..len];
        let mut right = len;
        for nl in memchr::memrchr_iter(b'\n', data) {
            let piece = &data[nl + 1..right];
            if skipping {
                skipping = false;
            } else if carry.is_empty() {
                if piece.len() <= max_line && !line(piece) {
                    return Ok(read);
                }
            } else {
                let mut whole = piece.to_vec();
                whole.extend_from_slice(&carry);
                carry.clear();
                if whole.len() <= max_line && !line(&whole) {
                    return Ok(read);
                }
            }
            right = nl;
        }
        if !skipping {
            let mut head = data[..right].to_vec();
            head.extend_from_slice(&carry);
            carry = head;
            if carry.len() > max_line {
                carry.clear();
                skipping = true;
            }
        }
        pos = lo;
    }
    if !skipping && end > 0 {
        line(&carry);
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &[u8]) -> (tempfile::TempDir, File) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, text).unwrap();
        let f = File::open(&p).unwrap();
        (dir, f)
    }

    fn rev(text: &[u8], max_line: usize) -> Vec<String> {
        let (_dir, f) = file(text);
        let mut out = Vec::new();
        rev_lines(&f, text.len() as u64, max_line, &mut |l| {
            out.push(String::from_utf8_lossy(l).into_owned());
            true
        })
        .unwrap();
        out
    }

    fn fwd(text: &[u8], from: u64, max_line: usize, unterminated: bool) -> (Vec<String>, u64) {
        let (_dir, f) = file(text);
        let mut fl = FileLines::new(
            f,
            Compression::Plain,
            from,
            text.len() as u64,
            max_line,
            unterminated,
        )
        .unwrap();
        let mut out = Vec::new();
        while let Some(r) = fl.next().unwrap() {
            out.push(String::from_utf8_lossy(&fl.buf()[r]).into_owned());
        }
        (out, fl.too_long)
    }

    #[test]
    fn history_reverse_lines_cross_chunks_and_skip_long_ones() {
        assert_eq!(rev(b"a\nb\nc\n", 100), ["c", "b", "a"]);
        assert_eq!(rev(b"a\n\nc", 100), ["c", "", "a"]);
        assert_eq!(rev(b"", 100), Vec::<String>::new());
        let big: Vec<u8> = (0..50_000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let got = rev(&big, 100);
        assert_eq!(got.len(), 50_000);
        assert!(got
            .iter()
            .rev()
            .enumerate()
            .all(|(i, l)| *l == i.to_string()));
        let mut long = b"x\n".to_vec();
        long.extend(vec![b'y'; 3 * CHUNK]);
        long.extend(b"\nz\n");
        assert_eq!(rev(&long, 100), ["z", "x"]);
    }

    #[test]
    fn history_forward_lines_skip_long_ones_and_keep_a_rotated_files_last() {
        assert_eq!(fwd(b"a\nb\nc", 0, 100, true).0, ["a", "b", "c"]);
        assert_eq!(fwd(b"a\nb\nc", 0, 100, false).0, ["a", "b"]);
        assert_eq!(fwd(b"a\nb\nc\n", 2, 100, false).0, ["b", "c"]);
        let mut long = b"x\n".to_vec();
        long.extend(vec![b'y'; 3 * PLAIN_READ]);
        long.extend(b"\nz\n");
        long.extend(vec![b'w'; 200]);
        assert_eq!(fwd(&long, 0, 100, true), (vec!["x".into(), "z".into()], 2));
        let big: Vec<u8> = (0..200_000)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        let (got, _) = fwd(&big, 0, 100, false);
        assert!(got.len() == 200_000 && got.iter().enumerate().all(|(i, l)| *l == i.to_string()));
    }
}
