//! The shared admission state: in-flight count, charged bytes, cost classes and the bounded
//! queue. Tokio-free: time is the response future's business, and memory comes through
//! [`MemorySource`].
//!
//! **Admission.** With `spoken for = max(memory, baseline + charged)`, where `memory` is the
//! sampler's last reading and `charged` sums what the requests in flight are charged (see
//! [`permit`]) and what requests hold outside their polls (see [`footprint`]), a request of
//! `charge` (its conservative estimate, see [`classes`]) is admitted at once while
//! `in_flight < max_concurrency` and `spoken for + charge` stays within the *soft limit*: the
//! budget less the largest unknown part of a charge given lately (what a request was expected
//! to allocate beyond its `Content-Length`).
//!
//! **A new class goes one at a time.** Where polls are measured, a request of a class that
//! has not shown its cost yet is admitted only while every admitted request has been polled:
//! a cold start under load would otherwise admit a burst of them on the initial estimate.
//!
//! **Near the budget, one unknown at a time.** Above the soft limit, a request is admitted
//! only while every admitted request has shown its cost (been polled once), and only if its
//! charge fits in the budget or, failing that, the least its class costs does (with 1/64 of
//! the budget to spare). Estimates can be wrong (a class not seen before, a figure that aged
//! out, sizes that differ within a class), so this bounds the overshoot to about one request.
//!
//! **Order.** While anyone of its priority or a higher one waits, an arrival queues. Waiters
//! are admitted by priority, then in arrival order, with bounded backfill (see [`queue`]): a
//! waiter that fits in what a blocked head cannot use may go ahead of it, until the head would
//! fit but for those that passed it, or [`queue::MAX_PASSES`] have. A lower priority that has
//! been overtaken [`queue::MAX_OVERTAKES`] times goes first once. A waiter is charged as its
//! class stands when it may go, not when it queued.
//!
//! **Priorities.** Only `Critical` requests may use the reserved share of slots and budget,
//! and one that finds the queue full takes the place of the newest waiter of a lower
//! priority, if any. `Sheddable` ones are refused instead of queueing while the queue is half
//! full or memory stands above the soft limit, so they never hold more than half the queue.
//!
//! **Progress.** When nothing is in flight, the head is admitted even over the memory budget,
//! once a fresh reading confirms it: memory held by caches or leaks must not wedge the
//! service. Such admissions are counted.
//!
//! **Untrusted readings.** While the memory source fails or has not refreshed for a while,
//! the memory limit follows the [`MemoryFailure`] policy: open (never refuses) or closed
//! (always over budget).
//!
//! **Closing.** After [`Controller::close`], nothing queues: waiters are answered with
//! `queue_timeout` (their wait cut short) and arrivals that do not fit at once with
//! `queue_full`; admitted requests run to the end.
//!
//! **Cancel safety.** A [`Ticket`] dropped while queued leaves the queue at once; one dropped
//! after its grant but before it was observed gives the grant back. Wakers are collected
//! under the lock and woken after it is released.

mod accepting;
mod by_size;
mod classes;
mod clock;
mod connections;
mod cpu;
mod drain;
mod fit;
mod footprint;
mod limit;
mod observe;
mod permit;
mod queue;
mod readings;
mod report;
mod reserve;
mod ticket;
mod waiting;
mod word;

pub(crate) use accepting::OpenConnection;
pub(crate) use classes::ClassId;
pub use classes::CostClass;
pub(crate) use clock::Clock;
pub(crate) use cpu::Turn;
pub(crate) use footprint::Held;
pub(crate) use permit::{Charge, Permit};
#[cfg(test)]
pub(crate) use queue::MAX_PASSES;
pub use queue::QueueTarget;
pub(crate) use readings::Runtime;
pub(crate) use ticket::Ticket;
pub(crate) use word::{MAX_BUDGET_BYTES, MAX_CONCURRENCY, kib};

