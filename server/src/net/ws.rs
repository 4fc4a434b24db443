//! One WebSocket connection: origin check, the upgrade handshake and its limits, then a loop
//! that feeds frames to the connection's `Session` and writes what the room sends, each write
//! bounded in time. The room writes most snapshots to the socket itself (`socket`).

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use easel_protocol::codec::MAX_CLIENT_MESSAGE_BYTES;
use easel_protocol::{Identity, close};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

use super::AppState;
use super::socket::{SocketIo, SocketWriter};
use crate::room::fanout::Fanout;
use crate::room::{EncodedSnapshot, Ending, Joined, MemberLink, RoomHandle};

use crate::session::{CloseReason, Session, SessionEvent};
use crate::sim::TickInput;

/// Outgoing bytes tungstenite may hold for a connection before writes fail: a few snapshots of
/// a full room. Beyond it the client is not reading and will be dropped by the write timeout.
const MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;
/// Queued messages written with one flush at most: bounds the time one write holds the loop.
const MAX_BATCH: usize = 256;
/// Read chunk per connection. tungstenite zeroes this much before every read, including the one
/// that finds the socket empty, and nearly every client message is an input of about 20 bytes:
/// at 8 KiB the zeroing was 3 % of the server's CPU at N = 500 (`perf`). A long stroke (messages
/// go up to 16 KiB) takes several reads; tungstenite's 128 KiB default would also cost 128 MB of
/// memory at 1,000 players.
const READ_BUFFER: usize = 1024;

/// `GET /ws`: checks the origin and the handshake (RFC 6455, 4.2.1), answers 101 and runs the
/// connection on the upgraded socket. The upgrade is done here rather than by axum's
/// `WebSocketUpgrade` because the room needs the TCP socket itself (`socket`).
pub(super) async fn upgrade(State(state): State<AppState>, mut request: Request) -> Response {
    if let Err(reason) = check_origin(request.headers(), &state.config.allowed_origins) {
        tracing::info!("refused WebSocket: {reason}");
        return (StatusCode::FORBIDDEN, reason).into_response();
    }
    let accept = match accept_key(request.headers()) {
        Ok(accept) => accept,
        Err(reason) => return (StatusCode::BAD_REQUEST, reason).into_response(),
    };
    let upgrading = hyper::upgrade::on(&mut request);
    let guard = state.sessions.enter();
    tokio::spawn(async move {
        let upgraded = match upgrading.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!("WebSocket upgrade failed: {e}");
                return;
            }
        };
        // `net::serve` runs every connection on a `TokioIo<TcpStream>`.
        let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
            tracing::error!("WebSocket upgrade on a connection that is not a TCP stream");
            return;
        };
        let (io, writer) = SocketWriter::split(parts.io.into_inner(), state.metrics.clone());
        let config = WebSocketConfig::default()
            .max_message_size(Some(MAX_CLIENT_MESSAGE_BYTES))
            .max_frame_size(Some(MAX_CLIENT_MESSAGE_BYTES))
            .max_write_buffer_size(MAX_WRITE_BUFFER)
            .read_buffer_size(READ_BUFFER);
        // The client may have sent its first frames with the handshake.
        let socket =
            WebSocketStream::from_partially_read(io, parts.read_buf.to_vec(), Role::Server, Some(config)).await;
        state.metrics.connections.inc();
        state.metrics.connections_total.inc();
        Connection::new(socket, writer, state.clone()).run().await;
        state.metrics.connections.dec();
        drop(guard);
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The `Sec-WebSocket-Accept` answering a valid WebSocket handshake, or why it is not one.
fn accept_key(headers: &HeaderMap) -> Result<String, &'static str> {
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token(header::CONNECTION, "upgrade") || !has_token(header::UPGRADE, "websocket") {
        return Err("this is the WebSocket endpoint: send a WebSocket upgrade");
    }
    if headers.get(header::SEC_WEBSOCKET_VERSION).is_none_or(|v| v != "13") {
        return Err("unsupported WebSocket version: Easel speaks version 13");
    }
    let key = headers.get(header::SEC_WEBSOCKET_KEY).ok_or("Sec-WebSocket-Key is missing")?;
    Ok(tungstenite::handshake::derive_accept_key(key.as_bytes()))
}

