//! [`CgroupMemory`]: the working set of a memory cgroup, as the kernel's OOM killer and the
//! kubelet see it.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
};

use super::source::{MemoryError, MemorySource, ThreadAllocations};
use crate::memory::cgroup_dir::{CgroupDir, Version};

/// Reads the working set of a memory cgroup (usage less inactive file pages: what the OOM
/// killer and the kubelet weigh) on the sampler thread: cgroup v2's `memory.current` and
/// `memory.stat`, or cgroup v1's `memory.usage_in_bytes` and `total_inactive_file`.
///
/// Every process in the cgroup counts, so several processes that share a container's limit
/// each see all of it. Requests are still charged what they allocate where jemalloc is the
/// global allocator (its per-thread counters), so admitting stays as quick to react.
///
/// ```no_run
/// use tower_admission::{Admission, AdmissionConfig, CgroupMemory};
///
/// // This process's own cgroup; `ADMISSION_MEMORY_SOURCE=cgroup` does the same.
/// let source = CgroupMemory::new()?;
/// let admission = Admission::with_memory_source(AdmissionConfig::default(), source)?;
/// println!("{admission}");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct CgroupMemory {
    cgroup: CgroupDir,
    name: &'static str,
    last: AtomicU64,
    thread_allocations: Option<fn() -> ThreadAllocations>,
}

impl CgroupMemory {
    /// The memory cgroup of this process (from `/proc/self/cgroup`, under `/sys/fs/cgroup`):
    /// cgroup v2 where its memory controller is enabled, else cgroup v1's memory hierarchy.
    /// Fails, naming what it looked at, when neither is reachable.
    pub fn new() -> Result<Self, MemoryError> {
        let proc_self = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let cgroup =
            CgroupDir::of_process(Path::new("/sys/fs/cgroup"), &proc_self).ok_or_else(|| {
                MemoryError::NoCgroup {
                    looked: format!(
                        "/sys/fs/cgroup for the memory controller of this process's cgroup ({})",
                        proc_self.trim().replace('\n', "; ")
                    ),
                }
            })?;
        Self::from_dir(cgroup)
    }

    /// The memory cgroup whose directory is `dir` (v2 or v1, by the files it has): another
    /// process's cgroup, or a fake folder in tests.
    pub fn at(dir: impl AsRef<Path>) -> Result<Self, MemoryError> {
        let dir = dir.as_ref();
        let cgroup = CgroupDir::at(dir).ok_or_else(|| MemoryError::NoCgroup {
            looked: format!(
                "{} (no memory.current or memory.usage_in_bytes)",
                dir.display()
            ),
        })?;
        Self::from_dir(cgroup)
    }

    fn from_dir(cgroup: CgroupDir) -> Result<Self, MemoryError> {
        let source = Self {
            name: match cgroup.version() {
                Version::V2 => "cgroup v2 working set (memory.current - inactive_file)",
                Version::V1 => "cgroup v1 working set (usage_in_bytes - total_inactive_file)",
            },
            cgroup,
            last: AtomicU64::new(0),
            thread_allocations: jemalloc_thread_allocations(),
        };
        source.refresh()?;
        Ok(source)
    }

    /// The cgroup's directory, such as `/sys/fs/cgroup/system.slice/app.service`.
    pub fn dir(&self) -> PathBuf {
        self.cgroup.dir()
    }

    /// The memory limit of the cgroup or its tightest ancestor, if any.
    pub fn limit_bytes(&self) -> Option<u64> {
        self.cgroup.limit().map(|(bytes, _)| bytes)
    }
}

/// jemalloc's per-thread counters, when it is the global allocator.
fn jemalloc_thread_allocations() -> Option<fn() -> ThreadAllocations> {
    #[cfg(feature = "jemalloc")]
    if let Ok(jemalloc) = super::jemalloc::JemallocMemory::new() {
        return jemalloc.thread_allocations();
    }
    None
}

impl MemorySource for CgroupMemory {
    fn allocated_bytes(&self) -> u64 {
        self.last.load(Relaxed)
    }

