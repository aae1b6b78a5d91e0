//! The request body as the handler sees it behind the layer: the client's body, cut off
//! when it arrives slower than the minimum rate.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use bytes::Buf;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::{controller::Controller, data_rate::BoxError};
use crate::{
    controller::progress::BodyProgress,
    data_rate::{Direction, MinDataRate, ReadMeter, TooSlow},
};

pin_project! {
    /// The request body an [`AdmissionService`](crate::AdmissionService) hands its inner
    /// service: the client's body, which fails with [`TooSlow`] once an admitted request's
    /// client sends it slower than the minimum rate
    /// ([`AdmissionConfig::min_request_body_rate`](crate::AdmissionConfig::min_request_body_rate)).
    /// The layer then answers `408 Request Timeout` and gives the request's slot and memory
    /// back at once.
    ///
    /// axum's `Router` takes it as it takes any body. A service written against hyper's
    /// `Incoming` takes `Request<MinRateBody<Incoming>>`:
    ///
    /// ```
    /// use http::{Request, Response};
    /// use http_body_util::{BodyExt, Full};
    /// use tower::{Layer, ServiceExt, service_fn};
    /// use tower_admission::{Admission, AdmissionConfig, ManualMemory, MinRateBody};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let admission = Admission::with_memory_source(
    ///     AdmissionConfig::default().memory_budget_bytes(1 << 30),
    ///     ManualMemory::new(0),
    /// )
    /// .unwrap();
    /// let echo = service_fn(|request: Request<MinRateBody<Full<bytes::Bytes>>>| async move {
    ///     let body = request.into_body().collect().await?.to_bytes();
    ///     Ok::<_, tower::BoxError>(Response::new(Full::new(body)))
    /// });
    /// let service = admission.layer().layer(echo);
    /// let response = service.oneshot(Request::new(Full::from("hi"))).await.unwrap();
    /// assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "hi");
    /// # }
    /// ```
    pub struct MinRateBody<B>
    where
        B: Body,
    {
        #[pin]
        inner: B,
        watch: Option<Watch>,
        // The last frame, held until the request's work may start (see `Watch::after_turn`); boxed,
        // for it is rarely held.
        last: Option<Box<Last<B>>>,
    }
}

/// A body's last frame, or its end.
type Last<B> = Polled<<B as Body>::Data>;

/// What a poll of the body yields: a frame, an error or the end.
type Polled<D> = Option<Result<Frame<D>, BoxError>>;

/// The metering of one admitted request's body.
#[derive(Debug)]
struct Watch {
    meter: ReadMeter,
    /// Fires when the wait in progress becomes too long, or makes the body's pace tell;
    /// made at the first wait.
    timer: Option<Pin<Box<Sleep>>>,
    progress: Arc<BodyProgress>,
    declared: u64,
    /// Whether the body is cut off below the rate; if not, the rate only lowers its charge.
    cuts: bool,
}

/// An admitted request's body progress, seen from its response future: the flag that says
/// it was cut off (the future then answers `408`), and the least it is charged.
#[derive(Debug, Clone)]
pub(crate) struct CutOff {
    progress: Arc<BodyProgress>,
    rate: MinDataRate,
}

impl CutOff {
    /// The error, once the body was cut off.
    pub(crate) fn too_slow(&self) -> Option<TooSlow> {
        self.progress
            .is_cut()
            .then(|| TooSlow::new(Direction::Request, self.rate))
    }

    /// What the body's request is charged at least, for its permit to follow.
    pub(crate) fn progress(&self) -> Arc<BodyProgress> {
        Arc::clone(&self.progress)
    }
}

