//! The waiter queue and its order: by priority, then first in, first out, with bounded
//! backfill.
//!
//! Waiters of a higher [`Priority`] are offered before those of a lower one. A priority that
//! has waited while [`MAX_OVERTAKES`] requests of higher ones were admitted has its oldest
//! waiter offered first, so that no priority starves (see [`Queue::admitted`]).
//!
//! Within that order, waiters are admitted in turn, except that a waiter that fits in what a
//! blocked head cannot use may go ahead of it. Once the head would fit but for the requests
//! that passed a head and are still in flight (what they were charged when they did), or once
//! [`MAX_PASSES`] have passed it, the head holds the line: nobody behind it goes first until it
//! is admitted or leaves. So small requests that come and go in what a large head cannot use
//! never keep it waiting, and a large one is never starved: it waits for what was in flight
//! before it, and never past its deadline (the response future's business). A grant looks past
//! at most [`SCAN`] waiters held back, and passes over those alike to one held back (of the
//! same priority, class, length and charge) without asking: hundreds of uploads held back for
//! memory do not hide a small request behind them.
//!
//! **A wait bounded by service time.** A waiter held back by a CPU that cannot keep up waits
//! only as long as its [`QueueTarget`] allows (by default its class's CPU demand, one service
//! time, 2 ms at least): a request that would wait longer is rejected when it
//! arrives, and one that has waited longer is sent away (`503`, `standing_queue`), since a
//! CPU-bound request's queue wait is the part of its latency the layer adds. A route of 50 µs
//! and one of 500 ms cannot share one absolute target. Only waiters that the CPU alone held
//! back count towards the predicted wait and are sent away: a waiter held back by memory keeps
//! its place. A queue that has had waiters for [`STANDING_NS`] without a break stands: then
//! an arrival that would wait for memory longer than one service time of its class is
//! rejected (see `Controller::memory_queue_stands`).

use std::{
    collections::{BTreeMap, HashMap},
    task::Waker,
    time::Duration,
};

use super::{classes::ClassId, inputs::Ask};
use crate::priority::Priority;
use crate::rejection::{Limit, Reason};

/// How long a request held back by the CPU may wait in the queue: twice the target, after
/// which it is sent away (`503`, `standing_queue`); one that would wait longer is rejected
/// when it arrives.
///
/// ```
/// use std::time::Duration;
/// use tower_admission::{AdmissionConfig, QueueTarget};
///
/// // The default: relative to each request's service time.
/// let auto = AdmissionConfig::default().queue_target(QueueTarget::Auto);
/// // A fixed target: at most 40 ms of waiting for the CPU.
/// let fixed = QueueTarget::Fixed(Duration::from_millis(20));
/// let fixed = AdmissionConfig::default().queue_target(fixed);
/// # let _ = (auto, fixed);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueTarget {
    /// Half the CPU demand of the request's cost class, 1 ms at least: a request waits at most
    /// about one service time of its own, so that, served while the gate holds the CPU's work
    /// to one and a half requests a worker, it is answered within about three. (One and a
    /// half times the demand, as before, left the answers served under open-loop overload
    /// twice as late as a static limit's, for no more of them served.)
    #[default]
    Auto,
    /// The same target for every request.
    Fixed(Duration),
    /// Never sent away for waiting: only the queue timeout ends a wait.
    Off,
}

impl QueueTarget {
    /// The shortest target `Auto` gives, in microseconds.
    const LEAST_AUTO_US: u64 = 1_000;

    /// The longest a request that brings `cpu_us` of work may wait for the CPU, in
    /// nanoseconds: twice its target; `None` when off.
    pub(crate) fn longest_ns(self, cpu_us: u64) -> Option<u64> {
        let target_us = match self {
            Self::Auto => (cpu_us / 2).max(Self::LEAST_AUTO_US),
            Self::Fixed(target) => target.as_micros() as u64,
            Self::Off => return None,
        };
        Some(target_us.saturating_mul(2_000))
    }
}

