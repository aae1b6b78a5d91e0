//! Minimum body data rates over real TCP: clients that send or read just below the minimum
//! are cut off and give their slot and charge back; clients just above it are served in
//! full. The server is hyper's, with small socket and write buffers, so that the client's
//! pace shows within a few frames rather than after the buffers fill.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::Query,
    routing::{get, post},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use serde::Deserialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpSocket, TcpStream},
};
use tower_admission::{Admission, AdmissionConfig, Direction, ManualMemory, MinDataRate, Snapshot};

const KIB: usize = 1 << 10;
/// The minimum both ways: 64 KiB/s after 100 ms.
const MIN: MinDataRate = MinDataRate::new(64 << 10, Duration::from_millis(100));
/// Socket buffers of the server and the reading client.
const SOCKET_BUFFER: u32 = 8 << 10;

struct Server {
    addr: SocketAddr,
    admission: Admission,
}

impl Server {
    /// Serves with `min` the minimum rate both ways.
    async fn start(min: MinDataRate) -> Self {
        let config = AdmissionConfig::default()
            .memory_budget_bytes(1 << 30)
            .min_request_body_rate(min)
            .min_response_body_rate(min);
        let admission = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
        let app = Router::new()
            .route("/fast", get(|| async { "fast\n" }))
            .route(
                "/upload",
                post(|body: Bytes| async move { format!("{}\n", body.len()) }),
            )
            .route("/frames", get(frames))
            .layer(admission.layer());
        let socket = TcpSocket::new_v4().unwrap();
        // Accepted sockets inherit the listener's buffer sizes.
        socket.set_send_buffer_size(SOCKET_BUFFER).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(64).unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let app = app.clone();
                tokio::spawn(async move {
                    let mut builder = Builder::new(TokioExecutor::new());
                    // hyper's smallest write buffer: it asks for a frame once 8 KiB are out.
                    builder.http1().max_buf_size(8 << 10);
                    let service = TowerToHyperService::new(app);
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, admission }
    }

    fn snapshot(&self) -> Snapshot {
        self.admission.snapshot()
    }

    /// Waits (at most 10 s) until `condition` holds for the live figures.
    async fn wait_for(&self, what: &str, condition: impl Fn(&Snapshot) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !condition(&self.snapshot()) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {:?}",
                self.snapshot()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Nothing in flight, queued or charged, and a new request is served.
    async fn still_serves(&self) {
        self.wait_for("every figure back to zero", |s| {
            s.in_flight == 0 && s.queued == 0 && s.charged_bytes == 0
        })
        .await;
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream
            .write_all(b"GET /fast HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
}

#[derive(Deserialize)]
struct Frames {
    kib: usize,
    n: usize,
}

/// `n` frames of `kib` KiB, each as soon as the server asks for it.
async fn frames(Query(Frames { kib, n }): Query<Frames>) -> Body {
    let frame = Bytes::from(vec![b'x'; kib * KIB]);
    Body::from_stream(futures_util::stream::iter(
        std::iter::repeat_n(frame, n).map(Ok::<_, std::io::Error>),
    ))
}

/// Sends a `POST /upload` of `len` bytes at `per_second`, stopping early once the server
/// answers; returns the status line and how long the client was sending.
async fn upload(server: &Server, len: usize, per_second: usize) -> (String, Duration) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: test\r\nconnection: close\r\ncontent-length: {len}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let tick = Duration::from_millis(10);
        let piece = vec![b'x'; per_second / 100];
        let mut sent = 0;
        while sent < len {
            let n = piece.len().min(len - sent);
            if write.write_all(&piece[..n]).await.is_err() {
                break; // the server closed the connection
            }
            sent += n;
            tokio::time::sleep(tick).await;
        }
        write
    });
    let mut reply = Vec::new();
    read.read_to_end(&mut reply).await.unwrap();
    let elapsed = started.elapsed();
    sender.abort();
    let reply = String::from_utf8_lossy(&reply).into_owned();
    (reply, elapsed)
}

/// Reads `GET /frames` at `per_second` through a small receive buffer; returns how many body
/// bytes came, and whether the body ended cleanly (the final chunk came).
async fn read_frames(server: &Server, path: &str, per_second: usize) -> (usize, bool) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(SOCKET_BUFFER).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut piece = vec![0; per_second / 10];
    // Paced by the clock, not by the ticks: a tick that runs late (a busy machine) is caught
    // up at the next, so the average pace is `per_second` however the timer lags.
    let started = Instant::now();
    loop {
        let due = (per_second as f64 * started.elapsed().as_secs_f64()) as usize;
        let want = due.saturating_sub(raw.len()).min(piece.len());
        if want > 0 {
            match stream.read(&mut piece[..want]).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&piece[..n]),
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let body = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(0, |at| raw.len() - at - 4);
    (body, raw.ends_with(b"0\r\n\r\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_below_the_minimum_is_answered_408_and_gives_its_slot_back() {
    let server = Server::start(MIN).await;
    // Half the minimum: 1 MiB would take 32 s.
    let (reply, elapsed) = upload(&server, 1 << 20, 32 * KIB).await;
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        reply.to_ascii_lowercase().contains("connection: close"),
        "{reply}"
    );
    assert!(
        reply.contains("request body moved slower than 65536 B/s"),
        "{reply}"
    );
    assert!(
        elapsed < Duration::from_secs(3),
        "cut off after {elapsed:?}"
    );
    assert_eq!(server.snapshot().cut_off(Direction::Request), 1);
    server.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_charged_what_arrived_not_what_it_declared() {
    // 1 KiB/s after 5 s: an upload at 8 KiB/s is above it, and is not cut off.
    let server = Server::start(MinDataRate::new(1024, Duration::from_secs(5))).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = "POST /upload HTTP/1.1\r\nhost: test\r\ncontent-length: 8388608\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    // Charged its 8 MiB (and an estimate) until its pace tells; then what arrived, plus
    // what 8 KiB/s brings within the 5 s grace, plus the estimate: well under 1 MiB.
    let started = Instant::now();
    let mut lowered = false;
    while started.elapsed() < Duration::from_secs(3) && !lowered {
        stream.write_all(&[b'x'; 800]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = server.snapshot();
        lowered = s.in_flight == 1 && s.charged_bytes < 1 << 20;
    }
    assert!(lowered, "{:?}", server.snapshot());
    drop(stream); // the client goes away
    assert_eq!(server.snapshot().cut_off(Direction::Request), 0);
    server.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_above_the_minimum_on_a_slow_link_passes() {
    let server = Server::start(MIN).await;
    // Twice the minimum, for 2 s: a large upload on a slow but acceptable link.
    let (reply, _) = upload(&server, 256 * KIB, 128 * KIB).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("262144\n"), "{reply}");
    assert_eq!(server.snapshot().cut_off(Direction::Request), 0);
    server.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_below_the_minimum_is_cut_off_and_gives_its_slot_back() {
    let server = Server::start(MIN).await;
    // Half the minimum, for a body of 4 MiB in 8 KiB frames.
    let (body, complete) = read_frames(&server, "/frames?kib=8&n=512", 32 * KIB).await;
    assert!(!complete, "the body was cut off");
    assert!(body < 1 << 20, "cut off after {body} bytes");
    assert_eq!(server.snapshot().cut_off(Direction::Response), 1);
    server.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_above_the_minimum_gets_the_whole_body() {
    let server = Server::start(MIN).await;
    // Four times the minimum, for 1 s: a frame is taken within a quarter of its allowance,
    // so a busy machine that stalls the client for less than ~90 ms does not cut it off.
    let (body, complete) = read_frames(&server, "/frames?kib=8&n=32", 256 * KIB).await;
    assert!(complete, "the body ended cleanly");
    assert!(body >= 256 * KIB, "{body} bytes");
    assert_eq!(server.snapshot().cut_off(Direction::Response), 0);
    server.still_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stops_reading_loses_its_slot_while_the_server_waits_on_it() {
    let server = Server::start(MIN).await;
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(SOCKET_BUFFER).unwrap();
    let mut stream = socket.connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /frames?kib=8&n=512 HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    // The client reads nothing: once the buffers are full, hyper stops asking for frames,
    // and only the watchdog can give the slot back.
    server
        .wait_for("the stalled response cut off", |s| {
            s.cut_off(Direction::Response) == 1 && s.in_flight == 0
        })
        .await;
    drop(stream);
    server.still_serves().await;
}

/// An h2c client of `server` whose streams open `window` bytes at first (the default 65,535
/// if `None`); its connection runs in a task of its own.
async fn h2_client(server: &Server, window: Option<u32>) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut builder = h2::client::Builder::new();
    if let Some(window) = window {
        builder.initial_window_size(window);
    }
    let (client, connection) = builder.handshake::<_, Bytes>(tcp).await.unwrap();
    tokio::spawn(connection);
    client.ready().await.unwrap()
}

/// `GET path` on `client`, its answer's head read.
async fn h2_get(
    client: &h2::client::SendRequest<Bytes>,
    path: &str,
) -> http::Response<h2::RecvStream> {
    let mut client = client.clone().ready().await.unwrap();
    let request = http::Request::get(format!("http://test{path}"))
        .body(())
        .unwrap();
    let (response, _) = client.send_request(request, true).unwrap();
    response.await.unwrap()
}

/// 10 KiB/s after 100 ms: a 64 KiB frame would be allowed 6.4 s, a 1 KiB slice the grace.
const H2_MIN: MinDataRate = MinDataRate::new(10 << 10, Duration::from_millis(100));

/// An h2c client whose streams open `window` bytes (the default if `None`) and never open
/// them again (it reads nothing) asks for `path`: the stalled stream must be cut off, its
/// slot given back, well within the 6.4 s a whole 64 KiB frame would be allowed.
async fn an_h2_stall_is_cut_off(window: Option<u32>, path: &str) {
    let server = Server::start(H2_MIN).await;
    let client = h2_client(&server, window).await;
    let response = h2_get(&client, path).await;
    assert_eq!(response.status(), 200);
    let started = Instant::now();
    server
        .wait_for("the stalled stream cut off", |s| {
            s.cut_off(Direction::Response) == 1 && s.in_flight == 0
        })
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let _keep = response;
    server.still_serves().await;
}

/// An HTTP/2 client whose stream window stays shut: hyper then never asks for the body, and
/// no frame is handed over for a rate to be measured on. The slot goes back all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_reader_that_opens_no_window_loses_its_slot() {
    an_h2_stall_is_cut_off(Some(0), "/frames?kib=64&n=4").await;
}

/// An HTTP/2 client that takes its first window, then never opens it again: the frame
/// handed over last is a slice that the minimum rate allows the grace period for, not a
/// 64 KiB frame that would hold the slot for its size at the rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_reader_that_stops_taking_large_frames_loses_its_slot_within_the_grace() {
    an_h2_stall_is_cut_off(None, "/frames?kib=64&n=8").await;
}

/// Slices change nothing for a client that takes its body: every byte arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_reader_that_keeps_up_gets_every_byte() {
    let server = Server::start(H2_MIN).await;
    let client = h2_client(&server, None).await;
    let mut body = h2_get(&client, "/frames?kib=64&n=8").await.into_body();
    let mut received = 0;
    while let Some(data) = body.data().await {
        let data = data.unwrap();
        assert!(data.iter().all(|&b| b == b'x'));
        received += data.len();
        body.flow_control().release_capacity(data.len()).unwrap();
    }
    assert_eq!(received, 8 * 64 * KIB);
    assert_eq!(server.snapshot().cut_off(Direction::Response), 0);
    server.still_serves().await;
}

/// Each HTTP/2 response is watched from the start; its watchdog goes with the body rather than
/// sleeping out the grace period (5 s by default): thousands of responses a second would
/// otherwise keep thousands of tasks alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_watchdogs_end_with_their_bodies() {
    let server = Server::start(MinDataRate::new(240, Duration::from_secs(5))).await;
    let client = h2_client(&server, None).await;
    let before = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    for _ in 0..200 {
        let mut body = h2_get(&client, "/fast").await.into_body();
        while body.data().await.is_some() {}
    }
    server
        .wait_for("nothing in flight", |s| s.in_flight == 0)
        .await;
    let deadline = Instant::now() + Duration::from_secs(1);
    let alive = loop {
        let alive = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        if alive <= before + 20 || Instant::now() > deadline {
            break alive;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(alive <= before + 20, "{alive} tasks alive, {before} before");
}
