//! The live concurrency limit: how many requests may be in flight now, found below the
//! configured ceiling (`max_concurrency`) from how late the runtime runs.
//!
//! **The signal.** A task on the runtime should wake every few milliseconds; the sampler
//! thread, outside the runtime, reads how late it is (so that a stall is seen while it lasts).
//! A worker notices timers and readable sockets only between polls, so when it is late, every
//! request that waits for I/O (a bypassed `/health` among them) is late by as much: more
//! requests in flight only add waiting. A runtime with a free worker is never late, whatever
//! one long poll does.
//!
//! The work requests do themselves is the CPU gate's business (see [`super::cpu`]): it reads
//! their CPU demand, never their latency, which a client's upload, a downstream call or a
//! timer sets as much as the CPU does. This limit is the guard for the work the layer cannot
//! see: `spawn_blocking` and thread pools beside the runtime, other processes on the machine.
//! So a window in which request polls kept all workers but one busy is not late: long polls
//! of requests explain it, and the gate holds them.
//!
//! **The rule**, once per window of readings (see [`window`](super::window) and
//! [`AdaptiveLimit::judge`]):
//! - late (the mean lateness above the target in this window and the one before: a single
//!   long poll, such as a large allocation touched at once, stalls one window now and then,
//!   and fewer requests in flight would not have prevented it): the limit falls to what was
//!   in use, times `target / lateness`, clamped to `[0.5, 0.9]` (a gradient, as Netflix's
//!   `Gradient2Limit` clamps its own), never below 1;
//! - otherwise, if the limit held someone back or was all in use: it rises, by a quarter
//!   while the lateness stays under half the target, by one otherwise;
//! - otherwise it stays: a limit nobody reaches learns nothing.
//!
//! **Slow start.** It starts at twice the machine's cores, 16 at least (or the ceiling, if
//! lower), and doubles each window in which it is reached until it first falls: a cold burst
//! is not admitted wholesale before the CPU gate has measured anything, while requests that
//! wait on I/O reach a ceiling of 256 within a quarter of a second.
//!
//! Pure arithmetic on closed windows: the tests drive it with a virtual clock.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    time::Duration,
};

use super::window::Closed;
use crate::log_throttle::LogThrottle;
/// The least and the most a late window scales the limit by.
const LEAST_FACTOR: f64 = 0.5;
const MOST_FACTOR: f64 = 0.9;

/// A change of the live limit, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Moved {
    pub(crate) from: usize,
    pub(crate) to: usize,
    pub(crate) why: Why,
}

/// Why the live limit moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Why {
    /// The runtime ran late.
    Late,
    /// On time and reached: room to grow.
    Room,
}

impl Why {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Why::Late => "the runtime ran late",
            Why::Room => "on time and reached",
        }
    }
}

#[derive(Debug)]
pub(crate) struct AdaptiveLimit {
    ceiling: usize,
    /// The lateness above which the limit falls; `None`: fixed at the ceiling.
    target: Option<Duration>,
    current: AtomicUsize,
    /// Until the limit first falls, it doubles when it grows.
    slow_start: AtomicBool,
    /// Whether the last window was late: admissions then yield before their handler runs.
    late: AtomicBool,
    /// The runtime's lateness at the last reading, in microseconds.
    lateness_us: AtomicU64,
    log: LogThrottle,
    /// The limit last logged: a move to half or twice it is logged again.
    logged: AtomicUsize,
}

/// Where the limit starts on a machine of `cores`: twice the cores, at least 16. CPU-bound
/// work needs no more, and slow start doubles it fast for work that waits.
pub(crate) fn starting_limit(cores: usize) -> usize {
    cores.saturating_mul(2).max(16)
}

impl AdaptiveLimit {
    /// A limit of `ceiling` at most, adaptive from `initial` when `target` is set.
    pub(crate) fn new(ceiling: usize, target: Option<Duration>, initial: usize) -> Self {
        let initial = match target {
            Some(_) => initial.clamp(1, ceiling),
            None => ceiling,
        };
        Self {
            ceiling,
            target,
            current: AtomicUsize::new(initial),
            slow_start: AtomicBool::new(true),
            late: AtomicBool::new(false),
            lateness_us: AtomicU64::new(0),
            log: LogThrottle::new(Duration::from_secs(1)),
            logged: AtomicUsize::new(ceiling),
        }
    }

    /// The runtime's lateness at the last reading.
    pub(crate) fn lateness(&self) -> Duration {
        Duration::from_micros(self.lateness_us.load(Relaxed))
    }

