//! The shared admission state: in-flight count, reserved bytes and the bounded FIFO queue.
//!
//! A request is admitted while `in_flight < max_concurrency` and
//! `max(memory, baseline + charged) + estimate <= budget`, where `memory` is the sampler's
//! last reading and `charged` sums what the requests in flight are charged: their estimates,
//! or what they have allocated when that is more (see [`crate::footprint`]). Otherwise it
//! queues, unless the queue is full.
//!
//! **Order.** Waiters are admitted strictly first in, first out, and a new arrival never
//! overtakes a waiter (no barging). A large request at the head therefore holds back smaller
//! ones behind it until memory frees up: the price of never starving large requests.
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
//!
//! Nothing here depends on tokio or on jemalloc: time is the response future's business, and
//! memory comes through [`MemorySource`].

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{
            AtomicBool, AtomicU64, AtomicUsize,
            Ordering::{Relaxed, SeqCst},
        },
    },
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use crate::{
    MemoryError, MemoryFailure, MemorySource, footprint::Footprint, log_throttle::LogThrottle,
    permit::Permit, reading_health::ReadingHealth, snapshot::Snapshot,
};

/// Why a request was not admitted; with [`Limit`], the labels of `admission_rejected_total`.
///
/// ```
/// use tower_admission::{Limit, Reason};
///
/// let labels: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
/// assert_eq!(labels, ["queue_full", "queue_timeout", "too_large"]);
/// assert_eq!(Limit::Memory.as_str(), "memory");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The queue was full when the request arrived.
    QueueFull,
    /// The request waited for the whole queue timeout.
    QueueTimeout,
    /// The request declared a `Content-Length` above the whole memory budget.
    TooLarge,
}

impl Reason {
    /// The label used in metrics and response bodies: `queue_full`, `queue_timeout` or
    /// `too_large`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::QueueFull => "queue_full",
            Reason::QueueTimeout => "queue_timeout",
            Reason::TooLarge => "too_large",
        }
    }

    /// Every reason, for iterating over counters.
    pub const ALL: [Reason; 3] = [Reason::QueueFull, Reason::QueueTimeout, Reason::TooLarge];
}

/// The limit that held a request back (see [`Reason`] for an example).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// Requests in flight.
    Concurrency,
    /// The memory budget.
    Memory,
}

impl Limit {
    /// The label used in metrics and response bodies: `concurrency` or `memory`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Limit::Concurrency => "concurrency",
            Limit::Memory => "memory",
        }
    }

    /// Every limit, for iterating over counters.
    pub const ALL: [Limit; 2] = [Limit::Concurrency, Limit::Memory];
}

/// A request the layer answered itself, with why. [`AdmissionBody::rejection`] returns it, so
/// outer layers can tell the layer's 503s from the service's own.
///
/// ```
/// use tower_admission::AdmissionBody;
///
/// fn describe<B>(response: &http::Response<AdmissionBody<B>>) -> Option<String> {
///     let rejection = response.body().rejection()?;
///     Some(format!("{} ({})", rejection.reason().as_str(), rejection.limit().as_str()))
/// }
/// ```
///
/// [`AdmissionBody::rejection`]: crate::AdmissionBody::rejection
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rejection {
    reason: Reason,
    limit: Limit,
}

impl Rejection {
    pub(crate) const fn new(reason: Reason, limit: Limit) -> Self {
        Self { reason, limit }
    }

    /// Why the request was refused.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// Which limit was hit.
    pub fn limit(&self) -> Limit {
        self.limit
    }
}

/// The resolved settings of one pool.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) max_concurrency: usize,
    pub(crate) budget: Option<u64>,
    pub(crate) queue_capacity: usize,
    pub(crate) queue_timeout: Duration,
    pub(crate) request_estimate: u64,
    pub(crate) memory_failure: MemoryFailure,
    pub(crate) sample_interval: Duration,
    /// The `Retry-After` value, built once.
    pub(crate) retry_after: http::HeaderValue,
    pub(crate) bypass: Vec<String>,
}

impl Settings {
    /// Whether `path` skips admission: it equals a prefix or continues it with a new segment.
    #[inline]
    pub(crate) fn bypasses(&self, path: &str) -> bool {
        !self.bypass.is_empty()
            && self.bypass.iter().any(|prefix| {
                path.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/')
                })
            })
    }
}

/// What [`Controller::acquire`] decided.
#[derive(Debug)]
pub(crate) enum Acquired {
    Admitted(Permit),
    Queued(Ticket),
    Rejected(Rejection),
}

