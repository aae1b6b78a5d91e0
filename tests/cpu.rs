//! CPU-bound handlers over real TCP: with the layer's defaults, a bypassed `/health` stays
//! prompt while handlers that spin on the CPU keep both worker threads busy, and while bodies
//! of two lengths on one route are parsed each in one long poll; without the layer, it waits
//! behind them. Behaviour tests, asserted loosely enough for a loaded 2-core machine, not
//! benchmarks.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread,
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    routing::{get, post},
};

mod support;
use tower_admission::{Admission, AdmissionConfig, ManualMemory, MemoryBudget};

/// Each `/spin` request holds a worker this long without yielding, as an inline parse does.
const SPIN: Duration = Duration::from_millis(4);
const CLIENTS: usize = 24;
const LOAD: Duration = Duration::from_secs(3);

fn spin() -> &'static str {
    spin_for(SPIN);
    "spun\n"
}

fn spin_for(time: Duration) {
    let start = Instant::now();
    while start.elapsed() < time {
        std::hint::spin_loop();
    }
}

/// `/parse` holds a worker 1 ms per 4 KiB of its body, in one poll, as an inline parse does.
async fn parse(body: Bytes) -> &'static str {
    spin_for(Duration::from_millis(body.len() as u64 / 4096));
    "parsed\n"
}

/// Serves `/spin` and `/health` (bypassed) on a runtime of two workers, with the layer or
/// without; returns the address and a flag that stops it.
fn serve(with_layer: bool) -> (SocketAddr, Arc<AtomicBool>) {
    support::serve_on_two_workers(move || {
        let app = Router::new()
            .route("/spin", get(|| async { spin() }))
            .route("/parse", post(parse))
            .route("/health", get(|| async { "ok\n" }));
        if !with_layer {
            return app;
        }
        let config = AdmissionConfig::default()
            .memory_budget(MemoryBudget::Off)
            .bypass(["/health"]);
        let admission = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
        app.layer(admission.layer())
    })
}

/// One `GET path` on a kept-alive connection; the status.
fn request(connection: &mut BufReader<TcpStream>, path: &str) -> std::io::Result<u16> {
    write!(
        connection.get_mut(),
        "GET {path} HTTP/1.1\r\nhost: test\r\n\r\n"
    )?;
    response(connection)
}

/// One `POST /parse` of `body` on a kept-alive connection, written whole before the answer is
/// read; the status.
fn post_parse(connection: &mut BufReader<TcpStream>, body: &[u8]) -> std::io::Result<u16> {
    write!(
        connection.get_mut(),
        "POST /parse HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )?;
    connection.get_mut().write_all(body)?;
    response(connection)
}

/// Reads one response; its status.
fn response(connection: &mut BufReader<TcpStream>) -> std::io::Result<u16> {
    let mut line = String::new();
    connection.read_line(&mut line)?;
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0;
    loop {
        line.clear();
        connection.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    connection.read_exact(&mut vec![0; length])?;
    Ok(status)
}

fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    BufReader::new(stream)
}

/// A closed-loop client on its own thread until `end`: `send` one request on a kept-alive
/// connection, the next once it is answered (20 ms after a refusal), a new connection after
/// an error; how many were served.
fn closed_loop(
    addr: SocketAddr,
    end: Instant,
    send: impl Fn(&mut BufReader<TcpStream>) -> std::io::Result<u16> + Send + 'static,
) -> thread::JoinHandle<usize> {
    thread::spawn(move || {
        let mut connection = connect(addr);
        let mut served = 0;
        while Instant::now() < end {
            match send(&mut connection) {
                Ok(200) => served += 1,
                Ok(_) => thread::sleep(Duration::from_millis(20)),
                Err(_) => connection = connect(addr),
            }
        }
        served
    })
}

/// Drives `/spin` from closed-loop clients (backing off 20 ms after a 503) while probing
/// `/health` every 20 ms; returns the probes' 90th percentile and how many spins were served.
fn health_under_load(with_layer: bool) -> (Duration, usize) {
    let (addr, stop) = serve(with_layer);
    let end = Instant::now() + LOAD;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| closed_loop(addr, end, |connection| request(connection, "/spin")))
        .collect();
    // Past the start.
    let p90 = health_p90(addr, Duration::from_millis(300), end);
    let served = clients.into_iter().map(|c| c.join().unwrap()).sum();
    stop.store(true, Relaxed);
    (p90, served)
}

