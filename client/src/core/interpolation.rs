//! Snapshot interpolation: other players are drawn a little in the past, between two snapshots
//! that have both arrived, so their motion is smooth even though snapshots arrive at the tick
//! rate with jitter. The delay adapts to the jitter measured (two to three intervals); when
//! snapshots are late, players are extrapolated for a bounded time, then held.

use std::collections::VecDeque;

use easel_protocol::PlayerState;

/// Render between this many snapshot intervals behind the newest: two survive one late snapshot;
/// measured jitter moves the delay up towards the maximum.
const MIN_DELAY_INTERVALS: f64 = 2.0;
const MAX_DELAY_INTERVALS: f64 = 3.0;
/// How far past the newest snapshot players are extrapolated before they are held.
const MAX_EXTRAPOLATION_INTERVALS: f64 = 3.0;
/// Weight of one arrival in the jitter average (an exponential moving average).
const JITTER_GAIN: f64 = 1.0 / 16.0;
/// Snapshots kept: a second at 30 Hz, far more than the delay needs.
const BUFFER: usize = 32;
/// Arrivals the timeline's floor is the earliest of (ms of local time): long enough that
/// network jitter and a TCP retransmission stall do not move it, short enough that a timeline
/// which really moved (the server skipped ticks after a stall) is noticed within a second.
const CLOCK_WINDOW_MS: f64 = 1000.0;
/// How fast the timeline moves to a later floor, as a share of the time passing: other players
/// play at 90 % speed while it catches up, instead of jumping back (a 300 ms server stall is
/// absorbed in three seconds).
const CLOCK_CATCH_UP: f64 = 0.1;

#[derive(Debug, Default)]
pub struct Interpolator {
    interval_ms: f64,
    /// Local time of tick 0 the players are drawn against: follows `floor` of the recent
    /// arrivals, at once when it is earlier, at `CLOCK_CATCH_UP` when it is later.
    tick_zero_ms: Option<f64>,
    /// Recent arrivals as (local time, arrival minus `tick × interval`); the earliest of them is
    /// where tick 0 would be on a link without jitter.
    arrivals: VecDeque<(f64, f64)>,
    /// Mean lateness of arrivals behind that earliest one (ms).
    jitter_ms: f64,
    snapshots: VecDeque<(u32, Vec<PlayerState>)>,
    /// The world's width and height: nobody is extrapolated through its edge, where the server
    /// stops them (0: unbounded).
    world: (f32, f32),
}

impl Interpolator {
    pub fn new(tick_rate: u16) -> Self {
        Self { interval_ms: 1000.0 / f64::from(tick_rate.max(1)), ..Self::default() }
    }

    /// Keeps extrapolated players inside a world of `width` × `height`.
    pub fn within_world(self, width: f32, height: f32) -> Self {
        Self { world: (width, height), ..self }
    }

    pub fn push(&mut self, now_ms: f64, tick: u32, players: &[PlayerState]) {
        if self.interval_ms == 0.0 {
            self.interval_ms = 1000.0 / 30.0;
        }
        if self.snapshots.back().is_some_and(|(newest, _)| *newest >= tick) {
            return;
        }
        let sample = now_ms - f64::from(tick) * self.interval_ms;
        let since = self.arrivals.back().map(|(at, _)| now_ms - at);
        while self.arrivals.front().is_some_and(|(at, _)| now_ms - at > CLOCK_WINDOW_MS) {
            self.arrivals.pop_front();
        }
        self.arrivals.push_back((now_ms, sample));
        let floor = self.arrivals.iter().map(|(_, s)| *s).fold(f64::INFINITY, f64::min);
        self.tick_zero_ms = Some(match (self.tick_zero_ms, since) {
            (Some(zero), Some(since)) if floor > zero => floor.min(zero + since.max(0.0) * CLOCK_CATCH_UP),
            _ => floor,
        });
        if since.is_some() {
            self.jitter_ms += ((sample - floor) - self.jitter_ms) * JITTER_GAIN;
        }
        if self.snapshots.len() == BUFFER {
            self.snapshots.pop_front();
        }
        self.snapshots.push_back((tick, players.to_vec()));
    }

    /// The measured jitter of snapshot arrivals (ms).
    pub fn jitter_ms(&self) -> f64 {
        self.jitter_ms
    }

