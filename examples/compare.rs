//! The example service behind tower's own limits, or none, for side-by-side comparisons with
//! `server` (which `load/run.sh` drives both of). Run with
//!
//! ```text
//! LIMITER=tower TOWER_CONCURRENCY=64 cargo run --release --example compare
//! LIMITER=none cargo run --release --example compare
//! LIMITER=little cargo run --release --example compare     # little-loadshedder
//! LIMITER=aimd cargo run --release --example compare       # congestion-limiter: aimd, gradient, vegas
//! ```
//!
//! The peers are wired as their documentation shows, around the whole router (so that their
//! state is one, not one per route) with `/health` and `/metrics` outside: `little-loadshedder`
//! (no defaults of its own: a target average latency of 100 ms, an EWMA parameter of 0.25),
//! and `congestion-limiter`'s limits with an initial limit of 10, as its README's example (no
//! tower layer, no HTTP answer and no queue of its own: a middleware tries for a token, answers
//! 503 + `Retry-After: 1` without one, and reports a 5xx as overload, anything else as success).
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
use std::sync::Arc;

use axum::{extract::Request, middleware::Next, response::Response};
use congestion_limiter::{
    limiter::{DefaultLimiter, Limiter, Outcome},
    limits::{Aimd, Gradient, LimitAlgorithm, Vegas},
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
        "little" => {
            let shed = little_loadshedder::LoadShed::new(
                common::routes(scrape(&metrics)),
                0.25,
                Duration::from_millis(100),
            );
            let answered = ServiceBuilder::new()
                .map_response(|response| match response {
                    little_loadshedder::LoadShedResponse::Inner(response) => response,
                    little_loadshedder::LoadShedResponse::Overload => overloaded_response(),
                })
                .service(shed);
            outside_health(&metrics).fallback_service(answered)
        }
        "aimd" => congested(&metrics, Aimd::new_with_initial_limit(10)),
        "gradient" => congested(&metrics, Gradient::new_with_initial_limit(10)),
        "vegas" => congested(&metrics, Vegas::new_with_initial_limit(10)),
        other => {
            return common::config_error(&format!(
                "LIMITER={other:?} is not valid: expected tower, none, little, aimd, gradient or vegas"
            ));
        }
    };
    if let Err(error) = sample_jemalloc() {
        return common::failure(&error);
    }
    println!("limiter: {limiter}");
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => common::Listener::Plain(listener),
        Err(error) => return common::failure(&format!("cannot listen on {addr}: {error}")),
    };
    match common::serve(app.layer(common::request_timeout()), listener, || {}).await {
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

/// `/health` and `/metrics`, outside any limit.
fn outside_health(metrics: &metrics_exporter_prometheus::PrometheusHandle) -> Router {
    let metrics = metrics.clone();
    Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route("/metrics", get(move || async move { metrics.render() }))
}

/// The routes behind a `congestion-limiter` limit, one for the whole router.
fn congested<A>(metrics: &metrics_exporter_prometheus::PrometheusHandle, algorithm: A) -> Router
where
    A: LimitAlgorithm + Send + Sync + std::fmt::Debug + 'static,
{
    let limiter = Arc::new(DefaultLimiter::new(algorithm));
    let limited = common::routes(scrape(metrics)).layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let limiter = Arc::clone(&limiter);
            async move {
                let Some(token) = limiter.try_acquire().await else {
                    return overloaded_response();
                };
                let response = next.run(request).await;
                let outcome = match response.status().is_server_error() {
                    true => Outcome::Overload,
                    false => Outcome::Success,
                };
                limiter.release(token, Some(outcome)).await;
                response
            }
        },
    ));
    outside_health(metrics).fallback_service(limited)
}

fn overloaded_response() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::RETRY_AFTER, "1")],
        "overloaded\n",
    )
        .into_response()
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
