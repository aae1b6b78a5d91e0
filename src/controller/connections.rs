//! The connections a pool serves, once a listener made from it accepts them: counted, each
//! holding what an open connection holds (see [`CONNECTION_BYTES`]) in the memory spoken for
//! while it is open, accepted only while there is room for one more, and the idle ones
//! asked to close, oldest first, while memory is short.
//!
//! **Room.** A connection is accepted while fewer than the maximum are open, the memory
//! spoken for leaves room for one more (with what the fresh ones will hold once their first
//! bytes come), and, while connections hold half the budget or more, no request waits in the
//! queue: then the requests of open connections go first. Otherwise accepting pauses, and the
//! kernel's backlog holds the connections that come meanwhile (the cheapest queue there is).
//! Each accepted one adds its bytes at once, so a flood of connections is seen before the
//! next reading.
//!
//! **Idle connections given back.** While memory spoken for is within a sixteenth of the
//! budget, or accepts wait for room, each sample asks the connections that have had neither
//! a request nor a byte for [`IDLE_AFTER_MS`] or more to close (and have had bytes before:
//! one that has not may hold a request its server has not read), oldest idle first, a few
//! at a time (an eighth of them, 1 to 32, as nginx reuses connections): the memory goes to
//! requests that do work. Only connections whose requests are counted can be idle; the
//! server shuts a connection down gracefully when asked, so a request in flight is never
//! cut.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    task::{Context, Poll, Waker},
    time::Duration,
};

use crate::log_throttle::LogThrottle;

/// What an open connection holds once it has received bytes, measured with the example
/// server as jemalloc's allocated bytes over 2,000 idle keep-alive connections after one
/// request each: 26–28.5 KiB for HTTP/1 (buffers, the connection's task and service),
/// 29.5–32 KiB for HTTP/2.
pub(crate) const CONNECTION_BYTES: u64 = 28 << 10;
/// What it holds before (1–3 KiB, measured the same way): its buffers come with its first
/// bytes. Holding more would run ahead of the reading in a flood of new connections, and
/// the baseline learned from it (the reading less what is held) would fall too low.
pub(crate) const FRESH_BYTES: u64 = 4 << 10;
/// How long a connection must have had no request to be given back under pressure: a client
/// back within a second is a live one, not a spare in its pool.
pub(crate) const IDLE_AFTER_MS: u64 = 1_000;
/// The most connections asked to close in one sample.
const MOST_CLOSED: usize = 32;

/// A connection not heard from yet: one that has received nothing may have a request its
/// server has not read, and is not given back (the server's header read timeout ends it).
const NEVER: u64 = u64::MAX;

/// One open connection, as the pool sees it.
#[derive(Debug)]
pub(crate) struct Link {
    /// Its requests in flight, response bodies included.
    requests: AtomicUsize,
    /// When its last request ended, or it last received bytes, in milliseconds on the pool's
    /// clock; [`NEVER`] until then.
    idle_since_ms: AtomicU64,
    /// Whether its requests are counted: only then can it be told idle.
    tracked: AtomicBool,
    /// Whether it received bytes since a give-back pass last looked at it: a flag, so that
    /// reads do not read the clock.
    heard_lately: AtomicBool,
    /// Whether the pool asked it to close.
    closing: AtomicBool,
    /// Who waits for that.
    waker: Mutex<Option<Waker>>,
}

impl Default for Link {
    fn default() -> Self {
        Self {
            requests: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(NEVER),
            tracked: AtomicBool::new(false),
            heard_lately: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            waker: Mutex::new(None),
        }
    }
}

impl Link {
    /// Its requests are counted from now on.
    pub(crate) fn track(&self) {
        self.tracked.store(true, Relaxed);
    }

    /// A request began on it.
    pub(crate) fn began(&self) {
        self.requests.fetch_add(1, Relaxed);
    }

    /// It received bytes: a request may be beginning, so it is not idle.
    #[inline]
    pub(crate) fn touch(&self) {
        if !self.heard_lately.load(Relaxed) {
            self.heard_lately.store(true, Relaxed);
        }
    }

    /// A request on it ended (its response body too) at `now_ms`.
    pub(crate) fn ended(&self, now_ms: u64) {
        if self.requests.fetch_sub(1, Relaxed) == 1 {
            self.idle_since_ms.store(now_ms, Relaxed);
        }
    }

