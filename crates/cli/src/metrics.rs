//! Prometheus metrics (`--metrics-listen`, `--metrics-textfile`): what the stream says, counted
//! per container, for an operator's alerts.
//!
//! [`Metrics`] holds the registry (the `prometheus-client` crate's, which encodes the exposition)
//! and which containers are followed. The containers thread calls [`Metrics::follow`] and
//! [`Metrics::gone`]; the writer counts events through its own [`EventCounter`]; the source
//! threads count skipped lines, rotations and lost packets through the
//! [`Summary`](crate::summary::Summary) they already hold. The exposition is served by [`http`] and written
//! by [`textfile`].
//!
//! **Invariant:** every label value comes from a bounded set: a followed container's name, a
//! source, an action from [`KNOWN_ACTIONS`] (else `other`), a skip reason of the code; a domain
//! only with `--metrics-domains N`, at most N per container (the rest under [`OTHER_DOMAINS`]).
//! Never an address or a port.
//!
//! **Invariant:** every blocking series of a container ([`BLOCKING_SERIES`], and its lost
//! packets) exists at 0 from the moment it is followed, and every series of a container goes
//! when it goes: a series born at 1 is a block `increase()` never sees, and a series that
//! outlives its container is an alert that cannot resolve.

pub mod http;
pub mod textfile;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use shield_event::{Event, Source};

/// The (source, action) series of a container that exist at 0 from the moment it is followed:
/// the refusals an operator alerts on.
pub const BLOCKING_SERIES: [(Source, &str); 5] = [
    (Source::Dns, "blocked_query"),
    (Source::Nflog, "blocked_connection"),
    (Source::Nflog, "queued_connection"),
    (Source::Nflog, "private_range"),
    (Source::Audit, "denied"),
];

/// Actions that get a series of their own; any other (an audit log's action is free text) is
/// counted as `other`.
pub const KNOWN_ACTIONS: [&str; 16] = [
    // dns
    "blocked_query",
    // nflog, from the log prefix
    "blocked_connection",
    "queued_connection",
    "private_range",
    "allowed",
    "bypass",
    "nflog",
    // watch
    "nflog_overrun",
    // audit, as terok-shield writes them
    "denied",
    "blocked",
    "setup",
    "teardown",
    "shield_up",
    "shield_down",
    "unknown",
    "other",
];

