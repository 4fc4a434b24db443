//! Several nodes on one PostgreSQL, run as a host runs them (the `easel` binary, three
//! processes on 127.0.0.1, a private PostgreSQL): placement puts a room on one node and every
//! player on it, whichever node they came in through; a node that dies, freezes or drains
//! loses no acknowledged stroke, and its players are back in the room soon after.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{Server, WAIT};
use easel_client::core::ClientCore;
use easel_client::headless::HeadlessClient;
use easel_load::postgres::{Postgres, free_port};
use easel_protocol::board::{Point, StrokeId};

const SECRET: &str = "the cluster's shared secret";
const ADMIN_TOKEN: &str = "a console token for the test";
/// The lease (5 s) and the few seconds the issue allows on top of it.
const BACK_WITHIN: Duration = Duration::from_secs(8);

/// Three nodes (by index), the database they share, and how to reach it. (The nodes stop
/// before the database: fields drop in order.)
struct Fleet {
    nodes: Vec<Option<Server>>,
    postgres: Postgres,
    database: String,
    ports: Vec<u16>,
    data: String,
}

impl Fleet {
    fn start(name: &str) -> Self {
        let postgres = Postgres::start().expect("a private PostgreSQL");
        let database = postgres.url();
        let data = std::env::temp_dir().join(format!("easel-cluster-{name}-{}", std::process::id()));
        let ports = (0..3).map(|_| free_port().expect("a free port")).collect();
        let mut fleet =
            Self { postgres, database, ports, nodes: Vec::new(), data: data.to_string_lossy().into_owned() };
        for node in 0..3 {
            let server = fleet.run(node, &[]);
            fleet.nodes.push(Some(server));
        }
        fleet
    }

    /// Starts node `node` (again) on its port.
    fn run(&self, node: usize, extra: &[&str]) -> Server {
        let port = self.ports[node].to_string();
        let public = format!("http://127.0.0.1:{port}");
        let dir = format!("{}-{node}", self.data);
        let flags = [
            &["--port", &port, "--quic", "off", "--cluster", &self.database, "--public-url", &public][..],
            &["--cluster-secret", SECRET, "--admin-token", ADMIN_TOKEN],
            extra,
        ]
        .concat();
        common::start(&dir, &flags)
    }

    fn restart(&mut self, node: usize) {
        self.nodes[node] = Some(self.run(node, &[]));
    }

    fn entry(&self, node: usize) -> String {
        format!("ws://127.0.0.1:{}/ws", self.ports[node])
    }

    /// The index of the node holding `room` (by its URL in the directory).
    async fn owner(&self, room: &str) -> usize {
        let client = connect(&self.database).await;
        let row = client
            .query_one(
                "SELECT n.url FROM rooms r JOIN nodes n ON n.id = r.owner WHERE r.name = $1 AND r.lease_until > now()",
                &[&room],
            )
            .await
            .expect("the room has an owner");
        let url: String = row.get(0);
        self.ports.iter().position(|port| url.ends_with(&format!(":{port}"))).expect("a node of the fleet")
    }

    fn kill(&mut self, node: usize) {
        if let Some(mut server) = self.nodes[node].take() {
            server.child.kill().expect("kill -9");
            let _ = server.child.wait();
        }
    }

    fn signal(&self, node: usize, signal: &str) {
        let server = self.nodes[node].as_ref().expect("running");
        let status = std::process::Command::new("kill").args([signal, &server.child.id().to_string()]).status();
        assert!(status.is_ok_and(|s| s.success()), "kill {signal}");
    }

    /// Rooms open on node `node`, by its `/metrics`.
    async fn rooms_open(&self, node: usize) -> u64 {
        let metrics = http_get(self.ports[node], "/metrics").await;
        metrics
            .lines()
            .find_map(|line| line.strip_prefix("easel_rooms "))
            .and_then(|value| value.trim().parse().ok())
            .expect("easel_rooms in /metrics")
    }
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connecting");
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response)).await.expect("an answer").unwrap();
    response
}

async fn connect(url: &str) -> tokio_postgres::Client {
    easel_load::postgres::connect(url).await.expect("connecting to the test's PostgreSQL")
}

