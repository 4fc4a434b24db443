//! Microbenchmarks of the whiteboard document at 10,000 strokes of 32 points: applying an add and
//! an erase, merging two replicas, and encoding / decoding the whole board.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use easel_protocol::board::{Board, Point, Stroke, StrokeId};
use easel_protocol::rng::Mulberry32;

const STROKES: u32 = 10_000;
const AUTHORS: u32 = 64;

fn stroke(rng: &mut Mulberry32, author: u32, seq: u32) -> Stroke {
    let (mut x, mut y) = ((rng.next_u32() % 32001) as i32 - 16000, (rng.next_u32() % 32001) as i32 - 16000);
    let points = (0..32)
        .map(|_| {
            x = (x + (rng.next_u32() % 129) as i32 - 64).clamp(-32768, 32767);
            y = (y + (rng.next_u32() % 129) as i32 - 64).clamp(-32768, 32767);
            Point { x: x as i16, y: y as i16 }
        })
        .collect();
    Stroke { id: StrokeId { author, seq }, color: rng.next_u32(), width: 1 + (rng.next_u32() % 16) as u8, points }
}

/// A board of `STROKES` strokes by `AUTHORS` authors, as the whiteboard workload builds it.
fn full_board() -> Board {
    let mut rng = Mulberry32::new(0x5EED_0000);
    let mut board = Board::default();
    for i in 0..STROKES {
        let author = i % AUTHORS + 1;
        let op = board.add_op(author, stroke(&mut rng, author, i / AUTHORS));
        board.apply(op);
    }
    board
}

fn board_ops(c: &mut Criterion) {
    let board = full_board();
    let mut rng = Mulberry32::new(1);
    let mut group = c.benchmark_group("board_10000_strokes");
    group.bench_function("apply_add", |b| {
        b.iter_batched(
            || {
                let op = board.add_op(AUTHORS + 1, stroke(&mut rng, AUTHORS + 1, 0));
                (board.clone(), op)
            },
            // Returned, so criterion drops the 10,000-stroke board outside the timing.
            |(mut board, op)| {
                board.apply(black_box(op));
                board
            },
            criterion::BatchSize::LargeInput,
        )
    });
    let victim = board.strokes().nth(5_000).map(|s| s.id).expect("a full board");
    group.bench_function("apply_erase", |b| {
        b.iter_batched(
            || (board.clone(), board.erase_op(&[victim]).expect("present")),
            |(mut board, op)| {
                board.apply(black_box(op));
                board
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.bench_function("merge_two_replicas", |b| {
        b.iter_batched(
            || (board.clone(), board.clone()),
            |(mut a, other)| {
                a.merge(black_box(other));
                a
            },
            criterion::BatchSize::LargeInput,
        )
    });
    let encoded = board.encode();
    group.bench_function("encode", |b| b.iter(|| black_box(&board).encode()));
    group.bench_function("decode", |b| b.iter(|| Board::decode(black_box(&encoded)).expect("valid board")));
    group.finish();
    println!("encoded board: {} bytes for {} strokes", encoded.len(), board.len());
}

criterion_group!(benches, board_ops);
criterion_main!(benches);
