//! [`AdmissionService`], the middleware itself.

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use crate::{
    body::AdmissionBody,
    controller::{Controller, CostClass, admit::Acquired},
    future::ResponseFuture,
    http_settings::HttpSettings,
    request_body::{MinRateBody, declared_length},
    snapshot::Snapshot,
};

/// Admits each request only while the pool's concurrency and memory limits allow; queues or
/// rejects the rest with `503` (or `413`) responses of its own.
///
/// Made by [`AdmissionLayer`](crate::AdmissionLayer). Clones share one pool. The inner error
/// type passes through unchanged, and the service is ready whenever the inner one is: the
/// decision happens in `call`, so axum (which treats services as always ready) needs no
/// `HandleErrorLayer`.
///
/// Queued requests wait on a tokio timer, so the service runs on a tokio runtime with time
/// enabled (as axum and hyper-util do). The inner service must be `Clone`: a queued request
/// keeps the readied service until it is admitted.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_admission::{Admission, AdmissionConfig, ManualMemory, MinRateBody};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let config = AdmissionConfig::default().memory_budget_bytes(1 << 20);
/// let admission = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
/// let service = ServiceBuilder::new()
///     .layer(admission.layer())
///     .service(service_fn(|_: Request<MinRateBody<String>>| async {
///         Ok::<_, Infallible>(Response::new(http_body_util::Full::new(bytes::Bytes::from("hi"))))
///     }));
///
/// // A body declared larger than the whole budget is rejected at once.
/// let request = Request::builder()
///     .header("content-length", "2000000")
///     .body(String::new())
///     .unwrap();
/// let response = service.clone().oneshot(request).await.unwrap();
/// assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
///
/// let response = service.oneshot(Request::new(String::new())).await.unwrap();
/// assert_eq!(response.status(), StatusCode::OK);
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct AdmissionService<S> {
    inner: S,
    controller: Arc<Controller>,
    settings: Arc<HttpSettings>,
}

impl<S> AdmissionService<S> {
    pub(crate) fn new(inner: S, controller: Arc<Controller>, settings: Arc<HttpSettings>) -> Self {
        Self {
            inner,
            controller,
            settings,
        }
    }

    /// The live figures of the pool this service belongs to.
    pub fn snapshot(&self) -> Snapshot {
        self.controller.snapshot()
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AdmissionService<S>
where
    S: Service<Request<MinRateBody<ReqBody>>, Response = Response<ResBody>> + Clone,
    ReqBody: http_body::Body,
    ResBody: http_body::Body<Data = Bytes>,
{
    type Response = Response<AdmissionBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let settings = &self.settings;
        if settings.bypasses(request.uri().path()) {
            return ResponseFuture::bypassed(&mut self.inner, request);
        }
        // Without a budget or a CPU gate, costs are not learned: no need to know the class.
        let class = match self.controller.learns_classes() {
            true => settings.classify(&request),
            false => CostClass::NONE,
        };
        let priority = settings.prioritizer.of(&request);
        let serving = settings.serving;
        match self
            .controller
            .acquire_as(priority, class, declared_length(&request), || {
                format!("{} {}", request.method(), request.uri().path())
            }) {
            // While the runtime is busy, even a request admitted at once yields first.
            Acquired::Admitted(permit) if self.controller.runtime_is_busy() => {
                ResponseFuture::yielding(readied(&mut self.inner), request, permit, serving)
            }
            Acquired::Admitted(permit) => {
                ResponseFuture::admitted(&mut self.inner, request, permit, serving)
            }
            Acquired::Queued(ticket) => {
                settings.ensure_heartbeat();
                let readied = readied(&mut self.inner);
                let rejecting = Arc::clone(&settings.rejecting);
                let client_wait = settings.client_deadline.wait(&request);
                ResponseFuture::queued(ticket, readied, request, rejecting, serving, client_wait)
            }
            Acquired::Rejected(rejection) => {
                settings.ensure_heartbeat();
                let rejecting = &settings.rejecting;
                ResponseFuture::rejected(rejection, request, rejecting, serving, &self.controller)
            }
        }
    }
}

/// The readied `inner` service, to go with a request that is called later; `inner` becomes
/// a fresh clone, which the next `poll_ready` readies.
fn readied<S: Clone>(inner: &mut S) -> S {
    let clone = inner.clone();
    std::mem::replace(inner, clone)
}
