//! [`AdmissionLayer`], which wraps services in [`AdmissionService`].

use std::sync::Arc;

use tower_layer::Layer;

use crate::{AdmissionService, controller::Controller};

/// Applies admission control to a service; made by [`Admission::layer`](crate::Admission::layer).
///
/// Every service this layer makes shares its pool: the limits hold across all of them, all
/// their clones, and every route of an axum `Router`.
#[derive(Debug, Clone)]
pub struct AdmissionLayer {
    controller: Arc<Controller>,
}

impl AdmissionLayer {
    pub(crate) fn new(controller: Arc<Controller>) -> Self {
        Self { controller }
    }
}

impl<S> Layer<S> for AdmissionLayer {
    type Service = AdmissionService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdmissionService::new(inner, Arc::clone(&self.controller))
    }
}
