//! Exponential backoff with jitter: the one rule every retry loop uses (order processing, the bulk
//! recalculation, the listener's reconnects), so retries never arrive in step.

use std::time::Duration;

use rand::Rng;

/// `base`, `2 x base`, `4 x base` ... for attempts 1, 2, 3 ..., capped at `cap`, plus up to 25% jitter.
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exponent = attempt.clamp(1, 16) - 1;
    let delay = base.saturating_mul(1 << exponent).min(cap);
    let jitter_ms = rand::rng().random_range(0..=delay.as_millis() as u64 / 4);
    delay + Duration::from_millis(jitter_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubling_and_is_capped() {
        let (base, cap) = (Duration::from_millis(100), Duration::from_secs(5));
        let first = backoff(1, base, cap);
        assert!(first >= base && first <= Duration::from_millis(125));
        assert!(backoff(3, base, cap) >= Duration::from_millis(400));
        assert!(backoff(30, base, cap) <= Duration::from_millis(6_250));
    }
}
