//! The messages between shield-watch and its privileged nflog helper (docs/SECURITY.md,
//! "Privilege separation"): a fixed little-endian binary layout, parsed strictly, each message
//! one `SOCK_SEQPACKET` datagram.
//!
//! Pure: no I/O, no allocation beyond the returned values. The helper parses only
//! [`Request`]s, which come from the worker process (its PID read from `dnsmasq.pid` by the
//! worker); the worker parses [`Reply`]s and the [`hello`](encode_hello) the helper sends once.
//!
//! ```
//! use shield_watch_cli::privsep::Request;
//!
//! let request = Request {
//!     pid: 4242,
//!     group: 100,
//!     buffer: 64 << 20,
//!     known_ns: None,
//!     argument: b"--conf-file=/s/containers/c1/dnsmasq.conf".to_vec(),
//! };
//! let mut bytes = Vec::new();
//! request.encode(&mut bytes);
//! assert_eq!(Request::parse(&bytes), Ok(request));
//! assert!(Request::parse(&bytes[..bytes.len() - 1]).is_err());
//! ```

use std::fmt;

/// The longest `--conf-file=PATH` argument a request carries (`PATH_MAX` and its prefix).
pub const MAX_ARGUMENT: usize = 4096 + 12;
/// The largest receive buffer a request asks for: the kernel takes an `int` and doubles it.
pub const MAX_BUFFER: u64 = (i32::MAX / 2) as u64;
/// The longest text a reply or the hello carries.
pub const MAX_TEXT: usize = 1024;

const REQUEST_MAGIC: [u8; 4] = *b"SWN1";
const REPLY_MAGIC: [u8; 4] = *b"SWR1";
const HELLO_MAGIC: [u8; 4] = *b"SWH1";
/// Magic, PID, group, argument length, buffer, known namespace (device, inode).
const REQUEST_HEAD: usize = 4 + 4 + 2 + 2 + 8 + 8 + 8;
/// Magic, status, holder flag, text length, holder, namespace (device, inode).
const REPLY_HEAD: usize = 4 + 1 + 1 + 2 + 4 + 8 + 8;

/// The longest request: what a receiver's buffer holds (one byte more tells a longer one).
pub const MAX_REQUEST: usize = REQUEST_HEAD + MAX_ARGUMENT;
/// The longest reply or hello.
pub const MAX_REPLY: usize = REPLY_HEAD + MAX_TEXT;

/// A network namespace's identity as it crosses the socket: its nsfs device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Namespace {
    /// The nsfs device.
    pub dev: u64,
    /// The namespace's inode number.
    pub ino: u64,
}

/// "A socket for the container whose dnsmasq is `pid`": the helper checks that `pid` is a
/// thread-group leader whose command line holds exactly `argument` and whose network namespace
/// is not the helper's own, then makes the socket there, bound to `group` with a receive buffer
/// of `buffer` bytes. When that namespace is `known_ns` (the one the container's socket is in
/// already), it makes none and says so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The dnsmasq's PID (never 0).
    pub pid: u32,
    /// The NFLOG group.
    pub group: u16,
    /// The receive buffer, at most [`MAX_BUFFER`].
    pub buffer: u64,
    /// The namespace the container's socket is in already, if any.
    pub known_ns: Option<Namespace>,
    /// The exact argument (`--conf-file=ROOT/containers/NAME/dnsmasq.conf`): 1 to
    /// [`MAX_ARGUMENT`] bytes, no NUL.
    pub argument: Vec<u8>,
}

/// Why a message was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than its fixed part, or not exactly as long as its lengths say.
    Length,
    /// Not this protocol (or not this version of it).
    Magic,
    /// A field out of its range (PID 0, a buffer too large, an empty or too long argument or
    /// text, a NUL byte in the argument, an unknown status, a flag that is neither 0 nor 1).
    Field(&'static str),
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::Length => f.write_str("malformed message: wrong length"),
            Malformed::Magic => f.write_str("malformed message: unknown magic"),
            Malformed::Field(field) => write!(f, "malformed message: bad {field}"),
        }
    }
}