use std::{
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{
            AtomicBool, AtomicU64, AtomicUsize,
            Ordering::{Relaxed, SeqCst},
        },
    },
    task::Waker,
    time::Duration,
};

use crate::{
    discarded::Discards,
    memory::{MemoryFailure, ReadingHealth},
    memory::{MemorySource, ThreadAllocations},
    priority::Priority,
    rejection::{Limit, Reason, Rejection},
};
use classes::Classes;
use cpu::CpuGate;
use fit::{Fit, Reading};
use footprint::Footprint;
use limit::LiveLimit;
use observe::PastLimits;
use queue::Queue;
use report::Counters;
use word::{QUEUED, charge, charged_bytes, claim, in_flight};

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
    /// `max_concurrency` (see [`limit`]).
    pub(crate) lateness_target: Option<Duration>,
    /// Where the live limit starts (its slow start).
    pub(crate) initial_limit: usize,
    /// How long a waiter held back by the CPU may wait (see [`queue`]).
    pub(crate) queue_target: QueueTarget,
    /// The workers that run requests, until the runtime tells.
    pub(crate) workers: usize,
    /// Count what would be refused, and admit everything (see [`observe`]).
    pub(crate) observe_only: bool,
    /// The most connections a listener made from the pool keeps open (see [`connections`]).
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

/// What one request asks for: its priority, its class, its charge (the most it may cost, as
/// far as its class tells), its declared `Content-Length`, and the least it will cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ask {
    pub(crate) priority: Priority,
    pub(crate) class: ClassId,
    pub(crate) charge: u64,
    pub(crate) declared: u64,
    pub(crate) least: u64,
    /// Whether its class has shown its cost: a class not seen yet goes one at a time.
    pub(crate) known: bool,
    /// The CPU work it brings, in microseconds, as charged at admission (0 where the CPU
    /// gate is off).
    pub(crate) cpu_us: u64,
    /// Whether its work comes once its body has arrived, and how long its class's bodies
    /// take to (0: not known yet).
    pub(crate) body_us: Option<u64>,
    /// Whether it polls long enough to keep the runtime late by itself (see
    /// [`cpu`]).
    pub(crate) long: bool,
}

/// What [`Controller::acquire`] decided.
#[derive(Debug)]
pub(crate) enum Acquired {
    Admitted(Permit),
    Queued(Ticket),
    Rejected(Rejection),
}

