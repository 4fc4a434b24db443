//! The store's contract, run against both implementations: SQLite (a file, and in memory) and
//! PostgreSQL (a private server started for the test), plus what only the cluster's store does:
//! fencing commits on a room's lease, and author ids that two nodes never hand out twice.

mod common;

use easel::store::{CommitError, Committed, Fence, Location, Store, StoreThread};
use easel_load::postgres::Postgres;
use easel_protocol::Identity;
use tokio::sync::mpsc;

/// A PostgreSQL of the test's own, stopped (by PID) when the test drops it. (A static one would
/// outlive the test binary: statics are never dropped.)
fn postgres() -> Postgres {
    Postgres::start().expect("a private PostgreSQL")
}

/// Every kind of store, fresh, for test `name`, on `postgres`.
fn locations(name: &str, postgres: &Postgres) -> Vec<Location> {
    let dir = std::env::temp_dir().join(format!("easel-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    vec![Location::Directory(dir), Location::Memory, Location::Postgres(postgres.url())]
}

fn open(location: &Location) -> (Store, StoreThread) {
    Store::open(location).unwrap_or_else(|e| panic!("opening {location:?}: {e}"))
}

async fn commit(store: &Store, room: &str, first_seq: u64, ops: &[&[u8]], fence: Option<Fence>) -> Committed {
    let (done, mut committed) = mpsc::unbounded_channel();
    store.commit(room, first_seq, ops.iter().map(|op| op.to_vec()).collect(), fence, &done);
    committed.recv().await.expect("an answer")
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_ops_load_back_after_a_reopen() {
    let postgres = postgres();
    for location in locations("reopen", &postgres).into_iter().filter(|l| *l != Location::Memory) {
        let (store, thread) = open(&location);
        commit(&store, "r", 1, &[b"one", b"two"], None).await.result.unwrap();
        drop(store);
        thread.join();
        let (store, _thread) = open(&location);
        let board = store.load("r").await.unwrap();
        assert_eq!(board.ops, vec![b"one".to_vec(), b"two".to_vec()], "{location:?}");
        assert_eq!(board.last_seq, 2, "{location:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_replaces_the_covered_ops_with_a_snapshot() {
    let postgres = postgres();
    for location in locations("compact", &postgres) {
        let (store, _thread) = open(&location);
        commit(&store, "r", 1, &[b"a", b"b", b"c"], None).await.result.unwrap();
        store.compact("r", b"state-after-2".to_vec(), 2, None);
        let board = store.load("r").await.unwrap();
        assert_eq!(board.snapshot.as_deref(), Some(&b"state-after-2"[..]), "{location:?}");
        assert_eq!(board.ops, vec![b"c".to_vec()], "only ops after the snapshot remain ({location:?})");
        assert_eq!(board.last_seq, 3, "{location:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_recommitted_op_replaces_the_one_of_the_same_seq() {
    let postgres = postgres();
    for location in locations("recommit", &postgres) {
        let (store, _thread) = open(&location);
        commit(&store, "r", 1, &[b"first try"], None).await.result.unwrap();
        commit(&store, "r", 1, &[b"retried"], None).await.result.unwrap();
        assert_eq!(store.load("r").await.unwrap().ops, vec![b"retried".to_vec()], "{location:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn identities_are_confirmed_only_with_their_token() {
    let postgres = postgres();
    for location in locations("identities", &postgres) {
        let (store, _thread) = open(&location);
        let first = store.identify(None).await.unwrap();
        assert_eq!(store.identify(Some(first)).await.unwrap(), first, "a correct token keeps the identity");
        let forged = Identity { author: first.author, token: [0; 16] };
        let issued = store.identify(Some(forged)).await.unwrap();
        assert_ne!(issued.author, first.author, "a wrong token gets a new identity ({location:?})");
        let unknown = Identity { author: u32::MAX, token: [1; 16] };
        assert_ne!(store.identify(Some(unknown)).await.unwrap().author, u32::MAX, "{location:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_stores_on_one_database_never_hand_out_the_same_author() {
    let postgres = postgres();
    let url = postgres.url();
    let (a, _a) = open(&Location::Postgres(url.clone()));
    let (b, _b) = open(&Location::Postgres(url));
    let mut authors = Vec::new();
    for _ in 0..50 {
        let (x, y) = tokio::join!(a.identify(None), b.identify(None));
        authors.push(x.unwrap().author);
        authors.push(y.unwrap().author);
    }
    let count = authors.len();
    authors.sort_unstable();
    authors.dedup();
    assert_eq!(authors.len(), count, "every author id is unique across nodes");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_under_a_lost_lease_is_fenced_out_and_others_in_its_group_are_written() {
    let postgres = postgres();
    let url = postgres.url();
    let (store, _thread) = open(&Location::Postgres(url.clone()));
    let client = connect(&url).await;
    client
        .batch_execute(
            "INSERT INTO rooms (name, owner, epoch, lease_until) VALUES
                 ('kept', 1, 4, now() + interval '1 minute'), ('lost', 1, 2, now() + interval '1 minute')",
        )
        .await
        .unwrap();
    // Node 2 claimed `lost` meanwhile (epoch 3): node 1's epoch-2 commits must not land.
    client.batch_execute("UPDATE rooms SET owner = 2, epoch = 3 WHERE name = 'lost'").await.unwrap();
    let (done, mut committed) = mpsc::unbounded_channel();
    // Queued together, so that one transaction (a group commit) takes both.
    store.commit("lost", 1, vec![b"stale".to_vec()], Some(Fence { node: 1, epoch: 2 }), &done);
    store.commit("kept", 1, vec![b"fresh".to_vec()], Some(Fence { node: 1, epoch: 4 }), &done);
    let first = committed.recv().await.unwrap();
    let second = committed.recv().await.unwrap();
    assert!(matches!(first.result, Err(CommitError::Fenced)), "{:?}", first.result);
    assert!(second.result.is_ok(), "{:?}", second.result);
    assert!(store.load("lost").await.unwrap().ops.is_empty(), "nothing of the old owner's was written");
    assert_eq!(store.load("kept").await.unwrap().ops, vec![b"fresh".to_vec()]);
    // The old owner's compaction is fenced too.
    store.compact("lost", b"stale board".to_vec(), 1, Some(Fence { node: 1, epoch: 2 }));
    assert_eq!(store.load("lost").await.unwrap().snapshot, None);
}

#[tokio::test(flavor = "multi_thread")]
async fn commits_fail_while_the_database_is_down_and_go_through_once_it_is_back() {
    let mut postgres = Postgres::start().expect("a private PostgreSQL");
    let (store, _thread) = open(&Location::Postgres(postgres.url()));
    commit(&store, "r", 1, &[b"before"], None).await.result.unwrap();
    postgres.kill();
    let failed = commit(&store, "r", 2, &[b"during"], None).await;
    assert!(matches!(failed.result, Err(CommitError::Database(_))), "{:?}", failed.result);
    postgres.restart().expect("postgres again");
    // The store connects again on the next request; the room would retry the same op.
    commit(&store, "r", 2, &[b"during"], None).await.result.unwrap();
    let board = store.load("r").await.unwrap();
    assert_eq!(board.ops, vec![b"before".to_vec(), b"during".to_vec()]);
}

async fn connect(url: &str) -> tokio_postgres::Client {
    easel_load::postgres::connect(url).await.expect("connecting to the test's PostgreSQL")
}
