//! The controller's decisions, step by step, with a manual memory source.

use std::{
    sync::atomic::AtomicUsize,
    task::{Context, Poll, Wake},
};

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use crate::controller::{admit::Acquired, permit::Permit, tick::Tick, ticket::Ticket, *};
use crate::memory::{ManualMemory, MemoryError, ThreadAllocations};
use crate::{
    memory::MemoryFailure,
    priority::Priority,
    rejection::{Limit, Reason, Rejection},
};
use std::sync::atomic::AtomicU64;

const MIB: u64 = 1 << 20;
const CLASS: CostClass = CostClass::ANY_FOR_TESTS;

fn controller(max: usize, budget: Option<u64>, capacity: usize) -> (Arc<Controller>, ManualMemory) {
    controller_failing(MemoryFailure::Open, max, budget, capacity)
}

fn controller_failing(
    policy: MemoryFailure,
    max: usize,
    budget: Option<u64>,
    capacity: usize,
) -> (Arc<Controller>, ManualMemory) {
    let memory = ManualMemory::new(0);
    let settings = Settings {
        memory_failure: policy,
        ..Settings::for_tests(max, budget, capacity)
    };
    (
        Arc::new(Controller::new(settings, Arc::new(memory.clone()))),
        memory,
    )
}

/// The permit of an admitted request, polled once (its cost is known).
fn admitted(a: Acquired) -> Permit {
    match a {
        Acquired::Admitted(mut p) => {
            let _ = p.track(|| Poll::Ready(()));
            p
        }
        other => panic!("expected admission, got {other:?}"),
    }
}

fn queued(a: Acquired) -> Ticket {
    match a {
        Acquired::Queued(t) => t,
        other => panic!("expected a queue place, got {other:?}"),
    }
}

fn rejected(a: Acquired) -> Rejection {
    match a {
        Acquired::Rejected(r) => r,
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[derive(Default)]
struct CountingWaker(AtomicUsize);
impl Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Relaxed);
    }
}

/// Polls a waiter; once granted, its permit is polled once too.
fn poll(ticket: &mut Ticket, waker: &Arc<CountingWaker>) -> Poll<Permit> {
    let waker = Waker::from(Arc::clone(waker));
    ticket
        .poll_grant(&mut Context::from_waker(&waker))
        .map(|granted| {
            let mut permit = granted.expect("granted, not rejected");
            let _ = permit.track(|| Poll::Ready(()));
            permit
        })
}

#[test]
fn concurrency_limit_then_queue_then_shed() {
    let (c, _) = controller(2, None, 1);
    let a = admitted(c.acquire(CLASS, None));
    let _b = admitted(c.acquire(CLASS, None));
    let _queued = queued(c.acquire(CLASS, None));
    let r = rejected(c.acquire(CLASS, None));
    assert_eq!(r, Rejection::new(Reason::QueueFull, Limit::Concurrency));
    let s = c.snapshot();
    assert_eq!((s.in_flight, s.queued, s.admitted), (2, 1, 2));
    assert_eq!(s.rejected(Reason::QueueFull, Limit::Concurrency), 1);
    drop(a);
    assert_eq!(c.snapshot().in_flight, 2, "the waiter took the freed slot");
    assert_eq!(c.snapshot().queued, 0);
}

#[test]
fn zero_capacity_sheds_at_once() {
    let (c, _) = controller(1, None, 0);
    let _a = admitted(c.acquire(CLASS, None));
    assert_eq!(rejected(c.acquire(CLASS, None)).reason(), Reason::QueueFull);
}

#[test]
fn memory_budget_counts_reservations_and_declared_length() {
    let (c, memory) = controller(100, Some(10 * MIB), 10);
    memory.set(5 * MIB);
    c.tick(Tick::refreshed(Ok(()))); // the baseline: what memory holds with nothing in flight
    let _a = admitted(c.acquire(CLASS, Some(2 * MIB))); // reserves 3 MiB: 8 of 10
    assert_eq!(c.snapshot().charged_bytes, 3 * MIB);
    let _b = admitted(c.acquire(CLASS, None)); // 1 MiB: 9 of 10
    let _c = admitted(c.acquire(CLASS, None)); // 10 of 10: still fits
    let mut e = queued(c.acquire(CLASS, None));
    assert_eq!(
        rejected(c.acquire(CLASS, Some(11 * MIB))),
        Rejection::new(Reason::TooLarge, Limit::Memory)
    );
    // A lower reading lets the waiter in at the next sample.
    memory.set(4 * MIB);
    let waker = Arc::new(CountingWaker::default());
    assert!(poll(&mut e, &waker).is_pending());
    c.tick(Tick::refreshed(Ok(())));
    assert_eq!(waker.0.load(Relaxed), 1);
    assert!(poll(&mut e, &waker).is_ready());
}

#[test]
fn a_small_waiter_passes_a_blocked_head_and_arrivals_queue() {
    // The head declares 8 MiB, which do not fit; a small one behind it does, and goes.
    let (c, memory) = controller(100, Some(10 * MIB), 10);
    memory.set(2 * MIB);
    c.tick(Tick::refreshed(Ok(()))); // the baseline: what memory holds with nothing in flight
    let first = admitted(c.acquire(CLASS, None)); // 3 of 10
    let mut big = queued(c.acquire(CLASS, Some(8 * MIB))); // 3 + 8 > 10
    // While anyone waits, an arrival queues, even one that fits; it may be granted at once.
    let mut small = queued(c.acquire(CLASS, None));
    let waker = Arc::new(CountingWaker::default());
    assert!(poll(&mut big, &waker).is_pending());
    let Poll::Ready(small_permit) = poll(&mut small, &waker) else {
        panic!("the small waiter did not pass the blocked head")
    };
    drop(first); // 2 + 1 + 8 > 10: the head still waits
    assert!(poll(&mut big, &waker).is_pending());
    drop(small_permit); // 2 + 8 fits (its estimate, 9, is capped at the room there is)
    assert!(poll(&mut big, &waker).is_ready());
}

#[test]
fn the_head_holds_the_line_once_it_would_fit_but_for_those_that_passed_it() {
    let (c, memory) = controller(1000, Some(100 * MIB), 1000);
    memory.set(0);
    c.tick(Tick::refreshed(Ok(())));
    let first = admitted(c.acquire(CLASS, Some(50 * MIB))); // 51 of 100
    let mut big = queued(c.acquire(CLASS, Some(60 * MIB))); // needs 61
    let waker = Arc::new(CountingWaker::default());
    let pass = || {
        let mut small = queued(c.acquire(CLASS, None));
        match poll(&mut small, &waker) {
            Poll::Ready(permit) => permit,
            Poll::Pending => panic!("a small waiter could not pass"),
        }
    };
    // The first keeps it out: requests of 1 MiB pass it as long as they like.
    for _ in 0..100 {
        drop(pass());
    }
    let mut passed: Vec<Permit> = (0..49).map(|_| pass()).collect();
    // The first ends: now only those that passed it keep it out, and it holds the line.
    drop(first);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(big.poll_grant(&mut cx).is_pending());
    let mut next = queued(c.acquire(CLASS, None));
    assert!(poll(&mut next, &waker).is_pending(), "51 MiB are free");
    // Once 61 MiB are free it goes first, then the line moves.
    passed.truncate(39);
    // (Not polled: it keeps its charge.)
    let Poll::Ready(Ok(big)) = big.poll_grant(&mut cx) else {
        panic!("61 MiB are free, and the head did not go")
    };
    assert!(poll(&mut next, &waker).is_pending(), "100 MiB spoken for");
    drop(big);
    assert!(poll(&mut next, &waker).is_ready());
}

