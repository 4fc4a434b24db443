//! The client's whiteboard: a local replica that takes the player's own edits at once
//! (local-first), the ops not yet acknowledged by the server, per-user undo and redo, and the
//! other players' presence.
//!
//! Resync rule: whenever the server sends the board (after joining, or after a refused op), the
//! replica becomes the server's board plus the pending ops replayed on top ("rebase"). Pending
//! adds whose dot the server has already counted are known to it; the others get fresh dots, so
//! a refused or lost op never leaves a gap that would block the ones after it.

use std::collections::{BTreeMap, VecDeque};

use easel_protocol::board::{Actor, Board, BoardError, BoardOp, MAX_POINTS_PER_STROKE, Point, Stroke, StrokeId};
use easel_protocol::codec;
use easel_protocol::{ClientMsg, DecodeError, Identity, Presence, Preview, encode};
use serde::{Deserialize, Serialize};

/// Presence updates at most this often (ms): smooth cursors, modest traffic.
const PRESENCE_INTERVAL_MS: f64 = 50.0;
/// Board ops sent per second, sustained and in a burst: under the server's budget (200/s, burst
/// 1,000), so resending a long offline session never looks like a flood.
const SEND_OPS_PER_SECOND: f64 = 150.0;
const SEND_OPS_BURST: f64 = 800.0;

/// What undo undoes: the player's own actions only.
#[derive(Debug, Clone, PartialEq)]
enum Action {
    Drew(Stroke),
    Erased(Vec<Stroke>),
}

#[derive(Debug, Default)]
pub struct Whiteboard {
    board: Board,
    identity: Option<Identity>,
    /// Sent-or-to-send ops the server has not acknowledged, oldest first, with their client seq.
    pending: VecDeque<(u64, BoardOp)>,
    /// How many of `pending` went out on this connection.
    sent: usize,
    next_client_seq: u64,
    /// Highest dot counter and stroke seq this tab ever used: after a reload the local replica
    /// starts empty, and reusing one would collide with an op the server already has.
    counter_floor: u64,
    stroke_seq_floor: u32,
    undo: Vec<Action>,
    redo: Vec<Action>,
    /// Parts of the board being received.
    chunks: Vec<Vec<u8>>,
    /// The server's board has arrived on this connection: pending ops may be sent.
    synced: bool,
    sync_requested: bool,
    presence: BTreeMap<u32, Presence>,
    own_presence: Presence,
    presence_dirty: bool,
    presence_sent_at: f64,
    /// Send budget for board ops: (tokens, at ms).
    send_budget: Option<(f64, f64)>,
    last_error: Option<String>,
    /// Bumped on every visible change, so fronts redraw only when needed.
    version: u64,
}

/// What survives a page reload (browser storage).
#[derive(Serialize, Deserialize)]
struct Saved {
    identity: Option<Identity>,
    pending: Vec<(u64, BoardOp)>,
    next_client_seq: u64,
    counter_floor: u64,
    stroke_seq_floor: u32,
}

impl Whiteboard {
    pub fn board(&self) -> &Board {
        &self.board
    }

    pub fn identity(&self) -> Option<Identity> {
        self.identity
    }

    /// Edits not yet stored by the server ("N changes not synced").
    pub fn unsynced(&self) -> usize {
        self.pending.len()
    }

    /// The server's board has arrived on this connection.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    /// Other players' cursors and strokes in progress, by player id.
    pub fn presence(&self) -> &BTreeMap<u32, Presence> {
        &self.presence
    }

    /// The last refusal, for the player to read.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Highest client seq the server acknowledged (all ops up to it are stored).
    pub fn acked_through(&self) -> u64 {
        self.pending.front().map_or(self.next_client_seq, |(seq, _)| seq - 1)
    }

