//! A rejected request's unread body, read and dropped so that its client can read the answer.
//!
//! Most clients write their whole body before they read (Python's `requests`, most SDKs,
//! `curl` on a slow link). Answered while its body is unread, such a client never sees the
//! answer: hyper closes a connection with request bytes still unread, the kernel then resets
//! it, and the client's write fails with a reset or a broken pipe, so its retry logic sees a
//! network error instead of a `503` and its `Retry-After`. Over HTTP/1 the layer therefore
//! reads a rejected request's body to its end and drops it before answering, within a bound
//! in bytes and in time, held to the minimum request body rate; the connection then serves
//! on. A body declared longer than the bound, one still coming at the bound, and a client
//! waiting for `100 Continue` are answered at once with `Connection: close`.
//!
//! Over HTTP/2 a rejection is answered at once: h2 then resets the stream with `NO_ERROR`,
//! which tells the client to stop sending and read the answer, and the connection serves on.
//!
//! Discarding holds no slot and no charge; it holds the connection and its read buffer,
//! which count as spoken for (see [`Controller::hold_to_discard`]): the connection's bytes at
//! first, more as the client's frames show hyper's buffer growing (a client trickling its
//! body keeps a small buffer). All discards together hold at most an eighth of the budget;
//! a rejection with no room for its discard closes the connection instead (`no_room`). And
//! reading costs CPU: discards read no more than the bodies of admitted requests brought in
//! lately and 64 MiB a second (`busy` beyond; see [`Discards`](crate::rejection::Discards)):
//! in a storm of retried 1 MiB uploads, reading every rejected body while the CPU gate saw
//! no saturation took the CPU that admitted work needed, and the service served next to
//! nothing for seconds after the storm had passed.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Buf;
use http::{Request, Version, header};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::{
    controller::{Controller, held::HeldBytes},
    data_rate::{MinDataRate, TooSlow},
    rejection::Discard,
    request_body::{MinRateBody, declared_length},
};

/// How much of a rejected request's body the layer reads and drops before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiscardBound {
    /// At most this many bytes; 0: never read, answer at once.
    pub(crate) bytes: u64,
    /// For at most this long.
    pub(crate) timeout: Duration,
}

impl DiscardBound {
    /// 8 MiB within 10 s: uploads of a few MiB at the pace of an ordinary link (about
    /// 1 MiB/s) read their answer; a discard costs a few milliseconds of CPU at most.
    pub(crate) const DEFAULT: Self = Self {
        bytes: 8 << 20,
        timeout: Duration::from_secs(10),
    };
}

/// What a connection discarding a body holds at most: its read buffer, which hyper grows to
/// about 400 KiB while a fast client keeps it full, and the connection itself (measured:
/// 50 Python clients discarding 6 MB bodies at once peaked at ~430 KiB each).
const DISCARDING_BYTES: u64 = 448 << 10;
/// What it holds at first: an HTTP/1 connection and hyper's first read buffer (measured: a
/// thousand clients trickling their bodies grew the process by ~13 KiB each).
const CONNECTION_BYTES: u64 = 28 << 10;

/// What a connection discarding a body holds, once frames of `largest` bytes have come: hyper
/// hands over what one read brought, so its buffer is about that large, and it doubles the
/// buffer when a read fills it.
fn discarding_bytes(largest: u64) -> u64 {
    CONNECTION_BYTES
        .saturating_add(largest.saturating_mul(2))
        .min(DISCARDING_BYTES)
}

/// What a rejected request's answer waits for.
pub(crate) enum Unread<B: Body> {
    /// Nothing: no body is left unread, or HTTP/2 resets the stream.
    Nothing,
    /// The body is left unread: the answer closes the connection.
    Skipped,
    /// The body is being discarded (boxed: rejections with a body are the rare case).
    Discarding(Pin<Box<Discarding<B>>>),
}

impl<B: Body> Unread<B> {
    /// Whether `request` leaves a body unread that matters: over HTTP/1, one not yet ended
    /// and not known to be empty (a wrapper body may not say it has ended).
    pub(crate) fn matters(request: &Request<B>) -> bool {
        let body = request.body();
        matches!(request.version(), Version::HTTP_10 | Version::HTTP_11)
            && !body.is_end_stream()
            && body.size_hint().exact() != Some(0)
    }

