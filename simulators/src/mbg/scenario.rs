//! Anomaly scenarios: each changes a meter's physics from a virtual instant, and each
//! leaves a [`TruthRecord`] saying what happened and what a detector should find.
//!
//! Expected values are computed when the scenario is applied, from the physics known
//! then: apply at most one scenario per meter (as [`super::generate()`] does), and a
//! rollover before the meter's first read-out (its offset holds from the meter's
//! start, so earlier readings would show a jump).

use serde_json::json;

use super::bus::{BusError, MBusLoop};
use super::calendar::{iso, DAY, HOUR};
use super::codes::{format_id, Unit};
use super::meter::{scale, BusMeter};
use super::mix::mix;
use super::physics::{Effect, Physics};
use super::profile::Usage;
use super::truth::TruthRecord;

#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    pub kind: ScenarioKind,
    pub meter_id: u32,
    /// Unix seconds (virtual time).
    pub start: i64,
    /// For kinds with a period; `None` means it goes on. Instant kinds ignore it.
    pub end: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ScenarioKind {
    /// Water meters only: a continuous flow on top of the household's use.
    Leak { litres_per_hour: f64 },
    /// The index stops moving although consumption goes on.
    Stuck,
    /// The index drops once by `drop` units at `start`.
    Backwards { drop: f64 },
    /// The meter reads `before_wrap` units below 10^digits at `start` (from its
    /// origin on, as if installed so), so it wraps during the period.
    Rollover { before_wrap: f64 },
    /// At `start` the meter is swapped for meter `new_id` reading `new_initial`; the
    /// old id stops answering.
    Replaced { new_id: u32, new_initial: f64 },
    /// The household's use is multiplied by `factor` over [start, end) (end required).
    OverConsumption { factor: f64 },
    /// The meter stops answering at `start` (until `end`, if given).
    NoAnswer,
}

impl ScenarioKind {
    /// The kind names, as in the ground truth and the configuration file.
    pub const NAMES: [&'static str; 7] = [
        "leak",
        "stuck",
        "backwards",
        "rollover",
        "replaced",
        "over_consumption",
        "no_answer",
    ];

