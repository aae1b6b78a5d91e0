//! The real memory source: jemalloc as the global allocator, its statistics read by the
//! sampler thread, and the budget reacting to real allocations.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tokio::sync::Semaphore;
use tower::{Layer, ServiceExt, service_fn};
use tower_admission::{Admission, AdmissionConfig, JemallocMemory, MemorySource};

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

#[test]
fn the_budget_reacts_to_real_allocations() {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(budget_reacts_to_real_allocations());
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

    // A handler that allocates `mib` MiB (every page written) and holds it until released.
    let gate = Arc::new(Semaphore::new(0));
    let handler_gate = gate.clone();
    let service = admission
        .layer()
        .layer(service_fn(move |request: Request<u64>| {
            let gate = handler_gate.clone();
            async move {
                let block = vec![1u8; (*request.body() * MIB) as usize];
                gate.acquire().await.unwrap().forget();
                let len = std::hint::black_box(block).len();
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(len.to_string()))))
            }
        }));

    let big = tokio::spawn(service.clone().oneshot(Request::new(100)));
    // The sampler sees the 100 MiB, and the request is charged them (not only its 1 MiB
    // estimate) as soon as the poll that allocated them returns.
    wait_for(&admission, "the sampler to see 100 MiB, charged", |s| {
        s.in_flight == 1 && s.memory_bytes >= base + 100 * MIB && s.reserved_bytes >= 100 * MIB
    })
    .await;

    // Over budget with a request in flight: the next one waits.
    let small = tokio::spawn(service.oneshot(Request::new(0)));
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
