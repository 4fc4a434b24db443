//! The authoritative simulation of one room: a bevy_ecs `World` and the systems of a tick,
//! stepped at a fixed tick.
//!
//! Architecture invariant: nothing here touches tokio, sockets or the clock. A tick is
//! `Sim::step(inputs) -> Outbox`, a pure function of the world, the inputs and the seeded RNG, so
//! a replay of the same inputs gives the same states (see `tests::replaying_inputs_reproduces_every_state`).

mod components;
mod systems;

use std::collections::HashMap;

use bevy_ecs::prelude::*;
use bevy_ecs::system::BoxedSystem;
use easel_protocol::game::{self, Rules};
use easel_protocol::rng::Mulberry32;
use easel_protocol::{OrbState, PlayerState};

pub use components::{InputQueue, LastInputSeq, Orb, PlayerId, Position, Score, Steps};
use systems::TickState;

/// Inputs a player may move through in one tick: absorbs inputs bunched by jitter, bounds what a
/// flood can do in one tick.
pub const MAX_STEPS_PER_TICK: usize = 4;
/// Ticks of movement a player can save up (by not sending inputs) to spend later.
pub const STEP_CREDIT_CAP: u8 = 4;
/// Inputs kept waiting per player; older ones are dropped.
pub const MAX_QUEUED_INPUTS: usize = 8;
/// Ticks over which a player's inputs never all got applied: the ones that waited through all of
/// them are a standing queue, dropped at the window's end. A client sends one input a tick and
/// earns one step a tick, so a backlog left by a hiccup (a late tick, a bunched burst) would
/// otherwise delay every later input by as many ticks for as long as the player keeps moving.
pub const STANDING_WINDOW: u8 = 30;

/// One input from one player, as the room received it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickInput {
    pub player: u32,
    pub seq: u32,
    pub dx: i8,
    pub dy: i8,
}

impl TickInput {
    /// The inputs of one `Input` message (`dirs` numbered up to `seq`) that are newer than
    /// `*newest`, which it advances: repeats of inputs already forwarded are dropped here.
    pub fn unpack(player: u32, seq: u32, dirs: &[(i8, i8)], newest: &mut u32) -> Vec<TickInput> {
        let first = seq.saturating_add(1).saturating_sub(dirs.len() as u32);
        let fresh: Vec<TickInput> = (first..=seq)
            .zip(dirs)
            .filter(|(s, _)| *s > *newest)
            .map(|(seq, &(dx, dy))| TickInput { player, seq, dx, dy })
            .collect();
        *newest = (*newest).max(seq);
        fresh
    }
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
    /// The systems of a tick in the order they run: inputs become steps, players move, orbs
    /// are collected. Run in turn rather than by a `Schedule`, whose graph, executor and
    /// `Schedules` resource were a third of each room's world (24 of 75 KB, under heaptrack)
    /// for three systems that always run one after another.
    systems: [BoxedSystem<InMut<'static, TickState>>; 3],
    state: TickState,
    /// Player id → entity, so joins, leaves and inputs find their entity without a query.
    players: HashMap<u32, Entity>,
    tick: u32,
}

impl Sim {
    /// A room's world with its orbs laid out from `rules.orb_seed`; `dt` is the fixed tick length.
    pub fn new(rules: Rules, dt: f32) -> Self {
        let mut world = World::new();
        let mut orb_rng = Mulberry32::new(rules.orb_seed);
        world.spawn_batch(
            (0u32..).zip(rules.initial_orbs(&mut orb_rng)).map(|(id, (x, y))| (Orb { id }, Position { x, y })),
        );
        let mut systems: [BoxedSystem<InMut<'static, TickState>>; 3] = [
            Box::new(IntoSystem::into_system(systems::apply_inputs)),
            Box::new(IntoSystem::into_system(systems::move_players)),
            Box::new(IntoSystem::into_system(systems::collect_orbs)),
        ];
        for system in &mut systems {
            system.initialize(&mut world);
        }
        let state = TickState { rules, dt, orb_rng, pending: Vec::new(), events: Vec::new() };
        Self { world, systems, state, players: HashMap::new(), tick: 0 }
    }

