//! Rooms: each owns one simulation (`Sim`), one whiteboard replica, its members and its chat,
//! and runs on its own fixed tick, independent of every other room. Rooms are created on demand
//! by name and closed when the last member leaves (`registry`); the board stays in the store.
//!
//! A room never waits on a client: every message to a member is a `try_send` into that member's
//! bounded queue, and a snapshot is written to the member's socket without blocking when the
//! socket is idle, else put in a per-member `watch` slot that newer snapshots overwrite
//! (`handoff`). One slow client therefore costs one queue at most and cannot stall the tick.
//!
//! Snapshots are deltas against the newest snapshot each member is sure to hold (`snapshot`;
//! `MemberLink::delivery`), of the players in its view and within its byte budget (`interest`).
//! Members sent the same set share one encoding per distinct baseline: with full visibility,
//! every client that keeps up is on the previous tick's snapshot and shares one encoding.
//!
//! A member whose connection drops (without a close), or is closed for being too slow to keep
//! up, stays in the world for the resume grace period; a new connection presenting its resume
//! token gets the same player back, and nobody else sees a leave or a join.
//!
//! Board ops follow one path: readiness check → apply to the replica and relay to the others →
//! commit with the rest of the tick's ops (store thread) → acknowledge to the author, in the
//! order they arrived. Nothing is
//! acknowledged before it is on disk; while commits fail, nothing is relayed before it either
//! (see `board`).

mod board;
mod delivery;
pub(crate) mod fanout;
mod handoff;
mod input_wait;
pub mod interest;
#[cfg(test)]
mod netsim_tests;
mod registry;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use easel_protocol::board::BoardOp;
use easel_protocol::snapshot::NetPlayer;
use easel_protocol::{Identity, OrbState, PlayerInfo, Presence, ServerMsg, close, encode, game};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::session::CloseReason;
use crate::sim::{Sim, SimEvent, TickInput};
use crate::store::Committed;
use board::RoomBoard;
pub use delivery::Delivery;
use fanout::Fanout;
pub use handoff::DirectWrite;
use input_wait::InputWaits;
use interest::{CellView, CellViews, Encodings, Frame, MemberView};
pub use registry::{JoinError, RoomHandle, Rooms};

/// How the room reaches one member's connection.
pub struct MemberLink {
    /// Reliable messages (welcome, joins, leaves, chat, orb events, board), in order. Bounded: a
    /// member that lets it fill up is disconnected rather than buffered for.
    pub messages: mpsc::Sender<Bytes>,
    /// Tells the connection to close with a reason (slow consumer, shutdown).
    pub kick: oneshot::Sender<CloseReason>,
    /// Which connection this is (a leave from an older connection of a resumed player is
    /// ignored).
    pub connection: u64,
    /// The snapshot the client is sure to hold, kept up to date by the connection: each
    /// snapshot is a delta against it.
    pub delivery: Arc<Delivery>,
    /// The resume token the client presented, if any.
    pub resume: Option<[u8; 16]>,
    /// The connection's socket, for snapshots written the moment they are handed over (None:
    /// always through `Joined::snapshots`).
    pub socket: Option<Arc<dyn DirectWrite>>,
}

/// The room's answer to a join.
pub struct Joined {
    pub player_id: u32,
    /// The encoded `Welcome`, to send before anything from `messages`.
    pub welcome: Bytes,
    /// This member's latest encoded snapshot; unsent ones are superseded by newer ones.
    pub snapshots: watch::Receiver<EncodedSnapshot>,
    /// Whether this is a resumed player rather than a new one.
    pub resumed: bool,
    /// Where the connection marks each snapshot it writes, to time the room's fan-out.
    pub fanout: Arc<Fanout>,
}

/// One member's snapshot of a tick, encoded.
#[derive(Clone, Debug, Default)]
pub struct EncodedSnapshot {
    pub tick: u32,
    pub bytes: Bytes,
}

/// Membership changes: rare, never dropped (unbounded, at most one per connection in flight).
pub(crate) enum Control {
    Join { name: String, identity: Identity, link: MemberLink, reply: oneshot::Sender<Result<Joined, CloseReason>> },
    Leave { player: u32, connection: u64, dropped: bool },
    Shutdown,
}

