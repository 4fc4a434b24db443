//! Client-side prediction of the player's own movement (Gaffer on Games, lightyear): every input
//! moves the predicted player at once with the room's own rules; each snapshot re-bases the
//! prediction on the server's state and replays the inputs it has not applied yet. When the
//! server disagrees, the difference becomes a visual offset that fades out, so a correction is
//! smoothed rather than snapped.

use std::collections::VecDeque;

use easel_protocol::PlayerState;
use easel_protocol::game::{self, Rules};

/// Time constant of a correction fading out: it is nearly gone (5 %) after three of them.
const CORRECTION_FADE_MS: f64 = 60.0;
/// A disagreement this large (world units) is a teleport (respawn, resume), shown at once.
const SNAP_DISTANCE: f32 = 120.0;
/// Differences below this (world units) are quantization, not corrections worth counting.
const COUNTED_ERROR: f32 = 0.5;
/// Inputs remembered while the server has not applied them: four seconds at 30 Hz.
const MAX_UNACKED: usize = 120;

#[derive(Debug, Default)]
pub struct Predictor {
    rules: Option<Rules>,
    dt: f32,
    interval_ms: f64,
    /// Inputs sent and not yet applied in a snapshot, oldest first.
    unacked: VecDeque<(u32, (i8, i8))>,
    /// Where the player is after every input sent, and before the newest one (drawn between
    /// the two over one tick, so motion is smooth at any frame rate).
    predicted: Option<(f32, f32)>,
    previous: (f32, f32),
    stepped_at_ms: f64,
    /// The correction still to fade, as it was at `offset_at_ms`.
    offset: (f32, f32),
    offset_at_ms: f64,
    /// Corrections counted so far, and the size of the latest one.
    pub corrections: u64,
    pub last_error: f32,
}

impl Predictor {
    pub fn new(rules: Rules, tick_rate: u16) -> Self {
        let dt = 1.0 / f32::from(tick_rate.max(1));
        Self { rules: Some(rules), dt, interval_ms: 1000.0 / f64::from(tick_rate.max(1)), ..Self::default() }
    }

    /// An input just sent: one tick of movement, shown from now.
    pub fn input(&mut self, now_ms: f64, seq: u32, dir: (i8, i8)) {
        if self.unacked.len() == MAX_UNACKED {
            self.unacked.pop_front();
        }
        self.unacked.push_back((seq, dir));
        if let (Some(at), Some(rules)) = (self.predicted, self.rules) {
            self.previous = self.render_base(now_ms);
            self.predicted = Some(game::step_position(at, dir.0, dir.1, self.dt, &rules));
            self.stepped_at_ms = now_ms;
        }
    }

    /// The server's state of this player: replays the inputs it has not applied yet on top.
    pub fn snapshot(&mut self, now_ms: f64, me: &PlayerState) {
        let Some(rules) = self.rules else { return };
        while self.unacked.front().is_some_and(|(seq, _)| *seq <= me.last_input_seq) {
            self.unacked.pop_front();
        }
        let replayed =
            self.unacked.iter().fold((me.x, me.y), |at, (_, d)| game::step_position(at, d.0, d.1, self.dt, &rules));
        let Some(old) = self.predicted else {
            self.predicted = Some(replayed);
            self.previous = replayed;
            return;
        };
        let error = (old.0 - replayed.0, old.1 - replayed.1);
        let size = error.0.hypot(error.1);
        self.predicted = Some(replayed);
        self.previous = (self.previous.0 - error.0, self.previous.1 - error.1);
        if size >= SNAP_DISTANCE {
            self.offset = (0.0, 0.0);
            self.previous = replayed;
        } else if size > 0.0 {
            let now_offset = self.offset_at(now_ms);
            self.offset = (now_offset.0 + error.0, now_offset.1 + error.1);
            self.offset_at_ms = now_ms;
        }
        if size >= COUNTED_ERROR {
            self.corrections += 1;
            self.last_error = size;
        }
    }

    /// Where to draw the player at `now_ms`, if known.
    pub fn render_position(&self, now_ms: f64) -> Option<(f32, f32)> {
        self.predicted?;
        let base = self.render_base(now_ms);
        let offset = self.offset_at(now_ms);
        Some((base.0 + offset.0, base.1 + offset.1))
    }

    /// Where the prediction itself (without the fading correction) has the player now.
    pub fn predicted(&self) -> Option<(f32, f32)> {
        self.predicted
    }

    fn render_base(&self, now_ms: f64) -> (f32, f32) {
        let Some(to) = self.predicted else { return self.previous };
        let t = ((now_ms - self.stepped_at_ms) / self.interval_ms).clamp(0.0, 1.0) as f32;
        (self.previous.0 + (to.0 - self.previous.0) * t, self.previous.1 + (to.1 - self.previous.1) * t)
    }

    fn offset_at(&self, now_ms: f64) -> (f32, f32) {
        let fade = (-(now_ms - self.offset_at_ms).max(0.0) / CORRECTION_FADE_MS).exp() as f32;
        (self.offset.0 * fade, self.offset.1 * fade)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(x: f32, seq: u32) -> PlayerState {
        PlayerState { id: 1, x, y: 500.0, score: 0, last_input_seq: seq }
    }

    const STEP: f32 = 200.0 / 30.0;

    #[test]
    fn inputs_move_the_player_at_once_and_agreeing_snapshots_change_nothing() {
        let mut p = Predictor::new(Rules::GAME, 30);
        p.snapshot(0.0, &state(500.0, 0));
        for seq in 1..=5 {
            p.input(f64::from(seq) * 33.3, seq, (1, 0));
        }
        assert!((p.predicted().unwrap().0 - (500.0 + 5.0 * STEP)).abs() < 1e-3);
        // The server has applied three of the five.
        p.snapshot(200.0, &state(500.0 + 3.0 * STEP, 3));
        assert_eq!(p.corrections, 0, "the server agreed");
        assert!((p.predicted().unwrap().0 - (500.0 + 5.0 * STEP)).abs() < 1e-3);
    }

    #[test]
    fn a_disagreement_is_corrected_smoothly() {
        let mut p = Predictor::new(Rules::GAME, 30);
        p.snapshot(0.0, &state(500.0, 0));
        p.input(0.0, 1, (1, 0));
        let before = p.render_position(100.0).unwrap();
        // The server never applied input 1 (lost): the player is still at 500.
        p.snapshot(100.0, &state(500.0, 1));
        assert_eq!(p.corrections, 1);
        assert_eq!(p.render_position(100.0).unwrap(), before, "no jump on the frame of the correction");
        let later = p.render_position(400.0).unwrap();
        assert!((later.0 - 500.0).abs() < 0.1, "faded out after 300 ms: {later:?}");
    }
}
