//! The M-Bus loop behind a gateway: the physical meters, when each is on the loop
//! (a replaced meter leaves at an instant, its successor arrives), whether it answers,
//! and the status flags it reports.

use std::collections::HashMap;

use super::codes::{format_id, status};
use super::meter::{BusMeter, MeterValue};
use super::physics::{Effect, Physics};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    #[error("meter {} is not on the loop", format_id(*.0))]
    Unknown(u32),
    #[error("meter {} is already on the loop", format_id(*.0))]
    Duplicate(u32),
    #[error("meter {}: {problem}", format_id(*id))]
    Invalid { id: u32, problem: String },
}

/// What a meter answered when the gateway called it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusReading {
    pub id: u32,
    pub value: MeterValue,
    /// Its own flags (leak, burst…), never "no answer".
    pub status: u16,
}

#[derive(Debug, Clone)]
struct LoopMeter {
    physics: Physics,
    /// The switch a test flips: off, the meter never answers.
    answering: bool,
    /// Periods of silence in virtual time, [from, until).
    silent: Vec<(i64, Option<i64>)>,
    forced_status: u16,
    /// On the loop from this instant (a replacement), and until that one (replaced).
    installed_at: Option<i64>,
    removed_at: Option<i64>,
}

impl LoopMeter {
    fn is_present(&self, t: i64) -> bool {
        self.installed_at.is_none_or(|i| i <= t) && self.removed_at.is_none_or(|r| t < r)
    }

    fn answers(&self, t: i64) -> bool {
        self.answering
            && self.is_present(t)
            && !self
                .silent
                .iter()
                .any(|&(from, until)| from <= t && until.is_none_or(|u| t < u))
    }
}

#[derive(Debug, Clone, Default)]
pub struct MBusLoop {
    meters: Vec<LoopMeter>,
    by_id: HashMap<u32, usize>,
}

impl MBusLoop {
    pub fn new() -> MBusLoop {
        MBusLoop::default()
    }

    /// Puts a meter on the loop. Ids are unique on a loop, including meters that left
    /// it through a replacement.
    pub fn add(&mut self, meter: BusMeter) -> Result<(), BusError> {
        self.insert(meter, None)
    }

    fn insert(&mut self, meter: BusMeter, installed_at: Option<i64>) -> Result<(), BusError> {
        if let Some(problem) = meter.problem() {
            return Err(BusError::Invalid {
                id: meter.id,
                problem,
            });
        }
        if self.by_id.contains_key(&meter.id) {
            return Err(BusError::Duplicate(meter.id));
        }
        self.by_id.insert(meter.id, self.meters.len());
        self.meters.push(LoopMeter {
            physics: Physics::new(meter),
            answering: true,
            silent: Vec::new(),
            forced_status: 0,
            installed_at,
            removed_at: None,
        });
        Ok(())
    }

    /// Takes a meter off the loop for good.
    pub fn remove(&mut self, id: u32) -> Option<BusMeter> {
        let position = self.by_id.remove(&id)?;
        let removed = self.meters.swap_remove(position);
        if let Some(moved) = self.meters.get(position) {
            self.by_id.insert(moved.physics.spec().id, position);
        }
        Some(removed.physics.spec().clone())
    }

    /// At `at`, `old` leaves the loop and `new` takes its place (its index reads
    /// `new.initial` at `at`, whatever `new.start` said). Answers the old meter's final
    /// index.
    pub fn replace(
        &mut self,
        old: u32,
        mut new: BusMeter,
        at: i64,
    ) -> Result<MeterValue, BusError> {
        if self.by_id.contains_key(&new.id) {
            return Err(BusError::Duplicate(new.id));
        }
        new.start = at;
        let final_index = self.index_at(old, at).ok_or(BusError::Unknown(old))?;
        self.insert(new, Some(at))?;
        self.get_mut(old)?.removed_at = Some(at);
        Ok(final_index)
    }

    /// Switches a meter's answers off or on, whatever the time.
    pub fn set_answering(&mut self, id: u32, answering: bool) -> Result<(), BusError> {
        self.get_mut(id)?.answering = answering;
        Ok(())
    }

    /// The meter is silent from `from` (virtual time) until `until`, or for good.
    pub fn silence(&mut self, id: u32, from: i64, until: Option<i64>) -> Result<(), BusError> {
        self.get_mut(id)?.silent.push((from, until));
        Ok(())
    }

