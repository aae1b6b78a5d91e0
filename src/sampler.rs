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
    controller::{Controller, Runtime, tick::Tick},
    heartbeat::Heartbeat,
    memory::shared::Neighbourhood,
};

/// Starts the sampler. The first sample is taken here, so the reading is fresh (and the
/// metrics published) before the first request; the thread takes the rest. It holds only a
/// weak reference and stops once the pool is dropped.
/// With a `heartbeat`, each sample also tells the controller how late the runtime runs.
/// With a `neighbourhood`, each sample also publishes this process's unseen charges to the
/// other processes of its cgroup and takes theirs.
pub(crate) fn spawn(
    controller: &Arc<Controller>,
    interval: Duration,
    heartbeat: Option<Arc<Heartbeat>>,
    neighbourhood: Option<Neighbourhood>,
) -> std::io::Result<()> {
    let mut sampling = Sampling {
        interval,
        heartbeat,
        neighbourhood,
    };
    let pause = sampling.sample(controller);
    let controller = Arc::downgrade(controller);
    thread::Builder::new()
        .name("admission-sampler".into())
        .spawn(move || sampling.run(controller, pause))
        .map(drop)
}

/// What the sampler thread keeps from one sample to the next.
struct Sampling {
    interval: Duration,
    heartbeat: Option<Arc<Heartbeat>>,
    neighbourhood: Option<Neighbourhood>,
}

impl Sampling {
    fn run(&mut self, controller: Weak<Controller>, mut pause: Duration) {
        loop {
            thread::sleep(pause);
            let Some(controller) = controller.upgrade() else {
                return;
            };
            pause = self.sample(&controller);
        }
    }

    /// Refreshes the reading, lets the controller act on it, on the runtime's lateness and
    /// on its neighbours' charges, and publishes the metrics; returns how long to pause
    /// before the next sample.
    fn sample(&mut self, controller: &Controller) -> Duration {
        // A failed refresh keeps the last reading; the controller's policy decides what an
        // untrusted reading means, and says so.
        let refreshed = controller.memory().refresh();
        let others = self.neighbourhood.as_mut().map(|neighbourhood| {
            let (charged, in_flight) = controller.charged_and_in_flight();
            neighbourhood.sample(charged, in_flight)
        });
        controller.tick(Tick {
            refreshed,
            runtime: self.heartbeat.as_deref().map(runtime),
            others,
        });
        crate::metrics::publish(&controller.snapshot());
        pause(
            controller.spoken_for_bytes(),
            controller.settings.budget,
            self.interval,
        )
    }
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
