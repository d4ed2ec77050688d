//! How a flat consumes: a mean rate for each hour, a pure function of the hour and of
//! seeds. Water follows the day (morning and evening peaks, little at night) and the
//! week (later, longer mornings at weekends); heating follows the season and the
//! weather, which all flats share. Households go away on holiday, and flats stand
//! empty between tenants.

use std::cell::RefCell;
use std::f64::consts::PI;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use super::calendar::{civil_from_days, days_from_civil, Local, DAY, HOUR};
use super::mix::unit;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Usage {
    ColdWater,
    HotWater,
    /// Heat meters and heat cost allocators.
    Heating,
}

/// Whether anyone is in the flat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Home,
    /// Away for a while; the heating is turned down, not off.
    Holidays,
    /// Nobody lives there: water stops, heating keeps frost protection.
    Vacant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub usage: Usage,
    /// What an occupied flat uses in a year of normal weather, in the meter's unit.
    pub annual: f64,
    /// Seed of the household's habits (its holidays). The meters of one flat share it,
    /// so they go quiet together.
    pub household: u64,
    /// Whether the household goes on holiday (dates drawn each year from `household`).
    #[serde(default = "yes")]
    pub holidays: bool,
    /// Periods when the flat is empty, Unix seconds, start included, end excluded.
    #[serde(default)]
    pub vacancies: Vec<(i64, i64)>,
}

fn yes() -> bool {
    true
}

/// Share of a weekday's water use in each local hour (normalised below).
const WEEKDAY: [f64; 24] = [
    0.6, 0.4, 0.3, 0.3, 0.4, 1.2, 4.0, 7.0, 6.5, 4.0, 3.0, 3.0, //
    3.5, 3.0, 2.5, 2.5, 3.0, 4.0, 5.5, 7.0, 7.0, 5.5, 4.0, 2.0,
];
/// At weekends people get up later and stay in.
const WEEKEND: [f64; 24] = [
    1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.8, 4.0, 6.0, 6.5, 5.5, //
    5.0, 4.5, 3.5, 3.0, 3.0, 3.5, 4.5, 5.5, 6.0, 5.0, 4.0, 2.5,
];
/// Heating: setback at night, boost when people get up and come home.
const HEATING: [f64; 24] = [
    0.75, 0.75, 0.75, 0.75, 0.75, 0.9, 1.3, 1.3, 1.2, 0.95, 0.95, 0.95, //
    0.95, 0.95, 0.95, 0.95, 0.95, 1.1, 1.15, 1.15, 1.1, 1.1, 0.9, 0.8,
];
/// Weekends use a little more water (5 × 0.97 + 2 × 1.075 = 7: the mean stays 1).
const WEEKDAY_FACTOR: f64 = 0.97;
const WEEKEND_FACTOR: f64 = 1.075;
/// Heating stops when the outdoor mean is above this, and only runs from October to April.
const HEATING_LIMIT: f64 = 17.0;
/// Seed of the weather, the same for every flat.
const WEATHER: u64 = 0x0057_4541_5448_4552; // "WEATHER"

const WEEKDAY_SUM: f64 = sum(&WEEKDAY);
const WEEKEND_SUM: f64 = sum(&WEEKEND);
const HEATING_SUM: f64 = sum(&HEATING);

const fn sum(values: &[f64; 24]) -> f64 {
    let mut total = 0.0;
    let mut i = 0;
    while i < 24 {
        total += values[i];
        i += 1;
    }
    total
}

impl Profile {
    /// A water meter of a flat of `persons` using `litres_per_person_day` (cold water:
    /// 100-150 L; hot water: about 40% of that). The unit is m³.
    pub fn water(
        usage: Usage,
        persons: f64,
        litres_per_person_day: f64,
        household: u64,
    ) -> Profile {
        Profile {
            usage,
            annual: persons * litres_per_person_day * 365.0 / 1000.0,
            household,
            holidays: true,
            vacancies: Vec::new(),
        }
    }

    /// A heat meter or allocator reading `annual` units in a normal year.
    pub fn heating(annual: f64, household: u64) -> Profile {
        Profile {
            usage: Usage::Heating,
            annual,
            household,
            holidays: true,
            vacancies: Vec::new(),
        }
    }

