//! Rooms: each owns one simulation (`Sim`), one whiteboard replica, its members and its chat,
//! and runs on its own fixed tick, independent of every other room. Rooms are created on demand
//! by name and closed when the last member leaves (`registry`); the board stays in the store.
//!
//! A room never waits on a client: every message to a member is a `try_send` into that member's
//! bounded queue, and snapshots go through a `watch` slot that newer snapshots overwrite. One slow
//! client therefore costs one queue at most and cannot stall the tick.
//!
//! Board ops follow one path: readiness check → apply to the replica → commit (store thread) →
//! acknowledge to the author and relay to the others, in the order they arrived. Nothing is
//! acknowledged or relayed before it is on disk.

mod board;
mod registry;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use easel_protocol::board::BoardOp;
use easel_protocol::{Identity, OrbState, PlayerInfo, Presence, ServerMsg, close, encode, game};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::session::CloseReason;
use crate::sim::{Sim, SimEvent, TickInput};
use crate::store::Committed;
use board::RoomBoard;
pub use registry::{JoinError, RoomHandle, Rooms};

/// How the room reaches one member's connection.
pub struct MemberLink {
    /// Reliable messages (welcome, joins, leaves, chat, orb events, board), in order. Bounded: a
    /// member that lets it fill up is disconnected rather than buffered for.
    pub messages: mpsc::Sender<Bytes>,
    /// Tells the connection to close with a reason (slow consumer, shutdown).
    pub kick: oneshot::Sender<CloseReason>,
}

/// The room's answer to a join.
pub struct Joined {
    pub player_id: u32,
    /// The encoded `Welcome`, to send before anything from `messages`.
    pub welcome: Bytes,
    /// The latest encoded snapshot; unsent ones are superseded by newer ones.
    pub snapshots: watch::Receiver<Bytes>,
}

/// Membership changes: rare, never dropped (unbounded, at most one per connection in flight).
pub(crate) enum Control {
    Join { name: String, identity: Identity, link: MemberLink, reply: oneshot::Sender<Result<Joined, CloseReason>> },
    Leave { player: u32 },
    Shutdown,
}

/// Gameplay and board traffic: frequent, bounded.
pub(crate) enum Play {
    Input(TickInput),
    Chat { player: u32, text: String },
    Board { player: u32, client_seq: u64, op: BoardOp },
    BoardSync { player: u32 },
    Presence { player: u32, presence: Presence },
}

struct Member {
    info: PlayerInfo,
    /// The whiteboard author this connection edits as.
    author: u32,
    messages: mpsc::Sender<Bytes>,
    kick: Option<oneshot::Sender<CloseReason>>,
}

struct Room {
    name: String,
    sim: Sim,
    board: RoomBoard,
    members: BTreeMap<u32, Member>,
    inputs: Vec<TickInput>,
    snapshots: watch::Sender<Bytes>,
    /// The players of the last published snapshot.
    last_players: Vec<easel_protocol::PlayerState>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
}

impl Room {
    fn new(name: String, board: RoomBoard, config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
        let sim = Sim::new(config.rules, config.tick_seconds());
        let (snapshots, _) = watch::channel(Bytes::new());
        Self {
            name,
            sim,
            board,
            members: BTreeMap::new(),
            inputs: Vec::new(),
            snapshots,
            last_players: Vec::new(),
            config,
            metrics,
        }
    }

    fn join(
        &mut self,
        player_id: u32,
        name: String,
        identity: Identity,
        spawn: (f32, f32),
        link: MemberLink,
    ) -> Result<Joined, CloseReason> {
        if self.members.len() >= self.config.limits.room_capacity {
            return Err(CloseReason::new(close::TRY_AGAIN_LATER, format!("room {} is full", self.name)));
        }
        let info = PlayerInfo { id: player_id, name, color: game::player_color(player_id) };
        self.sim.add_player(player_id, spawn);
        self.broadcast(&ServerMsg::PlayerJoined(info.clone()));
        let chunks = self.board.chunks();
        let welcome = ServerMsg::Welcome {
            player_id,
            tick_rate: self.config.tick_rate,
            rules: self.sim.rules(),
            players: self.members.values().map(|m| m.info.clone()).chain(std::iter::once(info.clone())).collect(),
            orbs: self.sim.orbs(),
            identity,
            board_chunks: chunks.len() as u32,
        };
        let member = Member { info, author: identity.author, messages: link.messages, kick: Some(link.kick) };
        // The board follows the welcome on the reliable queue, before anything else.
        for chunk in chunks {
            let _ = member.messages.try_send(chunk);
        }
        tracing::info!(room = %self.name, player_id, name = %member.info.name, author = identity.author, "player joined");
        self.members.insert(player_id, member);
        self.metrics.players.inc();
        Ok(Joined { player_id, welcome: Bytes::from(encode(&welcome)), snapshots: self.snapshots.subscribe() })
    }

