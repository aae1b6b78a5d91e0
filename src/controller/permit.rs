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
//! it. The highest a poll can have reached is bounded by what the request held before it plus
//! everything the poll allocated: that bound is what the class learns. (jemalloc's own
//! per-thread peak cannot be reset without unsafe code, and the bound costs nothing more
//! than the two readings already taken.)

use std::{fmt, sync::Arc};

use super::{Ask, Controller, classes::ClassId, word::kib};

/// A charge moves only by this much or more (32 KiB): the error per request is bounded, and
/// most polls of small requests cost no shared write.
const RECHARGE_STEP_KIB: u64 = 32;

/// Held from admission until the response body ends or is dropped; dropping it on any path
/// (completion, error, client disconnect, panic unwinding) gives back the slot and the charge.
#[must_use]
#[clippy::has_significant_drop]
pub(crate) struct Permit {
    controller: Arc<Controller>,
    class: ClassId,
    /// The request's declared `Content-Length`: it is charged at least that much.
    declared: u64,
    /// What the state word holds for this request now, in KiB.
    charged_kib: u64,
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
        let base_before = held_before.max(self.declared);
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
        // what the charge must keep in hand.
        if self.settled {
            classes.observe_rise(self.class, high.saturating_sub(base_before));
        }
        let base = (self.net.max(0) as u64).max(self.declared);
        let charge = kib(base.saturating_add(classes.rise(self.class)));
        // Small moves are not worth an atomic operation on the shared word.
        if charge.abs_diff(self.charged_kib) >= RECHARGE_STEP_KIB {
            self.controller.recharge(self.charged_kib, charge);
            self.charged_kib = charge;
        }
        self.settle();
        result
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
        self.controller.release(self.charged_kib, !self.settled);
    }
}
