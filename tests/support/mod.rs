//! A real axum server on 127.0.0.1 with a memory source under the test's control (its
//! reading set by hand, its refresh made to fail or hang on demand), and a raw HTTP/1.1
//! client that can hang up whenever a test says so.
#![allow(dead_code, unreachable_pub)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path, State},
    routing::{get, post},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::Semaphore,
};
use tower_admission::{
    Admission, AdmissionConfig, ManualMemory, MemoryError, MemorySource, Snapshot,
};

pub const MIB: u64 = 1 << 20;

/// What the handlers share with the test.
pub struct Probe {
    /// `/hold/{id}` handlers wait here for a permit the test adds.
    pub gate: Semaphore,
    /// `/stream` waits here between its first and last chunk.
    pub stream_gate: Semaphore,
    /// The ids of `/hold` requests, in the order their handlers started.
    pub started: Mutex<Vec<u32>>,
    running: AtomicUsize,
    /// The most handlers seen running at once.
    pub peak: AtomicUsize,
}

impl Default for Probe {
    fn default() -> Self {
        Self {
            gate: Semaphore::new(0),
            stream_gate: Semaphore::new(0),
            started: Mutex::default(),
            running: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }
}

impl Probe {
    pub fn release(&self, n: usize) {
        self.gate.add_permits(n);
    }

    pub fn started(&self) -> Vec<u32> {
        self.started.lock().unwrap().clone()
    }
}

/// What the memory source's refresh does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    #[default]
    None,
    /// Refresh returns an error.
    Fail,
    /// Refresh blocks (the sampler thread with it) until the fault changes.
    Hang,
}

/// A memory source whose reading is set by hand and whose refresh fails or hangs on demand.
#[derive(Debug, Clone, Default)]
pub struct FaultyMemory {
    reading: ManualMemory,
    fault: Arc<(Mutex<Fault>, Condvar)>,
}

impl FaultyMemory {
    pub fn set(&self, bytes: u64) {
        self.reading.set(bytes);
    }

    pub fn set_fault(&self, fault: Fault) {
        *self.fault.0.lock().unwrap() = fault;
        self.fault.1.notify_all();
    }
}

impl MemorySource for FaultyMemory {
    fn allocated_bytes(&self) -> u64 {
        self.reading.allocated_bytes()
    }

    fn refresh(&self) -> Result<(), MemoryError> {
        let (fault, changed) = &*self.fault;
        let mut fault = fault.lock().unwrap();
        while *fault == Fault::Hang {
            fault = changed.wait(fault).unwrap();
        }
        match *fault {
            Fault::Fail => Err(MemoryError::Read {
                what: "the test source",
                reason: "injected fault".into(),
            }),
            _ => Ok(()),
        }
    }

    fn name(&self) -> &'static str {
        "faulty (test)"
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub admission: Admission,
    pub memory: FaultyMemory,
    pub probe: Arc<Probe>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Let a sampler stuck in a hanging refresh go.
        self.memory.set_fault(Fault::None);
    }
}

impl TestServer {
    /// Serves `config` (with a 5 ms sample interval) with memory reading `memory` bytes.
    pub async fn start(config: AdmissionConfig, memory: u64) -> Self {
        Self::start_with(config, memory, |routes, admission| {
            routes.layer(admission.layer())
        })
        .await
    }

