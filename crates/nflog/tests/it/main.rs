//! Integration tests of shield-nflog: the real kernel in namespaces the tests own, and properties.

mod kernel;
mod lab;
mod props;
