//! Admission control for HTTP services: admit a request only while **both** the number of
//! requests in flight and the process's live allocated bytes stay under their limits; queue
//! the rest in a bounded FIFO queue with a deadline, or shed them at once with
//! `503 Service Unavailable` and `Retry-After`.
//!
//! A concurrency limit alone bounds memory only if someone guesses the right count, and the
//! right count changes with request size. An unbounded queue turns overload into latency and
//! memory. This layer replaces the guess with a measured budget (jemalloc's own statistics,
//! refreshed by a dedicated thread), keeps the queue bounded in length and time, and lets
//! health checks bypass it.
//!
//! The manual is the [`guide`]: how the layer decides, priorities, rejections, slow clients,
//! CPU-bound handlers, gRPC and HTTP/2, running more than one process, observability, and
//! what is promised (with the test that shows each).
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use tower_admission::{Admission, AdmissionConfig, ManualMemory};
//!
//! # fn main() -> Result<(), tower_admission::ConfigError> {
//! // In a real service: `let admission = Admission::from_env()?;` with jemalloc as the
//! // global allocator. Here a manual memory source keeps the example self-contained.
//! let config = AdmissionConfig::default()
//!     .max_concurrency(64)
//!     .memory_budget_bytes(512 << 20)
//!     .bypass(["/health"]);
//! let admission = Admission::with_memory_source(config, ManualMemory::new(0))?;
//!
//! let app: Router = Router::new()
//!     .route("/work", get(|| async { "done" }))
//!     .route("/health", get(|| async { "ok" }))
//!     .layer(admission.layer());
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! Every `layer()` and every clone of the service share one controller, so the limits are
//! process-wide even though axum's `Router::layer` wraps each route separately.
//!
//! # Ordering
//!
//! Place the admission layer *outside* per-request timeouts and handlers, and *inside*
//! tracing and metrics layers that should see the 503s it produces:
//!
//! ```text
//!         requests
//!            |
//!            v
//! +----- TraceLayer -----+
//! | +-- AdmissionLayer -+ |
//! | | +- TimeoutLayer -+ | |
//! | | |    handler     | | |
//! | | +----------------+ | |
//! | +--------------------+ |
//! +-----------------------+
//!            |
//!            v
//!         responses
//! ```
//!
//! # Feature flags
//!
//! - `jemalloc` (default): read live memory from jemalloc through `tikv-jemalloc-ctl`. The
//!   process must use [`Jemalloc`] as its global allocator.
//! - `metrics` (default): publish the figures through the `metrics` facade.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unreachable_pub,
    clippy::all
)]
#![doc(test(attr(deny(warnings), allow(dead_code))))]

mod admission;
mod body;
mod client_deadline;
mod config;
mod controller;
mod cpu_quota;
mod data_rate;
mod discard;
pub mod future;
mod grpc;
pub mod guide;
mod heartbeat;
mod http_settings;
mod layer;
pub mod listener;
mod log_throttle;
mod memory;
mod metrics;
mod priority;
mod rejection;
mod request_body;
mod reservation;
mod sampler;
mod service;
mod snapshot;

pub use admission::Admission;
pub use body::AdmissionBody;
pub use config::{AdmissionConfig, ConfigError, MemoryBudget};
pub use controller::{CostClass, QueueTarget};
pub use data_rate::{Direction, MinDataRate, TooSlow};
pub use http_settings::RequestHead;
pub use layer::AdmissionLayer;
pub use listener::{AdmissionListener, Connection, ConnectionHandle};
pub use memory::{
    CgroupMemory, ManualMemory, MemoryError, MemorySource, MemorySourceKind, ThreadAllocations,
};
pub use memory::{MemoryFailure, SharedCharges};
pub use priority::{Priority, UnknownPriority};
pub use rejection::Discard;
pub use rejection::{Limit, Reason, Rejection};
pub use request_body::MinRateBody;
pub use reservation::Reservation;
pub use service::AdmissionService;
pub use snapshot::{ClassCost, Snapshot};

#[cfg(feature = "jemalloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "jemalloc")))]
pub use memory::JemallocMemory;

/// jemalloc as a global allocator, re-exported so the version always matches the one whose
/// statistics this crate reads.
///
/// ```no_run
/// #[global_allocator]
/// static GLOBAL: tower_admission::Jemalloc = tower_admission::Jemalloc;
/// # fn main() {}
/// ```
#[cfg(feature = "jemalloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "jemalloc")))]
pub use tikv_jemallocator::Jemalloc;

// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
