//! The scripts: what each step does, in which container, and how many events it must cause.

/// One step of the scene: what happens, in a sentence for a person, and the actions behind it.
#[derive(Debug, Clone)]
pub struct Step {
    /// A short identifier, e.g. `raw-ip`.
    pub name: &'static str,
    /// One line for a person: what the step does and what shield-watch should show.
    pub narration: &'static str,
    /// Each action with the container it happens in (an index into the scene's containers).
    pub(super) actions: Vec<(usize, Action)>,
}

impl Step {
    /// How many events the step must cause.
    pub fn expected_events(&self) -> usize {
        self.actions.iter().map(|(_, a)| a.events()).sum()
    }
}

/// What one action does; each waits for its own events before the next action starts.
#[derive(Debug, Clone)]
pub(super) enum Action {
    /// `dig NAME TYPE` at the shield's resolver, from inside the container.
    Lookup {
        name: &'static str,
        qtype: &'static str,
        events: usize,
    },
    /// One TCP SYN to this address from inside the container (see [`crate::probe::send_one_syn`]).
    Connect { dest: &'static str, events: usize },
    /// The operator appends a domain to `live.domains` (no event by itself).
    AllowLive(&'static str),
    /// An audit entry `action` with `dest` and `detail`, as the shield writes it.
    Audit {
        action: &'static str,
        dest: &'static str,
        detail: &'static str,
    },
    /// Looks `name` up, then `marker` (a blocked name), until only the marker is reported:
    /// shield-watch has reloaded the allow list. One event: the marker's.
    UntilAllowed {
        name: &'static str,
        marker: &'static str,
    },
    /// Real logrotate: `dnsmasq.log` → `dnsmasq.log.1`, postrotate SIGUSR2 to the resolver;
    /// returns once dnsmasq has created the new log. No event by itself.
    Rotate,
}

impl Action {
    pub(super) fn events(&self) -> usize {
        match self {
            Action::Lookup { events, .. } | Action::Connect { events, .. } => *events,
            Action::Audit { .. } | Action::UntilAllowed { .. } => 1,
            Action::AllowLive(_) | Action::Rotate => 0,
        }
    }
}

fn lookup(name: &'static str, qtype: &'static str, events: usize) -> Action {
    Action::Lookup {
        name,
        qtype,
        events,
    }
}

/// A connection attempt the shield logs exactly once.
fn connect(dest: &'static str) -> Action {
    Action::Connect { dest, events: 1 }
}

fn audit(action: &'static str, dest: &'static str, detail: &'static str) -> Action {
    Action::Audit {
        action,
        dest,
        detail,
    }
}

/// `actions`, all in container `index`.
fn on(index: usize, actions: Vec<Action>) -> Vec<(usize, Action)> {
    actions.into_iter().map(|a| (index, a)).collect()
}

/// The single-container scene (container 0, `demo`).
pub(super) fn single() -> Vec<Step> {
    use Action::{AllowLive, Rotate, UntilAllowed};
    vec![
        Step {
            name: "allowed-lookups",
            narration: "api.github.com and github.com resolve: allowed (github.com is on the allow list), so no event",
            actions: on(0, vec![
                lookup("api.github.com", "A", 0),
                lookup("api.github.com", "AAAA", 0),
                lookup("github.com", "A", 0),
            ]),
        },
        Step {
            name: "blocked-lookups",
            narration: "ads.example.com, evil.example.com (A and AAAA, as getaddrinfo asks) and tracker.example.net are not allowed: blocked_query each",
            actions: on(0, vec![
                // Order matters: the later queries prove the earlier replies reached
                // shield-watch's domain cache before the connection steps use them.
                lookup("ads.example.com", "A", 1),
                lookup("evil.example.com", "A", 1),
                lookup("evil.example.com", "AAAA", 1),
                lookup("tracker.example.net", "A", 1),
            ]),
        },
        Step {
            name: "raw-ip",
            narration: "TCP to 203.0.113.99:443 and [2001:db8:ffff::99]:443, addresses no lookup returned: the default-deny rule logs TEROK_SHIELD_BLOCKED, queued_connection",
            actions: on(0, vec![
                connect("203.0.113.99:443"),
                connect("[2001:db8:ffff::99]:443"),
            ]),
        },
        Step {
            name: "resolved-blocked",
            narration: "TCP to 203.0.113.66:443, where evil.example.com pointed: queued_connection, named evil.example.com from the query log",
            actions: on(0, vec![connect("203.0.113.66:443")]),
        },
        Step {
            name: "denied",
            narration: "TCP to 203.0.113.250:443 (ads.example.com), on the deny list: TEROK_SHIELD_DENIED, blocked_connection",
            actions: on(0, vec![connect("203.0.113.250:443")]),
        },
        Step {
            name: "private",
            narration: "TCP to 192.0.2.10:22 (192.0.2.0/24 plays a private LAN range here): TEROK_SHIELD_PRIVATE, private_range",
            actions: on(0, vec![connect("192.0.2.10:22")]),
        },
        Step {
            name: "allowed-connection",
            narration: "TCP to 203.0.113.10:443: dnsmasq put api.github.com's address into the allow set, so the packet passes, logged TEROK_SHIELD_ALLOWED: allowed_connection",
            actions: on(0, vec![connect("203.0.113.10:443")]),
        },
        Step {
            name: "live-allow",
            narration: "the operator allows tracker.example.net while the container runs (live.domains, audit entry): lookups of it stop being reported, evil.example.com still is",
            actions: on(0, vec![
                AllowLive("tracker.example.net"),
                audit("allowed", "tracker.example.net", "live allow"),
                UntilAllowed {
                    name: "tracker.example.net",
                    marker: "evil.example.com",
                },
            ]),
        },
        Step {
            name: "rotation",
            narration: "logrotate moves dnsmasq.log to dnsmasq.log.1 and dnsmasq reopens it (SIGUSR2); the next blocked lookup, late.example.org, still shows",
            actions: on(0, vec![Rotate, lookup("late.example.org", "A", 1)]),
        },
    ]
}

/// The host-wide scene: container 0 is `alpha`, 1 is `beta` (see `super::HOST`). Within each
/// container a later lookup proves that the replies before it reached shield-watch's domain
/// cache (one log, read in order) before a connection step needs them.
pub(super) fn host() -> Vec<Step> {
    use Action::{AllowLive, Rotate, UntilAllowed};
    const ALPHA: usize = 0;
    const BETA: usize = 1;
    vec![
        Step {
            name: "allowed-lookups",
            narration: "each container resolves what its own allow list holds: api.github.com in alpha (github.com), pypi.org in beta; no event",
            actions: [
                on(ALPHA, vec![lookup("api.github.com", "A", 0)]),
                on(BETA, vec![lookup("pypi.org", "A", 0)]),
            ]
            .concat(),
        },
        Step {
            name: "blocked-lookups",
            narration: "blocked_query in each container, named with it: ads, evil and tracker in alpha; ads, mirror and github.com in beta, whose allow list lacks it",
            actions: [
                on(ALPHA, vec![
                    lookup("ads.example.com", "A", 1),
                    lookup("evil.example.com", "A", 1),
                    lookup("tracker.example.net", "A", 1),
                ]),
                on(BETA, vec![
                    lookup("ads.example.com", "A", 1),
                    lookup("mirror.example.org", "A", 1),
                    lookup("github.com", "A", 1),
                ]),
            ]
            .concat(),
        },
        Step {
            name: "raw-ip",
            narration: "TCP to addresses no lookup returned, 203.0.113.99:443 from alpha and [2001:db8:ffff::99]:443 from beta: queued_connection, each from its own namespace's NFLOG socket",
            actions: [
                on(ALPHA, vec![connect("203.0.113.99:443")]),
                on(BETA, vec![connect("[2001:db8:ffff::99]:443")]),
            ]
            .concat(),
        },
        Step {
            name: "same-address",
            narration: "TCP to 203.0.113.66:443 from both: the same address, named from each container's own query log: evil.example.com in alpha, mirror.example.org in beta",
            actions: [
                on(ALPHA, vec![connect("203.0.113.66:443")]),
                on(BETA, vec![connect("203.0.113.66:443")]),
            ]
            .concat(),
        },
        Step {
            name: "denied",
            narration: "TCP to 203.0.113.250:443 (ads.example.com) from both, on each one's deny list: TEROK_SHIELD_DENIED, blocked_connection",
            actions: [
                on(ALPHA, vec![connect("203.0.113.250:443")]),
                on(BETA, vec![connect("203.0.113.250:443")]),
            ]
            .concat(),
        },
        Step {
            name: "private",
            narration: "TCP to 192.0.2.10:22 from beta (192.0.2.0/24 plays a private LAN range here): TEROK_SHIELD_PRIVATE, private_range",
            actions: on(BETA, vec![connect("192.0.2.10:22")]),
        },
        Step {
            name: "allowed-connection",
            narration: "TCP to what each allow set holds, 203.0.113.10:443 (api.github.com) from alpha and 203.0.113.20:443 (pypi.org) from beta: allowed_connection",
            actions: [
                on(ALPHA, vec![connect("203.0.113.10:443")]),
                on(BETA, vec![connect("203.0.113.20:443")]),
            ]
            .concat(),
        },
        Step {
            name: "live-allow",
            narration: "the operator allows tracker.example.net in alpha only (live.domains, audit entry): alpha's lookups of it stop being reported, beta's still are",
            actions: [
                on(ALPHA, vec![
                    AllowLive("tracker.example.net"),
                    audit("allowed", "tracker.example.net", "live allow"),
                    UntilAllowed {
                        name: "tracker.example.net",
                        marker: "evil.example.com",
                    },
                ]),
                on(BETA, vec![lookup("tracker.example.net", "A", 1)]),
            ]
            .concat(),
        },
        Step {
            name: "rotation",
            narration: "logrotate rotates beta's dnsmasq.log and its dnsmasq reopens it (SIGUSR2); late.example.org, looked up in beta and then in alpha, still shows in both",
            actions: [
                on(BETA, vec![Rotate, lookup("late.example.org", "A", 1)]),
                on(ALPHA, vec![lookup("late.example.org", "A", 1)]),
            ]
            .concat(),
        },
    ]
}
