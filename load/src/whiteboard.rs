//! The `whiteboard` workload of docs/bench/WORKLOADS.md, to the letter: W writers and W readers on board
//! `board`, writers adding and deleting strokes at 320 ops/s in all from their own
//! `mulberry32(0x5EED0000 + i)` streams until the board holds exactly 10,000 strokes; then a late
//! joiner, the stored size, and the offline case. Every figure is checked against the exact
//! expected board (digests) before it is reported.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use easel_client::core::Channel;
use easel_client::core::ClientCore;
use easel_client::headless::{Link, Received, Transport};
use easel_protocol::board::{Board, BoardOp, Point, Stroke, StrokeId, digest_of};
use easel_protocol::rng::Mulberry32;
use easel_protocol::{ServerMsg, decode_server};
use serde::Serialize;
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::measure::{Milestone, Percentiles};

/// Strokes on the final board, as the workload defines it.
pub const WORKLOAD_STROKES: usize = 10_000;
/// Aggregate op rate of all writers.
const OPS_PER_SECOND: f64 = 320.0;
/// Offline edits per disconnected writer; every fifth is a delete.
const OFFLINE_EDITS: usize = 500;
/// How long a client whose board has the expected number of strokes waits without a message
/// before it checks its digest. The check (SHA-256 over 10,000 strokes, about 5 ms, for 128
/// clients on the server's 2 cores) would otherwise hold up the other clients' reads: their
/// last ops would be timed when their task got a turn, not when they arrived.
const QUIET_BEFORE_DIGEST: Duration = Duration::from_millis(50);

