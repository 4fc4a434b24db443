//! The room state's behaviour, in memory: joins and resumes, snapshots and their baselines,
//! the board's relay-ack-commit path, each driven with an explicit clock.

use easel_protocol::board::{Point, Stroke, StrokeId};
use easel_protocol::snapshot;

use tokio::sync::mpsc;

use super::*;
use crate::room::MessageReceiver;
use crate::room::message_queue::message_queue;
use crate::store::{CommitError, Location, Store};

/// A room on an in-memory store, with the channel its commits are answered on.
pub(super) async fn room_with(config: Config) -> (Room, mpsc::UnboundedReceiver<Committed>) {
    let (store, _thread) = Store::open(&Location::Memory).unwrap();
    let (commits_tx, commits) = mpsc::unbounded_channel();
    let stored = store.load("test").await.unwrap();
    let board = RoomBoard::new("test", &stored, store, None, commits_tx, &config).unwrap();
    (Room::new("test".into(), board, Handover::Inline, Arc::new(config), Arc::new(Metrics::default())), commits)
}

fn link(capacity: usize) -> (MemberLink, MessageReceiver, oneshot::Receiver<CloseReason>) {
    let (messages, messages_rx) = message_queue(capacity);
    let (kick, kick_rx) = oneshot::channel();
    let link = MemberLink { messages, kick, connection: 1, delivery: Arc::default(), resume: None, socket: None };
    (link, messages_rx, kick_rx)
}

fn identity(author: u32) -> Identity {
    Identity { author, token: [0; 16] }
}

/// Player 1 (author 7) and player 2 (author 8) in the room, their welcome traffic drained.
fn author_and_other(room: &mut Room) -> (MessageReceiver, MessageReceiver) {
    let (author, mut author_rx, kick_author) = link(64);
    let (other, mut other_rx, kick_other) = link(64);
    room.join(Instant::now(), 1, "author".into(), identity(7), (0.0, 0.0), author).unwrap();
    room.join(Instant::now(), 2, "other".into(), identity(8), (0.0, 0.0), other).unwrap();
    // Dropping the kick receivers is fine: these tests never kick.
    drop((kick_author, kick_other));
    drain(room, &mut author_rx);
    drain(room, &mut other_rx);
    (author_rx, other_rx)
}

/// What `rx`'s member was sent, once the room handed over every message waiting, with the
/// relays of a merged `BoardOps` listed one by one (the merge has a test of its own).
fn drain(room: &mut Room, rx: &mut MessageReceiver) -> Vec<ServerMsg> {
    room.send_messages(Instant::now());
    let mut out = Vec::new();
    while let Some(bytes) = rx.try_recv() {
        match easel_protocol::decode_server(&bytes).unwrap() {
            ServerMsg::BoardOps(ops) => out.extend(ops.into_iter().map(ServerMsg::BoardOp)),
            msg => out.push(msg),
        }
    }
    out
}

#[tokio::test]
async fn a_member_whose_queue_is_full_is_disconnected_not_buffered_for_and_may_resume() {
    let (mut room, _commits) = room_with(Config::for_tests()).await;
    let (slow, _never_read, mut slow_kick) = link(3);
    room.join(Instant::now(), 1, "slow".into(), identity(1), (0.0, 0.0), slow).unwrap();
    let (fast, mut fast_rx, _fast_kick) = link(64);
    room.join(Instant::now(), 2, "fast".into(), identity(2), (5.0, 5.0), fast).unwrap();
    drain(&mut room, &mut fast_rx);
    for i in 0..4 {
        room.play(Instant::now(), Play::Chat { player: 2, text: format!("line {i}") });
    }
    let reason = slow_kick.try_recv().expect("the slow member is told to go");
    assert_eq!(reason.code, close::TRY_AGAIN_LATER);
    assert!(room.members[&1].detached_at.is_some(), "its player waits for a resume");
    let received = drain(&mut room, &mut fast_rx);
    assert_eq!(received.len(), 4, "the other member got all four lines and no leave: {received:?}");
    let detached_at = room.members[&1].detached_at;
    room.play(Instant::now(), Play::Chat { player: 2, text: "one more".into() });
    assert_eq!(room.members[&1].detached_at, detached_at, "more traffic does not extend its grace");
}

