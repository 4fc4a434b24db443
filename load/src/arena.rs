//! The `arena` workload (docs/bench/WORKLOADS.md) to the letter: many bots on one tokio runtime,
//! each with its own seeded PRNG, and what they receive, measured. Bots can also draw on the
//! room's board (`Behavior::Draw`, `Behavior::Mixed`) as background load.
//!
//! Bots are leaner than `HeadlessClient`: most only count bytes and snapshots; 20 "probe" bots
//! decode every message and measure input-to-state latency. The run has a fixed timeline:
//! all join → `Joined` → warm-up → `WindowStart` → window → `WindowEnd` → grace → summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use easel_client::core::Channel;
use easel_client::core::{InputSchedule, InputWindow, SnapshotReceiver};
use easel_client::headless::{Link, Received, Transport};
use easel_protocol::board::{BoardOp, Dot, Stroke, StrokeId};
use easel_protocol::codec::snapshot_tick;
use easel_protocol::rng::Mulberry32;
use easel_protocol::{ClientMsg, PROTOCOL_VERSION, ServerMsg, decode_server, encode};
use serde::Serialize;
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::time::Instant;

use crate::measure::{MeanMin, Milestone, Percentiles};
use crate::whiteboard::workload_points;

/// The eight directions of the workload, in its order.
const DIRS: [(i8, i8); 8] = [(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)];
/// Bots that decode every message and measure latency.
const PROBES: usize = 20;
/// Connections opened at once while joining: enough to join 1,000 bots in seconds without
/// overflowing the server's accept backlog.
const JOIN_CONCURRENCY: usize = 50;
/// Input period of the workload: 30 inputs a second.
const INPUT_PERIOD: Duration = Duration::from_nanos(1_000_000_000 / 30);

/// What the bots do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Move as the `arena` workload says.
    Arena,
    /// Draw on the room's whiteboard: a 32-point stroke about twice a second each.
    Draw,
    /// Both: move as the arena workload says and draw.
    Mixed,
}

impl Behavior {
    fn moves(self) -> bool {
        matches!(self, Behavior::Arena | Behavior::Mixed)
    }

    fn draws(self) -> bool {
        matches!(self, Behavior::Draw | Behavior::Mixed)
    }
}

/// Mean time between two strokes of a drawing bot.
const DRAW_PERIOD: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct BotConfig {
    /// How the bots reach the server.
    pub transport: Transport,
    pub room: String,
    pub count: usize,
    pub behavior: Behavior,
    /// Move each bot's input schedule by the server's `InputWait` reports, as the browser client
    /// does. Off for the arena workload, whose schedule is fixed at a random phase.
    pub follow_input_timing: bool,
    /// Time after all bots joined before measuring.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
    /// Time after the window before stopping, so in-flight messages are not cut off.
    pub grace: Duration,
    /// How long joining may take in all.
    pub join_timeout: Duration,
}

/// What the bots measured over the window.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BotSummary {
    pub ok: bool,
    pub reason: Option<String>,
    pub count: usize,
    pub connected: usize,
    pub window_s: f64,
    pub messages_in: u64,
    pub bytes_in: u64,
    pub messages_out: u64,
    pub bytes_out: u64,
    pub rx_payload_bytes_per_client_s: f64,
    pub rx_tcp_bytes_per_client_s: f64,
    pub snapshots_per_s_per_client: MeanMin,
    pub latency_ms: Percentiles,
    /// Time between two snapshots arriving at a probe, whatever they carry.
    pub snapshot_gap_ms: Percentiles,
    /// Time between two snapshots that advanced a probe's view of the others (arrived, decoded
    /// against a baseline it holds, newer than the last): how long remote players stood frozen.
    pub freeze_ms: Percentiles,
    pub disconnected_during_run: usize,
    /// Whiteboard strokes sent and stored (acknowledged) during the window.
    pub board_ops_sent: u64,
    pub board_ops_acked: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BotError {
    #[error("bot count must be at least 1")]
    NoBots,
}

