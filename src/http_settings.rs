//! What the layer decides around the controller, knowing HTTP: which requests bypass
//! admission, which cost class and priority a request has, how long it may wait, and the
//! `Retry-After` it is told.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Extensions, HeaderMap, HeaderName, Method, Request, Response, Uri};

use crate::client_deadline::ClientDeadline;
use crate::{
    controller::{Controller, CostClass},
    data_rate::BodyRates,
    discard::DiscardBound,
    heartbeat::Heartbeat,
    priority::Priority,
    rejection::Rejection,
};

/// What a classifier sees of a request: its head, borrowed (see
/// [`AdmissionConfig::classify`](crate::AdmissionConfig::classify)).
///
/// ```
/// use tower_admission::{AdmissionConfig, CostClass, RequestHead};
///
/// /// Reports are costly when they ask for a year, cheap otherwise.
/// fn by_span(head: &RequestHead<'_>) -> CostClass {
///     let span = head.headers().get("x-report-span").and_then(|v| v.to_str().ok());
///     CostClass::new((head.method().as_str(), head.uri().path(), span == Some("year")))
/// }
///
/// let config = AdmissionConfig::default().classify(by_span);
/// # let _ = config;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    method: &'a Method,
    uri: &'a Uri,
    headers: &'a HeaderMap,
    extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    pub(crate) fn of<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }

    /// The request's method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request's URI.
    pub fn uri(&self) -> &'a Uri {
        self.uri
    }

    /// The request's headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// The request's extensions, such as axum's `MatchedPath`.
    pub fn extensions(&self) -> &'a Extensions {
        self.extensions
    }
}

