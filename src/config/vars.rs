//! The environment variables [`AdmissionConfig::from_env`](crate::AdmissionConfig::from_env)
//! reads.

pub(crate) const MAX_CONCURRENCY: &str = "ADMISSION_MAX_CONCURRENCY";
/// The most connections the pool's listener keeps open.
pub(crate) const MAX_CONNECTIONS: &str = "ADMISSION_MAX_CONNECTIONS";
pub(crate) const MEMORY_BUDGET: &str = "ADMISSION_MEMORY_BUDGET";
pub(crate) const QUEUE_CAPACITY: &str = "ADMISSION_QUEUE_CAPACITY";
pub(crate) const QUEUE_TIMEOUT: &str = "ADMISSION_QUEUE_TIMEOUT";
pub(crate) const SAMPLE_INTERVAL: &str = "ADMISSION_SAMPLE_INTERVAL";
pub(crate) const BYPASS: &str = "ADMISSION_BYPASS";
pub(crate) const RETRY_AFTER: &str = "ADMISSION_RETRY_AFTER";
pub(crate) const RETRY_AFTER_MAX: &str = "ADMISSION_RETRY_AFTER_MAX";
/// What an unreadable memory source means (see [`MemoryFailure`](crate::MemoryFailure)).
pub(crate) const MEMORY_FAILURE: &str = "ADMISSION_MEMORY_FAILURE";
/// The minimum rates of admitted requests' bodies (see [`MinDataRate`](crate::MinDataRate)).
pub(crate) const MIN_REQUEST_BODY_RATE: &str = "ADMISSION_MIN_REQUEST_BODY_RATE";
pub(crate) const REQUEST_BODY_GRACE: &str = "ADMISSION_REQUEST_BODY_GRACE";
pub(crate) const MIN_RESPONSE_BODY_RATE: &str = "ADMISSION_MIN_RESPONSE_BODY_RATE";
pub(crate) const RESPONSE_BODY_GRACE: &str = "ADMISSION_RESPONSE_BODY_GRACE";
/// How much of a rejected request's unread body is read and dropped.
pub(crate) const DISCARD_LIMIT: &str = "ADMISSION_DISCARD_LIMIT";
pub(crate) const DISCARD_TIMEOUT: &str = "ADMISSION_DISCARD_TIMEOUT";
/// How requests get a [`Priority`](crate::Priority), and what `Critical` ones keep.
pub(crate) const PRIORITY_HEADER: &str = "ADMISSION_PRIORITY_HEADER";
pub(crate) const DEADLINE_HEADER: &str = "ADMISSION_DEADLINE_HEADER";
pub(crate) const CRITICAL_PATHS: &str = "ADMISSION_CRITICAL_PATHS";
pub(crate) const SHEDDABLE_PATHS: &str = "ADMISSION_SHEDDABLE_PATHS";
pub(crate) const CRITICAL_RESERVE: &str = "ADMISSION_CRITICAL_RESERVE";
/// Which reading the budget applies to (see [`MemorySourceKind`](crate::MemorySourceKind)).
pub(crate) const MEMORY_SOURCE: &str = "ADMISSION_MEMORY_SOURCE";
pub(crate) const CGROUP_BUDGET: &str = "ADMISSION_CGROUP_BUDGET";
pub(crate) const SHARED_CHARGES: &str = "ADMISSION_SHARED_CHARGES";
/// The live concurrency limit, the CPU gate and the wait it allows.
pub(crate) const ADAPTIVE_LIMIT: &str = "ADMISSION_ADAPTIVE_LIMIT";
pub(crate) const LATENESS_TARGET: &str = "ADMISSION_LATENESS_TARGET";
pub(crate) const QUEUE_TARGET: &str = "ADMISSION_QUEUE_TARGET";
/// Count what would be rejected, and admit everything.
pub(crate) const OBSERVE_ONLY: &str = "ADMISSION_OBSERVE_ONLY";

pub(crate) const ALL: [&str; 28] = [
    DEADLINE_HEADER,
    MAX_CONCURRENCY,
    MAX_CONNECTIONS,
    MEMORY_BUDGET,
    QUEUE_CAPACITY,
    QUEUE_TIMEOUT,
    SAMPLE_INTERVAL,
    BYPASS,
    RETRY_AFTER,
    RETRY_AFTER_MAX,
    MEMORY_FAILURE,
    MIN_REQUEST_BODY_RATE,
    REQUEST_BODY_GRACE,
    MIN_RESPONSE_BODY_RATE,
    RESPONSE_BODY_GRACE,
    DISCARD_LIMIT,
    DISCARD_TIMEOUT,
    PRIORITY_HEADER,
    CRITICAL_PATHS,
    SHEDDABLE_PATHS,
    CRITICAL_RESERVE,
    MEMORY_SOURCE,
    CGROUP_BUDGET,
    SHARED_CHARGES,
    ADAPTIVE_LIMIT,
    LATENESS_TARGET,
    QUEUE_TARGET,
    OBSERVE_ONLY,
];
pub(crate) const PREFIX: &str = "ADMISSION_";
