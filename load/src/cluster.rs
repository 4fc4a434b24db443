//! The cluster benchmark: three `easel` nodes on one private PostgreSQL, one bot per room in
//! `rooms` rooms, each coming in through a node picked at random (so about two in three are
//! redirected). It measures:
//! - join time, `Hello` to `Welcome`, placement and redirect included;
//! - what the cluster costs while those rooms stand idle: the database's CPU (every lease
//!   renewal, heartbeat and directory read of the three nodes) and the nodes' own;
//! - failover: a room's node is killed (`kill -9`) and every player it had comes back through
//!   the other nodes; the time from the kill to each one's `Welcome` (the lease, 5 s, bounds it
//!   from below).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use easel_client::core::ClientCore;
use easel_client::headless::{Link, Received, Transport, Trust};
use easel_protocol::rng::Mulberry32;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};

use crate::measure::Percentiles;
use crate::postgres::{Postgres, free_port};

const NODES: usize = 3;
const SECRET: &str = "the benchmark cluster's secret";
/// Joins in flight at once: enough to keep three nodes busy, few enough not to measure a queue.
const JOINS_AT_ONCE: usize = 32;
/// How long one attempt to join may take before it is given up (a redirect to a dead node).
const ATTEMPT: Duration = Duration::from_secs(1);
/// How long the players of a killed node may take to be back before the run fails.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);

pub struct ClusterConfig {
    /// The server binary.
    pub easel: PathBuf,
    pub rooms: usize,
    /// How long the idle cluster is measured.
    pub window: Duration,
    /// How many times a node is killed.
    pub failovers: usize,
}

#[derive(Debug, Serialize)]
pub struct ClusterReport {
    pub nodes: usize,
    pub rooms: usize,
    /// Milliseconds from `Hello` to `Welcome`, first joins (each one places its room).
    pub join_ms: Percentiles,
    /// The share of joins that were redirected to another node.
    pub redirected: f64,
    /// Cores the database used while the rooms stood idle: the leases' traffic.
    pub database_cores: f64,
    /// Cores the three nodes used meanwhile (every room ticks, players or not).
    pub nodes_cores: f64,
    /// Milliseconds from a node's `kill -9` to each of its players' `Welcome` elsewhere.
    pub failover_ms: Percentiles,
    /// Players that had to come back, over all failovers.
    pub failed_over: usize,
}

/// One bot: its room's player, holding its connection open.
pub(crate) struct Bot {
    pub core: ClientCore,
    pub link: Link,
}

pub async fn run(config: &ClusterConfig) -> Result<ClusterReport> {
    let postgres = Postgres::start()?;
    let ports: Vec<u16> = (0..NODES).map(|_| free_port()).collect::<Result<_>>()?;
    let mut nodes: Vec<Option<Child>> = Vec::new();
    for port in &ports {
        nodes.push(Some(start_node(&config.easel, *port, &postgres.url())?));
    }
    let entries: Arc<Vec<Transport>> = Arc::new(
        ports
            .iter()
            .map(|port| Transport::WebSocket { url: format!("ws://127.0.0.1:{port}/ws"), trust: Trust::System })
            .collect(),
    );

    // First joins, through random nodes.
    let gate = Arc::new(Semaphore::new(JOINS_AT_ONCE));
    let mut joining = Vec::new();
    let mut rng = Mulberry32::new(0xC1A5);
    for room in 0..config.rooms {
        let entry = entries[(rng.next_u32() as usize) % NODES].clone();
        let gate = gate.clone();
        joining.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let started = Instant::now();
            let bot = join(&entry, ClientCore::new(&format!("bot-{room}"), &format!("room-{room}"))).await?;
            anyhow::Ok((started.elapsed(), bot))
        }));
    }
    let mut bots = Vec::new();
    let mut join_ms = Vec::new();
    for joined in joining {
        let (took, bot) = joined.await??;
        join_ms.push(took.as_secs_f64() * 1000.0);
        bots.push(bot);
    }
    let redirected = bots.iter().filter(|bot| bot.core.redirects() > 0).count() as f64 / bots.len().max(1) as f64;
    let (lost_tx, mut lost) = mpsc::unbounded_channel();
    let mut holders = Vec::new();
    for (index, bot) in bots.into_iter().enumerate() {
        holders.push(tokio::spawn(hold(index, bot, lost_tx.clone())));
    }

    // The idle cluster: what its leases cost the database.
    let node_pids = |nodes: &[Option<Child>]| nodes.iter().flatten().map(Child::id).collect::<Vec<_>>();
    let database_pids = || postgres.pid().map(with_children).unwrap_or_default();
    let (db_before, nodes_before) = (cpu_ticks(&database_pids()), cpu_ticks(&node_pids(&nodes)));
    let measured = Instant::now();
    tokio::time::sleep(config.window).await;
    let seconds = measured.elapsed().as_secs_f64();
    let ticks_per_second = clock_ticks();
    let database_cores = (cpu_ticks(&database_pids()) - db_before) as f64 / ticks_per_second / seconds;
    let nodes_cores = (cpu_ticks(&node_pids(&nodes)) - nodes_before) as f64 / ticks_per_second / seconds;

    // Failovers: kill the node of room-0's player's room, time each of its players' return.
    let mut failover_ms = Vec::new();
    for _ in 0..config.failovers {
        let victim = owner_of(&postgres.url(), "room-0", &ports).await?;
        let mut child = nodes[victim].take().context("the room's node is running")?;
        child.kill().context("kill -9")?;
        let killed = Instant::now();
        let _ = child.wait();
        let survivors: Vec<Transport> =
            (0..NODES).filter(|n| *n != victim).map(|n| entries[n].clone()).collect::<Vec<_>>();
        // The players of the killed node notice at once (their connection resets) and come back.
        let mut returning = Vec::new();
        let quiet = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(quiet);
        loop {
            tokio::select! {
                Some((index, core)) = lost.recv() => {
                    let survivors = survivors.clone();
                    returning.push(tokio::spawn(async move { rejoin(index, core, &survivors, killed).await }));
                    quiet.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(500));
                }
                () = &mut quiet => break,
            }
        }
        if returning.is_empty() {
            bail!("nobody was on the killed node");
        }
        for back in returning {
            let (index, took, bot) = back.await??;
            failover_ms.push(took.as_secs_f64() * 1000.0);
            holders.push(tokio::spawn(hold(index, bot, lost_tx.clone())));
        }
        nodes[victim] = Some(start_node(&config.easel, ports[victim], &postgres.url())?);
    }
    for holder in holders {
        holder.abort();
    }
    for mut node in nodes.into_iter().flatten() {
        let _ = node.kill();
        let _ = node.wait();
    }
    let failed_over = failover_ms.len();
    Ok(ClusterReport {
        nodes: NODES,
        rooms: config.rooms,
        join_ms: Percentiles::of(join_ms),
        redirected,
        database_cores,
        nodes_cores,
        failover_ms: Percentiles::of(failover_ms),
        failed_over,
    })
}