    pub fn rules(&self) -> Rules {
        self.state.rules
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
            .spawn((
                PlayerId(id),
                Position { x: spawn.0, y: spawn.1 },
                InputQueue::default(),
                Steps::default(),
                LastInputSeq(0),
                Score(0),
            ))
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

    /// Runs one tick over `inputs`, each one tick of movement (any order; stale, repeated and
    /// unknown-player inputs are ignored).
    pub fn step(&mut self, inputs: &[TickInput]) -> Outbox {
        self.state.pending.extend_from_slice(inputs);
        for system in &mut self.systems {
            // The systems take only their input and queries, which are always valid.
            if let Err(e) = system.run(&mut self.state, &mut self.world) {
                tracing::error!("a simulation system did not run: {e}");
            }
        }
        self.tick = self.tick.wrapping_add(1);
        // The world records every removed component (a player's leave removes six) until its
        // trackers are cleared, which a bevy `Schedule` does each run and these systems, run
        // in turn, do not: without this a room that stays open grows with every leave.
        self.world.clear_trackers();
        let events = std::mem::take(&mut self.state.events);
        Outbox { tick: self.tick, players: self.players(), events }
    }

    /// Whether a step without inputs would change nothing but the tick number and the players'
    /// step credit: nobody has inputs queued or steps to take, and nobody touches an orb (one
    /// can reappear under a player standing still, who collects it on the next step).
    pub fn at_rest(&mut self) -> bool {
        if !self.state.pending.is_empty() {
            return false;
        }
        let mut players = self.world.query::<(&InputQueue, &Steps, &Position)>();
        let mut places = Vec::with_capacity(self.players.len());
        for (queue, steps, at) in players.iter(&self.world) {
            if !queue.pending.is_empty() || steps.len > 0 {
                return false;
            }
            places.push((at.x, at.y));
        }
        let rules = self.rules();
        if !rules.orbs_collectable {
            return true;
        }
        let mut orbs = self.world.query_filtered::<&Position, With<Orb>>();
        !orbs.iter(&self.world).any(|orb| places.iter().any(|&place| game::touches_orb(place, (orb.x, orb.y), &rules)))
    }

    /// Advances the world by `ticks` steps without inputs, as `step(&[])` that many times would,
    /// when it is `at_rest`: only the tick number and the players' step credit move.
    pub fn skip(&mut self, ticks: u32) {
        debug_assert!(self.at_rest(), "only a world at rest can skip its steps");
        self.earn_steps(ticks);
        self.tick = self.tick.wrapping_add(ticks);
    }

    /// The server missed `ticks` ticks (it stalled, and the next one runs late in their stead):
    /// the players earn those ticks' step credit all the same, so the inputs their clients sent
    /// through the stall are applied at the next step instead of queuing behind it (where they
    /// would wait until dropped as a standing backlog: movement lost to the server's hiccup).
    pub fn missed(&mut self, ticks: u32) {
        self.earn_steps(ticks);
    }

    /// Every player earns `ticks` ticks of step credit, up to the cap.
    fn earn_steps(&mut self, ticks: u32) {
        let earned = u8::try_from(ticks).unwrap_or(u8::MAX);
        let mut queues = self.world.query::<&mut InputQueue>();
        for mut queue in queues.iter_mut(&mut self.world) {
            let credit = queue.credit.saturating_add(earned).min(STEP_CREDIT_CAP);
            if queue.credit != credit {
                queue.credit = credit;
            }
        }
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

    #[test]
    fn a_standing_backlog_of_inputs_is_let_go_within_a_window() {
        let mut sim = Sim::new(Rules::GAME, DT);
        sim.add_player(1, (500.0, 500.0));
        // A hiccup: eight inputs at once (the step credit takes four), then one a tick, as a
        // client holding a direction sends them.
        let burst: Vec<_> = (1..=8).map(|seq| input(1, seq, 1, 0)).collect();
        let mut lag = 0;
        for tick in 0..=u32::from(STANDING_WINDOW) * 2 {
            let seq = 8 + tick;
            let out = if tick == 0 { sim.step(&burst) } else { sim.step(&[input(1, seq, 1, 0)]) };
            lag = seq - out.players[0].last_input_seq;
        }
        assert_eq!(lag, 0, "the newest input waits for no older one once the window has passed");
    }

    #[test]
    fn dropped_inputs_count_as_applied_so_the_client_stops_predicting_them() {
        let mut sim = Sim::new(Rules::GAME, DT);
        sim.add_player(1, (500.0, 500.0));
        // A burst of eight (four of them left waiting), one input a tick until the window ends
        // with the newest among the four dropped, then the key is let go.
        let burst: Vec<_> = (1..=8).map(|seq| input(1, seq, 1, 0)).collect();
        sim.step(&burst);
        let mut newest = 8;
        for _ in 1..STANDING_WINDOW {
            newest += 1;
            sim.step(&[input(1, newest, 1, 0)]);
        }
        let out = sim.step(&[]);
        assert_eq!(out.players[0].last_input_seq, newest, "every input sent is applied or dropped");
    }

    #[test]
    fn inputs_sent_through_a_server_stall_are_applied_at_the_next_step() {
        let mut sim = Sim::new(Rules::GAME, DT);
        sim.add_player(1, (500.0, 500.0));
        // Moving, one input a tick, until the credit saved while standing is spent.
        for seq in 1..=10 {
            sim.step(&[input(1, seq, 1, 0)]);
        }
        // The server misses three ticks; the next runs with the four inputs sent meanwhile.
        sim.missed(3);
        let late: Vec<_> = (11..=14).map(|seq| input(1, seq, 1, 0)).collect();
        let out = sim.step(&late);
        assert_eq!(out.players[0].last_input_seq, 14, "nothing left waiting behind the stall");
        assert!((x_of(&out) - (500.0 + 14.0 * 200.0 * DT)).abs() < 1e-3, "no movement lost: {}", x_of(&out));
    }

    #[test]
    fn players_who_left_leave_nothing_behind_in_the_world() {
        let mut sim = Sim::new(Rules::GAME, DT);
        let mut rng = Mulberry32::new(5);
        for id in 1..=2_000u32 {
            sim.add_player(id, Rules::GAME.random_point(&mut rng));
            sim.step(&[]);
            sim.remove_player(id);
            sim.step(&[]);
        }
        let removals_held: usize = sim.world.removed_components().iter().map(|(_, removed)| removed.len()).sum();
        assert!(removals_held < 20, "the world still records {removals_held} removed components");
        assert_eq!(sim.player_count(), 0);
    }

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

    fn x_of(out: &Outbox) -> f32 {
        out.players[0].x
    }

    #[test]
    fn each_input_is_one_tick_of_movement_in_seq_order() {
        let mut sim = Sim::new(Rules::GAME, DT);
        sim.add_player(1, (1000.0, 1000.0));
        sim.step(&[]);
        // Two inputs arriving in one tick (jitter bunched them), out of order.
        let out = sim.step(&[input(1, 2, 1, 0), input(1, 1, 1, 0)]);
        assert_eq!(out.players[0].last_input_seq, 2, "both are applied, newest acknowledged");
        let step = 200.0 / 30.0;
        assert!((x_of(&out) - (1000.0 + 2.0 * step)).abs() < 1e-3, "two ticks of movement: {}", x_of(&out));
        let out = sim.step(&[]);
        assert!((x_of(&out) - (1000.0 + 2.0 * step)).abs() < 1e-3, "no input, no movement");
    }

    #[test]
    fn stale_and_repeated_inputs_are_ignored() {
        let mut sim = Sim::new(Rules::GAME, DT);
        sim.add_player(1, (1000.0, 1000.0));
        let first = sim.step(&[input(1, 5, 1, 0)]);
        let out = sim.step(&[input(1, 4, -1, 0), input(1, 5, 1, 0)]);
        assert_eq!(out.players[0].last_input_seq, 5);
        assert_eq!(x_of(&out), x_of(&first), "seq 4 is older than what was applied, seq 5 a repeat");
    }

    #[test]
    fn a_client_flooding_inputs_moves_no_faster_than_an_honest_one() {
        let mut sim = Sim::new(Rules::GAME, DT);
        sim.add_player(1, (100.0, 1000.0));
        sim.add_player(2, (100.0, 1200.0));
        let mut forged_seq = 0;
        let mut out = sim.step(&[]);
        for tick in 1..=60u32 {
            let mut inputs = vec![input(1, tick, 1, 0)];
            // Ten inputs a tick, with out-of-range magnitudes.
            for _ in 0..10 {
                forged_seq += 1;
                inputs.push(input(2, forged_seq, 127, 0));
            }
            out = sim.step(&inputs);
        }
        let honest = out.players[0].x - 100.0;
        let forged = out.players[1].x - 100.0;
        let step = 200.0 / 30.0;
        assert!((honest - 60.0 * step).abs() < 1e-2, "the honest player moved one step per tick: {honest}");
        assert!(
            forged <= honest + f32::from(STEP_CREDIT_CAP) * step,
            "the flood moved {forged}, the honest player {honest}"
        );
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

    /// Two worlds, moved alike until both stand still.
    fn two_worlds_come_to_rest() -> (Sim, Sim) {
        let worlds = [(); 2].map(|()| {
            let mut sim = Sim::new(Rules::GAME, DT);
            sim.add_player(1, (1000.0, 1000.0));
            sim.add_player(2, (1500.0, 1200.0));
            for seq in 1..=20 {
                sim.step(&[input(1, seq, 1, 0), input(2, seq, 0, -1)]);
            }
            sim
        });
        let [mut a, mut b] = worlds;
        for sim in [&mut a, &mut b] {
            assert!(!sim.at_rest(), "the last inputs' steps were just taken");
            sim.step(&[]);
            assert!(sim.at_rest(), "no inputs queued, no steps to take, no orb underfoot");
        }
        (a, b)
    }

    #[test]
    fn skipping_ticks_at_rest_is_stepping_without_inputs() {
        let (mut stepped, mut skipped) = two_worlds_come_to_rest();
        for _ in 0..50 {
            stepped.step(&[]);
        }
        skipped.skip(50);
        assert_eq!(stepped.tick(), skipped.tick());
        // Inputs bunched by jitter spend the credit saved while standing: both worlds saved alike.
        let burst: Vec<TickInput> = (21..=26).map(|seq| input(1, seq, 1, 1)).collect();
        for inputs in [burst.as_slice(), &[input(2, 21, -1, 0)], &[], &[]] {
            assert_eq!(stepped.step(inputs), skipped.step(inputs));
        }
    }

    #[test]
    fn a_world_with_inputs_waiting_or_an_orb_underfoot_is_not_at_rest() {
        let mut sim = Sim::new(Rules::GAME, DT);
        let orb = sim.orbs()[0];
        sim.add_player(1, (orb.x, orb.y));
        assert!(!sim.at_rest(), "the orb under the player is collected on the next step");
        sim.step(&[]);
        assert!(sim.at_rest());
        sim.step(&[input(1, 1, 1, 0), input(1, 2, 1, 0), input(1, 3, 1, 0), input(1, 4, 1, 0), input(1, 5, 1, 0)]);
        assert!(!sim.at_rest(), "more inputs than one step takes wait in the queue");
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
