//! The CPU gate: requests are admitted while the CPU work they bring fits what the workers can
//! finish soon.
//!
//! **Demand, not wall time.** A request's CPU demand is the time spent inside its own polls
//! (its handler's and its response body's, see `Permit::track`): what it asks of a core. A
//! poll that waits for a client's bytes, a timer or a downstream reply returns at once, so
//! none of that waiting counts, and other requests cannot inflate it (a worker runs one poll
//! at a time). Each cost class learns what its requests demand, as a moving average over
//! about eight requests (see [`super::classes`]); a class not seen yet starts from what
//! requests in general demand ([`CpuGate::typical_us`]).
//!
//! **Charged while it has work ready.** An admitted request is charged its class's figure,
//! less what its polls have used so far. One whose last poll returned `Pending` while not
//! reading its body waits on a timer, another service or its response's reader, and is
//! charged nothing until its next poll (work that follows such a wait is not foreseen; the
//! live limit guards against what that misses). So a class of mixed sizes is charged its
//! mean, and each request only until its work is done or it waits.
//!
//! **Work that comes with a body is gated where it begins.** A request that declares a body
//! (or whose class has shown bodies) cannot start a parse before its body is in. While the
//! body comes, its charge waits apart, as work *coming*: the client sets that pace, however
//! fast or slow, and no guess is made of who is slow. Its body's last frame is held until
//! its work fits (see [`Turn`]): then its charge moves to the work charged. So the upload is
//! never gated, and the parse always is.
//!
//! **The gate.** While the CPU is saturated, a request is admitted only while the work
//! charged to the requests in flight, plus its own, fits what the workers can do within the
//! horizon: `charged + own ≤ workers × horizon`, with the horizon one and a half times the
//! larger of a typical request and this one (5 ms at least): admitted work drains within
//! about one and a half service times, a worker is never left without a request ready to
//! run, and a request heavier than most is not held back for good. A request whose work comes
//! with its body is admitted while `charged + coming + own ≤ workers × (horizon + body)`,
//! where `body` is the least time its class's bodies took lately from the request's arrival
//! to its last byte (the quickest is the client's pace; a slower one also waited for a worker
//! to read it, or in the queue while its client sent it): what the workers do while a body
//! comes is room as well, so bodies that come slowly are admitted as their pace allows, and
//! bodies that come at once almost as requests without. The last frame waits for
//! `charged + own ≤ workers × horizon`. With nothing in flight (nothing charged, for a
//! last frame) a request always goes. While the CPU is not saturated, the gate still holds
//! the work charged within [`OPEN_CAPACITIES`] times the capacity: a window in which request
//! polls kept the workers less busy (a storm of connections and rejections keeps them busy
//! outside request polls) must not let a flood in at once.
//!
//! **Long polls.** A poll is not preempted: while every worker is inside one, nothing else
//! on the runtime runs, not a health check, not a timer, not the accept loop. The gate bounds
//! the work in flight, not how long one poll of it lasts, so a class that parses a large body
//! in one call could hold every worker for that long. Each class learns its requests' longest
//! poll against their `Content-Length` (see [`super::by_size`]: a parse takes as long as its
//! body is long). A request expected to poll for twice the lateness target or more (one with
//! a body, also while its class has not shown its polls) starts only while fewer than all
//! workers but one run such requests (one at a time, with one or two workers): its body's last
//! frame, or without a body its first poll, waits for its [`Turn`]. It runs on a worker of its
//! own until it ends or waits on something else (a timer, another service): its work is not
//! charged, and the capacity is that of the other workers. While as many such requests as
//! may run are ready and wait for a worker, the next waits in the queue, where it holds no
//! memory for its work; one whose body is still coming (slowly, perhaps) is not ready, and
//! does not hold the next back.
//!
//! **Saturated** means that, over a window (the one the adaptive limit judges too, see
//! [`window`](super::window)), request polls kept at least 60 % of the workers busy; it stays
//! so until they keep fewer than 40 % busy. Requests that mostly wait (on a client, a timer,
//! another service) leave the CPU idle, so the gate stays open for them and only
//! `max_concurrency` and the memory budget hold them.
//! (The workers' park counts were tried as a second sign, and dropped: with clients on the
//! same cores, workers park while the few admitted requests wait for their bodies, and the
//! gate flapped open.)

