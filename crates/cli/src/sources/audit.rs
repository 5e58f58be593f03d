//! The audit source: `audit.jsonl` lines become `audit` events.

use shield_event::map::audit::parse_audit_line;
use shield_event::{now_timestamp, Event, Source};

use crate::sources::follow::LineHandler;
use crate::summary::Summary;

/// Parses audit lines for one container.
pub struct AuditLines {
    /// `--container`, used when an entry names none.
    pub container: String,
    /// Where skipped lines are counted.
    pub summary: Summary,
}

impl LineHandler for AuditLines {
    fn line(&mut self, line: &[u8], _existing: bool) -> Option<Event> {
        match parse_audit_line(line, &self.container, now_timestamp) {
            Ok(event) => Some(event),
            Err(skip) => {
                self.summary.skip(Source::Audit, skip.as_str());
                None
            }
        }
    }
}