#[derive(Debug, Clone)]
pub struct WhiteboardConfig {
    /// How the clients reach the server.
    pub transport: Transport,
    pub writers: usize,
    /// Strokes on the final board: `WORKLOAD_STROKES` for the benchmark; fewer only for smoke
    /// runs (at least 100, which the offline case walks).
    pub strokes: usize,
    /// Bound on each phase (joining, writing + converging, late join, offline merge).
    pub phase_timeout: Duration,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct LateJoin {
    pub full_board_ms: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Offline {
    pub converge_ms: f64,
    pub strokes: usize,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WhiteboardSummary {
    pub ok: bool,
    pub reason: Option<String>,
    pub writers: usize,
    pub readers: usize,
    pub strokes: usize,
    pub ops: u64,
    pub writing_s: f64,
    pub convergence_ms: f64,
    pub latency_add_all_ms: Percentiles,
    pub client_bytes_in_total: u64,
    pub late_join: LateJoin,
    pub stored_board_bytes: usize,
    pub load_ms: f64,
    pub offline: Offline,
}

/// What every client task reports into.
#[derive(Default)]
struct Shared {
    /// When each add of the writing phase was made.
    adds_sent: std::sync::Mutex<HashMap<StrokeId, Instant>>,
    /// When each client received each add, handed over by the client once it holds the target
    /// board: the hot path takes no lock shared by all clients, so one descheduled client
    /// cannot hold up everyone's timestamps.
    adds_received: std::sync::Mutex<Vec<(StrokeId, Instant)>>,
    synced: AtomicUsize,
    bytes_in: AtomicU64,
    ops: AtomicU64,
    /// Clients holding the current target board, and when the last of them got it.
    reached: AtomicUsize,
    last_reached: Mutex<Option<Instant>>,
    writers_done: AtomicUsize,
    last_op: Mutex<Option<Instant>>,
    /// Every writer's live strokes, published when it finishes: the expected board.
    live: Mutex<BTreeMap<StrokeId, Stroke>>,
    /// Each client's stroke count and unacknowledged ops, by name: explains a failed phase.
    /// (A `std` lock: a fair async one, taken by every client at every message, made a convoy
    /// of wakes between the load generator's threads and left them idle a third of the time.)
    progress: std::sync::Mutex<BTreeMap<String, (usize, usize)>>,
    errors: Mutex<Vec<String>>,
}

/// The board every client must end with: stroke count and digest.
type Target = Option<(usize, [u8; 32])>;

/// What every client task of one run shares.
#[derive(Clone)]
struct Clients {
    transport: Transport,
    writers: usize,
    /// Clients that must all hold a target board (writers plus readers).
    count: usize,
    shared: Arc<Shared>,
    target: watch::Receiver<Target>,
    start: watch::Receiver<Option<Instant>>,
}

impl Clients {
    fn spawn(
        &self,
        core: ClientCore,
        writer: Option<Writer>,
        commands: mpsc::UnboundedReceiver<Command>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(client_task(self.clone(), core, writer, commands))
    }
}

/// A writer's workload state, handed over when it goes offline.
struct Writer {
    index: usize,
    rng: Mulberry32,
    /// Its own live strokes, in the workload's swap-remove order.
    live: Vec<Stroke>,
    target: usize,
    next_op: u64,
}

enum Command {
    /// Close the socket and hand the core (and the writer state) back.
    GoOffline(oneshot::Sender<(ClientCore, Option<Writer>)>),
}

pub async fn run(config: WhiteboardConfig, mut milestone: impl FnMut(Milestone)) -> WhiteboardSummary {
    let w = config.writers.max(1);
    let shared = Arc::new(Shared::default());
    let (target_tx, target) = watch::channel::<Target>(None);
    let (start_tx, start) = watch::channel::<Option<Instant>>(None);
    let clients = 2 * w;
    let run = Clients {
        transport: config.transport.clone(),
        writers: w,
        count: clients,
        shared: shared.clone(),
        target,
        start,
    };
    let mut commands = Vec::new();
    let mut tasks = Vec::new();
    for index in 0..clients {
        let writer = (index < w).then(|| Writer {
            index,
            rng: Mulberry32::new(0x5EED_0000 + index as u32),
            live: Vec::new(),
            target: config.strokes / w + usize::from(index < config.strokes % w),
            next_op: 0,
        });
        let (tx, rx) = mpsc::unbounded_channel();
        commands.push(tx);
        let client =
            ClientCore::new(&format!("{}-{index}", if writer.is_some() { "writer" } else { "reader" }), "board");
        tasks.push(run.spawn(client, writer, rx));
    }
    let fail = |reason: String| failed(w, reason);

    // Phase 1: everyone connected and holding the (empty) board.
    if !wait_until(config.phase_timeout, || shared.synced.load(Ordering::Acquire) >= clients).await {
        return fail(format!("only {} of {clients} clients synced", shared.synced.load(Ordering::Acquire)));
    }
    milestone(Milestone::Joined);

    // Phase 2: writing, then convergence on the exact expected board (timed at the arrival of
    // what completed each client's board; see `last_board_message`).
    let t_start = Instant::now() + Duration::from_millis(200);
    let _ = start_tx.send(Some(t_start));
    milestone(Milestone::WindowStart);
    if !wait_until(config.phase_timeout, || shared.writers_done.load(Ordering::Acquire) >= w).await {
        return fail(first_error(&shared).await.unwrap_or_else(|| "writers did not finish in time".to_owned()));
    }
    let writing_s = t_start.elapsed().as_secs_f64();
    let expected: BTreeMap<StrokeId, Stroke> = shared.live.lock().await.clone();
    let expected_digest = digest_of(expected.values());
    let _ = target_tx.send(Some((expected.len(), expected_digest)));
    if !wait_until(config.phase_timeout, || shared.reached.load(Ordering::Acquire) >= clients).await {
        return fail(format!(
            "only {} of {clients} clients hold the final board ({} strokes); {}",
            shared.reached.load(Ordering::Acquire),
            expected.len(),
            furthest_behind(&shared, expected.len())
        ));
    }
    let last_op = shared.last_op.lock().await.unwrap_or(t_start);
    let converged_at = shared.last_reached.lock().await.unwrap_or(last_op);
    let convergence_ms = converged_at.saturating_duration_since(last_op).as_secs_f64() * 1000.0;
    milestone(Milestone::WindowEnd);
    let latencies = add_latencies_ms(&shared, clients);
    let client_bytes_in_total = shared.bytes_in.load(Ordering::Acquire);

    // Late joiner: until it holds all strokes, verified.
    let joined_at = Instant::now();
    shared.reached.store(0, Ordering::Release);
    *shared.last_reached.lock().await = None;
    let (late_tx, late_rx) = mpsc::unbounded_channel();
    let late = run.spawn(ClientCore::new("late-joiner", "board"), None, late_rx);
    if !wait_until(config.phase_timeout, || shared.reached.load(Ordering::Acquire) >= 1).await {
        return fail("the late joiner never held the full board".to_owned());
    }
    // When its last chunk arrived: the digest that verified the board came after.
    let full_board_at = shared.last_reached.lock().await.unwrap_or_else(Instant::now);
    let full_board_ms = full_board_at.saturating_duration_since(joined_at).as_secs_f64() * 1000.0;

    // Stored size and load time, measured on the late joiner's real replica.
    let (reply, replica) = oneshot::channel();
    let _ = late_tx.send(Command::GoOffline(reply));
    let Ok((late_core, _)) = replica.await else {
        return fail("the late joiner's replica was lost".to_owned());
    };
    let _ = late.await;
    let converged = late_core.whiteboard().board();
    let stored = converged.encode();
    let load_started = std::time::Instant::now();
    let loaded = Board::decode(&stored);
    let load_ms = load_started.elapsed().as_secs_f64() * 1000.0;
    if loaded.map(|b| b.digest()) != Ok(expected_digest) {
        return fail("the encoded board does not load back to the same board".to_owned());
    }

    // Offline case: writers 0 and 1 go offline, edit, and come back together.
    let offline = offline_case(&config, &run, &commands, converged, &target_tx, &mut milestone).await;
    let offline = match offline {
        Ok(offline) => offline,
        Err(reason) => return fail(reason),
    };
    for task in tasks {
        task.abort();
    }

    let errors = shared.errors.lock().await.clone();
    WhiteboardSummary {
        ok: errors.is_empty(),
        reason: errors.first().cloned(),
        writers: w,
        readers: w,
        strokes: expected.len(),
        ops: shared.ops.load(Ordering::Acquire),
        writing_s,
        convergence_ms,
        latency_add_all_ms: Percentiles::of(latencies),
        client_bytes_in_total,
        late_join: LateJoin { full_board_ms },
        stored_board_bytes: stored.len(),
        load_ms,
        offline,
    }
}

async fn offline_case(
    config: &WhiteboardConfig,
    run: &Clients,
    commands: &[mpsc::UnboundedSender<Command>],
    converged: &Board,
    target_tx: &watch::Sender<Target>,
    milestone: &mut impl FnMut(Milestone),
) -> Result<Offline, String> {
    let (shared, w, clients) = (&run.shared, run.writers, run.count);
    if w < 2 {
        return Ok(Offline { converge_ms: 0.0, strokes: converged.len() });
    }
    let walk: Vec<StrokeId> = converged.strokes().take(100).map(|s| s.id).collect();
    let mut board: BTreeMap<StrokeId, Stroke> = converged.strokes().map(|s| (s.id, s.clone())).collect();
    let mut offline = Vec::new();
    for command in &commands[..2] {
        let (tx, rx) = oneshot::channel();
        command.send(Command::GoOffline(tx)).map_err(|_| "writer task gone".to_owned())?;
        let (core, state) = rx.await.map_err(|_| "writer did not go offline".to_owned())?;
        offline.push((core, state.ok_or("no writer state")?));
    }
    for (core, writer) in &mut offline {
        for e in 0..OFFLINE_EDITS {
            if e % 5 == 4 {
                let id = walk[e / 5];
                core.whiteboard_mut().erase_ids(&[id]);
                board.remove(&id);
            } else {
                let stroke = add_stroke(core, writer)?;
                board.insert(stroke.id, stroke);
            }
        }
    }
    let digest = digest_of(board.values());
    shared.reached.store(0, Ordering::Release);
    *shared.last_reached.lock().await = None;
    let _ = target_tx.send(Some((board.len(), digest)));
    milestone(Milestone::OfflineStart);
    let reconnect_at = Instant::now();
    let mut returning = Vec::new();
    for (core, _) in offline {
        let (_tx, rx) = mpsc::unbounded_channel();
        returning.push(run.spawn(core, None, rx));
    }
    let ok = wait_until(config.phase_timeout, || shared.reached.load(Ordering::Acquire) >= clients).await;
    milestone(Milestone::OfflineEnd);
    for task in returning {
        task.abort();
    }
    if !ok {
        return Err(format!(
            "offline case: only {} of {clients} clients hold the merged board ({} strokes); {}",
            shared.reached.load(Ordering::Acquire),
            board.len(),
            furthest_behind(shared, board.len())
        ));
    }
    let converged_at = shared.last_reached.lock().await.unwrap_or(reconnect_at);
    Ok(Offline {
        converge_ms: converged_at.saturating_duration_since(reconnect_at).as_secs_f64() * 1000.0,
        strokes: board.len(),
    })
}

/// Draws the writer's next stroke from its stream, in the workload's order, and adds it to the
/// writer's board; returns the stroke as drawn (with the id the board gave it).
fn add_stroke(core: &mut ClientCore, writer: &mut Writer) -> Result<Stroke, String> {
    let rng = &mut writer.rng;
    let color = rng.next_u32();
    let width = 1 + (rng.next_u32() % 16) as u8;
    let points = workload_points(rng);
    let ids = core.whiteboard_mut().draw(color, width, &points).map_err(|e| e.to_string())?;
    let id = *ids.first().ok_or("nothing drawn")?;
    Ok(Stroke { id, color, width, points })
}

/// A stroke's 32 points as the workload draws them: a start anywhere on the board, then 31 steps
/// of up to 64 units each way, clamped to i16.
pub(crate) fn workload_points(rng: &mut Mulberry32) -> Vec<Point> {
    let mut x = (rng.next_u32() % 32001) as i32 - 16000;
    let mut y = (rng.next_u32() % 32001) as i32 - 16000;
    let mut points = vec![Point { x: x as i16, y: y as i16 }];
    for _ in 1..32 {
        x = (x + (rng.next_u32() % 129) as i32 - 64).clamp(i32::from(i16::MIN), i32::from(i16::MAX));
        y = (y + (rng.next_u32() % 129) as i32 - 64).clamp(i32::from(i16::MIN), i32::from(i16::MAX));
        points.push(Point { x: x as i16, y: y as i16 });
    }
    points
}

async fn client_task(
    run: Clients,
    mut core: ClientCore,
    mut writer: Option<Writer>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let Clients { transport, writers: w, shared, mut target, mut start, count: _ } = run;
    let epoch = Instant::now();
    let now_ms = move || epoch.elapsed().as_secs_f64() * 1000.0;
    let mut link = match Link::open(&transport, core.room()).await {
        Ok(link) => link,
        Err(e) => {
            shared.errors.lock().await.push(format!("connect: {e}"));
            return;
        }
    };
    let hello = core.hello();
    if link.send(&hello, Channel::Reliable).await.is_err() {
        return;
    }
    let mut counted_sync = false;
    // A client nobody can command (its sender is gone) must not poll the closed channel.
    let mut commandable = true;
    let mut reached_generation: Option<(usize, [u8; 32])> = None;
    let mut next_due: Option<Instant> = None;
    let mut received: Vec<(StrokeId, Instant)> = Vec::new();
    // When the last message that changed this client's board arrived: once the board is found
    // to be the expected one, that is when it got there (finding out costs a digest of the
    // whole board, which is the load generator's time, not the server's).
    let mut last_board_message: Option<Instant> = None;
    // When to check the digest: once the board has the expected count and the link is quiet.
    let mut digest_due: Option<Instant> = None;
    // The target and last board message of the last digest check: a failed check waits for
    // another message or another target.
    let mut digest_checked = None;
    let rate_per_writer = OPS_PER_SECOND / w as f64;
    loop {
        let due = next_due;
        let mut check_digest = false;
        tokio::select! {
            incoming = link.recv() => {
                let bytes = match incoming {
                    Received::Message { bytes, .. } => bytes,
                    Received::Closed { code, reason } => {
                        shared.errors.lock().await.push(format!("{} was disconnected ({code}): {reason}", core.name()));
                        return;
                    }
                    Received::Lost(why) => {
                        shared.errors.lock().await.push(format!("{} lost its connection: {why}", core.name()));
                        return;
                    }
                };
                shared.bytes_in.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                let Ok(msg) = decode_server(&bytes) else { continue };
                let arrived = Instant::now();
                let ops = match &msg {
                    ServerMsg::BoardOp(op) => std::slice::from_ref(op),
                    ServerMsg::BoardOps(ops) => ops.as_slice(),
                    _ => &[],
                };
                for op in ops {
                    if let BoardOp::Add { stroke, .. } = op {
                        received.push((stroke.id, arrived));
                    }
                }
                let changes_board = matches!(msg, ServerMsg::BoardOp(_) | ServerMsg::BoardOps(_) | ServerMsg::BoardChunk { .. });
                let _ = core.handle(now_ms(), msg);
                if changes_board {
                    last_board_message = Some(Instant::now());
                }
                if !counted_sync && core.whiteboard().is_synced() {
                    counted_sync = true;
                    shared.synced.fetch_add(1, Ordering::AcqRel);
                }
            }
            command = commands.recv(), if commandable => match command {
                Some(Command::GoOffline(reply)) => {
                    link.close().await;
                    let _ = reply.send((core, writer));
                    return;
                }
                None => commandable = false,
            },
            _ = start.changed(), if writer.is_some() && next_due.is_none() => {
                if let (Some(t_start), Some(state)) = (*start.borrow(), writer.as_ref()) {
                    next_due = Some(t_start + Duration::from_secs_f64(state.index as f64 / w as f64 / rate_per_writer));
                }
            }
            _ = sleep_until(due) => {
                let Some(state) = writer.as_mut() else { continue };
                write_one(&mut core, state, &shared).await;
                state.next_op += 1;
                if state.live.len() == state.target {
                    next_due = None;
                    let now = Instant::now();
                    {
                        let mut last_op = shared.last_op.lock().await;
                        *last_op = Some(last_op.map_or(now, |t| t.max(now)));
                    }
                    shared.live.lock().await.extend(state.live.iter().map(|s| (s.id, s.clone())));
                    shared.writers_done.fetch_add(1, Ordering::AcqRel);
                } else if let Some(t_start) = *start.borrow() {
                    let k = state.next_op as f64;
                    next_due = Some(t_start + Duration::from_secs_f64((state.index as f64 / w as f64 + k) / rate_per_writer));
                }
            }
            _ = target.changed() => {}
            _ = sleep_until(digest_due) => check_digest = true,
        }
        for transmit in core.poll_transmit(now_ms()) {
            if link.send(&transmit.bytes, transmit.channel).await.is_err() {
                return;
            }
        }
        let wanted = *target.borrow();
        if wanted.is_some() && reached_generation != wanted {
            // Only while a phase waits on this client: the progress report is for failures.
            let board = core.whiteboard();
            let counts = (board.board().len(), board.unsynced());
            let mut progress = lock(&shared.progress);
            match progress.get_mut(core.name()) {
                Some(known) => *known = counts,
                None => drop(progress.insert(core.name().to_owned(), counts)),
            }
        }
        let counted =
            wanted.is_some_and(|(count, _)| reached_generation != wanted && core.whiteboard().board().len() == count);
        let mut reached = false;
        if !counted {
            digest_due = None;
        } else if check_digest {
            digest_due = None;
            digest_checked = Some((wanted, last_board_message));
            reached = wanted.is_some_and(|(_, digest)| core.whiteboard().board().digest() == digest);
        } else if digest_checked != Some((wanted, last_board_message)) {
            // Put off at each message: checked once the board has stopped changing.
            digest_due = Some(last_board_message.unwrap_or_else(Instant::now) + QUIET_BEFORE_DIGEST);
        }
        if reached {
            reached_generation = wanted;
            lock(&shared.adds_received).append(&mut received);
            let reached = last_board_message.unwrap_or_else(Instant::now);
            let mut last = shared.last_reached.lock().await;
            *last = Some(last.map_or(reached, |t| t.max(reached)));
            shared.reached.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// One op of a writer: a delete every tenth op (when it has a live stroke), else an add.
async fn write_one(core: &mut ClientCore, state: &mut Writer, shared: &Shared) {
    let j = state.next_op + 1;
    if j.is_multiple_of(10) && !state.live.is_empty() {
        let r = state.rng.next_u32() as usize % state.live.len();
        let stroke = state.live.swap_remove(r);
        core.whiteboard_mut().erase_ids(&[stroke.id]);
    } else {
        // Timed from just before the op is made; the other clients can only see it after.
        let sent = Instant::now();
        match add_stroke(core, state) {
            Ok(stroke) => {
                lock(&shared.adds_sent).insert(stroke.id, sent);
                state.live.push(stroke);
            }
            Err(e) => shared.errors.lock().await.push(format!("writer {}: {e}", state.index)),
        }
    }
    shared.ops.fetch_add(1, Ordering::Relaxed);
}

/// Each add's time to reach every other client (the last receipt minus the send), for the adds
/// all of them received.
fn add_latencies_ms(shared: &Shared, clients: usize) -> Vec<f64> {
    let sent = lock(&shared.adds_sent);
    let mut last: HashMap<StrokeId, (Instant, usize)> = HashMap::with_capacity(sent.len());
    for (id, at) in lock(&shared.adds_received).iter() {
        let (latest, count) = last.entry(*id).or_insert((*at, 0));
        *latest = (*latest).max(*at);
        *count += 1;
    }
    sent.iter()
        .filter_map(|(id, sent)| {
            let (latest, count) = last.get(id)?;
            (*count == clients - 1).then(|| latest.saturating_duration_since(*sent).as_secs_f64() * 1000.0)
        })
        .collect()
}

/// The client whose stroke count is furthest from `expected`, with its unacknowledged ops.
fn furthest_behind(shared: &Shared, expected: usize) -> String {
    lock(&shared.progress).iter().max_by_key(|(_, (count, _))| count.abs_diff(expected)).map_or_else(
        || "no client reported".to_owned(),
        |(name, (count, unsynced))| format!("furthest off: {name} with {count} strokes, {unsynced} unacknowledged"),
    )
}

/// A lock nobody holds across an await or a panic.
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

async fn first_error(shared: &Shared) -> Option<String> {
    shared.errors.lock().await.first().cloned()
}

fn failed(w: usize, reason: String) -> WhiteboardSummary {
    WhiteboardSummary { ok: false, reason: Some(reason), writers: w, readers: w, ..WhiteboardSummary::default() }
}
