//! The client's logic with no IO, driven sans-IO style: the front feeds it server messages and
//! the time (`handle_*`), and sends what `poll_transmit` returns.
//!
//! Call order: `hello` when the socket opens; `handle_message` per binary message;
//! `poll_transmit` every frame; `handle_close` when the socket closes.

mod backoff;
pub mod base64;
pub mod certificate_hash;
mod input_schedule;
mod input_window;
mod interpolation;
pub mod link;
mod prediction;
mod snapshots;
mod stats;
mod view;
mod whiteboard;

use easel_protocol::text::{self, TextError};
use easel_protocol::{ClientMsg, DecodeError, PROTOCOL_VERSION, ServerMsg, close, decode_server, encode};

pub use backoff::reconnect_delay_ms;
pub use input_schedule::InputSchedule;
pub use input_window::InputWindow;
pub use interpolation::Interpolator;
pub use prediction::Predictor;
pub use snapshots::SnapshotReceiver;
pub use stats::DebugInfo;
pub use view::{ChatLine, GameView, PlayerView};
pub use whiteboard::Whiteboard;

/// How often to measure the round trip.
const PING_INTERVAL_MS: f64 = 1000.0;

/// A connection that has answered nothing for this long since a ping is taken for lost. A
/// network can die without closing anything (a NAT that forgot the flow, Wi-Fi without a route),
/// and the socket would not say so for many minutes; five unanswered pings is far beyond any
/// round trip a game can be played at.
pub const SILENCE_LIMIT_MS: f64 = 5000.0;

/// How a message must travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// In order and without loss: the handshake, chat, board ops, pings, loss reports.
    Reliable,
    /// As soon as it can, and it may be lost: inputs (each repeats the ones before it) and
    /// acknowledgements (the next supersedes it). Over WebTransport these are datagrams; over a
    /// WebSocket everything is reliable.
    Unreliable,
}

/// A message to send, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub bytes: Vec<u8>,
    pub channel: Channel,
}

impl Transmit {
    fn reliable(bytes: Vec<u8>) -> Self {
        Self { bytes, channel: Channel::Reliable }
    }

    fn unreliable(bytes: Vec<u8>) -> Self {
        Self { bytes, channel: Channel::Unreliable }
    }
}

impl std::ops::Deref for Transmit {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

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
    snapshots: SnapshotReceiver,
    predictor: Predictor,
    stats: stats::NetStats,
    /// The newest `Welcome`'s resume token: sent in the next `Hello` to get the same player back.
    resume: Option<[u8; 16]>,
    /// Where a `Redirect` sent this client, until the front connects there.
    redirect: Option<Redirect>,
    /// The seat of the redirect being followed, for the next `Hello`.
    seat: Option<Vec<u8>>,
    /// Redirects since the last `Welcome`: a cluster that keeps moving the room is not
    /// followed forever.
    redirects_in_a_row: u32,
    /// `Welcome`s received: each is a (re)join, on this server or another.
    welcomes: u32,
    /// Redirects followed, in all.
    redirects: u32,
}

/// A server of a cluster sent this client to the room's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Redirect {
    /// The owner's `http(s)://host:port`.
    url: String,
    seat: Vec<u8>,
}

/// Redirects followed in a row before the client gives up on this attempt (and retries later
/// from where it started): placement ends after one, a room moving meanwhile can add one more.
pub const MAX_REDIRECTS_IN_A_ROW: u32 = 4;

#[derive(Debug, Default)]
struct InputState {
    /// Direction the player holds now.
    held: (i8, i8),
    /// Direction of the last input sent.
    last_sent: Option<(i8, i8)>,
    /// When repeats of a held direction are due: a fixed grid, so polling jitter does not lower
    /// the input rate, timed by the server's reports to arrive just before its ticks.
    schedule: InputSchedule,
    /// The inputs sent, numbered, the newest repeated in every input message.
    window: InputWindow,
    /// The snapshot tick last acknowledged.
    acked: u32,
}

