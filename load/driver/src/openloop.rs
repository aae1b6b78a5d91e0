//! Open-loop clients: jobs arrive at a rate whether or not earlier ones were answered, as
//! real overload does. Each attempt opens its own connection, writes its whole request
//! before it reads, and gives up at its deadline (closing the connection, as a client that
//! has left does); a job retries by its policy. A thread per job, with a small stack.

use crate::client::Draw;
use std::{
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{Arc, mpsc},
    thread,
    time::{Duration, Instant},
};

/// How arrivals are spaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    /// Exponential gaps: independent clients.
    Poisson,
    /// Even gaps.
    Constant,
}

/// What a job does after an attempt that was not a 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing: the job fails.
    None,
    /// Up to 3 more attempts: after a 503, as `Retry-After` says, capped at 1 s, with
    /// ±25 % jitter; after a timeout or an error, at once.
    Polite,
    /// Up to 3 more attempts, each at once.
    Storm,
}

impl Retry {
    pub fn as_str(self) -> &'static str {
        match self {
            Retry::None => "no retries",
            Retry::Polite => "Retry-After (capped at 1 s, jittered)",
            Retry::Storm => "at once (storm)",
        }
    }

    fn attempts(self) -> u32 {
        match self {
            Retry::None => 1,
            Retry::Polite | Retry::Storm => 4,
        }
    }

    /// How long to wait before the next attempt, after `outcome`; `draw` in [0, 1).
    fn pause(self, outcome: &Attempt, draw: f64) -> Duration {
        match (self, outcome) {
            (Retry::Polite, Attempt::Refused { retry_after, .. }) => {
                let secs = retry_after.unwrap_or(1).clamp(0, 1) as f64;
                Duration::from_secs_f64(secs * (0.75 + 0.5 * draw))
            }
            _ => Duration::ZERO,
        }
    }
}

/// One stream of jobs: segments of (duration, jobs per second), one after another.
#[derive(Debug, Clone)]
pub struct Load {
    pub path: String,
    /// A JSON body of about this many bytes (`POST`), or none (`GET`).
    pub body: Option<u64>,
    pub segments: Vec<(Duration, f64)>,
    pub arrivals: Arrivals,
    pub deadline: Duration,
    pub retry: Retry,
}

/// How one attempt ended, `at` seconds after the load began.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Attempt {
    /// A 2xx within the deadline, after `latency` seconds.
    Served { at: f64, latency: f64 },
    /// A 503 (or another 4xx/5xx) within the deadline.
    Refused {
        at: f64,
        status: u16,
        retry_after: Option<u64>,
    },
    /// No answer by the deadline: the client closed the connection and left.
    TimedOut { at: f64 },
    /// The connection failed (refused, reset, closed early).
    Failed { at: f64 },
}

impl Attempt {
    pub fn at(&self) -> f64 {
        match *self {
            Attempt::Served { at, .. }
            | Attempt::Refused { at, .. }
            | Attempt::TimedOut { at }
            | Attempt::Failed { at } => at,
        }
    }
}

/// Every attempt of a load, and how many jobs arrived.
#[derive(Debug, Default)]
pub struct Outcome {
    pub jobs: u64,
    pub attempts: Vec<Attempt>,
    /// Seconds the arrivals lasted.
    pub seconds: f64,
}

impl Outcome {
    /// Attempts of a kind, per second over `from..to` (seconds after the start).
    pub fn rate(&self, from: f64, to: f64, kind: impl Fn(&Attempt) -> bool) -> f64 {
        let n = self
            .attempts
            .iter()
            .filter(|a| (from..to).contains(&a.at()) && kind(a))
            .count();
        n as f64 / (to - from)
    }

    /// Served attempts per second, in whole seconds from 0 to `end`.
    pub fn served_per_second(&self, end: usize) -> Vec<u64> {
        let mut per = vec![0; end];
        for attempt in &self.attempts {
            if let Attempt::Served { at, .. } = attempt
                && let Some(slot) = per.get_mut(*at as usize)
            {
                *slot += 1;
            }
        }
        per
    }

    /// The `q` quantile of served latencies, in seconds (NaN if none).
    pub fn served_quantile(&self, q: f64) -> f64 {
        let mut latencies: Vec<f64> = self
            .attempts
            .iter()
            .filter_map(|a| match a {
                Attempt::Served { latency, .. } => Some(*latency),
                _ => None,
            })
            .collect();
        latencies.sort_by(f64::total_cmp);
        crate::client::quantile(&latencies, q)
    }
}