    /// Client seq of the newest op this tab made.
    pub fn last_client_seq(&self) -> u64 {
        self.next_client_seq
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// Draws a stroke (split into several if longer than a stroke may be) and returns the ids
    /// used. Needs an identity, i.e. one connection since the tab opened.
    pub fn draw(&mut self, color: u32, width: u8, points: &[Point]) -> Result<Vec<StrokeId>, BoardError> {
        let Some(identity) = self.identity else { return Err(BoardError::NotYourStroke) };
        if points.is_empty() {
            return Err(BoardError::EmptyStroke);
        }
        // Consecutive pieces share their joining point so the line stays unbroken.
        let mut start = 0;
        let mut ids = Vec::new();
        while start < points.len() {
            let end = (start + MAX_POINTS_PER_STROKE).min(points.len());
            let seq = self.board.next_stroke_seq(identity.author).max(self.stroke_seq_floor);
            let stroke = Stroke {
                id: StrokeId { author: identity.author, seq },
                color,
                width,
                points: points[start..end].to_vec(),
            };
            Board::validate(&BoardOp::Add {
                dot: easel_protocol::board::Dot::new(identity.author, 1),
                stroke: stroke.clone(),
            })?;
            self.stroke_seq_floor = seq + 1;
            ids.push(stroke.id);
            self.add(identity.author, stroke.clone());
            self.undo.push(Action::Drew(stroke));
            if end == points.len() {
                break;
            }
            start = end - 1;
        }
        self.redo.clear();
        Ok(ids)
    }

    /// Erases every stroke passing within `radius` of `at`; returns how many.
    pub fn erase_at(&mut self, at: Point, radius: f32) -> usize {
        let ids: Vec<StrokeId> = self.board.strokes().filter(|s| touches(s, at, radius)).map(|s| s.id).collect();
        self.erase_ids(&ids)
    }

    /// Erases the given strokes (those this replica holds) as one undoable action; returns how
    /// many.
    pub fn erase_ids(&mut self, ids: &[StrokeId]) -> usize {
        let hit: Vec<Stroke> = ids.iter().filter_map(|id| self.board.stroke(id).cloned()).collect();
        if hit.is_empty() {
            return 0;
        }
        let present: Vec<StrokeId> = hit.iter().map(|s| s.id).collect();
        self.erase(&present);
        let count = hit.len();
        self.undo.push(Action::Erased(hit));
        self.redo.clear();
        count
    }

    /// Undoes this player's newest action (never anyone else's).
    pub fn undo(&mut self) -> bool {
        let Some(action) = self.undo.pop() else { return false };
        self.revert(&action);
        self.redo.push(action);
        true
    }

    pub fn redo(&mut self) -> bool {
        let Some(action) = self.redo.pop() else { return false };
        self.replay(&action);
        self.undo.push(action);
        true
    }

    pub fn set_cursor(&mut self, cursor: Option<Point>) {
        if self.own_presence.cursor != cursor {
            self.own_presence.cursor = cursor;
            self.presence_dirty = true;
        }
    }

    pub fn set_drawing(&mut self, drawing: Option<Preview>) {
        if self.own_presence.drawing != drawing {
            self.own_presence.drawing = drawing;
            self.presence_dirty = true;
        }
    }

    /// A new connection: nothing is sent until the server's board has arrived.
    pub(super) fn connecting(&mut self) {
        self.synced = false;
        self.sent = 0;
        self.chunks.clear();
        self.presence.clear();
        self.presence_dirty = true;
    }

    pub(super) fn welcome(&mut self, identity: Identity, chunks: u32) {
        if self.identity.is_some_and(|old| old.author != identity.author) {
            // The server did not recognise our identity (e.g. its database was replaced): our
            // pending edits carry the old author and would be refused; start afresh.
            self.pending.clear();
            self.counter_floor = 0;
            self.stroke_seq_floor = 0;
            self.undo.clear();
            self.redo.clear();
        }
        self.identity = Some(identity);
        if chunks == 0 {
            self.synced_with(Board::default());
        }
    }

    pub(super) fn chunk(&mut self, index: u32, total: u32, bytes: Vec<u8>) -> Result<(), DecodeError> {
        if index == 0 {
            self.chunks.clear();
        }
        self.chunks.push(bytes);
        if index + 1 >= total {
            let encoded = std::mem::take(&mut self.chunks).concat();
            let board = Board::decode(&encoded)?;
            self.synced_with(board);
        }
        Ok(())
    }

    pub(super) fn remote_op(&mut self, op: BoardOp) {
        self.board.apply(op);
        self.version += 1;
    }

    pub(super) fn acked(&mut self, client_seq: u64) {
        while self.pending.front().is_some_and(|(seq, _)| *seq <= client_seq) {
            self.pending.pop_front();
            self.sent = self.sent.saturating_sub(1);
        }
        self.version += 1;
    }

    pub(super) fn rejected(&mut self, client_seq: u64, reason: String) {
        if let Some(at) = self.pending.iter().position(|(seq, _)| *seq == client_seq) {
            self.pending.remove(at);
        }
        self.last_error = Some(reason);
        // Get the server's board again and rebase what is left on it.
        self.sync_requested = true;
        self.synced = false;
        self.sent = 0;
        self.version += 1;
    }

    pub(super) fn remote_presence(&mut self, player: u32, presence: Presence) {
        self.presence.insert(player, presence);
        self.version += 1;
    }

    pub(super) fn player_left(&mut self, player: u32) {
        if self.presence.remove(&player).is_some() {
            self.version += 1;
        }
    }

    /// Messages due now: a resync request, unsent pending ops, presence.
    pub(super) fn poll_transmit(&mut self, now_ms: f64, out: &mut Vec<Vec<u8>>) {
        if self.sync_requested {
            self.sync_requested = false;
            out.push(encode(&ClientMsg::BoardSync));
        }
        if self.synced && self.sent < self.pending.len() {
            let (tokens, at) = self.send_budget.unwrap_or((SEND_OPS_BURST, now_ms));
            let mut tokens = (tokens + (now_ms - at).max(0.0) / 1000.0 * SEND_OPS_PER_SECOND).min(SEND_OPS_BURST);
            for (client_seq, op) in self.pending.iter().skip(self.sent) {
                if tokens < 1.0 {
                    break;
                }
                tokens -= 1.0;
                out.push(encode(&ClientMsg::Board { client_seq: *client_seq, op: op.clone() }));
                self.sent += 1;
            }
            self.send_budget = Some((tokens, now_ms));
        }
        if self.presence_dirty && now_ms - self.presence_sent_at >= PRESENCE_INTERVAL_MS {
            self.presence_dirty = false;
            self.presence_sent_at = now_ms;
            out.push(encode(&ClientMsg::Presence(self.own_presence.clone())));
        }
    }

    /// The state to keep in browser storage.
    pub fn save(&self) -> Vec<u8> {
        encode(&Saved {
            identity: self.identity,
            pending: self.pending.iter().cloned().collect(),
            next_client_seq: self.next_client_seq,
            counter_floor: self.counter_floor,
            stroke_seq_floor: self.stroke_seq_floor,
        })
    }

    /// Restores `save`d state: the pending edits show at once and go out after the next sync.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let saved: Saved = codec::decode_board(bytes)?;
        self.identity = saved.identity;
        self.next_client_seq = saved.next_client_seq;
        self.counter_floor = saved.counter_floor;
        self.stroke_seq_floor = saved.stroke_seq_floor;
        self.pending = saved.pending.into();
        for (_, op) in &self.pending {
            self.board.apply(op.clone());
        }
        self.version += 1;
        Ok(())
    }

