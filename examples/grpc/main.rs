//! A tonic gRPC server behind tower-admission: a greeter whose `SayHello` works for as long
//! as the request asks, and the standard health service, which bypasses admission.
//!
//! Run with
//!
//! ```text
//! ADMISSION_MAX_CONCURRENCY=1 ADMISSION_QUEUE_CAPACITY=0 cargo run --features tonic --example grpc
//! ```
//!
//! and call it with any gRPC client (`greeter.rs` has the messages): while one `SayHello`
//! with `work_ms: 2000` runs, the next gets `UNAVAILABLE` with the reason and the limit in
//! its message and `grpc-retry-pushback-ms` in its metadata, and `grpc.health.v1.Health/Check`
//! still answers `SERVING`.
//!
//! Connections come through the pool's listener (`AdmissionListener::incoming`, feature
//! `tonic`): counted against the memory budget, accepting paused when there is no room.
//!
//! Configuration comes from the `ADMISSION_*` variables and `LISTEN_ADDR` (default
//! `127.0.0.1:50051`). A bad configuration exits with status 2 before the port is bound;
//! any other failure with status 1.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use tonic::transport::Server;
use tower_admission::{Admission, AdmissionConfig};

mod greeter;

#[global_allocator]
static GLOBAL: tower_admission::Jemalloc = tower_admission::Jemalloc;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let addr: SocketAddr = match std::env::var("LISTEN_ADDR").as_deref() {
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 50051)),
        Ok(text) => match text.parse() {
            Ok(addr) => addr,
            Err(_) => {
                eprintln!(
                    "LISTEN_ADDR={text:?} is not valid: expected an address such as 127.0.0.1:50051"
                );
                return ExitCode::from(2);
            }
        },
    };
    // Health checks skip admission: a probe stuck behind the work it reports on is useless.
    let config = AdmissionConfig::default().bypass(["/grpc.health.v1.Health/"]);
    let admission = match config.apply_env().and_then(Admission::new) {
        Ok(admission) => admission,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    println!("{admission}");
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("greeter.Greeter", tonic_health::ServingStatus::Serving)
        .await;
    // tonic lifts hyper's HTTP/2 limits unless they are set: set them back.
    let router = Server::builder()
        .max_concurrent_streams(Some(200))
        .http2_max_pending_accept_reset_streams(Some(20))
        .http2_max_local_error_reset_streams(Some(1024))
        .timeout(Duration::from_secs(90))
        .layer(admission.layer())
        .add_service(health_service)
        .add_service(greeter::GreeterServer);
    let served = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            router
                .serve_with_incoming(admission.listener(listener).incoming())
                .await
        }
        Err(error) => {
            eprintln!("cannot listen on {addr}: {error}");
            return ExitCode::FAILURE;
        }
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}
