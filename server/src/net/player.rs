//! What a connection does with its client, whatever the transport (WebSocket, WebTransport):
//! the client's `Session`, and once a room has taken its `Hello`, the membership: the room's
//! queue of reliable messages for it, its snapshot slot and its kick. The transport feeds it the
//! client's messages and the time, and writes what it hands back and what the room sends.

use std::future::pending;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use easel_protocol::{Identity, ServerMsg, close, encode};
use tokio::sync::{oneshot, watch};
use tracing::field::Empty;

use super::AppState;
use crate::cluster::Placement;
use crate::room::fanout::Fanout;
use crate::room::message_queue::message_queue;
use crate::room::{
    Delivery, DirectWrite, EncodedSnapshot, Ending, Joined, MemberLink, MessageReceiver, RoomHandle, Traffic,
};
use crate::session::{CloseReason, Session, SessionEvent};
use crate::sim::TickInput;

/// Numbers connections: logs name them, and a room tells a resumed player's new connection from
/// its old one by them.
static NEXT_CONNECTION: AtomicU64 = AtomicU64::new(1);

/// A new connection's number and the span every log line about it is written in: its id,
/// transport and peer address, and once it joined, its room and player.
pub(super) fn connection_span(transport: &'static str, peer: Option<SocketAddr>) -> (u64, tracing::Span) {
    let id = NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed);
    let peer = peer.map(tracing::field::display);
    let span = tracing::info_span!("connection", id, transport = %transport, peer, room = Empty, player = Empty);
    (id, span)
}

/// How the room reaches a connection's client, as its transport has it.
pub(super) struct Reach {
    /// The snapshot the client is sure to hold: written (over TCP) or acknowledged (over
    /// datagrams).
    pub delivery: Arc<Delivery>,
    /// Where the room's hand-over writes snapshots at once, if the transport can take them.
    pub direct: Option<Arc<dyn DirectWrite>>,
}

/// What a joined connection learned from its room.
pub(super) struct Membership {
    room: RoomHandle,
    pub player_id: u32,
    connection: u64,
    /// The newest input seq forwarded to the room: repeats in later messages are not sent again.
    last_input: u32,
    pub messages: MessageReceiver,
    pub snapshots: watch::Receiver<EncodedSnapshot>,
    pub kick: oneshot::Receiver<CloseReason>,
    pub fanout: Arc<Fanout>,
    /// The room's byte counts.
    traffic: Arc<Traffic>,
}

/// A joined connection's kick, reliable messages and snapshots, borrowed at once.
pub(super) type RoomChannels<'a> = (
    Option<&'a mut oneshot::Receiver<CloseReason>>,
    Option<&'a mut MessageReceiver>,
    Option<&'a mut watch::Receiver<EncodedSnapshot>>,
);

pub(super) struct Player {
    session: Session,
    state: AppState,
    reach: Reach,
    /// Its number (`connection_span`).
    connection: u64,
    membership: Option<Membership>,
}

impl Player {
    pub fn new(state: AppState, reach: Reach, connection: u64) -> Self {
        let session = Session::new(Instant::now(), &state.config.limits);
        Self { session, state, reach, connection, membership: None }
    }

