//! Whether the queue stands, as "Fail at Scale" puts it for server queues: a queue that has
//! not been empty for a whole interval only delays everyone, and refills the workers the
//! moment one is free. Then a waiter may wait only a short time (twice the target) before it
//! is sent away (`503`, `standing_queue`), rather than be served late; when the queue
//! empties, waiting is as long as the queue timeout again. A burst that the queue absorbs
//! and drains is never shed.
//!
//! The target is the configured one (5 ms by default) or one service time, whichever is
//! longer, and the interval 100 ms or one service time: where a handler runs 500 ms, a slot
//! frees only every so often and a queue a service time long is not standing.
//!
//! Only waiters that the concurrency limit holds back are sent away: one that waits for
//! memory is not a standing queue, and keeps its place (see `Queue::shed_standing`).

use std::time::{Duration, Instant};

/// How long the queue must stay non-empty before it stands, at least.
pub(crate) const INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug)]
pub(crate) struct Standing {
    target: Duration,
    /// Since when the queue has held someone.
    since: Option<Instant>,
}

impl Standing {
    pub(crate) fn new(target: Duration) -> Self {
        Self {
            target,
            since: None,
        }
    }

    /// Someone joined the queue at `now`.
    pub(crate) fn joined(&mut self, now: Instant) {
        self.since.get_or_insert(now);
    }

    /// The queue emptied.
    pub(crate) fn emptied(&mut self) {
        self.since = None;
    }

    /// How long a waiter may wait at `now`, while requests are served in about `service`:
    /// twice the target if the queue stands, `None` if it does not.
    pub(crate) fn longest(&self, now: Instant, service: Duration) -> Option<Duration> {
        let since = self.since?;
        let stands = now.saturating_duration_since(since) > INTERVAL.max(service);
        stands.then(|| self.target.max(service) * 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TARGET: Duration = Duration::from_millis(5);

    #[test]
    fn stands_once_not_empty_for_an_interval_until_it_empties() {
        let mut standing = Standing::new(TARGET);
        let start = Instant::now();
        let fast = Duration::from_millis(1);
        assert_eq!(standing.longest(start, fast), None, "empty");
        standing.joined(start);
        standing.joined(start + INTERVAL / 2);
        assert_eq!(standing.longest(start + INTERVAL, fast), None);
        let later = start + INTERVAL + Duration::from_millis(1);
        assert_eq!(standing.longest(later, fast), Some(TARGET * 2));
        standing.emptied();
        assert_eq!(standing.longest(later, fast), None);
        standing.joined(later);
        assert_eq!(
            standing.longest(later + INTERVAL, fast),
            None,
            "a new burst"
        );
    }

    #[test]
    fn a_queue_one_service_time_long_does_not_stand() {
        let mut standing = Standing::new(TARGET);
        let start = Instant::now();
        let slow = Duration::from_millis(500);
        standing.joined(start);
        assert_eq!(standing.longest(start + slow / 2, slow), None);
        let later = start + slow + Duration::from_millis(1);
        assert_eq!(standing.longest(later, slow), Some(slow * 2));
    }
}
