//! Why a configuration was rejected.

use std::{io, sync::Arc};

use super::vars;

/// Why a configuration was rejected. Nothing starts with a bad configuration.
///
/// ```
/// use tower_admission::{AdmissionConfig, ConfigError};
///
/// let error = AdmissionConfig::default()
///     .apply_vars([("ADMISSION_QUEUE_TIMEOUT", "soon")])
///     .unwrap_err();
/// assert!(matches!(error, ConfigError::Malformed { var: "ADMISSION_QUEUE_TIMEOUT", .. }));
/// assert_eq!(
///     error.to_string(),
///     "ADMISSION_QUEUE_TIMEOUT=\"soon\" is not valid: expected a duration greater than zero, such as 250ms or 2s"
/// );
/// ```
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// An environment variable holds a value of the wrong form.
    #[error("{var}={value:?} is not valid: expected {expected}")]
    Malformed {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// The accepted forms.
        expected: &'static str,
    },
    /// An environment variable's value is not UTF-8.
    #[error("{var}={value:?} is not valid UTF-8")]
    NotUnicode {
        /// The variable.
        var: &'static str,
        /// Its value, with invalid bytes replaced.
        value: String,
    },
    /// An `ADMISSION_*` variable that this crate does not know: most likely a typo.
    #[error("unknown variable {name}{}; known: {}", suggestion.map(|s| format!(" (did you mean {s}?)")).unwrap_or_default(), vars::ALL.join(", "))]
    UnknownVariable {
        /// The unknown name.
        name: String,
        /// The nearest known name.
        suggestion: Option<&'static str>,
    },
    /// A setting made through the builder is out of range.
    #[error("invalid {setting}: {reason}")]
    Invalid {
        /// The builder setting.
        setting: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The memory budget cannot be enforced: no usable memory source.
    #[error(
        "the memory budget cannot be enforced: {0}; set ADMISSION_MEMORY_BUDGET=off to use the concurrency limit alone"
    )]
    MemorySource(#[from] crate::memory::MemoryError),
    /// A percentage budget needs the memory limit, which could not be read from
    /// `/proc/meminfo`.
    #[error("cannot resolve a percentage memory budget from /proc/meminfo: {0}")]
    SystemMemory(#[source] Arc<io::Error>),
    /// The sampler thread could not be started.
    #[error("cannot start the memory sampler thread: {0}")]
    Sampler(#[source] Arc<io::Error>),
}
