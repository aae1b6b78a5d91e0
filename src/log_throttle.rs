//! At most one log line per period, counting what it held back.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};

/// Lets one event through per `period`; the rest are counted and reported with the next.
///
/// Time comes from the caller, in milliseconds from any fixed origin, so the request path can
/// pass a clock that costs a load instead of a clock read.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    period_ms: u64,
    /// The time before which events are held back.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub(crate) fn new(period: Duration) -> Self {
        Self {
            period_ms: period.as_millis().max(1) as u64,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this event may be logged, `n` being how many were held back since the
    /// last one that was.
    pub(crate) fn allow(&self, now_ms: u64) -> Option<u64> {
        let next = self.next_ms.load(Relaxed);
        if now_ms >= next
            && self
                .next_ms
                .compare_exchange(next, now_ms + self.period_ms, Relaxed, Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Relaxed));
        }
        self.suppressed.fetch_add(1, Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_event_per_period_reporting_what_it_held_back() {
        let throttle = LogThrottle::new(Duration::from_secs(1));
        assert_eq!(throttle.allow(0), Some(0));
        for ms in 0..1000 {
            assert_eq!(throttle.allow(ms), None);
        }
        assert_eq!(throttle.allow(1000), Some(1000));
        assert_eq!(throttle.allow(1500), None);
        assert_eq!(throttle.allow(2000), Some(1));
    }
}