/// Browsers always send `Origin` on a WebSocket upgrade, so checking it stops other sites'
/// pages from joining on a visitor's behalf. Native clients (bots, tests) send none and pass.
fn check_origin(headers: &HeaderMap, allowed: &[String]) -> Result<(), String> {
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    let origin = origin.to_str().map_err(|_| "unreadable Origin header".to_owned())?;
    let permitted = if allowed.is_empty() {
        // Same origin: the Origin's host[:port] must be the Host the request was sent to.
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
        let origin_host = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
        origin_host.is_some_and(|o| o.eq_ignore_ascii_case(host))
    } else {
        allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
    };
    if permitted { Ok(()) } else { Err(format!("origin {origin} is not allowed")) }
}

/// Numbers connections, so a room can tell a resumed player's new connection from its old one.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// What the connection learned from the room when it joined.
struct Membership {
    room: RoomHandle,
    player_id: u32,
    connection: u64,
    /// The newest input seq forwarded to the room: repeats in later messages are not sent again.
    last_input: u32,
    messages: mpsc::Receiver<Bytes>,
    snapshots: watch::Receiver<EncodedSnapshot>,
    kick: oneshot::Receiver<CloseReason>,
    fanout: Arc<Fanout>,
}

struct Connection {
    socket: WebSocketStream<SocketIo>,
    /// The socket's write side, shared with the room's snapshot hand-over.
    writer: Arc<SocketWriter>,
    session: Session,
    state: AppState,
    membership: Option<Membership>,
}

/// What the connection does next.
enum Step {
    Inbound(Option<Result<Message, tungstenite::Error>>),
    /// The room left part of a snapshot for the connection to write.
    FinishWrite,
    Send(Bytes),
    Snapshot(EncodedSnapshot),
    Close(CloseReason),
}

impl Connection {
    fn new(socket: WebSocketStream<SocketIo>, writer: Arc<SocketWriter>, state: AppState) -> Self {
        let session = Session::new(Instant::now(), &state.config.limits);
        Self { socket, writer, session, state, membership: None }
    }

    async fn run(mut self) {
        let outcome = self.serve().await;
        if let Some(m) = &self.membership {
            let ending = match &outcome {
                Ok(ending) => *ending,
                // Lost mid-write or mid-read (1001), or too slow to keep up (1013): the codes
                // that tell a client to come back. Every rule broken is another code.
                Err(reason) if matches!(reason.code, close::GOING_AWAY | close::TRY_AGAIN_LATER) => Ending::Dropped,
                Err(_) => Ending::Closed,
            };
            m.room.leave(m.player_id, m.connection, ending);
        }
        if let Err(reason) = outcome {
            if reason.code != close::NORMAL && reason.code != close::GOING_AWAY {
                self.state.metrics.closed_for_cause.inc();
                tracing::info!(code = reason.code, reason = %reason.reason, "closing connection");
            }
            self.close(reason).await;
        }
    }

