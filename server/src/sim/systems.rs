//! The systems of one tick (verbs), and the resources they share.

use bevy_ecs::prelude::*;
use easel_protocol::OrbState;
use easel_protocol::game::{self, Rules};
use easel_protocol::rng::Mulberry32;

use super::components::{InputQueue, LastInputSeq, Orb, PlayerId, Position, Score, Steps};
use super::{MAX_QUEUED_INPUTS, MAX_STEPS_PER_TICK, STEP_CREDIT_CAP, SimEvent, TickInput};

#[derive(Resource)]
pub(super) struct Config {
    pub rules: Rules,
    /// Fixed tick length in seconds.
    pub dt: f32,
}

/// Orb respawn places: seeded, so replays collect and respawn identically.
#[derive(Resource)]
pub(super) struct OrbRng(pub Mulberry32);

#[derive(Resource, Default)]
pub(super) struct PendingInputs(pub Vec<TickInput>);

#[derive(Resource, Default)]
pub(super) struct TickEvents(pub Vec<SimEvent>);

/// New inputs join their player's queue in seq order (stale and repeated ones are dropped); then
/// each player moves through as many queued inputs as its credit allows, one tick of movement
/// each. Sorting first makes the outcome independent of arrival order within the tick and lets
/// each player find its inputs by binary search.
pub(super) fn apply_inputs(
    mut pending: ResMut<PendingInputs>,
    mut players: Query<(&PlayerId, &mut InputQueue, &mut Steps, &mut LastInputSeq)>,
) {
    pending.0.sort_unstable_by_key(|i| (i.player, i.seq));
    let inputs = &pending.0;
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
        // ever further; its prediction is corrected.
        while queue.pending.len() > MAX_QUEUED_INPUTS {
            queue.pending.pop_front();
        }
        queue.credit = (queue.credit + 1).min(STEP_CREDIT_CAP);
        let mut taken = Steps::default();
        while usize::from(taken.len) < MAX_STEPS_PER_TICK && taken.len < queue.credit {
            let Some((seq, dx, dy)) = queue.pending.pop_front() else { break };
            taken.dirs[usize::from(taken.len)] = (dx, dy);
            taken.len += 1;
            last_seq.0 = seq;
        }
        queue.credit -= taken.len;
        if *steps != taken {
            *steps = taken;
        }
    }
    pending.0.clear();
}

pub(super) fn move_players(config: Res<Config>, mut players: Query<(&Steps, &mut Position), With<PlayerId>>) {
    for (steps, mut pos) in &mut players {
        let mut at = (pos.x, pos.y);
        for &(dx, dy) in &steps.dirs[..usize::from(steps.len)] {
            at = game::step_position(at, dx, dy, config.dt, &config.rules);
        }
        if at != (pos.x, pos.y) {
            *pos = Position { x: at.0, y: at.1 };
        }
    }
}

pub(super) fn collect_orbs(
    config: Res<Config>,
    mut rng: ResMut<OrbRng>,
    mut events: ResMut<TickEvents>,
    mut players: Query<(&PlayerId, &Position, &mut Score), Without<Orb>>,
    mut orbs: Query<(&Orb, &mut Position), Without<PlayerId>>,
) {
    if !config.rules.orbs_collectable {
        return;
    }
    // Players in id order, so when two touch the same orb the lower id wins, every time.
    let mut ordered: Vec<_> = players.iter_mut().collect();
    ordered.sort_unstable_by_key(|(id, _, _)| id.0);
    let mut orbs: Vec<_> = orbs.iter_mut().collect();
    orbs.sort_unstable_by_key(|(orb, _)| orb.id);
    for (id, player_pos, score) in &mut ordered {
        for (orb, orb_pos) in &mut orbs {
            if game::touches_orb((player_pos.x, player_pos.y), (orb_pos.x, orb_pos.y), &config.rules) {
                score.0 += 1;
                let (x, y) = config.rules.random_point(&mut rng.0);
                **orb_pos = Position { x, y };
                events.0.push(SimEvent::OrbCollected { by: id.0, orb: OrbState { id: orb.id, x, y } });
            }
        }
    }
}