    /// As [`start`](Self::start), with the layers wired by `wire`.
    pub async fn start_with(
        config: AdmissionConfig,
        memory_bytes: u64,
        wire: impl FnOnce(Router, &Admission) -> Router,
    ) -> Self {
        let memory = FaultyMemory::default();
        memory.set(memory_bytes);
        let config = config.sample_interval(Duration::from_millis(5));
        let admission = Admission::with_memory_source(config, memory.clone()).unwrap();
        let probe = Arc::new(Probe::default());
        let app = wire(routes(probe.clone()), &admission);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self {
            addr,
            admission,
            memory,
            probe,
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.admission.snapshot()
    }

    /// Waits (at most 10 s) until `condition` holds for the live figures.
    pub async fn wait_for(&self, what: &str, condition: impl Fn(&Snapshot) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let snapshot = self.snapshot();
            if condition(&snapshot) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {snapshot:?}"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Waits until nothing is in flight or queued and nothing is reserved.
    pub async fn wait_idle(&self) {
        self.wait_for("all figures back to zero", |s| {
            s.in_flight == 0 && s.queued == 0 && s.charged_bytes == 0
        })
        .await;
    }

    /// Sends `GET path` on a new connection, without reading the answer.
    pub async fn open(&self, path: &str) -> TcpStream {
        self.open_raw(&format!(
            "GET {path} HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n"
        ))
        .await
    }

    pub async fn open_raw(&self, request: &str) -> TcpStream {
        let mut stream = TcpStream::connect(self.addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        stream
    }

    /// `GET path` on a new connection, answered in full.
    pub async fn get(&self, path: &str) -> Reply {
        read_reply(self.open(path).await).await
    }
}

fn routes(probe: Arc<Probe>) -> Router {
    Router::new()
        .route("/hold/{id}", get(hold))
        .route("/fast", get(|| async { "fast\n" }))
        .route("/health", get(|| async { "ok\n" }))
        .route("/panic", get(panics))
        .route("/stream", get(stream))
        .route("/chunks/{n}", get(chunks))
        .route(
            "/ingest",
            post(|body: Bytes| async move { format!("{}\n", body.len()) }),
        )
        .with_state(probe)
}

async fn panics() -> &'static str {
    panic!("handler panicked on purpose")
}

async fn hold(State(probe): State<Arc<Probe>>, Path(id): Path<u32>) -> String {
    probe.started.lock().unwrap().push(id);
    let running = probe.running.fetch_add(1, Ordering::SeqCst) + 1;
    probe.peak.fetch_max(running, Ordering::SeqCst);
    // Counted down on every path, including a client that hangs up meanwhile.
    struct Leave<'a>(&'a AtomicUsize);
    impl Drop for Leave<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let _leave = Leave(&probe.running);
    probe.gate.acquire().await.unwrap().forget();
    format!("held {id}\n")
}

/// One chunk, then a wait on `stream_gate`, then a last chunk.
async fn stream(State(probe): State<Arc<Probe>>) -> Body {
    let frames = futures_util::stream::unfold(0u8, move |sent| {
        let probe = probe.clone();
        async move {
            match sent {
                0 => Some((Ok::<_, std::io::Error>(Bytes::from_static(b"first\n")), 1)),
                1 => {
                    probe.stream_gate.acquire().await.unwrap().forget();
                    Some((Ok(Bytes::from_static(b"last\n")), 2))
                }
                _ => None,
            }
        }
    });
    Body::from_stream(frames)
}

/// `n` chunks of 64 KiB, as fast as the client takes them.
async fn chunks(Path(n): Path<usize>) -> Body {
    let chunk = Bytes::from(vec![b'x'; 64 << 10]);
    Body::from_stream(futures_util::stream::iter(
        std::iter::repeat_n(chunk, n).map(Ok::<_, std::io::Error>),
    ))
}

/// Serves the router `app` makes (on the runtime, so that what it starts runs there) on a
/// runtime of two workers of its own, as a 2-core server would; returns the address and a
/// flag that stops it.
pub fn serve_on_two_workers(
    app: impl FnOnce() -> Router + Send + 'static,
) -> (SocketAddr, Arc<AtomicBool>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let server = axum::serve(listener, app());
            tokio::select! {
                _ = server => {}
                _ = async {
                    while !stopped.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                } => {}
            }
        });
    });
    (addr, stop)
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a `connection: close` response to its end.
pub async fn read_reply(mut stream: TcpStream) -> Reply {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut raw))
        .await
        .expect("the server answered within 20 s")
        .expect("the connection could be read");
    parse_reply(&raw)
        .unwrap_or_else(|| panic!("not an HTTP response: {:?}", String::from_utf8_lossy(&raw)))
}

/// Reads a response's head (and what came with it) from a connection that may stay open.
pub async fn read_reply_head(stream: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !raw.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        let read = tokio::time::timeout(left, stream.read(&mut buf))
            .await
            .expect("the server answered within 20 s")
            .expect("the connection could be read");
        assert!(
            read > 0,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(&raw)
        );
        raw.extend_from_slice(&buf[..read]);
    }
    parse_reply(&raw).expect("an HTTP response")
}

pub fn parse_reply(raw: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some(Reply {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}
