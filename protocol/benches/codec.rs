//! Microbenchmarks of snapshot coding for a 256-player room: a full snapshot and a one-tick delta
//! in which every player moved, each encoded and decoded, alone and as the wire message; and the
//! wire message of one board chunk.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use easel_protocol::codec::BOARD_CHUNK_BYTES;
use easel_protocol::rng::Mulberry32;
use easel_protocol::snapshot::{self, NetPlayer, quantize};
use easel_protocol::{ServerMsg, decode_server, encode};

fn world(players: u32) -> Vec<NetPlayer> {
    let mut rng = Mulberry32::new(1);
    (0..players)
        .map(|id| NetPlayer {
            id,
            x: quantize((rng.next_f64() * 2000.0) as f32),
            y: quantize((rng.next_f64() * 2000.0) as f32),
            score: rng.next_u32() % 50,
            last_input_seq: rng.next_u32() % 100_000,
        })
        .collect()
}

/// The next tick of `base`: everyone moved one step in some direction and sent one input.
fn next_tick(base: &[NetPlayer]) -> Vec<NetPlayer> {
    let step = i32::from(quantize(200.0 / 30.0));
    base.iter()
        .enumerate()
        .map(|(i, p)| {
            let (dx, dy) = [(step, 0), (0, step), (-step, 0), (0, -step)][i % 4];
            NetPlayer {
                x: (i32::from(p.x) + dx).clamp(0, 16_000) as u16,
                y: (i32::from(p.y) + dy).clamp(0, 16_000) as u16,
                last_input_seq: p.last_input_seq + 1,
                ..*p
            }
        })
        .collect()
}

fn codec(c: &mut Criterion) {
    let base = world(256);
    let next = next_tick(&base);
    let full = snapshot::encode(&next, None, 0);
    let delta = snapshot::encode(&next, Some(&base), 1);
    let mut group = c.benchmark_group("snapshot_256_players");
    group.throughput(Throughput::Bytes(full.len() as u64));
    group.bench_function("encode_full", |b| b.iter(|| snapshot::encode(black_box(&next), None, 0)));
    group.bench_function("decode_full", |b| b.iter(|| snapshot::decode(black_box(&full), None, 0).expect("valid")));
    group.throughput(Throughput::Bytes(delta.len() as u64));
    group.bench_function("encode_delta", |b| b.iter(|| snapshot::encode(black_box(&next), Some(&base), 1)));
    group.bench_function("decode_delta", |b| {
        b.iter(|| snapshot::decode(black_box(&delta), Some(&base), 1).expect("valid"))
    });
    let message = ServerMsg::Snapshot { tick: 2, baseline: 1, entities: delta.clone() };
    let wire = encode(&message);
    group.bench_function("encode_delta_message", |b| b.iter(|| encode(black_box(&message))));
    group.bench_function("decode_delta_message", |b| b.iter(|| decode_server(black_box(&wire)).expect("valid")));
    group.finish();

    let chunk = ServerMsg::BoardChunk { index: 0, total: 1, bytes: (0..BOARD_CHUNK_BYTES).map(|i| i as u8).collect() };
    let wire = encode(&chunk);
    let mut group = c.benchmark_group("board_chunk_message");
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("encode", |b| b.iter(|| encode(black_box(&chunk))));
    group.bench_function("decode", |b| b.iter(|| decode_server(black_box(&wire)).expect("valid")));
    group.finish();
    println!("256 moving players: full {} bytes, one-tick delta {} bytes", full.len(), delta.len());
}

criterion_group!(benches, codec);
criterion_main!(benches);