impl std::error::Error for Malformed {}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

fn namespace_from(dev: u64, ino: u64) -> Option<Namespace> {
    (dev != 0 || ino != 0).then_some(Namespace { dev, ino })
}

impl Request {
    /// Appends the request's bytes to `out`. The request must be valid (as [`Request::parse`]
    /// would accept it); a field out of range is clamped or cut, never encoded as such.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let argument = &self.argument[..self.argument.len().min(MAX_ARGUMENT)];
        out.extend_from_slice(&REQUEST_MAGIC);
        out.extend_from_slice(&self.pid.to_le_bytes());
        out.extend_from_slice(&self.group.to_le_bytes());
        out.extend_from_slice(&(argument.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.buffer.min(MAX_BUFFER).to_le_bytes());
        let ns = self.known_ns.unwrap_or(Namespace { dev: 0, ino: 0 });
        out.extend_from_slice(&ns.dev.to_le_bytes());
        out.extend_from_slice(&ns.ino.to_le_bytes());
        out.extend_from_slice(argument);
    }

    /// Parses one request: exactly `REQUEST_HEAD` bytes and the argument, every field in its
    /// range, nothing after.
    pub fn parse(bytes: &[u8]) -> Result<Request, Malformed> {
        if bytes.len() < REQUEST_HEAD || bytes.len() > MAX_REQUEST {
            return Err(Malformed::Length);
        }
        if bytes[..4] != REQUEST_MAGIC {
            return Err(Malformed::Magic);
        }
        let pid = u32_at(bytes, 4);
        let group = u16_at(bytes, 8);
        let length = usize::from(u16_at(bytes, 10));
        let buffer = u64_at(bytes, 12);
        let known_ns = namespace_from(u64_at(bytes, 20), u64_at(bytes, 28));
        if bytes.len() != REQUEST_HEAD + length {
            return Err(Malformed::Length);
        }
        let argument = &bytes[REQUEST_HEAD..];
        if pid == 0 || pid > i32::MAX as u32 {
            return Err(Malformed::Field("PID"));
        }
        if buffer > MAX_BUFFER {
            return Err(Malformed::Field("buffer"));
        }
        if argument.is_empty() || argument.len() > MAX_ARGUMENT || argument.contains(&0) {
            return Err(Malformed::Field("argument"));
        }
        Ok(Request {
            pid,
            group,
            buffer,
            known_ns,
            argument: argument.to_vec(),
        })
    }
}

/// What the helper answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// A socket was made in namespace `ns` and its bind request sent: two descriptors come
    /// with this message (the netlink socket, a socket for interface names). `held_by`: the
    /// port id of another socket that held the group (the bind is then refused).
    New {
        /// The dnsmasq's namespace.
        ns: Namespace,
        /// Another holder of the group, if any.
        held_by: Option<u32>,
    },
    /// The dnsmasq's namespace is the request's `known_ns`: no socket made.
    Same {
        /// That namespace.
        ns: Namespace,
    },
    /// Refused, and why (printable text, at most [`MAX_TEXT`] bytes).
    Refused(String),
}

