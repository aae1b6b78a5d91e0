//! [`AdmissionListener`]: connections count too.
//!
//! The layer sees requests; a connection costs memory before its first request and between
//! two (buffers, its task: about 28 KiB an idle HTTP/1 or HTTP/2 connection with the
//! example server, measured over 2,000 of them), and a flood of new ones costs accept work
//! and memory before any request reaches a layer. A listener made from the pool
//! ([`Admission::listener`](crate::Admission::listener)):
//!
//! - **counts** every connection it accepts, and holds its bytes in the memory spoken for
//!   while it is open (4 KiB until its first bytes come, 28 KiB from then on): admission
//!   sees a flood of connections at once, not at the next reading. An HTTP/1 request then
//!   holds nothing more for its connection;
//! - **stops accepting** while the memory spoken for is over the budget, or
//!   `ADMISSION_MAX_CONNECTIONS` are open, and resumes once there is room (checked on every
//!   close and every sample). The kernel's backlog holds the connections that come
//!   meanwhile; a client whose deadline passes there gives up without costing the server
//!   anything;
//! - **gives idle connections back**: while memory spoken for is within a sixteenth of the
//!   budget, or accepts wait for room, each sample asks a few of the connections that have
//!   had neither a request nor a byte for a second or more to close, oldest idle first
//!   (one that has never sent a byte is left to the server's header timeout). Only
//!   connections whose requests are counted ([`ConnectionHandle::track`]) can be idle, and
//!   only a server that listens for [`ConnectionHandle::closing`] can close one: hyper's
//!   graceful shutdown closes an idle HTTP/1 connection at once and lets a request in
//!   flight finish, and sends HTTP/2's `GOAWAY`. A request in flight is never cut.
//!
//! Counted in `admission_connections`, `admission_accept_pauses_total` and
//! `admission_idle_connections_closed_total` (and [`Snapshot`](crate::Snapshot)). Every
//! connection the pool's requests come on should come through the listener; where one
//! does not, its HTTP/1 requests are not charged for their connection while they wait.
//!
//! What it cannot see: connections a proxy in front holds (it sees the proxy's), and TLS
//! terminated elsewhere; TLS terminated in the process adds its buffers (tens of KiB) to
//! each connection, uncounted.
//!
//! With hyper's connection builder, the way the example server serves:
//!
//! ```no_run
//! use std::pin::pin;
//!
//! use axum::{Router, routing::get};
//! use hyper_util::{
//!     rt::{TokioExecutor, TokioIo},
//!     server::conn::auto::Builder,
//!     service::TowerToHyperService,
//! };
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let admission = tower_admission::Admission::from_env()?;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(admission.layer());
//! let mut listener = admission.listener(tokio::net::TcpListener::bind("127.0.0.1:3000").await?);
//! loop {
//!     // Waits while there is no room for one more connection.
//!     let (stream, _peer) = listener.accept().await?;
//!     let connection = stream.handle();
//!     let service = TowerToHyperService::new(connection.track(app.clone()));
//!     tokio::spawn(async move {
//!         let builder = Builder::new(TokioExecutor::new());
//!         let mut served = pin!(builder.serve_connection(TokioIo::new(stream), service));
//!         tokio::select! {
//!             _ = served.as_mut() => return,
//!             () = connection.closing() => served.as_mut().graceful_shutdown(),
//!         }
//!         let _ = served.await;
//!     });
//! }
//! # }
//! ```
//!
//! With `axum::serve` (feature `axum`), connections are counted and accepting pauses, but
//! none is given back: `axum::serve` shuts connections down only all at once.
//!
#![cfg_attr(feature = "axum", doc = "```no_run")]
#![cfg_attr(not(feature = "axum"), doc = "```ignore")]
//! # use axum::{Router, routing::get};
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let admission = tower_admission::Admission::from_env()?;
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(admission.layer());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(admission.listener(listener), app).await?;
//! # Ok(()) }
//! ```
//!
//! With tonic (feature `tonic`), `serve_with_incoming(listener.incoming())`: counted, and
//! accepting pauses.

use std::{
    future::{Future, poll_fn},
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Weak},
    task::{Context, Poll},
};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tower_service::Service;

use crate::controller::{Controller, accepting::OpenConnection};

/// A TCP listener that counts the connections it accepts against its admission pool (see
/// the [module](self)): made by [`Admission::listener`](crate::Admission::listener).
#[derive(Debug)]
pub struct AdmissionListener {
    inner: TcpListener,
    controller: Arc<Controller>,
}

impl AdmissionListener {
    pub(crate) fn new(inner: TcpListener, controller: Arc<Controller>) -> Self {
        Self { inner, controller }
    }

    /// Waits until there is room for one more connection, then accepts it.
    ///
    /// An error is the listener's (out of file descriptors, most likely): the caller decides
    /// whether to back off and retry.
    pub async fn accept(&mut self) -> io::Result<(Connection<TcpStream>, SocketAddr)> {
        let controller = &self.controller;
        poll_fn(|cx| controller.poll_accept(cx)).await;
        let (stream, peer) = self.inner.accept().await?;
        let open = Arc::new(controller.open_connection());
        Ok((Connection { io: stream, open }, peer))
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// The connections it accepts, as a stream, for tonic's `serve_with_incoming`. An
    /// accept that fails is yielded after 100 ms (out of file descriptors, most likely: the
    /// next would fail too).
    #[cfg(feature = "tonic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
    pub fn incoming(self) -> Incoming {
        Incoming {
            listener: Some(self),
            accepting: None,
        }
    }
}

/// The stream of [`AdmissionListener::incoming`].
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
#[must_use = "streams do nothing unless polled"]
pub struct Incoming {
    listener: Option<AdmissionListener>,
    accepting: Option<Pin<Box<dyn Future<Output = Accepted> + Send>>>,
}

#[cfg(feature = "tonic")]
type Accepted = (AdmissionListener, io::Result<Connection<TcpStream>>);

#[cfg(feature = "tonic")]
impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Incoming").finish_non_exhaustive()
    }
}

