//! The client's logic with no IO, driven sans-IO style: the front feeds it server messages and
//! the time (`handle_*`), and sends what `poll_transmit` returns.
//!
//! Call order: `hello` when the socket opens; `handle_message` per binary message;
//! `poll_transmit` every frame; `handle_close` when the socket closes.

mod backoff;
pub mod base64;
mod interpolation;
mod view;
mod whiteboard;

use easel_protocol::text::{self, TextError};
use easel_protocol::{ClientMsg, DecodeError, PROTOCOL_VERSION, ServerMsg, close, decode_server, encode};

pub use backoff::reconnect_delay_ms;
pub use interpolation::Interpolator;
pub use view::{ChatLine, GameView, PlayerView};
pub use whiteboard::Whiteboard;

/// How often to measure the round trip.
const PING_INTERVAL_MS: f64 = 1000.0;
/// An input may go out this much before its slot, so a front polling at display rate (16.7 ms)
/// hits every 33.3 ms slot instead of missing it by a rounding error and waiting a whole frame.
const INPUT_EARLY_MS: f64 = 2.0;

/// Where the connection stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Socket opening or `Hello` sent, no `Welcome` yet.
    Connecting,
    /// In the room.
    Joined,
    /// Closed; `retry` says whether reconnecting can help (not after a version mismatch or a
    /// refused name).
    Closed { code: u16, reason: String, retry: bool },
}

pub struct ClientCore {
    name: String,
    room: String,
    status: Status,
    view: GameView,
    input: InputState,
    ping: PingState,
    whiteboard: Whiteboard,
}

#[derive(Debug, Default)]
struct InputState {
    /// Direction the player holds now.
    held: (i8, i8),
    /// Direction of the last input sent.
    last_sent: Option<(i8, i8)>,
    /// When the next repeat of a held direction is due: a fixed schedule, so polling jitter
    /// does not lower the input rate.
    next_due_ms: f64,
    seq: u32,
}

#[derive(Debug, Default)]
struct PingState {
    next_at_ms: f64,
    outstanding: Option<(u32, f64)>,
    nonce: u32,
    rtt_ms: Option<f64>,
}

impl ClientCore {
    pub fn new(name: &str, room: &str) -> Self {
        Self {
            name: name.to_owned(),
            room: room.to_owned(),
            status: Status::Connecting,
            view: GameView::default(),
            input: InputState::default(),
            ping: PingState::default(),
            whiteboard: Whiteboard::default(),
        }
    }

    pub fn whiteboard(&self) -> &Whiteboard {
        &self.whiteboard
    }

    pub fn whiteboard_mut(&mut self) -> &mut Whiteboard {
        &mut self.whiteboard
    }

    pub fn status(&self) -> &Status {
        &self.status
    }

    pub fn view(&self) -> &GameView {
        &self.view
    }

    /// The latest measured round trip, in milliseconds.
    pub fn rtt_ms(&self) -> Option<f64> {
        self.ping.rtt_ms
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn room(&self) -> &str {
        &self.room
    }

    /// The first message on a fresh socket. Also resets per-connection state, so one core can
    /// live across reconnects.
    pub fn hello(&mut self) -> Vec<u8> {
        self.status = Status::Connecting;
        self.input = InputState { held: self.input.held, ..InputState::default() };
        self.ping = PingState { rtt_ms: self.ping.rtt_ms, ..PingState::default() };
        self.whiteboard.connecting();
        encode(&ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            name: self.name.clone(),
            room: self.room.clone(),
            identity: self.whiteboard.identity(),
        })
    }

    pub fn handle_message(&mut self, now_ms: f64, bytes: &[u8]) -> Result<(), DecodeError> {
        self.handle(now_ms, decode_server(bytes)?)
    }