#[test]
fn above_the_soft_limit_requests_of_unknown_cost_go_one_at_a_time() {
    let (c, memory) = controller(100, Some(10 * MIB), 10);
    memory.set(0);
    c.tick(Tick::refreshed(Ok(())));
    // Charges of 1 MiB: the soft limit is 9 MiB. Nine go at once, polled or not.
    let unknown: Vec<_> = (0..9).map(|_| c.acquire(CLASS, None)).collect();
    assert!(unknown.iter().all(|a| matches!(a, Acquired::Admitted(_))));
    // The tenth would pass the soft limit while nine costs are unknown: it waits.
    let mut ninth = queued(c.acquire(CLASS, None));
    let waker = Arc::new(CountingWaker::default());
    assert!(poll(&mut ninth, &waker).is_pending());
    // Once they have all shown their cost, it goes; the tenth waits for the ninth's.
    let known: Vec<Permit> = unknown.into_iter().map(admitted).collect();
    let Poll::Ready(Ok(mut ninth)) = ninth.poll_grant(&mut Context::from_waker(Waker::noop()))
    else {
        panic!("the ninth was not admitted once every cost was known")
    };
    // The budget is full: the next one waits for room, not for a cost.
    let mut tenth = queued(c.acquire(CLASS, None));
    let _ = ninth.track(|| Poll::Ready(()));
    assert!(poll(&mut tenth, &waker).is_pending());
    drop(ninth);
    assert!(
        poll(&mut tenth, &waker).is_ready(),
        "room, every cost known"
    );
    drop(known);
}

#[test]
fn a_request_goes_on_the_least_its_class_costs_one_at_a_time() {
    let (c, memory) = controller(100, Some(128 * MIB), 10);
    memory.set(0);
    c.tick(Tick::refreshed(Ok(())));
    let _filler = admitted(c.acquire(CLASS, Some(100 * MIB))); // 101 of 128
    // A class that costs from 1 to 64 MiB: its estimate does not fit, the least does.
    let mixed = CostClass::new("mixed");
    let id = c.classes.find(mixed, String::new);
    c.classes.observe_peak(id, 0, 64 * MIB);
    c.classes.observe_end(id, 0, MIB);
    let Acquired::Admitted(mut probe) = c.acquire(mixed, None) else {
        panic!("the probe did not go")
    }; // 165 of 128 on its estimate
    assert_eq!(probe.charged_bytes(), 64 * MIB);
    // The next waits while the probe's cost is unknown, and then while memory is over.
    let mut next = queued(c.acquire(mixed, None));
    let waker = Arc::new(CountingWaker::default());
    assert!(poll(&mut next, &waker).is_pending());
    let _ = probe.track(|| Poll::Ready(()));
    assert!(poll(&mut next, &waker).is_pending());
    drop(probe); // 101 of 128: 101 + 1 leaves the margin of 2 MiB
    assert!(poll(&mut next, &waker).is_ready());
}

#[test]
fn head_leaving_lets_the_next_in() {
    let (c, _) = controller(1, None, 10);
    let _first = admitted(c.acquire(CLASS, None));
    let head = queued(c.acquire(CLASS, None));
    let mut next = queued(c.acquire(CLASS, None));
    let waker = Arc::new(CountingWaker::default());
    assert!(poll(&mut next, &waker).is_pending());
    drop(head);
    assert_eq!(c.snapshot().queued, 1);
    assert!(poll(&mut next, &waker).is_pending(), "still no slot");
}

#[test]
fn progress_guarantee_when_nothing_is_in_flight() {
    let (c, memory) = controller(4, Some(10 * MIB), 10);
    memory.set(50 * MIB);
    let waker = Arc::new(CountingWaker::default());
    // Over budget and idle: the first request waits for a fresh reading, then goes.
    let mut first = queued(c.acquire(CLASS, None));
    assert!(poll(&mut first, &waker).is_pending());
    c.tick(Tick::refreshed(Ok(())));
    let Poll::Ready(first) = poll(&mut first, &waker) else {
        panic!("a fresh reading admits the head")
    };
    assert_eq!(c.snapshot().admitted_over_budget, 1);
    let mut second = queued(c.acquire(CLASS, None));
    drop(first);
    assert!(
        poll(&mut second, &waker).is_pending(),
        "the last reading may be an interval old"
    );
    c.tick(Tick::refreshed(Ok(())));
    assert!(
        poll(&mut second, &waker).is_ready(),
        "the head goes when nothing is in flight"
    );
    assert_eq!(c.snapshot().admitted_over_budget, 2);
}

#[test]
fn without_a_queue_the_guarantee_cannot_wait() {
    let (c, memory) = controller(4, Some(10 * MIB), 0);
    memory.set(50 * MIB);
    let _only = admitted(c.acquire(CLASS, None));
    assert_eq!(c.snapshot().admitted_over_budget, 1);
    assert_eq!(rejected(c.acquire(CLASS, None)).limit(), Limit::Memory);
}

#[test]
fn expiry_rejects_with_the_blocking_limit() {
    let (c, _) = controller(1, None, 10);
    let _a = admitted(c.acquire(CLASS, None));
    let mut t = queued(c.acquire(CLASS, None));
    assert_eq!(
        t.expire().unwrap_err(),
        Rejection::new(Reason::QueueTimeout, Limit::Concurrency)
    );
    drop(t);
    let s = c.snapshot();
    assert_eq!((s.in_flight, s.queued), (1, 0));
    assert_eq!(s.rejected(Reason::QueueTimeout, Limit::Concurrency), 1);
}

#[test]
fn expiry_after_a_grant_admits() {
    let (c, _) = controller(1, None, 10);
    let a = admitted(c.acquire(CLASS, None));
    let mut t = queued(c.acquire(CLASS, None));
    drop(a);
    let permit = t.expire().expect("granted before the deadline");
    drop(t);
    assert_eq!(c.snapshot().in_flight, 1);
    drop(permit);
    assert_eq!(c.snapshot().in_flight, 0);
}

