//! The task that drives one room: it owns the room's state (`state::Room`), feeds it the
//! membership commands, gameplay messages and store answers as they arrive and the clock at
//! each tick, and retries failed commits when they are due. It is the only part of a room that
//! reads the clock or waits.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use easel_protocol::{ServerMsg, close, encode};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::board::RoomBoard;
use super::handoff::Handover;
use super::state::Room;
use super::{Control, Play, RoomReport, Rooms};
use crate::session::CloseReason;
use crate::store::{CommitError, Fence};

/// How long a closing room waits for the store to commit what it was handed.
const CLOSING_COMMIT_WAIT: Duration = Duration::from_secs(2);

/// Runs a room until it is empty (and no join is on its way) or the server shuts down.
pub(super) async fn run_room(
    name: String,
    room_id: u64,
    lease: Option<Fence>,
    rooms: Arc<Rooms>,
    mut control: mpsc::UnboundedReceiver<Control>,
    mut play: mpsc::Receiver<Play>,
) {
    let config = rooms.config().clone();
    let (commits_tx, mut commits) = mpsc::unbounded_channel();
    let loaded = match rooms.store().load(&name).await {
        Ok(stored) => RoomBoard::new(&name, &stored, rooms.store().clone(), lease, commits_tx, &config),
        Err(e) => Err(e.into()),
    };
    let board = match loaded {
        Ok(board) => board,
        Err(e) => {
            tracing::error!(room = %name, "cannot load the board, refusing joins: {e}");
            refuse_all(&mut control, &format!("this room's board cannot be read: {e}"));
            rooms.remove(&name, room_id);
            return;
        }
    };
    let mut room = Room::new(name.clone(), board, Handover::thread(), config.clone(), rooms.metrics().clone());
    let (orbs, strokes) = room.contents();
    tracing::debug!(room = %name, orbs, strokes, "room opened");
    let mut beat = Beat::new(Duration::from_secs_f32(config.tick_seconds()), rooms.metrics().clone());
    let mut recent_ticks = RecentTicks::default();
    let mut missed_ticks = 0_u64;
    // Whether another node holds the room now: then nothing more is written from here.
    let mut moved = false;
    loop {
        // Whether what arrived may give the next tick something to do (all but a tick itself
        // and the console's report): a resting room wakes for it.
        let mut stirred = true;
        tokio::select! {
            biased;
            command = control.recv() => match command {
                Some(Control::Join { name: player_name, identity, link, reply }) => {
                    let (player_id, spawn) = rooms.next_player(&config.rules);
                    let _ = reply.send(room.join(Instant::now(), player_id, player_name, identity, spawn, link));
                }
                Some(Control::Leave { player, connection, ending }) => {
                    room.connection_ended(Instant::now(), player, connection, ending);
                }
                Some(Control::Notice(text)) => room.notify_everyone(Instant::now(), text),
                Some(Control::Report(reply)) => {
                    stirred = false;
                    let (p50, p99) = recent_ticks.percentiles();
                    let (bytes_in, bytes_out) = room.traffic();
                    let _ = reply.send(RoomReport {
                        name: name.clone(),
                        players: room.players(),
                        board_strokes: room.contents().1,
                        tick_p50_ms: p50,
                        tick_p99_ms: p99,
                        missed_ticks,
                        bytes_in,
                        bytes_out,
                    });
                }
                Some(Control::Kick { player, reason }) => {
                    room.remove(Instant::now(), player, reason);
                }
                Some(Control::Close { notice, reason }) => {
                    room.notify_everyone(Instant::now(), notice);
                    room.close_everyone(&reason);
                }
                Some(Control::Shutdown) | None => {
                    room.close_everyone(&CloseReason::new(close::GOING_AWAY, "server shutting down"));
                    break;
                }
                Some(Control::Moved { reason }) => {
                    room.close_everyone(&reason);
                    moved = true;
                    break;
                }
                Some(Control::HandOff { url, issue }) => {
                    room.close_each(|| {
                        let redirect = ServerMsg::Redirect { url: url.clone(), seat: issue() };
                        let reason = "this server is restarting: the room moved to another server";
                        CloseReason::with_farewell(close::SERVICE_RESTART, reason, Bytes::from(encode(&redirect)))
                    });
                    moved = true;
                    break;
                }
            },
            Some(committed) = commits.recv() => {
                if matches!(committed.result, Err(CommitError::Fenced)) {
                    tracing::warn!(room = %name, "a commit was fenced out: another server holds the room");
                    room.close_everyone(&CloseReason::new(close::SERVICE_RESTART, "this room moved to another server"));
                    moved = true;
                    break;
                }
                room.committed(Instant::now(), committed);
            }
            // Reliable messages go in one write per member at most every `MESSAGE_WINDOW`
            // (sent below, with those due at once).
            () = sleep_until(room.messages_due()) => stirred = false,
            Some(message) = play.recv() => room.play(Instant::now(), message),
            () = sleep_until(room.commit_retry_at()) => room.retry_commits(),
            // A detached player's grace ends while the room rests: the next tick lets it go.
            // (`select!` evaluates every branch's future on every pass, a disabled one's too,
            // and this one looks at every member: only a resting room asks.)
            () = sleep_until(if beat.resting { room.wake_at() } else { None }), if beat.resting => {}
            // The last ticks' snapshot writes are done: time their fan-out.
            () = sleep_until(beat.fanout_due), if beat.resting => {
                stirred = false;
                beat.fanout_due = None;
                room.settle_fanout(Instant::now());
            }
            _ = beat.ticker.tick(), if !beat.resting => {
                stirred = false;
                let now = Instant::now();
                let missed = beat.ticked(now).saturating_sub(1);
                if missed > 0 {
                    rooms.metrics().ticks_missed.add(missed);
                    missed_ticks += missed;
                    room.missed_ticks(u32::try_from(missed).unwrap_or(u32::MAX));
                }
                room.tick(now);
                let took = now.elapsed().as_micros() as u64;
                rooms.metrics().tick_seconds.observe(took);
                recent_ticks.push(took);
                if room.at_rest() {
                    beat.rest();
                }
            }
        }
        // Messages whose window ended, or due at once (none went for a window): not left for
        // the timer's next turn.
        let now = Instant::now();
        if room.messages_due().is_some_and(|due| due <= now) {
            room.send_messages(now);
        }
        if stirred && beat.resting {
            room.skip_ticks(beat.wake(Instant::now()));
        }
        if room.is_idle() && rooms.close_if_idle(&name, room_id, &control) {
            break;
        }
    }
    room.leave_all(Instant::now());
    if moved {
        // Whatever was not acknowledged is resent by its authors to the new owner.
        rooms.remove(&name, room_id);
        tracing::info!(room = %name, "room closed here: another server holds it");
        return;
    }
    // Let writes already queued finish, so an op accepted before shutdown is not half-done.
    room.flush_board();
    let deadline = tokio::time::Instant::now() + CLOSING_COMMIT_WAIT;
    while room.has_uncommitted() && tokio::time::Instant::now() < deadline {
        match tokio::time::timeout_at(deadline, commits.recv()).await {
            Ok(Some(committed)) => room.committed(Instant::now(), committed),
            _ => break,
        }
    }
    room.compact_board();
    rooms.remove(&name, room_id);
    tracing::debug!(room = %name, "room closed");
}

