//! An axum service protected by tower-admission: the service the `load/` scripts drive.
//!
//! Run with
//!
//! ```text
//! cargo run --release --example server
//! ```
//!
//! then, from another terminal:
//!
//! ```text
//! curl 'http://127.0.0.1:3000/work?kib=1024&ms=50'      # allocate 1 MiB, hold it 50 ms
//! curl -XPOST --data '[1,2,{"a":3}]' http://127.0.0.1:3000/ingest
//! curl 'http://127.0.0.1:3000/stream?kib=64&chunks=10'  # 10 chunks of 64 KiB
//! curl http://127.0.0.1:3000/metrics
//! ```
//!
//! To see a 503, make the limits tiny and send two slow requests at once:
//!
//! ```text
//! ADMISSION_MAX_CONCURRENCY=1 ADMISSION_QUEUE_CAPACITY=0 cargo run --release --example server
//! curl 'http://127.0.0.1:3000/work?ms=2000' & curl -i 'http://127.0.0.1:3000/work'
//! ```
//!
//! Configuration comes from the `ADMISSION_*` variables (see the README) and `LISTEN_ADDR`
//! (default `127.0.0.1:3000`); `/health` and `/metrics` bypass admission unless
//! `ADMISSION_BYPASS` says otherwise. A bad configuration exits with status 2 before the
//! port is bound.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Query, rejection::QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_admission::{Admission, AdmissionConfig};

#[global_allocator]
static GLOBAL: tower_admission::Jemalloc = tower_admission::Jemalloc;

/// `/work` allocates at most this much (1 GiB) and holds it at most this long.
const MAX_WORK_KIB: u64 = 1 << 20;
const MAX_WORK_MS: u64 = 60_000;
/// `/stream` sends at most this many chunks of at most this size.
const MAX_STREAM_CHUNK_KIB: u64 = 64 << 10;
const MAX_STREAM_CHUNKS: u64 = 100_000;
/// `/ingest` reads at most this many body bytes.
const MAX_INGEST_BYTES: usize = 64 << 20;
const PAGE: usize = 4096;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // The recorder goes first, so the pool's metric descriptions reach it.
    let metrics = match install_metrics() {
        Ok(handle) => handle,
        Err(error) => return fail(&format!("cannot install the metrics recorder: {error}")),
    };
    let admission = match AdmissionConfig::default()
        .bypass(["/health", "/metrics"])
        .apply_env()
        .and_then(Admission::new)
    {
        Ok(admission) => admission,
        Err(error) => return fail(&error.to_string()),
    };
    let listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let Ok(addr) = listen.parse::<SocketAddr>() else {
        return fail(&format!(
            "LISTEN_ADDR={listen:?} is not valid: expected an address such as 127.0.0.1:3000"
        ));
    };
    println!("{admission}");

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the runtime: {error}")),
    };
    match runtime.block_on(serve(app(&admission, metrics), addr)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn install_metrics() -> Result<PrometheusHandle, metrics_exporter_prometheus::BuildError> {
    // Explicit buckets make the queue wait a Prometheus histogram rather than a summary.
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full("admission_queue_wait_seconds".into()),
            &[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )?
        .install_recorder()
}

/// The routes, with one admission pool over all of them.
fn app(admission: &Admission, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/work", get(work))
        .route(
            "/ingest",
            post(ingest).layer(DefaultBodyLimit::max(MAX_INGEST_BYTES)),
        )
        .route("/stream", get(stream))
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(move || async move { metrics.render() }))
        .layer(admission.layer())
}

async fn serve(app: Router, addr: SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, message + "\n").into_response()
}

/// Checks that `value` (named `name`) is at most `max`.
fn at_most(name: &str, value: u64, max: u64) -> Result<u64, String> {
    if value <= max {
        Ok(value)
    } else {
        Err(format!("{name}={value} is out of range: at most {max}"))
    }
}

/// The query parameters, parsed and range-checked, or what is wrong with them.
fn checked<T, U>(
    query: Result<Query<T>, QueryRejection>,
    check: impl FnOnce(T) -> Result<U, String>,
) -> Result<U, String> {
    query
        .map_err(|rejection| rejection.body_text())
        .and_then(|Query(params)| check(params))
}