use std::{
    sync::{
        Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    task::Waker,
    time::Duration,
};

use super::window::Closed;
use crate::log_throttle::LogThrottle;
/// The shortest horizon, in microseconds: below it, the time to hand a request to a worker
/// would count as much as the work.
const LEAST_HORIZON_US: u64 = 5_000;
/// A request of unknown demand, before anything at all was measured, in microseconds.
const FIRST_GUESS_US: u64 = 1_000;
/// The share of the workers request polls must keep busy for the CPU to become saturated,
/// and the share below which it no longer is.
const ENTER_SATURATED: f64 = 0.6;
const LEAVE_SATURATED: f64 = 0.4;
/// A poll this long or longer adds to the window at once; shorter ones add up in the permit.
pub(crate) const FLUSH_NS: u64 = 20_000;

#[derive(Debug)]
pub(crate) struct CpuGate {
    /// Off with a fixed concurrency limit: nothing is timed, nothing gated.
    enabled: bool,
    /// The workers that can run requests at once.
    workers: AtomicUsize,
    /// The CPU work charged to the requests in flight, in microseconds.
    charged_us: AtomicU64,
    /// The work of admitted requests whose bodies are still coming, in microseconds: charged
    /// once they take their turn (see [`Turn`]).
    coming_us: AtomicU64,
    /// The bodies waiting for their turn, woken whenever the work charged falls.
    turns: Mutex<Vec<Waker>>,
    turns_waiting: AtomicUsize,
    /// Nanoseconds spent in request polls since the window began.
    polled_ns: AtomicU64,
    /// What a request demands in general (all classes), in nanoseconds: 0 until measured.
    typical_ns: AtomicU64,
    /// Whether the CPU is saturated: the gate holds requests back only then.
    saturated: AtomicBool,
    /// How many workers request polls kept busy in the last window, in thousandths.
    busy_milli: AtomicU64,
    /// A poll this long or longer keeps the runtime late by itself (twice the lateness
    /// target), in nanoseconds.
    long_poll_ns: u64,
    /// The requests running that poll that long, started at most `workers - 1` at once.
    running_long: AtomicUsize,
    /// The requests that poll that long ready to run and waiting for a worker.
    ready_long: AtomicUsize,
    /// Throttles the log of saturation coming and going.
    log: LogThrottle,
}

/// What the gate judged of a window: how busy request polls kept the workers, and whether
/// the CPU is saturated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Judged {
    pub(crate) busy_workers: f64,
    pub(crate) saturated: bool,
}

impl CpuGate {
    /// A gate for `workers`, on where the runtime has a `lateness_target` (off without one).
    pub(crate) fn new(lateness_target: Option<Duration>, workers: usize) -> Self {
        Self {
            enabled: lateness_target.is_some(),
            long_poll_ns: lateness_target.map_or(u64::MAX, |target| {
                (target.as_nanos().min(u64::MAX.into()) as u64).saturating_mul(2)
            }),
            running_long: AtomicUsize::new(0),
            ready_long: AtomicUsize::new(0),
            workers: AtomicUsize::new(workers.max(1)),
            charged_us: AtomicU64::new(0),
            coming_us: AtomicU64::new(0),
            turns: Mutex::new(Vec::new()),
            turns_waiting: AtomicUsize::new(0),
            polled_ns: AtomicU64::new(0),
            typical_ns: AtomicU64::new(0),
            saturated: AtomicBool::new(false),
            busy_milli: AtomicU64::new(0),
            log: LogThrottle::new(Duration::from_secs(1)),
        }
    }

    /// Whether polls are timed and the gate decides.
    #[inline]
    pub(crate) fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub(crate) fn workers(&self) -> usize {
        self.workers.load(Relaxed)
    }

