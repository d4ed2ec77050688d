//! A realistic building, drawn deterministically from a seed: per flat a cold and a
//! hot water meter and either a heat meter or a heat cost allocator, with household
//! sizes, habits, starting indexes and some flats standing empty for a while.

use super::calendar::DAY;
use super::codes::{medium, Unit, MAX_ID};
use super::meter::BusMeter;
use super::mix::{mix, Draws};
use super::profile::{Profile, Usage};

/// The meters of `flats` flats, ids from `first_id` up (3 per flat: cold water, hot
/// water, heat or allocator, in that order), indexes as read at `start`. Stops early
/// rather than go past id 99999999.
pub fn population(seed: u64, first_id: u32, flats: u32, start: i64) -> Vec<BusMeter> {
    // Flats whose three ids fit in 8 digits.
    let room = (MAX_ID + 1).saturating_sub(first_id) / 3;
    let flats = flats.min(room);
    let mut meters = Vec::with_capacity(3 * flats as usize);
    let mut draws = Draws::new(seed);
    for flat in 0..flats {
        let household = mix(seed, u64::from(flat));
        meters.extend(one_flat(&mut draws, household, first_id + 3 * flat, start));
    }
    meters
}

fn one_flat(draws: &mut Draws, household: u64, first_id: u32, start: i64) -> [BusMeter; 3] {
    // INSEE-like household sizes: many singles and couples, few large families.
    let persons = match draws.unit() {
        x if x < 0.35 => 1.0,
        x if x < 0.68 => 2.0,
        x if x < 0.83 => 3.0,
        x if x < 0.95 => 4.0,
        _ => 5.0,
    };
    let litres = draws.between(100.0, 150.0);
    let mut vacancies = Vec::new();
    // One flat in twelve stands empty for 1 to 4 months in its first year.
    if draws.chance(1.0 / 12.0) {
        let from = start + draws.below(300) as i64 * DAY;
        vacancies.push((from, from + (30 + draws.below(90) as i64) * DAY));
    }
    let with = |mut profile: Profile| {
        profile.vacancies.clone_from(&vacancies);
        profile
    };
    let water_maker = ["KAM", "SEN", "ZRI", "ITW"][draws.below(4) as usize];
    let water = |id, usage, medium_code, litres: f64, initial: f64, salt| BusMeter {
        id,
        manufacturer: water_maker.to_owned(),
        version: 1 + (mix(household, salt) % 3) as u8,
        medium: medium_code,
        unit: Unit::CubicMetres,
        exponent: -3,
        digits: 5,
        initial: (initial * 1000.0).round() / 1000.0,
        start,
        profile: with(Profile::water(usage, persons, litres, household)),
        seed: mix(household, salt),
    };
    let cold = water(
        first_id,
        Usage::ColdWater,
        medium::COLD_WATER,
        litres,
        draws.between(10.0, 900.0),
        1,
    );
    let hot = water(
        first_id + 1,
        Usage::HotWater,
        medium::WARM_WATER,
        litres * draws.between(0.35, 0.45),
        draws.between(5.0, 400.0),
        2,
    );
    // Bigger households live in bigger flats, which need more heat.
    let size = 0.7 + 0.15 * persons + draws.between(-0.1, 0.1);
    let heat = if draws.chance(0.6) {
        BusMeter {
            id: first_id + 2,
            manufacturer: "KAM".to_owned(),
            version: 0x1A,
            medium: medium::HEAT,
            unit: Unit::KilowattHours,
            exponent: 0,
            digits: 8,
            initial: draws.between(1000.0, 80_000.0).round(),
            start,
            profile: with(Profile::heating(
                (draws.between(5000.0, 12_000.0) * size).round(),
                household,
            )),
            seed: mix(household, 3),
        }
    } else {
        BusMeter {
            id: first_id + 2,
            manufacturer: "QDS".to_owned(),
            version: 0x35,
            medium: medium::HEAT_COST_ALLOCATOR,
            unit: Unit::Hca,
            exponent: 0,
            digits: 6,
            initial: draws.between(0.0, 2000.0).round(),
            start,
            profile: with(Profile::heating(
                (draws.between(600.0, 2500.0) * size).round(),
                household,
            )),
            seed: mix(household, 3),
        }
    };
    [cold, hot, heat]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbg::calendar::HOUR;
    use crate::mbg::physics::Physics;
    use crate::mbg::profile::date;

    #[test]
    fn deterministic_and_plausible() {
        let start = date(2025, 1, 1);
        let a = population(5, 10_000_001, 40, start);
        assert_eq!(a, population(5, 10_000_001, 40, start));
        assert_ne!(a, population(6, 10_000_001, 40, start));
        assert_eq!(a.len(), 120);
        assert!(a.iter().all(|m| m.problem().is_none()));
        assert_eq!(a[3].id, 10_000_004);
        let heat_meters = a.iter().filter(|m| m.unit == Unit::KilowattHours).count();
        assert!((10..35).contains(&heat_meters), "{heat_meters}");
        let empty = a.iter().filter(|m| !m.profile.vacancies.is_empty()).count();
        assert!(empty > 0);
        for m in &a {
            let per_year = m.profile.annual;
            match m.profile.usage {
                Usage::ColdWater => assert!((30.0..=300.0).contains(&per_year)),
                Usage::HotWater => assert!((10.0..=130.0).contains(&per_year)),
                Usage::Heating if m.unit == Unit::KilowattHours => {
                    assert!((3000.0..=20_000.0).contains(&per_year))
                }
                Usage::Heating => assert!(per_year < 5000.0),
            }
        }
        // Same seed, same time: same indexes, whoever computes them.
        let t = start + 40 * 24 * HOUR + 1234;
        let first: Vec<i64> = a
            .iter()
            .map(|m| Physics::new(m.clone()).index(t).raw)
            .collect();
        let again: Vec<i64> = a
            .iter()
            .map(|m| Physics::new(m.clone()).index(t).raw)
            .collect();
        assert_eq!(first, again);
    }

    #[test]
    fn stops_before_nine_digits() {
        assert_eq!(population(1, 99_999_990, 10, 0).len(), 9);
        assert!(population(1, u32::MAX - 1, 2, 0).is_empty());
    }
}
