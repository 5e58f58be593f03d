//! Reading a rotated log whatever logrotate's `compress` made of it: the kind is told by the
//! file's first bytes (never by its name), and the content is handed on in chunks, never whole.
//!
//! The decoders are pure Rust: flate2 over miniz_oxide (gzip), ruzstd (zstd), lzma-rs (xz).
//! None needs a C compiler, and each keeps a bounded window (gzip 32 KiB, zstd and xz the
//! frame's or dictionary's window), so memory does not grow with the file.

use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;

use crate::file::{pread, pread_full};

/// What a file holds, by its magic number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// No compressor's magic number: text.
    Plain,
    /// gzip (`1f 8b`), logrotate's default `compresscmd`.
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// A compressor this crate cannot read (bzip2, lz4): such a file is skipped with a notice.
    Unsupported(&'static str),
}

impl Compression {
    /// The kind of a file whose first bytes are `head` (six are enough).
    pub fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
            Compression::Xz
        } else if head.starts_with(b"BZh") {
            Compression::Unsupported("bzip2")
        } else if head.starts_with(&[0x04, 0x22, 0x4d, 0x18]) {
            Compression::Unsupported("lz4")
        } else {
            Compression::Plain
        }
    }

    /// The kind of `file`, read from its first bytes (an unreadable file is `Plain`: its
    /// reading will say what is wrong).
    pub(crate) fn of(file: &File) -> Compression {
        let mut head = [0u8; 6];
        let got = pread_full(file, &mut head, 0).unwrap_or(0);
        Compression::sniff(&head[..got])
    }

    /// Whether the content needs a decoder.
    pub fn is_compressed(self) -> bool {
        self != Compression::Plain
    }
}

/// Reads a file from offset 0 with positioned reads (the descriptor's own offset is never
/// used), counting the bytes into `read`.
pub(crate) struct Counted {
    file: File,
    offset: u64,
    read: Arc<AtomicU64>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = pread(&self.file, buf, self.offset)?;
        self.offset += n as u64;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The buffer size of plain backward steps and of a binary search's range floor.
pub(crate) const CHUNK: usize = 64 * 1024;

/// The buffer size of a decode step, in and out: small, because finding a compressed file's
/// first timed line should decode little more than that line.
pub(crate) const DECODE_CHUNK: usize = 16 * 1024;

/// A reader of the decoded content of `file` (of kind `kind`, compressed), from its start;
/// the compressed bytes it reads are added to `read`. A read error is damaged or truncated
/// data (everything before it was returned).
pub(crate) fn decoder(
    kind: Compression,
    file: File,
    read: Arc<AtomicU64>,
) -> io::Result<Box<dyn Read + Send>> {
    let input = BufReader::with_capacity(
        DECODE_CHUNK,
        Counted {
            file,
            offset: 0,
            read,
        },
    );
    Ok(match kind {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Compression::Zstd => Box::new(ZstdFrames {
            input: Some(input),
            frame: None,
        }),
        Compression::Xz => Box::new(XzPipe::spawn(input)?),
        Compression::Plain | Compression::Unsupported(_) => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a compressed stream this crate reads",
            ))
        }
    })
}

fn invalid(e: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

type Input = BufReader<Counted>;

/// One zstd frame after another (`zstd` writes one; concatenated files hold several).
struct ZstdFrames {
    input: Option<Input>,
    frame: Option<ruzstd::decoding::StreamingDecoder<Input, ruzstd::decoding::FrameDecoder>>,
}

impl Read for ZstdFrames {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some(frame) = &mut self.frame {
                let n = frame.read(buf)?;
                if n > 0 || buf.is_empty() {
                    return Ok(n);
                }
                self.input = self.frame.take().map(|f| f.into_inner());
            }
            let Some(input) = &mut self.input else {
                return Ok(0);
            };
            if input.fill_buf()?.is_empty() {
                return Ok(0);
            }
            let input = self.input.take().expect("checked above");
            self.frame = Some(ruzstd::decoding::StreamingDecoder::new(input).map_err(invalid)?);
        }
    }
}

/// lzma-rs decodes xz only into an `io::Write`, so it runs on a thread of its own that hands
/// decoded chunks through a channel two deep (memory stays bounded); dropping the reader makes
/// the thread's next write fail, which ends it.
struct XzPipe {
    rx: Receiver<io::Result<Vec<u8>>>,
    chunk: Vec<u8>,
    pos: usize,
    failed: bool,
}