#[tokio::test]
async fn the_member_whose_input_waited_longest_is_handed_its_snapshot_first() {
    let (mut room, _commits) = room_with(Config::for_tests()).await;
    for id in 1..=3 {
        room.join(Instant::now(), id, format!("p{id}"), identity(id), (id as f32, 0.0), link(8).0).unwrap();
    }
    let now = Instant::now();
    // Player 1's inputs waited 5 and 30 ms (the oldest counts), player 3's 20 ms; player 2
    // sent none.
    for (player, seq, waited) in [(1, 1, 30), (3, 1, 20), (1, 2, 5)] {
        let input = TickInput { player, seq, dx: 1, dy: 0 };
        room.play(Instant::now(), Play::Input { input, arrived: now - Duration::from_millis(waited) });
    }
    room.tick(now);
    assert_eq!(room.handover_order(), [1, 3, 2]);
}

fn decode_snapshot(bytes: &Bytes) -> (u32, u32, Vec<u8>) {
    match easel_protocol::decode_server(bytes).unwrap() {
        ServerMsg::Snapshot { tick, baseline, entities } => (tick, baseline, entities),
        other => panic!("not a snapshot: {other:?}"),
    }
}

#[tokio::test]
async fn members_on_the_same_baseline_share_one_encoded_delta() {
    let (mut room, _commits) = room_with(Config::for_tests()).await;
    let (a, _a_rx, _a_kick) = link(8);
    let (b, _b_rx, _b_kick) = link(8);
    let (a_delivered, b_delivered) = (Arc::clone(&a.delivery), Arc::clone(&b.delivery));
    let mut a_snapshots = room.join(Instant::now(), 1, "a".into(), identity(1), (0.0, 0.0), a).unwrap().snapshots;
    let mut b_snapshots = room.join(Instant::now(), 2, "b".into(), identity(2), (1.0, 1.0), b).unwrap().snapshots;
    room.tick(Instant::now());
    let (sa, sb) = (a_snapshots.borrow_and_update().bytes.clone(), b_snapshots.borrow_and_update().bytes.clone());
    assert_eq!(sa.as_ptr(), sb.as_ptr(), "no acknowledgement yet: one full snapshot for both");
    let (tick, baseline, entities) = decode_snapshot(&sa);
    assert_eq!((tick, baseline), (1, 0));
    let first = snapshot::decode(&entities, None, 0).unwrap();
    assert_eq!(first.len(), 2);
    a_delivered.acknowledged(1);
    b_delivered.acknowledged(1);
    room.play(
        Instant::now(),
        Play::Input { input: TickInput { player: 1, seq: 1, dx: 1, dy: 0 }, arrived: Instant::now() },
    );
    room.tick(Instant::now());
    let (sa, sb) = (a_snapshots.borrow_and_update().bytes.clone(), b_snapshots.borrow_and_update().bytes.clone());
    assert_eq!(sa.as_ptr(), sb.as_ptr(), "both acknowledged tick 1: one delta for both");
    let (tick, baseline, entities) = decode_snapshot(&sa);
    assert_eq!((tick, baseline), (2, 1));
    let second = snapshot::decode(&entities, Some(&first), 1).unwrap();
    assert!(second[0].x > first[0].x, "player 1 moved right");
    assert!(entities.len() < 8, "a delta of one moving player is a few bytes: {}", entities.len());
    a_delivered.acknowledged(2);
    room.play(
        Instant::now(),
        Play::Input { input: TickInput { player: 1, seq: 2, dx: 1, dy: 0 }, arrived: Instant::now() },
    );
    room.tick(Instant::now());
    let (sa, sb) = (a_snapshots.borrow_and_update().bytes.clone(), b_snapshots.borrow_and_update().bytes.clone());
    assert_ne!(sa.as_ptr(), sb.as_ptr(), "different baselines, different encodings");
    assert_eq!(decode_snapshot(&sa).1, 2);
    assert_eq!(decode_snapshot(&sb).1, 1);
}

