//! What a memory source is ([`MemorySource`]), what it may fail with, what the calling
//! thread has allocated, and a source set by hand for tests.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

/// A reading of the process's live allocated bytes.
///
/// ```
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tower_admission::MemorySource;
///
/// /// Counts bytes that the application tracks itself, such as a cache's size.
/// #[derive(Debug, Default)]
/// struct Tracked(AtomicU64);
///
/// impl MemorySource for Tracked {
///     fn allocated_bytes(&self) -> u64 {
///         self.0.load(Ordering::Relaxed)
///     }
///     fn name(&self) -> &'static str {
///         "tracked"
///     }
/// }
/// # let t = Tracked::default();
/// # assert_eq!(t.allocated_bytes(), 0);
/// # assert_eq!(t.refresh(), Ok(()));
/// ```
pub trait MemorySource: Send + Sync + std::fmt::Debug + 'static {
    /// The bytes allocated as of the last refresh. Called on every admission decision: it
    /// must not lock, allocate or make a system call.
    fn allocated_bytes(&self) -> u64;

    /// Takes a fresh reading. Called from the sampler thread only, never on the request path,
    /// so it may be slow. The default does nothing (for sources that are always fresh).
    fn refresh(&self) -> Result<(), MemoryError> {
        Ok(())
    }

    /// A short name for the effective configuration, such as `"jemalloc stats.allocated"`.
    fn name(&self) -> &'static str;

    /// A function returning what the calling thread has allocated and freed since it started,
    /// if the allocator counts them per thread (jemalloc does). With it, the layer charges each
    /// request what its polls allocate, at once, instead of waiting for the next reading. The
    /// default is `None`.
    fn thread_allocations(&self) -> Option<fn() -> ThreadAllocations> {
        None
    }
}

/// What one thread has allocated and freed since it started, in bytes; both counters wrap.
///
/// The difference between two readings on one thread, around a poll, tells what the poll
/// allocated (`allocated`), and how much of it, net, it kept (`allocated - freed`).
///
/// ```
/// use tower_admission::ThreadAllocations;
///
/// let before = ThreadAllocations { allocated: 100, freed: 40 };
/// let after = ThreadAllocations { allocated: 1_100, freed: 540 };
/// assert_eq!(after.since(before), ThreadAllocations { allocated: 1_000, freed: 500 });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadAllocations {
    /// Bytes allocated.
    pub allocated: u64,
    /// Bytes freed.
    pub freed: u64,
}

impl ThreadAllocations {
    /// What was allocated and freed between `earlier` and `self`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            allocated: self.allocated.wrapping_sub(earlier.allocated),
            freed: self.freed.wrapping_sub(earlier.freed),
        }
    }
}

/// A memory source whose value is set by hand: for tests, and for integrations that measure
/// memory themselves.
///
/// Clones share one value.
///
/// ```
/// use tower_admission::{ManualMemory, MemorySource};
///
/// let memory = ManualMemory::new(100);
/// let handle = memory.clone();
/// handle.set(4096);
/// assert_eq!(memory.allocated_bytes(), 4096);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualMemory {
    bytes: Arc<AtomicU64>,
}

impl ManualMemory {
    /// A source that reads `bytes` until [`set`](Self::set) changes it.
    pub fn new(bytes: u64) -> Self {
        Self {
            bytes: Arc::new(AtomicU64::new(bytes)),
        }
    }

    /// Sets the reading; waiters that now fit are admitted at the next sample tick.
    pub fn set(&self, bytes: u64) {
        self.bytes.store(bytes, Ordering::Relaxed);
    }
}

impl MemorySource for ManualMemory {
    fn allocated_bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn name(&self) -> &'static str {
        "manual"
    }
}

/// A memory source could not be used or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MemoryError {
    /// jemalloc is linked but is not the global allocator, so its statistics do not see the
    /// application's allocations.
    #[error(
        "jemalloc is not the process's global allocator (its statistics did not see a {probe_mib} MiB test allocation); add `#[global_allocator] static GLOBAL: tower_admission::Jemalloc = tower_admission::Jemalloc;`"
    )]
    NotGlobalAllocator {
        /// The size of the test allocation, in MiB.
        probe_mib: u64,
    },
    /// The crate was built without the `jemalloc` feature and no other source was given.
    #[error(
        "built without the `jemalloc` feature; enable it or pass a MemorySource to Admission::with_memory_source"
    )]
    NoSource,
    /// No memory cgroup was found: the process is not in one, or its controller is not
    /// enabled or mounted.
    #[error("no cgroup memory controller is reachable: looked at {looked}")]
    NoCgroup {
        /// What was looked at.
        looked: String,
    },
    /// Reading the statistics failed.
    #[error("reading {what} failed: {reason}")]
    Read {
        /// What was read.
        what: &'static str,
        /// The allocator's error.
        reason: String,
    },
}

#[cfg(test)]
impl MemoryError {
    /// A failed read, as the crate's tests inject it.
    pub(crate) fn injected() -> Self {
        MemoryError::Read {
            what: "test",
            reason: "injected".into(),
        }
    }
}
