//! Fuzzes the follower's line splitting through its public API on a real file: whatever the
//! bytes and however the writes are split, it yields exactly the complete lines, once each,
//! over-long ones as `TooLong`, and holds back the unterminated tail.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use shield_tail::{Follower, Options, Record, Start};

const MAX_LINE: usize = 16;

fuzz_target!(|data: &[u8]| {
    let Some((&split_seed, data)) = data.split_first() else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("shield-tail-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("f.log");
    let _ = std::fs::remove_file(&path);
    let mut w = std::fs::File::create(&path).unwrap();
    let opts = Options {
        max_line: MAX_LINE,
        ..Options::default()
    };
    let mut f = Follower::open(&path, Start::Beginning, opts).unwrap();
    let mut got: Vec<Result<Vec<u8>, u64>> = Vec::new();
    let step = usize::from(split_seed % 31) + 1;
    for chunk in data.chunks(step) {
        w.write_all(chunk).unwrap();
        f.read_available(&mut |r| {
            match r {
                Record::Line { bytes, .. } => got.push(Ok(bytes.to_vec())),
                Record::TooLong { len, .. } => got.push(Err(len)),
            }
            std::ops::ControlFlow::Continue(())
        })
        .unwrap();
    }
    let mut want: Vec<Result<Vec<u8>, u64>> = Vec::new();
    let mut parts: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    parts.pop(); // the unterminated tail (possibly empty) is not a line yet
    for p in parts {
        want.push(if p.len() > MAX_LINE {
            Err(p.len() as u64)
        } else {
            Ok(p.to_vec())
        });
    }
    assert_eq!(got, want);
});
