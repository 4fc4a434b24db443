//! How long each member's inputs wait for the tick that applies them, reported back to the
//! client (`ServerMsg::InputWait`) about once a second so it can send them to arrive just before
//! the tick (`easel_client::core::InputSchedule`).
//!
//! One sample per tick that had inputs: the wait of the latest one to arrive, the one closest to
//! missing the tick. The report is the third shortest of a window's samples (its 10th
//! percentile), so the few inputs sent off schedule (a new direction goes out at once, and the
//! slot after it bends back to the schedule) do not move the client's schedule.

use std::time::{Duration, Instant};

use easel_protocol::ServerMsg;

/// Samples per report: a second of ticks at 30 Hz, for a player holding a direction.
pub(super) const SAMPLES_PER_REPORT: u32 = 30;

#[derive(Debug)]
pub(super) struct InputWaits {
    /// When the latest input since the last tick arrived.
    latest_arrival: Option<Instant>,
    /// When the earliest input since the last tick arrived: the one that has waited longest.
    earliest_arrival: Option<Instant>,
    /// The seq of the first input of this window.
    from_seq: Option<u32>,
    samples: u32,
    /// The three shortest waits of this window, shortest first.
    shortest: [Duration; 3],
    /// A full window's report, until it is sent.
    report: Option<ServerMsg>,
}

impl Default for InputWaits {
    fn default() -> Self {
        Self {
            latest_arrival: None,
            earliest_arrival: None,
            from_seq: None,
            samples: 0,
            shortest: [Duration::MAX; 3],
            report: None,
        }
    }
}

impl InputWaits {
    /// Input `seq` arrived (was read from the connection) at `at`.
    pub fn arrived(&mut self, seq: u32, at: Instant) {
        self.latest_arrival = Some(self.latest_arrival.map_or(at, |latest| latest.max(at)));
        self.earliest_arrival = Some(self.earliest_arrival.map_or(at, |earliest| earliest.min(at)));
        self.from_seq.get_or_insert(seq);
    }

    /// A tick starts at `now` and applies what has arrived; a full window makes a report.
    /// Returns how long the earliest input to arrive waited for this tick, if one arrived.
    pub fn tick(&mut self, now: Instant) -> Option<Duration> {
        let longest = now.saturating_duration_since(self.earliest_arrival.take()?);
        let arrival = self.latest_arrival.take()?;
        let wait = now.saturating_duration_since(arrival);
        if let Some(place) = self.shortest.iter().position(|shortest| wait < *shortest) {
            self.shortest[place..].rotate_right(1);
            self.shortest[place] = wait;
        }
        self.samples += 1;
        if self.samples < SAMPLES_PER_REPORT {
            return Some(longest);
        }
        let report = ServerMsg::InputWait {
            from_seq: self.from_seq.unwrap_or_default(),
            wait_us: u32::try_from(self.shortest[2].as_micros()).unwrap_or(u32::MAX),
        };
        *self = Self { report: Some(report), ..Self::default() };
        Some(longest)
    }

    /// The report to send, if a window is full.
    pub fn take_report(&mut self) -> Option<ServerMsg> {
        self.report.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_gives_the_third_shortest_wait_of_a_window_from_its_first_input() {
        let start = Instant::now();
        let tick = Duration::from_micros(33_333);
        let mut waits = InputWaits::default();
        let mut reports = Vec::new();
        for i in 0..SAMPLES_PER_REPORT {
            let tick_at = start + tick * (i + 1);
            // Inputs arrive 8 ms before their tick, three of them 1, 5 and 6 ms before it.
            let before = match i {
                7 => Duration::from_millis(1),
                20 => Duration::from_millis(6),
                25 => Duration::from_millis(5),
                _ => Duration::from_millis(8),
            };
            waits.arrived(100 + i, tick_at - before - Duration::from_millis(2));
            waits.arrived(100 + i, tick_at - before);
            waits.tick(tick_at);
            reports.extend(waits.take_report());
        }
        assert_eq!(reports, vec![ServerMsg::InputWait { from_seq: 100, wait_us: 6_000 }]);
        for i in 40..80 {
            waits.tick(start + tick * i);
        }
        assert_eq!(waits.take_report(), None, "no input, no sample");
    }
}
