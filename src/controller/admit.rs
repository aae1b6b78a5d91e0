//! Admitting: a request is priced as its class stands, then admitted at once without the
//! lock when nobody waits and it fits, rejected at once when it may not wait, or handed to the
//! waiting side (see [`waiting`](super::waiting)).

use std::sync::{Arc, atomic::Ordering::SeqCst};

use super::{
    Controller, CostClass,
    classes::ClassId,
    fit::{Fit, Goes},
    inputs::Ask,
    permit::Permit,
    ticket::Ticket,
    word::{QUEUED, claim, in_flight, kib},
};
use crate::{
    priority::Priority,
    rejection::{Limit, Reason, Rejection},
};

/// What [`Controller::acquire_as`] decided.
#[derive(Debug)]
pub(crate) enum Acquired {
    Admitted(Permit),
    Queued(Ticket),
    Rejected(Rejection),
}

impl Controller {
    /// [`acquire_as`](Self::acquire_as) a `Normal` request.
    #[cfg(test)]
    pub(crate) fn acquire(self: &Arc<Self>, class: CostClass, declared: Option<u64>) -> Acquired {
        self.acquire_as(Priority::Normal, class, declared, String::new)
    }

    /// Whether requests are told apart by cost class: where memory is charged, or CPU work.
    pub(crate) fn learns_classes(&self) -> bool {
        self.settings.budget.is_some() || self.cpu.is_enabled()
    }

    /// Admits, queues or rejects a request of `priority` and `class` that declared
    /// `declared` body bytes; `name` names its class if it is the first of it.
    pub(crate) fn acquire_as(
        self: &Arc<Self>,
        priority: Priority,
        class: CostClass,
        declared: Option<u64>,
        name: impl FnOnce() -> String,
    ) -> Acquired {
        let declared = declared.unwrap_or(0);
        let class = match self.learns_classes() {
            true => self.classes.find(class, name),
            false => ClassId::OVERFLOW,
        };
        let ask = self.priced(Ask {
            priority,
            class,
            charge: 0,
            declared,
            least: 0,
            known: true,
            cpu_us: 0,
            body_us: None,
            long: false,
        });
        let Some(budget) = self.settings.budget else {
            // Without a budget there is nothing to charge, and nothing to pay for charging.
            return self.acquire_charged(ask);
        };
        // Observing only, it goes past the limits, counted there.
        if declared > budget && !self.settings.observe_only {
            return Acquired::Rejected(self.reject_admission(
                priority,
                Reason::TooLarge,
                Limit::Memory,
            ));
        }
        if declared > budget {
            return self.admit_past_limits(self.gauge.allocated_bytes(), ask);
        }
        self.acquire_charged(ask)
    }

    /// `ask` priced as its class stands now: its CPU work, and with a budget its charge, the
    /// least it will cost and whether its class has shown its cost. A waiter is priced again
    /// when it may go, for its class may have shown its cost meanwhile (a cold start queues
    /// many on the first guess).
    pub(super) fn priced(&self, ask: Ask) -> Ask {
        let Ask {
            class, declared, ..
        } = ask;
        let ask = self.priced_for_cpu(ask);
        let Some(budget) = self.settings.budget else {
            return ask;
        };
        // No more than the budget can ever hold beside the baseline: a class that once cost
        // more than the budget is admitted alone, not only over the budget.
        let room = budget
            .saturating_sub(self.footprint.baseline())
            .max(declared);
        let estimate = self.classes.estimate(class, declared);
        let charge = estimate.charge.min(room);
        Ask {
            charge,
            least: estimate.least.min(charge),
            // Only where polls are measured can a class become known.
            known: self.gauge.thread_allocations().is_none() || estimate.known,
            ..ask
        }
    }

