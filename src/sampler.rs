//! The dedicated OS thread that refreshes the memory reading, reads the runtime's
//! heartbeat, wakes waiters that now fit, and publishes metrics.
//!
//! A thread of its own, not a tokio task: jemalloc's epoch advance takes a process-wide
//! mutex for up to a millisecond and must never stall a runtime worker.

use std::{
    sync::{Arc, Weak},
    thread,
    time::Duration,
};

use crate::{
    controller::{Controller, Runtime},
    heartbeat::Heartbeat,
};

/// Starts the sampler. The first sample is taken here, so the reading is fresh (and the
/// metrics published) before the first request; the thread takes the rest. It holds only a
/// weak reference and stops once the pool is dropped.
/// With a `heartbeat`, each sample also tells the controller how late the runtime runs.
pub(crate) fn spawn(
    controller: &Arc<Controller>,
    interval: Duration,
    heartbeat: Option<Arc<Heartbeat>>,
) -> std::io::Result<()> {
    let pause = sample(controller, interval, heartbeat.as_deref());
    let controller = Arc::downgrade(controller);
    thread::Builder::new()
        .name("admission-sampler".into())
        .spawn(move || run(controller, pause, interval, heartbeat))
        .map(drop)
}

fn run(
    controller: Weak<Controller>,
    mut pause: Duration,
    interval: Duration,
    heartbeat: Option<Arc<Heartbeat>>,
) {
    loop {
        thread::sleep(pause);
        let Some(controller) = controller.upgrade() else {
            return;
        };
        pause = sample(&controller, interval, heartbeat.as_deref());
    }
}

/// Refreshes the reading, lets the controller act on it and on the runtime's lateness, and
/// publishes the metrics; returns how long to pause before the next sample.
fn sample(controller: &Controller, interval: Duration, heartbeat: Option<&Heartbeat>) -> Duration {
    // A failed refresh keeps the last reading; the controller's policy decides what an
    // untrusted reading means, and says so.
    let refreshed = controller.memory().refresh();
    controller.on_sample(refreshed);
    if let Some(heartbeat) = heartbeat {
        controller.on_runtime(runtime(heartbeat));
    }
    crate::metrics::publish(&controller.snapshot());
    pause(
        controller.spoken_for_bytes(),
        controller.settings.budget,
        interval,
    )
}

/// How the runtime runs: its lateness, and its workers (no more than a CPU quota allows).
fn runtime(heartbeat: &Heartbeat) -> Runtime {
    let quota = crate::cpu_quota::cores();
    Runtime {
        lateness: heartbeat.lateness(),
        workers: heartbeat.workers().map(|w| quota.map_or(w, |q| q.min(w))),
    }
}

/// The sample interval, or a quarter of it while the memory spoken for is
/// within 10 % of the budget, where an old reading costs most.
fn pause(spoken_for: u64, budget: Option<u64>, interval: Duration) -> Duration {
    if budget.is_some_and(|budget| spoken_for >= budget - budget / 10) {
        (interval / 4).max(Duration::from_millis(1)).min(interval)
    } else {
        interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_faster_near_the_budget() {
        let interval = Duration::from_millis(10);
        assert_eq!(pause(100, None, interval), interval);
        assert_eq!(pause(50, Some(100), interval), interval);
        assert_eq!(pause(90, Some(100), interval), interval / 4);
        assert_eq!(pause(500, Some(100), interval), interval / 4);
        let tiny = Duration::from_micros(500);
        assert_eq!(pause(500, Some(100), tiny), tiny);
    }
}
