//! Minimum data rates for request and response bodies: what a slow peer may take of an
//! admitted request's slot and charge.
//!
//! The rules are Kestrel's (`MinRequestBodyDataRate`, `MinResponseDataRate`):
//!
//! - **Request bodies**: once the handler has waited for body data longer than the grace
//!   period, the bytes received must average at least the minimum rate over the time it
//!   waited. Time the handler spends on anything else does not count.
//! - **Response bodies**: each frame handed to the server must be taken within
//!   `max(grace, frame size ÷ rate)`. Time the body spends waiting for its own handler does
//!   not count.

use std::{
    fmt,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

use tokio::time::Instant;

use crate::log_throttle::LogThrottle;

/// The error type of the bodies the layer wraps, as tower-http's: theirs, or [`TooSlow`].
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A minimum data rate, enforced after a grace period.
///
/// ```
/// use std::time::Duration;
/// use tower_admission::{AdmissionConfig, MinDataRate};
///
/// // Kestrel's defaults, which are this crate's too.
/// let rate = MinDataRate::new(240, Duration::from_secs(5));
/// assert_eq!(rate.to_string(), "240 B/s after 5s");
/// let config = AdmissionConfig::default()
///     .min_request_body_rate(rate)
///     .min_response_body_rate(None); // off
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinDataRate {
    bytes_per_second: u64,
    /// In whole milliseconds: small, because it travels with every admitted request.
    grace_ms: u32,
}

impl MinDataRate {
    /// At least `bytes_per_second` (at least 1), after `grace` (kept in whole milliseconds,
    /// at most about 49 days).
    pub const fn new(bytes_per_second: u64, grace: Duration) -> Self {
        let ms = grace.as_millis();
        Self {
            bytes_per_second,
            grace_ms: if ms > u32::MAX as u128 {
                u32::MAX
            } else {
                ms as u32
            },
        }
    }

    /// The minimum rate, in bytes per second.
    pub fn bytes_per_second(&self) -> u64 {
        self.bytes_per_second
    }

    /// How long a body may go below the rate at first (TCP slow start, a client warming up).
    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms.into())
    }

    /// The most bytes handed over at once to a client held to this rate: what it must take
    /// within the grace period (1 KiB at least).
    pub(crate) fn slice(&self) -> usize {
        let bytes = self
            .bytes_per_second
            .saturating_mul(u64::from(self.grace_ms))
            / 1000;
        bytes.clamp(1 << 10, 1 << 30) as usize
    }

    /// How long `bytes` may take at this rate, and never less than the grace period.
    fn allowance(&self, bytes: u64) -> Duration {
        let at_rate = Duration::from_secs_f64(bytes as f64 / self.bytes_per_second.max(1) as f64);
        at_rate.max(self.grace())
    }
}

impl fmt::Display for MinDataRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} B/s after {}",
            self.bytes_per_second,
            humantime::format_duration(self.grace())
        )
    }
}

/// The minimum rates of an admitted request's bodies, `None` where off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct BodyRates {
    pub(crate) request: Option<MinDataRate>,
    pub(crate) response: Option<MinDataRate>,
    /// Whether a stream's request body is cut off below the request rate too.
    pub(crate) streams: bool,
}

/// Which body was too slow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Direction {
    /// The client sent its request body too slowly.
    Request,
    /// The client read its response body too slowly.
    Response,
}

impl Direction {
    /// The label value: `request` or `response`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

/// The error a body ends with when its peer fell below the minimum rate.
///
/// A handler that reads its body sees it as the error's source, boxed:
///
/// ```
/// use tower_admission::{Direction, TooSlow};
///
/// fn cut_off(error: &(dyn std::error::Error + 'static)) -> bool {
///     error
///         .downcast_ref::<TooSlow>()
///         .is_some_and(|slow| slow.direction() == Direction::Request)
/// }
/// # let _ = cut_off;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the {} body moved slower than {rate}", direction.as_str())]
pub struct TooSlow {
    direction: Direction,
    rate: MinDataRate,
}

impl TooSlow {
    pub(crate) fn new(direction: Direction, rate: MinDataRate) -> Self {
        Self { direction, rate }
    }

    /// Which body was too slow.
    pub fn direction(&self) -> Direction {
        self.direction
    }