    /// Runs until the client leaves or the network ends the connection (`Ok`), or the
    /// connection must be closed (`Err`).
    async fn serve(&mut self) -> Result<Ending, CloseReason> {
        loop {
            let deadline = self.session.deadline();
            let step = {
                let (kick, messages, snapshots) = match &mut self.membership {
                    Some(m) => (Some(&mut m.kick), Some(&mut m.messages), Some(&mut m.snapshots)),
                    None => (None, None, None),
                };
                tokio::select! {
                    biased;
                    reason = kicked(kick) => Step::Close(reason),
                    Some(bytes) = next_message(messages) => Step::Send(bytes),
                    () = self.writer.finish_write.notified() => Step::FinishWrite,
                    snapshot = next_snapshot(snapshots) => Step::Snapshot(snapshot),
                    frame = self.socket.next() => Step::Inbound(frame),
                    _ = sleep_until(deadline) => {
                        self.session.handle_timeout(Instant::now())?;
                        continue;
                    }
                }
            };
            match step {
                Step::Close(reason) => return Err(reason),
                Step::FinishWrite => self.flush().await?,
                Step::Send(bytes) => self.send_queued(bytes, None).await?,
                Step::Snapshot(snapshot) => self.send_queued(snapshot.bytes, Some(snapshot.tick)).await?,
                // A TCP end without the WebSocket close is the network (or a crashed client),
                // not a player leaving: the player waits for a resume.
                Step::Inbound(None)
                | Step::Inbound(Some(Err(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake)))) =>
                {
                    return Ok(Ending::Dropped);
                }
                Step::Inbound(Some(Err(e))) => return Err(read_error(e)),
                Step::Inbound(Some(Ok(message))) => {
                    if !self.inbound(message).await? {
                        return Ok(Ending::Closed);
                    }
                }
            }
        }
    }

    /// Handles one message; `Ok(false)` when the client closed.
    async fn inbound(&mut self, message: Message) -> Result<bool, CloseReason> {
        self.state.metrics.messages_in.inc();
        let event = match message {
            Message::Binary(bytes) => self.session.handle_binary(Instant::now(), &bytes)?,
            Message::Text(_) => return Err(self.session.handle_text()),
            // tungstenite answers pings itself.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => None,
            Message::Close(_) => return Ok(false),
        };
        match event {
            None => {}
            Some(SessionEvent::Join { name, room, identity, resume }) => {
                self.join(name, &room, identity, resume).await?;
            }
            Some(SessionEvent::Reply(msg)) => self.send(Message::Binary(easel_protocol::encode(&msg).into())).await?,
            Some(SessionEvent::Input { seq, ack, dirs }) => {
                if let Some(m) = &mut self.membership {
                    self.writer.delivery.acknowledged(ack);
                    let arrived = Instant::now();
                    for input in TickInput::unpack(m.player_id, seq, &dirs, &mut m.last_input) {
                        m.room.input(input, arrived);
                    }
                }
            }
            // Only a joined session yields acknowledgements.
            Some(SessionEvent::Ack { tick }) => self.writer.delivery.acknowledged(tick),
            Some(SessionEvent::SnapshotLost { newest }) => {
                // Back to the newest tick it decoded: the room encodes against it, or in full if
                // it no longer has that one.
                if let Some(m) = &mut self.membership {
                    self.writer.delivery.lost(newest);
                    m.room.snapshot_lost(m.player_id).await;
                }
            }
            Some(SessionEvent::Chat { text }) => {
                if let Some(m) = &self.membership {
                    m.room.chat(m.player_id, text);
                }
            }
            Some(SessionEvent::Board { client_seq, op }) => {
                if let Some(m) = &self.membership {
                    m.room.board(m.player_id, client_seq, op).await;
                }
            }
            Some(SessionEvent::BoardSync) => {
                if let Some(m) = &self.membership {
                    m.room.board_sync(m.player_id);
                }
            }
            Some(SessionEvent::Presence(presence)) => {
                if let Some(m) = &self.membership {
                    m.room.presence(m.player_id, presence);
                }
            }
        }
        Ok(true)
    }

    async fn join(
        &mut self,
        name: String,
        room: &str,
        claimed: Option<Identity>,
        resume: Option<[u8; 16]>,
    ) -> Result<(), CloseReason> {
        let identity = self.state.store.identify(claimed).await.map_err(|e| {
            tracing::error!("identity lookup failed: {e}");
            CloseReason::new(close::TRY_AGAIN_LATER, "server storage unavailable")
        })?;
        let (messages_tx, messages) = mpsc::channel(self.state.config.limits.outbound_queue);
        let (kick_tx, kick) = oneshot::channel();
        let connection = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
        let link = MemberLink {
            messages: messages_tx,
            kick: kick_tx,
            connection,
            delivery: Arc::clone(&self.writer.delivery),
            resume,
            socket: Some(self.writer.clone()),
        };
        let (handle, answer) = self.state.rooms.join(room, name, identity, link)?;
        let joined: Joined = match tokio::time::timeout(self.state.config.limits.hello_timeout, answer).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) | Err(_) => return Err(CloseReason::new(close::TRY_AGAIN_LATER, "the room did not answer")),
        };
        self.session.joined();
        self.send(Message::Binary(joined.welcome)).await?;
        self.membership = Some(Membership {
            room: handle,
            player_id: joined.player_id,
            connection,
            last_input: 0,
            messages,
            snapshots: joined.snapshots,
            kick,
            fanout: joined.fanout,
        });
        Ok(())
    }

    /// Sends `first` (the snapshot of tick `first_snapshot`, or a queued message) and whatever
    /// else the room has for this client by now, the newest snapshot included, with one flush:
    /// under a burst (a whiteboard reconnect relayed to everyone) that is one write instead of
    /// hundreds, and a message queued on a tick (an orb event, an input-timing report) goes out
    /// with that tick's snapshot.
    async fn send_queued(&mut self, first: Bytes, first_snapshot: Option<u32>) -> Result<(), CloseReason> {
        let mut batch = vec![first];
        let mut snapshot_tick = first_snapshot;
        if let Some(membership) = &mut self.membership {
            while batch.len() < MAX_BATCH {
                match membership.messages.try_recv() {
                    Ok(bytes) => batch.push(bytes),
                    Err(_) => break,
                }
            }
            if snapshot_tick.is_none() && membership.snapshots.has_changed().unwrap_or(false) {
                let snapshot = membership.snapshots.borrow_and_update().clone();
                snapshot_tick = Some(snapshot.tick);
                batch.push(snapshot.bytes);
            }
        }
        let count = batch.len() as u64;
        let bytes: u64 = batch.iter().map(|b| b.len() as u64).sum();
        let socket = &mut self.socket;
        let write = async {
            for message in batch {
                socket.feed(Message::Binary(message)).await?;
            }
            socket.flush().await
        };
        within_write_timeout(&self.state, write).await?;
        self.state.metrics.messages_out.add(count);
        self.state.metrics.bytes_out.add(bytes);
        if let (Some(tick), Some(m)) = (snapshot_tick, &self.membership) {
            m.fanout.written(tick);
            self.writer.delivery.written(tick);
        }
        self.settle();
        Ok(())
    }

    async fn send(&mut self, message: Message) -> Result<(), CloseReason> {
        let len = match &message {
            Message::Binary(bytes) => bytes.len() as u64,
            _ => 0,
        };
        within_write_timeout(&self.state, self.socket.send(message)).await?;
        self.state.metrics.messages_out.inc();
        self.state.metrics.bytes_out.add(len);
        self.settle();
        Ok(())
    }

    /// Writes what the room left in the socket (and anything tungstenite holds).
    async fn flush(&mut self) -> Result<(), CloseReason> {
        within_write_timeout(&self.state, self.socket.flush()).await?;
        self.settle();
        Ok(())
    }

    /// After a flush that wrote everything: the room may write snapshots to the socket itself
    /// again, unless something for this connection is already queued. Never called elsewhere:
    /// tungstenite may hold part of a frame between flushes.
    fn settle(&mut self) {
        if let Some(m) = &self.membership {
            let (messages, snapshots) = (&m.messages, &m.snapshots);
            self.writer.idle_if(|| messages.is_empty() && !snapshots.has_changed().unwrap_or(false));
        }
    }

    /// Sends a close frame (best effort, bounded in time) and lets the client finish the
    /// closing handshake.
    async fn close(mut self, reason: CloseReason) {
        let frame = CloseFrame { code: reason.code.into(), reason: reason.reason.into() };
        let timeout = self.state.config.limits.write_timeout.min(std::time::Duration::from_secs(2));
        let _ = tokio::time::timeout(timeout, async {
            self.socket.send(Message::Close(Some(frame))).await?;
            // Drain until the client's close reply (or the end), so the close is not cut short
            // by a TCP reset.
            while let Some(Ok(_)) = self.socket.next().await {}
            Ok::<(), tungstenite::Error>(())
        })
        .await;
    }
}

