//! The service in-process, driven through tower's `ServiceExt`: error pass-through, shared
//! pools, deadlines under tokio's paused clock, and tokio's cooperative budget.

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};
use tower_admission::{
    Admission, AdmissionConfig, Limit, ManualMemory, MemoryBudget, MinRateBody, Reason,
};

fn admission(config: AdmissionConfig) -> Admission {
    Admission::with_memory_source(
        config.memory_budget(MemoryBudget::Off),
        ManualMemory::new(0),
    )
    .unwrap()
}

fn request() -> Request<Empty<Bytes>> {
    Request::new(Empty::new())
}

async fn ok(_: Request<MinRateBody<Empty<Bytes>>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok"))))
}

#[derive(Debug, PartialEq)]
struct Boom;

#[tokio::test]
async fn the_inner_error_type_passes_through() {
    let admission = admission(AdmissionConfig::default());
    let service = ServiceBuilder::new()
        .layer(admission.layer())
        .service(service_fn(|_: Request<MinRateBody<Empty<Bytes>>>| async {
            Err::<Response<Full<Bytes>>, _>(Boom)
        }));
    let error: Boom = service.oneshot(request()).await.unwrap_err();
    assert_eq!(error, Boom);
    assert_eq!(
        admission.snapshot().in_flight,
        0,
        "an error releases the permit"
    );
}

#[tokio::test]
async fn every_layer_call_shares_one_pool() {
    let admission = admission(
        AdmissionConfig::default()
            .max_concurrency(1)
            .queue_capacity(0),
    );
    let first = admission.layer().layer(service_fn(ok));
    let second = admission.layer().layer(service_fn(ok));
    let held = first.oneshot(request()).await.unwrap();
    assert_eq!(
        admission.snapshot().in_flight,
        1,
        "the body holds the permit"
    );
    let shed = second.clone().oneshot(request()).await.unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        shed.body().rejection().map(|r| (r.reason(), r.limit())),
        Some((Reason::QueueFull, Limit::Concurrency))
    );
    drop(held);
    assert_eq!(admission.snapshot().in_flight, 0);
    let served = second.oneshot(request()).await.unwrap();
    assert_eq!(served.status(), StatusCode::OK);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_exact_under_a_paused_clock() {
    let timeout = Duration::from_secs(1);
    let admission = admission(
        AdmissionConfig::default()
            .max_concurrency(1)
            .queue_timeout(timeout),
    );
    let service = admission.layer().layer(service_fn(ok));
    let held = service.clone().oneshot(request()).await.unwrap();
    let waiter = tokio::spawn(service.oneshot(request()));
    tokio::task::yield_now().await;
    assert_eq!(admission.snapshot().queued, 1);
    tokio::time::advance(timeout - Duration::from_millis(1)).await;
    tokio::task::yield_now().await;
    assert!(!waiter.is_finished(), "left the queue before its deadline");
    tokio::time::advance(Duration::from_millis(2)).await;
    let response = waiter.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.body().rejection().map(|r| r.reason()),
        Some(Reason::QueueTimeout)
    );
    assert_eq!(admission.snapshot().queued, 0);
    drop(held);
    assert_eq!(admission.snapshot().in_flight, 0);
}

/// A waiter whose client says it waits less than the queue timeout (gRPC's `grpc-timeout`,
/// or the configured header) leaves at the client's deadline, counted, and is never admitted
/// for a client that has left; one that says more waits the queue timeout.
#[tokio::test(start_paused = true)]
async fn a_waiter_leaves_at_its_clients_deadline() {
    let admission = admission(
        AdmissionConfig::default()
            .max_concurrency(1)
            .queue_timeout(Duration::from_secs(2))
            .deadline_header(http::HeaderName::from_static("x-deadline-ms")),
    );
    let service = admission.layer().layer(service_fn(ok));
    let held = service.clone().oneshot(request()).await.unwrap();
    let with = |name: &str, value: &str| {
        let mut request = request();
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        request
    };
    let grpc = tokio::spawn(service.clone().oneshot(with("grpc-timeout", "100m")));
    let header = tokio::spawn(service.clone().oneshot(with("x-deadline-ms", "300")));
    let patient = tokio::spawn(service.clone().oneshot(with("x-deadline-ms", "60000")));
    tokio::task::yield_now().await;
    assert_eq!(admission.snapshot().queued, 3);
    tokio::time::advance(Duration::from_millis(101)).await;
    let response = grpc.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.body().rejection().map(|r| r.reason()),
        Some(Reason::QueueTimeout)
    );
    tokio::time::advance(Duration::from_millis(200)).await;
    let response = header.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(admission.snapshot().client_deadlines, 2);
    // The slot frees: the patient one, still within its own deadline, is admitted.
    drop(held);
    let response = patient.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(admission.snapshot().client_deadlines, 2);
}

