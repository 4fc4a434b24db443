//! One room's state, sans-IO in quinn-proto's style: its simulation, board replica, members and
//! chat, driven by `task::run_room` through `join`, `connection_ended`, `play`, `committed` and
//! `tick`, each handed the current time. It reads no clock, starts no timer and waits on
//! nothing: a member's reliable messages wait in the room until `messages_due` and then go in one
//! write to an idle socket or into that member's bounded queue, and a tick's snapshots go to the
//! `Handover`, so one slow client cannot stall it.
//!
//! Call order: `new` once the board is loaded; `join` / `connection_ended` / `play` /
//! `committed` as they come; `tick` at each tick time; `send_messages` at `messages_due`;
//! `retry_commits` at `commit_retry_at`;
//! `close_everyone` and then `leave_all` when the room shuts down.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use easel_protocol::board::BoardOp;
use easel_protocol::snapshot::NetPlayer;
use easel_protocol::{Identity, PlayerInfo, ServerMsg, close, codec, encode, game};
use tokio::sync::{oneshot, watch};

use super::board::{self, RoomBoard};
use super::fanout::Fanout;
use super::handoff::{self, Handover};
use super::input_wait::InputWaits;
use super::interest::{CellView, CellViews, Encodings, Frame, MemberView};
use super::{Delivery, DirectWrite, EncodedSnapshot, Ending, Joined, MemberLink, MessageSender, Play};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::session::CloseReason;
use crate::sim::{Sim, SimEvent, TickInput};
use crate::store::Committed;

struct Member {
    info: PlayerInfo,
    /// The whiteboard author this connection edits as.
    author: u32,
    messages: MessageSender,
    /// Reliable messages for it not yet handed to its connection: they go together, at the
    /// room's next hand-over of messages (`Room::messages_due`).
    outgoing: Vec<Bytes>,
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

/// How long a reliable message may wait for others to share its write: a message goes at once
/// if none went for this long, else when this long after the last hand-over. See decision 0049.
const MESSAGE_WINDOW: Duration = Duration::from_millis(5);

pub(crate) struct Room {
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
    traffic: Arc<super::Traffic>,
    /// When the members' reliable messages are to be handed over, if any wait.
    messages_due: Option<Instant>,
    /// When they were last handed over.
    messages_sent_at: Option<Instant>,
    /// Where each tick's snapshots go to the connections.
    handover: Handover,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
}

impl Room {
    pub fn new(name: String, board: RoomBoard, handover: Handover, config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
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
            traffic: Arc::default(),
            messages_due: None,
            messages_sent_at: None,
            handover,
            config,
            metrics,
        }
    }

