//! The Agones integration (`--features agones`) against dummy-agones, an in-process stand-in
//! for the SDK sidecar (no Kubernetes runs here): the server says Ready once its store is open,
//! Allocated while it holds a room and Ready again once the room has closed, and Shutdown
//! after it stopped.
#![cfg(feature = "agones")]

use std::time::Duration;

use dummy_agones::AgonesServer;
use easel::Config;
use easel::config::AgonesSidecar;
use easel_tests::{TestServer, WAIT};

/// The GameServer's state as the sidecar holds it.
fn state(sidecar: &AgonesServer) -> String {
    sidecar.game_server().status.map(|status| status.state).unwrap_or_default()
}

async fn wait_for_state(sidecar: &AgonesServer, wanted: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while state(sidecar) != wanted {
        assert!(tokio::time::Instant::now() < deadline, "the GameServer is {:?}, not {wanted}", state(sidecar));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_tells_agones_ready_allocated_ready_and_shutdown() {
    let sidecar = AgonesServer::default();
    let address = sidecar.start_with_port(0).await.expect("the SDK stand-in listens");
    let config = Config { agones: Some(AgonesSidecar { port: Some(address.port()) }), ..Config::for_tests() };
    let server = TestServer::start_with(config).await;
    wait_for_state(&sidecar, "Ready").await;
    let player = server.join("ann", "fleet").await;
    wait_for_state(&sidecar, "Allocated").await;
    player.close().await;
    // The room closes once empty; the node can be scaled down again.
    wait_for_state(&sidecar, "Ready").await;
    server.stop().await;
    assert_eq!(state(&sidecar), "Shutdown");
}
