//! At most one log line per period, counting what it held back.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Lets one event through per `period`, and says how many were held back since the last.
///
/// The caller passes the time (milliseconds from any fixed origin) and the running count of
/// events, both of which it has anyway, so an event that is held back costs two loads: no
/// clock read, no shared counter to bump under a flood.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    period_ms: u64,
    /// The time before which events are held back.
    next_ms: AtomicU64,
    /// The running count at the last event let through.
    count_at_last: AtomicU64,
}

impl LogThrottle {
    pub(crate) fn new(period: Duration) -> Self {
        Self {
            period_ms: period.as_millis().max(1) as u64,
            next_ms: AtomicU64::new(0),
            count_at_last: AtomicU64::new(0),
        }
    }

    /// `Some(held_back)` when the event numbered `count` (from 1) may be logged now.
    pub(crate) fn allow(&self, now_ms: u64, count: u64) -> Option<u64> {
        let next = self.next_ms.load(Relaxed);
        if now_ms < next
            || self
                .next_ms
                .compare_exchange(next, now_ms + self.period_ms, Relaxed, Relaxed)
                .is_err()
        {
            return None;
        }
        let last = self.count_at_last.swap(count, Relaxed);
        Some(count.saturating_sub(last).saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_period_reporting_what_it_held_back() {
        let throttle = LogThrottle::new(Duration::from_secs(1));
        assert_eq!(throttle.allow(0, 1), Some(0));
        for (ms, count) in (0..1000).zip(2..) {
            assert_eq!(throttle.allow(ms, count), None);
        }
        assert_eq!(throttle.allow(1000, 1002), Some(1000));
        assert_eq!(throttle.allow(1500, 1003), None);
        assert_eq!(throttle.allow(2000, 1004), Some(1));
    }
}