#[derive(Deserialize)]
struct WorkParams {
    #[serde(default)]
    kib: u64,
    #[serde(default)]
    ms: u64,
}

/// Allocates `kib` KiB, touches every page so the memory is really used, and holds it `ms`.
async fn work(params: Result<Query<WorkParams>, QueryRejection>) -> Response {
    let (kib, ms) = match checked(params, |p| {
        Ok((
            at_most("kib", p.kib, MAX_WORK_KIB)?,
            at_most("ms", p.ms, MAX_WORK_MS)?,
        ))
    }) {
        Ok(checked) => checked,
        Err(message) => return bad_request(message),
    };
    let mut buffer = vec![0u8; kib as usize * 1024];
    for page in buffer.iter_mut().step_by(PAGE) {
        *page = 1;
    }
    tokio::time::sleep(Duration::from_millis(ms)).await;
    let touched: usize = std::hint::black_box(&buffer)
        .iter()
        .step_by(PAGE)
        .map(|b| *b as usize)
        .sum();
    format!("allocated {kib} KiB ({touched} pages) for {ms} ms\n").into_response()
}

/// Parses a JSON body and answers a summary of it.
async fn ingest(body: Bytes) -> Response {
    let value: Value = match serde_json::from_slice(&body) {
        Ok(value) => value,
        Err(error) => return bad_request(format!("the body is not valid JSON: {error}")),
    };
    let mut summary = Summary::default();
    summary.visit(&value, 1);
    Json(json!({
        "bytes": body.len(),
        "values": summary.values,
        "objects": summary.objects,
        "arrays": summary.arrays,
        "strings": summary.strings,
        "numbers": summary.numbers,
        "number_sum": summary.number_sum,
        "max_depth": summary.max_depth,
    }))
    .into_response()
}

#[derive(Default)]
struct Summary {
    values: u64,
    objects: u64,
    arrays: u64,
    strings: u64,
    numbers: u64,
    number_sum: f64,
    max_depth: u64,
}

impl Summary {
    fn visit(&mut self, value: &Value, depth: u64) {
        self.values += 1;
        self.max_depth = self.max_depth.max(depth);
        match value {
            Value::Object(map) => {
                self.objects += 1;
                map.values().for_each(|v| self.visit(v, depth + 1));
            }
            Value::Array(items) => {
                self.arrays += 1;
                items.iter().for_each(|v| self.visit(v, depth + 1));
            }
            Value::String(_) => self.strings += 1,
            Value::Number(n) => {
                self.numbers += 1;
                self.number_sum += n.as_f64().unwrap_or(0.0);
            }
            Value::Bool(_) | Value::Null => {}
        }
    }
}

#[derive(Deserialize)]
struct StreamParams {
    #[serde(default = "default_chunk_kib")]
    kib: u64,
    #[serde(default = "default_chunks")]
    chunks: u64,
    #[serde(default = "default_pause_ms")]
    ms: u64,
}

fn default_chunk_kib() -> u64 {
    64
}
fn default_chunks() -> u64 {
    16
}
fn default_pause_ms() -> u64 {
    10
}

/// Streams `chunks` chunks of `kib` KiB, `ms` apart. The admission permit is held until the
/// last chunk is sent (or the client goes away).
async fn stream(params: Result<Query<StreamParams>, QueryRejection>) -> Response {
    let (kib, chunks, ms) = match checked(params, |p| {
        Ok((
            at_most("kib", p.kib, MAX_STREAM_CHUNK_KIB)?,
            at_most("chunks", p.chunks, MAX_STREAM_CHUNKS)?,
            at_most("ms", p.ms, MAX_WORK_MS)?,
        ))
    }) {
        Ok(checked) => checked,
        Err(message) => return bad_request(message),
    };
    let chunk_bytes = kib as usize * 1024;
    let frames = futures_util::stream::unfold(0u64, move |sent| async move {
        if sent == chunks {
            return None;
        }
        if sent > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        let chunk = Bytes::from(vec![b'x'; chunk_bytes]);
        Some((Ok::<_, std::convert::Infallible>(chunk), sent + 1))
    });
    Body::from_stream(frames).into_response()
}
