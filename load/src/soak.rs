//! The soak workload: clients that come and go for as long as the run lasts, in a few rooms.
//! Each plays for a while (moving, chatting, drawing and erasing, so that boards stay the same
//! size) and then leaves one of four ways: it closes, its connection is cut and it comes back
//! with its resume token, it breaks a rule (and must be closed for it with the right code), or
//! its network goes silent and it reconnects. Most come back as a reloaded tab does, with the
//! board state the tab kept (its author identity among it); some open a new tab, a new author.
//! `cargo xtask soak` runs it beside a server and watches the server's memory, file
//! descriptors and ticks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use easel_client::core::{ClientCore, Status};
use easel_client::headless::{HeadlessClient, HeadlessError, Transport};
use easel_protocol::rng::Mulberry32;
use easel_protocol::{ClientMsg, close, encode};
use serde::Serialize;
use tokio::time::Instant;

use crate::measure::Milestone;
use crate::whiteboard::workload_points;

/// Rooms the clients spread over.
const ROOMS: u32 = 6;
/// How long one client plays before it leaves: 5 to 40 s.
const LIFETIME_MS: (u64, u64) = (5_000, 40_000);
/// Every wait for the server in this workload.
const WAIT: Duration = Duration::from_secs(15);
/// Strokes a room's board holds at most: past this, whoever draws also erases the first ones
/// (by id). A board that only grew would grow the server's memory by design, and hide a leak.
const BOARD_STROKES: usize = 200;
/// One client in this many is a new tab (a new author, in a room of its choosing); the others
/// reload the lane's tab, in its room, with what the tab kept. A board keeps a clock entry per
/// author it ever saw (the set's causal history), so a run of only new authors would grow
/// the server's memory by design, as a board that only grew would.
const NEW_TAB_ONE_IN: u32 = 5;

#[derive(Debug, Clone)]
pub struct SoakConfig {
    pub websocket: Transport,
    /// Every other lane plays over WebTransport when the server offers it.
    pub webtransport: Option<Transport>,
    /// Clients playing at any moment.
    pub clients: usize,
    pub duration: Duration,
}

/// What the clients did and saw, for the run's verdict.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SoakSummary {
    pub ok: bool,
    pub reason: Option<String>,
    pub joins: u64,
    /// Joins as a new tab, hence a new author; the rest were reloads.
    pub new_tabs: u64,
    pub closes: u64,
    pub resumes: u64,
    /// Resumes that did not get the same player back.
    pub resumes_lost: u64,
    pub rule_breakers_closed: u64,
    /// Rule breakers closed with another code than the rule's, or not at all.
    pub rule_breakers_wrongly_closed: u64,
    /// WebTransport sessions that could not be opened, after which the client joined over the
    /// WebSocket as a page does; and why the first could not.
    pub webtransport_fallbacks: u64,
    pub first_fallback: Option<String>,
    /// The first of those: who, which rule, what came instead.
    pub first_wrong_close: Option<String>,
    pub chats: u64,
    pub strokes: u64,
    pub erases: u64,
    pub errors: u64,
    pub first_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    joins: AtomicU64,
    new_tabs: AtomicU64,
    closes: AtomicU64,
    resumes: AtomicU64,
    resumes_lost: AtomicU64,
    rule_breakers_closed: AtomicU64,
    rule_breakers_wrongly_closed: AtomicU64,
    first_wrong_close: std::sync::Mutex<Option<String>>,
    webtransport_fallbacks: AtomicU64,
    first_fallback: std::sync::Mutex<Option<String>>,
    chats: AtomicU64,
    strokes: AtomicU64,
    erases: AtomicU64,
    errors: AtomicU64,
    first_error: std::sync::Mutex<Option<String>>,
}

impl Counters {
    fn error(&self, what: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        keep_first(&self.first_error, what);
    }

    fn fallback(&self, why: String) {
        self.webtransport_fallbacks.fetch_add(1, Ordering::Relaxed);
        keep_first(&self.first_fallback, why);
    }

    fn wrong_close(&self, what: String) {
        self.rule_breakers_wrongly_closed.fetch_add(1, Ordering::Relaxed);
        keep_first(&self.first_wrong_close, what);
    }
}

fn keep_first(slot: &std::sync::Mutex<Option<String>>, what: String) {
    slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get_or_insert(what);
}

