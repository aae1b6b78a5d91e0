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
//! mean, and each request only until its work is done or it waits. One whose handler has
//! waited for its client's body four times as long as the request's whole demand (2 ms at
//! least) is charged nothing until the body has arrived: the client, not the CPU, sets its
//! pace. (Not sooner: a busy runtime reads sockets late, and a body that seems slow may be
//! waiting in the kernel's buffer for a worker.) A class most of whose requests wait so is
//! charged nothing at admission either, and never held back by the gate: its work comes only
//! once a client has sent a body, and is charged then. That a request waited is learned only
//! while the runtime is not busy (a body read late proves nothing of its client); that one
//! did not wait, always.
//!
//! **The gate.** While the CPU is saturated, a request is admitted only while the work
//! charged to the requests in flight, plus its own, fits what the workers can do within the
//! horizon: `charged + own ≤ workers × horizon`, with the horizon one and a half times the
//! larger of a typical request and this one (5 ms at least): admitted work drains within
//! about one and a half service times, a worker is never left without a request ready to
//! run, and a request heavier than most is not held back for good. With nothing in flight a
//! request is always admitted.
//!
//! **Saturated** means that, over a window of [`WINDOW_MS`] (the live limit's), request polls
//! kept at least 60 % of the workers busy; it stays so until they keep fewer than 40 % busy. Requests that mostly
//! wait (on a client, a timer, another service) leave the CPU idle, so the gate stays open
//! for them and only `max_concurrency` and the memory budget hold them. (The workers' park
//! counts were tried as a second sign, and dropped: with clients on the same cores, workers
//! park while the few admitted requests wait for their bodies, and the gate flapped open.)

use std::{
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    time::Duration,
};

// The live limit's window: both judge theirs on the same sampler ticks, so that a window of
// lateness is told whether request polls explain it.
use super::limit::WINDOW_MS;
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
    /// Nanoseconds spent in request polls since the window began.
    polled_ns: AtomicU64,
    /// What a request demands in general (all classes), in nanoseconds: 0 until measured.
    typical_ns: AtomicU64,
    /// Whether the CPU is saturated: the gate holds requests back only then.
    saturated: AtomicBool,
    /// When the current window started, in milliseconds (`u64::MAX`: not yet).
    window_start_ms: AtomicU64,
    /// How many workers request polls kept busy in the last window, in thousandths.
    busy_milli: AtomicU64,
    /// Throttles the log of saturation coming and going.
    pub(super) log: LogThrottle,
}

/// What the gate judged of a window: how busy request polls kept the workers, and whether
/// the CPU is saturated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Judged {
    pub(crate) busy_workers: f64,
    pub(crate) saturated: bool,
}

