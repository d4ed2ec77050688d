//! The MBG-250 part of the `gardien-sim` file: the meters on the loop (listed or a
//! generated population), the scenarios (listed or drawn), and building the device.
//!
//! ```toml
//! [[device]]
//! name = "building-a"
//! kind = "mbg250"
//! firmware = "2.1"               # or "1.4": float32 indexes
//! ms_per_meter = 20
//! program_slots = true           # slots pre-programmed with the meters (default: empty)
//! population = { seed = 1, first_id = "10000001", flats = 40 }
//! meters = [{ id = "12345678", usage = "cold_water", initial = 123.456, persons = 3 }]
//! scenarios = [{ kind = "leak", meter = "10000001", start = "2025-01-10", litres_per_hour = 12 }]
//! generate_scenarios = { seed = 3, from = "2025-01-05", to = "2025-03-01", per_kind = 1, first_new_id = "90000001" }
//! ```

use std::time::Duration;

use serde::Deserialize;

use super::calendar::parse_instant;
use super::codes::{medium, parse_id, status, Unit};
use super::gateway::MbgConfig;
use super::generate::{generate, ScenarioPlan};
use super::meter::BusMeter;
use super::mix::mix;
use super::population::population;
use super::profile::{Profile, Usage};
use super::scenario::{Scenario, ScenarioKind};
use super::slot::SlotConfig;
use super::SimClock;
use crate::config::DeviceConfig;
use crate::device::MbgDevice;
use crate::faults::Faults;

/// A meter on the loop. Only `id` and `usage` are required; the rest defaults to a
/// typical meter of that usage (water: m³, litres, 5 digits; heating: kWh, 8 digits).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    /// 8 digits.
    pub id: String,
    pub usage: Usage,
    pub manufacturer: Option<String>,
    pub version: Option<u8>,
    /// "cold_water", "warm_water", "water", "heat", "hca", "gas", "electricity".
    pub medium: Option<String>,
    pub unit: Option<Unit>,
    pub exponent: Option<i8>,
    pub digits: Option<u8>,
    /// Index at the clock's start, in units.
    pub initial: Option<f64>,
    /// Use per year in units; water defaults to persons × litres × 365.
    pub annual: Option<f64>,
    pub persons: Option<f64>,
    pub litres_per_person_day: Option<f64>,
    pub holidays: Option<bool>,
    /// Empty periods: [["2025-02-01", "2025-03-01"]].
    #[serde(default)]
    pub vacancies: Vec<[String; 2]>,
    pub seed: Option<u64>,
    pub household: Option<u64>,
    /// false: the meter never answers.
    pub answering: Option<bool>,
    /// Flags it reports: "leak", "burst", "reverse_flow", "tamper", "battery_low",
    /// "meter_error".
    #[serde(default)]
    pub status: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PopulationConfig {
    pub seed: u64,
    pub first_id: String,
    pub flats: u32,
}

/// One scenario; the parameters its kind needs (see [`ScenarioKind`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioConfig {
    /// leak, stuck, backwards, rollover, replaced, over_consumption, no_answer.
    pub kind: String,
    pub meter: String,
    pub start: String,
    pub end: Option<String>,
    pub litres_per_hour: Option<f64>,
    pub drop: Option<f64>,
    pub before_wrap: Option<f64>,
    pub new_id: Option<String>,
    pub new_initial: Option<f64>,
    pub factor: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    pub seed: u64,
    pub from: String,
    pub to: String,
    pub per_kind: usize,
    pub first_new_id: String,
}

/// Builds an MBG-250 from its `[[device]]` entry. `start` is the clock's start, the
/// instant the meters' initial indexes hold.
pub(crate) fn build(
    cfg: &DeviceConfig,
    firmware: Option<u16>,
    faults: Faults,
    clock: &SimClock,
    start: i64,
) -> Result<MbgDevice, String> {
    if cfg.doors.is_some() || cfg.exec_time_ms.is_some() || cfg.save_time_ms.is_some() {
        return Err("doors, exec_time_ms and save_time_ms are for lock controllers".into());
    }
    if !cfg.entries.is_empty() {
        return Err("an mbg250 has meters, not entries".into());
    }
    let firmware = firmware.unwrap_or(0x0201);
    if !matches!(firmware >> 8, 1 | 2) {
        return Err("the firmware of an MBG-250 is 1.x or 2.x".into());
    }
    let capacity = cfg.capacity.unwrap_or(super::gateway::CAPACITY);
    if !(1..=super::gateway::CAPACITY).contains(&capacity) {
        return Err("an MBG-250 has 1 to 250 slots".into());
    }
    let config = MbgConfig {
        unit_id: cfg.unit_id.unwrap_or(1),
        firmware,
        capacity,
        ms_per_meter: Duration::from_millis(cfg.ms_per_meter.unwrap_or(20)),
        clock: clock.clone(),
        name: Some(cfg.name.clone()),
    };
    let device = MbgDevice::new(config, faults);

    let mut meters = Vec::new();
    for meter in &cfg.meters {
        meters.push(meter_from(meter, start)?);
    }
    if let Some(p) = &cfg.population {
        let first = parse_id(&p.first_id).ok_or("population.first_id is 8 digits")?;
        meters.extend(population(p.seed, first, p.flats, start));
    }
    if cfg.program_slots && meters.len() > usize::from(capacity) {
        return Err(format!(
            "{} meters do not fit {capacity} slots",
            meters.len()
        ));
    }
    device
        .add_meters(meters.iter().cloned())
        .map_err(|e| e.to_string())?;
    for meter in &cfg.meters {
        let id = parse_id(&meter.id).ok_or("a meter id is 8 digits")?;
        if meter.answering == Some(false) {
            device.set_answering(id, false).map_err(|e| e.to_string())?;
        }
        let bits = meter.status.iter().try_fold(0, |bits, name| {
            status::by_name(name)
                .map(|bit| bits | bit)
                .ok_or_else(|| format!("unknown status flag {name}"))
        })?;
        device.force_status(id, bits).map_err(|e| e.to_string())?;
    }
    if cfg.program_slots {
        for (slot, meter) in (0u16..).zip(&meters) {
            device.program(slot, SlotConfig::for_meter(meter));
        }
    }

    let mut scenarios = Vec::new();
    for s in &cfg.scenarios {
        scenarios.push(scenario_from(s)?);
    }
    if let Some(g) = &cfg.generate_scenarios {
        let plan = ScenarioPlan {
            seed: g.seed,
            from: instant(&g.from)?,
            to: instant(&g.to)?,
            per_kind: g.per_kind,
            first_new_id: parse_id(&g.first_new_id).ok_or("first_new_id is 8 digits")?,
        };
        let chosen: Vec<u32> = scenarios.iter().map(|s| s.meter_id).collect();
        let free: Vec<BusMeter> = meters
            .into_iter()
            .filter(|m| !chosen.contains(&m.id))
            .collect();
        scenarios.extend(generate(&free, &plan));
    }
    for scenario in &scenarios {
        device.apply(scenario).map_err(|e| e.to_string())?;
    }
    Ok(device)
}

