//! [`ResponseFuture`], the future returned by [`AdmissionService`](crate::AdmissionService).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Version, header};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::{
    body::{self, AdmissionBody},
    controller::{Controller, held::HeldBytes, permit::Permit, ticket::Ticket},
    data_rate::MinDataRate,
    discard::Unread,
    grpc::Dialect,
    http_settings::{Rejecting, Serving},
    metrics,
    rejection::Rejection,
    request_body::{CutOff, MinRateBody},
    reservation::Reservation,
};

pin_project! {
    /// Response future of [`AdmissionService`](crate::AdmissionService).
    ///
    /// It waits for admission when the request was queued, then drives the inner service's
    /// future, and moves the permit into the response body. Dropping it while queued leaves
    /// the queue at once; dropping it later releases the permit. A rejected HTTP/1 request's
    /// unread body is read and dropped before the answer (see
    /// [`AdmissionConfig::discard_limit`](crate::AdmissionConfig::discard_limit)).
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<MinRateBody<B>>>,
        B: Body,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<MinRateBody<B>>>,
        B: Body,
    {
        Called {
            #[pin]
            future: S::Future,
            permit: Option<Permit>,
            // Set if the request's body is cut off for being too slow.
            cut: Option<CutOff>,
            response_rate: Option<MinDataRate>,
            // HTTP/2 or later: its server asks for the body only while the client's window
            // is open.
            multiplexed: bool,
            dialect: Dialect,
        },
        // Boxed: the queued path is the slow path, and this keeps the common future small.
        Queued {
            waiting: Pin<Box<Waiting<S, B>>>,
        },
        // Admitted, and yielding once before the handler runs (see `Yielding`).
        Yielding {
            yielding: Box<Yielding<S, B>>,
        },
        // Rejected: answered once its unread body, if any, is discarded.
        Rejected {
            rejection: Rejection,
            answer: Answer,
            unread: Unread<B>,
        },
    }
}

/// The answer to a rejected request: the layer's own, or the shaper's (boxed: it is rare).
enum Answer {
    Own {
        retry_after_secs: u32,
        dialect: Dialect,
    },
    Shaped(Option<Box<Response<Bytes>>>),
}

/// What a request holds beyond what its handler allocates, queued or in flight: its
/// connection's buffers and its head. Measured with the example server, as jemalloc's
/// allocated bytes less the charges over hundreds of requests queued or in flight: about
/// 28–30 KiB per HTTP/1 connection, 2–4 KiB per HTTP/2 stream. Where the pool's listener
/// counts connections (`counted`), an HTTP/1 connection holds its bytes already.
fn connection_bytes(version: Version, counted: bool) -> u64 {
    match version {
        Version::HTTP_2 | Version::HTTP_3 => 4 << 10,
        _ if counted => 0,
        _ => 28 << 10,
    }
}

pin_project! {
    struct Waiting<S, B> {
        ticket: Ticket,
        #[pin]
        deadline: Sleep,
        queued_at: Instant,
        // The readied inner service and the request, taken once admitted.
        call: Option<(S, Request<B>)>,
        rejecting: Arc<Rejecting>,
        serving: Serving,
        // What the request holds while it waits, counted as memory spoken for.
        held: HeldBytes,
        // Whether the deadline is its client's, shorter than the queue timeout.
        clients: bool,
    }
}

/// An admitted request that yields to the runtime once before its handler runs: tokio
/// resumes a yielded task only after its worker has next polled for I/O and timers, so a
/// request admitted the moment a slot frees (from the queue, or while the runtime is busy)
/// does not keep the workers from noticing a readable socket, such as a bypassed `/health`.
struct Yielding<S, B> {
    /// Taken once the yield is over.
    call: Option<(Permit, S, Request<B>)>,
    serving: Serving,
    yield_now: Pin<Box<dyn Future<Output = ()> + Send>>,
}

