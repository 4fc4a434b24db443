//! The shared whiteboard over the real server: concurrent drawing, erasing, per-user undo,
//! offline edits merged on reconnect, the board surviving a restart, and presence.

use std::time::Duration;

use easel::Config;
use easel::store::Location;
use easel_client::headless::HeadlessClient;
use easel_protocol::board::Point;
use easel_tests::{TestServer, WAIT};

fn line(x: i16, y: i16) -> Vec<Point> {
    (0..12).map(|i| Point { x: x + i * 4, y: y + (i % 3) * 5 }).collect()
}

fn digest(client: &HeadlessClient) -> [u8; 32] {
    client.core().whiteboard().board().digest()
}

async fn same_board(clients: &[&HeadlessClient], strokes: usize) -> [u8; 32] {
    for client in clients {
        client.board_synced(WAIT).await.unwrap();
        client
            .wait_for(WAIT, "all strokes", |core| (core.whiteboard().board().len() == strokes).then_some(()))
            .await
            .unwrap();
    }
    let first = digest(clients[0]);
    for client in &clients[1..] {
        assert_eq!(digest(client), first, "every replica holds the same board");
    }
    first
}

/// Ann and Bob in `room`, each holding the board as the server has it.
async fn ann_and_bob(server: &TestServer, room: &str) -> (HeadlessClient, HeadlessClient) {
    let ann = server.join("ann", room).await;
    let bob = server.join("bob", room).await;
    ann.board_synced(WAIT).await.unwrap();
    bob.board_synced(WAIT).await.unwrap();
    (ann, bob)
}

