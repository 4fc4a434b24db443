//! How long a tick's snapshots take to reach the sockets: the room marks when each tick starts,
//! the hand-over (or, for a snapshot it queued, the connection) marks each snapshot write, and
//! the span from the start to the last write is observed `SLOTS` ticks later
//! (`easel_snapshot_fanout_seconds`). Tick duration alone hides this: at N = 500 on one worker a
//! tick took about 1 ms, and its last snapshot was written 7 ms after it began. A tick's writes
//! count until its slot is reused, not only until the next tick starts: a fan-out longer than a
//! tick is the one that matters most, and at N = 3,000 it had made the metric go silent.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The tick of a slot that times nothing.
const NO_TICK: u32 = u32::MAX;

/// Ticks timed at once: writes of a tick count for `SLOTS` ticks (267 ms at 30 Hz); a snapshot
/// still unwritten by then was superseded or is a slow client's.
pub(crate) const SLOTS: usize = 8;

/// Shared by a room and its members' connections.
#[derive(Debug)]
pub struct Fanout {
    epoch: Instant,
    slots: [Slot; SLOTS],
    /// Ticks started so far: the next one takes slot `started % SLOTS`.
    started: AtomicUsize,
}

#[derive(Debug)]
struct Slot {
    /// The tick whose writes this slot times, or `NO_TICK`.
    tick: AtomicU32,
    /// When that tick started, in µs since `epoch`.
    started_us: AtomicU64,
    /// When its latest write so far finished, in µs since `epoch` (0: none yet).
    last_write_us: AtomicU64,
}

impl Default for Fanout {
    fn default() -> Self {
        let slot =
            || Slot { tick: AtomicU32::new(NO_TICK), started_us: AtomicU64::new(0), last_write_us: AtomicU64::new(0) };
        Self { epoch: Instant::now(), slots: std::array::from_fn(|_| slot()), started: AtomicUsize::new(0) }
    }
}

impl Fanout {
    /// A tick began at `started` and published the snapshots of `tick` (`None`: it published
    /// none). Returns the span of the tick timed `SLOTS` starts ago, whose slot this one takes:
    /// its start to its last write, if it published and had one. A write that finishes just as
    /// its slot is taken may count for the new tick; that tick's own later writes outweigh it.
    pub fn start(&self, tick: Option<u32>, started: Instant) -> Option<Duration> {
        let slot = &self.slots[self.started.fetch_add(1, Ordering::Relaxed) % SLOTS];
        let timed = slot.tick.swap(NO_TICK, Ordering::Relaxed) != NO_TICK;
        let previous_start = slot.started_us.swap(self.micros(started), Ordering::Relaxed);
        let previous_last = slot.last_write_us.swap(0, Ordering::Relaxed);
        slot.tick.store(tick.unwrap_or(NO_TICK), Ordering::Relaxed);
        (timed && previous_last != 0).then(|| Duration::from_micros(previous_last.saturating_sub(previous_start)))
    }

    /// Ends the timing of every tick still timed and returns their spans: the room rests, so
    /// no later tick would take their slots (called `SLOTS` ticks after the last one began).
    pub fn settle(&self, now: Instant) -> Vec<Duration> {
        (0..SLOTS).filter_map(|_| self.start(None, now)).collect()
    }

    /// A snapshot of `tick` was written to a member's socket.
    pub fn written(&self, tick: u32) {
        if let Some(slot) = self.slots.iter().find(|slot| slot.tick.load(Ordering::Relaxed) == tick) {
            slot.last_write_us.fetch_max(self.micros(Instant::now()), Ordering::Relaxed);
        }
    }

    fn micros(&self, at: Instant) -> u64 {
        // At least 1, so a write at the epoch still counts as one.
        (at.saturating_duration_since(self.epoch).as_micros() as u64).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts `count` ticks that publish nothing, collecting the spans they return.
    fn idle_ticks(fanout: &Fanout, count: usize) -> Vec<Duration> {
        (0..count).filter_map(|_| fanout.start(None, Instant::now())).collect()
    }

    #[test]
    fn a_span_runs_from_the_ticks_start_to_its_last_write_and_ignores_other_ticks() {
        let fanout = Fanout::default();
        assert_eq!(fanout.start(Some(1), Instant::now()), None, "nothing timed before");
        fanout.written(1);
        std::thread::sleep(Duration::from_millis(2));
        fanout.written(1);
        fanout.written(7);
        let spans = idle_ticks(&fanout, SLOTS);
        assert_eq!(spans.len(), 1, "tick 1 is observed once, when its slot is taken");
        assert!(spans[0] >= Duration::from_millis(2) && spans[0] < Duration::from_secs(1), "{spans:?}");
        fanout.written(1);
        assert_eq!(fanout.start(Some(3), Instant::now()), None);
        assert!(
            idle_ticks(&fanout, SLOTS).is_empty(),
            "tick 3 had no write, and ticks that published nothing are not timed"
        );
    }

    #[test]
    fn settling_observes_the_ticks_still_timed_once() {
        let fanout = Fanout::default();
        fanout.start(Some(1), Instant::now());
        fanout.written(1);
        fanout.start(None, Instant::now());
        assert_eq!(fanout.settle(Instant::now()).len(), 1, "tick 1 wrote; the idle tick is not timed");
        assert!(fanout.settle(Instant::now()).is_empty(), "nothing is observed twice");
    }

    #[test]
    fn writes_after_the_next_ticks_start_still_count_for_their_own_tick() {
        let fanout = Fanout::default();
        fanout.start(Some(1), Instant::now());
        fanout.start(Some(2), Instant::now());
        fanout.written(2);
        std::thread::sleep(Duration::from_millis(5));
        // The hand-over is still writing tick 1 after tick 2 began: a fan-out longer than a tick.
        fanout.written(1);
        let spans = idle_ticks(&fanout, SLOTS);
        assert_eq!(spans.len(), 2, "{spans:?}");
        assert!(spans[0] >= Duration::from_millis(5), "tick 1's span reaches its late write: {spans:?}");
        assert!(spans[1] < spans[0], "tick 2's span ends at its own write: {spans:?}");
    }
}
