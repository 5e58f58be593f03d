//! The IP protocols the stream knows by name: one table for reading names (audit entries) and
//! for writing them (the text format).

/// Protocol numbers and the names that mean them; the first name is the one the text format
/// writes. Audit writers use both `icmpv6` and `ipv6-icmp` (the IANA keyword).
const PROTOCOLS: [(i64, &[&str]); 6] = [
    (1, &["icmp"]),
    (6, &["tcp"]),
    (17, &["udp"]),
    (58, &["icmpv6", "ipv6-icmp"]),
    (132, &["sctp"]),
    (136, &["udplite"]),
];

/// The number of a protocol name, in any case (`TCP` → 6); `None` for a name not in the table.
pub fn protocol_number(name: &str) -> Option<i64> {
    PROTOCOLS
        .iter()
        .find(|(_, names)| names.iter().any(|known| known.eq_ignore_ascii_case(name)))
        .map(|&(number, _)| number)
}

/// The name the text format writes for a protocol number (6 → `tcp`); `None` when unnamed.
pub fn protocol_name(number: i64) -> Option<&'static str> {
    PROTOCOLS
        .iter()
        .find(|&&(known, _)| known == number)
        .map(|(_, names)| names[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_round_trip() {
        for (number, names) in PROTOCOLS {
            for name in names {
                assert_eq!(protocol_number(name), Some(number));
                assert_eq!(protocol_number(&name.to_ascii_uppercase()), Some(number));
            }
            assert_eq!(protocol_name(number), Some(names[0]));
        }
        assert_eq!(protocol_number("gre"), None);
        assert_eq!(protocol_name(47), None);
        assert_eq!(protocol_name(58), Some("icmpv6"));
    }
}