#[test]
fn dropping_a_granted_ticket_gives_the_grant_back() {
    let (c, _) = controller(1, Some(100 * MIB), 10);
    let a = admitted(c.acquire(CLASS, None));
    let t = queued(c.acquire(CLASS, None));
    let mut behind = queued(c.acquire(CLASS, None));
    drop(a); // grants `t`
    assert_eq!(c.snapshot().charged_bytes, MIB);
    drop(t); // never observed: the slot passes on
    let waker = Arc::new(CountingWaker::default());
    let Poll::Ready(_permit) = poll(&mut behind, &waker) else {
        panic!("granted")
    };
    let s = c.snapshot();
    assert_eq!((s.in_flight, s.queued, s.charged_bytes), (1, 0, MIB));
}

#[test]
fn everything_returns_to_zero() {
    let (c, _) = controller(2, Some(100 * MIB), 4);
    let permits: Vec<_> = (0..2)
        .map(|_| admitted(c.acquire(CLASS, Some(10))))
        .collect();
    let tickets: Vec<_> = (0..4).map(|_| queued(c.acquire(CLASS, Some(10)))).collect();
    drop(tickets);
    drop(permits);
    let s = c.snapshot();
    assert_eq!((s.in_flight, s.queued, s.charged_bytes), (0, 0, 0));
}

fn refresh_failed() -> Result<(), MemoryError> {
    Err(MemoryError::injected())
}

#[test]
fn a_failing_source_fails_open_by_default() {
    let (c, memory) = controller(4, Some(10 * MIB), 4);
    memory.set(50 * MIB);
    c.tick(Tick::refreshed(Ok(())));
    let mut waiting = queued(c.acquire(CLASS, None));
    // The source breaks: its last reading (over budget) no longer rejects anyone...
    c.tick(Tick::refreshed(refresh_failed()));
    let waker = Arc::new(CountingWaker::default());
    let Poll::Ready(_waited) = poll(&mut waiting, &waker) else {
        panic!("the waiter is not let in")
    };
    let _a = admitted(c.acquire(CLASS, None));
    // ...but the concurrency limit still does.
    let _b = admitted(c.acquire(CLASS, None));
    let _c = admitted(c.acquire(CLASS, None));
    let _d = queued(c.acquire(CLASS, None));
    assert_eq!(c.snapshot().memory_source_errors, 1);
    // Recovered: the reading decides again.
    c.tick(Tick::refreshed(Ok(())));
    assert!(matches!(
        c.acquire(CLASS, None),
        Acquired::Queued(_) | Acquired::Rejected(_)
    ));
}

#[test]
fn a_failing_source_can_fail_closed() {
    let (c, _) = controller_failing(MemoryFailure::Closed, 4, Some(10 * MIB), 4);
    let first = admitted(c.acquire(CLASS, None));
    c.tick(Tick::refreshed(refresh_failed()));
    // Memory reads 0, but nobody knows: memory counts as over the budget.
    let mut second = queued(c.acquire(CLASS, None));
    let waker = Arc::new(CountingWaker::default());
    assert!(poll(&mut second, &waker).is_pending());
    match second.expire() {
        Err(rejection) => assert_eq!(rejection.limit(), Limit::Memory),
        Ok(_) => panic!("admitted on an unknown reading"),
    }
    // One at a time still: with nothing in flight, the next sample admits the head.
    drop(first);
    let mut third = queued(c.acquire(CLASS, None));
    c.tick(Tick::refreshed(refresh_failed()));
    assert!(poll(&mut third, &waker).is_ready());
    assert_eq!(c.snapshot().admitted_over_budget, 1);
}

#[test]
fn closing_answers_waiters_and_stops_queueing() {
    let (c, _) = controller(1, None, 4);
    let served = admitted(c.acquire(CLASS, None));
    let waker = Arc::new(CountingWaker::default());
    let mut waiters: Vec<_> = (0..3).map(|_| queued(c.acquire(CLASS, None))).collect();
    for waiter in &mut waiters {
        assert!(poll(waiter, &waker).is_pending());
    }
    c.close();
    assert_eq!(waker.0.load(Relaxed), 3, "every waiter is woken");
    for waiter in &mut waiters {
        let Poll::Ready(Err(rejection)) =
            waiter.poll_grant(&mut Context::from_waker(Waker::noop()))
        else {
            panic!("a waiter was not rejected on close")
        };
        assert_eq!(rejection.reason(), Reason::QueueTimeout);
    }
    let Acquired::Rejected(rejection) = c.acquire(CLASS, None) else {
        panic!("queued after close")
    };
    assert_eq!(rejection.reason(), Reason::QueueFull);
    // What was admitted runs on, and what fits is still admitted.
    drop(served);
    let _next = admitted(c.acquire(CLASS, None));
    let s = c.snapshot();
    assert_eq!((s.in_flight, s.queued), (1, 0));
}

fn with_reserve(max: usize, budget: Option<u64>, capacity: usize, slots: usize) -> Arc<Controller> {
    let settings = Settings {
        critical_slots: slots,
        ..Settings::for_tests(max, budget, capacity)
    };
    Arc::new(Controller::new(settings, Arc::new(ManualMemory::new(0))))
}

#[test]
fn a_freed_slot_goes_to_the_highest_priority_waiting() {
    let c = with_reserve(1, None, 8, 0);
    let first = admitted(c.acquire(CLASS, None));
    let waker = Arc::new(CountingWaker::default());
    let mut normal = queued(c.acquire_as(Priority::Normal, CLASS, None, String::new));
    let mut critical = queued(c.acquire_as(Priority::Critical, CLASS, None, String::new));
    drop(first);
    assert!(poll(&mut normal, &waker).is_pending());
    let permit = poll(&mut critical, &waker);
    assert!(permit.is_ready(), "the later critical request went first");
    drop(permit);
    assert!(poll(&mut normal, &waker).is_ready());
    let s = c.snapshot();
    assert_eq!(s.admitted_with(Priority::Critical), 1);
    assert_eq!(s.admitted_with(Priority::Normal), 2);
}

#[test]
fn sheddable_requests_are_refused_rather_than_fill_half_the_queue() {
    let c = with_reserve(1, None, 4, 0);
    let _busy = admitted(c.acquire(CLASS, None));
    let _a = queued(c.acquire_as(Priority::Sheddable, CLASS, None, String::new));
    let _b = queued(c.acquire_as(Priority::Normal, CLASS, None, String::new));
    let shed = rejected(c.acquire_as(Priority::Sheddable, CLASS, None, String::new));
    assert_eq!(shed.reason(), Reason::QueueFull);
    let _c = queued(c.acquire_as(Priority::Normal, CLASS, None, String::new));
    let s = c.snapshot();
    assert_eq!(s.rejected_with(Priority::Sheddable, Reason::QueueFull), 1);
    assert_eq!(s.rejected_with(Priority::Normal, Reason::QueueFull), 0);
}

#[test]
fn sheddable_requests_are_refused_above_the_soft_limit() {
    let (c, memory) = controller(8, Some(64 * MIB), 8);
    memory.set(63 * MIB + MIB / 2);
    c.tick(Tick::refreshed(Ok(())));
    let shed = rejected(c.acquire_as(Priority::Sheddable, CLASS, None, String::new));
    assert_eq!(shed.limit(), Limit::Memory);
    let normal = c.acquire_as(Priority::Normal, CLASS, None, String::new);
    assert!(!matches!(normal, Acquired::Rejected(_)), "{normal:?}");
}

