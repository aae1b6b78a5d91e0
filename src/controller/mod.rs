//! The shared admission state: one pool, tokio-free, behind an `Arc`. Time comes from its
//! [`Clock`], memory through [`MemorySource`]; the rules it decides by are in the guide
//! ([How the layer decides](crate::guide::deciding)). Here, the mechanism.
//!
//! **The word.** In flight, the KiB charged to requests in flight, and a "someone waits" bit
//! share one atomic word (see [`word`]). While nobody waits and a request fits below the soft
//! limit, admission is one compare-and-swap on it and a release one subtraction, as in
//! tokio's semaphore ([`admit`]).
//!
//! **The lock.** The queue sits behind one lock with its length and whether the pool has
//! closed ([`waitlist`]); it is taken only to queue, to leave the queue, to admit above the
//! soft limit, and to hand slots to waiters. While the bit is set, only the lock holder adds
//! to the word; everyone else only subtracts, so checking and then adding is safe under it. A
//! release either sees the bit (and takes the lock to grant) or happened before it was set, in
//! which case the waiter that set it checks again under the lock ([`waiting`]).
//!
//! **Files.** A file either defines a part this file may name (the limits' record, the
//! queue, the classes, the gates, the counters) and never names [`Controller`], or adds verbs
//! to [`Controller`] and defines nothing this file needs; handles ([`permit`], [`ticket`],
//! [`held`]) are reached by path.
//!
//! **Cancel safety.** A [`Ticket`](ticket::Ticket) dropped while queued leaves the queue at
//! once; one dropped after its grant but before it was observed gives the grant back. Wakers
//! are collected under the lock and woken after it is released.

pub(crate) mod accepting;
mod adaptive;
pub(crate) mod admit;
mod by_size;
mod classes;
mod clock;
mod connections;
mod counters;
mod cpu;
mod drain;
mod end;
mod fit;
mod footprint;
pub(crate) mod held;
mod inputs;
mod meter;
mod observe_only;
pub(crate) mod permit;
mod polls;
pub(crate) mod progress;
mod queue;
mod report;
mod reserve;
mod settings;
pub(crate) mod tick;
pub(crate) mod ticket;
mod waiting;
mod waitlist;
mod window;
mod word;

pub(crate) use adaptive::starting_limit;
pub(crate) use classes::ClassId;
pub use classes::CostClass;
pub(crate) use clock::Clock;
pub(crate) use inputs::Runtime;
#[cfg(test)]
pub(crate) use queue::MAX_PASSES;
pub use queue::QueueTarget;
pub(crate) use settings::Settings;
pub(crate) use word::{MAX_BUDGET_BYTES, MAX_CONCURRENCY};

use std::{
    fmt,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst},
    },
    task::Waker,
};

use crate::{
    memory::{MemorySource, gauge::Gauge},
    rejection::Discards,
};
use adaptive::AdaptiveLimit;
use classes::Classes;
use counters::Counters;
use cpu::CpuGate;
use footprint::Footprint;
use inputs::{Ask, Reading};
use meter::Shown;
use queue::Queue;
use waitlist::Waitlist;
use window::Window;
use word::{QUEUED, charge, charged_bytes, claim, in_flight, kib};

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
    /// The memory reading, whether it can be trusted, and the threads' allocation counters.
    gauge: Gauge,
    /// In flight, charged KiB and the `QUEUED` bit: see [`word`].
    state: AtomicU64,
    footprint: Footprint,
    classes: Classes,
    /// Admitted requests not yet polled: their cost is still an estimate.
    unsettled: AtomicUsize,
    waitlist: Waitlist,
    counters: Counters,
    pub(crate) adaptive: AdaptiveLimit,
    pub(crate) cpu: CpuGate,
    /// The window the CPU gate and the adaptive limit judge (only the sampler reads it).
    window: Mutex<Window>,
    /// The connections a listener made from the pool accepted.
    connections: connections::Connections,
    /// Times polls and queue waits: the real clock, or a virtual one in tests.
    pub(crate) clock: Clock,
}

impl fmt::Debug for Controller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Controller")
            .field("settings", &self.settings)
            .field("memory", &self.gauge.source())
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

