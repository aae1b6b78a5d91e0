//! Live allocated bytes from jemalloc's own statistics.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use tikv_jemalloc_ctl::{Access, AsName, Mib, epoch, epoch_mib, stats, thread};

use super::source::{MemoryError, MemorySource, ThreadAllocations};

/// `stats.arenas.<MALLCTL_ARENAS_ALL>.tcache_bytes`: bytes parked in thread caches. jemalloc
/// counts them as allocated, but the application has freed them.
const TCACHE_BYTES: &[u8] = b"stats.arenas.4096.tcache_bytes\0";

/// jemalloc ≥ 5.3.1: active pages summed from per-arena atomics, without the epoch's mutex.
const APPROXIMATE_ACTIVE: &[u8] = b"approximate_stats.active\0";

/// The size of the allocation that proves jemalloc is the global allocator.
const PROBE_BYTES: usize = 1 << 20;

/// At most this many refreshes reuse one precise reading.
const PRECISE_EVERY: u32 = 10;

/// Reads `stats.allocated` less thread-cache bytes from jemalloc.
///
/// A precise reading advances jemalloc's epoch, which merges every arena's statistics under
/// a process-wide mutex: 15 µs with one thread, 65–180 µs with eight here. So
/// [`refresh`](MemorySource::refresh) (called by the sampler thread, never by requests) takes
/// a precise reading only every tenth call, or sooner when jemalloc's lock-free
/// `approximate_stats.active` has moved by more than 1/64 of the reading (at least 1 MiB) since
/// the last one; in between it publishes the last precise reading corrected by that movement.
/// Where `approximate_stats.active` is missing, every refresh is precise.
/// [`allocated_bytes`](MemorySource::allocated_bytes) loads the result from an atomic.
///
/// ```no_run
/// #[global_allocator]
/// static GLOBAL: tower_admission::Jemalloc = tower_admission::Jemalloc;
///
/// use tower_admission::{JemallocMemory, MemorySource};
///
/// let memory = JemallocMemory::new().expect("jemalloc is the global allocator");
/// memory.refresh().unwrap();
/// assert!(memory.allocated_bytes() > 0);
/// ```
pub struct JemallocMemory {
    epoch: epoch_mib,
    allocated: stats::allocated_mib,
    tcache_bytes: Mib<[usize; 4]>,
    approximate_active: Option<Mib<[usize; 2]>>,
    /// The last precise reading, and `approximate_stats.active` when it was taken.
    precise: AtomicU64,
    active_at_precise: AtomicU64,
    refreshes_since_precise: AtomicU32,
    /// What `allocated_bytes` returns.
    last: AtomicU64,
}

impl JemallocMemory {
    /// Resolves the statistics and checks that jemalloc is the global allocator: a 1 MiB
    /// allocation must show in this thread's `thread.allocated` counter, which other threads'
    /// activity cannot disturb.
    pub fn new() -> Result<Self, MemoryError> {
        let source = Self {
            epoch: epoch::mib().map_err(read_error("epoch"))?,
            allocated: stats::allocated::mib().map_err(read_error("stats.allocated"))?,
            tcache_bytes: TCACHE_BYTES
                .name()
                .mib()
                .map_err(read_error("stats.arenas.all.tcache_bytes"))?,
            approximate_active: APPROXIMATE_ACTIVE.name().mib().ok(),
            precise: AtomicU64::new(0),
            active_at_precise: AtomicU64::new(0),
            refreshes_since_precise: AtomicU32::new(0),
            last: AtomicU64::new(0),
        };
        let thread_allocated = || {
            thread::allocatedp::read()
                .map(|counter| counter.get())
                .map_err(read_error("thread.allocatedp"))
        };
        let before = thread_allocated()?;
        drop(std::hint::black_box(vec![1u8; PROBE_BYTES]));
        if thread_allocated()?.wrapping_sub(before) < PROBE_BYTES as u64 {
            return Err(MemoryError::NotGlobalAllocator {
                probe_mib: (PROBE_BYTES >> 20) as u64,
            });
        }
        source.refresh_precise()?;
        Ok(source)
    }

    /// Takes a precise reading now (an epoch advance), whatever `approximate_stats.active`
    /// says.
    fn refresh_precise(&self) -> Result<(), MemoryError> {
        self.take_precise(self.read_active())
    }

    fn read_active(&self) -> Option<u64> {
        let active: usize = self.approximate_active?.read().ok()?;
        Some(active as u64)
    }

    fn take_precise(&self, active: Option<u64>) -> Result<(), MemoryError> {
        self.epoch.advance().map_err(read_error("epoch"))?;
        let allocated = self
            .allocated
            .read()
            .map_err(read_error("stats.allocated"))?;
        let cached: usize = self
            .tcache_bytes
            .read()
            .map_err(read_error("stats.arenas.all.tcache_bytes"))?;
        let precise = (allocated as u64).saturating_sub(cached as u64);
        self.precise.store(precise, Relaxed);
        self.active_at_precise.store(active.unwrap_or(0), Relaxed);
        self.refreshes_since_precise.store(0, Relaxed);
        self.last.store(precise, Relaxed);
        Ok(())
    }
}

impl std::fmt::Debug for JemallocMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JemallocMemory")
            .field("allocated_bytes", &self.allocated_bytes())
            .field("approximate", &self.approximate_active.is_some())
            .finish_non_exhaustive()
    }
}

impl MemorySource for JemallocMemory {
    fn allocated_bytes(&self) -> u64 {
        self.last.load(Relaxed)
    }

    fn refresh(&self) -> Result<(), MemoryError> {
        let Some(active) = self.read_active() else {
            return self.take_precise(None);
        };
        let precise = self.precise.load(Relaxed);
        let moved = active.abs_diff(self.active_at_precise.load(Relaxed));
        let due = self.refreshes_since_precise.fetch_add(1, Relaxed) + 1 >= PRECISE_EVERY;
        if due || moved > (precise / 64).max(1 << 20) {
            return self.take_precise(Some(active));
        }
        let estimate = if active >= self.active_at_precise.load(Relaxed) {
            precise.saturating_add(moved)
        } else {
            precise.saturating_sub(moved)
        };
        self.last.store(estimate, Relaxed);
        Ok(())
    }

    fn name(&self) -> &'static str {
        "jemalloc stats.allocated - tcache_bytes"
    }

    fn thread_allocations(&self) -> Option<fn() -> ThreadAllocations> {
        Some(thread_allocations)
    }
}

thread_local! {
    /// This thread's `thread.allocatedp` and `thread.deallocatedp`: pointers to jemalloc's
    /// own per-thread counters, resolved once per thread, read for the price of a load.
    static THREAD_COUNTERS: Option<(thread::ThreadLocal<u64>, thread::ThreadLocal<u64>)> =
        thread::allocatedp::read().ok().zip(thread::deallocatedp::read().ok());
}

/// What the calling thread has allocated and freed since it started (wrapping).
pub(crate) fn thread_allocations() -> ThreadAllocations {
    THREAD_COUNTERS.with(|counters| {
        counters.map_or(ThreadAllocations::default(), |(allocated, freed)| {
            ThreadAllocations {
                allocated: allocated.get(),
                freed: freed.get(),
            }
        })
    })
}

fn read_error(what: &'static str) -> impl Fn(tikv_jemalloc_ctl::Error) -> MemoryError {
    move |e| MemoryError::Read {
        what,
        reason: e.to_string(),
    }
}
