//! [`Priority`]: who goes first when not everyone can. How a request is given one is the
//! HTTP side's business (`http_settings.rs`); the queue only sorts by it.

use std::{fmt, str::FromStr};

/// How much a request matters when not every request can be served.
///
/// - **Queue order.** A waiting request of a higher priority is admitted before any of a
///   lower one; within a priority, arrival order holds (with bounded backfill).
/// - **`Sheddable`** is rejected at once, instead of queueing, when the queue is half full or
///   memory stands above the soft limit: it absorbs the shedding.
/// - **`Critical`** alone may use the reserved share of slots and budget
///   ([`AdmissionConfig::critical_reserve`](crate::AdmissionConfig::critical_reserve)), and
///   when the queue is full it takes the place of the newest waiter of a lower priority,
///   which is answered `503` at once.
/// - **Starvation bound.** Once a waiting priority has seen 16 requests of higher priorities
///   admitted while it waited, its oldest waiter goes first; the deadline bounds its wait in
///   any case.
///
/// Requests that bypass admission have no priority: they are never held.
///
/// ```
/// use tower_admission::Priority;
///
/// assert_eq!("sheddable".parse(), Ok(Priority::Sheddable));
/// assert!(Priority::Critical < Priority::Normal, "a higher priority sorts first");
/// assert_eq!(Priority::default(), Priority::Normal);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Priority {
    /// Served first; may use the reserved share. Health-adjacent or paying traffic.
    Critical,
    /// Everything not said otherwise.
    #[default]
    Normal,
    /// Shed first: prefetches, batch jobs, retries that can wait.
    Sheddable,
}

impl Priority {
    /// Every priority, highest first.
    pub const ALL: [Priority; 3] = [Priority::Critical, Priority::Normal, Priority::Sheddable];

    /// The name used in the priority header, metric labels and logs: `critical`, `normal`
    /// or `sheddable`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::Normal => "normal",
            Priority::Sheddable => "sheddable",
        }
    }

    /// 0 for the highest priority: the index of per-priority counters.
    pub(crate) const fn rank(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no [`Priority`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPriority;

impl fmt::Display for UnknownPriority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("expected critical, normal or sheddable")
    }
}

impl std::error::Error for UnknownPriority {}

impl FromStr for Priority {
    type Err = UnknownPriority;

    /// `critical`, `normal` or `sheddable`, in any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|priority| priority.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or(UnknownPriority)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for priority in Priority::ALL {
            assert_eq!(priority.as_str().parse(), Ok(priority));
        }
        assert_eq!(" CRITICAL ".parse(), Ok(Priority::Critical));
        assert_eq!("".parse::<Priority>(), Err(UnknownPriority));
    }
}
