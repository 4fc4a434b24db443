//! The single node's store: embedded SQLite (bundled, WAL, `synchronous=FULL`). There is no
//! lease to fence on: this node is the only writer.

use std::path::Path;

use easel_protocol::Identity;
use rusqlite::{Connection, OptionalExtension, params};

use super::{Backend, Fence, PendingCommit, StoreError, StoredBoard};

/// The most memory SQLite keeps for its page cache.
const PAGE_CACHE_KIB: u32 = 512;

pub(super) struct Sqlite {
    connection: Connection,
}

impl Sqlite {
    /// The database in data directory `dir` (created if missing), or in memory.
    pub(super) fn open(dir: Option<&Path>) -> Result<Self, StoreError> {
        let connection = match dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .map_err(|source| StoreError::CreateDir { path: dir.to_owned(), source })?;
                Connection::open(super::database_path(dir))?
            }
            None => Connection::open_in_memory()?,
        };
        migrate(&connection)?;
        Ok(Self { connection })
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

impl Backend for Sqlite {
    fn load(&mut self, room: &str) -> Result<StoredBoard, StoreError> {
        let snapshot: Option<(i64, Vec<u8>)> = self
            .connection
            .query_row("SELECT through_seq, state FROM board_snapshots WHERE room = ?1", params![room], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .optional()?;
        let through = snapshot.as_ref().map_or(0, |(seq, _)| *seq);
        let mut statement = self
            .connection
            .prepare_cached("SELECT seq, op FROM board_ops WHERE room = ?1 AND seq > ?2 ORDER BY seq")?;
        let rows = statement
            .query_map(params![room, through], |row| Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?)))?;
        let mut board =
            StoredBoard { snapshot: snapshot.map(|(_, state)| state), ops: Vec::new(), last_seq: through as u64 };
        for row in rows {
            let (seq, op) = row?;
            board.ops.push(op);
            board.last_seq = seq as u64;
        }
        Ok(board)
    }

    fn commit_all(&mut self, commits: &[PendingCommit]) -> Result<Vec<bool>, StoreError> {
        let transaction = self.connection.transaction()?;
        {
            let mut insert =
                transaction.prepare_cached("INSERT OR REPLACE INTO board_ops (room, seq, op) VALUES (?1, ?2, ?3)")?;
            for commit in commits {
                for (seq, op) in (commit.first_seq..).zip(&commit.ops) {
                    insert.execute(params![commit.room, seq as i64, op])?;
                }
            }
        }
        transaction.commit()?;
        Ok(vec![true; commits.len()])
    }

    fn compact(
        &mut self,
        room: &str,
        snapshot: &[u8],
        through_seq: u64,
        _fence: Option<Fence>,
    ) -> Result<(), StoreError> {
        let transaction = self.connection.transaction()?;
        transaction.execute(
            "INSERT INTO board_snapshots (room, through_seq, state) VALUES (?1, ?2, ?3)
             ON CONFLICT (room) DO UPDATE SET through_seq = excluded.through_seq, state = excluded.state
             WHERE excluded.through_seq >= board_snapshots.through_seq",
            params![room, through_seq as i64, snapshot],
        )?;
        transaction
            .execute("DELETE FROM board_ops WHERE room = ?1 AND seq <= ?2", params![room, through_seq as i64])?;
        transaction.commit()?;
        Ok(())
    }

    fn identify(&mut self, claimed: Option<Identity>) -> Result<Identity, StoreError> {
        if let Some(identity) = claimed {
            let token: Option<Vec<u8>> = self
                .connection
                .query_row("SELECT token FROM identities WHERE author = ?1", params![identity.author], |row| row.get(0))
                .optional()?;
            if token.as_deref() == Some(identity.token.as_slice()) {
                return Ok(identity);
            }
        }
        let token = crate::secret::token()?;
        self.connection.execute("INSERT INTO identities (token) VALUES (?1)", params![token.as_slice()])?;
        let author = u32::try_from(self.connection.last_insert_rowid()).unwrap_or(u32::MAX);
        Ok(Identity { author, token })
    }
}