    pub(crate) fn set_workers(&self, workers: usize) {
        self.workers.store(workers.max(1), Relaxed);
    }

    pub(crate) fn is_saturated(&self) -> bool {
        self.saturated.load(Relaxed)
    }

    pub(crate) fn charged_us(&self) -> u64 {
        self.charged_us.load(Relaxed)
    }

    /// The work of admitted requests whose bodies are still coming, in microseconds.
    pub(crate) fn coming_us(&self) -> u64 {
        self.coming_us.load(Relaxed)
    }

    /// What a request demands in general, in microseconds.
    pub(crate) fn typical_us(&self) -> u64 {
        match self.typical_ns.load(Relaxed) {
            0 => FIRST_GUESS_US,
            ns => ns.div_ceil(1000),
        }
    }

    /// The CPU work the workers may have charged at once, in microseconds: within one and a
    /// half typical requests.
    pub(crate) fn capacity_us(&self) -> u64 {
        self.capacity_for_us(0)
    }

    /// [`capacity_us`](Self::capacity_us) for a request that brings `own_us`: within one and
    /// a half of its own service time too, so that a request heavier than most is not held
    /// back for good.
    fn capacity_for_us(&self, own_us: u64) -> u64 {
        let horizon = (self.typical_us().max(own_us) * 3 / 2).max(LEAST_HORIZON_US);
        horizon * self.free_workers() as u64
    }

    /// The workers not taken by a request that polls long (see [`Turn`]): one at least.
    fn free_workers(&self) -> usize {
        let workers = self.workers();
        workers
            .saturating_sub(self.running_long.load(Relaxed))
            .max(1)
    }

    /// The work that may be charged at once for a request that brings `own_us`: the
    /// capacity while the CPU is saturated, [`OPEN_CAPACITIES`] times it while not.
    fn room_for_us(&self, own_us: u64) -> u64 {
        let capacity = self.capacity_for_us(own_us);
        match self.saturated.load(Relaxed) {
            true => capacity,
            false => capacity * OPEN_CAPACITIES,
        }
    }

    /// Whether a request expected to poll `poll_ns` at once polls long enough to keep the
    /// runtime late by itself.
    pub(crate) fn polls_long(&self, poll_ns: u64) -> bool {
        // Off, the longest poll is `u64::MAX`: none polls long.
        poll_ns >= self.long_poll_ns
    }

    /// How many requests that poll long may run at once: all workers but one (one, with one
    /// worker).
    fn most_long(&self) -> usize {
        self.workers().saturating_sub(1).max(1)
    }

    /// Counts one more request that polls long as running, if fewer than all workers but
    /// one run such requests.
    fn start_long(&self) -> bool {
        let most = self.most_long();
        self.running_long
            .fetch_update(Relaxed, Relaxed, |running| {
                (running < most).then_some(running + 1)
            })
            .is_ok()
    }

    /// A request that polls long ended, or spared its worker to wait on something else.
    fn end_long(&self) {
        self.running_long.fetch_sub(1, Relaxed);
        self.wake_turns();
    }

    /// Whether a request that brings `own_us` of work must wait, `in_flight` being admitted.
    /// `body_us`: its work comes once its body has arrived, which takes that long (0 if not
    /// known yet); what the workers do meanwhile is room too, and the work still coming with
    /// other bodies counts against it.
    ///
    /// A request that polls long waits while as many such requests as may run are ready and
    /// waiting for a worker: in the queue, it holds no memory for its work.
    #[inline]
    pub(crate) fn holds_back(
        &self,
        own_us: u64,
        body_us: Option<u64>,
        long: bool,
        in_flight: u64,
    ) -> bool {
        if !(self.enabled && own_us > 0 && in_flight > 0) {
            return false;
        }
        if long && self.ready_long.load(Relaxed) >= self.most_long() {
            return true;
        }
        let charged = self.charged_us.load(Relaxed).saturating_add(own_us);
        let capacity = self.room_for_us(own_us);
        match body_us {
            None => charged > capacity,
            Some(body_us) => {
                let transfer = body_us.saturating_mul(self.workers() as u64);
                charged.saturating_add(self.coming_us.load(Relaxed))
                    > capacity.saturating_add(transfer)
            }
        }
    }