/// How long a queue may have waiters without a break before it counts as standing (CoDel's
/// interval): a burst that drains sooner is what a queue is for.
pub(super) const STANDING_NS: u64 = 100_000_000;
/// How many waiters may go ahead of a blocked head before it holds the line.
pub(crate) const MAX_PASSES: u32 = 1024;
/// How many requests of higher priorities may be admitted while a lower one waits before its
/// oldest waiter is offered first.
pub(crate) const MAX_OVERTAKES: u32 = 16;
/// A waiter's key is its priority's rank in the top bits, then its arrival number: the map's
/// order is the queue's order.
const RANK_SHIFT: u32 = 62;
/// How many blocked waiters a grant looks past for one that fits, at most.
const SCAN: usize = 64;
/// How many kinds of blocked waiter a grant remembers, to pass over the others of the kind
/// without asking: behind a head held back by memory, hundreds of uploads alike would
/// otherwise use up the scan before a small request behind them is offered.
const KINDS: usize = 8;

pub(super) struct Waiter {
    pub(super) ask: Ask,
    /// How many waiters went ahead of this one while it was the blocked head.
    passes: u32,
    pub(super) waker: Option<Waker>,
    /// When it joined the queue, in nanoseconds on the controller's clock.
    pub(super) since_ns: u64,
    /// The CPU work it adds to the queue's: its own if only the CPU held it back when it
    /// joined, else none (a waiter for memory does not delay those waiting for the CPU).
    cpu_us: u64,
}

/// What makes waiters alike for a grant: one of them held back means all of them are.
type Kind = (Priority, ClassId, u64, u64);

impl Waiter {
    fn kind(&self) -> Kind {
        let ask = &self.ask;
        (ask.priority, ask.class, ask.declared, ask.charge)
    }

    /// Whether as many as [`MAX_PASSES`] have passed this waiter.
    fn holds_the_line(&self) -> bool {
        self.passes >= MAX_PASSES
    }
}

/// What the controller says of one waiter, given the limits as they stand.
pub(super) enum Verdict {
    /// It fits, and was admitted: the controller has counted it.
    Admitted,
    /// It does not fit; a smaller waiter behind it might.
    Waits,
    /// The head does not fit, but would were it not for the requests that passed it: nobody
    /// else goes until it has.
    Holds,
    /// Nobody can be admitted now (no free slot).
    Stop,
}

/// What became of a waiter that is no longer in the queue (see [`Queue::leave`]).
pub(super) enum Left {
    /// It was still waiting, and has left now.
    Waiting,
    /// It was granted a permit, for this ask (priced as its class stood at the grant), past
    /// a blocked head or not.
    Granted(Ask, bool),
    /// It was sent away: its place went to a waiter of a higher priority (`queue_full`), or
    /// it stood too long in a standing queue; this limit held it back.
    Evicted(Reason, Limit),
    /// Nothing is known of it: it was told already.
    Told,
}

#[derive(Default)]
pub(super) struct Queue {
    /// Keyed by priority and arrival number (see [`RANK_SHIFT`]), so that iteration order is
    /// the queue's order and a cancelled waiter leaves in O(log n), without unsafe intrusive
    /// lists.
    waiters: BTreeMap<u64, Waiter>,
    /// Waiters granted or sent away that have not yet seen it: what became of them.
    gone: HashMap<u64, Left>,
    /// What the requests in flight that passed a blocked head were charged when they did.
    passing: u64,
    /// Per priority: how many requests of higher priorities were admitted since it was last
    /// served, while it waited.
    overtaken: [u32; 3],
    next_arrival: u64,
    /// The CPU work of the waiters only the CPU held back when they joined, in microseconds.
    cpu_us: u64,
    /// When the queue last went from empty to waiting, in nanoseconds.
    line_since_ns: u64,
}

fn key_range(priority: usize) -> std::ops::Range<u64> {
    let start = (priority as u64) << RANK_SHIFT;
    start..start + (1 << RANK_SHIFT)
}

fn rank_of(id: u64) -> usize {
    (id >> RANK_SHIFT) as usize
}