/// Answers every join already queued with why the room cannot take it.
fn refuse_all(control: &mut mpsc::UnboundedReceiver<Control>, reason: &str) {
    control.close();
    while let Ok(command) = control.try_recv() {
        if let Control::Join { reply, .. } = command {
            let _ = reply.send(Err(CloseReason::new(close::TRY_AGAIN_LATER, reason)));
        }
    }
}

/// A room's ticks: every `period` on one beat while it has something to do; none while it
/// rests, which costs nothing however many rooms stand idle (500 idle rooms ticking 30 times a
/// second took 0.37 cores). Waking skips the ticks slept through and keeps the beat, so tick
/// numbers stay in step with time as clients expect.
struct Beat {
    ticker: tokio::time::Interval,
    period: Duration,
    /// When the latest tick ran or, after a rest, was due.
    last_tick: Instant,
    resting: bool,
    /// While resting: when the fan-out of the ticks before the rest is to be timed.
    fanout_due: Option<Instant>,
    /// Counts the resting rooms (`easel_rooms_at_rest`).
    metrics: Arc<crate::metrics::Metrics>,
}

impl Beat {
    fn new(period: Duration, metrics: Arc<crate::metrics::Metrics>) -> Self {
        let mut ticker = tokio::time::interval(period);
        // After a stall, skip the missed ticks rather than burst through them: a burst would
        // send clients several snapshots at once, which looks worse than one late one.
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Self { ticker, period, last_tick: Instant::now(), resting: false, fanout_due: None, metrics }
    }

