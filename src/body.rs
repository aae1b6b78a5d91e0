//! The response body, which carries the admission permit until the body ends.

use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

use crate::{controller::Permit, rejection::Rejection};

pin_project! {
    /// The body of a response that passed through [`AdmissionService`](crate::AdmissionService):
    /// the inner service's body, which holds the request's slot and memory reservation until
    /// it ends or is dropped, or the layer's own rejection text.
    ///
    /// Holding the permit for the body's lifetime matters for streaming responses: the
    /// handler has returned, but the work (and its memory) goes on until the last frame.
    ///
    /// ```
    /// use http::{Request, Response};
    /// use http_body_util::{BodyExt, Full};
    /// use tower::{Layer, ServiceExt, service_fn};
    /// use tower_admission::{Admission, AdmissionConfig, ManualMemory};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let config = AdmissionConfig::default().memory_budget_bytes(1 << 30);
    /// let admission = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
    /// let service = admission.layer().layer(service_fn(|_: Request<()>| async {
    ///     Ok::<_, std::convert::Infallible>(Response::new(Full::new(bytes::Bytes::from("hi"))))
    /// }));
    /// let response = service.oneshot(Request::new(())).await.unwrap();
    /// assert_eq!(admission.snapshot().in_flight, 1, "the body holds the permit");
    /// let body = response.into_body().collect().await.unwrap().to_bytes();
    /// assert_eq!(body, "hi");
    /// assert_eq!(admission.snapshot().in_flight, 0, "released when the body ended");
    /// # }
    /// ```
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
            permit: Option<Permit>,
        },
        Rejected {
            rejection: Rejection,
            #[pin]
            body: Full<Bytes>,
        },
    }
}

impl<B> AdmissionBody<B> {
    pub(crate) fn inner(body: B, permit: Option<Permit>) -> Self {
        Self {
            kind: Kind::Inner { body, permit },
        }
    }

    pub(crate) fn rejected(rejection: Rejection, text: Bytes) -> Self {
        Self {
            kind: Kind::Rejected {
                rejection,
                body: Full::new(text),
            },
        }
    }

    /// Why the layer refused the request, if this is the layer's own `503` or `413`.
    ///
    /// Carried in the body rather than the response extensions, which would cost two
    /// allocations per rejection on the path that must stay cheapest under overload.
    pub fn rejection(&self) -> Option<Rejection> {
        match &self.kind {
            Kind::Rejected { rejection, .. } => Some(*rejection),
            Kind::Inner { .. } => None,
        }
    }
}

impl<B> std::fmt::Debug for AdmissionBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { permit, .. } => {
                if permit.is_some() {
                    "Inner (admitted)"
                } else {
                    "Inner"
                }
            }
            Kind::Rejected { .. } => "Rejected",
        };
        f.debug_tuple("AdmissionBody").field(&kind).finish()
    }
}

impl<B> Body for AdmissionBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { mut body, permit } => {
                let frame = ready!(match permit {
                    Some(permit) => permit.track(|| body.as_mut().poll_frame(cx)),
                    None => body.as_mut().poll_frame(cx),
                });
                if matches!(frame, None | Some(Err(_))) || body.is_end_stream() {
                    // Done: let the next request in now, not when hyper drops the body.
                    drop(permit.take());
                }
                Poll::Ready(frame)
            }
            KindProj::Rejected { body, .. } => body.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body, .. } => body.is_end_stream(),
            Kind::Rejected { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body, .. } => body.size_hint(),
            Kind::Rejected { body, .. } => body.size_hint(),
        }
    }
}
