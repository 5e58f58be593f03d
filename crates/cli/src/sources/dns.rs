//! The dns source: dnsmasq query-log lines become `blocked_query` events, and the same single
//! pass keeps the address → name cache current for the nflog source.

use shield_tail::Dir;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::containers::Voice;
use crate::sources::follow::{LineHandler, Lines};
use shield_dnsmasq::{AllowList, Classifier, DomainCache};
use shield_event::{map, Event};

/// The allow-list in force, replaced whole when its files change. Readers check `generation`
/// (one atomic load per line) and take a new snapshot only when it moved, so the hot path never
/// locks and never reads a file.
#[derive(Clone)]
pub struct SharedAllowList {
    current: Arc<Mutex<Arc<AllowList>>>,
    generation: Arc<AtomicU64>,
    /// What the last load said (warnings, or why it failed), and to whom: said again only when
    /// it changes.
    said: Arc<Mutex<Said>>,
}

/// What a load of the allow-list said, and how to say it.
struct Said {
    voice: Voice,
    container: Arc<str>,
    last: Option<Vec<String>>,
}

impl SharedAllowList {
    /// Loads the allow-list of `state_dir` (warnings to stderr, through `voice`). The caller
    /// calls [`SharedAllowList::reload`] when one of its files changes (the dns thread watches
    /// every container's list files on its one inotify instance).
    pub fn load(state_dir: &Dir, voice: &Voice, container: &Arc<str>) -> SharedAllowList {
        let shared = SharedAllowList {
            current: Arc::new(Mutex::new(Arc::new(AllowList::empty()))),
            generation: Arc::new(AtomicU64::new(0)),
            said: Arc::new(Mutex::new(Said {
                voice: *voice,
                container: container.clone(),
                last: None,
            })),
        };
        shared.reload(state_dir);
        shared
    }

    /// Reads the files again and puts the new list in force. What the load says (a malformed
    /// line, a refused symlink, a file too large) is said once, and again only when it changes.
    pub fn reload(&self, state_dir: &Dir) {
        let (list, lines) = match crate::allow_files::load(state_dir) {
            Ok(loaded) => (
                loaded.list,
                loaded
                    .warnings
                    .iter()
                    .map(|w| format!("dns: allow-list: {w}"))
                    .collect(),
            ),
            Err(err) => (
                AllowList::empty(),
                vec![format!(
                    "dns: cannot load the allow-list ({err}); every lookup counts as blocked"
                )],
            ),
        };
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(list);
        self.generation.fetch_add(1, Ordering::Release);
        let mut said = self.said.lock().unwrap_or_else(|p| p.into_inner());
        if said.last.as_ref() != Some(&lines) {
            for line in &lines {
                said.voice.warn(&said.container, line);
            }
            said.last = Some(lines);
        }
    }

    fn snapshot(&self) -> (u64, Arc<AllowList>) {
        let generation = self.generation.load(Ordering::Acquire);
        let list = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        (generation, list)
    }
}

/// How the query log is read.
#[derive(Clone, Copy, Debug)]
pub struct DnsOptions {
    /// `--all-query-types`: report refused lookups of every type, not only A/AAAA.
    pub all_query_types: bool,
    /// The user asked to start at the end: the existing content only fills the cache.
    pub prime_only_existing: bool,
    /// False when only the cache is wanted (the dns source was not selected).
    pub emit: bool,
    /// Writes each event's `ts`: the live threads the current time ([`shield_event::write_now`]); history
    /// leaves it empty and stamps each event with its line's own time.
    pub stamp: fn(&mut String),
}

/// Classifies query-log lines for one container.
pub struct DnsLines {
    classifier: Classifier,
    allow: SharedAllowList,
    snapshot: (u64, Arc<AllowList>),
    cache: Arc<Mutex<DomainCache>>,
    container: String,
    /// Lines already in the log when we opened it only prime the cache: the user asked to
    /// start at the end.
    prime_existing: bool,
    /// False when only the cache is wanted (the dns source was not selected).
    emit: bool,
    stamp: fn(&mut String),
}

impl DnsLines {
    /// A handler for one container's query log.
    pub fn new(
        options: DnsOptions,
        allow: SharedAllowList,
        cache: Arc<Mutex<DomainCache>>,
        container: String,
    ) -> DnsLines {
        let snapshot = allow.snapshot();
        DnsLines {
            classifier: Classifier::new(options.all_query_types),
            allow,
            snapshot,
            cache,
            container,
            prime_existing: options.prime_only_existing,
            emit: options.emit,
            stamp: options.stamp,
        }
    }
}