/// The `domain` label of the names past the first N of a container (`--metrics-domains N`).
pub const OTHER_DOMAINS: &str = "(other)";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    container: String,
    source: &'static str,
    action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContainerLabels {
    container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    container: String,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SkipLabels {
    container: String,
    source: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DomainLabels {
    container: String,
    domain: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// The metrics of the process, shared by every thread that counts or exposes them.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    events: Family<EventLabels, Counter>,
    lost: Family<ContainerLabels, Counter>,
    skipped: Family<SkipLabels, Counter>,
    rotations: Family<SourceLabels, Counter>,
    following: Family<SourceLabels, Gauge>,
    containers: Gauge,
    journal_dropped: Counter,
    /// `--metrics-domains N` and its family.
    domains: Option<(usize, Family<DomainLabels, Counter>)>,
    /// With `--state-dir`, the one container's name: every series carries it, whatever name an
    /// audit entry gives itself.
    single: Option<String>,
    /// The followed containers and every series each one has.
    followed: Mutex<BTreeMap<String, Series>>,
    /// Moves when a container goes: the writer's cached counters are then dropped.
    generation: AtomicU64,
}

/// The label sets one container has, so that they go with it.
#[derive(Default)]
struct Series {
    events: BTreeSet<(&'static str, &'static str)>,
    skipped: BTreeSet<(&'static str, &'static str)>,
    rotations: BTreeSet<&'static str>,
    following: BTreeSet<&'static str>,
    domains: BTreeSet<String>,
}

impl Metrics {
    /// Empty metrics: `domains` is `--metrics-domains`, `single` the container's name with
    /// `--state-dir`.
    pub fn new(domains: Option<usize>, single: Option<String>) -> Metrics {
        let mut registry = Registry::with_prefix("shield_watch");
        let events = Family::<EventLabels, Counter>::default();
        let lost = Family::<ContainerLabels, Counter>::default();
        let skipped = Family::<SkipLabels, Counter>::default();
        let rotations = Family::<SourceLabels, Counter>::default();
        let following = Family::<SourceLabels, Gauge>::default();
        let containers = Gauge::default();
        let journal_dropped = Counter::default();
        registry.register(
            "events",
            "Events produced by the sources (before --action and --dedup), by container, source and action",
            events.clone(),
        );
        registry.register(
            "nflog_lost_packets",
            "Packets the kernel dropped before they could be read, by container",
            lost.clone(),
        );
        registry.register(
            "skipped_lines",
            "Input lines or packets that produced no event, by container, source and reason",
            skipped.clone(),
        );
        registry.register(
            "rotations",
            "Log rotations (rename, truncation, re-creation) followed, by container and source",
            rotations.clone(),
        );
        registry.register(
            "source_following",
            "1 while the source follows the container's input, else 0",
            following.clone(),
        );
        registry.register("containers", "Containers followed", containers.clone());
        registry.register(
            "journal_dropped_entries",
            "Journal entries dropped because journald was slow or gone",
            journal_dropped.clone(),
        );
        registry.register(
            "build",
            "The running version",
            Info::new(VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            }),
        );
        let domains = domains.map(|n| {
            let family = Family::<DomainLabels, Counter>::default();
            registry.register(
                "blocked_domains",
                "Blocked lookups by container and name: the first N names of each container, then (other)",
                family.clone(),
            );
            (n, family)
        });
        Metrics {
            inner: Arc::new(Inner {
                registry,
                events,
                lost,
                skipped,
                rotations,
                following,
                containers,
                journal_dropped,
                domains,
                single,
                followed: Mutex::new(BTreeMap::new()),
                generation: AtomicU64::new(0),
            }),
        }
    }

    fn followed(&self) -> MutexGuard<'_, BTreeMap<String, Series>> {
        self.inner
            .followed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The container label of what `container` counted.
    fn label<'a>(&'a self, container: &'a str) -> &'a str {
        self.inner.single.as_deref().unwrap_or(container)
    }

    /// `container` is followed: its blocking series and lost packets appear at 0, and
    /// `source_following` says which of `selected` run.
    pub fn follow(&self, container: &str, selected: &[Source], running: &[Source]) {
        let container = self.label(container).to_string();
        let mut followed = self.followed();
        let series = followed.entry(container.clone()).or_default();
        for (source, action) in BLOCKING_SERIES {
            series.events.insert((source.as_str(), action));
            drop(self.inner.events.get_or_create(&EventLabels {
                container: container.clone(),
                source: source.as_str(),
                action,
            }));
        }
        drop(self.inner.lost.get_or_create(&ContainerLabels {
            container: container.clone(),
        }));
        for source in selected {
            series.following.insert(source.as_str());
            self.inner
                .following
                .get_or_create(&SourceLabels {
                    container: container.clone(),
                    source: source.as_str(),
                })
                .set(i64::from(running.contains(source)));
        }
        self.inner.containers.set(followed.len() as i64);
    }

    /// Whether `source` follows `container` now (its NFLOG socket opened or lost later).
    pub fn set_following(&self, container: &str, source: Source, on: bool) {
        let container = self.label(container).to_string();
        let mut followed = self.followed();
        let Some(series) = followed.get_mut(&container) else {
            return;
        };
        series.following.insert(source.as_str());
        self.inner
            .following
            .get_or_create(&SourceLabels {
                container,
                source: source.as_str(),
            })
            .set(i64::from(on));
    }

    /// `container` is no longer followed: every series of it goes.
    pub fn gone(&self, container: &str) {
        let container = self.label(container).to_string();
        let mut followed = self.followed();
        let Some(series) = followed.remove(&container) else {
            return;
        };
        let inner = &self.inner;
        for (source, action) in series.events {
            inner.events.remove(&EventLabels {
                container: container.clone(),
                source,
                action,
            });
        }
        for (source, reason) in series.skipped {
            inner.skipped.remove(&SkipLabels {
                container: container.clone(),
                source,
                reason,
            });
        }
        for source in series.rotations {
            inner.rotations.remove(&SourceLabels {
                container: container.clone(),
                source,
            });
        }
        for source in series.following {
            inner.following.remove(&SourceLabels {
                container: container.clone(),
                source,
            });
        }
        if let Some((_, family)) = &inner.domains {
            for domain in series.domains {
                family.remove(&DomainLabels {
                    container: container.clone(),
                    domain,
                });
            }
        }
        inner.lost.remove(&ContainerLabels { container });
        inner.containers.set(followed.len() as i64);
        inner.generation.fetch_add(1, Ordering::Release);
    }

    /// Counts `n` skipped inputs of a followed container.
    pub fn skip(&self, container: &str, source: Source, reason: &'static str, n: u64) {
        let container = self.label(container).to_string();
        let mut followed = self.followed();
        let Some(series) = followed.get_mut(&container) else {
            return;
        };
        series.skipped.insert((source.as_str(), reason));
        self.inner
            .skipped
            .get_or_create(&SkipLabels {
                container,
                source: source.as_str(),
                reason,
            })
            .inc_by(n);
    }

    /// Counts `n` rotations followed in a followed container's `source` log.
    pub fn rotated(&self, container: &str, source: Source, n: u64) {
        let container = self.label(container).to_string();
        let mut followed = self.followed();
        let Some(series) = followed.get_mut(&container) else {
            return;
        };
        series.rotations.insert(source.as_str());
        self.inner
            .rotations
            .get_or_create(&SourceLabels {
                container,
                source: source.as_str(),
            })
            .inc_by(n);
    }

    /// Counts `n` packets of a followed container lost in the kernel.
    pub fn lost(&self, container: &str, n: u64) {
        let container = self.label(container).to_string();
        if !self.followed().contains_key(&container) {
            return;
        }
        self.inner
            .lost
            .get_or_create(&ContainerLabels { container })
            .inc_by(n);
    }

    /// Counts `n` more journal entries dropped.
    pub fn journal_dropped(&self, n: u64) {
        self.inner.journal_dropped.inc_by(n);
    }

    /// The counter of (container, source, action), `None` when the container is not followed
    /// (an event still in flight after it went must not bring its series back).
    fn event_counter(
        &self,
        container: &str,
        source: Source,
        action: &'static str,
    ) -> Option<Counter> {
        let container = self.label(container).to_string();
        let mut followed = self.followed();
        let series = followed.get_mut(&container)?;
        series.events.insert((source.as_str(), action));
        Some(self.inner.events.get_or_create_owned(&EventLabels {
            container,
            source: source.as_str(),
            action,
        }))
    }

    /// The counter of a blocked name of a followed container: its own among the first N, else
    /// the container's [`OTHER_DOMAINS`] one. `None` without `--metrics-domains`.
    fn domain_counter(&self, container: &str, domain: &str) -> Option<Counter> {
        let (limit, family) = self.inner.domains.as_ref()?;
        let container = self.label(container).to_string();
        let mut followed = self.followed();
        let series = followed.get_mut(&container)?;
        let own = series.domains.contains(domain)
            || series
                .domains
                .iter()
                .filter(|d| *d != OTHER_DOMAINS)
                .count()
                < *limit;
        let domain = if own { domain } else { OTHER_DOMAINS };
        series.domains.insert(domain.to_string());
        Some(family.get_or_create_owned(&DomainLabels {
            container,
            domain: domain.to_string(),
        }))
    }

    /// The exposition in the OpenMetrics text format (what Prometheus asks for).
    pub fn openmetrics(&self) -> String {
        let mut text = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.inner.registry);
        text
    }

    /// The exposition in Prometheus' classic text format (version 0.0.4), which
    /// node_exporter's textfile collector and older scrapers read: the OpenMetrics text with
    /// a counter's family named as its samples (`_total`), an info metric as a gauge of
    /// value 1, and no `# EOF` or `# UNIT` lines.
    pub fn classic_text(&self) -> String {
        to_classic(&self.openmetrics())
    }
}

