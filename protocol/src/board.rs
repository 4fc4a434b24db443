//! The shared whiteboard document, replicated on the server and every client.
//!
//! Membership is a `crdts::Orswot` of stroke ids (observed-remove, add-wins): concurrent and
//! offline edits merge in any order, an erase removes exactly the adds it saw, and an undo of an
//! erase is a fresh add of the same id. Stroke bodies never change once drawn, so they ride along
//! with the adds and are kept in a live index beside the set (the set's own read API clones its
//! whole clock per call, too slow to render from).
//!
//! Ops must reach a replica in the order their author produced them (per-author FIFO, which
//! WebSocket and the server's relay order give); the server accepts only ops that are causally
//! ready (`Board::readiness`), so its replica never needs to defer anything.

use std::collections::{BTreeMap, BTreeSet};

use crdts::{CmRDT, CvRDT, Orswot, orswot};
pub use crdts::{Dot, VClock};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A replica's actor id: the author id the server assigned to one browser tab or bot.
pub type Actor = u32;

/// Points in one stroke; a longer freehand line is split into several strokes by the client.
pub const MAX_POINTS_PER_STROKE: usize = 1024;
/// Widest pen, in board units.
pub const MAX_WIDTH: u8 = 64;
/// Strokes on one board; beyond it new strokes are refused (erasing makes room).
pub const MAX_STROKES_PER_BOARD: usize = 50_000;
/// Strokes one erase may name.
pub const MAX_ERASE_IDS: usize = 256;
/// Actors one erase's clock may name: it only needs the dots of the erased strokes.
pub const MAX_CLOCK_ACTORS: usize = 1024;

/// A stroke's identity: its author and the author's add counter (from 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StrokeId {
    pub author: u32,
    pub seq: u32,
}

/// A point on the board, in board units.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Point {
    pub x: i16,
    pub y: i16,
}

/// A freehand line. Immutable once drawn.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stroke {
    pub id: StrokeId,
    /// 0xRRGGBB (higher bits ignored).
    pub color: u32,
    pub width: u8,
    /// Encoded as deltas from the previous point: a freehand point costs about two bytes.
    #[serde(with = "delta_points")]
    pub points: Vec<Point>,
}

/// An edit of the board.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BoardOp {
    /// Draws a stroke, or brings an erased one back (an undo of an erase): the dot is the adding
    /// actor's next counter.
    Add { dot: Dot<Actor>, stroke: Stroke },
    /// Erases the strokes as far as `clock` (the dots of the adds the eraser saw).
    Erase { clock: VClock<Actor>, ids: Vec<StrokeId> },
}

/// Why an op is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BoardError {
    #[error("a stroke needs at least one point")]
    EmptyStroke,
    #[error("a stroke may have at most {MAX_POINTS_PER_STROKE} points")]
    TooManyPoints,
    #[error("pen width must be 1 to {MAX_WIDTH}")]
    BadWidth,
    #[error("an erase names 1 to {MAX_ERASE_IDS} strokes")]
    BadErase,
    #[error("an erase's clock names too many actors")]
    ClockTooLarge,
    #[error("the board is full ({MAX_STROKES_PER_BOARD} strokes): erase some first")]
    BoardFull,
    #[error("an op may only use its own author's dots")]
    NotYourDot,
    #[error("a new stroke must carry its own author's id")]
    NotYourStroke,
    #[error("op out of order: expected counter {expected}, got {got}")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("the erase refers to edits this replica has not seen")]
    CausallyAhead,
}

/// Whether an op can be applied now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Already applied (a resend after a reconnect): acknowledge, store nothing.
    Duplicate,
}

/// One replica of a board.
#[derive(Debug, Clone, Default)]
pub struct Board {
    set: Orswot<StrokeId, Actor>,
    /// `set`'s clock, kept beside it: the set hands out only clones of its clock (a map of every
    /// author), and every op reads it.
    clock: VClock<Actor>,
    /// Bodies of exactly the strokes in `set`, ordered by id (the digest's order).
    live: BTreeMap<StrokeId, Stroke>,
    /// Each author's next stroke seq (one more than the highest seen): lets a re-add of another
    /// author's stroke be told from a forged new one.
    next_seq: BTreeMap<u32, u32>,
    /// Strokes whose erase this replica had to defer (it named adds not yet seen).
    deferred_erases: BTreeSet<StrokeId>,
}

