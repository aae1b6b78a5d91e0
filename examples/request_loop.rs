//! Runs N requests through the layer with the real jemalloc source, for profilers: it shows
//! that the request path makes no `mallctl` call (the sampler's refresh is the only caller).
//!
//! ```sh
//! cargo build --release --example request_loop
//! for n in 1000 10000; do
//!   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.$n target/release/examples/request_loop $n
//!   python3 benches/count_calls.py /tmp/cg.$n mallctl
//! done
//! ```
//!
//! The sampler interval is an hour, so after start-up the sampler sleeps: any `mallctl` call
//! counted beyond start-up would come from the request path, and the two counts would differ.

use std::{convert::Infallible, hint::black_box, time::Duration};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_admission::{Admission, AdmissionConfig};

#[global_allocator]
static GLOBAL: tower_admission::Jemalloc = tower_admission::Jemalloc;

fn main() {
    let requests: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let config = AdmissionConfig::default()
        .memory_budget_bytes(1 << 30)
        .sample_interval(Duration::from_secs(3600));
    let admission = Admission::new(config).expect("jemalloc is the global allocator");
    let mut service = admission.layer().layer(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    }));
    // Let the sampler take its first reading, so that start-up is the same for every N.
    std::thread::sleep(Duration::from_millis(300));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        for _ in 0..requests {
            let response = service
                .ready()
                .await
                .unwrap()
                .call(Request::new(()))
                .await
                .unwrap();
            black_box(response);
        }
    });
    println!("{requests} requests admitted: {:?}", admission.snapshot());
}
