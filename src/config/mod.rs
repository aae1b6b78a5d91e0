//! Configuration: the builder and its validation. The limits' setters are here; those that
//! tell requests apart and answer them are in [`requests`], the minimum body rates in
//! [`bodies`]. The environment's `ADMISSION_*` variables are read in [`env`](mod@env), the
//! budget is resolved in [`budget`], errors are in [`error`], and the effective
//! configuration is described in [`describe`].

mod bodies;
mod budget;
pub(crate) mod describe;
mod env;
mod error;
mod rate;
mod requests;
mod vars;

use std::time::Duration;

use crate::{
    http_settings::{Classifier, Prioritize, PriorityRules, Shaper},
    memory::{MemoryFailure, MemorySourceKind, SharedCharges},
};

use crate::controller::QueueTarget;
use crate::discard::DiscardBound;
pub use budget::MemoryBudget;
pub(crate) use budget::resolve_budget;
pub use error::ConfigError;
use rate::RateSetting;

/// The settings of one admission pool.
///
/// Start from [`AdmissionConfig::default`] (the defaults of the `ADMISSION_*` variables) or
/// [`AdmissionConfig::from_env`], adjust with the builder methods, then build an
/// [`Admission`](crate::Admission), which validates the whole.
///
/// ```
/// use std::time::Duration;
/// use tower_admission::{Admission, AdmissionConfig, ManualMemory, MemoryBudget};
///
/// let config = AdmissionConfig::default()
///     .max_concurrency(32)
///     .memory_budget(MemoryBudget::Percent(50.0))
///     .queue_capacity(100)
///     .queue_timeout(Duration::from_millis(250));
/// let admission = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
/// assert_eq!(admission.snapshot().max_concurrency, 32);
/// assert!(admission.to_string().contains("queue timeout     250ms"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionConfig {
    pub(crate) max_concurrency: usize,
    /// The most connections the pool's listener keeps open; `None`: no maximum.
    pub(crate) max_connections: Option<usize>,
    pub(crate) memory_budget: MemoryBudget,
    pub(crate) queue_capacity: usize,
    pub(crate) queue_timeout: Duration,
    pub(crate) sample_interval: Duration,
    pub(crate) bypass: Vec<String>,
    /// `Retry-After` in seconds; `None`: from the queue and the admission rate.
    pub(crate) retry_after_secs: Option<u32>,
    /// The most `Retry-After` says when computed.
    pub(crate) retry_after_max_secs: u32,
    pub(crate) request_estimate: u64,
    pub(crate) memory_failure: MemoryFailure,
    pub(crate) classifier: Option<Classifier>,
    pub(crate) shaper: Option<Shaper>,
    pub(crate) reservations: bool,
    pub(crate) request_body: RateSetting,
    /// Whether gRPC requests' bodies are cut off below the request rate too.
    pub(crate) streams_min_rate: bool,
    pub(crate) response_body: RateSetting,
    /// How much of a rejected request's unread body is read and dropped.
    pub(crate) discard: DiscardBound,
    pub(crate) priority_rules: PriorityRules,
    /// A header whose value is how long the client waits, in milliseconds.
    pub(crate) deadline_header: Option<http::HeaderName>,
    pub(crate) prioritize: Option<Prioritize>,
    /// The percentage of slots and budget only `Critical` requests may use.
    pub(crate) critical_reserve: f64,
    pub(crate) memory_source: MemorySourceKind,
    /// With the `both` source: the budget on the cgroup's working set.
    pub(crate) cgroup_budget: MemoryBudget,
    /// With the `cgroup` source: whether the cgroup's processes share their charges.
    pub(crate) shared_charges: SharedCharges,
    /// Whether the live concurrency limit finds itself below `max_concurrency`.
    pub(crate) adaptive_limit: bool,
    /// Whether the layer only counts what it would reject, and admits everything.
    pub(crate) observe_only: bool,
    /// The runtime lateness above which the live concurrency limit falls.
    pub(crate) lateness_target: Duration,
    /// The sojourn above which the queue stands; `None`: never shed for standing.
    pub(crate) queue_target: QueueTarget,
}