    /// `Ready` once the pool has asked it to close.
    pub(crate) fn poll_closing(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.closing.load(Relaxed) {
            return Poll::Ready(());
        }
        *self.waker.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
        // Asked between the first look and the waker's registration.
        match self.closing.load(Relaxed) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    /// How long it has been idle at `now_ms`, if it is. Bytes received since the last look
    /// count as received now.
    fn idle_for_ms(&self, now_ms: u64) -> Option<u64> {
        if self.heard_lately.swap(false, Relaxed) {
            self.idle_since_ms.store(now_ms, Relaxed);
            return None;
        }
        let since = self.idle_since_ms.load(Relaxed);
        let idle = self.tracked.load(Relaxed)
            && since != NEVER
            && !self.closing.load(Relaxed)
            && self.requests.load(Relaxed) == 0;
        idle.then(|| now_ms.saturating_sub(since))
    }

    fn close(&self) {
        self.closing.store(true, Relaxed);
        let waker = self
            .waker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The pool's open connections.
#[derive(Debug)]
pub(crate) struct Connections {
    /// The most that may be open at once, if any.
    max: Option<usize>,
    /// Set once a listener counts the pool's connections: a request then holds only what it
    /// adds to its connection.
    counted: AtomicBool,
    open: AtomicUsize,
    /// Of those, the ones that have received no bytes yet, and hold less than they will.
    fresh: AtomicUsize,
    /// Every open connection; a slot is freed when its connection closes.
    links: Mutex<Links>,
    /// Accepts waiting for room.
    accepts: Mutex<Vec<Waker>>,
    /// Whether accepting is paused now, and how many times it paused.
    paused: AtomicBool,
    pauses: AtomicU64,
    /// Idle connections asked to close under pressure.
    closed_idle: AtomicU64,
    log: LogThrottle,
}

/// The open connections' links, in slots reused as connections close (in O(1): a list of
/// the free ones).
#[derive(Debug, Default)]
struct Links {
    slots: Vec<Option<Arc<Link>>>,
    free: Vec<usize>,
}

impl Links {
    fn insert(&mut self, link: Arc<Link>) -> usize {
        match self.free.pop() {
            Some(slot) => {
                self.slots[slot] = Some(link);
                slot
            }
            None => {
                self.slots.push(Some(link));
                self.slots.len() - 1
            }
        }
    }

    fn remove(&mut self, slot: usize) {
        if self.slots.get_mut(slot).and_then(Option::take).is_some() {
            self.free.push(slot);
        }
    }
}

/// How the pool's connections stand, for the snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectionFigures {
    pub(crate) open: usize,
    pub(crate) max: Option<usize>,
    pub(crate) pauses: u64,
    pub(crate) closed_idle: u64,
}

impl Connections {
    pub(crate) fn new(max: Option<usize>) -> Self {
        Self {
            max,
            counted: AtomicBool::new(false),
            open: AtomicUsize::new(0),
            fresh: AtomicUsize::new(0),
            links: Mutex::new(Links::default()),
            accepts: Mutex::new(Vec::new()),
            paused: AtomicBool::new(false),
            pauses: AtomicU64::new(0),
            closed_idle: AtomicU64::new(0),
            log: LogThrottle::new(Duration::from_secs(1)),
        }
    }

    /// Whether a listener counts the pool's connections.
    #[inline]
    pub(crate) fn are_counted(&self) -> bool {
        self.counted.load(Relaxed)
    }

    pub(crate) fn count_from_now(&self) {
        self.counted.store(true, Relaxed);
    }

    pub(crate) fn figures(&self) -> ConnectionFigures {
        ConnectionFigures {
            open: self.open.load(Relaxed),
            max: self.max,
            pauses: self.pauses.load(Relaxed),
            closed_idle: self.closed_idle.load(Relaxed),
        }
    }

    /// `Ready` while one more connection may be accepted at `now_ms`: fewer than the maximum
    /// are open and `memory_room` (see `Controller::poll_accept`). Otherwise the
    /// accept waits for [`wake_accepts`](Self::wake_accepts); a pause that begins is counted
    /// and logged (once a second at most).
    pub(crate) fn poll_room(
        &self,
        cx: &mut Context<'_>,
        memory_room: bool,
        now_ms: u64,
    ) -> Poll<()> {
        if memory_room && self.below_max() {
            self.paused.store(false, Relaxed);
            return Poll::Ready(());
        }
        let mut accepts = self.accepts.lock().unwrap_or_else(PoisonError::into_inner);
        if !accepts.iter().any(|w| w.will_wake(cx.waker())) {
            accepts.push(cx.waker().clone());
        }
        drop(accepts);
        if !self.paused.swap(true, Relaxed) {
            let pauses = self.pauses.fetch_add(1, Relaxed) + 1;
            if let Some(held_back) = self.log.allow(now_ms, pauses) {
                tracing::warn!(
                    open = self.open.load(Relaxed),
                    max = ?self.max,
                    memory_spoken_for = !memory_room,
                    pauses_not_logged = held_back,
                    "accepting paused: {}",
                    match memory_room {
                        true => "as many connections open as may be",
                        false => "no room in the memory budget for one more connection",
                    }
                );
            }
        }
        Poll::Pending
    }

    fn below_max(&self) -> bool {
        self.max.is_none_or(|max| self.open.load(Relaxed) < max)
    }

    /// Whether accepts wait for room.
    pub(crate) fn accepts_wait(&self) -> bool {
        !self
            .accepts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    /// Wakes the accepts that wait, to look for room again.
    pub(crate) fn wake_accepts(&self) {
        let wakers =
            std::mem::take(&mut *self.accepts.lock().unwrap_or_else(PoisonError::into_inner));
        wakers.into_iter().for_each(Waker::wake);
    }

    /// What the open connections hold.
    pub(crate) fn held_bytes(&self) -> u64 {
        let (open, fresh) = (self.open.load(Relaxed), self.fresh.load(Relaxed));
        let spoken = open.saturating_sub(fresh) as u64;
        spoken * CONNECTION_BYTES + fresh as u64 * FRESH_BYTES
    }

    /// What the connections that have received nothing yet will hold besides what they
    /// hold now, once their bytes come.
    pub(crate) fn coming_bytes(&self) -> u64 {
        self.fresh.load(Relaxed) as u64 * (CONNECTION_BYTES - FRESH_BYTES)
    }

    /// A fresh connection received its first bytes, or closed without.
    pub(crate) fn spoke(&self) {
        self.fresh.fetch_sub(1, Relaxed);
    }

    /// Counts a connection accepted now, fresh; its slot, for [`closed`](Self::closed).
    pub(crate) fn opened(&self) -> (usize, Arc<Link>) {
        let link = Arc::new(Link::default());
        self.open.fetch_add(1, Relaxed);
        self.fresh.fetch_add(1, Relaxed);
        let slot = self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(Arc::clone(&link));
        (slot, link)
    }

    /// The connection in `slot` closed.
    pub(crate) fn closed(&self, slot: usize) {
        self.links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(slot);
        self.open.fetch_sub(1, Relaxed);
        self.wake_accepts();
    }

    /// Asks the connections idle longest at `now_ms` to close, a few of them: the memory
    /// goes to requests that do work. Returns how many.
    pub(crate) fn give_back_idle(&self, now_ms: u64) -> usize {
        let mut idle: Vec<(u64, Arc<Link>)> = self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .slots
            .iter()
            .flatten()
            .filter_map(|link| {
                let idle_ms = link.idle_for_ms(now_ms)?;
                (idle_ms >= IDLE_AFTER_MS).then(|| (idle_ms, Arc::clone(link)))
            })
            .collect();
        let count = (idle.len() / 8).clamp(1, MOST_CLOSED).min(idle.len());
        if count == 0 {
            return 0;
        }
        idle.select_nth_unstable_by(count - 1, |a, b| b.0.cmp(&a.0));
        idle[..count].iter().for_each(|(_, link)| link.close());
        self.closed_idle.fetch_add(count as u64, Relaxed);
        count
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn poll_room(connections: &Connections, memory_room: bool) -> Poll<()> {
        connections.poll_room(&mut Context::from_waker(Waker::noop()), memory_room, 0)
    }

    #[test]
    fn accepts_pause_at_the_maximum_or_without_memory_and_each_pause_counts_once() {
        let connections = Connections::new(Some(2));
        assert_eq!(poll_room(&connections, true), Poll::Ready(()));
        let (first, _) = connections.opened();
        connections.opened();
        assert_eq!(poll_room(&connections, true), Poll::Pending);
        assert_eq!(poll_room(&connections, true), Poll::Pending);
        assert!(connections.accepts_wait());
        connections.closed(first);
        assert!(!connections.accepts_wait(), "a close wakes the accepts");
        assert_eq!(poll_room(&connections, true), Poll::Ready(()));
        assert_eq!(poll_room(&connections, false), Poll::Pending);
        let figures = connections.figures();
        assert_eq!((figures.open, figures.pauses), (1, 2));
    }

    #[test]
    fn the_longest_idle_go_first_and_never_one_with_a_request_or_untracked() {
        let connections = Connections::new(None);
        let links: Vec<Arc<Link>> = (0..20).map(|_| connections.opened().1).collect();
        links.iter().for_each(|link| {
            link.track();
            link.touch();
        });
        // A first look sees what each received: link i at i × 100 ms.
        for (i, link) in links.iter().enumerate() {
            assert_eq!(link.idle_for_ms(i as u64 * 100), None, "heard lately");
        }
        let silent = connections.opened().1;
        silent.track();
        links[0].began();
        links[19].tracked.store(false, Relaxed);
        // At 1,500 ms, links 1 to 5 have been idle 1 s or more (1,400 to 1,000 ms).
        assert_eq!(
            connections.give_back_idle(1_500),
            1,
            "an eighth, one at least"
        );
        assert!(links[1].closing.load(Relaxed), "the longest idle first");
        assert_eq!(connections.give_back_idle(1_500), 1);
        assert!(links[2].closing.load(Relaxed));
        // Much later all but the busy and the untracked are idle: an eighth of 17.
        assert_eq!(connections.give_back_idle(60_000), 2);
        assert!(!links[0].closing.load(Relaxed), "a request in flight");
        assert!(!links[19].closing.load(Relaxed), "requests not counted");
        assert!(!silent.closing.load(Relaxed), "nothing received yet");
        links[0].ended(60_000);
        assert_eq!(connections.figures().closed_idle, 4);
    }

    #[test]
    fn a_connection_asked_to_close_is_told_once_it_waits_or_before() {
        let link = Link::default();
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(link.poll_closing(&mut cx), Poll::Pending);
        link.close();
        assert_eq!(link.poll_closing(&mut cx), Poll::Ready(()));
    }
}
