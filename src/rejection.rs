//! Why the layer answered a request itself: [`Reason`], [`Limit`] and [`Rejection`].

/// Why a request was not admitted; with [`Limit`], the labels of `admission_rejected_total`.
///
/// ```
/// use tower_admission::{Limit, Reason};
///
/// let labels: Vec<_> = Reason::ALL.iter().map(|r| r.as_str()).collect();
/// assert_eq!(labels, ["queue_full", "queue_timeout", "too_large", "standing_queue"]);
/// assert_eq!(Limit::Memory.as_str(), "memory");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// The queue was full when the request arrived.
    QueueFull,
    /// The request waited for the whole queue timeout.
    QueueTimeout,
    /// The request declared a `Content-Length` above the whole memory budget.
    TooLarge,
    /// The request would have waited, or had waited, longer than twice the queue target for
    /// a CPU that cannot keep up: by default, twice its service time (see
    /// [`AdmissionConfig::queue_target`](crate::AdmissionConfig::queue_target)).
    StandingQueue,
}

impl Reason {
    /// The label used in metrics and response bodies: `queue_full`, `queue_timeout`,
    /// `too_large` or `standing_queue`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::QueueFull => "queue_full",
            Reason::QueueTimeout => "queue_timeout",
            Reason::TooLarge => "too_large",
            Reason::StandingQueue => "standing_queue",
        }
    }

    /// Every reason, for iterating over counters.
    pub const ALL: [Reason; 4] = [
        Reason::QueueFull,
        Reason::QueueTimeout,
        Reason::TooLarge,
        Reason::StandingQueue,
    ];
}

/// The limit that held a request back (see [`Reason`] for an example).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// Requests in flight.
    Concurrency,
    /// The memory budget.
    Memory,
    /// The live concurrency limit, while it is below `max_concurrency` (see
    /// [`AdmissionConfig::adaptive_limit`](crate::AdmissionConfig::adaptive_limit)).
    Adaptive,
    /// The estimate of a request whose cost is not known yet: it would fit in the memory
    /// budget, but requests of unknown cost go one at a time, and another was in flight.
    Estimate,
    /// The CPU: the workers are saturated, and the CPU work already admitted is what they can
    /// finish soon (see
    /// [`AdmissionConfig::adaptive_limit`](crate::AdmissionConfig::adaptive_limit)).
    Cpu,
}

impl Limit {
    /// The label used in metrics and response bodies: `concurrency`, `memory`, `adaptive`,
    /// `estimate` or `cpu`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Limit::Concurrency => "concurrency",
            Limit::Memory => "memory",
            Limit::Adaptive => "adaptive",
            Limit::Estimate => "estimate",
            Limit::Cpu => "cpu",
        }
    }

    /// Every limit, for iterating over counters.
    pub const ALL: [Limit; 5] = [
        Limit::Concurrency,
        Limit::Memory,
        Limit::Adaptive,
        Limit::Estimate,
        Limit::Cpu,
    ];
}

/// A request the layer answered itself, with why. [`AdmissionBody::rejection`] returns it, so
/// outer layers can tell the layer's 503s from the service's own.
///
/// ```
/// use tower_admission::AdmissionBody;
///
/// fn describe<B>(response: &http::Response<AdmissionBody<B>>) -> Option<String> {
///     let rejection = response.body().rejection()?;
///     Some(format!("{} ({})", rejection.reason().as_str(), rejection.limit().as_str()))
/// }
/// ```
///
/// [`AdmissionBody::rejection`]: crate::AdmissionBody::rejection
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rejection {
    reason: Reason,
    limit: Limit,
}

impl Rejection {
    pub(crate) const fn new(reason: Reason, limit: Limit) -> Self {
        Self { reason, limit }
    }

    /// Why the request was refused.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// Which limit was hit.
    pub fn limit(&self) -> Limit {
        self.limit
    }
}
