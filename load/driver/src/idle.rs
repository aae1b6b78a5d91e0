//! Idle connections, as a client's pool keeps its spares: each client opens a connection,
//! sends one request, reads the answer, and keeps the connection open with nothing more to
//! say. When the server closes it, the client opens another after a pause (100 to 300 ms),
//! as a pool refills. They all start at once: a reconnect storm, as after a deploy.

use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    thread,
    time::{Duration, Instant},
};

use crate::{oha::Outcome, scenario::Phase};

/// How often an idle client looks whether its phase has ended.
const LOOK: Duration = Duration::from_secs(1);

/// Runs `phase`'s idle clients against `addr`. The outcome counts the answers to their
/// requests; `errors` counts requests that ended without one (a connection cut with a
/// request on it). Connections not accepted within 5 s (the backlog full while the server
/// pauses accepting) are counted apart: no request was sent on them.
pub fn run(addr: SocketAddr, phase: &Phase) -> Result<Outcome, String> {
    let began = Instant::now();
    let deadline = began + phase.duration;
    let given_back = AtomicU64::new(0);
    let not_accepted = AtomicU64::new(0);
    let tallies = thread::scope(|scope| {
        let clients: Vec<_> = (0..phase.connections)
            .map(|i| {
                let counts = (&given_back, &not_accepted);
                let path = phase.path.as_str();
                thread::Builder::new()
                    .stack_size(128 << 10)
                    .spawn_scoped(scope, move || client(addr, path, i, deadline, counts))
                    .map_err(|e| format!("an idle client: {e}"))
            })
            .collect();
        clients
            .into_iter()
            .map(|client| {
                client?
                    .join()
                    .map_err(|_| "an idle client panicked".to_owned())
            })
            .collect::<Result<Vec<_>, String>>()
    })?;
    let mut statuses = BTreeMap::new();
    let mut errors = 0;
    for (answers, cut) in tallies {
        for (status, n) in answers {
            *statuses.entry(status).or_default() += n;
        }
        errors += cut;
    }
    eprintln!(
        "[idle] {} idle connections closed by the server, {} connects not accepted within 5 s, {errors} requests cut",
        given_back.load(Relaxed),
        not_accepted.load(Relaxed)
    );
    Ok(Outcome::counts(
        began.elapsed().as_secs_f64(),
        statuses,
        errors,
    ))
}

/// One client, connection after connection until `deadline`: the answers it got, and its
/// requests cut.
fn client(
    addr: SocketAddr,
    path: &str,
    i: u32,
    deadline: Instant,
    (given_back, not_accepted): (&AtomicU64, &AtomicU64),
) -> (BTreeMap<u16, u64>, u64) {
    let mut answers = BTreeMap::new();
    let mut cut = 0;
    let mut draw = crate::client::Draw(u64::from(i).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    while Instant::now() < deadline {
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            not_accepted.fetch_add(1, Relaxed);
            thread::sleep(Duration::from_millis(200));
            continue;
        };
        let _ = stream.set_read_timeout(Some(LOOK));
        match request(&mut stream, path, deadline) {
            Some(Some(status)) => *answers.entry(status).or_default() += 1,
            Some(None) => cut += 1,
            None => return (answers, cut),
        }
        // Idle, until the server closes it or the phase ends.
        let mut byte = [0; 1];
        loop {
            match stream.read(&mut byte) {
                Ok(0) => {
                    given_back.fetch_add(1, Relaxed);
                    break;
                }
                Ok(_) => break,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    if Instant::now() >= deadline {
                        return (answers, cut);
                    }
                }
                Err(_) => break,
            }
        }
        thread::sleep(Duration::from_millis(100 + draw.next() % 200));
    }
    (answers, cut)
}

/// Sends `GET path` (kept alive) and reads the answer: its status, `Some(None)` if the
/// connection ended without one, `None` if the phase ended first.
fn request(stream: &mut TcpStream, path: &str, deadline: Instant) -> Option<Option<u16>> {
    let head = format!("GET {path} HTTP/1.1\r\nhost: load\r\n\r\n");
    if stream.write_all(head.as_bytes()).is_err() {
        return Some(None);
    }
    let mut raw = Vec::new();
    let mut buf = [0; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Some(None),
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() >= deadline {
                    return None;
                }
                continue;
            }
            Err(_) => return Some(None),
        }
        let text = String::from_utf8_lossy(&raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(0);
        if body.len() >= length {
            return Some(crate::probe::status_of(head));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A server that answers one request on each connection, then closes it.
    fn answer_once_then_close() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for mut stream in listener.incoming().flatten() {
                let mut buf = [0; 1024];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok");
            }
        });
        addr
    }

    #[test]
    fn a_client_counts_its_answers_and_reconnects_when_the_server_closes() {
        let addr = answer_once_then_close();
        let (given_back, not_accepted) = (AtomicU64::new(0), AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_millis(900);
        let (answers, cut) = client(addr, "/", 1, deadline, (&given_back, &not_accepted));
        assert_eq!(cut, 0);
        let served = answers.get(&200).copied().unwrap_or(0);
        assert!(served >= 2, "reconnected after each close: {answers:?}");
        assert!(given_back.load(Relaxed) >= served - 1);
        assert_eq!(not_accepted.load(Relaxed), 0);
    }
}
