//! Step 2 (permissive mode only), detect: tells a TLS client from a plaintext one by peeking
//! at the first byte of the connection, without consuming it.
//!
//! Takes the accepted socket; passes on [`Protocol::Tls`] (go on to the handshake) or
//! [`Protocol::Plaintext`] (serve HTTP with the peer `unauthenticated`). In strict mode this
//! step is skipped: every connection must complete a TLS handshake.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

/// First byte of a TLS record carrying a handshake message (a ClientHello). No HTTP method
/// starts with it: methods are tokens of visible ASCII characters.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What the client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// The first byte starts a TLS handshake record.
    Tls,
    /// Anything else: treated as plaintext HTTP (HTTP/1.1, or h2c with prior knowledge).
    Plaintext,
}

/// The first byte could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The client sent nothing within the detect timeout.
    #[error("client sent nothing within {0:?}")]
    TimedOut(Duration),
    /// The client closed the connection before sending anything.
    #[error("client closed the connection before sending anything")]
    Closed,
    /// Reading from the socket failed.
    #[error("cannot read from the client")]
    Io(#[source] io::Error),
}

/// Peeks at the first byte of `stream`, waiting at most `timeout`.
pub async fn detect(stream: &TcpStream, timeout: Duration) -> Result<Protocol, DetectError> {
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(timeout, stream.peek(&mut first))
        .await
        .map_err(|_| DetectError::TimedOut(timeout))?
        .map_err(DetectError::Io)?;
    match (peeked, first[0]) {
        (0, _) => Err(DetectError::Closed),
        (_, TLS_HANDSHAKE_RECORD) => Ok(Protocol::Tls),
        _ => Ok(Protocol::Plaintext),
    }
}
