//! Integration tests of shield-dnsmasq: properties over generated input, and a live dnsmasq.

mod live;
mod model;
mod never_panics;
mod roundtrip;
