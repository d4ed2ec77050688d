//! A meter's index as a function of virtual time. Consumption is integrated hour by
//! hour, and whole hours are summed as integers (thousandths of a resolution step), so
//! the index at a given instant does not depend on when, or how often, the meter was
//! read before. A cache of the totals up to the last hour asked for makes the next
//! reading add only the hours in between. Scenarios change the physics through
//! [`Effect`]s.

use super::calendar::HOUR;
use super::meter::{scale, BusMeter, MeterValue};

/// Thousandths of a resolution step per step.
const MILLI: i64 = 1000;

/// A change to a meter's physics, from a scenario. Periods are [from, until).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Effect {
    /// Water flows continuously, day and night, on top of the household's use.
    Leak {
        per_hour: f64,
        from: i64,
        until: Option<i64>,
    },
    /// The household's use is multiplied.
    Scale {
        factor: f64,
        from: i64,
        until: Option<i64>,
    },
    /// The counter does not move although water flows: what flows is never counted.
    Stuck { from: i64, until: Option<i64> },
    /// The index drops by `raw` steps at `at`.
    Drop { at: i64, raw: i64 },
    /// The index reads `raw` steps more, always (a meter installed near the top).
    Offset { raw: i64 },
}

impl Effect {
    fn bounds(&self) -> [Option<i64>; 2] {
        match *self {
            Effect::Leak { from, until, .. }
            | Effect::Scale { from, until, .. }
            | Effect::Stuck { from, until } => [Some(from), until],
            Effect::Drop { .. } | Effect::Offset { .. } => [None, None],
        }
    }

    fn active(&self, t: i64) -> bool {
        match self.bounds() {
            [Some(from), until] => from <= t && until.is_none_or(|u| t < u),
            _ => false,
        }
    }
}

/// Totals since the meter's start, in thousandths of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Totals {
    /// What flowed through the meter.
    pub real: i64,
    /// What the counter counted.
    pub counted: i64,
}

