//! Model-based property tests of the controller: random arrivals (with random declared
//! lengths and priorities, some pools reserving a slot and 8 MiB for critical ones),
//! cancellations while queued and while served, completions, deadlines, memory readings
//! moving up and down, failed readings, and samples. After every step the invariants are
//! checked; when everything has ended, every figure must be back to zero. A quarter of the
//! sequences close the pool part-way, as a graceful shutdown does.
//!
//! A stress test hammers the lock-free paths from many threads at once: the races between
//! admission, release, grant and cancellation that a loom model would explore exhaustively.
//! The primitives are std's `Mutex` and atomics on one state word; the stress test checks the
//! same end state (nothing leaked, every request accounted for) under real interleavings.

use std::{
    sync::{Arc, Barrier},
    task::{Context, Poll, Waker},
};

use proptest::prelude::*;

use crate::{
    controller::{
        Clock, Controller, CostClass, MAX_PASSES, QueueTarget, Runtime, Settings, admit::Acquired,
        permit::Permit, tick::Tick, ticket::Ticket, word::kib,
    },
    memory::{ManualMemory, MemorySource},
    priority::Priority,
    rejection::{Limit, Reason},
};

const MIB: u64 = 1 << 20;
const ESTIMATE: u64 = MIB;
const CLASS: CostClass = CostClass::ANY_FOR_TESTS;

#[derive(Debug, Clone)]
enum Op {
    /// A request of this priority arrives declaring this many MiB (0: no body).
    Arrive(u8, Priority),
    /// The i-th request in flight is polled: its cost is known from now on.
    Run(usize),
    /// The i-th request in flight finishes (or panics, or its client vanishes: the same drop).
    Finish(usize),
    /// The i-th waiter's client vanishes.
    Vanish(usize),
    /// The oldest waiter's deadline passes.
    Deadline,
    /// The waiters' futures are woken and polled: granted ones start.
    Poll,
    /// The memory reading changes to this many MiB, and the sampler ticks.
    Memory(u8),
    /// The sampler ticks, but the memory source fails: the memory limit fails open.
    SourceFails,
    /// The sampler reads the runtime this many ms late, a window after the last reading:
    /// the live limit moves (in pools where it is adaptive).
    Late(u8),
    /// Request polls kept this many tenths of the workers busy over a window: the CPU gate
    /// judges whether the CPU is saturated (in pools where it is adaptive).
    Busy(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..12, prop::sample::select(&Priority::ALL[..]))
            .prop_map(|(mib, p)| Op::Arrive(mib, p)),
        3 => any::<usize>().prop_map(Op::Finish),
        2 => any::<usize>().prop_map(Op::Run),
        1 => any::<usize>().prop_map(Op::Vanish),
        1 => Just(Op::Deadline),
        2 => Just(Op::Poll),
        1 => (0u8..80).prop_map(Op::Memory),
        1 => Just(Op::SourceFails),
        2 => (0u8..40).prop_map(Op::Late),
        2 => (0u8..12).prop_map(Op::Busy),
    ]
}

struct Model {
    controller: Arc<Controller>,
    memory: ManualMemory,
    arrivals: u64,
    /// Requests in flight: (arrival number, estimate).
    served: Vec<(u64, u64, Permit)>,
    /// Waiters, oldest first: (arrival number, ticket).
    waiting: Vec<(u64, Ticket)>,
    /// For each waiter by arrival number: how many waited ahead of it when it arrived, and
    /// how many later arrivals have been granted since.
    passed: std::collections::BTreeMap<u64, (usize, u32)>,
    /// The reading with nothing in flight, as the controller learns it.
    baseline: u64,
    closed: bool,
    /// Each request's priority, by arrival number.
    priorities: std::collections::HashMap<u64, Priority>,
    /// By arrival number: the declared length.
    declared: std::collections::HashMap<u64, u64>,
    /// Waiters whose place a critical request took, by arrival number.
    evicted: std::collections::HashSet<u64>,
    /// The virtual clock, in ms, and its handle (in ns).
    now_ms: u64,
    now: Arc<std::sync::atomic::AtomicU64>,
}