impl Controller {
    pub(crate) fn new(settings: Settings, memory: Arc<dyn MemorySource>) -> Self {
        Self::with_clock(settings, memory, Clock::default())
    }

    /// A pool that times with `clock` (a virtual one, in tests).
    pub(crate) fn with_clock(
        settings: Settings,
        memory: Arc<dyn MemorySource>,
        clock: Clock,
    ) -> Self {
        Self {
            footprint: Footprint::new(memory.allocated_bytes()),
            classes: Classes::new(settings.initial_estimate),
            unsettled: AtomicUsize::new(0),
            // Charging what requests allocate only matters against a budget.
            gauge: Gauge::new(
                memory,
                settings.memory_failure,
                settings.sample_interval,
                settings.budget.is_some(),
            ),
            adaptive: AdaptiveLimit::new(
                settings.max_concurrency,
                settings.lateness_target,
                settings.initial_limit,
            ),
            cpu: CpuGate::new(settings.lateness_target, settings.workers),
            window: Mutex::default(),
            connections: connections::Connections::new(settings.max_connections),
            clock,
            waitlist: Waitlist::default(),
            settings,
            state: AtomicU64::new(0),
            counters: Counters::default(),
        }
    }

    pub(crate) fn memory(&self) -> &dyn MemorySource {
        self.gauge.source()
    }

    /// Admits `ask` where only the caller adds to the state word (under the lock, or past
    /// the limits): claims its slot and charge, then counts it in.
    fn admit(&self, ask: Ask, over_budget: bool, memory: u64) {
        self.state.fetch_add(claim(kib(ask.charge)), SeqCst);
        self.admitted(ask, over_budget, memory);
    }

    /// `ask` has its slot and charge in the state word: charges the CPU work it brings,
    /// counts it unsettled until its first poll, spends this process's share of the
    /// headroom, starts it in its class, lets its declared body count towards the discard
    /// allowance, and counts the admission (over the budget: the progress guarantee).
    #[inline(always)]
    fn admitted(&self, ask: Ask, over_budget: bool, memory: u64) {
        self.cpu.recharge(0, ask.cpu_us);
        self.unsettled.fetch_add(1, SeqCst);
        self.footprint.admitted(ask.charge);
        self.classes.started(ask.class);
        if ask.declared > 0 {
            self.discards().credit(ask.declared);
        }
        self.counters.admitted(ask.priority);
        if over_budget {
            let now_ms = self.clock.last_ms();
            self.counters
                .note_over_budget(memory, self.settings.budget, now_ms);
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

    /// A poll of a request of `class` that declared `declared` body bytes `shown` its class
    /// a new peak or a rise: its class learns them. Returns the class's rise now, which the
    /// request's charge keeps in hand.
    #[inline]
    pub(crate) fn shown(&self, class: ClassId, declared: u64, shown: Shown) -> u64 {
        let classes = &self.classes;
        if let Some(peak) = shown.peak {
            classes.observe_peak(class, declared, peak);
        }
        if let Some(rise) = shown.rise {
            classes.observe_rise(class, declared, rise);
        }
        classes.rise(class, declared)
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
        self.waitlist.close();
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
        self.waitlist.is_closed()
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.waitlist.lock()
    }

    /// Rejected requests' bodies discarded, counted.
    pub(crate) fn discards(&self) -> &Discards {
        &self.counters.discards
    }

    /// What this process's requests are charged and hold now, and how many are in flight:
    /// what it tells the cgroup's other processes.
    pub(crate) fn charged_and_in_flight(&self) -> (u64, usize) {
        let state = self.state.load(SeqCst);
        let charged = charged_bytes(state).saturating_add(self.footprint.held());
        (charged, in_flight(state) as usize)
    }

    /// The memory spoken for now: `max(reading, baseline + charged + held)`.
    pub(crate) fn spoken_for_bytes(&self) -> u64 {
        let charged = charged_bytes(self.state.load(SeqCst));
        self.footprint
            .spoken_for(self.gauge.allocated_bytes(), charged)
    }
}

#[cfg(test)]
mod tests;