#[tokio::test]
async fn each_member_is_sent_the_players_in_its_view_and_full_visibility_sends_all() {
    let mut config = Config::for_tests();
    config.interest = crate::config::Interest { view_distance: 500.0, snapshot_budget: 0 };
    let (mut room, _commits) = room_with(config).await;
    let mut near_a =
        room.join(Instant::now(), 1, "a".into(), identity(1), (100.0, 100.0), link(8).0).unwrap().snapshots;
    room.join(Instant::now(), 2, "b".into(), identity(2), (400.0, 300.0), link(8).0).unwrap();
    room.join(Instant::now(), 3, "c".into(), identity(3), (1900.0, 1900.0), link(8).0).unwrap();
    room.tick(Instant::now());
    let (_, _, entities) = decode_snapshot(&near_a.borrow_and_update().bytes);
    let seen: Vec<u32> = snapshot::decode(&entities, None, 0).unwrap().iter().map(|p| p.id).collect();
    assert_eq!(seen, [1, 2], "c is 1,800 away");

    let (mut room, _commits) = room_with(Config::for_tests()).await;
    room.config = Arc::new(Config { interest: crate::config::Interest::FULL_VISIBILITY, ..Config::for_tests() });
    let mut a = room.join(Instant::now(), 1, "a".into(), identity(1), (100.0, 100.0), link(8).0).unwrap().snapshots;
    room.join(Instant::now(), 3, "c".into(), identity(3), (1900.0, 1900.0), link(8).0).unwrap();
    room.tick(Instant::now());
    let (_, _, entities) = decode_snapshot(&a.borrow_and_update().bytes);
    assert_eq!(snapshot::decode(&entities, None, 0).unwrap().len(), 2);
}

#[tokio::test]
async fn a_dropped_player_is_kept_for_a_resume_and_a_closed_one_leaves() {
    let (mut room, _commits) = room_with(Config::for_tests()).await;
    let (other, mut other_rx, _other_kick) = link(64);
    room.join(Instant::now(), 9, "other".into(), identity(9), (0.0, 0.0), other).unwrap();
    let (a, _a_rx, _a_kick) = link(64);
    let joined = room.join(Instant::now(), 1, "a".into(), identity(1), (100.0, 100.0), a).unwrap();
    let token = match easel_protocol::decode_server(&joined.welcome).unwrap() {
        ServerMsg::Welcome { resume, .. } => resume,
        other => panic!("{other:?}"),
    };
    drain(&mut room, &mut other_rx);
    room.connection_ended(Instant::now(), 1, 1, Ending::Dropped);
    assert!(room.members.contains_key(&1), "kept through the grace period");
    let (mut again, _again_rx, _again_kick) = link(64);
    again.resume = Some(token);
    again.connection = 2;
    let resumed = room.join(Instant::now(), 5, "a".into(), identity(1), (0.0, 0.0), again).unwrap();
    assert!(resumed.resumed);
    assert_eq!(resumed.player_id, 1, "the same player back");
    assert!(drain(&mut room, &mut other_rx).is_empty(), "the others saw no leave and no join");
    room.connection_ended(Instant::now(), 1, 1, Ending::Closed);
    assert!(room.members.contains_key(&1), "the old connection's end is ignored");
    room.connection_ended(Instant::now(), 1, 2, Ending::Closed);
    assert!(!room.members.contains_key(&1), "closing leaves at once");
    assert_eq!(drain(&mut room, &mut other_rx), vec![ServerMsg::PlayerLeft { id: 1 }]);
}

#[tokio::test]
async fn a_player_not_resumed_within_the_grace_period_leaves() {
    let config = Config::for_tests();
    let grace = config.limits.resume_grace;
    let (mut room, _commits) = room_with(config).await;
    let start = Instant::now();
    room.join(start, 1, "a".into(), identity(1), (0.0, 0.0), link(8).0).unwrap();
    room.connection_ended(start, 1, 1, Ending::Dropped);
    room.tick(start + grace - Duration::from_millis(1));
    assert!(!room.members.is_empty(), "still within the grace period");
    room.tick(start + grace);
    assert!(room.members.is_empty(), "gone once the grace period is over");
}

