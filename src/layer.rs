//! [`AdmissionLayer`], which wraps services in [`AdmissionService`].

use std::sync::Arc;

use tower_layer::Layer;

use crate::{controller::Controller, http_settings::HttpSettings, service::AdmissionService};

/// Applies admission control to a service; made by [`Admission::layer`](crate::Admission::layer).
///
/// Every service this layer makes shares its pool: the limits hold across all of them, all
/// their clones, and every route of an axum `Router`.
///
/// ```
/// use axum::{Router, routing::get};
/// use tower::ServiceBuilder;
/// use tower_admission::{Admission, AdmissionConfig, ManualMemory};
///
/// let config = AdmissionConfig::default().memory_budget_bytes(1 << 30);
/// let admission = Admission::with_memory_source(config, ManualMemory::new(0)).unwrap();
/// // Two routers, one pool: their requests count against the same limits.
/// let api: Router = Router::new().route("/a", get(|| async { "a" })).layer(admission.layer());
/// let admin: Router = Router::new()
///     .route("/b", get(|| async { "b" }))
///     .layer(ServiceBuilder::new().layer(admission.layer()));
/// let _app = api.merge(admin);
/// ```
#[derive(Debug, Clone)]
pub struct AdmissionLayer {
    controller: Arc<Controller>,
    settings: Arc<HttpSettings>,
}

impl AdmissionLayer {
    pub(crate) fn new(controller: Arc<Controller>, settings: Arc<HttpSettings>) -> Self {
        Self {
            controller,
            settings,
        }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService::new(
            inner,
            Arc::clone(&self.controller),
            Arc::clone(&self.settings),
        )
    }
}
