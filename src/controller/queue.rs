//! The waiter queue and its order: first in, first out, with bounded backfill.
//!
//! Waiters are admitted in arrival order, except that a waiter that fits in what a blocked
//! head cannot use may go ahead of it. The head counts the waiters that pass it and what they
//! are charged; once they number [`MAX_PASSES`] or their charges add up to its own, the head
//! holds the line and nobody behind it goes first until it is admitted or leaves. So small
//! requests do not wait behind a large one (a 64 MiB head lets up to 1,024 requests of 64 KiB
//! by), and a large one is never starved: it waits for at most its own size in others beyond
//! those ahead of it, and never past its deadline (the response future's business).

use std::{collections::BTreeMap, task::Waker};

use super::Ask;

/// How many waiters may go ahead of a blocked head before it holds the line.
pub(crate) const MAX_PASSES: u32 = 1024;
/// How many blocked waiters a grant looks past for one that fits, at most.
const SCAN: usize = 64;

pub(super) struct Waiter {
    pub(super) ask: Ask,
    /// How many waiters went ahead of this one while it was the blocked head...
    passes: u32,
    /// ...and what they were charged.
    passed_bytes: u64,
    pub(super) waker: Option<Waker>,
}

impl Waiter {
    /// Whether enough have passed this waiter: as many as [`MAX_PASSES`], or as much as its
    /// own charge.
    fn holds_the_line(&self) -> bool {
        self.passes >= MAX_PASSES || self.passed_bytes >= self.ask.charge.max(1)
    }
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
            passed_bytes: 0,
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
                        if waiter.holds_the_line() {
                            break;
                        }
                        head = Some(id);
                    }
                    blocked += 1;
                }
                Verdict::Admitted => {
                    let Some(admitted) = self.waiters.remove(&id) else {
                        break;
                    };
                    wakers.extend(admitted.waker);
                    if let Some(head) = head.and_then(|head| self.waiters.get_mut(&head)) {
                        head.passes += 1;
                        head.passed_bytes = head.passed_bytes.saturating_add(admitted.ask.charge);
                        if head.holds_the_line() {
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
            least: 0,
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
        let head = q.waiters.values().next().unwrap();
        assert_eq!((head.passes, head.passed_bytes), (3, 3));
    }

    #[test]
    fn the_head_holds_the_line_once_its_own_charge_has_passed() {
        let mut q = queue(&[100]);
        for _ in 0..150 {
            q.push(ask(1));
        }
        let mut room = 99;
        assert_eq!(admit_within(&mut q, &mut room), 99);
        let mut room = 50;
        assert_eq!(admit_within(&mut q, &mut room), 1, "one more makes 100");
        // Later grants admit nobody behind it, whatever fits.
        let mut room = 99;
        assert_eq!(admit_within(&mut q, &mut room), 0);
        // Once it fits, it goes, and the line moves again.
        let mut room = 200;
        assert_eq!(admit_within(&mut q, &mut room), 51);
        assert!(q.is_empty());
    }

    #[test]
    fn the_head_holds_the_line_after_max_passes() {
        let mut q = queue(&[u64::MAX]);
        for _ in 0..MAX_PASSES + 5 {
            q.push(ask(0));
        }
        let mut room = u64::MAX - 1;
        assert_eq!(admit_within(&mut q, &mut room), MAX_PASSES as usize);
        assert_eq!(admit_within(&mut q, &mut room), 0);
    }

    #[test]
    fn stop_admits_nobody() {
        let mut q = queue(&[1, 1]);
        assert!(q.admit(|_, _| Verdict::Stop).is_empty());
        assert_eq!(q.len(), 2);
    }
}
