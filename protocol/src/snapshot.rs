//! Delta-compressed snapshots (Quake 3 / Gaffer on Games style): player positions quantized to
//! `1 / POSITION_STEPS_PER_UNIT` of a world unit and each snapshot bit-packed as the difference
//! from a baseline the client has acknowledged, or in full when it has none. Any snapshot decodes
//! given its baseline alone, so the server may drop or supersede snapshots freely.
//!
//! Layout (bits, most significant first), for baseline entities `b` and current entities `c`,
//! both sorted by id:
//! - per baseline entity: `kept` (1); if kept, `changed` (1); if changed, `moved` (1) [+ x, y
//!   deltas], `scored` (1) [+ score delta], `acked` (1) [+ `by_gap` (1) or seq delta];
//! - the count of new entities, then each in full: id gap, x, y, score, last input seq.
//!
//! A moving player against a one-tick-old baseline costs 3 flag bits, 8 + 8 bits of position and
//! 2 bits of input seq: under 3 bytes.

use crate::codec::DecodeError;
use crate::msg::PlayerState;

/// Positions travel in steps of 1/8 of a world unit (0.125 px at zoom 1): fine enough that a
/// corrected prediction never shows, coarse enough that a tick of movement fits in a byte.
pub const POSITION_STEPS_PER_UNIT: f32 = 8.0;

/// One player as a snapshot carries it: the position quantized.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetPlayer {
    pub id: u32,
    pub x: u16,
    pub y: u16,
    pub score: u32,
    pub last_input_seq: u32,
}

/// A world coordinate on the wire (clamped to what 16 bits hold: 8,191 units).
pub fn quantize(v: f32) -> u16 {
    (v * POSITION_STEPS_PER_UNIT).round().clamp(0.0, f32::from(u16::MAX)) as u16
}

pub fn dequantize(q: u16) -> f32 {
    f32::from(q) / POSITION_STEPS_PER_UNIT
}

impl NetPlayer {
    pub fn quantized(p: &PlayerState) -> Self {
        Self { id: p.id, x: quantize(p.x), y: quantize(p.y), score: p.score, last_input_seq: p.last_input_seq }
    }

    pub fn state(&self) -> PlayerState {
        PlayerState {
            id: self.id,
            x: dequantize(self.x),
            y: dequantize(self.y),
            score: self.score,
            last_input_seq: self.last_input_seq,
        }
    }
}

/// Encodes `current` against `baseline` (`None`: in full). `tick_gap` is the current tick minus
/// the baseline's (a player sending one input per tick advances its seq by exactly that). Both
/// slices must be sorted by id without duplicates, as the simulation produces them.
pub fn encode(current: &[NetPlayer], baseline: Option<&[NetPlayer]>, tick_gap: u32) -> Vec<u8> {
    // About 3 bytes a moving player against a recent baseline; a full one needs more, once.
    let mut w = BitWriter { bytes: Vec::with_capacity(current.len() * 3 + 8), ..BitWriter::default() };
    let baseline = baseline.unwrap_or(&[]);
    // One walk over both (sorted by id): current players passed over are the new ones.
    let mut created: Vec<&NetPlayer> = Vec::new();
    let mut next = 0;
    for base in baseline {
        while next < current.len() && current[next].id < base.id {
            created.push(&current[next]);
            next += 1;
        }
        let now = current.get(next).filter(|c| c.id == base.id);
        next += usize::from(now.is_some());
        write_kept(&mut w, now, base, tick_gap);
    }
    created.extend(&current[next..]);
    w.varint(created.len() as u32);
    let mut previous_id = 0;
    for entity in created {
        write_created(&mut w, entity, previous_id);
        previous_id = entity.id;
    }
    w.finish()
}

/// Bits `encode` spends on one entity: `now` against its baseline state `base` (`None`: it is
/// new, written in full after an entity with id `previous_id`). What a bandwidth budget counts.
pub fn entity_bits(now: &NetPlayer, base: Option<&NetPlayer>, tick_gap: u32, previous_id: u32) -> u32 {
    let mut counter = BitCounter::default();
    match base {
        Some(base) => write_kept(&mut counter, Some(now), base, tick_gap),
        None => write_created(&mut counter, now, previous_id),
    }
    counter.0
}

