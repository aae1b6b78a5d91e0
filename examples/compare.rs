//! The example service behind tower's own limits, or none, for side-by-side comparisons with
//! `server` (which `load/run.sh` drives both of). Run with
//!
//! ```text
//! LIMITER=tower TOWER_CONCURRENCY=64 cargo run --release --example compare
//! LIMITER=none cargo run --release --example compare
//! ```
//!
//! `LIMITER=tower` wires `LoadShed` + `GlobalConcurrencyLimit` the correct, global way: one
//! semaphore shared by every route (axum's `Router::layer` wraps each route separately, so a
//! plain `ConcurrencyLimitLayer` would give each route its own), and a `HandleErrorLayer` that
//! answers `Overloaded` with 503 + `Retry-After`. `/health` and `/metrics` stay outside the
//! limit, as the admission server bypasses them. `/metrics` adds `jemalloc_allocated_bytes`,
//! sampled like the admission layer samples it, so memory can be compared.

use std::{process::ExitCode, time::Duration};

use axum::{
    BoxError, Router,
    error_handling::HandleErrorLayer,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use tower::{ServiceBuilder, limit::GlobalConcurrencyLimitLayer, load_shed::LoadShedLayer};
use tower_admission::{JemallocMemory, MemorySource};

mod common;

#[global_allocator]
static GLOBAL: tower_admission::Jemalloc = tower_admission::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let (metrics, addr) = match common::start() {
        Ok(started) => started,
        Err(code) => return code,
    };
    let limiter = std::env::var("LIMITER").unwrap_or_else(|_| "tower".into());
    let app = match limiter.as_str() {
        "none" => common::routes(scrape(&metrics)),
        "tower" => {
            let concurrency = std::env::var("TOWER_CONCURRENCY").unwrap_or_else(|_| "256".into());
            let Ok(concurrency) = concurrency.parse::<usize>() else {
                return common::config_error(&format!(
                    "TOWER_CONCURRENCY={concurrency:?} is not valid: expected an integer >= 1"
                ));
            };
            if concurrency == 0 {
                return common::config_error(
                    "TOWER_CONCURRENCY=0 is not valid: expected an integer >= 1",
                );
            }
            println!("limiter: LoadShed + GlobalConcurrencyLimit({concurrency})");
            let limited = common::routes(scrape(&metrics)).layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(overloaded))
                    .layer(LoadShedLayer::new())
                    .layer(GlobalConcurrencyLimitLayer::new(concurrency)),
            );
            // Health and metrics stay outside the limit, like the admission server's bypass.
            let unlimited = Router::new()
                .route("/health", get(|| async { "ok\n" }))
                .route("/metrics", get(move || async move { metrics.render() }));
            Router::new().merge(unlimited).fallback_service(limited)
        }
        other => {
            return common::config_error(&format!(
                "LIMITER={other:?} is not valid: expected tower or none"
            ));
        }
    };
    if let Err(error) = sample_jemalloc() {
        return common::failure(&error);
    }
    println!("limiter: {limiter}");
    match common::serve(app.layer(common::request_timeout()), addr, || {}).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => common::failure(&error.to_string()),
    }
}

fn scrape(
    metrics: &metrics_exporter_prometheus::PrometheusHandle,
) -> impl Fn() -> String + Clone + Send + Sync + 'static {
    let metrics = metrics.clone();
    move || metrics.render()
}

async fn overloaded(error: BoxError) -> impl IntoResponse {
    let status = if error.is::<tower::load_shed::error::Overloaded>() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (status, [(header::RETRY_AFTER, "1")], "overloaded\n")
}

/// Publishes jemalloc's allocated bytes every 10 ms as `jemalloc_allocated_bytes`.
fn sample_jemalloc() -> Result<(), String> {
    let memory = JemallocMemory::new().map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("jemalloc-sampler".into())
        .spawn(move || {
            loop {
                if memory.refresh().is_ok() {
                    metrics::gauge!("jemalloc_allocated_bytes")
                        .set(memory.allocated_bytes() as f64);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
        .map(drop)
        .map_err(|e| e.to_string())
}
