//! WebTransport over real QUIC on 127.0.0.1: native clients play beside WebSocket ones in the
//! same room, misbehaving sessions are closed with a reason while others play on, a player
//! resumes across transports, the server's own certificate is replaced under a live session, and
//! one connection cap holds for both transports.

use std::time::Duration;

use easel::Config;
use easel::config::{CertificateSource, Quic, RotationSchedule};
use easel_client::headless::{HeadlessClient, Transport, TransportChoice};
use easel_protocol::board::Point;
use easel_protocol::stream::message_frame;
use easel_protocol::{ClientMsg, PROTOCOL_VERSION, close, encode};
use easel_tests::raw::{http_exchange, upgrade_request};
use easel_tests::wt::{Ended, RawSession};
use easel_tests::{TestServer, WAIT, still_playing, with_webtransport};

fn hello(name: &str, room: &str) -> Vec<u8> {
    encode(&ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        name: name.into(),
        room: room.into(),
        identity: None,
        resume: None,
        seat: None,
    })
}

fn line(x: i16, y: i16) -> Vec<Point> {
    (0..5).map(|i| Point { x: x + i * 4, y }).collect()
}

fn me(client: &HeadlessClient) -> u32 {
    client.core().view().me().expect("joined")
}

/// `mover` moves (toward the middle, away from any wall) until `watcher` sees it have moved.
async fn seen_moving(watcher: &HeadlessClient, mover: &HeadlessClient) {
    let id = me(mover);
    let start = watcher.wait_for(WAIT, "the other player", |core| core.view().players().get(&id)?.state).await.unwrap();
    mover.hold_direction(if start.x > 1000.0 { -1 } else { 1 }, 0);
    watcher
        .wait_for(WAIT, "the other player moving", |core| {
            let now = core.view().players().get(&id)?.state?;
            ((now.x - start.x).abs() > 20.0).then_some(())
        })
        .await
        .expect("the watcher sees the mover move");
    mover.hold_direction(0, 0);
}

#[tokio::test]
async fn quic_and_websocket_players_in_one_room_see_each_other_move_chat_and_draw() {
    let server = TestServer::start_with_webtransport().await;
    let webtransport = server.transport(TransportChoice::WebTransport).await;
    assert!(matches!(webtransport, Transport::WebTransport { .. }));
    let quic = HeadlessClient::join_over(&webtransport, "quic", "mixed", WAIT).await.unwrap();
    let tcp = server.join("tcp", "mixed").await;

    seen_moving(&tcp, &quic).await;
    seen_moving(&quic, &tcp).await;

    quic.chat("hello from QUIC").unwrap();
    tcp.chat("hello from TCP").unwrap();
    for (reader, text) in [(&tcp, "hello from QUIC"), (&quic, "hello from TCP")] {
        reader
            .wait_for(WAIT, "the other's chat line", |core| core.view().chat().any(|l| l.text == text).then_some(()))
            .await
            .unwrap();
    }

    quic.core().whiteboard_mut().draw(0xff0000, 3, &line(0, 0)).unwrap();
    tcp.core().whiteboard_mut().draw(0x0000ff, 3, &line(0, 100)).unwrap();
    for client in [&quic, &tcp] {
        client
            .wait_for(WAIT, "both strokes", |core| (core.whiteboard().board().len() == 2).then_some(()))
            .await
            .unwrap();
        client.board_synced(WAIT).await.unwrap();
    }
    assert_eq!(
        quic.core().whiteboard().board().digest(),
        tcp.core().whiteboard().board().digest(),
        "one board, whatever the transport"
    );
    server.stop().await;
}

