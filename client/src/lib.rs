//! The Easel game client: one pure core and two fronts.
//!
//! - `core`: connection state, inputs, interpolation, chat: no IO, tested natively.
//! - `web` (wasm32 only): canvas rendering, keyboard/touch, the browser WebSocket, the page UI.
//! - `headless` (native only): the same core over a WebSocket or WebTransport, for tests and the
//!   load generator (`load/`).

pub mod core;
#[cfg(not(target_arch = "wasm32"))]
pub mod headless;
#[cfg(target_arch = "wasm32")]
mod web;

pub use core::{Channel, ClientCore, Status, Transmit};
