//! The waiter queue and its order: first in, first out, with bounded backfill.
//!
//! Waiters are admitted in arrival order, except that a waiter that fits in what a blocked
//! head cannot use may go ahead of it. Each time that happens the head counts a pass; after
//! [`MAX_PASSES`] the head holds the line and nobody behind it goes first until it is
//! admitted or leaves. So a small request does not wait behind a large one, and a large one
//! is never starved: it waits for at most [`MAX_PASSES`] others beyond those ahead of it, and
//! never past its deadline (the response future's business).

use std::{collections::BTreeMap, task::Waker};

use super::Ask;

/// How many waiters may go ahead of a blocked head before it holds the line.
pub(crate) const MAX_PASSES: u32 = 32;
/// How many blocked waiters a grant looks past for one that fits, at most.
const SCAN: usize = 64;

pub(super) struct Waiter {
    pub(super) ask: Ask,
    /// How many waiters went ahead of this one while it was the blocked head.
    passes: u32,
    pub(super) waker: Option<Waker>,
}

/// What the controller says of one waiter, given the limits as they stand.
pub(super) enum Verdict {
    /// It fits, and was admitted: the controller has counted it.
    Admitted,
    /// It does not fit; a smaller waiter behind it might.
    Waits,
    /// Nobody can be admitted now (no free slot).
    Stop,
}

#[derive(Default)]
pub(super) struct Queue {
    /// Keyed by arrival number, so iteration order is arrival order and a cancelled waiter
    /// leaves in O(log n), without unsafe intrusive lists.
    waiters: BTreeMap<u64, Waiter>,
    next_id: u64,
}

impl Queue {
    pub(super) fn push(&mut self, ask: Ask) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let waiter = Waiter {
            ask,
            passes: 0,
            waker: None,
        };
        self.waiters.insert(id, waiter);
        id
    }

    pub(super) fn remove(&mut self, id: u64) -> Option<Waiter> {
        self.waiters.remove(&id)
    }

    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut Waiter> {
        self.waiters.get_mut(&id)
    }

    pub(super) fn len(&self) -> usize {
        self.waiters.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.waiters.is_empty()
    }

    /// Every waiter's waker, taken (to wake them all, as on close).
    pub(super) fn take_wakers(&mut self) -> Vec<Waker> {
        self.waiters
            .values_mut()
            .filter_map(|waiter| waiter.waker.take())
            .collect()
    }

    /// Offers waiters to `verdict` in order (`true` with the head, the first that waits)
    /// and removes those it admits; returns their wakers, to be woken once the lock is
    /// released.
    pub(super) fn admit(
        &mut self,
        mut verdict: impl FnMut(&Waiter, bool) -> Verdict,
    ) -> Vec<Waker> {
        let mut wakers = Vec::new();
        let mut head: Option<u64> = None;
        let mut cursor = 0;
        let mut blocked = 0;
        while blocked < SCAN {
            let Some((&id, waiter)) = self.waiters.range(cursor..).next() else {
                break;
            };
            cursor = id + 1;
            match verdict(waiter, head.is_none()) {
                Verdict::Stop => break,
                Verdict::Waits => {
                    if head.is_none() {
                        if waiter.passes >= MAX_PASSES {
                            break; // the head holds the line
                        }
                        head = Some(id);
                    }
                    blocked += 1;
                }
                Verdict::Admitted => {
                    if let Some(waiter) = self.waiters.remove(&id) {
                        wakers.extend(waiter.waker);
                    }
                    if let Some(head) = head.and_then(|head| self.waiters.get_mut(&head)) {
                        head.passes += 1;
                        if head.passes >= MAX_PASSES {
                            break;
                        }
                    }
                }
            }
        }
        wakers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(charge: u64) -> Ask {
        Ask {
            class: super::super::classes::ClassId::OVERFLOW,
            charge,
            declared: 0,
        }
    }

    fn queue(charges: &[u64]) -> Queue {
        let mut queue = Queue::default();
        for &charge in charges {
            queue.push(ask(charge));
        }
        queue
    }

    /// Admits what fits in `room`, as the controller would with that much memory free.
    fn admit_within(queue: &mut Queue, room: &mut u64) -> usize {
        let mut admitted = 0;
        queue.admit(|waiter, _| {
            if waiter.ask.charge <= *room {
                *room -= waiter.ask.charge;
                admitted += 1;
                Verdict::Admitted
            } else {
                Verdict::Waits
            }
        });
        admitted
    }

    #[test]
    fn in_order_while_they_fit() {
        let mut q = queue(&[1, 2, 3]);
        let mut order = Vec::new();
        q.admit(|w, head| {
            order.push((w.ask.charge, head));
            Verdict::Admitted
        });
        assert_eq!(order, [(1, true), (2, true), (3, true)]);
        assert!(q.is_empty());
    }

    #[test]
    fn small_waiters_pass_a_blocked_head() {
        let mut q = queue(&[10, 1, 1, 10, 1]);
        let mut room = 5;
        admit_within(&mut q, &mut room);
        assert_eq!(room, 2, "three small ones went ahead");
        let left: Vec<u64> = q.waiters.values().map(|w| w.ask.charge).collect();
        assert_eq!(left, [10, 10]);
        assert_eq!(q.waiters.values().next().map(|w| w.passes), Some(3));
    }

    #[test]
    fn the_head_holds_the_line_after_max_passes() {
        let mut q = queue(&[100]);
        for _ in 0..MAX_PASSES + 5 {
            q.push(ask(1));
        }
        let mut room = u64::from(MAX_PASSES) + 5;
        assert_eq!(admit_within(&mut q, &mut room), MAX_PASSES as usize);
        // Later grants admit nobody behind it, whatever fits.
        let mut room = 9;
        assert_eq!(admit_within(&mut q, &mut room), 0);
        // Once it fits, it goes, and the line moves again.
        let mut room = 105;
        assert_eq!(admit_within(&mut q, &mut room), 6);
        assert!(q.is_empty());
    }

    #[test]
    fn stop_admits_nobody() {
        let mut q = queue(&[1, 1]);
        assert!(q.admit(|_, _| Verdict::Stop).is_empty());
        assert_eq!(q.len(), 2);
    }
}