/// A baseline entity: gone, unchanged, or the fields that changed.
fn write_kept(w: &mut impl BitSink, now: Option<&NetPlayer>, base: &NetPlayer, tick_gap: u32) {
    let Some(now) = now else {
        w.bit(false);
        return;
    };
    w.bit(true);
    if now == base {
        w.bit(false);
        return;
    }
    w.bit(true);
    let moved = (now.x, now.y) != (base.x, base.y);
    w.bit(moved);
    if moved {
        w.axis(i32::from(now.x) - i32::from(base.x));
        w.axis(i32::from(now.y) - i32::from(base.y));
    }
    w.bit(now.score != base.score);
    if now.score != base.score {
        w.varint(now.score.wrapping_sub(base.score));
    }
    w.bit(now.last_input_seq != base.last_input_seq);
    if now.last_input_seq != base.last_input_seq {
        let delta = now.last_input_seq.wrapping_sub(base.last_input_seq);
        w.bit(delta == tick_gap);
        if delta != tick_gap {
            w.varint(delta);
        }
    }
}

/// A new entity, in full.
fn write_created(w: &mut impl BitSink, entity: &NetPlayer, previous_id: u32) {
    w.varint(entity.id.wrapping_sub(previous_id));
    w.bits(u64::from(entity.x), 16);
    w.bits(u64::from(entity.y), 16);
    w.varint(entity.score);
    w.varint(entity.last_input_seq);
}

/// Decodes what `encode` wrote against the same `baseline` (`None` for a full snapshot). Never
/// panics: a truncated or inconsistent stream is an error.
pub fn decode(bytes: &[u8], baseline: Option<&[NetPlayer]>, tick_gap: u32) -> Result<Vec<NetPlayer>, DecodeError> {
    let mut r = BitReader::new(bytes);
    let baseline = baseline.unwrap_or(&[]);
    let mut kept = Vec::with_capacity(baseline.len());
    for base in baseline {
        if !r.bit()? {
            continue;
        }
        let mut now = *base;
        if r.bit()? {
            if r.bit()? {
                now.x = apply_axis(base.x, r.axis()?)?;
                now.y = apply_axis(base.y, r.axis()?)?;
            }
            if r.bit()? {
                now.score = base.score.wrapping_add(r.varint()?);
            }
            if r.bit()? {
                let delta = if r.bit()? { tick_gap } else { r.varint()? };
                now.last_input_seq = base.last_input_seq.wrapping_add(delta);
            }
        }
        kept.push(now);
    }
    let count = r.varint()? as usize;
    // Each created entity takes at least 35 bits: a count beyond what is left is a lie.
    if count > r.remaining_bits() / 35 {
        return Err(malformed("more new entities than the snapshot has bits for"));
    }
    let mut created = Vec::with_capacity(count);
    let mut id = 0u32;
    for i in 0..count {
        let gap = r.varint()?;
        if i > 0 && gap == 0 {
            return Err(malformed("new entities out of order"));
        }
        id = id.checked_add(gap).ok_or_else(|| malformed("entity id overflows"))?;
        let x = r.bits(16)? as u16;
        let y = r.bits(16)? as u16;
        let score = r.varint()?;
        let last_input_seq = r.varint()?;
        created.push(NetPlayer { id, x, y, score, last_input_seq });
    }
    r.finish()?;
    merge_sorted(kept, created)
}

fn apply_axis(base: u16, delta: i32) -> Result<u16, DecodeError> {
    u16::try_from(i32::from(base) + delta).map_err(|_| malformed("position delta leaves the world"))
}

fn merge_sorted(kept: Vec<NetPlayer>, created: Vec<NetPlayer>) -> Result<Vec<NetPlayer>, DecodeError> {
    let mut out = Vec::with_capacity(kept.len() + created.len());
    let (mut a, mut b) = (kept.into_iter().peekable(), created.into_iter().peekable());
    loop {
        let next = match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.id == y.id => return Err(malformed("a new entity already exists")),
            (Some(x), Some(y)) if x.id < y.id => a.next(),
            (Some(_), Some(_)) => b.next(),
            (Some(_), None) => a.next(),
            (None, Some(_)) => b.next(),
            (None, None) => return Ok(out),
        };
        out.extend(next);
    }
}

fn malformed(why: &str) -> DecodeError {
    DecodeError::Malformed(format!("snapshot: {why}"))
}

/// Where `write_kept` and `write_created` put bits: a real writer, or a counter that only sizes.
trait BitSink {
    fn bits(&mut self, value: u64, count: u32);

    fn bit(&mut self, value: bool) {
        self.bits(u64::from(value), 1);
    }

