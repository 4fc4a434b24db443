//! One connected client's protocol state, sans-IO in quinn-proto's style: the transport feeds it
//! frames with `handle_*` and the current time, and acts on what it returns. It knows nothing of
//! sockets or clocks, so every rule here is tested in memory.
//!
//! Call order: `new` at upgrade; `handle_binary` / `handle_text` per frame; `handle_timeout` when
//! `deadline()` passes; `joined` once the room accepted the `Hello`.

mod rate;

use std::time::Instant;

use easel_protocol::board::BoardOp;
use easel_protocol::msg::{MAX_INPUTS_PER_MESSAGE, MAX_PREVIEW_POINTS};
use easel_protocol::{ClientMsg, DecodeError, Identity, PROTOCOL_VERSION, Presence, ServerMsg, close, codec, text};

use crate::config::Limits;
pub use rate::TokenBucket;

/// Why the server closes a connection: a WebSocket close code and a human-readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseReason {
    pub code: u16,
    pub reason: String,
    /// An encoded message the client is sent just before the close (a cluster's `Redirect`).
    pub farewell: Option<bytes::Bytes>,
}

impl CloseReason {
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Self { code, reason: reason.into(), farewell: None }
    }

    /// A close preceded by the message `farewell`.
    pub fn with_farewell(code: u16, reason: impl Into<String>, farewell: bytes::Bytes) -> Self {
        Self { code, reason: reason.into(), farewell: Some(farewell) }
    }
}

/// What a frame asks of the transport and the room.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// Join `room` as `name` (both already validated), with the whiteboard identity it claims.
    Join {
        name: String,
        room: String,
        identity: Option<Identity>,
        /// The resume token of a dropped connection, to get its player back.
        resume: Option<[u8; 16]>,
        /// The seat a cluster's redirect handed the client (checked by the cluster, if any).
        seat: Option<Vec<u8>>,
    },
    /// Inputs `seq - dirs.len() + 1 ..= seq` (1 to `MAX_INPUTS_PER_MESSAGE` of them) and the
    /// newest snapshot tick the client decoded.
    Input {
        seq: u32,
        ack: u32,
        dirs: Vec<(i8, i8)>,
    },
    Ack {
        tick: u32,
    },
    /// The client could not decode a snapshot: its link loses them.
    SnapshotLost {
        newest: u32,
    },
    Chat {
        text: String,
    },
    Board {
        client_seq: u64,
        op: BoardOp,
    },
    Presence(Presence),
    BoardSync,
    /// Send this straight back to the client.
    Reply(ServerMsg),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingHello {
        deadline: Instant,
    },
    /// `Hello` accepted, waiting for the room's answer: further messages are protocol errors.
    Joining,
    Joined,
}

pub struct Session {
    phase: Phase,
    /// All messages: keeps a flood from costing more than an honest client.
    messages: TokenBucket,
    /// Chat lines: keeps one person from drowning the room's chat.
    chats: TokenBucket,
    /// Presence updates: excess ones are dropped quietly (the next one supersedes them).
    presence: TokenBucket,
    /// Board ops: their own budget, so a reconnect that resends offline edits is not a flood.
    board_ops: TokenBucket,
}

impl Session {
    pub fn new(now: Instant, limits: &Limits) -> Self {
        Self {
            phase: Phase::AwaitingHello { deadline: now + limits.hello_timeout },
            messages: TokenBucket::new(now, limits.messages_per_second, limits.message_burst),
            chats: TokenBucket::new(now, limits.chats_per_second, limits.chat_burst),
            presence: TokenBucket::new(now, limits.presence_per_second, limits.presence_per_second),
            board_ops: TokenBucket::new(now, limits.board_ops_per_second, limits.board_op_burst),
        }
    }

