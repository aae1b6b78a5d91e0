//! The right to be in flight: a slot and a memory charge, corrected as the request runs, and
//! given back on drop.
//!
//! **Reserve the worst case, then correct.** Until its first poll a request is charged its
//! `Content-Length` plus its class's recent peak (see [`super::classes`]). Each poll is
//! bracketed by two readings of the thread's allocation counters; from the first poll on, the
//! request is charged
//!
//! `max(net allocated - reserved, Content-Length) + max(its class's recent rise, reserved)`
//!
//! where the rise covers what one poll may allocate and free again before anyone could see
//! it, until the handler reserves what it is about to allocate (see [`Charge`]): then the
//! more of the two is charged, and what it allocates counts against its reservation first.
//!
//! The highest a poll can have reached is bounded by what the request held before it plus
//! everything the poll allocated: that bound is what the class learns (see
//! [`meter`](super::meter)).
//!
//! **CPU.** Where the CPU gate is on, each poll is also timed: its time is the request's
//! CPU demand, which corrects what the gate holds for it and, once it has answered, teaches
//! its class (see [`super::cpu`]).

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{
            AtomicBool, AtomicU64,
            Ordering::{Relaxed, SeqCst},
        },
    },
    task::Poll,
};

use super::{
    Controller, classes::ClassId, cpu::Demand, end::Ended, inputs::Ask, meter::Meter,
    progress::BodyProgress, word::kib,
};
use crate::data_rate::TooSlow;

/// A charge moves only by this much or more (32 KiB): the error per request is bounded, and
/// most polls of small requests cost no shared write.
const RECHARGE_STEP_KIB: u64 = 32;

/// One request's charge, shared by its permit and its handler's
/// [`Reservation`](crate::Reservation): what the state word holds for it, and what it is made
/// of. The permit moves it after each poll, a reservation when the handler reserves; both
/// move the word by the same amount, with a compare-and-swap here, so the word always holds
/// the sum of the requests' charges. Once the permit is gone the charge is closed: a late
/// `reserve` must not charge a request that no longer exists.
#[derive(Debug)]
pub(crate) struct Charge {
    /// In KiB, what the state word holds for the request; [`CLOSED`] once it has ended.
    kib: AtomicU64,
    /// What the request holds beyond its reservations (what it allocated less what it
    /// reserved, and at least its `Content-Length`), as of its last poll. This and
    /// `reserved` only shape the next target; `kib`'s compare-and-swap keeps the word right,
    /// so they need no ordering of their own.
    base: AtomicU64,
    /// What its handler reserved.
    reserved: AtomicU64,
    /// Whether it holds the pool's one reservation beyond the budget.
    pub(crate) beyond: AtomicBool,
}

/// Marks the charge of a request that has ended.
const CLOSED: u64 = 1 << 63;

impl Charge {
    pub(super) fn new(kib: u64, base: u64) -> Self {
        Self {
            kib: AtomicU64::new(kib),
            base: AtomicU64::new(base),
            reserved: AtomicU64::new(0),
            beyond: AtomicBool::new(false),
        }
    }

    /// What the request should be charged, in KiB, given its class's recent `rise` and
    /// `more` bytes reserved on top of what is: what it holds, plus whichever is more of the
    /// rise (what a poll of its class may add) and its reservations (what it said it will).
    pub(crate) fn target_kib(&self, rise: u64, more: u64) -> u64 {
        let reserved = self.reserved.load(Relaxed).saturating_add(more);
        kib(self.base.load(Relaxed).saturating_add(rise.max(reserved)))
    }

    /// What the word holds for the request, in KiB, or `None` once it has ended.
    pub(crate) fn kib(&self) -> Option<u64> {
        let kib = self.kib.load(SeqCst);
        (kib & CLOSED == 0).then_some(kib)
    }

    /// Moves the charge from `from` to `to` KiB, unless it moved or closed meanwhile.
    pub(crate) fn swap(&self, from: u64, to: u64) -> bool {
        self.kib.compare_exchange(from, to, SeqCst, SeqCst).is_ok()
    }

    pub(crate) fn add_reserved(&self, bytes: u64) {
        self.reserved.fetch_add(bytes, Relaxed);
    }

    /// Ends the charge; returns what the word held for it.
    pub(super) fn close(&self) -> u64 {
        self.kib.swap(CLOSED, SeqCst) & !CLOSED
    }
}

