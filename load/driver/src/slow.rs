//! Slow clients, as in slowloris-style attacks on bodies: uploaders that declare a large body
//! and trickle it (R.U.D.Y.), and readers that take a long response a few bytes at a time
//! (slow read). Each one starts again as soon as the server ends its request, for as long
//! as its phase lasts: an attacker reconnects.

use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
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
    let threads: Vec<_> = (0..phase.connections)
        .map(|_| {
            let path = phase.path.clone();
            thread::spawn(move || client(addr, &path, slow, deadline))
        })
        .collect();
    let mut statuses = BTreeMap::new();
    let mut errors = 0;
    for thread in threads {
        let (seen, failed) = thread.join().map_err(|_| "a slow client panicked")?;
        for (status, n) in seen {
            *statuses.entry(status).or_default() += n;
        }
        errors += failed;
    }
    Ok(Outcome {
        seconds: began.elapsed().as_secs_f64(),
        statuses,
        errors,
        ok_p50: f64::NAN,
        ok_p99: f64::NAN,
        ok_at: Vec::new(),
    })
}

/// One slow client, request after request until `deadline`.
fn client(
    addr: SocketAddr,
    path: &str,
    slow: Slow,
    deadline: Instant,
) -> (BTreeMap<u16, u64>, u64) {
    let mut statuses = BTreeMap::new();
    let mut errors = 0;
    while Instant::now() < deadline {
        let ended = match slow.upload {
            Some(declared) => upload(addr, path, declared, slow.bytes_per_second, deadline),
            None => read(addr, path, slow.bytes_per_second, deadline),
        };
        match ended {
            Ended::Answered(status) => *statuses.entry(status).or_default() += 1,
            Ended::Cut => errors += 1,
            Ended::Deadline => break,
        }
        thread::sleep(TICK);
    }
    (statuses, errors)
}

enum Ended {
    /// The server answered with this status.
    Answered(u16),
    /// The connection ended without a complete answer.
    Cut,
    /// The phase ended first.
    Deadline,
}

/// Declares `declared` bytes and sends `bytes_per_second` of them, until the server answers.
fn upload(
    addr: SocketAddr,
    path: &str,
    declared: u64,
    bytes_per_second: u64,
    deadline: Instant,
) -> Ended {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return Ended::Cut;
    };
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: load\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\n\r\n"
    );
    if stream.write_all(head.as_bytes()).is_err() || stream.set_nonblocking(true).is_err() {
        return Ended::Cut;
    }
    let piece = vec![b' '; (bytes_per_second * TICK.as_millis() as u64 / 1000).max(1) as usize];
    let mut answer = Vec::new();
    while Instant::now() < deadline {
        if let Some(ended) = answered(&mut stream, &mut answer) {
            return ended;
        }
        match stream.write(&piece) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(_) => return answered(&mut stream, &mut answer).unwrap_or(Ended::Cut),
        }
        thread::sleep(TICK);
    }
    Ended::Deadline
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
