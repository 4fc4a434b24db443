//! Persistence: whiteboard snapshots and op logs, and author identities. One node keeps them in
//! embedded SQLite (`sqlite`, the default); a cluster keeps them in PostgreSQL (`postgres`),
//! where every board commit is also fenced on the room's lease.
//!
//! One thread owns the database connection. Requests queue on a channel; each round takes
//! everything queued and writes all the commits in one transaction, so one fsync covers every op
//! that arrived meanwhile (group commit; rooms hand over their ops once per tick). An op is
//! acknowledged only after its transaction committed, which is what makes an acknowledged stroke
//! survive `kill -9`.

mod postgres;
mod sqlite;

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use easel_protocol::Identity;
use tokio::sync::oneshot;

pub(crate) use postgres::SCHEMA as POSTGRES_SCHEMA;

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `DIR/easel.db` (SQLite), created if missing.
    Directory(PathBuf),
    /// In memory (SQLite): for tests and throwaway servers; nothing survives the process.
    Memory,
    /// A PostgreSQL database, by its connection URL (`postgres://user@host:port/db`): the
    /// cluster's shared store.
    Postgres(String),
}

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    CreateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot start the store's thread: {0}")]
    StartThread(std::io::Error),
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] ::postgres::Error),
    #[error("the store has stopped")]
    Stopped,
    #[error(transparent)]
    Random(#[from] crate::secret::RandomSourceFailed),
}

/// A room's board as stored: the newest snapshot and the ops committed after it.
#[derive(Debug, Default)]
pub struct StoredBoard {
    pub snapshot: Option<Vec<u8>>,
    pub ops: Vec<Vec<u8>>,
    /// The seq of the last op committed (0 if none).
    pub last_seq: u64,
}

/// The lease a room's ops are written under in a cluster: the commit goes through only while
/// the room's row still names this node and this epoch, in the same transaction, so a node
/// that lost the room (paused, cut off) can never acknowledge another op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fence {
    pub node: i64,
    pub epoch: i64,
}

/// The answer to a commit, delivered on the room's channel.
#[derive(Debug)]
pub struct Committed {
    /// The room seq of the first op in the commit.
    pub first_seq: u64,
    /// How many ops (seqs `first_seq..first_seq + count`) it wrote.
    pub count: u64,
    pub result: Result<(), CommitError>,
}

/// Why a commit was not written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    /// The transaction failed (every commit in it gets the same error); a retry may succeed.
    #[error("database error: {0}")]
    Database(Arc<dyn std::error::Error + Send + Sync>),
    /// The room's lease has passed to another node (or another epoch): never retried.
    #[error("this room is now held by another server")]
    Fenced,
    #[error("the store has stopped")]
    Stopped,
}

/// Ops of one room to write, and where to say they are written.
struct PendingCommit {
    room: String,
    first_seq: u64,
    ops: Vec<Vec<u8>>,
    fence: Option<Fence>,
    done: tokio::sync::mpsc::UnboundedSender<Committed>,
}

/// A database the store thread writes to: SQLite or PostgreSQL.
trait Backend {
    fn load(&mut self, room: &str) -> Result<StoredBoard, StoreError>;
    /// Writes every commit whose fence holds, in one transaction. `Ok` says, per commit, whether
    /// it was written (`false`: fenced out); `Err` means nothing was.
    fn commit_all(&mut self, commits: &[PendingCommit]) -> Result<Vec<bool>, StoreError>;
    /// Replaces the room's snapshot and drops the ops it covers, if the fence holds.
    fn compact(
        &mut self,
        room: &str,
        snapshot: &[u8],
        through_seq: u64,
        fence: Option<Fence>,
    ) -> Result<(), StoreError>;
    /// Confirms a claimed identity (author and token match), or issues a new one.
    fn identify(&mut self, claimed: Option<Identity>) -> Result<Identity, StoreError>;
}

enum Request {
    Load { room: String, reply: oneshot::Sender<Result<StoredBoard, StoreError>> },
    Commit(PendingCommit),
    Compact { room: String, snapshot: Vec<u8>, through_seq: u64, fence: Option<Fence> },
    Identify { claimed: Option<Identity>, reply: oneshot::Sender<Result<Identity, StoreError>> },
}

/// A handle to the store thread; cheap to clone.
#[derive(Clone)]
pub struct Store {
    requests: mpsc::Sender<Request>,
}

