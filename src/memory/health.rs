//! Whether the memory reading can be trusted: when the source last refreshed successfully,
//! and how often it failed. A broken or stalled source must be loud, and must not decide
//! admissions with a frozen figure without saying so. Time comes from the caller, in
//! milliseconds since the pool started.

use std::{
    fmt,
    sync::atomic::{
        AtomicBool, AtomicU64,
        Ordering::{Acquire, Relaxed, Release},
    },
    time::Duration,
};

use super::source::MemoryError;
use crate::log_throttle::LogThrottle;

/// A reading is stale after this many sample intervals without a successful refresh...
const STALE_AFTER_INTERVALS: u32 = 100;
/// ...and never sooner than this: a busy machine may hold the sampler back for a while.
const STALE_AFTER_AT_LEAST: Duration = Duration::from_secs(1);

/// What the memory limit does while the memory reading cannot be trusted: the source's
/// refresh fails, or no refresh has succeeded for 100 sample intervals (at least 1 s).
///
/// Either way the layer logs an error and counts it
/// (`admission_memory_source_errors_total`, `admission_memory_reading_age_seconds`).
///
/// ```
/// use tower_admission::{Admission, AdmissionConfig, ManualMemory, MemoryFailure};
///
/// let config = AdmissionConfig::default()
///     .apply_vars([("ADMISSION_MEMORY_FAILURE", "closed")])
///     .unwrap();
/// assert_eq!(config, AdmissionConfig::default().on_memory_failure(MemoryFailure::Closed));
/// let admission = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
/// assert!(admission.to_string().contains("memory failure    fail closed"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryFailure {
    /// Fail open (the default): the memory limit stops rejecting requests until the reading is
    /// trusted again; the concurrency limit, the queue and the per-request charges still
    /// apply. A broken gauge must not take the service down.
    #[default]
    Open,
    /// Fail closed: memory counts as over the budget, so requests run one at a time (the
    /// progress guarantee) and the rest wait or are shed with `limit=memory`.
    Closed,
}

impl fmt::Display for MemoryFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryFailure::Open => "open",
            MemoryFailure::Closed => "closed",
        })
    }
}

pub(crate) struct ReadingHealth {
    policy: MemoryFailure,
    stale_after_ms: u64,
    /// Milliseconds after the pool started of the last successful refresh.
    refreshed_at_ms: AtomicU64,
    failing: AtomicBool,
    errors: AtomicU64,
    error_log: LogThrottle,
    untrusted_log: LogThrottle,
}

impl ReadingHealth {
    pub(crate) fn new(policy: MemoryFailure, sample_interval: Duration) -> Self {
        let stale_after = sample_interval
            .checked_mul(STALE_AFTER_INTERVALS)
            .unwrap_or(Duration::MAX)
            .max(STALE_AFTER_AT_LEAST);
        Self {
            policy,
            stale_after_ms: u64::try_from(stale_after.as_millis()).unwrap_or(u64::MAX),
            refreshed_at_ms: AtomicU64::new(0),
            failing: AtomicBool::new(false),
            errors: AtomicU64::new(0),
            error_log: LogThrottle::new(Duration::from_secs(10)),
            untrusted_log: LogThrottle::new(Duration::from_secs(1)),
        }
    }

    /// Milliseconds from the last successful refresh to `now_ms`.
    fn age_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.refreshed_at_ms.load(Acquire))
    }

    /// Records the outcome of a refresh (from the sampler thread) at `now_ms`.
    pub(crate) fn record(&self, refreshed: &Result<(), MemoryError>, now_ms: u64) {
        match refreshed {
            Ok(()) => {
                self.refreshed_at_ms.store(now_ms, Release);
                if self.failing.swap(false, Relaxed) {
                    tracing::warn!(
                        errors = self.errors(),
                        "memory reading recovered; the memory limit applies again"
                    );
                }
            }
            Err(error) => {
                self.failing.store(true, Relaxed);
                let errors = self.errors.fetch_add(1, Relaxed) + 1;
                if let Some(suppressed) = self.error_log.allow(now_ms, errors) {
                    tracing::error!(
                        %error,
                        errors,
                        suppressed,
                        policy = %self.policy,
                        "memory reading failed; the memory limit fails {}",
                        self.policy
                    );
                }
            }
        }
    }

    /// Whether the reading may decide at `now_ms`: the last refresh succeeded, and recently.
    /// Logs (throttled) when it may not. Takes the time: call it only where the answer
    /// matters.
    pub(crate) fn is_trusted(&self, now_ms: u64) -> bool {
        let age_ms = self.age_ms(now_ms);
        let failing = self.failing.load(Relaxed);
        if !failing && age_ms <= self.stale_after_ms {
            return true;
        }
        // Counting the decisions would cost a shared write on every one of them; the log
        // says it once a second, and the metrics carry the errors and the reading's age.
        if self.untrusted_log.allow(now_ms, 0).is_some() {
            tracing::error!(
                failing,
                age_ms,
                policy = %self.policy,
                "memory reading cannot be trusted; the memory limit fails {}",
                self.policy
            );
        }
        false
    }

    /// Refreshes that failed since start.
    pub(crate) fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }

    /// Time from the last successful refresh to `now_ms`.
    pub(crate) fn age(&self, now_ms: u64) -> Duration {
        Duration::from_millis(self.age_ms(now_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Result<(), MemoryError> {
        Err(MemoryError::injected())
    }

    #[test]
    fn a_failing_source_is_not_trusted_until_it_recovers() {
        let health = ReadingHealth::new(MemoryFailure::Open, Duration::from_millis(10));
        assert!(health.is_trusted(5));
        health.record(&failed(), 10);
        health.record(&failed(), 20);
        assert!(!health.is_trusted(25));
        assert_eq!(health.errors(), 2);
        health.record(&Ok(()), 30);
        assert!(health.is_trusted(35));
        assert_eq!(health.errors(), 2);
    }

    #[test]
    fn a_reading_without_refresh_goes_stale() {
        // 2 s after the start, never refreshed since.
        let later = ReadingHealth::new(MemoryFailure::Closed, Duration::from_millis(10));
        assert_eq!(later.stale_after_ms, 1000);
        assert!(later.is_trusted(1000));
        assert!(!later.is_trusted(2000));
        assert_eq!(later.age(2000), Duration::from_secs(2));
        later.record(&Ok(()), 2000);
        assert!(later.is_trusted(2010));
    }

    #[test]
    fn huge_intervals_do_not_overflow() {
        let health = ReadingHealth::new(MemoryFailure::Open, Duration::MAX);
        assert_eq!(health.stale_after_ms, u64::MAX);
        assert!(health.is_trusted(u64::MAX / 2));
    }
}
