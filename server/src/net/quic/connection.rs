//! One WebTransport session: its path and origin checked, then a loop that reads the client's
//! reliable stream as frames and its datagrams as messages, both fed to the `Player`, and writes
//! the room's reliable messages as frames, each write bounded in time. Snapshots go out as
//! datagrams from the room's hand-over itself (`DatagramLink`): a datagram never waits behind
//! another, and a lost one costs only itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Instant;

use bytes::Bytes;
use easel_protocol::close;
use easel_protocol::codec::MAX_CLIENT_MESSAGE_BYTES;
use easel_protocol::datagram;
use easel_protocol::stream::{FrameReader, StreamError, StreamFrame, close_frame, message_frame};
use tracing::Instrument;
use wtransport::endpoint::IncomingSession;
use wtransport::{Connection, RecvStream, SendStream, VarInt};

use super::PATH;
use crate::metrics::Metrics;
use crate::net::AppState;
use crate::net::player::{Player, Reach, connection_span, ending_of, kicked, next_message, next_snapshot, sleep_until};
use crate::room::{Delivery, DirectWrite, EncodedSnapshot, Ending};
use crate::session::CloseReason;

/// Queued messages written with one write at most: bounds the time one write holds the loop.
const MAX_BATCH: u64 = 256;
/// How long closing waits for the client to receive the close frame.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Takes a session request through its checks and serves it.
pub(super) async fn accept(incoming: IncomingSession, state: AppState) {
    let (id, span) = connection_span("webtransport", Some(incoming.remote_address()));
    accept_as(incoming, state, id).instrument(span).await;
}

async fn accept_as(incoming: IncomingSession, state: AppState, id: u64) {
    let handshake = state.config.limits.hello_timeout;
    let Ok(Ok(request)) = tokio::time::timeout(handshake, incoming).await else { return };
    if request.path() != PATH {
        request.not_found().await;
        return;
    }
    let host = crate::net::origin::page_host(request.authority(), state.http_port);
    if let Err(reason) = crate::net::origin::check(
        request.origin(),
        &host,
        &state.config.allowed_origins,
        &state.peers_for(request.origin()).await,
    ) {
        tracing::info!("refused WebTransport: {reason}");
        request.forbidden().await;
        return;
    }
    let Ok(Ok(connection)) = tokio::time::timeout(handshake, request.accept()).await else { return };
    let guard = state.sessions.enter();
    state.metrics.webtransport_connections.inc();
    state.metrics.connections_total.inc();
    Session::new(connection, state.clone(), id).run().await;
    state.metrics.webtransport_connections.dec();
    drop(guard);
}

/// A session's datagrams, where the room's hand-over sends snapshots at once. Unlike a socket
/// it is never busy: QUIC queues datagrams apart from the stream, and drops the oldest when a
/// client cannot keep up.
struct DatagramLink {
    connection: Connection,
    /// Numbers the messages sent in parts.
    group: AtomicU16,
    metrics: Arc<Metrics>,
}

impl DirectWrite for DatagramLink {
    fn write_now_or(&self, report: Option<&Bytes>, snapshot: &EncodedSnapshot, queue: &mut dyn FnMut()) -> bool {
        // Asked each time: the path's size may change.
        let Some(max) = self.connection.max_datagram_size() else {
            queue();
            return false;
        };
        for message in report.into_iter().chain([&snapshot.bytes]) {
            let group = self.group.fetch_add(1, Ordering::Relaxed);
            // Too large even in 255 parts: the stream carries it (`Session::send_snapshot`).
            let Some(parts) = datagram::datagrams(message, max, group) else {
                queue();
                return false;
            };
            for part in parts {
                if self.connection.send_datagram(&part).is_err() {
                    queue();
                    return false;
                }
            }
            self.metrics.messages_out.inc();
            self.metrics.bytes_out.add(message.len() as u64);
        }
        true
    }
}

struct Session {
    connection: Connection,
    player: Player,
    state: AppState,
}

/// The client's reliable stream.
struct Stream {
    send: SendStream,
    recv: RecvStream,
    frames: FrameReader,
}

/// What the session does next.
enum Step {
    Close(CloseReason),
    Send(Bytes),
    Snapshot(EncodedSnapshot),
    Read(Result<Option<usize>, wtransport::error::StreamReadError>),
    Datagram(Result<wtransport::datagram::Datagram, wtransport::error::ConnectionError>),
}

impl Session {
    fn new(connection: Connection, state: AppState, id: u64) -> Self {
        let link =
            DatagramLink { connection: connection.clone(), group: AtomicU16::new(0), metrics: state.metrics.clone() };
        // Datagrams may be lost: only what the client acknowledges is a baseline.
        let reach = Reach { delivery: Arc::new(Delivery::for_lossy_link()), direct: Some(Arc::new(link)) };
        let player = Player::new(state.clone(), reach, id);
        Self { connection, player, state }
    }

