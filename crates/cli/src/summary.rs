//! Counters for the one-line summary printed on stop and on SIGUSR1.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use shield_event::Source;

/// What the process did so far, shared by the source threads and the writer.
#[derive(Clone, Debug, Default)]
pub struct Summary(Arc<Mutex<Counts>>);

/// The counters themselves.
#[derive(Debug, Default)]
pub struct Counts {
    /// Events written, by (source, action).
    /// Keyed by source, then action, so counting an event allocates only for a new action.
    /// `Source` orders by name, so the summary lists sources alphabetically.
    pub events: BTreeMap<Source, BTreeMap<String, u64>>,
    /// Events filtered out by --action or --dedup.
    pub suppressed: u64,
    /// Input lines or packets that produced nothing, by (source, reason).
    pub skipped: BTreeMap<(Source, &'static str), u64>,
    /// NFLOG overruns noticed, and packets known lost.
    pub overruns: u64,
    /// Packets known to be lost in the kernel.
    pub lost: u64,
    /// Rotations (rename, truncation, re-creation) followed, by source.
    pub rotations: BTreeMap<Source, u64>,
    /// Host-wide: events written, by container (`None` for one container).
    pub by_container: Option<BTreeMap<String, u64>>,
}

impl Summary {
    /// Locks the counters; a panic elsewhere never disables the summary.
    pub fn lock(&self) -> MutexGuard<'_, Counts> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts one skipped input.
    pub fn skip(&self, source: Source, reason: &'static str) {
        *self.lock().skipped.entry((source, reason)).or_default() += 1;
    }
}

impl Counts {
    /// Counts one event written for `container` (kept by container only host-wide).
    pub fn count_container(&mut self, container: &str) {
        if let Some(by) = &mut self.by_container {
            match by.get_mut(container) {
                Some(n) => *n += 1,
                None => {
                    by.insert(container.to_string(), 1);
                }
            }
        }
    }

    /// Counts one event written.
    pub fn count_event(&mut self, source: Source, action: &str) {
        let actions = self.events.entry(source).or_default();
        match actions.get_mut(action) {
            Some(n) => *n += 1,
            None => {
                actions.insert(action.to_string(), 1);
            }
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let total: u64 = self.events.values().flat_map(|a| a.values()).sum();
        write!(f, "shield-watch: summary: {total} events")?;
        if !self.events.is_empty() {
            let parts: Vec<String> = self
                .events
                .iter()
                .flat_map(|(source, actions)| {
                    actions
                        .iter()
                        .map(move |(action, n)| format!("{}/{action}={n}", source.as_str()))
                })
                .collect();
            write!(f, " ({})", parts.join(" "))?;
        }
        if self.suppressed > 0 {
            write!(f, "; suppressed {}", self.suppressed)?;
        }
        let skipped: u64 = self.skipped.values().sum();
        write!(f, "; skipped {skipped}")?;
        if !self.skipped.is_empty() {
            let parts: Vec<String> = self
                .skipped
                .iter()
                .map(|((source, reason), n)| format!("{}/{reason}={n}", source.as_str()))
                .collect();
            write!(f, " ({})", parts.join(" "))?;
        }
        write!(f, "; overruns {} (lost {})", self.overruns, self.lost)?;
        let rotations: u64 = self.rotations.values().sum();
        write!(f, "; rotations {rotations}")?;
        if !self.rotations.is_empty() {
            let parts: Vec<String> = self
                .rotations
                .iter()
                .map(|(source, n)| format!("{}={n}", source.as_str()))
                .collect();
            write!(f, " ({})", parts.join(" "))?;
        }
        if let Some(by) = &self.by_container {
            let parts: Vec<String> = by.iter().map(|(name, n)| format!("{name}={n}")).collect();
            write!(f, "; by container ({})", parts.join(" "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_with_every_counter() {
        let summary = Summary::default();
        summary.skip(Source::Audit, "invalid_json");
        summary.skip(Source::Audit, "invalid_json");
        {
            let mut counts = summary.lock();
            for _ in 0..3 {
                counts.count_event(Source::Dns, "blocked_query");
            }
            counts.count_event(Source::Audit, "denied");
            counts.rotations.insert(Source::Dns, 1);
            counts.overruns = 1;
            counts.lost = 7;
        }
        let line = summary.lock().to_string();
        assert_eq!(
            line,
            "shield-watch: summary: 4 events (audit/denied=1 dns/blocked_query=3); skipped 2 \
             (audit/invalid_json=2); overruns 1 (lost 7); rotations 1 (dns=1)"
        );
        assert!(!line.contains('\n'));
    }
}