/// Gameplay and board traffic: frequent, bounded.
pub(crate) enum Play {
    /// An input, and when its message was read from the connection.
    Input {
        input: TickInput,
        arrived: Instant,
    },
    Chat {
        player: u32,
        text: String,
    },
    Board {
        player: u32,
        client_seq: u64,
        op: BoardOp,
    },
    BoardSync {
        player: u32,
    },
    SnapshotLost {
        player: u32,
    },
    Presence {
        player: u32,
        presence: Presence,
    },
}

struct Member {
    info: PlayerInfo,
    /// The whiteboard author this connection edits as.
    author: u32,
    messages: mpsc::Sender<Bytes>,
    kick: Option<oneshot::Sender<CloseReason>>,
    snapshots: Arc<watch::Sender<EncodedSnapshot>>,
    socket: Option<Arc<dyn DirectWrite>>,
    delivery: Arc<Delivery>,
    /// How long its oldest input of this tick waited for the tick: the order of the hand-over.
    waited: Duration,
    /// What it has been sent, for deltas, hysteresis and priorities.
    view: MemberView,
    connection: u64,
    resume: [u8; 16],
    /// When its connection dropped, if it did: the player waits this long for a resume.
    detached_at: Option<Instant>,
    /// How long its inputs wait for their tick, for its client to time them.
    input_waits: InputWaits,
}

struct Room {
    name: String,
    sim: Sim,
    board: RoomBoard,
    members: BTreeMap<u32, Member>,
    inputs: Vec<TickInput>,
    /// The newest published world.
    latest: Option<(u32, Arc<Vec<NetPlayer>>)>,
    /// The cells' views of the newest snapshot (the next one's hysteresis).
    cell_views: CellViews,
    /// Whether the last tick changed the world: one unchanged snapshot follows movement, so
    /// clients see that it stopped, then nothing until something moves again.
    moving: bool,
    fanout: Arc<Fanout>,
    /// Whether snapshots go to the connections through the hand-over thread (the room task),
    /// or at once (tests): `handoff`.
    handoff: bool,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
}

