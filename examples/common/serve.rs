//! Serving the way a service behind tower-admission should be served, ready to copy: hyper's
//! connection builder rather than `axum::serve`, for the timeouts that `axum::serve` does
//! not expose.
//!
//! - **Header read timeout** (slowloris): a client that trickles its request headers holds
//!   a connection, never a permit, and for [`HEADER_READ_TIMEOUT`] at most; it also ends
//!   an idle HTTP/1 keep-alive connection.
//! - **Idle timeout**: a connection with no request for [`IDLE_TIMEOUT`] is shut down
//!   gracefully (HTTP/2 has no header read timeout: an idle h2c connection would stay open
//!   forever, a file descriptor and ~9 KiB each).
//! - **Write stall timeout**: a client that stops reading its response holds the request's
//!   permit (it lasts until the body is sent). After [`WRITE_STALL_TIMEOUT`] without progress
//!   the connection is closed, which drops the body and gives the permit back.
//! - **Request timeout** ([`request_timeout`], a layer inside the admission layer): a handler
//!   that takes longer than [`REQUEST_TIMEOUT`] answers 504 and gives its permit back.
//! - **Request body limit**: `/ingest` reads at most 64 MiB (see `routes`); the admission
//!   layer answers 413 at once to a `Content-Length` above the whole memory budget.
//! - **Connections counted** (with [`Listener::Admission`], the admission pool's listener):
//!   each holds its bytes in the memory spoken for while open, accepting pauses while there
//!   is no room for one more, and idle connections are shut down gracefully when the pool
//!   asks.
//! - **Graceful shutdown** on SIGINT or SIGTERM: stop accepting, call `on_shutdown` (the
//!   server closes its admission pool there, so queued requests get 503 + `Retry-After` at
//!   once instead of waiting out their deadline), let admitted requests finish, for
//!   [`DRAIN_TIMEOUT`] at most.

use std::{
    net::SocketAddr,
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use axum::{Router, body::Body, extract::Request, http::StatusCode, response::Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};
use tokio_io_timeout::TimeoutStream;
use tower::ServiceBuilder;
use tower_admission::AdmissionListener;
use tower_http::timeout::TimeoutLayer;

/// The longest a client may take to send its request headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a response write may wait for the client to read.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest a handler may take to answer; above `/work`'s longest hold (60 s).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);
/// The longest shutdown waits for admitted requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The most an HTTP/1 connection's read buffer may grow to. hyper grows it for large bodies
/// (to ~400 KiB by default) and keeps it as long as the connection lives, idle or queued.
pub const READ_BUFFER_MAX: usize = 16 << 10;
/// The longest a connection may go without a request (between this and twice this).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);

/// The per-request timeout: 504 when a handler takes longer than [`REQUEST_TIMEOUT`]. Put it
/// inside the admission layer, so that it times the handler and not the queue (which has its
/// own timeout).
pub fn request_timeout() -> TimeoutLayer {
    TimeoutLayer::with_status_code(StatusCode::GATEWAY_TIMEOUT, REQUEST_TIMEOUT)
}

/// Where connections come from.
pub enum Listener {
    /// The admission pool's listener: connections counted, idle ones given back.
    #[allow(dead_code, reason = "the comparison server has no pool")]
    Admission(AdmissionListener),
    /// A plain listener, for servers without a pool (or to compare without counting).
    Plain(TcpListener),
}

impl Listener {
    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Self::Admission(listener) => listener.local_addr(),
            Self::Plain(listener) => listener.local_addr(),
        }
    }
}

