//! The shield-watch event: one refused (or noteworthy) thing, how each source's input becomes
//! one, its sanitiser, and its two written forms.
//!
//! The main type is [`Event`], built with [`Event::new`] and filled through its public fields, or
//! by the mappings in [`map`] (one per source: audit lines, refused lookups, logged packets).
//! Writing it with [`Event::write_json_into`] (appending to a `Vec<u8>`, the fast way) or
//! [`Event::write_json`] (any writer) produces the reference implementation's bytes exactly:
//! compact JSON, keys in the contract's order (`docs/CONTRACT.md` §3), empty optional keys left
//! out, the four core keys always present; [`Event::write_text`] is the one-line view for people.
//!
//! **Invariant:** every string that leaves this crate, keys of `extra` included, has passed
//! [`sanitize`]: printable ASCII only, at most 256 characters. Container-controlled bytes (DNS names,
//! packet data, audit text) reach terminals and notification daemons through this stream, so the
//! boundary lives here and not in any caller, and nothing else in the workspace formats events.
//! The crate does no I/O besides writing into the buffer or `io::Write` it is given.
//!
//! ```
//! use shield_event::{Event, Source};
//!
//! let mut event = Event::new("2026-03-31T12:00:00.123456+00:00", Source::Dns, "blocked_query", "c1");
//! event.domain = "evil.example.com".into();
//! event.query_type = "A".into();
//! assert_eq!(
//!     event.to_json_line(),
//!     "{\"ts\":\"2026-03-31T12:00:00.123456+00:00\",\"source\":\"dns\",\"action\":\"blocked_query\",\
//!      \"container\":\"c1\",\"domain\":\"evil.example.com\",\"query_type\":\"A\"}\n"
//! );
//! ```

mod event;
pub mod map;
mod proto;
mod sanitize;
mod text;
mod time;
mod when;

pub use event::{Event, Extra, Source};
pub use sanitize::{sanitize, Sanitized, MAX_LEN};
pub use text::TextStyle;
pub use time::{format_timestamp, now_timestamp, write_now, write_timestamp};
pub use when::{parse_when, WhenError};
