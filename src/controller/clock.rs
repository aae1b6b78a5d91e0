//! The controller's clock: nanoseconds since the pool started, read to time polls and waits.
//! Tests drive a virtual one.

#[cfg(test)]
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering::Relaxed},
};
use std::time::Instant;

#[derive(Debug, Clone)]
pub(crate) enum Clock {
    Real(Instant),
    /// Moves only when a test moves it.
    #[cfg(test)]
    Virtual(Arc<AtomicU64>),
}

impl Default for Clock {
    fn default() -> Self {
        Self::Real(Instant::now())
    }
}

impl Clock {
    /// Nanoseconds since the pool started.
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        match self {
            Self::Real(started) => started.elapsed().as_nanos() as u64,
            #[cfg(test)]
            Self::Virtual(now) => now.load(Relaxed),
        }
    }

    /// Milliseconds since the pool started.
    pub(crate) fn now_ms(&self) -> u64 {
        self.now_ns() / 1_000_000
    }

    /// A virtual clock at 0, and the handle that moves it.
    #[cfg(test)]
    pub(crate) fn virtual_for_tests() -> (Self, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(0));
        (Self::Virtual(Arc::clone(&now)), now)
    }
}
