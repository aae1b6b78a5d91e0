//! At most one log line per period, counting what it held back.

use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

/// Lets one event through per `period`; the rest are counted and reported with the next.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    start: Instant,
    period_ms: u64,
    /// Milliseconds since `start` before which events are held back.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogThrottle {
    pub(crate) fn new(period: Duration) -> Self {
        Self {
            start: Instant::now(),
            period_ms: period.as_millis().max(1) as u64,
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this event may be logged, `n` being how many were held back since the
    /// last one that was.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now + self.period_ms, Relaxed, Relaxed)
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
    fn one_event_per_period() {
        let throttle = LogThrottle::new(Duration::from_secs(3600));
        assert_eq!(throttle.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(throttle.allow(), None);
        }
        assert_eq!(throttle.suppressed.load(Relaxed), 1000);
    }

    #[test]
    fn reports_what_it_held_back() {
        let throttle = LogThrottle::new(Duration::from_millis(1));
        assert_eq!(throttle.allow(), Some(0));
        assert_eq!(throttle.allow(), None);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(throttle.allow(), Some(1));
    }
}
