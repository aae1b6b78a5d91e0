//! What a request's body meter tells its permit: whether the body was cut off, the least
//! the request must be charged for it, how long its handler has waited for the client's
//! bytes (time that is the client's, not work), and, where the CPU gate is on, its turn to
//! start the work that comes once the body is in.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use super::{Controller, cpu::Turn};

/// What a request's body meter tells the rest of the layer: whether the body was cut off,
/// the least its request must be charged for it, and how long its handler has waited for the
/// client's bytes (time that is the client's, not work).
#[derive(Debug)]
pub(crate) struct BodyProgress {
    floor: AtomicU64,
    cut: AtomicBool,
    /// Time the handler has waited for data, in nanoseconds; `u64::MAX` once the whole body
    /// has arrived.
    waited_ns: AtomicU64,
    /// Where the CPU gate is on: the request's turn to start its work once its body is in.
    pub(crate) turn: Turn,
    /// The pool whose gate gives the turn, where its work comes once its body has.
    pool: Option<Arc<Controller>>,
}

impl BodyProgress {
    /// `pool`: where the request's work comes once its body has, the pool whose CPU gate
    /// gives it its turn.
    pub(crate) fn new(declared: u64, pool: Option<Arc<Controller>>) -> Self {
        Self {
            floor: AtomicU64::new(declared),
            cut: AtomicBool::new(false),
            waited_ns: AtomicU64::new(0),
            turn: Turn::default(),
            pool,
        }
    }

    /// How long the handler has waited for the client's bytes, while part of the body is
    /// still to come; `None` once it has all arrived.
    pub(crate) fn waited(&self) -> Option<Duration> {
        match self.waited_ns.load(Relaxed) {
            u64::MAX => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// The least the request is charged for its body.
    pub(crate) fn floor(&self) -> u64 {
        self.floor.load(Relaxed)
    }

    pub(crate) fn set_floor(&self, bytes: u64) {
        self.floor.store(bytes, Relaxed);
    }

    /// `None`: the whole body has arrived.
    pub(crate) fn set_waited(&self, waited: Option<Duration>) {
        let ns = waited.map_or(u64::MAX, |w| (w.as_nanos() as u64).min(u64::MAX - 1));
        self.waited_ns.store(ns, Relaxed);
    }

    /// Whether the request's work may start now that its body is in; if not, `waker` is
    /// woken when it may be.
    pub(crate) fn take_turn(&self, waker: &std::task::Waker) -> bool {
        self.pool
            .as_ref()
            .is_none_or(|pool| pool.cpu.take_turn(&self.turn, waker))
    }

    pub(crate) fn cut(&self) {
        self.cut.store(true, Relaxed);
    }

    pub(crate) fn is_cut(&self) -> bool {
        self.cut.load(Relaxed)
    }
}
