//! One direction's minimum body rate as configured (see [`MinDataRate`]).

use std::time::Duration;

use crate::data_rate::MinDataRate;

/// One direction's minimum rate as configured: the rate may be off while a grace is set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateSetting {
    pub(crate) bytes_per_second: Option<u64>,
    pub(crate) grace: Duration,
}

impl RateSetting {
    /// Kestrel's defaults: 240 bytes/s after a 5 s grace period.
    pub(super) const DEFAULT: Self = Self {
        bytes_per_second: Some(240),
        grace: Duration::from_secs(5),
    };

    pub(crate) fn rate(&self) -> Option<MinDataRate> {
        self.bytes_per_second
            .map(|bytes_per_second| MinDataRate::new(bytes_per_second, self.grace))
    }

    pub(super) fn set(&mut self, rate: Option<MinDataRate>) {
        self.bytes_per_second = rate.map(|rate| rate.bytes_per_second());
        if let Some(rate) = rate {
            self.grace = rate.grace();
        }
    }
}