/// A permit's charge: its own, or shared with its handler's reservation. Sharing costs an
/// allocation per request, so only pools that take reservations pay it.
#[derive(Debug)]
enum Charged {
    Own(Charge),
    Shared(Arc<Charge>),
}

impl std::ops::Deref for Charged {
    type Target = Charge;

    fn deref(&self) -> &Charge {
        match self {
            Self::Own(charge) => charge,
            Self::Shared(charge) => charge,
        }
    }
}

/// How a request was admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// Within the limits.
    Within,
    /// Past a blocked head (see [`super::queue`]): until it ends, what it was charged then
    /// counts against the head's patience.
    PastAHead,
    /// Past the limits, observing only (see [`super::observe_only`]).
    PastLimits,
}

/// Held from admission until the response body ends or is dropped; dropping it on any path
/// (completion, error, client disconnect, panic unwinding) gives back the slot and the charge.
#[must_use]
#[clippy::has_significant_drop]
pub(crate) struct Permit {
    controller: Arc<Controller>,
    class: ClassId,
    meter: Meter,
    charge: Charged,
    /// Its CPU demand, where the CPU gate is on.
    demand: Demand,
    /// The body's progress, when a meter watches it.
    body: Option<Arc<BodyProgress>>,
    /// Bytes held beside the charge: what serving the request holds outside its polls
    /// (its connection's buffers), counted as spoken for until the permit goes.
    held: u64,
    way: Way,
}

impl Permit {
    /// Wraps a slot and the charge of `ask`, which the controller has already counted.
    pub(super) fn new(controller: Arc<Controller>, ask: Ask) -> Self {
        let charge = Charge::new(kib(ask.charge), ask.declared);
        Self {
            demand: controller.demand(&ask),
            charge: match controller.shares_charges() {
                true => Charged::Shared(Arc::new(charge)),
                false => Charged::Own(charge),
            },
            controller,
            class: ask.class,
            meter: Meter::new(ask.declared, ask.charge),
            body: None,
            held: 0,
            way: Way::Within,
        }
    }

    /// Holds `bytes` beside the charge until the permit goes (see [`super::footprint`]).
    pub(crate) fn hold(&mut self, bytes: u64) {
        if bytes > 0 {
            self.controller.hold_beside(bytes);
            self.held += bytes;
        }
    }

    /// Whether the pool's listener counts connections (see [`super::connections`]).
    pub(crate) fn connections_counted(&self) -> bool {
        self.controller.counts_connections()
    }

    /// Marks the request as admitted past the limits, observing only.
    pub(super) fn past_limits(&mut self) {
        self.way = Way::PastLimits;
    }

    /// Marks the request as admitted past a blocked head.
    pub(super) fn passed_a_head(&mut self) {
        self.way = Way::PastAHead;
    }

    /// Lets the request's body meter lower what the request is charged for its body: a body
    /// that comes slowly is charged what arrived and what can arrive soon, not its declared
    /// length, so that a client trickling a large body does not hold memory it is not using.
    /// Where its work comes once its body has (see [`super::cpu`]), the body waits for its
    /// turn before its last frame.
    pub(crate) fn follow(&mut self, body: Arc<BodyProgress>) {
        self.controller
            .comes_with_body(&mut self.demand, &body.turn);
        self.body = Some(body);
    }

    /// The least the request is charged for its body now.
    fn body_floor(&self) -> u64 {
        let declared = self.meter.declared;
        self.body
            .as_ref()
            .map_or(declared, |body| body.floor().min(declared))
    }

    /// Runs `poll` (one poll of the request's work) and corrects the request's charges by
    /// what the poll allocated and freed on this thread, and by how long it took.
    #[inline]
    pub(crate) fn track<T>(&mut self, poll: impl FnOnce() -> Poll<T>) -> Poll<T> {
        if !self.controller.times_polls() {
            return self.track_memory(poll);
        }
        let started = self.controller.clock.now_ns();
        let result = self.track_memory(poll);
        let spent = self.controller.clock.now_ns().saturating_sub(started);
        let body = self
            .body
            .as_ref()
            .map(|body| (&body.turn, body.waited().is_some()));
        // Pending while not reading its body: it waits on a timer, another service or its
        // response's reader, and has no work ready.
        let idle = result.is_pending() && !body.is_some_and(|(_, coming)| coming);
        self.controller
            .polled(&mut self.demand, (started, spent), body, idle);
        result
    }

