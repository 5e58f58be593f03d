//! Counters for the one-line summary printed on stop and on SIGUSR1.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use shield_event::Source;

use crate::metrics::Metrics;

/// What the process did so far, shared by the source threads and the writer; with
/// `--metrics-*`, also the way the source threads reach the metrics.
#[derive(Clone, Default)]
pub struct Summary {
    counts: Arc<Mutex<Counts>>,
    metrics: Option<Metrics>,
}

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
    /// Host-wide: events written, by container (`None` for one container). Hashed, not
    /// ordered: the writer counts every event here, and a replayed history's millions of them
    /// interleave every container; the summary sorts the names.
    pub by_container: Option<foldhash::HashMap<String, u64>>,
    /// With `--output journal`: entries dropped because journald was slow or gone.
    pub journal_dropped: Option<u64>,
}

impl Summary {
    /// Locks the counters; a panic elsewhere never disables the summary.
    pub fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The same counters, reporting to `metrics` too.
    pub fn with_metrics(self, metrics: Option<Metrics>) -> Summary {
        Summary { metrics, ..self }
    }

    /// The metrics, when `--metrics-listen` or `--metrics-textfile` asks for them.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// Counts one skipped input of `container`.
    pub fn skip(&self, container: &str, source: Source, reason: &'static str) {
        self.skip_n(container, source, reason, 1);
    }

    /// Counts `n` skipped inputs of `container`.
    pub fn skip_n(&self, container: &str, source: Source, reason: &'static str, n: u64) {
        *self.lock().skipped.entry((source, reason)).or_default() += n;
        if let Some(metrics) = &self.metrics {
            metrics.skip(container, source, reason, n);
        }
    }

    /// Counts `n` rotations followed in `container`'s `source` log.
    pub fn rotated(&self, container: &str, source: Source, n: u64) {
        *self.lock().rotations.entry(source).or_default() += n;
        if let Some(metrics) = &self.metrics {
            metrics.rotated(container, source, n);
        }
    }

    /// Counts one NFLOG overrun of `container` and the packets it lost, when known.
    pub fn overrun(&self, container: &str, lost: Option<u64>) {
        let mut counts = self.lock();
        counts.overruns += 1;
        counts.lost += lost.unwrap_or(0);
        drop(counts);
        if let (Some(metrics), Some(n)) = (&self.metrics, lost) {
            metrics.lost(container, n);
        }
    }
}

impl Counts {
    /// Counts `n` events written for `container` (kept by container only host-wide).
    pub fn count_container(&mut self, container: &str, n: u64) {
        if let Some(by) = &mut self.by_container {
            match by.get_mut(container) {
                Some(count) => *count += n,
                None => {
                    by.insert(container.to_string(), n);
                }
            }
        }
    }

    /// Counts `n` events written.
    pub fn count_events(&mut self, source: Source, action: &str, n: u64) {
        let actions = self.events.entry(source).or_default();
        match actions.get_mut(action) {
            Some(count) => *count += n,
            None => {
                actions.insert(action.to_string(), n);
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
        if let Some(dropped) = self.journal_dropped {
            write!(f, "; journal dropped {dropped}")?;
        }
        if let Some(by) = &self.by_container {
            let by: BTreeMap<&String, &u64> = by.iter().collect();
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
        summary.skip("c", Source::Audit, "invalid_json");
        summary.skip("c", Source::Audit, "invalid_json");
        {
            let mut counts = summary.lock();
            for _ in 0..3 {
                counts.count_events(Source::Dns, "blocked_query", 1);
            }
            counts.count_events(Source::Audit, "denied", 1);
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