impl<B: Body> MinRateBody<B> {
    /// The request, its body (declared `declared` bytes long) metered at `rate` unless it
    /// has none, and cut off below it if it `cuts`; the body's progress, for the response
    /// future and the permit. `pool`: where the request's work comes once its body has, the
    /// pool whose CPU gate holds its last frame until the work fits.
    pub(crate) fn metered(
        request: Request<B>,
        rate: Option<MinDataRate>,
        declared: u64,
        cuts: bool,
        pool: Option<Arc<Controller>>,
    ) -> (Request<Self>, Option<CutOff>) {
        match rate {
            Some(rate) if !request.body().is_end_stream() => {
                let progress = Arc::new(BodyProgress::new(declared, pool));
                let watch = Watch {
                    meter: ReadMeter::new(rate),
                    timer: None,
                    progress: Arc::clone(&progress),
                    declared,
                    cuts,
                };
                let cut = CutOff { progress, rate };
                (
                    request.map(|inner| Self::new(inner, Some(watch))),
                    Some(cut),
                )
            }
            _ => (Self::unmetered(request), None),
        }
    }

    /// The request, its body passed through as it is.
    pub(crate) fn unmetered(request: Request<B>) -> Request<Self> {
        request.map(|inner| Self::new(inner, None))
    }

    fn new(inner: B, watch: Option<Watch>) -> Self {
        Self {
            inner,
            watch,
            last: None,
        }
    }
}

impl<B> Body for MinRateBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let Some(watch) = this.watch else {
            return this.inner.poll_frame(cx).map_err(Into::into);
        };
        if watch.progress.is_cut() {
            return Poll::Ready(Some(Err(watch.too_slow())));
        }
        if let Some(last) = this.last.take() {
            return watch.after_turn(*last, this.last, cx);
        }
        let mut inner = this.inner;
        match inner.as_mut().poll_frame(cx) {
            Poll::Ready(frame) => {
                let bytes = match &frame {
                    Some(Ok(frame)) => frame.data_ref().map_or(0, |data| data.remaining()),
                    _ => 0,
                };
                let now = Instant::now();
                watch.meter.received(bytes as u64, now);
                let done = frame.is_none() || inner.is_end_stream();
                watch.update_progress(now, done);
                let frame = frame.map(|frame| frame.map_err(Into::into));
                match done {
                    true => watch.after_turn(frame, this.last, cx),
                    false => Poll::Ready(frame),
                }
            }
            // A stream is not cut off; its pace only lowers its charge, at each poll.
            Poll::Pending if !watch.cuts => {
                watch.update_progress(Instant::now(), false);
                Poll::Pending
            }
            Poll::Pending => loop {
                let now = Instant::now();
                let deadline = watch.meter.wait(now);
                if deadline <= now {
                    watch.progress.cut();
                    return Poll::Ready(Some(Err(watch.too_slow())));
                }
                watch.update_progress(now, false);
                let wake_at = match watch.meter.pace_known_at() {
                    Some(at) if at > now => at.min(deadline),
                    _ => deadline,
                };
                let timer = watch
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(wake_at)));
                if timer.deadline() != wake_at {
                    timer.as_mut().reset(wake_at);
                }
                ready!(timer.as_mut().poll(cx));
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Watch {
    /// Hands the `last` frame over once the request's work may start; until then keeps it in
    /// `held`, and the gate wakes the task when the work charged falls.
    fn after_turn<D>(
        &self,
        last: Polled<D>,
        held: &mut Option<Box<Polled<D>>>,
        cx: &mut Context<'_>,
    ) -> Poll<Polled<D>> {
        if self.progress.take_turn(cx.waker()) {
            Poll::Ready(last)
        } else {
            *held = Some(Box::new(last));
            Poll::Pending
        }
    }

    fn too_slow(&self) -> BoxError {
        Box::new(TooSlow::new(Direction::Request, self.meter.rate()))
    }

    /// Tells the rest of the layer how the body goes: the least to charge for it, and how
    /// long the handler has waited for it (`done`: it has all arrived).
    fn update_progress(&self, now: Instant, done: bool) {
        self.progress
            .set_floor(self.meter.floor(self.declared, now));
        self.progress
            .set_waited((!done).then(|| self.meter.waited(now)));
    }
}

impl<B: Body> std::fmt::Debug for MinRateBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MinRateBody")
            .field("watch", &self.watch)
            .finish_non_exhaustive()
    }
}

/// The request's `Content-Length`, if it declares a valid one.
pub(crate) fn declared_length<B>(request: &Request<B>) -> Option<u64> {
    request
        .headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}