impl Queue {
    /// Queues `ask`, arrived at `now_ns`, held back by the CPU alone (`for_cpu`) or not.
    pub(super) fn push(&mut self, ask: Ask, now_ns: u64, for_cpu: bool) -> u64 {
        let id = key_range(ask.priority.rank()).start | self.next_arrival;
        self.next_arrival += 1;
        let cpu_us = if for_cpu { ask.cpu_us } else { 0 };
        if self.waiters.is_empty() {
            // A new line: those that passed a head before it do not hold this one back.
            self.passing = 0;
            self.line_since_ns = now_ns;
        }
        let waiter = Waiter {
            ask,
            passes: 0,
            waker: None,
            since_ns: now_ns,
            cpu_us,
        };
        self.cpu_us += cpu_us;
        self.waiters.insert(id, waiter);
        id
    }

    /// Takes waiter `id` out of the queue.
    fn take(&mut self, id: u64) -> Option<Waiter> {
        let waiter = self.waiters.remove(&id)?;
        self.cpu_us -= waiter.cpu_us;
        Some(waiter)
    }

    /// Whether the queue has had waiters, without a break, for [`STANDING_NS`] up to
    /// `now_ns`: a burst drains sooner; a queue that stands is overload.
    pub(super) fn stands(&self, now_ns: u64) -> bool {
        !self.waiters.is_empty() && now_ns.saturating_sub(self.line_since_ns) >= STANDING_NS
    }

    /// How many waiters are of `class`.
    pub(super) fn alike(&self, class: ClassId) -> u64 {
        self.waiters
            .values()
            .filter(|w| w.ask.class == class)
            .count() as u64
    }

    /// The CPU work of the waiters only the CPU held back when they joined, in microseconds.
    pub(super) fn cpu_us(&self) -> u64 {
        self.cpu_us
    }

    /// Takes waiter `id` out of the queue, or says what became of it.
    pub(super) fn leave(&mut self, id: u64) -> Left {
        if self.take(id).is_some() {
            return Left::Waiting;
        }
        self.gone.remove(&id).unwrap_or(Left::Told)
    }

    /// What waiter `id` was granted, if it was and has not seen it yet.
    #[cfg(test)]
    pub(super) fn granted_charge(&self, id: u64) -> Option<u64> {
        match self.gone.get(&id) {
            Some(Left::Granted(ask, _)) => Some(ask.charge),
            _ => None,
        }
    }

    /// A request that passed a blocked head, charged `bytes` then, has ended.
    pub(super) fn passer_ended(&mut self, bytes: u64) {
        self.passing = self.passing.saturating_sub(bytes);
    }

    pub(super) fn get_mut(&mut self, id: u64) -> Option<&mut Waiter> {
        self.waiters.get_mut(&id)
    }

    /// Whether a new request of `priority` must queue: a waiter of its priority or a higher
    /// one waits, or a starving priority does (whose turn it is).
    pub(super) fn holds_back(&self, priority: Priority) -> bool {
        self.waiters
            .first_key_value()
            .is_some_and(|(&id, _)| rank_of(id) <= priority.rank())
            || self.starving().is_some()
    }

    /// Makes room for a request of `priority` in a full queue: the newest waiter of the
    /// lowest priority below it leaves, to be answered with `limit(its ask)`. Returns its
    /// waker, or `None` if nobody waits below `priority`.
    pub(super) fn evict_below(
        &mut self,
        priority: Priority,
        limit: impl FnOnce(&Ask) -> Limit,
    ) -> Option<Option<Waker>> {
        let (&id, _) = self
            .waiters
            .last_key_value()
            .filter(|(id, _)| rank_of(**id) > priority.rank())?;
        let waiter = self.take(id)?;
        self.gone
            .insert(id, Left::Evicted(Reason::QueueFull, limit(&waiter.ask)));
        Some(waiter.waker)
    }

    /// Sends away, as `standing_queue`, the waiters that `too_long` says have waited too
    /// long at `now_ns` (naming the limit that held them back), looking at the oldest
    /// [`SCAN`] of each priority. Returns their wakers.
    pub(super) fn reject_standing(
        &mut self,
        now_ns: u64,
        too_long: impl Fn(&Ask, u64) -> Option<Limit>,
    ) -> Vec<Waker> {
        let mut shed = Vec::new();
        for rank in 0..self.overtaken.len() {
            let old = self.waiters.range(key_range(rank)).take(SCAN);
            shed.extend(old.filter_map(|(&id, w)| {
                Some((id, too_long(&w.ask, now_ns.saturating_sub(w.since_ns))?))
            }));
        }
        shed.into_iter()
            .filter_map(|(id, limit)| {
                let waiter = self.take(id)?;
                self.gone
                    .insert(id, Left::Evicted(Reason::StandingQueue, limit));
                waiter.waker
            })
            .collect()
    }

