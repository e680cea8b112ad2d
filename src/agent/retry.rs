//! Bounded retries with exponential backoff and jitter (as Azure DPS recommends for fleets):
//! devices that reboot together after a power cut spread their attempts instead of arriving
//! at the server in waves.

use std::time::Duration;

use rand::Rng;

/// How often and how long to wait between attempts.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    /// Attempts after the first one.
    pub retries: u32,
    /// The first delay's ceiling.
    pub base: Duration,
    /// No delay is longer than this.
    pub max: Duration,
}

impl Backoff {
    /// The delay before retry number `retry` (0 = the first retry): "equal jitter", uniformly
    /// between half and all of `min(max, base * 2^retry)`, so it never collapses to zero.
    pub fn delay(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(2u32.saturating_pow(retry.min(31)))
            .min(self.max);
        let half = ceiling / 2;
        let jitter_ms = rand::rng().random_range(0..=half.as_millis() as u64);
        half + Duration::from_millis(jitter_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_stay_within_half_and_all_of_it() {
        let b = Backoff {
            retries: 10,
            base: Duration::from_millis(1000),
            max: Duration::from_millis(8000),
        };
        for (retry, ceiling) in [(0, 1000), (1, 2000), (2, 4000), (3, 8000), (9, 8000)] {
            for _ in 0..50 {
                let d = b.delay(retry).as_millis() as u64;
                assert!(d >= ceiling / 2 && d <= ceiling, "{retry}: {d}");
            }
        }
    }
}
