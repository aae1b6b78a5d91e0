//! How much memory is spoken for, and what the next request will need.
//!
//! The sampled reading lags: a request admitted a moment ago has not allocated yet. So each
//! admitted request reserves an estimate, and the memory spoken for is
//! `max(sampled, baseline + reserved)`: the reading already counts requests that have
//! allocated (without counting them twice), and the reservations cover those that have not.
//! `baseline` is the reading with nothing in flight.
//!
//! The estimate starts at the configured figure and is then learned: at every sample with
//! requests in flight, `(sampled - baseline) / in_flight` is what an average request holds.
//! It rises at once and decays by a tenth per sample, so a burst of large requests is seen
//! immediately and a return to small ones within about half a second at the default interval.
//! It never exceeds an eighth of the budget: one huge request in flight must not make every
//! request after it look huge (the reading still counts what the huge one holds).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The smallest learned estimate: a request always costs something.
const FLOOR: u64 = 4 << 10;

#[derive(Debug)]
pub(crate) struct Footprint {
    baseline: AtomicU64,
    per_request: AtomicU64,
    ceiling: u64,
}

impl Footprint {
    /// `budget` caps the learned estimate at an eighth of it.
    pub(crate) fn new(memory: u64, initial_estimate: u64, budget: Option<u64>) -> Self {
        Self {
            baseline: AtomicU64::new(memory),
            per_request: AtomicU64::new(initial_estimate),
            ceiling: budget.map_or(u64::MAX, |b| (b / 8).max(FLOOR)),
        }
    }

    /// The bytes to reserve for a request that declared `declared` body bytes.
    pub(crate) fn estimate(&self, declared: u64) -> u64 {
        declared.saturating_add(self.per_request.load(Relaxed))
    }

    /// The learned per-request estimate.
    pub(crate) fn per_request(&self) -> u64 {
        self.per_request.load(Relaxed)
    }

    /// Memory spoken for, given the last reading and the bytes reserved by requests in flight.
    pub(crate) fn committed(&self, memory: u64, reserved: u64) -> u64 {
        memory.max(self.baseline.load(Relaxed).saturating_add(reserved))
    }

    /// Learns from a fresh reading taken with `in_flight` requests in flight. Called by the
    /// sampler thread only.
    pub(crate) fn observe(&self, memory: u64, in_flight: u64) {
        if in_flight == 0 {
            self.baseline.store(memory, Relaxed);
            return;
        }
        // Memory below the baseline means the baseline has shrunk (a cache was dropped).
        let baseline = self.baseline.load(Relaxed).min(memory);
        self.baseline.store(baseline, Relaxed);
        let observed = (memory - baseline) / in_flight;
        let decayed = self.per_request.load(Relaxed) / 10 * 9;
        let learned = observed.max(decayed).min(self.ceiling).max(FLOOR);
        self.per_request.store(learned, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn reservations_cover_requests_that_have_not_allocated_yet() {
        let f = Footprint::new(10 * MIB, MIB, None);
        // 5 requests admitted, nothing allocated yet: the reservations count.
        assert_eq!(f.committed(10 * MIB, 5 * MIB), 15 * MIB);
        // They allocated 8 MiB: the reading counts, not reading + reservations.
        assert_eq!(f.committed(18 * MIB, 5 * MIB), 18 * MIB);
    }

    #[test]
    fn learns_the_average_request_at_once_and_forgets_slowly() {
        let f = Footprint::new(10 * MIB, 64 << 10, None);
        f.observe(10 * MIB, 0);
        f.observe(30 * MIB, 10); // 2 MiB each
        assert_eq!(f.per_request(), 2 * MIB);
        assert_eq!(f.estimate(100), 2 * MIB + 100);
        f.observe(10 * MIB, 10); // they hold nothing now
        assert_eq!(f.per_request(), 2 * MIB / 10 * 9);
        for _ in 0..200 {
            f.observe(10 * MIB, 10);
        }
        assert_eq!(f.per_request(), FLOOR);
    }

    #[test]
    fn one_huge_request_does_not_make_every_request_huge() {
        let f = Footprint::new(0, 64 << 10, Some(80 * MIB));
        f.observe(0, 0);
        f.observe(100 * MIB, 1);
        assert_eq!(f.per_request(), 10 * MIB);
    }

    #[test]
    fn the_baseline_follows_idle_readings_and_shrinks_under_load() {
        let f = Footprint::new(10 * MIB, MIB, None);
        f.observe(20 * MIB, 0);
        assert_eq!(f.committed(0, MIB), 21 * MIB);
        f.observe(5 * MIB, 3);
        assert_eq!(f.committed(0, MIB), 6 * MIB);
    }
}
