//! The waiting side of the controller: a request that cannot go at once joins the queue (or
//! is rejected), and waiters are admitted in the queue's order as releases, recharges and
//! fresh readings make room; waiters held back by the CPU longer than their target are shed;
//! a waiter leaves on its deadline or when its client goes.

use std::{
    sync::{Arc, atomic::Ordering::SeqCst},
    task::Waker,
};

use super::{
    Controller,
    admit::Acquired,
    fit::Room,
    inputs::{Ask, Reading},
    permit::Permit,
    queue::{Left, Queue, QueueTarget, STANDING_NS, Verdict},
    ticket::Ticket,
    word::{QUEUED, in_flight},
};
use crate::{
    priority::Priority,
    rejection::{Limit, Reason},
};

impl Controller {
    /// Under the lock: admits at once if nobody of its priority or a higher one waits and
    /// the request may go (above the soft limit too, when no other request's cost is
    /// unknown), else queues or rejects it. In a full queue, a `Critical` request takes the
    /// place of the newest waiter of a lower priority, if any.
    pub(super) fn acquire_locked(self: &Arc<Self>, memory: u64, ask: Ask) -> Acquired {
        let mut queue = self.lock();
        let state = self.state.load(SeqCst);
        let fit = self.fit(state, memory, ask);
        if !queue.holds_back(ask.priority) {
            // (A starving priority holds everyone back: see `Queue::holds_back`.)
            if let Some(over_budget) = self.may_admit_locked(fit.goes(), state, true, Reading::Last)
            {
                // Only the lock holder adds while the fast path rejects; a racing release
                // only subtracts.
                self.admit(ask, over_budget, memory);
                queue.admitted(ask.priority);
                drop(queue);
                return Acquired::Admitted(Permit::new(Arc::clone(self), ask));
            }
        }
        // Judged before a critical request takes anyone's place: it would not use it.
        let (for_cpu, limit) = (fit.cpu_alone(), fit.blame(state & QUEUED != 0));
        let standing = if for_cpu {
            self.would_wait_too_long(&queue, ask).then_some(Limit::Cpu)
        } else {
            (limit == Limit::Memory && self.memory_queue_stands(&queue, ask))
                .then_some(Limit::Memory)
        };
        let mut evicted = None;
        if standing.is_none()
            && ask.priority == Priority::Critical
            && queue.len() >= self.settings.queue_capacity
            && !self.waitlist.is_closed()
        {
            evicted = queue.evict_below(ask.priority, |lower| {
                self.blame_waiter(state, memory, *lower)
            });
        }
        if (queue.len() >= self.settings.queue_capacity && evicted.is_none())
            || self.waitlist.is_closed()
        {
            drop(queue);
            return Acquired::Rejected(self.reject_admission(
                ask.priority,
                Reason::QueueFull,
                limit,
            ));
        }
        if let Some(limit) = standing {
            drop(queue);
            return Acquired::Rejected(self.reject_admission(
                ask.priority,
                Reason::StandingQueue,
                limit,
            ));
        }
        let id = queue.push(ask, self.clock.now_ns(), for_cpu);
        self.state.fetch_or(QUEUED, SeqCst);
        // A release between the failed try and the bit did not see the bit: check again, now
        // that every later release will. This may grant the new ticket itself.
        let wakers = self.grant(&mut queue, memory, Reading::Last);
        drop(queue);
        wakers
            .into_iter()
            .chain(wakers_of(evicted))
            .for_each(Waker::wake);
        tracing::trace!(charge = ask.charge, "request queued");
        Acquired::Queued(Ticket {
            controller: Arc::clone(self),
            id,
            ask,
            done: false,
        })
    }

    /// Lets waiters in, if any, on the last reading: something that held them back fell.
    pub(crate) fn grant_if_queued(&self) {
        if self.state.load(SeqCst) & QUEUED != 0 {
            self.grant_waiters(Reading::Last);
        }
    }

    pub(super) fn grant_waiters(&self, reading: Reading) {
        self.grant_waiters_after(reading, 0);
    }

    /// [`grant_waiters`](Self::grant_waiters) once a request that passed a blocked head,
    /// charged `passer` bytes then, has ended (0: none).
    pub(super) fn grant_waiters_after(&self, reading: Reading, passer: u64) {
        let memory = self.gauge.allocated_bytes();
        let mut queue = self.lock();
        queue.passer_ended(passer);
        let wakers = self.grant(&mut queue, memory, reading);
        drop(queue);
        wakers.into_iter().for_each(Waker::wake);
    }

    /// Removes ticket `id` from the queue: returns why it leaves without a permit if it was
    /// still queued (its wait ends: `queue_timeout`) or had been evicted (`queue_full`), and
    /// what it was admitted for (and whether past a blocked head) if it had been granted
    /// meanwhile. Counts nothing.
    pub(super) fn leave_queue(&self, id: u64, ask: Ask) -> Result<(Ask, bool), (Reason, Limit)> {
        let memory = self.gauge.allocated_bytes();
        let mut queue = self.lock();
        match queue.leave(id) {
            Left::Granted(granted, passed) => Ok((granted, passed)),
            Left::Told => Ok((ask, false)),
            Left::Evicted(reason, limit) => Err((reason, limit)),
            Left::Waiting => {
                let limit = self.blame_waiter(self.state.load(SeqCst), memory, ask);
                // The head may have left: those behind it may fit now.
                let wakers = self.grant(&mut queue, memory, Reading::Last);
                drop(queue);
                wakers.into_iter().for_each(Waker::wake);
                Err((Reason::QueueTimeout, limit))
            }
        }
    }