    /// Whether a request whose body has arrived may start its `own_us` of work now: nothing
    /// is charged, or it fits the room the gate has (see [`room_for_us`](Self::room_for_us)).
    fn may_run(&self, own_us: u64) -> bool {
        let charged = self.charged_us.load(Relaxed);
        charged == 0 || charged.saturating_add(own_us) <= self.room_for_us(own_us)
    }

    /// The turn of a request whose body has arrived: whether its work may start now. If it
    /// may not, `waker` is woken when the work charged next falls.
    pub(crate) fn take_turn(&self, turn: &Turn, waker: &Waker) -> bool {
        let state = turn.0.load(Relaxed);
        if state & WAITING == 0 {
            return true;
        }
        let (own_us, long) = (state & WORK, state & LONG != 0);
        // One that polls long runs on a worker of its own, once one is spared.
        let starts = || match long {
            true => self.start_long(),
            false => self.may_run(own_us),
        };
        if !starts() {
            let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
            turns.push(waker.clone());
            self.turns_waiting.store(turns.len(), Relaxed);
            drop(turns);
            // A fall between the look and the push woke nobody: look again.
            if !starts() {
                let ready = state | READY;
                if long
                    && state != ready
                    && turn
                        .0
                        .compare_exchange(state, ready, Relaxed, Relaxed)
                        .is_ok()
                {
                    self.ready_long.fetch_add(1, Relaxed);
                }
                return false;
            }
        }
        // One that polls long takes a worker of its own: nothing is charged for it.
        let charged_us = if long { 0 } else { own_us };
        self.charged_us.fetch_add(charged_us, Relaxed);
        self.coming_us.fetch_sub(charged_us, Relaxed);
        let taken = TAKEN | (state & LONG) | own_us;
        let moved = turn.0.compare_exchange(state, taken, Relaxed, Relaxed);
        if moved.is_ok() && state & READY != 0 {
            self.ready_long.fetch_sub(1, Relaxed);
        }
        if moved.is_err() {
            // Its request ended meanwhile, and took its charge from the work coming.
            self.coming_us.fetch_add(charged_us, Relaxed);
            self.charged_us.fetch_sub(charged_us, Relaxed);
            if long {
                self.end_long();
            }
        }
        true
    }

    /// Wakes the bodies waiting for their turn, if any.
    #[inline]
    fn wake_turns(&self) {
        if self.turns_waiting.load(Relaxed) != 0 {
            self.wake_waiting_turns();
        }
    }