/// The stored and transferred form of a board.
#[derive(Deserialize)]
struct Snapshot {
    set: Orswot<StrokeId, Actor>,
    strokes: Vec<Stroke>,
    next_seq: BTreeMap<u32, u32>,
}

/// `Snapshot` as it is written: borrowed from the board, so encoding copies nothing but bytes
/// (the same bytes an owned `Snapshot` would give).
#[derive(Serialize)]
struct SnapshotRef<'a> {
    set: &'a Orswot<StrokeId, Actor>,
    #[serde(serialize_with = "serialize_strokes")]
    strokes: &'a BTreeMap<StrokeId, Stroke>,
    next_seq: &'a BTreeMap<u32, u32>,
}

/// The live strokes as the `Vec<Stroke>` of `Snapshot`.
fn serialize_strokes<S: serde::Serializer>(
    live: &BTreeMap<StrokeId, Stroke>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(live.values())
}

impl Board {
    /// Shape checks that need no state: run by the author before sending and by the server.
    pub fn validate(op: &BoardOp) -> Result<(), BoardError> {
        match op {
            BoardOp::Add { stroke, .. } => {
                if stroke.points.is_empty() {
                    return Err(BoardError::EmptyStroke);
                }
                if stroke.points.len() > MAX_POINTS_PER_STROKE {
                    return Err(BoardError::TooManyPoints);
                }
                if stroke.width == 0 || stroke.width > MAX_WIDTH {
                    return Err(BoardError::BadWidth);
                }
            }
            BoardOp::Erase { clock, ids } => {
                if ids.is_empty() || ids.len() > MAX_ERASE_IDS {
                    return Err(BoardError::BadErase);
                }
                if clock.iter().count() > MAX_CLOCK_ACTORS {
                    return Err(BoardError::ClockTooLarge);
                }
            }
        }
        Ok(())
    }

    /// Whether `actor` may apply `op` to this replica now (the server's check). An op that is
    /// neither ready nor a duplicate is refused: ops from one author arrive in order.
    pub fn readiness(&self, op: &BoardOp, actor: Actor) -> Result<Readiness, BoardError> {
        Self::validate(op)?;
        match op {
            BoardOp::Add { dot, stroke } => {
                if dot.actor != actor {
                    return Err(BoardError::NotYourDot);
                }
                let seen = self.clock.get(&actor);
                if dot.counter <= seen {
                    return Ok(Readiness::Duplicate);
                }
                if dot.counter != seen + 1 {
                    return Err(BoardError::OutOfOrder { expected: seen + 1, got: dot.counter });
                }
                let known = stroke.id.seq < self.next_seq.get(&stroke.id.author).copied().unwrap_or(0);
                if stroke.id.author != actor && !known {
                    return Err(BoardError::NotYourStroke);
                }
                if self.live.len() >= MAX_STROKES_PER_BOARD && !self.live.contains_key(&stroke.id) {
                    return Err(BoardError::BoardFull);
                }
                Ok(Readiness::Ready)
            }
            BoardOp::Erase { clock, .. } => {
                if clock <= &self.clock {
                    Ok(Readiness::Ready)
                } else {
                    Err(BoardError::CausallyAhead)
                }
            }
        }
    }

