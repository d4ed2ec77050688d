//! Judging what a gateway says about one meter before anything is stored: is it the
//! right meter, did it answer, is the value a number the meter can show, in which
//! unit. Pure functions, so every rule is unit-tested.

use chrono::{DateTime, Utc};
use gardien_drivers::mbg::status_bits;
use gardien_drivers::SlotReading;

use crate::domain::meter::{rollover_modulus, MeasureUnit};
use crate::storage::readings::AlarmKind;

/// The meter a slot is meant to hold, as the database knows it.
#[derive(Debug, Clone)]
pub struct ExpectedMeter {
    pub meter_id: i64,
    pub mbus_number: u32,
    pub unit: MeasureUnit,
    pub digits: i64,
}

/// What to do with one slot's reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Store this index (in the meter's unit) at this instant.
    Store { value: f64, at: DateTime<Utc> },
    /// No new reading (the meter did not answer, the slot is stale or never read).
    Missing(String),
    /// The gateway sent something that cannot be an index of this meter.
    Rejected(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    /// Alarms present on this meter now, with a French detail.
    pub alarms: Vec<(AlarmKind, String)>,
}

/// Status bits and the alarm each raises.
const STATUS_ALARMS: [(u16, AlarmKind); 6] = [
    (status_bits::LEAK, AlarmKind::Leak),
    (status_bits::BURST, AlarmKind::Burst),
    (status_bits::REVERSE_FLOW, AlarmKind::ReverseFlow),
    (status_bits::TAMPER, AlarmKind::Tamper),
    (status_bits::BATTERY_LOW, AlarmKind::LowBattery),
    (status_bits::METER_ERROR, AlarmKind::MeterError),
];

/// The French detail of an alarm the meter itself reports (status bits through a
/// gateway, status words over the radio).
pub fn reported_by_meter(kind: AlarmKind) -> &'static str {
    match kind {
        AlarmKind::Leak => "fuite signalée par le compteur",
        AlarmKind::Burst => "rupture (débit excessif) signalée",
        AlarmKind::ReverseFlow => "retour d'eau (débit inversé)",
        AlarmKind::Tamper => "fraude ou aimant détecté",
        AlarmKind::LowBattery => "pile faible",
        _ => "erreur interne du compteur",
    }
}

/// The unit a gateway's unit code names.
pub fn unit_of_code(code: u16) -> Option<MeasureUnit> {
    match code {
        1 => Some(MeasureUnit::M3),
        2 => Some(MeasureUnit::Kwh),
        3 => Some(MeasureUnit::Hca),
        4 => Some(MeasureUnit::Mwh),
        _ => None,
    }
}

/// Readings further in the future than this are refused (a gateway clock that lies).
pub const FUTURE_TOLERANCE_SECONDS: i64 = 300;

pub fn judge(expected: &ExpectedMeter, reading: &SlotReading, now: DateTime<Utc>) -> Judgement {
    let mut alarms: Vec<(AlarmKind, String)> = STATUS_ALARMS
        .iter()
        .filter(|(bit, _)| reading.status & bit != 0)
        .map(|(_, kind)| (*kind, reported_by_meter(*kind).to_owned()))
        .collect();
    let verdict = verdict(expected, reading, now, &mut alarms);
    Judgement { verdict, alarms }
}

