//! Configuration: the builder and its validation. The environment's `ADMISSION_*` variables
//! are read in [`env`], the budget is resolved in [`budget`], errors are in [`error`], and
//! the effective configuration is described in [`describe`].

mod budget;
mod describe;
mod env;
mod error;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Response};

use crate::{
    controller::{CostClass, Priority},
    data_rate::MinDataRate,
    http_settings::{Classifier, PathPrefixes, Prioritize, PriorityRules, RequestHead, Shaper},
    memory::MemoryFailure,
    memory::MemorySourceKind,
    rejection::Rejection,
};

pub use budget::MemoryBudget;
pub(crate) use budget::resolve_budget;
pub(crate) use describe::describe;
pub use error::ConfigError;

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
    pub(crate) priority_rules: PriorityRules,
    pub(crate) prioritize: Option<Prioritize>,
    /// The percentage of slots and budget only `Critical` requests may use.
    pub(crate) critical_reserve: f64,
    pub(crate) memory_source: MemorySourceKind,
    /// With the `both` source: the budget on the cgroup's working set.
    pub(crate) cgroup_budget: MemoryBudget,
    /// Whether the live concurrency limit finds itself below `max_concurrency`.
    pub(crate) adaptive_limit: bool,
    /// Whether the layer only counts what it would refuse, and admits everything.
    pub(crate) observe_only: bool,
    /// The runtime lateness above which the live concurrency limit falls.
    pub(crate) lateness_target: Duration,
    /// The sojourn above which the queue stands; `None`: never shed for standing.
    pub(crate) queue_target: Option<Duration>,
}

/// One direction's minimum rate as configured: the rate may be off while a grace is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateSetting {
    pub(crate) bytes_per_second: Option<u64>,
    pub(crate) grace: Duration,
}

impl RateSetting {
    /// Kestrel's defaults: 240 bytes/s after a 5 s grace period.
    const DEFAULT: Self = Self {
        bytes_per_second: Some(240),
        grace: Duration::from_secs(5),
    };

    pub(crate) fn rate(&self) -> Option<MinDataRate> {
        self.bytes_per_second
            .map(|bytes_per_second| MinDataRate::new(bytes_per_second, self.grace))
    }

    fn set(&mut self, rate: Option<MinDataRate>) {
        self.bytes_per_second = rate.map(|rate| rate.bytes_per_second());
        if let Some(rate) = rate {
            self.grace = rate.grace();
        }
    }
}

impl Default for AdmissionConfig {
    /// The defaults of the `ADMISSION_*` variables (README's configuration table): 256 in
    /// flight, 75 % of memory, 1024 waiters, a 1 s queue timeout, a 10 ms sample interval,
    /// no bypass, `Retry-After` computed (at most 30 s); bodies at least 240 bytes/s each way after a 5 s grace
    /// period.
    fn default() -> Self {
        Self {
            max_concurrency: 256,
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
            priority_rules: PriorityRules::default(),
            prioritize: None,
            critical_reserve: 0.0,
            memory_source: MemorySourceKind::Jemalloc,
            cgroup_budget: MemoryBudget::Percent(75.0),
            adaptive_limit: true,
            observe_only: false,
            lateness_target: Duration::from_millis(10),
            queue_target: Some(DEFAULT_QUEUE_TARGET),
        }
    }
}

/// `ADMISSION_QUEUE_TARGET`'s default (5 ms), as CoDel's on server queues.
const DEFAULT_QUEUE_TARGET: Duration = Duration::from_millis(5);