/// Joins `room` through `entry`, retrying until `within` has passed (a room's node may have
/// just died: its lease has to lapse before another node takes the room).
async fn join_within(entry: &str, core: ClientCore, within: Duration) -> HeadlessClient {
    let deadline = Instant::now() + within;
    let mut core = core;
    loop {
        let client = HeadlessClient::connect_with(entry, core).await;
        match client {
            // A healthy join takes milliseconds; a redirect to a node that died or froze
            // hangs, and is given up on.
            Ok(client) => match client.joined(Duration::from_secs(1)).await {
                Ok(_) => return client,
                Err(e) => {
                    assert!(Instant::now() < deadline, "not back in the room within {within:?}: {e}");
                    core = client.lose_connection().await;
                }
            },
            Err(e) => {
                assert!(Instant::now() < deadline, "not back in the room within {within:?}: {e}");
                panic!("cannot connect to the entry node {entry}: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn all_see(clients: &[&HeadlessClient], players: usize) {
    for client in clients {
        client
            .wait_for(WAIT, "every player", |core| (core.view().players().len() == players).then_some(()))
            .await
            .unwrap_or_else(|e| panic!("a client does not see {players} players: {e}"));
    }
}

/// Draws for `for_how_long`; returns the strokes acknowledged by then.
async fn draw_for(client: &HeadlessClient, for_how_long: Duration, x: i16) -> BTreeSet<StrokeId> {
    let stop = tokio::time::Instant::now() + for_how_long;
    let mut drawn: Vec<(u64, StrokeId)> = Vec::new();
    let mut y = 0_i16;
    while tokio::time::Instant::now() < stop {
        {
            let mut core = client.core();
            let board = core.whiteboard_mut();
            let points: Vec<Point> = (0..6).map(|k| Point { x: x + k, y }).collect();
            if let Ok(ids) = board.draw(0x225588, 2, &points) {
                let seq = board.last_client_seq();
                drawn.extend(ids.into_iter().map(|id| (seq, id)));
            }
        }
        y = y.wrapping_add(1);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let acked = client.core().whiteboard().acked_through();
    drawn.into_iter().filter(|(seq, _)| *seq <= acked).map(|(_, id)| id).collect()
}

fn strokes(client: &HeadlessClient) -> BTreeSet<StrokeId> {
    client.core().whiteboard().board().strokes().map(|s| s.id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn players_coming_in_through_different_nodes_end_in_one_room() {
    let fleet = Fleet::start("together");
    let a = HeadlessClient::join(&fleet.entry(0), "ada", "lobby", WAIT).await.unwrap();
    let b = HeadlessClient::join(&fleet.entry(1), "bob", "lobby", WAIT).await.unwrap();
    let c = HeadlessClient::join(&fleet.entry(2), "cy", "lobby", WAIT).await.unwrap();
    all_see(&[&a, &b, &c], 3).await;
    // A second room is placed on a node with fewer rooms.
    let d = HeadlessClient::join(&fleet.entry(0), "dee", "annex", WAIT).await.unwrap();
    all_see(&[&d], 1).await;
    assert_ne!(fleet.owner("lobby").await, fleet.owner("annex").await, "the second room went to a less loaded node");
    // Each node's console shows the whole cluster.
    let response = http_get(fleet.ports[2], "/admin/api/status").await;
    let body = response.split_once("\r\n\r\n").expect("a body").1;
    let status: serde_json::Value = serde_json::from_str(body).expect("JSON");
    let nodes = status["cluster"]["nodes"].as_array().expect("the cluster's nodes");
    assert_eq!(nodes.len(), 3, "{status}");
    assert!(nodes.iter().all(|node| node["alive"] == true), "{status}");
    assert_eq!(nodes.iter().map(|node| node["rooms"].as_i64().unwrap()).sum::<i64>(), 2, "{status}");
    assert_eq!(nodes.iter().filter(|node| node["this"] == true).count(), 1, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_first_joins_through_three_nodes_place_the_room_once() {
    let fleet = Fleet::start("rush");
    let joins = (0..20).map(|i| {
        let entry = fleet.entry(i % 3);
        async move { HeadlessClient::join(&entry, &format!("p{i}"), "rush", WAIT).await.expect("joined") }
    });
    let clients = futures_util::future::join_all(joins).await;
    all_see(&clients.iter().collect::<Vec<_>>(), 20).await;
    let client = connect(&fleet.database).await;
    let rows = client.query("SELECT owner, epoch FROM rooms WHERE name = 'rush'", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(1), 1, "claimed once: the first claim's epoch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_rooms_node_loses_no_acknowledged_stroke_and_players_are_back_soon() {
    let mut fleet = Fleet::start("failover");
    let mut acknowledged = BTreeSet::new();
    let mut cores = vec![ClientCore::new("w1", "durable"), ClientCore::new("w2", "durable")];
    for round in 0..3 {
        // The writers come in through the two nodes that will not hold the room... as far as
        // can be known before it is placed: through every node but the last owner.
        let mut writers = Vec::new();
        for (i, core) in cores.drain(..).enumerate() {
            writers.push(join_within(&fleet.entry(i + 1), core, BACK_WITHIN).await);
        }
        for writer in &writers {
            writer.board_synced(WAIT).await.unwrap();
        }
        let (a, b) = tokio::join!(
            draw_for(&writers[0], Duration::from_millis(400 + 150 * round), 0),
            draw_for(&writers[1], Duration::from_millis(400 + 150 * round), 1000)
        );
        assert!(!a.is_empty() && !b.is_empty(), "round {round}: both writers had strokes acknowledged");
        acknowledged.extend(a);
        acknowledged.extend(b);
        let owner = fleet.owner("durable").await;
        fleet.kill(owner);
        let killed = Instant::now();
        // Both writers come back through a node that is alive.
        let entries: Vec<usize> = (0..3).filter(|n| *n != owner).collect();
        let mut back = Vec::new();
        for (writer, entry) in writers.into_iter().zip(entries.iter().cycle()) {
            let core = writer.disconnect().await;
            back.push(join_within(&fleet.entry(*entry), core, BACK_WITHIN).await);
        }
        assert!(killed.elapsed() <= BACK_WITHIN, "round {round}: back in {:?}", killed.elapsed());
        all_kept(&back, &acknowledged).await;
        fleet.restart(owner);
        for writer in back {
            cores.push(writer.disconnect().await);
        }
    }
    assert!(acknowledged.len() > 20, "the test wrote a meaningful amount ({} strokes)", acknowledged.len());
}

/// Two writers in room `room`, coming in through nodes 1 and 2, their boards in sync.
async fn two_writers(fleet: &Fleet, room: &str) -> Vec<HeadlessClient> {
    let mut writers = Vec::new();
    for (i, name) in ["w1", "w2"].into_iter().enumerate() {
        writers.push(join_within(&fleet.entry(i + 1), ClientCore::new(name, room), WAIT).await);
    }
    for writer in &writers {
        writer.board_synced(WAIT).await.unwrap();
    }
    writers
}

/// Both writers draw for `how_long`; the strokes acknowledged to either.
async fn both_draw(writers: &[HeadlessClient], how_long: Duration) -> BTreeSet<StrokeId> {
    let (a, b) = tokio::join!(draw_for(&writers[0], how_long, 0), draw_for(&writers[1], how_long, 1000));
    a.into_iter().chain(b).collect()
}

/// Every stroke of `acknowledged` is on both writers' boards, and the boards are the same.
async fn all_kept(writers: &[HeadlessClient], acknowledged: &BTreeSet<StrokeId>) {
    for writer in writers {
        writer.board_synced(WAIT).await.unwrap();
        // The other writer's last strokes may still be on their way.
        let held = writer
            .wait_for(WAIT, "every acknowledged stroke", |core| {
                let present: BTreeSet<StrokeId> = core.whiteboard().board().strokes().map(|s| s.id).collect();
                acknowledged.is_subset(&present).then_some(())
            })
            .await;
        if held.is_err() {
            let present = strokes(writer);
            let missing: Vec<_> = acknowledged.difference(&present).collect();
            panic!("{} acknowledged strokes lost: {missing:?}", missing.len());
        }
    }
    let converged = writers[0]
        .wait_for(WAIT, "the same board", |core| {
            let present: BTreeSet<StrokeId> = core.whiteboard().board().strokes().map(|s| s.id).collect();
            (present == strokes(&writers[1])).then_some(())
        })
        .await;
    assert!(converged.is_ok(), "the writers' boards converge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_frozen_past_its_lease_gives_the_room_up_when_it_wakes() {
    let fleet = Fleet::start("frozen");
    let writers = two_writers(&fleet, "frozen").await;
    let mut acknowledged = both_draw(&writers, Duration::from_millis(400)).await;
    let owner = fleet.owner("frozen").await;
    fleet.signal(owner, "-STOP");
    // Its players give up on it, as on a dead node, and come back through the others; the room
    // is claimed anew once the frozen node's lease has lapsed.
    let entries: Vec<usize> = (0..3).filter(|n| *n != owner).collect();
    let mut back = Vec::new();
    for (writer, entry) in writers.into_iter().zip(entries) {
        let core = writer.lose_connection().await;
        back.push(join_within(&fleet.entry(entry), core, BACK_WITHIN).await);
    }
    assert_ne!(fleet.owner("frozen").await, owner, "another node holds the room");
    acknowledged.extend(both_draw(&back, Duration::from_millis(300)).await);
    fleet.signal(owner, "-CONT");
    // Awake, it finds its lease gone and closes its copy of the room.
    let deadline = Instant::now() + Duration::from_secs(5);
    while fleet.rooms_open(owner).await > 0 {
        assert!(Instant::now() < deadline, "the woken node still holds its copy of the room");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    acknowledged.extend(both_draw(&back, Duration::from_millis(300)).await);
    all_kept(&back, &acknowledged).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_hands_its_rooms_over_and_their_players_follow() {
    let mut fleet = Fleet::start("handoff");
    let writers = two_writers(&fleet, "moving").await;
    let acknowledged = both_draw(&writers, Duration::from_millis(400)).await;
    let owner = fleet.owner("moving").await;
    let before: Vec<u32> = writers.iter().map(|w| w.core().welcomes()).collect();
    fleet.signal(owner, "-TERM");
    let asked = Instant::now();
    // The players are redirected to the room's new node and join it by themselves.
    for (writer, old) in writers.iter().zip(&before) {
        writer
            .wait_for(WAIT, "a welcome on the new node", |core| {
                (matches!(core.status(), easel_client::core::Status::Joined) && core.welcomes() > *old).then_some(())
            })
            .await
            .unwrap();
    }
    assert!(asked.elapsed() < Duration::from_secs(1), "the room came up elsewhere in {:?}", asked.elapsed());
    assert_ne!(fleet.owner("moving").await, owner);
    all_kept(&writers, &acknowledged).await;
    // With its players gone, the drained node stops by itself.
    let mut server = fleet.nodes[owner].take().expect("running");
    let deadline = Instant::now() + WAIT;
    while server.child.try_wait().expect("waiting").is_none() {
        assert!(Instant::now() < deadline, "the drained node did not stop");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    fleet.restart(owner);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_away_for_less_than_the_lease_delays_acknowledgements_and_loses_nothing() {
    let mut fleet = Fleet::start("blip");
    let writers = two_writers(&fleet, "blip").await;
    let mut acknowledged = both_draw(&writers, Duration::from_millis(300)).await;
    fleet.postgres.kill();
    acknowledged.extend(both_draw(&writers, Duration::from_secs(3)).await);
    fleet.postgres.restart().expect("postgres again");
    acknowledged.extend(both_draw(&writers, Duration::from_millis(300)).await);
    // The same room, on the same node, all along: its players were never disconnected.
    for writer in &writers {
        assert!(matches!(writer.core().status(), easel_client::core::Status::Joined));
    }
    all_kept(&writers, &acknowledged).await;
    // What was drawn while the database was away is stored too (acknowledged by now).
    let all: BTreeSet<StrokeId> = strokes(&writers[0]);
    let reader = join_within(&fleet.entry(0), ClientCore::new("reader", "blip"), WAIT).await;
    reader.board_synced(WAIT).await.unwrap();
    assert_eq!(strokes(&reader), all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_away_for_longer_than_the_lease_fences_the_room_and_loses_nothing() {
    let mut fleet = Fleet::start("outage");
    let writers = two_writers(&fleet, "outage").await;
    let acknowledged = both_draw(&writers, Duration::from_millis(400)).await;
    fleet.postgres.kill();
    // Past the lease without the database, the node cannot know it still holds the room: it
    // closes it (1012) and its players wait outside.
    for writer in &writers {
        writer
            .wait_for(Duration::from_secs(10), "a close", |core| match core.status() {
                easel_client::core::Status::Closed { code, .. } => Some(*code),
                _ => None,
            })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    fleet.postgres.restart().expect("postgres again");
    let mut back = Vec::new();
    for (i, writer) in writers.into_iter().enumerate() {
        let core = writer.disconnect().await;
        back.push(join_within(&fleet.entry(i + 1), core, Duration::from_secs(15)).await);
    }
    all_kept(&back, &acknowledged).await;
}
