//! How much memory is spoken for.
//!
//! The sampled reading lags, and it cannot tell requests apart; so each admitted request is
//! charged in the state word (see [`super::permit`]). The memory spoken for is
//! `max(reading, baseline + charged)`: the charges cover what the reading has not seen yet,
//! the reading covers what no request was charged for (spawned tasks, caches, other threads),
//! and nothing is counted twice. `baseline` is the reading with nothing in flight.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug)]
pub(crate) struct Footprint {
    baseline: AtomicU64,
}

impl Footprint {
    pub(crate) fn new(memory: u64) -> Self {
        Self {
            baseline: AtomicU64::new(memory),
        }
    }

    /// The reading with nothing in flight.
    pub(crate) fn baseline(&self) -> u64 {
        self.baseline.load(Relaxed)
    }

    /// Memory spoken for, given the last reading and the bytes charged to requests in flight.
    pub(crate) fn spoken_for(&self, memory: u64, charged: u64) -> u64 {
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
        let f = Footprint::new(10 * MIB);
        // 5 MiB charged, nothing allocated yet as far as the reading knows.
        assert_eq!(f.spoken_for(10 * MIB, 5 * MIB), 15 * MIB);
        // The reading sees 8 MiB more (3 of them charged to no request).
        assert_eq!(f.spoken_for(18 * MIB, 5 * MIB), 18 * MIB);
    }

    #[test]
    fn the_baseline_follows_idle_readings_and_shrinks_under_load() {
        let f = Footprint::new(10 * MIB);
        f.observe(20 * MIB, 0);
        assert_eq!(f.spoken_for(0, MIB), 21 * MIB);
        f.observe(30 * MIB, 3);
        assert_eq!(f.spoken_for(0, MIB), 21 * MIB);
        f.observe(5 * MIB, 3);
        assert_eq!(f.spoken_for(0, MIB), 6 * MIB);
    }
}