impl LineHandler for DnsLines {
    fn with_lines(&mut self, read: &mut dyn FnMut(&mut dyn Lines)) {
        let mut lines = DnsBatch {
            classifier: &mut self.classifier,
            allow: &self.allow,
            snapshot: &mut self.snapshot,
            cache: &self.cache,
            locked: None,
            container: &self.container,
            prime_existing: self.prime_existing,
            emit: self.emit,
            stamp: self.stamp,
        };
        read(&mut lines);
        lines.pause();
    }
}

/// [`DnsLines`] during one read batch: the cache is locked at the first line that needs it and
/// stays locked until the next pause.
struct DnsBatch<'a> {
    classifier: &'a mut Classifier,
    allow: &'a SharedAllowList,
    snapshot: &'a mut (u64, Arc<AllowList>),
    cache: &'a Mutex<DomainCache>,
    locked: Option<MutexGuard<'a, DomainCache>>,
    container: &'a str,
    prime_existing: bool,
    emit: bool,
    stamp: fn(&mut String),
}

impl Lines for DnsBatch<'_> {
    fn line(&mut self, line: &[u8], existing: bool, event: &mut Event) -> bool {
        if self.allow.generation.load(Ordering::Acquire) != self.snapshot.0 {
            *self.snapshot = self.allow.snapshot();
        }
        let cache = self
            .locked
            .get_or_insert_with(|| self.cache.lock().unwrap_or_else(|p| p.into_inner()));
        if (self.prime_existing && existing) || !self.emit {
            // Only the cache wants this line: skip the allow-list work.
            self.classifier.observe(line, cache);
            return false;
        }
        let Some(blocked) = self
            .classifier
            .classify(line, &self.snapshot.1, Some(cache))
        else {
            return false;
        };
        map::dns::blocked_query_into(
            event,
            self.stamp,
            self.container,
            &blocked.domain,
            blocked.qtype,
        );
        true
    }

    fn pause(&mut self) {
        if let Some(mut cache) = self.locked.take() {
            // The answers still queued in the cache are applied here, not by the nflog
            // thread's next lookup.
            cache.flush();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_is_locked_once_for_many_lines_and_let_go_at_a_pause() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("profile.domains"), "allowed.example\n").unwrap();
        let held = Dir::open(dir.path()).unwrap();
        let allow = SharedAllowList::load(&held, &Voice::One, &Arc::from("c"));
        let cache = Arc::new(Mutex::new(DomainCache::new(16)));
        let options = DnsOptions {
            all_query_types: false,
            prime_only_existing: false,
            emit: true,
            stamp: shield_event::write_now,
        };
        let mut handler = DnsLines::new(options, allow, cache.clone(), "c".into());
        let log = [
            &b"Mar 31 12:00:00 dnsmasq[1]: query[A] evil.example from 10.0.2.100"[..],
            b"Mar 31 12:00:00 dnsmasq[1]: reply evil.example is 192.0.2.1",
            b"Mar 31 12:00:00 dnsmasq[1]: query[A] x.allowed.example from 10.0.2.100",
            b"Mar 31 12:00:00 dnsmasq[1]: reply x.allowed.example is 192.0.2.2",
        ];
        let mut event = Event::new("", shield_event::Source::Watch, "", "");
        let mut blocked = Vec::new();
        handler.with_lines(&mut |lines| {
            for line in log {
                if lines.line(line, false, &mut event) {
                    blocked.push(event.domain.clone());
                }
                // Held from the first line on: nobody else locks it line by line.
                assert!(cache.try_lock().is_err());
            }
            lines.pause();
            // At a pause it is let go, with every answer so far applied.
            let mut held = cache.try_lock().unwrap();
            assert_eq!(
                held.peek("192.0.2.2".parse().unwrap()).unwrap().name,
                "x.allowed.example"
            );
            drop(held);
            assert!(!lines.line(log[3], false, &mut event));
            assert!(cache.try_lock().is_err());
        });
        // And when the read batch ends.
        assert!(cache.try_lock().is_ok());
        assert_eq!(blocked, ["evil.example"]);
        assert_eq!(event.action, "blocked_query");
    }
}
