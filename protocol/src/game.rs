//! The deterministic game rules shared by the server simulation and client prediction: pure
//! functions of (state, input, dt), plain f32 arithmetic with no transcendental functions, so
//! every platform computes bit-identical results.

use serde::{Deserialize, Serialize};

use crate::rng::Mulberry32;

/// The parameters of a room's game. Sent in `Welcome` so a client predicts with exactly the
/// room's rules.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rules {
    pub world_width: f32,
    pub world_height: f32,
    /// Units per second at full input.
    pub player_speed: f32,
    pub player_radius: f32,
    pub orb_radius: f32,
    pub orb_count: u32,
    /// Seed of the orb layout (`x = rng*width`, then `y`, per orb) and of orb respawns.
    pub orb_seed: u32,
    /// Whether touching an orb collects it (scores and moves it). The benchmark's arena keeps
    /// orbs static.
    pub orbs_collectable: bool,
}

impl Rules {
    /// The game people play.
    pub const GAME: Rules = Rules {
        world_width: 2000.0,
        world_height: 2000.0,
        player_speed: 200.0,
        player_radius: 16.0,
        orb_radius: 8.0,
        orb_count: 100,
        orb_seed: 42,
        orbs_collectable: true,
    };

    /// The `arena` benchmark workload (WORKLOADS.md): the same world with static orbs.
    pub const ARENA_BENCHMARK: Rules = Rules { orbs_collectable: false, ..Rules::GAME };

    /// A uniformly random point inside the world.
    pub fn random_point(&self, rng: &mut Mulberry32) -> (f32, f32) {
        let x = rng.next_f64() * f64::from(self.world_width);
        let y = rng.next_f64() * f64::from(self.world_height);
        (x as f32, y as f32)
    }

    /// The initial orb layout: orb `i` at the `i`-th point drawn from `mulberry32(orb_seed)`.
    pub fn initial_orbs(&self, rng: &mut Mulberry32) -> Vec<(f32, f32)> {
        (0..self.orb_count).map(|_| self.random_point(rng)).collect()
    }
}

/// The unit vector of a held direction: only the signs of `dx`/`dy` count, so a forged input of
/// (127, 127) moves exactly as fast as an honest (1, 1).
pub fn direction(dx: i8, dy: i8) -> (f32, f32) {
    let (sx, sy) = (f32::from(dx.signum()), f32::from(dy.signum()));
    if sx != 0.0 && sy != 0.0 {
        // 1/sqrt(2), written out so no platform's sqrt is involved.
        const DIAGONAL: f32 = std::f32::consts::FRAC_1_SQRT_2;
        (sx * DIAGONAL, sy * DIAGONAL)
    } else {
        (sx, sy)
    }
}

/// Moves a player for `dt` seconds holding direction (`dx`, `dy`), clamped to the world.
pub fn step_position(pos: (f32, f32), dx: i8, dy: i8, dt: f32, rules: &Rules) -> (f32, f32) {
    let (ux, uy) = direction(dx, dy);
    let x = (pos.0 + ux * rules.player_speed * dt).clamp(0.0, rules.world_width);
    let y = (pos.1 + uy * rules.player_speed * dt).clamp(0.0, rules.world_height);
    (x, y)
}

/// Whether a player at `player` touches an orb at `orb`.
pub fn touches_orb(player: (f32, f32), orb: (f32, f32), rules: &Rules) -> bool {
    let (ex, ey) = (player.0 - orb.0, player.1 - orb.1);
    let reach = rules.player_radius + rules.orb_radius;
    ex * ex + ey * ey <= reach * reach
}

/// A player's colour (0xRRGGBB), from a palette chosen to read well on the dark arena.
pub fn player_color(player_id: u32) -> u32 {
    const PALETTE: [u32; 12] = [
        0xE6194B, 0x3CB44B, 0x7FD4FF, 0x4363D8, 0xF58231, 0x911EB4, 0x46F0F0, 0xF032E6, 0xBCF60C, 0xFABEBE, 0x008080,
        0xE6BEFF,
    ];
    PALETTE[player_id as usize % PALETTE.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const DT: f32 = 1.0 / 30.0;

    #[test]
    fn a_player_moves_at_the_rules_speed() {
        let (x, y) = step_position((100.0, 100.0), 1, 0, DT, &Rules::GAME);
        assert!((x - (100.0 + 200.0 / 30.0)).abs() < 1e-4, "one tick right moves speed*dt");
        assert_eq!(y, 100.0, "no vertical input, no vertical motion");
    }

    #[test]
    fn diagonal_movement_is_no_faster_than_straight() {
        let (x, y) = step_position((500.0, 500.0), 1, 1, 1.0, &Rules::GAME);
        let distance = ((x - 500.0).powi(2) + (y - 500.0).powi(2)).sqrt();
        assert!((distance - 200.0).abs() < 1e-3, "diagonal distance {distance} must equal speed");
    }

    #[test]
    fn forged_input_magnitudes_move_no_faster_than_honest_ones() {
        let honest = step_position((500.0, 500.0), 1, -1, DT, &Rules::GAME);
        let forged = step_position((500.0, 500.0), 127, -128, DT, &Rules::GAME);
        assert_eq!(honest, forged);
    }

    #[test]
    fn players_stay_inside_the_world() {
        let rules = Rules::GAME;
        assert_eq!(step_position((1.0, 1999.0), -1, 1, 1.0, &rules), (0.0, 2000.0));
    }

    #[test]
    fn zero_input_stands_still() {
        assert_eq!(step_position((3.0, 4.0), 0, 0, DT, &Rules::GAME), (3.0, 4.0));
    }

    #[test]
    fn orb_contact_uses_both_radii() {
        let rules = Rules::GAME;
        assert!(touches_orb((0.0, 0.0), (24.0, 0.0), &rules));
        assert!(!touches_orb((0.0, 0.0), (24.1, 0.0), &rules));
    }

    #[test]
    fn the_orb_layout_is_the_workloads() {
        let orbs = Rules::ARENA_BENCHMARK.initial_orbs(&mut Mulberry32::new(42));
        assert_eq!(orbs.len(), 100);
        let first_x = (2_581_720_956f64 / 4_294_967_296.0 * 2000.0) as f32;
        assert_eq!(orbs[0].0, first_x, "orb 0's x is the first draw of mulberry32(42) × 2000");
    }
}
