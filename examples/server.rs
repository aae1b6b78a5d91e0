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
//!
//! `WORK_CLASSES=kib` puts `/work` requests into cost classes by their `kib` parameter (a
//! power of two apart), as a service whose costs depend on a query parameter would; the
//! default, `route`, leaves the layer's classes as they are (method and path), so a
//! request's size is unknown until it runs.
//!
//! Hardened as a production service should be (see `common/serve.rs`): header read timeout,
//! write stall timeout, per-request timeout, body limit on `/ingest`, and a graceful
//! shutdown that answers queued requests 503 at once and lets admitted ones finish.

use std::process::ExitCode;

use tower_admission::{Admission, AdmissionConfig, CostClass, RequestHead};

mod common;

#[global_allocator]
static GLOBAL: tower_admission::Jemalloc = tower_admission::Jemalloc;

fn main() -> ExitCode {
    // The metrics recorder goes first, so the pool's metric descriptions reach it.
    let (metrics, addr) = match common::start() {
        Ok(started) => started,
        Err(error) => return common::fail(&error),
    };
    // `/ingest` reserves its parsed body before building it.
    let mut config = AdmissionConfig::default()
        .bypass(["/health", "/metrics"])
        .reservations(true);
    match std::env::var("WORK_CLASSES").as_deref() {
        Err(_) | Ok("route") => {}
        Ok("kib") => config = config.classify(work_by_kib),
        Ok(other) => {
            return common::fail(&format!(
                "WORK_CLASSES={other:?} is not valid: expected route or kib"
            ));
        }
    }
    let admission = match config.apply_env().and_then(Admission::new) {
        Ok(admission) => admission,
        Err(error) => return common::fail(&error.to_string()),
    };
    println!("{admission}");
    // Scrapes publish the pool's figures first: a stalled sampler cannot freeze them.
    let scraped = admission.clone();
    let scrape = move || {
        scraped.publish_metrics();
        metrics.render()
    };
    // One pool over every route: `Router::layer` wraps each route, and they all share it.
    // The request timeout sits inside it, timing handlers rather than the queue.
    let app = common::routes(scrape)
        .layer(common::request_timeout())
        .layer(admission.layer());
    // On SIGTERM the queue is answered 503 at once; admitted requests run to the end.
    common::run(app, addr, move || admission.close())
}

/// `/work` requests by the power of two of their `kib` parameter; everything else by route.
fn work_by_kib(head: &RequestHead<'_>) -> CostClass {
    let path = head.uri().path();
    let kib = head
        .uri()
        .query()
        .filter(|_| path == "/work")
        .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("kib=")))
        .and_then(|kib| kib.parse::<u64>().ok());
    match kib {
        Some(kib) => CostClass::new((path, kib.checked_ilog2())),
        None => CostClass::route(head.method(), path),
    }
}
