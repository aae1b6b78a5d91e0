//! Whether the queue stands, as "Fail at Scale" puts it for server queues: a queue that has
//! not been empty for a whole interval (100 ms) only delays everyone, and refills the
//! workers the moment one is free. Then a waiter may wait only twice the target (5 ms by
//! default) before it is sent away (`503`, `standing_queue`), rather than be served late;
//! once the queue empties, waiting is as long as the queue timeout again. A burst that the
//! queue absorbs and drains within the interval is never shed.
//!
//! The controller applies it only to waiters held back by the live concurrency limit once
//! it has fallen below its ceiling (the runtime cannot keep up): a waiter for memory, or for slots
//! held by long requests, is not in a standing queue and keeps its place (see
//! `Queue::shed_standing`).

use std::time::{Duration, Instant};

/// How long the queue must stay non-empty before it stands.
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

    /// How long a waiter may wait at `now`: twice the target if the queue stands, `None` if
    /// it does not.
    pub(crate) fn longest(&self, now: Instant) -> Option<Duration> {
        let since = self.since?;
        (now.saturating_duration_since(since) > INTERVAL).then_some(self.target * 2)
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
        assert_eq!(standing.longest(start), None, "empty");
        standing.joined(start);
        standing.joined(start + INTERVAL / 2);
        assert_eq!(standing.longest(start + INTERVAL), None);
        let later = start + INTERVAL + Duration::from_millis(1);
        assert_eq!(standing.longest(later), Some(TARGET * 2));
        standing.emptied();
        assert_eq!(standing.longest(later), None);
        standing.joined(later);
        assert_eq!(standing.longest(later + INTERVAL), None, "a new burst");
    }
}
