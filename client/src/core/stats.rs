//! What the debug overlay shows: traffic and snapshot counts, turned into rates over about the
//! last second.

use std::collections::VecDeque;

use super::Interpolator;

/// Samples of the counters kept for the rates: one per `SAMPLE_EVERY_MS`, a second's worth.
const SAMPLE_EVERY_MS: f64 = 250.0;
const SAMPLES: usize = 5;

#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Counters {
    bytes_down: u64,
    bytes_up: u64,
    snapshots: u64,
    corrections: u64,
}

#[derive(Debug, Default)]
pub(super) struct NetStats {
    now: Counters,
    samples: VecDeque<(f64, Counters)>,
}

/// The overlay's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct DebugInfo {
    pub rtt_ms: Option<f64>,
    pub jitter_ms: f64,
    pub snapshots_per_s: f64,
    pub bytes_down_per_s: f64,
    pub bytes_up_per_s: f64,
    pub corrections_per_s: f64,
    pub interpolation_delay_ms: f64,
    /// How long inputs waited at the server for their tick (the server's latest report).
    pub input_wait_ms: Option<f64>,
}

impl NetStats {
    pub fn received(&mut self, bytes: usize) {
        self.now.bytes_down += bytes as u64;
    }

    pub fn sent(&mut self, bytes: usize) {
        self.now.bytes_up += bytes as u64;
    }

    pub fn snapshot(&mut self) {
        self.now.snapshots += 1;
    }

    /// Records the counters when a sample is due (called every frame).
    pub fn sample(&mut self, now_ms: f64) {
        if self.samples.back().is_some_and(|(at, _)| now_ms - at < SAMPLE_EVERY_MS) {
            return;
        }
        if self.samples.len() == SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back((now_ms, self.now));
    }

    pub fn info(&self, now_ms: f64, rtt_ms: Option<f64>, interpolator: &Interpolator, corrections: u64) -> DebugInfo {
        let mut info = DebugInfo {
            rtt_ms,
            jitter_ms: interpolator.jitter_ms(),
            interpolation_delay_ms: interpolator.delay_ms(),
            ..DebugInfo::default()
        };
        let Some((since, then)) = self.samples.front() else { return info };
        let seconds = (now_ms - since) / 1000.0;
        if seconds <= 0.0 {
            return info;
        }
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / seconds;
        info.snapshots_per_s = rate(self.now.snapshots, then.snapshots);
        info.bytes_down_per_s = rate(self.now.bytes_down, then.bytes_down);
        info.bytes_up_per_s = rate(self.now.bytes_up, then.bytes_up);
        info.corrections_per_s = rate(corrections, then.corrections);
        info
    }

    /// Called with the predictor's running count, so corrections have a rate like the rest.
    pub fn corrections(&mut self, total: u64) {
        self.now.corrections = total;
    }
}
