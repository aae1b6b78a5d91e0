//! Bytes held beside the charges, counted as spoken for (see [`footprint`](super::footprint)):
//! by a request that is not in flight (queued, or rejected and discarding its body) until its
//! handle is dropped, and by an admitted one until its permit goes.

use std::sync::Arc;

use super::Controller;

/// The share of the budget that connections discarding rejected bodies may hold together: a
/// flood of rejected uploads must not take the memory that admitted work needs once the
/// flood ends.
pub(crate) const DISCARD_SHARE: u64 = 8;

/// Bytes held by a request that is not in flight (queued, or rejected and discarding its
/// body), counted as spoken for until dropped.
#[derive(Debug)]
pub(crate) struct HeldBytes {
    controller: Arc<Controller>,
    bytes: u64,
    /// Held by a connection discarding a rejected body.
    discarding: bool,
}

impl Controller {
    /// Holds `bytes` until the [`HeldBytes`] is dropped.
    pub(crate) fn hold(self: &Arc<Self>, bytes: u64) -> HeldBytes {
        self.footprint.hold(bytes);
        HeldBytes {
            controller: Arc::clone(self),
            bytes,
            discarding: false,
        }
    }

    /// Holds `bytes` beside an admitted request's charge, until it ends (see `Permit::hold`).
    pub(crate) fn hold_beside(&self, bytes: u64) {
        self.footprint.hold(bytes);
    }

    /// Holds `bytes` for a connection discarding a rejected body, if they fit in the memory
    /// budget beside what is spoken for, and in the share of it ([`DISCARD_SHARE`]) that
    /// discards may hold together.
    pub(crate) fn hold_to_discard(self: &Arc<Self>, bytes: u64) -> Option<HeldBytes> {
        if let Some(budget) = self.settings.budget {
            let discarding = self.footprint.discarding();
            let over = self.spoken_for_bytes().saturating_add(bytes) > budget
                || discarding.saturating_add(bytes) > budget / DISCARD_SHARE;
            if self.memory_rejects(over) {
                return None;
            }
        }
        self.footprint.hold_discarding(bytes);
        Some(HeldBytes {
            controller: Arc::clone(self),
            bytes,
            discarding: true,
        })
    }
}

impl HeldBytes {
    pub(crate) fn controller(&self) -> &Controller {
        &self.controller
    }

    /// Holds `bytes` in all, if more than now: the connection's buffers grew.
    pub(crate) fn grow_to(&mut self, bytes: u64) {
        let Some(more) = bytes.checked_sub(self.bytes).filter(|&more| more > 0) else {
            return;
        };
        let footprint = &self.controller.footprint;
        match self.discarding {
            true => footprint.hold_discarding(more),
            false => footprint.hold(more),
        }
        self.bytes = bytes;
    }
}

impl Drop for HeldBytes {
    fn drop(&mut self) {
        let footprint = &self.controller.footprint;
        match self.discarding {
            true => footprint.let_go_discarding(self.bytes),
            false => footprint.let_go(self.bytes),
        }
    }
}
