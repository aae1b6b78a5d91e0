//! The right to be in flight: a slot and a memory reservation, given back on drop.

use std::{fmt, sync::Arc};

use crate::controller::Controller;

/// Held from admission until the response body ends or is dropped; dropping it on any path
/// (completion, error, client disconnect, panic unwinding) releases the slot and reservation.
#[must_use]
#[clippy::has_significant_drop]
pub(crate) struct Permit {
    controller: Arc<Controller>,
    estimate: u64,
}

impl Permit {
    /// Wraps a slot and reservation that the controller has already counted.
    pub(crate) fn new(controller: Arc<Controller>, estimate: u64) -> Self {
        Self {
            controller,
            estimate,
        }
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("estimate", &self.estimate)
            .finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.controller.release(self.estimate);
    }
}