impl Reply {
    /// Appends the reply's bytes to `out`; a text longer than [`MAX_TEXT`] is cut, and each
    /// byte outside printable ASCII becomes `?`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let (status, ns, held_by, text): (u8, Namespace, Option<u32>, &str) = match self {
            Reply::New { ns, held_by } => (0, *ns, *held_by, ""),
            Reply::Same { ns } => (1, *ns, None, ""),
            Reply::Refused(text) => (2, Namespace { dev: 0, ino: 0 }, None, text),
        };
        let text = &text.as_bytes()[..text.len().min(MAX_TEXT)];
        out.extend_from_slice(&REPLY_MAGIC);
        out.push(status);
        out.push(u8::from(held_by.is_some()));
        out.extend_from_slice(&(text.len() as u16).to_le_bytes());
        out.extend_from_slice(&held_by.unwrap_or(0).to_le_bytes());
        out.extend_from_slice(&ns.dev.to_le_bytes());
        out.extend_from_slice(&ns.ino.to_le_bytes());
        out.extend(text.iter().map(|&b| printable(b)));
    }

    /// Parses one reply, as strictly as [`Request::parse`].
    pub fn parse(bytes: &[u8]) -> Result<Reply, Malformed> {
        if bytes.len() < REPLY_HEAD || bytes.len() > MAX_REPLY {
            return Err(Malformed::Length);
        }
        if bytes[..4] != REPLY_MAGIC {
            return Err(Malformed::Magic);
        }
        let status = bytes[4];
        let has_holder = bytes[5];
        let length = usize::from(u16_at(bytes, 6));
        let holder = u32_at(bytes, 8);
        let ns = Namespace {
            dev: u64_at(bytes, 12),
            ino: u64_at(bytes, 20),
        };
        if bytes.len() != REPLY_HEAD + length {
            return Err(Malformed::Length);
        }
        let text = &bytes[REPLY_HEAD..];
        if has_holder > 1 || (has_holder == 0 && holder != 0) {
            return Err(Malformed::Field("holder"));
        }
        let held_by = (has_holder == 1).then_some(holder);
        let no_ns = ns == Namespace { dev: 0, ino: 0 };
        match (status, held_by, text.is_empty()) {
            (0, _, true) => Ok(Reply::New { ns, held_by }),
            (1, None, true) => Ok(Reply::Same { ns }),
            (2, None, false) if no_ns => {
                if text.iter().any(|&b| printable(b) != b) {
                    return Err(Malformed::Field("text"));
                }
                Ok(Reply::Refused(
                    String::from_utf8(text.to_vec()).map_err(|_| Malformed::Field("text"))?,
                ))
            }
            (3.., _, _) => Err(Malformed::Field("status")),
            // A field that does not go with the status: a holder or a namespace with a refusal,
            // text with a socket.
            _ => Err(Malformed::Field("reply")),
        }
    }
}

/// The helper's first message: what its confinement achieved (printable, at most
/// [`MAX_TEXT`] bytes).
pub fn encode_hello(text: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(&HELLO_MAGIC);
    out.extend(
        text.as_bytes()[..text.len().min(MAX_TEXT)]
            .iter()
            .map(|&b| printable(b)),
    );
}

/// The text of a hello.
pub fn parse_hello(bytes: &[u8]) -> Result<String, Malformed> {
    if bytes.len() < 4 || bytes.len() > 4 + MAX_TEXT {
        return Err(Malformed::Length);
    }
    if bytes[..4] != HELLO_MAGIC {
        return Err(Malformed::Magic);
    }
    let text = &bytes[4..];
    if text.iter().any(|&b| printable(b) != b) {
        return Err(Malformed::Field("text"));
    }
    String::from_utf8(text.to_vec()).map_err(|_| Malformed::Field("text"))
}

