//! The server's rooms by name: created on the first join, removed when their last member leaves.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use easel_protocol::close;
use easel_protocol::game::Rules;
use easel_protocol::rng::Mulberry32;
use tokio::sync::{mpsc, oneshot};

use super::task::run_room;
use super::{Control, Ending, Joined, MemberLink, Play, RoomReport};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::session::CloseReason;
use crate::sim::TickInput;
use crate::store::{Fence, Store};
use easel_protocol::Identity;
use easel_protocol::Presence;
use easel_protocol::board::BoardOp;

/// Inputs and chat waiting for one room's next tick; a room this far behind drops the excess.
const PLAY_QUEUE: usize = 16 * 1024;

pub struct Rooms {
    by_name: Mutex<HashMap<String, RoomHandle>>,
    /// One server-wide stream of spawn points, drawn in join order (the benchmark relies on it).
    spawns: Mutex<Mulberry32>,
    next_player_id: AtomicU32,
    next_room_id: AtomicU64,
    admission: Mutex<Admission>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    store: Store,
    /// In a cluster, a room opens only under a lease (`join`'s `lease`).
    clustered: bool,
    /// Wakes `closed()` when the last room is gone.
    emptied: tokio::sync::Notify,
}

/// A connection's way into the room it joined.
#[derive(Clone)]
pub struct RoomHandle {
    id: u64,
    /// The lease the room was opened under, in a cluster.
    lease: Option<Fence>,
    control: mpsc::UnboundedSender<Control>,
    play: mpsc::Sender<Play>,
    /// The runtime (shard) the room's task runs on: its members' sockets belong there too.
    runtime: tokio::runtime::Handle,
}

/// Whether the rooms take new players.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Open,
    /// A stop was asked for: members play on, nobody new joins (`/readyz` says not ready).
    Draining,
    /// Every room is closing.
    Closed,
}

/// Why a join did not happen.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the server is restarting: join again in a moment")]
    Draining,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the room closed while joining")]
    RoomClosed,
    /// In a cluster, the room is not open here and no lease was given to open it.
    #[error("the room is not placed on this server")]
    NotPlaced,
}

impl From<JoinError> for CloseReason {
    fn from(e: JoinError) -> Self {
        let code = match e {
            JoinError::Draining => close::SERVICE_RESTART,
            JoinError::ShuttingDown | JoinError::RoomClosed => close::GOING_AWAY,
            JoinError::NotPlaced => close::TRY_AGAIN_LATER,
        };
        CloseReason::new(code, e.to_string())
    }
}

impl Rooms {
    pub fn new(config: Arc<Config>, metrics: Arc<Metrics>, store: Store) -> Arc<Self> {
        Arc::new(Self {
            by_name: Mutex::new(HashMap::new()),
            spawns: Mutex::new(Mulberry32::new(7)),
            next_player_id: AtomicU32::new(1),
            next_room_id: AtomicU64::new(1),
            admission: Mutex::new(Admission::Open),
            metrics,
            store,
            clustered: config.cluster.is_some(),
            config,
            emptied: tokio::sync::Notify::new(),
        })
    }

    /// Asks room `room` to admit `name`; the room opens if needed (in a cluster only with the
    /// `lease` placement gave). The answer comes on the returned channel once the room task has
    /// processed the join.
    pub fn join(
        self: &Arc<Self>,
        room: &str,
        name: String,
        identity: Identity,
        link: MemberLink,
        lease: Option<Fence>,
    ) -> Result<(RoomHandle, oneshot::Receiver<Result<Joined, CloseReason>>), JoinError> {
        match self.admission() {
            Admission::Open => {}
            Admission::Draining => return Err(JoinError::Draining),
            Admission::Closed => return Err(JoinError::ShuttingDown),
        }
        let (reply, answer) = oneshot::channel();
        let mut by_name = self.lock();
        let handle = match by_name.get(room) {
            Some(handle) => handle.clone(),
            None if self.clustered && lease.is_none() => return Err(JoinError::NotPlaced),
            None => {
                let handle = self.open(room, lease);
                by_name.insert(room.to_owned(), handle.clone());
                handle
            }
        };
        // Sent under the lock, so the room cannot decide it is idle and close between our
        // lookup and this send (see `close_if_idle`).
        handle.control.send(Control::Join { name, identity, link, reply }).map_err(|_| JoinError::RoomClosed)?;
        Ok((handle, answer))
    }

