//! The controller's view of memory: the source it reads, whether its reading can be trusted,
//! and, where requests are charged, the calling thread's allocation counters.

use std::sync::Arc;

use super::{
    health::{MemoryFailure, ReadingHealth},
    source::{MemorySource, ThreadAllocations},
};

pub(crate) struct Gauge {
    source: Arc<dyn MemorySource>,
    health: ReadingHealth,
    /// Counts what the calling thread allocates, to charge requests as they allocate.
    thread_allocations: Option<fn() -> ThreadAllocations>,
}

impl std::fmt::Debug for Gauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gauge")
            .field("source", &self.source)
            .finish()
    }
}

impl Gauge {
    /// A gauge of `source`, whose failures mean `failure`, refreshed every `interval`;
    /// `charges`: whether requests are charged what they allocate (only against a budget).
    pub(crate) fn new(
        source: Arc<dyn MemorySource>,
        failure: MemoryFailure,
        interval: std::time::Duration,
        charges: bool,
    ) -> Self {
        let thread_allocations = source.thread_allocations().filter(|_| charges);
        Self {
            health: ReadingHealth::new(failure, interval),
            thread_allocations,
            source,
        }
    }

    /// The last reading: as cheap as an atomic load.
    #[inline]
    pub(crate) fn allocated_bytes(&self) -> u64 {
        self.source.allocated_bytes()
    }

    pub(crate) fn source(&self) -> &dyn MemorySource {
        &*self.source
    }

    pub(crate) fn health(&self) -> &ReadingHealth {
        &self.health
    }

    /// The calling thread's allocation counters, where requests are charged what they
    /// allocate.
    #[inline]
    pub(crate) fn thread_allocations(&self) -> Option<fn() -> ThreadAllocations> {
        self.thread_allocations
    }
}
