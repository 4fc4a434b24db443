//! Easel's protocol on one WebSocket: a loop that feeds the client's messages to its `Session`
//! and writes what the room sends (replies, reliable messages, snapshots a busy socket queued),
//! each write bounded in time. The room writes most snapshots to the socket itself (`socket`).

use std::future::pending;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use easel_protocol::{Identity, close};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::{self, Message};

use super::{Read, Socket};
use crate::net::AppState;
use crate::net::socket::SocketWriter;
use crate::room::fanout::Fanout;
use crate::room::{EncodedSnapshot, Ending, Joined, MemberLink, RoomHandle};
use crate::session::{CloseReason, Session, SessionEvent};
use crate::sim::TickInput;

/// Queued messages written with one flush at most: bounds the time one write holds the loop.
const MAX_BATCH: usize = 256;

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

pub(super) struct Connection {
    socket: Socket,
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
    pub fn new(socket: Socket, writer: Arc<SocketWriter>, state: AppState) -> Self {
        let session = Session::new(Instant::now(), &state.config.limits);
        Self { socket, writer, session, state, membership: None }
    }

    pub async fn run(mut self) {
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
                Step::Inbound(read) => match Read::of(read) {
                    Read::Message(message) => self.inbound(message).await?,
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

    /// Handles one message from the client.
    async fn inbound(&mut self, message: Message) -> Result<(), CloseReason> {
        self.state.metrics.messages_in.inc();
        let event = match message {
            Message::Binary(bytes) => self.session.handle_binary(Instant::now(), &bytes)?,
            Message::Text(_) => return Err(self.session.handle_text()),
            // tungstenite answers pings itself; the frame budget counts them (`socket`). A close
            // never gets here (`Read::of`).
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => None,
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
        Ok(())
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
