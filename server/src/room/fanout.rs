//! How long a tick's snapshots take to reach the sockets: the room marks when each tick starts,
//! the hand-over (or, for a snapshot it queued, the connection) marks each snapshot write, and the next tick observes the span
//! from the start to the last write (`easel_snapshot_fanout_seconds`). Tick duration alone hides
//! this: at N = 500 on one worker a tick took about 1 ms, and its last snapshot was written 7 ms
//! after it began.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The tick of a room that published nothing.
const NO_TICK: u32 = u32::MAX;

/// Shared by a room and its members' connections.
#[derive(Debug)]
pub struct Fanout {
    epoch: Instant,
    /// The tick whose writes are being timed, or `NO_TICK`.
    tick: AtomicU32,
    /// When that tick started, in µs since `epoch`.
    started_us: AtomicU64,
    /// When its latest write so far finished, in µs since `epoch` (0: none yet).
    last_write_us: AtomicU64,
}

impl Default for Fanout {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            tick: AtomicU32::new(NO_TICK),
            started_us: AtomicU64::new(0),
            last_write_us: AtomicU64::new(0),
        }
    }
}

impl Fanout {
    /// A tick began at `started` and published the snapshots of `tick` (`None`: it published
    /// none). Returns the span of the previous timed tick: its start to its last write, if it
    /// had one. A write that finishes just as the next tick starts may count for that one;
    /// the next tick's own later writes outweigh it.
    pub fn start(&self, tick: Option<u32>, started: Instant) -> Option<Duration> {
        let previous_start = self.started_us.load(Ordering::Relaxed);
        let previous_last = self.last_write_us.swap(0, Ordering::Relaxed);
        let timed = self.tick.load(Ordering::Relaxed) != NO_TICK;
        self.tick.store(tick.unwrap_or(NO_TICK), Ordering::Relaxed);
        self.started_us.store(self.micros(started), Ordering::Relaxed);
        (timed && previous_last > previous_start).then(|| Duration::from_micros(previous_last - previous_start))
    }

    /// A connection finished writing the snapshot of `tick`.
    pub fn written(&self, tick: u32) {
        if self.tick.load(Ordering::Relaxed) == tick {
            self.last_write_us.fetch_max(self.micros(Instant::now()), Ordering::Relaxed);
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

    #[test]
    fn a_span_runs_from_the_ticks_start_to_its_last_write_and_ignores_other_ticks() {
        let fanout = Fanout::default();
        assert_eq!(fanout.start(Some(1), Instant::now()), None, "nothing timed before");
        fanout.written(1);
        std::thread::sleep(Duration::from_millis(2));
        fanout.written(1);
        fanout.written(7);
        let span = fanout.start(None, Instant::now()).expect("tick 1 had writes");
        assert!(span >= Duration::from_millis(2) && span < Duration::from_secs(1), "{span:?}");
        fanout.written(1);
        assert_eq!(fanout.start(Some(3), Instant::now()), None, "a tick that published nothing is not timed");
        assert_eq!(fanout.start(Some(4), Instant::now()), None, "tick 3 had no write");
    }
}
