//! Reading a rotated log whatever logrotate's `compress` made of it: the kind is told by the
//! file's first bytes (never by its name), and the content is handed on in chunks, never whole.
//!
//! The decoders are pure Rust: flate2 over miniz_oxide (gzip), ruzstd (zstd), lzma-rs (xz).
//! None needs a C compiler, and each keeps a bounded window (gzip 32 KiB, zstd and xz the
//! frame's or dictionary's window), so memory does not grow with the file.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};

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

/// How a decoding pass ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// The whole content was handed on.
    Done,
    /// The consumer said stop.
    Stopped,
}

/// Reads a file from offset 0 with positioned reads (the descriptor's own offset is never
/// used), counting the bytes.
pub(crate) struct PreadReader<'a> {
    file: &'a File,
    offset: u64,
}

impl<'a> PreadReader<'a> {
    pub(crate) fn new(file: &'a File) -> PreadReader<'a> {
        PreadReader { file, offset: 0 }
    }
}

impl Read for PreadReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = pread(self.file, buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// The buffer size of plain reads and of backward steps.
pub(crate) const CHUNK: usize = 64 * 1024;

/// The buffer size of a decode step, in and out: small, because finding a compressed file's
/// first timed line should decode little more than that line.
const DECODE_CHUNK: usize = 16 * 1024;

/// Decodes `file` (of kind `kind`, not `Plain`) from its start and hands the content to `sink`
/// in chunks until the end or until `sink` returns false. Returns the compressed bytes read
/// beside the flow; an `Err` is corrupt or truncated data (everything before it was handed on).
pub(crate) fn decode(
    kind: Compression,
    file: &File,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> (Result<Flow, io::Error>, u64) {
    let mut input = BufReader::with_capacity(DECODE_CHUNK, PreadReader::new(file));
    let flow = match kind {
        Compression::Gzip => pump(flate2::bufread::MultiGzDecoder::new(&mut input), sink),
        Compression::Zstd => zstd(&mut input, sink),
        Compression::Xz => xz(&mut input, sink),
        Compression::Plain | Compression::Unsupported(_) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a compressed stream this crate reads",
        )),
    };
    let read = input.get_ref().offset - input.buffer().len() as u64;
    (flow, read)
}

fn pump(mut r: impl Read, sink: &mut dyn FnMut(&[u8]) -> bool) -> Result<Flow, io::Error> {
    let mut buf = vec![0u8; DECODE_CHUNK];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok(Flow::Done),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if !sink(&buf[..n]) {
            return Ok(Flow::Stopped);
        }
    }
}

/// One zstd frame after another (`zstd` writes one; concatenated files hold several).
fn zstd(
    input: &mut BufReader<PreadReader<'_>>,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<Flow, io::Error> {
    loop {
        let dec = ruzstd::decoding::StreamingDecoder::new(&mut *input)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        if pump(dec, sink)? == Flow::Stopped {
            return Ok(Flow::Stopped);
        }
        if input.fill_buf()?.is_empty() {
            return Ok(Flow::Done);
        }
    }
}

/// lzma-rs decodes into an `io::Write`: the writer is the sink, and a stop is an error it
/// returns, told apart from a real one by `stopped`.
fn xz(
    input: &mut BufReader<PreadReader<'_>>,
    sink: &mut dyn FnMut(&[u8]) -> bool,
) -> Result<Flow, io::Error> {
    struct Out<'a> {
        sink: &'a mut dyn FnMut(&[u8]) -> bool,
        stopped: bool,
    }
    impl io::Write for Out<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.stopped || !(self.sink)(buf) {
                self.stopped = true;
                return Err(io::Error::other("stopped"));
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let mut out = Out {
        sink,
        stopped: false,
    };
    // lzma-rs writes its output in small pieces; a buffer in between hands on whole chunks.
    let mut buffered = io::BufWriter::with_capacity(DECODE_CHUNK, &mut out);
    let result = lzma_rs::xz_decompress(input, &mut buffered);
    let flushed = buffered
        .into_inner()
        .map(|_| ())
        .map_err(|e| e.into_error());
    if out.stopped {
        return Ok(Flow::Stopped);
    }
    match result {
        Ok(()) => flushed.map(|()| Flow::Done),
        Err(lzma_rs::error::Error::IoError(e)) => Err(e),
        Err(e) => Err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn decoded(kind: Compression, bytes: &[u8]) -> (Vec<u8>, Result<Flow, io::Error>) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, bytes).unwrap();
        let f = File::open(&p).unwrap();
        assert_eq!(Compression::of(&f), kind);
        let mut out = Vec::new();
        let (flow, _) = decode(kind, &f, &mut |c| {
            out.extend_from_slice(c);
            true
        });
        (out, flow)
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
        assert_eq!((out == text, flow.unwrap()), (true, Flow::Done));
        let mut two = gzip(b"a\n");
        two.extend(gzip(b"b\n"));
        assert_eq!(decoded(Compression::Gzip, &two).0, b"a\nb\n");

        let z = ruzstd::encoding::compress_to_vec(
            &text[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        let (out, flow) = decoded(Compression::Zstd, &z);
        assert_eq!((out == text, flow.unwrap()), (true, Flow::Done));

        let mut x = Vec::new();
        lzma_rs::xz_compress(&mut &text[..], &mut x).unwrap();
        let (out, flow) = decoded(Compression::Xz, &x);
        assert_eq!((out == text, flow.unwrap()), (true, Flow::Done));
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