#[tokio::test]
async fn a_member_that_lost_a_snapshot_gets_a_decodable_one_though_nobody_moves() {
    let (mut room, _commits) = room_with(Config::for_tests()).await;
    let (a, _a_rx, _a_kick) = link(8);
    let delivered = Arc::clone(&a.delivery);
    let mut snapshots = room.join(Instant::now(), 1, "a".into(), identity(1), (500.0, 500.0), a).unwrap().snapshots;
    room.tick(Instant::now());
    room.tick(Instant::now());
    let written = snapshots.borrow_and_update().tick;
    delivered.written(written);
    room.tick(Instant::now());
    assert!(!snapshots.has_changed().unwrap(), "a still world: nothing new");
    // The client never decoded anything: it reports the loss with "newest 0".
    delivered.lost(0);
    room.play(Instant::now(), Play::SnapshotLost { player: 1 });
    room.tick(Instant::now());
    assert!(snapshots.has_changed().unwrap(), "a snapshot for the member that lost one");
    let (_, baseline, entities) = decode_snapshot(&snapshots.borrow_and_update().bytes);
    assert_eq!(baseline, 0, "in full: it holds nothing the server kept");
    assert_eq!(snapshot::decode(&entities, None, 0).unwrap().len(), 1);
    room.tick(Instant::now());
    assert!(!snapshots.has_changed().unwrap(), "then nothing until something moves");
}

#[tokio::test]
async fn an_unchanged_world_publishes_no_new_snapshot() {
    let (mut room, _commits) = room_with(Config::for_tests()).await;
    let (a, _a_rx, _a_kick) = link(8);
    let mut snapshots = room.join(Instant::now(), 1, "a".into(), identity(1), (500.0, 500.0), a).unwrap().snapshots;
    room.tick(Instant::now());
    assert!(snapshots.has_changed().unwrap(), "the first state is published");
    snapshots.borrow_and_update();
    room.tick(Instant::now());
    assert!(snapshots.has_changed().unwrap(), "one unchanged snapshot shows that movement stopped");
    snapshots.borrow_and_update();
    room.tick(Instant::now());
    assert!(!snapshots.has_changed().unwrap(), "nobody moved: nothing new to send");
    room.play(
        Instant::now(),
        Play::Input { input: TickInput { player: 1, seq: 1, dx: 1, dy: 0 }, arrived: Instant::now() },
    );
    room.tick(Instant::now());
    assert!(snapshots.has_changed().unwrap(), "movement is published again");
}

#[tokio::test]
async fn a_room_rests_only_once_a_tick_would_send_and_change_nothing() {
    let (mut room, _commits) = room_with(Config::for_tests()).await;
    let (a, _a_rx, _a_kick) = link(8);
    let delivered = Arc::clone(&a.delivery);
    let mut snapshots = room.join(Instant::now(), 1, "a".into(), identity(1), (500.0, 500.0), a).unwrap().snapshots;
    room.tick(Instant::now());
    assert!(!room.at_rest(), "the first state was published: one more shows nothing moves");
    room.tick(Instant::now());
    assert!(room.at_rest(), "nothing moves and everyone holds the newest state");
    let rested_on = snapshots.borrow_and_update().tick;

    let input = TickInput { player: 1, seq: 1, dx: 1, dy: 0 };
    room.play(Instant::now(), Play::Input { input, arrived: Instant::now() });
    assert!(!room.at_rest(), "an input waits for its tick");
    // Ten ticks slept through before the input's: its tick is numbered as if they had run.
    room.skip_ticks(10);
    room.tick(Instant::now());
    assert!(!room.at_rest(), "the player moved: the next snapshot shows it stopped");
    assert_eq!(snapshots.borrow_and_update().tick, rested_on + 11);
    room.tick(Instant::now());
    assert!(room.at_rest());

    delivered.lost(0);
    room.play(Instant::now(), Play::SnapshotLost { player: 1 });
    assert!(!room.at_rest(), "a member that lost a snapshot is owed one");
    room.tick(Instant::now());
    assert!(snapshots.has_changed().unwrap());
    assert!(room.at_rest());
}