    async fn run(mut self) {
        // The client opens its reliable stream first, within the handshake time.
        let accepted = tokio::time::timeout(self.state.config.limits.hello_timeout, self.connection.accept_bi()).await;
        let Ok(Ok((send, recv))) = accepted else {
            self.connection.close(code(close::POLICY_VIOLATION), b"no stream within the handshake time");
            return;
        };
        let mut stream = Stream { send, recv, frames: FrameReader::new(MAX_CLIENT_MESSAGE_BYTES) };
        let outcome = self.serve(&mut stream).await;
        self.player.leave(match &outcome {
            Ok(ending) => *ending,
            Err(reason) => ending_of(reason),
        });
        let reason = match outcome {
            Ok(Ending::Dropped) => return,
            Ok(Ending::Closed) => CloseReason::new(close::NORMAL, "bye"),
            Err(reason) => {
                if reason.code != close::NORMAL && reason.code != close::GOING_AWAY {
                    self.state.metrics.closed_for_cause.inc();
                    tracing::info!(code = reason.code, reason = %reason.reason, "closing WebTransport session");
                }
                reason
            }
        };
        // The close frame first, for the client to read the code and reason (closing a
        // WebTransport session tells a browser neither); then the connection.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, async {
            let mut last = reason.farewell.as_deref().map(message_frame).unwrap_or_default();
            last.extend(close_frame(reason.code, &reason.reason));
            stream.send.write_all(&last).await?;
            stream.send.finish().await
        })
        .await;
        self.connection.close(code(reason.code), reason.reason.as_bytes());
    }

    /// Runs until the client closes or the connection is lost (`Ok`), or the session must be
    /// closed (`Err`).
    async fn serve(&mut self, stream: &mut Stream) -> Result<Ending, CloseReason> {
        let mut buffer = vec![0u8; 4096];
        loop {
            let deadline = self.player.deadline();
            let step = {
                let (kick, messages, snapshots) = self.player.room_channels();
                tokio::select! {
                    biased;
                    reason = kicked(kick) => Step::Close(reason),
                    Some(bytes) = next_message(messages) => Step::Send(bytes),
                    snapshot = next_snapshot(snapshots) => Step::Snapshot(snapshot),
                    read = stream.recv.read(&mut buffer) => Step::Read(read),
                    datagram = self.connection.receive_datagram() => Step::Datagram(datagram),
                    _ = sleep_until(deadline) => {
                        self.player.handle_timeout(Instant::now())?;
                        continue;
                    }
                }
            };
            match step {
                Step::Close(reason) => return Err(reason),
                Step::Send(first) => self.send_queued(stream, first).await?,
                // Too large for datagrams: the stream carries it.
                Step::Snapshot(snapshot) => self.write(stream, &message_frame(&snapshot.bytes), 1).await?,
                // The stream's end without a close frame, or the connection lost: the network.
                Step::Read(Ok(None) | Err(_)) | Step::Datagram(Err(_)) => return Ok(Ending::Dropped),
                Step::Read(Ok(Some(read))) => {
                    stream.frames.push(&buffer[..read]);
                    loop {
                        match stream.frames.next_frame() {
                            Ok(None) => break,
                            Ok(Some(StreamFrame::Message(message))) => {
                                if let Some(reply) = self.player.handle_binary(Instant::now(), &message).await? {
                                    self.write(stream, &message_frame(&reply), 1).await?;
                                }
                            }
                            Ok(Some(StreamFrame::Close { .. })) => return Ok(Ending::Closed),
                            Err(e @ StreamError::TooLarge { .. }) => {
                                return Err(CloseReason::new(close::MESSAGE_TOO_BIG, e.to_string()));
                            }
                            Err(e) => return Err(CloseReason::new(close::PROTOCOL_ERROR, e.to_string())),
                        }
                    }
                }
                Step::Datagram(Ok(datagram)) => {
                    let payload = datagram.payload();
                    // A client's datagrams are whole messages: inputs and acknowledgements.
                    let message = datagram::whole(&payload)
                        .map_err(|e| CloseReason::new(close::PROTOCOL_ERROR, format!("datagram: {e}")))?;
                    if let Some(reply) = self.player.handle_binary(Instant::now(), message).await? {
                        self.write(stream, &message_frame(&reply), 1).await?;
                    }
                }
            }
        }
    }

    /// Writes `first` and whatever else the room has queued for this client, in one write.
    async fn send_queued(&mut self, stream: &mut Stream, first: Bytes) -> Result<(), CloseReason> {
        let mut bytes = message_frame(&first);
        let mut count = 1u64;
        if let Some(membership) = self.player.membership() {
            while count < MAX_BATCH {
                let Some(message) = membership.messages.try_recv() else { break };
                bytes.extend(message_frame(&message));
                count += 1;
            }
        }
        self.write(stream, &bytes, count).await
    }

    /// Writes `bytes` (`messages` frames) to the stream within the write timeout: a client
    /// that does not take them in time is closed with 1013.
    async fn write(&mut self, stream: &mut Stream, bytes: &[u8], messages: u64) -> Result<(), CloseReason> {
        match tokio::time::timeout(self.state.config.limits.write_timeout, stream.send.write_all(bytes)).await {
            Ok(Ok(())) => {
                self.player.count_sent(messages, bytes.len() as u64);
                Ok(())
            }
            Ok(Err(_)) => Err(CloseReason::new(close::GOING_AWAY, "connection lost")),
            Err(_) => Err(CloseReason::new(close::TRY_AGAIN_LATER, "client is not reading")),
        }
    }
}

/// A WebSocket close code as a QUIC application error code.
fn code(code: u16) -> VarInt {
    VarInt::from_u32(u32::from(code))
}
