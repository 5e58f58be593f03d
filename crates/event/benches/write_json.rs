//! Instructions per event of the JSON writer and of the timestamp writer, for callgrind.
//!
//! Run: `cargo bench -p shield-event --bench write_json --no-run`, then
//! `valgrind --tool=callgrind target/release/deps/write_json-* json 100000` (or `stamp 100000`)
//! and `callgrind_annotate --inclusive=yes callgrind.out.*`: the inclusive count of `write_line`
//! (or `write_stamp`) divided by the number of events is the cost of one. Without valgrind the
//! bench prints the time per event.
//!
//! The event is the one a history replay writes most: a dns `blocked_query` of a name the
//! allow-list refused, written into a reused `Vec<u8>` as the CLI's workers do (`Slot`). The
//! stamps are those of the same replay: whole seconds, a few events per second.

use std::hint::black_box;
use std::time::Instant;

use jiff::Timestamp;
use shield_event::{write_timestamp, Event, Source};

/// One event's line, written as the CLI writes it: into a reused buffer.
#[inline(never)]
fn write_line(event: &Event, out: &mut Vec<u8>) {
    out.clear();
    event.write_json_into(out);
}

/// One event's stamp, written as the history replay writes it: into the event's reused `ts`.
#[inline(never)]
fn write_stamp(ts: Timestamp, out: &mut String) {
    out.clear();
    write_timestamp(ts, out);
}

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let what = args.next().unwrap_or_else(|| "json".into());
    let n: u64 = args
        .next()
        .map_or(1_000_000, |n| n.parse().expect("a count"));

    let mut event = Event::new(
        "2026-12-02T04:00:53.000000+00:00",
        Source::Dns,
        "blocked_query",
        "c049",
    );
    event.domain = "h1.blocked49.example".into();
    event.query_type = "A".into();

    let start = Instant::now();
    let mut bytes = 0;
    match what.as_str() {
        "json" => {
            let mut out = Vec::new();
            for _ in 0..n {
                write_line(black_box(&event), &mut out);
                bytes += black_box(&out).len();
            }
        }
        "stamp" => {
            let first = Timestamp::from_second(1_796_184_053).expect("a valid second");
            let mut out = String::new();
            for i in 0..n {
                let ts = Timestamp::from_second(first.as_second() + (i / 4) as i64)
                    .expect("a valid second");
                write_stamp(black_box(ts), &mut out);
                bytes += black_box(&out).len();
            }
        }
        other => panic!("unknown pass {other:?}: json or stamp"),
    }
    let elapsed = start.elapsed();
    println!(
        "{what}: {n} in {:.3} s, {:.1} ns each, {bytes} bytes",
        elapsed.as_secs_f64(),
        elapsed.as_nanos() as f64 / n as f64
    );
}
