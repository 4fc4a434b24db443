//! Microbenchmark of one room publish under interest management: 500 and 2,000 players moving
//! through the room's own simulation (arena benchmark rules), view distance 1,000 and a 64 KiB/s budget (the arena benchmark's
//! `--visibility interest`), every member keeping up. Measures the cells' views, the budget and
//! the encodings, everything a tick does per member except waking its connection.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use easel::config::Interest;
use easel::room::interest::{CellViews, Encodings, Frame, MemberView};
use easel::sim::{Sim, TickInput};
use easel_protocol::game::Rules;
use easel_protocol::rng::Mulberry32;
use easel_protocol::snapshot::NetPlayer;

const INTEREST: Interest = Interest { view_distance: 1000.0, snapshot_budget: 65_536 };
const TICK_RATE: u16 = 30;
const DIRS: [(i8, i8); 8] = [(1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1)];

/// The room's own simulation under the arena benchmark's rules, every player holding a direction
/// and turning now and then, as the bots do.
struct World {
    sim: Sim,
    rng: Mulberry32,
    heading: Vec<(i8, i8)>,
    seq: u32,
}

impl World {
    fn new(count: u32) -> Self {
        let rules = Rules::ARENA_BENCHMARK;
        let mut sim = Sim::new(rules, 1.0 / f32::from(TICK_RATE));
        let mut rng = Mulberry32::new(9);
        for id in 1..=count {
            sim.add_player(id, rules.random_point(&mut rng));
        }
        let heading = (0..count).map(|_| DIRS[(rng.next_f64() * 8.0) as usize]).collect();
        Self { sim, rng, heading, seq: 0 }
    }

    fn step(&mut self) -> (u32, Vec<NetPlayer>) {
        self.seq += 1;
        let inputs: Vec<TickInput> = (1..)
            .zip(&mut self.heading)
            .map(|(player, heading)| {
                if self.rng.next_f64() < 1.0 / 30.0 {
                    *heading = DIRS[(self.rng.next_f64() * 8.0) as usize];
                }
                TickInput { player, seq: self.seq, dx: heading.0, dy: heading.1 }
            })
            .collect();
        let outbox = self.sim.step(&inputs);
        (outbox.tick, outbox.players.iter().map(NetPlayer::quantized).collect())
    }
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_interest");
    for count in [500u32, 2_000] {
        let mut world = World::new(count);
        let mut members: Vec<MemberView> = (0..count).map(|_| MemberView::default()).collect();
        let mut views = CellViews::new();
        group.bench_with_input(BenchmarkId::from_parameter(count), &count, |b, _| {
            // Only the publish is timed; the simulation step that feeds it is setup.
            b.iter_batched(
                || world.step(),
                |(tick, players)| {
                    let frame = Frame::new(tick, Arc::new(players), &INTEREST, TICK_RATE, std::mem::take(&mut views));
                    let mut encodings = Encodings::default();
                    for (member, id) in members.iter_mut().zip(1..) {
                        black_box(member.next(id, tick - 1, &frame, &mut encodings));
                    }
                    views = frame.into_views();
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