#[cfg(feature = "tonic")]
impl futures_core::Stream for Incoming {
    type Item = io::Result<Connection<TcpStream>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(mut listener) = self.listener.take() {
            self.accepting = Some(Box::pin(async move {
                let accepted = listener.accept().await.map(|(connection, _)| connection);
                if accepted.is_err() {
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                (listener, accepted)
            }));
        }
        let Some(accepting) = self.accepting.as_mut() else {
            return Poll::Ready(None);
        };
        let (listener, accepted) = std::task::ready!(accepting.as_mut().poll(cx));
        self.accepting = None;
        self.listener = Some(listener);
        Poll::Ready(Some(accepted))
    }
}

/// How long an accept that failed waits before the next.
#[cfg(any(feature = "axum", feature = "tonic"))]
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

#[cfg(feature = "axum")]
impl axum::serve::Listener for AdmissionListener {
    type Io = Connection<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match AdmissionListener::accept(self).await {
                Ok(accepted) => return accepted,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        AdmissionListener::local_addr(self)
    }
}

pin_project! {
    /// An accepted connection: its stream, counted by the pool until dropped.
    #[derive(Debug)]
    pub struct Connection<IO> {
        #[pin]
        io: IO,
        open: Arc<OpenConnection>,
    }
}

impl<IO> Connection<IO> {
    /// What counts its requests and tells when the pool asks it to close.
    pub fn handle(&self) -> ConnectionHandle {
        ConnectionHandle {
            open: Arc::downgrade(&self.open),
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: AsyncRead> AsyncRead for Connection<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let read = this.io.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.open.received();
        }
        read
    }
}

impl<IO: AsyncWrite> AsyncWrite for Connection<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(feature = "tonic")]
impl tonic::transport::server::Connected for Connection<TcpStream> {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::Connected::connect_info(&self.io)
    }
}

/// One connection as its server sees it: its requests counted, so that the pool can tell
/// when it is idle, and the pool's request that it close.
///
/// ```
/// # #[tokio::main] async fn main() -> std::io::Result<()> {
/// use tokio::net::{TcpListener, TcpStream};
/// use tower_admission::{Admission, AdmissionConfig, ManualMemory};
///
/// let config = AdmissionConfig::default();
/// let admission = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
/// let mut listener = admission.listener(TcpListener::bind("127.0.0.1:0").await?);
/// let _client = TcpStream::connect(listener.local_addr()?).await?;
/// let (stream, _peer) = listener.accept().await?;
/// let connection = stream.handle();
/// // The service hyper serves on this connection: its requests count on it.
/// let _service = connection.track(axum::Router::<()>::new());
/// // In the connection's task, beside the connection future: once this resolves, shut the
/// // connection down gracefully.
/// let _closing = connection.closing();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionHandle {
    open: Weak<OpenConnection>,
}

impl ConnectionHandle {
    /// `service`, counting the connection's requests until their response bodies end: the
    /// connection is idle, and may be asked to close under pressure, only while none is in
    /// flight.
    pub fn track<S>(&self, service: S) -> Tracked<S> {
        if let Some(open) = self.open.upgrade() {
            open.link().track();
        }
        Tracked {
            inner: service,
            open: self.open.clone(),
        }
    }

    /// Resolves once the pool asks the connection to close (it has been idle a while and
    /// memory is short): shut it down gracefully then. Also resolves once the connection
    /// is gone.
    pub fn closing(&self) -> Closing {
        Closing {
            open: self.open.clone(),
        }
    }
}

/// The future of [`ConnectionHandle::closing`].
#[derive(Debug)]
#[must_use = "futures do nothing unless polled"]
pub struct Closing {
    open: Weak<OpenConnection>,
}

impl Future for Closing {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.open.upgrade() {
            Some(open) => open.link().poll_closing(cx),
            None => Poll::Ready(()),
        }
    }
}

/// A service whose requests count on their connection (see [`ConnectionHandle::track`]).
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
    open: Weak<OpenConnection>,
}

/// A request counted on its connection until dropped.
#[derive(Debug)]
struct OnConnection(Weak<OpenConnection>);

impl OnConnection {
    fn begin(open: &Weak<OpenConnection>) -> Self {
        if let Some(open) = open.upgrade() {
            open.link().began();
        }
        Self(open.clone())
    }
}

impl Drop for OnConnection {
    fn drop(&mut self) {
        if let Some(open) = self.0.upgrade() {
            open.request_ended();
        }
    }
}

impl<S, B, ResBody> Service<Request<B>> for Tracked<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Response = Response<TrackedBody<ResBody>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        TrackedFuture {
            on: Some(OnConnection::begin(&self.open)),
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// The response future of [`Tracked`].
    #[derive(Debug)]
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        on: Option<OnConnection>,
    }
}

impl<F, ResBody, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
{
    type Output = Result<Response<TrackedBody<ResBody>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let on = this.on.take();
        Poll::Ready(Ok(response.map(|inner| TrackedBody { inner, _on: on })))
    }
}

pin_project! {
    /// A response body whose request counts on its connection until the body ends.
    #[derive(Debug)]
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        _on: Option<OnConnection>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