#[test]
fn sheddable_requests_are_refused_above_the_soft_limit_with_the_slots_full_too() {
    let (c, memory) = controller(1, Some(64 * MIB), 8);
    let _busy = admitted(c.acquire(CLASS, None));
    memory.set(63 * MIB + MIB / 2);
    c.tick(Tick::refreshed(Ok(())));
    let shed = rejected(c.acquire_as(Priority::Sheddable, CLASS, None, String::new));
    assert_eq!(shed.reason(), Reason::QueueFull);
    // The slots answer first for what holds it back.
    assert_eq!(shed.limit(), Limit::Concurrency);
    let _normal = queued(c.acquire_as(Priority::Normal, CLASS, None, String::new));
}

#[test]
fn the_fast_look_at_the_limits_answers_as_the_whole_record() {
    for max in [1, 2] {
        let (c, memory) = controller(max, Some(64 * MIB), 8);
        let mut held = Vec::new();
        for reading in [0, 62 * MIB, 70 * MIB] {
            memory.set(reading);
            c.tick(Tick::refreshed(Ok(())));
            for in_flight in 0..=max {
                let state = c.state.load(std::sync::atomic::Ordering::SeqCst);
                for priority in [Priority::Sheddable, Priority::Normal, Priority::Critical] {
                    for (charge, known) in [(MIB, true), (MIB, false), (8 * MIB, true)] {
                        let ask = crate::controller::inputs::Ask {
                            priority,
                            class: crate::controller::ClassId::OVERFLOW,
                            charge,
                            declared: 0,
                            least: MIB,
                            known,
                            cpu_us: 0,
                            body_us: None,
                            long: false,
                        };
                        let fit = c.fit(state, reading, ask);
                        assert_eq!(c.goes(state, reading, ask), fit.goes(), "{fit:?}");
                    }
                }
                if in_flight < max {
                    held.push(c.acquire_as(Priority::Critical, CLASS, None, String::new));
                }
            }
            held.clear();
        }
    }
}

#[test]
fn reserved_slots_are_for_critical_requests_only() {
    let c = with_reserve(3, None, 8, 1);
    let _a = admitted(c.acquire(CLASS, None));
    let _b = admitted(c.acquire_as(Priority::Sheddable, CLASS, None, String::new));
    let mut normal = queued(c.acquire(CLASS, None));
    let _critical = admitted(c.acquire_as(Priority::Critical, CLASS, None, String::new));
    let rejection = normal.expire().unwrap_err();
    assert_eq!(rejection.limit(), Limit::Concurrency);
}

#[test]
fn a_critical_request_takes_the_newest_lower_place_in_a_full_queue() {
    let c = with_reserve(1, None, 2, 0);
    let busy = admitted(c.acquire(CLASS, None));
    let waker = Arc::new(CountingWaker::default());
    let mut older = queued(c.acquire(CLASS, None));
    let mut newer = queued(c.acquire(CLASS, None));
    let rejection = rejected(c.acquire(CLASS, None));
    assert_eq!(rejection.reason(), Reason::QueueFull);
    let mut critical = queued(c.acquire_as(Priority::Critical, CLASS, None, String::new));
    assert!(!newer.is_waiting());
    match newer.poll_grant(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(Err(rejection)) => {
            assert_eq!(rejection.reason(), Reason::QueueFull);
            assert_eq!(rejection.limit(), Limit::Concurrency);
        }
        other => panic!("expected the evicted waiter's rejection, got {other:?}"),
    }
    let mut second = queued(c.acquire_as(Priority::Critical, CLASS, None, String::new));
    assert!(older.expire().is_err(), "the last lower place went too");
    let full = rejected(c.acquire_as(Priority::Critical, CLASS, None, String::new));
    assert_eq!(full.reason(), Reason::QueueFull, "no lower place is left");
    drop(busy);
    let served = poll(&mut critical, &waker);
    assert!(served.is_ready());
    assert!(poll(&mut second, &waker).is_pending());
    let s = c.snapshot();
    assert_eq!(s.rejected_with(Priority::Normal, Reason::QueueFull), 3);
    assert_eq!(s.rejected_with(Priority::Critical, Reason::QueueFull), 1);
    assert_eq!(s.queued, 1);
}

#[test]
fn an_evicted_waiter_dropped_unseen_leaves_nothing() {
    let c = with_reserve(1, None, 1, 0);
    let busy = admitted(c.acquire(CLASS, None));
    let evicted = queued(c.acquire_as(Priority::Sheddable, CLASS, None, String::new));
    let critical = queued(c.acquire_as(Priority::Critical, CLASS, None, String::new));
    drop(evicted);
    drop(critical);
    drop(busy);
    let s = c.snapshot();
    assert_eq!((s.in_flight, s.queued, s.admitted), (0, 0, 1));
    assert!(c.lock().is_empty());
}

thread_local! {
    /// What the test says this thread has allocated, for [`Counted`].
    static ALLOCATED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A memory source that reads nothing but counts per thread, as jemalloc does.
#[derive(Debug)]
struct Counted;

impl MemorySource for Counted {
    fn allocated_bytes(&self) -> u64 {
        0
    }

    fn name(&self) -> &'static str {
        "counted"
    }

    fn thread_allocations(&self) -> Option<fn() -> ThreadAllocations> {
        Some(|| ThreadAllocations {
            allocated: ALLOCATED.get(),
            freed: 0,
        })
    }
}

#[test]
fn a_class_not_seen_yet_goes_one_at_a_time_until_a_poll_shows_its_cost() {
    let settings = Settings::for_tests(8, Some(64 * MIB), 8);
    let c = Arc::new(Controller::new(settings, Arc::new(Counted)));
    let mut first = match c.acquire(CLASS, None) {
        Acquired::Admitted(permit) => permit,
        other => panic!("the first of a new class goes: {other:?}"),
    };
    let second = queued(c.acquire(CLASS, None));
    // Its first poll allocates 16 MiB: the class is known, and the second one goes.
    let _ = first.track(|| {
        ALLOCATED.set(ALLOCATED.get() + 16 * MIB);
        Poll::Ready(())
    });
    assert!(!second.is_waiting());
    // From now on, requests of the class go at once on what it showed.
    match c.acquire(CLASS, None) {
        Acquired::Admitted(third) => assert!(third.charged_bytes() >= 16 * MIB, "{third:?}"),
        other => panic!("expected admission, got {other:?}"),
    }
}

