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
//! port is bound; any other failure with status 1.
//!
//! `WORK_CLASSES=kib` puts `/work` requests into cost classes by their `kib` parameter (a
//! power of two apart), as a service whose costs depend on a query parameter would; the
//! default, `route`, leaves the layer's classes as they are (method and path), so a
//! request's size is unknown until it runs.
//!
//! Connections come through the pool's listener (see `tower_admission::listener`): each
//! holds its bytes in the memory spoken for, accepting pauses while memory is over the
//! budget, and idle ones are given back under pressure. `CONNECTIONS=uncounted` serves from
//! a plain listener instead, as before the listener existed.
//!
//! Hardened as a production service should be (see `common/serve.rs`): header read timeout,
//! write stall timeout, per-request timeout, body limit on `/ingest`, and a graceful
//! shutdown that answers queued requests 503 at once and lets admitted ones finish.

use std::process::ExitCode;

use tower_admission::{Admission, AdmissionConfig, CostClass, RequestHead};

mod common;

#[global_allocator]
static GLOBAL: tower_admission::Jemalloc = tower_admission::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    // 1. Logs to stderr, then the metrics recorder: it must be installed before the pool
    //    describes its metrics.
    let (metrics, addr) = match common::start() {
        Ok(started) => started,
        Err(code) => return code,
    };

    // 2. The admission pool: this server's defaults (health and metrics skip admission;
    //    `/ingest` reserves its parsed body before building it), then the ADMISSION_*
    //    variables. A bad value stops here, before the port is bound.
    let mut config = AdmissionConfig::default()
        .bypass(["/health", "/metrics"])
        .reservations(true);
    match std::env::var("WORK_CLASSES").as_deref() {
        Err(_) | Ok("route") => {}
        Ok("kib") => config = config.classify(work_by_kib),
        Ok(other) => {
            return common::config_error(&format!(
                "WORK_CLASSES={other:?} is not valid: expected route or kib"
            ));
        }
    }
    let admission = match config.apply_env().and_then(Admission::new) {
        Ok(admission) => admission,
        Err(error) => return common::config_error(&error.to_string()),
    };
    println!("{admission}");

    // 3. The routes behind one pool: `Router::layer` wraps each route, and they all share
    //    it. The request timeout sits inside it, timing handlers rather than the queue.
    //    Scrapes publish the pool's figures first: a stalled sampler cannot freeze them.
    let scraped = admission.clone();
    let scrape = move || {
        scraped.publish_metrics();
        metrics.render()
    };
    let app = common::routes(scrape)
        .layer(common::request_timeout())
        .layer(admission.layer());

    // 4. Connections through the pool's listener (`CONNECTIONS=uncounted` for a plain one):
    //    each holds its bytes in the memory spoken for, and idle ones are given back under
    //    pressure.
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => return common::failure(&format!("cannot listen on {addr}: {error}")),
    };
    let listener = match std::env::var("CONNECTIONS").as_deref() {
        Err(_) | Ok("counted") => common::Listener::Admission(admission.listener(listener)),
        Ok("uncounted") => common::Listener::Plain(listener),
        Ok(other) => {
            return common::config_error(&format!(
                "CONNECTIONS={other:?} is not valid: expected counted or uncounted"
            ));
        }
    };

    // 5. Serve until SIGINT or SIGTERM; then the queue is answered 503 at once, and
    //    admitted requests run to the end.
    match common::serve(app, listener, move || admission.close()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => common::failure(&error.to_string()),
    }
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