    #[cold]
    #[inline(never)]
    fn wake_waiting_turns(&self) {
        let mut turns = self.turns.lock().unwrap_or_else(PoisonError::into_inner);
        let wakers = std::mem::take(&mut *turns);
        self.turns_waiting.store(0, Relaxed);
        drop(turns);
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Moves a request's charge from `from` to `to` microseconds; returns whether it fell.
    pub(crate) fn recharge(&self, from: u64, to: u64) -> bool {
        if to > from {
            self.charged_us.fetch_add(to - from, Relaxed);
        } else if from > to {
            self.charged_us.fetch_sub(from - to, Relaxed);
            self.wake_turns();
        }
        to < from
    }

    /// Adds `ns` spent in request polls to the window.
    pub(crate) fn polled(&self, ns: u64) {
        if ns > 0 {
            self.polled_ns.fetch_add(ns, Relaxed);
        }
    }

    /// A request ended after demanding `ns` in all: requests in general are learned from it.
    pub(crate) fn learn(&self, ns: u64) {
        learn(&self.typical_ns, ns);
    }

    /// Whether request polls kept the workers busy enough, in the last window, to make the
    /// runtime late by themselves: all workers but one (half of them at least). Lateness they
    /// explain is this gate's to handle; the live limit is for the rest.
    pub(crate) fn explains_lateness(&self) -> bool {
        let workers = self.workers() as f64;
        let busy = self.busy_milli.load(Relaxed) as f64 / 1000.0;
        busy >= (workers - 1.0).max(workers / 2.0)
    }

    /// Judges a `closed` window: how busy request polls kept the workers in it. Only the
    /// sampler thread judges, and only where the gate is on: off, it is never judged, so it
    /// never saturates and explains nothing.
    pub(crate) fn judge(&self, closed: &Closed) -> Judged {
        let length_ns = closed.length_ms.max(1) as f64 * 1e6;
        let busy_workers = self.polled_ns.swap(0, Relaxed) as f64 / length_ns;
        self.busy_milli
            .store((busy_workers * 1000.0) as u64, Relaxed);
        let workers = self.workers() as f64;
        // Hysteresis: a window's work varies with the mix of requests that ended in it.
        let saturated = if self.saturated.load(Relaxed) {
            busy_workers >= workers * LEAVE_SATURATED
        } else {
            busy_workers >= workers * ENTER_SATURATED
        };
        self.saturated.store(saturated, Relaxed);
        if !saturated {
            self.wake_turns();
        }
        Judged {
            busy_workers,
            saturated,
        }
    }

    /// Logs a window the CPU gate judged: at debug level each one, at info level when the
    /// CPU becomes saturated or stops being so (at most once a second).
    pub(crate) fn log(&self, judged: Judged, was_saturated: bool, now_ms: u64) {
        let Judged {
            busy_workers,
            saturated,
        } = judged;
        let (charged_us, capacity_us) = (self.charged_us(), self.capacity_us());
        tracing::debug!(
            busy_workers,
            saturated,
            charged_us,
            coming_us = self.coming_us(),
            capacity_us,
            "cpu window"
        );
        if saturated != was_saturated && self.log.allow(now_ms, 1).is_some() {
            tracing::info!(
                busy_workers,
                workers = self.workers(),
                typical_us = self.typical_us(),
                capacity_us,
                "{}",
                if saturated {
                    "cpu saturated: admitting only the work the workers can finish soon"
                } else {
                    "cpu no longer saturated: the cpu gate is open"
                }
            );
        }
    }
}

/// How many times its capacity the gate lets be charged while the CPU is not saturated: a
/// window in which request polls kept the workers less busy (a storm of connections and
/// rejections keeps them busy outside request polls) must not open the gate wide.
const OPEN_CAPACITIES: u64 = 4;

/// A charge moves only by this much or more (50 µs), so that most short polls cost no shared
/// write.
const RECHARGE_STEP_US: u64 = 50;

/// The turn of a request whose work comes once its body has arrived, shared by its permit
/// and its body: the body's last frame waits until the gate lets the work start. A request
/// that polls long without a body has its own, which its first poll waits for. One that
/// polls long runs on a worker of its own from its turn until it ends or waits on something
/// else.
#[derive(Debug, Default)]
pub(crate) struct Turn(AtomicU64);

impl Turn {
    /// Whether the request took its turn to poll long, on a worker of its own: nothing is
    /// charged for it.
    fn runs_alone(state: u64) -> bool {
        state & (TAKEN | LONG) == TAKEN | LONG
    }
}

/// The request's work, in the low bits, is charged to the work coming: its body must wait for
/// its turn before its last frame.
const WAITING: u64 = 1 << 63;
/// The body took its turn: the work, in the low bits, moved to the work charged.
const TAKEN: u64 = 1 << 62;
/// The request ended: nothing is charged for it any more.
const ENDED: u64 = 1 << 61;
/// The request polls long: its turn waits for a worker to spare as well.
const LONG: u64 = 1 << 60;
/// It polls long, and is ready and waiting for a worker: counted in `ready_long`.
const READY: u64 = 1 << 59;
/// The work, in microseconds.
const WORK: u64 = READY - 1;

/// One request's CPU demand: what it used so far, and what the gate holds for it.
#[derive(Debug)]
pub(crate) struct Demand {
    /// Its class's figure when it was admitted, in microseconds (small: it travels with
    /// every admitted request).
    estimate_us: u32,
    /// What the gate holds for it, in microseconds: on the work coming while its body waits
    /// for its turn (see [`Turn`]), else on the work charged.
    charged_us: u64,
    /// Time spent in its polls.
    used_ns: u64,
    /// Poll time not yet added to the gate's window (less than [`FLUSH_NS`]).
    unflushed_ns: u32,
    /// Its longest poll so far, in nanoseconds.
    longest_ns: u32,
    /// It polls long: it runs on a worker of its own, once one is spared (see [`Turn`]).
    long: bool,
    /// The turn of one that polls long without a body: its first poll waits for it.
    turn: Turn,
    /// Its body, if it has one (0: none): when it arrived, on the pool's clock, while its
    /// body comes; then how long the body took to arrive, in microseconds, with [`ARRIVED`]
    /// set.
    body: u64,
    /// When its first timed poll began and its last ended, in nanoseconds on the pool's
    /// clock (0: none yet): its time in flight, without a clock read of its own.
    polled_ns: (u64, u64),
    /// Its response head is ready: only then is its demand whole enough to learn.
    responded: bool,
}

/// What an ended request's polls showed of its CPU demand (nothing where the gate is off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Spent {
    /// From its first poll to its last, where it answered.
    pub(crate) served_ns: Option<u64>,
    /// Its demand and its longest poll, where it answered (a request cut short, its client
    /// gone, did not show what it demands).
    pub(crate) demand: Option<(u64, u64)>,
    /// How long its body took to arrive, in microseconds.
    pub(crate) body_us: Option<u64>,
}