impl Default for AdmissionConfig {
    /// The defaults of the `ADMISSION_*` variables (README's configuration table): 256 in
    /// flight, 75 % of memory, 1024 waiters, a 1 s queue timeout, a 10 ms sample interval,
    /// no bypass, `Retry-After` computed (at most 30 s); bodies at least 240 bytes/s each way
    /// after a 5 s grace period; rejected requests' bodies discarded up to 8 MiB within 10 s.
    fn default() -> Self {
        Self {
            max_concurrency: 256,
            max_connections: None,
            memory_budget: MemoryBudget::Percent(75.0),
            queue_capacity: 1024,
            queue_timeout: Duration::from_secs(1),
            sample_interval: Duration::from_millis(10),
            bypass: Vec::new(),
            retry_after_secs: None,
            retry_after_max_secs: 30,
            request_estimate: 256 << 10,
            memory_failure: MemoryFailure::Open,
            classifier: None,
            shaper: None,
            reservations: false,
            request_body: RateSetting::DEFAULT,
            streams_min_rate: false,
            response_body: RateSetting::DEFAULT,
            discard: DiscardBound::DEFAULT,
            priority_rules: PriorityRules::default(),
            deadline_header: None,
            prioritize: None,
            critical_reserve: 0.0,
            memory_source: MemorySourceKind::Jemalloc,
            cgroup_budget: MemoryBudget::Percent(75.0),
            shared_charges: SharedCharges::Auto,
            adaptive_limit: true,
            observe_only: false,
            lateness_target: Duration::from_millis(10),
            queue_target: QueueTarget::Auto,
        }
    }
}

impl AdmissionConfig {
    /// At most this many requests in flight (`ADMISSION_MAX_CONCURRENCY`); at least 1.
    /// Values above 1,048,575 (the width of the in-flight counter) act as 1,048,575.
    pub fn max_concurrency(mut self, max: usize) -> Self {
        self.max_concurrency = max;
        self
    }

    /// At most this many connections open at once, counted by the pool's
    /// [`listener`](crate::Admission::listener) (`ADMISSION_MAX_CONNECTIONS`; none by
    /// default); at least 1. At the maximum the listener stops accepting until one closes,
    /// and the kernel's backlog holds the connections that come meanwhile.
    ///
    /// ```
    /// use tower_admission::{Admission, AdmissionConfig, ManualMemory};
    ///
    /// let pool = |max| {
    ///     let config = AdmissionConfig::default().max_connections(max);
    ///     Admission::with_memory_source(config, ManualMemory::new(0))
    /// };
    /// assert_eq!(pool(Some(10_000)).unwrap().snapshot().max_connections, Some(10_000));
    /// assert!(pool(Some(0)).is_err());
    /// ```
    pub fn max_connections(mut self, max: Option<usize>) -> Self {
        self.max_connections = max;
        self
    }

    /// The memory budget (`ADMISSION_MEMORY_BUDGET`).
    pub fn memory_budget(mut self, budget: MemoryBudget) -> Self {
        self.memory_budget = budget;
        self
    }

    /// Shorthand for `memory_budget(MemoryBudget::Bytes(bytes))`.
    pub fn memory_budget_bytes(self, bytes: u64) -> Self {
        self.memory_budget(MemoryBudget::Bytes(bytes))
    }

    /// Which reading the memory budget applies to (`ADMISSION_MEMORY_SOURCE`): jemalloc's
    /// allocated bytes (the default), the working set of the process's cgroup, or both.
    ///
    /// Use the cgroup where several processes share one memory limit (pre-fork workers, a
    /// sidecar, a helper process): each then sees what the kernel will hold against them
    /// all. A percentage budget is of the cgroup's limit either way. Requests are charged
    /// what they allocate (jemalloc's per-thread counters) whichever reading is used.
    ///
    /// ```
    /// use tower_admission::{AdmissionConfig, MemoryBudget, MemorySourceKind};
    ///
    /// let config = AdmissionConfig::default()
    ///     .memory_source(MemorySourceKind::Cgroup)
    ///     .memory_budget(MemoryBudget::Percent(80.0));
    /// # let _ = config;
    /// ```
    pub fn memory_source(mut self, source: MemorySourceKind) -> Self {
        self.memory_source = source;
        self
    }

    /// With [`MemorySourceKind::Both`]: the budget on the working set of the process's
    /// cgroup (`ADMISSION_CGROUP_BUDGET`, `75%` of the cgroup's limit by default), while the
    /// memory budget bounds the process's own allocated bytes. Three workers sharing a
    /// container might each take `memory_budget(Percent(25.0))` and keep the default here:
    /// each holds its share, and together they hold the container's.
    pub fn cgroup_budget(mut self, budget: MemoryBudget) -> Self {
        self.cgroup_budget = budget;
        self
    }

