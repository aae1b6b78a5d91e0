//! What the example servers share: logging, the metrics recorder, the listen address, the
//! routes (see the README's "The example server"), hardened serving with a graceful
//! shutdown (`serve.rs`), and how they exit. `server` puts tower-admission in front of the
//! routes; `compare` puts tower's own limits (or nothing) there, for side-by-side runs.
//!
//! Exit status: 2 for a bad configuration, found before the port is bound; 1 for any other
//! failure.

mod serve;

pub use serve::{Listener, request_timeout, serve};

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use axum::{
    Extension, Json, Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Query, rejection::QueryRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;
use serde::Deserialize;
use serde_json::{Value, json};
use tower_admission::Reservation;

/// `/work` allocates at most this much (1 GiB) and holds it at most this long.
const MAX_WORK_KIB: u64 = 1 << 20;
const MAX_WORK_MS: u64 = 60_000;
/// `/stream` sends at most this many chunks of at most this size.
const MAX_STREAM_CHUNK_KIB: u64 = 64 << 10;
const MAX_STREAM_CHUNKS: u64 = 100_000;
/// `/ingest` reads at most this many body bytes.
const MAX_INGEST_BYTES: usize = 64 << 20;
const PAGE: usize = 4096;

/// What every example server does first: logs, then the metrics recorder (before anything
/// describes a metric), then its address. Fails with the exit code to return: 2 for a bad
/// `LISTEN_ADDR`.
pub fn start() -> Result<(PrometheusHandle, SocketAddr), ExitCode> {
    init_tracing();
    let metrics = install_metrics().map_err(|error| failure(&error))?;
    let addr = listen_addr().map_err(|error| config_error(&error))?;
    Ok((metrics, addr))
}

/// Logs to stderr (`RUST_LOG`, default `info`).
fn init_tracing() {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
}

/// `LISTEN_ADDR`, default `127.0.0.1:3000`.
fn listen_addr() -> Result<SocketAddr, String> {
    let listen = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    listen.parse().map_err(|_| {
        format!("LISTEN_ADDR={listen:?} is not valid: expected an address such as 127.0.0.1:3000")
    })
}

/// The example's routes, without any limit in front of them; `/metrics` answers what
/// `scrape` renders.
pub fn routes(scrape: impl Fn() -> String + Clone + Send + Sync + 'static) -> Router {
    Router::new()
        .route("/work", get(work))
        .route(
            "/ingest",
            post(ingest).layer(DefaultBodyLimit::max(MAX_INGEST_BYTES)),
        )
        .route("/stream", get(stream))
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(move || std::future::ready(scrape())))
}

/// Exits on a bad configuration: status 2.
pub fn config_error(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Exits on any other failure: status 1.
pub fn failure(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}

/// Installs the Prometheus recorder, before anything describes a metric.
fn install_metrics() -> Result<PrometheusHandle, String> {
    let failed = |e: metrics_exporter_prometheus::BuildError| {
        format!("cannot install the metrics recorder: {e}")
    };
    // Explicit buckets make the queue waits (all and by priority) Prometheus histograms
    // rather than summaries. Gauges not set for a while are dropped: a cost class that gave
    // its slot up (see the guide's metrics) stops being published.
    PrometheusBuilder::new()
        .idle_timeout(
            MetricKindMask::GAUGE,
            Some(std::time::Duration::from_secs(30)),
        )
        .set_buckets_for_metric(
            Matcher::Suffix("queue_wait_seconds".into()),
            &[
                0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        )
        .map_err(failed)?
        .install_recorder()
        .map_err(failed)
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

/// A parsed JSON tree takes up to this many times its text (measured on `load/`'s bodies:
/// small objects of a few fields).
const TREE_PER_BODY_BYTE: u64 = 16;

/// Parses a JSON body and answers a summary of it. Behind tower-admission, it reserves the
/// tree's memory before building it.
async fn ingest(reservation: Option<Extension<Reservation>>, body: Bytes) -> Response {
    if let Some(Extension(reservation)) = reservation {
        let tree = body.len() as u64 * TREE_PER_BODY_BYTE;
        if let Err(rejection) = reservation.reserve(tree).await {
            let retry = [(header::RETRY_AFTER, "1")];
            let text = format!("overloaded: no memory for the parsed body ({rejection:?})\n");
            return (StatusCode::SERVICE_UNAVAILABLE, retry, text).into_response();
        }
    }
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
