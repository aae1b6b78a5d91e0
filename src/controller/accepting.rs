//! The controller's verbs for connections (see [`super::connections`]): room to accept one,
//! a connection opened and closed, and what each sample does for them.

use std::{
    sync::{Arc, atomic::Ordering::Relaxed},
    task::{Context, Poll},
};

use super::{
    Controller, Held,
    connections::{CONNECTION_BYTES, Connections, Link},
};

/// An open connection: counted, its bytes held, until dropped.
#[derive(Debug)]
pub(crate) struct OpenConnection {
    controller: Arc<Controller>,
    slot: usize,
    link: Arc<Link>,
    // Given back before the slot is freed: the accept that wakes finds the bytes free.
    held: Option<Held>,
}

impl Controller {
    pub(crate) fn connections(&self) -> &Connections {
        &self.connections
    }

    /// `Ready` while one more connection may be accepted: fewer than the maximum are open,
    /// the memory spoken for is within the budget, and no request waits for memory (the requests of connections already open go first: a new connection would
    /// bring one more to wait, and take memory they wait for).
    pub(crate) fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<()> {
        let memory_room = self.queued_for_memory.load(Relaxed) == 0
            && self
                .settings
                .budget
                .is_none_or(|budget| self.spoken_for_bytes() <= budget);
        self.connections
            .poll_room(cx, memory_room, self.clock.now_ms())
    }

    /// Counts a connection accepted now, holding its bytes while it is open.
    pub(crate) fn open_connection(self: &Arc<Self>) -> OpenConnection {
        self.connections.count_from_now();
        let (slot, link) = self.connections.opened(self.clock.now_ms());
        OpenConnection {
            controller: Arc::clone(self),
            slot,
            link,
            held: Some(self.hold(CONNECTION_BYTES)),
        }
    }

    /// On each sample: while memory spoken for is within a sixteenth of the budget, or
    /// accepts wait for room, asks a few idle connections to close; then lets the accepts
    /// that wait look for room again.
    pub(crate) fn sample_connections(&self) {
        let connections = &self.connections;
        if connections.figures().open == 0 && !connections.accepts_wait() {
            return;
        }
        let short = self
            .settings
            .budget
            .is_some_and(|budget| self.spoken_for_bytes() > budget - budget / 16);
        if short || connections.accepts_wait() {
            connections.give_back_idle(self.clock.now_ms());
        }
        connections.wake_accepts();
    }
}

impl OpenConnection {
    /// The connection as the pool sees it.
    pub(crate) fn link(&self) -> &Arc<Link> {
        &self.link
    }

    /// A request on it ended now (its response body too).
    pub(crate) fn request_ended(&self) {
        self.link.ended(self.controller.clock.now_ms());
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        drop(self.held.take());
        self.controller.connections.closed(self.slot);
    }
}
