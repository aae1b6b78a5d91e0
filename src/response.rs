//! The responses the layer answers with itself.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::{
    body::AdmissionBody,
    data_rate::TooSlow,
    grpc::{self, Code, Dialect},
    rejection::{Limit, Reason, Rejection},
};

/// `Retry-After` values that clone without touching a reference count: the rejection path is
/// the one that must stay cheapest under overload.
const STATIC_SECONDS: [&str; 61] = [
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    "17", "18", "19", "20", "21", "22", "23", "24", "25", "26", "27", "28", "29", "30", "31", "32",
    "33", "34", "35", "36", "37", "38", "39", "40", "41", "42", "43", "44", "45", "46", "47", "48",
    "49", "50", "51", "52", "53", "54", "55", "56", "57", "58", "59", "60",
];

/// The `Retry-After` header value for `secs` seconds.
pub(crate) fn retry_after(secs: u32) -> HeaderValue {
    match STATIC_SECONDS.get(secs as usize) {
        Some(text) => HeaderValue::from_static(text),
        None => HeaderValue::from(secs),
    }
}

/// `503` with `Retry-After` (or `413` for a body larger than the whole budget), a plain-text
/// body naming the reason and the limit; to a gRPC request, the same in gRPC's terms (see
/// [`grpc`]). The body carries the [`Rejection`].
pub(crate) fn rejection<B>(
    rejection: Rejection,
    retry_after: &HeaderValue,
    dialect: Dialect,
) -> Response<AdmissionBody<B>> {
    let (status, text) = explain(rejection);
    let unavailable = status == StatusCode::SERVICE_UNAVAILABLE;
    if dialect == Dialect::Grpc {
        let (code, pushback_ms) = match unavailable {
            true => (Code::Unavailable, seconds(retry_after).map(|s| s * 1000)),
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
            .insert(header::RETRY_AFTER, retry_after.clone());
    }
    response
}

fn seconds(retry_after: &HeaderValue) -> Option<u64> {
    retry_after.to_str().ok()?.parse().ok()
}

/// The status and the text that say why the layer refused a request.
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
        (Reason::StandingQueue, _) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded: reason=standing_queue limit=adaptive (the service cannot keep up and the queue stands: it waited twice the queue target for a slot of the live limit)\n",
        ),
        (Reason::TooLarge, _) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            "too large: reason=too_large limit=memory (the declared body exceeds the whole memory budget)\n",
        ),
    }
}

/// `408` for a request whose body came slower than the minimum rate (to a gRPC request,
/// `DEADLINE_EXCEEDED`). The connection closes: the rest of the body will not be read.
pub(crate) fn too_slow<B>(slow: TooSlow, dialect: Dialect) -> Response<AdmissionBody<B>> {
    let text = format!("request timeout: {slow}\n");
    if dialect == Dialect::Grpc {
        // HTTP/2 has no `Connection: close`: the stream ends, and the connection serves on.
        let body = AdmissionBody::own(None, Bytes::new());
        return grpc::answer(Code::DeadlineExceeded, &text, None, body);
    }
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
