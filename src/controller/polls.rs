//! What a permit's polls tell the pool's CPU gate (see [`cpu`](super::cpu)): the work a
//! request brings, when it may start it, how long its polls took, and what it showed once it
//! ends.

use super::{
    Controller,
    cpu::{Demand, Spent, Turn},
    inputs::Ask,
};

impl Controller {
    /// The CPU demand of a request admitted for `ask`; its body's time, if its work comes
    /// with one, runs from now.
    pub(crate) fn demand(&self, ask: &Ask) -> Demand {
        let admitted_ns = ask.body_us.map(|_| self.clock.now_ns());
        Demand::new(&self.cpu, ask.cpu_us, admitted_ns, ask.long)
    }

    /// Whether polls are timed: where the CPU gate is on.
    #[inline]
    pub(crate) fn times_polls(&self) -> bool {
        self.cpu.is_enabled()
    }

    /// `demand`'s work comes once its body has arrived; the body waits for its turn at
    /// `turn`.
    pub(crate) fn comes_with_body(&self, demand: &mut Demand, turn: &Turn) {
        demand.comes_with_body(&self.cpu, turn);
    }

    /// A poll of `demand` began at `started_ns` and took `spent_ns` (see [`Demand::polled`]);
    /// what the gate holds for it may fall, which lets waiters in.
    #[inline]
    pub(crate) fn polled(
        &self,
        demand: &mut Demand,
        (started_ns, spent_ns): (u64, u64),
        body: Option<(&Turn, bool)>,
        idle: bool,
    ) {
        if demand.polled(&self.cpu, started_ns, spent_ns, body, idle) {
            self.grant_if_queued();
        }
    }

    /// Whether `demand`'s work may start now; if not, `waker` is woken when it may.
    #[inline]
    pub(crate) fn take_turn(&self, demand: &Demand, waker: &std::task::Waker) -> bool {
        demand.take_turn(&self.cpu, waker)
    }

    /// `demand`'s request ended, its body's turn at `turn`: the gate gets back what it held
    /// for it. Returns what its polls showed (nothing where the gate is off).
    #[inline]
    pub(crate) fn spent(&self, demand: &mut Demand, turn: Option<&Turn>) -> Spent {
        match self.cpu.is_enabled() {
            true => demand.end(&self.cpu, turn),
            false => Spent::default(),
        }
    }
}
