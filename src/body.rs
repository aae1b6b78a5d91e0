//! The response body, which carries the admission permit until the body ends, and the
//! layer's own answers (a rejection, `408` for a request body too slow), which it carries too.

use std::{
    pin::Pin,
    sync::{Arc, Mutex, PoisonError, Weak},
    task::{Context, Poll, Waker},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

use tokio::time::Instant;

use crate::{
    controller::permit::Permit,
    data_rate::{BoxError, Direction, MinDataRate, TooSlow, WriteMeter},
    grpc::{self, Code, Dialect},
    rejection::Rejection,
    rejection::{Limit, Reason},
};

pin_project! {
    /// The body of a response that passed through [`AdmissionService`](crate::AdmissionService):
    /// the inner service's body, which holds the request's slot and memory reservation until
    /// it ends or is dropped, or the layer's own answer (a rejection, or `408` for a request
    /// body too slow).
    ///
    /// Holding the permit for the body's lifetime matters for streaming responses: the
    /// handler has returned, but the work (and its memory) goes on until the last frame. A
    /// client that takes the body slower than the minimum rate ([`min_response_body_rate`])
    /// does not hold it longer: the body then fails with [`TooSlow`](crate::TooSlow) and the
    /// permit goes back.
    ///
    /// ```
    /// use http::{Request, Response};
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Empty, Full};
    /// use tower::{Layer, ServiceExt, service_fn};
    /// use tower_admission::{Admission, AdmissionConfig, ManualMemory, MinRateBody};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let config = AdmissionConfig::default().memory_budget_bytes(1 << 30);
    /// let admission = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
    /// let handler = |_: Request<MinRateBody<Empty<Bytes>>>| async {
    ///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("hi"))))
    /// };
    /// let service = admission.layer().layer(service_fn(handler));
    /// let response = service.oneshot(Request::new(Empty::new())).await.unwrap();
    /// assert_eq!(admission.snapshot().in_flight, 1, "the body holds the permit");
    /// let body = response.into_body().collect().await.unwrap().to_bytes();
    /// assert_eq!(body, "hi");
    /// assert_eq!(admission.snapshot().in_flight, 0, "released when the body ended");
    /// # }
    /// ```
    ///
    /// [`min_response_body_rate`]: crate::AdmissionConfig::min_response_body_rate
    pub struct AdmissionBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner {
            #[pin]
            body: B,
            holder: Holder,
        },
        Own {
            rejection: Option<Rejection>,
            #[pin]
            body: Full<Bytes>,
        },
    }
}

/// What an admitted response holds until its body ends: the permit, and the meter of how
/// fast the client takes the body. Inline, or shared with a watchdog once the body streams.
#[derive(Debug)]
// Inline saves an allocation per response; the shared form is for bodies that stream.
#[allow(clippy::large_enum_variant)]
enum Holder {
    Inline(Guard),
    /// The watchdog goes with the body.
    Watched(Arc<Mutex<Guard>>, #[allow(dead_code)] Watchdog),
}

#[derive(Debug, Default)]
struct Guard {
    permit: Option<Permit>,
    meter: Option<WriteMeter>,
    /// Over HTTP/2: large frames are handed over in slices.
    slices: bool,
    /// What is left of a frame handed over in slices (boxed: rare, and the guard is moved
    /// with every response).
    rest: Option<Box<Bytes>>,
    /// The body's task, woken if the watchdog cuts the body off.
    waker: Option<Waker>,
    /// Cut off for being too slow (the meter says at which rate).
    cut: bool,
}

impl Guard {
    fn rest_len(&self) -> usize {
        self.rest.as_ref().map_or(0, |rest| rest.len())
    }

    /// Ends the body for being too slow: the permit goes back now.
    fn cut(&mut self, slow: TooSlow) {
        if let Some(permit) = self.permit.take() {
            permit.cut_off(slow);
        }
        self.cut = true;
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }
}

/// An empty body, as the bodies of axum, hyper and tower-http are by default: layers such
/// as tower-http's `TimeoutLayer` build their own answers with it.
///
/// ```
/// use http_body::Body;
/// use tower_admission::AdmissionBody;
///
/// let body = AdmissionBody::<http_body_util::Empty<bytes::Bytes>>::default();
/// assert!(body.is_end_stream());
/// assert!(body.rejection().is_none());
/// ```
impl<B> Default for AdmissionBody<B> {
    fn default() -> Self {
        Self::own(None, Bytes::new())
    }
}

impl<B> AdmissionBody<B> {
    /// The inner service's body, holding `permit` (if admitted) until it ends, and cut off
    /// once its client takes it slower than `rate`. With `watched`, the server must ask for
    /// the body within the grace period, or it is cut off, and large frames go in slices: an
    /// HTTP/2 server asks only once the client's flow-control window lets it send, and a
    /// client may keep it shut.
    #[inline]
    pub(crate) fn admitted(
        body: B,
        permit: Option<Permit>,
        rate: Option<MinDataRate>,
        watched: bool,
    ) -> Self {
        let meter = rate.filter(|_| permit.is_some()).map(WriteMeter::new);
        if watched && meter.is_some() {
            return Self::watched_from_start(body, permit, meter);
        }
        Self {
            kind: Kind::Inner {
                body,
                holder: Holder::Inline(Guard {
                    permit,
                    meter,
                    ..Guard::default()
                }),
            },
        }
    }

