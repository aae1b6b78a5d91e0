//! Configuration: a builder, `from_env`, parsing and validation.

use std::{ffi::OsString, fmt, time::Duration};

use bytesize::ByteSize;

use crate::{
    controller::CostClass,
    data_rate::MinDataRate,
    http_settings::{Classifier, RequestHead},
};

/// The environment variables [`AdmissionConfig::from_env`] reads.
pub(crate) mod vars {
    pub(crate) const MAX_CONCURRENCY: &str = "ADMISSION_MAX_CONCURRENCY";
    pub(crate) const MEMORY_BUDGET: &str = "ADMISSION_MEMORY_BUDGET";
    pub(crate) const QUEUE_CAPACITY: &str = "ADMISSION_QUEUE_CAPACITY";
    pub(crate) const QUEUE_TIMEOUT: &str = "ADMISSION_QUEUE_TIMEOUT";
    pub(crate) const SAMPLE_INTERVAL: &str = "ADMISSION_SAMPLE_INTERVAL";
    pub(crate) const BYPASS: &str = "ADMISSION_BYPASS";
    pub(crate) const RETRY_AFTER: &str = "ADMISSION_RETRY_AFTER";
    /// What an unreadable memory source means (see [`MemoryFailure`]).
    pub(crate) const MEMORY_FAILURE: &str = "ADMISSION_MEMORY_FAILURE";
    /// The minimum rates of admitted requests' bodies (see [`MinDataRate`]).
    pub(crate) const MIN_REQUEST_BODY_RATE: &str = "ADMISSION_MIN_REQUEST_BODY_RATE";
    pub(crate) const REQUEST_BODY_GRACE: &str = "ADMISSION_REQUEST_BODY_GRACE";
    pub(crate) const MIN_RESPONSE_BODY_RATE: &str = "ADMISSION_MIN_RESPONSE_BODY_RATE";
    pub(crate) const RESPONSE_BODY_GRACE: &str = "ADMISSION_RESPONSE_BODY_GRACE";

    pub(crate) const ALL: [&str; 12] = [
        MAX_CONCURRENCY,
        MEMORY_BUDGET,
        QUEUE_CAPACITY,
        QUEUE_TIMEOUT,
        SAMPLE_INTERVAL,
        BYPASS,
        RETRY_AFTER,
        MEMORY_FAILURE,
        MIN_REQUEST_BODY_RATE,
        REQUEST_BODY_GRACE,
        MIN_RESPONSE_BODY_RATE,
        RESPONSE_BODY_GRACE,
    ];
    pub(crate) const PREFIX: &str = "ADMISSION_";
}

const INTEGER_AT_LEAST_1: &str = "an integer >= 1, such as 256";
const INTEGER_AT_LEAST_0: &str = "an integer >= 0, such as 1024";
const SIZE_FORMS: &str =
    "a size such as 512MiB, 2GB or 1048576 (bytes), a percentage in (0, 100] such as 75%, or off";
const DURATION_FORMS: &str = "a duration greater than zero, such as 250ms or 2s";
const MEMORY_FAILURE_FORMS: &str = "open or closed";
const RATE_FORMS: &str = "bytes per second such as 240, 240B/s or 1KiB/s (at least 1 byte), or off";
const BYPASS_FORMS: &str =
    "comma-separated path prefixes starting with '/', such as /health,/metrics";

/// How much allocated memory the process may hold before requests wait.
///
/// ```
/// use tower_admission::{AdmissionConfig, MemoryBudget};
///
/// let config = AdmissionConfig::default()
///     .apply_vars([("ADMISSION_MEMORY_BUDGET", "60%")])
///     .unwrap();
/// assert_eq!(config.get_memory_budget(), MemoryBudget::Percent(60.0));
/// assert_eq!(MemoryBudget::Bytes(512 << 20).to_string(), "512.0 MiB");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryBudget {
    /// No memory limit: only the concurrency limit applies.
    Off,
    /// A fixed number of bytes.
    Bytes(u64),
    /// A percentage in (0, 100] of the process's cgroup v2 `memory.max`, or of physical
    /// memory when no cgroup limit applies; resolved once, when the admission pool is built.
    Percent(f64),
}

impl fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryBudget::Off => f.write_str("off"),
            MemoryBudget::Bytes(bytes) => write!(f, "{}", ByteSize::b(*bytes).display().iec()),
            MemoryBudget::Percent(pct) => write!(f, "{pct}%"),
        }
    }
}