    /// A signed position delta: zig-zagged, then `0`+7 bits, `10`+11 bits or `11`+17 bits.
    fn axis(&mut self, delta: i32) {
        let zz = zigzag(delta);
        if zz < 1 << 7 {
            self.bits(u64::from(zz), 8);
        } else if zz < 1 << 11 {
            self.bits(0b10 << 11 | u64::from(zz), 13);
        } else {
            self.bits(0b11 << 17 | u64::from(zz), 19);
        }
    }

    /// An unsigned number in groups of 7 bits, each preceded by a "more follows" bit.
    fn varint(&mut self, mut value: u32) {
        loop {
            let group = value & 0x7f;
            value >>= 7;
            self.bits(u64::from(value != 0) << 7 | u64::from(group), 8);
            if value == 0 {
                return;
            }
        }
    }
}

#[derive(Default)]
struct BitCounter(u32);

impl BitSink for BitCounter {
    fn bits(&mut self, _value: u64, count: u32) {
        self.0 += count;
    }
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits of `acc` in use (always < 32 between calls, so a 32-bit write still fits).
    used: u32,
    acc: u64,
}

impl BitSink for BitWriter {
    /// Bits go out four bytes at a time: most calls are a shift and an or, with no push.
    fn bits(&mut self, value: u64, count: u32) {
        debug_assert!(count <= 32 && value < (1 << count));
        self.acc = (self.acc << count) | value;
        self.used += count;
        if self.used >= 32 {
            self.used -= 32;
            self.bytes.extend_from_slice(&((self.acc >> self.used) as u32).to_be_bytes());
            self.acc &= (1 << self.used) - 1;
        }
    }
}

impl BitWriter {
    fn finish(mut self) -> Vec<u8> {
        while self.used >= 8 {
            self.used -= 8;
            self.bytes.push((self.acc >> self.used) as u8);
        }
        if self.used > 0 {
            self.bytes.push((self.acc << (8 - self.used)) as u8);
        }
        self.bytes
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    /// Bits read so far.
    at: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn remaining_bits(&self) -> usize {
        self.bytes.len() * 8 - self.at
    }

    fn bits(&mut self, count: u32) -> Result<u32, DecodeError> {
        if self.remaining_bits() < count as usize {
            return Err(malformed("truncated"));
        }
        let mut value = 0u32;
        for _ in 0..count {
            let byte = self.bytes[self.at / 8];
            let bit = (byte >> (7 - self.at % 8)) & 1;
            value = (value << 1) | u32::from(bit);
            self.at += 1;
        }
        Ok(value)
    }

    fn bit(&mut self) -> Result<bool, DecodeError> {
        Ok(self.bits(1)? == 1)
    }

    fn axis(&mut self) -> Result<i32, DecodeError> {
        let zz = if !self.bit()? {
            self.bits(7)?
        } else if !self.bit()? {
            self.bits(11)?
        } else {
            self.bits(17)?
        };
        Ok(unzigzag(zz))
    }

    fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for shift in (0..35).step_by(7) {
            let more = self.bit()?;
            let group = self.bits(7)?;
            if shift == 28 && group > 0xf {
                return Err(malformed("number too large"));
            }
            value |= group << shift;
            if !more {
                return Ok(value);
            }
        }
        Err(malformed("number too long"))
    }

    /// Only padding (fewer than 8 zero bits) may follow the last field.
    fn finish(&self) -> Result<(), DecodeError> {
        let rest = self.remaining_bits();
        if rest >= 8 {
            return Err(DecodeError::TrailingBytes(rest / 8));
        }
        Ok(())
    }
}

fn zigzag(v: i32) -> u32 {
    ((v << 1) ^ (v >> 31)) as u32
}

