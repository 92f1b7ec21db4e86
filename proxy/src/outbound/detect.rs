//! Step 2b of a meshed outbound connection: is the app speaking HTTP/2 (h2c with prior
//! knowledge, e.g. gRPC)?
//!
//! Takes the app's socket and peeks (reads nothing away) at its first bytes; passes on a
//! [`Protocol`] that picks the ALPN offered to the peer. The peer's inbound side chooses
//! HTTP/2 or HTTP/1.1 from ALPN alone, so an h2c app behind a plain L4 tunnel would otherwise
//! be parsed as HTTP/1.1.
//!
//! Only the HTTP/2 connection preface counts; anything else (HTTP/1.1, TLS, a database
//! protocol) is carried as opaque bytes with no ALPN. A server-first protocol (the app waits
//! for the peer to speak) sends nothing: after the detect timeout the connection proceeds as
//! opaque. Ports listed as opaque skip this wait.

use std::time::Duration;

use tokio::net::TcpStream;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the app's first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// The HTTP/2 preface: offer ALPN `h2`.
    H2,
    /// Anything else, or nothing in time: no ALPN (the peer treats it as HTTP/1.1 or, on an
    /// opaque port, as bytes).
    Opaque,
}

/// Peeks at `app` for at most `limit` and classifies its first bytes.
pub(crate) async fn detect(app: &TcpStream, limit: Duration) -> Protocol {
    let peek = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            let n = match app.peek(&mut buf).await {
                Ok(0) | Err(_) => return Protocol::Opaque,
                Ok(n) => n,
            };
            match classify(&buf[..n]) {
                Some(protocol) => return protocol,
                // A proper prefix of the preface: peeking again at once would spin on the
                // same bytes; give the rest a moment to arrive.
                None => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    };
    tokio::time::timeout(limit, peek)
        .await
        .unwrap_or(Protocol::Opaque)
}

/// `Some` once `bytes` decide; `None` while they are a proper prefix of the h2 preface.
fn classify(bytes: &[u8]) -> Option<Protocol> {
    if bytes.len() >= H2_PREFACE.len() {
        return Some(if bytes.starts_with(H2_PREFACE) {
            Protocol::H2
        } else {
            Protocol::Opaque
        });
    }
    if H2_PREFACE.starts_with(bytes) {
        None
    } else {
        Some(Protocol::Opaque)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn classifies_first_bytes() {
        let table: &[(&[u8], Option<Protocol>)] = &[
            (H2_PREFACE, Some(Protocol::H2)),
            (
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04",
                Some(Protocol::H2),
            ),
            (b"PRI * HTTP/2", None),
            (b"P", None),
            (b"GET / HTTP/1.1\r\n", Some(Protocol::Opaque)),
            (
                b"POST /x HTTP/1.1\r\nhost: a\r\n\r\n",
                Some(Protocol::Opaque),
            ),
            (b"PRI * HTTP/1.1\r\n\r\nXX\r\n\r\n", Some(Protocol::Opaque)),
            (b"\x16\x03\x01\x02\x00", Some(Protocol::Opaque)),
        ];
        for (bytes, expected) in table {
            assert_eq!(
                classify(bytes),
                *expected,
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[tokio::test]
    async fn a_silent_client_is_opaque_after_the_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let protocol = detect(&server, Duration::from_millis(50)).await;
        assert_eq!(protocol, Protocol::Opaque);
    }

    #[tokio::test]
    async fn a_preface_in_two_writes_is_h2() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        client.set_nodelay(true).unwrap();
        client.write_all(&H2_PREFACE[..5]).await.unwrap();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            client.write_all(&H2_PREFACE[5..]).await.unwrap();
            client
        });
        assert_eq!(detect(&server, Duration::from_secs(5)).await, Protocol::H2);
        drop(writer.await.unwrap());
    }
}
