//! Refusals every client can read, over real TCP: clients that write their whole body before
//! they read (blocking std sockets, Python's `requests` where installed, h2) get the `503` and
//! its `Retry-After`, and an HTTP/1 connection serves on; bodies the layer will not read are
//! answered with `Connection: close`, and bodies that stall are cut off by the minimum rate.

mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use bytes::Bytes;
use support::{MIB, TestServer};
use tower_admission::{AdmissionConfig, Discard, Limit, MinDataRate, Reason};

/// One slot, no queue: while `/hold/1` runs, everything else is refused at once.
async fn saturated(config: AdmissionConfig) -> TestServer {
    let config = config
        .max_concurrency(1)
        .queue_capacity(0)
        .memory_budget_bytes(1 << 30)
        .retry_after_secs(3);
    let server = TestServer::start(config, 0).await;
    std::mem::forget(server.open("/hold/1").await);
    server.wait_for("the slot held", |s| s.in_flight == 1).await;
    server
}

/// A blocking client on one keep-alive connection, which writes each request whole before it
/// reads a byte, as Python's `requests` and most SDKs do.
struct WholeBodyFirst {
    reader: BufReader<TcpStream>,
}

/// One response as that client reads it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        let mut found = self.headers.iter().filter(|(n, _)| n == name);
        found.next().map(|(_, v)| v.as_str())
    }
}