    /// Applies an op (idempotent; per-author order required, see the module docs).
    pub fn apply(&mut self, op: BoardOp) {
        match op {
            BoardOp::Add { dot, stroke } => {
                let id = stroke.id;
                let next = self.next_seq.entry(id.author).or_insert(0);
                *next = (*next).max(id.seq.saturating_add(1));
                // An unseen dot puts its stroke in the set unless an erase the set deferred
                // covers it; asking the set afterwards (`contains`) would clone its clock.
                let surely_in = dot.counter > self.clock.get(&dot.actor) && holds_no_deferred_removals(&self.set);
                self.clock.apply(dot);
                self.set.apply(orswot::Op::Add { dot, members: vec![id] });
                if surely_in || self.set.contains(&id).val {
                    self.live.entry(id).or_insert(stroke);
                }
                self.settle_deferred();
            }
            BoardOp::Erase { clock, ids } => {
                // Deferred unless every dot it names has been seen here (concurrent counts too).
                let seen = matches!(
                    clock.partial_cmp(&self.clock),
                    Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
                );
                let deferred = !seen;
                self.set.apply(orswot::Op::Rm { clock, members: ids.clone() });
                for id in ids {
                    if !self.set.contains(&id).val {
                        self.live.remove(&id);
                    } else if deferred {
                        self.deferred_erases.insert(id);
                    }
                }
            }
        }
    }

    /// Joins another replica's state into this one (state-based merge: commutative,
    /// associative, idempotent).
    pub fn merge(&mut self, other: Board) {
        self.set.merge(other.set);
        self.clock.merge(other.clock);
        for (author, next) in other.next_seq {
            let mine = self.next_seq.entry(author).or_insert(0);
            *mine = (*mine).max(next);
        }
        let mut bodies = std::mem::take(&mut self.live);
        bodies.extend(other.live);
        // One read of the membership (one clock clone), not one `contains` per stroke.
        let members = self.set.read().val;
        self.live = bodies.into_iter().filter(|(id, _)| members.contains(id)).collect();
        self.deferred_erases.extend(other.deferred_erases);
        self.settle_deferred();
    }

    /// The op that adds `stroke` as `actor`'s next edit.
    pub fn add_op(&self, actor: Actor, stroke: Stroke) -> BoardOp {
        BoardOp::Add { dot: self.clock.inc(actor), stroke }
    }

    /// The op that erases `ids` as this replica sees them (strokes it does not hold are skipped;
    /// `None` if none remain).
    pub fn erase_op(&self, ids: &[StrokeId]) -> Option<BoardOp> {
        let mut clock = VClock::new();
        let mut present = Vec::new();
        for id in ids.iter().take(MAX_ERASE_IDS) {
            let read = self.set.contains(id);
            if read.val {
                clock.merge(read.rm_clock);
                present.push(*id);
            }
        }
        (!present.is_empty()).then_some(BoardOp::Erase { clock, ids: present })
    }

    /// The live strokes, ordered by id.
    pub fn strokes(&self) -> impl Iterator<Item = &Stroke> {
        self.live.values()
    }

    pub fn stroke(&self, id: &StrokeId) -> Option<&Stroke> {
        self.live.get(id)
    }

    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// How many edits of `actor` this replica has seen.
    pub fn counter(&self, actor: Actor) -> u64 {
        self.clock.get(&actor)
    }

    /// The next unused stroke seq of `author`, as far as this replica knows.
    pub fn next_stroke_seq(&self, author: u32) -> u32 {
        self.next_seq.get(&author).copied().unwrap_or(0)
    }

    /// SHA-256 over the live strokes in (author, seq) order, as WORKLOADS.md defines: author,
    /// seq, color (u32 le), width (u8), point count (u32 le), then each point's x, y (i16 le).
    pub fn digest(&self) -> [u8; 32] {
        digest_of(self.live.values())
    }

    /// The board as bytes (the stored snapshot and the late joiner's state).
    pub fn encode(&self) -> Vec<u8> {
        crate::codec::encode(&SnapshotRef { set: &self.set, strokes: &self.live, next_seq: &self.next_seq })
    }

    /// A board from `encode`d bytes (untrusted: size-limited, never panics).
    pub fn decode(bytes: &[u8]) -> Result<Board, crate::DecodeError> {
        let snapshot: Snapshot = crate::codec::decode_board(bytes)?;
        let mut board = Board {
            clock: snapshot.set.clock(),
            set: snapshot.set,
            live: BTreeMap::new(),
            next_seq: snapshot.next_seq,
            deferred_erases: BTreeSet::new(),
        };
        let members = board.set.read().val;
        board.live = snapshot.strokes.into_iter().filter(|s| members.contains(&s.id)).map(|s| (s.id, s)).collect();
        Ok(board)
    }

