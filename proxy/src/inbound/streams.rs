//! The h2 streams of one connection, run in that connection's own task rather than one tokio
//! task each (as Envoy keeps a connection's streams on its worker): part of the HTTP step,
//! between hyper's h2 server and the [`stack`](super::stack).
//!
//! hyper's h2 server hands every stream it accepts (the service call, then the response
//! body) to its executor. [`StreamExecutor`] keeps them; [`WithStreams`], the connection
//! future with its streams, polls hyper's connection and each stream that was woken, and
//! completes once the connection has ended and every one of its streams has finished. So a
//! stream costs no task of its own (allocation, the runtime's task list, scheduling), and a
//! response the app sends is written by the same poll that produced it.
//!
//! Nothing changes for the streams themselves: hyper still bounds them by
//! `max_concurrent_streams` and the reset limits, a graceful shutdown (GOAWAY) still lets the
//! open ones finish (hyper's connection does not end before they have), and a stream waiting
//! for the app still makes progress while the connection has nothing to do.
//!
//! Only connections whose TLS handshake chose h2 are served this way; a plaintext connection
//! (permissive mode, served by hyper's `auto`) still gives each of its h2 streams a task.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use futures_util::stream::{FuturesUnordered, StreamExt};

use super::wakers::PartWakers;

/// One stream as hyper hands it over.
type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor of one connection's h2 server: keeps each stream hyper hands it until
/// [`WithStreams`] takes it in. Cloned into hyper's connection and its streams, and called
/// only while [`WithStreams`] polls them.
#[derive(Clone)]
pub(crate) struct StreamExecutor {
    handed: Arc<Mutex<Vec<Stream>>>,
}

/// A connection future `C` and the streams its executor was handed: completes with `C`'s
/// output once `C` has completed and all the streams have too.
pub(crate) struct WithStreams<C: Future> {
    /// `None` once it has completed: dropped then, with the socket, as it would be if the
    /// streams ran on their own tasks.
    connection: Option<Pin<Box<C>>>,
    ended: Option<C::Output>,
    graceful_shutdown: fn(Pin<&mut C>),
    handed: Arc<Mutex<Vec<Stream>>>,
    running: FuturesUnordered<Stream>,
    /// The two parts, [`CONNECTION`] and [`STREAMS`], each with a waker of its own, so that a
    /// poll polls only the side that has something to do.
    parts: PartWakers,
    connection_waker: Waker,
    streams_waker: Waker,
}

/// The part of [`WithStreams`] that is hyper's connection.
const CONNECTION: u8 = 1;
/// The part of [`WithStreams`] that is the streams (`FuturesUnordered` wakes its waker when
/// one of them is woken).
const STREAMS: u8 = 2;

/// How many rounds (connection, then the woken streams) one poll makes before it lets other
/// tasks run, so that a stream that keeps waking itself cannot hold the thread.
const ROUNDS_PER_POLL: usize = 8;

// === impl StreamExecutor ===

impl StreamExecutor {
    /// An executor with no streams yet; hand it to [`WithStreams::new`] with the connection
    /// it serves.
    pub(crate) fn new() -> Self {
        Self {
            handed: Arc::default(),
        }
    }
}

impl<F> hyper::rt::Executor<F> for StreamExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        // Not run here: hyper calls this from inside the connection's (or a stream's) poll,
        // and `WithStreams` polls the new stream once that poll returns.
        self.handed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::pin(stream));
    }
}

// === impl WithStreams ===

impl<C: Future> WithStreams<C> {
    /// `connection`, whose streams go to `executor`; `graceful_shutdown` asks it to finish
    /// (see [`WithStreams::finish`]).
    pub(crate) fn new(
        connection: C,
        executor: StreamExecutor,
        graceful_shutdown: fn(Pin<&mut C>),
    ) -> Self {
        // The first poll polls the connection.
        let parts = PartWakers::new(CONNECTION);
        Self {
            connection: Some(Box::pin(connection)),
            ended: None,
            graceful_shutdown,
            handed: executor.handed,
            running: FuturesUnordered::new(),
            connection_waker: parts.waker(CONNECTION),
            streams_waker: parts.waker(STREAMS),
            parts,
        }
    }

    /// Asks the connection to finish gracefully (h2: GOAWAY, the open streams finish); does
    /// nothing once it has ended.
    pub(crate) fn finish(self: Pin<&mut Self>) {
        let this = self.get_mut();
        if let Some(connection) = this.connection.as_mut() {
            (this.graceful_shutdown)(connection.as_mut());
            // The connection has a GOAWAY to send: the next poll must poll it.
            this.connection_waker.wake_by_ref();
        }
    }

    /// Takes in the streams the executor was handed; true if there were any.
    fn take_handed(&mut self) -> bool {
        let mut handed = self.handed.lock().unwrap_or_else(PoisonError::into_inner);
        let any = !handed.is_empty();
        for stream in handed.drain(..) {
            self.running.push(stream);
        }
        any
    }

