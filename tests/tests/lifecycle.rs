//! Server lifecycle: health, readiness and metrics endpoints, graceful shutdown with a close
//! frame, and the drain before it.

use std::time::Duration;

use easel::Config;
use easel_client::Status;
use easel_client::headless::HeadlessClient;
use easel_protocol::close;
use easel_tests::{TestServer, WAIT, still_playing};

#[tokio::test]
async fn health_and_metrics_answer() {
    let server = TestServer::start().await;
    let (status, body) = server.get("/healthz").await;
    assert!(status.contains("200"), "{status}");
    assert_eq!(body.trim(), "ok");
    let _client = server.join("m", "metrics").await;
    assert_eq!(server.metric("easel_players").await, 1);
    assert_eq!(server.metric("easel_connections").await, 1);
    // The join changed the world, so a snapshot went out, and a few ticks later its write is timed.
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.metric("easel_snapshot_fanout_seconds_count").await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no snapshot fan-out was timed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn shutdown_sends_every_client_a_going_away_close() {
    let server = TestServer::start().await;
    let clients = [server.join("a", "x").await, server.join("b", "y").await];
    server.stop().await;
    for client in &clients {
        let (code, reason) = client
            .wait_for(WAIT, "close frame", |core| match core.status() {
                Status::Closed { code, reason, .. } => Some((*code, reason.clone())),
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(code, close::GOING_AWAY);
        assert_eq!(reason, "server shutting down");
    }
}

/// How a client's connection ended.
async fn closed(client: &HeadlessClient) -> (u16, String, bool) {
    client
        .wait_for(WAIT, "the close", |core| match core.status() {
            Status::Closed { code, reason, retry } => Some((*code, reason.clone(), *retry)),
            _ => None,
        })
        .await
        .unwrap()
}

/// A stop with a drain: the players are told and play on, a newcomer is told to come back
/// (1012, worth retrying), `/readyz` turns 503 while `/healthz` stays 200; when the drain
/// timeout passes with a player still there, it is closed with "going away".
#[tokio::test]
async fn a_draining_server_lets_its_players_play_on_and_takes_no_new_ones() {
    let mut server =
        TestServer::start_with(Config { drain_timeout: Duration::from_secs(4), ..Config::for_tests() }).await;
    let (status, body) = server.get("/readyz").await;
    assert!(status.contains("200") && body.trim() == "ready", "{status} {body}");
    let player = server.join("stays", "drain").await;

    server.begin_stop();
    player
        .wait_for(WAIT, "the restart notice", |core| {
            core.view().notices().any(|notice| notice.contains("restarting")).then_some(())
        })
        .await
        .expect("the player is told the server is restarting");
    let (status, body) = server.get("/readyz").await;
    assert!(status.contains("503") && body.trim() == "draining", "{status} {body}");
    assert!(server.get("/healthz").await.0.contains("200"), "alive while draining");
    let newcomer = HeadlessClient::connect(&server.ws_url(), "late", "drain").await.expect("the upgrade is answered");
    let (code, reason, retry) = closed(&newcomer).await;
    assert_eq!((code, retry), (close::SERVICE_RESTART, true), "{reason}");
    assert!(reason.contains("restarting"), "{reason}");
    still_playing(&player).await;

    let (code, reason, _) = closed(&player).await;
    assert_eq!((code, reason.as_str()), (close::GOING_AWAY, "server shutting down"), "at the drain's end");
    server.stop().await;
}