    fn leave(&mut self, player_id: u32) {
        if self.members.remove(&player_id).is_some() {
            self.sim.remove_player(player_id);
            self.metrics.players.dec();
            self.broadcast(&ServerMsg::PlayerLeft { id: player_id });
            tracing::info!(room = %self.name, player_id, "player left");
        }
    }

    fn play(&mut self, play: Play) {
        match play {
            Play::Input(input) if self.members.contains_key(&input.player) => self.inputs.push(input),
            Play::Input(_) => {}
            Play::Chat { player, text } => {
                if let Some(member) = self.members.get(&player) {
                    let msg = ServerMsg::Chat { from: player, name: member.info.name.clone(), text };
                    self.broadcast(&msg);
                }
            }
            Play::Board { player, client_seq, op } => self.board_op(player, client_seq, op),
            Play::BoardSync { player } => {
                if let Some(member) = self.members.get(&player) {
                    for chunk in self.board.chunks() {
                        let _ = member.messages.try_send(chunk);
                    }
                }
            }
            Play::Presence { player, presence } => {
                if self.members.contains_key(&player) {
                    self.broadcast_lossy(player, &ServerMsg::Presence { player, presence });
                }
            }
        }
    }

    fn board_op(&mut self, player: u32, client_seq: u64, op: BoardOp) {
        let Some(author) = self.members.get(&player).map(|m| m.author) else { return };
        match self.board.submit(player, author, client_seq, op) {
            Ok(()) => {}
            Err(board::Refusal::Invalid(reason)) => {
                self.send_to(player, &ServerMsg::BoardRejected { client_seq, reason });
            }
            Err(board::Refusal::StorageBacklog) => self.kick(
                player,
                CloseReason::new(
                    close::TRY_AGAIN_LATER,
                    "the server cannot store edits right now; yours are kept, reconnecting",
                ),
            ),
        }
        self.deliver_committed();
    }

    fn committed(&mut self, committed: Committed) {
        self.board.committed(committed);
        self.deliver_committed();
    }

    /// Acknowledges and relays every op whose turn has come.
    fn deliver_committed(&mut self) {
        for ready in self.board.take_committed() {
            self.metrics.board_ops.inc();
            self.send_to(ready.player, &ServerMsg::BoardAck { client_seq: ready.client_seq });
            if let Some(op) = ready.op {
                let relay = Bytes::from(encode(&ServerMsg::BoardOp(op)));
                self.broadcast_bytes(relay, Some(ready.player));
            }
        }
    }

    fn tick(&mut self) {
        let started = Instant::now();
        let outbox = self.sim.step(&self.inputs);
        self.inputs.clear();
        for event in outbox.events {
            match event {
                SimEvent::OrbCollected { by, orb } => self.broadcast(&ServerMsg::OrbCollected { by, orb }),
            }
        }
        // A world where nothing changed needs no snapshot: clients keep drawing the last one
        // (a board room of idle players would otherwise send everyone the whole room 30 times
        // a second). Encoded once for every member: all of them see the whole room.
        if outbox.players != self.last_players {
            let snapshot = ServerMsg::Snapshot { tick: outbox.tick, players: outbox.players.clone() };
            self.snapshots.send_replace(Bytes::from(encode(&snapshot)));
            self.last_players = outbox.players;
        }
        self.board.maybe_compact();
        self.metrics.ticks.inc();
        self.metrics.tick_seconds.observe(started.elapsed().as_micros() as u64);
    }

