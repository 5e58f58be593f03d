//! End-to-end tests of the real `shield-watch` binary, one test binary with a module per area.

mod audit;
mod confine;
mod dns;
mod exit;
mod flags;
mod fleet;
mod history;
mod host;
mod hostile;
mod matrix;
mod multicast;
mod nflog;
mod rotation;
mod scene;
mod support;
mod terok;
