//! Interest management and the per-client snapshot budget: which players each member is sent,
//! and with which values, before `snapshot::encode` packs them against its baseline.
//!
//! Views are per cell, not per player: the world is cut into squares half the view distance
//! wide (`cell_side`), and a member is sent the view of the cell it stands in: every player
//! within `view_distance` of any point of that cell. That is everyone within `view_distance` of
//! the member (and never anyone beyond `view_distance × 1.5 + VIEW_HYSTERESIS`), and it lets every
//! member of a cell share one set, so one encoding per (cell, baseline) serves them all: interest
//! management keeps "encode once, send many". A player already in a cell's view leaves it only
//! beyond a further `VIEW_HYSTERESIS`, so a player on the edge does not flicker in and out.
//!
//! The byte budget is shared per cell too. When a cell's view would cost more than a tick's
//! budget, players compete for it by priority accumulators (Gaffer on Games, "state
//! synchronization"): each tick every stale player of the cell gains `nearness × (1 + how much
//! it changed)`, the highest are sent fresh and reset to zero, the others keep the value the
//! cell's members were last shown. Players standing in the cell (every member's own player among
//! them) are always fresh. Since every stale player gains each tick and at least one is sent per
//! tick, none starves. A member whose deltas still overrun its budget (an old baseline, a
//! crowded cell) skips ticks until its credit is back: its rate drops, its bytes do not grow.
//! Budgeting per member instead (each member its own priorities and set) gives every member a
//! distinct set, one encoding each, and collapses a room of 1,000 (docs/bench/HISTORY.md).

mod member;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use easel_protocol::snapshot::{self, NetPlayer, POSITION_STEPS_PER_UNIT};

use crate::config::Interest;
pub use member::{Encodings, MemberView};

/// A player already in a cell's view stays until it is this many world units further out.
pub const VIEW_HYSTERESIS: f32 = 100.0;

/// The side of the cells that share a budget when everyone sees everyone (world units): a
/// quarter of a screen, so "nearest first" means near the member.
const FULL_VIEW_BUDGET_CELL: f32 = 250.0;

/// The side of the squares that share a view, in wire units: half the view distance. Smaller
/// cells send fewer extra (off-screen) players but make more distinct views, and each distinct
/// view costs an encoding per tick; at half the view distance the default game world is 4 × 4
/// cells, and a view is never more than 1.5 times the view distance.
fn cell_side(interest: &Interest) -> u32 {
    let units = if interest.view_distance > 0.0 { interest.view_distance / 2.0 } else { FULL_VIEW_BUDGET_CELL };
    wire_distance(units).max(1)
}

/// About one tick of movement at the game's speed, in wire units (200 units/s ÷ 30 Hz × 8): the
/// scale of "how much it changed" in a priority.
const CHANGE_SCALE: f32 = 64.0;

/// The distance (wire units: 250 world units, a quarter of a screen) at which a player's priority
/// is half that of one right next to the cell.
const NEARNESS_SCALE: f32 = 2000.0;

/// Bytes of a snapshot message around its entity bits (tag, tick, baseline, length).
const MESSAGE_OVERHEAD: i64 = 12;

/// The share of a tick's budget a cell's view is sized to, counted against the view of the tick
/// before. The rest pays for what that count leaves out: a member whose last snapshot was not
/// delivered yet (over WebSocket, not yet written; elsewhere, not yet acknowledged) gets a delta
/// spanning several ticks' changes, and one that skipped a tick spans more.
const CELL_SHARE_PERCENT: i64 = 80;

/// A set of players sorted by id, shared by every member sent it.
pub type Players = Arc<Vec<NetPlayer>>;

/// What a cell's members were shown, and the priority its stale players have built up.
#[derive(Clone, Default)]
pub struct CellView {
    /// Sorted by id: each player fresh, or as last shown (stale), or absent (new, not sent yet).
    shown: Players,
    /// Built-up priority of each player left stale or unsent, sorted by id.
    priority: Vec<(u32, f32)>,
}

impl CellView {
    /// Whether some player in view was left stale or unsent: the cell needs snapshots until it
    /// has caught up, even if nothing moves.
    pub fn behind(&self) -> bool {
        !self.priority.is_empty()
    }
}

/// The views of the cells, by cell, as a publish leaves them (the next one's hysteresis, stale
/// values and priorities).
pub type CellViews = HashMap<(u32, u32), CellView>;

/// The world of one tick: players sorted by id, bucketed by cell, and the cells' views as they
/// are asked for.
pub struct Frame {
    pub tick: u32,
    pub players: Players,
    interest: Interest,
    /// Snapshot bits a member may be sent per tick (0: unlimited).
    budget_bits: i64,
    /// Indices into `players` by cell, row after row of `columns` (empty when every member is
    /// sent the same: full visibility without a budget).
    cells: Vec<Vec<u32>>,
    columns: u32,
    previous: CellViews,
    views: RefCell<CellViews>,
}