    fn synced_with(&mut self, server_board: Board) {
        self.board = server_board;
        // The server's counter is now the truth: dots above it are free again, in order.
        self.counter_floor = 0;
        let pending = std::mem::take(&mut self.pending);
        for (client_seq, op) in pending {
            let rebased = match op {
                BoardOp::Add { dot, stroke } if dot.counter <= self.board.counter(dot.actor) => {
                    // The server counted this dot, so it has the op; keep it for the ack.
                    Some(BoardOp::Add { dot, stroke })
                }
                BoardOp::Add { dot, stroke } => {
                    let fresh = self.fresh_dot(dot.actor);
                    Some(BoardOp::Add { dot: fresh, stroke })
                }
                BoardOp::Erase { ids, .. } => self.board.erase_op(&ids),
            };
            if let Some(op) = rebased {
                self.board.apply(op.clone());
                self.pending.push_back((client_seq, op));
            }
        }
        if let Some(identity) = self.identity {
            self.counter_floor = self.board.counter(identity.author);
        }
        self.synced = true;
        self.sent = 0;
        self.version += 1;
    }

    fn add(&mut self, actor: Actor, stroke: Stroke) {
        let dot = self.fresh_dot(actor);
        self.push(BoardOp::Add { dot, stroke });
    }

    fn erase(&mut self, ids: &[StrokeId]) {
        if let Some(op) = self.board.erase_op(ids) {
            self.push(op);
        }
    }

