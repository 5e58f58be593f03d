//! The audit source: `audit.jsonl` lines become `audit` events.

use shield_event::map::audit::{parse_audit_line_into, AuditSkip};
use shield_event::{write_now, Event, Source};

use crate::sources::follow::{LineHandler, Lines};
use crate::summary::Summary;

/// Which name an audit event carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditNaming {
    /// The entry's own `container` when it names one, else the watcher's name for it (one
    /// container, as the reference does).
    Entry,
    /// Always the watcher's name for the container (host-wide: one name per container on
    /// every event); an entry's own differing `container` (terok-shield's NFLOG reader writes
    /// the 12-hex container id) is kept in `extra` under [`ENTRY_CONTAINER`].
    Watcher,
}

/// The `extra` key that keeps an audit entry's own `container` when the event carries the
/// watcher's name instead and the two differ.
pub const ENTRY_CONTAINER: &str = "audit_container";

/// Parses audit lines for one container.
pub struct AuditLines {
    /// The container's name: used when an entry names none, and always host-wide.
    pub container: String,
    /// Which name the events carry.
    pub naming: AuditNaming,
    /// Where skipped lines are counted.
    pub summary: Summary,
}

impl LineHandler for AuditLines {
    fn with_lines(&mut self, read: &mut dyn FnMut(&mut dyn Lines)) {
        let mut lines = AuditBatch {
            handler: self,
            skipped: [0; SKIPS.len()],
        };
        read(&mut lines);
        lines.pause();
    }
}

/// Every reason a line is skipped, in the order [`AuditBatch::skipped`] counts them.
const SKIPS: [AuditSkip; 3] = [
    AuditSkip::Blank,
    AuditSkip::InvalidJson,
    AuditSkip::NotAnObject,
];

/// [`AuditLines`] during one read batch: skipped lines are counted here and added to the
/// summary at the pause, one lock for many lines.
struct AuditBatch<'a> {
    handler: &'a mut AuditLines,
    skipped: [u64; SKIPS.len()],
}

impl Lines for AuditBatch<'_> {
    fn line(&mut self, line: &[u8], _existing: bool, event: &mut Event) -> bool {
        match parse_audit_line_into(line, &self.handler.container, write_now, event) {
            Ok(()) => {
                if self.handler.naming == AuditNaming::Watcher
                    && event.container != self.handler.container
                {
                    let own =
                        std::mem::replace(&mut event.container, self.handler.container.clone());
                    event.extra.insert(ENTRY_CONTAINER, own);
                }
                true
            }
            Err(skip) => {
                match SKIPS.iter().position(|s| *s == skip) {
                    Some(at) => self.skipped[at] += 1,
                    None => self.handler.summary.skip(
                        &self.handler.container,
                        Source::Audit,
                        skip.as_str(),
                    ),
                }
                false
            }
        }
    }

    fn pause(&mut self) {
        if self.skipped.iter().all(|n| *n == 0) {
            return;
        }
        for (skip, n) in SKIPS.iter().zip(&mut self.skipped) {
            if *n > 0 {
                self.handler.summary.skip_n(
                    &self.handler.container,
                    Source::Audit,
                    skip.as_str(),
                    *n,
                );
                *n = 0;
            }
        }
    }
}