    /// Admits `name` as player `player_id` at `spawn`, or gives back the player `link`'s resume
    /// token names; or says why not (a full room).
    pub fn join(
        &mut self,
        now: Instant,
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
        let resume = crate::secret::token().map_err(|e| {
            tracing::error!(room = %self.name, "refusing a join: {e}");
            CloseReason::new(close::INTERNAL_ERROR, "the server cannot make a resume token")
        })?;
        let info = PlayerInfo { id: player_id, name, color: game::player_color(player_id) };
        self.sim.add_player(player_id, spawn);
        self.broadcast(now, &ServerMsg::PlayerJoined(info.clone()));
        let snapshots = Arc::new(watch::channel(EncodedSnapshot::default()).0);
        let member = Member {
            info,
            author: identity.author,
            messages: link.messages.clone(),
            outgoing: Vec::new(),
            kick: None,
            snapshots,
            socket: None,
            delivery: Arc::clone(&link.delivery),
            waited: Duration::ZERO,
            view: MemberView::default(),
            connection: link.connection,
            resume,
            detached_at: None,
            input_waits: InputWaits::default(),
        };
        tracing::debug!(room = %self.name, player_id, name = %member.info.name, author = identity.author, "player joined");
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
        // What was waiting for the old connection is in the welcome and the board.
        member.outgoing = Vec::new();
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
            tracing::debug!(room = %self.name, player_id, "player resumed");
        }
        Joined {
            player_id,
            welcome: Bytes::from(encode(&welcome)),
            snapshots,
            resumed,
            fanout: Arc::clone(&self.fanout),
            traffic: Arc::clone(&self.traffic),
        }
    }

    fn leave(&mut self, now: Instant, player_id: u32) {
        if self.members.remove(&player_id).is_some() {
            self.sim.remove_player(player_id);
            self.metrics.players.dec();
            self.broadcast(now, &ServerMsg::PlayerLeft { id: player_id });
            tracing::debug!(room = %self.name, player_id, "player left");
        }
    }

    /// Connection `connection` of `player_id` ended. A dropped one keeps the player for the
    /// resume grace period; a closed one leaves at once; a stale connection's end is ignored.
    pub fn connection_ended(&mut self, now: Instant, player_id: u32, connection: u64, ending: Ending) {
        let Some(member) = self.members.get_mut(&player_id) else { return };
        if member.connection != connection {
            return;
        }
        match ending {
            Ending::Dropped => self.detach(now, player_id),
            Ending::Closed => self.leave(now, player_id),
        }
    }

    /// Keeps `player_id` in the world without a connection for the resume grace period (or
    /// removes it at once when resuming is off). The grace runs from the first detach.
    fn detach(&mut self, now: Instant, player_id: u32) {
        if self.config.limits.resume_grace.is_zero() {
            self.leave(now, player_id);
            return;
        }
        let Some(member) = self.members.get_mut(&player_id) else { return };
        if member.detached_at.is_some() {
            return;
        }
        member.detached_at = Some(now);
        member.kick = None;
        member.outgoing = Vec::new();
        // Nothing is written to a detached member, and the socket closes once nobody holds it.
        member.socket = None;
        tracing::debug!(room = %self.name, player_id, "connection dropped; waiting for a resume");
    }

    /// A member whose queue is full is not buffered for: its connection is closed with 1013,
    /// and its player waits for a resume like a dropped one's, since a client behind a link
    /// that stalled for a while is the usual reason.
    fn disconnect_too_slow(&mut self, now: Instant, player_id: u32) {
        self.kick(player_id, CloseReason::new(close::TRY_AGAIN_LATER, "connection too slow to keep up"));
        self.detach(now, player_id);
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
            self.leave(now, id);
        }
    }

    /// Gameplay or board traffic from a member's connection.
    pub fn play(&mut self, now: Instant, play: Play) {
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
                    self.broadcast(now, &msg);
                }
            }
            Play::Board { player, client_seq, op } => self.board_op(now, player, client_seq, op),
            Play::BoardSync { player } => {
                for chunk in self.board.chunks() {
                    self.send_bytes_to(now, player, chunk);
                }
            }
            Play::SnapshotLost { player } => {
                if let Some(member) = self.members.get_mut(&player) {
                    member.view.lost_one();
                }
            }
            Play::Presence { player, presence } => {
                if self.members.contains_key(&player) {
                    self.broadcast_lossy(now, player, &ServerMsg::Presence { player, presence });
                }
            }
        }
    }

    fn board_op(&mut self, now: Instant, player: u32, client_seq: u64, op: BoardOp) {
        let Some(author) = self.members.get(&player).map(|m| m.author) else { return };
        match self.board.submit(player, author, client_seq, op) {
            Ok(relay) => {
                if let Some(op) = relay {
                    self.relay(now, player, op);
                }
            }
            Err(board::Refusal::Invalid(reason)) => {
                self.send_to(now, player, &ServerMsg::BoardRejected { client_seq, reason });
            }
            Err(board::Refusal::StorageBacklog) => self.kick(
                player,
                CloseReason::new(
                    close::TRY_AGAIN_LATER,
                    "the server cannot store edits right now; yours are kept, reconnecting",
                ),
            ),
        }
        self.deliver_committed(now);
    }

    /// The store's answer to one of the room's commits.
    pub fn committed(&mut self, now: Instant, committed: Committed) {
        self.board.committed(now, committed);
        self.deliver_committed(now);
    }

    /// When failed commits are due for another try, if any failed.
    pub fn commit_retry_at(&self) -> Option<Instant> {
        self.board.retry_at()
    }

    /// Hands failed commits to the store again.
    pub fn retry_commits(&mut self) {
        self.board.retry();
    }

    /// Acknowledges and relays every op whose turn has come.
    fn deliver_committed(&mut self, now: Instant) {
        for ready in self.board.take_committed() {
            self.metrics.board_ops.inc();
            self.send_to(now, ready.player, &ServerMsg::BoardAck { client_seq: ready.client_seq });
            if let Some(op) = ready.relay {
                self.relay(now, ready.player, op);
            }
        }
    }

    /// Sends a board op to everyone but its author.
    fn relay(&mut self, now: Instant, author: u32, op: BoardOp) {
        self.broadcast_bytes(now, Bytes::from(encode(&ServerMsg::BoardOp(op))), Some(author));
    }

    /// Runs the tick due at `now`: applies the inputs that arrived, then sends the snapshot and,
    /// about once a second, each moving member how long its inputs waited.
    pub fn tick(&mut self, now: Instant) {
        let outbox = self.sim.step(&self.inputs);
        self.inputs.clear();
        for member in self.members.values_mut() {
            member.waited = member.input_waits.tick(now).unwrap_or_default();
        }
        for event in outbox.events {
            match event {
                SimEvent::OrbCollected { by, orb } => self.broadcast(now, &ServerMsg::OrbCollected { by, orb }),
            }
        }
        // A world where nothing changed needs no snapshot after the one that shows it stopped:
        // clients keep drawing the last one (a board room of idle players would otherwise send
        // everyone a snapshot 30 times a second).
        let players: Vec<NetPlayer> = outbox.players.iter().map(NetPlayer::quantized).collect();
        let changed = self.latest.as_ref().is_none_or(|(_, last)| **last != players);
        let published = changed || self.moving || self.catching_up();
        if let Some(span) = self.fanout.start(published.then_some(outbox.tick), now) {
            self.metrics.snapshot_fanout_seconds.observe(span.as_micros() as u64);
        }
        // The tick's messages (and any still waiting) go before its snapshot.
        self.send_messages(now);
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
    }

    /// Asked right after a tick: whether the room can stop ticking until something arrives,
    /// since another tick would send nothing and change nothing (no inputs wait, the world is at
    /// rest, and every member holds its newest state). Its task then sleeps, wakes it for
    /// anything that arrives (a join or an input changes that answer), and `skip_ticks`
    /// accounts for the ticks it slept through; a detached player's grace still ends at
    /// `wake_at`.
    pub fn at_rest(&mut self) -> bool {
        self.inputs.is_empty() && !self.moving && !self.catching_up() && self.sim.at_rest()
    }

    /// Whether cells or members left behind by the budget need snapshots until they have caught
    /// up, or a member whose client lost one needs one it can decode.
    fn catching_up(&self) -> bool {
        self.cell_views.values().any(CellView::behind)
            || self.members.values().any(|m| m.detached_at.is_none() && m.view.owed())
    }

    /// Observes the snapshot fan-out of the ticks before a rest, which no later tick will
    /// (`Fanout::settle`); due `fanout::SLOTS` ticks after the last.
    pub fn settle_fanout(&self, now: Instant) {
        for span in self.fanout.settle(now) {
            self.metrics.snapshot_fanout_seconds.observe(span.as_micros() as u64);
        }
    }

    /// Advances the room by `ticks` ticks it slept through at rest, as ticking would have.
    pub fn skip_ticks(&mut self, ticks: u32) {
        self.sim.skip(ticks);
    }

    /// The room missed `ticks` ticks (a stall) and the next one runs in their stead: see
    /// `Sim::missed`.
    pub fn missed_ticks(&mut self, ticks: u32) {
        self.sim.missed(ticks);
    }

    /// When a room at rest must tick again by itself: the end of the earliest grace period of a
    /// detached player.
    pub fn wake_at(&self) -> Option<Instant> {
        let grace = self.config.limits.resume_grace;
        self.members.values().filter_map(|m| m.detached_at).min().map(|at| at + grace)
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
        self.handover.hand_over(batch, &self.fanout, &self.traffic);
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
    fn broadcast(&mut self, now: Instant, msg: &ServerMsg) {
        self.broadcast_bytes(now, Bytes::from(encode(msg)), None);
    }

    fn broadcast_bytes(&mut self, now: Instant, bytes: Bytes, except: Option<u32>) {
        let mut too_slow = Vec::new();
        for (id, member) in &mut self.members {
            if Some(*id) != except && !member.queue(bytes.clone()) {
                too_slow.push(*id);
            }
        }
        self.messages_waiting(now);
        for id in too_slow {
            self.disconnect_too_slow(now, id);
        }
    }

    /// Presence is ephemeral: a member whose queue is half full simply misses this update.
    fn broadcast_lossy(&mut self, now: Instant, from: u32, msg: &ServerMsg) {
        let bytes = Bytes::from(encode(msg));
        let half = self.config.limits.outbound_queue / 2;
        for (id, member) in &mut self.members {
            if *id != from && member.room_left() > half {
                member.queue(bytes.clone());
            }
        }
        self.messages_waiting(now);
    }

    fn send_to(&mut self, now: Instant, player: u32, msg: &ServerMsg) {
        self.send_bytes_to(now, player, Bytes::from(encode(msg)));
    }

    fn send_bytes_to(&mut self, now: Instant, player: u32, bytes: Bytes) {
        let Some(member) = self.members.get_mut(&player) else { return };
        let kept = member.queue(bytes);
        self.messages_waiting(now);
        if !kept {
            self.disconnect_too_slow(now, player);
        }
    }

    /// A message waits for the hand-over: it is due at once if none went for a `MESSAGE_WINDOW`,
    /// else when the window since the last ends, with every other message waiting by then.
    fn messages_waiting(&mut self, now: Instant) {
        if self.messages_due.is_none() && self.members.values().any(|m| !m.outgoing.is_empty()) {
            let window_end = self.messages_sent_at.map_or(now, |at| at + MESSAGE_WINDOW);
            self.messages_due = Some(window_end.max(now));
        }
    }

    /// When the reliable messages waiting are to be handed over (`send_messages`), if any wait.
    pub fn messages_due(&self) -> Option<Instant> {
        self.messages_due
    }

    /// Hands every member's waiting reliable messages to its connection: one write each, at
    /// once, to a socket that is idle; else into the connection's queue. A member whose queue
    /// cannot take them is too slow to keep.
    pub fn send_messages(&mut self, now: Instant) {
        let Some(_) = self.messages_due.take() else { return };
        self.messages_sent_at = Some(now);
        let mut too_slow = Vec::new();
        for (id, member) in &mut self.members {
            if !member.hand_over_outgoing(&self.traffic) {
                too_slow.push(*id);
            }
        }
        for id in too_slow {
            self.disconnect_too_slow(now, id);
        }
    }

    /// Tells the member's connection to close with `reason`, after what was waiting for it.
    fn kick(&mut self, player_id: u32, reason: CloseReason) {
        let Some(member) = self.members.get_mut(&player_id) else { return };
        member.hand_over_outgoing(&self.traffic);
        if let Some(kick) = member.kick.take() {
            // The connection may already be gone; then there is nobody to tell.
            let _ = kick.send(reason);
        }
    }

    /// Tells every member's connection to close with `reason` (the server is shutting down).
    /// Tells every member `text`, from the server.
    pub fn notify_everyone(&mut self, now: Instant, text: String) {
        self.broadcast(now, &ServerMsg::Notice { text });
    }

    pub fn close_everyone(&mut self, reason: &CloseReason) {
        self.close_each(|| reason.clone());
    }

    /// Tells every member's connection to close, each with a reason of its own (a redirect's
    /// seat is good for one player).
    pub fn close_each(&mut self, mut reason: impl FnMut() -> CloseReason) {
        let ids: Vec<u32> = self.members.keys().copied().collect();
        for id in ids {
            self.kick(id, reason());
        }
    }

    /// Removes every player (the room is closing).
    pub fn leave_all(&mut self, now: Instant) {
        for id in self.members.keys().copied().collect::<Vec<_>>() {
            self.leave(now, id);
        }
    }

    /// Whether the room may close: nobody in it and nothing waiting for storage.
    pub fn is_idle(&self) -> bool {
        self.members.is_empty() && !self.board.has_uncommitted()
    }

    /// Hands the ops applied since the last tick to the store now (the room is closing).
    pub fn flush_board(&mut self) {
        self.board.flush();
    }

    /// Whether ops wait for storage.
    pub fn has_uncommitted(&self) -> bool {
        self.board.has_uncommitted()
    }

    /// Stores the board as one snapshot if ops were logged since the last (the room is closing).
    pub fn compact_board(&mut self) {
        self.board.compact_now();
    }

    /// The bytes its members sent and were sent so far.
    pub fn traffic(&self) -> (u64, u64) {
        self.traffic.totals()
    }

    /// The players (id, name) in the room.
    pub fn players(&self) -> Vec<(u32, String)> {
        self.members.iter().map(|(id, member)| (*id, member.info.name.clone())).collect()
    }

    /// Closes `player_id`'s connection with `reason` and lets the player go (the host's kick).
    /// Whether it was here.
    pub fn remove(&mut self, now: Instant, player_id: u32, reason: CloseReason) -> bool {
        if !self.members.contains_key(&player_id) {
            return false;
        }
        self.kick(player_id, reason);
        self.leave(now, player_id);
        true
    }

    /// Orbs on the field and strokes on the board, for the log.
    pub fn contents(&mut self) -> (usize, usize) {
        (self.sim.orbs().len(), self.board.len())
    }
}