    /// Mean consumption rate during the Unix hour `hour`, in the meter's unit per hour.
    /// `seed` gives each meter its own hour-to-hour noise.
    pub fn rate(&self, seed: u64, hour: i64) -> f64 {
        let start = hour * HOUR;
        let HourFacts { local, season, .. } = hour_facts(hour);
        let presence = self.presence_at(start, &local);
        let noise = unit(seed, hour as u64);
        match self.usage {
            Usage::ColdWater | Usage::HotWater => {
                if presence != Presence::Home {
                    return 0.0;
                }
                let share = if local.is_weekend() {
                    WEEKEND_FACTOR * WEEKEND[local.hour] / WEEKEND_SUM
                } else {
                    WEEKDAY_FACTOR * WEEKDAY[local.hour] / WEEKDAY_SUM
                };
                self.annual / 365.0 * share * (0.5 + noise)
            }
            Usage::Heating => {
                if season == 0.0 {
                    return 0.0;
                }
                let presence = match presence {
                    Presence::Home => 1.0,
                    Presence::Holidays => 0.5,
                    Presence::Vacant => 0.15,
                };
                let share = HEATING[local.hour] / HEATING_SUM;
                self.annual / 365.0 * season * share * presence * (0.85 + 0.3 * noise)
            }
        }
    }

    /// Who is in the flat at `unix`.
    pub fn presence(&self, unix: i64) -> Presence {
        self.presence_at(unix, &Local::at(unix))
    }

    fn presence_at(&self, unix: i64, local: &Local) -> Presence {
        if self.vacancies.iter().any(|&(s, e)| s <= unix && unix < e) {
            Presence::Vacant
        } else if self.holidays && self.on_holiday(local) {
            Presence::Holidays
        } else {
            Presence::Home
        }
    }

    /// Summer holidays for 70% of households (1 to 4 weeks starting between early July
    /// and late August), a week at Christmas for 30%; redrawn each year.
    fn on_holiday(&self, local: &Local) -> bool {
        let draw = |k: u64| unit(self.household, (local.year as u64) << 8 | k);
        let day = local.day_of_year;
        if draw(0) < 0.7 {
            let first = 181 + (draw(1) * 50.0) as u32;
            let weeks = 1 + (draw(2) * 4.0) as u32;
            if (first..first + 7 * weeks).contains(&day) {
                return true;
            }
        }
        draw(3) < 0.3 && (356..363).contains(&day)
    }
}

/// What every meter needs to know about an hour, whatever its household.
#[derive(Debug, Clone, Copy)]
struct HourFacts {
    hour: i64,
    local: Local,
    season: f64,
}

/// The calendar and the weather of a Unix hour. Reading many meters over the same
/// night asks for the same hours again and again, so recent ones are kept per thread.
fn hour_facts(hour: i64) -> HourFacts {
    const SLOTS: usize = 512;
    thread_local! {
        static RECENT: RefCell<Vec<Option<HourFacts>>> = RefCell::new(vec![None; SLOTS]);
    }
    RECENT.with(|recent| {
        let slot = hour.rem_euclid(SLOTS as i64) as usize;
        let mut recent = recent.borrow_mut();
        match recent[slot] {
            Some(facts) if facts.hour == hour => facts,
            _ => {
                let local = Local::at(hour * HOUR);
                let facts = HourFacts {
                    hour,
                    local,
                    season: season_weight(&local),
                };
                recent[slot] = Some(facts);
                facts
            }
        }
    })
}

/// Mean outdoor temperature of a day of the year, °C: 3 in mid-January, 20 in July.
fn mean_temperature(day_of_year: u32) -> f64 {
    11.5 - 8.5 * (2.0 * PI * (f64::from(day_of_year) - 15.0) / 365.25).cos()
}

/// The weather of a local day: the mean plus a few degrees that every flat shares.
pub fn temperature(local: &Local) -> f64 {
    let noise: f64 = (-1..=1)
        .map(|d| unit(WEATHER, (local.day + d) as u64))
        .sum();
    mean_temperature(local.day_of_year) + (noise / 3.0 - 0.5) * 8.0
}

fn in_heating_season(month: u32) -> bool {
    month >= 10 || month <= 4
}

/// Heating need of a day relative to the yearly mean (so `annual / 365 × weight` per
/// day adds up to about `annual` in a normal year); 0 out of season.
fn season_weight(local: &Local) -> f64 {
    if !in_heating_season(local.month) {
        return 0.0;
    }
    (HEATING_LIMIT - temperature(local)).max(0.0) / mean_degree_days()
}