#[tokio::test]
async fn two_players_drawing_at_once_end_with_the_same_board_and_a_late_joiner_gets_it() {
    let server = TestServer::start().await;
    let (ann, bob) = ann_and_bob(&server, "board").await;
    for i in 0..20 {
        ann.core().whiteboard_mut().draw(0xff0000, 3, &line(i * 10, 0)).unwrap();
        bob.core().whiteboard_mut().draw(0x0000ff, 5, &line(i * 10, 100)).unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let board = same_board(&[&ann, &bob], 40).await;
    let late = server.join("late", "board").await;
    assert_eq!(same_board(&[&late], 40).await, board, "a late joiner receives the whole board");
    server.stop().await;
}

#[tokio::test]
async fn the_longest_stroke_arrives_whole_though_it_spans_many_socket_reads() {
    use easel_protocol::board::MAX_POINTS_PER_STROKE;
    let server = TestServer::start().await;
    let (ann, bob) = ann_and_bob(&server, "long").await;
    // A zigzag of large steps: several bytes a point, so the message is several KiB, larger
    // than the server's 1 KiB read chunk.
    let zigzag: Vec<Point> = (0..MAX_POINTS_PER_STROKE as i16)
        .map(|i| Point { x: if i % 2 == 0 { -3000 } else { 3000 }, y: (i % 7) * 900 - 3000 })
        .collect();
    ann.core().whiteboard_mut().draw(0x00aa00, 2, &zigzag).unwrap();
    same_board(&[&ann, &bob], 1).await;
    let stroke_points = |client: &HeadlessClient| {
        client.core().whiteboard().board().strokes().map(|s| s.points.len()).collect::<Vec<_>>()
    };
    assert_eq!(stroke_points(&bob), vec![MAX_POINTS_PER_STROKE], "bob holds every point");
    server.stop().await;
}

#[tokio::test]
async fn erasing_and_undoing_an_erase_reach_everyone() {
    let server = TestServer::start().await;
    let ann = server.join("ann", "erase").await;
    let bob = server.join("bob", "erase").await;
    ann.board_synced(WAIT).await.unwrap();
    ann.core().whiteboard_mut().draw(1, 4, &line(0, 0)).unwrap();
    same_board(&[&ann, &bob], 1).await;

    assert_eq!(bob.core().whiteboard_mut().erase_at(Point { x: 8, y: 5 }, 4.0), 1, "bob erases ann's stroke");
    same_board(&[&ann, &bob], 0).await;
    assert!(bob.core().whiteboard_mut().undo(), "bob undoes his erase");
    same_board(&[&ann, &bob], 1).await;
    server.stop().await;
}

#[tokio::test]
async fn undo_undoes_only_my_own_actions_while_others_draw() {
    let server = TestServer::start().await;
    let (ann, bob) = ann_and_bob(&server, "undo").await;
    ann.core().whiteboard_mut().draw(1, 2, &line(0, 0)).unwrap();
    bob.core().whiteboard_mut().draw(2, 2, &line(0, 200)).unwrap();
    ann.core().whiteboard_mut().draw(1, 2, &line(0, 400)).unwrap();
    same_board(&[&ann, &bob], 3).await;

    assert!(bob.core().whiteboard_mut().undo());
    assert!(!bob.core().whiteboard_mut().undo(), "bob has only one action of his own");
    same_board(&[&ann, &bob], 2).await;
    let bob_author = bob.core().whiteboard().identity().unwrap().author;
    let authors: Vec<u32> = ann.core().whiteboard().board().strokes().map(|s| s.id.author).collect();
    assert!(!authors.contains(&bob_author), "bob's undo removed his stroke only: {authors:?}");
    server.stop().await;
}

#[tokio::test]
async fn offline_edits_merge_on_reconnect_with_nothing_lost_or_resurrected() {
    let server = TestServer::start().await;
    let url = server.ws_url();
    let ann = server.join("ann", "offline").await;
    let bob = server.join("bob", "offline").await;
    ann.board_synced(WAIT).await.unwrap();
    ann.core().whiteboard_mut().draw(1, 2, &line(0, 0)).unwrap();
    ann.core().whiteboard_mut().draw(1, 2, &line(0, 300)).unwrap();
    bob.core().whiteboard_mut().draw(2, 2, &line(500, 0)).unwrap();
    same_board(&[&ann, &bob], 3).await;

    // Ann goes offline and keeps drawing; she also erases bob's stroke.
    let mut offline = ann.disconnect().await;
    offline.whiteboard_mut().draw(1, 2, &line(0, 600)).unwrap();
    offline.whiteboard_mut().draw(1, 2, &line(0, 900)).unwrap();
    assert_eq!(offline.whiteboard_mut().erase_at(Point { x: 508, y: 5 }, 4.0), 1);
    assert_eq!(offline.whiteboard().unsynced(), 3, "three changes not synced");
    // Meanwhile bob erases one of ann's strokes and draws.
    assert_eq!(bob.core().whiteboard_mut().erase_at(Point { x: 8, y: 305 }, 4.0), 1);
    bob.core().whiteboard_mut().draw(2, 2, &line(500, 600)).unwrap();
    bob.board_synced(WAIT).await.unwrap();

    let ann = HeadlessClient::connect_with(&url, offline).await.unwrap();
    ann.joined(WAIT).await.unwrap();
    // ann: stroke 0, two offline strokes; bob: the new one. Erased: ann's 300 line, bob's first.
    same_board(&[&ann, &bob], 4).await;
    let ys: Vec<i16> = ann.core().whiteboard().board().strokes().map(|s| s.points[0].y).collect();
    assert!(!ys.contains(&300), "bob's erase of ann's stroke holds: nothing resurrected");
    server.stop().await;
}

#[tokio::test]
async fn the_board_survives_a_server_restart() {
    let dir = std::env::temp_dir().join(format!("easel-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = || Config { storage: Location::Directory(dir.clone()), ..Config::for_tests() };
    let server = TestServer::start_with(config()).await;
    let ann = server.join("ann", "keep").await;
    ann.board_synced(WAIT).await.unwrap();
    for i in 0..5 {
        ann.core().whiteboard_mut().draw(1, 2, &line(i * 20, 0)).unwrap();
    }
    ann.core().whiteboard_mut().erase_at(Point { x: 0, y: 0 }, 2.0);
    let before = same_board(&[&ann], 4).await;
    server.stop().await;

    let server = TestServer::start_with(config()).await;
    let back = server.join("back", "keep").await;
    assert_eq!(same_board(&[&back], 4).await, before, "the board comes back exactly as acknowledged");
    server.stop().await;
}

#[tokio::test]
async fn cursors_are_shared_and_vanish_when_their_player_leaves() {
    let server = TestServer::start().await;
    let ann = server.join("ann", "cursors").await;
    let bob = server.join("bob", "cursors").await;
    let ann_id = ann.core().view().me().unwrap();
    ann.core().whiteboard_mut().set_cursor(Some(Point { x: 42, y: 7 }));
    let seen = bob
        .wait_for(WAIT, "ann's cursor", |core| core.whiteboard().presence().get(&ann_id).and_then(|p| p.cursor))
        .await
        .unwrap();
    assert_eq!(seen, Point { x: 42, y: 7 });
    ann.close().await;
    bob.wait_for(WAIT, "ann's cursor gone", |core| (!core.whiteboard().presence().contains_key(&ann_id)).then_some(()))
        .await
        .unwrap();
    server.stop().await;
}