impl AdmissionConfig {
    /// At most this many requests in flight (`ADMISSION_MAX_CONCURRENCY`); at least 1.
    /// Values above 1,048,575 (the width of the in-flight counter) act as 1,048,575.
    pub fn max_concurrency(mut self, max: usize) -> Self {
        self.max_concurrency = max;
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

    /// Whether the concurrency limit finds itself below `max_concurrency`
    /// (`ADMISSION_ADAPTIVE_LIMIT`, on by default), or is fixed at it (off).
    ///
    /// A task on the runtime wakes every 5 ms and a thread outside it reads how late it
    /// runs. While that lateness stays above the [target](Self::lateness_target), every
    /// request waiting for I/O (a bypassed health check too) waits as long, and more
    /// requests in flight only add to it: after two late windows of 50 ms in a row, the live
    /// limit falls to what was in use, scaled by target over lateness (by a tenth to a half).
    /// It also falls by a tenth when, twice in a row, most timed requests took more than twice
    /// as long, from admission to response head, as the least their cost class took lately
    /// (and more than half the target beyond it). While the
    /// runtime is on time and the limit is reached, it rises again (by a quarter each 50 ms,
    /// by one near the target or while many requests are slow), up to `max_concurrency`. It
    /// starts at twice the machine's cores (16 at least) and doubles each 50 ms until it first falls. Requests that wait on I/O or timers never make the
    /// runtime late, so for them the limit stays at the ceiling; CPU-bound handlers find a
    /// limit near the number of worker threads. While the runtime runs late, admitted
    /// requests also yield once before their handler runs, so the workers poll for I/O.
    ///
    /// ```
    /// use tower_admission::AdmissionConfig;
    ///
    /// // The old behaviour: exactly 64 in flight at most, whatever the runtime does.
    /// let fixed = AdmissionConfig::default().max_concurrency(64).adaptive_limit(false);
    /// # let _ = fixed;
    /// ```
    pub fn adaptive_limit(mut self, on: bool) -> Self {
        self.adaptive_limit = on;
        self
    }

    /// Observe only (`ADMISSION_OBSERVE_ONLY=on`), for rolling the layer out: it decides as
    /// usual, but admits every request, and counts and logs what it would have refused
    /// (`admission_would_reject_total{reason, limit}`, [`Snapshot::would_reject`], a
    /// throttled `warn` "request would be shed"). Off by default.
    ///
    /// Nothing waits: a request that would have queued goes at once, and stands for a
    /// waiter until it ends; a request that arrives while as many such requests are in
    /// flight as the queue holds would have been refused (`queue_full`). Queue timeouts and a
    /// standing queue are not played out: a run that counts no refusals may still have
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

    /// How late the runtime may run before the live concurrency limit falls
    /// (`ADMISSION_LATENESS_TARGET`, 10 ms by default). A lower target keeps health checks
    /// more prompt at the cost of fewer CPU-bound requests at once. Handlers whose single
    /// polls run longer than the target make the runtime late whenever every worker runs one:
    /// the limit then falls until a worker stays free, trading throughput for a prompt
    /// heartbeat; a target above those polls trades back.
    pub fn lateness_target(mut self, target: Duration) -> Self {
        self.lateness_target = target;
        self
    }

    /// The queue's target wait (`ADMISSION_QUEUE_TARGET`, 5 ms by default), or `None` to
    /// never shed a standing queue.
    ///
    /// Once the [live limit](Self::adaptive_limit) has fallen below `max_concurrency` (the
    /// runtime cannot keep up), a queue that has not emptied for 100 ms stands: it only delays
    /// everyone, as when a closed loop of clients keeps it full and every request waits the
    /// whole queue for a core. Waiters that the live limit then holds back for twice the
    /// target are answered `503` (`reason=standing_queue`, `limit=adaptive`), so those served
    /// wait about the target. Waiters held back by memory keep their place (a large request
    /// waiting for room is not a standing queue), and so does everyone while the limit is at
    /// its ceiling (slots held by long requests or streams) or still in its slow start:
    /// they wait up to the queue timeout, as before.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_admission::AdmissionConfig;
    ///
    /// let config = AdmissionConfig::default().queue_target(Some(Duration::from_millis(20)));
    /// # let _ = config;
    /// ```
    pub fn queue_target(mut self, target: Option<Duration>) -> Self {
        self.queue_target = target;
        self
    }

    /// How often the memory reading is refreshed (`ADMISSION_SAMPLE_INTERVAL`); four times
    /// as often while memory is within 10 % of the budget.
    pub fn sample_interval(mut self, interval: Duration) -> Self {
        self.sample_interval = interval;
        self
    }

    /// Path prefixes that skip admission (`ADMISSION_BYPASS`), such as `/health`.
    ///
    /// A prefix matches whole path segments: `/health` matches `/health` and
    /// `/health/live`, not `/healthcare`.
    pub fn bypass<I, P>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.bypass = prefixes.into_iter().map(Into::into).collect();
        self
    }

