//! The command-line definition of `shield-watch`, shared by the binary and by `cargo xtask`,
//! which generates shell completions and the man page from it.
//!
//! Everything else of the program lives in the binary (`main.rs` and its modules): this library
//! exposes [`Args`] so the generated documentation can never drift from the real flags, and
//! [`privsep`], the pure codec of the messages between the process and its privileged nflog
//! helper, so its parsers can be fuzzed (`fuzz/fuzz_targets/privsep_request.rs`).
//!
//! ```
//! use clap::Parser;
//! let args = shield_watch_cli::Args::try_parse_from(["shield-watch", "-s", "/state"]).unwrap();
//! assert_eq!(args.nflog_group, 100);
//! ```

mod args;
pub mod privsep;

pub use args::{Args, ColorChoice, Destination, Format};
