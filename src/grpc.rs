//! gRPC requests: answered in gRPC's own terms, and their long-lived streams told apart.
//!
//! A gRPC client reads a call's outcome from `grpc-status`, not from the HTTP status: a bare
//! `503` reaches it as `UNAVAILABLE` with no message and no pushback, and its retry policy
//! then ignores `Retry-After`. So the layer answers a gRPC request (`content-type:
//! application/grpc…`) *trailers-only*, as gRPC servers do: HTTP `200`, an empty body, and in
//! the headers
//!
//! - `grpc-status: 14` (`UNAVAILABLE`) where HTTP would say `503`: the service is
//!   overloaded for now, and gRPC's retry policies treat this code as "retry later" (tonic's
//!   own per-connection shedding says `RESOURCE_EXHAUSTED`, which retry policies seldom list
//!   and clients read as a quota of theirs, and a `503` would be read as `UNAVAILABLE`
//!   anyway);
//! - `grpc-status: 8` (`RESOURCE_EXHAUSTED`) where HTTP would say `413`: the message alone
//!   is larger than the whole memory budget, as gRPC answers a message over its size limit,
//!   and retrying will not help;
//! - `grpc-status: 8` (`RESOURCE_EXHAUSTED`) where HTTP would say `408`: the request's body
//!   came slower than the minimum rate allows. Not `DEADLINE_EXCEEDED`, which tells the
//!   client that its own deadline passed (it has not) and invites a longer one; gRPC lists
//!   flow-control limits reached under `RESOURCE_EXHAUSTED`, and the message says which;
//! - `grpc-message` naming the reason and the limit, as the HTTP body does;
//! - `grpc-retry-pushback-ms` with a `503`'s `Retry-After`, in milliseconds: gRPC clients'
//!   retry policies wait that long before the next attempt (gRPC's retry design, A6).

use http::{HeaderMap, HeaderValue, Response, header};

/// In which terms the layer answers a request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Http,
    Grpc,
}

impl Dialect {
    /// gRPC for a request whose `content-type` is gRPC's (`application/grpc`, with or
    /// without a `+proto`-like suffix, or gRPC-Web's), HTTP otherwise.
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        const GRPC: &[u8] = b"application/grpc";
        // On every request: no allocation, no UTF-8 check.
        let grpc = headers.get(header::CONTENT_TYPE).is_some_and(|value| {
            let value = value.as_bytes().trim_ascii_start();
            value.len() >= GRPC.len() && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        });
        if grpc { Dialect::Grpc } else { Dialect::Http }
    }
}

/// gRPC status codes the layer answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    ResourceExhausted = 8,
    Unavailable = 14,
}

/// A trailers-only gRPC answer: `code`, `message`, and the pushback, if any, around `body`
/// (which must be empty).
pub(crate) fn answer<B>(
    code: Code,
    message: &str,
    pushback_ms: Option<u64>,
    body: B,
) -> Response<B> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert("grpc-status", HeaderValue::from(code as u16));
    if let Ok(message) = HeaderValue::try_from(percent_encode(message)) {
        headers.insert("grpc-message", message);
    }
    if let Some(ms) = pushback_ms {
        headers.insert("grpc-retry-pushback-ms", HeaderValue::from(ms));
    }
    response
}

/// `grpc-message` is percent-encoded: every byte outside printable ASCII, and `%` itself.
fn percent_encode(message: &str) -> String {
    let mut encoded = String::with_capacity(message.len());
    for byte in message.trim_end().bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dialect(content_type: &str) -> Dialect {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type.parse().unwrap());
        Dialect::of(&headers)
    }

    #[test]
    fn grpc_is_told_by_its_content_type() {
        for grpc in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC",
            "application/grpc-web+proto",
        ] {
            assert_eq!(dialect(grpc), Dialect::Grpc, "{grpc}");
        }
        for http in ["application/json", "text/plain", "application/x-grpc"] {
            assert_eq!(dialect(http), Dialect::Http, "{http}");
        }
        assert_eq!(Dialect::of(&HeaderMap::new()), Dialect::Http);
    }

    #[test]
    fn an_answer_is_trailers_only_with_status_message_and_pushback() {
        let response = answer(
            Code::Unavailable,
            "overloaded: 100% busy\n",
            Some(2000),
            http_body_util::Empty::<bytes::Bytes>::new(),
        );
        assert_eq!(response.status(), 200);
        let headers = response.headers();
        assert_eq!(headers["content-type"], "application/grpc");
        assert_eq!(headers["grpc-status"], "14");
        assert_eq!(headers["grpc-message"], "overloaded: 100%25 busy");
        assert_eq!(headers["grpc-retry-pushback-ms"], "2000");
        assert!(http_body::Body::is_end_stream(response.body()));
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("a é\t%"), "a %C3%A9%09%25");
    }
}
