//! Microbenchmarks of one simulation step at 100, 1,000 and 10,000 moving players.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use easel::sim::{Sim, TickInput};
use easel_protocol::game::Rules;
use easel_protocol::rng::Mulberry32;

fn step(c: &mut Criterion) {
    let mut group = c.benchmark_group("sim_step");
    for players in [100u32, 1_000, 10_000] {
        let mut sim = Sim::new(Rules::GAME, 1.0 / 30.0);
        let mut rng = Mulberry32::new(7);
        for id in 1..=players {
            sim.add_player(id, Rules::GAME.random_point(&mut rng));
        }
        let mut seq = 0;
        group.bench_with_input(BenchmarkId::from_parameter(players), &players, |b, &players| {
            b.iter(|| {
                // Every player sends a fresh input every tick: the workload's worst case.
                seq += 1;
                let inputs: Vec<TickInput> = (1..=players)
                    .map(|player| TickInput {
                        player,
                        seq,
                        dx: ((player + seq) % 3) as i8 - 1,
                        dy: (player % 3) as i8 - 1,
                    })
                    .collect();
                black_box(sim.step(&inputs))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, step);
criterion_main!(benches);