/// What the memory limit does while the memory reading cannot be trusted: the source's
/// refresh fails, or no refresh has succeeded for 100 sample intervals (at least 1 s).
///
/// Either way the layer logs an error and counts it
/// (`admission_memory_source_errors_total`, `admission_memory_reading_age_seconds`).
///
/// ```
/// use tower_admission::{AdmissionConfig, MemoryFailure};
///
/// let config = AdmissionConfig::default()
///     .apply_vars([("ADMISSION_MEMORY_FAILURE", "closed")])
///     .unwrap();
/// assert_eq!(config.get_memory_failure(), MemoryFailure::Closed);
/// assert_eq!(AdmissionConfig::default().get_memory_failure(), MemoryFailure::Open);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryFailure {
    /// Fail open (the default): the memory limit stops refusing requests until the reading is
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

/// The settings of one admission pool.
///
/// Start from [`AdmissionConfig::default`] (the defaults of the `ADMISSION_*` variables) or
/// [`AdmissionConfig::from_env`], adjust with the builder methods, then build an
/// [`Admission`](crate::Admission), which validates the whole.
///
/// ```
/// use std::time::Duration;
/// use tower_admission::{AdmissionConfig, MemoryBudget};
///
/// let config = AdmissionConfig::default()
///     .max_concurrency(32)
///     .memory_budget(MemoryBudget::Percent(50.0))
///     .queue_capacity(100)
///     .queue_timeout(Duration::from_millis(250));
/// assert_eq!(config.get_max_concurrency(), 32);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AdmissionConfig {
    pub(crate) max_concurrency: usize,
    pub(crate) memory_budget: MemoryBudget,
    pub(crate) queue_capacity: usize,
    pub(crate) queue_timeout: Duration,
    pub(crate) sample_interval: Duration,
    pub(crate) bypass: Vec<String>,
    pub(crate) retry_after_secs: u32,
    pub(crate) request_estimate: u64,
    pub(crate) memory_failure: MemoryFailure,
    pub(crate) classifier: Option<Classifier>,
    pub(crate) reservations: bool,
    pub(crate) request_body: RateSetting,
    pub(crate) response_body: RateSetting,
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
    /// no bypass, `Retry-After: 1`; bodies at least 240 bytes/s each way after a 5 s grace
    /// period.
    fn default() -> Self {
        Self {
            max_concurrency: 256,
            memory_budget: MemoryBudget::Percent(75.0),
            queue_capacity: 1024,
            queue_timeout: Duration::from_secs(1),
            sample_interval: Duration::from_millis(10),
            bypass: Vec::new(),
            retry_after_secs: 1,
            request_estimate: 256 << 10,
            memory_failure: MemoryFailure::Open,
            classifier: None,
            reservations: false,
            request_body: RateSetting::DEFAULT,
            response_body: RateSetting::DEFAULT,
        }
    }
}