    /// How far in the past other players are drawn (ms).
    pub fn delay_ms(&self) -> f64 {
        let interval = self.interval_ms;
        (interval * MIN_DELAY_INTERVALS + 2.0 * self.jitter_ms)
            .clamp(interval * MIN_DELAY_INTERVALS, interval * MAX_DELAY_INTERVALS)
    }

    /// Every player's position at `now_ms`, `delay_ms` behind the timeline. Players not in both
    /// bracketing snapshots are drawn where the newer one has them.
    pub fn positions(&self, now_ms: f64) -> Vec<(u32, f32, f32)> {
        let (Some(zero), Some(_)) = (self.tick_zero_ms, self.snapshots.back()) else {
            return Vec::new();
        };
        let render_tick = (now_ms - zero - self.delay_ms()) / self.interval_ms;
        let later = self.snapshots.iter().position(|(tick, _)| f64::from(*tick) >= render_tick);
        let (before, after) = match later {
            None => return self.extrapolate(render_tick),
            Some(0) => {
                let first = &self.snapshots[0].1;
                return first.iter().map(|p| (p.id, p.x, p.y)).collect();
            }
            Some(i) => (&self.snapshots[i - 1], &self.snapshots[i]),
        };
        let span = f64::from(after.0 - before.0);
        let t = ((render_tick - f64::from(before.0)) / span).clamp(0.0, 1.0) as f32;
        after
            .1
            .iter()
            .map(|p| match before.1.binary_search_by_key(&p.id, |q| q.id) {
                Ok(j) => {
                    let q = &before.1[j];
                    (p.id, q.x + (p.x - q.x) * t, q.y + (p.y - q.y) * t)
                }
                Err(_) => (p.id, p.x, p.y),
            })
            .collect()
    }