    /// Whether, with the [`MemorySourceKind::Cgroup`] source, the processes of the cgroup
    /// share what they have admitted and not yet allocated (`ADMISSION_SHARED_CHARGES`:
    /// `auto`, the default, `on` or `off`; `true` is `auto`). Without it, processes whose
    /// loads start together each see the whole headroom as their own until their allocations
    /// show in the working set. The whole story, and what is trusted, is in
    /// [Running more than one](crate::guide::scaling_out).
    ///
    /// ```
    /// use tower_admission::{AdmissionConfig, SharedCharges};
    ///
    /// // One process per cgroup: nothing to share.
    /// let config = AdmissionConfig::default().shared_charges(SharedCharges::Off);
    /// // Several: fail to start rather than run without sharing.
    /// let config = config.shared_charges(SharedCharges::On);
    /// # let _ = config;
    /// ```
    pub fn shared_charges(mut self, sharing: impl Into<SharedCharges>) -> Self {
        self.shared_charges = sharing.into();
        self
    }

    /// At most this many requests wait (`ADMISSION_QUEUE_CAPACITY`); 0 sheds at once.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity;
        self
    }

    /// The longest a request waits in the queue before a 503 (`ADMISSION_QUEUE_TIMEOUT`).
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// Whether the layer finds how much work it can take below `max_concurrency`
    /// (`ADMISSION_ADAPTIVE_LIMIT`, on by default), or admits a fixed count (off).
    ///
    /// On, each request's CPU demand (the time spent in its own polls, never its wall time)
    /// is learned per cost class, and while the CPU is saturated the CPU work in flight is
    /// held to what the workers finish within one and a half typical requests (rejections name
    /// `limit=cpu`); the runtime's lateness moves a live limit on requests in flight, a guard
    /// against work the layer cannot see. The whole rule is in the
    /// [CPU-bound handlers](crate::guide::cpu_bound) page.
    ///
    /// ```
    /// use tower_admission::AdmissionConfig;
    ///
    /// // A fixed count: exactly 64 in flight at most, whatever the runtime does.
    /// let fixed = AdmissionConfig::default().max_concurrency(64).adaptive_limit(false);
    /// # let _ = fixed;
    /// ```
    pub fn adaptive_limit(mut self, on: bool) -> Self {
        self.adaptive_limit = on;
        self
    }

    /// Observe only (`ADMISSION_OBSERVE_ONLY=on`), for rolling the layer out: it decides as
    /// usual, but admits every request, and counts and logs what it would have rejected
    /// (`admission_would_reject_total{reason, limit}`, [`Snapshot::would_reject`], a
    /// throttled `warn` "request would be shed"). Off by default.
    ///
    /// Nothing waits: a request that would have queued goes at once, and stands for a
    /// waiter until it ends; a request that arrives while as many such requests are in
    /// flight as the queue holds would have been rejected (`queue_full`). Queue timeouts and a
    /// standing queue are not played out: a run that counts no rejections may still have
    /// queued some requests for long. Watch `admission_would_reject_total` against
    /// `admission_admitted_total` under real load before turning shedding on.
    ///
    /// [`Snapshot::would_reject`]: crate::Snapshot::would_reject
    ///
    /// ```
    /// use tower_admission::{Admission, AdmissionConfig, ManualMemory};
    ///
    /// let config = AdmissionConfig::default().observe_only(true);
    /// let admission = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
    /// assert!(admission.to_string().contains("OBSERVE ONLY"));
    /// ```
    pub fn observe_only(mut self, on: bool) -> Self {
        self.observe_only = on;
        self
    }

    /// How late the runtime may run, for reasons request polls do not explain, before the live
    /// concurrency limit falls (`ADMISSION_LATENESS_TARGET`, 10 ms by default): the guard
    /// against CPU work the layer cannot see (`spawn_blocking`, thread pools, other
    /// processes). A request expected to poll twice this long or longer runs on all workers
    /// but one, so that the runtime is never held by long polls on every worker. See
    /// [CPU-bound handlers](crate::guide::cpu_bound).
    pub fn lateness_target(mut self, target: Duration) -> Self {
        self.lateness_target = target;
        self
    }

    /// How long a request held back by a saturated CPU may wait (`ADMISSION_QUEUE_TARGET`:
    /// `auto` by default, a duration, or `off`): one predicted to wait more than twice the
    /// target is rejected as it arrives, one that has waited that long is answered `503`
    /// (`reason=standing_queue`). [`QueueTarget::Auto`] makes the target half the CPU demand
    /// of the request's cost class: it waits at most about one service time. Waiters held
    /// back by memory keep their place; `off` also lets arrivals join a queue for memory that
    /// stands. See [CPU-bound handlers](crate::guide::cpu_bound) and
    /// [Deciding](crate::guide::deciding).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_admission::{AdmissionConfig, QueueTarget};
    ///
    /// let config = AdmissionConfig::default()
    ///     .queue_target(QueueTarget::Fixed(Duration::from_millis(20)));
    /// # let _ = config;
    /// ```
    pub fn queue_target(mut self, target: QueueTarget) -> Self {
        self.queue_target = target;
        self
    }

    /// How often the memory reading is refreshed (`ADMISSION_SAMPLE_INTERVAL`); four times
    /// as often while memory is within 10 % of the budget.
    pub fn sample_interval(mut self, interval: Duration) -> Self {
        self.sample_interval = interval;
        self
    }

    /// What a request of a cost class never seen before is charged, on top of its
    /// `Content-Length`, until its first poll. Default 256 KiB. Once a class has been seen,
    /// its requests are charged the most that requests of the class allocated lately; after
    /// its first poll, a request is charged what it has allocated, where the memory source
    /// counts allocations per thread (jemalloc does).
    pub fn request_estimate(mut self, bytes: u64) -> Self {
        self.request_estimate = bytes;
        self
    }

    /// Gives every admitted request a [`Reservation`](crate::Reservation) in its extensions,
    /// through which its handler can reserve memory before allocating it. Off by default: it
    /// costs an allocation per request (about 400 instructions), so only pools whose handlers
    /// reserve should pay it.
    pub fn reservations(mut self, on: bool) -> Self {
        self.reservations = on;
        self
    }

    /// What the memory limit does while the reading cannot be trusted
    /// (`ADMISSION_MEMORY_FAILURE`, `open` by default): see [`MemoryFailure`].
    pub fn on_memory_failure(mut self, policy: MemoryFailure) -> Self {
        self.memory_failure = policy;
        self
    }

    /// Checks every setting; [`Admission`](crate::Admission) calls it before starting.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                setting,
                reason: reason.to_owned(),
            })
        };
        if self.max_concurrency == 0 {
            return invalid("max_concurrency", "must be at least 1");
        }
        if self.max_connections == Some(0) {
            return invalid("max_connections", "must be at least 1");
        }
        for (setting, budget) in [
            ("memory_budget", self.memory_budget),
            ("cgroup_budget", self.cgroup_budget),
        ] {
            match budget {
                MemoryBudget::Bytes(0) => return invalid(setting, "must be more than 0 bytes"),
                MemoryBudget::Percent(pct) if !(pct > 0.0 && pct <= 100.0) => {
                    return invalid(setting, "a percentage must be in (0, 100]");
                }
                _ => {}
            }
        }
        if self.queue_timeout.is_zero() {
            return invalid("queue_timeout", "must be greater than zero");
        }
        if self.discard.timeout.is_zero() {
            return invalid("discard_timeout", "must be greater than zero");
        }
        if self.lateness_target.is_zero() {
            return invalid("lateness_target", "must be greater than zero");
        }
        if self.queue_target == QueueTarget::Fixed(Duration::ZERO) {
            return invalid(
                "queue_target",
                "must be greater than zero, or QueueTarget::Off",
            );
        }
        if self.retry_after_secs.is_none() && self.retry_after_max_secs == 0 {
            return invalid("retry_after_auto", "the most must be at least 1 second");
        }
        if self.sample_interval.is_zero() {
            return invalid("sample_interval", "must be greater than zero");
        }
        for (setting, rate) in [
            ("min_request_body_rate", self.request_body),
            ("min_response_body_rate", self.response_body),
        ] {
            if rate.bytes_per_second == Some(0) {
                return invalid(
                    setting,
                    "must be at least 1 byte per second (or None for off)",
                );
            }
        }
        if !(0.0..100.0).contains(&self.critical_reserve) {
            return invalid("critical_reserve", "must be a percentage in [0, 100)");
        }
        for (setting, prefixes) in [
            ("bypass", self.bypass.as_slice()),
            ("critical_paths", self.priority_rules.critical.as_slice()),
            ("sheddable_paths", self.priority_rules.sheddable.as_slice()),
        ] {
            if let Some(bad) = prefixes.iter().find(|p| !p.starts_with('/')) {
                return invalid(setting, &format!("prefix {bad:?} must start with '/'"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_values_are_validated() {
        let bad = [
            AdmissionConfig::default().max_concurrency(0),
            AdmissionConfig::default().memory_budget_bytes(0),
            AdmissionConfig::default().memory_budget(MemoryBudget::Percent(0.0)),
            AdmissionConfig::default().memory_budget(MemoryBudget::Percent(f64::NAN)),
            AdmissionConfig::default().queue_timeout(Duration::ZERO),
            AdmissionConfig::default().sample_interval(Duration::ZERO),
            AdmissionConfig::default().bypass(["health"]),
            AdmissionConfig::default().sheddable_paths(["batch"]),
            AdmissionConfig::default().critical_reserve(100.0),
            AdmissionConfig::default().critical_reserve(f64::NAN),
            AdmissionConfig::default().cgroup_budget(MemoryBudget::Bytes(0)),
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(ConfigError::Invalid { .. })),
                "{config:?}"
            );
        }
    }
}
