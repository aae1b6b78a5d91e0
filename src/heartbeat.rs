//! The runtime's heartbeat: a task that should wake every [`PERIOD`], and how late it runs,
//! read from outside the runtime (by the sampler thread) so that a stall is seen while it
//! lasts, not once it is over.
//!
//! A tokio worker notices expired timers and readable sockets in the same step, so the
//! heartbeat is late exactly when a request that waits for I/O would be: a bypassed
//! `/health` answers about that much later. Only stable tokio APIs are used.
//!
//! It also keeps the runtime's metrics, so that the sampler can tell how many workers run
//! requests.

use std::{
    sync::{
        Arc, Mutex, PoisonError, Weak,
        atomic::{
            AtomicBool, AtomicU64,
            Ordering::{AcqRel, Acquire, Relaxed, Release},
        },
    },
    time::{Duration, Instant},
};

/// How often the heartbeat should wake.
const PERIOD: Duration = Duration::from_millis(5);

#[derive(Debug)]
pub(crate) struct Heartbeat {
    started: Instant,
    /// When the last tick ran, in microseconds since `started`.
    last_tick_us: AtomicU64,
    /// How late the last tick woke, in microseconds.
    late_us: AtomicU64,
    /// Whether a heartbeat task runs on some runtime.
    running: AtomicBool,
    /// Set if the task panicked (a runtime without timers): never started again.
    failed: AtomicBool,
    /// The metrics of the runtime it runs on.
    metrics: Mutex<Option<tokio::runtime::RuntimeMetrics>>,
}

impl Heartbeat {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            last_tick_us: AtomicU64::new(0),
            late_us: AtomicU64::new(0),
            running: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            metrics: Mutex::new(None),
        })
    }

    /// Starts the heartbeat on the current runtime unless one runs (or none can): a load
    /// while it runs. If the runtime it ran on shuts down, the next call starts it again.
    #[inline]
    pub(crate) fn ensure_running(self: &Arc<Self>) {
        if !self.running.load(Relaxed) {
            self.start();
        }
    }

    #[cold]
    #[inline(never)]
    fn start(self: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.failed.load(Relaxed) || self.running.swap(true, AcqRel) {
            return;
        }
        self.last_tick_us
            .store(self.micros(Instant::now()), Relaxed);
        self.late_us.store(0, Relaxed);
        *self.metrics.lock().unwrap_or_else(PoisonError::into_inner) = Some(runtime.metrics());
        runtime.spawn(beat(Arc::downgrade(self)));
    }

    /// How late the runtime runs now: how late the last tick woke, or, if the next one is
    /// overdue, by how much. Zero while no heartbeat runs.
    pub(crate) fn lateness(&self) -> Duration {
        if !self.running.load(Acquire) {
            return Duration::ZERO;
        }
        let since_tick = self
            .micros(Instant::now())
            .saturating_sub(self.last_tick_us.load(Relaxed));
        let overdue = since_tick.saturating_sub(PERIOD.as_micros() as u64);
        Duration::from_micros(overdue.max(self.late_us.load(Relaxed)))
    }

    /// The runtime's workers; `None` before the heartbeat started.
    pub(crate) fn workers(&self) -> Option<usize> {
        let metrics = self.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        metrics
            .as_ref()
            .map(tokio::runtime::RuntimeMetrics::num_workers)
    }

    fn micros(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_micros() as u64
    }
}

/// Ticks every [`PERIOD`] until the pool is gone or the runtime drops the task.
///
/// The lateness is measured on the runtime's own clock (which tests may pause), the time of
/// the tick on the real one, which the sampler thread reads.
async fn beat(heartbeat: Weak<Heartbeat>) {
    use tokio::time::{Instant as RuntimeInstant, sleep_until};
    let _stopped = Stopped(heartbeat.clone());
    loop {
        let due = RuntimeInstant::now() + PERIOD;
        sleep_until(due).await;
        let late = RuntimeInstant::now().saturating_duration_since(due);
        let Some(heartbeat) = heartbeat.upgrade() else {
            return;
        };
        heartbeat.late_us.store(late.as_micros() as u64, Relaxed);
        heartbeat
            .last_tick_us
            .store(heartbeat.micros(Instant::now()), Relaxed);
    }
}

/// Marks the heartbeat stopped when its task ends, however it ends.
struct Stopped(Weak<Heartbeat>);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Some(heartbeat) = self.0.upgrade() {
            if std::thread::panicking() {
                heartbeat.failed.store(true, Relaxed);
            }
            heartbeat.running.store(false, Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outside_a_runtime_nothing_runs_and_nothing_is_late() {
        let heartbeat = Heartbeat::new();
        heartbeat.ensure_running();
        assert_eq!(heartbeat.lateness(), Duration::ZERO);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_blocked_worker_is_seen_late_while_it_blocks() {
        let heartbeat = Heartbeat::new();
        heartbeat.ensure_running();
        tokio::time::sleep(PERIOD * 4).await;
        let seen = Arc::clone(&heartbeat);
        let watcher = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(60));
            seen.lateness()
        });
        // The only worker does not yield for 120 ms.
        let blocking = tokio::spawn(async { std::thread::sleep(Duration::from_millis(120)) });
        let lateness = tokio::task::spawn_blocking(move || watcher.join().unwrap())
            .await
            .unwrap();
        blocking.await.unwrap();
        assert!(lateness >= Duration::from_millis(40), "{lateness:?}");
    }

    #[test]
    fn restarts_on_the_next_runtime() {
        let heartbeat = Heartbeat::new();
        for _ in 0..2 {
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                heartbeat.ensure_running();
                tokio::time::sleep(PERIOD * 3).await;
                assert!(heartbeat.running.load(Relaxed));
            });
            drop(runtime);
            assert!(!heartbeat.running.load(Relaxed), "stopped with its runtime");
        }
    }

    #[test]
    fn a_runtime_without_timers_stops_it_for_good() {
        let heartbeat = Heartbeat::new();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            heartbeat.ensure_running();
            tokio::task::yield_now().await;
            tokio::task::yield_now().await;
        });
        assert!(heartbeat.failed.load(Relaxed));
        assert!(!heartbeat.running.load(Relaxed));
        runtime.block_on(async { heartbeat.ensure_running() });
        assert!(!heartbeat.running.load(Relaxed));
    }
}
