//! Fuzzes the nfnetlink_log codec and the layer-3/4 parser: no input may panic them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shield_nflog::codec::{frames, Config, Frame};
use shield_nflog::Headers;

fuzz_target!(|data: &[u8]| {
    for frame in frames(data) {
        if let Ok(Frame::Packet(p)) = frame {
            let _ = (p.prefix(), p.payload(), p.timestamp(), p.vlan(), p.hwaddr());
            let _ = p.headers();
        }
    }
    let _ = Headers::parse(data);
    let _ = Config::decode(data);
});
