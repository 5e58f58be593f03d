//! Fuzzes the cursor text form: parsing never panics, and what parses prints back to itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shield_tail::Cursor;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = text.parse::<Cursor>() {
        let again: Cursor = c.to_string().parse().expect("a printed cursor parses");
        assert_eq!(again, c);
    }
});
