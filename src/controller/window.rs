//! The window the CPU gate and the adaptive limit both judge: the sampler's readings of how
//! late the runtime runs, of the requests in flight and of whether the adaptive limit held a
//! waiter back, from the tick that closed the last window to the tick at which
//! [`WINDOW_MS`] have passed, which closes it (see [`tick`](super::tick)).

use std::time::Duration;

/// How long a window lasts.
pub(crate) const WINDOW_MS: u64 = 50;

#[derive(Debug, Default)]
pub(crate) struct Window {
    /// When it started: at the tick that closed the last one (the first, at its first
    /// reading).
    started_ms: Option<u64>,
    lateness_us: u64,
    readings: u64,
    /// The most in flight at any reading.
    peak: usize,
    /// Whether the limit held a waiter back at any reading.
    blocked: bool,
}

/// A window, closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed {
    /// How long it lasted, in milliseconds.
    pub(crate) length_ms: u64,
    /// How late the runtime ran, on average over its readings.
    pub(crate) lateness: Duration,
    /// The most in flight at any reading.
    pub(crate) peak: usize,
    /// Whether the limit held a waiter back at any reading.
    pub(crate) blocked: bool,
}

impl Window {
    /// Takes one reading at `now_ms`: the runtime's `lateness`, the requests `in_flight`, and
    /// whether the limit holds a waiter back. Closes the window once it has lasted
    /// [`WINDOW_MS`]; the next starts then.
    pub(crate) fn read(
        &mut self,
        now_ms: u64,
        lateness: Duration,
        in_flight: usize,
        blocked: bool,
    ) -> Option<Closed> {
        let started = *self.started_ms.get_or_insert(now_ms);
        self.lateness_us = self.lateness_us.saturating_add(lateness.as_micros() as u64);
        self.readings += 1;
        self.peak = self.peak.max(in_flight);
        self.blocked |= blocked;
        if now_ms < started.saturating_add(WINDOW_MS) {
            return None;
        }
        let next = Self {
            started_ms: Some(now_ms),
            ..Self::default()
        };
        let closed = std::mem::replace(self, next);
        Some(Closed {
            length_ms: now_ms - started,
            lateness: Duration::from_micros(closed.lateness_us / closed.readings),
            peak: closed.peak,
            blocked: closed.blocked,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_closes_at_its_length_and_the_next_starts_there() {
        let mut window = Window::default();
        let ms = Duration::from_millis;
        for t in (0..WINDOW_MS).step_by(10) {
            assert_eq!(window.read(t, ms(t), 3, false), None);
        }
        let first = window.read(WINDOW_MS, ms(WINDOW_MS), 1, true).unwrap();
        // Readings at 0, 10, ..., 50 ms: 25 ms late on average.
        assert_eq!(
            first,
            Closed {
                length_ms: WINDOW_MS,
                lateness: ms(25),
                peak: 3,
                blocked: true,
            }
        );
        for t in (WINDOW_MS + 10..2 * WINDOW_MS).step_by(10) {
            assert_eq!(window.read(t, ms(0), 1, false), None);
        }
        let second = window.read(2 * WINDOW_MS, ms(10), 2, false).unwrap();
        // The closing reading of the first is not counted again: 60..=100 ms, five readings.
        assert_eq!(second.length_ms, WINDOW_MS);
        assert_eq!(second.lateness, ms(2));
        assert_eq!((second.peak, second.blocked), (2, false));
    }
}