/// Mean degree-days per day over a year of mean weather.
fn mean_degree_days() -> f64 {
    static MEAN: OnceLock<f64> = OnceLock::new();
    *MEAN.get_or_init(|| {
        let first = days_from_civil(2001, 1, 1);
        let total: f64 = (0..365)
            .filter(|&d| in_heating_season(civil_from_days(first + d).1))
            .map(|d| (HEATING_LIMIT - mean_temperature(d as u32)).max(0.0))
            .sum();
        total / 365.0
    })
}

/// Total of `profile` over [from, to), hour by hour (for tests and estimates).
pub fn consumption(profile: &Profile, seed: u64, from: i64, to: i64) -> f64 {
    let (first, last) = (from.div_euclid(HOUR), to.div_euclid(HOUR));
    (first..last).map(|h| profile.rate(seed, h)).sum()
}

/// Midnight UTC of a civil date.
pub fn date(year: i64, month: u32, day: u32) -> i64 {
    days_from_civil(year, month, day) * DAY
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flat(usage: Usage) -> Profile {
        match usage {
            Usage::Heating => Profile::heating(9000.0, 7),
            _ => Profile::water(usage, 2.0, 120.0, 7),
        }
    }

    #[test]
    fn nights_are_quiet_days_are_busy() {
        let cold = Profile {
            holidays: false,
            ..flat(Usage::ColdWater)
        };
        let (mut night, mut day) = (0.0, 0.0);
        // Four weeks of March, local 01:00-05:00 against 06:00-22:00 per hour.
        for d in 0..28 {
            let midnight = date(2025, 3, 3) + d * DAY - HOUR; // 00:00 in Paris
            night += consumption(&cold, 1, midnight + HOUR, midnight + 5 * HOUR) / 4.0;
            day += consumption(&cold, 1, midnight + 6 * HOUR, midnight + 22 * HOUR) / 16.0;
        }
        assert!(night * 5.0 < day, "night {night} day {day}");
        // The year adds up to what was asked, within the noise.
        let year = consumption(&cold, 1, date(2025, 1, 1), date(2026, 1, 1));
        assert!((year - cold.annual).abs() < cold.annual * 0.05, "{year}");
    }

    #[test]
    fn weekends_have_late_mornings() {
        let cold = Profile {
            holidays: false,
            ..flat(Usage::ColdWater)
        };
        // 07:00 in Paris (06:00 UTC) on Mondays and Saturdays of March 2025.
        let at_seven = |first: i64| -> f64 {
            (0..4)
                .map(|w| cold.rate(2, (first + w * 7 * DAY) / HOUR + 6))
                .sum()
        };
        let mondays = at_seven(date(2025, 3, 3));
        let saturdays = at_seven(date(2025, 3, 8));
        assert!(saturdays < mondays / 2.0, "{saturdays} {mondays}");
    }

    #[test]
    fn heating_follows_the_season() {
        let heat = flat(Usage::Heating);
        let january = consumption(&heat, 3, date(2025, 1, 1), date(2025, 2, 1));
        let july = consumption(&heat, 3, date(2025, 7, 1), date(2025, 8, 1));
        let october = consumption(&heat, 3, date(2025, 10, 1), date(2025, 11, 1));
        assert_eq!(july, 0.0);
        assert!(
            january > 2.0 * october && october > 0.0,
            "{january} {october}"
        );
        let year = consumption(&heat, 3, date(2025, 1, 1), date(2026, 1, 1));
        assert!((6000.0..12_000.0).contains(&year), "{year}");
    }

    #[test]
    fn vacant_flats_use_no_water() {
        let mut cold = flat(Usage::ColdWater);
        let (from, to) = (date(2025, 2, 1), date(2025, 3, 1));
        assert!(consumption(&cold, 1, from, to) > 5.0);
        cold.vacancies.push((from, to));
        assert_eq!(cold.presence(from + DAY), Presence::Vacant);
        assert_eq!(consumption(&cold, 1, from, to), 0.0);
        let mut heat = flat(Usage::Heating);
        let occupied = consumption(&heat, 1, from, to);
        heat.vacancies.push((from, to));
        let vacant = consumption(&heat, 1, from, to);
        assert!(vacant > 0.0 && vacant < occupied / 4.0);
    }

    #[test]
    fn most_households_leave_in_summer() {
        let away = (0..200)
            .filter(|&h| {
                let p = Profile::water(Usage::ColdWater, 2.0, 120.0, h);
                (0..62).any(|d| p.presence(date(2025, 7, 1) + d * DAY) == Presence::Holidays)
            })
            .count();
        assert!((110..170).contains(&away), "{away}");
    }
}
