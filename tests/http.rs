//! End-to-end behaviour over real TCP, against a real axum server (`axum::serve`), with a
//! manual memory source so that every figure is under the test's control.

mod support;

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use support::{MIB, TestServer, read_reply};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower_admission::{AdmissionConfig, MemoryBudget};

/// A fixed count: these tests count slots exactly, and a loaded machine may make the
/// runtime late enough to move a live limit.
fn config() -> AdmissionConfig {
    AdmissionConfig::default()
        .memory_budget(MemoryBudget::Off)
        .queue_timeout(Duration::from_secs(10))
        .adaptive_limit(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrency_limit_holds() {
    let server = TestServer::start(config().max_concurrency(2).queue_capacity(10), 0).await;
    let mut clients = Vec::new();
    for id in 0..6 {
        clients.push(server.open(&format!("/hold/{id}")).await);
    }
    server
        .wait_for("2 in flight, 4 queued", |s| {
            s.in_flight == 2 && s.queued == 4
        })
        .await;
    server.probe.release(6);
    for client in clients {
        assert_eq!(read_reply(client).await.status, 200);
    }
    assert_eq!(server.probe.peak.load(Ordering::SeqCst), 2);
    server.wait_idle().await;
    assert_eq!(server.snapshot().admitted, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_holds_and_a_lower_reading_admits_waiters() {
    let config = config()
        .max_concurrency(100)
        .memory_budget_bytes(10 * MIB)
        .request_estimate(MIB);
    let server = TestServer::start(config, 5 * MIB).await;
    let mut clients = Vec::new();
    for id in 0..8 {
        clients.push(server.open(&format!("/hold/{id}")).await);
    }
    // 5 MiB read + 5 reservations of 1 MiB fill the 10 MiB budget.
    server
        .wait_for("5 in flight, 3 queued", |s| {
            s.in_flight == 5 && s.queued == 3
        })
        .await;
    assert_eq!(server.snapshot().charged_bytes, 5 * MIB);
    assert_eq!(server.probe.peak.load(Ordering::SeqCst), 5);
    server.memory.set(2 * MIB);
    server
        .wait_for("the next sample admits all 8", |s| s.in_flight == 8)
        .await;
    server.probe.release(8);
    for client in clients {
        assert_eq!(read_reply(client).await.status, 200);
    }
    server.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_first_in_first_out() {
    let server = TestServer::start(config().max_concurrency(1).queue_capacity(10), 0).await;
    let mut clients = vec![server.open("/hold/0").await];
    server
        .wait_for("the first in flight", |s| s.in_flight == 1)
        .await;
    for id in 1..=5 {
        clients.push(server.open(&format!("/hold/{id}")).await);
        server
            .wait_for("the next one queued", |s| s.queued == id)
            .await;
    }
    // One slot: each release lets exactly the head of the queue in.
    server.probe.release(6);
    for client in clients {
        assert_eq!(read_reply(client).await.status, 200);
    }
    assert_eq!(server.probe.started(), [0, 1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn critical_waiters_go_first_and_sheddable_ones_are_shed_early() {
    let config = config()
        .max_concurrency(1)
        .queue_capacity(4)
        .priority_header(http::HeaderName::from_static("x-priority"));
    let server = TestServer::start(config, 0).await;
    let request = |id: u32, priority: &str| {
        format!(
            "GET /hold/{id} HTTP/1.1\r\nhost: test\r\nx-priority: {priority}\r\nconnection: close\r\n\r\n"
        )
    };
    let mut clients = vec![server.open_raw(&request(0, "normal")).await];
    server.wait_for("0 in flight", |s| s.in_flight == 1).await;
    for (id, priority) in [(1, "normal"), (2, "NORMAL"), (3, "critical")] {
        clients.push(server.open_raw(&request(id, priority)).await);
        server
            .wait_for("the next one queued", |s| s.queued == id as usize)
            .await;
    }
    // Three of four places taken: a sheddable request is refused rather than queued.
    let shed = read_reply(server.open_raw(&request(4, "sheddable")).await).await;
    assert_eq!(shed.status, 503);
    let retry_after: u32 = shed.header("retry-after").unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    server.probe.release(4);
    for client in clients {
        assert_eq!(read_reply(client).await.status, 200);
    }
    assert_eq!(server.probe.started(), [0, 3, 1, 2], "critical first");
    let s = server.snapshot();
    assert_eq!(s.admitted_with(tower_admission::Priority::Critical), 1);
    assert_eq!(
        s.rejected_with(
            tower_admission::Priority::Sheddable,
            tower_admission::Reason::QueueFull
        ),
        1
    );
    server.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_sheds_at_once_with_retry_after() {
    let config = config()
        .max_concurrency(1)
        .queue_capacity(1)
        .retry_after_secs(7);
    let server = TestServer::start(config, 0).await;
    let held = server.open("/hold/0").await;
    let queued = server.open("/hold/1").await;
    server
        .wait_for("one in flight, one queued", |s| {
            s.in_flight == 1 && s.queued == 1
        })
        .await;
    // Answered while the gate is still shut: nothing waited for a slot.
    let reply = server.get("/fast").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("7"));
    assert!(
        reply.body.contains("queue_full") && reply.body.contains("concurrency"),
        "{}",
        reply.body
    );
    let snapshot = server.snapshot();
    assert_eq!(
        snapshot.rejected(
            tower_admission::Reason::QueueFull,
            tower_admission::Limit::Concurrency
        ),
        1
    );
    server.probe.release(2);
    assert_eq!(read_reply(held).await.status, 200);
    assert_eq!(read_reply(queued).await.status, 200);
    server.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_leaves_with_503_after_the_timeout_and_not_before() {
    let timeout = Duration::from_millis(300);
    let config = config()
        .max_concurrency(1)
        .queue_capacity(4)
        .queue_timeout(timeout);
    let server = TestServer::start(config, 0).await;
    let held = server.open("/hold/0").await;
    server.wait_for("one in flight", |s| s.in_flight == 1).await;
    let start = Instant::now();
    let reply = server.get("/fast").await;
    let waited = start.elapsed();
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("queue_timeout"), "{}", reply.body);
    assert!(
        waited >= timeout,
        "left the queue after {waited:?}, before the {timeout:?} timeout"
    );
    assert_eq!(server.snapshot().queued, 0);
    server.probe.release(1);
    assert_eq!(read_reply(held).await.status, 200);
    server.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_client_that_disconnects_frees_its_place() {
    let server = TestServer::start(config().max_concurrency(1).queue_capacity(1), 0).await;
    let held = server.open("/hold/0").await;
    server
        .wait_for("the first in flight", |s| s.in_flight == 1)
        .await;
    let quitter = server.open("/hold/1").await;
    server.wait_for("one queued", |s| s.queued == 1).await;
    drop(quitter);
    server
        .wait_for("the place is free", |s| s.queued == 0)
        .await;
    // The freed place takes a new waiter, which is served normally.
    let next = server.open("/hold/2").await;
    server
        .wait_for("the new one queued", |s| s.queued == 1)
        .await;
    server.probe.release(2);
    assert_eq!(read_reply(held).await.status, 200);
    assert_eq!(read_reply(next).await.status, 200);
    assert_eq!(server.probe.started(), [0, 2]);
    server.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_client_that_disconnects_frees_its_permit() {
    let config = config().max_concurrency(1).memory_budget_bytes(100 * MIB);
    let server = TestServer::start(config, 0).await;
    let quitter = server.open("/hold/0").await;
    server
        .wait_for("one in flight", |s| s.in_flight == 1 && s.charged_bytes > 0)
        .await;
    drop(quitter);
    server.wait_idle().await;
    assert_eq!(server.get("/fast").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_handler_frees_its_permit() {
    let server = TestServer::start(config().max_concurrency(1).queue_capacity(0), 0).await;
    for _ in 0..3 {
        let mut stream = server.open("/panic").await;
        let mut raw = Vec::new();
        // The connection's task unwinds: the client sees the connection close.
        let _ = stream.read_to_end(&mut raw).await;
        server.wait_idle().await;
    }
    assert_eq!(server.get("/fast").await.status, 200);
    assert_eq!(server.snapshot().rejected_total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_body_holds_its_permit_until_it_ends() {
    let server = TestServer::start(config().max_concurrency(1).queue_capacity(0), 0).await;
    let mut stream = server.open("/stream").await;
    let mut head = vec![0; 4096];
    let mut seen = String::new();
    while !seen.contains("first") {
        let n = stream.read(&mut head).await.unwrap();
        assert!(n > 0, "the stream ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&head[..n]));
    }
    // The handler has returned, the body is half sent: the permit is still held.
    assert_eq!(server.snapshot().in_flight, 1);
    assert_eq!(server.get("/fast").await.status, 503);
    server.probe.stream_gate.add_permits(1);
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(String::from_utf8_lossy(&rest).contains("last"));
    server.wait_idle().await;
    assert_eq!(server.get("/fast").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bypassed_paths_skip_admission() {
    let config = config()
        .max_concurrency(1)
        .queue_capacity(0)
        .bypass(["/health"]);
    let server = TestServer::start(config, 0).await;
    let held = server.open("/hold/0").await;
    server.wait_for("one in flight", |s| s.in_flight == 1).await;
    for _ in 0..5 {
        assert_eq!(server.get("/health").await.status, 200);
    }
    assert_eq!(server.get("/fast").await.status, 503);
    server.probe.release(1);
    assert_eq!(read_reply(held).await.status, 200);
    assert_eq!(
        server.snapshot().admitted,
        1,
        "bypassed requests are not counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_in_flight_admits_one_over_the_budget() {
    // Memory held by something else (a cache) is over the budget: one request at a time.
    let config = config()
        .max_concurrency(10)
        .queue_capacity(10)
        .memory_budget_bytes(10 * MIB);
    let server = TestServer::start(config, 50 * MIB).await;
    let first = server.open("/hold/0").await;
    server
        .wait_for("the first admitted", |s| s.in_flight == 1)
        .await;
    let second = server.open("/hold/1").await;
    server
        .wait_for("the second queued", |s| s.queued == 1)
        .await;
    server.probe.release(1);
    assert_eq!(read_reply(first).await.status, 200);
    server
        .wait_for("the second admitted", |s| s.in_flight == 1 && s.queued == 0)
        .await;
    server.probe.release(1);
    assert_eq!(read_reply(second).await.status, 200);
    assert_eq!(server.snapshot().admitted_over_budget, 2);
    server.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_declared_larger_than_the_budget_gets_413_at_once() {
    let config = config().memory_budget_bytes(10 * MIB);
    let server = TestServer::start(config, 0).await;
    // Only the head is sent: the answer must not wait for a body that never comes.
    let stream = server
        .open_raw("POST /ingest HTTP/1.1\r\nhost: t\r\ncontent-length: 20971520\r\nconnection: close\r\n\r\n")
        .await;
    let reply = read_reply(stream).await;
    assert_eq!(reply.status, 413);
    assert!(reply.body.contains("too_large"), "{}", reply.body);
    assert_eq!(reply.header("retry-after"), None);
    server.wait_idle().await;
    // A body within the budget is reserved while it is read, then released.
    let mut stream = server
        .open_raw("POST /ingest HTTP/1.1\r\nhost: t\r\ncontent-length: 2097152\r\nconnection: close\r\n\r\n")
        .await;
    server
        .wait_for("the declared length reserved", |s| {
            s.charged_bytes >= 2 * MIB
        })
        .await;
    stream
        .write_all(&vec![b'x'; 2 * MIB as usize])
        .await
        .unwrap();
    let reply = read_reply(stream).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "2097152\n"));
    server.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_shared_across_routes_and_connections() {
    // `Router::layer` wraps every route separately; the pool must still be one.
    let server = TestServer::start(config().max_concurrency(2).queue_capacity(0), 0).await;
    let a = server.open("/hold/0").await;
    let b = server.open("/hold/1").await;
    server.wait_for("two in flight", |s| s.in_flight == 2).await;
    for path in ["/fast", "/stream", "/hold/2"] {
        assert_eq!(server.get(path).await.status, 503, "{path}");
    }
    server.probe.release(2);
    assert_eq!(read_reply(a).await.status, 200);
    assert_eq!(read_reply(b).await.status, 200);
    server.wait_idle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_clients_that_give_up_leave_nothing_behind() {
    // 20 rounds of 500 connections: 4 served, 496 queued, then every client hangs up.
    let config = config().max_concurrency(4).queue_capacity(512);
    let server = TestServer::start(config, 0).await;
    for round in 0..20 {
        let mut clients = Vec::new();
        for id in 0..500 {
            clients.push(server.open(&format!("/hold/{}", round * 1000 + id)).await);
        }
        server
            .wait_for("4 in flight, 496 queued", |s| {
                s.in_flight == 4 && s.queued == 496
            })
            .await;
        drop(clients);
        server.wait_idle().await;
    }
    // Waiters granted while their clients were hanging up were admitted, then released.
    assert_eq!(server.snapshot().rejected_total(), 0);
    assert_eq!(server.get("/fast").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_declared_at_ten_gigabytes_is_refused_before_it_is_read() {
    let server = TestServer::start(config().memory_budget_bytes(10 * MIB), 0).await;
    let stream = server
        .open_raw("POST /ingest HTTP/1.1\r\nhost: t\r\ncontent-length: 10000000000\r\nconnection: close\r\n\r\n")
        .await;
    let reply = read_reply(stream).await;
    assert_eq!(reply.status, 413);
    server.wait_idle().await;
    assert_eq!(server.get("/fast").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_without_a_length_is_admitted_on_its_estimate() {
    let config = config().memory_budget_bytes(10 * MIB).request_estimate(MIB);
    let server = TestServer::start(config, 0).await;
    let mut stream = server
        .open_raw("POST /ingest HTTP/1.1\r\nhost: t\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n")
        .await;
    server
        .wait_for("admitted on its estimate alone", |s| {
            s.in_flight == 1 && s.charged_bytes == MIB
        })
        .await;
    for _ in 0..4 {
        stream.write_all(b"4000\r\n").await.unwrap();
        stream.write_all(&[b'x'; 0x4000]).await.unwrap();
        stream.write_all(b"\r\n").await.unwrap();
    }
    stream.write_all(b"0\r\n\r\n").await.unwrap();
    let reply = read_reply(stream).await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "65536\n"));
    server.wait_idle().await;
}
