//! How long a client will wait for its answer, where it says so: gRPC's `grpc-timeout`, or a
//! header the operator names, in milliseconds (Envoy's `x-envoy-expected-rq-timeout-ms`, for
//! one). A queued request waits no longer than that: past it the client has left, and
//! admitting the request would be work for nobody.

use std::time::Duration;

use http::{HeaderName, Request};

/// Where a request says how long its client waits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClientDeadline {
    /// A header whose value is the client's wait in milliseconds, besides `grpc-timeout`.
    pub(crate) header: Option<HeaderName>,
}

impl ClientDeadline {
    /// How long `request`'s client waits, if it says: `grpc-timeout` first, then the
    /// configured header. A value that does not parse says nothing.
    pub(crate) fn wait<B>(&self, request: &Request<B>) -> Option<Duration> {
        let headers = request.headers();
        if let Some(value) = headers.get("grpc-timeout") {
            return grpc_timeout(value.as_bytes());
        }
        let value = headers.get(self.header.as_ref()?)?;
        let ms: u64 = value.to_str().ok()?.trim().parse().ok()?;
        Some(Duration::from_millis(ms))
    }
}

/// gRPC's `TimeoutValue TimeoutUnit`: at most 8 digits, then `H`, `M`, `S`, `m`, `u` or `n`.
fn grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_in_every_unit_and_nothing_else() {
        for (text, wait) in [
            ("100m", Duration::from_millis(100)),
            ("2S", Duration::from_secs(2)),
            ("1M", Duration::from_secs(60)),
            ("1H", Duration::from_secs(3600)),
            ("250u", Duration::from_micros(250)),
            ("99999999n", Duration::from_nanos(99_999_999)),
            ("0m", Duration::ZERO),
        ] {
            assert_eq!(grpc_timeout(text.as_bytes()), Some(wait), "{text}");
        }
        for bad in ["", "m", "100", "100x", "123456789m", "-1m", "1.5S", "10 m"] {
            assert_eq!(grpc_timeout(bad.as_bytes()), None, "{bad:?}");
        }
    }

    #[test]
    fn the_configured_header_in_milliseconds_and_grpc_timeout_first() {
        let deadline = ClientDeadline {
            header: Some(HeaderName::from_static("x-envoy-expected-rq-timeout-ms")),
        };
        let request = |headers: &[(&str, &str)]| {
            let mut builder = Request::builder();
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.body(()).unwrap()
        };
        let envoy = "x-envoy-expected-rq-timeout-ms";
        assert_eq!(
            deadline.wait(&request(&[(envoy, "750")])),
            Some(Duration::from_millis(750))
        );
        assert_eq!(
            deadline.wait(&request(&[(envoy, "750"), ("grpc-timeout", "5S")])),
            Some(Duration::from_secs(5))
        );
        assert_eq!(deadline.wait(&request(&[(envoy, "soon")])), None);
        assert_eq!(deadline.wait(&request(&[])), None);
        let grpc_only = ClientDeadline::default();
        assert_eq!(grpc_only.wait(&request(&[(envoy, "750")])), None);
        assert_eq!(
            grpc_only.wait(&request(&[("grpc-timeout", "20m")])),
            Some(Duration::from_millis(20))
        );
    }
}
