//! How fast the pool drains when it is saturated (an exponentially weighted moving average
//! of admissions per second, over about a second of saturation), and from it how long a shed
//! client should wait before it tries again: the queue ahead of it divided by that rate,
//! bounded, with jitter so that shed clients do not all come back in the same second.
//!
//! Only saturated time counts (someone waited, or was rejected): the rate measures what the
//! pool *can* admit, and an idle spell must not make it look slow when the next burst comes.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The average's time constant: a second, in milliseconds.
const TAU_MS: f64 = 1000.0;
/// Jitter: the wait is spread over ±25 %.
const JITTER: f64 = 0.25;

/// Written by the sampler thread only; read by every rejection.
#[derive(Debug, Default)]
pub(crate) struct Drain {
    /// Admissions per second, as `f64` bits.
    rate: AtomicU64,
    /// The admissions and rejections counts, and the time (ms), at the last update.
    last_admitted: AtomicU64,
    last_rejected: AtomicU64,
    last_ms: AtomicU64,
}

impl Drain {
    /// Folds in the admissions counted up to `admitted` at `now_ms`, if the pool was
    /// saturated since the last update: someone waits (`queued`), or `rejected` (the
    /// rejections count) has grown.
    pub(crate) fn update(&self, admitted: u64, rejected: u64, queued: bool, now_ms: u64) {
        let (before, then) = (self.last_admitted.load(Relaxed), self.last_ms.load(Relaxed));
        let elapsed = now_ms.saturating_sub(then);
        if elapsed == 0 {
            return;
        }
        let saturated = queued || rejected != self.last_rejected.swap(rejected, Relaxed);
        self.last_admitted.store(admitted, Relaxed);
        self.last_ms.store(now_ms, Relaxed);
        if !saturated {
            return;
        }
        let instant = admitted.saturating_sub(before) as f64 * 1000.0 / elapsed as f64;
        let weight = 1.0 - (-(elapsed as f64) / TAU_MS).exp();
        let rate = self.rate();
        self.rate
            .store((rate + weight * (instant - rate)).to_bits(), Relaxed);
    }

    /// Admissions per second while saturated, lately; 0 until the pool first is.
    pub(crate) fn rate(&self) -> f64 {
        f64::from_bits(self.rate.load(Relaxed))
    }

    /// Whole seconds a client shed behind `ahead` waiters should wait: `ahead + 1` over the
    /// rate, spread by `draw` (any number; the same draw gives the same value) evenly over
    /// the whole seconds within ±25 % of it, and over two of them at least (1 or 2 s for a
    /// short wait: whole seconds would otherwise send every client rejected together back in
    /// the same second), within `1..=max`. Before any saturation there is no rate to go by:
    /// 1 s, as the fixed default.
    pub(crate) fn retry_after(&self, ahead: usize, max: u32, draw: u64) -> u32 {
        let rate = self.rate();
        if rate == 0.0 {
            return 1;
        }
        let wait = ((ahead as f64 + 1.0) / rate).min(f64::from(max));
        let max = max.max(1);
        // Rounded to the nearest whole second (the values are positive: a cast truncates).
        let low = ((wait * (1.0 - JITTER) + 0.5) as u32).clamp(1, max);
        let high = ((wait * (1.0 + JITTER) + 0.5) as u32).max(low + 1).min(max);
        // `draw` mixed (splitmix64), then one of the whole seconds in `low..=high`.
        let mut z = draw.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let spread = ((z ^ (z >> 31)) % u64::from(high - low + 1)) as u32;
        low + spread
    }
}

/// A number that differs from call to call, for the jitter: a per-thread xorshift, seeded
/// by the thread's own address.
pub(crate) fn draw() -> u64 {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = const { Cell::new(0) };
    }
    STATE.with(|state| {
        let mut x = state.get();
        if x == 0 {
            x = (state as *const Cell<u64> as u64) | 1;
        }
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_follows_admissions_within_a_few_seconds() {
        let drain = Drain::default();
        // 100 admissions every 10 ms: 10,000/s, for 5 s.
        for tick in 1..=500 {
            drain.update(tick * 100, 0, true, tick * 10);
        }
        assert!((drain.rate() - 10_000.0).abs() < 100.0, "{}", drain.rate());
        // Then nothing admitted for 3 s while requests wait: the rate falls to about 5 %.
        for tick in 501..=800 {
            drain.update(50_000, 0, true, tick * 10);
        }
        assert!(drain.rate() < 600.0, "{}", drain.rate());
    }

    #[test]
    fn only_saturated_time_counts() {
        let drain = Drain::default();
        for tick in 1..=500 {
            drain.update(tick * 10, 0, true, tick * 10); // 1,000/s with a queue
        }
        let busy = drain.rate();
        // An idle minute: nobody waits, nobody is rejected.
        for tick in 501..=6500 {
            drain.update(5_000 + tick - 500, 0, false, tick * 10);
        }
        assert_eq!(drain.rate(), busy);
        // Rejections without a queue (capacity 0) count as saturation.
        let before = drain.rate();
        drain.update(11_000, 5, false, 65_010);
        drain.update(11_000, 9, false, 65_020);
        assert!(drain.rate() < before);
    }

    #[test]
    fn the_wait_is_the_queue_over_the_rate_bounded_and_spread() {
        let drain = Drain::default();
        for tick in 1..=500 {
            drain.update(tick, 0, true, tick * 10); // 100/s
        }
        // 999 ahead at 100/s: about 10 s, give or take a quarter.
        let waits: Vec<u32> = (0..1000)
            .map(|draw| drain.retry_after(999, 60, draw))
            .collect();
        assert!(waits.iter().all(|w| (8..=13).contains(w)), "{waits:?}");
        for second in 8..=13 {
            let share = waits.iter().filter(|w| **w == second).count();
            assert!((120..=220).contains(&share), "{second} s: {share} of 1000");
        }
        // A short wait (rejected with nobody ahead at 100/s): 1 or 2 s, about half each, so
        // that clients rejected together do not all come back together.
        let short: Vec<u32> = (0..1000)
            .map(|draw| drain.retry_after(0, 60, draw))
            .collect();
        let ones = short.iter().filter(|w| **w == 1).count();
        assert!(short.iter().all(|w| (1..=2).contains(w)) && (400..=600).contains(&ones));
        // Within 1..=max.
        assert_eq!(drain.retry_after(0, 1, 7), 1);
        assert!((45..=60).contains(&drain.retry_after(1_000_000, 60, 7)));
        // Never saturated yet: no rate to go by.
        assert_eq!(Drain::default().retry_after(500, 30, 7), 1);
    }
}
