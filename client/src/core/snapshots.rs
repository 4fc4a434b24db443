//! The client's end of delta snapshots: decoded states kept by tick so the next delta finds its
//! baseline, and the tick to acknowledge.

use std::collections::VecDeque;

use easel_protocol::DecodeError;
use easel_protocol::snapshot::{self, NetPlayer};

/// Decoded snapshots kept as baselines: twice what the server keeps (32 ticks), so any baseline
/// the server may pick is here.
const KEPT: usize = 64;

#[derive(Debug, Default)]
pub struct SnapshotReceiver {
    states: VecDeque<(u32, Vec<NetPlayer>)>,
    /// Deltas whose baseline was not here: the link lost a snapshot (or the server has a bug).
    pub undecodable: u64,
    /// Whether one was undecodable since the server was last told (`take_loss`).
    loss_untold: bool,
    /// The link is known to lose snapshots (a simulated bad network): every connection tells
    /// the server at once, before a loss, so no delta is ever against a lost snapshot.
    lossy_link: bool,
}

impl SnapshotReceiver {
    /// The newest tick decoded: what the client acknowledges (0: none yet).
    pub fn newest(&self) -> u32 {
        self.states.back().map_or(0, |(tick, _)| *tick)
    }

    /// Decodes a snapshot; `Ok(None)` for one older than the newest (reordered) or whose baseline
    /// is no longer here.
    pub fn receive(&mut self, tick: u32, baseline: u32, entities: &[u8]) -> Result<Option<&[NetPlayer]>, DecodeError> {
        if tick <= self.newest() {
            return Ok(None);
        }
        let players = if baseline == 0 {
            snapshot::decode(entities, None, 0)?
        } else {
            let Some((_, base)) = self.states.iter().find(|(t, _)| *t == baseline) else {
                self.undecodable += 1;
                self.loss_untold = true;
                return Ok(None);
            };
            snapshot::decode(entities, Some(base), tick.wrapping_sub(baseline))?
        };
        if self.states.len() == KEPT {
            self.states.pop_front();
        }
        self.states.push_back((tick, players));
        Ok(self.states.back().map(|(_, p)| p.as_slice()))
    }

    /// Whether a snapshot could not be decoded since the last call: over WebSocket the server
    /// encodes against the last snapshot it wrote, so a link that loses snapshots must say so
    /// (`ClientMsg::SnapshotLost`) to get deltas against acknowledged ones.
    pub fn take_loss(&mut self) -> bool {
        std::mem::take(&mut self.loss_untold)
    }

    /// The link loses snapshots: say so to the server now and on every new connection.
    pub fn expect_losses(&mut self) {
        self.lossy_link = true;
        self.loss_untold = true;
    }

    /// Forgets everything (a new connection starts from a full snapshot).
    pub fn reset(&mut self) {
        self.states.clear();
        self.loss_untold = self.lossy_link;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(id: u32, x: u16) -> NetPlayer {
        NetPlayer { id, x, y: 0, score: 0, last_input_seq: 0 }
    }

    #[test]
    fn deltas_decode_against_the_acknowledged_baseline_and_old_ones_are_skipped() {
        let mut rx = SnapshotReceiver::default();
        let one = vec![at(1, 10)];
        rx.receive(1, 0, &snapshot::encode(&one, None, 0)).unwrap();
        let three = vec![at(1, 30), at(2, 5)];
        let got = rx.receive(3, 1, &snapshot::encode(&three, Some(&one), 2)).unwrap().map(<[_]>::to_vec);
        assert_eq!(got, Some(three.clone()));
        assert_eq!(rx.newest(), 3);
        let two = vec![at(1, 20)];
        assert_eq!(rx.receive(2, 1, &snapshot::encode(&two, Some(&one), 1)).unwrap(), None, "late: skipped");
        assert!(!rx.take_loss());
        assert_eq!(rx.receive(9, 7, &[0]).unwrap(), None, "unknown baseline");
        assert_eq!(rx.undecodable, 1);
        assert!(rx.take_loss(), "a loss to tell the server");
        assert!(!rx.take_loss(), "told once");
    }

    #[test]
    fn a_link_known_to_lose_snapshots_is_announced_before_any_loss_on_every_connection() {
        let mut rx = SnapshotReceiver::default();
        rx.reset();
        assert!(!rx.take_loss(), "a reliable link says nothing");
        rx.expect_losses();
        assert!(rx.take_loss(), "told at once");
        assert!(!rx.take_loss(), "told once");
        rx.reset();
        assert!(rx.take_loss(), "a new connection is told again");
    }
}
