//! The whole admission state in one word, so that admitting is one compare-and-swap and
//! releasing one subtraction, and the two limits are always checked against a consistent pair:
//!
//! - bits 0–19: requests in flight (hence at most [`MAX_CONCURRENCY`]);
//! - bits 20–62: bytes charged to them, in KiB (up to 8 PiB);
//! - bit 63 (`QUEUED`): someone waits. Arrivals must then queue behind them, and a release
//!   must take the lock to hand its slot on.

pub(super) const QUEUED: u64 = 1 << 63;
const IN_FLIGHT_BITS: u32 = 20;
const IN_FLIGHT_MASK: u64 = (1 << IN_FLIGHT_BITS) - 1;

/// The largest concurrency limit the state word can count.
pub(crate) const MAX_CONCURRENCY: usize = IN_FLIGHT_MASK as usize;
/// The largest budget. Estimates are bounded by the budget and charges beyond them by real
/// memory, so the word's 43 bits of KiB (8 PiB) never overflow.
pub(crate) const MAX_BUDGET_BYTES: u64 = 1 << 52;

pub(super) fn in_flight(word: u64) -> u64 {
    word & IN_FLIGHT_MASK
}

pub(super) fn charged_bytes(word: u64) -> u64 {
    ((word & !QUEUED) >> IN_FLIGHT_BITS) * 1024
}

/// What one request charged `charge_kib` adds to the word: one in flight, and its charge.
pub(super) fn claim(charge_kib: u64) -> u64 {
    1 + charge(charge_kib)
}

/// What `charge_kib` adds to the charged field.
pub(super) fn charge(charge_kib: u64) -> u64 {
    charge_kib << IN_FLIGHT_BITS
}

/// `bytes` in KiB, rounded up: the unit of charges in the state word.
pub(crate) fn kib(bytes: u64) -> u64 {
    bytes.div_ceil(1024)
}