#[tokio::test]
async fn misbehaving_quic_sessions_are_closed_with_a_reason_while_others_play() {
    let mut config = with_webtransport(Config::for_tests());
    config.limits.hello_timeout = Duration::from_secs(1);
    let server = TestServer::start_with(config).await;
    let webtransport = server.transport(TransportChoice::WebTransport).await;
    let honest_quic = HeadlessClient::join_over(&webtransport, "honest-quic", "arena", WAIT).await.unwrap();
    let honest_tcp = server.join("honest-tcp", "arena").await;

    // A frame of a kind that does not exist.
    let garbage = RawSession::open(&server).await;
    let (mut send, mut recv) = garbage.open_stream().await;
    send.write_all(&[0, 0, 0, 3, 7, 1, 2]).await.unwrap();
    let ended = garbage.ended(&mut recv).await;
    assert!(
        matches!(&ended, Ended::CloseFrame { code: close::PROTOCOL_ERROR, reason } if reason.contains("kind")),
        "an unknown frame: 1002 naming it, got {ended:?}"
    );
    assert_eq!(garbage.connection_end().await.code(), Some(u64::from(close::PROTOCOL_ERROR)));

    // A well-framed message that is not one.
    let nonsense = RawSession::open(&server).await;
    let (mut send, mut recv) = nonsense.open_stream().await;
    send.write_all(&message_frame(&[0xde, 0xad, 0xbe, 0xef])).await.unwrap();
    assert_eq!(nonsense.ended(&mut recv).await.code(), Some(u64::from(close::PROTOCOL_ERROR)));

    // A frame announcing 64 KiB: refused on its length, before its body is buffered.
    let oversize = RawSession::open(&server).await;
    let (mut send, mut recv) = oversize.open_stream().await;
    send.write_all(&[0, 1, 0, 1, 0]).await.unwrap();
    assert_eq!(oversize.ended(&mut recv).await.code(), Some(u64::from(close::MESSAGE_TOO_BIG)));

    // A session that never opens its stream, and one that never finishes its Hello.
    let silent = RawSession::open(&server).await;
    let ended = silent.connection_end().await;
    assert!(
        matches!(&ended, Ended::Connection { code, reason } if *code == u64::from(close::POLICY_VIOLATION) && reason.contains("stream")),
        "no stream: 1008, got {ended:?}"
    );
    let slow = RawSession::open(&server).await;
    let (mut send, mut recv) = slow.open_stream().await;
    send.write_all(&[0, 0]).await.unwrap();
    assert_eq!(slow.ended(&mut recv).await.code(), Some(u64::from(close::POLICY_VIOLATION)), "no Hello: 1008");

    // A joined client flooding datagrams (acknowledgements) is over its message rate.
    let flood = RawSession::open(&server).await;
    let (mut send, mut recv) = flood.open_stream().await;
    send.write_all(&message_frame(&hello("flood", "arena"))).await.unwrap();
    let ack = [&[0u8][..], &encode(&ClientMsg::Ack { tick: 1 })].concat();
    for _ in 0..40 {
        for _ in 0..50 {
            let _ = flood.connection.send_datagram(&ack);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ended = flood.ended(&mut recv).await;
    assert!(
        matches!(&ended, Ended::CloseFrame { code: close::POLICY_VIOLATION, reason } if reason.contains("rate")),
        "a datagram flood: 1008 naming the rate, got {ended:?}"
    );

    // More streams than allowed: the extra ones are never granted, and the session lives on.
    let greedy = RawSession::open(&server).await;
    let (mut send, _recv) = greedy.open_stream().await;
    send.write_all(&message_frame(&hello("greedy", "arena"))).await.unwrap();
    let mut opened = 0;
    for _ in 0..16 {
        let open = async {
            let (mut send, recv) = greedy.open_stream().await;
            send.write_all(&[0]).await.unwrap();
            (send, recv)
        };
        match tokio::time::timeout(Duration::from_millis(300), open).await {
            Ok(stream) => {
                opened += 1;
                std::mem::forget(stream);
            }
            Err(_) => break,
        }
    }
    assert!(opened <= 2, "a session may open a couple of spare streams, not {opened}");

    still_playing(&honest_quic).await;
    still_playing(&honest_tcp).await;
    server.stop().await;
}

#[tokio::test]
async fn a_player_on_quic_resumes_over_websocket_with_its_player_and_board_edits() {
    let server = TestServer::start_with_webtransport().await;
    let webtransport = server.transport(TransportChoice::WebTransport).await;
    let ann = HeadlessClient::join_over(&webtransport, "ann", "switch", WAIT).await.unwrap();
    let bob = server.join("bob", "switch").await;
    let ann_id = me(&ann);
    ann.core().whiteboard_mut().draw(1, 2, &line(0, 0)).unwrap();
    ann.board_synced(WAIT).await.unwrap();
    let players = server.metric("easel_players").await;

    // UDP goes away: the connection is lost without a close; edits made meanwhile are kept.
    let mut core = ann.lose_connection().await;
    core.whiteboard_mut().draw(1, 2, &line(0, 300)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(server.metric("easel_players").await, players, "the dropped player waits for its resume");

    let websocket = server.transport(TransportChoice::WebSocket).await;
    let ann = HeadlessClient::connect_over(&websocket, core).await.unwrap();
    assert_eq!(ann.joined(WAIT).await.unwrap(), ann_id, "the same player, over the other transport");
    ann.board_synced(WAIT).await.unwrap();
    bob.wait_for(WAIT, "both of ann's strokes", |core| (core.whiteboard().board().len() == 2).then_some(()))
        .await
        .unwrap();
    let authors: Vec<u32> = bob.core().whiteboard().board().strokes().map(|s| s.id.author).collect();
    assert_eq!(authors[0], authors[1], "one author before and after the switch: {authors:?}");
    assert!(bob.core().view().players().contains_key(&ann_id), "bob still sees ann as the same player");
    assert_eq!(server.metric("easel_players").await, players);
    server.stop().await;
}

#[tokio::test]
async fn the_servers_own_certificate_is_replaced_and_a_live_session_plays_on() {
    let mut config = Config::for_tests();
    let schedule = RotationSchedule { present_for: Duration::from_secs(3), announce_before: Duration::from_secs(1) };
    config.quic = Some(Quic { udp_port: None, certificate: CertificateSource::SelfSigned { schedule } });
    let server = TestServer::start_with(config).await;
    let before = server.transport(TransportChoice::WebTransport).await;
    let Transport::WebTransport { certificate_hashes: first, .. } = &before else { unreachable!() };
    assert_eq!(first.len(), 1);
    let live = HeadlessClient::join_over(&before, "live", "rotate", WAIT).await.unwrap();

    // Announced: both hashes offered, the one in use first.
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    let Transport::WebTransport { certificate_hashes: during, .. } =
        server.transport(TransportChoice::WebTransport).await
    else {
        unreachable!()
    };
    assert_eq!(during.len(), 2, "the successor is offered beside the certificate in use");
    assert_eq!(during[0], first[0]);

    // Switched: only the successor is offered, and presented.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let after = server.transport(TransportChoice::WebTransport).await;
    let Transport::WebTransport { certificate_hashes: now, .. } = &after else { unreachable!() };
    assert_eq!(now.as_slice(), &during[1..], "the announced certificate took over");
    let late = HeadlessClient::join_over(&after, "late", "rotate", WAIT).await.unwrap();
    assert!(
        HeadlessClient::join_over(&before, "stale", "rotate", Duration::from_secs(3)).await.is_err(),
        "the old certificate is no longer presented"
    );

    still_playing(&live).await;
    seen_moving(&late, &live).await;
    server.stop().await;
}

#[tokio::test]
async fn connections_over_both_transports_count_against_one_cap() {
    let mut config = with_webtransport(Config::for_tests());
    config.limits.max_connections = 2;
    let server = TestServer::start_with(config).await;
    let webtransport = server.transport(TransportChoice::WebTransport).await;
    let quic = HeadlessClient::join_over(&webtransport, "quic", "full", WAIT).await.unwrap();
    let tcp = server.join("tcp", "full").await;

    let response = http_exchange(server.addr, &upgrade_request(server.addr)).await;
    assert!(response.starts_with("HTTP/1.1 503"), "a WebSocket over the cap is refused: {response}");
    assert!(
        HeadlessClient::join_over(&webtransport, "third", "full", Duration::from_secs(3)).await.is_err(),
        "a QUIC connection over the cap is refused"
    );

    // A place frees up: the next one gets in.
    tcp.close().await;
    let mut joined = None;
    for _ in 0..50 {
        if let Ok(client) = HeadlessClient::join_over(&webtransport, "next", "full", WAIT).await {
            joined = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(joined.is_some(), "a freed place is taken again");
    still_playing(&quic).await;
    server.stop().await;
}
