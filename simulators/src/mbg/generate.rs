//! "Give me N scenarios of each kind over these meters between these dates": a
//! deterministic draw, each meter used at most once so that effects never mix.

use std::collections::HashSet;

use super::calendar::{DAY, HOUR};
use super::codes::{Unit, MAX_ID};
use super::meter::{scale, BusMeter};
use super::mix::Draws;
use super::profile::Usage;
use super::scenario::{Scenario, ScenarioKind};

#[derive(Debug, Clone, PartialEq)]
pub struct ScenarioPlan {
    pub seed: u64,
    /// Scenarios start and end within [from, to) (Unix seconds) where they fit.
    pub from: i64,
    pub to: i64,
    /// How many of each of the 7 kinds (fewer if meters run out).
    pub per_kind: usize,
    /// Replacement meters take free ids from here up.
    pub first_new_id: u32,
}

/// Scenarios for `meters`: `per_kind` of each kind, in the order of
/// [`ScenarioKind::NAMES`]. Leaks go to water meters only.
pub fn generate(meters: &[BusMeter], plan: &ScenarioPlan) -> Vec<Scenario> {
    let mut draws = Draws::new(plan.seed);
    // A shuffled order of the meters, consumed as scenarios take them.
    let mut order: Vec<usize> = (0..meters.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, draws.below(i as u64 + 1) as usize);
    }
    let mut used = vec![false; meters.len()];
    let mut taken: HashSet<u32> = meters.iter().map(|m| m.id).collect();
    let mut next_id = plan.first_new_id;
    let span = (plan.to - plan.from).max(HOUR);
    let mut scenarios = Vec::new();
    for name in ScenarioKind::NAMES {
        for _ in 0..plan.per_kind {
            let is_water = |m: &BusMeter| {
                m.unit == Unit::CubicMetres
                    && matches!(m.profile.usage, Usage::ColdWater | Usage::HotWater)
            };
            let pick = order
                .iter()
                .copied()
                .find(|&i| !used[i] && (name != "leak" || is_water(&meters[i])));
            let Some(index) = pick else { break };
            used[index] = true;
            let meter = &meters[index];
            let daily = meter.profile.annual / 365.0;
            let step = scale(1, meter.exponent);
            let in_steps = |x: f64| (x / step).round().max(1.0) * step;
            let days = |draws: &mut Draws, low: u64, high: u64| {
                ((low + draws.below(high - low + 1)) as i64 * DAY).min(span)
            };
            let (kind, length, open_ended) = match name {
                "leak" => {
                    let litres = (draws.between(5.0, 30.0) * 10.0).round() / 10.0;
                    let leak = ScenarioKind::Leak {
                        litres_per_hour: litres,
                    };
                    (leak, days(&mut draws, 3, 14), draws.chance(0.25))
                }
                "stuck" => (ScenarioKind::Stuck, days(&mut draws, 5, 20), false),
                "backwards" => {
                    let drop = in_steps(daily * draws.between(1.0, 10.0)).max(10.0 * step);
                    (ScenarioKind::Backwards { drop }, 0, false)
                }
                "rollover" => {
                    let length = days(&mut draws, 10, 10);
                    let before_wrap = in_steps(daily * length as f64 / DAY as f64 * 0.3);
                    (ScenarioKind::Rollover { before_wrap }, length, false)
                }
                "replaced" => {
                    while taken.contains(&next_id) {
                        next_id += 1;
                    }
                    if next_id > MAX_ID {
                        break;
                    }
                    taken.insert(next_id);
                    let new_initial = step * draws.below(20) as f64;
                    let kind = ScenarioKind::Replaced {
                        new_id: next_id,
                        new_initial,
                    };
                    (kind, 0, false)
                }
                "over_consumption" => {
                    let factor = (draws.between(2.0, 5.0) * 10.0).round() / 10.0;
                    let kind = ScenarioKind::OverConsumption { factor };
                    (kind, days(&mut draws, 3, 10), false)
                }
                _ => (
                    ScenarioKind::NoAnswer,
                    days(&mut draws, 2, 10),
                    draws.chance(0.3),
                ),
            };
            let latest = (span - length).max(0) as u64;
            let start = plan.from + draws.below(latest + 1) as i64;
            let start = start - start.rem_euclid(60);
            let end = (length > 0 && !open_ended).then_some(start + length);
            scenarios.push(Scenario {
                kind,
                meter_id: meter.id,
                start,
                end,
            });
        }
    }
    scenarios
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbg::bus::MBusLoop;
    use crate::mbg::population::population;
    use crate::mbg::profile::date;

    #[test]
    fn n_of_each_kind_deterministically() {
        let start = date(2025, 1, 1);
        let meters = population(3, 10_000_001, 20, start);
        let plan = ScenarioPlan {
            seed: 4,
            from: date(2025, 1, 10),
            to: date(2025, 3, 1),
            per_kind: 2,
            first_new_id: 10_000_001,
        };
        let scenarios = generate(&meters, &plan);
        assert_eq!(scenarios, generate(&meters, &plan));
        assert_eq!(scenarios.len(), 14);
        let ids: HashSet<u32> = scenarios.iter().map(|s| s.meter_id).collect();
        assert_eq!(ids.len(), 14, "one scenario per meter");
        for s in &scenarios {
            assert!(
                s.start >= plan.from && s.end.is_none_or(|e| e <= plan.to),
                "{s:?}"
            );
        }
        let mut bus = MBusLoop::new();
        for m in meters {
            bus.add(m).unwrap();
        }
        for s in &scenarios {
            bus.apply(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        }
        // Replacements took ids nobody had.
        assert!(bus.meter(10_000_061).is_some());
    }

    #[test]
    fn runs_out_of_meters_gracefully() {
        let meters = population(3, 10_000_001, 1, 0);
        let plan = ScenarioPlan {
            seed: 1,
            from: 0,
            to: 30 * DAY,
            per_kind: 5,
            first_new_id: 1,
        };
        assert_eq!(generate(&meters, &plan).len(), 3);
    }
}