impl Model {
    fn new(max: usize, capacity: usize, reserve: bool, adaptive: bool) -> Self {
        let memory = ManualMemory::new(0);
        let mut settings = Settings::for_tests(max, Some(64 * MIB), capacity);
        if reserve && max > 1 {
            (settings.critical_slots, settings.critical_bytes) = (1, 8 * MIB);
        }
        if adaptive {
            settings.lateness_target = Some(std::time::Duration::from_millis(10));
            settings.queue_target = QueueTarget::Fixed(std::time::Duration::from_millis(5));
            settings.initial_limit = 1;
        }
        let (clock, now) = Clock::virtual_for_tests();
        let controller = Arc::new(Controller::with_clock(
            settings,
            Arc::new(memory.clone()),
            clock,
        ));
        Self {
            controller,
            now,
            memory,
            arrivals: 0,
            served: Vec::new(),
            waiting: Vec::new(),
            passed: Default::default(),
            baseline: 0,
            closed: false,
            priorities: Default::default(),
            declared: Default::default(),
            evicted: Default::default(),
            now_ms: 0,
        }
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Arrive(mib, priority) => {
                let declared = u64::from(mib) * MIB;
                self.arrivals += 1;
                self.priorities.insert(self.arrivals, priority);
                self.declared.insert(self.arrivals, declared);
                // The estimate, or what the budget can hold beside the baseline if less.
                let most = |charge: u64| {
                    let room = (64 * MIB).saturating_sub(self.baseline).max(declared);
                    assert_eq!(charge, (declared + ESTIMATE).min(room), "the charge");
                    charge
                };
                let waiters: Vec<u64> = self.waiters().collect();
                let someone_waits = waiters.iter().any(|w| self.priorities[w] <= priority);
                match self
                    .controller
                    .acquire_as(priority, CLASS, Some(declared), String::new)
                {
                    Acquired::Admitted(permit) => {
                        let s = self.controller.snapshot();
                        assert!(
                            s.in_flight <= s.concurrency_limit,
                            "admitted beyond the live limit: {s:?}"
                        );
                        // No barging: an arrival goes through the queue while anyone of its
                        // priority or a higher one waits.
                        assert!(
                            !someone_waits,
                            "request {} overtook a waiter",
                            self.arrivals
                        );
                        self.served
                            .push((self.arrivals, most(permit.charged_bytes()), permit));
                    }
                    Acquired::Queued(ticket) => {
                        assert!(!self.closed, "request {} queued after close", self.arrivals);
                        let ahead = waiters.len();
                        let capacity = self.controller.settings.queue_capacity;
                        if priority == Priority::Sheddable {
                            assert!(
                                ahead * 2 < capacity,
                                "sheddable queued in a half-full queue"
                            );
                        }
                        if ahead == capacity {
                            // Full: the newest waiter of the lowest priority gave its place.
                            assert_eq!(priority, Priority::Critical);
                            let lowest = waiters.iter().map(|w| self.priorities[w]).max();
                            let newest = waiters
                                .iter()
                                .rev()
                                .find(|w| Some(self.priorities[w]) == lowest)
                                .copied();
                            assert!(lowest > Some(priority), "evicted an equal or higher one");
                            self.evicted.extend(newest);
                        }
                        self.passed.insert(self.arrivals, (ahead, 0));
                        most(ticket.charge());
                        self.waiting.push((self.arrivals, ticket))
                    }
                    Acquired::Rejected(_) => {}
                }
            }
            Op::Run(i) if !self.served.is_empty() => {
                let i = i % self.served.len();
                let _ = self.served[i].2.track(|| Poll::Ready(()));
            }
            Op::Finish(i) if !self.served.is_empty() => {
                let i = i % self.served.len();
                drop(self.served.remove(i));
            }
            Op::Vanish(i) if !self.waiting.is_empty() => {
                let i = i % self.waiting.len();
                drop(self.waiting.remove(i));
            }
            Op::Deadline if !self.waiting.is_empty() => {
                let (arrival, mut ticket) = self.waiting.remove(0);
                match ticket.expire() {
                    Ok(permit) => self.served.push((arrival, permit.charged_bytes(), permit)),
                    Err(rejection) => {
                        let evicted = self.evicted.contains(&arrival);
                        let reason = rejection.reason();
                        assert_eq!(evicted, reason == Reason::QueueFull, "{rejection:?}");
                    }
                }
            }
            Op::Memory(mib) => {
                self.memory.set(u64::from(mib) * MIB);
                self.sample();
            }
            Op::SourceFails => self
                .controller
                .tick(Tick::refreshed(Err(crate::memory::MemoryError::injected()))),
            Op::Poll => self.observe_grants(),
            Op::Late(ms) => {
                let lateness = std::time::Duration::from_millis(ms.into());
                self.tick_runtime(Runtime {
                    lateness,
                    ..Runtime::default()
                });
            }
            Op::Busy(tenths) => {
                let workers = self.controller.cpu.workers() as u64;
                let window_ns = 60 * 1_000_000;
                let polled = u64::from(tenths) * workers * window_ns / 10;
                self.controller.cpu.polled(polled);
                self.tick_runtime(Runtime::default());
            }
            _ => {}
        }
    }

    /// The sampler ticks on a good reading; the model follows the baseline as the
    /// controller learns it (the reading with nothing in flight, or a lower one).
    fn sample(&mut self) {
        self.tick(None);
    }

    /// 60 ms later, the sampler ticks with how the runtime runs.
    fn tick_runtime(&mut self, runtime: Runtime) {
        self.now_ms += 60;
        self.now.store(
            self.now_ms * 1_000_000,
            std::sync::atomic::Ordering::Relaxed,
        );
        self.tick(Some(runtime));
    }

    fn tick(&mut self, runtime: Option<Runtime>) {
        let reading = self.memory.allocated_bytes();
        if self.controller.snapshot().in_flight == 0 {
            self.baseline = reading;
        } else {
            self.baseline = self.baseline.min(reading);
        }
        self.controller.tick(Tick {
            refreshed: Ok(()),
            runtime,
            others: None,
        });
    }

    /// Polls every waiter, as their futures would be when woken; granted ones are served.
    fn observe_grants(&mut self) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut still = Vec::new();
        let mut granted = Vec::new();
        for (arrival, mut ticket) in self.waiting.drain(..) {
            match ticket.poll_grant(&mut cx) {
                Poll::Ready(Ok(permit)) => granted.push((arrival, permit.charged_bytes(), permit)),
                // Only a CPU that cannot keep up sheds for waiting: the gate, or a live limit
                // below its ceiling.
                Poll::Ready(Err(rejection)) => assert!(
                    self.closed
                        || self.evicted.contains(&arrival)
                        || (rejection.reason() == Reason::StandingQueue
                            && matches!(rejection.limit(), Limit::Adaptive | Limit::Cpu)),
                    "waiter rejected while open: {rejection:?}"
                ),
                Poll::Pending => still.push((arrival, ticket)),
            }
        }
        self.waiting = still;
        let arrivals: Vec<u64> = granted.iter().map(|g| g.0).collect();
        self.served.extend(granted);
        self.count_passes(&arrivals);
    }

    fn check(&self) {
        let s = self.controller.snapshot();
        let settings = &self.controller.settings;
        // Granted but not yet polled: in flight already, as far as the controller knows.
        let (waiting, gone): (Vec<_>, Vec<_>) =
            self.waiting.iter().partition(|(_, t)| t.is_waiting());
        // Gone from the queue: granted, or evicted or sent away for waiting too long.
        let granted: Vec<_> = gone.into_iter().filter(|(_, t)| t.is_granted()).collect();
        assert_eq!(s.in_flight, self.served.len() + granted.len());
        assert_eq!(s.queued, waiting.len());
        assert!(s.in_flight <= settings.max_concurrency);
        assert!((1..=settings.max_concurrency).contains(&s.concurrency_limit));
        assert!(s.queued <= settings.queue_capacity);
        // Only critical requests use the reserved slots.
        let below_critical = self
            .served
            .iter()
            .map(|(a, _, _)| a)
            .chain(granted.iter().map(|(a, _)| a))
            .filter(|a| self.priorities[a] != Priority::Critical)
            .count();
        assert!(below_critical <= settings.max_concurrency - settings.critical_slots);
        let sheddable = waiting
            .iter()
            .filter(|(a, _)| self.priorities[a] == Priority::Sheddable)
            .count();
        assert!(sheddable <= settings.queue_capacity.div_ceil(2));
        let charged: u64 = self
            .served
            .iter()
            .map(|(_, e, _)| *e)
            .chain(granted.iter().map(|(_, t)| t.charge()))
            .map(|e| kib(e) * 1024)
            .sum();
        assert_eq!(
            s.charged_bytes, charged,
            "charged bytes = the sum over live requests"
        );
        // Charges are the estimates, or what the budget could hold beside the baseline when
        // a waiter was priced: nothing here allocates.
        for (arrival, ticket) in &self.waiting {
            let declared = self.declared[arrival];
            assert!((declared..=declared + ESTIMATE).contains(&ticket.charge()));
        }
    }

    /// The arrival numbers of those still waiting (not granted, not evicted).
    fn waiters(&self) -> impl Iterator<Item = u64> + '_ {
        self.waiting
            .iter()
            .filter(|(_, t)| t.is_waiting())
            .map(|w| w.0)
    }

    /// Bounded backfill: a waiter is passed by later arrivals of its priority or a lower one
    /// at most `MAX_PASSES` times for itself and for each waiter that was ahead of it.
    fn count_passes(&mut self, granted: &[u64]) {
        let still: Vec<u64> = self.waiters().collect();
        self.passed.retain(|arrival, _| still.contains(arrival));
        let priorities = &self.priorities;
        for (arrival, (ahead, passes)) in self.passed.iter_mut() {
            let later = |g: &&u64| *g > arrival && priorities[g] >= priorities[arrival];
            *passes += granted.iter().filter(later).count() as u32;
            let bound = MAX_PASSES * (*ahead as u32 + 1);
            assert!(
                *passes <= bound,
                "request {arrival} passed {passes} times (bound {bound})"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn invariants_hold_after_every_step(
        max in 1usize..5,
        capacity in 0usize..5,
        reserve: bool,
        adaptive: bool,
        ops in proptest::collection::vec(op(), 1..120),
        closes_after in proptest::option::weighted(0.25, 0usize..120),
    ) {
        let mut model = Model::new(max, capacity, reserve, adaptive);
        for (step, op) in ops.into_iter().enumerate() {
            if closes_after == Some(step) {
                model.controller.close();
                model.closed = true;
            }
            model.apply(op);
            model.check();
        }
        // Whatever memory says, finishing what is served and taking fresh readings drains
        // the queue, one waiter at least per round: it cannot wedge.
        for _ in 0..=model.waiting.len() {
            model.served.clear();
            model.sample();
            model.observe_grants();
            model.check();
        }
        model.served.clear();
        prop_assert!(model.waiting.is_empty(), "{} waiters left", model.waiting.len());
        let s = model.controller.snapshot();
        prop_assert_eq!((s.in_flight, s.queued, s.charged_bytes), (0, 0, 0));
        // Every decision is counted once by priority too.
        let admitted: u64 = Priority::ALL.iter().map(|p| s.admitted_with(*p)).sum();
        prop_assert_eq!(admitted, s.admitted);
        for reason in Reason::ALL {
            let by_priority: u64 = Priority::ALL.iter().map(|p| s.rejected_with(*p, reason)).sum();
            let by_limit: u64 = Limit::ALL.iter().map(|l| s.rejected(reason, *l)).sum();
            prop_assert_eq!(by_priority, by_limit);
        }
    }
}

#[test]
fn many_threads_racing_leave_nothing_behind() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 5_000;
    let memory = ManualMemory::new(0);
    let settings = Settings {
        critical_slots: 1,
        ..Settings::for_tests(3, Some(16 * MIB), 4)
    };
    let controller = Arc::new(Controller::new(settings, Arc::new(memory.clone())));
    let start = Arc::new(Barrier::new(THREADS + 1));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (controller, memory, start) = (controller.clone(), memory.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                let mut cx = Context::from_waker(Waker::noop());
                let mut tally = Tally::default();
                for round in 0..ROUNDS {
                    let declared = ((t + round) % 5) as u64 * MIB;
                    let priority = Priority::ALL[(t + round / 7) % 3];
                    match controller.acquire_as(priority, CLASS, Some(declared), String::new) {
                        Acquired::Admitted(mut permit) => {
                            tally.admitted += 1;
                            if round % 2 == 0 {
                                let _ = permit.track(|| {
                                    std::thread::yield_now();
                                    Poll::Ready(())
                                });
                            }
                            drop(permit);
                        }
                        Acquired::Queued(mut ticket) => match round % 3 {
                            // The client vanishes (its grant, if one came, goes back).
                            0 => {
                                tally.vanished += 1;
                                drop(ticket);
                            }
                            // The deadline races with the grant.
                            1 => match ticket.expire() {
                                Ok(_) => tally.admitted += 1,
                                Err(_) => tally.rejected += 1,
                            },
                            // Wait for the grant (or the eviction), as a woken future
                            // would; a wedged queue fails the test instead of hanging it.
                            _ => {
                                let mut spins = 0u32;
                                let granted = loop {
                                    if let Poll::Ready(granted) = ticket.poll_grant(&mut cx) {
                                        break granted;
                                    }
                                    spins += 1;
                                    assert!(spins < 1_000_000, "the queue is wedged");
                                    controller.tick(Tick::refreshed(Ok(())));
                                    std::thread::yield_now();
                                };
                                match granted {
                                    Ok(_) => tally.admitted += 1,
                                    Err(_) => tally.rejected += 1,
                                }
                            }
                        },
                        Acquired::Rejected(_) => tally.rejected += 1,
                    }
                    if round % 97 == 0 {
                        memory.set(((t * round) % 24) as u64 * MIB);
                        controller.tick(Tick::refreshed(Ok(())));
                    }
                }
                tally
            })
        })
        .collect();
    start.wait();
    let mut total = Tally::default();
    for thread in threads {
        let tally = thread.join().unwrap();
        total.admitted += tally.admitted;
        total.rejected += tally.rejected;
        total.vanished += tally.vanished;
    }
    let s = controller.snapshot();
    assert_eq!((s.in_flight, s.queued, s.charged_bytes), (0, 0, 0), "{s:?}");
    assert_eq!(s.rejected_total(), total.rejected, "{s:?}");
    // A vanished waiter may have been granted just before it left: then the controller
    // counted an admission the thread did not see.
    assert!(
        (total.admitted..=total.admitted + total.vanished).contains(&s.admitted),
        "{s:?} {total:?}"
    );
    assert_eq!(
        total.admitted + total.rejected + total.vanished,
        (THREADS * ROUNDS) as u64
    );
    assert!(
        total.admitted > 0 && total.rejected > 0 && total.vanished > 0,
        "{total:?}"
    );
}

#[derive(Debug, Default)]
struct Tally {
    admitted: u64,
    rejected: u64,
    vanished: u64,
}