    pub fn name(&self) -> &'static str {
        match self {
            ScenarioKind::Leak { .. } => "leak",
            ScenarioKind::Stuck => "stuck",
            ScenarioKind::Backwards { .. } => "backwards",
            ScenarioKind::Rollover { .. } => "rollover",
            ScenarioKind::Replaced { .. } => "replaced",
            ScenarioKind::OverConsumption { .. } => "over_consumption",
            ScenarioKind::NoAnswer => "no_answer",
        }
    }

    /// Whether the scenario happens at one instant (its end is its start).
    pub fn is_instant(&self) -> bool {
        matches!(
            self,
            ScenarioKind::Backwards { .. } | ScenarioKind::Replaced { .. }
        )
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScenarioError {
    #[error(transparent)]
    Bus(#[from] BusError),
    #[error("{kind} on meter {meter}: {problem}")]
    Invalid {
        kind: &'static str,
        meter: String,
        problem: String,
    },
}

impl MBusLoop {
    /// Changes the physics as `scenario` says and describes what was done. The record
    /// has no gateway; [`crate::MbgDevice::apply`] fills it in.
    pub fn apply(&mut self, scenario: &Scenario) -> Result<TruthRecord, ScenarioError> {
        let id = scenario.meter_id;
        let spec = self.meter(id).ok_or(BusError::Unknown(id))?.clone();
        let invalid = |problem: &str| ScenarioError::Invalid {
            kind: scenario.kind.name(),
            meter: format_id(id),
            problem: problem.to_owned(),
        };
        let (start, end) = if scenario.kind.is_instant() {
            (scenario.start, None)
        } else {
            (scenario.start, scenario.end)
        };
        if end.is_some_and(|end| end <= start) {
            return Err(invalid("the end is not after the start"));
        }
        let positive = |x: f64| x.is_finite() && x > 0.0;
        let unit = spec.unit;
        let (parameters, expected) = match scenario.kind {
            ScenarioKind::Leak { litres_per_hour } => {
                let water = matches!(spec.profile.usage, Usage::ColdWater | Usage::HotWater);
                if unit != Unit::CubicMetres || !water {
                    return Err(invalid("a leak needs a water meter in m3"));
                }
                if !positive(litres_per_hour) {
                    return Err(invalid("litres_per_hour must be above 0"));
                }
                let per_hour = litres_per_hour / 1000.0;
                self.add_effect(
                    id,
                    Effect::Leak {
                        per_hour,
                        from: start,
                        until: end,
                    },
                )?;
                let p = self.physics(id)?;
                (
                    json!({ "litres_per_hour": litres_per_hour }),
                    json!({
                        "flow_per_hour": round(per_hour),
                        "leaked": end.map(|e| round(per_hour * (e - start) as f64 / HOUR as f64)),
                        "index_at_start": p.index(start).value(),
                        "index_at_end": end.map(|e| p.index(e).value()),
                        "finding": format!("a flow of at least {per_hour} m3/h that never stops, \
                                            night included, from start to end"),
                    }),
                )
            }
            ScenarioKind::Stuck => {
                self.add_effect(
                    id,
                    Effect::Stuck {
                        from: start,
                        until: end,
                    },
                )?;
                let p = self.physics(id)?;
                let frozen = p.index(start).value();
                (
                    json!({}),
                    json!({
                        "index_frozen_at": frozen,
                        "uncounted": end.map(|e| round(p.real_consumption(start, e))),
                        "finding": format!("the index stays at {frozen} from start to end \
                                            although the flat consumes; it moves again after"),
                    }),
                )
            }
            ScenarioKind::Backwards { drop } => {
                let raw = spec.to_raw(drop);
                if !positive(drop) || raw < 1 || raw >= spec.modulus() {
                    return Err(invalid(
                        "drop must be at least one step and less than the counter",
                    ));
                }
                let before = self.physics(id)?.index(start).value();
                self.add_effect(id, Effect::Drop { at: start, raw })?;
                let after = self.physics(id)?.index(start).value();
                (
                    json!({ "drop": scale(raw, spec.exponent) }),
                    json!({
                        "index_before": before,
                        "index_after": after,
                        "finding": format!("the index falls from {before} to {after} at start"),
                    }),
                )
            }
            ScenarioKind::Rollover { before_wrap } => {
                let margin = spec.to_raw(before_wrap).max(1);
                let modulus = spec.modulus();
                if !before_wrap.is_finite() || margin >= modulus {
                    return Err(invalid("before_wrap must be less than the counter"));
                }
                let now = self.physics(id)?.unwrapped(start);
                let offset = (modulus - margin - now).rem_euclid(modulus);
                self.add_effect(id, Effect::Offset { raw: offset })?;
                let p = self.physics(id)?;
                let wrap = find_wrap(p, start, end.unwrap_or(start + 366 * DAY));
                let top = scale(modulus, spec.exponent);
                (
                    json!({ "before_wrap": scale(margin, spec.exponent), "digits": spec.digits }),
                    json!({
                        "modulus": top,
                        "index_at_start": p.index(start).value(),
                        "wraps_at": wrap.map(iso),
                        "wraps_at_unix": wrap,
                        "index_before_wrap": wrap.map(|w| p.index(w - 1).value()),
                        "index_after_wrap": wrap.map(|w| p.index(w).value()),
                        "finding": format!("the index passes {top} and starts again from 0; \
                                            consumption goes on, nothing is lost"),
                    }),
                )
            }
            ScenarioKind::Replaced {
                new_id,
                new_initial,
            } => {
                let new = BusMeter {
                    id: new_id,
                    initial: new_initial,
                    seed: mix(spec.seed, u64::from(new_id)),
                    ..spec.clone()
                };
                let new_initial = new.value(new.to_raw(new_initial)).value();
                let final_index = self.replace(id, new, start)?.value();
                (
                    json!({ "new_meter_id": format_id(new_id), "new_initial_index": new_initial }),
                    json!({
                        "old_meter_id": format_id(id),
                        "old_final_index": final_index,
                        "new_meter_id": format_id(new_id),
                        "new_initial_index": new_initial,
                        "finding": format!(
                            "meter {} ({final_index}) replaced by {} ({new_initial}); the old \
                             id stops answering until the slot is reprogrammed",
                            format_id(id),
                            format_id(new_id)
                        ),
                    }),
                )
            }
            ScenarioKind::OverConsumption { factor } => {
                let Some(end) = end else {
                    return Err(invalid("over-consumption needs an end"));
                };
                if !positive(factor) {
                    return Err(invalid("factor must be above 0"));
                }
                let normal = self.physics(id)?.real_consumption(start, end);
                self.add_effect(
                    id,
                    Effect::Scale {
                        factor,
                        from: start,
                        until: Some(end),
                    },
                )?;
                let actual = self.physics(id)?.real_consumption(start, end);
                (
                    json!({ "factor": factor }),
                    json!({
                        "normal_consumption": round(normal),
                        "actual_consumption": round(actual),
                        "finding": format!("consumption × {factor} from start to end"),
                    }),
                )
            }
            ScenarioKind::NoAnswer => {
                self.silence(id, start, end)?;
                let last = self.physics(id)?.index(start).value();
                (
                    json!({}),
                    json!({
                        "index_when_silenced": last,
                        "finding": "status bit 0 set and the previous index and time kept, \
                                    from start to end",
                    }),
                )
            }
        };
        Ok(TruthRecord::new(
            scenario, start, end, unit, parameters, expected,
        ))
    }

    fn physics(&mut self, id: u32) -> Result<&mut Physics, BusError> {
        self.physics_mut(id).ok_or(BusError::Unknown(id))
    }
}

/// The first instant in [from, until) when the counter reaches its next multiple of
/// the modulus: hour by hour, then by halving within the hour.
fn find_wrap(p: &mut Physics, from: i64, until: i64) -> Option<i64> {
    let modulus = p.spec().modulus();
    let target = (p.unwrapped(from).div_euclid(modulus) + 1) * modulus;
    let mut t = from;
    while t < until {
        let next = ((t.div_euclid(HOUR) + 1) * HOUR).min(until);
        if p.unwrapped(next) >= target {
            let (mut low, mut high) = (t, next);
            while high - low > 1 {
                let mid = low + (high - low) / 2;
                if p.unwrapped(mid) >= target {
                    high = mid;
                } else {
                    low = mid;
                }
            }
            return Some(high);
        }
        t = next;
    }
    None
}

/// Six decimals: enough for any resolution, without float noise in the JSON.
fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbg::population::population;
    use crate::mbg::profile::date;

    fn bus() -> (MBusLoop, i64) {
        let start = date(2025, 1, 1);
        let mut bus = MBusLoop::new();
        for m in population(2, 10_000_001, 4, start) {
            bus.add(m).unwrap();
        }
        (bus, start)
    }

    fn scenario(kind: ScenarioKind, meter_id: u32, start: i64, end: Option<i64>) -> Scenario {
        Scenario {
            kind,
            meter_id,
            start,
            end,
        }
    }

    #[test]
    fn records_what_happened() {
        let (mut bus, t0) = bus();
        let start = t0 + 10 * DAY;
        let leak = ScenarioKind::Leak {
            litres_per_hour: 10.0,
        };
        let record = bus
            .apply(&scenario(
                leak.clone(),
                10_000_001,
                start,
                Some(start + DAY),
            ))
            .unwrap();
        assert_eq!(record.kind, "leak");
        assert_eq!(record.meter_id, "10000001");
        assert_eq!(record.end_unix, Some(start + DAY));
        assert_eq!(record.expected["leaked"], 0.24);
        // A leak on an allocator makes no sense.
        let err = bus.apply(&scenario(leak, 10_000_003, start, None));
        assert!(matches!(err, Err(ScenarioError::Invalid { .. })), "{err:?}");

        let back = ScenarioKind::Backwards { drop: 1.5 };
        let record = bus.apply(&scenario(back, 10_000_004, start, None)).unwrap();
        let (before, after) = (
            &record.expected["index_before"],
            &record.expected["index_after"],
        );
        let fell = before.as_f64().unwrap() - after.as_f64().unwrap();
        assert!((fell - 1.5).abs() < 1e-9);
        assert_eq!(record.end_unix, Some(start));

        let over = ScenarioKind::OverConsumption { factor: 3.0 };
        assert!(bus
            .apply(&scenario(over.clone(), 10_000_005, start, None))
            .is_err());
        let record = bus
            .apply(&scenario(over, 10_000_005, start, Some(start + 3 * DAY)))
            .unwrap();
        let normal = record.expected["normal_consumption"].as_f64().unwrap();
        let actual = record.expected["actual_consumption"].as_f64().unwrap();
        assert!((actual - 3.0 * normal).abs() < 0.01, "{normal} {actual}");
    }

    #[test]
    fn rollover_wraps_when_recorded() {
        let (mut bus, t0) = bus();
        let start = t0 + 10 * DAY;
        let kind = ScenarioKind::Rollover { before_wrap: 0.5 };
        let record = bus
            .apply(&scenario(kind, 10_000_001, start, Some(start + 20 * DAY)))
            .unwrap();
        assert_eq!(record.expected["index_at_start"], 99_999.5);
        let wrap = record.expected["wraps_at_unix"].as_i64().expect("wraps");
        assert!(wrap > start && wrap < start + 20 * DAY);
        let before = bus.index_at(10_000_001, wrap - 1).unwrap().value();
        let after = bus.index_at(10_000_001, wrap).unwrap().value();
        assert!(before > 99_999.0 && after < 1.0, "{before} {after}");
    }

    #[test]
    fn replacement_and_silence() {
        let (mut bus, t0) = bus();
        let at = t0 + 5 * DAY;
        let kind = ScenarioKind::Replaced {
            new_id: 30_000_001,
            new_initial: 0.0123,
        };
        let record = bus.apply(&scenario(kind, 10_000_002, at, None)).unwrap();
        assert_eq!(record.expected["new_initial_index"], 0.012);
        assert!(bus.read(10_000_002, at).is_none());
        assert_eq!(bus.read(30_000_001, at).unwrap().value.raw, 12);

        let silent = scenario(ScenarioKind::NoAnswer, 10_000_007, at, Some(at + DAY));
        bus.apply(&silent).unwrap();
        assert!(bus.read(10_000_007, at - 1).is_some());
        assert!(bus.read(10_000_007, at).is_none());
        assert!(bus.read(10_000_007, at + DAY).is_some());
        let unknown = scenario(ScenarioKind::Stuck, 55_555_555, at, None);
        assert_eq!(
            bus.apply(&unknown),
            Err(ScenarioError::Bus(BusError::Unknown(55_555_555)))
        );
    }
}