#[test]
fn waiters_queued_on_their_class_s_first_guess_go_on_what_it_showed_since() {
    let settings = Settings::for_tests(16, Some(64 * MIB), 16);
    let c = Arc::new(Controller::new(settings, Arc::new(Counted)));
    let Acquired::Admitted(mut first) = c.acquire(CLASS, Some(MIB)) else {
        panic!("the first of a new class did not go")
    };
    // Seven more arrive before the first shows anything: they queue on the first guess.
    let mut waiters: Vec<Ticket> = (0..7)
        .map(|_| queued(c.acquire(CLASS, Some(MIB))))
        .collect();
    // The first poll allocates 16 MiB: the class costs that a request, not 1 MiB and a bit.
    let _ = first.track(|| {
        ALLOCATED.set(ALLOCATED.get() + 16 * MIB);
        Poll::Ready(())
    });
    let mut cx = Context::from_waker(Waker::noop());
    let granted: Vec<Permit> = waiters
        .iter_mut()
        .filter_map(|ticket| match ticket.poll_grant(&mut cx) {
            Poll::Ready(Ok(permit)) => Some(permit),
            _ => None,
        })
        .collect();
    // As many as the budget holds at 16 MiB each go, each charged that; the rest wait.
    assert!((1..4).contains(&granted.len()), "{granted:?}");
    assert!(granted.iter().all(|p| p.charged_bytes() >= 16 * MIB));
    assert!(c.snapshot().charged_bytes <= 64 * MIB);
}

#[test]
fn a_new_class_held_back_one_at_a_time_blames_its_estimate_not_memory() {
    let settings = Settings::for_tests(8, Some(64 * MIB), 0);
    let c = Arc::new(Controller::new(settings, Arc::new(Counted)));
    let Acquired::Admitted(mut first) = c.acquire(CLASS, None) else {
        panic!("the first of a new class did not go")
    };
    // Memory stands far below the budget: the estimate held the second back.
    assert_eq!(rejected(c.acquire(CLASS, None)).limit(), Limit::Estimate);
    assert_eq!(c.snapshot().rejected(Reason::QueueFull, Limit::Estimate), 1);
    // Once its cost is known, the next goes.
    let _ = first.track(|| Poll::Ready(()));
    let _next = admitted(c.acquire(CLASS, None));
}

#[test]
fn observing_only_with_no_queue_counts_a_new_class_only_when_another_was_in_flight() {
    let settings = Settings {
        observe_only: true,
        ..Settings::for_tests(8, Some(64 * MIB), 0)
    };
    let c = Arc::new(Controller::new(settings, Arc::new(Counted)));
    let unpolled = |acquired| match acquired {
        Acquired::Admitted(permit) => permit,
        other => panic!("expected admission, got {other:?}"),
    };
    // Alone, the first of a new class would have gone: nothing to count.
    let first = unpolled(c.acquire(CLASS, None));
    assert_eq!(
        c.snapshot()
            .would_reject(Reason::QueueFull, Limit::Estimate),
        0
    );
    // Beside it, still unpolled, the second would have been rejected: counted once.
    let second = unpolled(c.acquire(CLASS, None));
    let s = c.snapshot();
    assert_eq!(s.would_reject.iter().flatten().sum::<u64>(), 1, "{s:?}");
    assert_eq!(s.would_reject(Reason::QueueFull, Limit::Estimate), 1);
    drop((first, second));
}

#[test]
fn observing_only_admits_everything_and_counts_what_it_would_refuse() {
    let settings = Settings {
        observe_only: true,
        ..Settings::for_tests(1, Some(64 * MIB), 1)
    };
    let c = Arc::new(Controller::new(settings, Arc::new(ManualMemory::new(0))));
    let first = admitted(c.acquire(CLASS, None));
    // It would have waited: it goes, and stands for that waiter.
    let waiter = admitted(c.acquire(CLASS, None));
    assert_eq!(
        c.snapshot()
            .would_reject(Reason::QueueFull, Limit::Concurrency),
        0
    );
    // The queue it would have waited in is full: counted, and admitted all the same.
    let rejected = admitted(c.acquire(CLASS, None));
    let too_large = admitted(c.acquire(CLASS, Some(100 * MIB)));
    let s = c.snapshot();
    assert_eq!(s.would_reject(Reason::QueueFull, Limit::Concurrency), 1);
    assert_eq!(s.would_reject(Reason::TooLarge, Limit::Memory), 1);
    assert_eq!((s.rejected_total(), s.in_flight, s.queued), (0, 4, 0));
    assert!(s.observe_only);
    drop((first, waiter, rejected, too_large));
    let s = c.snapshot();
    assert_eq!((s.in_flight, s.charged_bytes), (0, 0));
    // Nothing stands for a waiter any more: the next two go without a count.
    let _next = (
        admitted(c.acquire(CLASS, None)),
        admitted(c.acquire(CLASS, None)),
    );
    assert_eq!(
        c.snapshot()
            .would_reject(Reason::QueueFull, Limit::Concurrency),
        1
    );
}

/// A pool whose live limit (4 slots at most) has fallen to 2 after two late windows, with a
/// 5 ms queue target, 64 MiB of budget, and a virtual clock (in nanoseconds).
fn fallen_pool() -> (Arc<Controller>, ManualMemory, Arc<AtomicU64>) {
    let memory = ManualMemory::new(0);
    let settings = Settings {
        lateness_target: Some(Duration::from_millis(10)),
        queue_target: QueueTarget::Fixed(Duration::from_millis(5)),
        ..Settings::for_tests(4, Some(64 * MIB), 8)
    };
    let (clock, now) = Clock::virtual_for_tests();
    let controller = Arc::new(Controller::with_clock(
        settings,
        Arc::new(memory.clone()),
        clock,
    ));
    let late = Runtime {
        lateness: Duration::from_millis(15),
        ..Runtime::default()
    };
    for now_ms in [0, 60, 120, 180] {
        now.store(now_ms * MS, Relaxed);
        controller.tick(runtime_tick(late));
    }
    assert!(controller.adaptive.has_fallen());
    (controller, memory, now)
}

#[test]
fn a_live_limit_that_fell_holds_arrivals_back_as_adaptive() {
    let (c, _, _) = fallen_pool();
    let live = c.snapshot().concurrency_limit;
    assert!(live < 4, "{live}");
    let _served: Vec<Permit> = (0..live)
        .map(|_| admitted(c.acquire(CLASS, None)))
        .collect();
    let mut ticket = queued(c.acquire(CLASS, None));
    assert_eq!(
        ticket.expire().unwrap_err(),
        Rejection::new(Reason::QueueTimeout, Limit::Adaptive)
    );
}

