//! What a request pays for admission, side by side with tower's own limits, in one run.
//!
//! ```sh
//! cargo bench --bench admission
//! python3 benches/report.py      # the table of medians and ratios from target/criterion
//! ```
//!
//! Every variant wraps the same ready `service_fn` and sees the same request; jemalloc is the
//! global allocator for all of them, so allocation costs are alike.

use std::{
    convert::Infallible,
    future::Future,
    hint::black_box,
    time::{Duration, Instant},
};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use futures_util::poll;
use http::{Request, Response, StatusCode, Uri, header};
use http_body_util::{Empty, Full};
use tower::{
    BoxError, Layer, Service, ServiceExt,
    limit::{ConcurrencyLimitLayer, GlobalConcurrencyLimitLayer},
    load_shed::LoadShedLayer,
    service_fn,
};
use tower_admission::{Admission, AdmissionConfig, MemoryBudget};

#[global_allocator]
static GLOBAL: tower_admission::Jemalloc = tower_admission::Jemalloc;

/// High enough that the uncontended and contended cases never wait.
const ROOMY: usize = 1024;

type Body = Full<Bytes>;

/// A request with a path and no headers: building it allocates nothing, so the medians are
/// the services' own cost rather than the request's.
fn request() -> Request<Empty<Bytes>> {
    let mut request = Request::new(Empty::new());
    *request.uri_mut() = Uri::from_static("/work?kib=1&ms=0");
    request
}

/// The handler, for any request body: the bare service's, or the one behind the layer.
async fn handler<B>(_: Request<B>) -> Result<Response<Body>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

fn admission(memory: bool, max: usize, queue: usize) -> Admission {
    let config = AdmissionConfig::default()
        .max_concurrency(max)
        .queue_capacity(queue)
        .queue_timeout(Duration::from_secs(60));
    let config = if memory {
        config.memory_budget(MemoryBudget::Percent(75.0))
    } else {
        config.memory_budget(MemoryBudget::Off)
    };
    Admission::new(config).expect("jemalloc is the global allocator")
}

/// One request through `service`, ready first as tower requires.
async fn call<S, B>(service: &mut S) -> Response<B>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    service
        .ready()
        .await
        .unwrap()
        .call(request())
        .await
        .unwrap()
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `iters` calls, one after the other, on a current-thread runtime.
fn sequential<S, B>(service: &mut S, iters: u64) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let runtime = current_thread();
    runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let response = call(service).await;
            black_box(response);
        }
        start.elapsed()
    })
}

