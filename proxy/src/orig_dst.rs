//! Step 1 of a redirected connection: where did the client mean to go?
//!
//! Takes an accepted socket that iptables' `REDIRECT` target sent to one of palisade's
//! listeners (`palisade init` installs those rules) and passes on the address the client
//! originally connected to, read from conntrack with `SO_ORIGINAL_DST` (IPv4) or
//! `IP6T_SO_ORIGINAL_DST` (IPv6). The inbound side forwards to the app on that port; the
//! outbound side decides from it whether the destination is in the mesh.
//!
//! A connection that was not redirected has no NAT entry: the kernel then answers with the
//! socket's own local address (or `ENOENT` without conntrack). Callers compare the answer
//! with [`TcpStream::local_addr`] to tell the two apart (see [`redirected`]).

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpStream;

/// The destination `stream`'s client originally connected to, before an iptables
/// `REDIRECT` rewrote it.
///
/// # Errors
///
/// The socket's address cannot be read, the kernel has no original destination for it
/// (conntrack not loaded), or the platform is not Linux ([`io::ErrorKind::Unsupported`]).
pub fn orig_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let local = stream.local_addr()?;
    read(stream, local)
}

/// The original destination of `stream` if it differs from the socket's own address, i.e.
/// if the connection was redirected; `None` when the client connected to the listener
/// directly.
///
/// # Errors
///
/// As [`orig_dst`], except that a missing conntrack entry (`ENOENT`) counts as "not
/// redirected".
pub fn redirected(stream: &TcpStream) -> io::Result<Option<SocketAddr>> {
    let local = stream.local_addr()?;
    match read(stream, local) {
        Ok(original) if same(original, local) => Ok(None),
        Ok(original) => Ok(Some(original)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// Equal addresses, treating an IPv4-mapped IPv6 address as its IPv4 form.
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && a.ip().to_canonical() == b.ip().to_canonical()
}

#[cfg(target_os = "linux")]
fn read(stream: &TcpStream, local: SocketAddr) -> io::Result<SocketAddr> {
    let socket = socket2::SockRef::from(stream);
    // A dual-stack listener sees IPv4 clients as IPv4-mapped IPv6; conntrack still holds
    // them under IPv4.
    let original = if local.ip().to_canonical().is_ipv4() {
        socket.original_dst_v4()?
    } else {
        socket.original_dst_v6()?
    };
    original.as_socket().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "the original destination is not an internet address",
        )
    })
}

#[cfg(not(target_os = "linux"))]
fn read(_stream: &TcpStream, _local: SocketAddr) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "the original destination can only be read on linux",
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::net::TcpListener;

    /// A plain loopback connection was not redirected: either the kernel reports the
    /// listener's own address (conntrack loaded) or no entry at all.
    #[tokio::test]
    async fn direct_connection_is_not_redirected() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        assert_eq!(redirected(&server).unwrap(), None);
        if let Ok(original) = orig_dst(&server) {
            assert_eq!(original, addr);
        }
    }

    #[test]
    fn mapped_ipv4_equals_ipv4() {
        let v4: SocketAddr = "10.1.2.3:80".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:10.1.2.3]:80".parse().unwrap();
        let other_port: SocketAddr = "10.1.2.3:81".parse().unwrap();
        assert!(same(v4, mapped));
        assert!(!same(v4, other_port));
    }
}
