//! What the whole-binary benches share.

use std::path::PathBuf;

/// The binary measured: the one cargo built for this bench (same profile), or
/// `SHIELD_BENCH_BINARY` (another build, to compare two commits in the same minute).
pub fn binary() -> PathBuf {
    std::env::var_os("SHIELD_BENCH_BINARY").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_shield-watch")),
        PathBuf::from,
    )
}