/// Runs `iters` calls spread over `callers` tasks on a 2-worker runtime; wall time.
fn contended<S, B>(service: &S, callers: u64, iters: u64) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    B: Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let per_caller = iters.div_ceil(callers);
        let start = Instant::now();
        let tasks: Vec<_> = (0..callers)
            .map(|_| {
                let mut service = service.clone();
                tokio::spawn(async move {
                    for _ in 0..per_caller {
                        let response = call(&mut service).await;
                        black_box(response);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        start.elapsed()
    })
}

fn bare<B: Send + 'static>() -> impl Service<
    Request<B>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone
+ Send
+ 'static {
    service_fn(handler)
}

fn uncontended_and_contended(c: &mut Criterion) {
    let admission_off = admission(false, ROOMY, 16);
    let admission_jemalloc = admission(true, ROOMY, 16);
    macro_rules! cases {
        ($group:expr, $run:expr) => {{
            let mut group = $group;
            group.bench_function("bare service_fn", |b| {
                let service = bare();
                b.iter_custom(|iters| $run(service.clone(), iters))
            });
            group.bench_function("ConcurrencyLimit", |b| {
                let service = ConcurrencyLimitLayer::new(ROOMY).layer(bare());
                b.iter_custom(|iters| $run(service.clone(), iters))
            });
            group.bench_function("GlobalConcurrencyLimit", |b| {
                let service = GlobalConcurrencyLimitLayer::new(ROOMY).layer(bare());
                b.iter_custom(|iters| $run(service.clone(), iters))
            });
            group.bench_function("LoadShed+ConcurrencyLimit", |b| {
                let service =
                    LoadShedLayer::new().layer(ConcurrencyLimitLayer::new(ROOMY).layer(bare()));
                b.iter_custom(|iters| $run(service.clone(), iters))
            });
            group.bench_function("admission (memory off)", |b| {
                let service = admission_off.layer().layer(bare());
                b.iter_custom(|iters| $run(service.clone(), iters))
            });
            group.bench_function("admission (jemalloc)", |b| {
                let service = admission_jemalloc.layer().layer(bare());
                b.iter_custom(|iters| $run(service.clone(), iters))
            });
            group.finish();
        }};
    }
    cases!(c.benchmark_group("uncontended"), |mut s, iters| sequential(
        &mut s, iters
    ));
    for callers in [2, 16] {
        cases!(
            c.benchmark_group(format!("contended/{callers} callers")),
            |s, iters| contended(&s, callers, iters)
        );
    }
}

/// A request that waits for the only slot and is woken when the holder's response ends.
fn queue_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue path");
    let runtime = current_thread();

    for (name, memory) in [
        ("admission (memory off)", false),
        ("admission (jemalloc)", true),
    ] {
        let admission = admission(memory, 1, 16);
        let mut service = admission.layer().layer(bare());
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let held = call(&mut service).await;
                    let mut waiter = std::pin::pin!(service.ready().await.unwrap().call(request()));
                    assert!(poll!(waiter.as_mut()).is_pending());
                    drop(held); // the body ends: the waiter is granted
                    black_box(waiter.await.unwrap());
                })
            })
        });
    }

    let service = ConcurrencyLimitLayer::new(1).layer(bare());
    group.bench_function(BenchmarkId::from_parameter("ConcurrencyLimit"), |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut holder = service.clone();
                let held = holder.ready().await.unwrap().call(request());
                let mut waiter = service.clone();
                assert!(poll!(waiter.ready()).is_pending());
                drop(held); // the permit goes back: the waiter is woken
                let response = call(&mut waiter).await;
                black_box(response);
            })
        })
    });
    group.finish();
}

/// The only slot is taken and the queue is empty-capacity: the request ends as a 503.
fn rejection_path(c: &mut Criterion) {
    let mut group = c.benchmark_group("rejection path");
    let runtime = current_thread();

    for (name, memory) in [
        ("admission (memory off)", false),
        ("admission (jemalloc)", true),
    ] {
        let admission = admission(memory, 1, 0);
        let mut service = admission.layer().layer(bare());
        let held = runtime.block_on(async { call(&mut service).await });
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_custom(|iters| sequential(&mut service, iters))
        });
        drop(held);
    }

    // tower's way: LoadShed turns "not ready" into an error, which a HandleErrorLayer-like
    // step turns into the same 503 response.
    let service = LoadShedLayer::new().layer(ConcurrencyLimitLayer::new(1).layer(bare()));
    let mut holder = service.clone();
    runtime.block_on(holder.ready()).unwrap(); // the holder keeps the only permit
    let mut service = service
        .clone()
        .map_result(|result| Ok::<_, BoxError>(result.unwrap_or_else(overloaded_response)));
    group.bench_function(
        BenchmarkId::from_parameter("LoadShed+ConcurrencyLimit"),
        |b| b.iter_custom(|iters| sequential(&mut service, iters)),
    );
    group.finish();
}

/// What a `HandleErrorLayer` turning `Overloaded` into the same answer as the layer's would
/// build: 503, `content-type`, `Retry-After`, a static body.
fn overloaded_response(error: BoxError) -> Response<Body> {
    debug_assert!(error.is::<tower::load_shed::error::Overloaded>());
    let mut response = Response::new(Full::new(Bytes::from_static(
        b"overloaded: reason=queue_full limit=concurrency\n",
    )));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::RETRY_AFTER, http::HeaderValue::from_static("1"));
    response
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = uncontended_and_contended, queue_path, rejection_path
}
criterion_main!(benches);
