//! The pool's listener over real TCP: connections counted and released, accepting paused and
//! resumed, idle connections given back under pressure and never one with a request in
//! flight.

use std::{pin::pin, sync::Arc, time::Duration};

use axum::{Router, routing::get};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::{sleep, timeout},
};
use tower_admission::{Admission, AdmissionConfig, AdmissionListener, ManualMemory, Snapshot};

const BUDGET: u64 = 64 << 20;

fn pool(config: AdmissionConfig, memory: &ManualMemory) -> Admission {
    let config = config
        .memory_budget_bytes(BUDGET)
        .sample_interval(Duration::from_millis(5));
    Admission::with_memory_source(config, memory.clone()).unwrap()
}

async fn listener(admission: &Admission) -> (AdmissionListener, std::net::SocketAddr) {
    let listener = admission.listener(TcpListener::bind("127.0.0.1:0").await.unwrap());
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Serves `app` from `listener` as the guide shows: requests tracked, idle connections shut
/// down gracefully when the pool asks.
fn serve(mut listener: AdmissionListener, app: Router) {
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let connection = stream.handle();
            let service = TowerToHyperService::new(connection.track(app.clone()));
            tokio::spawn(async move {
                let builder = Builder::new(TokioExecutor::new());
                let mut served = pin!(builder.serve_connection(TokioIo::new(stream), service));
                tokio::select! {
                    _ = served.as_mut() => return,
                    () = connection.closing() => served.as_mut().graceful_shutdown(),
                }
                let _ = served.await;
            });
        }
    });
}

async fn wait_for(admission: &Admission, what: &str, condition: impl Fn(&Snapshot) -> bool) {
    for _ in 0..2_000 {
        if condition(&admission.snapshot()) {
            return;
        }
        sleep(Duration::from_millis(5)).await;
    }
    panic!("timed out waiting for {what}: {:?}", admission.snapshot());
}

/// Sends `GET path` on `stream` (kept alive) and reads the answer's status and body.
async fn request(stream: &mut TcpStream, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0; 4096];
    loop {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the answer: {raw:?}");
        raw.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&raw).to_string();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(str::to_owned)
                })
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or(0);
            if body.len() >= length {
                return (head[9..12].parse().unwrap(), body.to_owned());
            }
        }
    }
}

/// Whether the server closed `stream` within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0; 64];
    matches!(
        timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn connections_are_counted_while_open_and_hold_their_bytes() {
    let memory = ManualMemory::new(0);
    let admission = pool(AdmissionConfig::default(), &memory);
    let (listener, addr) = listener(&admission).await;
    serve(listener, Router::new().route("/", get(|| async { "ok" })));
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(TcpStream::connect(addr).await.unwrap());
    }
    wait_for(&admission, "three connections", |s| s.connections == 3).await;
    let snapshot = admission.snapshot();
    assert_eq!(
        snapshot.held_bytes,
        3 * (4 << 10),
        "each holds its first bytes"
    );
    // An HTTP/1 request holds nothing more: its connection holds it.
    assert_eq!(request(&mut clients[0], "/").await, (200, "ok".into()));
    assert_eq!(
        admission.snapshot().held_bytes,
        (28 << 10) + 2 * (4 << 10),
        "once it has spoken, a connection holds its buffers"
    );
    drop(clients);
    wait_for(&admission, "none open", |s| {
        s.connections == 0 && s.held_bytes == 0
    })
    .await;
}

#[tokio::test]
async fn accepting_pauses_at_the_maximum_and_resumes_when_one_closes() {
    let memory = ManualMemory::new(0);
    let admission = pool(AdmissionConfig::default().max_connections(Some(1)), &memory);
    let (mut listener, addr) = listener(&admission).await;
    let _first_client = TcpStream::connect(addr).await.unwrap();
    let (first, _) = listener.accept().await.unwrap();
    // The kernel's backlog holds the second.
    let _second_client = TcpStream::connect(addr).await.unwrap();
    let mut accepting = pin!(listener.accept());
    assert!(
        timeout(Duration::from_millis(200), accepting.as_mut())
            .await
            .is_err(),
        "accepted past the maximum"
    );
    assert_eq!(admission.snapshot().accept_pauses, 1);
    drop(first);
    let (second, _) = timeout(Duration::from_secs(5), accepting)
        .await
        .expect("resumed once the first closed")
        .unwrap();
    assert_eq!(admission.snapshot().connections, 1);
    drop(second);
}

#[tokio::test]
async fn accepting_pauses_while_memory_is_over_the_budget() {
    let memory = ManualMemory::new(0);
    let admission = pool(AdmissionConfig::default(), &memory);
    let (mut listener, addr) = listener(&admission).await;
    memory.set(BUDGET + 1);
    wait_for(&admission, "the reading", |s| s.memory_bytes > BUDGET).await;
    let _client = TcpStream::connect(addr).await.unwrap();
    let mut accepting = pin!(listener.accept());
    assert!(
        timeout(Duration::from_millis(200), accepting.as_mut())
            .await
            .is_err(),
        "accepted over the budget"
    );
    memory.set(BUDGET / 2);
    let accepted = timeout(Duration::from_secs(5), accepting).await;
    assert!(accepted.expect("resumed with room").is_ok());
    assert_eq!(admission.snapshot().accept_pauses, 1);
}

#[tokio::test]
async fn under_pressure_the_idle_connection_is_closed_and_the_busy_one_finishes() {
    let memory = ManualMemory::new(0);
    let admission = pool(AdmissionConfig::default(), &memory);
    let (listener, addr) = listener(&admission).await;
    let gate = Arc::new(Semaphore::new(0));
    let held = Arc::clone(&gate);
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .route(
            "/slow",
            get(move || {
                let held = Arc::clone(&held);
                async move {
                    let _ = held.acquire().await;
                    "done"
                }
            }),
        )
        .layer(admission.layer());
    serve(listener, app);
    let mut idle = TcpStream::connect(addr).await.unwrap();
    assert_eq!(request(&mut idle, "/").await, (200, "ok".into()));
    let mut busy = TcpStream::connect(addr).await.unwrap();
    busy.write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    wait_for(&admission, "the slow request in flight", |s| {
        s.in_flight == 1
    })
    .await;
    // Nothing is given back while memory has room, however long a connection is idle.
    assert!(!closed_within(&mut idle, Duration::from_millis(1_300)).await);
    assert_eq!(admission.snapshot().idle_connections_closed, 0);
    memory.set(BUDGET);
    assert!(
        closed_within(&mut idle, Duration::from_secs(5)).await,
        "the idle connection was not closed"
    );
    assert_eq!(admission.snapshot().idle_connections_closed, 1);
    // The busy one keeps its request, which finishes.
    gate.add_permits(1);
    let mut answer = Vec::new();
    let mut buf = [0; 1024];
    while !String::from_utf8_lossy(&answer).ends_with("done") {
        let n = timeout(Duration::from_secs(5), busy.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "the request in flight was cut: {answer:?}");
        answer.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_serve_takes_the_listener() {
    let memory = ManualMemory::new(0);
    let admission = pool(AdmissionConfig::default(), &memory);
    let (listener, addr) = listener(&admission).await;
    let app = Router::new()
        .route("/", get(|| async { "ok" }))
        .layer(admission.layer());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let mut client = TcpStream::connect(addr).await.unwrap();
    assert_eq!(request(&mut client, "/").await, (200, "ok".into()));
    assert_eq!(admission.snapshot().connections, 1);
    drop(client);
    wait_for(&admission, "none open", |s| s.connections == 0).await;
}
