//! Server lifecycle: health and metrics endpoints, and graceful shutdown with a close frame.

use easel_client::Status;
use easel_protocol::close;
use easel_tests::{TestServer, WAIT};

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