impl AdmissionConfig {
    /// The defaults, overridden by the `ADMISSION_*` environment variables.
    ///
    /// Fails on a malformed value, a value that is not UTF-8, or an unknown `ADMISSION_*`
    /// name; the error names the variable, the value and the accepted forms.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::default().apply_env()
    }

    /// `self`, overridden by the `ADMISSION_*` environment variables that are set.
    ///
    /// Use it to change a default that the environment may still override, as the example
    /// server does for its bypass list.
    pub fn apply_env(self) -> Result<Self, ConfigError> {
        self.apply_vars(std::env::vars_os())
    }

    /// `self`, overridden by the `ADMISSION_*` entries of `vars`; other names are ignored.
    ///
    /// ```
    /// use tower_admission::AdmissionConfig;
    ///
    /// let config = AdmissionConfig::default()
    ///     .apply_vars([("ADMISSION_MAX_CONCURRENCY", "8"), ("PATH", "/bin")])
    ///     .unwrap();
    /// assert_eq!(config.get_max_concurrency(), 8);
    ///
    /// let err = AdmissionConfig::default()
    ///     .apply_vars([("ADMISSION_QUEUE_TIMOUT", "2s")])
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("ADMISSION_QUEUE_TIMEOUT"));
    /// ```
    pub fn apply_vars<I, K, V>(mut self, vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<OsString>,
        V: Into<OsString>,
    {
        for (name, value) in vars {
            let name = name.into();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(vars::PREFIX) {
                continue;
            }
            let Some(var) = vars::ALL.iter().copied().find(|known| *known == name) else {
                return Err(ConfigError::UnknownVariable {
                    name: name.to_owned(),
                    suggestion: nearest_known(name),
                });
            };
            let value = value
                .into()
                .into_string()
                .map_err(|raw| ConfigError::NotUnicode {
                    var,
                    value: raw.to_string_lossy().into_owned(),
                })?;
            self.apply_var(var, &value)?;
        }
        Ok(self)
    }

    fn apply_var(&mut self, var: &'static str, value: &str) -> Result<(), ConfigError> {
        let malformed = |expected: &'static str| ConfigError::Malformed {
            var,
            value: value.to_owned(),
            expected,
        };
        let trimmed = value.trim();
        match var {
            vars::MAX_CONCURRENCY => {
                self.max_concurrency = parse_integer(trimmed)
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| malformed(INTEGER_AT_LEAST_1))?;
            }
            vars::MEMORY_BUDGET => {
                self.memory_budget = parse_budget(trimmed).ok_or_else(|| malformed(SIZE_FORMS))?;
            }
            vars::QUEUE_CAPACITY => {
                self.queue_capacity =
                    parse_integer(trimmed).ok_or_else(|| malformed(INTEGER_AT_LEAST_0))?;
            }
            vars::QUEUE_TIMEOUT => {
                self.queue_timeout =
                    parse_duration(trimmed).ok_or_else(|| malformed(DURATION_FORMS))?;
            }
            vars::SAMPLE_INTERVAL => {
                self.sample_interval =
                    parse_duration(trimmed).ok_or_else(|| malformed(DURATION_FORMS))?;
            }
            vars::BYPASS => {
                self.bypass = parse_bypass(trimmed).ok_or_else(|| malformed(BYPASS_FORMS))?;
            }
            vars::RETRY_AFTER => {
                self.retry_after_secs =
                    parse_integer(trimmed).ok_or_else(|| malformed(INTEGER_AT_LEAST_0))?;
            }
            vars::MEMORY_FAILURE => {
                self.memory_failure = match trimmed.to_ascii_lowercase().as_str() {
                    "open" => MemoryFailure::Open,
                    "closed" => MemoryFailure::Closed,
                    _ => return Err(malformed(MEMORY_FAILURE_FORMS)),
                };
            }
            vars::MIN_REQUEST_BODY_RATE => {
                self.request_body.bytes_per_second =
                    parse_rate(trimmed).ok_or_else(|| malformed(RATE_FORMS))?;
            }
            vars::REQUEST_BODY_GRACE => {
                self.request_body.grace =
                    parse_duration(trimmed).ok_or_else(|| malformed(DURATION_FORMS))?;
            }
            vars::MIN_RESPONSE_BODY_RATE => {
                self.response_body.bytes_per_second =
                    parse_rate(trimmed).ok_or_else(|| malformed(RATE_FORMS))?;
            }
            vars::RESPONSE_BODY_GRACE => {
                self.response_body.grace =
                    parse_duration(trimmed).ok_or_else(|| malformed(DURATION_FORMS))?;
            }
            _ => unreachable!("every name in vars::ALL is handled"),
        }
        Ok(())
    }

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
        self.retry_after_secs = secs;
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
        self.classifier = Some(Classifier(std::sync::Arc::new(classify)));
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

    /// The configured minimum request body rate, `None` when off.
    pub fn get_min_request_body_rate(&self) -> Option<MinDataRate> {
        self.request_body.rate()
    }

    /// The configured minimum response body rate, `None` when off.
    pub fn get_min_response_body_rate(&self) -> Option<MinDataRate> {
        self.response_body.rate()
    }

    /// What the memory limit does while the reading cannot be trusted
    /// (`ADMISSION_MEMORY_FAILURE`, `open` by default): see [`MemoryFailure`].
    pub fn on_memory_failure(mut self, policy: MemoryFailure) -> Self {
        self.memory_failure = policy;
        self
    }

    /// The configured concurrency limit.
    pub fn get_max_concurrency(&self) -> usize {
        self.max_concurrency
    }

    /// The configured memory budget, before a percentage is resolved.
    pub fn get_memory_budget(&self) -> MemoryBudget {
        self.memory_budget
    }

    /// The configured memory failure policy.
    pub fn get_memory_failure(&self) -> MemoryFailure {
        self.memory_failure
    }

    /// Checks every setting; [`Admission`](crate::Admission) calls it before starting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                setting,
                reason: reason.to_owned(),
            })
        };
        if self.max_concurrency == 0 {
            return invalid("max_concurrency", "must be at least 1");
        }
        match self.memory_budget {
            MemoryBudget::Bytes(0) => return invalid("memory_budget", "must be more than 0 bytes"),
            MemoryBudget::Percent(pct) if !(pct > 0.0 && pct <= 100.0) => {
                return invalid("memory_budget", "a percentage must be in (0, 100]");
            }
            _ => {}
        }
        if self.queue_timeout.is_zero() {
            return invalid("queue_timeout", "must be greater than zero");
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
        if let Some(bad) = self.bypass.iter().find(|p| !p.starts_with('/')) {
            return invalid("bypass", &format!("prefix {bad:?} must start with '/'"));
        }
        Ok(())
    }
}

