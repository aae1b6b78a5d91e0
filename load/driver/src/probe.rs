//! What watches a run: a `/metrics` sampler, a `/health` heartbeat on its own connection, and
//! the server's RSS from `/proc`.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

/// One scrape of `/metrics`, plus RSS.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub t: f64,
    pub memory: f64,
    pub budget: f64,
    pub in_flight: f64,
    /// The live concurrency limit.
    pub limit: f64,
    pub queued: f64,
    pub reserved: f64,
    /// Held by waiting and by open connections.
    pub held: f64,
    /// Connections open, as the layer's listener counts them.
    pub connections: f64,
    pub admitted: f64,
    pub rejected: f64,
    pub rss: f64,
    /// Bodies cut off for being too slow, by direction.
    pub cut_off_request: f64,
    pub cut_off_response: f64,
}

/// The status code of an HTTP/1.1 status line (`HTTP/1.1 200 OK`).
pub fn status_of(line: &str) -> Option<u16> {
    line.split(' ').nth(1)?.parse().ok()
}

/// One `GET` on a connection of its own; the status and body.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: load\r\nconnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let status = status_of(&raw).unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The value of the first line of Prometheus text that starts with `name` (labels included)
/// and the sum over every line of a labelled family.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.split([' ', '{']).next() == Some(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.trim().parse().ok())
}

/// The value of the series written exactly `series` (a name with its labels).
fn series(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<f64>().ok())
        .sum()
}

fn rss_bytes(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib * 1024.0)
}

pub fn parse_sample(t: f64, text: &str, rss: f64) -> Sample {
    Sample {
        t,
        memory: metric(text, "admission_memory_bytes")
            .or_else(|| metric(text, "jemalloc_allocated_bytes"))
            .unwrap_or(0.0),
        budget: metric(text, "admission_memory_budget_bytes").unwrap_or(f64::NAN),
        in_flight: metric(text, "admission_in_flight").unwrap_or(f64::NAN),
        limit: metric(text, "admission_concurrency_limit").unwrap_or(f64::NAN),
        queued: metric(text, "admission_queued").unwrap_or(f64::NAN),
        reserved: metric(text, "admission_reserved_bytes").unwrap_or(f64::NAN),
        held: metric(text, "admission_held_bytes").unwrap_or(f64::NAN),
        connections: metric(text, "admission_connections").unwrap_or(f64::NAN),
        admitted: metric(text, "admission_admitted_total").unwrap_or(f64::NAN),
        rejected: metric_sum(text, "admission_rejected_total"),
        rss,
        cut_off_request: series(text, "admission_cut_off_total{direction=\"request\"}")
            .unwrap_or(0.0),
        cut_off_response: series(text, "admission_cut_off_total{direction=\"response\"}")
            .unwrap_or(0.0),
    }
}

/// A background loop, stopped and joined by [`Watch::finish`].
pub struct Watch<T> {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<T>,
}

impl<T> Watch<T> {
    pub fn finish(self) -> T {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("a watch thread panicked")
    }
}

pub fn watch<T: Send + 'static>(f: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static) -> Watch<T> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    Watch {
        stop,
        handle: thread::spawn(move || f(flag)),
    }
}

/// Scrapes `/metrics` every `period` from `start`, on one keep-alive connection.
pub fn sampler(addr: SocketAddr, pid: u32, start: Instant, period: Duration) -> Watch<Vec<Sample>> {
    watch(move |stop| {
        let mut samples = Vec::new();
        let mut connection = None;
        while !stop.load(Ordering::Relaxed) {
            let next = Instant::now() + period;
            match kept_get(addr, &mut connection, "/metrics") {
                Ok((200, text)) => samples.push(parse_sample(
                    start.elapsed().as_secs_f64(),
                    &text,
                    rss_bytes(pid),
                )),
                Ok(_) => {}
                Err(_) => connection = None,
            }
            thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        samples
    })
}

/// `/health` latencies, one request every `period` on one keep-alive connection (reopened
/// if it breaks); a failed probe counts as `None`.
pub fn heartbeat(addr: SocketAddr, period: Duration) -> Watch<Vec<Option<f64>>> {
    watch(move |stop| {
        let mut latencies = Vec::new();
        let mut connection: Option<BufReader<TcpStream>> = None;
        while !stop.load(Ordering::Relaxed) {
            let next = Instant::now() + period;
            let began = Instant::now();
            let ok = health(addr, &mut connection).is_ok();
            if !ok {
                connection = None;
            }
            latencies.push(ok.then(|| began.elapsed().as_secs_f64()));
            thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        latencies
    })
}

fn health(addr: SocketAddr, connection: &mut Option<BufReader<TcpStream>>) -> std::io::Result<()> {
    match kept_get(addr, connection, "/health")? {
        (200, _) => Ok(()),
        (status, _) => Err(std::io::Error::other(format!("unexpected status {status}"))),
    }
}

/// One `GET` on a keep-alive connection, opened if there is none: a probe on a connection of
/// its own each time would wait in the kernel's backlog while a listener pauses accepting.
fn kept_get(
    addr: SocketAddr,
    connection: &mut Option<BufReader<TcpStream>>,
    path: &str,
) -> std::io::Result<(u16, String)> {
    if connection.is_none() {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        stream.set_nodelay(true)?;
        *connection = Some(BufReader::new(stream));
    }
    let reader = connection.as_mut().expect("connected above");
    write!(
        reader.get_mut(),
        "GET {path} HTTP/1.1\r\nhost: load\r\n\r\n"
    )?;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let status = status_of(&line)
        .ok_or_else(|| std::io::Error::other(format!("unexpected answer {line:?}")))?;
    let mut length = 0;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_text() {
        let text = "# HELP x\nadmission_in_flight 3\nadmission_rejected_total{reason=\"queue_full\",limit=\"memory\"} 2\nadmission_rejected_total{reason=\"queue_timeout\",limit=\"memory\"} 5\nadmission_memory_budget_bytes +Inf\njemalloc_allocated_bytes 1024\nadmission_cut_off_total{direction=\"request\"} 4\nadmission_cut_off_total{direction=\"response\"} 2\n";
        let s = parse_sample(1.0, text, 7.0);
        assert_eq!((s.cut_off_request, s.cut_off_response), (4.0, 2.0));
        assert_eq!(s.in_flight, 3.0);
        assert_eq!(s.rejected, 7.0);
        assert_eq!(s.memory, 1024.0);
        assert!(s.budget.is_infinite());
        assert!(s.queued.is_nan());
    }
}
