//! WebSocket endpoints: the edge they share (the origin and handshake checks, frame and message
//! limits, the upgraded socket, the closing handshake) and what runs on it: Easel's protocol on
//! `/ws` (`connection`) or, in a build with the `autobahn-echo` feature, an echo on
//! `/autobahn-echo` for Autobahn|Testsuite (`echo`).
//!
//! The upgrade is done here rather than by axum's `WebSocketUpgrade` because the room needs the
//! TCP socket itself (`socket`, decision 0024).

mod connection;
#[cfg(feature = "autobahn-echo")]
pub(super) mod echo;
pub mod frame_meter;
pub mod handshake;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use easel_protocol::close;
use easel_protocol::codec::MAX_CLIENT_MESSAGE_BYTES;
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_rustls::server::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::Instrument;

use super::AppState;
use super::socket::{SocketIo, SocketWriter, TooManyFrames};
use crate::room::Ending;
use crate::session::CloseReason;
use crate::shards;

/// Outgoing bytes tungstenite may hold for a connection before writes fail: a few snapshots of
/// a full room. Beyond it the client is not reading and will be dropped by the write timeout.
const MAX_WRITE_BUFFER: usize = 4 * 1024 * 1024;
/// Read chunk per connection, kept for the connection's life. tungstenite zeroes this much
/// before every read, including the one that finds the socket empty, and nearly every client
/// message is an input of about 20 bytes: at 8 KiB the zeroing was 3 % of the server's CPU at
/// N = 500 (`perf`), and 1 KiB was a twelfth of an idle connection's memory. A long stroke
/// (messages go up to 16 KiB) takes several reads; tungstenite's 128 KiB default would also
/// cost 128 MB of memory at 1,000 players.
const READ_BUFFER: usize = 512;
/// How long a closing connection waits for the client's side of the closing handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A client that sent nothing for this long after the server's close has sent all it will.
const QUIET: Duration = Duration::from_millis(100);

/// A WebSocket as every endpoint gets it.
pub(super) type Socket = WebSocketStream<SocketIo>;

/// `GET /ws`: Easel's protocol.
pub(super) async fn upgrade(State(state): State<AppState>, request: Request) -> Response {
    accept(state, request, |socket, writer, state, id| connection::Connection::new(socket, writer, state, id).run())
        .await
}

/// Checks the origin and the handshake (RFC 6455, 4.2.1), answers 101 and runs `serve` on the
/// upgraded socket; or answers why not.
async fn accept<Serve, Served>(state: AppState, mut request: Request, serve: Serve) -> Response
where
    Serve: FnOnce(Socket, Arc<SocketWriter>, AppState, u64) -> Served + Send + 'static,
    Served: Future<Output = ()> + Send,
{
    let origin = request.headers().get(header::ORIGIN).map(|o| o.to_str().unwrap_or("(unreadable)").to_owned());
    let peers = state.peers_for(origin.as_deref()).await;
    let headers = request.headers();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    if let Err(reason) = super::origin::check(origin.as_deref(), host, &state.config.allowed_origins, &peers) {
        tracing::info!("refused WebSocket: {reason}");
        return (StatusCode::FORBIDDEN, reason).into_response();
    }
    if state.sessions.count() >= state.config.limits.max_connections {
        return (StatusCode::SERVICE_UNAVAILABLE, "the server is full: try again later").into_response();
    }
    let accept = match handshake::accept_key(request.version(), request.headers()) {
        Ok(accept) => accept,
        Err(refusal) => {
            let mut response = (refusal.status(), refusal.to_string()).into_response();
            if refusal == handshake::Refusal::WebSocketVersion {
                response
                    .headers_mut()
                    .insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static(handshake::WEBSOCKET_VERSION));
            }
            return response;
        }
    };
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
    let room = room_named(request.uri());
    let (id, span) = super::player::connection_span("websocket", peer);
    let upgrading = hyper::upgrade::on(&mut request);
    let guard = state.sessions.enter();
    // For the connection's own task, which runs once the upgrade is done.
    let run_span = span.clone();
    let placing = state.clone();
    let connection = async move {
        let upgraded = match upgrading.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!("WebSocket upgrade failed: {e}");
                return;
            }
        };
        // `net::serve` runs every connection on a `TokioIo` of a TCP stream, plain or in TLS.
        let (stream, tls, read_buf) = match upgraded.downcast::<TokioIo<TcpStream>>() {
            Ok(parts) => (parts.io.into_inner(), None, parts.read_buf),
            Err(upgraded) => match upgraded.downcast::<TokioIo<TlsStream<TcpStream>>>() {
                Ok(parts) => {
                    let (stream, session) = parts.io.into_inner().into_inner();
                    // Boxed at once: the session is large, and held by value it would take its
                    // size in every connection's future, TLS or not, for the connection's life.
                    (stream, Some(Box::new(session)), parts.read_buf)
                }
                Err(_) => {
                    tracing::error!("WebSocket upgrade on a connection that is not a TCP stream");
                    return;
                }
            },
        };
        // The client may have sent its first frames with the handshake. They are copied out of
        // hyper's 8 KB read buffer, which must not outlive this line: held by the connection's
        // task, it would be a third of what an idle connection costs.
        let first_frames = read_buf.to_vec();
        drop(read_buf);
        let run = move |stream: TcpStream| async move {
            let metrics = state.metrics.clone();
            let (io, writer) = match tls {
                None => SocketWriter::split(stream, metrics, &state.config.limits),
                Some(session) => SocketWriter::split_tls(stream, session, metrics, &state.config.limits),
            };
            let config = WebSocketConfig::default()
                .max_message_size(Some(MAX_CLIENT_MESSAGE_BYTES))
                .max_frame_size(Some(MAX_CLIENT_MESSAGE_BYTES))
                .max_write_buffer_size(MAX_WRITE_BUFFER)
                .read_buffer_size(READ_BUFFER);
            let socket = WebSocketStream::from_partially_read(io, first_frames, Role::Server, Some(config)).await;
            state.metrics.websocket_connections.inc();
            state.metrics.connections_total.inc();
            serve(socket, writer, state.clone(), id).await;
            state.metrics.websocket_connections.dec();
            drop(guard);
        };
        // A connection that named an open room moves to the room's shard before its first
        // frame is read (`shards`); one whose room is not open yet opens it where it is. Either
        // way it runs as a task of its own, so what the upgrade needed is freed now rather than
        // carried in every connection's future for its life.
        let runtime = room.and_then(|room| placing.rooms.runtime_of(&room)).unwrap_or_else(Handle::current);
        if shards::spawn_with_stream(&runtime, stream, move |stream| run(stream).instrument(run_span)) {
            placing.metrics.connections_moved_to_room.inc();
        }
    };
    tokio::spawn(connection.instrument(span));
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The room a WebSocket's upgrade request names (`/ws?room=…`), as a `Hello` would name it: a
/// hint of where the connection belongs, not a join (the `Hello` still decides).
fn room_named(uri: &axum::http::Uri) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Hint {
        room: String,
    }
    let Query(hint) = Query::<Hint>::try_from_uri(uri).ok()?;
    easel_protocol::text::clean_room(&hint.room).ok()
}