    /// `ask` with the CPU work it brings, where the CPU gate is on (none where it is off): in
    /// microseconds, what its class demands for such a body, or what requests in general do;
    /// whether its work comes once its body has arrived (it declared one, or its class has
    /// shown bodies), and how long its class's bodies take to; and whether it polls long
    /// enough to keep the runtime late by itself (see [`cpu`](super::cpu)): one whose work
    /// comes with a body may, until its class has shown its polls.
    fn priced_for_cpu(&self, ask: Ask) -> Ask {
        let Ask {
            class, declared, ..
        } = ask;
        if !self.cpu.is_enabled() {
            return Ask {
                cpu_us: 0,
                body_us: None,
                long: false,
                ..ask
            };
        }
        let work = self.classes.work(class, declared);
        let body_us = work.body_us.or((declared > 0).then_some(0));
        let poll_ns = work.longest_poll_ns;
        let long = |ns| self.cpu.polls_long(ns);
        Ask {
            cpu_us: work
                .cpu_ns
                .map_or_else(|| self.cpu.typical_us(), |ns| ns.div_ceil(1000)),
            body_us,
            long: match body_us {
                Some(_) => poll_ns.is_none_or(long),
                None => poll_ns.is_some_and(long),
            },
            ..ask
        }
    }

    fn acquire_charged(self: &Arc<Self>, ask: Ask) -> Acquired {
        let memory = self.gauge.allocated_bytes();
        let (goes, queued) = match self.try_admit(memory, ask) {
            Ok(()) => return Acquired::Admitted(Permit::new(Arc::clone(self), ask)),
            Err(_) if self.settings.observe_only => return self.admit_past_limits(memory, ask),
            Err(standing) => standing,
        };
        // Full, or closed, and no room to wait: answer without the lock. The queue length may
        // be an instant old, which only matters at the boundary.
        let no_room = (queued || matches!(goes, Goes::Blocked(_)))
            && ask.priority != Priority::Critical
            && (self.waitlist.len() >= self.settings.queue_capacity || self.waitlist.is_closed());
        let limit = match no_room {
            true => Some(goes.blame_queued()),
            false => self.rejects_at_once(memory, ask),
        };
        match limit {
            Some(limit) => {
                Acquired::Rejected(self.reject_admission(ask.priority, Reason::QueueFull, limit))
            }
            None => self.acquire_locked(memory, ask),
        }
    }

    /// Whether a request that cannot go at once is rejected instead of queueing, and for
    /// which limit: a `Sheddable` one, while the queue is half full or memory stands above
    /// the soft limit (whatever else holds it back).
    pub(super) fn rejects_at_once(&self, memory: u64, ask: Ask) -> Option<Limit> {
        if ask.priority != Priority::Sheddable {
            return None;
        }
        let state = self.state.load(SeqCst);
        let fit = self.fit(state, memory, ask);
        self.rejects_sheddable(fit)
            .then(|| fit.blame(state & QUEUED != 0))
    }

    /// Whether a `Sheddable` request that stands as `fit` is rejected instead of queueing.
    pub(super) fn rejects_sheddable(&self, fit: Fit) -> bool {
        self.waitlist.len() * 2 >= self.settings.queue_capacity || fit.above_soft()
    }

    /// Admits without the lock if nobody waits and the request fits below the soft limit;
    /// otherwise says how it goes, and whether anyone waits.
    fn try_admit(&self, memory: u64, ask: Ask) -> Result<(), (Goes, bool)> {
        let mut state = self.state.load(SeqCst);
        loop {
            let goes = self.goes(state, memory, ask);
            let over_budget = match goes {
                _ if state & QUEUED != 0 => return Err((goes, true)),
                Goes::Fits => false,
                // Progress guarantee: nothing in flight, nobody waiting, and nowhere to wait
                // for a fresh reading (otherwise the next sample decides, in `grant`).
                Goes::Blocked(Limit::Memory)
                    if in_flight(state) == 0 && self.settings.queue_capacity == 0 =>
                {
                    true
                }
                _ => return Err((goes, false)),
            };
            match self.state.compare_exchange_weak(
                state,
                state + claim(kib(ask.charge)),
                SeqCst,
                SeqCst,
            ) {
                Ok(_) => {
                    self.admitted(ask, over_budget, memory);
                    return Ok(());
                }
                Err(now) => state = now,
            }
        }
    }
}
