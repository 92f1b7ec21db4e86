//! The oracle upstream: a raw TCP listener standing where the app would be. It records every
//! byte that arrives, splits the stream into request heads with httparse (following the
//! framing the forwarder wrote), and answers each head with a fixed `200` (or `101` when the
//! head asks for an upgrade, after which it keeps reading the tunnel as HTTP/1 so that a
//! request smuggled through it is seen too).

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request head as it reached the app.
#[derive(Clone, Debug)]
pub(crate) struct Head {
    pub(crate) method: String,
    pub(crate) target: String,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    /// Read after a `101` on the same connection (inside a tunnel).
    pub(crate) tunneled: bool,
}

/// Everything that reached the app since the last [`Oracle::take`].
#[derive(Debug, Default)]
pub(crate) struct Arrived {
    pub(crate) heads: Vec<Head>,
    /// Bytes that do not parse as HTTP/1 (first 60 bytes of each such stream).
    pub(crate) garbage: Vec<Vec<u8>>,
    pub(crate) bytes: usize,
}

/// The running oracle.
pub(crate) struct Oracle {
    pub(crate) port: u16,
    arrived: Arc<Mutex<Arrived>>,
    task: JoinHandle<()>,
}

const RESPONSE_200: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
const RESPONSE_101: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n";

impl Oracle {
    /// Listens on `127.0.0.1:port` (0: any free port).
    pub(crate) async fn start(port: u16) -> Oracle {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("oracle binds");
        let port = listener.local_addr().expect("oracle addr").port();
        let arrived = Arc::new(Mutex::new(Arrived::default()));
        let shared = arrived.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                connections.spawn(serve(stream, shared.clone()));
            }
        });
        Oracle {
            port,
            arrived,
            task,
        }
    }

    /// What arrived since the last call; the record starts over.
    pub(crate) fn take(&self) -> Arrived {
        std::mem::take(&mut *self.arrived.lock().expect("oracle lock"))
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one connection to its end, recording heads and answering each.
async fn serve(mut stream: TcpStream, arrived: Arc<Mutex<Arrived>>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut tunneled = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        arrived.lock().expect("oracle lock").bytes += n;
        pending.extend_from_slice(&buf[..n]);
        loop {
            match next_message(&pending) {
                Message::Partial => break,
                Message::Garbage => {
                    let sample = pending[..pending.len().min(60)].to_vec();
                    arrived.lock().expect("oracle lock").garbage.push(sample);
                    let _ = stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                        .await;
                    return;
                }
                Message::Complete { mut head, len } => {
                    head.tunneled = tunneled;
                    let upgrade = head
                        .headers
                        .iter()
                        .any(|(name, _)| name.eq_ignore_ascii_case("upgrade"));
                    arrived.lock().expect("oracle lock").heads.push(head);
                    pending.drain(..len);
                    let response = if upgrade { RESPONSE_101 } else { RESPONSE_200 };
                    tunneled |= upgrade;
                    if stream.write_all(response).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

enum Message {
    Partial,
    Garbage,
    Complete { head: Head, len: usize },
}

/// The next request at the start of `bytes`: its head and the length of head plus body.
fn next_message(bytes: &[u8]) -> Message {
    // Leading empty lines before a request line are allowed (RFC 9112 §2.2).
    let skip = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(bytes.len());
    if skip == bytes.len() {
        return Message::Partial;
    }
    let mut fields = [httparse::EMPTY_HEADER; 512];
    let mut request = httparse::Request::new(&mut fields);
    let head_len = match request.parse(&bytes[skip..]) {
        Ok(httparse::Status::Complete(n)) => skip + n,
        Ok(httparse::Status::Partial) => return Message::Partial,
        Err(_) => return Message::Garbage,
    };
    let head = Head {
        method: request.method.unwrap_or_default().to_owned(),
        target: request.path.unwrap_or_default().to_owned(),
        headers: request
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), h.value.to_vec()))
            .collect(),
        tunneled: false,
    };
    let chunked = head.headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("transfer-encoding")
            && String::from_utf8_lossy(value)
                .to_ascii_lowercase()
                .contains("chunked")
    });
    let length = head
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| {
            std::str::from_utf8(value)
                .ok()?
                .trim()
                .parse::<usize>()
                .ok()
        });
    let body_len = if chunked {
        match chunked_len(&bytes[head_len..]) {
            Some(Some(n)) => n,
            Some(None) => return Message::Partial,
            None => return Message::Garbage,
        }
    } else {
        match length {
            Some(n) if bytes.len() - head_len < n => return Message::Partial,
            Some(n) => n,
            None => 0,
        }
    };
    Message::Complete {
        head,
        len: head_len + body_len,
    }
}

/// Length of a chunked body at the start of `bytes`: `Some(None)` if incomplete, `None` if
/// malformed.
fn chunked_len(bytes: &[u8]) -> Option<Option<usize>> {
    let mut at = 0;
    loop {
        let (consumed, size) = match httparse::parse_chunk_size(&bytes[at..]) {
            Ok(httparse::Status::Complete(parsed)) => parsed,
            Ok(httparse::Status::Partial) => return Some(None),
            Err(_) => return None,
        };
        at += consumed;
        if size == 0 {
            // Trailer section, then the final CRLF.
            if bytes.len() < at + 2 {
                return Some(None);
            }
            if &bytes[at..at + 2] == b"\r\n" {
                return Some(Some(at + 2));
            }
            let mut fields = [httparse::EMPTY_HEADER; 64];
            return match httparse::parse_headers(&bytes[at..], &mut fields) {
                Ok(httparse::Status::Complete((n, _))) => Some(Some(at + n)),
                Ok(httparse::Status::Partial) => Some(None),
                Err(_) => None,
            };
        }
        let size = usize::try_from(size).ok()?;
        if bytes.len() < at + size + 2 {
            return Some(None);
        }
        at += size + 2;
    }
}