#[derive(Debug, Default)]
struct PingState {
    next_at_ms: f64,
    outstanding: Option<(u32, f64)>,
    nonce: u32,
    rtt_ms: Option<f64>,
    /// When the oldest ping not followed by any message from the server went out.
    unanswered_since: Option<f64>,
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
            snapshots: SnapshotReceiver::default(),
            predictor: Predictor::default(),
            stats: stats::NetStats::default(),
            resume: None,
            redirect: None,
            seat: None,
            redirects_in_a_row: 0,
            welcomes: 0,
            redirects: 0,
        }
    }

    /// Where to draw every player at `now_ms`: others interpolated between snapshots, this
    /// player where its prediction has it.
    pub fn render_positions(&self, now_ms: f64) -> Vec<(u32, f32, f32)> {
        let mut positions = self.view.render_positions(now_ms);
        if let (Some(me), Some((x, y))) = (self.view.me(), self.predictor.render_position(now_ms)) {
            match positions.iter_mut().find(|(id, ..)| *id == me) {
                Some(entry) => *entry = (me, x, y),
                None => positions.push((me, x, y)),
            }
        }
        positions
    }

    pub fn predictor(&self) -> &Predictor {
        &self.predictor
    }

    /// Network figures for the debug overlay, over about the last second.
    pub fn debug_info(&self, now_ms: f64) -> DebugInfo {
        let info = self.stats.info(now_ms, self.ping.rtt_ms, self.view.interpolator(), self.predictor.corrections);
        DebugInfo { input_wait_ms: self.input.schedule.last_wait_ms(), ..info }
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

    /// How many redirects this client has followed.
    pub fn redirects(&self) -> u32 {
        self.redirects
    }

    /// How many times this client has joined (a `Welcome`), reconnects and redirects included.
    pub fn welcomes(&self) -> u32 {
        self.welcomes
    }

    /// The first message on a fresh socket. Also resets per-connection state, so one core can
    /// live across reconnects.
    pub fn hello(&mut self) -> Vec<u8> {
        self.status = Status::Connecting;
        // The schedule's grid stays: a resumed player is most likely back on the same server.
        let schedule = std::mem::take(&mut self.input.schedule);
        let mut window = std::mem::take(&mut self.input.window);
        window.new_connection();
        self.input = InputState { held: self.input.held, window, schedule, ..InputState::default() };
        self.ping = PingState { rtt_ms: self.ping.rtt_ms, ..PingState::default() };
        self.snapshots.reset();
        self.whiteboard.connecting();
        let hello = encode(&ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            name: self.name.clone(),
            room: self.room.clone(),
            identity: self.whiteboard.identity(),
            resume: self.resume,
            seat: self.seat.take(),
        });
        self.stats.sent(hello.len());
        hello
    }

    pub fn handle_message(&mut self, now_ms: f64, bytes: &[u8]) -> Result<(), DecodeError> {
        self.stats.received(bytes.len());
        self.handle(now_ms, decode_server(bytes)?)
    }

    /// Handles an already decoded message (for fronts that look at it first, like the bots).
    pub fn handle(&mut self, now_ms: f64, msg: ServerMsg) -> Result<(), DecodeError> {
        // Anything from the server shows the connection is alive, not only the pong.
        self.ping.unanswered_since = None;
        match msg {
            ServerMsg::Welcome { identity, board_chunks, resume, rules, tick_rate, .. } => {
                self.status = Status::Joined;
                self.redirects_in_a_row = 0;
                self.welcomes += 1;
                self.resume = Some(resume);
                self.predictor = Predictor::new(rules, tick_rate);
                self.input.schedule.set_interval_ms(1000.0 / f64::from(tick_rate.max(1)));
                self.whiteboard.welcome(identity, board_chunks);
                self.view.welcome(msg);
            }
            ServerMsg::Snapshot { tick, baseline, entities } => {
                if let Some(players) = self.snapshots.receive(tick, baseline, &entities)? {
                    let players: Vec<_> = players.iter().map(|p| p.state()).collect();
                    self.stats.snapshot();
                    if let Some(me) = self.view.me().and_then(|me| players.iter().find(|p| p.id == me)) {
                        self.predictor.snapshot(now_ms, me);
                    }
                    self.view.snapshot(now_ms, tick, &players);
                }
            }
            ServerMsg::BoardChunk { index, total, bytes } => self.whiteboard.chunk(index, total, bytes)?,
            ServerMsg::BoardOp(op) => self.whiteboard.remote_op(op),
            ServerMsg::BoardOps(ops) => ops.into_iter().for_each(|op| self.whiteboard.remote_op(op)),
            ServerMsg::BoardAck { client_seq } => self.whiteboard.acked(client_seq),
            ServerMsg::BoardRejected { client_seq, reason } => self.whiteboard.rejected(client_seq, reason),
            ServerMsg::Presence { player, presence } => self.whiteboard.remote_presence(player, presence),
            ServerMsg::PlayerLeft { id } => {
                self.whiteboard.player_left(id);
                self.view.apply(msg);
            }
            ServerMsg::InputWait { from_seq, wait_us } => {
                self.input.schedule.report(from_seq, f64::from(wait_us) / 1000.0, self.input.window.seq() + 1);
            }
            ServerMsg::Pong { nonce } => {
                if let Some((sent_nonce, sent_at)) = self.ping.outstanding
                    && sent_nonce == nonce
                {
                    self.ping.rtt_ms = Some(now_ms - sent_at);
                    self.ping.outstanding = None;
                }
            }
            ServerMsg::Redirect { url, seat } => {
                self.redirects_in_a_row += 1;
                if self.redirects_in_a_row > MAX_REDIRECTS_IN_A_ROW {
                    self.redirects_in_a_row = 0;
                    self.handle_close(close::TRY_AGAIN_LATER, "the room keeps moving between servers");
                } else {
                    self.redirect = Some(Redirect { url, seat });
                }
            }
            other => self.view.apply(other),
        }
        Ok(())
    }

    /// Where the server sent this client, once: the front connects there next (at once, not
    /// after a back-off), and the `Hello` it sends carries the seat.
    pub fn take_redirect(&mut self) -> Option<String> {
        let redirect = self.redirect.take()?;
        self.redirects += 1;
        self.seat = Some(redirect.seat);
        Some(redirect.url)
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

    /// Whether the server has answered nothing for `SILENCE_LIMIT_MS` since a ping: then the
    /// connection is closed as lost (to be retried, with the resume token) and the front should
    /// drop its socket and reconnect.
    pub fn close_if_silent(&mut self, now_ms: f64) -> bool {
        let silent = self.status == Status::Joined
            && self.ping.unanswered_since.is_some_and(|since| now_ms - since >= SILENCE_LIMIT_MS);
        if silent {
            self.handle_close(
                close::ABNORMAL,
                &format!("no reply from the server for {} s", SILENCE_LIMIT_MS / 1000.0),
            );
        }
        silent
    }

    /// The link to the server may lose snapshots (the page's simulated bad network, a test's
    /// link conditioner): the server is told on every connection, so that it encodes each
    /// snapshot against one this client acknowledged instead of the last one sent.
    pub fn expect_lost_snapshots(&mut self) {
        self.snapshots.expect_losses();
    }

    /// Sets the direction the player holds (from keys or the touch joystick); only signs count.
    pub fn hold_direction(&mut self, dx: i8, dy: i8) {
        self.input.held = (dx.signum(), dy.signum());
    }

    /// Messages due now: while a direction is held, one input per slot of the input schedule
    /// (each is one tick of movement, predicted at once), the first at once when it changes; an
    /// acknowledgement of the newest snapshot when no input carries it; `SnapshotLost` after a
    /// snapshot whose baseline was lost; a ping once a second.
    pub fn poll_transmit(&mut self, now_ms: f64) -> Vec<Transmit> {
        let mut out = Vec::new();
        if self.status != Status::Joined {
            return out;
        }
        let held = self.input.held;
        let changed = self.input.last_sent.is_none_or(|last| last != held);
        let due = self.input.schedule.due(now_ms);
        if held == (0, 0) {
            // Standing still needs no inputs: the server moves nobody without one.
            self.input.last_sent = None;
        } else if changed || due {
            self.input.schedule.sent(now_ms, !changed);
            self.input.last_sent = Some(held);
            self.input.acked = self.snapshots.newest();
            let input = self.input.window.push(held, self.input.acked);
            self.predictor.input(now_ms, self.input.window.seq(), held);
            out.push(Transmit::unreliable(encode(&input)));
        }
        if self.snapshots.take_loss() {
            out.push(Transmit::reliable(encode(&ClientMsg::SnapshotLost { newest: self.snapshots.newest() })));
        }
        if self.snapshots.newest() != self.input.acked {
            self.input.acked = self.snapshots.newest();
            out.push(Transmit::unreliable(encode(&ClientMsg::Ack { tick: self.input.acked })));
        }
        if now_ms >= self.ping.next_at_ms {
            self.ping.nonce = self.ping.nonce.wrapping_add(1);
            self.ping.outstanding = Some((self.ping.nonce, now_ms));
            self.ping.unanswered_since.get_or_insert(now_ms);
            self.ping.next_at_ms = now_ms + PING_INTERVAL_MS;
            out.push(Transmit::reliable(encode(&ClientMsg::Ping { nonce: self.ping.nonce })));
        }
        let mut board = Vec::new();
        self.whiteboard.poll_transmit(now_ms, &mut board);
        out.extend(board.into_iter().map(Transmit::reliable));
        for message in &out {
            self.stats.sent(message.len());
        }
        self.stats.corrections(self.predictor.corrections);
        self.stats.sample(now_ms);
        out
    }

    /// A chat line to send, validated with the server's own rules.
    pub fn chat(&self, text: &str) -> Result<Vec<u8>, TextError> {
        let text = text::clean_chat(text)?;
        Ok(encode(&ClientMsg::Chat { text }))
    }

    /// The newest input sequence number sent.
    pub fn last_input_seq(&self) -> u32 {
        self.input.window.seq()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use easel_protocol::game::Rules;
    use easel_protocol::snapshot::NetPlayer;
    use easel_protocol::{PlayerInfo, PlayerState, decode_client};

    fn welcomed() -> ClientCore {
        let mut core = ClientCore::new("ada", "lobby");
        core.hello();
        let welcome = ServerMsg::Welcome {
            player_id: 1,
            tick_rate: 30,
            rules: Rules::GAME,
            view_distance: 0.0,
            players: vec![PlayerInfo { id: 1, name: "ada".into(), color: 0xff0000 }],
            orbs: vec![],
            identity: easel_protocol::Identity { author: 1, token: [0; 16] },
            board_chunks: 0,
            resume: [7; 16],
        };
        core.handle_message(0.0, &encode(&welcome)).unwrap();
        core
    }

    fn inputs(messages: &[Transmit]) -> Vec<ClientMsg> {
        messages.iter().map(|m| decode_client(m).unwrap()).filter(|m| matches!(m, ClientMsg::Input { .. })).collect()
    }

    #[test]
    fn hello_carries_the_protocol_version_name_and_room() {
        let mut core = ClientCore::new("ada", "lobby");
        let hello = decode_client(&core.hello()).unwrap();
        let expected = ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            name: "ada".into(),
            room: "lobby".into(),
            identity: None,
            resume: None,
            seat: None,
        };
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
        assert_eq!(
            held[29],
            ClientMsg::Input { seq: 30, ack: 0, dirs: vec![(1, 0); 4] },
            "each input repeats the three before it"
        );
        core.hold_direction(0, 0);
        assert!(inputs(&core.poll_transmit(1000.0)).is_empty(), "standing still needs no input");
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
    fn a_connection_that_answers_nothing_for_five_seconds_after_a_ping_is_lost() {
        let mut core = welcomed();
        // Pings go out once a second; a pong to each keeps the connection alive indefinitely.
        for second in 0..10 {
            let now = f64::from(second) * 1000.0;
            let nonce = core.poll_transmit(now).iter().find_map(|m| match decode_client(m) {
                Ok(ClientMsg::Ping { nonce }) => Some(nonce),
                _ => None,
            });
            core.handle(now + 50.0, ServerMsg::Pong { nonce: nonce.unwrap() }).unwrap();
            assert!(!core.close_if_silent(now + 999.0));
        }
        // Then nothing comes back: still joined just before the limit, lost at it.
        for now in [10_000.0, 11_000.0, 12_000.0, 13_000.0, 14_000.0, 14_999.0] {
            core.poll_transmit(now);
            assert!(!core.close_if_silent(now), "not yet at {now} ms");
        }
        assert!(core.close_if_silent(15_000.0));
        assert!(matches!(core.status(), Status::Closed { retry: true, .. }), "{:?}", core.status());
        let ClientMsg::Hello { resume, .. } = decode_client(&core.hello()).unwrap() else { panic!() };
        assert_eq!(resume, Some([7; 16]), "the reconnect asks for the same player");
    }

    #[test]
    fn any_message_from_the_server_shows_it_is_alive_and_no_ping_means_no_verdict() {
        let mut core = welcomed();
        core.poll_transmit(0.0);
        // The pong is late, but chat keeps arriving: the server is there.
        for second in 1..10 {
            let now = f64::from(second) * 1000.0;
            core.poll_transmit(now);
            core.handle(now, ServerMsg::Chat { from: 2, name: "bo".into(), text: "hi".into() }).unwrap();
            assert!(!core.close_if_silent(now + 500.0));
        }
        // A client that sends no pings (a throttled background tab) never judges the silence
        // its own doing.
        let mut idle = welcomed();
        assert!(!idle.close_if_silent(60_000.0));
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
        core.handle_close(close::ABNORMAL, "");
        assert!(matches!(core.status(), Status::Closed { reason, .. } if reason == "server shutting down"));
    }

    fn snapshot(tick: u32, players: &[PlayerState]) -> Vec<u8> {
        let players: Vec<_> = players.iter().map(NetPlayer::quantized).collect();
        encode(&ServerMsg::Snapshot {
            tick,
            baseline: 0,
            entities: easel_protocol::snapshot::encode(&players, None, 0),
        })
    }

    #[test]
    fn snapshots_update_players_and_are_acknowledged() {
        let mut core = welcomed();
        let me = PlayerState { id: 1, x: 10.0, y: 20.0, score: 3, last_input_seq: 0 };
        core.handle_message(100.0, &snapshot(5, &[me])).unwrap();
        let seen = &core.view().players()[&1];
        assert_eq!(seen.state.map(|s| (s.x, s.y, s.score)), Some((10.0, 20.0, 3)));
        let sent: Vec<_> = core.poll_transmit(110.0).iter().map(|m| decode_client(m).unwrap()).collect();
        assert!(sent.contains(&ClientMsg::Ack { tick: 5 }), "acknowledged when no input carries it: {sent:?}");
        core.hold_direction(1, 0);
        let sent = inputs(&core.poll_transmit(120.0));
        assert!(matches!(sent.as_slice(), [ClientMsg::Input { ack: 5, .. }]), "{sent:?}");
    }

    #[test]
    fn a_snapshot_whose_baseline_was_lost_is_reported_once() {
        let mut core = welcomed();
        let me = PlayerState { id: 1, x: 10.0, y: 20.0, score: 3, last_input_seq: 0 };
        core.handle_message(100.0, &snapshot(5, &[me])).unwrap();
        core.poll_transmit(110.0);
        // Tick 6 never arrived; tick 7 is a delta against it.
        let lost_base = encode(&ServerMsg::Snapshot { tick: 7, baseline: 6, entities: vec![0] });
        core.handle_message(140.0, &lost_base).unwrap();
        let sent: Vec<_> = core.poll_transmit(150.0).iter().map(|m| decode_client(m).unwrap()).collect();
        assert!(sent.contains(&ClientMsg::SnapshotLost { newest: 5 }), "{sent:?}");
        let sent: Vec<_> = core.poll_transmit(160.0).iter().map(|m| decode_client(m).unwrap()).collect();
        assert!(!sent.iter().any(|m| matches!(m, ClientMsg::SnapshotLost { .. })), "told once: {sent:?}");
    }

    #[test]
    fn the_own_player_moves_on_the_frame_of_the_key_press() {
        let mut core = welcomed();
        let me = PlayerState { id: 1, x: 500.0, y: 500.0, score: 0, last_input_seq: 0 };
        core.handle_message(0.0, &snapshot(1, &[me])).unwrap();
        core.hold_direction(1, 0);
        core.poll_transmit(16.0);
        let (x, _) = core.predictor().render_position(32.0).map(|p| (p.0, p.1)).unwrap();
        assert!(x > 500.0, "one frame later the player has moved ({x}) without waiting for the server");
    }

    #[test]
    fn a_reconnect_presents_the_resume_token_and_keeps_counting_inputs() {
        let mut core = welcomed();
        core.hold_direction(0, 1);
        core.poll_transmit(0.0);
        core.handle_close(close::ABNORMAL, "");
        match decode_client(&core.hello()).unwrap() {
            ClientMsg::Hello { resume, .. } => assert_eq!(resume, Some([7; 16])),
            other => panic!("{other:?}"),
        }
        assert_eq!(core.last_input_seq(), 1, "seqs continue across connections");
    }

    #[test]
    fn chat_is_validated_locally() {
        let core = welcomed();
        assert!(core.chat("   ").is_err());
        assert!(core.chat("hello").is_ok());
    }
}