/// The arrival times of `load`, in seconds after its start; `seed` picks the draws.
pub fn arrival_times(load: &Load, seed: u64) -> Vec<f64> {
    let mut draw = Draw(seed | 1);
    let mut times = Vec::new();
    let mut start = 0.0;
    for (duration, rate) in &load.segments {
        let end = start + duration.as_secs_f64();
        if *rate > 0.0 {
            let (mut t, mut k) = (start, 0.0);
            loop {
                k += 1.0;
                t = match load.arrivals {
                    // From the segment's start, not summed: no drift.
                    Arrivals::Constant => start + k / rate,
                    // Inverse transform: -ln(U) / rate, U in (0, 1].
                    Arrivals::Poisson => t - (1.0 - draw.unit()).ln() / rate,
                };
                if t >= end - 1e-9 {
                    break;
                }
                times.push(t);
            }
        }
        start = end;
    }
    times
}

/// Runs `load` against `addr`: a job for each arrival, each in a thread of its own.
pub fn run(addr: SocketAddr, load: &Load, seed: u64) -> Outcome {
    let request = Arc::new(request_bytes(load));
    let times = arrival_times(load, seed);
    let began = Instant::now();
    let (sender, receiver) = mpsc::channel();
    let mut threads = Vec::with_capacity(times.len());
    for (index, at) in times.iter().enumerate() {
        let due = began + Duration::from_secs_f64(*at);
        thread::sleep(due.saturating_duration_since(Instant::now()));
        let (request, job_sender, load) = (Arc::clone(&request), sender.clone(), load.clone());
        let job = move || {
            let mut draw = Draw(seed ^ (index as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            for n in 0..load.retry.attempts() {
                let outcome = attempt(addr, &request, load.deadline, began);
                let _ = job_sender.send(outcome);
                if matches!(outcome, Attempt::Served { .. }) || n + 1 == load.retry.attempts() {
                    break;
                }
                thread::sleep(load.retry.pause(&outcome, draw.unit()));
            }
        };
        match thread::Builder::new().stack_size(128 << 10).spawn(job) {
            Ok(handle) => threads.push(handle),
            Err(_) => {
                let at = began.elapsed().as_secs_f64();
                let _ = sender.send(Attempt::Failed { at });
            }
        }
    }
    let seconds = began.elapsed().as_secs_f64();
    drop(sender);
    for handle in threads {
        let _ = handle.join();
    }
    Outcome {
        jobs: times.len() as u64,
        attempts: receiver.into_iter().collect(),
        seconds,
    }
}

fn request_bytes(load: &Load) -> Vec<u8> {
    match load.body {
        Some(bytes) => {
            let body = crate::oha::json_body(bytes);
            let mut request = format!(
                "POST {} HTTP/1.1\r\nhost: load\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                load.path,
                body.len()
            )
            .into_bytes();
            request.extend_from_slice(body.as_bytes());
            request
        }
        None => format!(
            "GET {} HTTP/1.1\r\nhost: load\r\nconnection: close\r\n\r\n",
            load.path
        )
        .into_bytes(),
    }
}

/// One attempt on a connection of its own, abandoned at `deadline` after it began.
fn attempt(addr: SocketAddr, request: &[u8], deadline: Duration, began: Instant) -> Attempt {
    let start = Instant::now();
    let until = start + deadline;
    let at = || began.elapsed().as_secs_f64();
    let answer = exchange(addr, request, until);
    match answer {
        Ok((status, _)) if (200..300).contains(&status) => Attempt::Served {
            at: at(),
            latency: start.elapsed().as_secs_f64(),
        },
        Ok((status, retry_after)) => Attempt::Refused {
            at: at(),
            status,
            retry_after,
        },
        Err(error) if matches!(error.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
            Attempt::TimedOut { at: at() }
        }
        Err(_) if Instant::now() >= until => Attempt::TimedOut { at: at() },
        Err(_) => Attempt::Failed { at: at() },
    }
}

/// Writes `request`, reads the answer's status and `Retry-After`, and its body to the end;
/// every step within `until`.
fn exchange(
    addr: SocketAddr,
    request: &[u8],
    until: Instant,
) -> std::io::Result<(u16, Option<u64>)> {
    let left = || {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(std::io::Error::from(ErrorKind::TimedOut))
        } else {
            Ok(left)
        }
    };
    let mut stream = TcpStream::connect_timeout(&addr, left()?)?;
    stream.set_nodelay(true)?;
    for chunk in request.chunks(256 << 10) {
        stream.set_write_timeout(Some(left()?))?;
        stream.write_all(chunk)?;
    }
    let mut head = Vec::with_capacity(512);
    let mut buffer = [0u8; 16 << 10];
    let end = loop {
        stream.set_read_timeout(Some(left()?))?;
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buffer[..read]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    let status = crate::probe::status_of(text.lines().next().unwrap_or(""))
        .ok_or_else(|| std::io::Error::other("no status line"))?;
    let header = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().parse::<u64>().ok())
    };
    let length = header("content-length:");
    let retry_after = header("retry-after:");
    let mut body = (head.len() - end) as u64;
    // To the end of the body (or of the connection: `connection: close`).
    while length.is_none_or(|length| body < length) {
        stream.set_read_timeout(Some(left()?))?;
        match stream.read(&mut buffer)? {
            0 if length.is_none() => break,
            0 => return Err(ErrorKind::UnexpectedEof.into()),
            read => body += read as u64,
        }
    }
    Ok((status, retry_after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(segments: Vec<(Duration, f64)>, arrivals: Arrivals) -> Load {
        Load {
            path: "/".into(),
            body: None,
            segments,
            arrivals,
            deadline: Duration::from_secs(1),
            retry: Retry::None,
        }
    }

    #[test]
    fn arrivals_come_at_the_rate_whatever_the_answers() {
        let constant = load(vec![(Duration::from_secs(2), 100.0)], Arrivals::Constant);
        let times = arrival_times(&constant, 1);
        assert_eq!(times.len(), 199, "every 10 ms for 2 s, the last at 1.99 s");
        assert!((times[1] - times[0] - 0.01).abs() < 1e-9);
        let poisson = load(vec![(Duration::from_secs(20), 100.0)], Arrivals::Poisson);
        let n = arrival_times(&poisson, 7).len() as f64;
        assert!(
            (1900.0..2100.0).contains(&n),
            "{n} arrivals for 2,000 expected"
        );
        assert_eq!(
            arrival_times(&poisson, 7),
            arrival_times(&poisson, 7),
            "seeded"
        );
    }

    #[test]
    fn segments_follow_one_another() {
        let spike = load(
            vec![
                (Duration::from_secs(1), 10.0),
                (Duration::from_secs(1), 100.0),
                (Duration::from_secs(1), 0.0),
            ],
            Arrivals::Constant,
        );
        let times = arrival_times(&spike, 1);
        let in_second = |s: f64| times.iter().filter(|t| (s..s + 1.0).contains(*t)).count();
        assert_eq!((in_second(0.0), in_second(1.0), in_second(2.0)), (9, 99, 0));
    }

    #[test]
    fn retries_wait_as_their_policy_says() {
        let refused = Attempt::Refused {
            at: 0.0,
            status: 503,
            retry_after: Some(5),
        };
        let timed_out = Attempt::TimedOut { at: 0.0 };
        assert_eq!(Retry::None.attempts(), 1);
        assert_eq!(Retry::Storm.attempts(), 4);
        assert_eq!(Retry::Storm.pause(&refused, 0.5), Duration::ZERO);
        // Capped at 1 s, jittered ±25 %.
        assert_eq!(
            Retry::Polite.pause(&refused, 0.0),
            Duration::from_millis(750)
        );
        assert_eq!(Retry::Polite.pause(&refused, 0.5), Duration::from_secs(1));
        assert_eq!(Retry::Polite.pause(&timed_out, 0.5), Duration::ZERO);
    }

    #[test]
    fn goodput_counts_only_answers_within_the_deadline() {
        let outcome = Outcome {
            jobs: 4,
            attempts: vec![
                Attempt::Served {
                    at: 0.2,
                    latency: 0.1,
                },
                Attempt::Served {
                    at: 1.5,
                    latency: 0.3,
                },
                Attempt::TimedOut { at: 1.7 },
                Attempt::Refused {
                    at: 1.8,
                    status: 503,
                    retry_after: None,
                },
            ],
            seconds: 2.0,
        };
        assert_eq!(outcome.served_per_second(3), vec![1, 1, 0]);
        let served = |a: &Attempt| matches!(a, Attempt::Served { .. });
        assert_eq!(outcome.rate(0.0, 2.0, served), 1.0);
        assert_eq!(outcome.rate(1.0, 2.0, |a| !served(a)), 2.0);
        assert_eq!(outcome.served_quantile(1.0), 0.3);
    }

    /// A real exchange with a server that answers after a while: within the deadline it is
    /// served, past it the client has left.
    #[test]
    fn an_attempt_is_abandoned_at_its_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let mut stream = stream.unwrap();
                let mut buffer = [0; 1024];
                let _ = stream.read(&mut buffer);
                thread::sleep(Duration::from_millis(if n == 0 { 10 } else { 400 }));
                let _ = stream.write_all(
                    b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 2\r\ncontent-length: 2\r\n\r\nno",
                );
            }
        });
        let request = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
        let began = Instant::now();
        match attempt(addr, request, Duration::from_millis(200), began) {
            Attempt::Refused {
                status: 503,
                retry_after: Some(2),
                ..
            } => {}
            other => panic!("{other:?}"),
        }
        let timed_out = attempt(addr, request, Duration::from_millis(200), began);
        assert!(
            matches!(timed_out, Attempt::TimedOut { .. }),
            "{timed_out:?}"
        );
    }
}
