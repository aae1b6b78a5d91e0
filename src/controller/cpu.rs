//! The CPU gate: requests are admitted while the CPU work they bring fits what the workers can
//! finish soon.
//!
//! **Demand, not wall time.** A request's CPU demand is the time spent inside its own polls
//! (its handler's and its response body's, see `Permit::track`): what it asks of a core. A
//! poll that waits for a client's bytes, a timer or a downstream reply returns at once, so
//! none of that waiting counts, and other requests cannot inflate it (a worker runs one poll
//! at a time). Each cost class learns what its requests demand (see [`super::classes`]); a
//! class not seen yet starts from what requests in general demand ([`CpuGate::typical_us`]).
//!
//! **Charged like bytes.** An admitted request is charged its class's figure, less what its
//! polls have used so far (but never less than an eighth of the figure while it runs), and
//! nothing while its handler waits for its request body: a client's upload is not work.
//!
//! **The gate.** While the CPU is saturated, a request is admitted only while the work
//! charged to the requests in flight, plus its own, fits what the workers can do within the
//! horizon: `charged + own ≤ workers × horizon`, with the horizon one and a half typical
//! requests (2 ms at least): admitted work drains within about one and a half service times,
//! and a worker is never left without a request ready to run. With nothing in flight a
//! request is always admitted.
//!
//! **Saturated** means that, over a window of [`WINDOW_MS`], request polls kept at least half
//! the workers busy and the workers hardly ever ran out of work (they parked at most once each,
//! where the runtime tells). The gate opens again once the workers park often (four times each
//! a window) or request polls fall below a quarter of them. Requests that mostly wait (on a
//! client, a timer, another service) leave the CPU idle, so the gate stays open for them and
//! only `max_concurrency` and the memory budget hold them.

use std::sync::{
    Mutex, PoisonError,
    atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
};

/// How long one window of readings lasts before saturation is judged again.
pub(crate) const WINDOW_MS: u64 = 50;
/// The shortest horizon, in microseconds: below it, the time to hand a request to a worker
/// would count as much as the work.
const LEAST_HORIZON_US: u64 = 2_000;
/// A request of unknown demand, before anything at all was measured, in microseconds.
const FIRST_GUESS_US: u64 = 1_000;
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
    window: Mutex<Window>,
}

#[derive(Debug, Default)]
struct Window {
    started_ms: Option<u64>,
    /// The workers' park count when the window started, where the runtime tells it.
    parks_at_start: Option<u64>,
}