#[test]
fn a_late_runtime_sheds_waiters_for_a_slot_past_twice_the_target_and_keeps_those_for_memory() {
    let (c, memory, now) = fallen_pool();
    let live = c.snapshot().concurrency_limit;
    let mut served: Vec<Permit> = (0..live)
        .map(|_| admitted(c.acquire(CLASS, None)))
        .collect();
    let mut first = queued(c.acquire(CLASS, None));
    let mut second = queued(c.acquire(CLASS, None));
    // Held back by memory as well as by the live limit.
    memory.set(60 * MIB);
    let large = queued(c.acquire(CLASS, Some(63 * MIB)));
    // Past twice the target; the next grant looks.
    now.fetch_add(11_000_000, Relaxed);
    drop(served.pop());
    let waker = Arc::new(CountingWaker::default());
    assert!(
        poll(&mut first, &waker).is_ready(),
        "the freed slot goes to the head"
    );
    let mut cx = Context::from_waker(Waker::noop());
    match second.poll_grant(&mut cx) {
        Poll::Ready(Err(rejection)) => assert_eq!(
            rejection,
            Rejection::new(Reason::StandingQueue, Limit::Adaptive)
        ),
        other => panic!("expected a standing-queue rejection, got {other:?}"),
    }
    assert!(
        large.is_waiting(),
        "held back by memory: it keeps its place"
    );
    let s = c.snapshot();
    assert_eq!(s.rejected(Reason::StandingQueue, Limit::Adaptive), 1);
}

const MS: u64 = 1_000_000;

/// A pool with the CPU gate on (two workers, no budget, 16 slots, a queue of 8) and a virtual
/// clock in nanoseconds.
fn cpu_pool() -> (Arc<Controller>, Arc<AtomicU64>) {
    let settings = Settings {
        lateness_target: Some(Duration::from_millis(10)),
        queue_target: QueueTarget::Auto,
        ..Settings::for_tests(16, None, 8)
    };
    let (clock, now) = Clock::virtual_for_tests();
    let memory = Arc::new(ManualMemory::new(0));
    (
        Arc::new(Controller::with_clock(settings, memory, clock)),
        now,
    )
}

/// A request of `class` that runs to its response: `work` poll by poll, each a time spent in
/// the poll, with `between` passing outside them (a timer, a downstream call, a client).
fn serve(c: &Arc<Controller>, now: &AtomicU64, class: CostClass, work: &[u64], between: u64) {
    let mut permit = match c.acquire(class, None) {
        Acquired::Admitted(permit) => permit,
        other => panic!("expected admission, got {other:?}"),
    };
    for spent in work {
        let _ = permit.track(|| Poll::Ready(now.fetch_add(*spent, Relaxed)));
        now.fetch_add(between, Relaxed);
    }
    permit.responded();
}

/// Judges one window of the CPU gate in which request polls kept `busy` workers busy.
fn window(c: &Controller, now: &AtomicU64, busy: f64) {
    let window_ns = 50 * MS;
    c.cpu.polled((busy * window_ns as f64) as u64);
    c.tick(runtime_tick(Runtime::default()));
    now.fetch_add(window_ns, Relaxed);
    c.tick(runtime_tick(Runtime::default()));
}

/// A tick of the sampler on a good reading, with how the runtime runs.
fn runtime_tick(runtime: Runtime) -> Tick {
    Tick {
        runtime: Some(runtime),
        ..Tick::refreshed(Ok(()))
    }
}

#[test]
fn cpu_demand_is_time_in_polls_never_time_between_them() {
    let (c, now) = cpu_pool();
    let (parse, sleep) = (CostClass::new("parse"), CostClass::new("sleep"));
    // A handler that parses: two polls of 3 ms.
    serve(&c, &now, parse, &[3 * MS, 3 * MS], 0);
    // A handler that sleeps 500 ms between two polls of 10 µs: waiting is not work.
    serve(&c, &now, sleep, &[10_000, 10_000], 500 * MS);
    let figure = |class| {
        let id = c.classes.find(class, String::new);
        c.classes.work(id, 0).cpu_ns.unwrap()
    };
    assert_eq!(figure(parse), 6 * MS);
    assert_eq!(figure(sleep), 20_000);
    assert_eq!(c.cpu.charged_us(), 0, "everything given back");
    // The snapshot shows what each class costs.
    let mut seen: Vec<Option<Duration>> = c.snapshot().classes.iter().map(|k| k.cpu).collect();
    seen.sort();
    let expected = [Duration::from_micros(20), Duration::from_millis(6)];
    assert_eq!(seen, expected.map(Some));
}

#[test]
fn a_request_whose_body_is_coming_is_charged_once_its_body_takes_its_turn() {
    let (c, now) = cpu_pool();
    let upload = CostClass::new("upload");
    // The class demands 4 ms for a body of 1 MiB.
    parse_body(&c, &now, upload, (1 << 20, 30 * MS), 4 * MS);
    let mut permit = admitted(c.acquire(upload, Some(1 << 20)));
    assert_eq!(c.cpu.charged_us(), 4_000);
    let body = Arc::new(crate::controller::progress::BodyProgress::new(
        1 << 20,
        None,
    ));
    permit.follow(Arc::clone(&body));
    assert_eq!(c.cpu.charged_us(), 0, "its work comes with its body");
    assert_eq!(c.cpu.coming_us(), 4_000);
    // Waiting for the client's bytes: still coming, however long.
    body.set_waited(Some(Duration::from_millis(10)));
    let _ = permit.track(|| Poll::Ready(now.fetch_add(MS, Relaxed)));
    now.fetch_add(20 * MS, Relaxed);
    assert_eq!((c.cpu.charged_us(), c.cpu.coming_us()), (0, 4_000));
    // The body is in: its last frame takes the turn, and its work is charged.
    let waker = Waker::from(Arc::new(CountingWaker::default()));
    assert!(
        c.cpu.take_turn(&body.turn, &waker),
        "the CPU is not saturated"
    );
    assert_eq!((c.cpu.charged_us(), c.cpu.coming_us()), (4_000, 0));
    body.set_waited(None);
    let _ = permit.track(|| Poll::Ready(now.fetch_add(MS, Relaxed)));
    assert_eq!(c.cpu.charged_us(), 2_000, "the estimate less what was used");
    permit.responded();
    drop(permit);
    assert_eq!((c.cpu.charged_us(), c.cpu.coming_us()), (0, 0));
    let id = c.classes.find(upload, String::new);
    assert_eq!(
        c.classes.work(id, 0).body_us,
        Some(22_000),
        "first poll to the body's end"
    );
    // A request that ends before its body is in gives back what it brought.
    let mut gone = admitted(c.acquire(upload, Some(1 << 20)));
    gone.follow(Arc::new(crate::controller::progress::BodyProgress::new(
        1 << 20,
        None,
    )));
    assert!(c.cpu.coming_us() > 0);
    drop(gone);
    assert_eq!((c.cpu.charged_us(), c.cpu.coming_us()), (0, 0));
}