    /// Sends a reliable message to every member; a member whose queue is full is too slow to keep
    /// and is disconnected.
    fn broadcast(&mut self, msg: &ServerMsg) {
        self.broadcast_bytes(Bytes::from(encode(msg)), None);
    }

    fn broadcast_bytes(&mut self, bytes: Bytes, except: Option<u32>) {
        let mut too_slow = Vec::new();
        for (id, member) in &mut self.members {
            if Some(*id) == except {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = member.messages.try_send(bytes.clone()) {
                too_slow.push(*id);
            }
        }
        for id in too_slow {
            self.kick(id, CloseReason::new(close::TRY_AGAIN_LATER, "connection too slow to keep up"));
            self.leave(id);
        }
    }

    /// Presence is ephemeral: a member whose queue is half full simply misses this update.
    fn broadcast_lossy(&mut self, from: u32, msg: &ServerMsg) {
        let bytes = Bytes::from(encode(msg));
        let half = self.config.limits.outbound_queue / 2;
        for (id, member) in &self.members {
            if *id != from && member.messages.capacity() > half {
                let _ = member.messages.try_send(bytes.clone());
            }
        }
    }

    fn send_to(&mut self, player: u32, msg: &ServerMsg) {
        let full = match self.members.get(&player) {
            Some(member) => {
                matches!(member.messages.try_send(Bytes::from(encode(msg))), Err(mpsc::error::TrySendError::Full(_)))
            }
            None => false,
        };
        if full {
            self.kick(player, CloseReason::new(close::TRY_AGAIN_LATER, "connection too slow to keep up"));
            self.leave(player);
        }
    }

    fn kick(&mut self, player_id: u32, reason: CloseReason) {
        if let Some(kick) = self.members.get_mut(&player_id).and_then(|m| m.kick.take()) {
            // The connection may already be gone; then there is nobody to tell.
            let _ = kick.send(reason);
        }
    }

    fn orbs(&mut self) -> Vec<OrbState> {
        self.sim.orbs()
    }
}

/// Runs a room until it is empty (and no join is on its way) or the server shuts down.
pub(crate) async fn run_room(
    name: String,
    room_id: u64,
    rooms: Arc<Rooms>,
    mut control: mpsc::UnboundedReceiver<Control>,
    mut play: mpsc::Receiver<Play>,
) {
    let config = rooms.config().clone();
    let (commits_tx, mut commits) = mpsc::unbounded_channel();
    let board = match RoomBoard::load(&name, rooms.store().clone(), commits_tx, &config).await {
        Ok(board) => board,
        Err(e) => {
            tracing::error!(room = %name, "cannot load the board, refusing joins: {e}");
            refuse_all(&mut control, &format!("this room's board cannot be read: {e}"));
            rooms.remove(&name, room_id);
            return;
        }
    };
    let mut room = Room::new(name.clone(), board, config.clone(), rooms.metrics().clone());
    tracing::debug!(room = %name, orbs = room.orbs().len(), strokes = room.board.len(), "room opened");
    let period = Duration::from_secs_f32(config.tick_seconds());
    let mut ticker = tokio::time::interval(period);
    // After a stall, skip the missed ticks rather than burst through them: a burst would send
    // clients several snapshots at once, which looks worse than one late one.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut last_tick = Instant::now();
    loop {
        tokio::select! {
            biased;
            command = control.recv() => match command {
                Some(Control::Join { name: player_name, identity, link, reply }) => {
                    let (player_id, spawn) = rooms.next_player(&config.rules);
                    let _ = reply.send(room.join(player_id, player_name, identity, spawn, link));
                }
                Some(Control::Leave { player }) => room.leave(player),
                Some(Control::Shutdown) | None => {
                    let ids: Vec<u32> = room.members.keys().copied().collect();
                    for id in ids {
                        room.kick(id, CloseReason::new(close::GOING_AWAY, "server shutting down"));
                    }
                    break;
                }
            },
            Some(committed) = commits.recv() => room.committed(committed),
            Some(message) = play.recv() => room.play(message),
            _ = room.board.retry_due() => room.board.retry(),
            _ = ticker.tick() => {
                let now = Instant::now();
                let late_ticks = (now.duration_since(last_tick).as_secs_f32() / period.as_secs_f32()) as u64;
                if late_ticks >= 2 {
                    room.metrics.ticks_missed.add(late_ticks - 1);
                }
                last_tick = now;
                room.tick();
            }
        }
        if room.members.is_empty() && !room.board.has_uncommitted() && rooms.close_if_idle(&name, room_id, &control) {
            break;
        }
    }
    for id in room.members.keys().copied().collect::<Vec<_>>() {
        room.leave(id);
    }
    // Let writes already queued finish, so an op accepted before shutdown is not half-done.
    let drain = tokio::time::Instant::now() + Duration::from_secs(2);
    while room.board.has_uncommitted() && tokio::time::Instant::now() < drain {
        match tokio::time::timeout_at(drain, commits.recv()).await {
            Ok(Some(committed)) => room.committed(committed),
            _ => break,
        }
    }
    room.board.compact_now();
    rooms.remove(&name, room_id);
    tracing::debug!(room = %name, "room closed");
}

fn refuse_all(control: &mut mpsc::UnboundedReceiver<Control>, reason: &str) {
    control.close();
    while let Ok(command) = control.try_recv() {
        if let Control::Join { reply, .. } = command {
            let _ = reply.send(Err(CloseReason::new(close::TRY_AGAIN_LATER, reason)));
        }
    }
}

#[cfg(test)]
mod tests {
    use easel_protocol::board::{Point, Stroke, StrokeId};