/// The whole admission state in one word, so that admitting is one compare-and-swap and
/// releasing one subtraction, and the two limits are always checked against a consistent pair:
///
/// - bits 0–19: requests in flight (hence at most [`MAX_CONCURRENCY`]);
/// - bits 20–62: bytes charged to them, in KiB (up to 8 PiB);
/// - bit 63 (`QUEUED`): someone waits. Arrivals must then queue behind them (no barging),
///   and a release must take the lock to hand its slot on.
mod word {
    pub(super) const QUEUED: u64 = 1 << 63;
    const IN_FLIGHT_BITS: u32 = 20;
    const IN_FLIGHT_MASK: u64 = (1 << IN_FLIGHT_BITS) - 1;

    pub(super) fn in_flight(word: u64) -> u64 {
        word & IN_FLIGHT_MASK
    }

    pub(super) fn reserved_bytes(word: u64) -> u64 {
        ((word & !QUEUED) >> IN_FLIGHT_BITS) * 1024
    }

    /// What one request charged `charge_kib` adds to the word: one in flight, and its charge.
    pub(super) fn claim(charge_kib: u64) -> u64 {
        1 + charge(charge_kib)
    }

    /// What `charge_kib` adds to the reserved field.
    pub(super) fn charge(charge_kib: u64) -> u64 {
        charge_kib << IN_FLIGHT_BITS
    }
}

use word::{QUEUED, charge, claim, in_flight, reserved_bytes};

/// `bytes` in KiB, rounded up: the unit of charges in the state word.
pub(crate) fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}

/// The largest concurrency limit the state word can count.
pub(crate) const MAX_CONCURRENCY: usize = (1 << 20) - 1;
/// The largest budget. Estimates are bounded by the budget and charges beyond them by real
/// memory, so the word's 43 bits of KiB (8 PiB) never overflow.
pub(crate) const MAX_BUDGET_BYTES: u64 = 1 << 52;

/// Whether the memory reading was just taken (by the sampler) or may be an interval old.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    Fresh,
    Stale,
}

struct Waiter {
    estimate: u64,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Queue {
    /// Keyed by arrival number, so iteration order is FIFO and a cancelled waiter leaves in
    /// O(log n) without unsafe intrusive lists.
    waiters: BTreeMap<u64, Waiter>,
    next_ticket: u64,
}

/// One admission pool, shared behind an `Arc` by every layer, service, future and body.
///
/// While nobody waits, admission is one compare-and-swap on the state word and release one
/// subtraction, as in tokio's semaphore; the lock is taken only to queue, to leave the queue,
/// and to hand slots to waiters. Because the `QUEUED` bit lives in the same word, a release
/// either sees it (and takes the lock to grant) or happened before it was set, in which case
/// the waiter that set it re-checks under the lock.
pub(crate) struct Controller {
    pub(crate) settings: Settings,
    memory: Arc<dyn MemorySource>,
    /// Whether `memory` can be trusted: its last refresh succeeded, recently.
    reading_health: ReadingHealth,
    /// Set by [`Controller::close`]: nothing queues any more.
    closed: AtomicBool,
    /// In flight, reserved KiB and the `QUEUED` bit: see [`word`].
    state: AtomicU64,
    /// The baseline reading and the first-poll estimate.
    footprint: Footprint,
    /// Counts what the calling thread allocates, to charge requests as they allocate.
    thread_counter: Option<fn() -> u64>,
    queue: Mutex<Queue>,
    /// The queue's length, written under the lock and read without it.
    queued: AtomicUsize,
    admitted: AtomicU64,
    admitted_over_budget: AtomicU64,
    rejected: [[AtomicU64; 2]; 3],
    /// Milliseconds since `started`, advanced by the sampler: a clock the request path reads
    /// for the price of a load.
    clock_ms: AtomicU64,
    started: Instant,
    shed_log: LogThrottle,
    over_budget_log: LogThrottle,
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
        let footprint = Footprint::new(memory.allocated_bytes(), settings.request_estimate);
        // Charging what requests allocate only matters against a budget.
        let thread_counter = settings.budget.and(memory.thread_allocation_counter());
        Self {
            footprint,
            thread_counter,
            reading_health: ReadingHealth::new(settings.memory_failure, settings.sample_interval),
            closed: AtomicBool::new(false),
            settings,
            memory,
            state: AtomicU64::new(0),
            queue: Mutex::default(),
            queued: AtomicUsize::new(0),
            admitted: AtomicU64::new(0),
            admitted_over_budget: AtomicU64::new(0),
            rejected: Default::default(),
            clock_ms: AtomicU64::new(0),
            started: Instant::now(),
            shed_log: LogThrottle::new(Duration::from_secs(1)),
            over_budget_log: LogThrottle::new(Duration::from_secs(1)),
        }
    }

    pub(crate) fn memory(&self) -> &dyn MemorySource {
        &*self.memory
    }

