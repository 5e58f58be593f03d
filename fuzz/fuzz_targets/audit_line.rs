//! Fuzz target: any bytes as an audit.jsonl line never panic, and any event they give is safe JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) =
        shield_event::map::audit::parse_audit_line(data, "fuzz", || "now".to_string())
    {
        let line = event.to_json_line();
        assert!(line
            .bytes()
            .all(|b| b == b'\n' || (0x20..=0x7e).contains(&b)));
    }
});
