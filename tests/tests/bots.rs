//! The load generator (`easel-bot`) against the real server: each behaviour connects every bot,
//! measures what it should, and its run checks pass.

use std::time::Duration;

use easel_client::headless::TransportChoice;
use easel_load::arena::{self, Behavior, BotConfig};
use easel_tests::TestServer;

async fn run(behavior: Behavior, follow_input_timing: bool) -> arena::BotSummary {
    run_over(TransportChoice::WebSocket, behavior, follow_input_timing).await
}

async fn run_over(transport: TransportChoice, behavior: Behavior, follow_input_timing: bool) -> arena::BotSummary {
    let server = TestServer::start_with_webtransport().await;
    let config = BotConfig {
        transport: server.transport(transport).await,
        room: "bots".to_owned(),
        count: 6,
        behavior,
        follow_input_timing,
        warmup: Duration::from_millis(300),
        window: Duration::from_millis(1500),
        grace: Duration::from_millis(200),
        join_timeout: Duration::from_secs(10),
    };
    let summary = tokio::time::timeout(Duration::from_secs(30), arena::run(config, |_| {}))
        .await
        .expect("bounded")
        .expect("runs");
    server.stop().await;
    summary
}

#[tokio::test]
async fn arena_bots_measure_input_latency() {
    let summary = run(Behavior::Arena, false).await;
    assert!(summary.ok, "{:?}", summary.reason);
    assert_eq!(summary.connected, 6);
    assert!(summary.latency_ms.samples > 0 && summary.snapshots_per_s_per_client.min > 20.0);
}

#[tokio::test]
async fn arena_bots_that_follow_input_timing_pass_their_checks() {
    let summary = run(Behavior::Arena, true).await;
    assert!(summary.ok, "{:?}", summary.reason);
    assert!(summary.latency_ms.samples > 0 && summary.snapshots_per_s_per_client.min > 20.0);
}

#[tokio::test]
async fn drawing_bots_have_their_strokes_stored() {
    let summary = run(Behavior::Draw, false).await;
    assert!(summary.ok, "{:?}", summary.reason);
    // Both counts are of the window alone, so an op sent just before it may be acked in it: acks
    // can exceed sends by the ops in flight at its start, and only `> 0` is an invariant.
    assert!(summary.board_ops_sent > 0 && summary.board_ops_acked > 0);
}

#[tokio::test]
async fn mixed_bots_move_and_draw() {
    let summary = run(Behavior::Mixed, false).await;
    assert!(summary.ok, "{:?}", summary.reason);
    assert!(summary.latency_ms.samples > 0 && summary.board_ops_acked > 0);
}

#[tokio::test]
async fn arena_bots_play_over_webtransport() {
    let summary = run_over(TransportChoice::WebTransport, Behavior::Mixed, false).await;
    assert!(summary.ok, "{:?}", summary.reason);
    assert_eq!(summary.connected, 6);
    assert!(summary.latency_ms.samples > 0 && summary.snapshots_per_s_per_client.min > 20.0);
    assert!(summary.board_ops_acked > 0, "strokes go over the reliable stream");
}
