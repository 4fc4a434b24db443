//! The systems of one tick (verbs), and the resources they share.

use bevy_ecs::prelude::*;
use easel_protocol::OrbState;
use easel_protocol::game::{self, Rules};
use easel_protocol::rng::Mulberry32;

use super::components::{Heading, LastInputSeq, Orb, PlayerId, Position, Score};
use super::{SimEvent, TickInput};

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

/// The newest input per player (by `seq`) becomes its heading; older ones are stale and dropped.
/// Movement depends only on the held direction, so applying just the newest input of a tick is
/// exact, and a flood of inputs costs the simulation no more than one.
pub(super) fn apply_inputs(
    mut pending: ResMut<PendingInputs>,
    mut players: Query<(&PlayerId, &mut Heading, &mut LastInputSeq)>,
) {
    if pending.0.is_empty() {
        return;
    }
    // Sorting makes the outcome independent of arrival order within the tick, and lets each
    // player find its newest input by binary search (O(n log n), not a scan per player).
    pending.0.sort_unstable_by_key(|i| (i.player, i.seq));
    let inputs = &pending.0;
    for (id, mut heading, mut last_seq) in &mut players {
        let end = inputs.partition_point(|i| i.player <= id.0);
        let newest = end.checked_sub(1).map(|at| &inputs[at]).filter(|i| i.player == id.0);
        if let Some(input) = newest.filter(|i| i.seq > last_seq.0) {
            *heading = Heading { dx: input.dx, dy: input.dy };
            last_seq.0 = input.seq;
        }
    }
    pending.0.clear();
}

pub(super) fn move_players(config: Res<Config>, mut players: Query<(&Heading, &mut Position), With<PlayerId>>) {
    for (heading, mut pos) in &mut players {
        let (x, y) = game::step_position((pos.x, pos.y), heading.dx, heading.dy, config.dt, &config.rules);
        if (x, y) != (pos.x, pos.y) {
            *pos = Position { x, y };
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
