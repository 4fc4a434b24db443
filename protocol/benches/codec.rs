//! Microbenchmarks of the wire codec: encoding and decoding a 256-player snapshot.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use easel_protocol::rng::Mulberry32;
use easel_protocol::{PlayerState, ServerMsg, decode_server, encode};

fn snapshot(players: u32) -> ServerMsg {
    let mut rng = Mulberry32::new(1);
    let players = (0..players)
        .map(|id| PlayerState {
            id,
            x: (rng.next_f64() * 2000.0) as f32,
            y: (rng.next_f64() * 2000.0) as f32,
            score: rng.next_u32() % 50,
            last_input_seq: rng.next_u32() % 100_000,
        })
        .collect();
    ServerMsg::Snapshot { tick: 12_345, players }
}

fn codec(c: &mut Criterion) {
    let msg = snapshot(256);
    let bytes = encode(&msg);
    let mut group = c.benchmark_group("snapshot_256_players");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("encode", |b| b.iter(|| encode(black_box(&msg))));
    group.bench_function("decode", |b| b.iter(|| decode_server(black_box(&bytes)).expect("valid snapshot")));
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