    /// A tick runs at `now`: how many periods passed since the one before (2 or more: late).
    fn ticked(&mut self, now: Instant) -> u64 {
        let periods = self.periods_since_last_tick(now);
        self.last_tick = now;
        u64::try_from(periods).unwrap_or(u64::MAX)
    }

    /// Whole periods from the latest tick to `now`.
    fn periods_since_last_tick(&self, now: Instant) -> u128 {
        now.duration_since(self.last_tick).as_nanos() / self.period.as_nanos().max(1)
    }

    /// The room is at rest: no ticks until `wake`.
    fn rest(&mut self) {
        self.resting = true;
        self.fanout_due = Some(self.last_tick + self.period * crate::room::fanout::SLOTS as u32);
        self.metrics.rooms_at_rest.inc();
    }

    /// Something arrived for a resting room at `now`: the ticks it slept through, and the next
    /// one is due on the old beat.
    fn wake(&mut self, now: Instant) -> u32 {
        self.resting = false;
        // Ticks from now on take the slots and time the ticks before the rest as usual.
        self.fanout_due = None;
        self.metrics.rooms_at_rest.dec();
        let skipped = u32::try_from(self.periods_since_last_tick(now)).unwrap_or(u32::MAX);
        self.last_tick += self.period * skipped;
        self.ticker.reset_at((self.last_tick + self.period).into());
        skipped
    }
}

impl Drop for Beat {
    fn drop(&mut self) {
        if self.resting {
            self.metrics.rooms_at_rest.dec();
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The durations of a room's last `RecentTicks::KEPT` ticks, for the host's console.
#[derive(Default)]
struct RecentTicks {
    micros: std::collections::VecDeque<u64>,
}

impl RecentTicks {
    /// Ten seconds at 30 Hz.
    const KEPT: usize = 300;

    fn push(&mut self, micros: u64) {
        if self.micros.len() == Self::KEPT {
            self.micros.pop_front();
        }
        self.micros.push_back(micros);
    }

    /// The median and 99th percentile, in milliseconds (0 before the first tick).
    fn percentiles(&self) -> (f64, f64) {
        let mut sorted: Vec<u64> = self.micros.iter().copied().collect();
        sorted.sort_unstable();
        let at = |q: f64| {
            sorted
                .get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1)))
                .map_or(0.0, |m| *m as f64 / 1000.0)
        };
        (at(0.5), at(0.99))
    }
}

#[cfg(test)]
mod tests {
    use super::RecentTicks;

    #[test]
    fn recent_ticks_keep_the_last_ten_seconds_and_give_their_percentiles() {
        let mut ticks = RecentTicks::default();
        assert_eq!(ticks.percentiles(), (0.0, 0.0));
        for micros in 1..=1000 {
            ticks.push(micros);
        }
        // Only the last 300 (701..=1000) are kept.
        assert_eq!(ticks.percentiles(), (0.851, 0.998));
    }
}
