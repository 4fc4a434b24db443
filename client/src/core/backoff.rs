//! Reconnect delays: exponential backoff with jitter, so a restarted server is not hit by every
//! client at the same instant.

/// First retry after about half a second.
const BASE_MS: f64 = 500.0;
/// Never wait longer than this between attempts.
const CAP_MS: f64 = 10_000.0;

/// The delay before reconnect attempt `attempt` (0 for the first), with `jitter` in [0, 1)
/// spreading it over the upper half of the window.
pub fn reconnect_delay_ms(attempt: u32, jitter: f64) -> f64 {
    let window = (BASE_MS * 2f64.powi(attempt.min(16) as i32)).min(CAP_MS);
    window * (0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_then_cap() {
        assert_eq!(reconnect_delay_ms(0, 1.0), 500.0);
        assert_eq!(reconnect_delay_ms(1, 1.0), 1000.0);
        assert_eq!(reconnect_delay_ms(10, 1.0), CAP_MS);
        assert_eq!(reconnect_delay_ms(u32::MAX, 1.0), CAP_MS);
    }

    #[test]
    fn jitter_spreads_over_the_upper_half() {
        assert_eq!(reconnect_delay_ms(2, 0.0), 1000.0);
        assert_eq!(reconnect_delay_ms(2, 0.5), 1500.0);
    }
}