impl<S, B> Yielding<S, B> {
    fn new(permit: Permit, service: S, request: Request<B>, serving: Serving) -> Box<Self> {
        Box::new(Self {
            call: Some((permit, service, request)),
            serving,
            yield_now: Box::pin(tokio::task::yield_now()),
        })
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<MinRateBody<B>>>,
    B: Body,
{
    /// Calls `service` with an admitted request that yields once first (see `Yielding`).
    pub(crate) fn yielding(
        service: S,
        request: Request<B>,
        permit: Permit,
        serving: Serving,
    ) -> Self {
        Self {
            state: State::Yielding {
                yielding: Yielding::new(permit, service, request, serving),
            },
        }
    }

    /// Calls `service` with a request that skips admission.
    pub(crate) fn bypassed(service: &mut S, request: Request<B>) -> Self {
        let future = service.call(MinRateBody::unmetered(request));
        Self {
            state: State::Called {
                future,
                permit: None,
                cut: None,
                response_rate: None,
                multiplexed: false,
                dialect: Dialect::Http,
            },
        }
    }

    /// Calls `service` with an admitted request, which holds `permit`.
    pub(crate) fn admitted(
        service: &mut S,
        request: Request<B>,
        permit: Permit,
        serving: Serving,
    ) -> Self {
        Self {
            state: call_admitted(service, request, permit, serving),
        }
    }

    /// Waits for admission until the queue timeout, which is also `serving.timeout`, or the
    /// client's own deadline (`client_wait`) when that comes first.
    pub(crate) fn queued(
        ticket: Ticket,
        service: S,
        request: Request<B>,
        rejecting: Arc<Rejecting>,
        serving: Serving,
        client_wait: Option<Duration>,
    ) -> Self {
        let queued_at = Instant::now();
        let (wait, clients) = match client_wait {
            Some(wait) if wait < serving.timeout => (wait, true),
            _ => (serving.timeout, false),
        };
        let controller = ticket.controller();
        let counted = controller.connections().are_counted();
        let held = controller.hold(connection_bytes(request.version(), counted));
        let waiting = Waiting {
            ticket,
            deadline: tokio::time::sleep_until(queued_at + wait),
            queued_at,
            call: Some((service, request)),
            rejecting,
            serving,
            held,
            clients,
        };
        Self {
            state: State::Queued {
                waiting: Box::pin(waiting),
            },
        }
    }

    /// Rejected at once.
    pub(crate) fn rejected(
        rejection: Rejection,
        request: Request<B>,
        rejecting: &Rejecting,
        serving: Serving,
        controller: &Arc<Controller>,
    ) -> Self {
        Self {
            state: rejected(rejection, request, rejecting, serving, controller),
        }
    }
}

/// The rejected request's state: its answer (the layer's own, or the shaper's), given once
/// its unread body is dealt with (see [`Unread`]).
#[inline]
fn rejected<S, B>(
    rejection: Rejection,
    request: Request<B>,
    rejecting: &Rejecting,
    serving: Serving,
    controller: &Arc<Controller>,
) -> State<S, B>
where
    S: Service<Request<MinRateBody<B>>>,
    B: Body,
{
    let retry_after_secs = rejecting.retry_after.seconds(controller);
    let answer = match &rejecting.shaper {
        Some(shaper) => {
            let shaped = shaper.shape(&rejection, &request, retry_after_secs);
            Answer::Shaped(Some(Box::new(shaped)))
        }
        None => {
            let dialect = Dialect::of(request.headers());
            Answer::Own {
                retry_after_secs,
                dialect,
            }
        }
    };
    // Moved on only when there is a body to read: a rejection is the path that must stay
    // cheapest under overload.
    let unread = match Unread::matters(&request) {
        true => {
            let rate = serving.rates.request;
            Unread::begin(request, rejecting.discard, rate, controller)
        }
        false => Unread::Nothing,
    };
    State::Rejected {
        rejection,
        answer,
        unread,
    }
}

impl Answer {
    /// The response, with `Connection: close` if the request's body was left unread.
    fn respond<R>(&mut self, rejection: Rejection, closes: bool) -> Response<AdmissionBody<R>> {
        let mut response = match self {
            Answer::Own {
                retry_after_secs,
                dialect,
            } => body::rejection(rejection, *retry_after_secs, *dialect),
            Answer::Shaped(response) => {
                let response = response.take().map_or_else(Response::default, |r| *r);
                response.map(|body| AdmissionBody::own(Some(rejection), body))
            }
        };
        if closes {
            let close = HeaderValue::from_static("close");
            response.headers_mut().insert(header::CONNECTION, close);
        }
        response
    }
}

/// The admitted request's state: its reservation attached, its body metered, its handler
/// called.
#[inline(always)]
fn call_admitted<S, B>(
    service: &mut S,
    mut request: Request<B>,
    permit: Permit,
    serving: Serving,
) -> State<S, B>
where
    S: Service<Request<MinRateBody<B>>>,
    B: Body,
{
    Reservation::attach(&mut request, &permit, serving.timeout);
    let mut permit = permit;
    let counted = permit.connections_counted();
    permit.hold(connection_bytes(request.version(), counted));
    let rates = serving.rates;
    // Only a body that is metered can be cut off, and answered in gRPC's terms then: the
    // content type is looked at only for those.
    let metered = rates.request.is_some() && !request.body().is_end_stream();
    let dialect = match metered {
        true => Dialect::of(request.headers()),
        false => Dialect::Http,
    };
    // A gRPC call may be a long-lived stream, which sends when it has something to say.
    let cuts = rates.streams || dialect != Dialect::Grpc;
    let request_version = request.version();
    let pool = permit.gate_for_body();
    let (request, cut) =
        MinRateBody::metered(request, rates.request, permit.declared(), cuts, pool);
    if let Some(cut) = &cut {
        permit.follow(cut.progress());
    }
    State::Called {
        future: service.call(request),
        permit: Some(permit),
        cut,
        response_rate: rates.response,
        multiplexed: request_version >= Version::HTTP_2,
        dialect,
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<MinRateBody<B>>, Response = Response<ResBody>>,
    B: Body,
{
    type Output = Result<Response<AdmissionBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let admitted = match this.state.as_mut().project() {
                StateProj::Called {
                    future,
                    permit,
                    cut,
                    response_rate,
                    multiplexed,
                    dialect,
                } => {
                    // One that polls long starts once a worker is spared for it.
                    if permit.as_ref().is_some_and(|p| !p.take_turn(cx.waker())) {
                        return Poll::Pending;
                    }
                    let polled = match permit {
                        Some(permit) => permit.track(|| future.poll(cx)),
                        None => future.poll(cx),
                    };
                    // A body cut off for being too slow answers 408, whatever the handler
                    // made of the error, and gives the permit back now.
                    if let Some(slow) = cut.as_ref().and_then(CutOff::too_slow) {
                        if let Some(permit) = permit.take() {
                            permit.cut_off(slow);
                        }
                        return Poll::Ready(Ok(body::too_slow(slow, *dialect)));
                    }
                    let polled = ready!(polled);
                    if let Some(permit) = permit {
                        permit.responded();
                    }
                    let response = polled?;
                    let (permit, rate, watched) = (permit.take(), *response_rate, *multiplexed);
                    return Poll::Ready(Ok(
                        response.map(|body| AdmissionBody::admitted(body, permit, rate, watched))
                    ));
                }
                StateProj::Rejected {
                    rejection,
                    answer,
                    unread,
                } => {
                    let closes = match unread {
                        Unread::Nothing => false,
                        Unread::Skipped => true,
                        Unread::Discarding(discarding) => {
                            ready!(discarding.as_mut().poll(cx)).closes()
                        }
                    };
                    return Poll::Ready(Ok(answer.respond(*rejection, closes)));
                }
                StateProj::Yielding { yielding } => {
                    ready!(yielding.yield_now.as_mut().poll(cx));
                    // Taken once: the state changes below.
                    let Some((permit, mut service, request)) = yielding.call.take() else {
                        return Poll::Pending;
                    };
                    call_admitted(&mut service, request, permit, yielding.serving)
                }
                StateProj::Queued { waiting } => ready!(poll_queued(waiting.as_mut(), cx)),
            };
            this.state.set(admitted);
        }
    }
}
/// The queued state's step: ready once admitted (with the admitted request's state) or
/// rejected at the deadline (with the rejected state). Kept apart, and cold, so the common
/// path stays small.
#[cold]
#[inline(never)]
#[allow(clippy::type_complexity)]
fn poll_queued<S, B>(waiting: Pin<&mut Waiting<S, B>>, cx: &mut Context<'_>) -> Poll<State<S, B>>
where
    S: Service<Request<MinRateBody<B>>>,
    B: Body,
{
    let waiting = waiting.project();
    let granted = match waiting.ticket.poll_grant(cx) {
        Poll::Ready(granted) => granted,
        Poll::Pending => {
            ready!(waiting.deadline.poll(cx));
            if *waiting.clients {
                waiting.ticket.controller().count_client_deadline();
            }
            waiting.ticket.expire()
        }
    };
    let waited = waiting.queued_at.elapsed();
    metrics::record_queue_wait(waited, waiting.ticket.priority());
    Poll::Ready(match (granted, waiting.call.take()) {
        // Admitted the moment a slot freed: yield first (see `Yielding`).
        (Ok(mut permit), Some((service, request))) => {
            // Its client may have sent its body while it waited.
            permit.queued_for(waited);
            State::Yielding {
                yielding: Yielding::new(permit, service, request, *waiting.serving),
            }
        }
        (Err(rejection), Some((_, request))) => rejected(
            rejection,
            request,
            waiting.rejecting,
            *waiting.serving,
            waiting.ticket.controller(),
        ),
        (_, None) => unreachable!("the state leaves Queued as soon as `call` is taken"),
    })
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<MinRateBody<B>>>,
    B: Body,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { permit, .. } => {
                if permit.is_some() {
                    "Called (admitted)"
                } else {
                    "Called"
                }
            }
            State::Queued { .. } => "Queued",
            State::Yielding { .. } => "Yielding",
            State::Rejected { .. } => "Rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
