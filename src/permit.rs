//! The right to be in flight: a slot and a memory charge, given back on drop.

use std::{fmt, sync::Arc};

use crate::controller::{Controller, kib};

/// A charge moves only by this much or more (32 KiB): the error per request is bounded, and
/// most polls of small requests cost no shared write.
const RECHARGE_STEP_KIB: u64 = 32;

/// Held from admission until the response body ends or is dropped; dropping it on any path
/// (completion, error, client disconnect, panic unwinding) gives back the slot and the charge.
///
/// The charge starts at the request's estimate. After the first poll that [`Permit::track`]
/// watches, it is what the request's polls have allocated, net, and at least its
/// `Content-Length` (a body still arriving will be allocated).
#[must_use]
#[clippy::has_significant_drop]
pub(crate) struct Permit {
    controller: Arc<Controller>,
    declared_kib: u64,
    /// What the state word holds for this request now, in KiB.
    charged_kib: u64,
    /// Net bytes allocated by this request's polls so far.
    allocated: i64,
    polled: bool,
}

impl Permit {
    /// Wraps a slot and charge (`estimate`) that the controller has already counted, for a
    /// request that declared a `declared`-byte body.
    pub(crate) fn new(controller: Arc<Controller>, estimate: u64, declared: u64) -> Self {
        Self {
            controller,
            declared_kib: kib(declared),
            charged_kib: kib(estimate),
            allocated: 0,
            polled: false,
        }
    }

    /// Runs `poll` (one poll of the request's work) and charges this request what it
    /// allocated, net, on this thread.
    #[inline]
    pub(crate) fn track<R>(&mut self, poll: impl FnOnce() -> R) -> R {
        let Some(counter) = self.controller.thread_counter() else {
            return poll();
        };
        let before = counter();
        let result = poll();
        let delta = counter().wrapping_sub(before) as i64;
        if delta == 0 && self.polled {
            return result;
        }
        self.allocated = self.allocated.saturating_add(delta);
        let allocated = self.allocated.max(0) as u64;
        if !self.polled {
            self.polled = true;
            self.controller.learn_first_poll(allocated);
        }
        let charge = kib(allocated).max(self.declared_kib);
        // Small moves are not worth an atomic operation on the shared word.
        if charge.abs_diff(self.charged_kib) >= RECHARGE_STEP_KIB {
            self.controller.recharge(self.charged_kib, charge);
            self.charged_kib = charge;
        }
        result
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("charged_kib", &self.charged_kib)
            .field("allocated", &self.allocated)
            .finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.controller.release(self.charged_kib);
    }
}
