//! Wakers that tell which part of a connection's task was woken, so that a poll of the task
//! polls only the parts that have something to do: a tool of the HTTP step, used where one
//! task drives hyper's connection with its h2 streams ([`streams`](super::streams)), and the
//! connection with the drain and idle signals (`serve::drive`).
//!
//! Each part (a bit) gets a [`Waker`] of its own from [`PartWakers::waker`]. Waking it marks
//! the part as woken and wakes the task, unless the task is inside its poll (between
//! [`PartWakers::hold`] and [`PartWakers::release`]): the poll then sees the mark before it
//! returns, and the task is not scheduled once more for nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Wake, Waker};

use futures_util::task::AtomicWaker;

/// The marks of one task's parts and the waker of the task.
#[derive(Debug)]
pub(crate) struct PartWakers {
    shared: Arc<Marks>,
}

/// The parts woken (one bit each) and, in [`POLLING`], whether the task is inside its poll:
/// one atomic, so that a wake-up and the end of a poll cannot miss each other.
#[derive(Debug)]
struct Marks {
    state: AtomicU8,
    task: AtomicWaker,
}

/// The waker of one part.
#[derive(Debug)]
struct PartWaker {
    marks: Arc<Marks>,
    part: u8,
}

/// Set while the task is inside its poll.
const POLLING: u8 = 1 << 7;

// === impl PartWakers ===

impl PartWakers {
    /// Marks for parts given as bits below `1 << 7`; those in `woken` start marked (a part
    /// not polled yet has registered no waker, so it needs its first poll).
    pub(crate) fn new(woken: u8) -> Self {
        Self {
            shared: Arc::new(Marks {
                state: AtomicU8::new(woken & !POLLING),
                task: AtomicWaker::new(),
            }),
        }
    }

    /// The waker of `part` (one bit): poll the part with it.
    pub(crate) fn waker(&self, part: u8) -> Waker {
        Waker::from(Arc::new(PartWaker {
            marks: self.shared.clone(),
            part,
        }))
    }

    /// Enters the poll of the task `cx` wakes: returns the parts woken since the last call
    /// and clears their marks. Until [`PartWakers::release`], a part woken is only marked.
    pub(crate) fn hold(&self, cx: &Context<'_>) -> u8 {
        self.shared.task.register(cx.waker());
        self.shared.state.swap(POLLING, Ordering::AcqRel) & !POLLING
    }

    /// Leaves the poll: returns the parts woken since [`PartWakers::hold`] (their marks stay
    /// for the next `hold`; poll again if any). From now on a part woken wakes the task.
    pub(crate) fn release(&self) -> u8 {
        self.shared.state.fetch_and(!POLLING, Ordering::AcqRel) & !POLLING
    }
}

// === impl PartWaker ===

impl Wake for PartWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let before = self.marks.state.fetch_or(self.part, Ordering::AcqRel);
        if before & POLLING == 0 {
            self.marks.task.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// Counts the wake-ups of the task.
    struct CountWakes(AtomicUsize);

    impl Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    const A: u8 = 1;
    const B: u8 = 2;

    #[test]
    fn wakes_task_and_marks_part_outside_poll() {
        let count = Arc::new(CountWakes(AtomicUsize::new(0)));
        let task = Waker::from(count.clone());
        let cx = Context::from_waker(&task);
        let parts = PartWakers::new(A | B);
        assert_eq!(parts.hold(&cx), A | B, "parts start marked");
        assert_eq!(parts.release(), 0);
        parts.waker(B).wake_by_ref();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(parts.hold(&cx), B);
        assert_eq!(parts.release(), 0);
    }

    #[test]
    fn only_marks_part_inside_poll() {
        let count = Arc::new(CountWakes(AtomicUsize::new(0)));
        let task = Waker::from(count.clone());
        let cx = Context::from_waker(&task);
        let parts = PartWakers::new(0);
        assert_eq!(parts.hold(&cx), 0);
        parts.waker(A).wake();
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            0,
            "no wake-up inside the poll"
        );
        assert_eq!(parts.release(), A, "the poll sees the mark as it leaves");
        assert_eq!(parts.hold(&cx), A, "and takes it on the next round");
        assert_eq!(parts.release(), 0);
        parts.waker(A).wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
    }
}
