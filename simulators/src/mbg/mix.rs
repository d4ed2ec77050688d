//! Deterministic pseudo-random numbers as pure functions of a seed and a key, so a
//! meter's consumption in a given hour is the same whoever asks, and in whatever order.

/// The SplitMix64 finaliser: a well-spread 64-bit hash of `x`.
pub(crate) fn splitmix(x: u64) -> u64 {
    let mut x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub(crate) fn mix(seed: u64, key: u64) -> u64 {
    splitmix(seed ^ splitmix(key))
}

/// Uniform in [0, 1), from `seed` and `key`.
pub(crate) fn unit(seed: u64, key: u64) -> f64 {
    (mix(seed, key) >> 11) as f64 / (1u64 << 53) as f64
}

/// A stream of draws, for the generators (population, scenarios).
#[derive(Debug, Clone)]
pub(crate) struct Draws {
    seed: u64,
    count: u64,
}

impl Draws {
    pub(crate) fn new(seed: u64) -> Draws {
        Draws { seed, count: 0 }
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.count += 1;
        mix(self.seed, self.count)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [low, high).
    pub(crate) fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// Uniform in 0..n (0 when n is 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_repeatable_and_spread() {
        let a: Vec<u64> = (0..5).map(|k| mix(1, k)).collect();
        let b: Vec<u64> = (0..5).map(|k| mix(1, k)).collect();
        assert_eq!(a, b);
        assert_ne!(mix(1, 0), mix(2, 0));
        let mean = (0..10_000).map(|k| unit(3, k)).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02, "{mean}");
        let mut d = Draws::new(9);
        assert!((0..100).all(|_| d.below(7) < 7));
    }
}