fn instant(text: &str) -> Result<i64, String> {
    parse_instant(text).ok_or_else(|| format!("{text} is not a date like 2025-01-15T06:00:00Z"))
}

fn meter_from(m: &MeterConfig, start: i64) -> Result<BusMeter, String> {
    let id = parse_id(&m.id).ok_or_else(|| format!("meter id {} is not 8 digits", m.id))?;
    let water = m.usage != Usage::Heating;
    let household = m.household.unwrap_or_else(|| mix(u64::from(id), 1));
    let annual = match (m.annual, water) {
        (Some(annual), _) => annual,
        (None, true) => {
            let persons = m.persons.unwrap_or(2.0);
            let litres = m.litres_per_person_day.unwrap_or(match m.usage {
                Usage::HotWater => 48.0,
                _ => 120.0,
            });
            persons * litres * 365.0 / 1000.0
        }
        (None, false) => 9000.0,
    };
    let mut vacancies = Vec::new();
    for [from, to] in &m.vacancies {
        vacancies.push((instant(from)?, instant(to)?));
    }
    let medium_code = match &m.medium {
        Some(name) => medium::by_name(name).ok_or_else(|| format!("unknown medium {name}"))?,
        None => match m.usage {
            Usage::ColdWater => medium::COLD_WATER,
            Usage::HotWater => medium::WARM_WATER,
            Usage::Heating => medium::HEAT,
        },
    };
    let meter = BusMeter {
        id,
        manufacturer: m.manufacturer.clone().unwrap_or_else(|| "KAM".to_owned()),
        version: m.version.unwrap_or(1),
        medium: medium_code,
        unit: m.unit.unwrap_or(if water {
            Unit::CubicMetres
        } else {
            Unit::KilowattHours
        }),
        exponent: m.exponent.unwrap_or(if water { -3 } else { 0 }),
        digits: m.digits.unwrap_or(if water { 5 } else { 8 }),
        initial: m.initial.unwrap_or(0.0),
        start,
        profile: Profile {
            usage: m.usage,
            annual,
            household,
            holidays: m.holidays.unwrap_or(true),
            vacancies,
        },
        seed: m.seed.unwrap_or_else(|| mix(u64::from(id), 2)),
    };
    match meter.problem() {
        Some(problem) => Err(format!("meter {}: {problem}", m.id)),
        None => Ok(meter),
    }
}

fn scenario_from(s: &ScenarioConfig) -> Result<Scenario, String> {
    let need = |value: Option<f64>, name: &str| {
        value.ok_or_else(|| format!("a {} scenario needs {name}", s.kind))
    };
    let kind = match s.kind.as_str() {
        "leak" => ScenarioKind::Leak {
            litres_per_hour: need(s.litres_per_hour, "litres_per_hour")?,
        },
        "stuck" => ScenarioKind::Stuck,
        "backwards" => ScenarioKind::Backwards {
            drop: need(s.drop, "drop")?,
        },
        "rollover" => ScenarioKind::Rollover {
            before_wrap: need(s.before_wrap, "before_wrap")?,
        },
        "replaced" => ScenarioKind::Replaced {
            new_id: s
                .new_id
                .as_deref()
                .and_then(parse_id)
                .ok_or("a replaced scenario needs new_id, 8 digits")?,
            new_initial: s.new_initial.unwrap_or(0.0),
        },
        "over_consumption" => ScenarioKind::OverConsumption {
            factor: need(s.factor, "factor")?,
        },
        "no_answer" => ScenarioKind::NoAnswer,
        other => {
            return Err(format!(
                "unknown scenario kind {other}; one of {}",
                ScenarioKind::NAMES.join(", ")
            ))
        }
    };
    Ok(Scenario {
        kind,
        meter_id: parse_id(&s.meter).ok_or("a scenario's meter is 8 digits")?,
        start: instant(&s.start)?,
        end: s.end.as_deref().map(instant).transpose()?,
    })
}