    use super::*;
    use crate::store::{Location, Store};

    async fn room_with(config: Config) -> (Room, mpsc::UnboundedReceiver<Committed>) {
        let (store, _thread) = Store::open(&Location::Memory).unwrap();
        let (commits_tx, commits) = mpsc::unbounded_channel();
        let board = RoomBoard::load("test", store, commits_tx, &config).await.unwrap();
        (Room::new("test".into(), board, Arc::new(config), Arc::new(Metrics::default())), commits)
    }

    fn link(capacity: usize) -> (MemberLink, mpsc::Receiver<Bytes>, oneshot::Receiver<CloseReason>) {
        let (messages, messages_rx) = mpsc::channel(capacity);
        let (kick, kick_rx) = oneshot::channel();
        (MemberLink { messages, kick }, messages_rx, kick_rx)
    }

    fn identity(author: u32) -> Identity {
        Identity { author, token: [0; 16] }
    }

    /// Player 1 (author 7) and player 2 (author 8) in the room, their welcome traffic drained.
    fn author_and_other(room: &mut Room) -> (mpsc::Receiver<Bytes>, mpsc::Receiver<Bytes>) {
        let (author, mut author_rx, kick_author) = link(64);
        let (other, mut other_rx, kick_other) = link(64);
        room.join(1, "author".into(), identity(7), (0.0, 0.0), author).unwrap();
        room.join(2, "other".into(), identity(8), (0.0, 0.0), other).unwrap();
        // Dropping the kick receivers is fine: these tests never kick.
        drop((kick_author, kick_other));
        drain(&mut author_rx);
        drain(&mut other_rx);
        (author_rx, other_rx)
    }

    fn drain(rx: &mut mpsc::Receiver<Bytes>) -> Vec<ServerMsg> {
        let mut out = Vec::new();
        while let Ok(bytes) = rx.try_recv() {
            out.push(easel_protocol::decode_server(&bytes).unwrap());
        }
        out
    }

    #[tokio::test]
    async fn a_member_whose_queue_is_full_is_disconnected_not_buffered_for() {
        let (mut room, _commits) = room_with(Config::for_tests()).await;
        let (slow, _never_read, mut slow_kick) = link(3);
        room.join(1, "slow".into(), identity(1), (0.0, 0.0), slow).unwrap();
        let (fast, mut fast_rx, _fast_kick) = link(64);
        room.join(2, "fast".into(), identity(2), (5.0, 5.0), fast).unwrap();
        drain(&mut fast_rx);
        for i in 0..4 {
            room.play(Play::Chat { player: 2, text: format!("line {i}") });
        }
        let reason = slow_kick.try_recv().expect("the slow member is told to go");
        assert_eq!(reason.code, close::TRY_AGAIN_LATER);
        assert!(!room.members.contains_key(&1), "and removed from the room");
        let received = drain(&mut fast_rx);
        assert_eq!(received.len(), 5, "the other member got all four lines and the leave: {received:?}");
    }