/// Runs `write` within the write timeout; a client that does not take its bytes in time is
/// closed with 1013, a write that fails means the connection is gone.
async fn within_write_timeout(
    state: &AppState,
    write: impl Future<Output = Result<(), tungstenite::Error>>,
) -> Result<(), CloseReason> {
    match tokio::time::timeout(state.config.limits.write_timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(CloseReason::new(close::GOING_AWAY, "connection lost")),
        Err(_) => Err(CloseReason::new(close::TRY_AGAIN_LATER, "client is not reading")),
    }
}

/// Maps a read error to the close the client should get: an oversize message gets 1009, a
/// broken frame 1002.
fn read_error(error: tungstenite::Error) -> CloseReason {
    match error {
        tungstenite::Error::Capacity(e) => CloseReason::new(close::MESSAGE_TOO_BIG, e.to_string()),
        tungstenite::Error::Protocol(e) => CloseReason::new(close::PROTOCOL_ERROR, e.to_string()),
        tungstenite::Error::Utf8(_) => CloseReason::new(close::PROTOCOL_ERROR, "invalid UTF-8"),
        other => CloseReason::new(close::GOING_AWAY, other.to_string()),
    }
}

async fn kicked(kick: Option<&mut oneshot::Receiver<CloseReason>>) -> CloseReason {
    match kick {
        Some(kick) => match kick.await {
            Ok(reason) => reason,
            // The room dropped us without a word: it closed.
            Err(_) => CloseReason::new(close::GOING_AWAY, "room closed"),
        },
        None => pending().await,
    }
}