/// Serves `app` on `listener` until SIGINT or SIGTERM, then calls `on_shutdown` and drains.
pub async fn serve(
    app: Router,
    mut listener: Listener,
    on_shutdown: impl FnOnce(),
) -> std::io::Result<()> {
    println!("listening on http://{}", listener.local_addr()?);
    let (shutdown, shutting_down) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut signal = pin!(shutdown_signal());
    loop {
        let accept = async {
            match &mut listener {
                Listener::Admission(listener) => listener.accept().await.map(|(stream, _)| {
                    let _ = stream.get_ref().set_nodelay(true);
                    Stream::Counted(stream)
                }),
                Listener::Plain(listener) => listener.accept().await.map(|(stream, _)| {
                    let _ = stream.set_nodelay(true);
                    Stream::Plain(stream)
                }),
            }
        };
        let stream = tokio::select! {
            accepted = accept => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, most likely: back off rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            // Ended connections are reaped as they end, not at the next accept: while the
            // listener pauses, each would keep its task's memory.
            Some(_) = connections.join_next() => continue,
            _ = &mut signal => break,
        };
        let activity = Activity::default();
        let service = activity.track(app.clone());
        let shutting_down = shutting_down.clone();
        match stream {
            Stream::Counted(stream) => {
                let handle = stream.handle();
                let service = handle.track(service);
                let closing = handle.closing();
                connections.spawn(serve_connection(
                    stream,
                    service,
                    activity,
                    shutting_down,
                    closing,
                ));
            }
            Stream::Plain(stream) => {
                let closing = std::future::pending();
                connections.spawn(serve_connection(
                    stream,
                    service,
                    activity,
                    shutting_down,
                    closing,
                ));
            }
        }
    }
    drop(listener);
    on_shutdown();
    tracing::info!(
        connections = connections.len(),
        "shutting down: draining admitted requests"
    );
    let _ = shutdown.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    tokio::select! {
        () = drained => tracing::info!("drained"),
        () = tokio::time::sleep(DRAIN_TIMEOUT) => {
            tracing::warn!("requests still running after {DRAIN_TIMEOUT:?}; stopping anyway");
        }
    }
    Ok(())
}

/// An accepted stream: counted by the admission pool or not.
enum Stream {
    Counted(tower_admission::Connection<TcpStream>),
    Plain(TcpStream),
}

/// Serves one connection until it ends, goes idle for [`IDLE_TIMEOUT`], the pool asks it to
/// close (`closing`), or the server shuts down; then shuts it down gracefully (HTTP/2:
/// `GOAWAY`, and its streams run to the end).
async fn serve_connection<IO, S, B>(
    stream: IO,
    service: S,
    activity: Activity,
    mut shutting_down: watch::Receiver<bool>,
    closing: impl std::future::Future<Output = ()>,
) where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    S: tower::Service<Request<Incoming>, Response = Response<B>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(READ_BUFFER_MAX);
    let service = TowerToHyperService::new(service);
    let connection = builder.serve_connection(with_write_timeout(stream), service);
    let mut connection = pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => Some(ended),
        _ = shutting_down.wait_for(|down| *down) => None,
        () = activity.idle(IDLE_TIMEOUT) => None,
        () = closing => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            connection.as_mut().graceful_shutdown();
            // HTTP/2 says goodbye with a ping: a peer that never answers is dropped once the
            // connection has been idle a while longer.
            tokio::select! {
                ended = connection.as_mut() => ended,
                () = activity.idle(IDLE_TIMEOUT) => Ok(()),
            }
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// A connection's requests: how many began, and a token each holds until its response body
/// is done.
#[derive(Default)]
struct Activity {
    began: Arc<AtomicU64>,
    token: Arc<()>,
}

impl Activity {
    /// `app`, with each request and its response body holding a token.
    fn track(
        &self,
        app: Router,
    ) -> impl tower::Service<
        Request<Incoming>,
        Response = Response,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone
    + Send
    + use<> {
        // Weak: the token's count is that of requests and bodies, not of these closures.
        let began = Arc::clone(&self.began);
        let (requests, responses) = (Arc::downgrade(&self.token), Arc::downgrade(&self.token));
        ServiceBuilder::new()
            .map_request(move |mut request: Request<Incoming>| {
                began.fetch_add(1, Relaxed);
                if let Some(token) = requests.upgrade() {
                    request.extensions_mut().insert(token);
                }
                request
            })
            .map_response(move |response: Response| {
                let token = responses.upgrade();
                response.map(|body| {
                    Body::new(body.map_frame(move |frame| {
                        let _held = &token;
                        frame
                    }))
                })
            })
            .service(app)
    }

    /// Returns once no request has begun and none has been in progress for `timeout`.
    async fn idle(&self, timeout: Duration) {
        let mut began = self.began.load(Relaxed);
        loop {
            tokio::time::sleep(timeout).await;
            let now = self.began.load(Relaxed);
            if now == began && Arc::strong_count(&self.token) == 1 {
                return;
            }
            began = now;
        }
    }
}

/// `stream`, whose writes fail once they have waited [`WRITE_STALL_TIMEOUT`] for the client.
fn with_write_timeout<IO: AsyncRead + AsyncWrite>(
    stream: IO,
) -> TokioIo<std::pin::Pin<Box<TimeoutStream<IO>>>> {
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
