//! RFC 6455 to the letter, on a raw TCP socket: one test per rule the server must keep, named
//! after the rule, each before and after the client joined where that can differ.

use easel_protocol::{ClientMsg, PROTOCOL_VERSION, close, encode};
use easel_tests::TestServer;
use easel_tests::raw::{BINARY, CONTINUATION, KEY, PING, RawWebSocket, TEXT, http_exchange, upgrade_request};

/// A raw connection that has joined room `rfc` (its `Welcome` read).
async fn joined(server: &TestServer) -> RawWebSocket {
    let mut socket = RawWebSocket::connect(server.addr).await;
    let hello = ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        name: "raw".into(),
        room: "rfc".into(),
        identity: None,
        resume: None,
        seat: None,
    };
    socket.send_frame(true, BINARY, &encode(&hello)).await;
    let welcome = socket.read_frame().await.expect("a Welcome");
    assert_eq!(welcome.opcode, BINARY);
    socket
}

/// Both sides of a connection's life a rule may hold in: before `Hello`, and in a room.
async fn before_and_after_joining(server: &TestServer) -> [(RawWebSocket, &'static str); 2] {
    [(RawWebSocket::connect(server.addr).await, "before joining"), (joined(server).await, "after joining")]
}

#[tokio::test]
async fn rule_5_5_1_a_close_is_answered_with_a_close_that_echoes_its_code() {
    let server = TestServer::start().await;
    for code in [Some(1000), Some(3000), Some(4999), None] {
        for (mut socket, when) in before_and_after_joining(&server).await {
            // A close body is a code and then a reason; without a code it is empty.
            socket.send_close(code, if code.is_some() { b"bye" } else { b"" }).await;
            let reply = socket.read_close().await.unwrap_or_else(|| panic!("no close reply to {code:?} {when}"));
            assert_eq!(reply.close_code(), code, "the reply to {code:?} {when}");
            assert!(socket.frames_until_end().await.is_empty(), "nothing after the close {when}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn rule_7_4_an_invalid_close_code_is_answered_with_1002() {
    let server = TestServer::start().await;
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        for (mut socket, when) in before_and_after_joining(&server).await {
            socket.send_close(Some(code), b"").await;
            let reply = socket.read_close().await.unwrap_or_else(|| panic!("no close reply to {code} {when}"));
            assert_eq!(reply.close_code(), Some(close::PROTOCOL_ERROR), "the reply to close code {code} {when}");
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn rule_4_2_2_an_unsupported_version_gets_426_naming_the_version_spoken() {
    let server = TestServer::start().await;
    let request = upgrade_request(server.addr).replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
    let response = http_exchange(server.addr, &request).await;
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    assert!(response.to_ascii_lowercase().contains("sec-websocket-version: 13"), "{response}");
    server.stop().await;
}

#[tokio::test]
async fn rule_4_2_1_a_key_that_is_not_16_bytes_in_base64_gets_400() {
    let server = TestServer::start().await;
    for key in ["x", "dGhlIHNhbXBsZSBub25jZQ", "AAAAAAAAAAAAAAAAAAAAAAAAAAAA"] {
        let request = upgrade_request(server.addr).replace(KEY, key);
        let response = http_exchange(server.addr, &request).await;
        assert!(response.starts_with("HTTP/1.1 400"), "key {key}: {response}");
    }
    server.stop().await;
}

#[tokio::test]
async fn rule_4_1_an_upgrade_over_http_1_0_gets_400() {
    let server = TestServer::start().await;
    let request = upgrade_request(server.addr).replace("HTTP/1.1", "HTTP/1.0");
    let response = http_exchange(server.addr, &request).await;
    assert!(response.starts_with("HTTP/1.0 400") || response.starts_with("HTTP/1.1 400"), "{response}");
    server.stop().await;
}

#[tokio::test]
async fn rule_8_1_text_that_is_not_utf8_is_closed_with_1007() {
    let server = TestServer::start().await;
    for (mut socket, when) in before_and_after_joining(&server).await {
        socket.send_frame(true, TEXT, &[0xCE, 0xBA, 0xE1, 0xBD, 0xB9, 0xFF]).await;
        let reply = socket.read_close().await.unwrap_or_else(|| panic!("no close {when}"));
        assert_eq!(reply.close_code(), Some(close::INVALID_PAYLOAD), "invalid UTF-8 text {when}");
    }
    for (mut socket, when) in before_and_after_joining(&server).await {
        socket.send_close(Some(1000), &[0xFF, 0xFE]).await;
        let reply = socket.read_close().await.unwrap_or_else(|| panic!("no close {when}"));
        assert_eq!(reply.close_code(), Some(close::INVALID_PAYLOAD), "a close reason that is not UTF-8 {when}");
    }
    server.stop().await;
}

/// Not an RFC rule but the server's: frames that are not whole messages (pings, empty
/// continuations) draw on a budget like messages do, so a flood of them is closed.
#[tokio::test]
async fn control_and_continuation_frames_count_against_the_budget() {
    let server = TestServer::start().await;
    for (mut socket, when) in before_and_after_joining(&server).await {
        for _ in 0..1_200 {
            socket.send_frame(true, PING, b"flood").await;
        }
        let frames = socket.frames_until_end().await;
        let pongs = frames.iter().filter(|f| f.opcode == 0xA).count();
        assert!(pongs < 1_200, "every ping was answered {when}");
        let closed = frames.iter().rev().find_map(|f| f.close_code());
        assert_eq!(closed, Some(close::POLICY_VIOLATION), "a ping flood {when}");
    }
    for (mut socket, when) in before_and_after_joining(&server).await {
        socket.send_frame(false, BINARY, b"").await;
        for _ in 0..1_200 {
            socket.send_frame(false, CONTINUATION, b"").await;
        }
        let closed = socket.read_close().await.and_then(|f| f.close_code());
        assert_eq!(closed, Some(close::POLICY_VIOLATION), "a flood of empty fragments {when}");
    }
    server.stop().await;
}
