//! The controller's clock: nanoseconds since the pool started, read to time polls and waits,
//! and the millisecond of the sampler's last tick, which the request path reads for the price
//! of a load. Tests drive a virtual one.

#[cfg(test)]
use std::sync::Arc;
use std::{
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Instant,
};

#[derive(Debug)]
pub(crate) struct Clock {
    source: Source,
    /// Milliseconds since the pool started, as of the sampler's last tick.
    last_ms: AtomicU64,
}

#[derive(Debug)]
enum Source {
    Real(Instant),
    /// Moves only when a test moves it.
    #[cfg(test)]
    Virtual(Arc<AtomicU64>),
}

impl Default for Clock {
    fn default() -> Self {
        Self::new(Source::Real(Instant::now()))
    }
}

impl Clock {
    fn new(source: Source) -> Self {
        Self {
            source,
            last_ms: AtomicU64::new(0),
        }
    }

    /// Nanoseconds since the pool started.
    #[inline]
    pub(crate) fn now_ns(&self) -> u64 {
        match &self.source {
            Source::Real(started) => started.elapsed().as_nanos() as u64,
            #[cfg(test)]
            Source::Virtual(now) => now.load(Relaxed),
        }
    }

    /// Milliseconds since the pool started.
    pub(crate) fn now_ms(&self) -> u64 {
        self.now_ns() / 1_000_000
    }

    /// Reads the clock for the sampler's tick: milliseconds since the pool started, kept
    /// for [`last_ms`](Self::last_ms).
    pub(crate) fn tick(&self) -> u64 {
        let now_ms = self.now_ms();
        self.last_ms.store(now_ms, Relaxed);
        now_ms
    }

    /// Milliseconds since the pool started, as of the sampler's last tick.
    pub(crate) fn last_ms(&self) -> u64 {
        self.last_ms.load(Relaxed)
    }

    /// A virtual clock at 0, and the handle that moves it (in nanoseconds).
    #[cfg(test)]
    pub(crate) fn virtual_for_tests() -> (Self, Arc<AtomicU64>) {
        let now = Arc::new(AtomicU64::new(0));
        (Self::new(Source::Virtual(Arc::clone(&now))), now)
    }
}
