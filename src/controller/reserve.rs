//! Reservations: a handler that knows its cost adds it to its request's charge before
//! allocating (see [`Charge`] and [`Reservation`](crate::Reservation)).

use std::sync::atomic::Ordering::SeqCst;

use super::{
    Controller,
    classes::ClassId,
    permit::Charge,
    word::{charge, charged_bytes},
};
use crate::rejection::Limit;

impl Controller {
    /// Whether the pool's requests share their charge with a reservation (an allocation per
    /// request, so only pools that take reservations against a budget pay it).
    pub(crate) fn shares_charges(&self) -> bool {
        self.settings.reservations && self.settings.budget.is_some()
    }

    /// Reserves `bytes` more for an admitted request of `class` that declared `declared`
    /// body bytes (see [`Charge`]), if memory
    /// allows. If it does not, one request at a time may still reserve beyond the budget, so
    /// that requests waiting on each other's reservations cannot wedge the pool. Returns the
    /// limit in the way otherwise, or `None` if the request has ended.
    pub(crate) fn reserve(
        &self,
        charge: &Charge,
        class: ClassId,
        declared: u64,
        bytes: u64,
    ) -> Result<(), Option<Limit>> {
        let rise = self.classes.rise(class, declared);
        // Requests of this class will be charged it before they reserve it.
        self.classes.observe_rise(class, declared, bytes);
        loop {
            let from = charge.kib().ok_or(None)?;
            let to = charge.target_kib(rise, bytes).max(from);
            let beyond = self.claim_memory(to - from)?;
            if charge.swap(from, to) {
                charge.add_reserved(bytes);
                if beyond {
                    charge.beyond.store(true, SeqCst);
                }
                return Ok(());
            }
            // The permit moved the charge meanwhile (or the request ended): undo, try again.
            self.recharge(to - from, 0);
            if beyond {
                self.end_reservation_beyond();
            }
        }
    }

    /// Adds `kib` to the charged bytes of the word if memory allows, or beyond the budget
    /// if nobody else is (then `Ok(true)`).
    fn claim_memory(&self, kib: u64) -> Result<bool, Limit> {
        if kib == 0 {
            return Ok(false);
        }
        let memory = self.gauge.allocated_bytes();
        let mut state = self.state.load(SeqCst);
        loop {
            let fits = self.settings.budget.is_none_or(|budget| {
                let spoken_for = self.footprint.spoken_for(memory, charged_bytes(state));
                !self.memory_rejects(spoken_for.saturating_add(kib * 1024) > budget)
            });
            let beyond = !fits && self.footprint.take_beyond();
            if !fits && !beyond {
                return Err(Limit::Memory);
            }
            match self
                .state
                .compare_exchange(state, state + charge(kib), SeqCst, SeqCst)
            {
                Ok(_) => return Ok(beyond),
                Err(now) => {
                    if beyond {
                        self.end_reservation_beyond();
                    }
                    state = now;
                }
            }
        }
    }

    /// The request holding the reservation beyond the budget has ended.
    pub(crate) fn end_reservation_beyond(&self) {
        self.footprint.end_beyond();
    }
}
