//! How much memory is spoken for.
//!
//! The sampled reading lags, and it cannot tell requests apart. So each admitted request is
//! charged in the state word. Until its first poll it is charged an estimate: its
//! `Content-Length` plus what first polls have allocated lately (an average, learned). From
//! then on, where the allocator counts allocations per thread (jemalloc does), it is charged
//! what its polls have really allocated, net, at least its `Content-Length`, updated at the
//! end of every poll. The memory spoken for is `max(reading, baseline + charged)`: the charges
//! cover what the reading has not seen yet, the reading covers what no request was charged
//! for (spawned tasks, caches, other threads), and nothing is counted twice. `baseline` is the
//! reading with nothing in flight.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug)]
pub(crate) struct Footprint {
    baseline: AtomicU64,
    /// What first polls have allocated lately: an exponential average, weight 1/8.
    first_poll: AtomicU64,
}

impl Footprint {
    pub(crate) fn new(memory: u64, initial_estimate: u64) -> Self {
        Self {
            baseline: AtomicU64::new(memory),
            first_poll: AtomicU64::new(initial_estimate),
        }
    }

    /// What to charge a request, on top of its `Content-Length`, until its first poll.
    pub(crate) fn first_poll_estimate(&self) -> u64 {
        self.first_poll.load(Relaxed)
    }

    /// Learns from what one first poll allocated. A lost update between racing requests
    /// only drops one sample from the average.
    pub(crate) fn learn_first_poll(&self, allocated: u64) {
        let average = self.first_poll.load(Relaxed);
        let average = average - average / 8 + allocated / 8;
        self.first_poll.store(average, Relaxed);
    }

    /// Memory spoken for, given the last reading and the bytes charged to requests in flight.
    pub(crate) fn committed(&self, memory: u64, charged: u64) -> u64 {
        memory.max(self.baseline.load(Relaxed).saturating_add(charged))
    }

    /// Learns the baseline from a fresh reading taken with `in_flight` requests in flight.
    pub(crate) fn observe(&self, memory: u64, in_flight: u64) {
        if in_flight == 0 {
            self.baseline.store(memory, Relaxed);
        } else {
            // Memory below the baseline means the baseline has shrunk (a cache was dropped).
            self.baseline.fetch_min(memory, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn charges_cover_what_the_reading_has_not_seen_and_nothing_counts_twice() {
        let f = Footprint::new(10 * MIB, MIB);
        // 5 MiB charged, nothing allocated yet as far as the reading knows.
        assert_eq!(f.committed(10 * MIB, 5 * MIB), 15 * MIB);
        // The reading sees 8 MiB more (3 of them charged to no request).
        assert_eq!(f.committed(18 * MIB, 5 * MIB), 18 * MIB);
    }

    #[test]
    fn learns_what_first_polls_allocate() {
        let f = Footprint::new(0, MIB);
        for _ in 0..100 {
            f.learn_first_poll(16 << 10);
        }
        assert!(
            f.first_poll_estimate() < 20 << 10,
            "{}",
            f.first_poll_estimate()
        );
        f.learn_first_poll(64 * MIB);
        assert!(f.first_poll_estimate() >= 8 * MIB);
    }

    #[test]
    fn the_baseline_follows_idle_readings_and_shrinks_under_load() {
        let f = Footprint::new(10 * MIB, MIB);
        f.observe(20 * MIB, 0);
        assert_eq!(f.committed(0, MIB), 21 * MIB);
        f.observe(30 * MIB, 3);
        assert_eq!(f.committed(0, MIB), 21 * MIB);
        f.observe(5 * MIB, 3);
        assert_eq!(f.committed(0, MIB), 6 * MIB);
    }
}