/// What the gate judged of a window: how busy request polls kept the workers, and how often
/// they parked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Judged {
    pub(crate) busy_workers: f64,
    pub(crate) parks: Option<u64>,
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
            window: Mutex::default(),
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

    /// The CPU work the workers may have charged at once, in microseconds.
    pub(crate) fn capacity_us(&self) -> u64 {
        let horizon = (self.typical_us() * 3 / 2).max(LEAST_HORIZON_US);
        horizon * self.workers() as u64
    }

    /// Whether a request that brings `own_us` of work must wait, `in_flight` being admitted.
    #[inline]
    pub(crate) fn holds_back(&self, own_us: u64, in_flight: u64) -> bool {
        self.enabled
            && in_flight > 0
            && self.saturated.load(Relaxed)
            && self.charged_us.load(Relaxed).saturating_add(own_us) > self.capacity_us()
    }

    pub(crate) fn charge(&self, us: u64) {
        if us > 0 {
            self.charged_us.fetch_add(us, Relaxed);
        }
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

    /// Takes one reading at `now_ms`, with the workers' total park count if the runtime tells
    /// it; judges the window once it has lasted [`WINDOW_MS`].
    pub(crate) fn observe(&self, now_ms: u64, parks: Option<u64>) -> Option<Judged> {
        if !self.enabled {
            return None;
        }
        // Only the sampler thread observes; the lock is never contended.
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let started = *window.started_ms.get_or_insert(now_ms);
        if window.parks_at_start.is_none() {
            window.parks_at_start = parks;
        }
        if now_ms < started + WINDOW_MS {
            return None;
        }
        let parks_at_start = window.parks_at_start;
        *window = Window {
            started_ms: Some(now_ms),
            parks_at_start: parks,
        };
        drop(window);
        let length_ns = (now_ms - started) as f64 * 1e6;
        let busy_workers = self.polled_ns.swap(0, Relaxed) as f64 / length_ns;
        let parks = parks.zip(parks_at_start).map(|(now, then)| now.saturating_sub(then));
        let workers = self.workers() as f64;
        let saturated = if self.saturated.load(Relaxed) {
            // Stays until the workers clearly have time to spare.
            busy_workers >= workers / 4.0 && parks.is_none_or(|p| p as f64 <= 4.0 * workers)
        } else {
            busy_workers >= workers / 2.0
                && match parks {
                    Some(parks) => parks as f64 <= workers,
                    // Without the runtime's word, request polls alone must fill the workers.
                    None => busy_workers >= workers * 0.9,
                }
        };
        self.saturated.store(saturated, Relaxed);
        Some(Judged {
            busy_workers,
            parks,
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
    /// Poll time not yet added to the gate's window.
    unflushed_ns: u64,
}

impl Demand {
    /// A request admitted with `estimate_us`, which the gate has already been charged.
    pub(crate) fn new(estimate_us: u64) -> Self {
        Self {
            estimate_us,
            charged_us: estimate_us,
            used_ns: 0,
            unflushed_ns: 0,
        }
    }

    pub(crate) fn used_ns(&self) -> u64 {
        self.used_ns
    }

    /// A poll took `spent_ns`; `waiting` says whether the request now waits for its client's
    /// body. Corrects the charge: the estimate less what was used (an eighth of it at least),
    /// or nothing while it waits for the client. Returns whether the charge fell.
    pub(crate) fn polled(&mut self, gate: &CpuGate, spent_ns: u64, waiting: bool) -> bool {
        self.used_ns = self.used_ns.saturating_add(spent_ns);
        self.unflushed_ns += spent_ns;
        if self.unflushed_ns >= FLUSH_NS {
            gate.polled(std::mem::take(&mut self.unflushed_ns));
        }
        let target = if waiting {
            0
        } else {
            let used_us = self.used_ns / 1000;
            self.estimate_us
                .saturating_sub(used_us)
                .max(self.estimate_us / 8)
        };
        let moved = target.abs_diff(self.charged_us);
        if moved < RECHARGE_STEP_US && (target != 0 || self.charged_us == 0) {
            return false;
        }
        let fell = gate.recharge(self.charged_us, target);
        self.charged_us = target;
        fell
    }

    /// The request ended: the gate gets its charge and its poll time back.
    pub(crate) fn end(&mut self, gate: &CpuGate) {
        gate.recharge(std::mem::take(&mut self.charged_us), 0);
        gate.polled(std::mem::take(&mut self.unflushed_ns));
    }
}

/// Learns `ns` into a figure that rises fast (a quarter of the way) and falls slowly (a
/// sixteenth): conservative, as an estimate that admits work should be. 0 means unknown.
pub(crate) fn learn(figure: &AtomicU64, ns: u64) {
    let ns = ns.max(1);
    let before = figure.load(Relaxed);
    let after = if before == 0 {
        ns
    } else if ns > before {
        before + (ns - before) / 4
    } else {
        before - (before - ns) / 16
    };
    // A racing update may be lost: one sample, in a running figure.
    figure.store(after.max(1), Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds readings every 10 ms for one window, `busy` workers' worth of polls, `parks` a
    /// window.
    fn window(gate: &CpuGate, now: &mut u64, busy: f64, parks_total: &mut u64, parks: u64) {
        gate.polled((busy * WINDOW_MS as f64 * 1e6) as u64);
        let mut judged = None;
        for _ in 0..WINDOW_MS / 10 {
            *now += 10;
            *parks_total += parks / (WINDOW_MS / 10);
            judged = judged.or(gate.observe(*now, Some(*parks_total)));
        }
        assert!(judged.is_some(), "a window closed");
    }

    #[test]
    fn saturated_only_while_request_polls_fill_workers_that_never_park() {
        let gate = CpuGate::new(true, 2);
        let (mut now, mut parks) = (0, 0);
        gate.observe(now, Some(parks));
        window(&gate, &mut now, 1.9, &mut parks, 50);
        assert!(!gate.is_saturated(), "the workers parked often: work came in bursts");
        window(&gate, &mut now, 0.3, &mut parks, 0);
        assert!(!gate.is_saturated(), "hardly any request work");
        window(&gate, &mut now, 1.8, &mut parks, 0);
        assert!(gate.is_saturated());
        window(&gate, &mut now, 1.0, &mut parks, 5);
        assert!(gate.is_saturated(), "it takes clear slack to open again");
        window(&gate, &mut now, 1.0, &mut parks, 20);
        assert!(!gate.is_saturated());
    }

    #[test]
    fn holds_back_only_while_saturated_and_never_the_first() {
        let gate = CpuGate::new(true, 2);
        gate.learn(5_000_000);
        assert_eq!(gate.capacity_us(), 15_000, "two workers, 1.5 requests of 5 ms each");
        gate.charge(15_000);
        assert!(!gate.holds_back(5_000, 3), "not saturated");
        gate.saturated.store(true, Relaxed);
        assert!(gate.holds_back(5_000, 3));
        assert!(!gate.holds_back(5_000, 0), "nothing in flight");
        assert!(gate.recharge(15_000, 10_000));
        assert!(!gate.holds_back(5_000, 2));
        assert!(!CpuGate::new(false, 2).holds_back(u64::MAX, 9), "off");
    }

    #[test]
    fn the_figure_rises_fast_and_falls_slowly() {
        let figure = AtomicU64::new(0);
        learn(&figure, 1_000);
        assert_eq!(figure.load(Relaxed), 1_000);
        learn(&figure, 5_000);
        assert_eq!(figure.load(Relaxed), 2_000);
        learn(&figure, 400);
        assert_eq!(figure.load(Relaxed), 1_900);
    }
}