    pub fn room_count(&self) -> usize {
        self.lock().len()
    }

    /// Whether room `room` is open here.
    pub fn is_open(&self, room: &str) -> bool {
        self.lock().contains_key(room)
    }

    /// The runtime room `room` runs on, if it is open here.
    pub fn runtime_of(&self, room: &str) -> Option<tokio::runtime::Handle> {
        self.lock().get(room).map(|handle| handle.runtime.clone())
    }

    /// The rooms open here under a lease, with it.
    pub fn leases(&self) -> Vec<(String, Fence)> {
        self.lock().iter().filter_map(|(name, handle)| handle.lease.map(|lease| (name.clone(), lease))).collect()
    }

    /// Players in every room.
    pub fn player_count(&self) -> usize {
        self.metrics.players.value().max(0) as usize
    }

    pub fn is_draining(&self) -> bool {
        self.admission() != Admission::Open
    }

    /// Room `room`'s lease `lease` is gone: if the room open under that name still holds it, it
    /// closes, its players told `reason` with 1012 (they come back through any node).
    pub fn lost(&self, room: &str, lease: Fence, reason: &str) {
        self.command_if_held(room, lease, Control::Moved { reason: CloseReason::new(close::SERVICE_RESTART, reason) });
    }

    /// Room `room` (under `lease`) is handed to the node at `url`: every player is redirected
    /// there with a seat of its own from `issue`, and the room closes here.
    pub fn hand_off(&self, room: &str, lease: Fence, url: String, issue: Box<dyn Fn() -> Vec<u8> + Send>) {
        self.command_if_held(room, lease, Control::HandOff { url, issue });
    }

    /// Sends room `room` `command` if the room open under that name holds `lease` (a newer
    /// room of the same name is left alone).
    fn command_if_held(&self, room: &str, lease: Fence, command: Control) {
        if let Some(handle) = self.lock().get(room).filter(|handle| handle.lease == Some(lease)) {
            let _ = handle.control.send(command);
        }
    }

    /// Takes no new players from now on, and tells everyone playing `notice`; rooms play on
    /// until their members leave or `shutdown`.
    pub fn drain(&self, notice: &str) {
        self.set_admission(Admission::Draining);
        for handle in self.lock().values() {
            let _ = handle.control.send(Control::Notice(notice.to_owned()));
        }
    }

    /// Tells everyone playing `text`, from the server (the host's broadcast).
    pub fn broadcast(&self, text: &str) {
        for handle in self.lock().values() {
            let _ = handle.control.send(Control::Notice(text.to_owned()));
        }
    }

    /// What every room holds, by name (rooms that do not answer within a second are left out).
    pub async fn reports(&self) -> Vec<RoomReport> {
        let asked: Vec<oneshot::Receiver<RoomReport>> = self
            .lock()
            .values()
            .filter_map(|handle| {
                let (reply, answer) = oneshot::channel();
                handle.control.send(Control::Report(reply)).ok().map(|()| answer)
            })
            .collect();
        let mut reports = Vec::new();
        for answer in asked {
            if let Ok(Ok(report)) = tokio::time::timeout(std::time::Duration::from_secs(1), answer).await {
                reports.push(report);
            }
        }
        reports.sort_by(|a, b| a.name.cmp(&b.name));
        reports
    }

    /// Sends room `room` a command of the host's; false when there is no such room.
    pub(crate) fn command(&self, room: &str, command: Control) -> bool {
        self.lock().get(room).is_some_and(|handle| handle.control.send(command).is_ok())
    }

    /// Tells every room to disconnect its members with "going away" and close.
    pub fn shutdown(&self) {
        self.set_admission(Admission::Closed);
        for handle in self.lock().values() {
            let _ = handle.control.send(Control::Shutdown);
        }
    }

