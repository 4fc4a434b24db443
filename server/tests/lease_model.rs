//! A model test of the cluster's leases and fencing, against a real PostgreSQL: three nodes
//! (in process, leases of 300 ms) take random steps (place a room, renew what they believe
//! they hold, commit an op to a room they believe they hold, or let time pass) in an order a
//! seeded generator picks. Whatever the order:
//! - a room's epoch only grows, and two nodes are never told they hold a room at one epoch;
//! - a commit goes through only under the room's current owner and epoch;
//! - once a room was placed at a newer epoch, no commit under an older one goes through.

use std::collections::HashMap;
use std::time::Duration;

use easel::cluster::{Cluster, Placement};
use easel::store::{CommitError, Fence, Location, Store};
use easel_load::postgres::Postgres;
use easel_protocol::rng::Mulberry32;

const LEASE: Duration = Duration::from_millis(300);
const ROOMS: [&str; 2] = ["north", "south"];
const STEPS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_and_fences_hold_whatever_the_order_of_events() {
    let postgres = Postgres::start().expect("a private PostgreSQL");
    let url = postgres.url();
    for seed in [1_u32, 2, 3] {
        run(&url, seed).await;
    }
}

async fn run(url: &str, seed: u32) {
    let mut nodes = Vec::new();
    for n in 0..3 {
        let public = format!("http://node-{n}.test:{seed}");
        nodes.push(Cluster::join_with_lease(url, &public, "the model's secret!!", LEASE).await.expect("joined"));
    }
    let (store, _thread) = Store::open(&Location::Postgres(url.to_owned())).expect("the store");
    let (done, mut answers) = tokio::sync::mpsc::unbounded_channel();
    let database = connect(url).await;
    // What each node believes it holds, and the newest epoch each room was placed at.
    let mut believed: HashMap<(usize, &str), Fence> = HashMap::new();
    let mut newest: HashMap<&str, i64> = HashMap::new();
    let mut seq = HashMap::<&str, u64>::new();
    let mut rng = Mulberry32::new(seed);
    let (mut placed, mut committed, mut fenced) = (0, 0, 0);
    for step in 0..STEPS {
        let node = (rng.next_u32() % 3) as usize;
        let room = ROOMS[(rng.next_u32() % 2) as usize];
        let context = format!("seed {seed}, step {step}, node {node}, room {room}");
        // Places 6 in 20, renewals 4, commits 7, waits 3.
        match rng.next_u32() % 20 {
            0..6 => match nodes[node].place(&format!("{room}-{seed}"), None).await {
                Ok(Placement::Here(fence)) => {
                    let before = newest.get(room).copied().unwrap_or(0);
                    assert!(fence.epoch >= before, "{context}: epoch went back from {before} to {}", fence.epoch);
                    for ((other, other_room), held) in &believed {
                        if *other != node && *other_room == room {
                            assert_ne!(held.epoch, fence.epoch, "{context}: two holders at one epoch");
                        }
                    }
                    newest.insert(room, fence.epoch);
                    believed.insert((node, room), fence);
                    placed += 1;
                }
                // Held by another node (a redirect), or no live node to claim it for.
                Ok(Placement::Elsewhere { .. }) | Err(_) => {}
            },
            6..10 => {
                let held: Vec<(String, Fence)> = believed
                    .iter()
                    .filter(|((holder, _), _)| *holder == node)
                    .map(|((_, room), fence)| (format!("{room}-{seed}"), *fence))
                    .collect();
                if let Ok((kept, _)) = nodes[node].renew(&held, 0, false).await {
                    believed.retain(|(holder, room), _| *holder != node || kept.contains(&format!("{room}-{seed}")));
                }
            }
            10..17 => {
                let Some(fence) = believed.get(&(node, room)).copied() else { continue };
                let name = format!("{room}-{seed}");
                let next = seq.entry(room).or_insert(0);
                *next += 1;
                store.commit(&name, *next, vec![vec![step as u8]], Some(fence), &done);
                let answer = answers.recv().await.expect("an answer");
                let row = database
                    .query_one("SELECT owner, epoch FROM rooms WHERE name = $1", &[&name])
                    .await
                    .expect("the room's row");
                let current = Fence { node: row.get(0), epoch: row.get(1) };
                match answer.result {
                    Ok(()) => {
                        assert_eq!(current, fence, "{context}: committed under {fence:?}, the room is {current:?}");
                        assert_eq!(Some(&fence.epoch), newest.get(room), "{context}: committed under an old epoch");
                        committed += 1;
                    }
                    Err(CommitError::Fenced) => {
                        assert_ne!(current, fence, "{context}: fenced out under the current lease");
                        believed.remove(&(node, room));
                        fenced += 1;
                    }
                    Err(e) => panic!("{context}: {e}"),
                }
            }
            _ => tokio::time::sleep(Duration::from_millis(u64::from(rng.next_u32() % 400))).await,
        }
    }
    // Every kind of event happened, or the model proved little.
    assert!(
        placed > 5 && committed > 5 && fenced > 0,
        "seed {seed}: {placed} placed, {committed} committed, {fenced} fenced"
    );
}

async fn connect(url: &str) -> tokio_postgres::Client {
    easel_load::postgres::connect(url).await.expect("connecting to the test's PostgreSQL")
}