#[tokio::test(start_paused = true)]
async fn a_release_before_the_deadline_admits_the_waiter() {
    let admission = admission(AdmissionConfig::default().max_concurrency(1));
    let service = admission.layer().layer(service_fn(ok));
    let held = service.clone().oneshot(request()).await.unwrap();
    let waiter = tokio::spawn(service.oneshot(request()));
    tokio::task::yield_now().await;
    tokio::time::advance(Duration::from_millis(500)).await;
    drop(held);
    let response = waiter.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

/// Shed decisions are made synchronously in `call`, never read from a `Pending` of a tokio
/// primitive, which tokio's cooperative budget can force on a task that has done 128 units of
/// work without yielding. A long run of calls in one task must never be shed.
#[tokio::test(flavor = "current_thread")]
async fn shed_decisions_ignore_the_coop_budget() {
    let admission = admission(
        AdmissionConfig::default()
            .max_concurrency(1)
            .queue_capacity(0),
    );
    let service = admission.layer().layer(service_fn(ok));
    for _ in 0..2_000 {
        let response = service.clone().oneshot(request()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    assert_eq!(admission.snapshot().rejected_total(), 0);
}

/// How many MiB a request asks its handler to reserve.
#[derive(Clone, Copy)]
struct Mib(u64);

/// A handler that reserves the request's [`Mib`], answers whether it got them, and holds its
/// answer until the test lets it go.
fn reserving(
    gate: std::sync::Arc<tokio::sync::Semaphore>,
) -> impl Service<
    Request<MinRateBody<Empty<Bytes>>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    service_fn(move |request: Request<MinRateBody<Empty<Bytes>>>| {
        let gate = gate.clone();
        async move {
            let reservation = request
                .extensions()
                .get::<tower_admission::Reservation>()
                .cloned()
                .expect("admitted under a budget: a reservation");
            let Mib(mib) = request.extensions().get::<Mib>().copied().unwrap();
            let granted = reservation.reserve(mib * MIB).await;
            gate.acquire().await.unwrap().forget();
            let status = match granted {
                Ok(()) => StatusCode::OK,
                Err(rejection) => {
                    assert_eq!(rejection.limit(), Limit::Memory);
                    StatusCode::SERVICE_UNAVAILABLE
                }
            };
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        }
    })
}

const MIB: u64 = 1 << 20;

#[tokio::test(start_paused = true)]
async fn a_handler_reserves_before_allocating_and_waits_for_room() {
    let admission = Admission::with_memory_source(
        AdmissionConfig::default()
            .memory_budget_bytes(100 * MIB)
            .request_estimate(MIB)
            .reservations(true)
            .queue_timeout(Duration::from_secs(1)),
        ManualMemory::new(0),
    )
    .unwrap();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let service = admission.layer().layer(reserving(gate.clone()));

    let reserve = |mib: u64| {
        let mut request = request();
        request.extensions_mut().insert(Mib(mib));
        tokio::spawn(service.clone().oneshot(request))
    };
    let settle = || tokio::time::sleep(Duration::from_millis(50));
    type Answer = Result<Response<tower_admission::AdmissionBody<Full<Bytes>>>, Infallible>;
    let status =
        |task: tokio::task::JoinHandle<Answer>| async { task.await.unwrap().unwrap().status() };

    // 60 MiB fit at once: the reservation takes the place of the 1 MiB estimate.
    let first = reserve(60);
    settle().await;
    assert_eq!(admission.snapshot().charged_bytes, 60 * MIB);
    // 60 more do not fit, but one request at a time may reserve beyond the budget.
    let second = reserve(60);
    settle().await;
    assert_eq!(admission.snapshot().charged_bytes, 120 * MIB);
    // A third waits: for room, not for the first alone (61 + 59 > 100)...
    let third = reserve(60);
    settle().await;
    gate.add_permits(1);
    assert_eq!(status(first).await, StatusCode::OK);
    settle().await;
    assert_eq!(
        admission.snapshot().charged_bytes,
        61 * MIB,
        "still waiting"
    );
    // ...and gets it once the second is gone too.
    gate.add_permits(1);
    assert_eq!(status(second).await, StatusCode::OK);
    settle().await;
    assert_eq!(admission.snapshot().charged_bytes, 60 * MIB, "granted");
    // A fourth goes beyond the budget; a fifth waits, and is refused at the queue timeout,
    // its request going on.
    let fourth = reserve(60);
    let fifth = reserve(60);
    tokio::time::sleep(Duration::from_secs(2)).await;
    gate.add_permits(3);
    assert_eq!(status(third).await, StatusCode::OK);
    assert_eq!(status(fourth).await, StatusCode::OK);
    assert_eq!(status(fifth).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        admission
            .snapshot()
            .rejected(Reason::QueueTimeout, Limit::Memory),
        1
    );
    // More than the whole budget is refused at once.
    let too_large = reserve(101);
    settle().await;
    gate.add_permits(1);
    assert_eq!(status(too_large).await, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        admission
            .snapshot()
            .rejected(Reason::TooLarge, Limit::Memory),
        1
    );
    let s = admission.snapshot();
    assert_eq!(
        (s.in_flight, s.charged_bytes),
        (0, 0),
        "nothing left behind"
    );
}

fn grpc_request() -> Request<Empty<Bytes>> {
    let mut request = request();
    request.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    request
}

#[tokio::test]
async fn a_grpc_request_is_refused_in_grpc_terms_and_others_in_http_ones() {
    let admission = admission(
        AdmissionConfig::default()
            .max_concurrency(1)
            .adaptive_limit(false)
            .queue_capacity(0)
            .retry_after_secs(2),
    );
    let service = admission.layer().layer(service_fn(ok));
    let held = service.clone().oneshot(request()).await.unwrap();
    let refused = service.clone().oneshot(grpc_request()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::OK, "trailers-only");
    let headers = refused.headers();
    assert_eq!(headers["content-type"], "application/grpc");
    assert_eq!(headers["grpc-status"], "14", "UNAVAILABLE");
    assert!(
        headers["grpc-message"]
            .to_str()
            .unwrap()
            .starts_with("overloaded: reason=queue_full limit=concurrency"),
        "{headers:?}"
    );
    assert_eq!(headers["grpc-retry-pushback-ms"], "2000");
    assert!(http_body::Body::is_end_stream(refused.body()));
    let rejection = refused.body().rejection().unwrap();
    assert_eq!(
        (rejection.reason(), rejection.limit()),
        (Reason::QueueFull, Limit::Concurrency)
    );
    let plain = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(plain.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(plain.headers()["retry-after"], "2");
    assert!(plain.headers().get("grpc-status").is_none());
    drop(held);
}

#[tokio::test]
async fn observing_only_every_request_is_served_and_the_refusals_are_counted() {
    let admission = admission(
        AdmissionConfig::default()
            .max_concurrency(1)
            .adaptive_limit(false)
            .queue_capacity(0)
            .observe_only(true),
    );
    let service = admission.layer().layer(service_fn(ok));
    let held = service.clone().oneshot(request()).await.unwrap();
    let over = service.clone().oneshot(request()).await.unwrap();
    assert_eq!(over.status(), StatusCode::OK);
    let s = admission.snapshot();
    assert_eq!(s.would_reject(Reason::QueueFull, Limit::Concurrency), 1);
    assert_eq!((s.rejected_total(), s.in_flight), (0, 2));
    drop((held, over));
    assert_eq!(admission.snapshot().in_flight, 0);
}

#[tokio::test(start_paused = true)]
async fn a_shaper_answers_refusals_at_once_and_at_the_queue_timeout() {
    let admission = admission(
        AdmissionConfig::default()
            .max_concurrency(1)
            .adaptive_limit(false)
            .queue_capacity(1)
            .retry_after_secs(3)
            .shape_rejections(|rejection, head, retry_after| {
                let body = format!(
                    "{} {} {} {}",
                    head.uri().path(),
                    rejection.reason().as_str(),
                    rejection.limit().as_str(),
                    retry_after.as_secs()
                );
                Response::builder()
                    .status(StatusCode::TOO_MANY_REQUESTS)
                    .body(Bytes::from(body))
                    .unwrap()
            }),
    );
    let service = admission.layer().layer(service_fn(ok));
    let held = service.clone().oneshot(request()).await.unwrap();
    let waiter = tokio::spawn(
        service
            .clone()
            .oneshot(Request::get("/waits").body(Empty::new()).unwrap()),
    );
    tokio::task::yield_now().await;
    let refused = service
        .clone()
        .oneshot(Request::get("/now").body(Empty::new()).unwrap())
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    let timed_out = waiter.await.unwrap().unwrap();
    for (response, text) in [
        (refused, "/now queue_full concurrency 3"),
        (timed_out, "/waits queue_timeout concurrency 3"),
    ] {
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert!(response.body().rejection().is_some());
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, text);
    }
    drop(held);
}