/// Probes `/health` every 20 ms from `after` on until shortly before `end`; the probes' 90th
/// percentile.
fn health_p90(addr: SocketAddr, after: Duration, end: Instant) -> Duration {
    thread::sleep(after);
    let mut probe = connect(addr);
    let mut probes = Vec::new();
    while Instant::now() + Duration::from_millis(100) < end {
        let start = Instant::now();
        assert_eq!(request(&mut probe, "/health").unwrap(), 200);
        probes.push(start.elapsed());
        thread::sleep(Duration::from_millis(20));
    }
    probes.sort();
    probes[probes.len() * 9 / 10]
}

#[test]
fn cpu_bound_handlers_do_not_keep_a_bypassed_health_check_waiting() {
    let (without, served_without) = health_under_load(false);
    let (with, served_with) = health_under_load(true);
    eprintln!(
        "/health p90: {with:?} with the layer ({served_with} spins), {without:?} without ({served_without} spins)"
    );
    // The load must load: without the layer, /health waits behind the spinning handlers.
    assert!(
        without >= SPIN * 3,
        "without the layer /health p90 {without:?}: the load did not load"
    );
    assert!(
        with * 2 <= without,
        "/health p90 with the layer {with:?}, without {without:?}"
    );
    // Keeping the heartbeat does not cost most of the work.
    assert!(
        served_with * 2 >= served_without,
        "served {served_with} with the layer, {served_without} without"
    );
}

/// Bodies of 128 KiB (32 ms of work, in one poll) from `LONG_CLIENTS` clients and of 4 KiB
/// (1 ms) from `SHORT_CLIENTS`, on one route, closed loop (backing off 20 ms after a 503),
/// while `/health` is probed every 20 ms; returns the probes' 90th percentile and how many
/// long and short bodies were served.
fn health_under_long_polls(with_layer: bool) -> (Duration, usize, usize) {
    const LONG_CLIENTS: usize = 4;
    const SHORT_CLIENTS: usize = 8;
    let (addr, stop) = serve(with_layer);
    let end = Instant::now() + LOAD;
    let clients: Vec<_> = (0..LONG_CLIENTS + SHORT_CLIENTS)
        .map(|i| {
            let body = vec![b'x'; if i < LONG_CLIENTS { 128 << 10 } else { 4 << 10 }];
            closed_loop(addr, end, move |connection| post_parse(connection, &body))
        })
        .collect();
    // Past the start, once the route is learned.
    let p90 = health_p90(addr, Duration::from_millis(500), end);
    let served: Vec<usize> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    stop.store(true, Relaxed);
    let long = served[..LONG_CLIENTS].iter().sum();
    let short = served[LONG_CLIENTS..].iter().sum();
    (p90, long, short)
}

#[test]
fn bodies_parsed_in_one_long_poll_leave_a_worker_for_a_bypassed_health_check() {
    let (without, long_without, short_without) = health_under_long_polls(false);
    let (with, long_with, short_with) = health_under_long_polls(true);
    eprintln!(
        "/health p90: {with:?} with the layer ({long_with} long, {short_with} short served), \
         {without:?} without ({long_without} long, {short_without} short)"
    );
    assert!(
        without >= Duration::from_millis(8),
        "without the layer /health p90 {without:?}: the load did not load"
    );
    // One long poll at a time leaves a worker for the rest.
    assert!(
        with * 4 <= without,
        "/health p90 with the layer {with:?}, without {without:?}"
    );
    // Both lengths are served, and the short ones more than without the layer, where they
    // wait behind the long ones.
    assert!(long_with > 0, "no long body served");
    assert!(
        short_with >= short_without * 2,
        "short bodies served: {short_with} with the layer, {short_without} without"
    );
}