impl XzPipe {
    fn spawn(mut input: Input) -> io::Result<XzPipe> {
        struct Pipe(SyncSender<io::Result<Vec<u8>>>);
        impl io::Write for Pipe {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0
                    .send(Ok(buf.to_vec()))
                    .map_err(|_| io::Error::other("the reader is gone"))?;
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (tx, rx) = mpsc::sync_channel(2);
        let errors = tx.clone();
        std::thread::Builder::new()
            .name("history-xz".into())
            .spawn(move || {
                let mut out = io::BufWriter::with_capacity(DECODE_CHUNK, Pipe(tx));
                let result = match lzma_rs::xz_decompress(&mut input, &mut out) {
                    Ok(()) => io::Write::flush(&mut out),
                    Err(lzma_rs::error::Error::IoError(e)) => Err(e),
                    Err(e) => Err(invalid(e)),
                };
                if let Err(e) = result {
                    let _ = errors.send(Err(e));
                }
            })?;
        Ok(XzPipe {
            rx,
            chunk: Vec::new(),
            pos: 0,
            failed: false,
        })
    }
}

impl Read for XzPipe {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.failed {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                // The thread finished without error.
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn decoded(kind: Compression, bytes: &[u8]) -> (Vec<u8>, io::Result<()>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, bytes).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(Compression::of(&f), kind);
        let read = Arc::new(AtomicU64::new(0));
        let mut r = decoder(kind, f, read.clone()).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 1000];
        let result = loop {
            match r.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => break Err(e),
            }
        };
        if result.is_ok() {
            assert_eq!(read.load(Ordering::Relaxed), bytes.len() as u64);
        }
        (out, result)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn history_decodes_gzip_zstd_and_xz_by_magic() {
        let text: Vec<u8> = (0..20_000)
            .flat_map(|i| format!("line {i}\n").into_bytes())
            .collect();
        let (out, flow) = decoded(Compression::Gzip, &gzip(&text));
        assert!(out == text && flow.is_ok());
        let mut two = gzip(b"a\n");
        two.extend(gzip(b"b\n"));
        assert_eq!(decoded(Compression::Gzip, &two).0, b"a\nb\n");

        let z = ruzstd::encoding::compress_to_vec(
            &text[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let (out, flow) = decoded(Compression::Zstd, &z);
        assert!(out == text && flow.is_ok());

        let fastest = ruzstd::encoding::CompressionLevel::Fastest;
        let mut two = ruzstd::encoding::compress_to_vec(&b"c\n"[..], fastest);
        two.extend(ruzstd::encoding::compress_to_vec(&b"d\n"[..], fastest));
        assert_eq!(decoded(Compression::Zstd, &two).0, b"c\nd\n");

        let mut x = Vec::new();
        lzma_rs::xz_compress(&mut &text[..], &mut x).unwrap();
        let (out, flow) = decoded(Compression::Xz, &x);
        assert!(out == text && flow.is_ok());
    }

    #[test]
    fn history_corrupt_gzip_yields_what_came_before_and_an_error() {
        let text: Vec<u8> = (0..200_000)
            .flat_map(|i| format!("line {i} {}\n", i * 7919 % 1000).into_bytes())
            .collect();
        let mut gz = gzip(&text);
        let n = gz.len();
        for b in &mut gz[n / 2..n / 2 + 64] {
            *b ^= 0x5a;
        }
        let (out, flow) = decoded(Compression::Gzip, &gz);
        assert!(flow.is_err());
        assert!(!out.is_empty() && text.starts_with(&out[..out.len().min(1000)]));
        // Truncated: an error too, after the bytes that were there.
        let (out, flow) = decoded(Compression::Gzip, &gzip(&text)[..n / 2]);
        assert!(flow.is_err() && !out.is_empty());
        // xz cut short: the same, through the decoding thread.
        let mut x = Vec::new();
        lzma_rs::xz_compress(&mut &text[..], &mut x).unwrap();
        let (out, flow) = decoded(Compression::Xz, &x[..x.len() / 2]);
        assert!(flow.is_err() && text.starts_with(&out));
    }

    #[test]
    fn history_sniffs_by_content_not_name() {
        assert_eq!(
            Compression::sniff(b"BZh9"),
            Compression::Unsupported("bzip2")
        );
        assert_eq!(Compression::sniff(b"Dec  4"), Compression::Plain);
        assert_eq!(Compression::sniff(&[0x1f]), Compression::Plain);
    }
}