    /// Begins discarding `request`'s body, which [matters](Self::matters), if it is worth
    /// reading.
    #[cold]
    #[inline(never)]
    pub(crate) fn begin(
        request: Request<B>,
        bound: DiscardBound,
        rate: Option<MinDataRate>,
        controller: &Arc<Controller>,
    ) -> Self {
        let declared = declared_length(&request);
        // Reading the body would make hyper send `100 Continue` to a client that waits for
        // it: the client would upload only to see its body dropped.
        let expects = request.headers().contains_key(header::EXPECT);
        let fits = bound.bytes > 0 && declared.is_none_or(|length| length <= bound.bytes);
        if !fits || expects {
            controller.discards().record(Discard::Skipped, 0);
            return Unread::Skipped;
        }
        let reads = declared.unwrap_or(bound.bytes);
        if !controller.discards().spend(reads) {
            controller.discards().record(Discard::Busy, 0);
            return Unread::Skipped;
        }
        let Some(held) = controller.hold_to_discard(CONNECTION_BYTES) else {
            controller.discards().record(Discard::NoRoom, 0);
            return Unread::Skipped;
        };
        let request = request.map(|body| Failing { body });
        let (request, _) = MinRateBody::metered(request, rate, declared.unwrap_or(0), true, None);
        Unread::Discarding(Box::pin(Discarding {
            body: request.into_body(),
            deadline: tokio::time::sleep(bound.timeout),
            limit: bound.bytes,
            read: 0,
            largest: 0,
            held,
        }))
    }
}

pin_project! {
    /// Reads a rejected request's body and drops it, until its end or the bound.
    pub(crate) struct Discarding<B>
    where
        B: Body,
    {
        #[pin]
        body: MinRateBody<Failing<B>>,
        #[pin]
        deadline: Sleep,
        limit: u64,
        read: u64,
        // The largest frame so far: what hyper's read buffer holds.
        largest: u64,
        held: HeldBytes,
    }
}

/// The body failed: the client went away, or sent something hyper could not read. What
/// failed does not matter to a body that is being dropped.
#[derive(Debug)]
pub(crate) struct Gone;

impl fmt::Display for Gone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the rejected request's body failed")
    }
}

impl std::error::Error for Gone {}

pin_project! {
    /// A body whose errors are all [`Gone`].
    pub(crate) struct Failing<B> {
        #[pin]
        body: B,
    }
}

impl<B: Body> Body for Failing<B> {
    type Data = B::Data;
    type Error = Gone;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, Gone>>> {
        self.project().body.poll_frame(cx).map_err(|_| Gone)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}

/// Frames read in one poll at most, so that a fast client does not keep its worker.
const FRAMES_PER_POLL: usize = 16;

impl<B: Body> Future for Discarding<B> {
    type Output = Discard;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Discard> {
        let mut this = self.project();
        let outcome = 'read: {
            for _ in 0..FRAMES_PER_POLL {
                match this.body.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        let bytes = frame.data_ref().map_or(0, |data| data.remaining() as u64);
                        *this.read += bytes;
                        if bytes > *this.largest {
                            *this.largest = bytes;
                            this.held.grow_to(discarding_bytes(bytes));
                        }
                        if this.body.is_end_stream() {
                            break 'read Discard::Whole;
                        }
                        if *this.read > *this.limit {
                            break 'read Discard::Limit;
                        }
                    }
                    Poll::Ready(Some(Err(error))) if error.is::<TooSlow>() => {
                        break 'read Discard::TooSlow;
                    }
                    Poll::Ready(Some(Err(_))) => break 'read Discard::Gone,
                    Poll::Ready(None) => break 'read Discard::Whole,
                    Poll::Pending => match this.deadline.as_mut().poll(cx) {
                        Poll::Ready(()) => break 'read Discard::Timeout,
                        Poll::Pending => return Poll::Pending,
                    },
                }
            }
            cx.waker().wake_by_ref();
            return Poll::Pending;
        };
        this.held
            .controller()
            .discards()
            .record(outcome, *this.read);
        Poll::Ready(outcome)
    }
}