/// A function of a request's head given in the configuration (a classifier, a
/// prioritizer), shared by its clones and compared by identity.
pub(crate) struct HeadFn<T>(Arc<dyn Fn(&RequestHead<'_>) -> T + Send + Sync>);

impl<T> HeadFn<T> {
    pub(crate) fn new(f: impl Fn(&RequestHead<'_>) -> T + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// What the function says of `request`.
    pub(crate) fn of<B>(&self, request: &Request<B>) -> T {
        (self.0)(&RequestHead::of(request))
    }
}

impl<T> Clone for HeadFn<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> fmt::Debug for HeadFn<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HeadFn(..)")
    }
}

impl<T> PartialEq for HeadFn<T> {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

// Here, not beside the class table: the core knows nothing of HTTP.
impl CostClass {
    /// The default class: method and path.
    pub fn route(method: &Method, path: &str) -> Self {
        Self::new((method.as_str(), path))
    }
}

/// A function that puts requests into cost classes.
pub(crate) type Classifier = HeadFn<CostClass>;

/// The function that shapes the layer's rejections (see
/// [`AdmissionConfig::shape_rejections`](crate::AdmissionConfig::shape_rejections)).
type ShapeFn = dyn Fn(&Rejection, &RequestHead<'_>, Duration) -> Response<Bytes> + Send + Sync;

/// A rejection shaper given in the configuration, shared by its clones and compared by
/// identity.
#[derive(Clone)]
pub(crate) struct Shaper(Arc<ShapeFn>);

impl Shaper {
    pub(crate) fn new<F>(f: F) -> Self
    where
        F: Fn(&Rejection, &RequestHead<'_>, Duration) -> Response<Bytes> + Send + Sync + 'static,
    {
        Self(Arc::new(f))
    }

    /// The answer to `request`, rejected for `rejection` and told to retry after
    /// `retry_after_secs`.
    pub(crate) fn shape<B>(
        &self,
        rejection: &Rejection,
        request: &Request<B>,
        retry_after_secs: u32,
    ) -> Response<Bytes> {
        let retry_after = Duration::from_secs(retry_after_secs.into());
        (self.0)(rejection, &RequestHead::of(request), retry_after)
    }
}

impl fmt::Debug for Shaper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Shaper(..)")
    }
}

impl PartialEq for Shaper {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// A function that gives requests a priority (see
/// [`AdmissionConfig::prioritize`](crate::AdmissionConfig::prioritize)).
pub(crate) type Prioritize = HeadFn<Priority>;

/// The environment's shorthand: a header that names the priority, else path prefixes.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PriorityRules {
    pub(crate) header: Option<HeaderName>,
    pub(crate) critical: PathPrefixes,
    pub(crate) sheddable: PathPrefixes,
}

/// How requests are given a priority: a function of the request's head, or rules.
#[derive(Debug, Clone)]
pub(crate) enum Prioritizer {
    /// Everything is [`Priority::Normal`].
    None,
    Rules(PriorityRules),
    Custom(Prioritize),
}

impl Prioritizer {
    /// `custom` if set, else `rules` unless they say nothing.
    pub(crate) fn new(custom: Option<&Prioritize>, rules: &PriorityRules) -> Self {
        match custom {
            Some(custom) => Prioritizer::Custom(custom.clone()),
            None if *rules == PriorityRules::default() => Prioritizer::None,
            None => Prioritizer::Rules(rules.clone()),
        }
    }

    /// The priority of `request`. A header value that names no priority counts as absent.
    pub(crate) fn of<B>(&self, request: &Request<B>) -> Priority {
        match self {
            Prioritizer::None => Priority::Normal,
            Prioritizer::Custom(prioritize) => prioritize.of(request),
            Prioritizer::Rules(rules) => {
                let named = rules
                    .header
                    .as_ref()
                    .and_then(|name| request.headers().get(name)?.to_str().ok()?.parse().ok());
                let path = request.uri().path();
                named.unwrap_or(if rules.critical.matches(path) {
                    Priority::Critical
                } else if rules.sheddable.matches(path) {
                    Priority::Sheddable
                } else {
                    Priority::Normal
                })
            }
        }
    }
}

/// Path prefixes that match whole segments: `/health` matches `/health` and `/health/live`,
/// not `/healthcare`; `/static/` matches everything below it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PathPrefixes(Vec<String>);

impl PathPrefixes {
    pub(crate) fn new<I, P>(prefixes: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        Self(prefixes.into_iter().map(Into::into).collect())
    }

    pub(crate) fn as_slice(&self) -> &[String] {
        &self.0
    }

    #[inline]
    pub(crate) fn matches(&self, path: &str) -> bool {
        !self.0.is_empty()
            && self.0.iter().any(|prefix| {
                path.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/')
                })
            })
    }
}

/// How an admitted request is served: how long its handler's reservation may wait, and the
/// minimum rates of its bodies.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Serving {
    pub(crate) timeout: Duration,
    pub(crate) rates: BodyRates,
}

/// How a rejected request is answered: told when to retry, and its unread body discarded.
#[derive(Debug, Clone)]
pub(crate) struct Rejecting {
    pub(crate) retry_after: RetryAfter,
    pub(crate) discard: DiscardBound,
    /// Shapes the layer's rejections instead of its own answers, if set.
    pub(crate) shaper: Option<Shaper>,
}

#[derive(Debug)]
pub(crate) struct HttpSettings {
    /// The queue timeout and the minimum body rates, as each request takes them.
    pub(crate) serving: Serving,
    /// How rejections are answered; shared with queued requests.
    pub(crate) rejecting: Arc<Rejecting>,
    pub(crate) bypass: PathPrefixes,
    pub(crate) classifier: Option<Classifier>,
    pub(crate) prioritizer: Prioritizer,
    /// The runtime's heartbeat, where the live limit follows it.
    pub(crate) heartbeat: Option<Arc<Heartbeat>>,
    /// Where a request says how long its client waits.
    pub(crate) client_deadline: ClientDeadline,
}

/// What a shed request is told to wait, in seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RetryAfter {
    Fixed(u32),
    /// The queue ahead over the recent admission rate, spread, within `1..=max` seconds.
    Auto {
        max: u32,
    },
}

