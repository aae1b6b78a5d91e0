//! The responses the layer answers with itself.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::{AdmissionBody, Limit, Reason, Rejection};

/// `503` with `Retry-After` (or `413` for a body larger than the whole budget), a plain-text
/// body naming the reason and the limit. The body carries the [`Rejection`].
pub(crate) fn rejection<B>(
    rejection: Rejection,
    retry_after: &HeaderValue,
) -> Response<AdmissionBody<B>> {
    let (status, text) = match (rejection.reason(), rejection.limit()) {
        (Reason::QueueFull, Limit::Concurrency) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=queue_full limit=concurrency (every slot is busy and the queue is full)\n",
        ),
        (Reason::QueueFull, Limit::Memory) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=queue_full limit=memory (the memory budget is spent and the queue is full)\n",
        ),
        (Reason::QueueTimeout, Limit::Concurrency) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=queue_timeout limit=concurrency (no slot came free within the queue timeout)\n",
        ),
        (Reason::QueueTimeout, Limit::Memory) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=queue_timeout limit=memory (no memory came free within the queue timeout)\n",
        ),
        (Reason::TooLarge, _) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large: reason=too_large limit=memory (the declared body exceeds the whole memory budget)\n",
        ),
    };
    let mut response = Response::new(AdmissionBody::rejected(
        rejection,
        Bytes::from_static(text.as_bytes()),
    ));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(header::RETRY_AFTER, retry_after.clone());
    }
    response
}