    /// Admits, queues or rejects a request that declared `declared` body bytes.
    pub(crate) fn acquire(self: &Arc<Self>, declared: Option<u64>) -> Acquired {
        let declared = declared.unwrap_or(0);
        if self.settings.budget.is_some_and(|budget| declared > budget) {
            return Acquired::Rejected(self.reject(Reason::TooLarge, Limit::Memory));
        }
        // Without a budget there is nothing to reserve, and nothing to pay for reserving.
        let estimate = match self.settings.budget {
            Some(_) => declared.saturating_add(self.footprint.first_poll_estimate()),
            None => 0,
        };
        let memory = self.memory.allocated_bytes();
        match self.try_admit(memory, estimate) {
            Ok(()) => Acquired::Admitted(Permit::new(Arc::clone(self), estimate, declared)),
            // Full, or closed, and no room to wait: answer without the lock. The queue length
            // may be an instant old, which only matters at the boundary.
            Err(limit)
                if self.queued.load(Relaxed) >= self.settings.queue_capacity
                    || self.closed.load(SeqCst) =>
            {
                Acquired::Rejected(self.reject(Reason::QueueFull, limit))
            }
            Err(_) => self.enqueue(memory, estimate, declared),
        }
    }

    /// Admits without the lock if nobody waits and both limits allow; otherwise returns the
    /// limit in the way.
    fn try_admit(&self, memory: u64, estimate: u64) -> Result<(), Limit> {
        let mut state = self.state.load(SeqCst);
        loop {
            if state & QUEUED != 0 {
                return Err(self.limit_for(state, memory, estimate));
            }
            let over_budget = match self.blocking_limit(state, memory, estimate) {
                None => false,
                // Progress guarantee: nothing in flight, nobody waiting, and nowhere to wait
                // for a fresh reading (otherwise the next sample decides, in `grant`).
                Some(Limit::Memory)
                    if in_flight(state) == 0 && self.settings.queue_capacity == 0 =>
                {
                    true
                }
                Some(limit) => return Err(limit),
            };
            match self.state.compare_exchange_weak(
                state,
                state + claim(kib(estimate)),
                SeqCst,
                SeqCst,
            ) {
                Ok(_) => {
                    if over_budget {
                        self.note_over_budget(memory);
                    }
                    self.admitted.fetch_add(1, Relaxed);
                    return Ok(());
                }
                Err(now) => state = now,
            }
        }
    }

    fn enqueue(self: &Arc<Self>, memory: u64, estimate: u64, declared: u64) -> Acquired {
        let mut queue = self.lock();
        // The queue may have emptied since the first try: then there is no one to queue behind.
        if queue.waiters.is_empty() && self.try_admit(memory, estimate).is_ok() {
            drop(queue);
            return Acquired::Admitted(Permit::new(Arc::clone(self), estimate, declared));
        }
        if queue.waiters.len() >= self.settings.queue_capacity || self.closed.load(SeqCst) {
            let limit = self.limit_for(self.state.load(SeqCst), memory, estimate);
            drop(queue);
            return Acquired::Rejected(self.reject(Reason::QueueFull, limit));
        }
        let id = queue.next_ticket;
        queue.next_ticket += 1;
        queue.waiters.insert(
            id,
            Waiter {
                estimate,
                waker: None,
            },
        );
        self.state.fetch_or(QUEUED, SeqCst);
        // A release between the failed try and the bit did not see the bit: check again, now
        // that every later release will. This may grant the new ticket itself.
        let wakers = self.grant(&mut queue, memory, Reading::Stale);
        drop(queue);
        wakers.into_iter().for_each(Waker::wake);
        tracing::trace!(estimate, "request queued");
        Acquired::Queued(Ticket {
            controller: Arc::clone(self),
            id,
            estimate,
            declared,
            settled: false,
        })
    }

    /// Gives back what an admitted request held, and hands it on to waiters if any.
    pub(crate) fn release(&self, charged_kib: u64) {
        let state = self.state.fetch_sub(claim(charged_kib), SeqCst);
        debug_assert!(in_flight(state) > 0 && reserved_bytes(state) >= charged_kib * 1024);
        if state & QUEUED != 0 {
            self.grant_waiters(Reading::Stale);
        }
    }

    /// Changes a request's charge from `from` to `to` KiB; a lower charge may let waiters in.
    pub(crate) fn recharge(&self, from: u64, to: u64) {
        if to > from {
            self.state.fetch_add(charge(to - from), SeqCst);
        } else if self.state.fetch_sub(charge(from - to), SeqCst) & QUEUED != 0 {
            self.grant_waiters(Reading::Stale);
        }
    }

    /// The per-thread allocation counter, when requests are charged what they allocate.
    #[inline]
    pub(crate) fn thread_counter(&self) -> Option<fn() -> u64> {
        self.thread_counter
    }

