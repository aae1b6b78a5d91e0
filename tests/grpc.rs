//! tonic behind the layer, over real HTTP/2 connections, driven by tonic's own client: what a
//! gRPC client sees when it is shed, a client stream with long gaps, the health service while
//! saturated, and streams reset while queued or running.

use std::{future::Future, net::SocketAddr, time::Duration};

use tokio::net::TcpListener;
#[cfg(not(feature = "tonic"))]
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{
    Code, Request, Status,
    codegen::http::uri::PathAndQuery,
    transport::{Channel, Server},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_prost::ProstCodec;
use tower_admission::{Admission, AdmissionConfig, ManualMemory, MemoryBudget, MinDataRate};

#[path = "../examples/grpc/greeter.rs"]
mod greeter;

use greeter::{COLLECT, HelloReply, HelloRequest, SAY_HELLO};

/// A pool of `config` (no memory budget) in front of the greeter and the health service.
async fn serve(config: AdmissionConfig) -> (Admission, SocketAddr) {
    let admission = Admission::with_memory_source(
        config
            .memory_budget(MemoryBudget::Off)
            .bypass(["/grpc.health.v1.Health/"]),
        ManualMemory::new(0),
    )
    .unwrap();
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("greeter.Greeter", tonic_health::ServingStatus::Serving)
        .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = Server::builder()
        .layer(admission.layer())
        .add_service(health_service)
        .add_service(greeter::GreeterServer);
    // Through the pool's listener where the feature is on: connections counted.
    #[cfg(feature = "tonic")]
    tokio::spawn(router.serve_with_incoming(admission.listener(listener).incoming()));
    #[cfg(not(feature = "tonic"))]
    tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
    (admission, addr)
}

#[cfg(feature = "tonic")]
#[tokio::test]
async fn the_pool_s_listener_counts_grpc_connections() {
    let (admission, addr) = serve(AdmissionConfig::default()).await;
    let channel = channel(addr).await;
    say_hello(channel.clone(), 0).await.unwrap();
    assert_eq!(admission.snapshot().connections, 1);
    drop(channel);
    for _ in 0..1_000 {
        if admission.snapshot().connections == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!(
        "the connection is still counted: {:?}",
        admission.snapshot()
    );
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

async fn say_hello(channel: Channel, work_ms: u64) -> Result<tonic::Response<HelloReply>, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let request = Request::new(HelloRequest {
        name: "ada".into(),
        work_ms,
    });
    grpc.unary(
        request,
        PathAndQuery::from_static(SAY_HELLO),
        ProstCodec::default(),
    )
    .await
}

/// Sends `names` one by one, `gap` apart, as one client-streaming call.
async fn collect(channel: Channel, names: usize, gap: Duration) -> Result<HelloReply, Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let stream = async_stream(names, gap);
    let response = grpc
        .client_streaming(
            Request::new(stream),
            PathAndQuery::from_static(COLLECT),
            ProstCodec::default(),
        )
        .await?;
    Ok(response.into_inner())
}

fn async_stream(names: usize, gap: Duration) -> impl tokio_stream::Stream<Item = HelloRequest> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        for i in 0..names {
            if i > 0 {
                tokio::time::sleep(gap).await;
            }
            let name = format!("n{i}");
            if sender
                .send(HelloRequest { name, work_ms: 0 })
                .await
                .is_err()
            {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(receiver)
}

/// Waits until `done` holds, for two seconds at most.
async fn eventually(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done()
}

fn one_slot() -> AdmissionConfig {
    AdmissionConfig::default()
        .max_concurrency(1)
        .adaptive_limit(false)
        .queue_capacity(0)
        .retry_after_secs(2)
}

async fn running<F: Future + Send + 'static>(
    admission: &Admission,
    call: F,
) -> tokio::task::JoinHandle<F::Output>
where
    F::Output: Send,
{
    let task = tokio::spawn(call);
    assert!(eventually(|| admission.snapshot().in_flight == 1).await);
    task
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shed_call_gets_unavailable_with_the_reason_and_a_pushback() {
    let (admission, addr) = serve(one_slot()).await;
    let channel = channel(addr).await;
    let held = running(&admission, say_hello(channel.clone(), 500)).await;
    let status = say_hello(channel.clone(), 0).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("overloaded: reason=queue_full limit=concurrency"),
        "{status:?}"
    );
    let pushback = status.metadata().get("grpc-retry-pushback-ms");
    assert_eq!(pushback.unwrap(), "2000");
    assert_eq!(
        held.await.unwrap().unwrap().into_inner().message,
        "hello, ada"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_answers_while_every_slot_is_taken() {
    let (admission, addr) = serve(one_slot()).await;
    let channel = channel(addr).await;
    let held = running(&admission, say_hello(channel.clone(), 500)).await;
    let check = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "greeter.Greeter".into(),
        })
        .await
        .unwrap();
    assert_eq!(check.into_inner().status(), ServingStatus::Serving);
    assert_eq!(admission.snapshot().in_flight, 1, "still saturated");
    held.await.unwrap().unwrap();
}

/// A rate no stream with gaps keeps up with: 1 MB/s after 200 ms.
fn strict_rate() -> AdmissionConfig {
    AdmissionConfig::default()
        .min_request_body_rate(MinDataRate::new(1_000_000, Duration::from_millis(200)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stream_with_long_gaps_is_not_cut_off() {
    let (admission, addr) = serve(strict_rate()).await;
    let reply = collect(channel(addr).await, 3, Duration::from_millis(400))
        .await
        .unwrap();
    assert_eq!(reply.message, "3 names: n0, n1, n2");
    assert!(eventually(|| admission.snapshot().in_flight == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_held_to_the_rate_are_cut_off_with_resource_exhausted() {
    let (admission, addr) = serve(strict_rate().min_rate_for_streams(true)).await;
    let status = collect(channel(addr).await, 3, Duration::from_millis(400))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("too slow: the request body moved slower than"),
        "{status:?}"
    );
    assert!(eventually(|| admission.snapshot().in_flight == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_reset_while_queued_or_running_leave_nothing_behind() {
    let config = AdmissionConfig::default()
        .max_concurrency(4)
        .adaptive_limit(false)
        .queue_capacity(100);
    let (admission, addr) = serve(config).await;
    // Many streams on one connection: four run, the rest queue.
    let channel = channel(addr).await;
    let calls: Vec<_> = (0..60)
        .map(|_| tokio::spawn(say_hello(channel.clone(), 2_000)))
        .collect();
    assert!(
        eventually(|| {
            let s = admission.snapshot();
            s.in_flight == 4 && s.queued == 56
        })
        .await
    );
    // Dropping the calls resets their streams.
    for call in &calls {
        call.abort();
    }
    assert!(
        eventually(|| {
            let s = admission.snapshot();
            s.in_flight == 0 && s.queued == 0
        })
        .await,
        "{:?}",
        admission.snapshot()
    );
    // And the pool serves on.
    say_hello(channel, 0).await.unwrap();
}
