//! Rooms: each owns one simulation (`Sim`), its members and its chat, and runs on its own fixed
//! tick, independent of every other room. Rooms are created on demand by name and closed when the
//! last member leaves (`registry`).
//!
//! A room never waits on a client: every message to a member is a `try_send` into that member's
//! bounded queue, and snapshots go through a `watch` slot that newer snapshots overwrite. One slow
//! client therefore costs one queue at most and cannot stall the tick.

mod registry;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use easel_protocol::{OrbState, PlayerInfo, ServerMsg, close, encode, game};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::session::CloseReason;
use crate::sim::{Sim, SimEvent, TickInput};
pub use registry::{JoinError, RoomHandle, Rooms};

/// How the room reaches one member's connection.
pub struct MemberLink {
    /// Reliable messages (welcome, joins, leaves, chat, orb events), in order. Bounded: a member
    /// that lets it fill up is disconnected rather than buffered for.
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
    Join { name: String, link: MemberLink, reply: oneshot::Sender<Result<Joined, CloseReason>> },
    Leave { player: u32 },
    Shutdown,
}

/// Gameplay traffic: frequent, bounded; dropped if the room is overloaded.
pub(crate) enum Play {
    Input(TickInput),
    Chat { player: u32, text: String },
}

struct Member {
    info: PlayerInfo,
    messages: mpsc::Sender<Bytes>,
    kick: Option<oneshot::Sender<CloseReason>>,
}

struct Room {
    name: String,
    sim: Sim,
    members: BTreeMap<u32, Member>,
    inputs: Vec<TickInput>,
    snapshots: watch::Sender<Bytes>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
}

impl Room {
    fn new(name: String, config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
        let sim = Sim::new(config.rules, config.tick_seconds());
        let (snapshots, _) = watch::channel(Bytes::new());
        Self { name, sim, members: BTreeMap::new(), inputs: Vec::new(), snapshots, config, metrics }
    }

    fn join(
        &mut self,
        player_id: u32,
        name: String,
        spawn: (f32, f32),
        link: MemberLink,
    ) -> Result<Joined, CloseReason> {
        if self.members.len() >= self.config.limits.room_capacity {
            return Err(CloseReason::new(close::TRY_AGAIN_LATER, format!("room {} is full", self.name)));
        }
        let info = PlayerInfo { id: player_id, name, color: game::player_color(player_id) };
        self.sim.add_player(player_id, spawn);
        self.broadcast(&ServerMsg::PlayerJoined(info.clone()));
        self.members.insert(player_id, Member { info, messages: link.messages, kick: Some(link.kick) });
        self.metrics.players.inc();
        let welcome = ServerMsg::Welcome {
            player_id,
            tick_rate: self.config.tick_rate,
            rules: self.sim.rules(),
            players: self.members.values().map(|m| m.info.clone()).collect(),
            orbs: self.sim.orbs(),
        };
        tracing::info!(room = %self.name, player_id, name = %self.members[&player_id].info.name, "player joined");
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
        // Encoded once for every member: all of them see the whole room.
        let snapshot = ServerMsg::Snapshot { tick: outbox.tick, players: outbox.players };
        self.snapshots.send_replace(Bytes::from(encode(&snapshot)));
        self.metrics.ticks.inc();
        self.metrics.tick_seconds.observe(started.elapsed().as_micros() as u64);
    }

