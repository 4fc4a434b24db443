//! A room's whiteboard: the replica, and the ops waiting for storage in the order they arrived.
//! The ops of a tick go to the store together (`flush`, once per tick), so one transaction and
//! one fsync cover them (group commit per tick). An op is acknowledged to its author only when
//! it and every op before it are committed; a failed commit is retried (its author keeps seeing
//! it as "not synced") rather than acknowledged or dropped.
//!
//! An op is relayed to the others as soon as it is applied, while storage is keeping up: the
//! relay is not a promise (the ack is), and waiting for the fsync would put the disk's latency
//! tail into everyone's view of everyone else's pen. If the server dies before the commit, every
//! client resyncs to the stored board on reconnect and the author, never acknowledged, resends.
//! Once a commit has failed, relays wait for commits again until the backlog is stored: others
//! must not build on (erase) a stroke that may not survive, or a restart could bring it back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;
use easel_protocol::board::{Board, BoardOp, Readiness};
use easel_protocol::codec::{self, BOARD_CHUNK_BYTES};
use easel_protocol::{DecodeError, ServerMsg, encode};
use tokio::sync::mpsc;

use crate::config::Config;
use crate::store::{Committed, Fence, Store, StoreError, StoredBoard};

/// Ops logged after the last snapshot before the room writes a new one: keeps the log (and the
/// load time) bounded on long-lived boards.
const COMPACT_EVERY: u64 = 2_000;
/// Wait before retrying a failed commit (a full disk rarely frees itself in milliseconds).
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub(crate) enum LoadError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("stored board is corrupt: {0}")]
    Corrupt(#[from] DecodeError),
}

/// Why an op was not taken.
pub(super) enum Refusal {
    /// Tell the author; the op is dropped.
    Invalid(String),
    /// Too many ops wait for storage: the author should come back later (it keeps the op).
    StorageBacklog,
}

/// An op whose turn has come: acknowledge it, and relay it if it has not been relayed yet.
pub(super) struct Ready {
    pub player: u32,
    pub client_seq: u64,
    pub relay: Option<BoardOp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Applied, not yet handed to the store (that happens once per tick, in `flush`).
    Unwritten,
    /// Handed to the store, waiting for its commit.
    Waiting,
    Failed,
    Committed,
}

struct Entry {
    player: u32,
    client_seq: u64,
    /// The op while it still has to be relayed; `None` once relayed, and for a resend of an op
    /// already stored (only the ack is owed).
    relay: Option<BoardOp>,
    /// Room seq and encoding, for ops that are written.
    write: Option<(u64, Vec<u8>)>,
    state: State,
}

pub(super) struct RoomBoard {
    room: String,
    board: Board,
    store: Store,
    /// The lease every commit is fenced on, in a cluster.
    fence: Option<Fence>,
    commits: mpsc::UnboundedSender<Committed>,
    queue: VecDeque<Entry>,
    next_seq: u64,
    ops_since_snapshot: u64,
    retry_at: Option<Instant>,
    /// The encoded `BoardChunk` messages of the current board, until it changes.
    chunks: Option<Vec<Bytes>>,
    max_uncommitted: usize,
    /// A commit failed and the queue has not been empty since: relays wait for commits. Ops
    /// held back are only queued while this is set, and it is cleared only once the queue is
    /// empty, so relaying at once while it is clear never overtakes a held op.
    storage_failing: bool,
}

impl RoomBoard {
    /// The board `stored` holds; its commits go to `store` (fenced on `fence`) and their
    /// answers to `commits`.
    pub fn new(
        room: &str,
        stored: &StoredBoard,
        store: Store,
        fence: Option<Fence>,
        commits: mpsc::UnboundedSender<Committed>,
        config: &Config,
    ) -> Result<Self, LoadError> {
        let mut board = match &stored.snapshot {
            Some(bytes) => Board::decode(bytes)?,
            None => Board::default(),
        };
        for bytes in &stored.ops {
            board.apply(codec::decode_board::<BoardOp>(bytes)?);
        }
        Ok(Self {
            room: room.to_owned(),
            board,
            store,
            fence,
            commits,
            queue: VecDeque::new(),
            next_seq: stored.last_seq + 1,
            ops_since_snapshot: stored.ops.len() as u64,
            retry_at: None,
            chunks: None,
            max_uncommitted: config.limits.max_uncommitted_ops,
            storage_failing: false,
        })
    }

    pub fn len(&self) -> usize {
        self.board.len()
    }

