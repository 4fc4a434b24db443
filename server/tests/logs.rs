//! What the binary logs about a connection, in either format: its id, transport, peer address
//! and room on every line, so a host can follow one player through the logs (and a log shipper
//! can index them, with `--log-format json`).

mod common;

use std::io::Read;
use std::process::{ChildStderr, Command};

use common::{Server, WAIT};
use easel_client::headless::HeadlessClient;
use serde_json::Value;

/// Joins `room` as one player and leaves, stops the server, and returns everything it logged.
async fn logs_of_one_visit(test: &str, room: &str, flags: &[&str]) -> String {
    let dir = std::env::temp_dir().join(format!("easel-logs-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let data_dir = dir.to_str().expect("a UTF-8 temp path").to_owned();
    let (mut server, logs): (Server, ChildStderr) =
        common::start_logging(&data_dir, &[&["--port", "0", "--quic", "off"], flags].concat());
    let player = HeadlessClient::join(&server.url, "ada", room, WAIT).await.expect("join");
    player.close().await;
    let status = Command::new("kill").args(["-TERM", &server.child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let exited = tokio::time::timeout(WAIT, async {
        while server.child.try_wait().expect("wait").is_none() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    });
    exited.await.expect("the server exits after SIGTERM");
    let mut text = String::new();
    let mut logs = logs;
    logs.read_to_string(&mut text).expect("reading the logs");
    let _ = std::fs::remove_dir_all(&dir);
    text
}

#[tokio::test]
async fn json_lines_name_the_connection_its_peer_and_its_room() {
    let logs = logs_of_one_visit("json", "logroom", &["--log-format", "json"]).await;
    let lines: Vec<Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}")))
        .collect();
    let line = |message: &str| {
        lines.iter().find(|l| l["message"] == message).unwrap_or_else(|| panic!("no {message:?} line in:\n{logs}"))
    };
    let joined = line("joined");
    assert_eq!(joined["level"], "INFO");
    assert!(joined["timestamp"].is_string(), "{joined}");
    assert_eq!(joined["name"], "ada");
    let span = &joined["span"];
    assert_eq!(span["name"], "connection");
    assert_eq!(span["transport"], "websocket");
    assert_eq!(span["room"], "logroom");
    assert!(span["peer"].as_str().is_some_and(|peer| peer.starts_with("127.0.0.1:")), "{span}");
    assert!(span["id"].as_u64().is_some(), "{span}");
    let left = line("left");
    assert_eq!(left["span"]["id"], span["id"], "the leave is logged in the same connection's span");
    assert_eq!(left["span"]["room"], "logroom");
    assert!(lines.iter().any(|l| l["message"] == "shutting down: closing all sessions"), "{logs}");
}

#[tokio::test]
async fn text_lines_carry_the_same_connection_fields() {
    let logs = logs_of_one_visit("text", "textroom", &[]).await;
    assert!(!logs.contains('\u{1b}'), "no colour codes in logs that go to a pipe: {logs:?}");
    let joined = logs.lines().find(|l| l.contains("}: joined")).unwrap_or_else(|| panic!("no joined line:\n{logs}"));
    assert!(joined.contains(" INFO connection{id="), "{joined}");
    assert!(joined.contains(" transport=websocket peer=127.0.0.1:") && joined.contains(" room=textroom "), "{joined}");
}