impl Member {
    /// Queues a reliable message for the room's next hand-over of messages; false when its
    /// connection's queue could not take everything waiting (the member is too slow). Nothing
    /// waits for a detached member: its connection is gone, and a resume starts from the welcome.
    fn queue(&mut self, bytes: Bytes) -> bool {
        if self.detached_at.is_some() {
            return true;
        }
        if self.room_left() == 0 {
            return false;
        }
        self.outgoing.push(bytes);
        true
    }

    /// Messages its connection's queue can still take, counting those waiting here.
    fn room_left(&self) -> usize {
        self.messages.capacity().saturating_sub(self.outgoing.len())
    }

    /// Hands what waits for it to its connection (`handoff::send_messages`); false when its
    /// queue was full.
    fn hand_over_outgoing(&mut self, traffic: &super::Traffic) -> bool {
        if self.outgoing.is_empty() {
            return true;
        }
        // Taken, not cleared: a burst's capacity is not kept for the member's whole stay.
        let outgoing = merge_relays(std::mem::take(&mut self.outgoing));
        handoff::send_messages(&outgoing, &self.messages, self.socket.as_ref(), traffic)
    }
}

/// Merged relays stay well under `MAX_SERVER_MESSAGE_BYTES`, and one message stays short work
/// for the client (a few hundred ops).
const MAX_MERGED_RELAY_BYTES: usize = 64 * 1024;

