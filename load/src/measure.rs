//! What every workload reports with: the run's milestones (a harness samples the server at the
//! window's edges) and nearest-rank percentiles.

use serde::Serialize;

/// Milestones of a run, reported as they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    /// Every client joined (and, for the whiteboard, holds the board).
    Joined,
    WindowStart,
    WindowEnd,
    /// The whiteboard's offline writers reconnect, and every client holds the merged board:
    /// the harness samples both processes' CPU between them.
    OfflineStart,
    OfflineEnd,
}

impl Milestone {
    /// The line `easel-bot` prints for it, which `cargo xtask bench` watches for.
    pub fn line(self) -> &'static str {
        match self {
            Milestone::Joined => "easel-bot: joined",
            Milestone::WindowStart => "easel-bot: window-start",
            Milestone::WindowEnd => "easel-bot: window-end",
            Milestone::OfflineStart => "easel-bot: offline-start",
            Milestone::OfflineEnd => "easel-bot: offline-end",
        }
    }
}

/// p50 / p90 / p99 / max of a set of samples (all 0 when there are none).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub samples: usize,
}

impl Percentiles {
    /// Nearest-rank percentiles of `samples`.
    pub fn of(mut samples: Vec<f64>) -> Self {
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        let rank = |p: f64| samples[(((p / 100.0) * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
        Self {
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: samples[samples.len() - 1],
            samples: samples.len(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MeanMin {
    pub mean: f64,
    pub min: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let p = Percentiles::of((1..=100).map(f64::from).collect());
        assert_eq!((p.p50, p.p90, p.p99, p.max, p.samples), (50.0, 90.0, 99.0, 100.0, 100));
        assert_eq!(Percentiles::of(Vec::new()).samples, 0, "no samples: all zero, not a panic");
    }
}
