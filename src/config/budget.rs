//! How much memory the pool may use: the budget as configured, and resolved into bytes.

use std::fmt;

use bytesize::ByteSize;

use super::error::ConfigError;
use crate::memory::limit;

/// How much allocated memory the process may hold before requests wait.
///
/// ```
/// use tower_admission::{Admission, AdmissionConfig, ManualMemory, MemoryBudget};
///
/// let config = AdmissionConfig::default()
///     .apply_vars([("ADMISSION_MEMORY_BUDGET", "512MiB")])
///     .unwrap();
/// let admission = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
/// assert_eq!(admission.snapshot().memory_budget_bytes, Some(512 << 20));
/// assert_eq!(MemoryBudget::Bytes(512 << 20).to_string(), "512.0 MiB");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryBudget {
    /// No memory limit: only the concurrency limit applies.
    Off,
    /// A fixed number of bytes.
    Bytes(u64),
    /// A percentage in (0, 100] of the process's cgroup memory limit (v2's `memory.max`, or
    /// v1's `memory.limit_in_bytes` where v2 has no memory controller; the tightest on the
    /// way to the root), or of physical memory when no cgroup limit applies; resolved once,
    /// when the admission pool is built.
    Percent(f64),
}

impl fmt::Display for MemoryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemoryBudget::Off => f.write_str("off"),
            MemoryBudget::Bytes(bytes) => write!(f, "{}", ByteSize::b(*bytes).display().iec()),
            MemoryBudget::Percent(pct) => write!(f, "{pct}%"),
        }
    }
}

/// The budget in bytes (`None` when off), and how it was arrived at.
pub(crate) fn resolve_budget(budget: MemoryBudget) -> Result<(Option<u64>, String), ConfigError> {
    let iec = |bytes: u64| ByteSize::b(bytes).display().iec().to_string();
    Ok(match budget {
        MemoryBudget::Off => (None, "off".into()),
        MemoryBudget::Bytes(bytes) => (Some(bytes), iec(bytes)),
        MemoryBudget::Percent(pct) => {
            let limit = limit::memory_limit().map_err(|e| ConfigError::SystemMemory(e.into()))?;
            let bytes = (limit.bytes as f64 * pct / 100.0) as u64;
            let text = format!(
                "{} ({pct}% of {} {})",
                iec(bytes),
                iec(limit.bytes),
                limit.origin
            );
            (Some(bytes.max(1)), text)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentage_budgets_resolve_against_the_machine() {
        let (bytes, text) = resolve_budget(MemoryBudget::Percent(50.0)).unwrap();
        let limit = limit::memory_limit().unwrap();
        assert_eq!(bytes, Some(limit.bytes / 2));
        assert!(text.contains("50% of"), "{text}");
    }
}
