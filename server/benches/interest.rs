//! Microbenchmark of one room publish under interest management: 2,000 players moving in the
//! game's 2,000-unit world, view distance 1,000 and a 64 KiB/s budget (the arena benchmark's
//! `--visibility interest`), every member keeping up. Measures the cells' views, the budget and
//! the encodings, everything a tick does per member except waking its connection.

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use easel::config::Interest;
use easel::room::interest::{CellViews, Encodings, Frame, MemberView};
use easel_protocol::rng::Mulberry32;
use easel_protocol::snapshot::{NetPlayer, quantize};

const INTEREST: Interest = Interest { view_distance: 1000.0, snapshot_budget: 65_536 };
const TICK_RATE: u16 = 30;

/// Players bouncing around the world at the game's speed, each in its own direction.
struct World {
    players: Vec<(f32, f32, f32, f32)>,
    tick: u32,
}

impl World {
    fn new(count: usize) -> Self {
        let mut rng = Mulberry32::new(9);
        let step = 200.0 / f32::from(TICK_RATE);
        let players = (0..count)
            .map(|_| {
                let angle = rng.next_f64() as f32 * std::f32::consts::TAU;
                let (x, y) = (rng.next_f64() as f32 * 2000.0, rng.next_f64() as f32 * 2000.0);
                (x, y, angle.cos() * step, angle.sin() * step)
            })
            .collect();
        Self { players, tick: 0 }
    }

    fn step(&mut self) -> Vec<NetPlayer> {
        self.tick += 1;
        for (x, y, dx, dy) in &mut self.players {
            if !(0.0..2000.0).contains(&(*x + *dx)) {
                *dx = -*dx;
            }
            if !(0.0..2000.0).contains(&(*y + *dy)) {
                *dy = -*dy;
            }
            (*x, *y) = (*x + *dx, *y + *dy);
        }
        let tick = self.tick;
        self.players
            .iter()
            .zip(1..)
            .map(|(&(x, y, ..), id)| NetPlayer { id, x: quantize(x), y: quantize(y), score: 0, last_input_seq: tick })
            .collect()
    }
}

fn publish(c: &mut Criterion) {
    let mut group = c.benchmark_group("publish_interest");
    for count in [500usize, 2_000] {
        let mut world = World::new(count);
        let mut members: Vec<MemberView> = (0..count).map(|_| MemberView::default()).collect();
        let mut views = CellViews::new();
        group.bench_with_input(BenchmarkId::from_parameter(count), &count, |b, _| {
            b.iter(|| {
                let players = Arc::new(world.step());
                let tick = world.tick;
                let frame = Frame::new(tick, players, &INTEREST, TICK_RATE, std::mem::take(&mut views));
                let mut encodings = Encodings::default();
                for (member, id) in members.iter_mut().zip(1..) {
                    black_box(member.next(id, tick - 1, &frame, &mut encodings));
                }
                views = frame.into_views();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