    /// Sends a reliable message to every member; a member whose queue is full is too slow to keep
    /// and is disconnected.
    fn broadcast(&mut self, msg: &ServerMsg) {
        let bytes = Bytes::from(encode(msg));
        let mut too_slow = Vec::new();
        for (id, member) in &mut self.members {
            if let Err(mpsc::error::TrySendError::Full(_)) = member.messages.try_send(bytes.clone()) {
                too_slow.push(*id);
            }
        }
        for id in too_slow {
            self.kick(id, CloseReason::new(close::TRY_AGAIN_LATER, "connection too slow to keep up"));
            self.leave(id);
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
    let mut room = Room::new(name.clone(), config.clone(), rooms.metrics().clone());
    tracing::debug!(room = %name, orbs = room.orbs().len(), "room opened");
    let mut ticker = tokio::time::interval(Duration::from_secs_f32(config.tick_seconds()));
    // After a stall, skip the missed ticks rather than burst through them: a burst would send
    // clients several snapshots at once, which looks worse than one late one.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut last_tick = Instant::now();
    loop {
        tokio::select! {
            biased;
            command = control.recv() => match command {
                Some(Control::Join { name: player_name, link, reply }) => {
                    let (player_id, spawn) = rooms.next_player(&config.rules);
                    let _ = reply.send(room.join(player_id, player_name, spawn, link));
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
            Some(message) = play.recv() => room.play(message),
            _ = ticker.tick() => {
                let now = Instant::now();
                let period = Duration::from_secs_f32(config.tick_seconds());
                let late_ticks = (now.duration_since(last_tick).as_secs_f32() / period.as_secs_f32()) as u64;
                if late_ticks >= 2 {
                    room.metrics.ticks_missed.add(late_ticks - 1);
                }
                last_tick = now;
                room.tick();
            }
        }
        if room.members.is_empty() && rooms.close_if_idle(&name, room_id, &control) {
            break;
        }
    }
    for id in room.members.keys().copied().collect::<Vec<_>>() {
        room.leave(id);
    }
    tracing::debug!(room = %name, "room closed");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn room() -> Room {
        Room::new("test".into(), Arc::new(Config::for_tests()), Arc::new(Metrics::default()))
    }

    fn link(capacity: usize) -> (MemberLink, mpsc::Receiver<Bytes>, oneshot::Receiver<CloseReason>) {
        let (messages, messages_rx) = mpsc::channel(capacity);
        let (kick, kick_rx) = oneshot::channel();
        (MemberLink { messages, kick }, messages_rx, kick_rx)
    }

    #[test]
    fn a_member_whose_queue_is_full_is_disconnected_not_buffered_for() {
        let mut room = room();
        let (slow, _never_read, mut slow_kick) = link(2);
        room.join(1, "slow".into(), (0.0, 0.0), slow).unwrap();
        let (fast, mut fast_rx, _fast_kick) = link(64);
        room.join(2, "fast".into(), (5.0, 5.0), fast).unwrap();
        for i in 0..4 {
            room.play(Play::Chat { player: 2, text: format!("line {i}") });
        }
        let reason = slow_kick.try_recv().expect("the slow member is told to go");
        assert_eq!(reason.code, close::TRY_AGAIN_LATER);
        assert!(!room.members.contains_key(&1), "and removed from the room");
        let mut received = 0;
        while fast_rx.try_recv().is_ok() {
            received += 1;
        }
        assert_eq!(received, 5, "the other member got all four lines and the leave");
    }

    #[test]
    fn a_tick_publishes_one_snapshot_shared_by_all_members() {
        let mut room = room();
        let (a, _a_rx, _a_kick) = link(8);
        let (b, _b_rx, _b_kick) = link(8);
        let mut a_snapshots = room.join(1, "a".into(), (0.0, 0.0), a).unwrap().snapshots;
        let mut b_snapshots = room.join(2, "b".into(), (1.0, 1.0), b).unwrap().snapshots;
        room.tick();
        let (sa, sb) = (a_snapshots.borrow_and_update().clone(), b_snapshots.borrow_and_update().clone());
        assert_eq!(sa.as_ptr(), sb.as_ptr(), "encoded once, shared by every member");
        let decoded = easel_protocol::decode_server(&sa).unwrap();
        assert!(matches!(decoded, ServerMsg::Snapshot { tick: 1, ref players } if players.len() == 2));
    }

    #[test]
    fn a_full_room_refuses_with_try_again_later() {
        let mut config = Config::for_tests();
        config.limits.room_capacity = 1;
        let mut room = Room::new("tiny".into(), Arc::new(config), Arc::new(Metrics::default()));
        room.join(1, "a".into(), (0.0, 0.0), link(4).0).unwrap();
        let refused = room.join(2, "b".into(), (0.0, 0.0), link(4).0).err().unwrap();
        assert_eq!(refused.code, close::TRY_AGAIN_LATER);
    }
}
