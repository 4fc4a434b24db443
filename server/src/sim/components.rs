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

/// The direction the player last asked for; held until a newer input arrives.
#[derive(Component, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Heading {
    pub dx: i8,
    pub dy: i8,
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