/// Rewrites an OpenMetrics exposition as Prometheus' classic text format.
fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut counters: Vec<&str> = Vec::new();
    let mut infos: Vec<&str> = Vec::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            match kind {
                "counter" => counters.push(name),
                "info" => infos.push(name),
                _ => {}
            }
        }
    }
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# TYPE ", "# HELP "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(&name) {
                let _ = writeln!(out, "{prefix}{name}_total {tail}");
            } else if infos.contains(&name) {
                let tail = if prefix == "# TYPE " { "gauge" } else { tail };
                let _ = writeln!(out, "{prefix}{name}_info {tail}");
            } else {
                let _ = writeln!(out, "{line}");
            }
            continue;
        }
        let _ = writeln!(out, "{line}");
    }
    out
}

/// The writer's side: counts each event into its series, keeping the counters it used so that
/// an event costs a map lookup and an atomic add, no lock and no allocation.
pub struct EventCounter {
    metrics: Metrics,
    generation: u64,
    /// The (container, source, action) of the last event and its counter: events come in
    /// runs of the same kind, which then cost three comparisons and an atomic add.
    last: Option<(String, Source, String, Counter)>,
    /// By container: (source, action, counter).
    events: HashMap<String, Vec<(Source, &'static str, Counter)>>,
    /// By container, then name: at most `--metrics-domains` names each.
    domains: HashMap<String, HashMap<String, Counter>>,
}

impl EventCounter {
    /// A counter into `metrics`.
    pub fn new(metrics: Metrics) -> EventCounter {
        EventCounter {
            metrics,
            generation: 0,
            last: None,
            events: HashMap::new(),
            domains: HashMap::new(),
        }
    }