#[tokio::test]
async fn a_full_room_refuses_with_try_again_later() {
    let mut config = Config::for_tests();
    config.limits.room_capacity = 1;
    let (mut room, _commits) = room_with(config).await;
    room.join(Instant::now(), 1, "a".into(), identity(1), (0.0, 0.0), link(4).0).unwrap();
    let refused = room.join(Instant::now(), 2, "b".into(), identity(2), (0.0, 0.0), link(4).0).err().unwrap();
    assert_eq!(refused.code, close::TRY_AGAIN_LATER);
}

fn add_by_7(seq: u32) -> BoardOp {
    let stroke = Stroke { id: StrokeId { author: 7, seq }, color: 1, width: 2, points: vec![Point { x: 1, y: 2 }] };
    BoardOp::Add { dot: easel_protocol::board::Dot::new(7, u64::from(seq) + 1), stroke }
}

#[tokio::test]
async fn a_board_op_is_relayed_at_once_and_acked_only_after_it_is_stored() {
    let (mut room, mut commits) = room_with(Config::for_tests()).await;
    let (mut author_rx, mut other_rx) = author_and_other(&mut room);
    room.play(Instant::now(), Play::Board { player: 1, client_seq: 1, op: add_by_7(0) });
    assert!(matches!(drain(&mut room, &mut other_rx).as_slice(), [ServerMsg::BoardOp(BoardOp::Add { .. })]));
    room.tick(Instant::now());
    assert!(drain(&mut room, &mut author_rx).is_empty(), "no ack before the commit");
    let committed = commits.recv().await.unwrap();
    assert_eq!((committed.first_seq, committed.count), (1, 1), "written with its tick");
    room.committed(Instant::now(), committed);
    assert_eq!(drain(&mut room, &mut author_rx), vec![ServerMsg::BoardAck { client_seq: 1 }]);
    assert!(drain(&mut room, &mut other_rx).is_empty(), "relayed once");
}

#[tokio::test]
async fn after_a_failed_commit_ops_are_relayed_only_once_stored_and_in_order() {
    let (mut room, mut commits) = room_with(Config::for_tests()).await;
    let (mut author_rx, mut other_rx) = author_and_other(&mut room);
    room.play(Instant::now(), Play::Board { player: 1, client_seq: 1, op: add_by_7(0) });
    assert_eq!(drain(&mut room, &mut other_rx).len(), 1, "storage healthy: relayed at once");
    room.tick(Instant::now());
    // The disk refuses the first commit.
    let first = commits.recv().await.unwrap();
    let disk_full = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
    room.committed(Instant::now(), Committed { result: Err(CommitError::Database(Arc::new(disk_full))), ..first });
    room.play(Instant::now(), Play::Board { player: 1, client_seq: 2, op: add_by_7(1) });
    room.play(Instant::now(), Play::Board { player: 1, client_seq: 3, op: add_by_7(2) });
    assert!(drain(&mut room, &mut other_rx).is_empty(), "while commits fail, nothing new is relayed");
    room.retry_commits();
    room.tick(Instant::now());
    // The retried op alone, then the two of the tick together.
    for count in [1, 2] {
        let committed = commits.recv().await.unwrap();
        assert_eq!(committed.count, count);
        room.committed(Instant::now(), committed);
    }
    let acks = drain(&mut room, &mut author_rx);
    let expected: Vec<ServerMsg> = (1..=3).map(|client_seq| ServerMsg::BoardAck { client_seq }).collect();
    assert_eq!(acks, expected, "acked in order once stored");
    let relayed: Vec<u32> = drain(&mut room, &mut other_rx)
        .into_iter()
        .filter_map(|m| match m {
            ServerMsg::BoardOp(BoardOp::Add { stroke, .. }) => Some(stroke.id.seq),
            _ => None,
        })
        .collect();
    assert_eq!(relayed, vec![1, 2], "the held ops follow, in order");
    room.play(Instant::now(), Play::Board { player: 1, client_seq: 4, op: add_by_7(3) });
    assert_eq!(drain(&mut room, &mut other_rx).len(), 1, "backlog stored: relays are immediate again");
}

