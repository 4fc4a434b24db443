//! The wire messages: one WebSocket binary message carries exactly one encoded `ClientMsg` or
//! `ServerMsg`.

use serde::{Deserialize, Serialize};

use crate::game::Rules;

/// What a client sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// The first message on every connection; anything else first is a protocol error.
    Hello { version: u16, name: String, room: String },
    /// The direction the player holds. Only the sign of `dx`/`dy` matters (the rules normalize),
    /// so no input can move a player faster than an honest one. `seq` increases by one per input.
    Input { seq: u32, dx: i8, dy: i8 },
    /// A chat line for everyone in the room.
    Chat { text: String },
    /// Echoed back at once as `Pong`, so the client can measure its round trip.
    Ping { nonce: u32 },
}

/// What the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// The answer to `Hello`: who you are and everything needed to draw the room right away.
    Welcome {
        player_id: u32,
        tick_rate: u16,
        rules: Rules,
        players: Vec<PlayerInfo>,
        orbs: Vec<OrbState>,
    },
    /// The state of every player after simulation tick `tick`.
    Snapshot {
        tick: u32,
        players: Vec<PlayerState>,
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
}

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