    /// Whether the clock and the bodies kept beside the set match it (for the tests).
    #[cfg(test)]
    fn agrees_with_its_set(&self) -> bool {
        let members = self.set.read().val;
        self.clock == self.set.clock()
            && self.live.len() == members.len()
            && self.live.keys().all(|id| members.contains(id))
    }

    /// After an add, erases this replica deferred may now apply: drop their bodies.
    fn settle_deferred(&mut self) {
        if self.deferred_erases.is_empty() {
            return;
        }
        let set = &self.set;
        let live = &mut self.live;
        self.deferred_erases.retain(|id| {
            if set.contains(id).val {
                true
            } else {
                live.remove(id);
                false
            }
        });
    }
}

/// Whether `set` holds no removals it deferred (erases that came before the adds they saw). The
/// set's own `Serialize` is asked for the length of its `deferred` map and nothing else:
/// `crdts` offers no other way that does not clone the set's clock. Anything unexpected in the
/// set's shape answers false, which only sends the caller the slower way.
fn holds_no_deferred_removals(set: &Orswot<StrokeId, Actor>) -> bool {
    matches!(set.serialize(deferred_probe::FieldProbe), Err(deferred_probe::Answer::DeferredLen(0)))
}

/// The serializers behind `holds_no_deferred_removals`: one that skips every field of a struct
/// but `deferred`, and one that answers a map's length; both stop at once with the answer.
mod deferred_probe {
    use serde::ser::{self, Impossible, Serialize, SerializeStruct};

    #[derive(Debug)]
    pub(super) enum Answer {
        DeferredLen(usize),
        Unexpected,
    }

    impl std::fmt::Display for Answer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl std::error::Error for Answer {}

    impl ser::Error for Answer {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Answer::Unexpected
        }
    }

    pub(super) struct FieldProbe;
    struct LenProbe;

    /// Every method of a `Serializer` not named: the shape is not the expected one.
    macro_rules! unexpected {
        ($($method:ident($($arg:ty),*) -> $ok:ty;)*) => {
            $(fn $method(self, $(_: $arg),*) -> Result<$ok, Answer> { Err(Answer::Unexpected) })*
        };
    }

    /// A probe's `Serializer` items but `serialize_map` and `serialize_struct`: its struct
    /// serializer is `$structs`, every other compound one impossible.
    macro_rules! probe_serializer_items {
        ($structs:ty) => {
            type Ok = ();
            type Error = Answer;
            type SerializeSeq = Impossible<(), Answer>;
            type SerializeTuple = Impossible<(), Answer>;
            type SerializeTupleStruct = Impossible<(), Answer>;
            type SerializeTupleVariant = Impossible<(), Answer>;
            type SerializeMap = Impossible<(), Answer>;
            type SerializeStruct = $structs;
            type SerializeStructVariant = Impossible<(), Answer>;

            unexpected! {
                serialize_bool(bool) -> ();
                serialize_i8(i8) -> ();
                serialize_i16(i16) -> ();
                serialize_i32(i32) -> ();
                serialize_i64(i64) -> ();
                serialize_u8(u8) -> ();
                serialize_u16(u16) -> ();
                serialize_u32(u32) -> ();
                serialize_u64(u64) -> ();
                serialize_f32(f32) -> ();
                serialize_f64(f64) -> ();
                serialize_char(char) -> ();
                serialize_str(&str) -> ();
                serialize_bytes(&[u8]) -> ();
                serialize_none() -> ();
                serialize_unit() -> ();
                serialize_unit_struct(&'static str) -> ();
                serialize_unit_variant(&'static str, u32, &'static str) -> ();
                serialize_seq(Option<usize>) -> Impossible<(), Answer>;
                serialize_tuple(usize) -> Impossible<(), Answer>;
                serialize_tuple_struct(&'static str, usize) -> Impossible<(), Answer>;
                serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Impossible<(), Answer>;
                serialize_struct_variant(&'static str, u32, &'static str, usize) -> Impossible<(), Answer>;
            }

            fn serialize_some<T: ?Sized + Serialize>(self, _: &T) -> Result<(), Answer> {
                Err(Answer::Unexpected)
            }

            fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, _: &T) -> Result<(), Answer> {
                Err(Answer::Unexpected)
            }

            fn serialize_newtype_variant<T: ?Sized + Serialize>(
                self,
                _: &'static str,
                _: u32,
                _: &'static str,
                _: &T,
            ) -> Result<(), Answer> {
                Err(Answer::Unexpected)
            }
        };
    }

    impl ser::Serializer for FieldProbe {
        probe_serializer_items!(Self);

        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Answer> {
            Err(Answer::Unexpected)
        }

        fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Answer> {
            Ok(self)
        }
    }

    impl SerializeStruct for FieldProbe {
        type Ok = ();
        type Error = Answer;

        fn serialize_field<T: ?Sized + Serialize>(&mut self, key: &'static str, value: &T) -> Result<(), Answer> {
            match key {
                "deferred" => value.serialize(LenProbe),
                _ => Ok(()),
            }
        }

        fn end(self) -> Result<(), Answer> {
            Err(Answer::Unexpected)
        }
    }

    impl ser::Serializer for LenProbe {
        probe_serializer_items!(Impossible<(), Answer>);

        fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, Answer> {
            Err(len.map_or(Answer::Unexpected, Answer::DeferredLen))
        }

        fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeStruct, Answer> {
            Err(Answer::Unexpected)
        }
    }
}

