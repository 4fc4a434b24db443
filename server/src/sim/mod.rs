//! The authoritative simulation of one room: a bevy_ecs `World` and `Schedule` stepped at a fixed
//! tick.
//!
//! Architecture invariant: nothing here touches tokio, sockets or the clock. A tick is
//! `Sim::step(inputs) -> Outbox`, a pure function of the world, the inputs and the seeded RNG, so
//! a replay of the same inputs gives the same states (see `tests::replaying_inputs_reproduces_every_state`).

mod components;
mod systems;

use std::collections::HashMap;

use bevy_ecs::prelude::*;
use easel_protocol::game::Rules;
use easel_protocol::rng::Mulberry32;
use easel_protocol::{OrbState, PlayerState};

pub use components::{Heading, LastInputSeq, Orb, PlayerId, Position, Score};
use systems::{Config, OrbRng, PendingInputs, TickEvents};

/// The pipeline of one tick, in order.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SimSet {
    /// Validated inputs become each player's heading.
    ApplyInputs,
    /// Players move; orbs are collected.
    Simulate,
}

/// One input from one player, as the room received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickInput {
    pub player: u32,
    pub seq: u32,
    pub dx: i8,
    pub dy: i8,
}

/// Something that happened during a tick that clients must learn reliably (not just through the
/// next snapshot).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SimEvent {
    OrbCollected { by: u32, orb: OrbState },
}

/// What one tick produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Outbox {
    pub tick: u32,
    /// Every player, ordered by id.
    pub players: Vec<PlayerState>,
    pub events: Vec<SimEvent>,
}

pub struct Sim {
    world: World,
    schedule: Schedule,
    /// Player id → entity, so joins, leaves and inputs find their entity without a query.
    players: HashMap<u32, Entity>,
    tick: u32,
}

impl Sim {
    /// A room's world with its orbs laid out from `rules.orb_seed`; `dt` is the fixed tick length.
    pub fn new(rules: Rules, dt: f32) -> Self {
        let mut world = World::new();
        let mut rng = Mulberry32::new(rules.orb_seed);
        for (id, (x, y)) in (0u32..).zip(rules.initial_orbs(&mut rng)) {
            world.spawn((Orb { id }, Position { x, y }));
        }
        world.insert_resource(Config { rules, dt });
        world.insert_resource(OrbRng(rng));
        world.insert_resource(PendingInputs::default());
        world.insert_resource(TickEvents::default());

        let mut schedule = Schedule::default();
        schedule.configure_sets((SimSet::ApplyInputs, SimSet::Simulate).chain());
        schedule.add_systems(systems::apply_inputs.in_set(SimSet::ApplyInputs));
        schedule.add_systems((systems::move_players, systems::collect_orbs).chain().in_set(SimSet::Simulate));
        Self { world, schedule, players: HashMap::new(), tick: 0 }
    }

    pub fn rules(&self) -> Rules {
        self.world.resource::<Config>().rules
    }

    /// The last completed tick (0 before the first step).
    pub fn tick(&self) -> u32 {
        self.tick
    }

    /// Adds a player standing still at `spawn`. Adding an id twice keeps the first.
    pub fn add_player(&mut self, id: u32, spawn: (f32, f32)) {
        if self.players.contains_key(&id) {
            return;
        }
        let entity = self
            .world
            .spawn((PlayerId(id), Position { x: spawn.0, y: spawn.1 }, Heading::default(), LastInputSeq(0), Score(0)))
            .id();
        self.players.insert(id, entity);
    }

    pub fn remove_player(&mut self, id: u32) {
        if let Some(entity) = self.players.remove(&id) {
            self.world.despawn(entity);
        }
    }

    pub fn player_count(&self) -> usize {
        self.players.len()
    }

    /// Runs one tick over `inputs` (any order; stale and unknown-player inputs are ignored).
    pub fn step(&mut self, inputs: &[TickInput]) -> Outbox {
        self.world.resource_mut::<PendingInputs>().0.extend_from_slice(inputs);
        self.schedule.run(&mut self.world);
        self.tick = self.tick.wrapping_add(1);
        let events = std::mem::take(&mut self.world.resource_mut::<TickEvents>().0);
        Outbox { tick: self.tick, players: self.players(), events }
    }

