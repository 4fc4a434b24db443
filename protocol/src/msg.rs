//! The wire messages: one WebSocket binary message carries exactly one encoded `ClientMsg` or
//! `ServerMsg`.

use serde::{Deserialize, Serialize};

use crate::board::{BoardOp, Point};
use crate::game::Rules;

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// The first message on every connection; anything else first is a protocol error.
    /// `identity` is the whiteboard author identity this tab was given before, if any.
    /// `resume` is the token of a `Welcome` from a connection that dropped: within the grace
    /// period the client gets the same player back. `seat` is the one a `Redirect` handed out,
    /// presented to the server it named.
    Hello {
        version: u16,
        name: String,
        room: String,
        identity: Option<Identity>,
        resume: Option<[u8; 16]>,
        seat: Option<Vec<u8>>,
    },
    /// One tick of movement per input: `dirs` are the held directions of inputs `seq - len + 1`
    /// ..= `seq`, newest last; the older ones repeat what earlier messages said, so a lost
    /// message costs nothing (at most `MAX_INPUTS_PER_MESSAGE`). Only signs count (the rules
    /// normalize). `ack` is the newest snapshot tick this client decoded (0: none).
    Input { seq: u32, ack: u32, dirs: Vec<(i8, i8)> },
    /// A chat line for everyone in the room.
    Chat { text: String },
    /// Echoed back at once as `Pong`, so the client can measure its round trip.
    Ping { nonce: u32 },
    /// A whiteboard edit; `client_seq` increases by one per op of this author and comes back in
    /// `BoardAck` once the op is stored.
    Board { client_seq: u64, op: BoardOp },
    /// Where this player's cursor is and the stroke being drawn: ephemeral, never stored.
    Presence(Presence),
    /// Send the whole board again (after a refused op, to get back in step).
    BoardSync,
    /// The newest snapshot tick this client decoded, when no input carries it.
    Ack { tick: u32 },
    /// A snapshot arrived whose baseline this client does not hold: its link loses snapshots
    /// (the page's simulated bad network; a lossy transport). From now on the server encodes
    /// against acknowledged ticks only. A client that knows its link loses snapshots sends it
    /// right after the welcome, before any loss. `newest` is the newest tick this client decoded.
    SnapshotLost { newest: u32 },
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// The answer to `Hello`: who you are and everything needed to draw the room right away.
    Welcome {
        player_id: u32,
        tick_rate: u16,
        rules: Rules,
        /// Half the side of the square around the player inside which other players are sent
        /// (interest management); 0 when every player is sent. The client never shows more.
        view_distance: f32,
        players: Vec<PlayerInfo>,
        orbs: Vec<OrbState>,
        /// This connection's whiteboard author identity (the one it sent, or a new one).
        identity: Identity,
        /// How many `BoardChunk`s follow with the board's current state.
        board_chunks: u32,
        /// Present in a later `Hello` after a dropped connection, it gives this player back.
        resume: [u8; 16],
    },
    /// The players after simulation tick `tick`, as `snapshot::encode` packed them against the
    /// snapshot of tick `baseline`, one this client holds (0: in full): over WebSocket the newest
    /// one written before it, after a `SnapshotLost` the newest one acknowledged.
    Snapshot {
        tick: u32,
        baseline: u32,
        #[serde(with = "crate::codec::byte_string")]
        entities: Vec<u8>,
    },
    PlayerJoined(PlayerInfo),
    PlayerLeft {
        id: u32,
    },
    /// Player `by` collected an orb; it reappears at the given place.
    OrbCollected {
        by: u32,
        orb: OrbState,
    },
    Chat {
        from: u32,
        name: String,
        text: String,
    },
    Pong {
        nonce: u32,
    },
    /// A request was refused but the connection stays open (e.g. chat sent too fast).
    Rejected {
        reason: String,
    },
    /// Part `index` of `total` of the encoded board (`board::Board::decode` of the concatenation).
    BoardChunk {
        index: u32,
        total: u32,
        #[serde(with = "crate::codec::byte_string")]
        bytes: Vec<u8>,
    },
    /// Another author's edit, relayed after it was stored.
    BoardOp(BoardOp),
    /// Every op of this author up to `client_seq` is stored.
    BoardAck {
        client_seq: u64,
    },
    /// The op was refused and not applied; the author should resync (`BoardSync`).
    BoardRejected {
        client_seq: u64,
        reason: String,
    },
    /// Another player's cursor and stroke in progress.
    Presence {
        player: u32,
        presence: Presence,
    },
    /// How long this client's inputs waited at the server for the tick that applied them, over
    /// about a second of ticks starting with input `from_seq`: the third shortest wait (the few
    /// inputs sent off schedule do not move it), in microseconds. The client moves its input
    /// schedule so inputs arrive just before the tick rather than anywhere in it.
    InputWait {
        from_seq: u32,
        wait_us: u32,
    },
    /// A word from the server to everyone on it, not a player's chat line: its restart is
    /// coming (drain), or a message from its host.
    Notice {
        text: String,
    },
    /// The answer to `Hello` from a server of a cluster that does not hold the room: connect
    /// to `url` (the owner's `http(s)://host:port`, the WebSocket at `/ws` below it) and send
    /// the same `Hello` with `seat`, the cluster's signed word that the room is placed there.
    /// The server closes the connection after it.
    Redirect {
        url: String,
        #[serde(with = "crate::codec::byte_string")]
        seat: Vec<u8>,
    },
    /// Other authors' edits, in the order they were applied: the room gathers the relays due to
    /// a member in one window into one message (`codec::board_ops`), as Yjs merges updates, so
    /// a burst (a reconnect's offline edits) is one message to take, not one per op.
    BoardOps(Vec<BoardOp>),
}

/// A whiteboard author: the server hands one out, the tab keeps it (with its secret token) so
/// its offline edits keep their author across reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub author: u32,
    pub token: [u8; 16],
}

/// Ephemeral whiteboard presence of one player.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Presence {
    /// `None` when the pointer is off the board (or the player is in the arena).
    pub cursor: Option<Point>,
    /// The stroke being drawn, if any: its newest points only (see `MAX_PREVIEW_POINTS`).
    pub drawing: Option<Preview>,
}

/// A stroke in progress, as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    pub color: u32,
    pub width: u8,
    #[serde(with = "crate::board::delta_points")]
    pub points: Vec<Point>,
}

/// Inputs one `Input` message may carry: the newest and three repeats.
pub const MAX_INPUTS_PER_MESSAGE: usize = 4;

/// Newest points of a stroke in progress that a presence update carries.
pub const MAX_PREVIEW_POINTS: usize = 256;

/// What does not change while a player is in the room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayerInfo {
    pub id: u32,
    pub name: String,
    /// 0xRRGGBB.
    pub color: u32,
}

/// What changes every tick.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PlayerState {
    pub id: u32,
    pub x: f32,
    pub y: f32,
    pub score: u32,
    /// The highest input `seq` the server has applied for this player: lets a client (and the
    /// benchmark) tell which of its inputs the state already reflects.
    pub last_input_seq: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct OrbState {
    pub id: u32,
    pub x: f32,
    pub y: f32,
}