impl Room {
    fn new(name: String, board: RoomBoard, config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
        let sim = Sim::new(config.rules, config.tick_seconds());
        Self {
            name,
            sim,
            board,
            members: BTreeMap::new(),
            inputs: Vec::new(),
            latest: None,
            cell_views: CellViews::new(),
            moving: false,
            fanout: Arc::default(),
            handoff: false,
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
        let resumed = link.resume.and_then(|token| self.members.iter().find(|(_, m)| m.resume == token));
        if let Some((&id, _)) = resumed {
            return Ok(self.attach(id, identity, link, true));
        }
        if self.members.len() >= self.config.limits.room_capacity {
            return Err(CloseReason::new(close::TRY_AGAIN_LATER, format!("room {} is full", self.name)));
        }
        let info = PlayerInfo { id: player_id, name, color: game::player_color(player_id) };
        self.sim.add_player(player_id, spawn);
        self.broadcast(&ServerMsg::PlayerJoined(info.clone()));
        let snapshots = Arc::new(watch::channel(EncodedSnapshot::default()).0);
        let member = Member {
            info,
            author: identity.author,
            messages: link.messages.clone(),
            kick: None,
            snapshots,
            socket: None,
            delivery: Arc::clone(&link.delivery),
            waited: Duration::ZERO,
            view: MemberView::default(),
            connection: link.connection,
            resume: crate::store::random_token(),
            detached_at: None,
            input_waits: InputWaits::default(),
        };
        tracing::info!(room = %self.name, player_id, name = %member.info.name, author = identity.author, "player joined");
        self.members.insert(player_id, member);
        self.metrics.players.inc();
        Ok(self.attach(player_id, identity, link, false))
    }

    /// Connects member `player_id` to `link`: the welcome, the board and the newest snapshot in
    /// full. A previous connection still attached is told it was replaced.
    fn attach(&mut self, player_id: u32, identity: Identity, link: MemberLink, resumed: bool) -> Joined {
        let chunks = self.board.chunks();
        let welcome = ServerMsg::Welcome {
            player_id,
            tick_rate: self.config.tick_rate,
            rules: self.sim.rules(),
            view_distance: self.config.interest.view_distance,
            players: self.members.values().map(|m| m.info.clone()).collect(),
            orbs: self.sim.orbs(),
            identity,
            board_chunks: chunks.len() as u32,
            resume: self.members.get(&player_id).map(|m| m.resume).unwrap_or_default(),
        };
        let (snapshots_tx, snapshots) = watch::channel(EncodedSnapshot::default());
        let member = self.members.get_mut(&player_id).expect("attach is called for members only");
        // The client starts from nothing: the newest world, against no baseline.
        member.view.reset();
        if let Some((tick, players)) = &self.latest {
            let frame = Frame::new(
                *tick,
                Arc::clone(players),
                &self.config.interest,
                self.config.tick_rate,
                self.cell_views.clone(),
            );
            if let Some(bytes) = member.view.next(player_id, 0, &frame, &mut Encodings::default()) {
                snapshots_tx.send_replace(EncodedSnapshot { tick: *tick, bytes });
            }
        }
        if let Some(old) = member.kick.take() {
            let _ =
                old.send(CloseReason::new(close::POLICY_VIOLATION, "this player was resumed on another connection"));
        }
        member.author = identity.author;
        member.messages = link.messages;
        member.kick = Some(link.kick);
        member.snapshots = Arc::new(snapshots_tx);
        member.socket = link.socket;
        member.delivery = link.delivery;
        member.connection = link.connection;
        member.detached_at = None;
        // The board follows the welcome on the reliable queue, before anything else.
        for chunk in chunks {
            let _ = member.messages.try_send(chunk);
        }
        if resumed {
            tracing::info!(room = %self.name, player_id, "player resumed");
        }
        Joined {
            player_id,
            welcome: Bytes::from(encode(&welcome)),
            snapshots,
            resumed,
            fanout: Arc::clone(&self.fanout),
        }
    }

    fn leave(&mut self, player_id: u32) {
        if self.members.remove(&player_id).is_some() {
            self.sim.remove_player(player_id);
            self.metrics.players.dec();
            self.broadcast(&ServerMsg::PlayerLeft { id: player_id });
            tracing::info!(room = %self.name, player_id, "player left");
        }
    }

    /// Connection `connection` of `player_id` ended. A dropped one keeps the player for the
    /// resume grace period; a closed one (or a stale connection's end) is final or ignored.
    fn connection_ended(&mut self, player_id: u32, connection: u64, dropped: bool) {
        let Some(member) = self.members.get_mut(&player_id) else { return };
        if member.connection != connection {
            return;
        }
        if dropped {
            self.detach(player_id);
        } else {
            self.leave(player_id);
        }
    }

    /// Keeps `player_id` in the world without a connection for the resume grace period (or
    /// removes it at once when resuming is off). The grace runs from the first detach.
    fn detach(&mut self, player_id: u32) {
        if self.config.limits.resume_grace.is_zero() {
            self.leave(player_id);
            return;
        }
        let Some(member) = self.members.get_mut(&player_id) else { return };
        if member.detached_at.is_some() {
            return;
        }
        member.detached_at = Some(Instant::now());
        member.kick = None;
        // Nothing is written to a detached member, and the socket closes once nobody holds it.
        member.socket = None;
        tracing::info!(room = %self.name, player_id, "connection dropped; waiting for a resume");
    }

    /// A member whose queue is full is not buffered for: its connection is closed with 1013,
    /// and its player waits for a resume like a dropped one's, since a client behind a link
    /// that stalled for a while is the usual reason.
    fn disconnect_too_slow(&mut self, player_id: u32) {
        self.kick(player_id, CloseReason::new(close::TRY_AGAIN_LATER, "connection too slow to keep up"));
        self.detach(player_id);
    }

    /// Players whose grace period ran out leave for good.
    fn expire_detached(&mut self, now: Instant) {
        let grace = self.config.limits.resume_grace;
        let expired: Vec<u32> = self
            .members
            .iter()
            .filter(|(_, m)| m.detached_at.is_some_and(|at| now.duration_since(at) >= grace))
            .map(|(id, _)| *id)
            .collect();
        for id in expired {
            self.leave(id);
        }
    }

    fn play(&mut self, play: Play) {
        match play {
            Play::Input { input, arrived } => {
                if let Some(member) = self.members.get_mut(&input.player) {
                    member.input_waits.arrived(input.seq, arrived);
                    self.inputs.push(input);
                }
            }
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
            Play::SnapshotLost { player } => {
                if let Some(member) = self.members.get_mut(&player) {
                    member.view.lost_one();
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
            Ok(relay) => {
                if let Some(op) = relay {
                    self.relay(player, op);
                }
            }
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
            if let Some(op) = ready.relay {
                self.relay(ready.player, op);
            }
        }
    }

    /// Sends a board op to everyone but its author.
    fn relay(&mut self, author: u32, op: BoardOp) {
        self.broadcast_bytes(Bytes::from(encode(&ServerMsg::BoardOp(op))), Some(author));
    }

    /// Runs the tick due at `now`: applies the inputs that arrived, then sends the snapshot and,
    /// about once a second, each moving member how long its inputs waited.
    fn tick(&mut self, now: Instant) {
        let started = Instant::now();
        let outbox = self.sim.step(&self.inputs);
        self.inputs.clear();
        for member in self.members.values_mut() {
            member.waited = member.input_waits.tick(now).unwrap_or_default();
        }
        for event in outbox.events {
            match event {
                SimEvent::OrbCollected { by, orb } => self.broadcast(&ServerMsg::OrbCollected { by, orb }),
            }
        }
        // A world where nothing changed needs no snapshot after the one that shows it stopped:
        // clients keep drawing the last one (a board room of idle players would otherwise send
        // everyone a snapshot 30 times a second).
        let players: Vec<NetPlayer> = outbox.players.iter().map(NetPlayer::quantized).collect();
        let changed = self.latest.as_ref().is_none_or(|(_, last)| **last != players);
        // Cells and members left behind by the budget need snapshots until they have caught up,
        // and a member whose client lost one needs one it can decode.
        let catching_up = self.cell_views.values().any(CellView::behind)
            || self.members.values().any(|m| m.detached_at.is_none() && m.view.owed());
        let published = changed || self.moving || catching_up;
        if let Some(span) = self.fanout.start(published.then_some(outbox.tick), started) {
            self.metrics.snapshot_fanout_seconds.observe(span.as_micros() as u64);
        }
        if published {
            self.publish(outbox.tick, Arc::new(players));
        }
        // Reports publish did not send with a snapshot.
        for member in self.members.values_mut() {
            send_input_wait(member);
        }
        self.moving = changed;
        self.expire_detached(now);
        self.board.flush();
        self.board.maybe_compact();
        self.metrics.ticks.inc();
        self.metrics.tick_seconds.observe(started.elapsed().as_micros() as u64);
    }

    /// Sends every attached member the snapshot of `tick`: its view, within its budget, as a
    /// delta against the newest snapshot it is sure to hold, the member whose input waited
    /// longest first. Each distinct (set, baseline) pair is encoded once.
    fn publish(&mut self, tick: u32, players: Arc<Vec<NetPlayer>>) {
        let previous = std::mem::take(&mut self.cell_views);
        let frame = Frame::new(tick, Arc::clone(&players), &self.config.interest, self.config.tick_rate, previous);
        self.latest = Some((tick, players));
        let mut encodings = Encodings::default();
        let order = self.handover_order();
        let mut batch = Vec::with_capacity(order.len());
        for id in order {
            let Some(member) = self.members.get_mut(&id) else { continue };
            let delivered = member.delivery.tick();
            if let Some(bytes) = member.view.next(id, delivered, &frame, &mut encodings) {
                // Queued just before the snapshot, so the connection writes both at once.
                let report = input_wait_report(member).map(|report| (member.messages.clone(), report));
                batch.push(handoff::Handoff {
                    snapshots: Arc::clone(&member.snapshots),
                    snapshot: EncodedSnapshot { tick, bytes },
                    report,
                    socket: member.socket.clone(),
                });
            }
        }
        handoff::hand_over(batch, &self.fanout, self.handoff);
        self.metrics.snapshot_encodings.add(encodings.count);
        self.cell_views = frame.into_views();
    }

    /// The attached members, earliest deadline first: the one whose oldest input waited longest
    /// for this tick is the closest to its latency bound (ties by id). A tick's snapshots take
    /// milliseconds to write (7 ms at N = 500 on one worker), and in id order the worst 2 % of
    /// the arena benchmark's latency samples (traced) had theirs written 7.6 ms after the tick
    /// began.
    fn handover_order(&self) -> Vec<u32> {
        let mut order: Vec<(Duration, u32)> =
            self.members.iter().filter(|(_, m)| m.detached_at.is_none()).map(|(&id, m)| (m.waited, id)).collect();
        order.sort_unstable_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        order.into_iter().map(|(_, id)| id).collect()
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
            self.disconnect_too_slow(id);
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
            self.disconnect_too_slow(player);
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

/// Sends the member its input-timing report, if one is ready. Advice, not state: a member whose
/// queue is full does without it.
fn send_input_wait(member: &mut Member) {
    if let Some(report) = input_wait_report(member) {
        let _ = member.messages.try_send(report);
    }
}

/// The member's input-timing report, encoded, if one is ready.
fn input_wait_report(member: &mut Member) -> Option<Bytes> {
    member.input_waits.take_report().map(|report| Bytes::from(encode(&report)))
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
    room.handoff = true;
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
                Some(Control::Leave { player, connection, dropped }) => room.connection_ended(player, connection, dropped),
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
                room.tick(now);
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
    room.board.flush();
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
    use easel_protocol::snapshot;

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
        let link = MemberLink { messages, kick, connection: 1, delivery: Arc::default(), resume: None, socket: None };
        (link, messages_rx, kick_rx)
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
    async fn a_member_whose_queue_is_full_is_disconnected_not_buffered_for_and_may_resume() {
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
        assert!(room.members[&1].detached_at.is_some(), "its player waits for a resume");
        let received = drain(&mut fast_rx);
        assert_eq!(received.len(), 4, "the other member got all four lines and no leave: {received:?}");
        let detached_at = room.members[&1].detached_at;
        room.play(Play::Chat { player: 2, text: "one more".into() });
        assert_eq!(room.members[&1].detached_at, detached_at, "more traffic does not extend its grace");
    }

    #[tokio::test]
    async fn the_member_whose_input_waited_longest_is_handed_its_snapshot_first() {
        let (mut room, _commits) = room_with(Config::for_tests()).await;
        for id in 1..=3 {
            room.join(id, format!("p{id}"), identity(id), (id as f32, 0.0), link(8).0).unwrap();
        }
        let now = Instant::now();
        // Player 1's inputs waited 5 and 30 ms (the oldest counts), player 3's 20 ms; player 2
        // sent none.
        for (player, seq, waited) in [(1, 1, 30), (3, 1, 20), (1, 2, 5)] {
            let input = TickInput { player, seq, dx: 1, dy: 0 };
            room.play(Play::Input { input, arrived: now - Duration::from_millis(waited) });
        }
        room.tick(now);
        assert_eq!(room.handover_order(), [1, 3, 2]);
    }

    fn decode_snapshot(bytes: &Bytes) -> (u32, u32, Vec<u8>) {
        match easel_protocol::decode_server(bytes).unwrap() {
            ServerMsg::Snapshot { tick, baseline, entities } => (tick, baseline, entities),
            other => panic!("not a snapshot: {other:?}"),
        }
    }

    #[tokio::test]
    async fn members_on_the_same_baseline_share_one_encoded_delta() {
        let (mut room, _commits) = room_with(Config::for_tests()).await;
        let (a, _a_rx, _a_kick) = link(8);
        let (b, _b_rx, _b_kick) = link(8);
        let (a_delivered, b_delivered) = (Arc::clone(&a.delivery), Arc::clone(&b.delivery));
        let mut a_snapshots = room.join(1, "a".into(), identity(1), (0.0, 0.0), a).unwrap().snapshots;
        let mut b_snapshots = room.join(2, "b".into(), identity(2), (1.0, 1.0), b).unwrap().snapshots;
        room.tick(Instant::now());
        let (sa, sb) = (a_snapshots.borrow_and_update().bytes.clone(), b_snapshots.borrow_and_update().bytes.clone());
        assert_eq!(sa.as_ptr(), sb.as_ptr(), "no acknowledgement yet: one full snapshot for both");
        let (tick, baseline, entities) = decode_snapshot(&sa);
        assert_eq!((tick, baseline), (1, 0));
        let first = snapshot::decode(&entities, None, 0).unwrap();
        assert_eq!(first.len(), 2);
        a_delivered.acknowledged(1);
        b_delivered.acknowledged(1);
        room.play(Play::Input { input: TickInput { player: 1, seq: 1, dx: 1, dy: 0 }, arrived: Instant::now() });
        room.tick(Instant::now());
        let (sa, sb) = (a_snapshots.borrow_and_update().bytes.clone(), b_snapshots.borrow_and_update().bytes.clone());
        assert_eq!(sa.as_ptr(), sb.as_ptr(), "both acknowledged tick 1: one delta for both");
        let (tick, baseline, entities) = decode_snapshot(&sa);
        assert_eq!((tick, baseline), (2, 1));
        let second = snapshot::decode(&entities, Some(&first), 1).unwrap();
        assert!(second[0].x > first[0].x, "player 1 moved right");
        assert!(entities.len() < 8, "a delta of one moving player is a few bytes: {}", entities.len());
        a_delivered.acknowledged(2);
        room.play(Play::Input { input: TickInput { player: 1, seq: 2, dx: 1, dy: 0 }, arrived: Instant::now() });
        room.tick(Instant::now());
        let (sa, sb) = (a_snapshots.borrow_and_update().bytes.clone(), b_snapshots.borrow_and_update().bytes.clone());
        assert_ne!(sa.as_ptr(), sb.as_ptr(), "different baselines, different encodings");
        assert_eq!(decode_snapshot(&sa).1, 2);
        assert_eq!(decode_snapshot(&sb).1, 1);
    }

    #[tokio::test]
    async fn each_member_is_sent_the_players_in_its_view_and_full_visibility_sends_all() {
        let mut config = Config::for_tests();
        config.interest = crate::config::Interest { view_distance: 500.0, snapshot_budget: 0 };
        let (mut room, _commits) = room_with(config).await;
        let mut near_a = room.join(1, "a".into(), identity(1), (100.0, 100.0), link(8).0).unwrap().snapshots;
        room.join(2, "b".into(), identity(2), (400.0, 300.0), link(8).0).unwrap();
        room.join(3, "c".into(), identity(3), (1900.0, 1900.0), link(8).0).unwrap();
        room.tick(Instant::now());
        let (_, _, entities) = decode_snapshot(&near_a.borrow_and_update().bytes);
        let seen: Vec<u32> = snapshot::decode(&entities, None, 0).unwrap().iter().map(|p| p.id).collect();
        assert_eq!(seen, [1, 2], "c is 1,800 away");

        let (mut room, _commits) = room_with(Config::for_tests()).await;
        room.config = Arc::new(Config { interest: crate::config::Interest::FULL_VISIBILITY, ..Config::for_tests() });
        let mut a = room.join(1, "a".into(), identity(1), (100.0, 100.0), link(8).0).unwrap().snapshots;
        room.join(3, "c".into(), identity(3), (1900.0, 1900.0), link(8).0).unwrap();
        room.tick(Instant::now());
        let (_, _, entities) = decode_snapshot(&a.borrow_and_update().bytes);
        assert_eq!(snapshot::decode(&entities, None, 0).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_dropped_player_is_kept_for_a_resume_and_a_closed_one_leaves() {
        let (mut room, _commits) = room_with(Config::for_tests()).await;
        let (other, mut other_rx, _other_kick) = link(64);
        room.join(9, "other".into(), identity(9), (0.0, 0.0), other).unwrap();
        let (a, _a_rx, _a_kick) = link(64);
        let joined = room.join(1, "a".into(), identity(1), (100.0, 100.0), a).unwrap();
        let token = match easel_protocol::decode_server(&joined.welcome).unwrap() {
            ServerMsg::Welcome { resume, .. } => resume,
            other => panic!("{other:?}"),
        };
        drain(&mut other_rx);
        room.connection_ended(1, 1, true);
        assert!(room.members.contains_key(&1), "kept through the grace period");
        let (mut again, _again_rx, _again_kick) = link(64);
        again.resume = Some(token);
        again.connection = 2;
        let resumed = room.join(5, "a".into(), identity(1), (0.0, 0.0), again).unwrap();
        assert!(resumed.resumed);
        assert_eq!(resumed.player_id, 1, "the same player back");
        assert!(drain(&mut other_rx).is_empty(), "the others saw no leave and no join");
        room.connection_ended(1, 1, false);
        assert!(room.members.contains_key(&1), "the old connection's end is ignored");
        room.connection_ended(1, 2, false);
        assert!(!room.members.contains_key(&1), "closing leaves at once");
        assert_eq!(drain(&mut other_rx), vec![ServerMsg::PlayerLeft { id: 1 }]);
    }

    #[tokio::test]
    async fn a_player_not_resumed_within_the_grace_period_leaves() {
        let mut config = Config::for_tests();
        config.limits.resume_grace = Duration::from_millis(1);
        let (mut room, _commits) = room_with(config).await;
        room.join(1, "a".into(), identity(1), (0.0, 0.0), link(8).0).unwrap();
        room.connection_ended(1, 1, true);
        std::thread::sleep(Duration::from_millis(5));
        room.tick(Instant::now());
        assert!(room.members.is_empty());
    }

    #[tokio::test]
    async fn a_member_that_lost_a_snapshot_gets_a_decodable_one_though_nobody_moves() {
        let (mut room, _commits) = room_with(Config::for_tests()).await;
        let (a, _a_rx, _a_kick) = link(8);
        let delivered = Arc::clone(&a.delivery);
        let mut snapshots = room.join(1, "a".into(), identity(1), (500.0, 500.0), a).unwrap().snapshots;
        room.tick(Instant::now());
        room.tick(Instant::now());
        let written = snapshots.borrow_and_update().tick;
        delivered.written(written);
        room.tick(Instant::now());
        assert!(!snapshots.has_changed().unwrap(), "a still world: nothing new");
        // The client never decoded anything: it reports the loss with "newest 0".
        delivered.lost(0);
        room.play(Play::SnapshotLost { player: 1 });
        room.tick(Instant::now());
        assert!(snapshots.has_changed().unwrap(), "a snapshot for the member that lost one");
        let (_, baseline, entities) = decode_snapshot(&snapshots.borrow_and_update().bytes);
        assert_eq!(baseline, 0, "in full: it holds nothing the server kept");
        assert_eq!(snapshot::decode(&entities, None, 0).unwrap().len(), 1);
        room.tick(Instant::now());
        assert!(!snapshots.has_changed().unwrap(), "then nothing until something moves");
    }

    #[tokio::test]
    async fn an_unchanged_world_publishes_no_new_snapshot() {
        let (mut room, _commits) = room_with(Config::for_tests()).await;
        let (a, _a_rx, _a_kick) = link(8);
        let mut snapshots = room.join(1, "a".into(), identity(1), (500.0, 500.0), a).unwrap().snapshots;
        room.tick(Instant::now());
        assert!(snapshots.has_changed().unwrap(), "the first state is published");
        snapshots.borrow_and_update();
        room.tick(Instant::now());
        assert!(snapshots.has_changed().unwrap(), "one unchanged snapshot shows that movement stopped");
        snapshots.borrow_and_update();
        room.tick(Instant::now());
        assert!(!snapshots.has_changed().unwrap(), "nobody moved: nothing new to send");
        room.play(Play::Input { input: TickInput { player: 1, seq: 1, dx: 1, dy: 0 }, arrived: Instant::now() });
        room.tick(Instant::now());
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

    fn add_by_7(seq: u32) -> BoardOp {
        let stroke = Stroke { id: StrokeId { author: 7, seq }, color: 1, width: 2, points: vec![Point { x: 1, y: 2 }] };
        BoardOp::Add { dot: easel_protocol::board::Dot::new(7, u64::from(seq) + 1), stroke }
    }

    #[tokio::test]
    async fn a_board_op_is_relayed_at_once_and_acked_only_after_it_is_stored() {
        let (mut room, mut commits) = room_with(Config::for_tests()).await;
        let (mut author_rx, mut other_rx) = author_and_other(&mut room);
        room.play(Play::Board { player: 1, client_seq: 1, op: add_by_7(0) });
        assert!(matches!(drain(&mut other_rx).as_slice(), [ServerMsg::BoardOp(BoardOp::Add { .. })]));
        room.tick(Instant::now());
        assert!(drain(&mut author_rx).is_empty(), "no ack before the commit");
        let committed = commits.recv().await.unwrap();
        assert_eq!((committed.first_seq, committed.count), (1, 1), "written with its tick");
        room.committed(committed);
        assert_eq!(drain(&mut author_rx), vec![ServerMsg::BoardAck { client_seq: 1 }]);
        assert!(drain(&mut other_rx).is_empty(), "relayed once");
    }

    #[tokio::test]
    async fn after_a_failed_commit_ops_are_relayed_only_once_stored_and_in_order() {
        let (mut room, mut commits) = room_with(Config::for_tests()).await;
        let (mut author_rx, mut other_rx) = author_and_other(&mut room);
        room.play(Play::Board { player: 1, client_seq: 1, op: add_by_7(0) });
        assert_eq!(drain(&mut other_rx).len(), 1, "storage healthy: relayed at once");
        room.tick(Instant::now());
        // The disk refuses the first commit.
        let first = commits.recv().await.unwrap();
        room.committed(Committed { result: Err("disk full".into()), ..first });
        room.play(Play::Board { player: 1, client_seq: 2, op: add_by_7(1) });
        room.play(Play::Board { player: 1, client_seq: 3, op: add_by_7(2) });
        assert!(drain(&mut other_rx).is_empty(), "while commits fail, nothing new is relayed");
        room.board.retry();
        room.tick(Instant::now());
        // The retried op alone, then the two of the tick together.
        for count in [1, 2] {
            let committed = commits.recv().await.unwrap();
            assert_eq!(committed.count, count);
            room.committed(committed);
        }
        let acks = drain(&mut author_rx);
        let expected: Vec<ServerMsg> = (1..=3).map(|client_seq| ServerMsg::BoardAck { client_seq }).collect();
        assert_eq!(acks, expected, "acked in order once stored");
        let relayed: Vec<u32> = drain(&mut other_rx)
            .into_iter()
            .filter_map(|m| match m {
                ServerMsg::BoardOp(BoardOp::Add { stroke, .. }) => Some(stroke.id.seq),
                _ => None,
            })
            .collect();
        assert_eq!(relayed, vec![1, 2], "the held ops follow, in order");
        room.play(Play::Board { player: 1, client_seq: 4, op: add_by_7(3) });
        assert_eq!(drain(&mut other_rx).len(), 1, "backlog stored: relays are immediate again");
    }

    #[tokio::test]
    async fn the_ops_of_a_tick_are_written_in_one_commit() {
        let (mut room, mut commits) = room_with(Config::for_tests()).await;
        let (mut author_rx, _other_rx) = author_and_other(&mut room);
        for seq in 0..5 {
            room.play(Play::Board { player: 1, client_seq: u64::from(seq) + 1, op: add_by_7(seq) });
        }
        room.tick(Instant::now());
        let committed = commits.recv().await.unwrap();
        assert_eq!((committed.first_seq, committed.count), (1, 5));
        room.committed(committed);
        let expected: Vec<ServerMsg> = (1..=5).map(|client_seq| ServerMsg::BoardAck { client_seq }).collect();
        assert_eq!(drain(&mut author_rx), expected);
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