#[test]
fn a_saturated_cpu_admits_the_work_the_workers_finish_soon_and_bounds_the_wait() {
    let (c, now) = cpu_pool();
    let parse = CostClass::new("parse");
    serve(&c, &now, parse, &[4 * MS], 0);
    // Not saturated: the gate is open, whatever is charged.
    let mut served: Vec<Permit> = (0..5).map(|_| admitted(c.acquire(parse, None))).collect();
    drop(served.drain(2..));
    window(&c, &now, 1.8);
    assert!(c.snapshot().cpu_saturated);
    // Two workers, 1.5 requests of 4 ms each: 12 ms of work. Two are in flight (8 ms).
    served.push(admitted(c.acquire(parse, None)));
    let mut first = queued(c.acquire(parse, None));
    // A waiter's wait is the work queued up to it, over two workers: the second would wait
    // 4 ms, twice its target (half of 4 ms), one service time; the third longer, so it is
    // rejected at once.
    let mut others = vec![queued(c.acquire(parse, None))];
    assert_eq!(
        rejected(c.acquire(parse, None)),
        Rejection::new(Reason::StandingQueue, Limit::Cpu)
    );
    // A request whose work is done gives its charge back: the head goes, and one more fits
    // in the wait.
    let waker = Arc::new(CountingWaker::default());
    let _ = served[0].track(|| Poll::Ready(now.fetch_add(4 * MS, Relaxed)));
    let Poll::Ready(_head) = poll(&mut first, &waker) else {
        panic!("the head goes first");
    };
    others.push(queued(c.acquire(parse, None)));
    // At the next grant, a freed slot goes to the oldest waiter, and those that waited past
    // twice their target are sent away.
    now.fetch_add(5 * MS, Relaxed);
    drop(served.pop());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(others[0].poll_grant(&mut cx), Poll::Ready(Ok(_))));
    for ticket in &mut others[1..] {
        match ticket.poll_grant(&mut cx) {
            Poll::Ready(Err(rejection)) => {
                assert_eq!(rejection, Rejection::new(Reason::StandingQueue, Limit::Cpu))
            }
            other => panic!("expected a standing-queue rejection, got {other:?}"),
        }
    }
    let s = c.snapshot();
    assert_eq!(s.rejected(Reason::StandingQueue, Limit::Cpu), 1 + 1);
    assert_eq!(s.queued, 0);
    // Slack: the gate opens.
    window(&c, &now, 0.5);
    assert!(!c.snapshot().cpu_saturated);
    let _more: Vec<Permit> = (0..8).map(|_| admitted(c.acquire(parse, None))).collect();
}

/// Serves a request of `class` that declared `declared` body bytes, whose body arrives after
/// `arrives` and is parsed in one poll of `parse`.
fn parse_body(
    c: &Arc<Controller>,
    now: &AtomicU64,
    class: CostClass,
    (declared, arrives): (u64, u64),
    parse: u64,
) {
    let (mut permit, body) = upload(c, class, declared);
    now.fetch_add(arrives, Relaxed);
    assert!(c.cpu.take_turn(&body.turn, Waker::noop()));
    let _ = permit.track(|| Poll::Ready(now.fetch_add(parse, Relaxed)));
    permit.responded();
}

/// A request of `class` admitted with a `declared` body, its body in and waiting for its turn.
fn upload(
    c: &Arc<Controller>,
    class: CostClass,
    declared: u64,
) -> (Permit, Arc<crate::controller::progress::BodyProgress>) {
    let mut permit = admitted(c.acquire(class, Some(declared)));
    let body = Arc::new(crate::controller::progress::BodyProgress::new(
        declared, None,
    ));
    permit.follow(Arc::clone(&body));
    body.set_waited(None);
    (permit, body)
}

#[test]
fn bodies_that_parse_long_run_on_all_workers_but_one() {
    let (c, now) = cpu_pool();
    let parse = CostClass::new("parse");
    // Bodies parsed in one poll, as long as they are long: 64 KiB in 0.5 ms, 4 MiB in 32 ms
    // (twice the lateness target, 10 ms, is long).
    for _ in 0..4 {
        parse_body(&c, &now, parse, (64 << 10, 0), MS / 2);
        parse_body(&c, &now, parse, (4 << 20, 0), 32 * MS);
    }
    let (large, large_body) = upload(&c, parse, 4 << 20);
    let (other, other_body) = upload(&c, parse, 4 << 20);
    let (small, small_body) = upload(&c, parse, 64 << 10);
    let waker = Arc::new(CountingWaker::default());
    let woken = Waker::from(Arc::clone(&waker));
    assert!(c.cpu.take_turn(&large_body.turn, &woken));
    assert!(
        !c.cpu.take_turn(&other_body.turn, &woken),
        "one long parse at a time on two workers"
    );
    assert!(
        c.cpu.take_turn(&small_body.turn, &woken),
        "a short one goes"
    );
    drop(small);
    drop(large);
    assert!(waker.0.load(Relaxed) > 0, "woken when the long one ends");
    assert!(c.cpu.take_turn(&other_body.turn, &woken));
    drop(other);
    assert_eq!((c.cpu.charged_us(), c.cpu.coming_us()), (0, 0));
}

#[test]
fn requests_without_a_body_that_poll_long_start_on_all_workers_but_one() {
    let (c, now) = cpu_pool();
    let crunch = CostClass::new("crunch");
    // A poll of 30 ms: twice the lateness target (10 ms) or more is long.
    serve(&c, &now, crunch, &[30 * MS], 0);
    let Acquired::Admitted(first) = c.acquire(crunch, None) else {
        panic!("nothing in flight")
    };
    let Acquired::Admitted(second) = c.acquire(crunch, None) else {
        panic!("one running, one waiting for its turn")
    };
    let waker = Arc::new(CountingWaker::default());
    let woken = Waker::from(Arc::clone(&waker));
    assert!(first.take_turn(&woken));
    assert!(!second.take_turn(&woken), "one at a time on two workers");
    assert_eq!(
        c.cpu.charged_us(),
        0,
        "on a worker of its own, it is charged nothing"
    );
    // As many as may run are ready and wait for a worker: the next waits in the queue.
    let mut third = queued(c.acquire(crunch, None));
    // The first waits on a timer after its long poll: it spares its worker.
    let mut first = first;
    let _ = first.track(|| Poll::<()>::Pending);
    assert!(
        waker.0.load(Relaxed) > 0,
        "woken when the first spares its worker"
    );
    assert!(second.take_turn(&woken));
    drop(first);
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok(third)) = third.poll_grant(&mut cx) else {
        panic!("the third goes once none waits for a worker");
    };
    assert!(!third.take_turn(&woken), "the second runs");
    drop(second);
    assert!(third.take_turn(&woken));
    drop(third);
    assert_eq!((c.cpu.charged_us(), c.cpu.coming_us()), (0, 0));
}

