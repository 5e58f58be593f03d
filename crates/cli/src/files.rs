//! The file threads, `audit` and `dns`: each follows its file of every container on one
//! [`FollowSet`] (one inotify instance, one wait), whether there is one container or a thousand.
//!
//! The dns thread also keeps each container's allow-list (reloaded when one of its files
//! changes) and fills each container's domain cache, which the nflog thread reads.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use shield_dnsmasq::AllowList;
use shield_event::Source;
use shield_tail::{FollowSet, Key, Options, Start};

use crate::containers::{Container, Voice};
use crate::output::Msg;
use crate::sources::audit::AuditLines;
use crate::sources::dns::{DnsLines, DnsOptions, SharedAllowList};
use crate::sources::follow::{LineHandler, Lines, Reader, Step};
use crate::summary::Summary;

/// What a file thread is asked.
pub enum FileCommand {
    /// Follow this container's file; the answer says whether it runs, or why not.
    Add(Container, Sender<Result<(), String>>),
    /// Let go of this container.
    Remove(Arc<str>),
    /// The containers present at start are all added and the ready line is out: read what
    /// their files hold.
    Started,
}

/// How a file thread reads.
pub struct FileThread {
    /// `Audit` or `Dns`.
    pub source: Source,
    /// Its set of followed files.
    pub set: FollowSet,
    /// Events go here.
    pub tx: Sender<Msg>,
    /// Shared counters.
    pub summary: Summary,
    /// Saved cursors, by key (`dns`; host-wide `NAME/dns`).
    pub cursors: BTreeMap<String, shield_tail::Cursor>,
    /// `--all-query-types`.
    pub all_query_types: bool,
    /// Whether this source's events are wanted (the dns thread also runs only to fill the
    /// caches when nflog is selected without dns).
    pub emit: bool,
    /// How per-container lines are said.
    pub voice: Voice,
}

/// The per-container state of a file thread.
enum Handler {
    Audit(AuditLines),
    Dns(Box<DnsLines>),
}

impl LineHandler for Handler {
    fn with_lines(&mut self, read: &mut dyn FnMut(&mut dyn Lines)) {
        match self {
            Handler::Audit(h) => h.with_lines(read),
            Handler::Dns(h) => h.with_lines(read),
        }
    }
}

/// What one key of a file thread's set is.
enum Member {
    File {
        name: Arc<str>,
        reader: Reader,
        handler: Handler,
    },
    /// A container's allow-list files (dns only).
    AllowList {
        container: Container,
        list: SharedAllowList,
    },
}

/// A running file thread's bookkeeping.
struct Members {
    by_key: HashMap<Key, Member>,
    by_name: HashMap<Arc<str>, Vec<Key>>,
    /// Files added whose present content is still to be read (by the loop, not by `add`).
    unread: Vec<Key>,
    /// Whether every container present at start was added (their content is read after).
    started: bool,
}

impl FileThread {
    /// Serves `queue` and reads every member's file as it grows, until the writer is gone.
    pub fn run(mut self, queue: Receiver<FileCommand>) {
        let mut members = Members {
            by_key: HashMap::new(),
            by_name: HashMap::new(),
            unread: Vec::new(),
            started: false,
        };
        let mut ready = Vec::new();
        loop {
            loop {
                match queue.try_recv() {
                    Ok(FileCommand::Add(container, reply)) => {
                        let _ = reply.send(self.add(&mut members, container));
                    }
                    Ok(FileCommand::Remove(name)) => self.remove(&mut members, &name),
                    Ok(FileCommand::Started) => members.started = true,
                    Err(crossbeam_channel::TryRecvError::Empty) => break,
                    // Discovery is done (one container) or gone: keep reading what is followed.
                    Err(crossbeam_channel::TryRecvError::Disconnected) => break,
                }
            }
            if members.started {
                ready.append(&mut members.unread);
            }
            ready.sort_unstable();
            ready.dedup();
            for key in std::mem::take(&mut ready) {
                if !self.read(&mut members, key) {
                    return;
                }
            }
            if let Err(err) = self.set.wait(None, &mut ready) {
                crate::diag::line(format_args!(
                    "{}: stopped: {}",
                    self.source.as_str(),
                    crate::diag::chain(&err)
                ));
                return;
            }
        }
    }

