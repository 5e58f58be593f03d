//! dnsmasq query-log parser, the shield's allow-list and the address-to-name cache.
//!
//! Not written yet: see the dns issue. The crate exists so the workspace has its final shape.
