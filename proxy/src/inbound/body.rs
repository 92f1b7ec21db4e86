//! Request bodies on their way to the app: a client must keep its body moving (slow POST).
//!
//! Takes the body hyper received; passes on a [`ProgressBody`] that fails with
//! [`BodyError::Stalled`] when the client delivers nothing for the progress interval while
//! the app is waiting for more. Time the app spends not reading does not count.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::telemetry::observe::Judgement;

/// A request body that must make progress.
#[derive(Debug)]
pub struct ProgressBody {
    inner: Incoming,
    interval: Duration,
    /// Armed on the first wait, so bodies that are already complete never touch the timer.
    deadline: Option<Pin<Box<Sleep>>>,
    waiting: bool,
    /// Where the bytes read are counted, when the access log or a span wants them.
    counted: Option<Judgement>,
}

/// Reading the request body failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client sent nothing for the whole interval.
    #[error("request body made no progress for {0:?}")]
    Stalled(Duration),
    /// The client's connection failed.
    #[error("cannot read the request body")]
    Client(#[source] hyper::Error),
}

// === impl ProgressBody ===

impl ProgressBody {
    pub(crate) fn new(inner: Incoming, interval: Duration, counted: Option<Judgement>) -> Self {
        Self {
            inner,
            interval,
            deadline: None,
            waiting: false,
            counted,
        }
    }
}

impl Body for ProgressBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.waiting = false;
            if let (Some(counted), Some(Ok(frame))) = (&this.counted, &frame)
                && let Some(data) = frame.data_ref()
            {
                counted.body_read(data.len() as u64);
            }
            return Poll::Ready(frame.map(|result| result.map_err(BodyError::Client)));
        }
        let interval = this.interval;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
        if !this.waiting {
            // The app asked for more and the client has nothing yet: its clock starts now.
            deadline.as_mut().reset(Instant::now() + interval);
            this.waiting = true;
        }
        ready!(deadline.as_mut().poll(cx));
        Poll::Ready(Some(Err(BodyError::Stalled(interval))))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