impl RetryAfter {
    /// The seconds a request shed now by `controller`'s pool should wait: carried as a number
    /// to the edge (the header, gRPC's pushback, the shaper).
    pub(crate) fn seconds(&self, controller: &Controller) -> u32 {
        match *self {
            RetryAfter::Fixed(secs) => secs,
            RetryAfter::Auto { max } => controller.retry_after_secs(max),
        }
    }
}

impl HttpSettings {
    /// Where the live limit follows the runtime's heartbeat, makes sure it beats (on this
    /// runtime, if the one it ran on has gone). Called when a request queues or is rejected:
    /// the live limit binds only then, and starts below the ceiling, so a busy pool soon
    /// does.
    pub(crate) fn ensure_heartbeat(&self) {
        if let Some(heartbeat) = &self.heartbeat {
            heartbeat.ensure_running();
        }
    }

    /// Whether `path` skips admission.
    #[inline]
    pub(crate) fn bypasses(&self, path: &str) -> bool {
        self.bypass.matches(path)
    }

    /// The request's cost class: the classifier's word, or method and path.
    pub(crate) fn classify<B>(&self, request: &Request<B>) -> CostClass {
        match &self.classifier {
            None => CostClass::route(request.method(), request.uri().path()),
            Some(classify) => classify.of(request),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_names_the_priority_else_the_path_does() {
        let rules = PriorityRules {
            header: Some(HeaderName::from_static("x-priority")),
            critical: PathPrefixes::new(["/pay"]),
            sheddable: PathPrefixes::new(["/prefetch"]),
        };
        let rules = Prioritizer::new(None, &rules);
        let request = |path: &str, header: Option<&str>| {
            let mut builder = Request::get(path);
            if let Some(value) = header {
                builder = builder.header("x-priority", value);
            }
            builder.body(()).unwrap()
        };
        assert_eq!(rules.of(&request("/pay/now", None)), Priority::Critical);
        assert_eq!(rules.of(&request("/prefetch", None)), Priority::Sheddable);
        assert_eq!(rules.of(&request("/other", None)), Priority::Normal);
        let by_header = rules.of(&request("/pay", Some("Sheddable")));
        assert_eq!(by_header, Priority::Sheddable);
        let unknown = rules.of(&request("/prefetch", Some("urgent")));
        assert_eq!(
            unknown,
            Priority::Sheddable,
            "an unknown value counts as absent"
        );
        let none = Prioritizer::new(None, &PriorityRules::default());
        assert!(matches!(none, Prioritizer::None));
    }

    fn settings(classifier: Option<Classifier>) -> HttpSettings {
        HttpSettings {
            serving: Serving {
                timeout: Duration::from_secs(1),
                rates: BodyRates::default(),
            },
            rejecting: Arc::new(Rejecting {
                retry_after: RetryAfter::Fixed(1),
                discard: DiscardBound::DEFAULT,
                shaper: None,
            }),
            bypass: PathPrefixes::new(["/health", "/static/"]),
            classifier,
            prioritizer: Prioritizer::None,
            heartbeat: None,
            client_deadline: ClientDeadline::default(),
        }
    }

    #[test]
    fn bypass_matches_whole_segments() {
        let s = settings(None);
        assert!(s.bypasses("/health"));
        assert!(s.bypasses("/health/live"));
        assert!(!s.bypasses("/healthcare"));
        assert!(!s.bypasses("/"));
        assert!(s.bypasses("/static/app.js"));
        assert!(!s.bypasses("/static"));
    }

    #[test]
    fn classes_by_route_or_by_the_classifier() {
        let request = |uri: &str| Request::get(uri).body(()).unwrap();
        let by_route = settings(None);
        let a = by_route.classify(&request("/work?kib=1"));
        let b = by_route.classify(&request("/work?kib=65536"));
        assert_eq!(a, b, "the query is not part of the route");
        let by_size = settings(Some(HeadFn::new(|head: &RequestHead<'_>| {
            CostClass::new(head.uri().query())
        })));
        let a = by_size.classify(&request("/work?kib=1"));
        let b = by_size.classify(&request("/work?kib=65536"));
        assert_ne!(a, b);
    }
}