    /// Admits waiters in the queue's order while they may go; returns their wakers, to be
    /// woken once the lock is released. Clears the `QUEUED` bit when the queue empties.
    ///
    /// The progress guarantee (nothing in flight: admit the head over the budget) waits for a
    /// fresh reading: right after a large request ends, the last reading may still show its
    /// memory for up to one sample interval.
    ///
    /// Checking and then adding is safe here: while the bit is set, only the lock holder
    /// adds to the state word; everyone else only subtracts.
    pub(super) fn grant(&self, queue: &mut Queue, memory: u64, reading: Reading) -> Vec<Waker> {
        // Once closed, waiters leave with a rejection when next polled (`close` woke them).
        let wakers = if self.waitlist.is_closed() {
            Vec::new()
        } else {
            let mut wakers = queue.admit(|waiter, head| {
                // Its class may have shown its cost since it queued.
                waiter.ask = self.priced(waiter.ask);
                let ask = waiter.ask;
                let state = self.state.load(SeqCst);
                let goes = self.goes(state, memory, ask);
                match self.may_admit_locked(goes, state, head.is_some(), reading) {
                    Some(over_budget) => {
                        self.admit(ask, over_budget, memory);
                        Verdict::Admitted
                    }
                    None if in_flight(state) >= self.adaptive.get() as u64 => Verdict::Stop,
                    None if head
                        .is_some_and(|passing| self.fits_but_for(state, memory, ask, passing)) =>
                    {
                        Verdict::Holds
                    }
                    None => Verdict::Waits,
                }
            });
            wakers.extend(self.reject_standing(queue, memory));
            wakers
        };
        if queue.is_empty() {
            self.state.fetch_and(!QUEUED, SeqCst);
        }
        self.waitlist.set_len(queue.len());
        wakers
    }

    /// Whether `ask`, held back by the CPU, would wait longer than its target allows: the
    /// work queued for the CPU ahead of it and its own, spread over the workers, is its wait.
    fn would_wait_too_long(&self, queue: &Queue, ask: Ask) -> bool {
        let Some(longest) = self.settings.queue_target.longest_ns(ask.cpu_us) else {
            return false;
        };
        let ahead_us = queue.cpu_us() + ask.cpu_us;
        ahead_us.saturating_mul(1000) / self.cpu.workers() as u64 > longest
    }

    /// Whether `ask`, held back by memory, of a class whose requests in flight hold half the
    /// memory budget or more (so that it waits for them to finish), joins a standing queue
    /// ([`Queue::stands`]) where it would wait longer than one service time of its class,
    /// and longer than a queue may stand. Its class's waiters go at the rate its requests in
    /// flight finish, so with `n` in flight, each served in `w`, the `k` of its class waiting
    /// ahead of it hold it for about `(k + 1) × w / n`. (A class that holds little of the
    /// budget waits on others, or on nothing: small requests pass the large ones a blocked
    /// head holds back, see [`queue`](super::queue).) A burst is let in whole: only a queue
    /// that has had waiters for a while turns arrivals away.
    fn memory_queue_stands(&self, queue: &Queue, ask: Ask) -> bool {
        let Some(budget) = self.settings.budget else {
            return false;
        };
        if self.settings.queue_target == QueueTarget::Off || !queue.stands(self.clock.now_ns()) {
            return false;
        }
        // The cheap tests first: counting the class's waiters walks the queue.
        let (in_flight, served_ns) = self.classes.in_flight(ask.class);
        if in_flight.saturating_mul(ask.charge) < budget / 2 || served_ns == 0 {
            return false;
        }
        let wait_ns = (queue.alike(ask.class) + 1).saturating_mul(served_ns) / in_flight.max(1);
        wait_ns > served_ns.max(STANDING_NS)
    }

    /// While the CPU cannot keep up (saturated, or the runtime late enough for the live limit
    /// to fall), sends away the waiters held back by it longer than their target allows;
    /// those held back by memory keep their place. Returns their wakers.
    pub(super) fn reject_standing(&self, queue: &mut Queue, memory: u64) -> Vec<Waker> {
        let target = self.settings.queue_target;
        if target == QueueTarget::Off
            || queue.is_empty()
            || !(self.cpu.is_saturated() || self.adaptive.has_fallen())
        {
            return Vec::new();
        }
        let state = self.state.load(SeqCst);
        queue.reject_standing(self.clock.now_ns(), |ask, waited_ns| {
            if target
                .longest_ns(ask.cpu_us)
                .is_none_or(|longest| waited_ns <= longest)
            {
                return None;
            }
            let fit = self.fit(state, memory, *ask);
            if fit.cpu_alone() {
                return Some(Limit::Cpu);
            }
            // Held back by the live limit only: with nobody in flight, it would fit in memory
            // (where it stands in memory does not depend on how many are in flight).
            let slot = fit.slots == Some(Limit::Adaptive);
            (slot && fit.memory != Room::Over).then_some(Limit::Adaptive)
        })
    }
}

/// The waker of a waiter evicted to make room, if any.
fn wakers_of(evicted: Option<Option<Waker>>) -> impl Iterator<Item = Waker> {
    evicted.flatten().into_iter()
}
