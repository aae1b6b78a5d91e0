//! What the controller decides on: a request's ask, how fresh the memory reading is, and how
//! the runtime runs.

use std::time::Duration;

use super::classes::ClassId;
use crate::priority::Priority;

/// What one request asks for: its priority, its class, its charge (the most it may cost, as
/// far as its class tells), its declared `Content-Length`, and the least it will cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ask {
    pub(crate) priority: Priority,
    pub(crate) class: ClassId,
    pub(crate) charge: u64,
    pub(crate) declared: u64,
    pub(crate) least: u64,
    /// Whether its class has shown its cost: a class not seen yet goes one at a time.
    pub(crate) known: bool,
    /// The CPU work it brings, in microseconds, as charged at admission (0 where the CPU
    /// gate is off).
    pub(crate) cpu_us: u64,
    /// Whether its work comes once its body has arrived, and how long its class's bodies
    /// take to (0: not known yet).
    pub(crate) body_us: Option<u64>,
    /// Whether it polls long enough to keep the runtime late by itself (see
    /// [`cpu`](super::cpu)).
    pub(crate) long: bool,
}

/// Whether the memory reading was just taken (by the sampler), or is the last one it took
/// (up to an interval old). "Stale" is kept for a reading too old to be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reading {
    Fresh,
    Last,
}

/// How the runtime runs, as the sampler reads it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Runtime {
    /// How late its heartbeat runs.
    pub(crate) lateness: Duration,
    /// Its workers (fewer under a CPU quota), once known.
    pub(crate) workers: Option<usize>,
}
