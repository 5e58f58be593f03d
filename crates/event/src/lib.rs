//! The shield-watch event: one refused (or noteworthy) thing, its sanitiser and its JSON-lines form.
//!
//! The main type is [`Event`], built with [`Event::new`] and filled through its public fields. Writing
//! it with [`Event::write_json`] produces the reference implementation's bytes exactly: compact JSON,
//! keys in the contract's order, empty optional keys left out, the four core keys always present.
//!
//! **Invariant:** every string that leaves this crate, keys of `extra` included, has passed
//! [`sanitize`]: printable ASCII only, at most 256 characters. Container-controlled bytes (DNS names,
//! packet data, audit text) reach terminals and notification daemons through this stream, so the
//! boundary lives here and not in any caller. The crate does no I/O besides writing into the
//! `io::Write` it is given.
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

mod audit;
mod event;
mod sanitize;
mod time;

pub use audit::{parse_audit_line, AuditSkip};
pub use event::{Event, Extra, Source};
pub use sanitize::{sanitize, Sanitized, MAX_LEN};
pub use time::{format_timestamp, now_timestamp};
