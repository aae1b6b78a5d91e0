//! Slow clients, as in slowloris-style attacks on bodies: uploaders that declare a large body
//! and trickle it (R.U.D.Y.), and readers that take a long response a few bytes at a time
//! (slow read). Each one starts again as soon as the server ends its request, for as long
//! as its phase lasts: an attacker reconnects. Uploaders at the pace of an ordinary link are
//! the same clients, faster: they send a real JSON body, write it whole before reading the
//! answer, as most HTTP clients do, and count the latency of the ones answered 2xx.

use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use crate::{
    oha::Outcome,
    scenario::{Phase, Slow},
};

/// How often a slow client sends or reads its next few bytes.
const TICK: Duration = Duration::from_millis(100);

/// Runs `phase`'s slow clients against `addr`. The outcome counts, per status, the answers
/// they got (`408` for an upload cut off); `errors` counts requests that ended without one
/// (a response cut off mid-body, a reset).
pub fn run(addr: SocketAddr, phase: &Phase, slow: Slow) -> Result<Outcome, String> {
    let began = Instant::now();
    let deadline = began + phase.duration;
    // One body for every uploader: a JSON array of the declared size.
    let body: Arc<[u8]> = match slow.upload {
        Some(declared) => crate::oha::json_body(declared).into_bytes().into(),
        None => Arc::from(Vec::new()),
    };
    let threads: Vec<_> = (0..phase.connections)
        .map(|i| {
            let (path, body) = (phase.path.clone(), Arc::clone(&body));
            // Spread the first requests over one tick, as clients that start apart.
            let start = began + TICK * i / phase.connections.max(1);
            thread::spawn(move || client(addr, &path, slow, &body, start, deadline))
        })
        .collect();
    let mut total = Tally::default();
    let mut ok_at = Vec::new();
    for thread in threads {
        let tally = thread.join().map_err(|_| "a slow client panicked")?;
        for (status, n) in tally.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
        total.errors += tally.errors;
        total.ok_latencies.extend(tally.ok_latencies);
        ok_at.extend(
            tally
                .ok_at
                .iter()
                .map(|at| at.duration_since(began).as_secs_f64()),
        );
    }
    total.ok_latencies.sort_by(f64::total_cmp);
    let quantile = |q| crate::client::quantile(&total.ok_latencies, q);
    Ok(Outcome {
        seconds: began.elapsed().as_secs_f64(),
        ok_p50: quantile(0.5),
        ok_p99: quantile(0.99),
        job_p50: f64::NAN,
        job_p99: f64::NAN,
        statuses: total.statuses,
        errors: total.errors,
        ok_at,
    })
}

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    /// Seconds from the first byte sent to the answer, of the 2xx answers.
    ok_latencies: Vec<f64>,
    ok_at: Vec<Instant>,
}

/// One slow client, request after request from `start` until `deadline`.
fn client(
    addr: SocketAddr,
    path: &str,
    slow: Slow,
    body: &[u8],
    start: Instant,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::default();
    thread::sleep(start.saturating_duration_since(Instant::now()));
    while Instant::now() < deadline {
        let sent = Instant::now();
        let ended = match slow.upload {
            Some(_) => upload(addr, path, body, slow, deadline),
            None => read(addr, path, slow.bytes_per_second, deadline),
        };
        match ended {
            Ended::Answered(status) => {
                *tally.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    tally.ok_latencies.push(sent.elapsed().as_secs_f64());
                    tally.ok_at.push(Instant::now());
                }
            }
            Ended::Cut => tally.errors += 1,
            Ended::Deadline => break,
        }
        thread::sleep(TICK);
    }
    tally
}

enum Ended {
    /// The server answered with this status.
    Answered(u16),
    /// The connection ended without a complete answer.
    Cut,
    /// The phase ended first.
    Deadline,
}