fn unzigzag(v: u32) -> i32 {
    (v >> 1) as i32 ^ -((v & 1) as i32)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn world() -> impl Strategy<Value = Vec<NetPlayer>> {
        proptest::collection::btree_map(0u32..64, (any::<u16>(), any::<u16>(), 0u32..50, any::<u32>()), 0..40).prop_map(
            |m| {
                m.into_iter()
                    .map(|(id, (x, y, score, last_input_seq))| NetPlayer { id, x, y, score, last_input_seq })
                    .collect()
            },
        )
    }

    /// A world and a later version of it: some players moved a little, scored, left or joined.
    fn world_and_successor() -> impl Strategy<Value = (Vec<NetPlayer>, Vec<NetPlayer>, u32)> {
        (
            world(),
            proptest::collection::vec((any::<bool>(), -300i32..300, -300i32..300, any::<bool>()), 40),
            world(),
            1u32..8,
        )
            .prop_map(|(base, changes, joiners, gap)| {
                let mut next: Vec<NetPlayer> = base
                    .iter()
                    .zip(&changes)
                    .filter(|(_, (stays, ..))| *stays)
                    .map(|(p, (_, dx, dy, scored))| NetPlayer {
                        x: (i32::from(p.x) + dx).clamp(0, 65535) as u16,
                        y: (i32::from(p.y) + dy).clamp(0, 65535) as u16,
                        score: p.score + u32::from(*scored),
                        last_input_seq: p.last_input_seq.wrapping_add(gap),
                        ..*p
                    })
                    .collect();
                next.extend(joiners.into_iter().map(|j| NetPlayer { id: j.id + 1000, ..j }));
                (base, next, gap)
            })
    }

    proptest! {
        #[test]
        fn a_delta_decodes_to_the_state_it_encodes((base, next, gap) in world_and_successor()) {
            let bytes = encode(&next, Some(&base), gap);
            prop_assert_eq!(decode(&bytes, Some(&base), gap).unwrap(), next);
        }

        #[test]
        fn any_state_decodes_against_any_baseline(current in world(), base in world(), gap in 0u32..100) {
            let bytes = encode(&current, Some(&base), gap);
            prop_assert_eq!(decode(&bytes, Some(&base), gap).unwrap(), current.clone());
            let full = encode(&current, None, 0);
            prop_assert_eq!(decode(&full, None, 0).unwrap(), current);
        }

        #[test]
        fn entity_bits_add_up_to_the_encoded_size(current in world(), base in world(), gap in 0u32..100) {
            let bytes = encode(&current, Some(&base), gap);
            let mut bits = 0;
            for b in &base {
                bits += match current.iter().find(|c| c.id == b.id) {
                    Some(now) => entity_bits(now, Some(b), gap, 0),
                    None => 1,
                };
            }
            let created: Vec<_> = current.iter().filter(|c| !base.iter().any(|b| b.id == c.id)).collect();
            let mut counter = BitCounter::default();
            counter.varint(created.len() as u32);
            bits += counter.0;
            let mut previous = 0;
            for c in created {
                bits += entity_bits(c, None, gap, previous);
                previous = c.id;
            }
            prop_assert_eq!(bytes.len(), bits.div_ceil(8) as usize);
        }

        #[test]
        fn bits_written_in_any_widths_read_back_in_order(
            writes in proptest::collection::vec((any::<u32>(), 1u32..=32), 0..100)
        ) {
            let mut writer = BitWriter::default();
            let mask = |count: u32| if count == 32 { u32::MAX } else { (1 << count) - 1 };
            for &(value, count) in &writes {
                writer.bits(u64::from(value & mask(count)), count);
            }
            let bytes = writer.finish();
            let total: u32 = writes.iter().map(|w| w.1).sum();
            prop_assert_eq!(bytes.len(), total.div_ceil(8) as usize);
            let mut reader = BitReader::new(&bytes);
            for &(value, count) in &writes {
                prop_assert_eq!(reader.bits(count).unwrap(), value & mask(count));
            }
        }

        #[test]
        fn garbage_is_an_error_not_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), base in world()) {
            let _ = decode(&bytes, Some(&base), 1);
            let _ = decode(&bytes, None, 0);
        }
    }

    #[test]
    fn a_player_moving_one_tick_costs_under_three_bytes() {
        let base: Vec<NetPlayer> =
            (0..100).map(|id| NetPlayer { id, x: 8000, y: 8000, score: 0, last_input_seq: 10 }).collect();
        let speed = quantize(200.0 / 30.0) as i32; // one tick at full speed, straight
        let next: Vec<NetPlayer> =
            base.iter().map(|p| NetPlayer { x: (i32::from(p.x) + speed) as u16, last_input_seq: 11, ..*p }).collect();
        let bytes = encode(&next, Some(&base), 1);
        assert!(bytes.len() <= 100 * 3, "{} bytes for 100 moving players", bytes.len());
    }

    #[test]
    fn quantization_keeps_an_eighth_of_a_unit() {
        for v in [0.0f32, 0.06, 1999.94, 2000.0, 1234.567] {
            assert!((dequantize(quantize(v)) - v).abs() <= 0.5 / POSITION_STEPS_PER_UNIT);
        }
    }
}