    /// [`admitted`](Self::admitted), watched from the start: the server must ask for the body
    /// within the grace period.
    #[cold]
    fn watched_from_start(body: B, permit: Option<Permit>, meter: Option<WriteMeter>) -> Self {
        let mut guard = Guard {
            permit,
            meter,
            slices: true,
            ..Guard::default()
        };
        let runtime = tokio::runtime::Handle::try_current();
        let holder = match (runtime, guard.meter.as_mut()) {
            (Ok(runtime), Some(meter)) => {
                let first_ask = meter.handed(0, Instant::now());
                let shared = Arc::new(Mutex::new(guard));
                let dog = runtime.spawn(watchdog(Arc::downgrade(&shared), first_ask));
                Holder::Watched(shared, Watchdog(dog.abort_handle()))
            }
            _ => Holder::Inline(guard),
        };
        Self {
            kind: Kind::Inner { body, holder },
        }
    }

    /// The layer's own response: a rejection, or a `408` for a request body too slow.
    pub(crate) fn own(rejection: Option<Rejection>, text: Bytes) -> Self {
        Self {
            kind: Kind::Own {
                rejection,
                body: Full::new(text),
            },
        }
    }

    /// Why the layer rejected the request, if this is the layer's own `503` or `413`.
    ///
    /// Carried in the body rather than the response extensions, which would cost two
    /// allocations per rejection on the path that must stay cheapest under overload.
    pub fn rejection(&self) -> Option<Rejection> {
        match &self.kind {
            Kind::Own { rejection, .. } => *rejection,
            Kind::Inner { .. } => None,
        }
    }
}

impl<B> std::fmt::Debug for AdmissionBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Own { .. } => "Own",
        };
        f.debug_tuple("AdmissionBody").field(&kind).finish()
    }
}

impl<B> Body for AdmissionBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body, holder } => {
                let (frame, hand_over) = match holder {
                    Holder::Inline(guard) => poll_guarded(body, guard, cx),
                    Holder::Watched(shared, _) => poll_guarded(body, &mut lock(shared), cx),
                };
                if let (Holder::Inline(guard), Some(deadline)) = (&mut *holder, hand_over) {
                    // The body streams and its client may stall, when the server stops
                    // asking for frames: a watchdog must be able to cut it off.
                    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                        let shared = Arc::new(Mutex::new(std::mem::take(guard)));
                        let dog = runtime.spawn(watchdog(Arc::downgrade(&shared), deadline));
                        *holder = Holder::Watched(shared, Watchdog(dog.abort_handle()));
                    }
                }
                frame
            }
            KindProj::Own { body, .. } => body.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body, holder } => body.is_end_stream() && holder.rest() == 0,
            Kind::Own { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body, holder } => {
                let hint = body.size_hint();
                let rest = holder.rest() as u64;
                if rest == 0 {
                    return hint;
                }
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower().saturating_add(rest));
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper.saturating_add(rest));
                }
                sum
            }
            Kind::Own { body, .. } => body.size_hint(),
        }
    }
}

impl Holder {
    /// The bytes of a frame still to hand over in slices.
    fn rest(&self) -> usize {
        match self {
            Holder::Inline(guard) => guard.rest_len(),
            Holder::Watched(shared, _) => lock(shared).rest_len(),
        }
    }
}

