//! Closed-loop HTTP/1.1 clients that back off after a 503, as real clients do: one thread per
//! connection, each sending its next request when the last one is answered. `oha` cannot
//! back off, and without it a shedding server is hammered by its own 503s, which then decide
//! the comparison; every setup gets the same clients.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use crate::{oha::Outcome, scenario::Phase};

/// What one connection saw.
#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    ok_latencies: Vec<f64>,
    /// From the first attempt at a request to its 2xx, backoffs included.
    job_latencies: Vec<f64>,
    /// When each 2xx arrived, in seconds after the phase began.
    ok_at: Vec<f64>,
}

/// Runs `phase` against `addr` with `phase.connections` clients for `phase.duration`.
pub fn run(addr: SocketAddr, phase: &Phase, backoff: Duration) -> Result<Outcome, String> {
    let body = phase
        .post_json
        .map(|bytes| Arc::new(crate::oha::json_body(bytes).into_bytes()));
    let began = Instant::now();
    let threads: Vec<_> = (0..phase.connections)
        .map(|index| {
            let (phase, body) = (phase.clone(), body.clone());
            thread::spawn(move || connection(addr, &phase, body, backoff, began, index))
        })
        .collect();
    let mut total = Tally::default();
    for thread in threads {
        let tally = thread.join().map_err(|_| "a client thread panicked")?;
        for (status, n) in tally.statuses {
            *total.statuses.entry(status).or_default() += n;
        }
        total.errors += tally.errors;
        total.ok_latencies.extend(tally.ok_latencies);
        total.job_latencies.extend(tally.job_latencies);
        total.ok_at.extend(tally.ok_at);
    }
    total.ok_latencies.sort_by(f64::total_cmp);
    total.job_latencies.sort_by(f64::total_cmp);
    Ok(Outcome {
        seconds: began.elapsed().as_secs_f64(),
        statuses: total.statuses,
        errors: total.errors,
        ok_p50: quantile(&total.ok_latencies, 0.5),
        ok_p99: quantile(&total.ok_latencies, 0.99),
        job_p50: quantile(&total.job_latencies, 0.5),
        job_p99: quantile(&total.job_latencies, 0.99),
        ok_at: total.ok_at,
    })
}

/// The `q` quantile of `sorted`, NaN if empty.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n => sorted[((n - 1) as f64 * q).round() as usize],
    }
}

/// A small, seeded generator: the draws differ by connection and repeat from run to run.
pub struct Draw(pub u64);

