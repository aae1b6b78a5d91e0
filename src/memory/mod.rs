//! Where the controller reads the process's live memory from, and everything about reading
//! it: the sources (jemalloc, the memory cgroup, a manual one for tests), the cgroup's
//! directory (`cgroup_dir`), the limit a percentage budget is of (`limit`), and whether a
//! reading can be trusted (`health`).
//!
//! The request path only calls [`MemorySource::allocated_bytes`], which must be as cheap as
//! an atomic load; the sampler thread calls [`MemorySource::refresh`] every sample interval.

mod cgroup;
pub(crate) mod cgroup_dir;
pub(crate) mod gauge;
mod health;
#[cfg(feature = "jemalloc")]
mod jemalloc;
pub(crate) mod limit;
pub(crate) mod shared;
mod source;

#[cfg(feature = "jemalloc")]
pub(crate) use cgroup::Both;
pub use cgroup::CgroupMemory;
pub use health::MemoryFailure;
#[cfg(feature = "jemalloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "jemalloc")))]
pub use jemalloc::JemallocMemory;
pub use source::{ManualMemory, MemoryError, MemorySource, ThreadAllocations};

/// Which reading the memory budget applies to (`ADMISSION_MEMORY_SOURCE`; see
/// [`AdmissionConfig::memory_source`](crate::AdmissionConfig::memory_source)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MemorySourceKind {
    /// The process's live allocated bytes, from jemalloc's statistics (`jemalloc`).
    #[default]
    Jemalloc,
    /// The working set of the process's memory cgroup, every process in it included
    /// (`cgroup`; see [`CgroupMemory`]).
    Cgroup,
    /// Both: a request is admitted only while the process's allocated bytes stay within
    /// the memory budget and the cgroup's working set within the cgroup budget (`both`; see
    /// [`AdmissionConfig::cgroup_budget`](crate::AdmissionConfig::cgroup_budget)).
    Both,
}

impl MemorySourceKind {
    /// The name used by `ADMISSION_MEMORY_SOURCE`: `jemalloc`, `cgroup` or `both`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MemorySourceKind::Jemalloc => "jemalloc",
            MemorySourceKind::Cgroup => "cgroup",
            MemorySourceKind::Both => "both",
        }
    }
}

/// Whether the processes of one memory cgroup share what they have admitted and not yet
/// allocated, with the [`MemorySourceKind::Cgroup`] source (`ADMISSION_SHARED_CHARGES`; see
/// [`AdmissionConfig::shared_charges`](crate::AdmissionConfig::shared_charges)).
///
/// ```
/// use tower_admission::SharedCharges;
///
/// assert_eq!(SharedCharges::from(true), SharedCharges::Auto);
/// assert_eq!(SharedCharges::Off.as_str(), "off");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SharedCharges {
    /// Shared where the folder can be used; where it cannot, off, and the effective
    /// configuration, a metric and the log say why (`auto`).
    #[default]
    Auto,
    /// Shared, or [`Admission::new`](crate::Admission::new) fails saying why (`on`).
    On,
    /// Not shared (`off`).
    Off,
}

impl SharedCharges {
    /// The name used by `ADMISSION_SHARED_CHARGES`: `auto`, `on` or `off`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SharedCharges::Auto => "auto",
            SharedCharges::On => "on",
            SharedCharges::Off => "off",
        }
    }
}

/// `true` is [`SharedCharges::Auto`], `false` [`SharedCharges::Off`].
impl From<bool> for SharedCharges {
    fn from(on: bool) -> Self {
        match on {
            true => SharedCharges::Auto,
            false => SharedCharges::Off,
        }
    }
}
