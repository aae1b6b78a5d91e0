//! Serving the way a service behind tower-admission should be served, ready to copy: hyper's
//! connection builder rather than `axum::serve`, for the timeouts that `axum::serve` does
//! not expose.
//!
//! - **Header read timeout** (slowloris): a client that trickles its request headers holds
//!   a connection, never a permit, and for [`HEADER_READ_TIMEOUT`] at most.
//! - **Write stall timeout**: a client that stops reading its response holds the request's
//!   permit (it lasts until the body is sent). After [`WRITE_STALL_TIMEOUT`] without progress
//!   the connection is closed, which drops the body and gives the permit back.
//! - **Request timeout** ([`request_timeout`], a layer inside the admission layer): a handler
//!   that takes longer than [`REQUEST_TIMEOUT`] answers 504 and gives its permit back.
//! - **Request body limit**: `/ingest` reads at most 64 MiB (see `routes`); the admission
//!   layer answers 413 at once to a `Content-Length` above the whole memory budget.
//! - **Graceful shutdown** on SIGINT or SIGTERM: stop accepting, call `on_shutdown` (the
//!   server closes its admission pool there, so queued requests get 503 + `Retry-After` at
//!   once instead of waiting out their deadline), let admitted requests finish, for
//!   [`DRAIN_TIMEOUT`] at most.

use std::{net::SocketAddr, pin::pin, time::Duration};

use axum::{Router, http::StatusCode};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_io_timeout::TimeoutStream;
use tower_http::timeout::TimeoutLayer;

/// The longest a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a response write may wait for the client to read.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a handler may take to answer; above `/work`'s longest hold (60 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);
/// The longest shutdown waits for admitted requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The per-request timeout: 504 when a handler takes longer than [`REQUEST_TIMEOUT`]. Put it
/// inside the admission layer, so that it times the handler and not the queue (which has its
/// own timeout).
pub fn request_timeout() -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, REQUEST_TIMEOUT)
}

/// Serves `app` on `addr` until SIGINT or SIGTERM, then calls `on_shutdown` and drains.
pub async fn serve(
    app: Router,
    addr: SocketAddr,
    on_shutdown: impl FnOnce(),
) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let graceful = GracefulShutdown::new();
    let mut signal = pin!(shutdown_signal());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors, most likely: back off rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut signal => break,
        };
        let watcher = graceful.watcher();
        let app = app.clone();
        tokio::spawn(async move {
            let mut builder = Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT);
            let connection =
                builder.serve_connection(with_write_timeout(stream), TowerToHyperService::new(app));
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    on_shutdown();
    tracing::info!(
        connections = graceful.count(),
        "shutting down: draining admitted requests"
    );
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("requests still running after {DRAIN_TIMEOUT:?}; stopping anyway");
        }
    }
    Ok(())
}

/// `stream`, whose writes fail once they have waited [`WRITE_STALL_TIMEOUT`] for the client.
fn with_write_timeout(stream: TcpStream) -> TokioIo<std::pin::Pin<Box<TimeoutStream<TcpStream>>>> {
    let _ = stream.set_nodelay(true);
    let mut stream = TimeoutStream::new(stream);
    stream.set_write_timeout(Some(WRITE_STALL_TIMEOUT));
    TokioIo::new(Box::pin(stream))
}

/// SIGINT (Ctrl-C) or SIGTERM. A signal that cannot be listened for is logged and waits
/// forever, so the other still stops the server.
async fn shutdown_signal() {
    let interrupt = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C; SIGTERM still stops the server");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; Ctrl-C still stops the server");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
}