impl Totals {
    fn add(&mut self, other: Totals, sign: i64) {
        self.real += sign * other.real;
        self.counted += sign * other.counted;
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Physics {
    spec: BusMeter,
    effects: Vec<Effect>,
    initial_raw: i64,
    /// Thousandths of a step per unit.
    milli_per_unit: f64,
    /// Totals of the whole hours from the start hour to `cache_hour` (excluded).
    cache_hour: i64,
    cache: Totals,
}

impl Physics {
    pub(crate) fn new(spec: BusMeter) -> Physics {
        let initial_raw = spec.to_raw(spec.initial);
        let milli_per_unit = MILLI as f64 / scale(1, spec.exponent);
        Physics {
            cache_hour: spec.start.div_euclid(HOUR),
            cache: Totals::default(),
            effects: Vec::new(),
            initial_raw,
            milli_per_unit,
            spec,
        }
    }

    pub(crate) fn spec(&self) -> &BusMeter {
        &self.spec
    }

    /// Adds an effect; the cache restarts, since the past may have changed.
    pub(crate) fn add_effect(&mut self, effect: Effect) {
        self.effects.push(effect);
        self.cache_hour = self.spec.start.div_euclid(HOUR);
        self.cache = Totals::default();
    }

    /// Totals at `t`: the cache moves to t's hour, then the part of that hour is added.
    pub(crate) fn totals(&mut self, t: i64) -> Totals {
        if t <= self.spec.start {
            return Totals::default();
        }
        let hour = t.div_euclid(HOUR);
        while self.cache_hour < hour {
            let whole = self.whole_hour(self.cache_hour);
            self.cache.add(whole, 1);
            self.cache_hour += 1;
        }
        while self.cache_hour > hour {
            self.cache_hour -= 1;
            let whole = self.whole_hour(self.cache_hour);
            self.cache.add(whole, -1);
        }
        let mut totals = self.cache;
        totals.add(self.part(hour, hour * HOUR, t), 1);
        totals
    }

    /// The counter without wrapping: initial + offsets + counted − drops.
    pub(crate) fn unwrapped(&mut self, t: i64) -> i64 {
        let counted = self.totals(t).counted.div_euclid(MILLI);
        let adjust: i64 = self
            .effects
            .iter()
            .map(|e| match *e {
                Effect::Offset { raw } => raw,
                Effect::Drop { at, raw } if at <= t => -raw,
                _ => 0,
            })
            .sum();
        self.initial_raw + counted + adjust
    }

    /// The index the meter shows at `t`.
    pub(crate) fn index(&mut self, t: i64) -> MeterValue {
        let raw = self.unwrapped(t).rem_euclid(self.spec.modulus());
        self.spec.value(raw)
    }

    /// What flowed through the meter over [from, to), in units.
    pub(crate) fn real_consumption(&mut self, from: i64, to: i64) -> f64 {
        let real = self.totals(to).real - self.totals(from).real;
        real as f64 / self.milli_per_unit
    }

    fn whole_hour(&self, hour: i64) -> Totals {
        self.part(hour, hour * HOUR, (hour + 1) * HOUR)
    }

    /// Totals over [from, to) within `hour`, from the meter's start on, rounded.
    fn part(&self, hour: i64, from: i64, to: i64) -> Totals {
        let from = from.max(self.spec.start);
        if to <= from {
            return Totals::default();
        }
        let (real, counted) = self.integral(hour, from, to);
        Totals {
            real: real.round() as i64,
            counted: counted.round() as i64,
        }
    }

    /// (flowed, counted) over [from, to) within `hour`, in thousandths of a step. The
    /// household's rate is constant within an hour; effects start and end anywhere.
    fn integral(&self, hour: i64, from: i64, to: i64) -> (f64, f64) {
        let base = self.spec.profile.rate(self.spec.seed, hour) * self.milli_per_unit;
        // Most meters have no scenario: no cutting, no allocation.
        if self.effects.is_empty() {
            let flowed = base * (to - from) as f64 / HOUR as f64;
            return (flowed, flowed);
        }
        let mut cuts = vec![from, to];
        cuts.extend(
            self.effects
                .iter()
                .flat_map(Effect::bounds)
                .flatten()
                .filter(|&c| from < c && c < to),
        );
        if cuts.len() == 2 && !self.effects.iter().any(|e| e.active(from)) {
            let flowed = base * (to - from) as f64 / HOUR as f64;
            return (flowed, flowed);
        }
        cuts.sort_unstable();
        cuts.dedup();
        let (mut real, mut counted) = (0.0, 0.0);
        for pair in cuts.windows(2) {
            let (start, end) = (pair[0], pair[1]);
            let (mut rate, mut stuck) = (base, false);
            for effect in self.effects.iter().filter(|e| e.active(start)) {
                match *effect {
                    Effect::Scale { factor, .. } => rate *= factor,
                    Effect::Stuck { .. } => stuck = true,
                    _ => {}
                }
            }
            for effect in self.effects.iter().filter(|e| e.active(start)) {
                if let Effect::Leak { per_hour, .. } = *effect {
                    rate += per_hour * self.milli_per_unit;
                }
            }
            let flowed = rate * (end - start) as f64 / HOUR as f64;
            real += flowed;
            if !stuck {
                counted += flowed;
            }
        }
        (real, counted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbg::calendar::DAY;
    use crate::mbg::codes::Unit;
    use crate::mbg::profile::{date, Profile, Usage};

    fn meter() -> BusMeter {
        BusMeter {
            id: 1,
            manufacturer: "KAM".into(),
            version: 1,
            medium: 0x16,
            unit: Unit::CubicMetres,
            exponent: -3,
            digits: 5,
            initial: 10.0,
            start: date(2025, 1, 1),
            profile: Profile {
                holidays: false,
                ..Profile::water(Usage::ColdWater, 3.0, 130.0, 4)
            },
            seed: 9,
        }
    }

    #[test]
    fn the_index_does_not_depend_on_the_reading_pattern() {
        let target = date(2025, 1, 20) + 7 * HOUR + 123;
        let mut once = Physics::new(meter());
        let mut often = Physics::new(meter());
        for step in 0..200 {
            often.index(date(2025, 1, 1) + step * 6337);
        }
        let far = date(2025, 3, 1);
        often.index(far);
        assert_eq!(once.index(target), often.index(target));
        assert_eq!(once.index(far), often.index(far));
        // 19 days of a 3-person flat: about 7 m³.
        let used = once.index(target).value() - 10.0;
        assert!((5.0..9.5).contains(&used), "{used}");
    }

    #[test]
    fn effects() {
        let t0 = date(2025, 1, 10);
        let mut plain = Physics::new(meter());
        let mut leaking = Physics::new(meter());
        leaking.add_effect(Effect::Leak {
            per_hour: 0.012,
            from: t0,
            until: Some(t0 + DAY),
        });
        let extra = leaking.index(t0 + 2 * DAY).raw - plain.index(t0 + 2 * DAY).raw;
        assert!((287..=289).contains(&extra), "{extra}");
        assert_eq!(leaking.index(t0).raw, plain.index(t0).raw);

        let mut stuck = Physics::new(meter());
        stuck.add_effect(Effect::Stuck {
            from: t0,
            until: Some(t0 + 3 * DAY),
        });
        let frozen = stuck.index(t0);
        assert_eq!(stuck.index(t0 + 2 * DAY + 7 * HOUR + 5), frozen);
        assert!(stuck.index(t0 + 4 * DAY).raw > frozen.raw);
        assert!(stuck.real_consumption(t0, t0 + 3 * DAY) > 0.5);

        let mut dropped = Physics::new(meter());
        dropped.add_effect(Effect::Drop { at: t0, raw: 500 });
        assert_eq!(dropped.index(t0 - 1).raw, plain.index(t0 - 1).raw);
        assert_eq!(dropped.index(t0).raw, plain.index(t0).raw - 500);

        let mut doubled = Physics::new(meter());
        doubled.add_effect(Effect::Scale {
            factor: 2.0,
            from: t0,
            until: Some(t0 + 5 * DAY),
        });
        let normal = plain.real_consumption(t0, t0 + 5 * DAY);
        let more = doubled.real_consumption(t0, t0 + 5 * DAY);
        assert!((more - 2.0 * normal).abs() < 0.01, "{more} {normal}");
    }

    #[test]
    fn wraps_at_the_digits() {
        let mut near_top = Physics::new(BusMeter {
            initial: 99_999.5,
            ..meter()
        });
        assert_eq!(near_top.index(date(2025, 1, 1)).raw, 99_999_500);
        assert!(near_top.index(date(2025, 1, 10)).value() < 10.0);
    }
}
