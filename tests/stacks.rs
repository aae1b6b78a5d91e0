//! The layer in the stacks users build: inside and outside tower-http's `TimeoutLayer`,
//! `CompressionLayer`, `TraceLayer` and `RequestBodyLimitLayer` on an axum router, and under
//! plain hyper over HTTP/1.1 and h2c. Each stack must compile as its users write it, and
//! answer as each of its layers says.

use std::{net::SocketAddr, time::Duration};

use axum::{Router, body::Body, routing::post};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tower::{Layer, ServiceExt, service_fn};
use tower_admission::{Admission, AdmissionConfig, ManualMemory, MemoryBudget, MinRateBody};
use tower_http::{
    compression::CompressionLayer, limit::RequestBodyLimitLayer, timeout::TimeoutLayer,
    trace::TraceLayer,
};

fn admission(max_concurrency: usize) -> Admission {
    let config = AdmissionConfig::default()
        .max_concurrency(max_concurrency)
        .adaptive_limit(false)
        .queue_capacity(0)
        .memory_budget(MemoryBudget::Off);
    Admission::with_memory_source(config, ManualMemory::new(0)).unwrap()
}

/// `POST /echo` answers its body, `POST /sleep` sleeps a second.
fn routes() -> Router {
    Router::new()
        .route("/echo", post(|body: Bytes| async move { body }))
        .route(
            "/sleep",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                "slept"
            }),
        )
}

fn post_to(path: &str, body: &'static str) -> Request<Body> {
    Request::post(path)
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Body::from(body))
        .unwrap()
}

#[tokio::test]
async fn timeout_outside_the_layer_answers_408_and_frees_the_slot() {
    let admission = admission(1);
    let app = routes()
        .layer(admission.layer())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(50),
        ));
    let response = app.oneshot(post_to("/sleep", "")).await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert_eq!(admission.snapshot().in_flight, 0);
}

#[tokio::test]
async fn timeout_inside_the_layer_times_the_handler() {
    let admission = admission(1);
    let app = routes()
        .layer(TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            Duration::from_millis(50),
        ))
        .layer(admission.layer());
    let response = app.oneshot(post_to("/sleep", "")).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
}

#[tokio::test]
async fn compression_and_trace_on_either_side() {
    let text = "admitted and compressed, admitted and compressed";
    let admission = admission(4);
    let outside = routes()
        .layer(admission.layer())
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http());
    let inside = routes()
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http())
        .layer(admission.layer());
    for app in [outside, inside] {
        let response = app.oneshot(post_to("/echo", text)).await.unwrap();
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(!body.is_empty() && body != text.as_bytes());
    }
    assert_eq!(admission.snapshot().in_flight, 0);
}

/// axum's `Router::layer` turns the body back into its own at every call, which wraps the
/// body's errors once more each time, and its extractors look only two wraps deep for the
/// limit's error: a limit outside the layer is given in the same `layer` call, as with any
/// other layer between it and the handler.
#[tokio::test]
async fn a_body_limit_on_either_side_answers_413() {
    let admission = admission(4);
    let outside = routes().layer(
        tower::ServiceBuilder::new()
            .layer(RequestBodyLimitLayer::new(8))
            .layer(admission.layer()),
    );
    let inside = routes()
        .layer(RequestBodyLimitLayer::new(8))
        .layer(admission.layer());
    for (side, app) in [("outside", outside), ("inside", inside)] {
        let response = app
            .oneshot(post_to("/echo", "more than eight"))
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{side}: {body:?}");
    }
    assert_eq!(admission.snapshot().in_flight, 0);
}

#[tokio::test]
async fn the_layer_sheds_behind_other_layers() {
    let admission = admission(1);
    let app = routes()
        .layer(admission.layer())
        .layer(CompressionLayer::new())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(5),
        ));
    let held = tokio::spawn(app.clone().oneshot(post_to("/sleep", "")));
    while admission.snapshot().in_flight == 0 {
        tokio::task::yield_now().await;
    }
    let shed = app.oneshot(post_to("/echo", "x")).await.unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(shed.headers().contains_key(header::RETRY_AFTER));
    assert_eq!(held.await.unwrap().unwrap().status(), StatusCode::OK);
}

/// Plain hyper: a `service_fn` behind the layer, served over HTTP/1.1 and h2c by
/// hyper-util's automatic builder.
async fn serve_hyper(admission: &Admission) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = admission.layer().layer(service_fn(
        |request: Request<MinRateBody<hyper::body::Incoming>>| async move {
            let body = request
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(Response::new(Full::new(body.to_bytes())))
        },
    ));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let service = hyper_util::service::TowerToHyperService::new(service.clone());
            tokio::spawn(async move {
                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                    .ok();
            });
        }
    });
    addr
}

#[tokio::test]
async fn plain_hyper_serves_http1_and_h2c() {
    let admission = admission(16);
    let addr = serve_hyper(&admission).await;
    let request = || {
        Request::post(format!("http://{addr}/"))
            .body(Full::new(Bytes::from_static(b"hi")))
            .unwrap()
    };
    // HTTP/1.1
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender.send_request(request()).await.unwrap();
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "hi"
    );
    // h2c, several streams on one connection
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let mut sender = sender.clone();
            let request = request();
            tokio::spawn(async move { sender.send_request(request).await })
        })
        .collect();
    for call in calls {
        let response = call.await.unwrap().unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(
            response.into_body().collect().await.unwrap().to_bytes(),
            "hi"
        );
    }
    assert_eq!(admission.snapshot().in_flight, 0);
}
