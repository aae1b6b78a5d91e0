//! A figure that may grow with a request's body: what the requests of a class took, against
//! their bodies' length, as a moving straight line.
//!
//! A parse takes as long as its body is long; a handler that does the same work whatever it
//! is sent does not. One route can carry bodies hundreds of times apart, with nothing to tell
//! them apart but their `Content-Length`. So a class keeps moving averages (over about eight
//! requests, as [`super::cpu::learn`]) of the body's length, the figure, and their squares
//! and product: the least-squares line through them gives a request the figure of its own
//! length, flat for a class whose figure does not grow with its bodies. While the recent
//! requests' lengths hardly differ, the line is not known: a request with a body no longer
//! than theirs is given their figure, a longer one that figure in proportion to its length
//! (the safe side: a class that has shown only small bodies is not taken to parse a large one
//! in no time).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The share of a request's weight in the moving averages.
const WEIGHT: f64 = 1.0 / 8.0;

/// Below this spread of lengths (the variance over the squared mean), the line is not known.
const LEAST_SPREAD: f64 = 0.01;

/// Moving averages of `x` (a body's length in KiB, plus one: a request without a body counts
/// as one KiB), `y` (the figure), `x²` and `x·y`, as `f64` bits (0: nothing learned).
#[derive(Debug, Default)]
pub(crate) struct BySize {
    x: AtomicU64,
    y: AtomicU64,
    xx: AtomicU64,
    xy: AtomicU64,
}

impl BySize {
    /// A request that declared `declared` body bytes took `y`.
    pub(crate) fn learn(&self, declared: u64, y: u64) {
        let (x, y) = (length(declared), y.max(1) as f64);
        let first = self.x.load(Relaxed) == 0;
        // A racing update may be lost: one sample, in running figures.
        for (mean, sample) in [
            (&self.xx, x * x),
            (&self.xy, x * y),
            (&self.y, y),
            (&self.x, x),
        ] {
            let next = match first {
                true => sample,
                false => {
                    let before = f64::from_bits(mean.load(Relaxed));
                    before + (sample - before) * WEIGHT
                }
            };
            mean.store(next.to_bits(), Relaxed);
        }
    }

    /// The figure of a request that declared `declared` body bytes, once learned.
    pub(crate) fn of(&self, declared: u64) -> Option<u64> {
        let x_bits = self.x.load(Relaxed);
        if x_bits == 0 {
            return None;
        }
        let [x, y, xx, xy] = [
            x_bits,
            self.y.load(Relaxed),
            self.xx.load(Relaxed),
            self.xy.load(Relaxed),
        ]
        .map(f64::from_bits);
        let own = length(declared);
        let spread = xx - x * x;
        let figure = if spread > LEAST_SPREAD * x * x {
            let slope = ((xy - x * y) / spread).max(0.0);
            match y - slope * x {
                // A line through the origin: the figure in proportion to the length.
                intercept if intercept < 0.0 => y / x * own,
                intercept => intercept + slope * own,
            }
        } else if own > x {
            y / x * own
        } else {
            y
        };
        Some(figure.clamp(1.0, u64::MAX as f64) as u64)
    }

    /// The figure of the recent requests, whatever their length.
    pub(crate) fn mean(&self) -> Option<u64> {
        (self.x.load(Relaxed) != 0).then(|| f64::from_bits(self.y.load(Relaxed)) as u64)
    }

    pub(crate) fn clear(&self) {
        for mean in [&self.x, &self.y, &self.xx, &self.xy] {
            mean.store(0, Relaxed);
        }
    }
}

/// A body's length in KiB, plus one.
fn length(declared: u64) -> f64 {
    (declared / 1024) as f64 + 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;

    #[test]
    fn a_parse_is_as_long_as_its_body_and_fixed_work_is_not() {
        let parse = BySize::default();
        assert_eq!(parse.of(0), None);
        // 64 KiB in 0.5 ms, 4 MiB in 32 ms, interleaved.
        for _ in 0..8 {
            parse.learn(64 * KIB, 500_000);
            parse.learn(4096 * KIB, 32_000_000);
        }
        let near = |got: Option<u64>, want: u64| {
            let got = got.expect("learned");
            assert!(got.abs_diff(want) * 10 <= want, "{got} vs {want}");
        };
        near(parse.of(64 * KIB), 500_000);
        near(parse.of(4096 * KIB), 32_000_000);
        near(parse.of(1024 * KIB), 8_000_000);
        // The same 10 ms, whatever the body.
        let fixed = BySize::default();
        for _ in 0..8 {
            fixed.learn(KIB, 10_000_000);
            fixed.learn(1024 * KIB, 10_000_000);
        }
        near(fixed.of(0), 10_000_000);
        near(fixed.of(4096 * KIB), 10_000_000);
    }

    #[test]
    fn lengths_that_hardly_differ_give_their_figure_and_a_longer_body_more() {
        let small = BySize::default();
        for _ in 0..16 {
            small.learn(64 * KIB, 500_000);
        }
        assert_eq!(small.of(64 * KIB), Some(500_000));
        assert_eq!(small.mean(), Some(500_000));
        assert_eq!(small.of(KIB), Some(500_000), "no line known");
        assert_eq!(small.of(4096 * KIB), Some(500_000 * 4097 / 65));
        small.clear();
        assert_eq!(small.of(64 * KIB), None);
    }
}