impl Frame {
    /// `previous` is what the last frame's `into_views` returned.
    pub fn new(tick: u32, players: Players, interest: &Interest, tick_rate: u16, previous: CellViews) -> Self {
        let (mut cells, mut columns) = (Vec::new(), 0);
        if interest.view_distance > 0.0 || interest.snapshot_budget > 0 {
            let corner = players.iter().fold((0, 0), |(x, y), p| {
                let (cx, cy) = cell_of(p, interest);
                (x.max(cx), y.max(cy))
            });
            columns = corner.0 + 1;
            cells = vec![Vec::new(); (columns * (corner.1 + 1)) as usize];
            for (index, p) in players.iter().enumerate() {
                let (cx, cy) = cell_of(p, interest);
                cells[(cy * columns + cx) as usize].push(index as u32);
            }
        }
        let budget_bits = i64::from(interest.snapshot_budget) * 8 / i64::from(tick_rate.max(1));
        Self { tick, players, interest: *interest, budget_bits, cells, columns, previous, views: RefCell::default() }
    }

    /// The cells' views computed for this frame, for the next one.
    pub fn into_views(self) -> CellViews {
        self.views.into_inner()
    }

    /// The players `me` should be sent: everyone with full visibility and no budget, else its
    /// cell's view within the budget. Everyone sent the same set shares one `Arc`.
    pub fn visible_to(&self, me: u32) -> Players {
        if self.cells.is_empty() {
            return Arc::clone(&self.players);
        }
        let Some(own) = find(&self.players, me) else { return Arc::new(Vec::new()) };
        let cell = cell_of(own, &self.interest);
        if let Some(view) = self.views.borrow().get(&cell) {
            return Arc::clone(&view.shown);
        }
        let view = self.cell_view(cell);
        let shown = Arc::clone(&view.shown);
        self.views.borrow_mut().insert(cell, view);
        shown
    }

    fn cell_view(&self, (cx, cy): (u32, u32)) -> CellView {
        let side = cell_side(&self.interest);
        let enter = wire_distance(self.interest.view_distance);
        let leave = wire_distance(self.interest.view_distance + VIEW_HYSTERESIS);
        // Distance from the cell's square [low, low + side) on one axis.
        let axis = |v: u16, low: u32| {
            let v = u32::from(v);
            if v < low { low - v } else { v.saturating_sub(low + side - 1) }
        };
        let distance = |p: &NetPlayer| axis(p.x, cx * side).max(axis(p.y, cy * side));
        let previous = self.previous.get(&(cx, cy));
        let in_view: Vec<u32> = if self.interest.view_distance > 0.0 {
            // Marked by index (index order is id order), then read out in order: no sort, and
            // the hysteresis check is a walk along the previous view rather than a search.
            let mut near = IndexSet::new(self.players.len());
            let mut band = IndexSet::new(self.players.len());
            let reach = leave.div_ceil(side);
            let rows = self.cells.len() as u32 / self.columns.max(1);
            for y in cy.saturating_sub(reach)..=(cy + reach).min(rows.saturating_sub(1)) {
                for x in cx.saturating_sub(reach)..=(cx + reach).min(self.columns.saturating_sub(1)) {
                    for &i in &self.cells[(y * self.columns + x) as usize] {
                        let d = distance(&self.players[i as usize]);
                        if d <= enter {
                            near.insert(i);
                        } else if d <= leave && previous.is_some() {
                            band.insert(i);
                        }
                    }
                }
            }
            let last_shown = previous.map_or(&[][..], |v| &v.shown[..]);
            let mut shown_at = 0;
            near.union(&band)
                .filter(|&i| {
                    near.contains(i) || seek(last_shown, &mut shown_at, self.players[i as usize].id, |p| p.id).is_some()
                })
                .collect()
        } else {
            (0..self.players.len() as u32).collect()
        };
        // A cell nobody stood in last tick starts fresh: its members' clients hold the players
        // (from the cells they came from) that a budget would otherwise leave unsent, as if new.
        // The overrun is one tick's, and their credit pays for it.
        if let Some(previous) = previous.filter(|_| self.budget_bits > 0)
            && let Some(view) = self.within_budget(&in_view, previous, distance)
        {
            return view;
        }
        let shown = if in_view.len() == self.players.len() {
            Arc::clone(&self.players)
        } else {
            Arc::new(in_view.into_iter().map(|i| self.players[i as usize]).collect())
        };
        CellView { shown, priority: Vec::new() }
    }