    /// When `handle_timeout` must be called next, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::AwaitingHello { deadline } => Some(deadline),
            Phase::Joining | Phase::Joined => None,
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), CloseReason> {
        match self.phase {
            Phase::AwaitingHello { deadline } if now >= deadline => {
                Err(CloseReason::new(close::POLICY_VIOLATION, "no Hello within the handshake time"))
            }
            _ => Ok(()),
        }
    }

    /// The room accepted the join.
    pub fn joined(&mut self) {
        self.phase = Phase::Joined;
    }

    /// Text frames are not part of the protocol.
    pub fn handle_text(&mut self) -> CloseReason {
        CloseReason::new(close::UNSUPPORTED_DATA, "Easel speaks binary frames only")
    }

    /// One binary message. `Ok(None)` means nothing to do (e.g. a chat refused politely is a
    /// `Reply`, not an error).
    pub fn handle_binary(&mut self, now: Instant, bytes: &[u8]) -> Result<Option<SessionEvent>, CloseReason> {
        let msg = codec::decode_client(bytes).map_err(|e| match e {
            DecodeError::TooLarge { .. } => CloseReason::new(close::MESSAGE_TOO_BIG, e.to_string()),
            _ => CloseReason::new(close::PROTOCOL_ERROR, e.to_string()),
        })?;
        let bucket = if matches!(msg, ClientMsg::Board { .. }) { &mut self.board_ops } else { &mut self.messages };
        if !bucket.try_take(now) {
            return Err(CloseReason::new(close::POLICY_VIOLATION, "message rate limit exceeded"));
        }
        match (self.phase, msg) {
            (Phase::AwaitingHello { .. }, ClientMsg::Hello { version, name, room, identity, resume, seat }) => {
                if version != PROTOCOL_VERSION {
                    return Err(CloseReason::new(
                        close::PROTOCOL_ERROR,
                        format!(
                            "protocol version mismatch: server speaks {PROTOCOL_VERSION}, client sent {version}; reload the page"
                        ),
                    ));
                }
                let name =
                    text::clean_name(&name).map_err(|e| CloseReason::new(close::POLICY_VIOLATION, e.to_string()))?;
                let room =
                    text::clean_room(&room).map_err(|e| CloseReason::new(close::POLICY_VIOLATION, e.to_string()))?;
                self.phase = Phase::Joining;
                Ok(Some(SessionEvent::Join { name, room, identity, resume, seat }))
            }
            (Phase::AwaitingHello { .. } | Phase::Joining, _) => {
                Err(CloseReason::new(close::PROTOCOL_ERROR, "the first message must be Hello"))
            }
            (Phase::Joined, ClientMsg::Hello { .. }) => {
                Err(CloseReason::new(close::PROTOCOL_ERROR, "Hello sent twice"))
            }
            (Phase::Joined, ClientMsg::Input { seq, ack, dirs }) => {
                if dirs.is_empty() || dirs.len() > MAX_INPUTS_PER_MESSAGE || (seq as usize) < dirs.len() {
                    return Err(CloseReason::new(
                        close::PROTOCOL_ERROR,
                        format!("an input message carries 1 to {MAX_INPUTS_PER_MESSAGE} inputs numbered from 1"),
                    ));
                }
                Ok(Some(SessionEvent::Input { seq, ack, dirs }))
            }
            (Phase::Joined, ClientMsg::Ack { tick }) => Ok(Some(SessionEvent::Ack { tick })),
            (Phase::Joined, ClientMsg::SnapshotLost { newest }) => Ok(Some(SessionEvent::SnapshotLost { newest })),
            (Phase::Joined, ClientMsg::Ping { nonce }) => Ok(Some(SessionEvent::Reply(ServerMsg::Pong { nonce }))),
            (Phase::Joined, ClientMsg::Board { client_seq, op }) => Ok(Some(SessionEvent::Board { client_seq, op })),
            (Phase::Joined, ClientMsg::BoardSync) => Ok(Some(SessionEvent::BoardSync)),
            (Phase::Joined, ClientMsg::Presence(presence)) => {
                let preview_points = presence.drawing.as_ref().map_or(0, |d| d.points.len());
                if preview_points > MAX_PREVIEW_POINTS {
                    return Err(CloseReason::new(close::POLICY_VIOLATION, "presence preview too long"));
                }
                Ok(self.presence.try_take(now).then_some(SessionEvent::Presence(presence)))
            }
            (Phase::Joined, ClientMsg::Chat { text }) => {
                let event = match text::clean_chat(&text) {
                    Err(e) => SessionEvent::Reply(ServerMsg::Rejected { reason: e.to_string() }),
                    Ok(_) if !self.chats.try_take(now) => SessionEvent::Reply(ServerMsg::Rejected {
                        reason: "you are sending chat messages too fast".to_owned(),
                    }),
                    Ok(text) => SessionEvent::Chat { text },
                };
                Ok(Some(event))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use easel_protocol::encode;

    fn hello(version: u16, name: &str, room: &str) -> Vec<u8> {
        encode(&ClientMsg::Hello {
            version,
            name: name.into(),
            room: room.into(),
            identity: None,
            resume: None,
            seat: None,
        })
    }

    fn joined_session(now: Instant) -> Session {
        let mut session = Session::new(now, &Limits::default());
        session.handle_binary(now, &hello(PROTOCOL_VERSION, "ada", "lobby")).unwrap();
        session.joined();
        session
    }

    #[test]
    fn a_valid_hello_asks_to_join_with_cleaned_names() {
        let now = Instant::now();
        let mut session = Session::new(now, &Limits::default());
        let event = session.handle_binary(now, &hello(PROTOCOL_VERSION, " Ada ", "Lobby")).unwrap();
        assert_eq!(
            event,
            Some(SessionEvent::Join {
                name: "Ada".into(),
                room: "lobby".into(),
                identity: None,
                resume: None,
                seat: None
            })
        );
    }

    #[test]
    fn a_version_mismatch_closes_with_protocol_error_and_says_why() {
        let now = Instant::now();
        let mut session = Session::new(now, &Limits::default());
        let close = session.handle_binary(now, &hello(PROTOCOL_VERSION + 1, "ada", "lobby")).unwrap_err();
        assert_eq!(close.code, close::PROTOCOL_ERROR);
        assert!(close.reason.contains("version"), "{}", close.reason);
    }

    #[test]
    fn anything_before_hello_is_a_protocol_error() {
        let now = Instant::now();
        let mut session = Session::new(now, &Limits::default());
        let close = session.handle_binary(now, &encode(&ClientMsg::Ping { nonce: 1 })).unwrap_err();
        assert_eq!(close.code, close::PROTOCOL_ERROR);
    }

    #[test]
    fn garbage_and_text_frames_close_with_their_codes() {
        let now = Instant::now();
        let mut session = joined_session(now);
        assert_eq!(session.handle_binary(now, &[0xFF, 0xFF, 0xFF]).unwrap_err().code, close::PROTOCOL_ERROR);
        assert_eq!(session.handle_text().code, close::UNSUPPORTED_DATA);
    }

    #[test]
    fn a_silent_connection_is_closed_at_the_hello_deadline() {
        let now = Instant::now();
        let mut session = Session::new(now, &Limits::default());
        let deadline = session.deadline().unwrap();
        assert!(session.handle_timeout(deadline - Duration::from_millis(1)).is_ok());
        assert_eq!(session.handle_timeout(deadline).unwrap_err().code, close::POLICY_VIOLATION);
    }

    #[test]
    fn a_message_flood_is_closed_but_honest_rates_are_not() {
        let start = Instant::now();
        let mut session = joined_session(start);
        let input = encode(&ClientMsg::Input { seq: 1, ack: 0, dirs: vec![(1, 0)] });
        // Ten seconds of an honest 30 Hz client plus pings.
        for i in 0..310u32 {
            let now = start + Duration::from_millis(u64::from(i) * 1000 / 31);
            assert!(session.handle_binary(now, &input).is_ok(), "honest message {i} refused");
        }
        let now = start + Duration::from_secs(10);
        let flood = (0..1000).map(|_| session.handle_binary(now, &input)).find(Result::is_err);
        assert_eq!(flood.unwrap().unwrap_err().code, close::POLICY_VIOLATION);
    }

    #[test]
    fn a_burst_of_offline_board_edits_is_not_a_flood() {
        use easel_protocol::board::{BoardOp, Dot, Point, Stroke, StrokeId};
        let now = Instant::now();
        let mut session = joined_session(now);
        for seq in 1..=800u32 {
            let stroke =
                Stroke { id: StrokeId { author: 1, seq }, color: 0, width: 1, points: vec![Point { x: 0, y: 0 }] };
            let op = encode(&ClientMsg::Board {
                client_seq: u64::from(seq),
                op: BoardOp::Add { dot: Dot::new(1, u64::from(seq)), stroke },
            });
            assert!(session.handle_binary(now, &op).is_ok(), "board op {seq} of a reconnect burst refused");
        }
        let input = encode(&ClientMsg::Input { seq: 1, ack: 0, dirs: vec![(1, 0)] });
        assert!(session.handle_binary(now, &input).is_ok(), "board ops do not use up the general budget");
    }

    #[test]
    fn chat_is_rate_limited_politely() {
        let now = Instant::now();
        let mut session = joined_session(now);
        let chat = encode(&ClientMsg::Chat { text: "hi".into() });
        let events: Vec<_> = (0..8).map(|_| session.handle_binary(now, &chat).unwrap().unwrap()).collect();
        let relayed = events.iter().filter(|e| matches!(e, SessionEvent::Chat { .. })).count();
        assert_eq!(relayed, 5, "a burst of five lines goes through");
        assert!(
            matches!(events[7], SessionEvent::Reply(ServerMsg::Rejected { .. })),
            "the rest are refused, connection kept"
        );
    }

    #[test]
    fn overlong_chat_is_refused_not_truncated() {
        let now = Instant::now();
        let mut session = joined_session(now);
        let chat = encode(&ClientMsg::Chat { text: "x".repeat(300) });
        assert!(matches!(session.handle_binary(now, &chat), Ok(Some(SessionEvent::Reply(ServerMsg::Rejected { .. })))));
    }
}