impl WholeBodyFirst {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Self {
            reader: BufReader::new(stream),
        }
    }

    /// Writes `POST /ingest` with a body of `len` bytes whole, then reads the answer.
    fn post(&mut self, len: usize) -> std::io::Result<Answer> {
        let head = format!("POST /ingest HTTP/1.1\r\nhost: test\r\ncontent-length: {len}\r\n\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes())?;
        stream.write_all(&vec![b'x'; len])?;
        self.read_answer()
    }

    fn read_answer(&mut self) -> std::io::Result<Answer> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok());
        let status = status.ok_or_else(|| std::io::Error::other(format!("no status: {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let Some((name, value)) = line.trim_end().split_once(':') else {
                break;
            };
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        let answer = Answer { status, headers };
        let length = answer
            .header("content-length")
            .map_or(0, |l| l.parse().unwrap());
        self.reader.read_exact(&mut vec![0; length])?;
        Ok(answer)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_body_first_clients_read_the_refusal_and_keep_their_connection() {
    let server = saturated(AdmissionConfig::default()).await;
    let addr = server.addr;
    let answers = tokio::task::spawn_blocking(move || {
        let mut client = WholeBodyFirst::connect(addr);
        // Each on the same connection: discarding the body keeps it usable.
        [16 << 10, MIB as usize, 4 * MIB as usize, 6 * MIB as usize]
            .map(|len| (len, client.post(len).map_err(|e| e.to_string())))
    })
    .await
    .unwrap();
    for (len, answer) in answers {
        let answer = answer.unwrap_or_else(|e| panic!("{len} bytes: {e}"));
        assert_eq!(answer.status, 503, "{len} bytes: {answer:?}");
        assert_eq!(answer.header("retry-after"), Some("3"), "{len} bytes");
        assert_eq!(answer.header("connection"), None, "{len} bytes: kept alive");
    }
    let snapshot = server.snapshot();
    assert_eq!(snapshot.discards(Discard::Whole), 4);
    assert_eq!(snapshot.discarded_bytes, (16 << 10) + 11 * MIB);
    assert_eq!(snapshot.admitted, 1, "only the held request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_declared_over_the_limit_is_answered_at_once_with_connection_close() {
    let server = saturated(AdmissionConfig::default().discard_limit(64 << 10)).await;
    // The client reads while it writes, as browsers and hyper's client do: it reads the answer
    // before its upload is through.
    let mut stream = server
        .open_raw("POST /ingest HTTP/1.1\r\nhost: test\r\ncontent-length: 1048576\r\n\r\n")
        .await;
    let reply = support::read_reply_head(&mut stream).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(server.snapshot().discards(Discard::Skipped), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunked_body_past_the_limit_is_cut_there_and_answered_with_connection_close() {
    let server = saturated(AdmissionConfig::default().discard_limit(64 << 10)).await;
    let mut stream = server
        .open_raw("POST /ingest HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n")
        .await;
    let chunk = format!("{:x}\r\n{}\r\n", 16 << 10, "x".repeat(16 << 10));
    for _ in 0..8 {
        tokio::io::AsyncWriteExt::write_all(&mut stream, chunk.as_bytes())
            .await
            .unwrap();
    }
    let reply = support::read_reply_head(&mut stream).await;
    assert_eq!(
        (reply.status, reply.header("connection")),
        (503, Some("close"))
    );
    server
        .wait_for("the discard cut at the limit", |s| {
            s.discards(Discard::Limit) == 1
        })
        .await;
    assert!(server.snapshot().discarded_bytes > 64 << 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_waiting_for_100_continue_gets_the_refusal_instead_and_sends_nothing() {
    let server = saturated(AdmissionConfig::default()).await;
    let mut stream = server
        .open_raw(
            "POST /ingest HTTP/1.1\r\nhost: test\r\ncontent-length: 1048576\r\nexpect: 100-continue\r\n\r\n",
        )
        .await;
    let reply = support::read_reply_head(&mut stream).await;
    assert_eq!(reply.status, 503, "a final answer, not 100 Continue");
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(server.snapshot().discarded_bytes, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stalls_while_discarded_is_cut_off_by_the_minimum_rate() {
    let min = MinDataRate::new(64 << 10, Duration::from_millis(100));
    let server = saturated(AdmissionConfig::default().min_request_body_rate(min)).await;
    let mut stream = server
        .open_raw("POST /ingest HTTP/1.1\r\nhost: test\r\ncontent-length: 1048576\r\n\r\nxxxx")
        .await;
    let started = std::time::Instant::now();
    let reply = support::read_reply_head(&mut stream).await;
    assert_eq!(
        (reply.status, reply.header("connection")),
        (503, Some("close"))
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "cut at the rate, not at the 10 s discard timeout: {:?}",
        started.elapsed()
    );
    assert_eq!(server.snapshot().discards(Discard::TooSlow), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_still_coming_at_the_discard_timeout_is_answered_with_connection_close() {
    let config = AdmissionConfig::default()
        .discard_timeout(Duration::from_millis(300))
        .min_request_body_rate(None);
    let server = saturated(config).await;
    let mut stream = server
        .open_raw("POST /ingest HTTP/1.1\r\nhost: test\r\ncontent-length: 1048576\r\n\r\nxxxx")
        .await;
    let reply = support::read_reply_head(&mut stream).await;
    assert_eq!(
        (reply.status, reply.header("connection")),
        (503, Some("close"))
    );
    assert_eq!(server.snapshot().discards(Discard::Timeout), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_while_its_body_is_discarded_is_counted_gone() {
    let server = saturated(AdmissionConfig::default()).await;
    let stream = server
        .open_raw("POST /ingest HTTP/1.1\r\nhost: test\r\ncontent-length: 1048576\r\n\r\nxxxx")
        .await;
    server
        .wait_for("the refusal", |s| s.rejected_total() == 1)
        .await;
    drop(stream);
    server
        .wait_for("the discard ended", |s| s.discards(Discard::Gone) == 1)
        .await;
    assert_eq!(server.snapshot().in_flight, 1, "only the held request");
}

/// Over h2 a refused stream is answered at once, and reset with `NO_ERROR` once answered: the
/// client stops sending, reads the `503`, and the connection serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_refusal_is_read_and_its_stream_reset_with_no_error() {
    let server = saturated(AdmissionConfig::default()).await;
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    for _ in 0..2 {
        let request = http::Request::post("http://test/ingest")
            .header("content-length", (4 * MIB).to_string())
            .body(())
            .unwrap();
        let (response, mut body) = client.send_request(request, false).unwrap();
        // Sends as much as the flow-control windows take; the answer comes meanwhile.
        body.reserve_capacity(4 * MIB as usize);
        body.send_data(Bytes::from(vec![b'x'; 64 << 10]), false)
            .unwrap();
        let response = response.await.unwrap();
        assert_eq!(response.status(), 503);
        assert_eq!(response.headers()["retry-after"], "3");
        let reason = std::future::poll_fn(|cx| body.poll_reset(cx))
            .await
            .unwrap();
        assert_eq!(reason, h2::Reason::NO_ERROR);
        client = client.ready().await.unwrap();
    }
    let snapshot = server.snapshot();
    assert_eq!(snapshot.discarded_bytes, 0, "h2 is not discarded");
    assert_eq!(snapshot.rejected_total(), 2);
}

/// Python's `requests`, the archetypal client that writes its whole body first. Skipped
/// (said on stderr) where Python or `requests` is missing, unless `REQUIRE_PYTHON_CLIENT` is
/// set, as CI sets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_requests_reads_the_refusal_of_a_large_upload() {
    let script = r#"
import sys, requests
session = requests.Session()
for size in (1 << 20, 4 << 20, 6 << 20):
    r = session.post(sys.argv[1], data=b"x" * size, timeout=20)
    print(size, r.status_code, r.headers.get("retry-after"))
"#;
    let probe = std::process::Command::new("python3")
        .args(["-c", "import requests"])
        .output();
    if !probe.is_ok_and(|out| out.status.success()) {
        assert!(
            std::env::var_os("REQUIRE_PYTHON_CLIENT").is_none(),
            "python3 with requests is required here"
        );
        eprintln!("skipped: python3 with requests is not installed");
        return;
    }
    let server = saturated(AdmissionConfig::default()).await;
    let url = format!("http://{}/ingest", server.addr);
    let out = tokio::process::Command::new("python3")
        .args(["-c", script, &url])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout, "1048576 503 3\n4194304 503 3\n6291456 503 3\n",
        "each read its 503 and Retry-After"
    );
    assert_eq!(server.snapshot().discards(Discard::Whole), 3);
}

/// What a request holds outside its handler (its connection), queued or in flight, counts as
/// memory spoken for, and is let go when the request ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_and_discards_hold_memory_until_they_leave() {
    let config = AdmissionConfig::default()
        .max_concurrency(1)
        .queue_capacity(8)
        .queue_timeout(Duration::from_secs(10))
        .memory_budget_bytes(1 << 30);
    let server = TestServer::start(config, 0).await;
    let held = server.open("/hold/1").await;
    server.wait_for("the slot held", |s| s.in_flight == 1).await;
    let waiters = [server.open("/fast").await, server.open("/fast").await];
    server.wait_for("two waiters", |s| s.queued == 2).await;
    let per_request = server.snapshot().held_bytes / 3;
    assert!(
        (16 << 10..=64 << 10).contains(&per_request),
        "an HTTP/1 request, queued or in flight, holds tens of KiB: {per_request}"
    );
    server.probe.release(1);
    support::read_reply(held).await;
    for waiter in waiters {
        assert_eq!(support::read_reply(waiter).await.status, 200);
    }
    server.wait_idle().await;
    assert_eq!(server.snapshot().held_bytes, 0);
}

/// Discarding holds the connection's buffers as memory spoken for: with no room for them in
/// the budget, the refusal goes out at once, with `Connection: close`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_room_in_the_budget_a_refusal_does_not_discard() {
    let server = saturated(AdmissionConfig::default()).await;
    server.memory.set((1 << 30) - (16 << 10));
    tokio::time::sleep(Duration::from_millis(50)).await; // a sample or two
    let mut stream = server
        .open_raw("POST /ingest HTTP/1.1\r\nhost: test\r\ncontent-length: 1048576\r\n\r\n")
        .await;
    let reply = support::read_reply_head(&mut stream).await;
    assert_eq!(
        (reply.status, reply.header("connection")),
        (503, Some("close"))
    );
    let snapshot = server.snapshot();
    assert_eq!(snapshot.discards(Discard::NoRoom), 1);
    assert_eq!(snapshot.discarded_bytes, 0);
}

/// Clients that trickle refused uploads hold what a trickle holds (a connection, a small
/// buffer), not their declared bodies, and all of them together no more than an eighth of
/// the budget: the rest are answered at once, and admitted work keeps its memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_discards_hold_a_share_of_the_budget_at_most() {
    const BUDGET: u64 = 8 << 20;
    let config = AdmissionConfig::default()
        .max_concurrency(1)
        .queue_capacity(0)
        .memory_budget_bytes(BUDGET)
        .request_estimate(64 << 10);
    let server = TestServer::start(config, 0).await;
    let held = server.open("/hold/1").await;
    server.wait_for("the slot held", |s| s.in_flight == 1).await;
    let head = "POST /ingest HTTP/1.1\r\nhost: test\r\ncontent-length: 400000\r\n\r\nsome";
    let mut trickling = Vec::new();
    for _ in 0..60 {
        trickling.push(server.open_raw(head).await);
    }
    server
        .wait_for("every refusal decided", |s| {
            s.rejected(Reason::QueueFull, Limit::Concurrency) == 60
        })
        .await;
    let snapshot = server.snapshot();
    let discarding = snapshot.held_bytes - snapshot.held_bytes.min(64 << 10);
    assert!(
        discarding <= BUDGET / 8,
        "discards hold {discarding} bytes, above an eighth of the budget"
    );
    let no_room = snapshot.discards(Discard::NoRoom);
    assert!(
        (20..60).contains(&no_room),
        "{no_room} answered at once for want of room"
    );
    // Admitted work still has the rest of the budget.
    server.probe.release(1);
    support::read_reply(held).await;
    let fast = support::read_reply(server.open("/fast").await).await;
    assert_eq!(fast.status, 200);
    drop(trickling);
    server
        .wait_for("the discards gone", |s| s.held_bytes == 0)
        .await;
}

/// Refused bodies are read on an allowance, whether or not the runtime looks busy: what
/// admitted bodies brought in (nothing here) and 64 MiB a second, 64 MiB at most in hand.
/// Beyond it a refusal is answered at once with `Connection: close`. A storm of retried
/// uploads would otherwise keep the workers reading bodies nobody will use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_bodies_are_read_on_an_allowance_however_idle_the_runtime_looks() {
    const BODY: usize = 8 << 20;
    let server = saturated(AdmissionConfig::default()).await;
    let addr = server.addr;
    let began = std::time::Instant::now();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            tokio::task::spawn_blocking(move || {
                let mut client = WholeBodyFirst::connect(addr);
                for _ in 0..8 {
                    // A refusal answered with `Connection: close` resets a client still
                    // writing: it connects again.
                    if client.post(BODY).is_err() {
                        client = WholeBodyFirst::connect(addr);
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let seconds = began.elapsed().as_secs_f64();
    let snapshot = server.snapshot();
    let allowance = (64.0 * (1.0 + seconds) + 8.0) * MIB as f64;
    assert!(
        (snapshot.discarded_bytes as f64) <= allowance,
        "{} MiB read in {seconds:.2} s",
        snapshot.discarded_bytes / MIB
    );
    // Every refusal was read whole, or answered at once for want of allowance.
    let refused = snapshot.rejected(Reason::QueueFull, Limit::Concurrency);
    let [whole, busy] = [Discard::Whole, Discard::Busy].map(|d| snapshot.discards(d));
    assert!(busy > 0, "{snapshot:?}");
    assert_eq!(whole + busy, refused, "{snapshot:?}");
}