fn printable(b: u8) -> u8 {
    if (0x20..0x7f).contains(&b) {
        b
    } else {
        b'?'
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request() -> impl Strategy<Value = Request> {
        (
            1u32..=i32::MAX as u32,
            any::<u16>(),
            0..=MAX_BUFFER,
            proptest::option::of((1u64.., any::<u64>())),
            proptest::collection::vec(1u8.., 1..=MAX_ARGUMENT),
        )
            .prop_map(|(pid, group, buffer, ns, argument)| Request {
                pid,
                group,
                buffer,
                known_ns: ns.map(|(dev, ino)| Namespace { dev, ino }),
                argument,
            })
    }

    proptest! {
        #[test]
        fn a_valid_request_survives_the_round_trip(request in request()) {
            let mut bytes = Vec::new();
            request.encode(&mut bytes);
            prop_assert!(bytes.len() <= MAX_REQUEST);
            prop_assert_eq!(Request::parse(&bytes), Ok(request));
        }

        #[test]
        fn any_bytes_parse_or_are_refused_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(request) = Request::parse(&bytes) {
                // Whatever parses encodes back to exactly the same bytes: one meaning per message.
                let mut again = Vec::new();
                request.encode(&mut again);
                prop_assert_eq!(&again, &bytes);
            }
            let _ = Reply::parse(&bytes);
            let _ = parse_hello(&bytes);
        }

        #[test]
        fn a_request_cut_or_extended_is_refused(request in request(), cut in 1usize..64, extra in proptest::collection::vec(any::<u8>(), 1..8)) {
            let mut bytes = Vec::new();
            request.encode(&mut bytes);
            let short = &bytes[..bytes.len().saturating_sub(cut)];
            prop_assert!(Request::parse(short).is_err());
            let mut long = bytes.clone();
            long.extend_from_slice(&extra);
            prop_assert!(Request::parse(&long).is_err());
        }

        #[test]
        fn a_flipped_field_is_refused_or_read_as_encoded(request in request(), at in 0usize..REQUEST_HEAD, bit in 0u8..8) {
            let mut bytes = Vec::new();
            request.encode(&mut bytes);
            bytes[at] ^= 1 << bit;
            if let Ok(parsed) = Request::parse(&bytes) {
                let mut again = Vec::new();
                parsed.encode(&mut again);
                prop_assert_eq!(again, bytes);
            }
        }

        #[test]
        fn replies_survive_the_round_trip(dev in any::<u64>(), ino in any::<u64>(), held in proptest::option::of(any::<u32>()), text in "[ -~]{1,1024}") {
            let ns = Namespace { dev, ino };
            for reply in [Reply::New { ns, held_by: held }, Reply::Same { ns }, Reply::Refused(text.clone())] {
                let mut bytes = Vec::new();
                reply.encode(&mut bytes);
                prop_assert_eq!(Reply::parse(&bytes), Ok(reply));
            }
            let mut hello = Vec::new();
            encode_hello(&text, &mut hello);
            prop_assert_eq!(parse_hello(&hello), Ok(text));
        }
    }

    #[test]
    fn strict_fields() {
        let good = Request {
            pid: 7,
            group: 100,
            buffer: 1 << 20,
            known_ns: None,
            argument: b"--conf-file=/x".to_vec(),
        };
        let encoded = |r: &Request| {
            let mut b = Vec::new();
            r.encode(&mut b);
            b
        };
        assert_eq!(Request::parse(&encoded(&good)), Ok(good.clone()));
        let mut zero = encoded(&good);
        zero[4..8].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(Request::parse(&zero), Err(Malformed::Field("PID")));
        let mut nul = encoded(&good);
        *nul.last_mut().unwrap() = 0;
        assert_eq!(Request::parse(&nul), Err(Malformed::Field("argument")));
        let mut huge = encoded(&good);
        huge[12..20].copy_from_slice(&(MAX_BUFFER + 1).to_le_bytes());
        assert_eq!(Request::parse(&huge), Err(Malformed::Field("buffer")));
        let mut magic = encoded(&good);
        magic[0] = b'X';
        assert_eq!(Request::parse(&magic), Err(Malformed::Magic));
        let mut empty = encoded(&Request {
            argument: b"x".to_vec(),
            ..good
        });
        empty.pop();
        empty[10] = 0;
        assert_eq!(Request::parse(&empty), Err(Malformed::Field("argument")));
        // Text with a control byte is sent as `?`.
        let mut bytes = Vec::new();
        Reply::Refused("a\nb\u{1b}".into()).encode(&mut bytes);
        assert_eq!(Reply::parse(&bytes), Ok(Reply::Refused("a?b?".into())));
    }
}