fn first(slot: &std::sync::Mutex<Option<String>>) -> Option<String> {
    slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

/// How a client leaves.
#[derive(Debug, Clone, Copy)]
enum Exit {
    Close,
    /// Its connection is cut; it comes back with its resume token.
    Cut,
    /// It sends what the server must close it for.
    BreakRule(Rule),
}

#[derive(Debug, Clone, Copy)]
enum Rule {
    Garbage,
    Oversize,
    Flood,
}

impl Rule {
    fn close_code(self) -> u16 {
        match self {
            Rule::Garbage => close::PROTOCOL_ERROR,
            Rule::Oversize => close::MESSAGE_TOO_BIG,
            Rule::Flood => close::POLICY_VIOLATION,
        }
    }
}

/// Runs `config.clients` clients in churn until `config.duration` has passed.
pub async fn run(config: SoakConfig, mut milestone: impl FnMut(Milestone)) -> SoakSummary {
    let counters = Arc::new(Counters::default());
    let end = Instant::now() + config.duration;
    milestone(Milestone::WindowStart);
    let lanes: Vec<_> = (0..config.clients)
        .map(|lane| {
            let transport = match &config.webtransport {
                Some(webtransport) if lane % 2 == 1 => webtransport.clone(),
                _ => config.websocket.clone(),
            };
            let transports = Transports { chosen: transport, websocket: config.websocket.clone() };
            tokio::spawn(lane_loop(transports, lane as u32, end, counters.clone()))
        })
        .collect();
    for lane in lanes {
        let _ = lane.await;
    }
    milestone(Milestone::WindowEnd);
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let c = &counters;
    let mut summary = SoakSummary {
        ok: true,
        reason: None,
        joins: load(&c.joins),
        new_tabs: load(&c.new_tabs),
        closes: load(&c.closes),
        resumes: load(&c.resumes),
        resumes_lost: load(&c.resumes_lost),
        rule_breakers_closed: load(&c.rule_breakers_closed),
        rule_breakers_wrongly_closed: load(&c.rule_breakers_wrongly_closed),
        webtransport_fallbacks: load(&c.webtransport_fallbacks),
        first_fallback: first(&c.first_fallback),
        first_wrong_close: first(&c.first_wrong_close),
        chats: load(&c.chats),
        strokes: load(&c.strokes),
        erases: load(&c.erases),
        errors: load(&c.errors),
        first_error: first(&c.first_error),
    };
    let problems = [
        (summary.errors > 0, "clients failed"),
        (summary.resumes_lost > 0, "a resume did not get its player back"),
        (summary.rule_breakers_wrongly_closed > 0, "a rule breaker was not closed with its rule's code"),
        (summary.joins == 0, "nobody joined"),
    ];
    if let Some((_, why)) = problems.iter().find(|(failed, _)| *failed) {
        summary.ok = false;
        summary.reason = Some((*why).to_owned());
    }
    summary
}

/// A lane's transport, and the WebSocket a page falls back to.
struct Transports {
    chosen: Transport,
    websocket: Transport,
}

/// One client after another, in one lane, until `end`.
async fn lane_loop(transports: Transports, lane: u32, end: Instant, counters: Arc<Counters>) {
    let mut rng = Mulberry32::new(0x50A4_0000 + lane);
    // Lanes start spread over the first lifetime, so joins and leaves never come in waves.
    let stagger = Duration::from_millis(u64::from(rng.next_u32()) % LIFETIME_MS.0);
    tokio::time::sleep(stagger).await;
    let mut generation = 0u32;
    let mut tab = Tab { room: String::new(), kept: None };
    while Instant::now() < end {
        generation += 1;
        let name = format!("soak-{lane}-{generation}");
        if tab.kept.is_none() || rng.next_u32().is_multiple_of(NEW_TAB_ONE_IN) {
            tab = Tab { room: format!("soak-{}", rng.next_u32() % ROOMS), kept: None };
            counters.new_tabs.fetch_add(1, Ordering::Relaxed);
        }
        if let Err(e) = one_client(&transports, &name, &mut tab, &mut rng, end, &counters).await {
            counters.error(format!("{name}: {e}"));
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// A browser tab of one lane: its room, and what it keeps in session storage across reloads
/// (`Whiteboard::save`: the author identity and edits not yet acknowledged).
struct Tab {
    room: String,
    kept: Option<Vec<u8>>,
}

impl Tab {
    /// A client core for this tab, as a page (re)loaded in it starts one.
    fn open(&self, name: &str) -> Result<ClientCore, String> {
        let mut core = ClientCore::new(name, &self.room);
        if let Some(kept) = &self.kept {
            core.whiteboard_mut().restore(kept).map_err(|e| format!("restoring the tab's board state: {e}"))?;
        }
        Ok(core)
    }

    fn keep(&mut self, client: &HeadlessClient) {
        self.kept = Some(client.core().whiteboard().save());
    }
}

/// Joins, plays for a lifetime, leaves one of the four ways.
async fn one_client(
    transports: &Transports,
    name: &str,
    tab: &mut Tab,
    rng: &mut Mulberry32,
    end: Instant,
    counters: &Counters,
) -> Result<(), String> {
    let transport = &transports.chosen;
    let mut over = transport.name();
    let client = match HeadlessClient::join_with(transport, tab.open(name)?, WAIT).await {
        Ok(client) => client,
        // The session could not be opened: a page would play over the WebSocket after a
        // second, and so does this client.
        Err(HeadlessError::Connect(e)) if matches!(transport, Transport::WebTransport { .. }) => {
            counters.fallback(format!("{name}: {e}"));
            over = transports.websocket.name();
            tokio::time::sleep(Duration::from_secs(1)).await;
            HeadlessClient::join_with(&transports.websocket, tab.open(name)?, WAIT)
                .await
                .map_err(|e| format!("join after falling back to the WebSocket: {e}"))?
        }
        Err(e) => return Err(format!("join: {e}")),
    };
    counters.joins.fetch_add(1, Ordering::Relaxed);
    let lifetime = LIFETIME_MS.0 + u64::from(rng.next_u32()) % (LIFETIME_MS.1 - LIFETIME_MS.0);
    let leave_at = (Instant::now() + Duration::from_millis(lifetime)).min(end);
    let exit = match rng.next_u32() % 20 {
        0..=13 => Exit::Close,
        14..=16 => Exit::Cut,
        17 => Exit::BreakRule(Rule::Garbage),
        18 => Exit::BreakRule(Rule::Oversize),
        _ => Exit::BreakRule(Rule::Flood),
    };
    let client = play_until(client, leave_at, rng, counters).await?;
    tab.keep(&client);
    match exit {
        Exit::Close => {
            client.close().await;
            counters.closes.fetch_add(1, Ordering::Relaxed);
        }
        Exit::Cut => {
            let me = client.core().view().me();
            let core = client.lose_connection().await;
            tokio::time::sleep(Duration::from_millis(200 + u64::from(rng.next_u32()) % 2_000)).await;
            let back = HeadlessClient::connect_over(transport, core).await.map_err(|e| format!("reconnect: {e}"))?;
            let again = back.joined(WAIT).await.map_err(|e| format!("resume: {e}"))?;
            counters.resumes.fetch_add(1, Ordering::Relaxed);
            if Some(again) != me {
                counters.resumes_lost.fetch_add(1, Ordering::Relaxed);
            }
            let back = play_until(back, Instant::now() + Duration::from_secs(2), rng, counters).await?;
            tab.keep(&back);
            back.close().await;
        }
        Exit::BreakRule(rule) => {
            match rule {
                Rule::Garbage => client.send_raw(vec![0xFF; 9]),
                Rule::Oversize => client.send_raw(vec![0; 20_000]),
                Rule::Flood => {
                    let input = encode(&ClientMsg::Input { seq: 1, ack: 0, dirs: vec![(1, 0)] });
                    for _ in 0..600 {
                        client.send_raw(input.clone());
                    }
                }
            }
            let closed = client
                .wait_for(WAIT, "the server's close", |core| match core.status() {
                    Status::Closed { code, reason, .. } => Some((*code, reason.clone())),
                    _ => None,
                })
                .await;
            match closed {
                Ok((code, _)) if code == rule.close_code() => {
                    counters.rule_breakers_closed.fetch_add(1, Ordering::Relaxed);
                }
                other => counters.wrong_close(format!(
                    "{name} over {over}: {rule:?} ended with {other:?}, not {}",
                    rule.close_code()
                )),
            }
        }
    }
    Ok(())
}

/// Moves (a new direction every second or so), chats now and then and draws now and then,
/// until `until`.
async fn play_until(
    client: HeadlessClient,
    until: Instant,
    rng: &mut Mulberry32,
    counters: &Counters,
) -> Result<HeadlessClient, String> {
    const DIRECTIONS: [(i8, i8); 9] = [(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (0, 0)];
    while Instant::now() < until {
        let (dx, dy) = DIRECTIONS[rng.next_u32() as usize % DIRECTIONS.len()];
        client.hold_direction(dx, dy);
        match rng.next_u32() % 10 {
            0 => {
                client.chat("soaking").map_err(|e| format!("chat: {e}"))?;
                counters.chats.fetch_add(1, Ordering::Relaxed);
            }
            1 | 2 => {
                let points = workload_points(rng);
                client
                    .core()
                    .whiteboard_mut()
                    .draw(rng.next_u32() & 0xFF_FFFF, 3, &points)
                    .map_err(|e| e.to_string())?;
                counters.strokes.fetch_add(1, Ordering::Relaxed);
                let mut core = client.core();
                let board = core.whiteboard().board();
                if board.len() > BOARD_STROKES {
                    let oldest: Vec<_> = board.strokes().take(board.len() - BOARD_STROKES).map(|s| s.id).collect();
                    let erased = core.whiteboard_mut().erase_ids(&oldest);
                    counters.erases.fetch_add(erased as u64, Ordering::Relaxed);
                }
            }
            _ => {}
        }
        if let Status::Closed { code, reason, .. } = client.core().status().clone() {
            return Err(format!("closed while playing ({code}): {reason}"));
        }
        let step = Duration::from_millis(700 + u64::from(rng.next_u32()) % 600);
        tokio::time::sleep(step.min(until.saturating_duration_since(Instant::now()))).await;
    }
    Ok(client)
}
