//! Observe only: the pool decides as usual, admits every request anyway, and counts what it
//! would have rejected, so that operators can watch what shedding would do before they turn
//! it on.
//!
//! A request that would have waited goes at once and stands for that waiter until it ends:
//! while as many such requests are in flight as the queue holds, the next one would have
//! found the queue full. Queue timeouts and a standing queue are not played out.

use std::sync::{
    Arc,
    atomic::Ordering::{Relaxed, SeqCst},
};

use super::{
    Controller,
    admit::Acquired,
    inputs::{Ask, Reading},
    permit::Permit,
    word::{MAX_CONCURRENCY, QUEUED, in_flight},
};
use crate::{
    priority::Priority,
    rejection::{Limit, Reason},
};

impl Controller {
    /// Admits `ask`, which the limits hold back, past them; counts it as rejected if the
    /// queue it would have waited in is full.
    #[cold]
    #[inline(never)]
    pub(super) fn admit_past_limits(self: &Arc<Self>, memory: u64, ask: Ask) -> Acquired {
        let state = self.state.load(SeqCst);
        let fit = self.fit(state, memory, ask);
        // What the lock would have admitted (a new class while every admitted request has
        // shown its cost) goes as it would have, uncounted.
        if self.may_admit_locked(fit.goes(), state, false, Reading::Last) == Some(false) {
            self.admit(ask, false, memory);
            return Acquired::Admitted(Permit::new(Arc::clone(self), ask));
        }
        let limit = fit.blame(state & QUEUED != 0);
        if in_flight(state) >= MAX_CONCURRENCY as u64 - 1 {
            // The state word counts no more: reject for real, beyond any server's load.
            return Acquired::Rejected(self.reject_admission(
                ask.priority,
                Reason::QueueFull,
                limit,
            ));
        }
        let too_large = self
            .settings
            .budget
            .is_some_and(|budget| ask.declared > budget);
        if too_large {
            self.count_would_reject(Reason::TooLarge, Limit::Memory);
        } else if self.counters.past.in_flight.load(Relaxed) >= self.settings.queue_capacity
            || (ask.priority == Priority::Sheddable && self.rejects_sheddable(fit))
        {
            self.count_would_reject(Reason::QueueFull, limit);
        }
        self.counters.past.in_flight.fetch_add(1, Relaxed);
        self.admit(ask, false, memory);
        let mut permit = Permit::new(Arc::clone(self), ask);
        permit.past_limits();
        Acquired::Admitted(permit)
    }

    /// A request admitted past the limits ended.
    pub(super) fn end_past_limits(&self) {
        self.counters.past.in_flight.fetch_sub(1, Relaxed);
    }

    /// Counts, and logs (throttled), a rejection that observing only did not make.
    pub(super) fn count_would_reject(&self, reason: Reason, limit: Limit) {
        let what = "request would be shed (observe only: admitted)";
        let now_ms = self.clock.last_ms();
        let counters = &self.counters;
        counters.count_shed(
            self.counters.past.would_reject(),
            reason,
            limit,
            what,
            now_ms,
        );
    }
}
