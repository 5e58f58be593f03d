//! The source threads: each opens its input, says whether it is ready, then feeds the channel.

pub mod audit;
pub mod dns;
pub mod follow;
pub mod nflog;

use shield_event::Source;

/// What a source tells main once it has opened its input (or given up).
#[derive(Debug)]
pub struct Ready {
    /// Which source.
    pub source: Source,
    /// `Err` carries the one-line reason it will not run.
    pub result: Result<(), String>,
}
