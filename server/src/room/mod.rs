//! Rooms: each owns one simulation (`Sim`), one whiteboard replica, its members and its chat,
//! and runs on its own fixed tick, independent of every other room. Rooms are created on demand
//! by name and closed when the last member leaves (`registry`); the board stays in the store.
//!
//! A room is a sans-IO state (`state::Room`, handed the time by its caller) driven by a task
//! (`task::run_room`) that owns its channels and timers; this module holds what connections and
//! rooms exchange.
//!
//! A room never waits on a client: reliable messages to a member wait in the room for up to 5 ms
//! to share one write, then are written to the member's socket without blocking when it is
//! idle, else put in the member's bounded queue; a snapshot is written the same way, else put in
//! a per-member `watch` slot that newer snapshots overwrite (`handoff`). One slow client
//! therefore costs one queue at most and cannot stall the tick.
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
//! order they arrived. Nothing is acknowledged before it is on disk; while commits fail,
//! nothing is relayed before it either (see `board`).

mod board;
mod delivery;
pub(crate) mod fanout;
mod handoff;
mod input_wait;
pub mod interest;
pub(crate) mod message_queue;
mod registry;
mod state;
mod task;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use easel_protocol::board::BoardOp;
use easel_protocol::{Identity, Presence};
use tokio::sync::{oneshot, watch};

use crate::session::CloseReason;
use crate::sim::TickInput;
pub use delivery::Delivery;
use fanout::Fanout;
pub use handoff::DirectWrite;
pub use message_queue::{MessageReceiver, MessageSender};
pub use registry::{Admission, JoinError, RoomHandle, Rooms};

/// How the room reaches one member's connection.
pub struct MemberLink {
    /// Reliable messages (welcome, joins, leaves, chat, orb events, board), in order. Bounded: a
    /// member that lets it fill up is disconnected rather than buffered for.
    pub messages: MessageSender,
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
    /// Where the connection counts the room's bytes.
    pub traffic: Arc<Traffic>,
}

/// One member's snapshot of a tick, encoded.
#[derive(Clone, Debug, Default)]
pub struct EncodedSnapshot {
    pub tick: u32,
    pub bytes: Bytes,
}

/// How a member's connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// The client closed it, or broke a rule: the player leaves.
    Closed,
    /// It was cut (no close from the client), or closed for being too slow: the player waits
    /// for a resume through the grace period.
    Dropped,
}

/// Membership changes: rare, never dropped (unbounded, at most one per connection in flight).
pub(crate) enum Control {
    Join {
        name: String,
        identity: Identity,
        link: MemberLink,
        reply: oneshot::Sender<Result<Joined, CloseReason>>,
    },
    Leave {
        player: u32,
        connection: u64,
        ending: Ending,
    },
    /// Tell every member this (`ServerMsg::Notice`).
    Notice(String),
    /// The host's console asks what the room holds.
    Report(oneshot::Sender<RoomReport>),
    /// The host removes a player: its connection closes with `reason`, and the player leaves.
    Kick {
        player: u32,
        reason: CloseReason,
    },
    /// The host closes the room: everyone is told `notice`, then closed with `reason`.
    Close {
        notice: String,
        reason: CloseReason,
    },
    Shutdown,
    /// The room's lease is gone (another node holds the room now): everyone is closed with
    /// `reason`, and the room closes without writing anything more.
    Moved {
        reason: CloseReason,
    },
    /// The room is handed to the node at `url` (this one drains): every member is redirected
    /// there with a seat from `issue`, and the room closes.
    HandOff {
        url: String,
        issue: Box<dyn Fn() -> Vec<u8> + Send>,
    },
}

/// Bytes a room's members sent and were sent (payloads, as `Metrics` counts them), for the
/// host's console: the room's own share of the server's traffic.
#[derive(Debug, Default)]
pub struct Traffic {
    bytes_in: std::sync::atomic::AtomicU64,
    bytes_out: std::sync::atomic::AtomicU64,
}

impl Traffic {
    pub fn received(&self, bytes: u64) {
        self.bytes_in.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn sent(&self, bytes: u64) {
        self.bytes_out.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// (in, out) so far.
    pub fn totals(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.bytes_in.load(Relaxed), self.bytes_out.load(Relaxed))
    }
}

/// What a room holds, for the host's console.
#[derive(Debug, Clone)]
pub struct RoomReport {
    pub name: String,
    /// Players by id and name (a player waiting for a resume included).
    pub players: Vec<(u32, String)>,
    pub board_strokes: usize,
    /// Tick duration over the last ticks, in milliseconds.
    pub tick_p50_ms: f64,
    pub tick_p99_ms: f64,
    /// Ticks skipped since the room opened because it fell behind.
    pub missed_ticks: u64,
    /// Payload bytes from and to its members since it opened.
    pub bytes_in: u64,
    pub bytes_out: u64,
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
