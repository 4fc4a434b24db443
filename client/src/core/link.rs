//! A link conditioner: delays, jitters, drops and reorders messages in one direction under the
//! caller's clock, so a bad network can be simulated in the page (`?lag=150&loss=2&jitter=20`)
//! and in tests without touching the real one.
//!
//! Only messages marked droppable (inputs, acknowledgements, snapshots: what the protocol is
//! built to lose) are lost or reordered; the others keep their order, as TCP would deliver them.

use easel_protocol::rng::Mulberry32;

/// The conditions of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Conditions {
    /// One-way delay (ms).
    pub latency_ms: f64,
    /// Each message is delayed by up to this much more, uniformly (ms).
    pub jitter_ms: f64,
    /// Chance that a droppable message is lost (0 to 1).
    pub loss: f64,
}

impl Conditions {
    /// Whether droppable messages (snapshots among them) may be lost.
    pub fn loses_messages(&self) -> bool {
        self.loss > 0.0
    }
}

impl Conditions {
    /// One direction of a link with round trip `lag_ms`, jitter and loss in percent, as the
    /// page's `?lag=&jitter=&loss=` options give them.
    pub fn from_round_trip(lag_ms: f64, jitter_ms: f64, loss_percent: f64) -> Self {
        Self {
            latency_ms: (lag_ms / 2.0).max(0.0),
            jitter_ms: jitter_ms.max(0.0),
            loss: (loss_percent / 100.0).clamp(0.0, 1.0),
        }
    }

    pub fn is_perfect(&self) -> bool {
        self.latency_ms == 0.0 && self.jitter_ms == 0.0 && self.loss == 0.0
    }
}

#[derive(Debug)]
pub struct LinkConditioner<T> {
    conditions: Conditions,
    rng: Mulberry32,
    /// (delivery time, arrival order, message), unordered.
    in_flight: Vec<(f64, u64, T)>,
    sent: u64,
    /// Delivery time of the newest ordered message: later ordered ones never overtake it.
    ordered_until_ms: f64,
    pub dropped: u64,
}

impl<T> LinkConditioner<T> {
    pub fn new(conditions: Conditions, seed: u32) -> Self {
        Self {
            conditions,
            rng: Mulberry32::new(seed),
            in_flight: Vec::new(),
            sent: 0,
            ordered_until_ms: 0.0,
            dropped: 0,
        }
    }

    pub fn send(&mut self, now_ms: f64, message: T, droppable: bool) {
        if droppable && self.rng.next_f64() < self.conditions.loss {
            self.dropped += 1;
            return;
        }
        let mut at = now_ms + self.conditions.latency_ms + self.rng.next_f64() * self.conditions.jitter_ms;
        if !droppable {
            at = at.max(self.ordered_until_ms);
            self.ordered_until_ms = at;
        }
        self.sent += 1;
        self.in_flight.push((at, self.sent, message));
    }

    /// Messages whose time has come, in delivery order.
    pub fn poll(&mut self, now_ms: f64) -> Vec<T> {
        let mut due: Vec<(f64, u64, T)> = Vec::new();
        let mut i = 0;
        while i < self.in_flight.len() {
            if self.in_flight[i].0 <= now_ms {
                due.push(self.in_flight.swap_remove(i));
            } else {
                i += 1;
            }
        }
        due.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        due.into_iter().map(|(_, _, m)| m).collect()
    }

    /// When the next message is due, if any is in flight.
    pub fn next_due_ms(&self) -> Option<f64> {
        self.in_flight.iter().map(|(at, ..)| *at).min_by(f64::total_cmp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_arrive_after_the_latency_and_ordered_ones_keep_their_order() {
        let mut link = LinkConditioner::new(Conditions { latency_ms: 50.0, jitter_ms: 30.0, loss: 0.0 }, 1);
        for i in 0..100 {
            link.send(f64::from(i), i, false);
        }
        assert!(link.poll(49.0).is_empty(), "nothing before the latency");
        let all = link.poll(1000.0);
        assert_eq!(all, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn only_droppable_messages_are_lost() {
        let mut link = LinkConditioner::new(Conditions { latency_ms: 0.0, jitter_ms: 0.0, loss: 0.5 }, 2);
        for i in 0..1000 {
            link.send(0.0, i, i % 2 == 0);
        }
        let got = link.poll(1.0);
        assert!(got.iter().filter(|i| *i % 2 == 1).count() == 500, "every ordered message arrives");
        assert!((200..300).contains(&link.dropped), "about half the droppable ones are lost: {}", link.dropped);
    }
}