    pub fn admission(&self) -> Admission {
        *self.admission.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn set_admission(&self, admission: Admission) {
        *self.admission.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = admission;
    }

    pub(crate) fn config(&self) -> &Arc<Config> {
        &self.config
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Removes a room that is closing for good (shutdown or a board it cannot read).
    pub(crate) fn remove(&self, name: &str, room_id: u64) {
        self.forget(&mut self.lock(), name, room_id);
    }

    /// Completes once every room has closed (bounded: rooms close within seconds of shutdown).
    pub async fn closed(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let notified = self.emptied.notified();
            if self.lock().is_empty() || tokio::time::Instant::now() >= deadline {
                return;
            }
            let _ = tokio::time::timeout_at(deadline, notified).await;
        }
    }

    /// A new player id and its spawn point.
    pub(crate) fn next_player(&self, rules: &Rules) -> (u32, (f32, f32)) {
        let id = self.next_player_id.fetch_add(1, Ordering::Relaxed);
        let mut spawns = self.spawns.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        (id, rules.random_point(&mut spawns))
    }

    /// Removes an empty room unless a join is already queued for it. Returns whether it closed.
    pub(crate) fn close_if_idle(&self, name: &str, room_id: u64, control: &mpsc::UnboundedReceiver<Control>) -> bool {
        let mut by_name = self.lock();
        if !control.is_empty() {
            return false;
        }
        self.forget(&mut by_name, name, room_id);
        true
    }

    /// Drops room `room_id` from the map (unless a newer room of the same name took its place),
    /// and wakes `closed()` when it was the last.
    fn forget(&self, by_name: &mut HashMap<String, RoomHandle>, name: &str, room_id: u64) {
        if by_name.get(name).is_some_and(|h| h.id == room_id) {
            by_name.remove(name);
            self.metrics.rooms.dec();
        }
        if by_name.is_empty() {
            self.emptied.notify_waiters();
        }
    }

    fn open(self: &Arc<Self>, name: &str, lease: Option<Fence>) -> RoomHandle {
        let id = self.next_room_id.fetch_add(1, Ordering::Relaxed);
        let (control, control_rx) = mpsc::unbounded_channel();
        let (play, play_rx) = mpsc::channel(PLAY_QUEUE);
        self.metrics.rooms.inc();
        // On the shard of the connection that opens it: the next to come follow it there.
        tokio::spawn(run_room(name.to_owned(), id, lease, Arc::clone(self), control_rx, play_rx));
        RoomHandle { id, lease, control, play, runtime: tokio::runtime::Handle::current() }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, RoomHandle>> {
        // A panic elsewhere while holding the lock leaves the map itself intact.
        self.by_name.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RoomHandle {
    /// Queues an input, which arrived at `arrived`, for the next tick; dropped if the room is
    /// this far behind.
    pub fn input(&self, input: TickInput, arrived: Instant) {
        let _ = self.play.try_send(Play::Input { input, arrived });
    }

    pub fn chat(&self, player: u32, text: String) {
        let _ = self.play.try_send(Play::Chat { player, text });
    }

    /// Queues a board op, waiting if the room is this far behind (board ops are never dropped:
    /// the wait slows only the sender).
    pub async fn board(&self, player: u32, client_seq: u64, op: BoardOp) {
        let _ = self.play.send(Play::Board { player, client_seq, op }).await;
    }

    /// The member's client lost a snapshot; never dropped, since in a still world nothing else
    /// would send it a decodable one.
    pub async fn snapshot_lost(&self, player: u32) {
        let _ = self.play.send(Play::SnapshotLost { player }).await;
    }

    pub fn board_sync(&self, player: u32) {
        let _ = self.play.try_send(Play::BoardSync { player });
    }

    /// Presence is ephemeral: dropped if the room is behind.
    pub fn presence(&self, player: u32, presence: Presence) {
        let _ = self.play.try_send(Play::Presence { player, presence });
    }

    /// The member's connection `connection` ended, `ending` says how.
    pub fn leave(&self, player: u32, connection: u64, ending: Ending) {
        let _ = self.control.send(Control::Leave { player, connection, ending });
    }
}
