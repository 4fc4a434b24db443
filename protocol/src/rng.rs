//! `mulberry32`: the small seeded PRNG the simulation and the benchmark workloads share (defined
//! in WORKLOADS.md), so the same seed gives the same numbers on every platform.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mulberry32 {
    state: u32,
}

impl Mulberry32 {
    pub fn new(seed: u32) -> Self {
        Self { state: seed }
    }

    /// The raw 32-bit output.
    pub fn next_u32(&mut self) -> u32 {
        self.state = self.state.wrapping_add(0x6D2B_79F5);
        let mut t = self.state;
        t = (t ^ (t >> 15)).wrapping_mul(t | 1);
        t ^= t.wrapping_add((t ^ (t >> 7)).wrapping_mul(t | 61));
        t ^ (t >> 14)
    }

    /// A float in [0, 1), computed in f64 as the reference JavaScript does.
    pub fn next_f64(&mut self) -> f64 {
        f64::from(self.next_u32()) / 4_294_967_296.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_javascript_sequence() {
        // First outputs of the reference JS mulberry32(42), computed with Math.imul arithmetic.
        let mut rng = Mulberry32::new(42);
        let first: Vec<u32> = (0..3).map(|_| rng.next_u32()).collect();
        assert_eq!(first, vec![2_581_720_956, 1_925_393_290, 3_661_312_704]);
    }

    #[test]
    fn floats_stay_in_the_unit_interval() {
        let mut rng = Mulberry32::new(7);
        assert!((0..10_000).map(|_| rng.next_f64()).all(|f| (0.0..1.0).contains(&f)));
    }
}