    /// [`track`](Self::track)'s memory side.
    #[inline]
    fn track_memory<R>(&mut self, poll: impl FnOnce() -> R) -> R {
        let Some(counters) = self.controller.gauge.thread_allocations() else {
            let result = poll();
            if let Some(target) = self.meter.untracked(self.body_floor()) {
                self.recharge(kib(target));
            }
            self.settle();
            return result;
        };
        let before = counters();
        let result = poll();
        let moved = counters().since(before);
        let floor = self.body_floor();
        let base_before = || self.charge.base.load(Relaxed);
        let Some(shown) = self.meter.polled(moved, floor, base_before) else {
            return result;
        };
        let (class, declared) = (self.class, self.meter.declared);
        let rise = self.controller.shown(class, declared, shown);
        let base = self.meter.base(self.charge.reserved.load(Relaxed));
        self.charge.base.store(base, Relaxed);
        self.recharge(self.charge.target_kib(rise, 0));
        self.settle();
        result
    }

    fn recharge(&self, target: u64) {
        if let Some(charged) = self.charge.kib() {
            // Small moves are not worth an atomic operation on the shared word.
            if target.abs_diff(charged) >= RECHARGE_STEP_KIB && self.charge.swap(charged, target) {
                self.controller.recharge(charged, target);
            }
        }
    }

    /// The pool and this request's charge, for its handler's reservations, where the pool
    /// takes them.
    pub(crate) fn charge(&self) -> Option<(&Arc<Controller>, Arc<Charge>)> {
        match &self.charge {
            Charged::Shared(charge) => Some((&self.controller, Arc::clone(charge))),
            Charged::Own(_) => None,
        }
    }

    /// The response head is ready: the request's demand so far is worth learning.
    pub(crate) fn responded(&mut self) {
        self.demand.responded();
    }

    /// Ends the request for a body too slow (`slow` says which, and at which rate): counted,
    /// and the slot and the charge go back now.
    pub(crate) fn cut_off(self, slow: TooSlow) {
        self.controller.record_slow(slow);
    }

    /// The request waited `waited` in the queue before its admission: its body's time is
    /// counted from its arrival, for its client may have sent the body meanwhile.
    pub(crate) fn queued_for(&mut self, waited: std::time::Duration) {
        self.demand.arrived_before(waited);
    }

    /// The pool, for the request's body to wait for its turn, where its work comes once its
    /// body has arrived (see [`super::cpu`]).
    pub(crate) fn gate_for_body(&self) -> Option<Arc<Controller>> {
        self.demand
            .expects_body()
            .then(|| Arc::clone(&self.controller))
    }

    /// Whether the request's work may start now (see [`super::cpu`]); if not, `waker` is
    /// woken when it may.
    #[inline]
    pub(crate) fn take_turn(&self, waker: &std::task::Waker) -> bool {
        self.controller.take_turn(&self.demand, waker)
    }

    /// The request's declared `Content-Length`.
    pub(crate) fn declared(&self) -> u64 {
        self.meter.declared
    }

    pub(crate) fn class(&self) -> ClassId {
        self.class
    }

    /// What the request is charged now, in bytes.
    #[cfg(test)]
    pub(crate) fn charged_bytes(&self) -> u64 {
        self.charge.kib().unwrap_or(0) * 1024
    }

    fn settle(&mut self) {
        if self.meter.settle() {
            self.controller.settle();
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("charged_kib", &self.charge.kib())
            .field("meter", &self.meter)
            .finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let controller = &self.controller;
        let turn = self.body.as_ref().map(|body| &body.turn);
        let spent = controller.spent(&mut self.demand, turn);
        controller.end(Ended {
            class: self.class,
            declared: self.meter.declared,
            // Where polls are measured.
            peak: controller.gauge.thread_allocations().and(self.meter.peak()),
            spent,
            beyond: self.charge.beyond.load(SeqCst),
            past_limits: self.way == Way::PastLimits,
            held: self.held,
            charged_kib: self.charge.close(),
            settled: self.meter.is_settled(),
            // What it was charged when it passed (see `Controller::priced`).
            passer: match self.way {
                Way::PastAHead => self.meter.admitted_charge(),
                _ => 0,
            },
        });
    }
}