async fn next_message(messages: Option<&mut mpsc::Receiver<Bytes>>) -> Option<Bytes> {
    match messages {
        Some(messages) => messages.recv().await,
        None => pending().await,
    }
}

async fn next_snapshot(snapshots: Option<&mut watch::Receiver<EncodedSnapshot>>) -> EncodedSnapshot {
    let Some(snapshots) = snapshots else { return pending().await };
    if snapshots.changed().await.is_err() {
        // The room is gone; `kicked` reports why.
        return pending().await;
    }
    snapshots.borrow_and_update().clone()
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: &str, host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, origin.parse().unwrap());
        h.insert(header::HOST, host.parse().unwrap());
        h
    }

    #[test]
    fn same_origin_is_allowed_by_default_and_others_are_not() {
        assert!(check_origin(&headers("http://127.0.0.1:8080", "127.0.0.1:8080"), &[]).is_ok());
        assert!(check_origin(&headers("http://evil.example", "127.0.0.1:8080"), &[]).is_err());
    }

    #[test]
    fn an_allowlist_replaces_the_same_origin_rule() {
        let allowed = vec!["https://play.example.com".to_owned()];
        assert!(check_origin(&headers("https://play.example.com", "10.0.0.1:8080"), &allowed).is_ok());
        assert!(check_origin(&headers("http://127.0.0.1:8080", "127.0.0.1:8080"), &allowed).is_err());
    }

    #[test]
    fn the_handshake_is_answered_with_rfc_6455s_accept_key() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        h.insert(header::SEC_WEBSOCKET_KEY, "dGhlIHNhbXBsZSBub25jZQ==".parse().unwrap());
        assert_eq!(accept_key(&h).unwrap(), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        h.insert(header::SEC_WEBSOCKET_VERSION, "8".parse().unwrap());
        assert!(accept_key(&h).unwrap_err().contains("version"));
        h.remove(header::UPGRADE);
        assert!(accept_key(&h).unwrap_err().contains("upgrade"));
    }

    #[test]
    fn clients_without_origin_are_not_browsers_and_pass() {
        assert!(check_origin(&HeaderMap::new(), &[]).is_ok());
    }
}
