//! A place in the queue: granted a permit, or rejected at the deadline, on close, or when a
//! higher priority takes its place.

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll},
};

use super::{Controller, inputs::Ask, permit::Permit, queue::Left};
use crate::priority::Priority;
use crate::rejection::Rejection;

/// A place in the queue. Dropping it leaves the queue, or gives back a grant not yet taken.
///
/// **Cancel safety.** Dropping a ticket loses its place in line; nothing else is lost.
#[must_use]
pub(crate) struct Ticket {
    pub(super) controller: Arc<Controller>,
    pub(super) id: u64,
    pub(super) ask: Ask,
    /// Whether the grant was taken as a permit, or the ticket left the queue.
    pub(super) done: bool,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .field("charge", &self.ask.charge)
            .field("done", &self.done)
            .finish()
    }
}

impl Ticket {
    /// Whether the ticket still waits (not granted, not gone). For tests, which must not
    /// settle a ticket to look at it.
    #[cfg(test)]
    pub(crate) fn is_waiting(&self) -> bool {
        !self.done && self.controller.lock().get_mut(self.id).is_some()
    }

    /// The charge the ticket was granted with, or asks for while it waits.
    /// Whether it has been granted and not yet observed.
    #[cfg(test)]
    pub(crate) fn is_granted(&self) -> bool {
        !self.done && self.controller.lock().granted_charge(self.id).is_some()
    }

    #[cfg(test)]
    pub(crate) fn charge(&self) -> u64 {
        let mut queue = self.controller.lock();
        match queue.get_mut(self.id) {
            Some(waiter) => waiter.ask.charge,
            None => queue.granted_charge(self.id).unwrap_or(self.ask.charge),
        }
    }

    /// The pool the ticket waits in.
    pub(crate) fn controller(&self) -> &Arc<Controller> {
        &self.controller
    }

    /// The permit for `ask`: what the grant claimed, priced as its class stood then, past
    /// a blocked head or not.
    fn permit(&self, ask: Ask, passed: bool) -> Permit {
        let mut permit = Permit::new(Arc::clone(&self.controller), ask);
        if passed {
            permit.passed_a_head();
        }
        permit
    }

    /// Ready with the permit once granted, or with a rejection once the pool is closed;
    /// otherwise registers `cx`'s waker.
    pub(crate) fn poll_grant(&mut self, cx: &mut Context<'_>) -> Poll<Result<Permit, Rejection>> {
        if self.done {
            // Polled again after completion: a caller bug, answered without a second permit.
            return Poll::Pending;
        }
        let mut queue = self.controller.lock();
        if let Some(waiter) = queue.get_mut(self.id) {
            if self.controller.is_closed() {
                drop(queue);
                return Poll::Ready(self.expire());
            }
            match &mut waiter.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
            return Poll::Pending;
        }
        // No longer waiting: granted, or evicted; told under the same lock.
        let left = queue.leave(self.id);
        drop(queue);
        self.done = true;
        Poll::Ready(match left {
            Left::Evicted(reason, limit) => {
                Err(self
                    .controller
                    .reject_admission(self.ask.priority, reason, limit))
            }
            Left::Granted(ask, passed) => Ok(self.permit(ask, passed)),
            Left::Waiting | Left::Told => Ok(self.permit(self.ask, false)),
        })
    }

    /// The deadline passed: leave the queue with a rejection, unless the grant came first.
    pub(crate) fn expire(&mut self) -> Result<Permit, Rejection> {
        self.done = true;
        match self.controller.leave_queue(self.id, self.ask) {
            Err((reason, limit)) => {
                Err(self
                    .controller
                    .reject_admission(self.ask.priority, reason, limit))
            }
            Ok((ask, passed)) => Ok(self.permit(ask, passed)),
        }
    }

    /// The priority the ticket waits with.
    pub(crate) fn priority(&self) -> Priority {
        self.ask.priority
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok((ask, passed)) = self.controller.leave_queue(self.id, self.ask) {
            // Granted, but the future was dropped before it noticed: the permit it would
            // have become gives everything back.
            drop(self.permit(ask, passed));
        }
    }
}
