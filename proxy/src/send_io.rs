//! A byte stream whose writes of one buffer are `send(2)`, not `writev(2)`.
//!
//! rustls (through tokio-rustls) and hyper write through `poll_write_vectored`, and tokio's
//! `TcpStream` makes every vectored write a `writev(2)`, even of a single buffer. Nearly every
//! write the proxy makes is one buffer: one TLS record to the client, one request head to the
//! app. On Linux `writev` goes through the VFS (`fdget_pos`, the iovec array copied in from
//! user space, `rw_verify_area`) before it reaches the socket; `send` goes to the socket
//! directly (perf put the difference at about 2% of the proxy's CPU; BENCHMARKS.md).
//! [`SendIo`] passes a write of one non-empty buffer to `poll_write` (which `TcpStream`
//! makes a `send`) and keeps `writev` for several.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Wraps a stream; reads and single-buffer writes go straight through, see the module doc.
#[derive(Debug)]
pub struct SendIo<T>(pub T);

impl<T: AsyncRead + Unpin> AsyncRead for SendIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut filled = bufs.iter().filter(|buf| !buf.is_empty());
        match (filled.next(), filled.next()) {
            (None, _) => Poll::Ready(Ok(0)),
            (Some(one), None) => Pin::new(&mut self.0).poll_write(cx, one),
            _ => Pin::new(&mut self.0).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Every shape of vectored write arrives whole and in order: none, one buffer among empty
    /// ones, several.
    #[tokio::test]
    async fn vectored_writes_arrive_in_order() {
        let (client, mut server) = tokio::io::duplex(64);
        let mut io = SendIo(client);
        let empty = IoSlice::new(b"");
        assert_eq!(io.write_vectored(&[]).await.unwrap(), 0);
        assert_eq!(io.write_vectored(&[empty]).await.unwrap(), 0);
        let one = [empty, IoSlice::new(b"head"), empty];
        assert_eq!(io.write_vectored(&one).await.unwrap(), 4);
        let two = [IoSlice::new(b"-a"), empty, IoSlice::new(b"-b")];
        assert_eq!(io.write_vectored(&two).await.unwrap(), 4);
        io.shutdown().await.unwrap();
        let mut got = String::new();
        server.read_to_string(&mut got).await.unwrap();
        assert_eq!(got, "head-a-b");
    }
}
