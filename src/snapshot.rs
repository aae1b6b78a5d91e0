//! A lock-free view of one admission pool's live figures.

use crate::{
    data_rate::Direction,
    priority::Priority,
    rejection::Discard,
    rejection::{Limit, Reason},
};

/// The live figures of an admission pool, read without taking its lock.
///
/// ```
/// use tower_admission::{Admission, AdmissionConfig, Limit, ManualMemory, Reason};
///
/// let admission = Admission::with_memory_source(
///     AdmissionConfig::default().memory_budget_bytes(1 << 30),
///     ManualMemory::new(4096),
/// )
/// .unwrap();
/// let snapshot = admission.snapshot();
/// assert_eq!(snapshot.in_flight, 0);
/// assert_eq!(snapshot.memory_bytes, 4096);
/// assert_eq!(snapshot.rejected(Reason::QueueFull, Limit::Memory), 0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Snapshot {
    /// Requests admitted and not yet finished (including their response bodies).
    pub in_flight: usize,
    /// Requests waiting in the queue.
    pub queued: usize,
    /// The memory source's last reading.
    pub memory_bytes: u64,
    /// Bytes charged to the requests in flight: each one's estimate, or what its polls have
    /// allocated when that is more.
    pub charged_bytes: u64,
    /// Bytes held outside handlers, counted as memory spoken for beside the charges: each
    /// queued request's connection and head, each connection discarding a rejected request's
    /// body, each connection the pool's listener keeps open.
    pub held_bytes: u64,
    /// Whether the pool shares charges with the other processes of its memory cgroup (see
    /// [`SharedCharges`](crate::SharedCharges)).
    pub shared_charges: bool,
    /// The other processes of the cgroup whose records count here.
    pub neighbours: usize,
    /// What they have admitted and not yet allocated, counted as spoken for here (at most
    /// the budget).
    pub neighbour_bytes: u64,
    /// The memory budget, `None` when off.
    pub memory_budget_bytes: Option<u64>,
    /// The concurrency limit's ceiling.
    pub max_concurrency: usize,
    /// The live concurrency limit: `max_concurrency`, or less while the runtime runs late.
    pub concurrency_limit: usize,
    /// How late the runtime's heartbeat ran at the last reading (zero before the first
    /// request, and with the adaptive limit off).
    pub runtime_lateness: std::time::Duration,
    /// Whether the CPU is saturated: only then does the CPU gate hold requests back (see
    /// [`AdmissionConfig::adaptive_limit`](crate::AdmissionConfig::adaptive_limit)).
    pub cpu_saturated: bool,
    /// The workers the CPU gate counts: the runtime's, or fewer under a CPU quota.
    pub cpu_workers: usize,
    /// The CPU work charged to the requests in flight.
    pub cpu_charged: std::time::Duration,
    /// The CPU work the gate admits at once while the CPU is saturated.
    pub cpu_capacity: std::time::Duration,
    /// What each cost class has shown of its cost, for the classes the table holds.
    pub classes: Vec<ClassCost>,
    /// The queue's capacity.
    pub queue_capacity: usize,
    /// Whether the pool only observes: it admits everything (see
    /// [`AdmissionConfig::observe_only`](crate::AdmissionConfig::observe_only)).
    pub observe_only: bool,
    /// Requests admitted since start.
    pub admitted: u64,
    /// Of those, admitted over the memory budget because nothing else was in flight.
    pub admitted_over_budget: u64,
    /// Memory source refreshes that failed since start.
    pub memory_source_errors: u64,
    /// Time since the memory source last refreshed successfully.
    pub memory_reading_age: std::time::Duration,
    /// Bytes of rejected requests' bodies read and dropped since start, so that their clients
    /// could read the answer.
    pub discarded_bytes: u64,
    /// Waiters that left at their client's deadline (`grpc-timeout`, or the header
    /// [`AdmissionConfig::deadline_header`](crate::AdmissionConfig::deadline_header) names),
    /// before the queue timeout: answered `503` (`queue_timeout`) rather than admitted for a
    /// client that had left.
    pub client_deadlines: u64,
    /// Connections open, as the pool's [`listener`](crate::Admission::listener) counts them
    /// (0 without one); each holds what an open connection holds in the memory spoken for.
    pub connections: usize,
    /// The most connections the listener keeps open (`ADMISSION_MAX_CONNECTIONS`).
    pub max_connections: Option<usize>,
    /// Times the listener stopped accepting, for want of memory or at the maximum.
    pub accept_pauses: u64,
    /// Idle connections the listener asked to close while memory was short.
    pub idle_connections_closed: u64,
    pub(crate) rejected: [[u64; Limit::ALL.len()]; Reason::ALL.len()],
    pub(crate) would_reject: [[u64; Limit::ALL.len()]; Reason::ALL.len()],
    pub(crate) admitted_by: [u64; 3],
    pub(crate) rejected_by: [[u64; Reason::ALL.len()]; 3],
    pub(crate) cut_off: [u64; 2],
    pub(crate) discards: [u64; Discard::ALL.len()],
}

/// What requests of one cost class cost lately (see [`Snapshot::classes`]).
///
/// ```
/// use tower_admission::{Admission, AdmissionConfig, ManualMemory};
///
/// let admission = Admission::with_memory_source(AdmissionConfig::default(), ManualMemory::new(0))
///     .unwrap();
/// for class in admission.snapshot().classes {
///     println!("{}: {:?} of CPU, {:?} bytes at most", class.name, class.cpu, class.peak_bytes);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassCost {
    /// The first request of the class the table saw, as `METHOD /path` (by default a class
    /// is its method and path); `other` for the classes the table had no room for.
    pub name: String,
    /// The CPU time one request demands (time spent in its polls), once measured.
    pub cpu: Option<std::time::Duration>,
    /// The most a request allocated beyond its `Content-Length` lately, once measured.
    pub peak_bytes: Option<u64>,
}

impl Snapshot {
    /// Requests rejected since start for `reason` at `limit`.
    pub fn rejected(&self, reason: Reason, limit: Limit) -> u64 {
        self.rejected[reason as usize][limit as usize]
    }

    /// Requests admitted since start that would have been rejected for `reason` at `limit`
    /// (observing only: see
    /// [`AdmissionConfig::observe_only`](crate::AdmissionConfig::observe_only)).
    pub fn would_reject(&self, reason: Reason, limit: Limit) -> u64 {
        self.would_reject[reason as usize][limit as usize]
    }

    /// Requests of `priority` admitted since start.
    pub fn admitted_with(&self, priority: Priority) -> u64 {
        self.admitted_by[priority.rank()]
    }

    /// Requests of `priority` rejected since start for `reason` (a
    /// [`Reservation`](crate::Reservation) rejected is counted in
    /// [`rejected`](Self::rejected) only).
    pub fn rejected_with(&self, priority: Priority, reason: Reason) -> u64 {
        self.rejected_by[priority.rank()][reason as usize]
    }

    /// Admitted requests cut off since start because their client sent (`Request`) or read
    /// (`Response`) the body slower than the minimum rate.
    pub fn cut_off(&self, direction: Direction) -> u64 {
        self.cut_off[direction as usize]
    }

    /// Rejected requests whose unread body was dealt with as `outcome` since start.
    pub fn discards(&self, outcome: Discard) -> u64 {
        self.discards[outcome as usize]
    }

    /// Requests rejected since start, for any reason.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().flatten().sum()
    }
}