#[test]
fn uploads_are_admitted_for_the_work_done_while_their_bodies_come_and_parse_in_turn() {
    let (c, now) = cpu_pool();
    let (upload, parse) = (CostClass::new("upload"), CostClass::new("parse"));
    serve(&c, &now, parse, &[4 * MS], 0);
    // Uploads whose bodies took 20 ms to come, for a 4 ms parse.
    for _ in 0..8 {
        let mut permit = admitted(c.acquire(upload, Some(1 << 20)));
        let body = Arc::new(crate::controller::progress::BodyProgress::new(
            1 << 20,
            None,
        ));
        permit.follow(Arc::clone(&body));
        body.set_waited(Some(Duration::ZERO));
        let _ = permit.track(|| Poll::Ready(()));
        now.fetch_add(20 * MS, Relaxed);
        body.set_waited(None);
        let _ = permit.track(|| Poll::Ready(now.fetch_add(4 * MS, Relaxed)));
        permit.responded();
    }
    let id = c.classes.find(upload, String::new);
    assert_eq!(c.classes.work(id, 0).body_us, Some(24_000));
    let parses: Vec<Permit> = (0..3).map(|_| admitted(c.acquire(parse, None))).collect();
    window(&c, &now, 1.9);
    assert!(c.cpu.charged_us() >= c.cpu.capacity_us());
    assert!(matches!(c.acquire(parse, None), Acquired::Queued(_)));
    // Two workers do 48 ms of work while a body comes, and 12 ms are the gate's horizon: 60
    // ms of work, 12 charged, so 12 uploads of 4 ms may be coming; the thirteenth waits.
    let mut uploads: Vec<(Permit, Arc<crate::controller::progress::BodyProgress>)> = (0..12)
        .map(|_| {
            let mut permit = admitted(c.acquire(upload, Some(1 << 20)));
            let body = Arc::new(crate::controller::progress::BodyProgress::new(
                1 << 20,
                None,
            ));
            permit.follow(Arc::clone(&body));
            (permit, body)
        })
        .collect();
    assert_eq!(c.cpu.coming_us(), 48_000);
    assert!(matches!(
        c.acquire(upload, Some(1 << 20)),
        Acquired::Queued(_)
    ));
    // A body that is in waits for its turn while the work charged is full...
    let counting = Arc::new(CountingWaker::default());
    let waker = Waker::from(Arc::clone(&counting));
    let (_, body) = &uploads[0];
    assert!(!c.cpu.take_turn(&body.turn, &waker));
    // ... and is woken as a parse's work is done: it fits now.
    drop(parses);
    assert_eq!(counting.0.load(Relaxed), 1, "woken");
    assert!(c.cpu.take_turn(&body.turn, &waker));
    assert_eq!(c.cpu.coming_us(), 44_000);
    uploads.clear();
    assert_eq!((c.cpu.charged_us(), c.cpu.coming_us()), (0, 0));
}

#[test]
fn beside_other_processes_a_pool_charges_only_its_share_of_the_headroom_between_samples() {
    let settings = Settings::for_tests(64, Some(64 * MIB), 64);
    let c = Arc::new(Controller::new(settings, Arc::new(ManualMemory::new(0))));
    // Two other processes of the cgroup have 8 MiB admitted and not yet allocated.
    let others = crate::memory::shared::Others {
        unseen: 8 * MIB,
        processes: 2,
    };
    c.tick(Tick {
        others: Some(others),
        ..Tick::refreshed(Ok(()))
    });
    // 56 MiB of headroom over three processes: 18.7 MiB (18 requests of 1 MiB) until the
    // next sample, where alone it would have taken 62.
    let first: Vec<Permit> = (0..18).map(|_| admitted(c.acquire(CLASS, None))).collect();
    let waiter = queued(c.acquire(CLASS, None));
    assert_eq!(
        c.snapshot().rejected_total(),
        0,
        "it waits for the next sample"
    );
    // The next sample: 38 MiB of headroom left, a third of it this process's.
    c.tick(Tick {
        others: Some(others),
        ..Tick::refreshed(Ok(()))
    });
    assert!(!waiter.is_waiting(), "granted at the next sample");
    // Alone again: the whole headroom.
    c.tick(Tick {
        others: Some(crate::memory::shared::Others::default()),
        ..Tick::refreshed(Ok(()))
    });
    let more: Vec<Permit> = (0..30).map(|_| admitted(c.acquire(CLASS, None))).collect();
    drop((first, more, waiter));
}

/// Serves a request of `CLASS` (1 MiB) on `c` for `ms` of the virtual clock `now` between
/// its first poll and its last, answered.
fn serve_for(c: &Arc<Controller>, now: &AtomicU64, ms: u64) {
    let mut permit = admitted(c.acquire(CLASS, None));
    now.fetch_add(ms * MS, Relaxed);
    let _ = permit.track(|| Poll::Ready(()));
    permit.responded();
    drop(permit);
}

/// A pool of `budget` with the CPU gate on (polls timed) and a virtual clock.
fn timed_pool(budget: u64) -> (Arc<Controller>, ManualMemory, Arc<AtomicU64>) {
    let memory = ManualMemory::new(0);
    let settings = Settings {
        queue_target: QueueTarget::Auto,
        lateness_target: Some(Duration::from_millis(10)),
        ..Settings::for_tests(64, Some(budget), 64)
    };
    let (clock, now) = Clock::virtual_for_tests();
    let c = Controller::with_clock(settings, Arc::new(memory.clone()), clock);
    (Arc::new(c), memory, now)
}

#[test]
fn a_queue_for_memory_that_stands_turns_arrivals_away_and_a_burst_is_let_in() {
    // A budget of 8 requests of 1 MiB, each served in 100 ms.
    let (c, _, now) = timed_pool(8 * MIB);
    serve_for(&c, &now, 100);
    let _served: Vec<Permit> = (0..8).map(|_| admitted(c.acquire(CLASS, None))).collect();
    // A burst twice the budget queues whole: a queue that has not stood is what it is for.
    let burst: Vec<Ticket> = (0..16).map(|_| queued(c.acquire(CLASS, None))).collect();
    // Once the queue has had waiters for 100 ms, 16 waiting for 8 in flight is a wait of two
    // service times: the next is rejected at once.
    now.fetch_add(100 * MS, Relaxed);
    assert_eq!(
        rejected(c.acquire(CLASS, None)),
        Rejection::new(Reason::StandingQueue, Limit::Memory)
    );
    // With fewer waiting than in flight, the wait is within one service time: it queues.
    drop(burst.into_iter().skip(6).collect::<Vec<_>>());
    let _waiter = queued(c.acquire(CLASS, None));
    assert_eq!(
        c.snapshot().rejected(Reason::StandingQueue, Limit::Memory),
        1
    );
}

#[test]
fn a_class_that_holds_little_of_the_budget_keeps_its_place_in_a_standing_queue() {
    // The same queue, but the budget is 64 requests: what holds them back is not their own.
    let (c, memory, now) = timed_pool(64 * MIB);
    serve_for(&c, &now, 100);
    memory.set(56 * MIB); // something else holds the rest
    c.tick(Tick::refreshed(Ok(())));
    let _served: Vec<Permit> = (0..8).map(|_| admitted(c.acquire(CLASS, None))).collect();
    let _burst: Vec<Ticket> = (0..16).map(|_| queued(c.acquire(CLASS, None))).collect();
    now.fetch_add(100 * MS, Relaxed);
    let _waiter = queued(c.acquire(CLASS, None));
}
