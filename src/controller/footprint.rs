//! How much memory is spoken for.
//!
//! The sampled reading lags, and it cannot tell requests apart; so each admitted request is
//! charged in the state word (see [`super::permit`]). The memory spoken for is
//! `max(reading, baseline + charged)`: the charges cover what the reading has not seen yet,
//! the reading covers what no request was charged for (spawned tasks, caches, other threads),
//! and nothing is counted twice. `baseline` is the reading with nothing in flight.
//!
//! What a request holds outside its handler's polls is *held*, beside the charges: its
//! connection's buffers and its head, queued or in flight (a figure per HTTP version, given
//! by the HTTP side), and a refused request's connection while its body is discarded. The
//! reading sees those bytes too, late like the rest; so they count with the charges, and the
//! baseline leaves them out.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use super::Controller;

#[derive(Debug)]
pub(crate) struct Footprint {
    baseline: AtomicU64,
    /// Bytes held outside handlers' polls (see [`Held`], `Permit::hold`).
    held: AtomicU64,
}

impl Footprint {
    pub(crate) fn new(memory: u64) -> Self {
        Self {
            baseline: AtomicU64::new(memory),
            held: AtomicU64::new(0),
        }
    }

    /// The reading with nothing in flight.
    pub(crate) fn baseline(&self) -> u64 {
        self.baseline.load(Relaxed)
    }

    /// Memory spoken for, given the last reading and the bytes charged to requests in flight.
    pub(crate) fn spoken_for(&self, memory: u64, charged: u64) -> u64 {
        let charged = charged.saturating_add(self.held());
        memory.max(self.baseline.load(Relaxed).saturating_add(charged))
    }

    /// Bytes held outside handlers' polls now.
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Relaxed)
    }

    pub(crate) fn hold(&self, bytes: u64) {
        self.held.fetch_add(bytes, Relaxed);
    }

    pub(crate) fn let_go(&self, bytes: u64) {
        self.held.fetch_sub(bytes, Relaxed);
    }

    /// Learns the baseline from a fresh reading taken with `in_flight` requests in flight.
    pub(crate) fn observe(&self, memory: u64, in_flight: u64) {
        // What waiting holds comes and goes with the load: it is not the baseline.
        let memory = memory.saturating_sub(self.held());
        if in_flight == 0 {
            self.baseline.store(memory, Relaxed);
        } else {
            // Memory below the baseline means the baseline has shrunk (a cache was dropped).
            self.baseline.fetch_min(memory, Relaxed);
        }
    }
}

/// Bytes held by a request that is not in flight (queued, or refused and discarding its
/// body), counted as spoken for until dropped.
#[derive(Debug)]
pub(crate) struct Held {
    controller: Arc<Controller>,
    bytes: u64,
}

impl Controller {
    /// Holds `bytes` until the [`Held`] is dropped.
    pub(crate) fn hold(self: &Arc<Self>, bytes: u64) -> Held {
        self.footprint.hold(bytes);
        Held {
            controller: Arc::clone(self),
            bytes,
        }
    }

    /// Holds `bytes` if they fit in the memory budget beside what is spoken for.
    pub(crate) fn try_hold(self: &Arc<Self>, bytes: u64) -> Option<Held> {
        if let Some(budget) = self.settings.budget {
            if self.memory_refuses(self.spoken_for_bytes().saturating_add(bytes) > budget) {
                return None;
            }
        }
        Some(self.hold(bytes))
    }
}

impl Held {
    pub(crate) fn controller(&self) -> &Controller {
        &self.controller
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.controller.footprint.let_go(self.bytes);
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

    #[test]
    fn what_waiting_holds_counts_beside_the_charges_never_in_the_baseline() {
        let f = Footprint::new(10 * MIB);
        f.hold(2 * MIB);
        assert_eq!(f.spoken_for(10 * MIB, MIB), 13 * MIB);
        f.observe(12 * MIB, 0);
        assert_eq!(f.spoken_for(0, 0), 12 * MIB, "baseline 10 MiB, 2 MiB held");
        f.let_go(2 * MIB);
        assert_eq!(f.spoken_for(0, 0), 10 * MIB);
    }
}