    /// Counts one event produced by a source.
    pub fn count(&mut self, event: &Event) {
        let generation = self.metrics.inner.generation.load(Ordering::Acquire);
        if generation != self.generation {
            // A container went: its counters are no longer in the registry.
            self.events.clear();
            self.domains.clear();
            self.last = None;
            self.generation = generation;
        }
        if event.source == Source::Dns
            && event.action == "blocked_query"
            && !event.domain.is_empty()
        {
            self.count_domain(&event.container, &event.domain);
        }
        if let Some((container, source, action, counter)) = &self.last {
            if *source == event.source && *action == event.action && *container == event.container {
                counter.inc();
                return;
            }
        }
        let action = known_action(&event.action);
        let container = self.metrics.label(&event.container);
        let cached = self.events.get(container).and_then(|counters| {
            counters
                .iter()
                .find(|(s, a, _)| *s == event.source && *a == action)
        });
        let counter = match cached {
            Some((_, _, counter)) => counter.clone(),
            None => {
                let Some(counter) = self.metrics.event_counter(container, event.source, action)
                else {
                    return;
                };
                self.events.entry(container.to_string()).or_default().push((
                    event.source,
                    action,
                    counter.clone(),
                ));
                counter
            }
        };
        counter.inc();
        // Remembered by the event's own strings, which the next event is compared with.
        match &mut self.last {
            Some((container, source, action, last)) => {
                container.clone_from(&event.container);
                *source = event.source;
                action.clone_from(&event.action);
                *last = counter;
            }
            None => {
                self.last = Some((
                    event.container.clone(),
                    event.source,
                    event.action.clone(),
                    counter,
                ));
            }
        }
    }

    fn count_domain(&mut self, container: &str, domain: &str) {
        let Some((limit, _)) = &self.metrics.inner.domains else {
            return;
        };
        let label = self.metrics.label(container);
        if let Some(counter) = self.domains.get(label).and_then(|d| d.get(domain)) {
            counter.inc();
            return;
        }
        if let Some(counter) = self.metrics.domain_counter(label, domain) {
            counter.inc();
            let names = self.domains.entry(label.to_string()).or_default();
            // The names past the limit share one counter: not cached by name, so the cache
            // stays bounded too.
            if names.len() <= *limit {
                names.insert(domain.to_string(), counter);
            }
        }
    }
}

/// The action label of `action`: itself when known, else `other`.
fn known_action(action: &str) -> &'static str {
    KNOWN_ACTIONS
        .iter()
        .find(|known| **known == action)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(container: &str, source: Source, action: &str) -> Event {
        Event::new("t", source, action, container)
    }