/// What one read from the client means.
pub(super) enum Read {
    /// A data message, or a ping or pong (tungstenite answers pings itself).
    Message(Message),
    /// The client closed (the reply is queued: `answer_close` sends it), or the network cut the
    /// connection without a close.
    Ended(Ending),
    /// A rule was broken: close with this.
    Failed(CloseReason),
}

impl Read {
    pub(super) fn of(frame: Option<Result<Message, tungstenite::Error>>) -> Self {
        match frame {
            Some(Ok(Message::Close(_))) => Read::Ended(Ending::Closed),
            Some(Ok(message)) => Read::Message(message),
            // A TCP end without the WebSocket close is the network (or a crashed client), not a
            // player leaving.
            None | Some(Err(tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake))) => {
                Read::Ended(Ending::Dropped)
            }
            Some(Err(e)) => Read::Failed(read_error(e)),
        }
    }
}

/// The close a read error earns: 1009 for an oversize message, 1007 for text that is not
/// UTF-8, 1008 past the frame budget, 1002 for a broken frame.
fn read_error(error: tungstenite::Error) -> CloseReason {
    match error {
        tungstenite::Error::Capacity(e) => CloseReason::new(close::MESSAGE_TOO_BIG, e.to_string()),
        tungstenite::Error::Protocol(e) => CloseReason::new(close::PROTOCOL_ERROR, e.to_string()),
        tungstenite::Error::Utf8(_) => CloseReason::new(close::INVALID_PAYLOAD, "text that is not UTF-8"),
        tungstenite::Error::Io(e) if e.get_ref().is_some_and(|inner| inner.is::<TooManyFrames>()) => {
            CloseReason::new(close::POLICY_VIOLATION, TooManyFrames.to_string())
        }
        other => CloseReason::new(close::GOING_AWAY, other.to_string()),
    }
}

/// Sends the reply to the client's close, which tungstenite queued when it read it (RFC 6455
/// §5.5.1: the echo of a valid code, 1002 for an invalid one), so the client sees a clean close;
/// then the socket may be dropped.
pub(super) async fn answer_close(socket: &mut Socket) {
    // Once the reply is out, tungstenite reports the connection closed: that is the success.
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, socket.flush()).await;
}

/// Sends a close frame (best effort, bounded in time) and lets the client finish the closing
/// handshake; then the server closes the TCP connection, as RFC 6455 prefers. A client that goes
/// on sending instead (a flood, a broken frame stream) has what it sends read and dropped until
/// it pauses: closing a socket with unread bytes makes the kernel answer with a reset, and a
/// reset makes the client's kernel discard the close frame unread.
pub(super) async fn close(socket: &mut Socket, reason: CloseReason, write_timeout: Duration) {
    let frame = CloseFrame { code: reason.code.into(), reason: reason.reason.into() };
    let _ = tokio::time::timeout(write_timeout.min(CLOSE_TIMEOUT), async {
        if let Some(farewell) = reason.farewell {
            socket.feed(Message::Binary(farewell)).await?;
        }
        socket.send(Message::Close(Some(frame))).await?;
        while let Some(read) = socket.next().await {
            match read {
                Ok(Message::Close(_)) => return Ok(()),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        // tungstenite ends its stream at the first error; read the rest raw, until the client
        // falls quiet (its close reply, if it sends one, is among what is read).
        // On the heap: an array here would sit in every connection's task, unused until its end
        // (an idle connection's task was 9 KB, 8 of them this array and its copy).
        let mut scrap = vec![0u8; 4096];
        while let Ok(Ok(1..)) = tokio::time::timeout(QUIET, socket.get_mut().read(&mut scrap)).await {}
        Ok::<(), tungstenite::Error>(())
    })
    .await;
}