    /// Counts an admission of `priority` against the lower priorities that wait, and
    /// resets its own count.
    pub(super) fn admitted(&mut self, priority: Priority) {
        let rank = priority.rank();
        self.overtaken[rank] = 0;
        for lower in rank + 1..self.overtaken.len() {
            if self.waiters.range(key_range(lower)).next().is_some() {
                self.overtaken[lower] += 1;
            } else {
                self.overtaken[lower] = 0;
            }
        }
    }

    /// The oldest waiter of a priority that has been overtaken [`MAX_OVERTAKES`] times.
    fn starving(&self) -> Option<u64> {
        (1..self.overtaken.len())
            .filter(|&rank| self.overtaken[rank] >= MAX_OVERTAKES)
            .find_map(|rank| self.waiters.range(key_range(rank)).next())
            .map(|(&id, _)| id)
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

    /// Offers waiters to `verdict` in order (with the head, the first that waits: what the
    /// requests in flight that passed a blocked head were charged, as `Some`), which may
    /// price a waiter's ask anew, and removes those it admits; returns their wakers, to be
    /// woken once the lock is released. A starving priority's oldest waiter is offered first.
    pub(super) fn admit(
        &mut self,
        mut verdict: impl FnMut(&mut Waiter, Option<u64>) -> Verdict,
    ) -> Vec<Waker> {
        let mut wakers = Vec::new();
        let mut head: Option<u64> = None;
        let starving = self.starving();
        let mut first = starving;
        let mut cursor = 0;
        let mut blocked = 0;
        let mut held_kinds: [Option<Kind>; KINDS] = [None; KINDS];
        while blocked < SCAN {
            let id = match first.take() {
                Some(id) => id,
                None => {
                    let Some((&id, _)) = self.waiters.range(cursor..).find(|(id, waiter)| {
                        Some(**id) != starving && !held_kinds.contains(&Some(waiter.kind()))
                    }) else {
                        break;
                    };
                    cursor = id + 1;
                    id
                }
            };
            let Some(waiter) = self.waiters.get_mut(&id) else {
                break;
            };
            match verdict(waiter, head.is_none().then_some(self.passing)) {
                Verdict::Stop | Verdict::Holds => break,
                Verdict::Waits => {
                    if head.is_none() {
                        if waiter.holds_the_line() {
                            break;
                        }
                        head = Some(id);
                    }
                    if let Some(free) = held_kinds.iter_mut().find(|kind| kind.is_none()) {
                        *free = Some(waiter.kind());
                    }
                    blocked += 1;
                }
                Verdict::Admitted => {
                    let Some(admitted) = self.take(id) else {
                        break;
                    };
                    self.admitted(admitted.ask.priority);
                    self.gone
                        .insert(id, Left::Granted(admitted.ask, head.is_some()));
                    wakers.extend(admitted.waker);
                    if let Some(head) = head.and_then(|head| self.waiters.get_mut(&head)) {
                        head.passes += 1;
                        self.passing = self.passing.saturating_add(admitted.ask.charge);
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
        ask_as(Priority::Normal, charge)
    }

    fn ask_as(priority: Priority, charge: u64) -> Ask {
        Ask {
            priority,
            class: super::super::classes::ClassId::OVERFLOW,
            charge,
            declared: 0,
            least: 0,
            known: true,
            cpu_us: 1,
            body_us: None,
            long: false,
        }
    }

    fn queue(charges: &[u64]) -> Queue {
        let mut queue = Queue::default();
        for &charge in charges {
            queue.push(ask(charge), 0, true);
        }
        queue
    }

    /// Admits what fits in `room`, as the controller would with that much memory free.
    fn admit_within(queue: &mut Queue, room: &mut u64) -> usize {
        let mut admitted = 0;
        queue.admit(|waiter, head| {
            let charge = waiter.ask.charge;
            if charge <= *room {
                *room -= charge;
                admitted += 1;
                Verdict::Admitted
            } else if head.is_some_and(|passing| charge <= *room + passing) {
                Verdict::Holds
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
            order.push((w.ask.charge, head.is_some()));
            Verdict::Admitted
        });
        assert_eq!(order, [(1, true), (2, true), (3, true)]);
        assert!(q.is_empty());
    }

    #[test]
    fn a_small_waiter_behind_many_held_back_alike_is_offered() {
        let mut charges = vec![10; 3 * SCAN];
        charges.push(1);
        let mut q = queue(&charges);
        let mut offered = 0;
        q.admit(|waiter, _| {
            offered += 1;
            match waiter.ask.charge {
                1 => Verdict::Admitted,
                _ => Verdict::Waits,
            }
        });
        assert_eq!(q.len(), 3 * SCAN, "the small one went");
        assert_eq!(offered, 2, "one of the alike was asked");
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
        assert_eq!((head.passes, q.passing), (3, 3));
    }

    #[test]
    fn the_head_holds_the_line_once_it_would_fit_but_for_those_that_passed_it() {
        let mut q = queue(&[100]);
        for _ in 0..150 {
            q.push(ask(1), 0, true);
        }
        let mut room = 60;
        assert_eq!(
            admit_within(&mut q, &mut room),
            60,
            "it lacks 40 with nobody past it"
        );
        // 50 more come free: it would fit, were it not for the 60 that passed it.
        let mut room = 50;
        assert_eq!(admit_within(&mut q, &mut room), 0);
        // They end: it goes first, then the line moves.
        q.passer_ended(60);
        let mut room = 110;
        assert_eq!(admit_within(&mut q, &mut room), 11);
        assert_eq!(q.len(), 80);
    }

    #[test]
    fn the_head_holds_the_line_after_max_passes() {
        let mut q = queue(&[u64::MAX]);
        for _ in 0..MAX_PASSES + 5 {
            q.push(ask(0), 0, true);
        }
        let mut room = u64::MAX - 1;
        assert_eq!(admit_within(&mut q, &mut room), MAX_PASSES as usize);
        assert_eq!(admit_within(&mut q, &mut room), 0);
    }

    /// The charges of the waiters `admit` offers, in order, admitting them all.
    fn offer_order(queue: &mut Queue) -> Vec<u64> {
        let mut order = Vec::new();
        queue.admit(|waiter, _| {
            order.push(waiter.ask.charge);
            Verdict::Admitted
        });
        order
    }

    #[test]
    fn higher_priorities_first_then_arrival_order() {
        let mut q = Queue::default();
        for (priority, charge) in [
            (Priority::Sheddable, 1),
            (Priority::Normal, 2),
            (Priority::Critical, 3),
            (Priority::Normal, 4),
            (Priority::Critical, 5),
        ] {
            q.push(ask_as(priority, charge), 0, true);
        }
        assert!(q.holds_back(Priority::Normal));
        assert_eq!(offer_order(&mut q), [3, 5, 2, 4, 1]);
    }

    #[test]
    fn a_starving_priority_goes_first_once() {
        let mut q = Queue::default();
        let sheddable = q.push(ask_as(Priority::Sheddable, 1), 0, true);
        for _ in 0..MAX_OVERTAKES {
            assert!(q.starving().is_none());
            q.admitted(Priority::Critical);
        }
        assert_eq!(q.starving(), Some(sheddable));
        assert!(
            q.holds_back(Priority::Critical),
            "its turn: even critical queues"
        );
        q.push(ask_as(Priority::Critical, 2), 0, true);
        q.push(ask_as(Priority::Normal, 3), 0, true);
        assert_eq!(offer_order(&mut q), [1, 2, 3]);
        assert!(q.starving().is_none(), "served: the count starts again");
    }

    #[test]
    fn overtakes_count_only_while_the_priority_waits() {
        let mut q = Queue::default();
        for _ in 0..2 * MAX_OVERTAKES {
            q.admitted(Priority::Critical);
        }
        q.push(ask_as(Priority::Normal, 1), 0, true);
        assert!(q.starving().is_none());
        assert!(!q.holds_back(Priority::Critical));
    }

    #[test]
    fn a_starving_waiter_holds_the_line_once_it_would_fit_but_for_those_that_passed_it() {
        let mut q = Queue::default();
        q.push(ask_as(Priority::Normal, 10), 0, true);
        for _ in 0..MAX_OVERTAKES {
            q.admitted(Priority::Critical);
        }
        for _ in 0..20 {
            q.push(ask_as(Priority::Critical, 1), 0, true);
        }
        let mut room = 9;
        assert_eq!(admit_within(&mut q, &mut room), 9, "criticals pass it");
        let mut room = 5;
        assert_eq!(admit_within(&mut q, &mut room), 0, "then it holds the line");
        q.passer_ended(9);
        let mut room = 10;
        assert_eq!(admit_within(&mut q, &mut room), 1, "until it goes");
        assert!(q.starving().is_none());
    }

    #[test]
    fn a_full_queue_gives_the_newest_lowest_waiter_s_place() {
        let mut q = Queue::default();
        let normal = q.push(ask_as(Priority::Normal, 1), 0, true);
        let old = q.push(ask_as(Priority::Sheddable, 2), 0, true);
        let new = q.push(ask_as(Priority::Sheddable, 3), 0, true);
        assert!(
            q.evict_below(Priority::Sheddable, |_| Limit::Memory)
                .is_none()
        );
        assert!(
            q.evict_below(Priority::Critical, |_| Limit::Memory)
                .is_some()
        );
        assert!(matches!(
            q.leave(new),
            Left::Evicted(Reason::QueueFull, Limit::Memory)
        ));
        assert!(matches!(q.leave(new), Left::Told), "told once");
        assert!(
            q.evict_below(Priority::Critical, |_| Limit::Concurrency)
                .is_some()
        );
        assert!(matches!(
            q.leave(old),
            Left::Evicted(Reason::QueueFull, Limit::Concurrency)
        ));
        assert!(q.evict_below(Priority::Normal, |_| Limit::Memory).is_none());
        assert!(matches!(q.leave(normal), Left::Waiting));
        assert!(q.is_empty() && q.gone.is_empty());
    }

    #[test]
    fn stop_admits_nobody() {
        let mut q = queue(&[1, 1]);
        assert!(q.admit(|_, _| Verdict::Stop).is_empty());
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn old_waiters_held_for_the_cpu_are_shed_and_those_held_for_memory_keep_their_place() {
        let mut q = queue(&[1, 64, 1]);
        let old: Vec<u64> = q.waiters.keys().copied().collect();
        let young = q.push(ask(1), 30_000_000, true);
        assert_eq!(q.cpu_us(), 4);
        // Charge 64 waits for memory; the others for the CPU, 20 ms at most.
        let too_long =
            |ask: &Ask, waited: u64| (ask.charge == 1 && waited > 20_000_000).then_some(Limit::Cpu);
        q.reject_standing(35_000_000, too_long);
        assert!(matches!(
            q.leave(old[0]),
            Left::Evicted(Reason::StandingQueue, Limit::Cpu)
        ));
        assert!(matches!(
            q.leave(old[2]),
            Left::Evicted(Reason::StandingQueue, Limit::Cpu)
        ));
        let left: Vec<u64> = q.waiters.values().map(|w| w.ask.charge).collect();
        assert_eq!(
            left,
            [64, 1],
            "memory keeps its place, and the young one stays"
        );
        assert!(matches!(q.leave(young), Left::Waiting));
        assert_eq!(q.cpu_us(), 1);
    }

    #[test]
    fn the_auto_target_follows_service_time() {
        assert_eq!(
            QueueTarget::Auto.longest_ns(10_000),
            Some(10_000_000),
            "one service time"
        );
        assert_eq!(
            QueueTarget::Auto.longest_ns(50),
            Some(2_000_000),
            "1 ms at least"
        );
        let fixed = QueueTarget::Fixed(Duration::from_millis(5));
        assert_eq!(fixed.longest_ns(10_000), Some(10_000_000));
        assert_eq!(QueueTarget::Off.longest_ns(10_000), None);
    }
}