    #[test]
    fn blocking_series_exist_at_zero_once_followed_and_go_with_the_container() {
        let metrics = Metrics::new(None, None);
        metrics.follow("web", &[Source::Dns, Source::Nflog], &[Source::Dns]);
        let text = metrics.openmetrics();
        for (source, action) in BLOCKING_SERIES {
            let line = format!(
                "shield_watch_events_total{{container=\"web\",source=\"{}\",action=\"{action}\"}} 0",
                source.as_str()
            );
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
        assert!(text.contains("shield_watch_nflog_lost_packets_total{container=\"web\"} 0"));
        assert!(text.contains("shield_watch_source_following{container=\"web\",source=\"dns\"} 1"));
        assert!(
            text.contains("shield_watch_source_following{container=\"web\",source=\"nflog\"} 0")
        );
        assert!(text.contains("shield_watch_containers 1"));
        assert!(text.contains(&format!(
            "shield_watch_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )));

        let mut counter = EventCounter::new(metrics.clone());
        counter.count(&event("web", Source::Dns, "blocked_query"));
        counter.count(&event("web", Source::Audit, "something new"));
        metrics.skip("web", Source::Audit, "invalid_json", 2);
        metrics.rotated("web", Source::Dns, 1);
        let text = metrics.openmetrics();
        assert!(text.contains(
            "shield_watch_events_total{container=\"web\",source=\"dns\",action=\"blocked_query\"} 1"
        ));
        assert!(text.contains(
            "shield_watch_events_total{container=\"web\",source=\"audit\",action=\"other\"} 1"
        ));
        assert!(text.contains(
            "shield_watch_skipped_lines_total{container=\"web\",source=\"audit\",reason=\"invalid_json\"} 2"
        ));

        metrics.gone("web");
        // An event still in flight does not bring the series back.
        counter.count(&event("web", Source::Dns, "blocked_query"));
        metrics.skip("web", Source::Audit, "invalid_json", 1);
        let text = metrics.openmetrics();
        assert!(!text.contains("web"), "{text}");
        assert!(text.contains("shield_watch_containers 0"));
    }

    #[test]
    fn one_container_labels_every_event_with_its_own_name() {
        let metrics = Metrics::new(None, Some("c1".into()));
        metrics.follow("c1", &[Source::Audit], &[Source::Audit]);
        let mut counter = EventCounter::new(metrics.clone());
        counter.count(&event("what-the-entry-says", Source::Audit, "denied"));
        assert!(metrics.openmetrics().contains(
            "shield_watch_events_total{container=\"c1\",source=\"audit\",action=\"denied\"} 1"
        ));
    }

    #[test]
    fn domains_past_the_limit_share_one_series() {
        let metrics = Metrics::new(Some(2), None);
        metrics.follow("c", &[Source::Dns], &[Source::Dns]);
        let mut counter = EventCounter::new(metrics.clone());
        for name in ["a.test", "b.test", "c.test", "d.test", "a.test", "c.test"] {
            let mut e = event("c", Source::Dns, "blocked_query");
            e.domain = name.into();
            counter.count(&e);
        }
        let text = metrics.openmetrics();
        assert!(text
            .contains("shield_watch_blocked_domains_total{container=\"c\",domain=\"a.test\"} 2"));
        assert!(text
            .contains("shield_watch_blocked_domains_total{container=\"c\",domain=\"b.test\"} 1"));
        assert!(text.contains(&format!(
            "shield_watch_blocked_domains_total{{container=\"c\",domain=\"{OTHER_DOMAINS}\"}} 3"
        )));
        assert!(!text.contains("c.test"));
    }

    #[test]
    fn classic_text_names_counter_families_by_their_samples() {
        let metrics = Metrics::new(None, None);
        metrics.follow("web", &[Source::Dns], &[Source::Dns]);
        let text = metrics.classic_text();
        assert!(
            text.contains("# TYPE shield_watch_events_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE shield_watch_build_info gauge\n"),
            "{text}"
        );
        assert!(!text.contains("# EOF"));
    }
}