/// Polls the inner body under its guard. Also returns, when a frame was handed over and
/// more are to come, the time by which the client must have taken it.
///
/// Over HTTP/2, while the body is metered, a data frame larger than what the client must take
/// within the grace period at the minimum rate is handed over in slices of that size: the
/// server asks for the next slice only once the client's stream window has room for it, so a
/// client that stops taking the body is seen within the grace period, whatever the size of
/// the frames. (Over HTTP/1 the server's write-stall timeout sees a stalled socket; slicing
/// there costs a streaming response about 4 % of its throughput, measured.)
#[allow(clippy::type_complexity)]
fn poll_guarded<B>(
    mut body: Pin<&mut B>,
    guard: &mut Guard,
    cx: &mut Context<'_>,
) -> (
    Poll<Option<Result<Frame<Bytes>, BoxError>>>,
    Option<Instant>,
)
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    if let (true, Some(meter)) = (guard.cut, &guard.meter) {
        let slow = TooSlow::new(Direction::Response, meter.rate());
        return (Poll::Ready(Some(Err(Box::new(slow)))), None);
    }
    if let Some(meter) = &mut guard.meter {
        // Asked for more: the frame handed over last was taken, in time or not.
        if meter.deadline().is_some() {
            if let Err(slow) = meter.asked(Instant::now()) {
                guard.cut(slow);
                return (Poll::Ready(Some(Err(Box::new(slow)))), None);
            }
        }
    }
    let mut frame = match guard.rest.take() {
        None => {
            let polled = match &mut guard.permit {
                Some(permit) => permit.track(|| body.as_mut().poll_frame(cx)),
                None => body.as_mut().poll_frame(cx),
            };
            let Poll::Ready(frame) = polled else {
                return (Poll::Pending, None);
            };
            frame.map(|f| f.map_err(Into::into))
        }
        Some(mut rest) => {
            let slice = guard
                .meter
                .as_ref()
                .map_or(usize::MAX, |m| m.rate().slice());
            let next = rest.split_to(rest.len().min(slice));
            guard.rest = Some(rest).filter(|rest| !rest.is_empty());
            Some(Ok(Frame::data(next)))
        }
    };
    // A large frame of a metered body goes in slices (small frames, the common case, pay a
    // length check).
    if let (Some(Ok(frame)), Some(meter), Some(_), true) =
        (&mut frame, &guard.meter, &guard.permit, guard.slices)
    {
        if let Some(data) = frame.data_mut().filter(|data| data.len() > MIN_SLICE) {
            let slice = meter.rate().slice();
            if data.len() > slice {
                guard.rest = Some(Box::new(data.split_off(slice)));
            }
        }
    }
    if matches!(frame, None | Some(Err(_))) || (guard.rest.is_none() && body.is_end_stream()) {
        // Done: let the next request in now, not when hyper drops the body.
        guard.permit = None;
        guard.meter = None;
        return (Poll::Ready(frame), None);
    }
    let handed = match (&mut guard.meter, &frame) {
        (Some(meter), Some(Ok(frame))) if guard.permit.is_some() => {
            let bytes = frame.data_ref().map_or(0, |data| data.len() as u64);
            guard.waker = Some(cx.waker().clone());
            Some(meter.handed(bytes, Instant::now()))
        }
        _ => None,
    };
    (Poll::Ready(frame), handed)
}

/// The watchdog of a body, stopped with it: a body that ends long before its deadline
/// leaves no task sleeping behind (at thousands of HTTP/2 responses a second, a 5 s grace
/// would keep ten thousand alive).
#[derive(Debug)]
struct Watchdog(tokio::task::AbortHandle);

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The least a slice holds (see [`MinDataRate::slice`]).
const MIN_SLICE: usize = 1 << 10;

/// Cuts the body off once the frame handed over last is not taken in time. Ends with the
/// body, or with the permit.
async fn watchdog(guard: Weak<Mutex<Guard>>, mut wake_at: Instant) {
    loop {
        tokio::time::sleep_until(wake_at).await;
        let Some(shared) = guard.upgrade() else {
            return;
        };
        let mut guard = lock(&shared);
        let Some(meter) = &guard.meter else { return };
        if guard.permit.is_none() {
            return;
        }
        let now = Instant::now();
        wake_at = match meter.deadline() {
            Some(deadline) if deadline < now => {
                let slow = TooSlow::new(Direction::Response, meter.rate());
                guard.cut(slow);
                return;
            }
            Some(deadline) => deadline,
            // Waiting for its handler: look again in a while.
            None => now + meter.rate().grace().max(Duration::from_millis(100)),
        };
    }
}

/// A poisoned lock only means a panic elsewhere while it was held; the guard is still sound.
fn lock(shared: &Mutex<Guard>) -> std::sync::MutexGuard<'_, Guard> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

// The layer's own answers, beside the body that carries them.

/// `503` with `Retry-After` (or `413` for a body larger than the whole budget), a plain-text
/// body naming the reason and the limit; to a gRPC request, the same in gRPC's terms (see
/// [`grpc`]). The body carries the [`Rejection`].
pub(crate) fn rejection<B>(
    rejection: Rejection,
    retry_after_secs: u32,
    dialect: Dialect,
) -> Response<AdmissionBody<B>> {
    let (status, text) = explain(rejection);
    let unavailable = status == StatusCode::SERVICE_UNAVAILABLE;
    if dialect == Dialect::Grpc {
        let (code, pushback_ms) = match unavailable {
            true => (Code::Unavailable, Some(u64::from(retry_after_secs) * 1000)),
            false => (Code::ResourceExhausted, None),
        };
        let body = AdmissionBody::own(Some(rejection), Bytes::new());
        return grpc::answer(code, text, pushback_ms, body);
    }
    let mut response = plain_text(
        status,
        AdmissionBody::own(Some(rejection), Bytes::from_static(text.as_bytes())),
    );
    if unavailable {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, retry_after(retry_after_secs));
    }
    response
}

