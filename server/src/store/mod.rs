//! Persistence: whiteboard snapshots and op logs, and author identities, in embedded SQLite
//! (bundled, WAL, `synchronous=FULL`).
//!
//! One thread owns the connection. Requests queue on a channel; each round takes everything
//! queued and writes all the commits in one transaction, so one fsync covers every op that
//! arrived meanwhile (group commit; rooms hand over their ops once per tick). An op is
//! acknowledged only after its transaction committed, which is what makes an acknowledged stroke
//! survive `kill -9`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;

use easel_protocol::Identity;
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

/// The most memory SQLite keeps for its page cache.
const PAGE_CACHE_KIB: u32 = 512;

/// Where the database lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `DIR/easel.db`, created if missing.
    Directory(PathBuf),
    /// In memory: for tests and throwaway servers; nothing survives the process.
    Memory,
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

/// The answer to a commit, delivered on the room's channel.
#[derive(Debug)]
pub struct Committed {
    /// The room seq of the first op in the commit.
    pub first_seq: u64,
    /// How many ops (seqs `first_seq..first_seq + count`) it wrote.
    pub count: u64,
    pub result: Result<(), CommitError>,
}

/// Why a commit was not written. Every commit of a failed transaction gets the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CommitError {
    #[error("database error: {0}")]
    Database(Arc<rusqlite::Error>),
    #[error("the store has stopped")]
    Stopped,
}

/// Ops of one room to write, and where to say they are written.
struct PendingCommit {
    room: String,
    first_seq: u64,
    ops: Vec<Vec<u8>>,
    done: tokio::sync::mpsc::UnboundedSender<Committed>,
}

enum Request {
    Load { room: String, reply: oneshot::Sender<Result<StoredBoard, StoreError>> },
    Commit(PendingCommit),
    Compact { room: String, snapshot: Vec<u8>, through_seq: u64 },
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
    pub fn open(location: &Location) -> Result<(Store, StoreThread), StoreError> {
        let connection = match location {
            Location::Directory(dir) => {
                std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { path: dir.clone(), source })?;
                Connection::open(dir.join("easel.db"))?
            }
            Location::Memory => Connection::open_in_memory()?,
        };
        migrate(&connection)?;
        let (requests, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("easel-store".to_owned())
            .spawn(move || serve(connection, queue))
            .map_err(StoreError::StartThread)?;
        Ok((Store { requests }, StoreThread(thread)))
    }

    pub async fn load(&self, room: &str) -> Result<StoredBoard, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.send(Request::Load { room: room.to_owned(), reply })?;
        answer.await.map_err(|_| StoreError::Stopped)?
    }

    /// Queues ops `first_seq..` of `room` for commit; the outcome arrives on `done`, in order.
    pub fn commit(
        &self,
        room: &str,
        first_seq: u64,
        ops: Vec<Vec<u8>>,
        done: &tokio::sync::mpsc::UnboundedSender<Committed>,
    ) {
        let count = ops.len() as u64;
        let request = Request::Commit(PendingCommit { room: room.to_owned(), first_seq, ops, done: done.clone() });
        if self.requests.send(request).is_err() {
            let _ = done.send(Committed { first_seq, count, result: Err(CommitError::Stopped) });
        }
    }

    /// Replaces the room's snapshot and drops the ops it covers (best effort: a failed
    /// compaction leaves the longer log, which loads to the same board).
    pub fn compact(&self, room: &str, snapshot: Vec<u8>, through_seq: u64) {
        let _ = self.requests.send(Request::Compact { room: room.to_owned(), snapshot, through_seq });
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

fn migrate(connection: &Connection) -> Result<(), StoreError> {
    // WAL: readers never block the writer; FULL: a commit is on disk before it returns.
    connection.pragma_update(None, "journal_mode", "WAL")?;
    connection.pragma_update(None, "synchronous", "FULL")?;
    // SQLite's own page cache (2 MiB by default) fills with every page ever touched and keeps
    // it, which a long run sees as memory that only grows. The store appends ops and
    // identities and reads a room's board once when the room opens; the hot pages are the
    // right edges of three B-trees, and the kernel's page cache serves everything else.
    connection.pragma_update(None, "cache_size", -(PAGE_CACHE_KIB as i64))?;
    connection.execute_batch(
        "CREATE TABLE IF NOT EXISTS board_snapshots (
             room TEXT PRIMARY KEY,
             through_seq INTEGER NOT NULL,
             state BLOB NOT NULL
         );
         CREATE TABLE IF NOT EXISTS board_ops (
             room TEXT NOT NULL,
             seq INTEGER NOT NULL,
             op BLOB NOT NULL,
             PRIMARY KEY (room, seq)
         ) WITHOUT ROWID;
         CREATE TABLE IF NOT EXISTS identities (
             author INTEGER PRIMARY KEY AUTOINCREMENT,
             token BLOB NOT NULL
         );",
    )?;
    Ok(())
}