impl CpuGate {
    pub(crate) fn new(enabled: bool, workers: usize) -> Self {
        Self {
            enabled,
            workers: AtomicUsize::new(workers.max(1)),
            charged_us: AtomicU64::new(0),
            polled_ns: AtomicU64::new(0),
            typical_ns: AtomicU64::new(0),
            saturated: AtomicBool::new(false),
            window_start_ms: AtomicU64::new(u64::MAX),
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
        horizon * self.workers() as u64
    }

    /// Whether a request that brings `own_us` of work must wait, `in_flight` being admitted.
    /// One that brings none soon (its class waits for its clients) is never held back.
    #[inline]
    pub(crate) fn holds_back(&self, own_us: u64, in_flight: u64) -> bool {
        self.enabled
            && own_us > 0
            && in_flight > 0
            && self.saturated.load(Relaxed)
            && self.charged_us.load(Relaxed).saturating_add(own_us) > self.capacity_for_us(own_us)
    }

    /// Moves a request's charge from `from` to `to` microseconds; returns whether it fell.
    pub(crate) fn recharge(&self, from: u64, to: u64) -> bool {
        if to > from {
            self.charged_us.fetch_add(to - from, Relaxed);
        } else if from > to {
            self.charged_us.fetch_sub(from - to, Relaxed);
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
        self.enabled && busy >= (workers - 1.0).max(workers / 2.0)
    }

    /// Takes one reading at `now_ms`; judges the window once it has lasted [`WINDOW_MS`].
    /// Only the sampler thread observes.
    pub(crate) fn observe(&self, now_ms: u64) -> Option<Judged> {
        if !self.enabled {
            return None;
        }
        let started = match self.window_start_ms.load(Relaxed) {
            u64::MAX => {
                self.window_start_ms.store(now_ms, Relaxed);
                now_ms
            }
            started => started,
        };
        if now_ms < started + WINDOW_MS {
            return None;
        }
        self.window_start_ms.store(now_ms, Relaxed);
        let length_ns = (now_ms - started) as f64 * 1e6;
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
        Some(Judged {
            busy_workers,
            saturated,
        })
    }
}

/// A charge moves only by this much or more (50 µs), so that most short polls cost no shared
/// write.
const RECHARGE_STEP_US: u64 = 50;

/// One request's CPU demand: what it used so far, and what the gate holds for it.
#[derive(Debug)]
pub(crate) struct Demand {
    /// Its class's figure when it was admitted, in microseconds.
    estimate_us: u64,
    /// What the gate holds for it, in microseconds.
    charged_us: u64,
    /// Time spent in its polls.
    used_ns: u64,
    /// Poll time not yet added to the gate's window (less than [`FLUSH_NS`]).
    unflushed_ns: u32,
    /// The longest its handler waited for its body's bytes, in microseconds.
    body_waited_us: u32,
}

impl Demand {
    /// A request of `estimate_us`, admitted charged `charged_us` (nothing, if its class waits
    /// for its clients), which the gate already holds.
    pub(crate) fn new(estimate_us: u64, charged_us: u64) -> Self {
        Self {
            estimate_us,
            charged_us,
            used_ns: 0,
            unflushed_ns: 0,
            body_waited_us: 0,
        }
    }

    pub(crate) fn used_ns(&self) -> u64 {
        self.used_ns
    }

    /// Whether its client set its pace: its handler waited for the body
    /// [`CLIENT_BOUND`] times as long as the request's whole demand (2 ms at least).
    pub(crate) fn waited_for_client(&self) -> bool {
        client_bound(self.body_waited_us.into(), self.used_ns / 1000)
    }

    /// A poll took `spent_ns`; its handler has waited `body_waited` for the part of its body
    /// still to come (`None`: no body to come, or no meter on it); `idle`: the request now
    /// waits on something other than its body (a timer, another service, its response's
    /// reader). Corrects the charge to the estimate less what was used, or nothing while the
    /// request is idle or its client sets the pace; returns whether it fell.
    pub(crate) fn polled(
        &mut self,
        gate: &CpuGate,
        spent_ns: u64,
        body_waited: Option<Duration>,
        idle: bool,
    ) -> bool {
        self.used_ns = self.used_ns.saturating_add(spent_ns);
        let unflushed = u64::from(self.unflushed_ns) + spent_ns;
        self.unflushed_ns = match unflushed >= FLUSH_NS {
            true => {
                gate.polled(unflushed);
                0
            }
            false => unflushed as u32,
        };
        let waited_us = body_waited.map(|w| w.as_micros().min(u32::MAX.into()) as u32);
        if let Some(waited_us) = waited_us {
            self.body_waited_us = self.body_waited_us.max(waited_us);
        }
        let waits = idle || waited_us.is_some_and(|w| client_bound(w.into(), self.estimate_us));
        let target = match waits {
            true => 0,
            false => self.estimate_us.saturating_sub(self.used_ns / 1000),
        };
        if target.abs_diff(self.charged_us) < RECHARGE_STEP_US {
            return false;
        }
        let fell = gate.recharge(self.charged_us, target);
        self.charged_us = target;
        fell
    }

    /// The request ended: the gate gets its charge and its poll time back.
    pub(crate) fn end(&mut self, gate: &CpuGate) {
        gate.recharge(std::mem::take(&mut self.charged_us), 0);
        gate.polled(std::mem::take(&mut self.unflushed_ns).into());
    }
}

/// How many times its demand a request's handler must have waited for the client's body for
/// the client to set its pace. Well above one: a saturated runtime reads sockets late, and
/// a body that seems slow may be waiting in the kernel's buffer for a worker.
const CLIENT_BOUND: u64 = 4;
/// The demand a request is taken to have at least, for [`CLIENT_BOUND`], in microseconds.
const LEAST_CLIENT_WAIT_US: u64 = 2_000;

/// Whether a handler that waited `waited_us` for its body waited on its client rather than on
/// the CPU, for a request that demands `demand_us`.
fn client_bound(waited_us: u64, demand_us: u64) -> bool {
    waited_us > CLIENT_BOUND * demand_us.max(LEAST_CLIENT_WAIT_US)
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

    /// Feeds readings every 10 ms for one window, `busy` workers' worth of polls.
    fn window(gate: &CpuGate, now: &mut u64, busy: f64) {
        gate.polled((busy * WINDOW_MS as f64 * 1e6) as u64);
        let mut judged = None;
        for _ in 0..WINDOW_MS / 10 {
            *now += 10;
            judged = judged.or(gate.observe(*now));
        }
        assert!(judged.is_some(), "a window closed");
    }

    #[test]
    fn saturated_while_request_polls_keep_most_workers_busy() {
        let gate = CpuGate::new(true, 2);
        let mut now = 0;
        gate.observe(now);
        window(&gate, &mut now, 1.1);
        assert!(!gate.is_saturated(), "requests that mostly wait");
        window(&gate, &mut now, 1.3);
        assert!(gate.is_saturated());
        window(&gate, &mut now, 0.9);
        assert!(gate.is_saturated(), "it takes clear slack to open again");
        window(&gate, &mut now, 0.7);
        assert!(!gate.is_saturated());
        assert_eq!(CpuGate::new(false, 2).observe(1_000), None, "off");
    }

    #[test]
    fn holds_back_only_while_saturated_and_never_the_first() {
        let gate = CpuGate::new(true, 2);
        gate.learn(5_000_000);
        assert_eq!(
            gate.capacity_us(),
            15_000,
            "two workers, 1.5 requests of 5 ms each"
        );
        gate.recharge(0, 15_000);
        assert!(!gate.holds_back(5_000, 3), "not saturated");
        gate.saturated.store(true, Relaxed);
        assert!(gate.holds_back(5_000, 3));
        assert!(!gate.holds_back(5_000, 0), "nothing in flight");
        assert!(gate.recharge(15_000, 10_000));
        assert!(!gate.holds_back(5_000, 2));
        assert!(!CpuGate::new(false, 2).holds_back(u64::MAX, 9), "off");
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