    fn refresh(&self) -> Result<(), MemoryError> {
        let bytes = self
            .cgroup
            .working_set()
            .map_err(|error| MemoryError::Read {
                what: "the cgroup's memory files",
                reason: error.to_string(),
            })?;
        self.last.store(bytes, Relaxed);
        Ok(())
    }

    fn name(&self) -> &'static str {
        self.name
    }

    fn thread_allocations(&self) -> Option<fn() -> ThreadAllocations> {
        self.thread_allocations
    }
}

/// Two readings, two budgets: the process's allocated bytes within the pool's budget, and a
/// cgroup's working set within its own. Read as one: the allocated bytes, or, when the
/// cgroup stands nearer its budget, its working set shifted by the difference of the two
/// budgets, so that the pool's budget is reached exactly when either is.
#[derive(Debug)]
#[cfg_attr(not(feature = "jemalloc"), allow(dead_code))] // `both` needs jemalloc
pub(crate) struct Both<A, B> {
    pub(crate) process: A,
    pub(crate) cgroup: B,
    pub(crate) budget: u64,
    pub(crate) cgroup_budget: u64,
}

impl<A: MemorySource, B: MemorySource> MemorySource for Both<A, B> {
    fn allocated_bytes(&self) -> u64 {
        let cgroup = (self.cgroup.allocated_bytes().saturating_add(self.budget))
            .saturating_sub(self.cgroup_budget);
        self.process.allocated_bytes().max(cgroup)
    }

    fn refresh(&self) -> Result<(), MemoryError> {
        // Both, even when the first fails: neither reading may go stale behind the other.
        let first = self.process.refresh();
        self.cgroup.refresh().and(first)
    }

    fn name(&self) -> &'static str {
        "jemalloc's allocated bytes within the budget, and the cgroup's working set within the cgroup budget"
    }

    fn thread_allocations(&self) -> Option<fn() -> ThreadAllocations> {
        self.process.thread_allocations()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{ManualMemory, cgroup_dir::tests::FakeMount};

    #[test]
    fn reads_the_working_set_on_refresh_only() {
        let mount = FakeMount::new("source");
        mount.write("c", "memory.current", "4096\n");
        mount.write("c", "memory.stat", "inactive_file 1024\n");
        let source = CgroupMemory::at(mount.0.join("c")).unwrap();
        assert_eq!(source.allocated_bytes(), 3072);
        mount.write("c", "memory.current", "8192\n");
        assert_eq!(
            source.allocated_bytes(),
            3072,
            "no file read on the request path"
        );
        source.refresh().unwrap();
        assert_eq!(source.allocated_bytes(), 7168);
        mount.write("c", "memory.current", "gone\n");
        assert!(matches!(source.refresh(), Err(MemoryError::Read { .. })));
        assert_eq!(
            source.allocated_bytes(),
            7168,
            "a failed read keeps the last one"
        );
    }

    #[test]
    fn a_folder_without_memory_files_is_a_clear_error() {
        let mount = FakeMount::new("empty");
        let error = CgroupMemory::at(&mount.0).unwrap_err();
        assert!(error.to_string().contains("memory.current"), "{error}");
    }

    #[test]
    fn both_reaches_the_budget_when_either_reading_reaches_its_own() {
        let (process, cgroup) = (ManualMemory::new(10), ManualMemory::new(300));
        let both = Both {
            process: process.clone(),
            cgroup: cgroup.clone(),
            budget: 100,
            cgroup_budget: 400,
        };
        assert_eq!(
            both.allocated_bytes(),
            10,
            "the cgroup has 100 to spare, the process 90"
        );
        cgroup.set(350);
        assert_eq!(both.allocated_bytes(), 50, "the cgroup has 50 to spare");
        cgroup.set(420);
        assert_eq!(
            both.allocated_bytes(),
            120,
            "the cgroup is 20 over: so is the reading"
        );
        process.set(130);
        assert_eq!(both.allocated_bytes(), 130);
        assert_eq!(both.refresh(), Ok(()));
    }
}