    /// Handles an already decoded message (for fronts that look at it first, like the bots).
    pub fn handle(&mut self, now_ms: f64, msg: ServerMsg) -> Result<(), DecodeError> {
        match msg {
            ServerMsg::Welcome { identity, board_chunks, .. } => {
                self.status = Status::Joined;
                self.whiteboard.welcome(identity, board_chunks);
                self.view.welcome(msg);
            }
            ServerMsg::BoardChunk { index, total, bytes } => self.whiteboard.chunk(index, total, bytes)?,
            ServerMsg::BoardOp(op) => self.whiteboard.remote_op(op),
            ServerMsg::BoardAck { client_seq } => self.whiteboard.acked(client_seq),
            ServerMsg::BoardRejected { client_seq, reason } => self.whiteboard.rejected(client_seq, reason),
            ServerMsg::Presence { player, presence } => self.whiteboard.remote_presence(player, presence),
            ServerMsg::PlayerLeft { id } => {
                self.whiteboard.player_left(id);
                self.view.apply(now_ms, msg);
            }
            ServerMsg::Pong { nonce } => {
                if let Some((sent_nonce, sent_at)) = self.ping.outstanding
                    && sent_nonce == nonce
                {
                    self.ping.rtt_ms = Some(now_ms - sent_at);
                    self.ping.outstanding = None;
                }
            }
            other => self.view.apply(now_ms, other),
        }
        Ok(())
    }

    pub fn handle_close(&mut self, code: u16, reason: &str) {
        // A wrong version or a refused name will fail the same way again.
        let retry = !matches!(code, close::PROTOCOL_ERROR | close::POLICY_VIOLATION | close::UNSUPPORTED_DATA);
        let reason = match (&self.status, reason.is_empty()) {
            (_, false) => reason.to_owned(),
            // A failed reconnect says nothing: keep the last real reason ("server shutting down")
            // rather than hide it behind "connection lost".
            (Status::Closed { reason: previous, .. }, true) => previous.clone(),
            (_, true) => "connection lost".to_owned(),
        };
        self.status = Status::Closed { code, reason, retry };
    }

    /// Sets the direction the player holds (from keys or the touch joystick); only signs count.
    pub fn hold_direction(&mut self, dx: i8, dy: i8) {
        self.input.held = (dx.signum(), dy.signum());
    }

    /// Messages due now: an input at the room's tick rate while a direction is held, and at once
    /// when it changes; a ping once a second.
    pub fn poll_transmit(&mut self, now_ms: f64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if self.status != Status::Joined {
            return out;
        }
        let interval = 1000.0 / f64::from(self.view.tick_rate().max(1));
        let held = self.input.held;
        let changed = self.input.last_sent.map_or(held != (0, 0), |last| last != held);
        let repeat = held != (0, 0) && now_ms + INPUT_EARLY_MS >= self.input.next_due_ms;
        if changed || repeat {
            self.input.next_due_ms = if changed || self.input.next_due_ms + interval <= now_ms {
                // A new direction starts a new schedule; so does falling a whole slot behind
                // (no burst of catch-up inputs).
                now_ms + interval
            } else {
                self.input.next_due_ms + interval
            };
            self.input.seq += 1;
            self.input.last_sent = Some(held);
            out.push(encode(&ClientMsg::Input { seq: self.input.seq, dx: held.0, dy: held.1 }));
        }
        if now_ms >= self.ping.next_at_ms {
            self.ping.nonce = self.ping.nonce.wrapping_add(1);
            self.ping.outstanding = Some((self.ping.nonce, now_ms));
            self.ping.next_at_ms = now_ms + PING_INTERVAL_MS;
            out.push(encode(&ClientMsg::Ping { nonce: self.ping.nonce }));
        }
        self.whiteboard.poll_transmit(now_ms, &mut out);
        out
    }

    /// A chat line to send, validated with the server's own rules.
    pub fn chat(&self, text: &str) -> Result<Vec<u8>, TextError> {
        let text = text::clean_chat(text)?;
        Ok(encode(&ClientMsg::Chat { text }))
    }