    /// Every player's current state, ordered by id.
    pub fn players(&mut self) -> Vec<PlayerState> {
        let mut query = self.world.query::<(&PlayerId, &Position, &Score, &LastInputSeq)>();
        let mut players: Vec<PlayerState> = query
            .iter(&self.world)
            .map(|(id, pos, score, seq)| PlayerState {
                id: id.0,
                x: pos.x,
                y: pos.y,
                score: score.0,
                last_input_seq: seq.0,
            })
            .collect();
        players.sort_unstable_by_key(|p| p.id);
        players
    }

    /// Every orb's current place, ordered by id.
    pub fn orbs(&mut self) -> Vec<OrbState> {
        let mut query = self.world.query::<(&Orb, &Position)>();
        let mut orbs: Vec<OrbState> =
            query.iter(&self.world).map(|(orb, pos)| OrbState { id: orb.id, x: pos.x, y: pos.y }).collect();
        orbs.sort_unstable_by_key(|o| o.id);
        orbs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DT: f32 = 1.0 / 30.0;

    fn input(player: u32, seq: u32, dx: i8, dy: i8) -> TickInput {
        TickInput { player, seq, dx, dy }
    }

    /// A scripted session: players join, wander with changing inputs, one leaves.
    fn scripted_run() -> Vec<Outbox> {
        let mut sim = Sim::new(Rules::GAME, DT);
        let mut rng = Mulberry32::new(99);
        let mut outboxes = Vec::new();
        for id in 1..=4u32 {
            sim.add_player(id, Rules::GAME.random_point(&mut rng));
        }
        for tick in 0..600u32 {
            let mut inputs = Vec::new();
            for player in 1..=4u32 {
                if rng.next_u32().is_multiple_of(3) {
                    let dx = (rng.next_u32() % 3) as i8 - 1;
                    let dy = (rng.next_u32() % 3) as i8 - 1;
                    inputs.push(input(player, tick + 1, dx, dy));
                }
            }
            if tick == 300 {
                sim.remove_player(2);
            }
            outboxes.push(sim.step(&inputs));
        }
        outboxes
    }

    #[test]
    fn replaying_inputs_reproduces_every_state() {
        let first = scripted_run();
        let second = scripted_run();
        assert_eq!(first, second, "the same inputs from the same seed must give the same states");
        assert!(first.iter().any(|o| !o.events.is_empty()), "the script should exercise orb collection too");
    }

    #[test]
    fn the_latest_input_sets_the_heading_and_is_acknowledged() {
        let mut sim = Sim::new(Rules::GAME, DT);
        sim.add_player(1, (1000.0, 1000.0));
        let out = sim.step(&[input(1, 2, 1, 0), input(1, 1, -1, 0)]);
        let me = out.players[0];
        assert_eq!(me.last_input_seq, 2, "seq 2 is the newest input even though it came first");
        assert!(me.x > 1000.0, "the newest input (right) wins over the stale one (left)");
    }

    #[test]
    fn stale_inputs_are_ignored() {
        let mut sim = Sim::new(Rules::GAME, DT);
        sim.add_player(1, (1000.0, 1000.0));
        sim.step(&[input(1, 5, 1, 0)]);
        let out = sim.step(&[input(1, 4, -1, 0)]);
        assert_eq!(out.players[0].last_input_seq, 5);
        assert!(out.players[0].x > 1000.0 + 200.0 / 30.0, "still moving right after two ticks");
    }

    #[test]
    fn inputs_for_unknown_players_are_dropped() {
        let mut sim = Sim::new(Rules::GAME, DT);
        let out = sim.step(&[input(77, 1, 1, 1)]);
        assert!(out.players.is_empty());
    }

    #[test]
    fn touching_an_orb_scores_and_moves_it() {
        let mut sim = Sim::new(Rules::GAME, DT);
        let orb = sim.orbs()[0];
        sim.add_player(1, (orb.x, orb.y));
        let out = sim.step(&[]);
        assert_eq!(out.players[0].score, 1, "standing on an orb collects it");
        assert!(
            matches!(out.events[0], SimEvent::OrbCollected { by: 1, orb: moved } if moved.id == orb.id && (moved.x, moved.y) != (orb.x, orb.y)),
            "the collected orb reappears elsewhere: {:?}",
            out.events
        );
    }

    #[test]
    fn benchmark_orbs_stay_put() {
        let mut sim = Sim::new(Rules::ARENA_BENCHMARK, DT);
        let orb = sim.orbs()[0];
        sim.add_player(1, (orb.x, orb.y));
        let out = sim.step(&[]);
        assert!(out.events.is_empty() && out.players[0].score == 0);
    }
}
