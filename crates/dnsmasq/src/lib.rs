//! dnsmasq query-log parser, the shield's allow-list and the address-to-name cache.
//!
//! The main type is [`Classifier`]: feed it each line of a dnsmasq
//! `log-queries` log (dnsmasq 2.90, plain or `log-queries=extra`) together
//! with the container's [`AllowList`], and it returns a [`BlockedQuery`] for
//! every lookup the allow-list does not allow, while keeping a bounded
//! [`DomainCache`] (address → queried name, CNAME-aware) current from the
//! same pass. [`parse_line`] exposes the underlying parser.
//!
//! Invariant: everything is pure — no I/O, no clock, no dependency on the
//! workspace's I/O crates: the allow-list is built from the bytes of its
//! files ([`AllowList::from_domain_files`], [`AllowList::from_policy`]),
//! which the caller reads. Classifying a line allocates only for a reported
//! name that is not already lower case, or for an address whose mapping
//! changed.
//!
//! ```
//! use shield_dnsmasq::{AllowList, Classifier, DomainCache};
//!
//! let allow = AllowList::from_domain_files("github.com\n", "", "").list;
//! let mut cache = DomainCache::new(65_536);
//! let mut classifier = Classifier::new(false);
//! let log = "Mar 31 12:00:00 dnsmasq[123]: query[A] evil.example.com from 127.0.0.1\n\
//!            Mar 31 12:00:00 dnsmasq[123]: query[A] api.github.com from 127.0.0.1\n\
//!            Mar 31 12:00:00 dnsmasq[123]: reply api.github.com is 192.0.2.10\n";
//! let blocked: Vec<String> = log
//!     .lines()
//!     .filter_map(|l| classifier.classify(l.as_bytes(), &allow, Some(&mut cache)))
//!     .map(|b| format!("{} {}", b.qtype, b.domain))
//!     .collect();
//! assert_eq!(blocked, ["A evil.example.com"]);
//! assert_eq!(cache.lookup("192.0.2.10".parse().unwrap()).unwrap().name, "api.github.com");
//! ```

mod allow;
mod cache;
mod classify;
mod line;
mod stamp;
mod suffix;
mod swar;

pub use allow::{AllowList, Layout, Loaded, PolicyTier};
pub use cache::{DomainCache, Resolved};
pub use classify::{BlockedQuery, Classifier};
pub use line::{parse_line, AnswerSource, AnswerValue, Name, Record};
pub use stamp::{parse_stamp, SyslogStamp};
