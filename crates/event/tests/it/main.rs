//! Integration tests of shield-event, one binary: properties of the sanitiser and the writer.

mod equivalence;
mod props;