/// One admission pool, shared behind an `Arc` by every layer, service, future and body.
///
/// While nobody waits and memory is below the soft limit, admission is one compare-and-swap
/// on the state word and release one subtraction, as in tokio's semaphore; the lock is taken
/// only to queue, to leave the queue, to admit above the soft limit, and to hand slots to
/// waiters. Because the `QUEUED` bit lives in the same word, a release either sees it (and
/// takes the lock to grant) or happened before it was set, in which case the waiter that set
/// it re-checks under the lock.
pub(crate) struct Controller {
    pub(crate) settings: Settings,
    memory: Arc<dyn MemorySource>,
    /// Whether `memory` can be trusted: its last refresh succeeded, recently.
    reading_health: ReadingHealth,
    /// Set by [`Controller::close`]: nothing queues any more.
    closed: AtomicBool,
    /// In flight, charged KiB and the `QUEUED` bit: see [`word`].
    state: AtomicU64,
    footprint: Footprint,
    classes: Classes,
    /// Admitted requests not yet polled: their cost is still an estimate.
    unsettled: AtomicUsize,
    /// Whether a request holds a reservation granted beyond the budget (one at a time).
    reservation_beyond: AtomicBool,
    /// Counts what the calling thread allocates, to charge requests as they allocate.
    thread_allocations: Option<fn() -> ThreadAllocations>,
    queue: Mutex<Queue>,
    /// The queue's length, written under the lock and read without it.
    queued: AtomicUsize,
    counters: Counters,
    /// Observe only: see [`observe`].
    past: PastLimits,
    /// Milliseconds since the pool started, advanced by the sampler: a clock the request path reads
    /// for the price of a load.
    clock_ms: AtomicU64,
    pub(crate) limit: LiveLimit,
    pub(crate) cpu: CpuGate,
    /// The connections a listener made from the pool accepted.
    connections: connections::Connections,
    /// Times polls and queue waits: the real clock, or a virtual one in tests.
    pub(crate) clock: Clock,
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("settings", &self.settings)
            .field("memory", &self.memory)
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl Controller {
    pub(crate) fn new(settings: Settings, memory: Arc<dyn MemorySource>) -> Self {
        // Charging what requests allocate only matters against a budget.
        let thread_allocations = settings.budget.and(memory.thread_allocations());
        Self {
            footprint: Footprint::new(memory.allocated_bytes()),
            classes: Classes::new(settings.initial_estimate),
            unsettled: AtomicUsize::new(0),
            reservation_beyond: AtomicBool::new(false),
            thread_allocations,
            reading_health: ReadingHealth::new(settings.memory_failure, settings.sample_interval),
            closed: AtomicBool::new(false),
            limit: LiveLimit::new(
                settings.max_concurrency,
                settings.lateness_target,
                settings.initial_limit,
            ),
            cpu: CpuGate::new(settings.lateness_target, settings.workers),
            connections: connections::Connections::new(settings.max_connections),
            clock: Clock::default(),
            queue: Mutex::new(Queue::default()),
            settings,
            memory,
            state: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            counters: Counters::default(),
            past: PastLimits::default(),
            clock_ms: AtomicU64::new(0),
        }
    }

    pub(crate) fn memory(&self) -> &dyn MemorySource {
        &*self.memory
    }

    /// [`acquire_as`](Self::acquire_as) a `Normal` request.
    #[cfg(test)]
    pub(crate) fn acquire(self: &Arc<Self>, class: CostClass, declared: Option<u64>) -> Acquired {
        self.acquire_as(Priority::Normal, class, declared, String::new)
    }

    /// Whether requests are told apart by cost class: where memory is charged, or CPU work.
    pub(crate) fn learns_classes(&self) -> bool {
        self.settings.budget.is_some() || self.cpu.is_enabled()
    }

    /// Admits, queues or rejects a request of `priority` and `class` that declared
    /// `declared` body bytes; `name` names its class if it is the first of it.
    pub(crate) fn acquire_as(
        self: &Arc<Self>,
        priority: Priority,
        class: CostClass,
        declared: Option<u64>,
        name: impl FnOnce() -> String,
    ) -> Acquired {
        let declared = declared.unwrap_or(0);
        let class = match self.learns_classes() {
            true => self.classes.find(class, name),
            false => ClassId::OVERFLOW,
        };
        let ask = self.priced(Ask {
            priority,
            class,
            charge: 0,
            declared,
            least: 0,
            known: true,
            cpu_us: 0,
            body_us: None,
            long: false,
        });
        let Some(budget) = self.settings.budget else {
            // Without a budget there is nothing to charge, and nothing to pay for charging.
            return self.acquire_charged(ask);
        };
        // Observing only, it goes past the limits, counted there.
        if declared > budget && !self.settings.observe_only {
            return Acquired::Rejected(self.reject_admission(
                priority,
                Reason::TooLarge,
                Limit::Memory,
            ));
        }
        if declared > budget {
            return self.admit_past_limits(self.memory.allocated_bytes(), ask);
        }
        self.acquire_charged(ask)
    }

    /// `ask` priced as its class stands now: its CPU work, and with a budget its charge, the
    /// least it will cost and whether its class has shown its cost. A waiter is priced again
    /// when it may go, for its class may have shown its cost meanwhile (a cold start queues
    /// many on the first guess).
    fn priced(&self, ask: Ask) -> Ask {
        let Ask {
            class, declared, ..
        } = ask;
        let body_us = self.body_us(class, declared);
        let ask = Ask {
            cpu_us: self.cpu_estimate_us(class, declared),
            body_us,
            long: self.polls_long(class, declared, body_us.is_some()),
            ..ask
        };
        let Some(budget) = self.settings.budget else {
            return ask;
        };
        // No more than the budget can ever hold beside the baseline: a class that once cost
        // more than the budget is admitted alone, not only over the budget.
        let room = budget
            .saturating_sub(self.footprint.baseline())
            .max(declared);
        let charge = self.classes.estimate(class, declared).min(room);
        Ask {
            charge,
            least: self.classes.least(class, declared).min(charge),
            // Only where polls are measured can a class become known.
            known: self.thread_allocations.is_none() || self.classes.is_known(class),
            ..ask
        }
    }

    /// Whether the work of a request of `class` that declared `declared` body bytes comes
    /// once its body has arrived (it declared one, or its class has shown bodies), and how
    /// long its class's bodies take to; `None` where the CPU gate is off.
    fn body_us(&self, class: ClassId, declared: u64) -> Option<u64> {
        if !self.cpu.is_enabled() {
            return None;
        }
        self.classes.body_us(class).or((declared > 0).then_some(0))
    }

    /// Whether a request of `class` that declared `declared` body bytes polls long enough to
    /// keep the runtime late by itself (see [`cpu`]): one whose work comes with a `body` may,
    /// until its class has shown its polls.
    fn polls_long(&self, class: ClassId, declared: u64, body: bool) -> bool {
        let long = |ns| self.cpu.polls_long(ns);
        let poll_ns = self.classes.poll_ns(class, declared);
        self.cpu.is_enabled()
            && match body {
                true => poll_ns.is_none_or(long),
                false => poll_ns.is_some_and(long),
            }
    }

    /// The CPU work a request of `class` that declared `declared` body bytes brings, in
    /// microseconds: what its class demands for such a body, or what requests in general
    /// do; 0 where the CPU gate is off.
    fn cpu_estimate_us(&self, class: ClassId, declared: u64) -> u64 {
        if !self.cpu.is_enabled() {
            return 0;
        }
        self.classes
            .cpu_ns(class, declared)
            .map_or_else(|| self.cpu.typical_us(), |ns| ns.div_ceil(1000))
    }

    fn acquire_charged(self: &Arc<Self>, ask: Ask) -> Acquired {
        let memory = self.memory.allocated_bytes();
        match self.try_admit(memory, ask) {
            Ok(()) => Acquired::Admitted(Permit::new(Arc::clone(self), ask)),
            Err(_) if self.settings.observe_only => self.admit_past_limits(memory, ask),
            // Full, or closed, and no room to wait: answer without the lock. The queue length
            // may be an instant old, which only matters at the boundary.
            Err(Fit::Blocked(limit))
                if ask.priority != Priority::Critical
                    && (self.queued.load(Relaxed) >= self.settings.queue_capacity
                        || self.closed.load(SeqCst)) =>
            {
                Acquired::Rejected(self.reject_admission(ask.priority, Reason::QueueFull, limit))
            }
            Err(_) if self.sheds_at_once(memory, ask) => {
                let limit = self.blame(self.state.load(SeqCst), memory, ask);
                Acquired::Rejected(self.reject_admission(ask.priority, Reason::QueueFull, limit))
            }
            Err(_) => self.acquire_locked(memory, ask),
        }
    }

    /// Whether a request that cannot go at once is refused instead of queueing: a
    /// `Sheddable` one, while the queue is half full or memory stands above the soft limit.
    fn sheds_at_once(&self, memory: u64, ask: Ask) -> bool {
        // Whether memory stands above the soft limit, not whether the class is new.
        let known = Ask { known: true, ..ask };
        ask.priority == Priority::Sheddable
            && (self.queued.load(Relaxed) * 2 >= self.settings.queue_capacity
                || matches!(
                    self.fit(self.state.load(SeqCst), memory, known),
                    Fit::Unsure | Fit::Blocked(Limit::Memory)
                ))
    }

    /// Admits without the lock if nobody waits and the request fits below the soft limit;
    /// otherwise says how it stands.
    fn try_admit(&self, memory: u64, ask: Ask) -> Result<(), Fit> {
        let mut state = self.state.load(SeqCst);
        loop {
            let over_budget = match self.fit(state, memory, ask) {
                _ if state & QUEUED != 0 => {
                    return Err(Fit::Blocked(self.blame(state, memory, ask)));
                }
                Fit::Fits => false,
                // Progress guarantee: nothing in flight, nobody waiting, and nowhere to wait
                // for a fresh reading (otherwise the next sample decides, in `grant`).
                Fit::Blocked(Limit::Memory)
                    if in_flight(state) == 0 && self.settings.queue_capacity == 0 =>
                {
                    true
                }
                other => return Err(other),
            };
            match self.state.compare_exchange_weak(
                state,
                state + claim(kib(ask.charge)),
                SeqCst,
                SeqCst,
            ) {
                Ok(_) => {
                    self.count_admission(ask, over_budget, memory);
                    return Ok(());
                }
                Err(now) => state = now,
            }
        }
    }

    /// Gives back what an admitted request held (`unsettled`: it was never polled; `passer`:
    /// what it was charged when it passed a blocked head, or 0), and hands it on to waiters if
    /// any.
    pub(crate) fn release(&self, charged_kib: u64, unsettled: bool, passer: u64) {
        if unsettled {
            self.unsettled.fetch_sub(1, SeqCst);
        }
        let state = self.state.fetch_sub(claim(charged_kib), SeqCst);
        debug_assert!(in_flight(state) > 0 && charged_bytes(state) >= charged_kib * 1024);
        if state & QUEUED != 0 {
            self.grant_waiters_after(Reading::Last, passer);
        }
    }

    /// Changes a request's charge from `from` to `to` KiB; a lower charge may let waiters in.
    pub(crate) fn recharge(&self, from: u64, to: u64) {
        if to > from {
            self.state.fetch_add(charge(to - from), SeqCst);
        } else if self.state.fetch_sub(charge(from - to), SeqCst) & QUEUED != 0 {
            self.grant_waiters(Reading::Last);
        }
    }

    /// An admitted request was polled once: its cost is known. The last one to settle may let
    /// a waiter above the soft limit in.
    pub(crate) fn settle(&self) {
        if self.unsettled.fetch_sub(1, SeqCst) == 1 && self.state.load(SeqCst) & QUEUED != 0 {
            self.grant_waiters(Reading::Last);
        }
    }

    /// Stops queueing, for a graceful shutdown: every waiter is woken to leave with a 503
    /// (`queue_timeout`), and later arrivals that do not fit at once get one (`queue_full`).
    /// Admitted requests are not touched.
    pub(crate) fn close(&self) {
        self.closed.store(true, SeqCst);
        let mut queue = self.lock();
        let wakers = queue.take_wakers();
        drop(queue);
        tracing::info!(
            queued = wakers.len(),
            "admission closed: answering queued requests 503"
        );
        wakers.into_iter().for_each(Waker::wake);
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue stays consistent at every unlock, and nothing in this module panics while
        // holding the lock; never let a poisoned lock take the request path down.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Refused requests' bodies discarded, counted.
    pub(crate) fn discards(&self) -> &Discards {
        &self.counters.discards
    }

    /// The memory spoken for now: `max(reading, baseline + charged + held)`.
    pub(crate) fn spoken_for_bytes(&self) -> u64 {
        let charged = charged_bytes(self.state.load(SeqCst));
        self.footprint
            .spoken_for(self.memory.allocated_bytes(), charged)
    }
}

#[cfg(test)]
mod tests;