/// In [`Demand::body`]: the body has arrived, and the low bits say how long it took.
const ARRIVED: u64 = 1 << 63;
/// In [`Demand::body`]: the time.
const BODY_TIME: u64 = ARRIVED - 1;

impl Demand {
    /// A request of `estimate_us`, admitted charged that much, which the gate already holds;
    /// `admitted_ns`, for one with a body, when it was admitted; `long`: it polls long.
    pub(crate) fn new(
        gate: &CpuGate,
        estimate_us: u64,
        admitted_ns: Option<u64>,
        long: bool,
    ) -> Self {
        let charged_us = estimate_us;
        let turn = Turn::default();
        // Without a body, its turn comes before its first poll.
        if long && admitted_ns.is_none() {
            gate.recharge(charged_us, 0);
            turn.0.store(WAITING | LONG | charged_us.min(WORK), Relaxed);
        }
        Self {
            estimate_us: estimate_us.min(u32::MAX.into()) as u32,
            charged_us,
            used_ns: 0,
            unflushed_ns: 0,
            longest_ns: 0,
            long,
            turn,
            body: admitted_ns.map_or(0, |ns| (ns & BODY_TIME).max(1)),
            polled_ns: (0, 0),
            responded: false,
        }
    }

    /// Its response head is ready: its demand so far is worth learning.
    pub(crate) fn responded(&mut self) {
        self.responded = true;
    }

    /// Whether its work may start now: always, unless it polls long without a body and no
    /// worker is spared for it yet; then `waker` is woken when one may be.
    #[inline]
    pub(crate) fn take_turn(&self, gate: &CpuGate, waker: &Waker) -> bool {
        self.turn.0.load(Relaxed) & WAITING == 0 || gate.take_turn(&self.turn, waker)
    }

    /// Whether it polls long without a body: its turn is its own, taken before its first
    /// poll.
    fn has_own_turn(&self) -> bool {
        self.long && self.body == 0
    }

    /// Whether its work comes once its body has arrived.
    pub(crate) fn expects_body(&self) -> bool {
        self.body != 0
    }

    /// It waited `waited` in the queue before its admission.
    pub(crate) fn arrived_before(&mut self, waited: Duration) {
        if self.body != 0 && self.body & ARRIVED == 0 {
            let waited_ns = waited.as_nanos().min(u64::MAX.into()) as u64;
            self.body = self.body.saturating_sub(waited_ns).max(1);
        }
    }

