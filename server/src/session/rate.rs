//! A token bucket over caller-supplied time: `rate` tokens a second, up to `burst` stored.

use std::time::Instant;

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// Starts full, so a new client can send its first burst at once.
    pub fn new(now: Instant, rate: f64, burst: f64) -> Self {
        Self { rate, burst, tokens: burst, updated: now }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn refills_at_the_rate_up_to_the_burst() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(start, 2.0, 3.0);
        assert_eq!((0..5).filter(|_| bucket.try_take(start)).count(), 3, "a full bucket gives its burst");
        let later = start + Duration::from_secs(1);
        assert_eq!((0..5).filter(|_| bucket.try_take(later)).count(), 2, "one second refills `rate` tokens");
        let much_later = later + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| bucket.try_take(much_later)).count(), 3, "never more than the burst");
    }
}