    fn file_name(&self) -> &'static str {
        match self.source {
            Source::Dns => "dnsmasq.log",
            _ => "audit.jsonl",
        }
    }

    fn add(&mut self, members: &mut Members, container: Container) -> Result<(), String> {
        let cursor_key = container.cursor_key(self.source);
        let start = match self.cursors.get(&cursor_key) {
            Some(cursor) => Start::Cursor(*cursor),
            None if container.from_start => Start::Beginning,
            None => Start::End,
        };
        // Events from what the file holds already: a saved position, or from the start.
        let history = start != Start::End;
        let path = container.dir.path().join(self.file_name());
        let mut keys = Vec::new();
        let (start, handler) = match self.source {
            Source::Dns => {
                // Existing content fills the cache even when events start at the end.
                let prime_only_existing = start == Start::End;
                // Reloaded when one of the list's files changes, not when the log grows; watched
                // before the first load, so that a change in between is not missed.
                let watch = self
                    .set
                    .watch_names(container.dir.path(), &AllowList::watched_names());
                let policy = self
                    .set
                    .watch_dirs(&AllowList::watched_paths(container.dir.path())[1..]);
                let list =
                    SharedAllowList::load(&container.dir_now(), &self.voice, &container.name);
                let handler = DnsLines::new(
                    DnsOptions {
                        all_query_types: self.all_query_types,
                        prime_only_existing,
                        emit: self.emit,
                        stamp: shield_event::write_now,
                    },
                    list.clone(),
                    container.cache.clone(),
                    container.name.to_string(),
                );
                for key in [watch, policy] {
                    members.by_key.insert(
                        key,
                        Member::AllowList {
                            container: container.clone(),
                            list: list.clone(),
                        },
                    );
                    keys.push(key);
                }
                let start = if prime_only_existing {
                    Start::Beginning
                } else {
                    start
                };
                (start, Handler::Dns(Box::new(handler)))
            }
            _ => (
                start,
                Handler::Audit(AuditLines {
                    container: container.name.to_string(),
                    naming: container.audit_naming,
                    summary: self.summary.clone(),
                }),
            ),
        };
        let added = if container.held {
            self.set.add_at(&container.dir, self.file_name(), start)
        } else {
            self.set.add(&path, start)
        };
        let key = match added {
            Ok(key) => key,
            Err(err) => {
                for key in keys {
                    self.set.remove(key);
                    members.by_key.remove(&key);
                }
                return Err(format!(
                    "cannot follow {}: {}",
                    path.display(),
                    crate::diag::chain(&err)
                ));
            }
        };
        let mut reader = Reader::new(
            container.name.clone(),
            self.source,
            Arc::from(cursor_key),
            path,
        );
        if let Some(follower) = self.set.follower(key) {
            // Where it starts is saved before the ready line, so a restart right after it
            // resumes here.
            let _ = self.tx.send(reader.start_checkpoint(follower));
        }
        members.by_key.insert(
            key,
            Member::File {
                name: container.name.clone(),
                reader,
                handler,
            },
        );
        keys.push(key);
        members.by_name.insert(container.name, keys);
        // A history (a new container, a cursor, --from-start) is read by the loop once every
        // container present at start is added and the ready line is out: neither the next
        // container nor the ready line waits for a whole history to go through stdout, whose
        // reader may be waiting for the ready line. Otherwise what is there (the cache
        // priming, which sends no events) is read before the answer: an nflog event must not
        // miss a name logged before we started.
        if history {
            members.unread.push(key);
        } else if !self.read(members, key) {
            return Err("the writer has stopped".into());
        }
        Ok(())
    }

    fn remove(&mut self, members: &mut Members, name: &str) {
        for key in members.by_name.remove(name).unwrap_or_default() {
            self.set.remove(key);
            members.by_key.remove(&key);
        }
    }

    /// Reads one member; false when the writer is gone (the thread ends).
    fn read(&mut self, members: &mut Members, key: Key) -> bool {
        match members.by_key.get_mut(&key) {
            Some(Member::File {
                name,
                reader,
                handler,
            }) => {
                let Some(follower) = self.set.follower(key) else {
                    return true;
                };
                match reader.read(follower, handler, &self.tx, &self.summary) {
                    Step::Read => true,
                    Step::Closed => false,
                    Step::Failed => {
                        self.voice
                            .tell(name, &format!("{} stopped", self.source.as_str()));
                        true
                    }
                }
            }
            Some(Member::AllowList { container, list }) => {
                list.reload(&container.dir_now());
                true
            }
            None => true,
        }
    }
}

/// The options of every follower.
pub fn follower_options(max_line: u64) -> Options {
    Options {
        max_line: usize::try_from(max_line).unwrap_or(usize::MAX),
        ..Options::default()
    }
}
