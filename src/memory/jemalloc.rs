//! Live allocated bytes from jemalloc's own statistics.

use std::sync::atomic::{AtomicU64, Ordering};

use tikv_jemalloc_ctl::{Access, AsName, Mib, epoch, epoch_mib, stats, thread};

use super::{MemoryError, MemorySource};

/// `stats.arenas.<MALLCTL_ARENAS_ALL>.tcache_bytes`: bytes parked in thread caches. jemalloc
/// counts them as allocated, but the application has freed them.
const TCACHE_BYTES: &[u8] = b"stats.arenas.4096.tcache_bytes\0";

/// The size of the allocation that proves jemalloc is the global allocator.
const PROBE_BYTES: usize = 1 << 20;

/// Reads `stats.allocated` less thread-cache bytes from jemalloc.
///
/// [`refresh`](MemorySource::refresh) advances jemalloc's epoch (a process-wide mutex, from
/// 8 µs with one arena to over a millisecond with many) through MIBs resolved once, so it
/// belongs on the sampler thread; [`allocated_bytes`](MemorySource::allocated_bytes) loads
/// the last result from an atomic.
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
        source.refresh()?;
        Ok(source)
    }

    fn read_allocated(&self) -> Result<u64, MemoryError> {
        self.epoch.advance().map_err(read_error("epoch"))?;
        let allocated = self
            .allocated
            .read()
            .map_err(read_error("stats.allocated"))?;
        Ok(allocated as u64)
    }
}

impl std::fmt::Debug for JemallocMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JemallocMemory")
            .field("allocated_bytes", &self.allocated_bytes())
            .finish_non_exhaustive()
    }
}

impl MemorySource for JemallocMemory {
    fn allocated_bytes(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    fn refresh(&self) -> Result<(), MemoryError> {
        let allocated = self.read_allocated()?;
        let cached: usize = self
            .tcache_bytes
            .read()
            .map_err(read_error("stats.arenas.all.tcache_bytes"))?;
        self.last
            .store(allocated.saturating_sub(cached as u64), Ordering::Relaxed);
        Ok(())
    }

    fn name(&self) -> &'static str {
        "jemalloc stats.allocated - tcache_bytes"
    }
}

fn read_error(what: &'static str) -> impl Fn(tikv_jemalloc_ctl::Error) -> MemoryError {
    move |e| MemoryError::Read {
        what,
        reason: e.to_string(),
    }
}
