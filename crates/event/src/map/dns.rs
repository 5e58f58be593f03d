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
    }
}