    /// The rate it fell below.
    pub fn rate(&self) -> MinDataRate {
        self.rate
    }
}

/// How long a request body must have been waited on before its pace says how much of its
/// declared length to charge: longer than a round trip (`Expect: 100-continue`), short
/// enough that a client trickling a large declared body holds its charge only briefly.
const PACE_WINDOW: Duration = Duration::from_millis(250);

/// The request side's bookkeeping: bytes received, and time spent waiting for them.
#[derive(Debug)]
pub(crate) struct ReadMeter {
    rate: MinDataRate,
    bytes: u64,
    /// Time waited for data, not counting the wait in progress.
    waited: Duration,
    waiting_since: Option<Instant>,
}

impl ReadMeter {
    pub(crate) fn new(rate: MinDataRate) -> Self {
        Self {
            rate,
            bytes: 0,
            waited: Duration::ZERO,
            waiting_since: None,
        }
    }

    /// The handler asked for data and none was ready: the wait starts, if it had not.
    /// Returns when it becomes too long, should no data come.
    pub(crate) fn wait(&mut self, now: Instant) -> Instant {
        let since = *self.waiting_since.get_or_insert(now);
        since + self.rate.allowance(self.bytes).saturating_sub(self.waited)
    }

    /// Data came (or the body ended): the wait, if any, is over.
    pub(crate) fn received(&mut self, bytes: u64, now: Instant) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += now.saturating_duration_since(since);
        }
        self.bytes = self.bytes.saturating_add(bytes);
    }

    pub(crate) fn rate(&self) -> MinDataRate {
        self.rate
    }

    /// Time waited for data, the wait in progress included.
    pub(crate) fn waited(&self, now: Instant) -> Duration {
        self.waited
            + self
                .waiting_since
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    /// What to charge for a body declared `declared` bytes long: what has arrived, plus what
    /// can arrive within the grace period at the pace so far. Its declared length until the
    /// body has been waited on long enough for its pace to tell.
    pub(crate) fn floor(&self, declared: u64, now: Instant) -> u64 {
        let waited = self.waited(now);
        if self.bytes >= declared || waited < PACE_WINDOW {
            return declared;
        }
        let pace = self.bytes as f64 / waited.as_secs_f64();
        let coming = (pace * self.rate.grace().as_secs_f64()) as u64;
        self.bytes + coming.min(declared - self.bytes)
    }

    /// When the wait in progress makes the body's pace tell, if it has not yet.
    pub(crate) fn pace_known_at(&self) -> Option<Instant> {
        let since = self.waiting_since?;
        let left = PACE_WINDOW.checked_sub(self.waited)?;
        Some(since + left)
    }
}

/// The response side's bookkeeping: when the frame last handed over must have been taken.
#[derive(Debug)]
pub(crate) struct WriteMeter {
    rate: MinDataRate,
    /// Set from handing a frame over until the server asks for the next one.
    deadline: Option<Instant>,
}

impl WriteMeter {
    pub(crate) fn new(rate: MinDataRate) -> Self {
        Self {
            rate,
            deadline: None,
        }
    }

    /// The server asks for more: the frame handed over last was taken. `Err` if too late.
    pub(crate) fn asked(&mut self, now: Instant) -> Result<(), TooSlow> {
        match self.deadline.take() {
            Some(deadline) if now > deadline => Err(TooSlow::new(Direction::Response, self.rate)),
            _ => Ok(()),
        }
    }

    /// A frame of `bytes` was handed over; returns when it must have been taken.
    pub(crate) fn handed(&mut self, bytes: u64, now: Instant) -> Instant {
        *self.deadline.insert(now + self.rate.allowance(bytes))
    }

    /// When the frame handed over last must have been taken; `None` while the body waits for
    /// its handler.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    pub(crate) fn rate(&self) -> MinDataRate {
        self.rate
    }
}

/// Bodies cut off for being too slow, counted by direction, with a throttled warning.
#[derive(Debug)]
pub(crate) struct SlowBodies {
    cut_off: [AtomicU64; 2],
    log: LogThrottle,
}

impl Default for SlowBodies {
    fn default() -> Self {
        Self {
            cut_off: Default::default(),
            log: LogThrottle::new(Duration::from_secs(1)),
        }
    }
}

