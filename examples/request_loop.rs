//! Runs N requests through one service stack, for profilers that count instructions and
//! calls (valgrind's callgrind), which are repeatable where timings on a shared machine are
//! not. `benches/instructions.sh` runs every stack at two values of N and prints the cost per
//! request; it also shows that the request path makes no `mallctl` call:
//!
//! ```sh
//! cargo build --release --example request_loop
//! bash benches/instructions.sh
//! ```
//!
//! Stacks: `bare` (a ready `service_fn`), `concurrency-limit` (tower's `ConcurrencyLimit`),
//! `admission` (this crate, jemalloc source), and the rejection paths `load-shed-reject`
//! (`LoadShed` + `ConcurrencyLimit` with its only permit taken, the error turned into the same
//! 503 a `HandleErrorLayer` would build) and `admission-reject` (one slot, taken; no queue).

use std::{convert::Infallible, hint::black_box, time::Duration};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header};
use http_body_util::{Empty, Full};
use tower::{
    BoxError, Layer, Service, ServiceExt, limit::ConcurrencyLimitLayer, load_shed::LoadShedLayer,
    service_fn,
};
use tower_admission::{Admission, AdmissionConfig};

#[global_allocator]
static GLOBAL: tower_admission::Jemalloc = tower_admission::Jemalloc;

type Body = Full<Bytes>;

fn request() -> Request<Empty<Bytes>> {
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = Uri::from_static("/work?kib=1&ms=0");
    request
}

/// The handler, for any request body: the bare service's, or the one behind the layer.
async fn handler<B>(_: Request<B>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

/// What a `HandleErrorLayer` would answer for `Overloaded`: the layer's own 503, in tower.
fn overloaded(_: BoxError) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from_static(
        b"overloaded: reason=queue_full limit=concurrency\n",
    )));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

async fn run<S, B>(mut service: S, requests: u64)
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    for _ in 0..requests {
        let ready = service.ready().await.map_err(Into::into).unwrap();
        let status = match ready.call(request()).await {
            Ok(response) => response.status(),
            Err(error) => overloaded(error.into()).status(),
        };
        black_box(status);
    }
}

fn admission(max: usize, queue: usize) -> Admission {
    // The sampler reads once at start, then sleeps: it makes no call during the loop.
    let config = AdmissionConfig::default()
        .max_concurrency(max)
        .queue_capacity(queue)
        .memory_budget_bytes(1 << 30)
        .sample_interval(Duration::from_secs(3600));
    Admission::new(config).expect("jemalloc is the global allocator")
}

fn main() {
    let mut args = std::env::args().skip(1);
    let stack = args.next().unwrap_or_else(|| "admission".into());
    let requests: u64 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let bare = || service_fn(handler);
    // Let the sampler take its start-up reading first, so that it is the same for every N.
    let startup = || std::thread::sleep(Duration::from_millis(300));
    runtime.block_on(async {
        match stack.as_str() {
            "bare" => run(bare(), requests).await,
            "concurrency-limit" => {
                run(ConcurrencyLimitLayer::new(1024).layer(bare()), requests).await
            }
            "admission" => {
                let admission = admission(1024, 16);
                startup();
                run(admission.layer().layer(service_fn(handler)), requests).await
            }
            "admission-reject" => {
                let admission = admission(1, 0);
                startup();
                let mut service = admission.layer().layer(service_fn(handler));
                let held = service.ready().await.unwrap().call(request()).await;
                run(service, requests).await;
                drop(held);
            }
            "load-shed-reject" => {
                let service = LoadShedLayer::new().layer(ConcurrencyLimitLayer::new(1).layer(bare()));
                let mut holder = service.clone();
                holder.ready().await.unwrap(); // keeps the only permit
                run(service, requests).await;
            }
            other => {
                eprintln!("unknown stack {other:?}: bare, concurrency-limit, admission, admission-reject, load-shed-reject");
                std::process::exit(2);
            }
        }
    });
    println!("{stack}: {requests} requests");
}