fn parse_integer<T: std::str::FromStr>(value: &str) -> Option<T> {
    // `FromStr` for integers accepts a leading '+'; the accepted forms are plain integers.
    if value.starts_with('+') {
        return None;
    }
    value.parse().ok()
}

fn parse_budget(value: &str) -> Option<MemoryBudget> {
    if value.eq_ignore_ascii_case("off") {
        return Some(MemoryBudget::Off);
    }
    if let Some(pct) = value.strip_suffix('%') {
        let pct: f64 = pct.trim_end().parse().ok()?;
        return (pct > 0.0 && pct <= 100.0).then_some(MemoryBudget::Percent(pct));
    }
    parse_size(value).map(MemoryBudget::Bytes)
}

/// Bytes per second, `None` for off.
fn parse_rate(value: &str) -> Option<Option<u64>> {
    if value.eq_ignore_ascii_case("off") {
        return Some(None);
    }
    let size = value.strip_suffix("/s").unwrap_or(value).trim_end();
    if size.starts_with('+') {
        return None;
    }
    parse_size(size).map(Some)
}

/// A size of at least one byte, such as 240, 240B or 1KiB.
fn parse_size(value: &str) -> Option<u64> {
    // bytesize saturates instead of failing on overflow; a saturated value is a typo.
    let bytes = value.parse::<ByteSize>().ok()?.as_u64();
    (bytes > 0 && bytes < u64::MAX).then_some(bytes)
}

fn parse_duration(value: &str) -> Option<Duration> {
    humantime::parse_duration(value)
        .ok()
        .filter(|d| !d.is_zero())
}

fn parse_bypass(value: &str) -> Option<Vec<String>> {
    value
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.starts_with('/').then(|| p.to_owned()))
        .collect()
}

fn nearest_known(name: &str) -> Option<&'static str> {
    vars::ALL
        .iter()
        .copied()
        .map(|known| (strsim::levenshtein(name, known), known))
        .min()
        .filter(|(distance, _)| *distance <= 6)
        .map(|(_, known)| known)
}