    /// Logs a move of the limit to half or twice what was last logged: every fall, and a
    /// rise at most once a second.
    fn log(&self, moved: Moved, lateness: Duration, now_ms: u64) {
        let Moved { from, to, why } = moved;
        let lateness_ms = lateness.as_secs_f64() * 1e3;
        tracing::debug!(
            from,
            to,
            lateness_ms,
            why = why.as_str(),
            "live limit moved"
        );
        let logged = self.logged.load(Relaxed);
        if to > logged / 2 && to < logged.saturating_mul(2) {
            return;
        }
        // Every large fall is told (falls come at most once a window); rises once a second.
        let fell = to <= logged / 2;
        if fell || self.log.allow(now_ms, 1).is_some() {
            self.logged.store(to, Relaxed);
            tracing::info!(
                from,
                to,
                lateness_ms,
                why = why.as_str(),
                ceiling = self.ceiling,
                "live concurrency limit moved"
            );
        }
    }

    /// The limit now.
    #[inline]
    pub(crate) fn get(&self) -> usize {
        self.current.load(Relaxed)
    }

    pub(crate) fn ceiling(&self) -> usize {
        self.ceiling
    }

    /// Whether the limit has fallen below its ceiling since it started (slow start is not a
    /// fall) and not grown back to it: the service cannot keep up.
    #[inline]
    pub(crate) fn has_fallen(&self) -> bool {
        !self.slow_start.load(Relaxed) && self.get() < self.ceiling
    }

    /// Whether the runtime ran late in the last window.
    #[inline]
    pub(crate) fn is_late(&self) -> bool {
        self.late.load(Relaxed)
    }

    /// The runtime's lateness at the sampler's last reading.
    pub(crate) fn note(&self, lateness: Duration) {
        self.lateness_us.store(lateness.as_micros() as u64, Relaxed);
    }

    /// Whether the limit moves at all (a lateness target is set).
    pub(crate) fn is_adaptive(&self) -> bool {
        self.target.is_some()
    }

