//! Easel's protocol on one WebSocket: a loop that feeds the client's messages to its `Session`
//! and writes what the room sends (replies, reliable messages, snapshots a busy socket queued),
//! each write bounded in time. The room writes most snapshots to the socket itself (`socket`).

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use easel_protocol::close;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::{self, Message};

use super::{Read, Socket};
use crate::net::AppState;
use crate::net::player::{Player, Reach, ending_of, kicked, next_message, next_snapshot, sleep_until};
use crate::net::socket::SocketWriter;
use crate::room::{EncodedSnapshot, Ending};
use crate::session::CloseReason;

/// Queued messages written with one flush at most: bounds the time one write holds the loop.
const MAX_BATCH: usize = 256;

pub(super) struct Connection {
    socket: Socket,
    /// The socket's write side, shared with the room's snapshot hand-over.
    writer: Arc<SocketWriter>,
    player: Player,
    state: AppState,
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
    pub fn new(socket: Socket, writer: Arc<SocketWriter>, state: AppState, id: u64) -> Self {
        // Over TCP a written snapshot arrives before anything written after it: writes count.
        let reach = Reach { delivery: Arc::clone(&writer.delivery), direct: Some(writer.clone()) };
        let player = Player::new(state.clone(), reach, id);
        Self { socket, writer, player, state }
    }

    pub async fn run(mut self) {
        let outcome = self.serve().await;
        self.player.leave(match &outcome {
            Ok(ending) => *ending,
            Err(reason) => ending_of(reason),
        });
        if let Err(reason) = outcome {
            if reason.code != close::NORMAL && reason.code != close::GOING_AWAY {
                self.state.metrics.closed_for_cause.inc();
                tracing::info!(code = reason.code, reason = %reason.reason, "closing connection");
            }
            // Boxed: the closing handshake's future is bigger than the connection's whole
            // loop, and is needed only at the end.
            Box::pin(self.close(reason)).await;
        }
    }

    /// Runs until the client leaves or the network ends the connection (`Ok`), or the
    /// connection must be closed (`Err`).
    async fn serve(&mut self) -> Result<Ending, CloseReason> {
        loop {
            let deadline = self.player.deadline();
            let step = {
                let (kick, messages, snapshots) = self.player.room_channels();
                tokio::select! {
                    biased;
                    reason = kicked(kick) => Step::Close(reason),
                    Some(bytes) = next_message(messages) => Step::Send(bytes),
                    () = self.writer.finish_write.notified() => Step::FinishWrite,
                    snapshot = next_snapshot(snapshots) => Step::Snapshot(snapshot),
                    frame = self.socket.next() => Step::Inbound(frame),
                    _ = sleep_until(deadline) => {
                        self.player.handle_timeout(Instant::now())?;
                        continue;
                    }
                }
            };
            match step {
                Step::Close(reason) => return Err(reason),
                Step::FinishWrite => self.flush().await?,
                Step::Send(bytes) => self.send_queued(bytes, None).await?,
                Step::Snapshot(snapshot) => self.send_queued(snapshot.bytes, Some(snapshot.tick)).await?,
                Step::Inbound(read) => match Read::of(read) {
                    Read::Message(Message::Binary(bytes)) => {
                        if let Some(reply) = self.player.handle_binary(Instant::now(), &bytes).await? {
                            self.send(reply).await?;
                        }
                    }
                    Read::Message(Message::Text(_)) => return Err(self.player.handle_text()),
                    // tungstenite answers pings itself; the frame budget counts them (`socket`).
                    Read::Message(_) => {}
                    Read::Ended(ending) => {
                        if ending == Ending::Closed {
                            super::answer_close(&mut self.socket).await;
                        }
                        return Ok(ending);
                    }
                    Read::Failed(reason) => return Err(reason),
                },
            }
        }
    }

    /// Sends `first` (the snapshot of tick `first_snapshot`, or a queued message) and whatever
    /// else the room has for this client by now, the newest snapshot included, with one flush:
    /// under a burst (a whiteboard reconnect relayed to everyone) that is one write instead of
    /// hundreds, and a message queued on a tick (an orb event, an input-timing report) goes out
    /// with that tick's snapshot.
    async fn send_queued(&mut self, first: Bytes, first_snapshot: Option<u32>) -> Result<(), CloseReason> {
        let mut batch = vec![first];
        let mut snapshot_tick = first_snapshot;
        if let Some(membership) = self.player.membership() {
            while batch.len() < MAX_BATCH {
                match membership.messages.try_recv() {
                    Some(bytes) => batch.push(bytes),
                    None => break,
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
        self.player.count_sent(count, bytes);
        if let Some(tick) = snapshot_tick
            && let Some(m) = self.player.membership()
        {
            m.fanout.written(tick);
            self.writer.delivery.written(tick);
        }
        self.settle();
        Ok(())
    }

    async fn send(&mut self, message: Bytes) -> Result<(), CloseReason> {
        let len = message.len() as u64;
        within_write_timeout(&self.state, self.socket.send(Message::Binary(message))).await?;
        self.player.count_sent(1, len);
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
        let writer = Arc::clone(&self.writer);
        if let Some(m) = self.player.membership() {
            let (messages, snapshots) = (&m.messages, &m.snapshots);
            writer.idle_if(|| messages.is_empty() && !snapshots.has_changed().unwrap_or(false));
        }
    }

    /// Closes the connection with `reason`.
    async fn close(mut self, reason: CloseReason) {
        super::close(&mut self.socket, reason, self.state.config.limits.write_timeout).await;
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