#[tokio::test]
async fn the_ops_of_a_tick_are_written_in_one_commit() {
    let (mut room, mut commits) = room_with(Config::for_tests()).await;
    let (mut author_rx, _other_rx) = author_and_other(&mut room);
    for seq in 0..5 {
        room.play(Instant::now(), Play::Board { player: 1, client_seq: u64::from(seq) + 1, op: add_by_7(seq) });
    }
    room.tick(Instant::now());
    let committed = commits.recv().await.unwrap();
    assert_eq!((committed.first_seq, committed.count), (1, 5));
    room.committed(Instant::now(), committed);
    let expected: Vec<ServerMsg> = (1..=5).map(|client_seq| ServerMsg::BoardAck { client_seq }).collect();
    assert_eq!(drain(&mut room, &mut author_rx), expected);
}

#[tokio::test]
async fn an_invalid_board_op_is_refused_to_its_author_only() {
    let (mut room, _commits) = room_with(Config::for_tests()).await;
    let (mut author_rx, mut other_rx) = author_and_other(&mut room);
    let forged = Stroke { id: StrokeId { author: 8, seq: 0 }, color: 1, width: 2, points: vec![Point { x: 1, y: 2 }] };
    room.play(
        Instant::now(),
        Play::Board {
            player: 1,
            client_seq: 1,
            op: BoardOp::Add { dot: easel_protocol::board::Dot::new(7, 1), stroke: forged },
        },
    );
    assert!(matches!(drain(&mut room, &mut author_rx).as_slice(), [ServerMsg::BoardRejected { client_seq: 1, .. }]));
    assert!(drain(&mut room, &mut other_rx).is_empty());
}

#[tokio::test]
async fn reliable_messages_go_at_once_after_a_quiet_spell_else_together_when_the_window_ends_relays_as_one() {
    let (mut room, _commits) = room_with(Config::for_tests()).await;
    let (_author_rx, mut other_rx) = author_and_other(&mut room);
    room.send_messages(Instant::now());
    let start = Instant::now() + Duration::from_secs(1);
    let at = |ms: u64| start + Duration::from_millis(ms);
    room.play(at(0), Play::Board { player: 1, client_seq: 1, op: add_by_7(0) });
    assert_eq!(room.messages_due(), Some(at(0)), "nothing went for a window: due at once");
    room.send_messages(at(0));
    assert_eq!(other_rx.len(), 1);
    other_rx.try_recv().unwrap();
    room.play(at(1), Play::Board { player: 1, client_seq: 2, op: add_by_7(1) });
    room.play(at(3), Play::Board { player: 1, client_seq: 3, op: add_by_7(2) });
    let window_end = at(0) + MESSAGE_WINDOW;
    assert_eq!(room.messages_due(), Some(window_end), "within the window: due when it ends");
    assert!(other_rx.is_empty(), "nothing handed over before it is due");
    room.send_messages(window_end);
    let merged = easel_protocol::decode_server(&other_rx.try_recv().unwrap()).unwrap();
    let ServerMsg::BoardOps(ops) = merged else { panic!("one message of both relays, not {merged:?}") };
    let seqs: Vec<u32> = ops
        .iter()
        .map(|op| match op {
            BoardOp::Add { stroke, .. } => stroke.id.seq,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(seqs, [1, 2], "in the order they were applied");
    assert!(other_rx.is_empty());
    assert_eq!(room.messages_due(), None);
    let later = window_end + MESSAGE_WINDOW * 5;
    room.play(later, Play::Chat { player: 2, text: "quiet again".into() });
    assert_eq!(room.messages_due(), Some(later));
}
