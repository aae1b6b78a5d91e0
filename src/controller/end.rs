//! What an ended request teaches its class and the CPU gate, and gives back: its slot, its
//! charge, the bytes held beside it, and the reservation beyond the budget if it held it.

use super::{Controller, classes::ClassId, cpu::Spent};

/// What a permit hands the pool when it goes.
#[derive(Debug)]
pub(crate) struct Ended {
    pub(crate) class: ClassId,
    pub(crate) declared: u64,
    /// The most it held, where polls are measured and one showed its cost.
    pub(crate) peak: Option<u64>,
    /// What its polls showed of its CPU demand.
    pub(crate) spent: Spent,
    /// It held the reservation beyond the budget.
    pub(crate) beyond: bool,
    /// It was admitted past the limits, observing only.
    pub(crate) past_limits: bool,
    /// Bytes held beside its charge.
    pub(crate) held: u64,
    /// What the state word held for it, in KiB.
    pub(crate) charged_kib: u64,
    /// A poll showed its cost.
    pub(crate) settled: bool,
    /// What it was charged when it passed a blocked head (0: it did not).
    pub(crate) passer: u64,
}

impl Controller {
    /// A request ended: its class and the gate learn what it showed, then everything it held
    /// goes back, and waiters may go.
    #[inline]
    pub(crate) fn end(&self, ended: Ended) {
        let Ended {
            class, declared, ..
        } = ended;
        let classes = &self.classes;
        let spent = ended.spent;
        classes.ended(class, spent.served_ns);
        if let Some(peak) = ended.peak {
            classes.observe_end(class, declared, peak);
        }
        if let Some((used_ns, longest_ns)) = spent.demand {
            classes.observe_cpu(class, declared, used_ns, longest_ns);
            self.cpu.learn(used_ns);
        }
        if let Some(body_us) = spent.body_us {
            classes.observe_body(class, body_us);
        }
        if ended.beyond {
            self.end_reservation_beyond();
        }
        if ended.past_limits {
            self.end_past_limits();
        }
        if ended.held != 0 {
            self.footprint.let_go(ended.held);
        }
        self.release(ended.charged_kib, !ended.settled, ended.passer);
    }
}
