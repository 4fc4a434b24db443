//! ECS components of the simulation: nouns only; the systems that act on them are in `systems`.

use bevy_ecs::prelude::*;

/// The network-visible id of a player entity.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlayerId(pub u32);

#[derive(Component, Debug, Clone, Copy, PartialEq)]
pub struct Position {
    pub x: f32,
    pub y: f32,
}

/// Inputs received and not yet applied, oldest first, and the ticks of movement the player has
/// earned: one per tick, saved up to a cap, so inputs that arrive bunched by network jitter are
/// all applied at once while a client sending faster than the tick rate moves no faster than an
/// honest one.
#[derive(Component, Debug, Clone, PartialEq, Eq, Default)]
pub struct InputQueue {
    pub pending: std::collections::VecDeque<(u32, i8, i8)>,
    pub credit: u8,
    /// The fewest inputs left waiting after a tick, over the ticks of this `STANDING_WINDOW`.
    pub fewest_left: u8,
    /// Ticks into the current window.
    pub window_ticks: u8,
}

/// The held directions to move through this tick, one tick of movement each, in order.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Steps {
    pub dirs: [(i8, i8); super::MAX_STEPS_PER_TICK],
    pub len: u8,
}

/// The newest input applied, echoed in snapshots so clients know what the state reflects.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastInputSeq(pub u32);

#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Score(pub u32);

/// A collectable orb.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Orb {
    pub id: u32,
}