    /// When `handle_timeout` is due, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        self.session.deadline()
    }

    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), CloseReason> {
        self.session.handle_timeout(now)
    }

    /// A text message: not part of the protocol.
    pub fn handle_text(&mut self) -> CloseReason {
        self.session.handle_text()
    }

    pub fn membership(&mut self) -> Option<&mut Membership> {
        self.membership.as_mut()
    }

    /// What a connection's loop waits on from the room: its kick, its reliable messages and its
    /// snapshots (each `None` before joining, which `kicked`, `next_message` and
    /// `next_snapshot` take as never).
    pub fn room_channels(&mut self) -> RoomChannels<'_> {
        match self.membership.as_mut() {
            Some(m) => (Some(&mut m.kick), Some(&mut m.messages), Some(&mut m.snapshots)),
            None => (None, None, None),
        }
    }

    /// One binary message from the client, read at `now`. `Ok(Some(bytes))` is an encoded
    /// message to send back to it at once: a reply, or the `Welcome`.
    pub async fn handle_binary(&mut self, now: Instant, bytes: &[u8]) -> Result<Option<Bytes>, CloseReason> {
        self.state.metrics.messages_in.inc();
        self.state.metrics.bytes_in.add(bytes.len() as u64);
        if let Some(m) = &self.membership {
            m.traffic.received(bytes.len() as u64);
        }
        let Some(event) = self.session.handle_binary(now, bytes)? else { return Ok(None) };
        let delivery = &self.reach.delivery;
        match event {
            SessionEvent::Join { name, room, identity, resume, seat } => {
                // Boxed: a join (placement in a cluster included) is several KB of future that
                // every connection's task would otherwise carry, inline, for as long as it lives.
                return Box::pin(self.join(name, &room, identity, resume, seat)).await.map(Some);
            }
            SessionEvent::Reply(msg) => return Ok(Some(Bytes::from(encode(&msg)))),
            SessionEvent::Input { seq, ack, dirs } => {
                if let Some(m) = &mut self.membership {
                    delivery.acknowledged(ack);
                    for input in TickInput::unpack(m.player_id, seq, &dirs, &mut m.last_input) {
                        m.room.input(input, now);
                    }
                }
            }
            // Only a joined session yields acknowledgements.
            SessionEvent::Ack { tick } => delivery.acknowledged(tick),
            SessionEvent::SnapshotLost { newest } => {
                // Back to the newest tick it decoded: the room encodes against it, or in full if
                // it no longer has that one.
                if let Some(m) = &self.membership {
                    delivery.lost(newest);
                    m.room.snapshot_lost(m.player_id).await;
                }
            }
            SessionEvent::Chat { text } => {
                if let Some(m) = &self.membership {
                    m.room.chat(m.player_id, text);
                }
            }
            SessionEvent::Board { client_seq, op } => {
                if let Some(m) = &self.membership {
                    m.room.board(m.player_id, client_seq, op).await;
                }
            }
            SessionEvent::BoardSync => {
                if let Some(m) = &self.membership {
                    m.room.board_sync(m.player_id);
                }
            }
            SessionEvent::Presence(presence) => {
                if let Some(m) = &self.membership {
                    m.room.presence(m.player_id, presence);
                }
            }
        }
        Ok(None)
    }

    /// Asks the room to take the player; returns the encoded `Welcome`. In a cluster, a room
    /// not open here is placed first: here (it opens under its lease), or on another node, and
    /// then the player is sent there (`Redirect`, then a close).
    async fn join(
        &mut self,
        name: String,
        room: &str,
        claimed: Option<Identity>,
        resume: Option<[u8; 16]>,
        seat: Option<Vec<u8>>,
    ) -> Result<Bytes, CloseReason> {
        let lease = match &self.state.cluster {
            Some(cluster) if !self.state.rooms.is_open(room) => match cluster.place(room, seat.as_deref()).await {
                Ok(Placement::Here(lease)) => Some(lease),
                Ok(Placement::Elsewhere { url, seat }) => {
                    tracing::debug!(room, url, "redirected to the room's node");
                    let redirect = Bytes::from(encode(&ServerMsg::Redirect { url, seat }));
                    return Err(CloseReason::with_farewell(close::NORMAL, "redirected", redirect));
                }
                Err(e) => {
                    tracing::warn!(room, "cannot place the room: {e}");
                    return Err(CloseReason::new(close::TRY_AGAIN_LATER, "the cluster cannot place this room now"));
                }
            },
            _ => None,
        };
        let identity = self.state.store.identify(claimed).await.map_err(|e| {
            tracing::error!("identity lookup failed: {e}");
            CloseReason::new(close::TRY_AGAIN_LATER, "server storage unavailable")
        })?;
        let (messages_tx, messages) = message_queue(self.state.config.limits.outbound_queue);
        let (kick_tx, kick) = oneshot::channel();
        let connection = self.connection;
        let link = MemberLink {
            messages: messages_tx,
            kick: kick_tx,
            connection,
            delivery: Arc::clone(&self.reach.delivery),
            resume,
            socket: self.reach.direct.clone(),
        };
        let author = identity.author;
        let (handle, answer) = self.state.rooms.join(room, name.clone(), identity, link, lease)?;
        let joined: Joined = match tokio::time::timeout(self.state.config.limits.hello_timeout, answer).await {
            Ok(Ok(result)) => result?,
            Ok(Err(_)) | Err(_) => return Err(CloseReason::new(close::TRY_AGAIN_LATER, "the room did not answer")),
        };
        self.session.joined();
        let span = tracing::Span::current();
        span.record("room", tracing::field::display(room)).record("player", joined.player_id);
        tracing::info!(name, author, resumed = joined.resumed, "joined");
        self.membership = Some(Membership {
            room: handle,
            player_id: joined.player_id,
            connection,
            last_input: 0,
            messages,
            snapshots: joined.snapshots,
            kick,
            fanout: joined.fanout,
            traffic: joined.traffic,
        });
        Ok(joined.welcome)
    }

    /// Counts `messages` sent to the client, `bytes` of payload, for the server and the room.
    pub fn count_sent(&self, messages: u64, bytes: u64) {
        self.state.metrics.messages_out.add(messages);
        self.state.metrics.bytes_out.add(bytes);
        if let Some(m) = &self.membership {
            m.traffic.sent(bytes);
        }
    }

    /// The connection ended: the room keeps the player for a resume, or lets it go.
    pub fn leave(&self, ending: Ending) {
        if let Some(m) = &self.membership {
            match ending {
                Ending::Closed => tracing::info!("left"),
                Ending::Dropped => tracing::info!("connection lost (the player may resume)"),
            }
            m.room.leave(m.player_id, m.connection, ending);
        }
    }
}

/// The ending a connection closed with `reason` has: lost mid-write or mid-read (1001), or too
/// slow to keep up (1013), is what tells a client to come back; every rule broken is another
/// code, and the player leaves.
pub(super) fn ending_of(reason: &CloseReason) -> Ending {
    match reason.code {
        close::GOING_AWAY | close::TRY_AGAIN_LATER => Ending::Dropped,
        _ => Ending::Closed,
    }
}

/// The room's kick, or never before joining.
pub(super) async fn kicked(kick: Option<&mut oneshot::Receiver<CloseReason>>) -> CloseReason {
    match kick {
        Some(kick) => match kick.await {
            Ok(reason) => reason,
            // The room dropped us without a word: it closed.
            Err(_) => CloseReason::new(close::GOING_AWAY, "room closed"),
        },
        None => pending().await,
    }
}

/// The room's next reliable message, or never before joining.
pub(super) async fn next_message(messages: Option<&mut MessageReceiver>) -> Option<Bytes> {
    match messages {
        Some(messages) => messages.recv().await,
        None => pending().await,
    }
}

/// The newest snapshot not yet sent, or never before joining.
pub(super) async fn next_snapshot(snapshots: Option<&mut watch::Receiver<EncodedSnapshot>>) -> EncodedSnapshot {
    let Some(snapshots) = snapshots else { return pending().await };
    if snapshots.changed().await.is_err() {
        // The room is gone; `kicked` reports why.
        return pending().await;
    }
    snapshots.borrow_and_update().clone()
}

/// Completes at `deadline`, or never.
pub(super) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => pending().await,
    }
}