    /// Judges a `closed` window at `now_ms`; a window whose lateness request polls
    /// `explained` is not late. Returns the change, if the limit moved.
    pub(crate) fn judge(&self, closed: &Closed, explained: bool, now_ms: u64) -> Option<Moved> {
        let target = self.target?;
        let mean = closed.lateness;
        // Late twice in a row: one long poll (a large allocation touched at once) stalls a
        // window now and then, and fewer requests in flight would not have prevented it.
        let late = mean > target && !explained;
        let stays_late = self.late.swap(late, Relaxed) && late;
        let current = self.get();
        let in_use = closed.peak.min(current) as f64;
        let (next, why) = if stays_late {
            let factor =
                (target.as_secs_f64() / mean.as_secs_f64()).clamp(LEAST_FACTOR, MOST_FACTOR);
            ((in_use * factor) as usize, Why::Late)
        } else if closed.blocked || closed.peak >= current {
            // In slow start it doubles; after, it grows by a quarter while well on time.
            let step = match (self.slow_start.load(Relaxed), mean < target / 2) {
                (true, _) => current,
                (false, true) => (current / 4).max(1),
                (false, false) => 1,
            };
            (current.saturating_add(step), Why::Room)
        } else {
            (current, Why::Room)
        };
        let to = next.clamp(1, self.ceiling);
        if to < current {
            self.slow_start.store(false, Relaxed);
        }
        if to == current {
            return None;
        }
        self.current.store(to, Relaxed);
        let moved = Moved {
            from: current,
            to,
            why,
        };
        self.log(moved, self.lateness(), now_ms);
        Some(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::window::{WINDOW_MS, Window};

    const TARGET: Duration = Duration::from_millis(10);

    /// A limit fed a reading every 10 ms of a virtual clock, each window judged as it closes.
    struct Fed {
        limit: AdaptiveLimit,
        window: Window,
        now: u64,
    }

    impl Fed {
        fn new(limit: AdaptiveLimit) -> Self {
            let (window, now) = (Window::default(), 0);
            Self { limit, window, now }
        }

        /// Readings until `windows` windows have closed.
        fn feed(&mut self, windows: u64, lateness: Duration, in_flight: usize, blocked: bool) {
            let mut closed = 0;
            while closed < windows {
                self.now += 10;
                if let Some(c) = self.window.read(self.now, lateness, in_flight, blocked) {
                    self.limit.judge(&c, false, self.now);
                    closed += 1;
                }
            }
        }
    }

    /// A window of 50 ms, as late as `lateness` throughout.
    fn closed(lateness: Duration, peak: usize, blocked: bool) -> Closed {
        Closed {
            length_ms: WINDOW_MS,
            lateness,
            peak,
            blocked,
        }
    }

    #[test]
    fn starts_at_the_ceiling_and_fixed_never_moves() {
        let fixed = AdaptiveLimit::new(64, None, 4);
        let late = closed(Duration::from_secs(1), 64, true);
        assert_eq!(fixed.judge(&late, false, 50), None);
        assert_eq!(fixed.judge(&late, false, 1000), None);
        assert_eq!(fixed.get(), 64);
        assert!(!fixed.is_late());
        assert_eq!(AdaptiveLimit::new(64, Some(TARGET), 64).get(), 64);
    }

    #[test]
    fn starts_slow_and_doubles_until_it_first_falls() {
        let mut fed = Fed::new(AdaptiveLimit::new(256, Some(TARGET), 4));
        fed.feed(3, Duration::ZERO, 256, true);
        assert_eq!(fed.limit.get(), 32);
        fed.feed(2, Duration::from_millis(20), 32, true);
        assert_eq!(fed.limit.get(), 16);
        // After its first fall it grows by a quarter at most.
        fed.feed(1, Duration::ZERO, 16, true);
        assert_eq!(fed.limit.get(), 20);
    }

    #[test]
    fn falls_while_late_by_the_gradient_from_what_was_in_use() {
        let mut fed = Fed::new(AdaptiveLimit::new(256, Some(TARGET), 256));
        // One late window alone is a stall: nothing moves.
        fed.feed(1, Duration::from_millis(200), 40, true);
        assert_eq!(fed.limit.get(), 256);
        assert!(fed.limit.is_late());
        // Late again, 200 ms with 40 in flight: the gradient clamps at one half, from 40.
        fed.feed(1, Duration::from_millis(200), 40, true);
        assert_eq!(fed.limit.get(), 20);
        // Slightly late: a tenth off at least.
        fed.feed(1, Duration::from_millis(11), 20, true);
        assert_eq!(fed.limit.get(), 18);
        // Later and later: never below 1.
        fed.feed(20, Duration::from_millis(500), 20, true);
        assert_eq!(fed.limit.get(), 1);
    }

    #[test]
    fn recovers_to_the_ceiling_when_on_time_and_in_use() {
        let mut fed = Fed::new(AdaptiveLimit::new(256, Some(TARGET), 256));
        fed.feed(10, Duration::from_secs(1), 256, true);
        assert_eq!(fed.limit.get(), 1);
        // Well on time: a quarter (at least one) a window, up to the ceiling and no further.
        fed.feed(1, Duration::ZERO, 1, true);
        assert_eq!(fed.limit.get(), 2);
        assert!(!fed.limit.is_late());
        fed.feed(100, Duration::ZERO, 0, true);
        assert_eq!(fed.limit.get(), 256);
        // Nearly late: one a window.
        fed.feed(2, Duration::from_millis(60), 256, true);
        let cut = fed.limit.get();
        assert!(cut < 256);
        fed.feed(1, Duration::from_millis(6), cut, true);
        assert_eq!(fed.limit.get(), cut + 1);
    }

    #[test]
    fn does_not_grow_while_nobody_needs_it() {
        let mut fed = Fed::new(AdaptiveLimit::new(256, Some(TARGET), 256));
        fed.feed(2, Duration::from_millis(40), 16, true);
        let cut = fed.limit.get();
        assert!(cut < 16, "{cut}");
        // On time, but below the limit and nobody held back: it stays.
        fed.feed(10, Duration::ZERO, cut - 1, false);
        assert_eq!(fed.limit.get(), cut);
    }

    #[test]
    fn lateness_that_request_polls_explain_moves_nothing() {
        let limit = AdaptiveLimit::new(64, Some(TARGET), 64);
        for now in [50, 100, 150] {
            let late = closed(Duration::from_millis(80), 64, true);
            assert_eq!(limit.judge(&late, true, now), None);
        }
        assert_eq!(limit.get(), 64);
        assert!(!limit.is_late());
    }

    #[test]
    fn late_twice_in_a_row_it_falls() {
        let limit = AdaptiveLimit::new(8, Some(TARGET), 8);
        let late = closed(Duration::from_secs(1), 8, true);
        assert_eq!(limit.judge(&late, false, 50), None, "late once");
        assert_eq!(
            limit.judge(&late, false, 100),
            Some(Moved {
                from: 8,
                to: 4,
                why: Why::Late
            })
        );
    }
}
