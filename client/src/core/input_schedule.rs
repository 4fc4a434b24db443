//! When to send inputs: one per tick, on a grid that the server's `InputWait` reports move so
//! inputs arrive just before the tick that applies them instead of anywhere in it (input timing
//! feedback, as Overwatch does it). An input that arrives just after a tick waits a whole tick
//! at the server: on a fast link that wait is most of the input-to-ack time.
//!
//! A new direction goes out at once, off the grid, for responsiveness; the slots after it bend
//! back to the grid by at most a quarter of an interval each, so the own player, drawn one
//! interval per input, never pauses or hurries visibly, and the grid survives direction changes
//! and pauses. Used by `ClientCore` (browser and headless clients) and by the load bots, in
//! milliseconds on the caller's clock.

/// An input may go out this much before its slot, so a front polling at display rate (16.7 ms)
/// hits every 33.3 ms slot instead of missing it by a rounding error and waiting a whole frame.
const EARLY_MS: f64 = 2.0;
/// The wait at the server an input should have left at least: room for the server's own
/// scheduling delays before it reads the socket.
const TARGET_WAIT_MS: f64 = 3.0;
/// How far above the target a report may be before the grid moves, on top of the spread of the
/// caller's own send times: keeps the grid still against measurement noise.
const TOLERANCE_MS: f64 = 2.0;
/// How far one slot may bend toward the grid, in intervals.
const MAX_BEND: f64 = 0.25;
/// Slots it takes to get back onto the grid from anywhere (half an interval away at most).
const SLOTS_TO_REALIGN: u32 = 2;

#[derive(Debug, Clone)]
pub struct InputSchedule {
    interval_ms: f64,
    /// Any slot of the grid: the others are whole intervals from it.
    anchor_ms: f64,
    /// When the next input is due: on the grid, or bending back to it.
    next_due_ms: f64,
    /// How late against their slot on-grid inputs went out (least, most) since the grid last
    /// moved: a front that polls once a frame cannot send closer to the slot than that.
    lateness_ms: Option<(f64, f64)>,
    /// Inputs numbered below this went out before the grid last moved: reports that include
    /// them say nothing about the grid now.
    settled_from_seq: u32,
    /// The newest report's wait, for the debug overlay.
    last_wait_ms: Option<f64>,
}

/// Until the welcome gives the room's tick rate: the default one, 30 Hz.
impl Default for InputSchedule {
    fn default() -> Self {
        Self::new(1000.0 / 30.0)
    }
}

impl InputSchedule {
    pub fn new(interval_ms: f64) -> Self {
        Self::starting_at(interval_ms, 0.0)
    }

    /// A schedule whose first slot is at `first_due_ms`.
    pub fn starting_at(interval_ms: f64, first_due_ms: f64) -> Self {
        Self {
            interval_ms,
            anchor_ms: first_due_ms,
            next_due_ms: first_due_ms,
            lateness_ms: None,
            settled_from_seq: 0,
            last_wait_ms: None,
        }
    }

    /// Changes the interval (the room's tick rate is known only after the welcome).
    pub fn set_interval_ms(&mut self, interval_ms: f64) {
        self.interval_ms = interval_ms.max(1.0);
    }

    /// When the next input is due.
    pub fn next_due_ms(&self) -> f64 {
        self.next_due_ms
    }

    /// Whether the next input is due.
    pub fn due(&self, now_ms: f64) -> bool {
        now_ms + EARLY_MS >= self.next_due_ms
    }

    /// Records an input sent at `now_ms`, when due (`on_schedule`) or at once for a new
    /// direction, and sets when the next one is due: one interval later, bent toward the grid.
    /// After a stall the next one is an interval from now: no burst of catch-up inputs.
    pub fn sent(&mut self, now_ms: f64, on_schedule: bool) {
        let late = now_ms - self.next_due_ms;
        let from = if on_schedule && late < self.interval_ms / 2.0 {
            if (self.nearest_slot(self.next_due_ms) - self.next_due_ms).abs() < 1e-6 {
                self.lateness_ms =
                    Some(self.lateness_ms.map_or((late, late), |(least, most)| (least.min(late), most.max(late))));
            }
            self.next_due_ms
        } else {
            now_ms
        };
        let unbent = from + self.interval_ms;
        let most = MAX_BEND * self.interval_ms;
        self.next_due_ms = unbent + (self.nearest_slot(unbent) - unbent).clamp(-most, most);
    }

    fn nearest_slot(&self, at_ms: f64) -> f64 {
        self.anchor_ms + ((at_ms - self.anchor_ms) / self.interval_ms).round() * self.interval_ms
    }

