//! The idle workload: `clients` connections in rooms of `per_room`, each sending its `Hello` and
//! nothing after (no input), or only a ping every `ping_every` as the page does, while the bots
//! read whatever the server sends. What a server pays for connections where nothing moves: its
//! memory per connection and its CPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use easel_client::core::{Channel, ClientCore};
use easel_client::headless::{Link, Received, Transport};
use easel_protocol::{ClientMsg, encode};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::measure::Milestone;

/// Joins in flight at once: a burst of thousands would only measure the accept queue.
const JOINS_AT_ONCE: usize = 200;

pub struct IdleConfig {
    pub transport: Transport,
    pub clients: usize,
    pub per_room: usize,
    /// How often each client pings (the page: every second), if at all.
    pub ping_every: Option<Duration>,
    pub warmup: Duration,
    pub window: Duration,
}

#[derive(Debug, Serialize)]
pub struct IdleSummary {
    pub ok: bool,
    pub reason: Option<String>,
    pub clients: usize,
    pub rooms: usize,
    pub ping_every_s: Option<f64>,
    pub joined: usize,
    pub join_s: f64,
    /// Bytes the server sent each client per second over the window (payloads and framing).
    pub bytes_per_client_s: f64,
}

pub async fn run(config: IdleConfig, milestone: impl Fn(Milestone)) -> IdleSummary {
    let rooms = config.clients.div_ceil(config.per_room.max(1));
    let gate = Arc::new(Semaphore::new(JOINS_AT_ONCE));
    let received = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut joining = Vec::new();
    for index in 0..config.clients {
        let (gate, transport, received) = (gate.clone(), config.transport.clone(), received.clone());
        let ping_every = config.ping_every;
        let room = format!("idle-{}", index / config.per_room.max(1));
        joining.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            let bot = crate::cluster::join(&transport, ClientCore::new(&format!("idle-{index}"), &room))
                .await
                .map_err(|e| e.to_string())?;
            drop(permit);
            // Read and count whatever comes, until the run ends (the task is dropped).
            tokio::spawn(stand(bot.link, index, ping_every, received));
            Ok::<(), String>(())
        }));
    }
    let mut joined = 0;
    let mut reason = None;
    for join in joining {
        match join.await {
            Ok(Ok(())) => joined += 1,
            Ok(Err(e)) => reason = Some(e),
            Err(e) => reason = Some(e.to_string()),
        }
    }
    let join_s = started.elapsed().as_secs_f64();
    milestone(Milestone::Joined);
    tokio::time::sleep(config.warmup).await;
    let before = received.load(Ordering::Relaxed);
    milestone(Milestone::WindowStart);
    tokio::time::sleep(config.window).await;
    milestone(Milestone::WindowEnd);
    let bytes = received.load(Ordering::Relaxed) - before;
    let ok = joined == config.clients;
    IdleSummary {
        ok,
        reason: if ok { None } else { reason.or_else(|| Some("not every client joined".to_owned())) },
        clients: config.clients,
        rooms,
        ping_every_s: config.ping_every.map(|every| every.as_secs_f64()),
        joined,
        join_s,
        bytes_per_client_s: bytes as f64 / config.clients.max(1) as f64 / config.window.as_secs_f64(),
    }
}

/// Reads and counts whatever the server sends to client `index`, pinging every `ping_every` if
/// given, until the connection ends or the run does (the task is dropped).
async fn stand(mut link: Link, index: usize, ping_every: Option<Duration>, received: Arc<AtomicU64>) {
    // The clients' pings spread over the period, as pages opened at different times send theirs.
    let mut pings = ping_every.map(|every| {
        let phase = every.mul_f64((index % 1000) as f64 / 1000.0);
        tokio::time::interval_at(tokio::time::Instant::now() + phase, every)
    });
    let mut nonce = 0_u32;
    loop {
        let ping = async {
            match &mut pings {
                Some(pings) => pings.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            received_now = link.recv() => match received_now {
                Received::Message { wire, .. } => {
                    received.fetch_add(wire as u64, Ordering::Relaxed);
                }
                _ => return,
            },
            _ = ping => {
                nonce = nonce.wrapping_add(1);
                let ping = encode(&ClientMsg::Ping { nonce });
                if link.send(&ping, Channel::Reliable).await.is_err() {
                    return;
                }
            }
        }
    }
}