/// A member's waiting messages with each run of board-op relays made one `BoardOps` message
/// (see `ServerMsg::BoardOps`): its client takes a reconnect's burst of offline edits as a few
/// messages, not one per op. Everything keeps its order; a lone relay stays the bytes every
/// member shares.
fn merge_relays(messages: Vec<Bytes>) -> Vec<Bytes> {
    if !messages.windows(2).any(|pair| pair.iter().all(|message| codec::is_board_op(message))) {
        return messages;
    }
    let mut merged = Vec::with_capacity(messages.len());
    let mut run: Vec<Bytes> = Vec::new();
    let mut run_bytes = 0;
    for message in messages {
        let relay = codec::is_board_op(&message);
        if !run.is_empty() && (!relay || run_bytes + message.len() > MAX_MERGED_RELAY_BYTES) {
            merged.push(one_message(&mut run));
            run_bytes = 0;
        }
        if relay {
            run_bytes += message.len();
            run.push(message);
        } else {
            merged.push(message);
        }
    }
    if !run.is_empty() {
        merged.push(one_message(&mut run));
    }
    merged
}

/// The relays of `run` as one message, leaving it empty.
fn one_message(run: &mut Vec<Bytes>) -> Bytes {
    let message = match run.as_slice() {
        [lone] => lone.clone(),
        relays => Bytes::from(codec::board_ops(relays)),
    };
    run.clear();
    message
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

#[cfg(test)]
mod netsim_tests;
#[cfg(test)]
mod tests;
