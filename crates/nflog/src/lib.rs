//! The nfnetlink_log protocol, a layer-3/4 packet parser and an NFLOG subscription (Linux only).
//!
//! Not written yet: see the nflog issue. The crate exists so the workspace has its final shape.
