//! [`ResponseFuture`], the future returned by [`AdmissionService`](crate::AdmissionService).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use http::{HeaderValue, Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use crate::{
    body::AdmissionBody,
    controller::{Permit, Ticket},
    metrics,
    rejection::Rejection,
    reservation::Reservation,
    response,
};

pin_project! {
    /// Response future of [`AdmissionService`](crate::AdmissionService).
    ///
    /// It waits for admission when the request was queued, then drives the inner service's
    /// future, and moves the permit into the response body. Dropping it while queued leaves
    /// the queue at once; dropping it later releases the permit.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Called {
            #[pin]
            future: S::Future,
            permit: Option<Permit>,
        },
        // Boxed: the queued path is the slow path, and this keeps the common future small.
        Queued {
            waiting: Pin<Box<Waiting<S, B>>>,
        },
        Rejected {
            rejection: Rejection,
            retry_after: HeaderValue,
        },
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
        retry_after: HeaderValue,
        // How long a reservation of the request's handler may wait.
        timeout: Duration,
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(crate) fn called(future: S::Future, permit: Option<Permit>) -> Self {
        Self {
            state: State::Called { future, permit },
        }
    }

    pub(crate) fn queued(
        ticket: Ticket,
        timeout: Duration,
        service: S,
        request: Request<B>,
        retry_after: HeaderValue,
    ) -> Self {
        let queued_at = Instant::now();
        let waiting = Waiting {
            ticket,
            deadline: tokio::time::sleep_until(queued_at + timeout),
            queued_at,
            call: Some((service, request)),
            retry_after,
            timeout,
        };
        Self {
            state: State::Queued {
                waiting: Box::pin(waiting),
            },
        }
    }

    pub(crate) fn rejected(rejection: Rejection, retry_after: HeaderValue) -> Self {
        Self {
            state: State::Rejected {
                rejection,
                retry_after,
            },
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
{
    type Output = Result<Response<AdmissionBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let (permit, (mut service, request)) = match this.state.as_mut().project() {
                StateProj::Called { future, permit } => {
                    let response = match permit {
                        Some(permit) => ready!(permit.track(|| future.poll(cx)))?,
                        None => ready!(future.poll(cx))?,
                    };
                    let permit = permit.take();
                    return Poll::Ready(
                        Ok(response.map(|body| AdmissionBody::inner(body, permit))),
                    );
                }
                StateProj::Rejected {
                    rejection,
                    retry_after,
                } => return Poll::Ready(Ok(response::rejection(*rejection, retry_after))),
                StateProj::Queued { waiting } => match ready!(poll_queued(waiting.as_mut(), cx)) {
                    Ok(admitted) => admitted,
                    Err((rejection, retry_after)) => {
                        this.state.set(State::Rejected {
                            rejection,
                            retry_after,
                        });
                        continue;
                    }
                },
            };
            let future = service.call(request);
            this.state.set(State::Called {
                future,
                permit: Some(permit),
            });
        }
    }
}

/// The queued state's step: ready once admitted (with the readied service and the request)
/// or rejected at the deadline. Kept apart, and cold, so the common path stays small.
#[cold]
#[inline(never)]
#[allow(clippy::type_complexity)]
fn poll_queued<S, B>(
    waiting: Pin<&mut Waiting<S, B>>,
    cx: &mut Context<'_>,
) -> Poll<Result<(Permit, (S, Request<B>)), (Rejection, HeaderValue)>> {
    let waiting = waiting.project();
    let granted = match waiting.ticket.poll_grant(cx) {
        Poll::Ready(granted) => granted,
        Poll::Pending => {
            ready!(waiting.deadline.poll(cx));
            waiting.ticket.expire()
        }
    };
    metrics::record_queue_wait(waiting.queued_at.elapsed());
    Poll::Ready(match (granted, waiting.call.take()) {
        (Ok(permit), Some((service, mut request))) => {
            Reservation::attach(&mut request, &permit, *waiting.timeout);
            Ok((permit, (service, request)))
        }
        (Err(rejection), _) => Err((rejection, waiting.retry_after.clone())),
        (Ok(_), None) => unreachable!("the state leaves Queued as soon as `call` is taken"),
    })
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
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
            State::Rejected { .. } => "Rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}
