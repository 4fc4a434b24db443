//! Easel's contract between server and client: wire messages, the codec, and the shared game rules.
//!
//! Architecture invariant: this crate does no IO (no sockets, no clock, no tokio) and builds for
//! `wasm32-unknown-unknown`, so the browser client predicts with exactly the server's rules.

pub mod board;
pub mod close;
pub mod codec;
pub mod datagram;
pub mod frame;
pub mod game;
pub mod msg;
pub mod rng;
pub mod snapshot;
pub mod stream;
pub mod text;

pub use codec::{DecodeError, decode_client, decode_server, encode};
pub use msg::{ClientMsg, Identity, OrbState, PlayerInfo, PlayerState, Presence, Preview, ServerMsg};

/// Bumped on every incompatible change to `msg`; checked in the `Hello` → `Welcome` handshake.
pub const PROTOCOL_VERSION: u16 = 9;
