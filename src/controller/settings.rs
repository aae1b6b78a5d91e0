//! The resolved limits of one pool, as the controller reads them.

use std::time::Duration;

use super::queue::QueueTarget;
use crate::memory::MemoryFailure;

/// The resolved limits of one pool.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) max_concurrency: usize,
    pub(crate) budget: Option<u64>,
    pub(crate) queue_capacity: usize,
    /// What a request of a class not seen before is charged, on top of its `Content-Length`.
    pub(crate) initial_estimate: u64,
    pub(crate) memory_failure: MemoryFailure,
    pub(crate) sample_interval: Duration,
    /// Whether admitted requests carry a [`Reservation`](crate::Reservation).
    pub(crate) reservations: bool,
    /// Slots and bytes of the budget only `Critical` requests may use.
    pub(crate) critical_slots: usize,
    pub(crate) critical_bytes: u64,
    /// The runtime lateness above which the live limit falls; `None`: the limit is fixed at
    /// `max_concurrency` (see [`adaptive`](super::adaptive)).
    pub(crate) lateness_target: Option<Duration>,
    /// Where the live limit starts (its slow start).
    pub(crate) initial_limit: usize,
    /// How long a waiter held back by the CPU may wait (see [`queue`](super::queue)).
    pub(crate) queue_target: QueueTarget,
    /// The workers that run requests, until the runtime tells.
    pub(crate) workers: usize,
    /// Count what would be rejected, and admit everything (see
    /// [`observe_only`](super::observe_only)).
    pub(crate) observe_only: bool,
    /// The most connections a listener made from the pool keeps open (see
    /// [`connections`](super::connections)).
    pub(crate) max_connections: Option<usize>,
}

#[cfg(test)]
impl Settings {
    /// Settings for tests: a 1 MiB initial estimate, failing open, sampling every 10 ms.
    pub(crate) fn for_tests(
        max_concurrency: usize,
        budget: Option<u64>,
        queue_capacity: usize,
    ) -> Self {
        Self {
            max_concurrency,
            budget,
            queue_capacity,
            initial_estimate: 1 << 20,
            memory_failure: MemoryFailure::Open,
            sample_interval: Duration::from_millis(10),
            reservations: false,
            critical_slots: 0,
            critical_bytes: 0,
            lateness_target: None,
            initial_limit: max_concurrency,
            queue_target: QueueTarget::Off,
            workers: 2,
            observe_only: false,
            max_connections: None,
        }
    }
}
