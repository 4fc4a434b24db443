//! Architecture invariant: an acknowledged board op survives `kill -9` of the server. Writers
//! draw continuously; the server is killed at random moments, restarted on the same data
//! directory, and every stroke acknowledged before a kill must be on the board.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Server, WAIT};
use easel_client::headless::HeadlessClient;
use easel_protocol::board::{Point, StrokeId};
use easel_protocol::rng::Mulberry32;

fn start(data_dir: &str, port: u16) -> Server {
    common::start(data_dir, &["--port", &port.to_string()])
}

/// Draws as fast as acks allow; returns the ids of strokes acknowledged before `stop`.
async fn write_until(client: &HeadlessClient, stop: tokio::time::Instant, x: i16) -> BTreeSet<StrokeId> {
    let mut drawn: Vec<(u64, StrokeId)> = Vec::new();
    let mut i = 0i16;
    while tokio::time::Instant::now() < stop {
        {
            let mut core = client.core();
            let board = core.whiteboard_mut();
            let points: Vec<Point> = (0..8).map(|k| Point { x: x + k, y: i }).collect();
            let me = board.identity().expect("joined").author;
            if board.draw(0x336699, 2, &points).is_ok() {
                let seq = board.last_client_seq();
                let mine = board.board().strokes().map(|s| s.id).filter(|id| id.author == me);
                let id = mine.max_by_key(|id| id.seq).expect("just drawn");
                drawn.push((seq, id));
            }
        }
        i = i.wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let acked = client.core().whiteboard().acked_through();
    drawn.into_iter().filter(|(seq, _)| *seq <= acked).map(|(_, id)| id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_strokes_survive_kill_9() {
    let dir = std::env::temp_dir().join(format!("easel-kill9-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir = dir.to_string_lossy().into_owned();
    let mut rng = Mulberry32::new(0xD1E);
    let mut acked_everywhere = BTreeSet::new();
    let mut port = 0;
    for round in 0..3 {
        let server = start(&dir, port);
        port = server.url.rsplit(':').next().and_then(|p| p.trim_end_matches("/ws").parse().ok()).unwrap_or(0);
        let writers = [
            HeadlessClient::join(&server.url, "w1", "durable", WAIT).await.unwrap(),
            HeadlessClient::join(&server.url, "w2", "durable", WAIT).await.unwrap(),
        ];
        for writer in &writers {
            writer.board_synced(WAIT).await.unwrap();
        }
        // Kill at a random moment while both write.
        let stop = tokio::time::Instant::now() + Duration::from_millis(200 + u64::from(rng.next_u32() % 600));
        let (a, b) = tokio::join!(write_until(&writers[0], stop, 0), write_until(&writers[1], stop, 1000));
        let mut server = server;
        server.child.kill().expect("kill -9");
        let _ = server.child.wait();
        assert!(!a.is_empty() && !b.is_empty(), "round {round}: both writers had strokes acknowledged");
        acked_everywhere.extend(a);
        acked_everywhere.extend(b);
        drop(writers);
    }

    let server = start(&dir, port);
    let reader = HeadlessClient::join(&server.url, "reader", "durable", WAIT).await.unwrap();
    reader.board_synced(WAIT).await.unwrap();
    let present: BTreeSet<StrokeId> = reader.core().whiteboard().board().strokes().map(|s| s.id).collect();
    let missing: Vec<_> = acked_everywhere.difference(&present).collect();
    assert!(missing.is_empty(), "{} acknowledged strokes lost after kill -9: {missing:?}", missing.len());
    assert!(acked_everywhere.len() > 20, "the test wrote a meaningful amount ({} strokes)", acked_everywhere.len());
}