    /// Takes the server's report that inputs from `from_seq` on waited `wait_ms` for their tick;
    /// `next_seq` is the seq the next input will carry. Moves the grid when the wait is outside
    /// what this caller can aim for, and returns by how much (positive: later).
    pub fn report(&mut self, from_seq: u32, wait_ms: f64, next_seq: u32) -> f64 {
        self.last_wait_ms = Some(wait_ms);
        if from_seq < self.settled_from_seq {
            return 0.0;
        }
        let spread = self.lateness_ms.map_or(0.0, |(least, most)| most - least);
        let highest = TARGET_WAIT_MS + spread + TOLERANCE_MS;
        if (TARGET_WAIT_MS..=highest).contains(&wait_ms) {
            return 0.0;
        }
        // Aim at the middle of the band. The grid is periodic, so moving later by most of an
        // interval is moving earlier by the rest: take the shorter way.
        let mut shift = wait_ms - (TARGET_WAIT_MS + highest) / 2.0;
        shift -= (shift / self.interval_ms).round() * self.interval_ms;
        self.anchor_ms += shift;
        self.settled_from_seq = next_seq + SLOTS_TO_REALIGN;
        self.lateness_ms = None;
        shift
    }

    /// The newest reported wait (ms), if any.
    pub fn last_wait_ms(&self) -> Option<f64> {
        self.last_wait_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TICK: f64 = 1000.0 / 30.0;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    #[test]
    fn slots_follow_the_grid_and_a_stall_skips_the_missed_ones() {
        let mut schedule = InputSchedule::new(TICK);
        schedule.sent(0.0, true);
        assert!(close(schedule.next_due_ms(), TICK));
        assert!(!schedule.due(TICK - 3.0) && schedule.due(TICK - 1.0));
        schedule.sent(TICK + 1.0, true);
        assert!(close(schedule.next_due_ms(), 2.0 * TICK), "a late send keeps the grid");
        schedule.sent(5.0 * TICK + 1.0, true);
        assert!(close(schedule.next_due_ms(), 6.0 * TICK), "three slots missed: the next is the grid's next");
    }

    #[test]
    fn after_an_input_sent_at_once_the_slots_bend_back_to_the_grid() {
        let mut schedule = InputSchedule::new(TICK);
        schedule.sent(0.0, true);
        // A new direction half-way between two slots.
        schedule.sent(TICK / 2.0, false);
        let mut gaps = vec![schedule.next_due_ms() - TICK / 2.0];
        let mut at = schedule.next_due_ms();
        for _ in 0..4 {
            schedule.sent(at, true);
            gaps.push(schedule.next_due_ms() - at);
            at = schedule.next_due_ms();
        }
        assert!(gaps.iter().all(|gap| (0.75 * TICK - 1e-6..=1.25 * TICK + 1e-6).contains(gap)), "{gaps:?}");
        assert!(close(at / TICK, (at / TICK).round()), "back on the grid: {at}");
    }

    #[test]
    fn a_long_wait_moves_the_grid_later_and_a_short_one_earlier() {
        let mut schedule = InputSchedule::new(TICK);
        schedule.sent(0.0, true);
        let shift = schedule.report(1, 20.0, 2);
        assert!(close(shift, 20.0 - (TARGET_WAIT_MS + TOLERANCE_MS / 2.0)), "{shift}");
        let mut at = schedule.next_due_ms();
        for _ in 0..SLOTS_TO_REALIGN {
            schedule.sent(at, true);
            at = schedule.next_due_ms();
        }
        assert!(close((at - shift) / TICK, ((at - shift) / TICK).round()), "on the moved grid: {at}");
        let shift = schedule.report(2 + SLOTS_TO_REALIGN, 0.5, 5);
        assert!(shift < 0.0, "an input that barely made its tick goes out earlier: {shift}");
    }

    #[test]
    fn a_wait_of_almost_a_tick_is_corrected_the_short_way() {
        let mut schedule = InputSchedule::new(TICK);
        // Inputs that just missed their tick wait nearly a whole one: send a little earlier,
        // not nearly a tick later.
        let shift = schedule.report(1, TICK - 1.0, 1);
        assert!((-6.0..0.0).contains(&shift), "{shift}");
    }

    #[test]
    fn a_wait_within_the_band_or_a_stale_report_changes_nothing() {
        let mut schedule = InputSchedule::new(TICK);
        assert_eq!(schedule.report(1, TARGET_WAIT_MS + 1.0, 5), 0.0);
        assert!(schedule.report(1, 20.0, 5) > 0.0, "far outside: moved");
        assert_eq!(schedule.report(6, 30.0, 9), 0.0, "seq 6 went out before the grid was back");
        assert_eq!(schedule.last_wait_ms(), Some(30.0));
    }

    #[test]
    fn a_front_polling_once_a_frame_gets_a_band_as_wide_as_its_frames() {
        let mut schedule = InputSchedule::new(TICK);
        let frame = 1000.0 / 60.0;
        // Sends land up to a frame after their slot.
        schedule.sent(0.0, true);
        schedule.sent(TICK + 14.0, true);
        assert_eq!(schedule.report(1, TARGET_WAIT_MS + 15.0, 3), 0.0, "within the frame's reach");
        assert!(schedule.report(1, TARGET_WAIT_MS + frame + TOLERANCE_MS + 1.0, 3) > 0.0);
    }
}
