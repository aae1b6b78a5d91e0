//! Faults over real TCP: handlers that panic behind `CatchPanicLayer`, slow and stalled
//! readers, a memory source that fails or hangs. After each, the figures return to zero and
//! the server still serves. (Disconnects, 10 GB and chunked bodies are in `http.rs`; memory
//! held over the budget by a cache, with the real allocator, in `jemalloc.rs`.)

mod support;

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use support::{Fault, MIB, TestServer, read_reply};
use tokio::io::AsyncReadExt;
use tower_admission::{AdmissionConfig, MemoryBudget, MemoryFailure};
use tower_http::{catch_panic::CatchPanicLayer, timeout::TimeoutLayer};

/// A fixed count: these tests count slots exactly, and a loaded machine may make the
/// runtime late enough to move a live limit.
fn config() -> AdmissionConfig {
    AdmissionConfig::default()
        .memory_budget(MemoryBudget::Off)
        .queue_timeout(Duration::from_secs(20))
        .adaptive_limit(false)
}

/// Sends `GET /fast` until it answers `status`, at most for 10 s; returns how long it took.
async fn until_status(server: &TestServer, status: u16) -> Duration {
    let start = Instant::now();
    loop {
        if server.get("/fast").await.status == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "/fast never answered {status}: {:?}",
            server.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panics_caught_by_catch_panic_layer_answer_500_and_free_their_permits() {
    const PANICS: usize = 200;
    // Either way round: the panic caught inside the admission layer, or outside it.
    for admission_outside in [true, false] {
        let server = TestServer::start_with(
            config().max_concurrency(4).queue_capacity(PANICS),
            0,
            |routes, admission| {
                if admission_outside {
                    routes
                        .layer(CatchPanicLayer::new())
                        .layer(admission.layer())
                } else {
                    routes
                        .layer(admission.layer())
                        .layer(CatchPanicLayer::new())
                }
            },
        )
        .await;
        let replies = join_all((0..PANICS).map(|_| server.get("/panic"))).await;
        assert!(
            replies.iter().all(|reply| reply.status == 500),
            "admission outside: {admission_outside}: {:?}",
            replies.iter().find(|reply| reply.status != 500)
        );
        server.wait_idle().await;
        assert_eq!(server.get("/fast").await.status, 200);
        let s = server.snapshot();
        assert_eq!((s.admitted, s.rejected_total()), (PANICS as u64 + 1, 0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_hold_their_permits_and_leave_nothing_behind() {
    const READERS: usize = 16;
    // Of 64 KiB: 16 MiB a response, more than the socket buffers hold.
    const CHUNKS: usize = 256;
    let server = TestServer::start(config().max_concurrency(4).queue_capacity(READERS), 0).await;
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let mut stream = server.open(&format!("/chunks/{CHUNKS}")).await;
        readers.push(async move {
            let mut raw = Vec::new();
            let mut piece = vec![0; 64 << 10];
            // 64 KiB a millisecond at most: slower than the server writes.
            loop {
                let n = stream.read(&mut piece).await.unwrap();
                if n == 0 {
                    return raw;
                }
                raw.extend_from_slice(&piece[..n]);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
    }
    let readers = tokio::spawn(join_all(readers));
    server
        .wait_for("4 readers served and the rest queued", |s| {
            s.in_flight == 4 && s.queued > 0
        })
        .await;
    for raw in readers.await.unwrap() {
        let reply = support::parse_reply(&raw).expect("an HTTP response");
        assert_eq!(reply.status, 200);
        assert_eq!(reply.body.len(), CHUNKS << 16, "the whole body arrived");
    }
    server.wait_idle().await;
    assert_eq!(server.snapshot().rejected_total(), 0);

    // A reader that stops reading holds its permit (the example server's write timeout is
    // what ends that) until it goes away; then everything is released.
    let stalled = server.open("/chunks/1000").await; // 64 MiB, far beyond socket buffers
    server
        .wait_for("the stalled reader served", |s| s.in_flight == 1)
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(server.snapshot().in_flight, 1, "its body is not finished");
    drop(stalled);
    server.wait_idle().await;
    assert_eq!(server.get("/fast").await.status, 200);
}

/// A pool over budget (50 MiB read, 10 MiB budget) that admits nothing but `/hold/0` (by
/// the progress guarantee) until its memory source breaks.
async fn over_budget(policy: MemoryFailure) -> (TestServer, tokio::net::TcpStream) {
    let config = config()
        .max_concurrency(64)
        .queue_capacity(0)
        .memory_budget_bytes(10 * MIB)
        .request_estimate(MIB)
        .on_memory_failure(policy);
    let server = TestServer::start(config, 50 * MIB).await;
    let held = server.open("/hold/0").await;
    server.wait_for("one in flight", |s| s.in_flight == 1).await;
    let refused = server.get("/fast").await;
    assert_eq!(refused.status, 503);
    assert!(refused.body.contains("limit=memory"), "{}", refused.body);
    (server, held)
}

/// Ends `/hold/0` and checks that nothing is left behind and the server still serves.
async fn finish(server: TestServer, held: tokio::net::TcpStream) {
    server.memory.set_fault(Fault::None);
    server.probe.release(1);
    assert_eq!(read_reply(held).await.status, 200);
    server.wait_idle().await;
    assert_eq!(server.get("/fast").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_memory_source_fails_open_and_recovers() {
    const REQUESTS: usize = 100;
    let (server, held) = over_budget(MemoryFailure::Open).await;
    server.memory.set_fault(Fault::Fail);
    server
        .wait_for("a failed refresh", |s| s.memory_source_errors > 0)
        .await;
    // The last reading (over budget) no longer refuses; the concurrency limit still would.
    let replies = join_all((0..REQUESTS).map(|_| server.get("/fast"))).await;
    assert!(replies.iter().all(|reply| reply.status == 200));
    // Recovered: the reading refuses again.
    server.memory.set_fault(Fault::None);
    until_status(&server, 503).await;
    finish(server, held).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_memory_source_can_fail_closed() {
    const REQUESTS: usize = 100;
    let (server, held) = over_budget(MemoryFailure::Closed).await;
    server.memory.set(0); // under the budget now, as far as anyone could know
    until_status(&server, 200).await;
    server.memory.set_fault(Fault::Fail);
    server
        .wait_for("a failed refresh", |s| s.memory_source_errors > 0)
        .await;
    let replies = join_all((0..REQUESTS).map(|_| server.get("/fast"))).await;
    assert!(
        replies
            .iter()
            .all(|reply| reply.status == 503 && reply.body.contains("limit=memory"))
    );
    // One at a time still: with nothing in flight, the progress guarantee admits.
    server.probe.release(1);
    assert_eq!(read_reply(held).await.status, 200);
    server.wait_idle().await;
    assert_eq!(server.get("/fast").await.status, 200);
    assert!(server.snapshot().admitted_over_budget > 0);
    server.memory.set_fault(Fault::None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_source_that_hangs_goes_stale_then_fails_open() {
    let (server, held) = over_budget(MemoryFailure::Open).await;
    server.memory.set_fault(Fault::Hang);
    // Trusted for 1 s (100 sample intervals, at least 1 s) after the last refresh, then not.
    let admitted_after = until_status(&server, 200).await;
    assert!(
        admitted_after >= Duration::from_millis(900),
        "the reading was distrusted after {admitted_after:?}"
    );
    assert!(server.snapshot().memory_reading_age >= Duration::from_millis(900));
    server.memory.set_fault(Fault::None);
    until_status(&server, 503).await;
    finish(server, held).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_is_answered_at_once_when_the_pool_closes() {
    let server = TestServer::start(config().max_concurrency(1).queue_capacity(8), 0).await;
    let held = server.open("/hold/0").await;
    server.wait_for("one in flight", |s| s.in_flight == 1).await;
    let mut waiting = Vec::new();
    for id in 1..=8 {
        waiting.push(server.open(&format!("/hold/{id}")).await);
    }
    server.wait_for("8 queued", |s| s.queued == 8).await;
    server.admission.close();
    for client in waiting {
        let reply = read_reply(client).await;
        assert_eq!(reply.status, 503);
        assert!(reply.body.contains("queue_timeout"), "{}", reply.body);
        assert!(reply.header("retry-after").is_some());
    }
    // Later arrivals that cannot be admitted are refused at once; the admitted one finishes.
    let late = server.get("/fast").await;
    assert_eq!((late.status, late.body.contains("queue_full")), (503, true));
    server.probe.release(1);
    assert_eq!(read_reply(held).await.status, 200);
    server.wait_idle().await;
    assert_eq!(server.probe.peak.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_hangs_behind_a_request_timeout_answers_504_and_frees_its_permit() {
    // As the example server wires it: the timeout inside the admission layer.
    let server = TestServer::start_with(
        config().max_concurrency(1).queue_capacity(4),
        0,
        |routes, admission| {
            routes
                .layer(TimeoutLayer::with_status_code(
                    http::StatusCode::GATEWAY_TIMEOUT,
                    Duration::from_millis(100),
                ))
                .layer(admission.layer())
        },
    )
    .await;
    let mut hung = Vec::new();
    for id in 0..4 {
        hung.push(server.open(&format!("/hold/{id}")).await);
    }
    // One at a time, each cut off by the timeout, none left holding the slot.
    for client in hung {
        assert_eq!(read_reply(client).await.status, 504);
    }
    server.wait_idle().await;
    assert_eq!(server.get("/fast").await.status, 200);
    assert_eq!(server.probe.peak.load(Ordering::SeqCst), 1);
}
