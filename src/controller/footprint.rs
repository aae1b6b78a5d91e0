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
//! by the HTTP side), and a rejected request's connection while its body is discarded. The
//! reading sees those bytes too, late like the rest; so they count with the charges, and the
//! baseline leaves them out.
//!
//! **Neighbours.** Where processes share a cgroup (see [`crate::memory::shared`]), what the
//! others have admitted and not yet allocated counts as spoken for too, as of the last
//! sample; and until the next one, this process charges new requests no more than its share
//! of the headroom (the headroom over the processes), or one request if none is charged yet:
//! processes whose loads start together do not each take the whole headroom before they see
//! each other.

use std::sync::{
    OnceLock,
    atomic::{
        AtomicBool, AtomicU64,
        Ordering::{Relaxed, SeqCst},
    },
};

use crate::memory::shared::Departure;

#[derive(Debug)]
pub(crate) struct Footprint {
    baseline: AtomicU64,
    /// Bytes held outside handlers' polls (see [`HeldBytes`](super::held::HeldBytes),
    /// `Permit::hold`).
    held: AtomicU64,
    /// Of those, held by connections discarding rejected bodies.
    discarding: AtomicU64,
    /// What the other processes of the cgroup have admitted and not allocated yet, and how
    /// many they are.
    others: AtomicU64,
    neighbours: AtomicU64,
    /// Removes this process's shared record when the pool goes.
    departure: OnceLock<Departure>,
    /// What this process may charge to new requests until the next sample; `u64::MAX` alone.
    share: AtomicU64,
    /// The headroom the share was taken from.
    headroom: AtomicU64,
    /// Charged to new requests since the last sample, while sharing.
    since_sample: AtomicU64,
    /// Whether a request holds a reservation granted beyond the budget (one at a time).
    beyond: AtomicBool,
}

impl Footprint {
    pub(crate) fn new(memory: u64) -> Self {
        Self {
            baseline: AtomicU64::new(memory),
            held: AtomicU64::new(0),
            discarding: AtomicU64::new(0),
            others: AtomicU64::new(0),
            neighbours: AtomicU64::new(0),
            departure: OnceLock::new(),
            share: AtomicU64::new(u64::MAX),
            headroom: AtomicU64::new(u64::MAX),
            since_sample: AtomicU64::new(0),
            beyond: AtomicBool::new(false),
        }
    }

    /// The reading with nothing in flight.
    pub(crate) fn baseline(&self) -> u64 {
        self.baseline.load(Relaxed)
    }

    /// Memory spoken for, given the last reading and the bytes charged to requests in flight.
    pub(crate) fn spoken_for(&self, memory: u64, charged: u64) -> u64 {
        let charged = charged.saturating_add(self.held());
        let own = memory.max(self.baseline.load(Relaxed).saturating_add(charged));
        own.saturating_add(self.others.load(Relaxed))
    }

    /// Whether a new request of `charge` stays within this process's share until the next
    /// sample: always, alone.
    #[inline]
    pub(crate) fn within_share(&self, charge: u64) -> bool {
        let share = self.share.load(Relaxed);
        if share == u64::MAX {
            return true;
        }
        let since = self.since_sample.load(Relaxed);
        since.saturating_add(charge) <= share
            || (since == 0 && charge <= self.headroom.load(Relaxed))
    }

    /// Counts a request admitted with `charge` against the share.
    #[inline]
    pub(crate) fn admitted(&self, charge: u64) {
        if self.share.load(Relaxed) != u64::MAX {
            self.since_sample.fetch_add(charge, Relaxed);
        }
    }

    /// Takes the others' figures of a new sample: `unseen` bytes over `processes`, and this
    /// process's share of `headroom` (the budget less what is spoken for).
    pub(crate) fn neighbours(
        &self,
        unseen: u64,
        processes: usize,
        budget: u64,
        memory: u64,
        charged: u64,
    ) {
        self.others.store(unseen, Relaxed);
        self.neighbours.store(processes as u64, Relaxed);
        if processes == 0 {
            self.share.store(u64::MAX, Relaxed);
            return;
        }
        let headroom = budget.saturating_sub(self.spoken_for(memory, charged));
        self.headroom.store(headroom, Relaxed);
        self.share.store(headroom / (processes as u64 + 1), Relaxed);
        self.since_sample.store(0, Relaxed);
    }

    /// What the other processes of the cgroup hold unseen, and how many they are.
    pub(crate) fn neighbours_now(&self) -> (u64, usize) {
        let processes = self.neighbours.load(Relaxed) as usize;
        (self.others.load(Relaxed), processes)
    }

    /// Whether the pool shares charges with the cgroup's other processes.
    pub(crate) fn is_sharing(&self) -> bool {
        self.departure.get().is_some()
    }

    /// Keeps `departure` until the pool goes.
    pub(crate) fn leave_with(&self, departure: Departure) {
        let _ = self.departure.set(departure);
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

    /// Takes the one reservation beyond the budget, if nobody holds it.
    pub(crate) fn take_beyond(&self) -> bool {
        !self.beyond.swap(true, SeqCst)
    }

    /// Gives the reservation beyond the budget back.
    pub(crate) fn end_beyond(&self) {
        self.beyond.store(false, SeqCst);
    }

    /// Bytes held by connections discarding rejected bodies now.
    pub(crate) fn discarding(&self) -> u64 {
        self.discarding.load(Relaxed)
    }

    /// Holds `bytes` for a connection discarding a rejected body.
    pub(crate) fn hold_discarding(&self, bytes: u64) {
        self.hold(bytes);
        self.discarding.fetch_add(bytes, Relaxed);
    }

    /// Lets go of `bytes` a connection discarding a rejected body held.
    pub(crate) fn let_go_discarding(&self, bytes: u64) {
        self.let_go(bytes);
        self.discarding.fetch_sub(bytes, Relaxed);
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
    fn neighbours_count_and_split_the_headroom_until_the_next_sample() {
        let f = Footprint::new(10 * MIB);
        assert!(f.within_share(u64::MAX - 1), "alone, no share");
        // Two others have 30 MiB unseen; 100 MiB budget: 60 MiB headroom, 20 MiB each.
        f.neighbours(30 * MIB, 2, 100 * MIB, 10 * MIB, 0);
        assert_eq!(f.spoken_for(10 * MIB, 0), 40 * MIB);
        assert!(f.within_share(20 * MIB));
        assert!(
            f.within_share(50 * MIB),
            "one request, if it fits the headroom"
        );
        assert!(!f.within_share(70 * MIB));
        f.admitted(15 * MIB);
        assert!(f.within_share(5 * MIB));
        assert!(
            !f.within_share(6 * MIB),
            "the share is spent until the next sample"
        );
        f.neighbours(0, 0, 100 * MIB, 10 * MIB, 0);
        assert!(f.within_share(90 * MIB), "alone again");
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
