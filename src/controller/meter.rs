//! One request's memory meter: what its polls allocated and freed on their threads, the most
//! it can have held at once, the least its body is charged, and whether a poll has shown its
//! cost (see [`permit`](super::permit) for the charge it corrects).

use crate::memory::ThreadAllocations;

#[derive(Debug)]
pub(crate) struct Meter {
    /// Its declared `Content-Length`: it is charged at least that much, unless its body
    /// comes slowly (see `Permit::follow`).
    pub(crate) declared: u64,
    /// What the charge adds to the declared length before the first poll (the estimate).
    estimate: u64,
    /// The body floor the charge was last corrected for.
    floor: u64,
    /// Net bytes allocated by its polls so far.
    net: i64,
    /// The most it can have held at once, as far as its polls tell.
    peak: u64,
    /// Whether a poll has shown its cost.
    settled: bool,
}

/// What one poll showed of a request's class: its new peak (always on the first poll, which
/// makes the class known), and from the second poll on, how much it rose above what the
/// request held before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shown {
    pub(crate) peak: Option<u64>,
    pub(crate) rise: Option<u64>,
}

impl Meter {
    /// A request that declared `declared` body bytes, charged `charge` at admission.
    #[inline]
    pub(crate) fn new(declared: u64, charge: u64) -> Self {
        Self {
            declared,
            estimate: charge.saturating_sub(declared),
            floor: declared,
            net: 0,
            peak: 0,
            settled: false,
        }
    }

    /// A poll `moved` the thread's counters, with the body's floor at `floor` and the
    /// request holding `base_before()` beyond its reservations before it: what it showed, or
    /// `None` when nothing moved since the last correction. The highest a poll can have
    /// reached is what the request held before it plus everything it allocated. (jemalloc's
    /// own per-thread peak cannot be reset without unsafe code, and this bound costs nothing
    /// more than the two readings already taken.)
    #[inline]
    pub(crate) fn polled(
        &mut self,
        moved: ThreadAllocations,
        floor: u64,
        base_before: impl FnOnce() -> u64,
    ) -> Option<Shown> {
        if moved.allocated == 0 && moved.freed == 0 && self.settled && floor == self.floor {
            return None;
        }
        self.floor = floor;
        let high = self.held().saturating_add(moved.allocated);
        self.net = self
            .net
            .saturating_add(moved.allocated as i64)
            .saturating_sub(moved.freed as i64);
        let first = !self.settled;
        let peak = (high > self.peak || first).then(|| {
            self.peak = high;
            high
        });
        // The first poll's rise is the request's cost, known from now on; later ones are
        // what the charge must keep in hand until the handler reserves.
        let rise = (!first).then(|| high.saturating_sub(base_before()));
        Some(Shown { peak, rise })
    }

    /// Net bytes its polls hold now.
    #[inline]
    pub(crate) fn held(&self) -> u64 {
        self.net.max(0) as u64
    }

    /// What it holds beyond its `reserved` bytes, and at least its body's floor.
    #[inline]
    pub(crate) fn base(&self, reserved: u64) -> u64 {
        self.held().saturating_sub(reserved).max(self.floor)
    }

    /// Without per-thread counters: the charge its body's `floor` calls for, if the floor
    /// moved (the estimate stays).
    #[inline]
    pub(crate) fn untracked(&mut self, floor: u64) -> Option<u64> {
        (floor != self.floor).then(|| {
            self.floor = floor;
            floor.saturating_add(self.estimate)
        })
    }

    /// Marks its cost shown; whether it was not before.
    #[inline]
    pub(crate) fn settle(&mut self) -> bool {
        !std::mem::replace(&mut self.settled, true)
    }

    #[inline]
    pub(crate) fn is_settled(&self) -> bool {
        self.settled
    }

    /// The most it held, once a poll has shown its cost.
    #[inline]
    pub(crate) fn peak(&self) -> Option<u64> {
        self.settled.then_some(self.peak)
    }

    /// What it was charged at admission.
    #[inline]
    pub(crate) fn admitted_charge(&self) -> u64 {
        self.declared.saturating_add(self.estimate)
    }
}