    /// Flags the meter reports from now on (leak, burst…; see [`status`]), replacing
    /// those forced before. "No answer" is the gateway's to set, so it is ignored here.
    pub fn force_status(&mut self, id: u32, bits: u16) -> Result<(), BusError> {
        self.get_mut(id)?.forced_status = bits & status::METER_FLAGS;
        Ok(())
    }

    pub fn meter(&self, id: u32) -> Option<&BusMeter> {
        self.by_id.get(&id).map(|&i| self.meters[i].physics.spec())
    }

    /// Every meter ever put on the loop, including replaced ones.
    pub fn meters(&self) -> impl Iterator<Item = &BusMeter> {
        self.meters.iter().map(|m| m.physics.spec())
    }

    pub fn len(&self) -> usize {
        self.meters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.meters.is_empty()
    }

    /// Whether the meter is wired to the loop at `t` (answering or not).
    pub fn is_present(&self, id: u32, t: i64) -> bool {
        self.by_id
            .get(&id)
            .is_some_and(|&i| self.meters[i].is_present(t))
    }

    /// The meter's index at `t`, answering or not.
    pub fn index_at(&mut self, id: u32, t: i64) -> Option<MeterValue> {
        self.physics_mut(id).map(|p| p.index(t))
    }

    /// The gateway calls meter `id` at `t`: its answer, or `None` for silence.
    pub fn read(&mut self, id: u32, t: i64) -> Option<BusReading> {
        let meter = self.get_mut(id).ok()?;
        if !meter.answers(t) {
            return None;
        }
        Some(BusReading {
            id,
            value: meter.physics.index(t),
            status: meter.forced_status,
        })
    }

    pub(crate) fn physics_mut(&mut self, id: u32) -> Option<&mut Physics> {
        self.get_mut(id).ok().map(|m| &mut m.physics)
    }

    pub(crate) fn add_effect(&mut self, id: u32, effect: Effect) -> Result<(), BusError> {
        self.get_mut(id)?.physics.add_effect(effect);
        Ok(())
    }

    fn get_mut(&mut self, id: u32) -> Result<&mut LoopMeter, BusError> {
        match self.by_id.get(&id) {
            Some(&i) => Ok(&mut self.meters[i]),
            None => Err(BusError::Unknown(id)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbg::population::population;
    use crate::mbg::profile::date;

    #[test]
    fn answers_silence_and_replacement() {
        let start = date(2025, 1, 1);
        let meters = population(1, 10_000_001, 2, start);
        let mut bus = MBusLoop::new();
        for m in meters.iter().cloned() {
            bus.add(m).unwrap();
        }
        assert_eq!(
            bus.add(meters[0].clone()),
            Err(BusError::Duplicate(10_000_001))
        );
        let t = start + 86_400;
        assert!(bus.read(10_000_001, t).is_some());
        bus.set_answering(10_000_001, false).unwrap();
        assert!(bus.read(10_000_001, t).is_none());
        bus.set_answering(10_000_001, true).unwrap();
        bus.silence(10_000_001, t + 10, None).unwrap();
        assert!(bus.read(10_000_001, t).is_some());
        assert!(bus.read(10_000_001, t + 10).is_none());

        bus.force_status(10_000_002, status::LEAK | status::NO_ANSWER)
            .unwrap();
        assert_eq!(bus.read(10_000_002, t).unwrap().status, status::LEAK);

        let new = BusMeter {
            id: 20_000_001,
            initial: 0.002,
            ..meters[1].clone()
        };
        let old_final = bus.replace(10_000_002, new, t + 100).unwrap();
        assert_eq!(bus.index_at(10_000_002, t + 100), Some(old_final));
        assert!(bus.read(10_000_002, t + 100).is_none());
        assert!(bus.read(20_000_001, t + 99).is_none());
        assert_eq!(bus.read(20_000_001, t + 100).unwrap().value.raw, 2);
        assert_eq!(bus.remove(10_000_001).map(|m| m.id), Some(10_000_001));
        assert!(bus.read(20_000_001, t + 200).is_some());
        assert_eq!(
            bus.set_answering(10_000_001, true),
            Err(BusError::Unknown(10_000_001))
        );
    }
}