impl SlowBodies {
    pub(crate) fn record(&self, slow: TooSlow, now_ms: u64) {
        let total = self.cut_off[slow.direction as usize].fetch_add(1, Relaxed) + 1;
        if let Some(suppressed) = self.log.allow(now_ms, total) {
            tracing::warn!(
                direction = slow.direction.as_str(),
                min_rate = %slow.rate,
                total,
                suppressed,
                "body too slow: request cut off, its slot and memory given back"
            );
        }
    }

    /// The counts, by [`Direction`] order: request, response.
    pub(crate) fn counts(&self) -> [u64; 2] {
        [self.cut_off[0].load(Relaxed), self.cut_off[1].load(Relaxed)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: MinDataRate = MinDataRate::new(1000, Duration::from_secs(2));

    #[test]
    fn a_request_body_may_wait_the_grace_then_must_average_the_rate() {
        let start = Instant::now();
        let mut meter = ReadMeter::new(RATE);
        assert_eq!(meter.wait(start), start + Duration::from_secs(2));
        // Asking again while still waiting does not move the deadline.
        assert_eq!(
            meter.wait(start + Duration::from_secs(1)),
            start + Duration::from_secs(2)
        );
        // 5,000 bytes after 1 s of waiting: 5 s of waiting are allowed in all.
        meter.received(5000, start + Duration::from_secs(1));
        let later = start + Duration::from_secs(10);
        assert_eq!(meter.wait(later), later + Duration::from_secs(4));
    }

    #[test]
    fn time_the_handler_spends_elsewhere_does_not_count() {
        let start = Instant::now();
        let mut meter = ReadMeter::new(RATE);
        meter.wait(start);
        meter.received(0, start + Duration::from_millis(1500));
        // A minute of work later, 0.5 s of the grace is left.
        let later = start + Duration::from_secs(60);
        assert_eq!(meter.wait(later), later + Duration::from_millis(500));
    }

    #[test]
    fn a_slow_body_is_charged_what_arrived_and_what_its_pace_brings_within_the_grace() {
        let start = Instant::now();
        let mut meter = ReadMeter::new(RATE);
        const DECLARED: u64 = 20 << 20;
        meter.wait(start);
        assert_eq!(meter.floor(DECLARED, start), DECLARED, "no pace yet");
        assert_eq!(meter.pace_known_at(), Some(start + PACE_WINDOW));
        // 100 bytes in 1 s of waiting: 100 B/s, so 200 more within the 2 s grace.
        meter.received(100, start + Duration::from_secs(1));
        assert_eq!(meter.floor(DECLARED, start + Duration::from_secs(1)), 300);
        assert_eq!(meter.pace_known_at(), None);
        // A body that keeps up is charged its declared length.
        let mut fast = ReadMeter::new(RATE);
        fast.wait(start);
        fast.received(DECLARED / 2, start + Duration::from_secs(1));
        assert_eq!(
            fast.floor(DECLARED, start + Duration::from_secs(1)),
            DECLARED
        );
        // Nothing after the pace window: nothing more is expected soon.
        let mut silent = ReadMeter::new(RATE);
        silent.wait(start);
        assert_eq!(silent.floor(DECLARED, start + PACE_WINDOW), 0);
    }

    #[test]
    fn a_response_frame_must_be_taken_within_its_size_at_the_rate() {
        let start = Instant::now();
        let mut meter = WriteMeter::new(RATE);
        assert_eq!(meter.asked(start), Ok(()), "nothing handed over yet");
        // Small frames get the grace period; large ones their size at the rate.
        assert_eq!(meter.handed(10, start), start + Duration::from_secs(2));
        assert_eq!(meter.asked(start + Duration::from_secs(2)), Ok(()));
        assert_eq!(meter.deadline(), None);
        assert_eq!(meter.handed(8000, start), start + Duration::from_secs(8));
        assert_eq!(
            meter.asked(start + Duration::from_secs(9)),
            Err(TooSlow::new(Direction::Response, RATE))
        );
    }

    #[test]
    fn display() {
        assert_eq!(RATE.to_string(), "1000 B/s after 2s");
        assert_eq!(
            TooSlow::new(Direction::Request, RATE).to_string(),
            "the request body moved slower than 1000 B/s after 2s"
        );
    }
}