fn serve(mut connection: Connection, queue: mpsc::Receiver<Request>) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        batch.extend(queue.try_iter());
        let mut commits = Vec::new();
        for request in batch {
            match request {
                Request::Commit(commit) => commits.push(commit),
                Request::Load { room, reply } => {
                    let _ = reply.send(load(&connection, &room));
                }
                Request::Compact { room, snapshot, through_seq } => {
                    if let Err(e) = compact(&mut connection, &room, &snapshot, through_seq) {
                        tracing::warn!(room, "compaction failed (the op log stays): {e}");
                    }
                }
                Request::Identify { claimed, reply } => {
                    let _ = reply.send(identify(&connection, claimed));
                }
            }
        }
        if commits.is_empty() {
            continue;
        }
        let result = commit_all(&mut connection, &commits).map_err(|e| CommitError::Database(Arc::new(e)));
        if let Err(e) = &result {
            tracing::error!("board commit failed, ops stay unacknowledged: {e}");
        }
        for commit in commits {
            let committed =
                Committed { first_seq: commit.first_seq, count: commit.ops.len() as u64, result: result.clone() };
            let _ = commit.done.send(committed);
        }
    }
}

fn commit_all(connection: &mut Connection, commits: &[PendingCommit]) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    {
        let mut insert =
            transaction.prepare_cached("INSERT OR REPLACE INTO board_ops (room, seq, op) VALUES (?1, ?2, ?3)")?;
        for commit in commits {
            for (seq, op) in (commit.first_seq..).zip(&commit.ops) {
                insert.execute(params![commit.room, seq as i64, op])?;
            }
        }
    }
    transaction.commit()
}

fn load(connection: &Connection, room: &str) -> Result<StoredBoard, StoreError> {
    let snapshot: Option<(i64, Vec<u8>)> = connection
        .query_row("SELECT through_seq, state FROM board_snapshots WHERE room = ?1", params![room], |row| {
            Ok((row.get(0)?, row.get(1)?))
        })
        .optional()?;
    let through = snapshot.as_ref().map_or(0, |(seq, _)| *seq);
    let mut statement =
        connection.prepare_cached("SELECT seq, op FROM board_ops WHERE room = ?1 AND seq > ?2 ORDER BY seq")?;
    let rows =
        statement.query_map(params![room, through], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)))?;
    let mut board =
        StoredBoard { snapshot: snapshot.map(|(_, state)| state), ops: Vec::new(), last_seq: through as u64 };
    for row in rows {
        let (seq, op) = row?;
        board.ops.push(op);
        board.last_seq = seq as u64;
    }
    Ok(board)
}

fn compact(connection: &mut Connection, room: &str, snapshot: &[u8], through_seq: u64) -> rusqlite::Result<()> {
    let transaction = connection.transaction()?;
    transaction.execute(
        "INSERT INTO board_snapshots (room, through_seq, state) VALUES (?1, ?2, ?3)
         ON CONFLICT (room) DO UPDATE SET through_seq = excluded.through_seq, state = excluded.state
         WHERE excluded.through_seq >= board_snapshots.through_seq",
        params![room, through_seq as i64, snapshot],
    )?;
    transaction.execute("DELETE FROM board_ops WHERE room = ?1 AND seq <= ?2", params![room, through_seq as i64])?;
    transaction.commit()
}

fn identify(connection: &Connection, claimed: Option<Identity>) -> Result<Identity, StoreError> {
    if let Some(identity) = claimed {
        let token: Option<Vec<u8>> = connection
            .query_row("SELECT token FROM identities WHERE author = ?1", params![identity.author], |row| row.get(0))
            .optional()?;
        if token.as_deref() == Some(identity.token.as_slice()) {
            return Ok(identity);
        }
    }
    let token = crate::secret::token()?;
    connection.execute("INSERT INTO identities (token) VALUES (?1)", params![token.as_slice()])?;
    let author = u32::try_from(connection.last_insert_rowid()).unwrap_or(u32::MAX);
    Ok(Identity { author, token })
}

/// The database file inside a data directory (for tools and docs).
pub fn database_path(dir: &Path) -> PathBuf {
    dir.join("easel.db")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("easel-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn committed_ops_load_back_after_a_reopen() {
        let dir = temp_dir("reopen");
        let (store, thread) = Store::open(&Location::Directory(dir.clone())).unwrap();
        let (done, mut committed) = tokio::sync::mpsc::unbounded_channel();
        store.commit("r", 1, vec![b"one".to_vec(), b"two".to_vec()], &done);
        assert!(committed.recv().await.unwrap().result.is_ok());
        drop(store);
        thread.join();

        let (store, _thread) = Store::open(&Location::Directory(dir)).unwrap();
        let board = store.load("r").await.unwrap();
        assert_eq!(board.ops, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(board.last_seq, 2);
    }

    #[tokio::test]
    async fn compaction_replaces_the_covered_ops_with_a_snapshot() {
        let (store, _thread) = Store::open(&Location::Memory).unwrap();
        let (done, mut committed) = tokio::sync::mpsc::unbounded_channel();
        store.commit("r", 1, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()], &done);
        committed.recv().await.unwrap().result.unwrap();
        store.compact("r", b"state-after-2".to_vec(), 2);
        let board = store.load("r").await.unwrap();
        assert_eq!(board.snapshot.as_deref(), Some(&b"state-after-2"[..]));
        assert_eq!(board.ops, vec![b"c".to_vec()], "only ops after the snapshot remain");
        assert_eq!(board.last_seq, 3);
    }

    #[tokio::test]
    async fn identities_are_confirmed_only_with_their_token() {
        let (store, _thread) = Store::open(&Location::Memory).unwrap();
        let first = store.identify(None).await.unwrap();
        assert_eq!(store.identify(Some(first)).await.unwrap(), first, "a correct token keeps the identity");
        let forged = Identity { author: first.author, token: [0; 16] };
        let issued = store.identify(Some(forged)).await.unwrap();
        assert_ne!(issued.author, first.author, "a wrong token gets a new identity, not the claimed one");
    }
}