    /// The cell's view within a tick's budget, or `None` when all of `in_view` (indices into
    /// `players`, ascending) fits fresh. Costs are counted against what the cell was shown last
    /// tick, the baseline of every member keeping up: players standing in the cell and players
    /// unchanged are always sent fresh, then stale ones by priority (at least one per tick); the
    /// rest keep the value last shown, or stay unsent if they are new.
    fn within_budget(
        &self,
        in_view: &[u32],
        previous: &CellView,
        distance: impl Fn(&NetPlayer) -> u32,
    ) -> Option<CellView> {
        let (last_shown, last_priority) = (&previous.shown, &previous.priority);
        let (mut shown_at, mut priority_at) = (0, 0);
        let mut spent_bits = MESSAGE_OVERHEAD * 8;
        let mut still_shown = 0;
        // (priority, position in in_view, the value shown, extra bits to send it fresh)
        let mut stale: Vec<(f32, usize, Option<NetPlayer>, i64)> = Vec::new();
        // A new player's id is written as a gap from the previous new one; the previous one in
        // view is near enough for a cost.
        let mut previous_id = 0;
        for (position, &index) in in_view.iter().enumerate() {
            let player = self.players[index as usize];
            let last = seek(last_shown, &mut shown_at, player.id, |p| p.id).copied();
            still_shown += usize::from(last.is_some());
            let fresh_bits = i64::from(snapshot::entity_bits(&player, last.as_ref(), 1, previous_id));
            previous_id = player.id;
            let d = distance(&player);
            if d == 0 || last == Some(player) {
                spent_bits += fresh_bits;
                continue;
            }
            let change = match last {
                Some(last) => chebyshev(&player, &last) as f32 / CHANGE_SCALE + f32::from(player.score != last.score),
                None => 4.0,
            };
            let nearness = 1.0 / (1.0 + d as f32 / NEARNESS_SCALE);
            let built_up = seek(last_priority, &mut priority_at, player.id, |p| p.0).map_or(0.0, |p| p.1);
            // Kept stale, a player costs the "unchanged" flags; unsent, nothing.
            let stale_bits = if last.is_some() { 2 } else { 0 };
            spent_bits += stale_bits;
            stale.push((built_up + nearness * (1.0 + change), position, last, fresh_bits - stale_bits));
        }
        // Each player that left costs its "gone" flag.
        spent_bits += (last_shown.len() - still_shown) as i64;
        let allowance_bits = self.budget_bits * CELL_SHARE_PERCENT / 100;
        if spent_bits + stale.iter().map(|s| s.3).sum::<i64>() <= allowance_bits {
            return None;
        }
        stale.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
        // By position in view: the value shown and the priority of each player held back.
        let mut held: Vec<Option<(Option<NetPlayer>, f32)>> = vec![None; in_view.len()];
        for (rank, &(priority, position, last, extra)) in stale.iter().enumerate() {
            if rank == 0 || spent_bits + extra <= allowance_bits {
                spent_bits += extra;
            } else {
                held[position] = Some((last, priority));
            }
        }
        let mut priority = Vec::new();
        let mut shown = Vec::with_capacity(in_view.len());
        for (&index, held) in in_view.iter().zip(held) {
            let player = self.players[index as usize];
            match held {
                Some((last, built_up)) => {
                    priority.push((player.id, built_up));
                    shown.extend(last);
                }
                None => shown.push(player),
            }
        }
        Some(CellView { shown: Arc::new(shown), priority })
    }
}

/// A set of indices into a frame's players.
struct IndexSet(Vec<u64>);

impl IndexSet {
    fn new(len: usize) -> Self {
        Self(vec![0; len.div_ceil(64)])
    }

    fn insert(&mut self, i: u32) {
        self.0[i as usize / 64] |= 1 << (i % 64);
    }

    fn contains(&self, i: u32) -> bool {
        self.0[i as usize / 64] & (1 << (i % 64)) != 0
    }

    /// The indices in either set, ascending.
    fn union<'a>(&'a self, other: &'a IndexSet) -> impl Iterator<Item = u32> + 'a {
        self.0.iter().zip(&other.0).enumerate().flat_map(|(word, (a, b))| {
            let mut bits = a | b;
            std::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let bit = bits.trailing_zeros();
                    bits &= bits - 1;
                    word as u32 * 64 + bit
                })
            })
        })
    }
}

/// The entry of `list` (sorted by `key`) for `id`, moving `at` forward to it: a walk alongside
/// another list sorted the same way, asked for ascending ids.
fn seek<'a, T>(list: &'a [T], at: &mut usize, id: u32, key: impl Fn(&T) -> u32) -> Option<&'a T> {
    while list.get(*at).is_some_and(|entry| key(entry) < id) {
        *at += 1;
    }
    list.get(*at).filter(|entry| key(entry) == id)
}

fn cell_of(p: &NetPlayer, interest: &Interest) -> (u32, u32) {
    let side = cell_side(interest);
    (u32::from(p.x) / side, u32::from(p.y) / side)
}

/// World units to wire units (eighths).
fn wire_distance(units: f32) -> u32 {
    (units * POSITION_STEPS_PER_UNIT).round() as u32
}

fn chebyshev(a: &NetPlayer, b: &NetPlayer) -> u32 {
    u32::from(a.x.abs_diff(b.x)).max(u32::from(a.y.abs_diff(b.y)))
}

fn find(players: &[NetPlayer], id: u32) -> Option<&NetPlayer> {
    players.binary_search_by_key(&id, |p| p.id).ok().map(|at| &players[at])
}

#[cfg(test)]
mod tests;