/// Why a configuration was refused. Nothing starts with a bad configuration.
///
/// ```
/// use tower_admission::{AdmissionConfig, ConfigError};
///
/// let error = AdmissionConfig::default()
///     .apply_vars([("ADMISSION_QUEUE_TIMEOUT", "soon")])
///     .unwrap_err();
/// assert!(matches!(error, ConfigError::Malformed { var: "ADMISSION_QUEUE_TIMEOUT", .. }));
/// assert_eq!(
///     error.to_string(),
///     "ADMISSION_QUEUE_TIMEOUT=\"soon\" is not valid: expected a duration greater than zero, such as 250ms or 2s"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable holds a value of the wrong form.
    #[error("{var}={value:?} is not valid: expected {expected}")]
    Malformed {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// The accepted forms.
        expected: &'static str,
    },
    /// An environment variable's value is not UTF-8.
    #[error("{var}={value:?} is not valid UTF-8")]
    NotUnicode {
        /// The variable.
        var: &'static str,
        /// Its value, with invalid bytes replaced.
        value: String,
    },
    /// An `ADMISSION_*` variable that this crate does not know: most likely a typo.
    #[error("unknown variable {name}{}; known: {}", suggestion.map(|s| format!(" (did you mean {s}?)")).unwrap_or_default(), vars::ALL.join(", "))]
    UnknownVariable {
        /// The unknown name.
        name: String,
        /// The nearest known name.
        suggestion: Option<&'static str>,
    },
    /// A setting made through the builder is out of range.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The builder setting.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The memory budget cannot be enforced: no usable memory source.
    #[error(
        "the memory budget cannot be enforced: {0}; set ADMISSION_MEMORY_BUDGET=off to use the concurrency limit alone"
    )]
    MemorySource(#[from] crate::MemoryError),
    /// A percentage budget needs the memory limit, which could not be read.
    #[error("cannot resolve a percentage memory budget: {0}")]
    SystemMemory(String),
    /// The sampler thread could not be started.
    #[error("cannot start the memory sampler thread: {0}")]
    Sampler(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(name: &str, value: &str) -> Result<AdmissionConfig, ConfigError> {
        AdmissionConfig::default().apply_vars([(name, value)])
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = AdmissionConfig::default();
        assert_eq!(c.max_concurrency, 256);
        assert_eq!(c.memory_budget, MemoryBudget::Percent(75.0));
        assert_eq!(c.queue_capacity, 1024);
        assert_eq!(c.queue_timeout, Duration::from_secs(1));
        assert_eq!(c.sample_interval, Duration::from_millis(10));
        assert!(c.bypass.is_empty());
        assert_eq!(c.retry_after_secs, 1);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn sizes_in_every_accepted_form() {
        let cases = [
            ("512MiB", MemoryBudget::Bytes(512 << 20)),
            ("2GB", MemoryBudget::Bytes(2_000_000_000)),
            ("2GiB", MemoryBudget::Bytes(2 << 30)),
            ("64KB", MemoryBudget::Bytes(64_000)),
            ("64KiB", MemoryBudget::Bytes(64 << 10)),
            ("1048576", MemoryBudget::Bytes(1_048_576)),
            ("100B", MemoryBudget::Bytes(100)),
            (" 512 MiB ", MemoryBudget::Bytes(512 << 20)),
            ("75%", MemoryBudget::Percent(75.0)),
            ("100%", MemoryBudget::Percent(100.0)),
            ("12.5%", MemoryBudget::Percent(12.5)),
            ("off", MemoryBudget::Off),
            ("OFF", MemoryBudget::Off),
        ];
        for (value, expected) in cases {
            let c = apply(vars::MEMORY_BUDGET, value).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(c.memory_budget, expected, "{value}");
        }
    }

    #[test]
    fn malformed_sizes_name_variable_value_and_forms() {
        for value in [
            "",
            "0",
            "0%",
            "101%",
            "-5",
            "-5%",
            "abc",
            "12XB",
            "nan%",
            "inf",
            "1.5",
            "20000000TiB",
            "99999999999999999999",
            "5 %%",
        ] {
            let err = apply(vars::MEMORY_BUDGET, value).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("ADMISSION_MEMORY_BUDGET"), "{text}");
            assert!(text.contains(&format!("{value:?}")), "{text}");
            assert!(text.contains("512MiB"), "{text}");
        }
    }

    #[test]
    fn integers() {
        assert_eq!(
            apply(vars::MAX_CONCURRENCY, "8").unwrap().max_concurrency,
            8
        );
        assert_eq!(apply(vars::QUEUE_CAPACITY, "0").unwrap().queue_capacity, 0);
        assert_eq!(apply(vars::RETRY_AFTER, "0").unwrap().retry_after_secs, 0);
        for value in ["0", "-1", "+3", "1.5", "ten", "", "99999999999999999999999"] {
            let err = apply(vars::MAX_CONCURRENCY, value).unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Malformed {
                        var: vars::MAX_CONCURRENCY,
                        ..
                    }
                ),
                "{value}"
            );
        }
        for value in ["-1", "x", "4294967296"] {
            assert!(apply(vars::RETRY_AFTER, value).is_err(), "{value}");
            assert!(apply(vars::QUEUE_CAPACITY, "-1").is_err());
        }
    }

    #[test]
    fn durations() {
        let c = apply(vars::QUEUE_TIMEOUT, "250ms").unwrap();
        assert_eq!(c.queue_timeout, Duration::from_millis(250));
        let c = apply(vars::SAMPLE_INTERVAL, "2s").unwrap();
        assert_eq!(c.sample_interval, Duration::from_secs(2));
        for value in ["0s", "0ms", "10", "-1s", "soon", ""] {
            let err = apply(vars::QUEUE_TIMEOUT, value).unwrap_err();
            assert!(err.to_string().contains("250ms"), "{err}");
        }
    }

    #[test]
    fn bypass_lists() {
        let c = apply(vars::BYPASS, "/health, /metrics,").unwrap();
        assert_eq!(c.bypass, ["/health", "/metrics"]);
        assert!(apply(vars::BYPASS, "").unwrap().bypass.is_empty());
        assert!(apply(vars::BYPASS, "health").is_err());
    }

    #[test]
    fn memory_failure_policies() {
        let policy = |value| apply(vars::MEMORY_FAILURE, value).map(|c| c.memory_failure);
        assert_eq!(policy("open").unwrap(), MemoryFailure::Open);
        assert_eq!(policy(" Closed ").unwrap(), MemoryFailure::Closed);
        for value in ["", "shut", "0", "open,closed"] {
            let text = policy(value).unwrap_err().to_string();
            assert!(text.contains("ADMISSION_MEMORY_FAILURE"), "{text}");
            assert!(text.contains("open or closed"), "{text}");
        }
    }

    #[test]
    fn unknown_names_suggest_the_nearest() {
        let err = apply("ADMISSION_MAX_CONCURENCY", "3").unwrap_err();
        assert_eq!(
            err,
            ConfigError::UnknownVariable {
                name: "ADMISSION_MAX_CONCURENCY".into(),
                suggestion: Some(vars::MAX_CONCURRENCY),
            }
        );
        assert!(
            err.to_string()
                .contains("did you mean ADMISSION_MAX_CONCURRENCY?")
        );
        let err = apply("ADMISSION_", "3").unwrap_err();
        assert!(matches!(err, ConfigError::UnknownVariable { .. }));
    }

    #[test]
    fn other_variables_are_ignored() {
        let c = AdmissionConfig::default()
            .apply_vars([("HOME", "/root"), ("admission_max_concurrency", "x")])
            .unwrap();
        assert_eq!(c, AdmissionConfig::default());
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_values_are_named() {
        use std::os::unix::ffi::OsStringExt;
        let value = OsString::from_vec(vec![b'1', 0xff]);
        let err = AdmissionConfig::default()
            .apply_vars([(OsString::from(vars::MAX_CONCURRENCY), value)])
            .unwrap_err();
        assert!(matches!(
            err,
            ConfigError::NotUnicode {
                var: vars::MAX_CONCURRENCY,
                ..
            }
        ));
    }

    proptest::proptest! {
        /// Whatever a variable holds, parsing never panics, and a refusal names the variable.
        #[test]
        fn any_value_is_parsed_or_refused_by_name(
            index in 0..vars::ALL.len(),
            value in proptest::prop_oneof![
                ".*",
                "[0-9]{0,25}",
                "-?[0-9]{1,20}(\\.[0-9]{1,5})?( ?([kKmMgGtTpPeE]i?[bB]|[bB]|%|ms|s|h|x))?",
                "(/[a-z]{0,5},?){0,4}",
            ],
        ) {
            let var = vars::ALL[index];
            match AdmissionConfig::default().apply_vars([(var, value.as_str())]) {
                Ok(config) => proptest::prop_assert!(
                    config.validate().is_ok(),
                    "{var}={value:?} parsed into an invalid config"
                ),
                Err(error) => proptest::prop_assert!(
                    error.to_string().contains(var),
                    "{var}={value:?}: {error}"
                ),
            }
        }

        /// Bytes that are not UTF-8 are refused by name, whatever else they hold.
        #[cfg(unix)]
        #[test]
        fn any_bytes_are_refused_by_name_when_not_utf8(
            index in 0..vars::ALL.len(),
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40),
        ) {
            use std::os::unix::ffi::OsStringExt;
            let var = vars::ALL[index];
            let utf8 = std::str::from_utf8(&bytes).is_ok();
            let result = AdmissionConfig::default()
                .apply_vars([(OsString::from(var), OsString::from_vec(bytes))]);
            if let Err(error) = result {
                proptest::prop_assert!(error.to_string().contains(var));
            } else {
                proptest::prop_assert!(utf8);
            }
        }
    }

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
        ];
        for config in bad {
            assert!(
                matches!(config.validate(), Err(ConfigError::Invalid { .. })),
                "{config:?}"
            );
        }
    }
}