    /// How long its body took to arrive, in microseconds, once it has.
    pub(crate) fn body_us(&self) -> Option<u64> {
        (self.body & ARRIVED != 0).then_some(self.body & BODY_TIME)
    }

    /// Its work comes once its body has arrived: its charge moves to the work coming, and the
    /// body waits for its turn at `turn`.
    pub(crate) fn comes_with_body(&mut self, gate: &CpuGate, turn: &Turn) {
        if self.body == 0 || self.charged_us == 0 || turn.0.load(Relaxed) != 0 {
            return;
        }
        // One that polls long will take a worker of its own: it is not work coming for the
        // others.
        if !self.long {
            gate.coming_us.fetch_add(self.charged_us, Relaxed);
        }
        gate.recharge(self.charged_us, 0);
        let long = if self.long { LONG } else { 0 };
        turn.0
            .store(WAITING | long | self.charged_us.min(WORK), Relaxed);
    }

    /// A poll that began at `started_ns` took `spent_ns`; `body`: its body's turn, and
    /// whether the body is still coming (`None`: no body, or no meter on it); `idle`: the
    /// request now waits on something other than its body (a timer, another service, its
    /// response's reader). Corrects the charge to the estimate less what was used, or nothing
    /// while the request is idle; returns whether it fell.
    pub(crate) fn polled(
        &mut self,
        gate: &CpuGate,
        started_ns: u64,
        spent_ns: u64,
        body: Option<(&Turn, bool)>,
        idle: bool,
    ) -> bool {
        self.polled_ns = match self.polled_ns {
            (0, _) => (started_ns.max(1), started_ns + spent_ns),
            (first, _) => (first, started_ns + spent_ns),
        };
        self.used_ns = self.used_ns.saturating_add(spent_ns);
        self.longest_ns = self.longest_ns.max(spent_ns.min(u32::MAX.into()) as u32);
        let unflushed = u64::from(self.unflushed_ns) + spent_ns;
        self.unflushed_ns = match unflushed >= FLUSH_NS {
            true => {
                gate.polled(unflushed);
                0
            }
            false => unflushed as u32,
        };
        if let Some((_, false)) = body {
            self.body_arrived(started_ns + spent_ns);
        }
        let turn = match self.has_own_turn() {
            true => Some(&self.turn),
            false => body.map(|(turn, _)| turn),
        };
        if let Some(turn) = turn {
            let state = turn.0.load(Relaxed);
            // Its charge waits on the work coming until its body takes its turn.
            if state & WAITING != 0 {
                return false;
            }
            if Turn::runs_alone(state) {
                // On a worker of its own, it is charged nothing. Waiting on something else,
                // it spares the worker; what it does after the wait is charged like any
                // other work.
                self.charged_us = 0;
                let spares = idle
                    && turn
                        .0
                        .compare_exchange(state, state & !LONG, Relaxed, Relaxed)
                        .is_ok();
                if spares {
                    gate.end_long();
                }
                return spares;
            }
        }
        let target = match idle {
            true => 0,
            false => u64::from(self.estimate_us).saturating_sub(self.used_ns / 1000),
        };
        if target.abs_diff(self.charged_us) < RECHARGE_STEP_US {
            return false;
        }
        let fell = gate.recharge(self.charged_us, target);
        self.charged_us = target;
        fell
    }

    /// Its body was found whole at `now_ns`: how long it took, from its arrival, if not
    /// known yet.
    fn body_arrived(&mut self, now_ns: u64) {
        if self.body != 0 && self.body & ARRIVED == 0 {
            let took_us = now_ns.saturating_sub(self.body) / 1000;
            self.body = ARRIVED | took_us.min(u32::MAX.into());
        }
    }

