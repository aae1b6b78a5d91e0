//! [`Reservation`]: how a handler that knows its cost says so before allocating.

use std::{fmt, sync::Arc, time::Duration};

use http::Request;

use crate::{
    controller::{
        ClassId, Controller,
        permit::{Charge, Permit},
    },
    rejection::{Limit, Reason, Rejection},
};

/// Reserves memory for the request it came with, ahead of allocating it.
///
/// Where [`AdmissionConfig::reservations`](crate::AdmissionConfig::reservations) is on and a
/// memory budget set, the layer puts one in the extensions of every request it admits (it
/// costs an allocation per request, so it is off by default). A handler about to build a
/// large buffer (parse a body into a tree, decompress, render) reserves its size first: the
/// reservation waits until memory allows, so the allocation cannot push the process over the
/// budget, and other requests are held back meanwhile. What
/// the handler then allocates counts against its reservation first, so nothing is charged
/// twice. Reservations last until the response body ends.
///
/// A reservation is granted at once if the memory spoken for plus `bytes` fits in the budget.
/// If it does not, one request at a time may reserve beyond the budget (so that handlers
/// waiting on each other cannot wedge the service; the overshoot is one reservation at most);
/// the others check again every sample interval, until the queue timeout has passed.
///
/// ```
/// use axum::{Extension, Router, body::Bytes, http::StatusCode, routing::post};
/// use tower_admission::{AdmissionConfig, Reservation};
///
/// let config = AdmissionConfig::default().reservations(true);
/// # let _ = config;
///
/// async fn render(reservation: Option<Extension<Reservation>>, body: Bytes) -> StatusCode {
///     // The tree this handler builds is about 16 times the body.
///     if let Some(Extension(reservation)) = reservation {
///         if reservation.reserve(body.len() as u64 * 16).await.is_err() {
///             return StatusCode::SERVICE_UNAVAILABLE;
///         }
///     }
///     // ... build it ...
///     StatusCode::OK
/// }
///
/// let app: Router = Router::new().route("/render", post(render));
/// # let _ = app;
/// ```
#[derive(Clone)]
pub struct Reservation {
    controller: Arc<Controller>,
    charge: Arc<Charge>,
    class: ClassId,
    /// The request's declared `Content-Length`.
    declared: u64,
    timeout: Duration,
}

impl Reservation {
    /// Puts the reservation of `permit`'s request into its extensions, where a budget is set.
    pub(crate) fn attach<B>(request: &mut Request<B>, permit: &Permit, timeout: Duration) {
        if let Some((controller, charge)) = permit.charge() {
            request.extensions_mut().insert(Self {
                controller: Arc::clone(controller),
                charge,
                class: permit.class(),
                declared: permit.declared(),
                timeout,
            });
        }
    }

    /// Adds `bytes` to this request's charge, waiting until memory allows (at most the queue
    /// timeout).
    ///
    /// Fails with `too_large` if `bytes` exceed the whole budget, and with `queue_timeout`
    /// (counted like a queue timeout, `limit=memory`) if memory did not allow it in time or
    /// the request has already ended.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before it completes reserves nothing.
    pub async fn reserve(&self, bytes: u64) -> Result<(), Rejection> {
        let controller = &self.controller;
        if controller
            .settings
            .budget
            .is_some_and(|budget| bytes > budget)
        {
            return Err(controller.reject(Reason::TooLarge, Limit::Memory));
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            match controller.reserve(&self.charge, self.class, self.declared, bytes) {
                Ok(()) => return Ok(()),
                Err(None) => return Err(Rejection::new(Reason::QueueTimeout, Limit::Memory)),
                Err(Some(limit)) if tokio::time::Instant::now() >= deadline => {
                    return Err(controller.reject(Reason::QueueTimeout, limit));
                }
                Err(Some(_)) => {
                    let next = tokio::time::Instant::now() + controller.settings.sample_interval;
                    tokio::time::sleep_until(next.min(deadline)).await;
                }
            }
        }
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reservation")
            .field("charge", &self.charge)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}