impl Draw {
    pub fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `lo..hi` (`hi > lo`).
    fn within(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    /// A number in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn connection(
    addr: SocketAddr,
    phase: &Phase,
    body: Option<Arc<Vec<u8>>>,
    backoff: Duration,
    began: Instant,
    index: u32,
) -> Tally {
    let deadline = began + phase.duration;
    let mut tally = Tally::default();
    let mut draw = Draw(0x9e37_79b9_7f4a_7c15 ^ (u64::from(index) + 1).wrapping_mul(0xff51_afd7));
    let mut stream: Option<BufReader<TcpStream>> = None;
    let timeout = phase.timeout.unwrap_or(Duration::from_secs(30));
    // When the current job's first attempt was sent.
    let mut job_started: Option<Instant> = None;
    while Instant::now() < deadline {
        let request = Request {
            path: phase.pick_path(draw.next()),
            priority: phase.priority,
            body: body.as_deref().map(Vec::as_slice),
        };
        let sent = Instant::now();
        let job = *job_started.get_or_insert(sent);
        match exchange(&mut stream, addr, &request, timeout) {
            Ok(Answer {
                status,
                retry_after,
                ..
            }) => {
                *tally.statuses.entry(status).or_default() += 1;
                if (200..300).contains(&status) {
                    tally.ok_latencies.push(sent.elapsed().as_secs_f64());
                    tally.job_latencies.push(job.elapsed().as_secs_f64());
                    tally.ok_at.push(began.elapsed().as_secs_f64());
                    job_started = None;
                }
                if status >= 400 {
                    // Refused (503, 413): as `Retry-After` says, for clients that honour
                    // it; else half to one and a half times the backoff, so that retries
                    // spread out.
                    let pause = match retry_after.filter(|_| phase.honors_retry_after) {
                        Some(secs) => Duration::from_secs(secs),
                        None => {
                            let ms = backoff.as_millis() as u64;
                            Duration::from_millis(draw.within(ms / 2, ms * 3 / 2 + 1))
                        }
                    };
                    thread::sleep(pause.min(deadline.saturating_duration_since(Instant::now())));
                }
            }
            Err(_) => {
                tally.errors += 1;
                stream = None;
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
    tally
}

/// Sends one request on the connection (opened if need be) and reads the answer. The
/// connection is dropped when the server closes it or anything fails. A kept-alive
/// connection that turns out closed before any answer (the server times out idle ones,
/// after 5 s in the example) is replaced and the request sent again, as browsers and
/// hyper's client do.
fn exchange(
    stream: &mut Option<BufReader<TcpStream>>,
    addr: SocketAddr,
    request: &Request<'_>,
    timeout: Duration,
) -> std::io::Result<Answer> {
    let reused = stream.is_some();
    match exchange_once(stream, addr, request, timeout) {
        Err(error) if reused && is_stale(&error) => {
            *stream = None;
            exchange_once(stream, addr, request, timeout)
        }
        other => other,
    }
}

/// Whether `error` says the connection was closed before anything was answered.
fn is_stale(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        error.kind(),
        BrokenPipe | ConnectionAborted | ConnectionReset | UnexpectedEof
    )
}

/// One request: its path, the priority it names, and the body it posts.
struct Request<'a> {
    path: &'a str,
    priority: Option<&'a str>,
    body: Option<&'a [u8]>,
}

fn exchange_once(
    stream: &mut Option<BufReader<TcpStream>>,
    addr: SocketAddr,
    request: &Request<'_>,
    timeout: Duration,
) -> std::io::Result<Answer> {
    let Request {
        path,
        priority,
        body,
    } = *request;
    if stream.is_none() {
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        tcp.set_nodelay(true)?;
        *stream = Some(BufReader::new(tcp));
    }
    let reader = stream.as_mut().expect("connected above");
    reader.get_ref().set_read_timeout(Some(timeout))?;
    reader.get_ref().set_write_timeout(Some(timeout))?;
    // A body waits for `100 Continue`, as curl's uploads do: a server that refuses the
    // request answers at once, and the body is never sent.
    let priority = priority
        .map(|p| format!("x-priority: {p}\r\n"))
        .unwrap_or_default();
    let head = match body {
        Some(body) => format!(
            "POST {path} HTTP/1.1\r\nhost: load\r\n{priority}content-type: application/json\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
            body.len()
        ),
        None => format!("GET {path} HTTP/1.1\r\nhost: load\r\n{priority}\r\n"),
    };
    reader.get_mut().write_all(head.as_bytes())?;
    let mut answer = read_response(reader)?;
    if let Some(body) = body {
        if answer.status == 100 {
            reader.get_mut().write_all(body)?;
            answer = read_response(reader)?;
        } else {
            answer.close = true; // the body was announced but not sent
        }
    }
    if answer.close {
        *stream = None;
    }
    Ok(answer)
}

/// One response's status, whether the server closes the connection after it, and its
/// `Retry-After` in seconds.
struct Answer {
    status: u16,
    close: bool,
    retry_after: Option<u64>,
}

/// Reads one response, body included (by length or chunked).
fn read_response(reader: &mut BufReader<TcpStream>) -> std::io::Result<Answer> {
    let broken = |what: &str| std::io::Error::other(what.to_owned());
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = crate::probe::status_of(&line).ok_or_else(|| broken("no status line"))?;
    let (mut length, mut chunked, mut close) = (0u64, false, false);
    let mut retry_after = None;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(broken("closed in the headers"));
        }
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(value) = header.strip_prefix("content-length:") {
            length = value.trim().parse().map_err(|_| broken("bad length"))?;
        } else if header.starts_with("transfer-encoding:") && header.contains("chunked") {
            chunked = true;
        } else if header.starts_with("connection:") && header.contains("close") {
            close = true;
        } else if let Some(value) = header.strip_prefix("retry-after:") {
            retry_after = value.trim().parse().ok();
        }
    }
    let answer = Answer {
        status,
        close: close && status != 100,
        retry_after,
    };
    if status == 100 {
        return Ok(answer);
    }
    if !chunked {
        skip(reader, length)?;
        return Ok(answer);
    }
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = u64::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .map_err(|_| broken("bad chunk size"))?;
        skip(reader, size + 2)?; // the chunk and its CRLF
        if size == 0 {
            return Ok(answer);
        }
    }
}

fn skip(reader: &mut impl Read, bytes: u64) -> std::io::Result<()> {
    let copied = std::io::copy(&mut reader.take(bytes), &mut std::io::sink())?;
    if copied == bytes {
        Ok(())
    } else {
        Err(std::io::Error::other("closed in the body"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<'_> {
        Request {
            path,
            priority: None,
            body: None,
        }
    }

    #[test]
    fn draws_spread_and_repeat() {
        let mut a = Draw(7);
        let mut b = Draw(7);
        let xs: Vec<u64> = (0..1000).map(|_| a.within(0, 10)).collect();
        assert!(xs.iter().all(|x| *x < 10));
        assert!((0..10).all(|v| xs.contains(&v)));
        assert_eq!(xs, (0..1000).map(|_| b.within(0, 10)).collect::<Vec<_>>());
    }

    #[test]
    fn reads_length_and_chunked_answers_from_a_real_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            for answer in [
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello".as_bytes(),
                b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            ] {
                let _ = socket.read(&mut request).unwrap();
                socket.write_all(answer).unwrap();
            }
        });
        let mut stream = None;
        let timeout = Duration::from_secs(5);
        assert_eq!(
            exchange(&mut stream, addr, &get("/a"), timeout)
                .unwrap()
                .status,
            200
        );
        assert!(stream.is_some(), "kept alive");
        assert_eq!(
            exchange(&mut stream, addr, &get("/b"), timeout)
                .unwrap()
                .status,
            503
        );
        assert!(stream.is_none(), "closed as the server said");
        server.join().unwrap();
    }

    #[test]
    fn a_kept_alive_connection_closed_while_idle_is_replaced() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = thread::spawn(move || {
            let mut request = [0u8; 1024];
            // Answers once, then closes as if idle too long; the next connection is answered.
            for _ in 0..2 {
                let (mut socket, _) = listener.accept().unwrap();
                let _ = socket.read(&mut request).unwrap();
                socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .unwrap();
            }
        });
        let mut stream = None;
        let timeout = Duration::from_secs(5);
        for _ in 0..2 {
            let answer = exchange(&mut stream, addr, &get("/a"), timeout).unwrap();
            assert_eq!(answer.status, 200);
            thread::sleep(Duration::from_millis(50));
        }
        server.join().unwrap();
    }
}
