//! A model-based property test of the whole service under tokio's paused clock: random
//! arrivals (declared lengths, how long their handlers take), clients that vanish while
//! queued or while served, memory readings moving up and down, and time passing. After every
//! step: in flight ≤ max, queued ≤ capacity, no request still waits past its deadline, and
//! none is admitted after it; once time has run on, every figure is back to zero.
//! Memory readings act on admission as requests arrive and end; the sampler's own grants are
//! covered by `src/model_tests.rs`.
//!
//! (`src/model_tests.rs` checks the controller alone, step by step, with FIFO and reserved
//! bytes; this one adds the response futures, their timers and real tasks.)

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use proptest::prelude::*;
use tokio::{task::JoinHandle, time::Instant};
use tower::{Layer, ServiceExt, service_fn};
use tower_admission::{Admission, AdmissionConfig, ManualMemory, MinRateBody};

const MIB: u64 = 1 << 20;
const TIMEOUT: Duration = Duration::from_millis(100);
/// Tokio's timers fire on whole milliseconds.
const TICK: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
enum Step {
    /// A request declaring this many MiB, whose handler takes this many milliseconds.
    Arrive { declared_mib: u8, hold_ms: u16 },
    /// The i-th unfinished request's client goes away.
    Vanish(usize),
    /// The memory reading becomes this many MiB.
    Memory(u8),
    /// This many milliseconds pass.
    Advance(u16),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        5 => (0u8..8, 0u16..300).prop_map(|(declared_mib, hold_ms)| Step::Arrive { declared_mib, hold_ms }),
        1 => any::<usize>().prop_map(Step::Vanish),
        1 => (0u8..48).prop_map(Step::Memory),
        3 => (0u16..150).prop_map(Step::Advance),
    ]
}

/// What happened to one request, written by its task and its handler.
#[derive(Default)]
struct Fate {
    started: Option<Instant>,
    answered: Option<StatusCode>,
}

struct Tracked {
    arrived: Instant,
    fate: Arc<Mutex<Fate>>,
    task: JoinHandle<()>,
}

#[derive(Clone)]
struct Hold {
    fate: Arc<Mutex<Fate>>,
    hold: Duration,
}

async fn run(max: usize, capacity: usize, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let memory = ManualMemory::new(0);
    let config = AdmissionConfig::default()
        .max_concurrency(max)
        .queue_capacity(capacity)
        .queue_timeout(TIMEOUT)
        .memory_budget_bytes(32 * MIB)
        .request_estimate(MIB)
        // The sampler is an OS thread that acts in real time. Under the paused clock, tokio
        // may auto-advance while the sampler's wake-up of a task it granted is in flight,
        // so that task first runs "later" than the sampler let it in. With this interval it
        // samples only once, before `Admission` is built, and every step keeps to the
        // virtual clock.
        .sample_interval(Duration::from_secs(3600));
    let admission = Admission::with_memory_source(config, memory.clone()).unwrap();
    let service = admission.layer().layer(service_fn(
        |request: Request<MinRateBody<Full<Bytes>>>| async move {
            let hold = request.extensions().get::<Hold>().cloned().unwrap();
            hold.fate.lock().unwrap().started = Some(Instant::now());
            tokio::time::sleep(hold.hold).await;
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
        },
    ));
    let mut requests: Vec<Tracked> = Vec::new();

    for step in steps {
        match step {
            Step::Arrive {
                declared_mib,
                hold_ms,
            } => {
                let fate = Arc::new(Mutex::new(Fate::default()));
                let mut request = Request::new(Full::new(Bytes::new()));
                request.headers_mut().insert(
                    header::CONTENT_LENGTH,
                    (u64::from(declared_mib) * MIB).into(),
                );
                request.extensions_mut().insert(Hold {
                    fate: fate.clone(),
                    hold: Duration::from_millis(hold_ms.into()),
                });
                let service = service.clone();
                let answered = fate.clone();
                let task = tokio::spawn(async move {
                    let response = service.oneshot(request).await.unwrap();
                    let status = response.status();
                    // The permit lives until the body is dropped: drop it now.
                    drop(response);
                    answered.lock().unwrap().answered = Some(status);
                });
                requests.push(Tracked {
                    arrived: Instant::now(),
                    fate,
                    task,
                });
            }
            Step::Vanish(i) => {
                let open: Vec<_> = requests.iter().filter(|r| !r.task.is_finished()).collect();
                if !open.is_empty() {
                    open[i % open.len()].task.abort();
                }
            }
            Step::Memory(mib) => memory.set(u64::from(mib) * MIB),
            // Sleeping (not `advance`) lets the paused clock stop at every timer on the way,
            // so each task runs at its own time.
            Step::Advance(ms) => tokio::time::sleep(Duration::from_millis(ms.into())).await,
        }
        // Let every woken task run before looking.
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        let now = Instant::now();
        let s = admission.snapshot();
        prop_assert!(s.in_flight <= max, "{s:?}");
        prop_assert!(s.queued <= capacity, "{s:?}");
        for (n, r) in requests.iter().enumerate() {
            let fate = r.fate.lock().unwrap();
            let deadline = r.arrived + TIMEOUT + TICK;
            if let Some(started) = fate.started {
                prop_assert!(
                    started <= deadline,
                    "request {n} admitted {:?} after arriving",
                    started - r.arrived
                );
            } else if fate.answered.is_none() && !r.task.is_finished() {
                prop_assert!(
                    now <= deadline,
                    "request {n} still waits {:?} after arriving",
                    now - r.arrived
                );
            }
        }
    }

    // Time runs on: every handler ends, every waiter leaves.
    memory.set(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    for r in requests {
        let _ = r.task.await; // aborted tasks answer with a cancellation
    }
    let s = admission.snapshot();
    prop_assert_eq!(
        (s.in_flight, s.queued, s.charged_bytes),
        (0, 0, 0),
        "{:?}",
        s
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, .. ProptestConfig::default() })]

    #[test]
    fn no_request_waits_past_its_deadline_and_nothing_leaks(
        max in 1usize..5,
        capacity in 0usize..6,
        steps in proptest::collection::vec(step(), 1..80),
    ) {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(run(max, capacity, steps))?;
    }
}
