//! The right to be in flight: a slot and a memory charge, corrected as the request runs, and
//! given back on drop.
//!
//! **Reserve the worst case, then correct.** Until its first poll a request is charged its
//! `Content-Length` plus its class's recent peak (see [`super::classes`]). Each poll is
//! bracketed by two readings of the thread's allocation counters; from the first poll on, the
//! request is charged
//!
//! `max(net allocated, Content-Length) + its class's recent rise`
//!
//! where the rise covers what one poll may allocate and free again before anyone could see
//! it. What the handler reserved ahead of allocating (see [`Reserved`]) is charged on top, and
//! what it then allocates is counted against its reservation first. The highest a poll can have reached is bounded by what the request held before it plus
//! everything the poll allocated: that bound is what the class learns. (jemalloc's own
//! per-thread peak cannot be reset without unsafe code, and the bound costs nothing more
//! than the two readings already taken.)

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::SeqCst},
    },
};

use super::{Ask, Controller, classes::ClassId, word::kib};

/// A charge moves only by this much or more (32 KiB): the error per request is bounded, and
/// most polls of small requests cost no shared write.
const RECHARGE_STEP_KIB: u64 = 32;

/// What a request's handler has reserved, in KiB, shared between its permit and its
/// [`Reservation`](crate::Reservation). Once the permit is gone the reservations are closed:
/// a late `reserve` must not charge a request that no longer exists.
#[derive(Debug, Default)]
pub(crate) struct Reserved(AtomicU64);

/// Marks the reservations of a request that has ended.
const CLOSED: u64 = 1 << 63;
/// Marks a request holding the pool's one reservation beyond the budget.
const BEYOND: u64 = 1 << 62;
const FLAGS: u64 = CLOSED | BEYOND;

impl Reserved {
    /// Adds `kib` (`beyond`: granted beyond the budget), unless the request has ended.
    pub(crate) fn add(&self, kib: u64, beyond: bool) -> bool {
        let flag = if beyond { BEYOND } else { 0 };
        self.0
            .fetch_update(SeqCst, SeqCst, |now| {
                (now & CLOSED == 0).then_some(((now & !FLAGS) + kib) | (now & FLAGS) | flag)
            })
            .is_ok()
    }

    fn kib(&self) -> u64 {
        self.0.load(SeqCst) & !FLAGS
    }

    /// Closes the reservations; returns what they came to, and whether one was beyond the
    /// budget.
    fn close(&self) -> (u64, bool) {
        let last = self.0.swap(CLOSED, SeqCst);
        (last & !FLAGS, last & BEYOND != 0)
    }
}

/// Held from admission until the response body ends or is dropped; dropping it on any path
/// (completion, error, client disconnect, panic unwinding) gives back the slot and the charge.
#[must_use]
#[clippy::has_significant_drop]
pub(crate) struct Permit {
    controller: Arc<Controller>,
    class: ClassId,
    /// The request's declared `Content-Length`: it is charged at least that much.
    declared: u64,
    /// What the state word holds for this request now, in KiB, besides its reservations.
    charged_kib: u64,
    /// What its handler reserved; held in the state word too.
    reserved: Arc<Reserved>,
    /// Net bytes allocated by this request's polls so far.
    net: i64,
    /// The most this request can have held at once, as far as its polls tell.
    peak: u64,
    /// Whether a poll has shown its cost (see `Controller::settle`).
    settled: bool,
}

impl Permit {
    /// Wraps a slot and the charge of `ask`, which the controller has already counted.
    pub(super) fn new(controller: Arc<Controller>, ask: Ask) -> Self {
        Self {
            controller,
            class: ask.class,
            declared: ask.declared,
            charged_kib: kib(ask.charge),
            reserved: Arc::default(),
            net: 0,
            peak: 0,
            settled: false,
        }
    }

    /// Runs `poll` (one poll of the request's work) and corrects the request's charge by what
    /// the poll allocated and freed on this thread.
    #[inline]
    pub(crate) fn track<R>(&mut self, poll: impl FnOnce() -> R) -> R {
        let Some(counters) = self.controller.thread_allocations else {
            let result = poll();
            self.settle();
            return result;
        };
        let before = counters();
        let result = poll();
        let moved = counters().since(before);
        if moved.allocated == 0 && moved.freed == 0 && self.settled {
            return result;
        }
        let held_before = self.net.max(0) as u64;
        let base_before = self.base(held_before);
        let high = held_before.saturating_add(moved.allocated);
        self.net = self
            .net
            .saturating_add(moved.allocated as i64)
            .saturating_sub(moved.freed as i64);
        let classes = &self.controller.classes;
        if high > self.peak {
            self.peak = high;
            classes.observe_peak(self.class, self.declared, high);
        }
        // The first poll's rise is the request's cost, known from now on; later ones are
        // what the charge must keep in hand, beyond what the handler reserved.
        let reserved = self.reserved.kib() * 1024;
        if self.settled {
            let covered = base_before.saturating_add(reserved);
            classes.observe_rise(self.class, high.saturating_sub(covered));
        }
        let base = self.base(self.net.max(0) as u64);
        let charge = kib(base.saturating_add(classes.rise(self.class)));
        // Small moves are not worth an atomic operation on the shared word.
        if charge.abs_diff(self.charged_kib) >= RECHARGE_STEP_KIB {
            self.controller.recharge(self.charged_kib, charge);
            self.charged_kib = charge;
        }
        self.settle();
        result
    }

    /// What the request holds beyond its reservations: what it allocated less what it had
    /// reserved for it, and at least its `Content-Length`.
    fn base(&self, held: u64) -> u64 {
        held.saturating_sub(self.reserved.kib() * 1024)
            .max(self.declared)
    }

    /// The pool and the handler's side of this request's reservations.
    pub(crate) fn reservations(&self) -> (&Arc<Controller>, Arc<Reserved>) {
        (&self.controller, Arc::clone(&self.reserved))
    }

    /// What the request is charged now, in bytes.
    #[cfg(test)]
    pub(crate) fn charge(&self) -> u64 {
        self.charged_kib * 1024
    }

    fn settle(&mut self) {
        if !self.settled {
            self.settled = true;
            self.controller.settle();
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("charged_kib", &self.charged_kib)
            .field("net", &self.net)
            .field("settled", &self.settled)
            .finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.settled && self.controller.thread_allocations.is_some() {
            let classes = &self.controller.classes;
            classes.observe_end(self.class, self.declared, self.peak);
        }
        let (reserved, beyond) = self.reserved.close();
        if beyond {
            self.controller.end_reservation_beyond();
        }
        let charged = self.charged_kib.saturating_add(reserved);
        self.controller.release(charged, !self.settled);
    }
}
