//! Hostile and broken clients are closed with the right code and reason, and everyone else goes
//! on playing.

use std::time::Duration;

use easel::Config;
use easel_protocol::{ClientMsg, PROTOCOL_VERSION, close, encode};
use easel_tests::{TestServer, raw_connect, read_close, still_playing};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

fn hello(version: u16) -> Vec<u8> {
    encode(&ClientMsg::Hello {
        version,
        name: "mallory".into(),
        room: "arena".into(),
        identity: None,
        resume: None,
        seat: None,
    })
}

#[tokio::test]
async fn garbage_oversize_text_and_wrong_version_are_closed_with_their_codes() {
    let server = TestServer::start().await;
    let honest = server.join("honest", "arena").await;

    let mut garbage = raw_connect(&server).await;
    garbage.send(Message::Binary(vec![0xde, 0xad, 0xbe, 0xef, 0xff].into())).await.unwrap();
    assert_eq!(read_close(&mut garbage).await.0, close::PROTOCOL_ERROR, "malformed bytes: 1002");

    let mut oversize = raw_connect(&server).await;
    oversize.send(Message::Binary(vec![0u8; 64 * 1024].into())).await.unwrap();
    assert_eq!(read_close(&mut oversize).await.0, close::MESSAGE_TOO_BIG, "64 KiB message: 1009");

    let mut text = raw_connect(&server).await;
    text.send(Message::Text("hello".into())).await.unwrap();
    assert_eq!(read_close(&mut text).await.0, close::UNSUPPORTED_DATA, "text frame: 1003");

    let mut old = raw_connect(&server).await;
    old.send(Message::Binary(hello(PROTOCOL_VERSION + 1).into())).await.unwrap();
    let (code, reason) = read_close(&mut old).await;
    assert_eq!(code, close::PROTOCOL_ERROR, "wrong version: 1002");
    assert!(reason.contains("version"), "the reason names the problem: {reason}");

    let mut joined_then_garbage = raw_connect(&server).await;
    joined_then_garbage.send(Message::Binary(hello(PROTOCOL_VERSION).into())).await.unwrap();
    joined_then_garbage.send(Message::Binary(vec![9, 9, 9].into())).await.unwrap();
    assert_eq!(read_close(&mut joined_then_garbage).await.0, close::PROTOCOL_ERROR);

    still_playing(&honest).await;
    server.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_says_hello_is_closed() {
    let mut config = Config::for_tests();
    config.limits.hello_timeout = Duration::from_millis(300);
    let server = TestServer::start_with(config).await;
    let mut silent = raw_connect(&server).await;
    let (code, reason) = read_close(&mut silent).await;
    assert_eq!(code, close::POLICY_VIOLATION);
    assert!(reason.contains("Hello"), "{reason}");
    server.stop().await;
}

#[tokio::test]
async fn an_input_flood_is_closed_and_others_keep_playing() {
    let server = TestServer::start().await;
    let honest = server.join("honest", "arena").await;
    let mut flood = raw_connect(&server).await;
    flood.send(Message::Binary(hello(PROTOCOL_VERSION).into())).await.unwrap();
    // Bounded: far past the burst allowance, then stop.
    for seq in 1..2000u32 {
        let input = encode(&ClientMsg::Input { seq, ack: 0, dirs: vec![(1, 1)] });
        if flood.send(Message::Binary(input.into())).await.is_err() {
            break;
        }
    }
    let (code, reason) = read_close(&mut flood).await;
    assert_eq!(code, close::POLICY_VIOLATION, "flood closed: {reason}");
    still_playing(&honest).await;
    server.stop().await;
}

#[tokio::test]
async fn an_input_message_with_too_many_inputs_is_a_protocol_error() {
    let server = TestServer::start().await;
    let mut client = raw_connect(&server).await;
    client.send(Message::Binary(hello(PROTOCOL_VERSION).into())).await.unwrap();
    let input = encode(&ClientMsg::Input { seq: 10, ack: 0, dirs: vec![(1, 0); 5] });
    client.send(Message::Binary(input.into())).await.unwrap();
    let (code, reason) = read_close(&mut client).await;
    assert_eq!(code, close::PROTOCOL_ERROR);
    assert!(reason.contains("1 to 4 inputs"), "{reason}");
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_does_not_stall_the_room_or_others() {
    let mut config = Config::for_tests();
    config.limits.write_timeout = Duration::from_millis(500);
    let server = TestServer::start_with(config).await;
    let honest = server.join("honest", "arena").await;
    // Joins, then never reads: its socket buffers fill with snapshots and chat.
    let mut stuck = raw_connect(&server).await;
    stuck.send(Message::Binary(hello(PROTOCOL_VERSION).into())).await.unwrap();
    for i in 0..30 {
        honest.chat(&format!("filler {i} {}", "x".repeat(150))).ok();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    still_playing(&honest).await;
    drop(stuck);
    server.stop().await;
}

#[tokio::test]
async fn a_foreign_origin_is_refused_before_the_upgrade() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = TestServer::start().await;
    let mut request = server.ws_url().into_client_request().unwrap();
    request.headers_mut().insert("origin", "http://evil.example".parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await;
    let status = match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {:?}", other.map(|_| ())),
    };
    assert_eq!(status, 403);
    server.stop().await;
}
