//! The real memory source: jemalloc as the global allocator, its statistics read by the
//! sampler thread, and the budget reacting to real allocations.

mod support;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{Empty, Full};
use tokio::sync::Semaphore;
use tower::{Layer, ServiceExt, service_fn};
use tower_admission::{Admission, AdmissionConfig, JemallocMemory, MemorySource, MinRateBody};

#[global_allocator]
static GLOBAL: tower_admission::Jemalloc = tower_admission::Jemalloc;

const MIB: u64 = 1 << 20;

/// The tests measure process-wide memory, so they take turns.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn jemalloc_sees_allocations_and_frees() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let memory = JemallocMemory::new().expect("jemalloc is the global allocator here");
    memory.refresh().unwrap();
    let before = memory.allocated_bytes();
    let block = std::hint::black_box(vec![7u8; 256 * MIB as usize]);
    memory.refresh().unwrap();
    let during = memory.allocated_bytes();
    drop(block);
    memory.refresh().unwrap();
    let after = memory.allocated_bytes();
    // Other threads (a runtime shutting down after the other test) may free a few MiB
    // meanwhile: allow 64 MiB of slack.
    assert!(
        during >= before + 192 * MIB,
        "before {before}, during {during}"
    );
    assert!(after < during - 192 * MIB, "during {during}, after {after}");
}

/// Runs `test` on a runtime of its own, in turn with the other tests.
fn serially(test: impl std::future::Future<Output = ()>) {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

/// How many MiB a request asks its handler to allocate.
#[derive(Clone, Copy)]
struct Mib(u64);

fn asking(mib: u64) -> Request<Empty<Bytes>> {
    let mut request = Request::new(Empty::new());
    request.extensions_mut().insert(Mib(mib));
    request
}

#[test]
fn the_budget_reacts_to_real_allocations() {
    serially(budget_reacts_to_real_allocations());
}

async fn budget_reacts_to_real_allocations() {
    let probe = JemallocMemory::new().unwrap();
    let base = probe.allocated_bytes();
    let config = AdmissionConfig::default()
        .memory_budget_bytes(base + 64 * MIB)
        .request_estimate(MIB)
        .max_concurrency(16)
        .queue_timeout(Duration::from_secs(20));
    let admission = Admission::new(config).unwrap();
    assert!(admission.to_string().contains("jemalloc"), "{admission}");

    // A handler that allocates the MiB its request names (every page written) and holds
    // them until released.
    let gate = Arc::new(Semaphore::new(0));
    let handler_gate = gate.clone();
    let service = admission.layer().layer(service_fn(
        move |request: Request<MinRateBody<Empty<Bytes>>>| {
            let gate = handler_gate.clone();
            async move {
                let Mib(mib) = request.extensions().get::<Mib>().copied().unwrap();
                let block = vec![1u8; (mib * MIB) as usize];
                gate.acquire().await.unwrap().forget();
                let len = std::hint::black_box(block).len();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(len.to_string()))))
            }
        },
    ));

    let big = tokio::spawn(service.clone().oneshot(asking(100)));
    // The sampler sees the 100 MiB, and the request is charged them (not only its 1 MiB
    // estimate) as soon as the poll that allocated them returns. The rest of the process may
    // have freed some of `base` meanwhile (test threads, thread caches): 1 MiB of slack.
    wait_for(&admission, "the sampler to see 100 MiB, charged", |s| {
        s.in_flight == 1 && s.memory_bytes >= base + 99 * MIB && s.charged_bytes >= 100 * MIB
    })
    .await;

    // Over budget with a request in flight: the next one waits.
    let small = tokio::spawn(service.oneshot(asking(0)));
    wait_for(&admission, "the small request to queue", |s| s.queued == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        admission.snapshot().queued,
        1,
        "admitted while memory was over budget"
    );

    gate.add_permits(2);
    let big = big.await.unwrap().unwrap();
    assert_eq!(big.status(), StatusCode::OK);
    drop(big); // ends the body: the permit and the 100 MiB are gone
    let small = small.await.unwrap().unwrap();
    assert_eq!(small.status(), StatusCode::OK);
    drop(small);
    wait_for(
        &admission,
        "memory back under the budget and nothing in flight",
        |s| s.in_flight == 0 && s.memory_bytes < base + 64 * MIB,
    )
    .await;
    assert_eq!(admission.snapshot().admitted_over_budget, 0);
}

#[test]
fn a_cache_held_over_the_budget_slows_the_service_to_one_at_a_time_and_health_stays_fast() {
    serially(cache_over_budget());
}

/// Requests still being served, and the most seen at once.
#[derive(Default)]
struct Running {
    now: AtomicUsize,
    peak: AtomicUsize,
}

async fn cache_over_budget() {
    const REQUESTS: usize = 20;
    const HEALTH_PROBES: usize = 10;
    let base = JemallocMemory::new().unwrap().allocated_bytes();
    let config = AdmissionConfig::default()
        .memory_budget_bytes(base + 64 * MIB)
        .max_concurrency(16)
        .queue_timeout(Duration::from_secs(30))
        .bypass(["/health"]);
    let admission = Admission::new(config).unwrap();
    // Something that is not a request holds more than the whole budget.
    let cache = std::hint::black_box(vec![1u8; 128 * MIB as usize]);
    wait_for(&admission, "the sampler to see the cache", |s| {
        s.memory_bytes >= base + 128 * MIB
    })
    .await;

    let running = Arc::new(Running::default());
    let work_running = running.clone();
    let app = axum::Router::new()
        .route(
            "/work",
            axum::routing::get(move || {
                let running = work_running.clone();
                async move {
                    let now = running.now.fetch_add(1, Ordering::SeqCst) + 1;
                    running.peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(30)).await;
                    running.now.fetch_sub(1, Ordering::SeqCst);
                    "done\n"
                }
            }),
        )
        .route("/health", axum::routing::get(|| async { "ok\n" }))
        .layer(admission.layer());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let get = move |path: &'static str| async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .unwrap();
        support::read_reply(stream).await.status
    };

    let work: Vec<_> = (0..REQUESTS).map(|_| tokio::spawn(get("/work"))).collect();
    wait_for(&admission, "requests to queue behind the cache", |s| {
        s.queued > 0
    })
    .await;
    // `/health` does not wait behind them: it answers while they are still queued.
    let mut health = Vec::new();
    for _ in 0..HEALTH_PROBES {
        let asked = Instant::now();
        assert_eq!(get("/health").await, 200);
        health.push(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued_after_probes = admission.snapshot().queued;
    for request in work {
        assert_eq!(request.await.unwrap(), 200, "a request was not served");
    }
    health.sort();
    println!(
        "{REQUESTS} requests one at a time over a cache of 128 MiB (budget 64 MiB); \
         /health median {:?}, max {:?}",
        health[HEALTH_PROBES / 2],
        health[HEALTH_PROBES - 1]
    );
    assert!(
        queued_after_probes > 0,
        "the probes outlasted the queue: they may have waited"
    );
    assert_eq!(running.peak.load(Ordering::SeqCst), 1, "one at a time");
    let s = admission.snapshot();
    assert_eq!(s.admitted_over_budget, REQUESTS as u64);
    assert_eq!((s.in_flight, s.queued, s.rejected_total()), (0, 0, 0));
    drop(cache);
    server.abort();
}

async fn wait_for(
    admission: &Admission,
    what: &str,
    condition: impl Fn(&tower_admission::Snapshot) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let snapshot = admission.snapshot();
        if condition(&snapshot) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {snapshot:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
