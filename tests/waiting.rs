//! Requests that wait rather than compute, over real TCP, with the layer's defaults: handlers
//! that sleep a time that varies within one route, and clients that upload their bodies
//! slowly. Waiting is not work: nothing may be refused that a fixed count would serve. A
//! behaviour test, asserted loosely enough for a loaded 2-core machine, not a benchmark.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    thread,
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::Query,
    routing::{get, post},
};
use tower_admission::{Admission, AdmissionConfig, ManualMemory, MemoryBudget};

mod support;

#[derive(serde::Deserialize)]
struct Sleep {
    ms: u64,
}

/// Serves `/sleep?ms=N` and `/parse` (a JSON body parsed into a tree) with the layer's
/// defaults on a runtime of two workers; returns the address and the pool.
fn serve() -> (SocketAddr, Admission) {
    let config = AdmissionConfig::default().memory_budget(MemoryBudget::Off);
    let admission = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
    let layer = admission.layer();
    let (addr, _) = support::serve_on_two_workers(move || {
        Router::new()
            .route(
                "/sleep",
                get(|Query(sleep): Query<Sleep>| async move {
                    tokio::time::sleep(Duration::from_millis(sleep.ms)).await;
                    "slept\n"
                }),
            )
            .route(
                "/parse",
                post(|body: Bytes| async move {
                    let tree: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    format!("{}\n", tree.as_array().map_or(0, Vec::len))
                }),
            )
            .layer(layer)
    });
    (addr, admission)
}

/// Sends `head` and `body` on a new connection, the body in pieces of `piece` bytes `pause`
/// apart, all of it before reading the answer; returns the status.
fn exchange(addr: SocketAddr, head: &str, body: &[u8], piece: usize, pause: Duration) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream.write_all(head.as_bytes()).unwrap();
    for chunk in body.chunks(piece.max(1)) {
        thread::sleep(pause);
        // A refusal may close the connection before the body is sent: read the answer then.
        if stream.write_all(chunk).is_err() {
            break;
        }
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return 0;
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    status
}

/// `n` requests at once from as many threads; the statuses.
fn burst(n: usize, request: impl Fn(usize) -> u16 + Send + Sync + Copy + 'static) -> Vec<u16> {
    let threads: Vec<_> = (0..n).map(|i| thread::spawn(move || request(i))).collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn bursts_of_handlers_that_sleep_a_varying_time_are_all_served() {
    let (addr, admission) = serve();
    let sleep = move |ms: u64| {
        let head =
            format!("GET /sleep?ms={ms} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n");
        exchange(addr, &head, &[], 1, Duration::ZERO)
    };
    // A warm-up of quick calls, then bursts of 300 calls sleeping 50 to 500 ms on the
    // same route (one cost class): above the 256 slots, within the queue and its timeout.
    let warm = burst(50, move |_| sleep(50));
    assert!(warm.iter().all(|&s| s == 200), "{warm:?}");
    for _ in 0..2 {
        let statuses = burst(300, move |i| sleep(50 + (i as u64 * 37) % 451));
        let refused = statuses.iter().filter(|&&s| s != 200).count();
        assert_eq!(
            refused,
            0,
            "{refused} of 300 refused: {:?}",
            admission.snapshot()
        );
    }
    let snapshot = admission.snapshot();
    assert_eq!(snapshot.rejected_total(), 0);
    assert_eq!(snapshot.concurrency_limit, snapshot.max_concurrency);
}

#[test]
fn clients_that_upload_slowly_are_not_taken_for_work() {
    let (addr, admission) = serve();
    // 64 KiB of JSON, sent at about 256 KiB/s (4 KiB every 16 ms), written whole before the
    // answer is read, by 24 clients starting 10 ms apart, twice: the clients set the pace,
    // and the parses (a few ms each) leave the CPU room.
    let item = br#"{"id":12345,"name":"admission","tags":["a","b"]},"#;
    let mut json = b"[".to_vec();
    while json.len() + item.len() < 64 << 10 {
        json.extend_from_slice(item);
    }
    json.extend_from_slice(br#"{"id":0}]"#);
    let json: &'static [u8] = json.leak();
    let upload = move |i: usize| {
        thread::sleep(Duration::from_millis(10 * i as u64));
        let head = format!(
            "POST /parse HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            json.len()
        );
        exchange(addr, &head, json, 4 << 10, Duration::from_millis(16))
    };
    for round in 0..2 {
        let statuses = burst(24, upload);
        assert!(
            statuses.iter().all(|&s| s == 200),
            "round {round}: {statuses:?}: {:?}",
            admission.snapshot()
        );
    }
    let snapshot = admission.snapshot();
    assert_eq!(snapshot.rejected_total(), 0, "{snapshot:?}");
    // It starts at 16 and grows when reached; it never fell.
    assert!(snapshot.concurrency_limit >= 16, "{snapshot:?}");
    let parse = snapshot.classes.iter().find(|c| c.name == "POST /parse");
    assert!(
        parse
            .and_then(|c| c.cpu)
            .is_some_and(|cpu| cpu < Duration::from_millis(200)),
        "its CPU demand is the parse, not the upload: {parse:?}"
    );
}