/// `Retry-After` values that clone without touching a reference count: the rejection path is
/// the one that must stay cheapest under overload.
const STATIC_SECONDS: [&str; 61] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32",
    "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46", "47", "48",
    "49", "50", "51", "52", "53", "54", "55", "56", "57", "58", "59", "60",
];

/// The `Retry-After` header value for `secs` seconds.
fn retry_after(secs: u32) -> HeaderValue {
    match STATIC_SECONDS.get(secs as usize) {
        Some(text) => HeaderValue::from_static(text),
        None => HeaderValue::from(secs),
    }
}

/// The status and the text that say why the layer rejected a request.
fn explain(rejection: Rejection) -> (StatusCode, &'static str) {
    match (rejection.reason(), rejection.limit()) {
        (Reason::QueueFull, Limit::Concurrency) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=queue_full limit=concurrency (every slot is busy and the queue is full or closed)\n",
        ),
        (Reason::QueueFull, Limit::Memory) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=queue_full limit=memory (the memory budget is spent and the queue is full or closed)\n",
        ),
        (Reason::QueueTimeout, Limit::Concurrency) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=queue_timeout limit=concurrency (no slot came free before the queue timeout or a shutdown)\n",
        ),
        (Reason::QueueTimeout, Limit::Memory) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=queue_timeout limit=memory (no memory came free before the queue timeout or a shutdown)\n",
        ),
        (Reason::QueueFull, Limit::Adaptive) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=queue_full limit=adaptive (every slot of the live limit, below max concurrency, is busy and the queue is full or closed)\n",
        ),
        (Reason::QueueTimeout, Limit::Adaptive) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=queue_timeout limit=adaptive (no slot of the live limit, below max concurrency, came free before the queue timeout or a shutdown)\n",
        ),
        (Reason::QueueFull, Limit::Estimate) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=queue_full limit=estimate (its cost is not known yet, requests of unknown cost go one at a time, another is in flight, and the queue is full or closed)\n",
        ),
        (Reason::QueueTimeout, Limit::Estimate) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=queue_timeout limit=estimate (its cost is not known yet, requests of unknown cost go one at a time, and another stayed in flight until the queue timeout or a shutdown)\n",
        ),
        (Reason::QueueFull, Limit::Cpu) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=queue_full limit=cpu (the cpu is saturated with the work already admitted and the queue is full or closed)\n",
        ),
        (Reason::QueueTimeout, Limit::Cpu) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=queue_timeout limit=cpu (the cpu stayed saturated with the work already admitted until the queue timeout or a shutdown)\n",
        ),
        (Reason::StandingQueue, Limit::Cpu) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=standing_queue limit=cpu (the cpu is saturated: the request would wait, or has waited, longer than twice its queue target)\n",
        ),
        (Reason::StandingQueue, Limit::Memory) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=standing_queue limit=memory (memory is held by requests like this one and the queue for it has stood: the request would wait longer than one of their service times)\n",
        ),
        (Reason::StandingQueue, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=standing_queue limit=adaptive (the runtime runs late: the request waited longer than twice its queue target for a slot of the live limit)\n",
        ),
        (Reason::TooLarge, _) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large: reason=too_large limit=memory (the declared body exceeds the whole memory budget)\n",
        ),
    }
}

/// `408` for a request whose body came slower than the minimum rate (to a gRPC request,
/// `RESOURCE_EXHAUSTED`, see [`grpc`]). The connection closes: the rest of the body will not
/// be read.
pub(crate) fn too_slow<B>(slow: TooSlow, dialect: Dialect) -> Response<AdmissionBody<B>> {
    if dialect == Dialect::Grpc {
        // HTTP/2 has no `Connection: close`: the stream ends, and the connection serves on.
        let body = AdmissionBody::own(None, Bytes::new());
        let text = format!("too slow: {slow}");
        return grpc::answer(Code::ResourceExhausted, &text, None, body);
    }
    let text = format!("request timeout: {slow}\n");
    let mut response = plain_text(
        StatusCode::REQUEST_TIMEOUT,
        AdmissionBody::own(None, Bytes::from(text)),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn plain_text<B>(status: StatusCode, body: AdmissionBody<B>) -> Response<AdmissionBody<B>> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_values() {
        for secs in [0, 1, 59, 60, 61, 3600, u32::MAX] {
            assert_eq!(retry_after(secs), HeaderValue::from(secs));
        }
    }
}
