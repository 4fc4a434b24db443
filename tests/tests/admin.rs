//! The host's console API over real HTTP: the token is required, the status shows the rooms and
//! their players with the server's figures, and each action (broadcast, kick, close a room,
//! drain) reaches the players it names.

use std::net::SocketAddr;

use easel::Config;
use easel_client::core::Status;
use easel_client::headless::HeadlessClient;
use easel_protocol::close;
use easel_tests::{TestServer, WAIT};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "console-test-token-0123456789";

async fn start() -> TestServer {
    TestServer::start_with(Config { admin_token: Some(TOKEN.to_owned()), ..Config::for_tests() }).await
}

/// Sends one request and returns (status, body).
async fn request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    let body = body.unwrap_or("");
    if method == "POST" {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    let _ = stream.write_all(body.as_bytes()).await;
    let mut response = String::new();
    let _ = tokio::time::timeout(WAIT, stream.read_to_string(&mut response)).await.expect("a response in time");
    let status = response.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

async fn status(server: &TestServer) -> Value {
    let (code, body) = request(server.addr, "GET", "/admin/api/status", Some(TOKEN), None).await;
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

async fn closed_with(client: &HeadlessClient) -> (u16, String) {
    client
        .wait_for(WAIT, "the close", |core| match core.status() {
            Status::Closed { code, reason, .. } => Some((*code, reason.clone())),
            _ => None,
        })
        .await
        .expect("closed")
}

async fn told(client: &HeadlessClient, text: &str) {
    client
        .wait_for(WAIT, "the notice", |core| core.view().notices().any(|n| n.contains(text)).then_some(()))
        .await
        .unwrap_or_else(|e| panic!("the notice {text:?} did not arrive: {e}"));
}

#[tokio::test]
async fn the_api_answers_only_with_the_token() {
    let server = start().await;
    for token in [None, Some("wrong-token-0123456789012345"), Some(&TOKEN[..TOKEN.len() - 1])] {
        let (code, _) = request(server.addr, "GET", "/admin/api/status", token, None).await;
        assert_eq!(code, 401, "token {token:?}");
        let (code, _) = request(server.addr, "POST", "/admin/api/drain", token, Some("{}")).await;
        assert_eq!(code, 401, "token {token:?}");
    }
    assert_eq!(server.get("/readyz").await.0, "HTTP/1.1 200 OK", "a refused drain did nothing");
    let oversize = format!("{{\"text\":\"{}\"}}", "x".repeat(8 * 1024));
    let (code, _) = request(server.addr, "POST", "/admin/api/broadcast", Some(TOKEN), Some(&oversize)).await;
    assert_eq!(code, 413, "bodies are bounded");
    let (code, _) = request(server.addr, "POST", "/admin/api/broadcast", Some(TOKEN), Some("{\"text\":\"  \"}")).await;
    assert_eq!(code, 422, "an empty message is refused");
    server.stop().await;
}

#[tokio::test]
async fn the_status_shows_each_room_its_players_and_the_servers_figures() {
    let server = start().await;
    let (ada, bob) = (server.join("ada", "lobby").await, server.join("bob", "lobby").await);
    let status = status(&server).await;
    let rooms = status["rooms"].as_array().expect("rooms");
    assert_eq!(rooms.len(), 1, "{status}");
    let lobby = &rooms[0];
    assert_eq!(lobby["name"], "lobby");
    let mut names: Vec<&str> =
        lobby["players"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    names.sort_unstable();
    assert_eq!(names, ["ada", "bob"]);
    assert!(lobby["players"][0]["id"].as_u64().is_some());
    assert_eq!(lobby["board_strokes"], 0);
    assert!(lobby["tick_p99_ms"].as_f64().is_some_and(|ms| ms >= lobby["tick_p50_ms"].as_f64().unwrap()));
    assert_eq!(lobby["missed_ticks"].as_u64(), Some(0));
    assert!(lobby["bytes_in_total"].as_u64().is_some() && lobby["bytes_out_total"].as_u64().is_some_and(|b| b > 0));
    assert_eq!(status["connections"]["websocket"], 2);
    assert_eq!(status["connections"]["webtransport"], 0);
    assert!(status["rss_bytes"].as_u64().is_some_and(|bytes| bytes > 0), "{status}");
    assert!(status["cpu_s"].as_f64().is_some() && status["uptime_s"].as_f64().is_some());
    assert!(status["bytes_in_total"].as_u64().is_some_and(|bytes| bytes > 0), "the Hellos came in");
    assert_eq!(status["draining"], false);
    // The same figures for scrapers.
    let (_, metrics) = server.get("/metrics").await;
    for name in ["easel_websocket_connections 2", "process_resident_memory_bytes ", "easel_uptime_seconds "] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    ada.close().await;
    bob.close().await;
    server.stop().await;
}

#[tokio::test]
async fn broadcast_kick_and_close_reach_the_players_they_name() {
    let server = start().await;
    let (ada, bob) = (server.join("ada", "hall").await, server.join("bob", "hall").await);
    let other = server.join("cy", "yard").await;
    let (code, _) =
        request(server.addr, "POST", "/admin/api/broadcast", Some(TOKEN), Some("{\"text\":\"maintenance at noon\"}"))
            .await;
    assert_eq!(code, 200);
    for client in [&ada, &bob, &other] {
        told(client, "maintenance at noon").await;
    }
    let bob_id = bob.core().view().me().expect("bob's id");
    let path = format!("/admin/api/rooms/hall/players/{bob_id}/kick");
    let (code, _) = request(server.addr, "POST", &path, Some(TOKEN), Some("{\"reason\":\"spamming\"}")).await;
    assert_eq!(code, 200);
    assert_eq!(closed_with(&bob).await, (close::POLICY_VIOLATION, "spamming".to_owned()));
    let names = |status: Value| -> Vec<String> {
        status["rooms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|room| room["name"] == "hall")
            .flat_map(|room| {
                room["players"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["name"].as_str().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(names(status(&server).await), ["ada"], "a kicked player leaves the room");
    let (code, _) = request(
        server.addr,
        "POST",
        "/admin/api/rooms/hall/close",
        Some(TOKEN),
        Some("{\"message\":\"hall is closing\"}"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        closed_with(&ada).await,
        (close::NORMAL, "hall is closing".to_owned()),
        "the message comes with the close"
    );
    let (code, _) =
        request(server.addr, "POST", "/admin/api/rooms/nowhere/close", Some(TOKEN), Some("{\"message\":\"x\"}")).await;
    assert_eq!(code, 404);
    // Others play on.
    easel_tests::still_playing(&other).await;
    other.close().await;
    server.stop().await;
}

#[tokio::test]
async fn a_drain_from_the_console_stops_the_server_as_sigterm_does() {
    let server = start().await;
    let player = server.join("dee", "den").await;
    let (code, _) = request(server.addr, "POST", "/admin/api/drain", Some(TOKEN), Some("{}")).await;
    assert_eq!(code, 200);
    // The tests' servers stop at once (a drain timeout of 0): everyone is closed and run ends.
    assert_eq!(closed_with(&player).await.0, close::GOING_AWAY);
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(server.addr).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the server still accepts connections");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.stop().await;
}
