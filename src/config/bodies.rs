//! The minimum rates at which clients must send and take bodies, as Kestrel's.

use std::time::Duration;

use super::AdmissionConfig;
use crate::data_rate::MinDataRate;

impl AdmissionConfig {
    /// The least rate at which an admitted request's client must send its body
    /// (`ADMISSION_MIN_REQUEST_BODY_RATE`, `ADMISSION_REQUEST_BODY_GRACE`); `None` for no
    /// minimum. Default 240 bytes/s after 5 s, as Kestrel's.
    ///
    /// Only time the handler spends waiting for body data counts. Below the rate, the body
    /// fails with [`TooSlow`](crate::TooSlow), the layer answers `408 Request Timeout` with
    /// `Connection: close`, and the request's slot and memory go back at once: a client
    /// that trickles its body cannot hold them for long. Meanwhile, once the handler has
    /// waited 250 ms for body data, a body is charged what has arrived plus what its pace
    /// brings within the grace period, not its whole declared length.
    pub fn min_request_body_rate(mut self, rate: impl Into<Option<MinDataRate>>) -> Self {
        self.request_body.set(rate.into());
        self
    }

    /// Whether the [minimum request body rate](Self::min_request_body_rate) cuts off gRPC
    /// requests' bodies too; off by default.
    ///
    /// A gRPC client- or bidi-streaming call sends a message when it has one, seconds or
    /// minutes apart: it is a long-lived stream, not a slow upload, and the rate would cut it
    /// off after the grace period. (ASP.NET Core's gRPC server, whose Kestrel defaults the
    /// rates follow, turns the rate off for such calls likewise.) A gRPC request, told by its
    /// `content-type: application/grpc…` (a unary call cannot be told from a stream by its
    /// head), is then never cut off, but its charge still follows what arrived: a declared
    /// body that comes slowly is charged what came, as any other.
    ///
    /// ```
    /// use tower_admission::{Admission, AdmissionConfig, ManualMemory};
    ///
    /// let streams = "gRPC streams: not cut off";
    /// let config = AdmissionConfig::default();
    /// let default = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
    /// assert!(default.to_string().contains(streams));
    /// // Unary calls only, and clients that must keep up: hold gRPC bodies to the rate too.
    /// let config = AdmissionConfig::default().min_rate_for_streams(true);
    /// let held = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
    /// assert!(!held.to_string().contains(streams));
    /// ```
    pub fn min_rate_for_streams(mut self, on: bool) -> Self {
        self.streams_min_rate = on;
        self
    }

    /// The least rate at which an admitted request's client must take its response body
    /// (`ADMISSION_MIN_RESPONSE_BODY_RATE`, `ADMISSION_RESPONSE_BODY_GRACE`); `None` for no
    /// minimum. Default 240 bytes/s after 5 s, as Kestrel's.
    ///
    /// Each frame the body hands the server must be taken within the grace period or its
    /// size at the rate, whichever is longer. Time the body waits for its handler does not
    /// count. Below the rate, the body ends with [`TooSlow`](crate::TooSlow) (hyper closes the
    /// connection) and the request's slot and memory go back, even while the server, its
    /// buffers full, does not ask for more. The server's and the kernel's buffers hide a
    /// client's pace for as long as they take to fill: a response that fits in them is never
    /// cut off, and its permit goes back once it is handed over.
    pub fn min_response_body_rate(mut self, rate: impl Into<Option<MinDataRate>>) -> Self {
        self.response_body.set(rate.into());
        self
    }

    /// The most of a rejected request's unread body the layer reads and drops before it
    /// answers (`ADMISSION_DISCARD_LIMIT`), over HTTP/1; 0 never reads one. Default 8 MiB.
    ///
    /// A client that writes its whole body before it reads (Python's `requests`, most SDKs,
    /// `curl` on a slow link) cannot read an answer sent while its body is unread: the
    /// connection is reset under it. So the layer reads a rejected request's body to its end,
    /// without keeping it, and then answers; the connection serves on. A body declared
    /// longer than the limit, one still coming at the limit or at the
    /// [discard timeout](Self::discard_timeout), one slower than the
    /// [minimum request body rate](Self::min_request_body_rate), and a client waiting for
    /// `100 Continue` are answered at once with `Connection: close`. Discarding holds no slot
    /// and no charge; the connection's buffers count as memory spoken for, and a rejection
    /// does not discard when the budget has no room for them, nor beyond an allowance of
    /// what admitted bodies brought in lately and 64 MiB a second (reading costs the CPU
    /// that admitted work needs). Over HTTP/2 a rejection is
    /// answered at once, and the stream reset with `NO_ERROR`: the client stops sending and
    /// reads the answer. `admission_discards_total` counts how discards ended.
    ///
    /// Go's `net/http` reads up to 256 KiB for the same reason, and nginx keeps reading for
    /// up to 30 s (`lingering_close`); 8 MiB within 10 s covers uploads of a few MiB at the
    /// pace of an ordinary link and costs a few milliseconds of CPU at most.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_admission::AdmissionConfig;
    ///
    /// let config = AdmissionConfig::default()
    ///     .discard_limit(32 << 20)
    ///     .discard_timeout(Duration::from_secs(30));
    /// # let _ = config;
    /// ```
    pub fn discard_limit(mut self, bytes: u64) -> Self {
        self.discard.bytes = bytes;
        self
    }

    /// How long the layer may read a rejected request's body before it answers
    /// (`ADMISSION_DISCARD_TIMEOUT`); default 10 s. See
    /// [`discard_limit`](Self::discard_limit).
    pub fn discard_timeout(mut self, timeout: Duration) -> Self {
        self.discard.timeout = timeout;
        self
    }
}
