//! What one member is sent: its recent snapshots (the baselines its connection may report
//! delivered) and its byte credit; and the encodings a publish shares between members.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use easel_protocol::{ServerMsg, encode, snapshot};

use super::{Frame, Players};

/// Past snapshots kept per member as baselines: a second at 30 Hz. A client whose newest
/// delivered snapshot is older gets a snapshot against nothing (in full).
const BASELINES_KEPT: usize = 32;

/// Encodings made during one publish, keyed by the sets' addresses: members with the same
/// current set and baseline get the same bytes. Holding the `Arc`s keeps the addresses unique.
#[derive(Default)]
pub struct Encodings {
    made: HashMap<(usize, usize), (Players, Option<Players>, Bytes)>,
    /// Encodings made (each distinct one once), for `/metrics`.
    pub count: u64,
}

impl Encodings {
    fn get(&mut self, tick: u32, current: &Players, baseline: Option<&(u32, Players)>) -> Bytes {
        let key = (Arc::as_ptr(current) as usize, baseline.map_or(0, |(_, b)| Arc::as_ptr(b) as usize));
        let count = &mut self.count;
        let entry = self.made.entry(key).or_insert_with(|| {
            *count += 1;
            let (base_tick, entities) = match baseline {
                Some((base_tick, base)) => {
                    (*base_tick, snapshot::encode(current, Some(base), tick.wrapping_sub(*base_tick)))
                }
                None => (0, snapshot::encode(current, None, 0)),
            };
            let bytes = Bytes::from(encode(&ServerMsg::Snapshot { tick, baseline: base_tick, entities }));
            (Arc::clone(current), baseline.map(|(_, b)| Arc::clone(b)), bytes)
        });
        entry.2.clone()
    }
}

/// What one member has been sent: its recent snapshots (the baselines its connection may report
/// delivered) and its byte credit.
#[derive(Default)]
pub struct MemberView {
    sent: VecDeque<(u32, Players)>,
    /// Bytes it may still be sent (token bucket, refilled every tick; below zero it waits).
    credit: f64,
    /// Whether it is owed a snapshot even if nothing moves: it skipped the last one for its
    /// budget, or its client lost one.
    owed: bool,
}

impl MemberView {
    /// A new connection: the client knows nothing yet.
    pub fn reset(&mut self) {
        *self = Self::default();
    }

    pub fn owed(&self) -> bool {
        self.owed
    }

    /// Its client could not decode a snapshot (`ClientMsg::SnapshotLost`): the next tick sends
    /// it one against what it holds, or in full, even if the world stands still.
    pub fn lost_one(&mut self) {
        self.owed = true;
    }

    /// The snapshot of `frame` for member `me`, whose client is sure to hold tick `delivered`
    /// (`MemberLink::delivery`), or `None` when its budget has no credit for one this tick.
    pub fn next(&mut self, me: u32, delivered: u32, frame: &Frame, encodings: &mut Encodings) -> Option<Bytes> {
        // The cell's view moves on (its priorities, what it shows) whether or not this member is
        // sent it: a cell whose members all skip a tick would otherwise start over.
        let current = frame.visible_to(me);
        if frame.budget_bits > 0 {
            let per_tick = frame.budget_bits as f64 / 8.0;
            self.credit = (self.credit + per_tick).min(2.0 * per_tick);
            if self.credit < 0.0 {
                self.owed = true;
                return None;
            }
        }
        self.owed = false;
        // Nothing older than the delivered snapshot can be a baseline again.
        while self.sent.len() > 1 && self.sent.front().is_some_and(|(t, _)| *t != delivered && older(*t, delivered)) {
            self.sent.pop_front();
        }
        while self.sent.len() >= BASELINES_KEPT {
            self.sent.pop_front();
        }
        let baseline = self.sent.iter().find(|(t, _)| *t == delivered && delivered != frame.tick).cloned();
        let bytes = encodings.get(frame.tick, &current, baseline.as_ref());
        if frame.budget_bits > 0 {
            self.credit -= bytes.len() as f64;
        }
        self.sent.push_back((frame.tick, current));
        Some(bytes)
    }
}

/// Whether tick `a` is before tick `b` (ticks wrap after 2³² but never get that far apart).
fn older(a: u32, b: u32) -> bool {
    b.wrapping_sub(a) < u32::MAX / 2 && a != b
}
