//! A burst far above capacity, over real TCP: clients that write 256 KiB bodies whole and
//! retry at once after any answer but a 2xx, while a base load of small CPU-bound requests
//! arrives at a steady pace. Once the burst ends, the layer serves the base load again
//! within a second: nothing it learned or did during the burst (refused bodies read, a gate
//! flung open, a limit fallen) holds it down after. A behaviour test, asserted loosely
//! enough for a loaded 2-core machine, not a benchmark.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use axum::{
    Router,
    routing::{get, post},
};

mod support;
use tower_admission::{Admission, AdmissionConfig, ManualMemory, MemoryBudget};

/// Each request holds a worker this long without yielding, as an inline parse does.
const SPIN: Duration = Duration::from_millis(3);
const BODY: usize = 256 << 10;
/// The base load: one request each interval, each abandoned after the deadline.
const BASE_EVERY: Duration = Duration::from_millis(20);
const DEADLINE: Duration = Duration::from_secs(1);
const STORM_CLIENTS: usize = 48;
const BURST_FROM: Duration = Duration::from_millis(500);
const BURST_UNTIL: Duration = Duration::from_millis(2_500);
const LOAD: Duration = Duration::from_millis(4_500);

fn spin() {
    let start = Instant::now();
    while start.elapsed() < SPIN {
        std::hint::spin_loop();
    }
}

/// `/spin` (a GET) and `/upload` (a POST whose body is read, then spun on), behind the layer's
/// defaults, on two workers.
fn serve() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    support::serve_on_two_workers(|| {
        let config = AdmissionConfig::default().memory_budget(MemoryBudget::Off);
        let admission = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
        Router::new()
            .route("/spin", get(|| async { spin() }))
            .route(
                "/upload",
                post(|body: axum::body::Bytes| async move {
                    spin();
                    body.len().to_string()
                }),
            )
            .layer(admission.layer())
    })
}

/// One attempt on a connection of its own, the body written whole before the answer is read;
/// the status, or `None` if it failed or had no answer within the deadline.
fn attempt(addr: SocketAddr, head: &str, body: &[u8]) -> Option<u16> {
    let stream = TcpStream::connect_timeout(&addr, DEADLINE).ok()?;
    let start = Instant::now();
    stream.set_read_timeout(Some(DEADLINE)).ok()?;
    stream.set_write_timeout(Some(DEADLINE)).ok()?;
    let mut stream = BufReader::new(stream);
    stream.get_mut().write_all(head.as_bytes()).ok()?;
    stream.get_mut().write_all(body).ok()?;
    let mut line = String::new();
    stream.read_line(&mut line).ok()?;
    let status = line.split(' ').nth(1)?.parse().ok()?;
    let mut length = 0;
    loop {
        line.clear();
        stream.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    stream.read_exact(&mut vec![0; length]).ok()?;
    (start.elapsed() <= DEADLINE).then_some(status)
}

#[test]
fn after_a_burst_of_retrying_uploads_the_base_load_is_served_again_within_a_second() {
    let (addr, stop) = serve();
    let began = Instant::now();
    // The base load: one GET each interval, whether or not the last was answered.
    let (sent, outcomes) = mpsc::channel();
    let base = thread::spawn(move || {
        let head = "GET /spin HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n";
        let mut next = began;
        while next < began + LOAD {
            let sent = sent.clone();
            let at = next - began;
            thread::spawn(move || {
                let _ = sent.send((at, attempt(addr, head, &[])));
            });
            next += BASE_EVERY;
            thread::sleep(next.saturating_duration_since(Instant::now()));
        }
    });
    // The burst: uploads retried at once, whatever the answer, until it ends.
    thread::sleep(BURST_FROM);
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: test\r\ncontent-length: {BODY}\r\nconnection: close\r\n\r\n"
    );
    let storm: Vec<_> = (0..STORM_CLIENTS)
        .map(|_| {
            let head = head.clone();
            thread::spawn(move || {
                let body = vec![b'x'; BODY];
                while began.elapsed() < BURST_UNTIL {
                    let _ = attempt(addr, &head, &body);
                }
            })
        })
        .collect();
    storm.into_iter().for_each(|client| client.join().unwrap());
    base.join().unwrap();
    thread::sleep(DEADLINE + Duration::from_millis(200));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let outcomes: Vec<(Duration, Option<u16>)> = outcomes.try_iter().collect();
    // From a second after the burst on, the base load is served.
    let after: Vec<_> = outcomes
        .iter()
        .filter(|(at, _)| *at >= BURST_UNTIL + Duration::from_secs(1))
        .collect();
    let served = after.iter().filter(|(_, s)| *s == Some(200)).count();
    assert!(
        after.len() >= 40 && served * 10 >= after.len() * 9,
        "{served} of {} base requests served after the burst",
        after.len()
    );
}