    /// Takes an op from `player` (editing as `author`): applies and queues it for storage, or
    /// says why not. Returns the op when it is to be relayed to the others now.
    pub fn submit(
        &mut self,
        player: u32,
        author: u32,
        client_seq: u64,
        op: BoardOp,
    ) -> Result<Option<BoardOp>, Refusal> {
        if self.queue.len() >= self.max_uncommitted {
            return Err(Refusal::StorageBacklog);
        }
        match self.board.readiness(&op, author) {
            Err(e) => Err(Refusal::Invalid(e.to_string())),
            Ok(Readiness::Duplicate) => {
                self.queue.push_back(Entry { player, client_seq, relay: None, write: None, state: State::Committed });
                Ok(None)
            }
            Ok(Readiness::Ready) => {
                self.board.apply(op.clone());
                self.chunks = None;
                let seq = self.next_seq;
                self.next_seq += 1;
                let bytes = encode(&op);
                let (relay, held) = if self.storage_failing { (None, Some(op)) } else { (Some(op), None) };
                self.queue.push_back(Entry {
                    player,
                    client_seq,
                    relay: held,
                    write: Some((seq, bytes)),
                    state: State::Unwritten,
                });
                Ok(relay)
            }
        }
    }

    /// Hands the ops applied since the last flush to the store, as one commit.
    pub fn flush(&mut self) {
        let mut first_seq = None;
        let mut ops = Vec::new();
        for entry in self.queue.iter_mut().filter(|e| e.state == State::Unwritten) {
            if let Some((seq, bytes)) = &entry.write {
                first_seq.get_or_insert(*seq);
                ops.push(bytes.clone());
            }
            entry.state = State::Waiting;
        }
        if let Some(first_seq) = first_seq {
            self.store.commit(&self.room, first_seq, ops, self.fence, &self.commits);
        }
    }

    /// The store's answer to a commit; a failed one is retried `RETRY_AFTER` from `now`.
    pub fn committed(&mut self, now: Instant, committed: Committed) {
        let seqs = committed.first_seq..committed.first_seq + committed.count;
        let written = self.queue.iter_mut().filter(|e| e.write.as_ref().is_some_and(|(seq, _)| seqs.contains(seq)));
        for entry in written {
            if committed.result.is_ok() {
                entry.state = State::Committed;
                self.ops_since_snapshot += 1;
            } else {
                entry.state = State::Failed;
                self.storage_failing = true;
                self.retry_at.get_or_insert(now + RETRY_AFTER);
            }
        }
    }

    /// The ops at the front of the queue that are committed, in arrival order.
    pub fn take_committed(&mut self) -> Vec<Ready> {
        let mut ready = Vec::new();
        while self.queue.front().is_some_and(|e| e.state == State::Committed) {
            if let Some(entry) = self.queue.pop_front() {
                ready.push(Ready { player: entry.player, client_seq: entry.client_seq, relay: entry.relay });
            }
        }
        if self.queue.is_empty() {
            self.storage_failing = false;
        }
        ready
    }

    pub fn has_uncommitted(&self) -> bool {
        !self.queue.is_empty()
    }

    /// When failed commits are due for another try, if any failed.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    pub fn retry(&mut self) {
        self.retry_at = None;
        for entry in self.queue.iter_mut().filter(|e| e.state == State::Failed) {
            if let Some((seq, bytes)) = &entry.write {
                entry.state = State::Waiting;
                self.store.commit(&self.room, *seq, vec![bytes.clone()], self.fence, &self.commits);
            }
        }
    }

    /// Writes a snapshot when the log has grown long and nothing is in flight.
    pub fn maybe_compact(&mut self) {
        if self.ops_since_snapshot >= COMPACT_EVERY {
            self.compact_now();
        }
    }

    pub fn compact_now(&mut self) {
        if self.ops_since_snapshot > 0 && self.queue.is_empty() {
            self.store.compact(&self.room, self.board.encode(), self.next_seq - 1, self.fence);
            self.ops_since_snapshot = 0;
        }
    }

    /// The board as `BoardChunk` messages (encoded once per change, shared by every joiner).
    pub fn chunks(&mut self) -> Vec<Bytes> {
        if self.chunks.is_none() {
            let encoded = self.board.encode();
            let parts: Vec<&[u8]> = encoded.chunks(BOARD_CHUNK_BYTES).collect();
            let total = parts.len() as u32;
            let chunks = parts
                .into_iter()
                .enumerate()
                .map(|(index, bytes)| {
                    Bytes::from(encode(&ServerMsg::BoardChunk { index: index as u32, total, bytes: bytes.to_vec() }))
                })
                .collect();
            self.chunks = Some(chunks);
        }
        self.chunks.clone().unwrap_or_default()
    }
}