/// Counters every bot adds to.
#[derive(Default)]
struct Shared {
    messages_in: AtomicU64,
    bytes_in: AtomicU64,
    /// Payload with its framing, as it crossed the transport: WebSocket frames over TCP (the
    /// workload's `rx_tcp_bytes`), or WebTransport stream frames and datagrams.
    tcp_bytes_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_out: AtomicU64,
    board_sent: AtomicU64,
    board_acked: AtomicU64,
    joined: AtomicU64,
    disconnected: AtomicU64,
    recording: AtomicBool,
    latencies_ms: Mutex<Vec<f64>>,
    snapshot_gaps_ms: Mutex<Vec<f64>>,
    freezes_ms: Mutex<Vec<f64>>,
    first_error: Mutex<Option<String>>,
}

/// Runs `config.count` bots through the timeline, calling `milestone` at each step.
pub async fn run(config: BotConfig, mut milestone: impl FnMut(Milestone)) -> Result<BotSummary, BotError> {
    if config.count == 0 {
        return Err(BotError::NoBots);
    }
    let shared = Arc::new(Shared::default());
    let snapshots: Arc<Vec<AtomicU64>> = Arc::new((0..config.count).map(|_| AtomicU64::new(0)).collect());
    let (stop_tx, stop) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(JOIN_CONCURRENCY));
    let mut tasks = Vec::with_capacity(config.count);
    for index in 0..config.count {
        let bot = Bot {
            behavior: config.behavior,
            follow_input_timing: config.follow_input_timing,
            index,
            probe: is_probe(index, config.count),
            transport: config.transport.clone(),
            room: config.room.clone(),
            shared: shared.clone(),
            snapshots: snapshots.clone(),
            stop: stop.clone(),
            gate: gate.clone(),
        };
        tasks.push(tokio::spawn(bot.run()));
    }

    let join_deadline = Instant::now() + config.join_timeout;
    while (shared.joined.load(Ordering::Acquire) as usize) < config.count && Instant::now() < join_deadline {
        if let Some(error) = shared.first_error.lock().await.clone() {
            return Ok(stop_early(&config, &shared, &stop_tx, tasks, format!("a bot failed to join: {error}")).await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connected = shared.joined.load(Ordering::Acquire) as usize;
    if connected < config.count {
        let reason = format!("only {connected} of {} bots joined within {:?}", config.count, config.join_timeout);
        return Ok(stop_early(&config, &shared, &stop_tx, tasks, reason).await);
    }
    milestone(Milestone::Joined);
    tokio::time::sleep(config.warmup).await;

    let start = Counters::read(&shared, &snapshots);
    shared.recording.store(true, Ordering::Release);
    let started = Instant::now();
    milestone(Milestone::WindowStart);
    tokio::time::sleep(config.window).await;
    let end = Counters::read(&shared, &snapshots);
    shared.recording.store(false, Ordering::Release);
    let window_s = started.elapsed().as_secs_f64();
    milestone(Milestone::WindowEnd);
    tokio::time::sleep(config.grace).await;
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }

    let latencies = std::mem::take(&mut *shared.latencies_ms.lock().await);
    let snapshot_gaps = std::mem::take(&mut *shared.snapshot_gaps_ms.lock().await);
    let freezes = std::mem::take(&mut *shared.freezes_ms.lock().await);
    let disconnected = shared.disconnected.load(Ordering::Acquire) as usize;
    let clients = config.count as f64;
    let per_client_rates: Vec<f64> =
        start.snapshots.iter().zip(&end.snapshots).map(|(a, b)| (b - a) as f64 / window_s).collect();
    let mut summary = BotSummary {
        ok: true,
        reason: None,
        count: config.count,
        connected,
        window_s,
        messages_in: end.messages_in - start.messages_in,
        bytes_in: end.bytes_in - start.bytes_in,
        messages_out: end.messages_out - start.messages_out,
        bytes_out: end.bytes_out - start.bytes_out,
        rx_payload_bytes_per_client_s: (end.bytes_in - start.bytes_in) as f64 / clients / window_s,
        rx_tcp_bytes_per_client_s: (end.tcp_bytes_in - start.tcp_bytes_in) as f64 / clients / window_s,
        snapshots_per_s_per_client: MeanMin {
            mean: per_client_rates.iter().sum::<f64>() / clients,
            min: per_client_rates.iter().copied().fold(f64::INFINITY, f64::min),
        },
        latency_ms: Percentiles::of(latencies),
        snapshot_gap_ms: Percentiles::of(snapshot_gaps),
        freeze_ms: Percentiles::of(freezes),
        disconnected_during_run: disconnected,
        board_ops_sent: end.board_sent - start.board_sent,
        board_ops_acked: end.board_acked - start.board_acked,
    };
    if disconnected > 0 {
        summary.ok = false;
        let error = shared.first_error.lock().await.clone().unwrap_or_default();
        summary.reason = Some(format!("{disconnected} bots were disconnected during the run: {error}"));
    } else if config.behavior.moves() && summary.latency_ms.samples == 0 {
        summary.ok = false;
        summary.reason = Some("no latency samples: the server applied no input during the window".to_owned());
    } else if config.behavior.draws() && summary.board_ops_acked == 0 {
        summary.ok = false;
        summary.reason = Some("no stroke was stored during the window".to_owned());
    }
    Ok(summary)
}

async fn stop_early(
    config: &BotConfig,
    shared: &Shared,
    stop: &watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    reason: String,
) -> BotSummary {
    let _ = stop.send(true);
    for task in tasks {
        task.abort();
    }
    BotSummary {
        ok: false,
        reason: Some(reason),
        count: config.count,
        connected: shared.joined.load(Ordering::Acquire) as usize,
        ..BotSummary::default()
    }
}

/// Probe ids: `floor(k × N / 20)` for k in 0..20.
fn is_probe(index: usize, count: usize) -> bool {
    (0..PROBES).any(|k| k * count / PROBES == index)
}

struct Counters {
    messages_in: u64,
    bytes_in: u64,
    tcp_bytes_in: u64,
    messages_out: u64,
    bytes_out: u64,
    board_sent: u64,
    board_acked: u64,
    snapshots: Vec<u64>,
}

impl Counters {
    fn read(shared: &Shared, snapshots: &[AtomicU64]) -> Self {
        Self {
            messages_in: shared.messages_in.load(Ordering::Acquire),
            bytes_in: shared.bytes_in.load(Ordering::Acquire),
            tcp_bytes_in: shared.tcp_bytes_in.load(Ordering::Acquire),
            messages_out: shared.messages_out.load(Ordering::Acquire),
            bytes_out: shared.bytes_out.load(Ordering::Acquire),
            board_sent: shared.board_sent.load(Ordering::Acquire),
            board_acked: shared.board_acked.load(Ordering::Acquire),
            snapshots: snapshots.iter().map(|s| s.load(Ordering::Acquire)).collect(),
        }
    }
}

struct Bot {
    behavior: Behavior,
    follow_input_timing: bool,
    index: usize,
    probe: bool,
    transport: Transport,
    room: String,
    shared: Arc<Shared>,
    snapshots: Arc<Vec<AtomicU64>>,
    stop: watch::Receiver<bool>,
    gate: Arc<Semaphore>,
}

impl Bot {
    async fn run(self) {
        let (shared, index) = (self.shared.clone(), self.index);
        if let Err(error) = self.play().await {
            shared.first_error.lock().await.get_or_insert(format!("bot {index}: {error}"));
        }
    }

    async fn play(mut self) -> Result<(), String> {
        let mut rng = Mulberry32::new(1000 + self.index as u32);
        let mut dir = DIRS[(rng.next_f64() * 8.0) as usize];

        let permit = self.gate.acquire().await.map_err(|e| e.to_string())?;
        let mut link = Link::open(&self.transport, &self.room).await.map_err(|e| format!("connect: {e}"))?;
        let hello = ClientMsg::Hello {
            version: PROTOCOL_VERSION,
            name: format!("bot-{}", self.index),
            room: self.room.clone(),
            identity: None,
            resume: None,
            seat: None,
        };
        link.send(&encode(&hello), Channel::Reliable).await.map_err(|e| format!("hello: {e}"))?;
        let (me, author) = loop {
            match link.recv().await {
                Received::Message { bytes, .. } => {
                    if let Ok(ServerMsg::Welcome { player_id, identity, .. }) = decode_server(&bytes) {
                        break (player_id, identity.author);
                    }
                }
                Received::Closed { code, reason } => return Err(format!("closed while joining ({code}): {reason}")),
                Received::Lost(why) => return Err(format!("joining: {why}")),
            }
        };
        drop(permit);
        self.shared.joined.fetch_add(1, Ordering::AcqRel);

        // The workload's schedule starts at a random phase and stays there, unless the bots follow
        // the server's `InputWait` reports as a real client does (`InputSchedule`; not part of the
        // workload, reported as its own configuration). A bot that falls behind skips
        // the slots it missed and goes on at the next one, as the browser client never catches
        // up with a burst either. Sending the missed inputs at once, after a stall of the bots'
        // own process, ran into the server's message rate limit: that measured the load
        // generator, not the server.
        let origin = Instant::now();
        let since_origin_ms = || origin.elapsed().as_secs_f64() * 1000.0;
        let at_ms = |ms: f64| origin + Duration::from_secs_f64(ms.max(0.0) / 1000.0);
        let offset_ms = rng.next_f64() * INPUT_PERIOD.as_secs_f64() * 1000.0;
        let mut schedule = InputSchedule::starting_at(INPUT_PERIOD.as_secs_f64() * 1000.0, offset_ms);
        let input_due = tokio::time::sleep_until(at_ms(schedule.next_due_ms()));
        tokio::pin!(input_due);
        // A drawing bot has its own stream, so adding drawing never changes the arena's inputs.
        let mut draw_rng = Mulberry32::new(0xD2A0_0000 + self.index as u32);
        let draw_offset = Duration::from_secs_f64(draw_rng.next_f64() * DRAW_PERIOD.as_secs_f64());
        let mut draws = tokio::time::interval_at(Instant::now() + draw_offset, DRAW_PERIOD);
        // A fresh identity: its dots and stroke seqs start from the beginning.
        let mut strokes_drawn = 0u32;
        // The inputs sent, the newest repeated in each input message as a real client does.
        let mut inputs = InputWindow::default();
        // Inputs sent and not yet seen applied: (seq, sent at). Probes only.
        let mut pending: std::collections::VecDeque<(u32, Instant)> = std::collections::VecDeque::new();
        let mut snapshots = Snapshots::default();
        loop {
            tokio::select! {
                _ = self.stop.changed() => break,
                _ = draws.tick(), if self.behavior.draws() => {
                    let op = random_stroke(&mut draw_rng, author, strokes_drawn);
                    strokes_drawn += 1;
                    let bytes = encode(&ClientMsg::Board { client_seq: u64::from(strokes_drawn), op });
                    self.shared.board_sent.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = link.send(&bytes, Channel::Reliable).await {
                        self.lost(format!("send: {e}"));
                        return Ok(());
                    }
                }
                _ = &mut input_due, if self.behavior.moves() => {
                    // Every input of the workload is on schedule, direction changes included.
                    schedule.sent(since_origin_ms(), true);
                    input_due.as_mut().reset(at_ms(schedule.next_due_ms()));
                    if rng.next_f64() < 1.0 / 30.0 {
                        dir = DIRS[(rng.next_f64() * 8.0) as usize];
                    }
                    let bytes = encode(&inputs.push(dir, snapshots.newest));
                    self.shared.messages_out.fetch_add(1, Ordering::Relaxed);
                    self.shared.bytes_out.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    if self.probe {
                        pending.push_back((inputs.seq(), Instant::now()));
                    }
                    if let Err(e) = link.send(&bytes, Channel::Unreliable).await {
                        self.lost(format!("send: {e}"));
                        return Ok(());
                    }
                }
                received = link.recv() => match received {
                    Received::Message { bytes, wire } => {
                        let timing = (&mut schedule, inputs.seq() + 1);
                        self.received(me, &bytes, wire, &mut pending, &mut snapshots, timing).await;
                    }
                    Received::Closed { code, reason } => {
                        self.lost(format!("closed by server ({code}): {reason}"));
                        return Ok(());
                    }
                    Received::Lost(why) => {
                        self.lost(why);
                        return Ok(());
                    }
                },
            }
        }
        link.close().await;
        Ok(())
    }

    async fn received(
        &self,
        me: u32,
        bytes: &[u8],
        wire: usize,
        pending: &mut std::collections::VecDeque<(u32, Instant)>,
        snapshots: &mut Snapshots,
        (schedule, next_seq): (&mut InputSchedule, u32),
    ) {
        let shared = &self.shared;
        shared.messages_in.fetch_add(1, Ordering::Relaxed);
        shared.bytes_in.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        shared.tcp_bytes_in.fetch_add(wire as u64, Ordering::Relaxed);
        let Some(tick) = snapshot_tick(bytes) else {
            match decode_server(bytes) {
                Ok(ServerMsg::BoardAck { .. }) => {
                    shared.board_acked.fetch_add(1, Ordering::Relaxed);
                }
                Ok(ServerMsg::InputWait { from_seq, wait_us }) if self.follow_input_timing => {
                    schedule.report(from_seq, f64::from(wait_us) / 1000.0, next_seq);
                }
                _ => {}
            }
            return;
        };
        self.snapshots[self.index].fetch_add(1, Ordering::Relaxed);
        if !self.probe {
            // Acknowledged without decoding: the next ones are deltas this bot never reads.
            snapshots.newest = snapshots.newest.max(tick);
            return;
        }
        let now = Instant::now();
        let recording = shared.recording.load(Ordering::Acquire);
        if let Some(previous) = snapshots.last_arrival.replace(now)
            && recording
        {
            shared.snapshot_gaps_ms.lock().await.push((now - previous).as_secs_f64() * 1000.0);
        }
        let Ok(ServerMsg::Snapshot { tick, baseline, entities }) = decode_server(bytes) else { return };
        let Ok(Some(players)) = snapshots.decoder.receive(tick, baseline, &entities) else { return };
        if tick > snapshots.newest
            && let Some(previous) = snapshots.last_fresh.replace(now)
            && recording
        {
            shared.freezes_ms.lock().await.push((now - previous).as_secs_f64() * 1000.0);
        }
        snapshots.newest = tick;
        let Ok(found) = players.binary_search_by_key(&me, |p| p.id) else { return };
        let applied = players[found].last_input_seq;
        let mut seen = Vec::new();
        while let Some(&(seq, sent)) = pending.front() {
            if seq > applied {
                break;
            }
            pending.pop_front();
            if recording {
                seen.push((now - sent).as_secs_f64() * 1000.0);
            }
        }
        if !seen.is_empty() {
            shared.latencies_ms.lock().await.extend(seen);
        }
    }

    fn lost(&self, why: String) {
        if !*self.stop.borrow() {
            self.shared.disconnected.fetch_add(1, Ordering::AcqRel);
            if let Ok(mut first) = self.shared.first_error.try_lock() {
                first.get_or_insert(format!("bot {}: {why}", self.index));
            }
        }
    }
}

/// A bot's snapshot state: probes decode (and keep baselines), the others only acknowledge.
#[derive(Default)]
struct Snapshots {
    decoder: SnapshotReceiver,
    newest: u32,
    /// When the last snapshot arrived, and when the last one that advanced the view did.
    last_arrival: Option<Instant>,
    last_fresh: Option<Instant>,
}

/// The `n`-th stroke of a drawing bot, shaped as the whiteboard workload's.
fn random_stroke(rng: &mut Mulberry32, author: u32, n: u32) -> BoardOp {
    let color = rng.next_u32() & 0xFF_FFFF;
    let stroke = Stroke { id: StrokeId { author, seq: n }, color, width: 2, points: workload_points(rng) };
    BoardOp::Add { dot: Dot::new(author, u64::from(n) + 1), stroke }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twenty_probes_spread_over_the_bots() {
        let probes: Vec<usize> = (0..1000).filter(|&i| is_probe(i, 1000)).collect();
        assert_eq!(probes.len(), 20);
        assert_eq!(&probes[..3], &[0, 50, 100]);
        assert_eq!((0..10).filter(|&i| is_probe(i, 10)).count(), 10, "with fewer than 20 bots, all are probes");
    }

    #[test]
    fn the_first_bot_draws_its_direction_from_mulberry32_1000() {
        let mut rng = Mulberry32::new(1000);
        let expected = DIRS[(rng.next_f64() * 8.0) as usize];
        let mut again = Mulberry32::new(1000);
        assert_eq!(DIRS[(again.next_f64() * 8.0) as usize], expected, "a bot's stream is reproducible");
    }
}