    /// Seconds announced in `Retry-After` on a 503 (`ADMISSION_RETRY_AFTER`).
    pub fn retry_after_secs(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// `Retry-After` computed for each shed request (`ADMISSION_RETRY_AFTER=auto`,
    /// `ADMISSION_RETRY_AFTER_MAX`), the default with a most of 30 s: the waiters ahead of it
    /// over the rate at which the pool admitted requests lately while saturated, spread over
    /// ±25 % so that shed clients do not return together, within 1 to `max_secs` seconds
    /// (1 s until the pool has first been saturated).
    pub fn retry_after_auto(mut self, max_secs: u32) -> Self {
        self.retry_after_secs = None;
        self.retry_after_max_secs = max_secs;
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

    /// Puts requests into cost classes with `classify`, instead of by method and path.
    ///
    /// Requests of one class share what the layer learns of their cost: until its first
    /// poll, a request is charged the most its class has allocated lately. Use it where cost
    /// depends on something other than the route, such as a query parameter or a header.
    /// Keep the number of classes small: the table holds 64, and the rest share one.
    ///
    /// ```
    /// use tower_admission::{AdmissionConfig, CostClass};
    ///
    /// // Thumbnails cost little, full-size renders a lot, on the same route.
    /// let config = AdmissionConfig::default().classify(|head| {
    ///     let full = head.uri().query().is_some_and(|q| q.contains("size=full"));
    ///     CostClass::new((head.uri().path(), full))
    /// });
    /// # let _ = config;
    /// ```
    pub fn classify(
        mut self,
        classify: impl Fn(&RequestHead<'_>) -> CostClass + Send + Sync + 'static,
    ) -> Self {
        self.classifier = Some(Classifier::new(classify));
        self
    }

    /// Answers the layer's refusals (what would be a `503` or a `413`, see [`Rejection`])
    /// with what `shape` returns, instead of the layer's own plain-text or gRPC answers.
    ///
    /// `shape` is given the rejection, the request's head and the `Retry-After` the layer
    /// would send; its response goes out as it is (add `Retry-After` yourself if you want
    /// it), and [`AdmissionBody::rejection`](crate::AdmissionBody::rejection) still tells it
    /// from the service's own answers. It runs on the path that must stay cheapest under
    /// overload: keep it to building a small response. A `408` for a request body too slow
    /// is not a refusal, and keeps the layer's answer.
    ///
    /// [`Rejection`]: crate::Rejection
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Response, StatusCode, header};
    /// use tower_admission::AdmissionConfig;
    ///
    /// // JSON problem details, as the rest of this API answers.
    /// let config = AdmissionConfig::default().shape_rejections(|rejection, _head, retry_after| {
    ///     let body = format!(
    ///         r#"{{"type":"overloaded","reason":"{}","limit":"{}"}}"#,
    ///         rejection.reason().as_str(),
    ///         rejection.limit().as_str(),
    ///     );
    ///     Response::builder()
    ///         .status(StatusCode::SERVICE_UNAVAILABLE)
    ///         .header(header::CONTENT_TYPE, "application/problem+json")
    ///         .header(header::RETRY_AFTER, retry_after.as_secs())
    ///         .body(Bytes::from(body))
    ///         .unwrap()
    /// });
    /// # let _ = config;
    /// ```
    pub fn shape_rejections(
        mut self,
        shape: impl Fn(&Rejection, &RequestHead<'_>, Duration) -> Response<Bytes>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.shaper = Some(Shaper::new(shape));
        self
    }

    /// Gives each request a [`Priority`] with `prioritize`, instead of by the priority header
    /// and path prefixes ([`priority_header`](Self::priority_header),
    /// [`critical_paths`](Self::critical_paths), [`sheddable_paths`](Self::sheddable_paths)).
    ///
    /// ```
    /// use tower_admission::{AdmissionConfig, Priority};
    ///
    /// // Checkout is what pays; recommendations can wait for a quieter moment.
    /// let config = AdmissionConfig::default().prioritize(|head| match head.uri().path() {
    ///     path if path.starts_with("/checkout") => Priority::Critical,
    ///     path if path.starts_with("/recommendations") => Priority::Sheddable,
    ///     _ => Priority::Normal,
    /// });
    /// # let _ = config;
    /// ```
    pub fn prioritize(
        mut self,
        prioritize: impl Fn(&RequestHead<'_>) -> Priority + Send + Sync + 'static,
    ) -> Self {
        self.prioritize = Some(Prioritize::new(prioritize));
        self
    }

    /// A request header whose value names the request's priority (`critical`, `normal` or
    /// `sheddable`; `ADMISSION_PRIORITY_HEADER`). A missing or unknown value leaves the
    /// priority to the path prefixes. Clients can set any header: let a proxy you trust set
    /// this one, or strip it at the edge.
    ///
    /// ```
    /// use http::HeaderName;
    /// use tower_admission::AdmissionConfig;
    ///
    /// let config = AdmissionConfig::default()
    ///     .priority_header(HeaderName::from_static("x-priority"))
    ///     .critical_paths(["/checkout"])
    ///     .sheddable_paths(["/prefetch", "/reports/"]);
    /// # let _ = config;
    /// ```
    pub fn priority_header(mut self, name: HeaderName) -> Self {
        self.priority_rules.header = Some(name);
        self
    }

    /// Path prefixes of [`Priority::Critical`] requests (`ADMISSION_CRITICAL_PATHS`),
    /// matching whole segments as [`bypass`](Self::bypass) does.
    pub fn critical_paths<I, P>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.priority_rules.critical = PathPrefixes::new(prefixes);
        self
    }

    /// Path prefixes of [`Priority::Sheddable`] requests (`ADMISSION_SHEDDABLE_PATHS`).
    pub fn sheddable_paths<I, P>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.priority_rules.sheddable = PathPrefixes::new(prefixes);
        self
    }

    /// The percentage of slots and of the memory budget that only [`Priority::Critical`]
    /// requests may use (`ADMISSION_CRITICAL_RESERVE`), in `[0, 100)`; 0 by default. At
    /// least one slot is left to the others.
    pub fn critical_reserve(mut self, percent: f64) -> Self {
        self.critical_reserve = percent;
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

    /// The least rate at which an admitted request's client must send its body
    /// (`ADMISSION_MIN_REQUEST_BODY_RATE`, `ADMISSION_REQUEST_BODY_GRACE`); `None` for no
    /// minimum. Default 240 bytes/s after 5 s, as Kestrel's.
    ///
    /// Only time the handler spends waiting for body data counts. Below the rate, the body
    /// fails with [`TooSlow`](crate::TooSlow), the layer answers `408 Request Timeout` with
    /// `Connection: close`, and the request's slot and memory go back at once: a client
    /// that trickles its body cannot hold them for long. Meanwhile, once the handler has
    /// waited 250 ms for body data, a body is charged what has arrived plus what its pace
    /// brings within the grace period, not its whole declared length.
    pub fn min_request_body_rate(mut self, rate: impl Into<Option<MinDataRate>>) -> Self {
        self.request_body.set(rate.into());
        self
    }

    /// Whether the [minimum request body rate](Self::min_request_body_rate) cuts off gRPC
    /// requests' bodies too; off by default.
    ///
    /// A gRPC client- or bidi-streaming call sends a message when it has one, seconds or
    /// minutes apart: it is a long-lived stream, not a slow upload, and the rate would cut it
    /// off after the grace period. (ASP.NET Core's gRPC server, whose Kestrel defaults the
    /// rates follow, turns the rate off for such calls likewise.) A gRPC request, told by its
    /// `content-type: application/grpc…` (a unary call cannot be told from a stream by its
    /// head), is then never cut off, but its charge still follows what arrived: a declared
    /// body that comes slowly is charged what came, as any other.
    ///
    /// ```
    /// use tower_admission::{Admission, AdmissionConfig, ManualMemory};
    ///
    /// let streams = "gRPC streams: not cut off";
    /// let default = Admission::with_memory_source(AdmissionConfig::default(), ManualMemory::new(0));
    /// assert!(default.unwrap().to_string().contains(streams));
    /// // Unary calls only, and clients that must keep up: hold gRPC bodies to the rate too.
    /// let config = AdmissionConfig::default().min_rate_for_streams(true);
    /// let held = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
    /// assert!(!held.to_string().contains(streams));
    /// ```
    pub fn min_rate_for_streams(mut self, on: bool) -> Self {
        self.streams_min_rate = on;
        self
    }

    /// The least rate at which an admitted request's client must take its response body
    /// (`ADMISSION_MIN_RESPONSE_BODY_RATE`, `ADMISSION_RESPONSE_BODY_GRACE`); `None` for no
    /// minimum. Default 240 bytes/s after 5 s, as Kestrel's.
    ///
    /// Each frame the body hands the server must be taken within the grace period or its
    /// size at the rate, whichever is longer. Time the body waits for its handler does not
    /// count. Below the rate, the body ends with [`TooSlow`](crate::TooSlow) (hyper closes the
    /// connection) and the request's slot and memory go back, even while the server, its
    /// buffers full, does not ask for more. The server's and the kernel's buffers hide a
    /// client's pace for as long as they take to fill: a response that fits in them is never
    /// cut off, and its permit goes back once it is handed over.
    pub fn min_response_body_rate(mut self, rate: impl Into<Option<MinDataRate>>) -> Self {
        self.response_body.set(rate.into());
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
        if self.lateness_target.is_zero() {
            return invalid("lateness_target", "must be greater than zero");
        }
        if self.queue_target.is_some_and(|t| t.is_zero()) {
            return invalid("queue_target", "must be greater than zero, or None for off");
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