/// Owns the store thread: dropping every `Store` handle and then `join`ing lets it finish the
/// queued writes.
pub struct StoreThread(JoinHandle<()>);

impl StoreThread {
    pub fn join(self) {
        let _ = self.0.join();
    }
}

impl Store {
    /// Opens (and creates or migrates) the database at `location`. The store's thread opens
    /// it, since PostgreSQL's blocking client cannot run on an async runtime's thread; this
    /// waits for the outcome.
    pub fn open(location: &Location) -> Result<(Store, StoreThread), StoreError> {
        let location = location.clone();
        let (opened_tx, opened) = mpsc::channel();
        let (requests, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("easel-store".to_owned())
            .spawn(move || {
                let backend: Result<Box<dyn Backend>, StoreError> = match &location {
                    Location::Directory(dir) => sqlite::Sqlite::open(Some(dir)).map(|b| Box::new(b) as _),
                    Location::Memory => sqlite::Sqlite::open(None).map(|b| Box::new(b) as _),
                    Location::Postgres(url) => postgres::Postgres::open(url).map(|b| Box::new(b) as _),
                };
                match backend {
                    Ok(backend) => {
                        let _ = opened_tx.send(Ok(()));
                        serve(backend, queue);
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                    }
                }
            })
            .map_err(StoreError::StartThread)?;
        opened.recv().map_err(|_| StoreError::Stopped)??;
        Ok((Store { requests }, StoreThread(thread)))
    }

    pub async fn load(&self, room: &str) -> Result<StoredBoard, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Load { room: room.to_owned(), reply })?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// Queues ops `first_seq..` of `room` for commit under `fence` (in a cluster); the outcome
    /// arrives on `done`, in order.
    pub fn commit(
        &self,
        room: &str,
        first_seq: u64,
        ops: Vec<Vec<u8>>,
        fence: Option<Fence>,
        done: &tokio::sync::mpsc::UnboundedSender<Committed>,
    ) {
        let count = ops.len() as u64;
        let request =
            Request::Commit(PendingCommit { room: room.to_owned(), first_seq, ops, fence, done: done.clone() });
        if self.requests.send(request).is_err() {
            let _ = done.send(Committed { first_seq, count, result: Err(CommitError::Stopped) });
        }
    }

    /// Replaces the room's snapshot and drops the ops it covers (best effort: a failed
    /// compaction leaves the longer log, which loads to the same board).
    pub fn compact(&self, room: &str, snapshot: Vec<u8>, through_seq: u64, fence: Option<Fence>) {
        let _ = self.requests.send(Request::Compact { room: room.to_owned(), snapshot, through_seq, fence });
    }

    /// Confirms a claimed identity (author and token match), or issues a new one.
    pub async fn identify(&self, claimed: Option<Identity>) -> Result<Identity, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Identify { claimed, reply })?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    fn send(&self, request: Request) -> Result<(), StoreError> {
        self.requests.send(request).map_err(|_| StoreError::Stopped)
    }
}

fn serve(mut backend: Box<dyn Backend>, queue: mpsc::Receiver<Request>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let mut commits = Vec::new();
        for request in batch {
            match request {
                Request::Commit(commit) => commits.push(commit),
                Request::Load { room, reply } => {
                    let _ = reply.send(backend.load(&room));
                }
                Request::Compact { room, snapshot, through_seq, fence } => {
                    if let Err(e) = backend.compact(&room, &snapshot, through_seq, fence) {
                        tracing::warn!(room, "compaction failed (the op log stays): {e}");
                    }
                }
                Request::Identify { claimed, reply } => {
                    let _ = reply.send(backend.identify(claimed));
                }
            }
        }
        if commits.is_empty() {
            continue;
        }
        let written = backend.commit_all(&commits).map_err(|e| CommitError::Database(Arc::new(e)));
        if let Err(e) = &written {
            tracing::error!("board commit failed, ops stay unacknowledged: {e}");
        }
        for (index, commit) in commits.into_iter().enumerate() {
            let result = match &written {
                Ok(written) if written.get(index).copied().unwrap_or(false) => Ok(()),
                Ok(_) => Err(CommitError::Fenced),
                Err(e) => Err(e.clone()),
            };
            let committed = Committed { first_seq: commit.first_seq, count: commit.ops.len() as u64, result };
            let _ = commit.done.send(committed);
        }
    }
}

/// The database file inside a data directory (for tools and docs).
pub fn database_path(dir: &Path) -> PathBuf {
    dir.join("easel.db")
}