    /// Past the newest snapshot: each player carries on at its last velocity for at most
    /// `MAX_EXTRAPOLATION_INTERVALS`, then stays there until the next snapshot.
    fn extrapolate(&self, render_tick: f64) -> Vec<(u32, f32, f32)> {
        let n = self.snapshots.len();
        let (newest_tick, newest) = &self.snapshots[n - 1];
        let Some((previous_tick, previous)) = n.checked_sub(2).map(|i| &self.snapshots[i]) else {
            return newest.iter().map(|p| (p.id, p.x, p.y)).collect();
        };
        let span = f64::from(newest_tick - previous_tick);
        let ahead = ((render_tick - f64::from(*newest_tick)).clamp(0.0, MAX_EXTRAPOLATION_INTERVALS) / span) as f32;
        let inside = |v: f32, size: f32| if size > 0.0 { v.clamp(0.0, size) } else { v };
        newest
            .iter()
            .map(|p| match previous.binary_search_by_key(&p.id, |q| q.id) {
                Ok(j) => {
                    let q = &previous[j];
                    let x = inside(p.x + (p.x - q.x) * ahead, self.world.0);
                    let y = inside(p.y + (p.y - q.y) * ahead, self.world.1);
                    (p.id, x, y)
                }
                Err(_) => (p.id, p.x, p.y),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: u32, x: f32) -> PlayerState {
        PlayerState { id, x, y: 0.0, score: 0, last_input_seq: 0 }
    }

    #[test]
    fn positions_are_interpolated_between_snapshots() {
        let mut interp = Interpolator::new(10); // 100 ms interval keeps the arithmetic readable
        for tick in 0..5u32 {
            interp.push(f64::from(tick) * 100.0, tick, &[at(1, tick as f32 * 10.0)]);
        }
        // At 450 ms the timeline is at tick 4.5; two intervals behind is tick 2.5: x = 25.
        let positions = interp.positions(450.0);
        assert_eq!(positions.len(), 1);
        assert!((positions[0].1 - 25.0).abs() < 1e-3, "got {:?}", positions);
    }

    #[test]
    fn jittered_arrivals_still_move_smoothly() {
        let mut interp = Interpolator::new(10);
        let jitter = [0.0, 30.0, 5.0, 45.0, 10.0, 0.0, 35.0, 20.0, 0.0, 40.0];
        for (tick, j) in (0..10u32).zip(jitter) {
            interp.push(f64::from(tick) * 100.0 + j, tick, &[at(1, tick as f32 * 10.0)]);
        }
        let mut previous = f32::MIN;
        for step in 0..40 {
            let x = interp.positions(700.0 + f64::from(step) * 5.0)[0].1;
            assert!(x >= previous, "motion must never go backwards ({x} after {previous})");
            assert!(x - previous.max(x - 1.0) <= 1.0, "no jumps larger than 5 ms of motion");
            previous = x;
        }
    }

    #[test]
    fn late_snapshots_are_extrapolated_for_a_bounded_time() {
        let mut interp = Interpolator::new(10);
        for tick in 0..5u32 {
            interp.push(f64::from(tick) * 100.0, tick, &[at(1, tick as f32 * 10.0)]);
        }
        // Nothing after tick 4 (x = 40): at 700 ms the render tick is 5, one past the newest.
        assert!((interp.positions(700.0)[0].1 - 50.0).abs() < 1e-3);
        // Far later, held at three intervals past the newest.
        assert!((interp.positions(5000.0)[0].1 - 70.0).abs() < 1e-3);
    }

    #[test]
    fn extrapolation_stops_at_the_worlds_edge() {
        let mut interp = Interpolator::new(10).within_world(100.0, 100.0);
        for tick in 0..5u32 {
            interp.push(f64::from(tick) * 100.0, tick, &[at(1, 60.0 + tick as f32 * 10.0)]);
        }
        // The newest has x = 100, moving right: the server stops it there.
        assert_eq!(interp.positions(5000.0), vec![(1, 100.0, 0.0)]);
    }

    #[test]
    fn the_delay_grows_with_jitter_within_two_to_three_intervals() {
        let mut steady = Interpolator::new(10);
        let mut shaky = Interpolator::new(10);
        let mut rng = easel_protocol::rng::Mulberry32::new(5);
        for tick in 0..200u32 {
            steady.push(f64::from(tick) * 100.0, tick, &[at(1, 0.0)]);
            shaky.push(f64::from(tick) * 100.0 + rng.next_f64() * 80.0, tick, &[at(1, 0.0)]);
        }
        assert!((steady.delay_ms() - 200.0).abs() < 1.0, "{}", steady.delay_ms());
        assert!(shaky.delay_ms() > 250.0 && shaky.delay_ms() <= 300.0, "{}", shaky.delay_ms());
    }

    #[test]
    fn after_the_server_skips_ticks_the_timeline_catches_up_within_seconds_without_going_back() {
        // 30 Hz; a player moving one unit per tick. After tick 60 the server stalls and skips ten
        // ticks: tick numbers go on from 61, each arriving 333 ms later than the timeline says.
        let mut interp = Interpolator::new(30);
        let interval = 1000.0 / 30.0;
        let stall = 10.0 * interval;
        let arrival = |tick: u32| f64::from(tick) * interval + if tick > 60 { stall } else { 0.0 };
        let (mut tick, mut previous_x, mut caught_up_at) = (0u32, f32::MIN, None);
        let mut now = 0.0;
        while now < 8000.0 {
            while arrival(tick) <= now {
                interp.push(arrival(tick), tick, &[at(1, tick as f32)]);
                tick += 1;
            }
            let x = interp.positions(now)[0].1;
            assert!(x >= previous_x - 1e-3, "players never move backwards (x {x} after {previous_x} at {now} ms)");
            previous_x = x;
            // Caught up: drawn between two snapshots that have arrived, not extrapolated.
            let newest = (tick - 1) as f32;
            if now > arrival(61) && caught_up_at.is_none() && x < newest {
                caught_up_at = Some(now - arrival(61));
            }
            now += 1000.0 / 60.0;
        }
        let caught_up_at = caught_up_at.expect("the timeline catches up");
        assert!(caught_up_at < 5000.0, "caught up {caught_up_at:.0} ms after the stall");
        assert!(interp.jitter_ms() < 5.0, "a stall is not jitter: {}", interp.jitter_ms());
    }

    #[test]
    fn old_or_duplicate_snapshots_are_ignored() {
        let mut interp = Interpolator::new(10);
        interp.push(0.0, 5, &[at(1, 50.0)]);
        interp.push(10.0, 4, &[at(1, 40.0)]);
        interp.push(20.0, 5, &[at(1, 99.0)]);
        assert_eq!(interp.positions(1000.0), vec![(1, 50.0, 0.0)]);
    }
}
