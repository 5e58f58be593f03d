//! Packets the tests and the scene send that std's sockets cannot: exactly one TCP SYN, and an
//! ICMP echo request. Each goes out from the calling thread's network namespace (run them
//! through [`Netns::run_in`](crate::Netns::run_in)).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

use rustix::io::Errno;
use rustix::net::{self as net, ipproto, AddressFamily, SendFlags, SocketFlags, SocketType};

/// Sends exactly one TCP SYN to `dest` and abandons the connection; returns the source port.
///
/// A non-blocking connect, then close. A blocking connect would not do: the shield's reject
/// reaches the socket while `connect` still holds it, the kernel keeps the error as a soft one and
/// retransmits the SYN after a second, and every attempt would be logged twice. The socket is
/// bound before connecting so the port is known even when a rule drops the SYN on its way out
/// (the connect then fails with `EPERM`, which counts as sent: the SYN went through the output
/// hook, was judged and logged).
pub fn send_one_syn(dest: SocketAddr) -> io::Result<u16> {
    let (family, any): (_, SocketAddr) = match dest {
        SocketAddr::V4(_) => (AddressFamily::INET, (Ipv4Addr::UNSPECIFIED, 0).into()),
        SocketAddr::V6(_) => (AddressFamily::INET6, (Ipv6Addr::UNSPECIFIED, 0).into()),
    };
    let socket = net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    net::bind(&socket, &any)?;
    let port = SocketAddr::try_from(net::getsockname(&socket)?)
        .map_err(|_| io::Error::other("getsockname gave no IP address"))?
        .port();
    match net::connect(&socket, &dest) {
        Ok(()) | Err(Errno::INPROGRESS | Errno::PERM) => Ok(port),
        Err(err) => Err(err.into()),
    }
}

/// Sends one ICMP echo request (type 8, code 0, identifier 0x1234, sequence 1) through a raw
/// socket.
pub fn send_ping(dest: Ipv4Addr) -> io::Result<()> {
    let mut message = [8u8, 0, 0, 0, 0x12, 0x34, 0, 1];
    let sum: u32 = message
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c[1]])))
        .sum();
    let checksum = !((sum & 0xffff) + (sum >> 16)) as u16;
    message[2..4].copy_from_slice(&checksum.to_be_bytes());
    let socket = net::socket_with(
        AddressFamily::INET,
        SocketType::RAW,
        SocketFlags::CLOEXEC,
        Some(ipproto::ICMP),
    )?;
    // A rule that drops the request makes the send fail; it was logged all the same.
    match net::sendto(
        &socket,
        &message,
        SendFlags::empty(),
        &SocketAddrV4::new(dest, 0),
    ) {
        Ok(_) | Err(Errno::PERM) => Ok(()),
        Err(err) => Err(err.into()),
    }
}
