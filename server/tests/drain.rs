//! A stop by SIGTERM, as a service manager sends it: the players are told and play on, a
//! newcomer is sent away to come back (1012), and once the last player has left the server
//! exits 0 at once, without waiting out its drain timeout, with everything acknowledged stored.

mod common;

use std::process::{Command, ExitStatus};
use std::time::Duration;

use common::{Server, WAIT};
use easel_client::core::Status;
use easel_client::headless::HeadlessClient;
use easel_protocol::board::Point;
use easel_protocol::close;

fn start(data_dir: &str) -> Server {
    common::start(data_dir, &["--port", "0", "--quic", "off", "--drain-timeout", "60s"])
}

fn terminate(server: &Server) {
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

async fn exit_status(server: &mut Server, within: Duration) -> ExitStatus {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(status) = server.child.try_wait().expect("wait") {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the server did not exit within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sigterm_drains_and_exits_0_once_everyone_left_with_the_board_stored() {
    let dir = std::env::temp_dir().join(format!("easel-drain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data_dir = dir.to_str().expect("a UTF-8 temp path").to_owned();
    let mut server = start(&data_dir);
    let player = HeadlessClient::join(&server.url, "stays", "drain", WAIT).await.expect("join");
    let line: Vec<Point> = (0..5).map(|i| Point { x: i * 10, y: 20 }).collect();
    player.core().whiteboard_mut().draw(0x00aa00, 3, &line).expect("draw");
    player.board_synced(WAIT).await.expect("the stroke is acknowledged");

    terminate(&server);
    player
        .wait_for(WAIT, "the restart notice", |core| {
            core.view().notices().any(|notice| notice.contains("restarting")).then_some(())
        })
        .await
        .expect("the player is told");
    let newcomer = HeadlessClient::connect(&server.url, "late", "drain").await.expect("the upgrade is answered");
    let code = newcomer
        .wait_for(WAIT, "the newcomer's close", |core| match core.status() {
            Status::Closed { code, .. } => Some(*code),
            _ => None,
        })
        .await
        .expect("the newcomer is closed");
    assert_eq!(code, close::SERVICE_RESTART);
    assert!(server.child.try_wait().expect("wait").is_none(), "the server drains while a player is there");

    player.close().await;
    // Well inside the 60 s drain timeout: the last player left.
    let status = exit_status(&mut server, WAIT).await;
    assert!(status.success(), "exit status {status}");

    let mut again = start(&data_dir);
    let reader = HeadlessClient::join(&again.url, "reader", "drain", WAIT).await.expect("join again");
    reader.board_synced(WAIT).await.expect("the board arrives");
    assert_eq!(reader.core().whiteboard().board().len(), 1, "the acknowledged stroke was stored");
    reader.close().await;
    terminate(&again);
    assert!(exit_status(&mut again, WAIT).await.success());
    let _ = std::fs::remove_dir_all(&dir);
}