    /// The next dot of `actor`: above both what this replica has seen and anything this tab
    /// used before a reload.
    fn fresh_dot(&mut self, actor: Actor) -> easel_protocol::board::Dot<Actor> {
        let counter = self.board.counter(actor).max(self.counter_floor) + 1;
        self.counter_floor = counter;
        easel_protocol::board::Dot::new(actor, counter)
    }

    fn push(&mut self, op: BoardOp) {
        self.board.apply(op.clone());
        self.next_client_seq += 1;
        self.pending.push_back((self.next_client_seq, op));
        self.version += 1;
    }

    fn revert(&mut self, action: &Action) {
        match action {
            Action::Drew(stroke) => self.erase(&[stroke.id]),
            Action::Erased(strokes) => self.readd(strokes),
        }
    }

    fn replay(&mut self, action: &Action) {
        match action {
            Action::Drew(stroke) => self.readd(std::slice::from_ref(stroke)),
            Action::Erased(strokes) => {
                let ids: Vec<StrokeId> = strokes.iter().map(|s| s.id).collect();
                self.erase(&ids);
            }
        }
    }

    fn readd(&mut self, strokes: &[Stroke]) {
        let Some(identity) = self.identity else { return };
        for stroke in strokes {
            if self.board.stroke(&stroke.id).is_none() {
                self.add(identity.author, stroke.clone());
            }
        }
    }
}