    /// One round over the `woken` parts: the connection, then the streams that were woken
    /// (new ones included).
    fn round(&mut self, woken: u8) {
        if woken & CONNECTION != 0
            && let Some(connection) = self.connection.as_mut()
        {
            let mut cx = Context::from_waker(&self.connection_waker);
            if let Poll::Ready(output) = connection.as_mut().poll(&mut cx) {
                self.ended = Some(output);
                self.connection = None;
            }
        }
        if self.take_handed() || woken & STREAMS != 0 {
            let mut cx = Context::from_waker(&self.streams_waker);
            loop {
                // A stream that panics ends alone, as a task of its own would:
                // `FuturesUnordered` drops it and stays usable.
                let polled =
                    panic::catch_unwind(AssertUnwindSafe(|| self.running.poll_next_unpin(&mut cx)));
                match polled {
                    Ok(Poll::Ready(Some(()))) | Err(_) => {}
                    // `Ready(None)` once none is left; `Pending` when none is ready (or after
                    // a round of them: the streams' waker is woken then, and the next round
                    // goes on).
                    Ok(Poll::Ready(None) | Poll::Pending) => break,
                }
            }
            // A stream may have been handed one (an upgrade): the next round polls it.
            if self.take_handed() {
                self.streams_waker.wake_by_ref();
            }
        }
    }
}

impl<C: Future> Future for WithStreams<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = self.get_mut();
        for _ in 0..ROUNDS_PER_POLL {
            let woken = this.parts.hold(cx);
            this.round(woken);
            if this.connection.is_none()
                && this.running.is_empty()
                && let Some(output) = this.ended.take()
            {
                this.parts.release();
                return Poll::Ready(output);
            }
            // Parts woken during the round (a stream's response wakes the connection, which
            // writes it) get the next round; otherwise their wakers wake the task from now on.
            if this.parts.release() == 0 {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

// Nothing in it is pinned: the connection sits in its own box, the streams in theirs.
impl<C: Future> Unpin for WithStreams<C> {}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::time::Duration;

    use hyper::rt::Executor;
    use tokio::sync::oneshot;

    use super::*;

    /// A connection that completes once asked to finish, like hyper's after GOAWAY with no
    /// stream open.
    struct Closable {
        asked: bool,
    }

    impl Future for Closable {
        type Output = Result<(), ()>;

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            if self.asked {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
    }

    fn close(connection: Pin<&mut Closable>) {
        connection.get_mut().asked = true;
    }

    /// Hands `executor` a stream that waits for the app's answer, then says it has sent
    /// the response: the answer's sender and the "sent" receiver.
    fn hand_waiting_stream(
        executor: &StreamExecutor,
    ) -> (oneshot::Sender<()>, oneshot::Receiver<()>) {
        let (respond, response) = oneshot::channel::<()>();
        let (sent, was_sent) = oneshot::channel();
        executor.execute(async move {
            let _ = response.await;
            let _ = sent.send(());
        });
        (respond, was_sent)
    }

    /// Drives `with` until the stream behind `was_sent` has sent its response; the
    /// connection itself must not end meanwhile.
    async fn expect_sent(with: &mut WithStreams<Closable>, was_sent: oneshot::Receiver<()>) {
        tokio::select! {
            _ = with => panic!("the connection was not asked to finish"),
            sent = was_sent => assert_eq!(sent, Ok(())),
            () = tokio::time::sleep(Duration::from_secs(5)) => panic!("the stream never ran"),
        }
    }

    /// Polls `future` once.
    async fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
        poll_fn(|cx| Poll::Ready(Pin::new(&mut *future).poll(cx))).await
    }

    #[tokio::test]
    async fn ends_only_after_its_streams() {
        let executor = StreamExecutor::new();
        let (respond, response) = oneshot::channel::<()>();
        let (sent, was_sent) = oneshot::channel();
        let handing = executor.clone();
        // The connection hands over a stream waiting for the app, then ends.
        let connection = async move {
            handing.execute(async move {
                let _ = response.await;
                let _ = sent.send(());
            });
            Ok::<(), ()>(())
        };
        let mut with = WithStreams::new(connection, executor, |_| {});
        assert!(
            poll_once(&mut with).await.is_pending(),
            "a stream still runs"
        );
        respond.send(()).expect("the stream waits");
        let ended = tokio::time::timeout(Duration::from_secs(5), with).await;
        assert_eq!(ended, Ok(Ok(())));
        assert_eq!(was_sent.await, Ok(()), "the stream ran to its end");
    }

    #[tokio::test]
    async fn stream_runs_while_connection_waits() {
        let executor = StreamExecutor::new();
        let (respond, was_sent) = hand_waiting_stream(&executor);
        let mut with = WithStreams::new(Closable { asked: false }, executor, close);
        assert!(poll_once(&mut with).await.is_pending());
        // Woken from another task while the connection has nothing to do.
        tokio::spawn(async move { respond.send(()) });
        expect_sent(&mut with, was_sent).await;
    }

    #[tokio::test]
    async fn a_stream_that_panics_ends_alone() {
        let executor = StreamExecutor::new();
        let (respond, was_sent) = hand_waiting_stream(&executor);
        executor.execute(async { panic!("a stream panics (expected by this test)") });
        let mut with = WithStreams::new(Closable { asked: false }, executor, close);
        assert!(
            poll_once(&mut with).await.is_pending(),
            "the connection still runs"
        );
        respond.send(()).expect("the other stream still waits");
        expect_sent(&mut with, was_sent).await;
    }

    #[tokio::test]
    async fn finish_reaches_the_connection() {
        let executor = StreamExecutor::new();
        let mut with = WithStreams::new(Closable { asked: false }, executor, close);
        assert!(poll_once(&mut with).await.is_pending());
        Pin::new(&mut with).finish();
        assert_eq!(poll_once(&mut with).await, Poll::Ready(Ok(())));
    }
}