fn verdict(
    expected: &ExpectedMeter,
    reading: &SlotReading,
    now: DateTime<Utc>,
    alarms: &mut Vec<(AlarmKind, String)>,
) -> Verdict {
    let mut alarm = |kind: AlarmKind, detail: String| {
        alarms.push((kind, detail.clone()));
        detail
    };
    match reading.id_echo {
        None => {
            return Verdict::Rejected(alarm(
                AlarmKind::BadValue,
                format!("emplacement {} : identifiant renvoyé illisible (BCD attendu)", reading.slot),
            ))
        }
        // Nothing answered in this slot yet: the id is that of no meter.
        Some(0) if reading.time.is_none() => {}
        Some(echo) if echo != expected.mbus_number => {
            return Verdict::Missing(alarm(
                AlarmKind::StaleSlot,
                format!(
                    "emplacement {} : données du compteur {echo:08} au lieu de {:08} (emplacement pas encore relu)",
                    reading.slot, expected.mbus_number
                ),
            ))
        }
        Some(_) => {}
    }
    if reading.status & status_bits::NO_ANSWER != 0 {
        return Verdict::Missing(alarm(
            AlarmKind::NoAnswer,
            "le compteur n'a pas répondu au dernier relevé".to_owned(),
        ));
    }
    let Some(time) = reading.time else {
        return Verdict::Missing("jamais relevé par la passerelle".to_owned());
    };
    let Some(at) = DateTime::<Utc>::from_timestamp(i64::from(time), 0) else {
        return Verdict::Rejected(alarm(
            AlarmKind::BadValue,
            format!("horodatage {time} illisible"),
        ));
    };
    if at > now + chrono::Duration::seconds(FUTURE_TOLERANCE_SECONDS) {
        return Verdict::Rejected(alarm(
            AlarmKind::BadValue,
            format!("relevé daté du futur ({at}) : horloge de la passerelle à vérifier"),
        ));
    }
    let value = match &reading.value {
        Ok(value) => *value,
        Err(why) => {
            return Verdict::Rejected(alarm(
                AlarmKind::BadValue,
                format!("index illisible : {why}"),
            ))
        }
    };
    let Some(unit) = unit_of_code(reading.unit_code) else {
        return Verdict::Rejected(alarm(
            AlarmKind::BadValue,
            format!(
                "unité {} inconnue (1 m³, 2 kWh, 3 unités de répartition, 4 MWh)",
                reading.unit_code
            ),
        ));
    };
    let Some(value) = expected.unit.convert(value, unit) else {
        return Verdict::Rejected(alarm(
            AlarmKind::BadValue,
            format!(
                "index en {} pour un compteur en {}",
                unit.symbol(),
                expected.unit.symbol()
            ),
        ));
    };
    let top = rollover_modulus(expected.digits);
    // A float32 index just below the top may round up to it: within float32
    // precision it is still a value the meter shows.
    if !(value >= 0.0 && value <= top * (1.0 + 1e-7)) {
        return Verdict::Rejected(alarm(
            AlarmKind::BadValue,
            format!("index {value} hors de l'affichage du compteur (0 à moins de {top})"),
        ));
    }
    Verdict::Store { value, at }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expected() -> ExpectedMeter {
        ExpectedMeter {
            meter_id: 1,
            mbus_number: 12_345_678,
            unit: MeasureUnit::Kwh,
            digits: 8,
        }
    }

    fn reading() -> SlotReading {
        SlotReading {
            slot: 3,
            status: 0,
            value: Ok(1234.5),
            unit_code: 2,
            time: Some(1_767_225_600),
            id_echo: Some(12_345_678),
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::from_timestamp(1_767_229_200, 0).unwrap_or_default()
    }

    #[test]
    fn a_good_reading_is_stored_in_the_meter_unit() {
        let judged = judge(&expected(), &reading(), now());
        assert!(judged.alarms.is_empty());
        assert!(matches!(judged.verdict, Verdict::Store { value, .. } if value == 1234.5));
        let mwh = SlotReading {
            unit_code: 4,
            value: Ok(1.5),
            ..reading()
        };
        assert!(
            matches!(judge(&expected(), &mwh, now()).verdict, Verdict::Store { value, .. } if value == 1500.0)
        );
    }

    #[test]
    fn stale_slots_silent_meters_and_status_bits() {
        let stale = SlotReading {
            id_echo: Some(11_111_111),
            ..reading()
        };
        let judged = judge(&expected(), &stale, now());
        assert!(matches!(judged.verdict, Verdict::Missing(_)));
        assert_eq!(judged.alarms[0].0, AlarmKind::StaleSlot);
        let silent = SlotReading {
            status: status_bits::NO_ANSWER | status_bits::BATTERY_LOW,
            ..reading()
        };
        let judged = judge(&expected(), &silent, now());
        assert!(matches!(judged.verdict, Verdict::Missing(_)));
        let kinds: Vec<AlarmKind> = judged.alarms.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, vec![AlarmKind::LowBattery, AlarmKind::NoAnswer]);
        let leak = SlotReading {
            status: status_bits::LEAK,
            ..reading()
        };
        let judged = judge(&expected(), &leak, now());
        assert!(matches!(judged.verdict, Verdict::Store { .. }));
        assert_eq!(judged.alarms[0].0, AlarmKind::Leak);
    }

    #[test]
    fn values_a_meter_cannot_show_are_rejected() {
        for bad in [
            SlotReading {
                value: Err("NaN".into()),
                ..reading()
            },
            SlotReading {
                value: Ok(-1.0),
                ..reading()
            },
            SlotReading {
                value: Ok(1e9),
                ..reading()
            },
            SlotReading {
                unit_code: 1,
                ..reading()
            },
            SlotReading {
                unit_code: 9,
                ..reading()
            },
            SlotReading {
                time: Some(1_900_000_000),
                ..reading()
            },
            SlotReading {
                id_echo: None,
                ..reading()
            },
        ] {
            let judged = judge(&expected(), &bad, now());
            assert!(matches!(judged.verdict, Verdict::Rejected(_)), "{bad:?}");
            assert!(judged.alarms.iter().any(|(k, _)| *k == AlarmKind::BadValue));
        }
    }
}
