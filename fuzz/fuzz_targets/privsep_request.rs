//! The privileged nflog helper's request parser (and the worker's reply parser) against any
//! bytes: never a panic, and whatever parses encodes back to the very same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shield_watch_cli::privsep::{parse_hello, Reply, Request};

fuzz_target!(|bytes: &[u8]| {
    if let Ok(request) = Request::parse(bytes) {
        let mut again = Vec::new();
        request.encode(&mut again);
        assert_eq!(again, bytes);
    }
    if let Ok(reply) = Reply::parse(bytes) {
        let mut again = Vec::new();
        reply.encode(&mut again);
        assert_eq!(again, bytes);
    }
    let _ = parse_hello(bytes);
});
