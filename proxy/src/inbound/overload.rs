//! Overload protection for one inbound listener: a cap on the requests in flight over all
//! its connections, checked where hyper hands a request to the [`stack`](super::stack).
//!
//! Takes each request as it arrives; passes on a [`Permit`], which the response body holds
//! until it ends, or [`Overloaded`], which the client gets at once as 503
//! `service_unavailable` (from [`respond`](super::respond)) and telemetry records as a
//! request with no decision (`invalid`, its `Display` the reason). Nothing waits for a
//! place: a flood costs a bounded amount of memory and app connections, and the client can
//! retry elsewhere.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The cap of one listener: how many requests may be in flight at once.
#[derive(Debug)]
pub(crate) struct RequestLimit {
    permits: Arc<Semaphore>,
    max: usize,
}

/// One request's place under the cap; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct Permit {
    _permit: OwnedSemaphorePermit,
}

/// The listener already had its most requests in flight.
#[derive(Debug, thiserror::Error)]
#[error("overloaded: {max} requests in flight, the most this listener takes")]
pub(crate) struct Overloaded {
    max: usize,
}

// === impl RequestLimit ===

impl RequestLimit {
    /// A cap of `max` requests in flight (at least 1).
    pub(crate) fn new(max: usize) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A place for one more request, if there is one; never waits.
    pub(crate) fn try_admit(&self) -> Result<Permit, Overloaded> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok(Permit { _permit: permit }),
            // The semaphore is never closed: the only failure is "no place left".
            Err(_) => Err(Overloaded { max: self.max }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_cap_and_again_once_a_place_is_given_back() {
        let limit = RequestLimit::new(2);
        let first = limit.try_admit().unwrap();
        let _second = limit.try_admit().unwrap();
        let refused = limit.try_admit().unwrap_err();
        assert_eq!(
            refused.to_string(),
            "overloaded: 2 requests in flight, the most this listener takes"
        );
        drop(first);
        assert!(limit.try_admit().is_ok());
    }

    #[test]
    fn a_cap_of_zero_still_admits_one() {
        let limit = RequestLimit::new(0);
        let _only = limit.try_admit().unwrap();
        assert!(limit.try_admit().is_err());
    }
}
