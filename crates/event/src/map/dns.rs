//! dns: a lookup the allow-list refused to an event.

use crate::event::{Event, Source};

/// The `blocked_query` event of a refused lookup: `domain` the queried name (as the classifier
/// normalised it, `<name unprintable>` verbatim), `query_type` as dnsmasq wrote it.
pub fn blocked_query(
    ts: impl Into<String>,
    container: &str,
    domain: impl Into<String>,
    query_type: &str,
) -> Event {
    let mut event = Event::new(ts, Source::Dns, "blocked_query", container);
    event.domain = domain.into();
    event.query_type = query_type.to_string();
    event
}

/// [`blocked_query`] into an event reused line after line (reset first): `now` appends the
/// timestamp to the string it is given. Allocates nothing once the event's strings have grown.
pub fn blocked_query_into(
    event: &mut Event,
    now: impl FnOnce(&mut String),
    container: &str,
    domain: &str,
    query_type: &str,
) {
    event.reset(Source::Dns, "blocked_query", container);
    now(&mut event.ts);
    event.domain.push_str(domain);
    event.query_type.push_str(query_type);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_lookup_carries_its_name_and_type() {
        let event = blocked_query("T", "c1", "evil.example.com", "AAAA");
        assert_eq!(
            event.to_json_line(),
            "{\"ts\":\"T\",\"source\":\"dns\",\"action\":\"blocked_query\",\"container\":\"c1\",\
             \"domain\":\"evil.example.com\",\"query_type\":\"AAAA\"}\n"
        );
        // The same event, written into one that carried another.
        let mut reused = Event::new("x", Source::Audit, "denied", "c2");
        reused.port = 443;
        reused.extra.insert("k", "v");
        blocked_query_into(
            &mut reused,
            |ts| ts.push('T'),
            "c1",
            "evil.example.com",
            "AAAA",
        );
        assert_eq!(reused, event);
    }
}