/// The workload digest of a set of strokes given in (author, seq) order (see `Board::digest`).
pub fn digest_of<'a>(strokes: impl IntoIterator<Item = &'a Stroke>) -> [u8; 32] {
    let mut hash = Sha256::new();
    for stroke in strokes {
        hash.update(stroke.id.author.to_le_bytes());
        hash.update(stroke.id.seq.to_le_bytes());
        hash.update(stroke.color.to_le_bytes());
        hash.update([stroke.width]);
        hash.update((stroke.points.len() as u32).to_le_bytes());
        for point in &stroke.points {
            hash.update(point.x.to_le_bytes());
            hash.update(point.y.to_le_bytes());
        }
    }
    hash.finalize().into()
}

/// Serde for point lists as deltas: each point is the difference from the one before, so the
/// varint encoding spends one byte per coordinate on ordinary freehand motion.
pub(crate) mod delta_points {
    use std::fmt;

    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};

    use super::{MAX_POINTS_PER_STROKE, Point};

    /// A list of `(dx, dy)` pairs, written without building it: boards are encoded whole for
    /// every late joiner and compaction.
    pub fn serialize<S: Serializer>(points: &[Point], serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(points.len()))?;
        let mut previous = (0i32, 0i32);
        for p in points {
            let (x, y) = (i32::from(p.x), i32::from(p.y));
            seq.serialize_element(&(x - previous.0, y - previous.1))?;
            previous = (x, y);
        }
        seq.end()
    }

    /// Reads the pairs straight into points (no intermediate list): decoding a 10,000-stroke
    /// board is mostly this loop.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Point>, D::Error> {
        deserializer.deserialize_seq(DeltaVisitor)
    }

    struct DeltaVisitor;

    impl<'de> Visitor<'de> for DeltaVisitor {
        type Value = Vec<Point>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of point deltas")
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Point>, A::Error> {
            // The length is untrusted: reserve no more than a valid stroke needs.
            let mut points = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(MAX_POINTS_PER_STROKE));
            let mut current = (0i32, 0i32);
            while let Some((dx, dy)) = seq.next_element::<(i32, i32)>()? {
                current = (current.0.saturating_add(dx), current.1.saturating_add(dy));
                let x = i16::try_from(current.0).map_err(|_| A::Error::custom("point x out of range"))?;
                let y = i16::try_from(current.1).map_err(|_| A::Error::custom("point y out of range"))?;
                points.push(Point { x, y });
            }
            Ok(points)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use proptest::prelude::*;

    use super::*;

    fn stroke(author: u32, seq: u32, x: i16) -> Stroke {
        Stroke {
            id: StrokeId { author, seq },
            color: 0xff0000,
            width: 3,
            points: vec![Point { x, y: -x }, Point { x: x + 5, y: 7 }],
        }
    }

    fn draw(board: &mut Board, actor: Actor, x: i16) -> BoardOp {
        let seq = board.next_stroke_seq(actor);
        let op = board.add_op(actor, stroke(actor, seq, x));
        board.apply(op.clone());
        op
    }

    /// Boards stored by earlier versions must load: the encoding is pinned to these bytes (a
    /// board of one stroke, so the set's hash-ordered entries have one order).
    #[test]
    fn the_stored_board_format_is_unchanged() {
        let mut board = Board::default();
        for x in [10i16, -300] {
            let seq = board.next_stroke_seq(1);
            let points = vec![Point { x, y: -x }, Point { x: x + 5, y: 7 }, Point { x: i16::MIN, y: i16::MAX }];
            let op = board.add_op(1, Stroke { id: StrokeId { author: 1, seq }, color: 0x12ab34, width: 5, points });
            board.apply(op);
        }
        let first = board.strokes().next().unwrap().id;
        board.apply(board.erase_op(&[first]).unwrap());
        let hex: String = board.encode().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "01010201010101010200010101fc34ab12000503fb5702fb58020afb4902fbb1fdfbf0ff010102");
        assert_eq!(Board::decode(&board.encode()).unwrap().digest(), board.digest());
    }

    #[test]
    fn an_erased_stroke_comes_back_with_an_undo() {
        let mut board = Board::default();
        let add = draw(&mut board, 1, 10);
        let BoardOp::Add { stroke, .. } = add else { unreachable!() };
        let erase = board.erase_op(&[stroke.id]).unwrap();
        board.apply(erase);
        assert!(board.is_empty(), "erased");
        board.apply(board.add_op(1, stroke.clone()));
        assert_eq!(board.stroke(&stroke.id), Some(&stroke), "undo of the erase restores the same stroke");
    }

    #[test]
    fn a_concurrent_readd_wins_over_an_erase_that_did_not_see_it() {
        let (mut a, mut b) = (Board::default(), Board::default());
        let add = draw(&mut a, 1, 1);
        b.apply(add.clone());
        let BoardOp::Add { stroke, .. } = add else { unreachable!() };
        let erase_a = a.erase_op(&[stroke.id]).unwrap();
        a.apply(erase_a.clone());
        // b erases and re-adds (its own undo) concurrently.
        let erase_b = b.erase_op(&[stroke.id]).unwrap();
        b.apply(erase_b.clone());
        let readd = b.add_op(2, stroke.clone());
        b.apply(readd.clone());
        for op in [erase_b, readd] {
            a.apply(op);
        }
        b.apply(erase_a);
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.len(), 1, "the re-add was not seen by a's erase, so it survives");
    }

    #[test]
    fn the_set_tells_whether_it_holds_deferred_removals() {
        let (mut author, mut other) = (Board::default(), Board::default());
        assert!(holds_no_deferred_removals(&other.set));
        let add = draw(&mut author, 1, 1);
        let BoardOp::Add { stroke, .. } = add.clone() else { unreachable!() };
        let erase = author.erase_op(&[stroke.id]).unwrap();
        // The erase overtakes the add it saw: the set defers it.
        other.apply(erase);
        assert!(!holds_no_deferred_removals(&other.set));
        other.apply(add);
        assert!(holds_no_deferred_removals(&other.set), "the add let the erase apply");
        assert_eq!(other.len(), 0, "and the erased stroke stayed out");
        assert!(other.agrees_with_its_set());
    }

    #[test]
    fn readiness_accepts_in_order_ops_and_flags_resends() {
        let mut server = Board::default();
        let mut client = Board::default();
        let first = draw(&mut client, 7, 1);
        let second = draw(&mut client, 7, 2);
        assert_eq!(server.readiness(&second, 7), Err(BoardError::OutOfOrder { expected: 1, got: 2 }));
        assert_eq!(server.readiness(&first, 7), Ok(Readiness::Ready));
        server.apply(first.clone());
        assert_eq!(server.readiness(&first, 7), Ok(Readiness::Duplicate), "a resend is a duplicate");
        assert_eq!(server.readiness(&second, 8), Err(BoardError::NotYourDot));
    }

    #[test]
    fn nobody_can_draw_a_new_stroke_under_another_authors_name() {
        let server = Board::default();
        let forged = server.add_op(9, stroke(3, 0, 1));
        assert_eq!(server.readiness(&forged, 9), Err(BoardError::NotYourStroke));
    }

    #[test]
    fn an_erase_of_unseen_edits_is_not_ready_on_the_server() {
        let mut client = Board::default();
        let add = draw(&mut client, 4, 1);
        let BoardOp::Add { stroke, .. } = add else { unreachable!() };
        let erase = client.erase_op(&[stroke.id]).unwrap();
        assert_eq!(Board::default().readiness(&erase, 5), Err(BoardError::CausallyAhead));
    }

    #[test]
    fn shape_limits_are_enforced() {
        let mut long = stroke(1, 0, 0);
        long.points = vec![Point { x: 0, y: 0 }; MAX_POINTS_PER_STROKE + 1];
        let board = Board::default();
        assert_eq!(Board::validate(&board.add_op(1, long)), Err(BoardError::TooManyPoints));
        let mut wide = stroke(1, 0, 0);
        wide.width = 0;
        assert_eq!(Board::validate(&board.add_op(1, wide)), Err(BoardError::BadWidth));
    }

    #[test]
    fn points_encode_as_small_deltas_and_extremes_survive() {
        let mut s = stroke(1, 0, 0);
        s.points = (0..32).map(|i| Point { x: 1000 + i * 3, y: -2000 - i * 2 }).collect();
        let encoded = crate::codec::encode(&s);
        assert!(encoded.len() < 32 * 2 + 20, "32 freehand points take about two bytes each: {} bytes", encoded.len());
        s.points = vec![Point { x: i16::MIN, y: i16::MAX }, Point { x: i16::MAX, y: i16::MIN }];
        let back: Stroke = crate::codec::decode_board(&crate::codec::encode(&s)).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn deltas_that_leave_the_i16_range_are_rejected() {
        // A hand-made encoding: id (1, 0), colour 0, width 1, one point at delta (40000, 0).
        let mut bytes = crate::codec::encode(&stroke(1, 0, 0));
        let header = crate::codec::encode(&(StrokeId { author: 1, seq: 0 }, 0xff0000u32, 3u8));
        bytes.truncate(header.len());
        bytes.extend(crate::codec::encode(&vec![(40_000i32, 0i32)]));
        assert!(crate::codec::decode_board::<Stroke>(&bytes).is_err());
    }

    #[test]
    fn garbage_never_decodes_into_a_board_with_a_panic() {
        for len in 0..64u8 {
            let bytes: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37).wrapping_add(len)).collect();
            let _ = Board::decode(&bytes);
        }
    }

    /// One step of a randomly interleaved run.
    #[derive(Debug, Clone)]
    enum Step {
        /// Replica draws a new stroke.
        Draw(usize),
        /// Replica erases the `pick`-th stroke it sees.
        Erase(usize, usize),
        /// Replica re-adds a stroke it erased earlier (its undo).
        Undo(usize),
        /// `to` receives the next op from `from`'s outbox (per-author FIFO).
        Deliver { to: usize, from: usize },
        /// `to` receives again the last op it got from `from` (a resend).
        Duplicate { to: usize, from: usize },
        /// Replica restarts from its encoded snapshot.
        Restart(usize),
    }

    const REPLICAS: usize = 4;

    fn any_step() -> impl Strategy<Value = Step> {
        let r = 0..REPLICAS;
        prop_oneof![
            3 => r.clone().prop_map(Step::Draw),
            2 => (r.clone(), any::<usize>()).prop_map(|(r, p)| Step::Erase(r, p)),
            1 => r.clone().prop_map(Step::Undo),
            6 => (r.clone(), r.clone()).prop_map(|(to, from)| Step::Deliver { to, from }),
            1 => (r.clone(), r.clone()).prop_map(|(to, from)| Step::Duplicate { to, from }),
            1 => r.prop_map(Step::Restart),
        ]
    }

    struct Replica {
        board: Board,
        actor: Actor,
        /// Ops this replica made, in order.
        outbox: Vec<BoardOp>,
        /// How many of each other replica's ops it has received.
        received: [usize; REPLICAS],
        erased: VecDeque<Stroke>,
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn replicas_converge_whatever_the_order_duplication_delay_or_restarts(steps in proptest::collection::vec(any_step(), 0..120)) {
            let mut replicas: Vec<Replica> = (0..REPLICAS)
                .map(|i| Replica { board: Board::default(), actor: i as Actor + 1, outbox: Vec::new(), received: [0; REPLICAS], erased: VecDeque::new() })
                .collect();
            let mut x = 0i16;
            for step in steps {
                match step {
                    Step::Draw(r) => {
                        x = x.wrapping_add(17);
                        let replica = &mut replicas[r];
                        let op = draw(&mut replica.board, replica.actor, x);
                        replica.outbox.push(op);
                    }
                    Step::Erase(r, pick) => {
                        let replica = &mut replicas[r];
                        let ids: Vec<StrokeId> = replica.board.strokes().map(|s| s.id).collect();
                        if ids.is_empty() { continue; }
                        let id = ids[pick % ids.len()];
                        let body = replica.board.stroke(&id).cloned();
                        if let Some(op) = replica.board.erase_op(&[id]) {
                            replica.board.apply(op.clone());
                            replica.outbox.push(op);
                            replica.erased.extend(body);
                        }
                    }
                    Step::Undo(r) => {
                        let replica = &mut replicas[r];
                        if let Some(stroke) = replica.erased.pop_back() {
                            let op = replica.board.add_op(replica.actor, stroke);
                            replica.board.apply(op.clone());
                            replica.outbox.push(op);
                        }
                    }
                    Step::Deliver { to, from } if to != from => {
                        let next = replicas[to].received[from];
                        if let Some(op) = replicas[from].outbox.get(next).cloned() {
                            replicas[to].board.apply(op);
                            replicas[to].received[from] += 1;
                        }
                    }
                    Step::Duplicate { to, from } if to != from => {
                        let last = replicas[to].received[from];
                        if last > 0 {
                            let op = replicas[from].outbox[last - 1].clone();
                            replicas[to].board.apply(op);
                        }
                    }
                    Step::Deliver { .. } | Step::Duplicate { .. } => {}
                    Step::Restart(r) => {
                        let bytes = replicas[r].board.encode();
                        replicas[r].board = Board::decode(&bytes).expect("a replica's own snapshot decodes");
                    }
                }
                for replica in &replicas {
                    prop_assert!(replica.board.agrees_with_its_set(), "the clock and bodies kept beside the set match it");
                }
            }
            // Deliver everything still in flight.
            for to in 0..REPLICAS {
                for from in 0..REPLICAS {
                    if to == from { continue; }
                    let pending: Vec<BoardOp> = replicas[from].outbox[replicas[to].received[from]..].to_vec();
                    for op in pending {
                        replicas[to].board.apply(op);
                    }
                }
            }
            let digest = replicas[0].board.digest();
            for replica in &replicas[1..] {
                prop_assert_eq!(replica.board.digest(), digest, "replicas that saw the same ops hold the same board");
            }
            // State-based merge agrees with op-based delivery.
            let mut merged = Board::default();
            for replica in &replicas {
                merged.merge(replica.board.clone());
            }
            prop_assert_eq!(merged.digest(), digest);
        }
    }
}