/// Whether any segment of `stroke` passes within `radius` (plus half its width) of `at`.
fn touches(stroke: &Stroke, at: Point, radius: f32) -> bool {
    let reach = radius + f32::from(stroke.width) / 2.0;
    let (px, py) = (f32::from(at.x), f32::from(at.y));
    let near = |a: Point, b: Point| {
        let (ax, ay, bx, by) = (f32::from(a.x), f32::from(a.y), f32::from(b.x), f32::from(b.y));
        let (dx, dy) = (bx - ax, by - ay);
        let length2 = dx * dx + dy * dy;
        let t = if length2 == 0.0 { 0.0 } else { (((px - ax) * dx + (py - ay) * dy) / length2).clamp(0.0, 1.0) };
        let (cx, cy) = (ax + t * dx - px, ay + t * dy - py);
        cx * cx + cy * cy <= reach * reach
    };
    match stroke.points.as_slice() {
        [only] => near(*only, *only),
        points => points.windows(2).any(|pair| near(pair[0], pair[1])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connected(author: u32) -> Whiteboard {
        let mut board = Whiteboard::default();
        board.connecting();
        board.welcome(Identity { author, token: [author as u8; 16] }, 0);
        board
    }

    fn line(x: i16) -> Vec<Point> {
        vec![Point { x, y: 0 }, Point { x: x + 10, y: 10 }, Point { x: x + 20, y: 0 }]
    }

    fn sent_ops(board: &mut Whiteboard) -> Vec<(u64, BoardOp)> {
        let mut out = Vec::new();
        board.poll_transmit(0.0, &mut out);
        out.iter()
            .filter_map(|m| match easel_protocol::decode_client(m).ok()? {
                ClientMsg::Board { client_seq, op } => Some((client_seq, op)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn own_strokes_show_at_once_and_count_as_unsynced_until_acked() {
        let mut board = connected(1);
        board.draw(0xff0000, 4, &line(0)).unwrap();
        assert_eq!(board.board().len(), 1, "local-first: visible before any ack");
        assert_eq!(board.unsynced(), 1);
        let sent = sent_ops(&mut board);
        assert_eq!(sent.len(), 1);
        board.acked(sent[0].0);
        assert_eq!(board.unsynced(), 0);
    }

    #[test]
    fn undo_and_redo_touch_only_my_own_actions() {
        let mut mine = connected(1);
        let mut theirs = connected(2);
        theirs.draw(0x00ff00, 4, &line(100)).unwrap();
        for (_, op) in sent_ops(&mut theirs) {
            mine.remote_op(op);
        }
        mine.draw(0xff0000, 4, &line(0)).unwrap();
        assert_eq!(mine.board().len(), 2);
        assert!(mine.undo());
        let authors: Vec<u32> = mine.board().strokes().map(|s| s.id.author).collect();
        assert_eq!(authors, vec![2], "undo removed my stroke and kept theirs");
        assert!(!mine.undo(), "nothing of mine left to undo");
        assert!(mine.redo());
        assert_eq!(mine.board().len(), 2, "redo brought my stroke back");
    }

    #[test]
    fn undoing_an_erase_restores_someone_elses_stroke() {
        let mut mine = connected(1);
        let mut theirs = connected(2);
        theirs.draw(0x00ff00, 4, &line(100)).unwrap();
        for (_, op) in sent_ops(&mut theirs) {
            mine.remote_op(op);
        }
        assert_eq!(mine.erase_at(Point { x: 110, y: 10 }, 3.0), 1);
        assert!(mine.board().is_empty());
        assert!(mine.undo());
        assert_eq!(mine.board().strokes().next().map(|s| s.id.author), Some(2));
    }

    #[test]
    fn offline_edits_are_rebased_onto_the_servers_board_and_resent() {
        let mut server = Board::default();
        let mut client = connected(1);
        client.draw(1, 2, &line(0)).unwrap();
        for (seq, op) in sent_ops(&mut client) {
            server.apply(op);
            client.acked(seq);
        }
        // Offline: two more strokes, one erase of the acked stroke.
        client.connecting();
        client.draw(1, 2, &line(50)).unwrap();
        client.draw(1, 2, &line(80)).unwrap();
        client.erase_at(Point { x: 10, y: 10 }, 2.0);
        assert_eq!(client.unsynced(), 3);
        // Meanwhile someone else drew.
        let other =
            server.add_op(2, Stroke { id: StrokeId { author: 2, seq: 0 }, color: 3, width: 1, points: line(500) });
        server.apply(other);
        // Reconnect: the server's board arrives, the offline ops are sent and accepted in order.
        client.welcome(Identity { author: 1, token: [1; 16] }, 1);
        client.chunk(0, 1, server.encode()).unwrap();
        for (seq, op) in sent_ops(&mut client) {
            assert!(server.readiness(&op, 1).is_ok(), "a rebased op is ready on the server: {op:?}");
            server.apply(op);
            client.acked(seq);
        }
        assert_eq!(client.unsynced(), 0);
        assert_eq!(server.digest(), client.board().digest(), "nothing lost, nothing resurrected");
        assert_eq!(server.len(), 3, "two offline strokes and the other player's; the erased one stays erased");
    }

    #[test]
    fn a_reload_keeps_unsynced_edits_and_never_reuses_a_dot() {
        let mut before = connected(1);
        before.draw(1, 2, &line(0)).unwrap();
        let acked: Vec<_> = sent_ops(&mut before);
        before.acked(acked[0].0);
        before.connecting();
        before.draw(1, 2, &line(40)).unwrap();
        let saved = before.save();

        let mut after = Whiteboard::default();
        after.restore(&saved).unwrap();
        assert_eq!(after.unsynced(), 1, "the offline stroke survived the reload");
        after.draw(1, 2, &line(90)).unwrap();
        let counters: Vec<u64> = after
            .pending
            .iter()
            .filter_map(|(_, op)| match op {
                BoardOp::Add { dot, .. } => Some(dot.counter),
                BoardOp::Erase { .. } => None,
            })
            .collect();
        assert_eq!(counters, vec![2, 3], "dot 1 (acked before the reload) is never used again");
    }

    #[test]
    fn a_long_offline_session_is_resent_within_the_servers_budget() {
        let mut board = connected(1);
        board.connecting();
        for i in 0..1000 {
            board.draw(1, 2, &line(i)).unwrap();
        }
        board.welcome(Identity { author: 1, token: [1; 16] }, 0);
        let mut ops_sent_at = |now: f64| {
            let mut out = Vec::new();
            board.poll_transmit(now, &mut out);
            out.iter().filter(|m| matches!(easel_protocol::decode_client(m), Ok(ClientMsg::Board { .. }))).count()
        };
        assert_eq!(ops_sent_at(0.0), SEND_OPS_BURST as usize, "the first burst stays under the server's 1,000");
        assert_eq!(ops_sent_at(1000.0), SEND_OPS_PER_SECOND as usize, "then the sustained rate");
    }

    #[test]
    fn long_strokes_are_split_without_a_gap() {
        let mut board = connected(1);
        let points: Vec<Point> = (0..2500).map(|i| Point { x: (i % 3000) as i16, y: 0 }).collect();
        board.draw(1, 2, &points).unwrap();
        let pieces: Vec<&Stroke> = board.board().strokes().collect();
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[0].points.last(), pieces[1].points.first(), "pieces share their joint");
    }
}
