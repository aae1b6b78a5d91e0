//! [`Priority`]: who goes first when not everyone can, and how a request is given one.

use std::{fmt, str::FromStr};

use http::{HeaderName, Request};

use crate::http_settings::{HeadFn, PathPrefixes};

/// How much a request matters when not every request can be served.
///
/// - **Queue order.** A waiting request of a higher priority is admitted before any of a
///   lower one; within a priority, arrival order holds (with bounded backfill).
/// - **`Sheddable`** is refused at once, instead of queueing, when the queue is half full or
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

/// A function that gives requests a priority (see
/// [`AdmissionConfig::prioritize`](crate::AdmissionConfig::prioritize)).
pub(crate) type Prioritize = HeadFn<Priority>;

/// The environment's shorthand: a header that names the priority, else path prefixes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PriorityRules {
    pub(crate) header: Option<HeaderName>,
    pub(crate) critical: PathPrefixes,
    pub(crate) sheddable: PathPrefixes,
}

/// How requests are given a priority: a function of the request's head, or rules.
#[derive(Debug, Clone)]
pub(crate) enum Prioritizer {
    /// Everything is [`Priority::Normal`].
    None,
    Rules(PriorityRules),
    Custom(Prioritize),
}

impl Prioritizer {
    /// `custom` if set, else `rules` unless they say nothing.
    pub(crate) fn new(custom: Option<&Prioritize>, rules: &PriorityRules) -> Self {
        match custom {
            Some(custom) => Prioritizer::Custom(custom.clone()),
            None if *rules == PriorityRules::default() => Prioritizer::None,
            None => Prioritizer::Rules(rules.clone()),
        }
    }

    /// The priority of `request`. A header value that names no priority counts as absent.
    pub(crate) fn of<B>(&self, request: &Request<B>) -> Priority {
        match self {
            Prioritizer::None => Priority::Normal,
            Prioritizer::Custom(prioritize) => prioritize.of(request),
            Prioritizer::Rules(rules) => {
                let named = rules
                    .header
                    .as_ref()
                    .and_then(|name| request.headers().get(name)?.to_str().ok()?.parse().ok());
                let path = request.uri().path();
                named.unwrap_or(if rules.critical.matches(path) {
                    Priority::Critical
                } else if rules.sheddable.matches(path) {
                    Priority::Sheddable
                } else {
                    Priority::Normal
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_the_priority_else_the_path_does() {
        let rules = PriorityRules {
            header: Some(HeaderName::from_static("x-priority")),
            critical: PathPrefixes::new(["/pay"]),
            sheddable: PathPrefixes::new(["/prefetch"]),
        };
        let rules = Prioritizer::new(None, &rules);
        let request = |path: &str, header: Option<&str>| {
            let mut builder = Request::get(path);
            if let Some(value) = header {
                builder = builder.header("x-priority", value);
            }
            builder.body(()).unwrap()
        };
        assert_eq!(rules.of(&request("/pay/now", None)), Priority::Critical);
        assert_eq!(rules.of(&request("/prefetch", None)), Priority::Sheddable);
        assert_eq!(rules.of(&request("/other", None)), Priority::Normal);
        let by_header = rules.of(&request("/pay", Some("Sheddable")));
        assert_eq!(by_header, Priority::Sheddable);
        let unknown = rules.of(&request("/prefetch", Some("urgent")));
        assert_eq!(
            unknown,
            Priority::Sheddable,
            "an unknown value counts as absent"
        );
        let none = Prioritizer::new(None, &PriorityRules::default());
        assert!(matches!(none, Prioritizer::None));
    }

    #[test]
    fn names_round_trip() {
        for priority in Priority::ALL {
            assert_eq!(priority.as_str().parse(), Ok(priority));
        }
        assert_eq!(" CRITICAL ".parse(), Ok(Priority::Critical));
        assert_eq!("".parse::<Priority>(), Err(UnknownPriority));
    }
}