/// Sends `body` at `slow`'s pace, a piece each tick, until the server answers; reads only
/// between pieces, or, for a client that `writes_first`, once the body is all written.
fn upload(addr: SocketAddr, path: &str, body: &[u8], slow: Slow, deadline: Instant) -> Ended {
    let Slow {
        bytes_per_second,
        writes_first,
        ..
    } = slow;
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return Ended::Cut;
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: load\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let piece = (bytes_per_second * TICK.as_millis() as u64 / 1000).max(1) as usize;
    if writes_first {
        return upload_writes_first(stream, head, body, piece, deadline);
    }
    if stream.write_all(head.as_bytes()).is_err() || stream.set_nonblocking(true).is_err() {
        return Ended::Cut;
    }
    let mut sent = 0;
    let mut answer = Vec::new();
    while Instant::now() < deadline {
        if let Some(ended) = answered(&mut stream, &mut answer) {
            return ended;
        }
        if sent < body.len() {
            let end = (sent + piece).min(body.len());
            match stream.write(&body[sent..end]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => return answered(&mut stream, &mut answer).unwrap_or(Ended::Cut),
            }
        }
        thread::sleep(if sent < body.len() { TICK } else { TICK / 20 });
    }
    Ended::Deadline
}

/// Writes `head` and `body` whole, `piece` bytes a tick (at once if `piece` holds it), and
/// only then reads the answer. A failed write is the end: such a client never reads.
fn upload_writes_first(
    mut stream: TcpStream,
    head: String,
    body: &[u8],
    piece: usize,
    deadline: Instant,
) -> Ended {
    let timeouts = [
        stream.set_write_timeout(Some(Duration::from_secs(10))),
        stream.set_read_timeout(Some(Duration::from_secs(10))),
    ];
    if timeouts.iter().any(Result::is_err) || stream.write_all(head.as_bytes()).is_err() {
        return Ended::Cut;
    }
    for piece in body.chunks(piece) {
        if Instant::now() >= deadline {
            return Ended::Deadline;
        }
        if stream.write_all(piece).is_err() {
            return Ended::Cut;
        }
        if piece.len() < body.len() {
            thread::sleep(TICK);
        }
    }
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    status(&answer).map_or(Ended::Cut, Ended::Answered)
}

/// What the server said so far: `Some` once it answered or closed.
fn answered(stream: &mut TcpStream, answer: &mut Vec<u8>) -> Option<Ended> {
    let mut buffer = [0; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return Some(status(answer).map_or(Ended::Cut, Ended::Answered)),
            Ok(n) => answer.extend_from_slice(&buffer[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                return status(answer).map(Ended::Answered);
            }
            Err(_) => return Some(status(answer).map_or(Ended::Cut, Ended::Answered)),
        }
    }
}

fn status(answer: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(answer).ok()?;
    let line = text.split("\r\n").next()?;
    text.contains("\r\n")
        .then(|| crate::probe::status_of(line))
        .flatten()
}

/// Asks for `path` and reads `bytes_per_second` of it until the body ends or is cut off.
fn read(addr: SocketAddr, path: &str, bytes_per_second: u64, deadline: Instant) -> Ended {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return Ended::Cut;
    };
    let head = format!("GET {path} HTTP/1.1\r\nhost: load\r\nconnection: close\r\n\r\n");
    if stream.write_all(head.as_bytes()).is_err() || stream.set_read_timeout(Some(TICK)).is_err() {
        return Ended::Cut;
    }
    let mut piece = vec![0; (bytes_per_second * TICK.as_millis() as u64 / 1000).max(1) as usize];
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match stream.read(&mut piece) {
            // A chunked body that ends with its last chunk was complete; else it was cut.
            Ok(0) => {
                return match status(&seen) {
                    Some(status) if seen.ends_with(b"0\r\n\r\n") => Ended::Answered(status),
                    _ => Ended::Cut,
                };
            }
            Ok(n) if seen.len() < 64 << 10 => seen.extend_from_slice(&piece[..n]),
            Ok(n) => {
                // Keep the status line and the last bytes, not the whole body.
                seen.truncate(1024);
                seen.extend_from_slice(&piece[..n]);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return Ended::Cut,
        }
        thread::sleep(TICK);
    }
    Ended::Deadline
}