    /// The newest input sequence number sent.
    pub fn last_input_seq(&self) -> u32 {
        self.input.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use easel_protocol::game::Rules;
    use easel_protocol::{PlayerInfo, PlayerState, decode_client};

    fn welcomed() -> ClientCore {
        let mut core = ClientCore::new("ada", "lobby");
        core.hello();
        let welcome = ServerMsg::Welcome {
            player_id: 1,
            tick_rate: 30,
            rules: Rules::GAME,
            players: vec![PlayerInfo { id: 1, name: "ada".into(), color: 0xff0000 }],
            orbs: vec![],
            identity: easel_protocol::Identity { author: 1, token: [0; 16] },
            board_chunks: 0,
        };
        core.handle_message(0.0, &encode(&welcome)).unwrap();
        core
    }

    fn inputs(messages: &[Vec<u8>]) -> Vec<ClientMsg> {
        messages.iter().map(|m| decode_client(m).unwrap()).filter(|m| matches!(m, ClientMsg::Input { .. })).collect()
    }

    #[test]
    fn hello_carries_the_protocol_version_name_and_room() {
        let mut core = ClientCore::new("ada", "lobby");
        let hello = decode_client(&core.hello()).unwrap();
        let expected =
            ClientMsg::Hello { version: PROTOCOL_VERSION, name: "ada".into(), room: "lobby".into(), identity: None };
        assert_eq!(hello, expected);
    }

    #[test]
    fn inputs_flow_at_the_tick_rate_while_held_and_stop_after_release() {
        let mut core = welcomed();
        core.hold_direction(1, 0);
        let mut sent = Vec::new();
        for frame in 0..60 {
            sent.extend(core.poll_transmit(f64::from(frame) * 1000.0 / 60.0));
        }
        let held = inputs(&sent);
        assert_eq!(held.len(), 30, "one second of holding at 60 Hz polling sends one input per 30 Hz tick");
        core.hold_direction(0, 0);
        let release = inputs(&core.poll_transmit(1000.0));
        assert_eq!(
            release,
            vec![ClientMsg::Input { seq: held.len() as u32 + 1, dx: 0, dy: 0 }],
            "release is sent at once"
        );
        assert!(inputs(&core.poll_transmit(1100.0)).is_empty(), "nothing while idle");
    }

    #[test]
    fn jittery_polling_keeps_the_input_rate() {
        let mut core = welcomed();
        core.hold_direction(0, 1);
        let mut rng = easel_protocol::rng::Mulberry32::new(3);
        let (mut now, mut sent) = (0.0, Vec::new());
        while now < 10_000.0 {
            sent.extend(core.poll_transmit(now));
            now += 4.0 + rng.next_f64() * 12.0; // a timer firing every 4 to 16 ms
        }
        let count = inputs(&sent).len();
        assert!((295..=301).contains(&count), "ten seconds should send ~300 inputs, sent {count}");
    }

    #[test]
    fn the_round_trip_is_measured_from_ping_to_pong() {
        let mut core = welcomed();
        let sent = core.poll_transmit(500.0);
        let nonce = sent.iter().find_map(|m| match decode_client(m).unwrap() {
            ClientMsg::Ping { nonce } => Some(nonce),
            _ => None,
        });
        core.handle_message(620.0, &encode(&ServerMsg::Pong { nonce: nonce.unwrap() })).unwrap();
        assert_eq!(core.rtt_ms(), Some(120.0));
    }

    #[test]
    fn version_mismatch_is_not_retried_but_a_lost_connection_is() {
        let mut core = welcomed();
        core.handle_close(close::PROTOCOL_ERROR, "protocol version mismatch");
        assert!(matches!(core.status(), Status::Closed { retry: false, .. }));
        core.handle_close(close::GOING_AWAY, "");
        assert!(matches!(core.status(), Status::Closed { retry: true, .. }));
    }

    #[test]
    fn failed_reconnects_keep_the_servers_reason() {
        let mut core = welcomed();
        core.handle_close(close::GOING_AWAY, "server shutting down");
        core.handle_close(1006, "");
        assert!(matches!(core.status(), Status::Closed { reason, .. } if reason == "server shutting down"));
    }

    #[test]
    fn snapshots_update_players_and_scores() {
        let mut core = welcomed();
        let snapshot = ServerMsg::Snapshot {
            tick: 5,
            players: vec![PlayerState { id: 1, x: 10.0, y: 20.0, score: 3, last_input_seq: 0 }],
        };
        core.handle_message(100.0, &encode(&snapshot)).unwrap();
        let me = &core.view().players()[&1];
        assert_eq!(me.state.map(|s| (s.x, s.y, s.score)), Some((10.0, 20.0, 3)));
    }

    #[test]
    fn chat_is_validated_locally() {
        let core = welcomed();
        assert!(core.chat("   ").is_err());
        assert!(core.chat("hello").is_ok());
    }
}
