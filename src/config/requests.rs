//! The settings that tell requests apart and answer them: which skip admission, which cost
//! class and priority each has, what the `critical` ones keep, and what a rejected one is told.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, Response};

use super::AdmissionConfig;
use crate::{
    controller::CostClass,
    http_settings::{Classifier, PathPrefixes, Prioritize, RequestHead, Shaper},
    priority::Priority,
    rejection::Rejection,
};

impl AdmissionConfig {
    /// Path prefixes that skip admission (`ADMISSION_BYPASS`), such as `/health`.
    ///
    /// A prefix matches whole path segments: `/health` matches `/health` and
    /// `/health/live`, not `/healthcare`.
    pub fn bypass<I, P>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.bypass = prefixes.into_iter().map(Into::into).collect();
        self
    }

    /// Seconds announced in `Retry-After` on a 503 (`ADMISSION_RETRY_AFTER`).
    pub fn retry_after_secs(mut self, secs: u32) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    /// `Retry-After` computed for each shed request (`ADMISSION_RETRY_AFTER=auto`,
    /// `ADMISSION_RETRY_AFTER_MAX`), the default with a most of 30 s: the waiters ahead of it
    /// over the rate at which the pool admitted requests lately while saturated, spread over
    /// ±25 % so that shed clients do not return together, within 1 to `max_secs` seconds
    /// (1 s until the pool has first been saturated).
    pub fn retry_after_auto(mut self, max_secs: u32) -> Self {
        self.retry_after_secs = None;
        self.retry_after_max_secs = max_secs;
        self
    }

    /// Puts requests into cost classes with `classify`, instead of by method and path.
    ///
    /// Requests of one class share what the layer learns of their cost: until its first
    /// poll, a request is charged the most its class has allocated lately. Use it where cost
    /// depends on something other than the route, such as a query parameter or a header.
    /// Keep the number of classes small: the table holds 64, and the rest share one.
    ///
    /// ```
    /// use tower_admission::{AdmissionConfig, CostClass};
    ///
    /// // Thumbnails cost little, full-size renders a lot, on the same route.
    /// let config = AdmissionConfig::default().classify(|head| {
    ///     let full = head.uri().query().is_some_and(|q| q.contains("size=full"));
    ///     CostClass::new((head.uri().path(), full))
    /// });
    /// # let _ = config;
    /// ```
    pub fn classify(
        mut self,
        classify: impl Fn(&RequestHead<'_>) -> CostClass + Send + Sync + 'static,
    ) -> Self {
        self.classifier = Some(Classifier::new(classify));
        self
    }

    /// Answers the layer's rejections (what would be a `503` or a `413`, see [`Rejection`])
    /// with what `shape` returns, instead of the layer's own plain-text or gRPC answers.
    ///
    /// `shape` is given the rejection, the request's head and the `Retry-After` the layer
    /// would send; its response goes out as it is (add `Retry-After` yourself if you want
    /// it), and [`AdmissionBody::rejection`](crate::AdmissionBody::rejection) still tells it
    /// from the service's own answers. It runs on the path that must stay cheapest under
    /// overload: keep it to building a small response. A `408` for a request body too slow
    /// is not a rejection, and keeps the layer's answer.
    ///
    /// [`Rejection`]: crate::Rejection
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{Response, StatusCode, header};
    /// use tower_admission::AdmissionConfig;
    ///
    /// // JSON problem details, as the rest of this API answers.
    /// let config = AdmissionConfig::default().shape_rejections(|rejection, _head, retry_after| {
    ///     let body = format!(
    ///         r#"{{"type":"overloaded","reason":"{}","limit":"{}"}}"#,
    ///         rejection.reason().as_str(),
    ///         rejection.limit().as_str(),
    ///     );
    ///     Response::builder()
    ///         .status(StatusCode::SERVICE_UNAVAILABLE)
    ///         .header(header::CONTENT_TYPE, "application/problem+json")
    ///         .header(header::RETRY_AFTER, retry_after.as_secs())
    ///         .body(Bytes::from(body))
    ///         .unwrap()
    /// });
    /// # let _ = config;
    /// ```
    pub fn shape_rejections(
        mut self,
        shape: impl Fn(&Rejection, &RequestHead<'_>, Duration) -> Response<Bytes>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.shaper = Some(Shaper::new(shape));
        self
    }

    /// Gives each request a [`Priority`] with `prioritize`, instead of by the priority header
    /// and path prefixes ([`priority_header`](Self::priority_header),
    /// [`critical_paths`](Self::critical_paths), [`sheddable_paths`](Self::sheddable_paths)).
    ///
    /// ```
    /// use tower_admission::{AdmissionConfig, Priority};
    ///
    /// // Checkout is what pays; recommendations can wait for a quieter moment.
    /// let config = AdmissionConfig::default().prioritize(|head| match head.uri().path() {
    ///     path if path.starts_with("/checkout") => Priority::Critical,
    ///     path if path.starts_with("/recommendations") => Priority::Sheddable,
    ///     _ => Priority::Normal,
    /// });
    /// # let _ = config;
    /// ```
    pub fn prioritize(
        mut self,
        prioritize: impl Fn(&RequestHead<'_>) -> Priority + Send + Sync + 'static,
    ) -> Self {
        self.prioritize = Some(Prioritize::new(prioritize));
        self
    }

    /// A request header whose value names the request's priority (`critical`, `normal` or
    /// `sheddable`; `ADMISSION_PRIORITY_HEADER`). A missing or unknown value leaves the
    /// priority to the path prefixes. Clients can set any header: let a proxy you trust set
    /// this one, or strip it at the edge.
    ///
    /// ```
    /// use http::HeaderName;
    /// use tower_admission::AdmissionConfig;
    ///
    /// let config = AdmissionConfig::default()
    ///     .priority_header(HeaderName::from_static("x-priority"))
    ///     .critical_paths(["/checkout"])
    ///     .sheddable_paths(["/prefetch", "/reports/"]);
    /// # let _ = config;
    /// ```
    pub fn priority_header(mut self, name: HeaderName) -> Self {
        self.priority_rules.header = Some(name);
        self
    }

    /// A request header whose value is how long its client waits for the answer, in
    /// milliseconds (`ADMISSION_DEADLINE_HEADER`), such as Envoy's
    /// `x-envoy-expected-rq-timeout-ms`; gRPC's `grpc-timeout` is always read. A queued request
    /// waits no longer than that: past it the client has left, and it is answered `503`
    /// (`queue_timeout`) rather than admitted for nobody, and counted in
    /// [`Snapshot::client_deadlines`](crate::Snapshot::client_deadlines). A request admitted
    /// at once is not held to it.
    ///
    /// ```
    /// use http::HeaderName;
    /// use tower_admission::AdmissionConfig;
    ///
    /// let config = AdmissionConfig::default()
    ///     .deadline_header(HeaderName::from_static("x-envoy-expected-rq-timeout-ms"));
    /// # let _ = config;
    /// ```
    pub fn deadline_header(mut self, name: HeaderName) -> Self {
        self.deadline_header = Some(name);
        self
    }

    /// Path prefixes of [`Priority::Critical`] requests (`ADMISSION_CRITICAL_PATHS`),
    /// matching whole segments as [`bypass`](Self::bypass) does.
    pub fn critical_paths<I, P>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.priority_rules.critical = PathPrefixes::new(prefixes);
        self
    }

    /// Path prefixes of [`Priority::Sheddable`] requests (`ADMISSION_SHEDDABLE_PATHS`).
    pub fn sheddable_paths<I, P>(mut self, prefixes: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        self.priority_rules.sheddable = PathPrefixes::new(prefixes);
        self
    }

    /// The percentage of slots and of the memory budget that only [`Priority::Critical`]
    /// requests may use (`ADMISSION_CRITICAL_RESERVE`), in `[0, 100)`; 0 by default. At
    /// least one slot is left to the others.
    pub fn critical_reserve(mut self, percent: f64) -> Self {
        self.critical_reserve = percent;
        self
    }
}