    /// Learns from what a request's first poll allocated.
    pub(crate) fn learn_first_poll(&self, allocated: u64) {
        self.footprint.learn_first_poll(allocated);
    }

    /// Called by the sampler after each refresh: a lower reading may let waiters in.
    pub(crate) fn on_sample(&self, refreshed: Result<(), MemoryError>) {
        self.reading_health.record(&refreshed);
        self.clock_ms
            .store(self.started.elapsed().as_millis() as u64, Relaxed);
        let state = self.state.load(SeqCst);
        if refreshed.is_ok() {
            self.footprint
                .observe(self.memory.allocated_bytes(), in_flight(state));
        }
        // After a failed refresh too: the sampler's tick is what lets the progress guarantee
        // serve one request at a time when failing closed.
        if state & QUEUED != 0 {
            self.grant_waiters(Reading::Fresh);
        }
    }

    fn grant_waiters(&self, reading: Reading) {
        let memory = self.memory.allocated_bytes();
        let mut queue = self.lock();
        let wakers = self.grant(&mut queue, memory, reading);
        drop(queue);
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Removes ticket `id` from the queue. Returns the limit that kept it waiting if it was
    /// still queued, `None` if it had been granted meanwhile.
    fn leave_queue(&self, id: u64, estimate: u64) -> Option<Limit> {
        let memory = self.memory.allocated_bytes();
        let mut queue = self.lock();
        queue.waiters.remove(&id)?;
        let limit = self.limit_for(self.state.load(SeqCst), memory, estimate);
        // The head may have left: those behind it may fit now.
        let wakers = self.grant(&mut queue, memory, Reading::Stale);
        drop(queue);
        wakers.into_iter().for_each(Waker::wake);
        Some(limit)
    }

    /// Admits waiters from the head while they fit; returns their wakers, to be woken once
    /// the lock is released. Clears the `QUEUED` bit when the queue empties.
    ///
    /// The progress guarantee (nothing in flight: admit the head over the budget) waits for a
    /// fresh reading: right after a large request ends, the last reading may still show its
    /// memory for up to one sample interval.
    ///
    /// Checking and then adding is safe here: while the bit is set, only the lock holder
    /// adds to the state word; everyone else only subtracts.
    fn grant(&self, queue: &mut Queue, memory: u64, reading: Reading) -> Vec<Waker> {
        let mut wakers = Vec::new();
        // Once closed, waiters leave with a rejection when next polled (`close` woke them).
        while !self.closed.load(SeqCst)
            && let Some(estimate) = queue.waiters.first_key_value().map(|(_, w)| w.estimate)
        {
            let state = self.state.load(SeqCst);
            match self.blocking_limit(state, memory, estimate) {
                None => {}
                Some(_) if in_flight(state) == 0 && reading == Reading::Fresh => {
                    self.note_over_budget(memory)
                }
                Some(_) => break,
            }
            let Some((_, waiter)) = queue.waiters.pop_first() else {
                break;
            };
            self.state.fetch_add(claim(kib(estimate)), SeqCst);
            self.admitted.fetch_add(1, Relaxed);
            wakers.extend(waiter.waker);
        }
        if queue.waiters.is_empty() {
            self.state.fetch_and(!QUEUED, SeqCst);
        }
        self.queued.store(queue.waiters.len(), Relaxed);
        wakers
    }

    /// The limit a request of `estimate` bytes would hit in `state`, if any.
    fn blocking_limit(&self, state: u64, memory: u64, estimate: u64) -> Option<Limit> {
        if in_flight(state) >= self.settings.max_concurrency as u64 {
            return Some(Limit::Concurrency);
        }
        let budget = self.settings.budget?;
        let needed = self
            .footprint
            .committed(memory, reserved_bytes(state))
            .saturating_add(estimate);
        self.memory_refuses(needed > budget)
            .then_some(Limit::Memory)
    }

    /// Whether the memory limit refuses, given whether the reading puts the request `over`
    /// the budget. An untrusted reading decides nothing: the policy does. Failing open costs
    /// nothing until the reading says over; failing closed checks the reading's age on
    /// every decision.
    #[inline]
    fn memory_refuses(&self, over: bool) -> bool {
        let fails_closed = self.settings.memory_failure == MemoryFailure::Closed;
        // Failing open and under, or failing closed and over: the policy agrees with the
        // reading, whatever its health.
        if over == fails_closed {
            return over;
        }
        self.trusted_reading_refuses(over)
    }

    /// The reading refuses (`over`) or admits, unless it cannot be trusted. Out of line:
    /// it reads the clock, and keeps the admission loop small.
    #[cold]
    #[inline(never)]
    fn trusted_reading_refuses(&self, over: bool) -> bool {
        if self.reading_health.is_trusted() {
            over
        } else {
            self.settings.memory_failure == MemoryFailure::Closed
        }
    }

    /// Stops queueing, for a graceful shutdown: every waiter is woken to leave with a 503
    /// (`queue_timeout`), and later arrivals that do not fit at once get one (`queue_full`).
    /// Admitted requests are not touched.
    pub(crate) fn close(&self) {
        self.closed.store(true, SeqCst);
        let mut queue = self.lock();
        let wakers: Vec<Waker> = queue
            .waiters
            .values_mut()
            .filter_map(|waiter| waiter.waker.take())
            .collect();
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

    /// The limit to blame for a request that cannot be admitted. When the request itself
    /// would fit, a waiter ahead of it is held back, and only memory can do that.
    fn limit_for(&self, state: u64, memory: u64, estimate: u64) -> Limit {
        self.blocking_limit(state, memory, estimate)
            .unwrap_or(Limit::Memory)
    }

    fn reject(&self, reason: Reason, limit: Limit) -> Rejection {
        let total = self.rejected[reason as usize][limit as usize].fetch_add(1, Relaxed) + 1;
        // At 100k rejections/s a line per rejection would be its own outage.
        if let Some(suppressed) = self.shed_log.allow(self.clock_ms.load(Relaxed), total) {
            tracing::warn!(
                reason = reason.as_str(),
                limit = limit.as_str(),
                total,
                suppressed,
                "request shed"
            );
        }
        Rejection::new(reason, limit)
    }

    fn note_over_budget(&self, memory: u64) {
        let total = self.admitted_over_budget.fetch_add(1, Relaxed) + 1;
        if let Some(suppressed) = self
            .over_budget_log
            .allow(self.clock_ms.load(Relaxed), total)
        {
            tracing::warn!(
                memory,
                budget = self.settings.budget,
                total,
                suppressed,
                "nothing in flight: admitting one request over the memory budget"
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue stays consistent at every unlock, and nothing in this module panics while
        // holding the lock; never let a poisoned lock take the request path down.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The memory spoken for now: `max(reading, baseline + charged)`.
    pub(crate) fn committed_bytes(&self) -> u64 {
        let charged = reserved_bytes(self.state.load(SeqCst));
        self.footprint
            .committed(self.memory.allocated_bytes(), charged)
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let state = self.state.load(SeqCst);
        let mut rejected = [[0; 2]; 3];
        for (row, counters) in rejected.iter_mut().zip(&self.rejected) {
            for (value, counter) in row.iter_mut().zip(counters) {
                *value = counter.load(Relaxed);
            }
        }
        Snapshot {
            in_flight: in_flight(state) as usize,
            queued: self.queued.load(Relaxed),
            memory_bytes: self.memory.allocated_bytes(),
            reserved_bytes: reserved_bytes(state),
            memory_budget_bytes: self.settings.budget,
            max_concurrency: self.settings.max_concurrency,
            queue_capacity: self.settings.queue_capacity,
            admitted: self.admitted.load(Relaxed),
            admitted_over_budget: self.admitted_over_budget.load(Relaxed),
            memory_source_errors: self.reading_health.errors(),
            memory_reading_age: self.reading_health.age(),
            rejected,
        }
    }
}

/// A place in the queue. Dropping it leaves the queue, or gives back a grant not yet taken.
#[must_use]
pub(crate) struct Ticket {
    controller: Arc<Controller>,
    id: u64,
    estimate: u64,
    declared: u64,
    /// Whether the grant was taken as a permit, or the ticket left the queue.
    settled: bool,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .field("estimate", &self.estimate)
            .field("settled", &self.settled)
            .finish()
    }
}

impl Ticket {
    /// Whether the ticket still waits (not granted, not gone). For tests, which must not
    /// settle a ticket to look at it.
    #[cfg(test)]
    pub(crate) fn is_waiting(&self) -> bool {
        !self.settled && self.controller.lock().waiters.contains_key(&self.id)
    }

    fn permit(&self) -> Permit {
        Permit::new(Arc::clone(&self.controller), self.estimate, self.declared)
    }

    /// Ready with the permit once granted, or with a rejection once the pool is closed;
    /// otherwise registers `cx`'s waker.
    pub(crate) fn poll_grant(&mut self, cx: &mut Context<'_>) -> Poll<Result<Permit, Rejection>> {
        if self.settled {
            // Polled again after completion: a caller bug, answered without a second permit.
            return Poll::Pending;
        }
        let mut queue = self.controller.lock();
        if let Some(waiter) = queue.waiters.get_mut(&self.id) {
            if self.controller.is_closed() {
                drop(queue);
                return Poll::Ready(self.expire());
            }
            match &mut waiter.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        drop(queue);
        self.settled = true;
        Poll::Ready(Ok(self.permit()))
    }

    /// The deadline passed: leave the queue with a rejection, unless the grant came first.
    pub(crate) fn expire(&mut self) -> Result<Permit, Rejection> {
        self.settled = true;
        match self.controller.leave_queue(self.id, self.estimate) {
            Some(limit) => Err(self.controller.reject(Reason::QueueTimeout, limit)),
            None => Ok(self.permit()),
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if !self.settled
            && self
                .controller
                .leave_queue(self.id, self.estimate)
                .is_none()
        {
            // Granted, but the future was dropped before it noticed.
            self.controller.release(kib(self.estimate));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::atomic::AtomicUsize, task::Wake};

    use super::*;
    use crate::ManualMemory;

    const MIB: u64 = 1 << 20;

    fn controller(
        max: usize,
        budget: Option<u64>,
        capacity: usize,
    ) -> (Arc<Controller>, ManualMemory) {
        controller_failing(MemoryFailure::Open, max, budget, capacity)
    }

    fn controller_failing(
        policy: MemoryFailure,
        max: usize,
        budget: Option<u64>,
        capacity: usize,
    ) -> (Arc<Controller>, ManualMemory) {
        let memory = ManualMemory::new(0);
        let settings = Settings {
            max_concurrency: max,
            budget,
            queue_capacity: capacity,
            queue_timeout: Duration::from_secs(1),
            request_estimate: MIB,
            memory_failure: policy,
            sample_interval: Duration::from_millis(10),
            retry_after: http::HeaderValue::from_static("1"),
            bypass: vec!["/health".into(), "/static/".into()],
        };
        (
            Arc::new(Controller::new(settings, Arc::new(memory.clone()))),
            memory,
        )
    }

    fn admitted(a: Acquired) -> Permit {
        match a {
            Acquired::Admitted(p) => p,
            other => panic!("expected admission, got {other:?}"),
        }
    }

    fn queued(a: Acquired) -> Ticket {
        match a {
            Acquired::Queued(t) => t,
            other => panic!("expected a queue place, got {other:?}"),
        }
    }

    fn rejected(a: Acquired) -> Rejection {
        match a {
            Acquired::Rejected(r) => r,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[derive(Default)]
    struct CountingWaker(AtomicUsize);
    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    fn poll(ticket: &mut Ticket, waker: &Arc<CountingWaker>) -> Poll<Permit> {
        let waker = Waker::from(Arc::clone(waker));
        ticket
            .poll_grant(&mut Context::from_waker(&waker))
            .map(|granted| granted.expect("granted, not rejected"))
    }

    #[test]
    fn concurrency_limit_then_queue_then_shed() {
        let (c, _) = controller(2, None, 1);
        let a = admitted(c.acquire(None));
        let _b = admitted(c.acquire(None));
        let _queued = queued(c.acquire(None));
        let r = rejected(c.acquire(None));
        assert_eq!(r, Rejection::new(Reason::QueueFull, Limit::Concurrency));
        let s = c.snapshot();
        assert_eq!((s.in_flight, s.queued, s.admitted), (2, 1, 2));
        assert_eq!(s.rejected(Reason::QueueFull, Limit::Concurrency), 1);
        drop(a);
        assert_eq!(c.snapshot().in_flight, 2, "the waiter took the freed slot");
        assert_eq!(c.snapshot().queued, 0);
    }

    #[test]
    fn zero_capacity_sheds_at_once() {
        let (c, _) = controller(1, None, 0);
        let _a = admitted(c.acquire(None));
        assert_eq!(rejected(c.acquire(None)).reason(), Reason::QueueFull);
    }

    #[test]
    fn memory_budget_counts_reservations_and_declared_length() {
        let (c, memory) = controller(100, Some(10 * MIB), 10);
        memory.set(5 * MIB);
        c.on_sample(Ok(())); // the baseline: what memory holds with nothing in flight
        let _a = admitted(c.acquire(Some(2 * MIB))); // reserves 3 MiB: 8 of 10
        assert_eq!(c.snapshot().reserved_bytes, 3 * MIB);
        let _b = admitted(c.acquire(None)); // 1 MiB: 9 of 10
        let _c = admitted(c.acquire(None)); // 10 of 10: still fits
        let mut d = queued(c.acquire(None));
        assert_eq!(
            rejected(c.acquire(Some(11 * MIB))),
            Rejection::new(Reason::TooLarge, Limit::Memory)
        );
        // A lower reading lets the waiter in at the next sample.
        memory.set(4 * MIB);
        let waker = Arc::new(CountingWaker::default());
        assert!(poll(&mut d, &waker).is_pending());
        c.on_sample(Ok(()));
        assert_eq!(waker.0.load(Relaxed), 1);
        assert!(poll(&mut d, &waker).is_ready());
    }

    #[test]
    fn fifo_without_barging() {
        // The head needs 8 MiB, which does not fit; a small arrival must not overtake it.
        let (c, memory) = controller(100, Some(10 * MIB), 10);
        memory.set(2 * MIB);
        c.on_sample(Ok(())); // the baseline: what memory holds with nothing in flight
        let first = admitted(c.acquire(None)); // 3 of 10
        let mut big = queued(c.acquire(Some(7 * MIB))); // 3 + 8 > 10
        let mut small = queued(c.acquire(None)); // 3 + 1 would fit, but queues behind
        let waker = Arc::new(CountingWaker::default());
        assert!(poll(&mut big, &waker).is_pending());
        assert!(poll(&mut small, &waker).is_pending());
        drop(first); // 2 + 8 fits; 2 + 8 + 1 does not
        let Poll::Ready(big_permit) = poll(&mut big, &waker) else {
            panic!("head first")
        };
        assert!(poll(&mut small, &waker).is_pending());
        drop(big_permit);
        assert!(poll(&mut small, &waker).is_ready());
        assert_eq!(waker.0.load(Relaxed), 2);
    }

    #[test]
    fn head_leaving_lets_the_next_in() {
        let (c, memory) = controller(100, Some(10 * MIB), 10);
        memory.set(2 * MIB);
        c.on_sample(Ok(())); // the baseline: what memory holds with nothing in flight
        let _first = admitted(c.acquire(None));
        let big = queued(c.acquire(Some(7 * MIB)));
        let mut small = queued(c.acquire(None));
        let waker = Arc::new(CountingWaker::default());
        assert!(poll(&mut small, &waker).is_pending());
        drop(big);
        assert_eq!(waker.0.load(Relaxed), 1);
        assert!(poll(&mut small, &waker).is_ready());
    }

    #[test]
    fn progress_guarantee_when_nothing_is_in_flight() {
        let (c, memory) = controller(4, Some(10 * MIB), 10);
        memory.set(50 * MIB);
        let waker = Arc::new(CountingWaker::default());
        // Over budget and idle: the first request waits for a fresh reading, then goes.
        let mut first = queued(c.acquire(None));
        assert!(poll(&mut first, &waker).is_pending());
        c.on_sample(Ok(()));
        let Poll::Ready(first) = poll(&mut first, &waker) else {
            panic!("a fresh reading admits the head")
        };
        assert_eq!(c.snapshot().admitted_over_budget, 1);
        let mut second = queued(c.acquire(None));
        drop(first);
        assert!(
            poll(&mut second, &waker).is_pending(),
            "the reading may be stale"
        );
        c.on_sample(Ok(()));
        assert!(
            poll(&mut second, &waker).is_ready(),
            "the head goes when nothing is in flight"
        );
        assert_eq!(c.snapshot().admitted_over_budget, 2);
    }

    #[test]
    fn without_a_queue_the_guarantee_cannot_wait() {
        let (c, memory) = controller(4, Some(10 * MIB), 0);
        memory.set(50 * MIB);
        let _only = admitted(c.acquire(None));
        assert_eq!(c.snapshot().admitted_over_budget, 1);
        assert_eq!(rejected(c.acquire(None)).limit(), Limit::Memory);
    }

    #[test]
    fn expiry_rejects_with_the_blocking_limit() {
        let (c, _) = controller(1, None, 10);
        let _a = admitted(c.acquire(None));
        let mut t = queued(c.acquire(None));
        assert_eq!(
            t.expire().unwrap_err(),
            Rejection::new(Reason::QueueTimeout, Limit::Concurrency)
        );
        drop(t);
        let s = c.snapshot();
        assert_eq!((s.in_flight, s.queued), (1, 0));
        assert_eq!(s.rejected(Reason::QueueTimeout, Limit::Concurrency), 1);
    }

    #[test]
    fn expiry_after_a_grant_admits() {
        let (c, _) = controller(1, None, 10);
        let a = admitted(c.acquire(None));
        let mut t = queued(c.acquire(None));
        drop(a);
        let permit = t.expire().expect("granted before the deadline");
        drop(t);
        assert_eq!(c.snapshot().in_flight, 1);
        drop(permit);
        assert_eq!(c.snapshot().in_flight, 0);
    }

    #[test]
    fn dropping_a_granted_ticket_gives_the_grant_back() {
        let (c, _) = controller(1, Some(100 * MIB), 10);
        let a = admitted(c.acquire(None));
        let t = queued(c.acquire(None));
        let mut behind = queued(c.acquire(None));
        drop(a); // grants `t`
        assert_eq!(c.snapshot().reserved_bytes, MIB);
        drop(t); // never observed: the slot passes on
        let waker = Arc::new(CountingWaker::default());
        let Poll::Ready(_permit) = poll(&mut behind, &waker) else {
            panic!("granted")
        };
        let s = c.snapshot();
        assert_eq!((s.in_flight, s.queued, s.reserved_bytes), (1, 0, MIB));
    }

    #[test]
    fn everything_returns_to_zero() {
        let (c, _) = controller(2, Some(100 * MIB), 4);
        let permits: Vec<_> = (0..2).map(|_| admitted(c.acquire(Some(10)))).collect();
        let tickets: Vec<_> = (0..4).map(|_| queued(c.acquire(Some(10)))).collect();
        drop(tickets);
        drop(permits);
        let s = c.snapshot();
        assert_eq!((s.in_flight, s.queued, s.reserved_bytes), (0, 0, 0));
    }

    fn refresh_failed() -> Result<(), MemoryError> {
        Err(MemoryError::Read {
            what: "test",
            reason: "injected".into(),
        })
    }

    #[test]
    fn a_failing_source_fails_open_by_default() {
        let (c, memory) = controller(4, Some(10 * MIB), 4);
        memory.set(50 * MIB);
        c.on_sample(Ok(()));
        let mut waiting = queued(c.acquire(None));
        // The source breaks: its last reading (over budget) no longer refuses anyone...
        c.on_sample(refresh_failed());
        let waker = Arc::new(CountingWaker::default());
        let Poll::Ready(_waited) = poll(&mut waiting, &waker) else {
            panic!("the waiter is not let in")
        };
        let _a = admitted(c.acquire(None));
        // ...but the concurrency limit still does.
        let _b = admitted(c.acquire(None));
        let _c = admitted(c.acquire(None));
        let _d = queued(c.acquire(None));
        assert_eq!(c.snapshot().memory_source_errors, 1);
        // Recovered: the reading decides again.
        c.on_sample(Ok(()));
        assert!(matches!(
            c.acquire(None),
            Acquired::Queued(_) | Acquired::Rejected(_)
        ));
    }

    #[test]
    fn a_failing_source_can_fail_closed() {
        let (c, _) = controller_failing(MemoryFailure::Closed, 4, Some(10 * MIB), 4);
        let first = admitted(c.acquire(None));
        c.on_sample(refresh_failed());
        // Memory reads 0, but nobody knows: memory counts as over the budget.
        let mut second = queued(c.acquire(None));
        let waker = Arc::new(CountingWaker::default());
        assert!(poll(&mut second, &waker).is_pending());
        match second.expire() {
            Err(rejection) => assert_eq!(rejection.limit(), Limit::Memory),
            Ok(_) => panic!("admitted on an unknown reading"),
        }
        // One at a time still: with nothing in flight, the next sample admits the head.
        drop(first);
        let mut third = queued(c.acquire(None));
        c.on_sample(refresh_failed());
        assert!(poll(&mut third, &waker).is_ready());
        assert_eq!(c.snapshot().admitted_over_budget, 1);
    }

    #[test]
    fn closing_answers_waiters_and_stops_queueing() {
        let (c, _) = controller(1, None, 4);
        let served = admitted(c.acquire(None));
        let waker = Arc::new(CountingWaker::default());
        let mut waiters: Vec<_> = (0..3).map(|_| queued(c.acquire(None))).collect();
        for waiter in &mut waiters {
            assert!(poll(waiter, &waker).is_pending());
        }
        c.close();
        assert_eq!(waker.0.load(Relaxed), 3, "every waiter is woken");
        for waiter in &mut waiters {
            let Poll::Ready(Err(rejection)) =
                waiter.poll_grant(&mut Context::from_waker(Waker::noop()))
            else {
                panic!("a waiter was not rejected on close")
            };
            assert_eq!(rejection.reason(), Reason::QueueTimeout);
        }
        let Acquired::Rejected(rejection) = c.acquire(None) else {
            panic!("queued after close")
        };
        assert_eq!(rejection.reason(), Reason::QueueFull);
        // What was admitted runs on, and what fits is still admitted.
        drop(served);
        let _next = admitted(c.acquire(None));
        let s = c.snapshot();
        assert_eq!((s.in_flight, s.queued), (1, 0));
    }

    #[test]
    fn bypass_matches_whole_segments() {
        let (c, _) = controller(1, None, 0);
        let s = &c.settings;
        assert!(s.bypasses("/health"));
        assert!(s.bypasses("/health/live"));
        assert!(!s.bypasses("/healthcare"));
        assert!(!s.bypasses("/"));
        assert!(s.bypasses("/static/app.js"));
        assert!(!s.bypasses("/static"));
    }
}
