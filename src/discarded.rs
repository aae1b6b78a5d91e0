//! How discarding a refused request's body ended (see [`discard`](crate::discard)), counted.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// How the layer dealt with the unread body of a request it refused; the label of
/// `admission_discards_total`.
///
/// ```
/// use tower_admission::Discard;
///
/// let labels: Vec<_> = Discard::ALL.iter().map(|d| d.as_str()).collect();
/// assert_eq!(
///     labels,
///     ["whole", "limit", "timeout", "too_slow", "gone", "skipped", "no_room"]
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Discard {
    /// Read to its end and dropped: the client read the answer, and the connection serves on.
    Whole,
    /// Longer than the discard limit: answered with `Connection: close` once the limit was
    /// read.
    Limit,
    /// Still coming at the discard timeout: answered with `Connection: close`.
    Timeout,
    /// Sent slower than the minimum request body rate: answered with `Connection: close`.
    TooSlow,
    /// The client went away, or the body failed.
    Gone,
    /// Not read at all, the answer sent at once with `Connection: close`: declared longer than
    /// the limit, discarding off, or the client waiting for `100 Continue`.
    Skipped,
    /// Not read at all, the answer sent at once with `Connection: close`: no room for the
    /// connection's buffers in the memory budget, or in the share of it that discards may
    /// hold together (an eighth).
    NoRoom,
}

impl Discard {
    /// The label used in metrics: `whole`, `limit`, `timeout`, `too_slow`, `gone`, `skipped`
    /// or `no_room`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Discard::Whole => "whole",
            Discard::Limit => "limit",
            Discard::Timeout => "timeout",
            Discard::TooSlow => "too_slow",
            Discard::Gone => "gone",
            Discard::Skipped => "skipped",
            Discard::NoRoom => "no_room",
        }
    }

    /// Every outcome, for iterating over counters.
    pub const ALL: [Discard; 7] = [
        Discard::Whole,
        Discard::Limit,
        Discard::Timeout,
        Discard::TooSlow,
        Discard::Gone,
        Discard::Skipped,
        Discard::NoRoom,
    ];

    /// Whether the connection must close after the answer: the body was not all read.
    pub(crate) fn closes(self) -> bool {
        self != Discard::Whole
    }
}

/// Discards counted by outcome, and the bytes they dropped.
#[derive(Debug, Default)]
pub(crate) struct Discards {
    ended: [AtomicU64; Discard::ALL.len()],
    bytes: AtomicU64,
}

impl Discards {
    pub(crate) fn record(&self, outcome: Discard, bytes: u64) {
        self.ended[outcome as usize].fetch_add(1, Relaxed);
        self.bytes.fetch_add(bytes, Relaxed);
    }

    /// The counts, by [`Discard::ALL`] order.
    pub(crate) fn counts(&self) -> [u64; Discard::ALL.len()] {
        self.ended.each_ref().map(|count| count.load(Relaxed))
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Relaxed)
    }
}
