//! The controller's verbs for connections (see [`super::connections`]): room to accept one,
//! a connection opened and closed, and what each sample does for them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    task::{Context, Poll},
};

use super::{
    Controller,
    connections::{CONNECTION_BYTES, Connections, FRESH_BYTES, Link},
};

/// An open connection: counted, its bytes held, until dropped.
#[derive(Debug)]
pub(crate) struct OpenConnection {
    controller: Arc<Controller>,
    slot: usize,
    link: Arc<Link>,
    /// Whether it has received bytes, and holds [`CONNECTION_BYTES`] rather than
    /// [`FRESH_BYTES`].
    spoke: AtomicBool,
}

impl Controller {
    pub(crate) fn connections(&self) -> &Connections {
        &self.connections
    }

    /// `Ready` while one more connection may be accepted: fewer than the maximum are open,
    /// the memory spoken for, with what the fresh connections will hold once their first
    /// bytes come, leaves room for one more, and, while connections hold half the budget or
    /// more, no request waits: then the requests of open connections go first (a new
    /// connection would bring one more to wait, and take memory they wait for).
    pub(crate) fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<()> {
        let connections = &self.connections;
        let memory_room = self.settings.budget.is_none_or(|budget| {
            let coming = connections.coming_bytes() + CONNECTION_BYTES;
            let dominate = connections.held_bytes() >= budget / 2;
            self.spoken_for_bytes().saturating_add(coming) <= budget
                && !(dominate && self.waitlist.len() > 0)
        });
        self.connections
            .poll_room(cx, memory_room, self.clock.now_ms())
    }

    /// Counts a connection accepted now, holding its bytes while it is open.
    pub(crate) fn open_connection(self: &Arc<Self>) -> OpenConnection {
        self.connections.count_from_now();
        let (slot, link) = self.connections.opened();
        self.footprint.hold(FRESH_BYTES);
        OpenConnection {
            controller: Arc::clone(self),
            slot,
            link,
            spoke: AtomicBool::new(false),
        }
    }

    /// On each sample: while memory spoken for is within a sixteenth of the budget, or
    /// accepts wait for room, asks a few idle connections to close; then lets the accepts
    /// that wait look for room again.
    /// Whether the pool's listener counts connections (see [`connections`](super::connections)).
    pub(crate) fn counts_connections(&self) -> bool {
        self.connections.are_counted()
    }

    pub(super) fn sample_connections(&self, now_ms: u64) {
        let connections = &self.connections;
        let waiting = connections.accepts_wait();
        if connections.figures().open == 0 && !waiting {
            return;
        }
        let short = self
            .settings
            .budget
            .is_some_and(|budget| self.spoken_for_bytes() > budget - budget / 16);
        if short || waiting {
            connections.give_back_idle(now_ms);
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

    /// It received bytes: not idle now, and from its first bytes the server reads them into
    /// buffers of its own, so it holds [`CONNECTION_BYTES`].
    #[inline]
    pub(crate) fn received(&self) {
        self.link.touch();
        if !self.spoke.load(Relaxed) && !self.spoke.swap(true, Relaxed) {
            self.controller
                .footprint
                .hold(CONNECTION_BYTES - FRESH_BYTES);
            self.controller.connections.spoke();
        }
    }

    fn bytes(&self) -> u64 {
        match self.spoke.load(Relaxed) {
            true => CONNECTION_BYTES,
            false => FRESH_BYTES,
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        // Given back before the slot is freed: the accept that wakes finds the bytes free.
        if !self.spoke.load(Relaxed) {
            self.controller.connections.spoke();
        }
        self.controller.footprint.let_go(self.bytes());
        self.controller.connections.closed(self.slot);
    }
}