    /// The request ended: the gate gets its charge and its poll time back; returns what its
    /// polls showed.
    #[inline]
    pub(crate) fn end(&mut self, gate: &CpuGate, turn: Option<&Turn>) -> Spent {
        let charged = std::mem::take(&mut self.charged_us);
        let turn = match self.has_own_turn() {
            true => Some(&self.turn),
            false => turn,
        };
        let ended = turn.map(|turn| turn.0.swap(ENDED, Relaxed));
        match ended {
            Some(state) if state & WAITING != 0 => {
                if state & LONG == 0 {
                    gate.coming_us.fetch_sub(charged, Relaxed);
                }
                if state & READY != 0 {
                    gate.ready_long.fetch_sub(1, Relaxed);
                }
            }
            // Nothing is charged for it: it gives its worker back.
            Some(state) if Turn::runs_alone(state) => gate.end_long(),
            // Taken since its last poll: the charge is the work charged's.
            _ => {
                gate.recharge(charged, 0);
            }
        }
        gate.polled(std::mem::take(&mut self.unflushed_ns).into());
        let (first, last) = self.polled_ns;
        Spent {
            served_ns: (self.responded && first != 0).then(|| last.saturating_sub(first)),
            demand: self
                .responded
                .then(|| (self.used_ns, self.longest_ns.into())),
            body_us: self.body_us(),
        }
    }
}

/// Learns `ns` into a moving average over about eight requests (0 means unknown): in a class
/// of mixed sizes, the gate balances on the mean, since a request is charged only until its
/// work is done or it waits.
pub(crate) fn learn(figure: &AtomicU64, ns: u64) {
    let ns = ns.max(1);
    let before = figure.load(Relaxed);
    let after = match before {
        0 => ns,
        before => (before * 7 + ns) / 8,
    };
    // A racing update may be lost: one sample, in a running figure.
    figure.store(after.max(1), Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Judges one window of 50 ms in which request polls kept `busy` workers busy.
    fn window(gate: &CpuGate, busy: f64) {
        gate.polled((busy * 50e6) as u64);
        let closed = Closed {
            length_ms: 50,
            lateness: Duration::ZERO,
            peak: 0,
            blocked: false,
        };
        gate.judge(&closed);
    }

    #[test]
    fn saturated_while_request_polls_keep_most_workers_busy() {
        let gate = CpuGate::new(Some(Duration::from_millis(10)), 2);
        window(&gate, 1.1);
        assert!(!gate.is_saturated(), "requests that mostly wait");
        window(&gate, 1.3);
        assert!(gate.is_saturated());
        window(&gate, 0.9);
        assert!(gate.is_saturated(), "it takes clear slack to open again");
        window(&gate, 0.7);
        assert!(!gate.is_saturated());
        let off = CpuGate::new(None, 2);
        assert!(
            !off.polls_long(u64::MAX - 1) && !off.holds_back(0, None, true, 8),
            "off"
        );
    }

    #[test]
    fn holds_back_only_while_saturated_and_never_the_first() {
        let gate = CpuGate::new(Some(Duration::from_millis(10)), 2);
        gate.learn(5_000_000);
        assert_eq!(
            gate.capacity_us(),
            15_000,
            "two workers, 1.5 requests of 5 ms each"
        );
        gate.recharge(0, 15_000);
        assert!(!gate.holds_back(5_000, None, false, 3), "not saturated");
        gate.saturated.store(true, Relaxed);
        assert!(gate.holds_back(5_000, None, false, 3));
        assert!(!gate.holds_back(5_000, None, false, 0), "nothing in flight");
        assert!(gate.recharge(15_000, 10_000));
        assert!(!gate.holds_back(5_000, None, false, 2));
        assert!(
            !CpuGate::new(None, 2).holds_back(u64::MAX, None, false, 9),
            "off"
        );
    }

    #[test]
    fn the_figure_is_a_moving_average() {
        let figure = AtomicU64::new(0);
        learn(&figure, 1_000);
        assert_eq!(figure.load(Relaxed), 1_000);
        learn(&figure, 9_000);
        assert_eq!(figure.load(Relaxed), 2_000);
        learn(&figure, 400);
        assert_eq!(figure.load(Relaxed), 1_800);
    }
}