/// Joins through `entry`, following redirects, until the `Welcome` (the idle workload's joins
/// too).
pub(crate) async fn join(entry: &Transport, mut core: ClientCore) -> Result<Bot> {
    let mut transport = entry.clone();
    let mut link = Link::open(&transport, core.room()).await?;
    link.send(&core.hello(), easel_client::core::Channel::Reliable).await?;
    loop {
        match link.recv().await {
            Received::Message { bytes, .. } => {
                core.handle_message(0.0, &bytes)?;
                if matches!(core.status(), easel_client::core::Status::Joined) {
                    return Ok(Bot { core, link });
                }
            }
            Received::Closed { code, reason } => {
                let Some(url) = core.take_redirect() else { bail!("closed ({code}): {reason}") };
                transport = transport.redirected(&url).await?;
                link = Link::open(&transport, core.room()).await?;
                link.send(&core.hello(), easel_client::core::Channel::Reliable).await?;
            }
            Received::Lost(why) => bail!("connection lost: {why}"),
        }
    }
}

/// Reads a bot's connection until it ends; then says so (with the bot's state) on `lost`.
async fn hold(index: usize, mut bot: Bot, lost: mpsc::UnboundedSender<(usize, ClientCore)>) {
    loop {
        match bot.link.recv().await {
            Received::Message { .. } => {}
            Received::Closed { .. } | Received::Lost(_) => {
                let _ = lost.send((index, bot.core));
                return;
            }
        }
    }
}

/// Comes back through the surviving nodes in turn, as the page that `core` was would, until a
/// join succeeds; the time since `killed`.
async fn rejoin(
    index: usize,
    core: ClientCore,
    survivors: &[Transport],
    killed: Instant,
) -> Result<(usize, Duration, Bot)> {
    let (name, room) = (core.name().to_owned(), core.room().to_owned());
    for entry in survivors.iter().cycle() {
        match tokio::time::timeout(ATTEMPT, join(entry, ClientCore::new(&name, &room))).await {
            Ok(Ok(bot)) => return Ok((index, killed.elapsed(), bot)),
            _ if killed.elapsed() > FAILOVER_LIMIT => bail!("a player was not back within {FAILOVER_LIMIT:?}"),
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    bail!("no node to come back through")
}

fn start_node(easel: &Path, port: u16, database: &str) -> Result<Child> {
    let data = std::env::temp_dir().join(format!("easel-bench-cluster-{}-{port}", std::process::id()));
    let port = port.to_string();
    let public = format!("http://127.0.0.1:{port}");
    let mut child = Command::new(easel)
        .args(["serve", "--port", &port, "--quic", "off", "--log-level", "error", "--data-dir"])
        .arg(&data)
        .args(["--cluster", database, "--public-url", &public, "--cluster-secret", SECRET])
        .args(["--admin-token", SECRET])
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", easel.display()))?;
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().context("stdout")?), &mut line)?;
    if !line.starts_with("Easel listening on") {
        bail!("the node did not start: {line}");
    }
    wait_ready(&port)?;
    Ok(child)
}

/// Waits until the node at `port` answers `/readyz` with 200 (it has joined the cluster).
fn wait_ready(port: &str) -> Result<()> {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).and_then(|mut stream| {
            stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        });
        if answer.is_ok_and(|response| response.starts_with("HTTP/1.1 200")) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the node on port {port} was not ready within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The index (by port) of the node holding `room`.
async fn owner_of(database: &str, room: &str, ports: &[u16]) -> Result<usize> {
    let client = crate::postgres::connect(database).await?;
    let row = client
        .query_one("SELECT n.url FROM rooms r JOIN nodes n ON n.id = r.owner WHERE r.name = $1", &[&room])
        .await?;
    let url: String = row.get(0);
    ports.iter().position(|port| url.ends_with(&format!(":{port}"))).context("the owner is not one of the nodes")
}

/// `pid` and its children (a PostgreSQL server's backends).
fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let parent = std::fs::read_to_string(format!("/proc/{child}/stat"))
            .ok()
            .and_then(|stat| stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok()));
        if parent == Some(pid) {
            pids.push(child);
        }
    }
    pids
}

/// utime + stime of `pids` together, in clock ticks (`/proc/PID/stat` fields 14 and 15);
/// processes that ended meanwhile count nothing.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