    #[tokio::test]
    async fn a_tick_publishes_one_snapshot_shared_by_all_members() {
        let (mut room, _commits) = room_with(Config::for_tests()).await;
        let (a, _a_rx, _a_kick) = link(8);
        let (b, _b_rx, _b_kick) = link(8);
        let mut a_snapshots = room.join(1, "a".into(), identity(1), (0.0, 0.0), a).unwrap().snapshots;
        let mut b_snapshots = room.join(2, "b".into(), identity(2), (1.0, 1.0), b).unwrap().snapshots;
        room.tick();
        let (sa, sb) = (a_snapshots.borrow_and_update().clone(), b_snapshots.borrow_and_update().clone());
        assert_eq!(sa.as_ptr(), sb.as_ptr(), "encoded once, shared by every member");
        let decoded = easel_protocol::decode_server(&sa).unwrap();
        assert!(matches!(decoded, ServerMsg::Snapshot { tick: 1, ref players } if players.len() == 2));
    }

    #[tokio::test]
    async fn an_unchanged_world_publishes_no_new_snapshot() {
        let (mut room, _commits) = room_with(Config::for_tests()).await;
        let (a, _a_rx, _a_kick) = link(8);
        let mut snapshots = room.join(1, "a".into(), identity(1), (500.0, 500.0), a).unwrap().snapshots;
        room.tick();
        assert!(snapshots.has_changed().unwrap(), "the first state is published");
        snapshots.borrow_and_update();
        room.tick();
        assert!(!snapshots.has_changed().unwrap(), "nobody moved: nothing new to send");
        room.play(Play::Input(TickInput { player: 1, seq: 1, dx: 1, dy: 0 }));
        room.tick();
        assert!(snapshots.has_changed().unwrap(), "movement is published again");
    }

    #[tokio::test]
    async fn a_full_room_refuses_with_try_again_later() {
        let mut config = Config::for_tests();
        config.limits.room_capacity = 1;
        let (mut room, _commits) = room_with(config).await;
        room.join(1, "a".into(), identity(1), (0.0, 0.0), link(4).0).unwrap();
        let refused = room.join(2, "b".into(), identity(2), (0.0, 0.0), link(4).0).err().unwrap();
        assert_eq!(refused.code, close::TRY_AGAIN_LATER);
    }

    #[tokio::test]
    async fn a_board_op_is_acked_and_relayed_only_after_it_is_stored() {
        let (mut room, mut commits) = room_with(Config::for_tests()).await;
        let (mut author_rx, mut other_rx) = author_and_other(&mut room);
        let stroke =
            Stroke { id: StrokeId { author: 7, seq: 0 }, color: 1, width: 2, points: vec![Point { x: 1, y: 2 }] };
        let op = BoardOp::Add { dot: easel_protocol::board::Dot::new(7, 1), stroke };
        room.play(Play::Board { player: 1, client_seq: 1, op });
        assert!(drain(&mut author_rx).is_empty(), "no ack before the commit");
        assert!(drain(&mut other_rx).is_empty(), "no relay before the commit");
        let committed = commits.recv().await.unwrap();
        room.committed(committed);
        assert_eq!(drain(&mut author_rx), vec![ServerMsg::BoardAck { client_seq: 1 }]);
        assert!(matches!(drain(&mut other_rx).as_slice(), [ServerMsg::BoardOp(BoardOp::Add { .. })]));
    }

    #[tokio::test]
    async fn an_invalid_board_op_is_refused_to_its_author_only() {
        let (mut room, _commits) = room_with(Config::for_tests()).await;
        let (mut author_rx, mut other_rx) = author_and_other(&mut room);
        let forged =
            Stroke { id: StrokeId { author: 8, seq: 0 }, color: 1, width: 2, points: vec![Point { x: 1, y: 2 }] };
        room.play(Play::Board {
            player: 1,
            client_seq: 1,
            op: BoardOp::Add { dot: easel_protocol::board::Dot::new(7, 1), stroke: forged },
        });
        assert!(matches!(drain(&mut author_rx).as_slice(), [ServerMsg::BoardRejected { client_seq: 1, .. }]));
        assert!(drain(&mut other_rx).is_empty());
    }
}
