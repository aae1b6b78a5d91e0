//! The queue behind its lock, with what the request path reads without the lock: its length
//! and whether the pool has closed (as tokio keeps `closed` with its semaphore's waiters).

use std::sync::{
    Mutex, MutexGuard, PoisonError,
    atomic::{
        AtomicBool, AtomicUsize,
        Ordering::{Relaxed, SeqCst},
    },
};

use super::queue::Queue;

#[derive(Default)]
pub(super) struct Waitlist {
    queue: Mutex<Queue>,
    /// The queue's length, written under the lock and read without it.
    len: AtomicUsize,
    /// Set on close: nothing queues any more.
    closed: AtomicBool,
}

impl std::fmt::Debug for Waitlist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waitlist")
            .field("len", &self.len())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl Waitlist {
    pub(super) fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue stays consistent at every unlock, and nothing in the controller panics
        // while holding the lock; never let a poisoned lock take the request path down.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The queue's length, an instant old.
    pub(super) fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// Under the lock: the queue's length now.
    pub(super) fn set_len(&self, len: usize) {
        self.len.store(len, Relaxed);
    }

    pub(super) fn close(&self) {
        self.closed.store(true, SeqCst);
    }

    pub(super) fn is_closed(&self) -> bool {
        self.closed.load(SeqCst)
    }
}
