//! The dedicated OS thread that refreshes the memory reading, wakes waiters that now fit,
//! and publishes metrics.
//!
//! A thread of its own, not a tokio task: jemalloc's epoch advance takes a process-wide
//! mutex for up to a millisecond and must never stall a runtime worker.

use std::{
    sync::{Arc, Weak},
    thread,
    time::{Duration, Instant},
};

use crate::{controller::Controller, log_throttle::LogThrottle, snapshot::Snapshot};

/// Starts the sampler. It holds only a weak reference and stops once the pool is dropped.
pub(crate) fn spawn(controller: &Arc<Controller>, interval: Duration) -> std::io::Result<()> {
    let controller = Arc::downgrade(controller);
    thread::Builder::new()
        .name("admission-sampler".into())
        .spawn(move || run(controller, interval))
        .map(drop)
}

fn run(controller: Weak<Controller>, interval: Duration) {
    let errors = LogThrottle::new(Duration::from_secs(10));
    let started = Instant::now();
    let mut failures = 0;
    while let Some(controller) = controller.upgrade() {
        if let Err(error) = controller.memory().refresh() {
            failures += 1;
            // Fail open: keep the last reading and say so, rather than stop serving.
            if let Some(suppressed) = errors.allow(started.elapsed().as_millis() as u64, failures) {
                tracing::error!(%error, suppressed, "memory reading failed; keeping the last value");
            }
        }
        controller.on_sample();
        let snapshot = controller.snapshot();
        crate::metrics::publish(&snapshot);
        drop(controller);
        thread::sleep(pause(&snapshot, interval));
    }
}

/// The sample interval, or a quarter of it while memory is within 10 % of the budget, where
/// a stale reading costs most.
fn pause(snapshot: &Snapshot, interval: Duration) -> Duration {
    let near_budget = snapshot.memory_budget_bytes.is_some_and(|budget| {
        let used = snapshot
            .memory_bytes
            .saturating_add(snapshot.reserved_bytes);
        used >= budget - budget / 10
    });
    if near_budget {
        (interval / 4).max(Duration::from_millis(1)).min(interval)
    } else {
        interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(memory: u64, reserved: u64, budget: Option<u64>) -> Snapshot {
        Snapshot {
            in_flight: 0,
            queued: 0,
            memory_bytes: memory,
            reserved_bytes: reserved,
            memory_budget_bytes: budget,
            max_concurrency: 1,
            queue_capacity: 0,
            admitted: 0,
            admitted_over_budget: 0,
            rejected: [[0; 2]; 3],
        }
    }

    #[test]
    fn samples_faster_near_the_budget() {
        let interval = Duration::from_millis(10);
        assert_eq!(pause(&snapshot(100, 0, None), interval), interval);
        assert_eq!(pause(&snapshot(50, 0, Some(100)), interval), interval);
        assert_eq!(pause(&snapshot(80, 10, Some(100)), interval), interval / 4);
        assert_eq!(pause(&snapshot(500, 0, Some(100)), interval), interval / 4);
        let tiny = Duration::from_micros(500);
        assert_eq!(pause(&snapshot(500, 0, Some(100)), tiny), tiny);
    }
}
