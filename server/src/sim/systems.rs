//! The systems of one tick (verbs), and the state besides the world that they share.

use bevy_ecs::prelude::*;
use easel_protocol::OrbState;
use easel_protocol::game::{self, Rules};
use easel_protocol::rng::Mulberry32;

use super::components::{InputQueue, LastInputSeq, Orb, PlayerId, Position, Score, Steps};
use super::{MAX_QUEUED_INPUTS, MAX_STEPS_PER_TICK, STANDING_WINDOW, STEP_CREDIT_CAP, SimEvent, TickInput};

/// What a tick's systems share besides the world, handed to each as its input. (As resources,
/// bevy would keep 64 slots of each in every room's world: about 15 KB a room.)
pub(super) struct TickState {
    pub rules: Rules,
    /// Fixed tick length in seconds.
    pub dt: f32,
    /// Orb respawn places: seeded, so replays collect and respawn identically.
    pub orb_rng: Mulberry32,
    /// The inputs this tick applies.
    pub pending: Vec<TickInput>,
    /// What happened during the tick that clients must learn reliably.
    pub events: Vec<SimEvent>,
}

/// New inputs join their player's queue in seq order (stale and repeated ones are dropped); then
/// each player moves through as many queued inputs as its credit allows, one tick of movement
/// each. Sorting first makes the outcome independent of arrival order within the tick and lets
/// each player find its inputs by binary search.
pub(super) fn apply_inputs(
    InMut(tick): InMut<TickState>,
    mut players: Query<(&PlayerId, &mut InputQueue, &mut Steps, &mut LastInputSeq)>,
) {
    tick.pending.sort_unstable_by_key(|i| (i.player, i.seq));
    let inputs = &tick.pending;
    for (id, mut queue, mut steps, mut last_seq) in &mut players {
        let start = inputs.partition_point(|i| i.player < id.0);
        let end = inputs.partition_point(|i| i.player <= id.0);
        let queue = &mut *queue;
        for input in &inputs[start..end] {
            let newest = queue.pending.back().map_or(last_seq.0, |(seq, ..)| *seq);
            if input.seq > newest {
                queue.pending.push_back((input.seq, input.dx, input.dy));
            }
        }
        // A client that fell far behind (or floods) loses its oldest inputs rather than lagging
        // ever further; its prediction is corrected. A dropped input counts as applied (without
        // movement): the snapshot's seq must pass it, or the client would go on predicting it.
        let excess = queue.pending.len().saturating_sub(MAX_QUEUED_INPUTS);
        drop_oldest(queue, &mut last_seq, excess);
        queue.credit = (queue.credit + 1).min(STEP_CREDIT_CAP);
        let mut taken = Steps::default();
        while usize::from(taken.len) < MAX_STEPS_PER_TICK && taken.len < queue.credit {
            let Some((seq, dx, dy)) = queue.pending.pop_front() else { break };
            taken.dirs[usize::from(taken.len)] = (dx, dy);
            taken.len += 1;
            last_seq.0 = seq;
        }
        queue.credit -= taken.len;
        // What waited through a whole window is latency, not jitter: let it go (the client's
        // prediction is corrected, as for the inputs dropped above).
        let left = u8::try_from(queue.pending.len()).unwrap_or(u8::MAX);
        queue.fewest_left = if queue.window_ticks == 0 { left } else { queue.fewest_left.min(left) };
        queue.window_ticks += 1;
        if queue.window_ticks >= STANDING_WINDOW {
            let standing = usize::from(queue.fewest_left);
            drop_oldest(queue, &mut last_seq, standing);
            queue.window_ticks = 0;
        }
        if *steps != taken {
            *steps = taken;
        }
    }
    tick.pending.clear();
}

/// Drops a player's `count` oldest waiting inputs as if applied without movement: the seq a
/// snapshot reports moves past them, so the client stops predicting them and settles on the
/// server's position (were the newest input among them, it would never be acknowledged and the
/// player would stay drawn where the server never put it).
fn drop_oldest(queue: &mut InputQueue, last_seq: &mut Mut<LastInputSeq>, count: usize) {
    if let Some(&(newest_dropped, ..)) = count.checked_sub(1).and_then(|last| queue.pending.get(last)) {
        queue.pending.drain(..count);
        last_seq.0 = newest_dropped;
    }
}

pub(super) fn move_players(InMut(tick): InMut<TickState>, mut players: Query<(&Steps, &mut Position), With<PlayerId>>) {
    for (steps, mut pos) in &mut players {
        let mut at = (pos.x, pos.y);
        for &(dx, dy) in &steps.dirs[..usize::from(steps.len)] {
            at = game::step_position(at, dx, dy, tick.dt, &tick.rules);
        }
        if at != (pos.x, pos.y) {
            *pos = Position { x: at.0, y: at.1 };
        }
    }
}

pub(super) fn collect_orbs(
    InMut(tick): InMut<TickState>,
    mut players: Query<(&PlayerId, &Position, &mut Score), Without<Orb>>,
    mut orbs: Query<(&Orb, &mut Position), Without<PlayerId>>,
) {
    if !tick.rules.orbs_collectable {
        return;
    }
    // Players in id order, so when two touch the same orb the lower id wins, every time.
    let mut ordered: Vec<_> = players.iter_mut().collect();
    ordered.sort_unstable_by_key(|(id, _, _)| id.0);
    let mut orbs: Vec<_> = orbs.iter_mut().collect();
    orbs.sort_unstable_by_key(|(orb, _)| orb.id);
    for (id, player_pos, score) in &mut ordered {
        for (orb, orb_pos) in &mut orbs {
            if game::touches_orb((player_pos.x, player_pos.y), (orb_pos.x, orb_pos.y), &tick.rules) {
                score.0 += 1;
                let (x, y) = tick.rules.random_point(&mut tick.orb_rng);
                **orb_pos = Position { x, y };
                tick.events.push(SimEvent::OrbCollected { by: id.0, orb: OrbState { id: orb.id, x, y } });
            }
        }
    }
}
