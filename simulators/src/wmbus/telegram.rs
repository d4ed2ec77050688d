//! The JSON a wmbusmeters set-up publishes for one telegram, in the shapes of the
//! drivers a co-ownership meets (`shared/devices/wmbusmeters-json.md`), and the broken
//! messages the fault injection sends instead.

use serde_json::{json, Map, Value};

use crate::mbg::calendar::{civil_from_days, days_from_civil, iso, DAY};
use crate::mbg::codes::{format_id, medium, status, Unit};
use crate::mbg::BusMeter;

/// The wmbusmeters driver that decodes a meter, which decides the JSON fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Driver {
    /// Sensus iPERL water meter: `total_m3`, no status.
    Iperl,
    /// Kamstrup Multical 21: `total_m3`, `target_m3`, `current_status` and `status`
    /// (`OK`, `LEAK`, `BURST`, `REVERSE`…, space-separated).
    Kamwater,
    /// Diehl IZAR: `total_m3`, `current_alarms` (`no_alarm`, `leakage`, `back_flow`,
    /// `meter_blocked`…, comma-separated), `remaining_battery_life_y`.
    Izar,
    /// Kamstrup Multical 302/403/603: `total_energy_consumption_kwh`, `status` (error
    /// flag names, space-separated).
    Kamheat,
    /// Techem FHKV data III allocator: `current_hca`, `current_date`, `previous_hca`,
    /// `previous_date`, no status.
    Fhkvdataiii,
}

impl Driver {
    /// The driver wmbusmeters would pick for a simulated meter: by unit, then by
    /// maker for water meters (KAM Multical 21, SEN iPERL, others IZAR).
    pub fn for_meter(meter: &BusMeter) -> Driver {
        match meter.unit {
            Unit::Hca => Driver::Fhkvdataiii,
            Unit::KilowattHours | Unit::MegawattHours => Driver::Kamheat,
            Unit::CubicMetres => match meter.manufacturer.as_str() {
                "KAM" => Driver::Kamwater,
                "SEN" => Driver::Iperl,
                _ => Driver::Izar,
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Driver::Iperl => "iperl",
            Driver::Kamwater => "kamwater",
            Driver::Izar => "izar",
            Driver::Kamheat => "kamheat",
            Driver::Fhkvdataiii => "fhkvdataiii",
        }
    }

    /// The field holding the index.
    pub fn index_field(self) -> &'static str {
        match self {
            Driver::Iperl | Driver::Kamwater | Driver::Izar => "total_m3",
            Driver::Kamheat => "total_energy_consumption_kwh",
            Driver::Fhkvdataiii => "current_hca",
        }
    }

    /// The field holding the status words, if the driver has one.
    pub fn status_field(self) -> Option<&'static str> {
        match self {
            Driver::Kamwater => Some("current_status"),
            Driver::Izar => Some("current_alarms"),
            Driver::Kamheat => Some("status"),
            Driver::Iperl | Driver::Fhkvdataiii => None,
        }
    }

    /// The words this driver prints for status bits (see [`status`]), and its word
    /// for "nothing wrong". A bit the meter cannot report has no word.
    fn words(self, bits: u16) -> (Vec<&'static str>, &'static str, &'static str) {
        let table: &[(u16, &str)] = match self {
            Driver::Kamwater => &[
                (status::LEAK, "LEAK"),
                (status::BURST, "BURST"),
                (status::REVERSE_FLOW, "REVERSE"),
                (status::TAMPER, "TAMPER"),
                (status::BATTERY_LOW, "LOW_BATTERY"),
                (status::METER_ERROR, "ERROR"),
            ],
            Driver::Izar => &[
                (status::LEAK, "leakage"),
                (status::REVERSE_FLOW, "back_flow"),
                (status::TAMPER, "mechanical_fraud"),
                (status::METER_ERROR, "meter_blocked"),
            ],
            Driver::Kamheat => &[
                (status::LEAK, "IN_A1_LEAKAGE_IN_THE_SYSTEM"),
                (status::BURST, "V1_V2_BURST_WATER_LOSS"),
                (status::REVERSE_FLOW, "WRONG_FLOW_DIRECTION"),
                (status::BATTERY_LOW, "LOW_BATTERY_LEVEL"),
                (status::METER_ERROR, "SENSOR_ERROR"),
            ],
            Driver::Iperl | Driver::Fhkvdataiii => &[],
        };
        let words = table
            .iter()
            .filter(|(bit, _)| bits & bit != 0)
            .map(|(_, word)| *word)
            .collect();
        match self {
            Driver::Izar => (words, "no_alarm", ","),
            _ => (words, "OK", " "),
        }
    }
}

/// How wmbusmeters names a medium.
pub fn media(code: u8) -> &'static str {
    match code {
        medium::COLD_WATER => "cold water",
        medium::WARM_WATER => "warm water",
        0x15 => "hot water",
        medium::WATER => "water",
        medium::HEAT => "heat",
        0x0C => "heat volume at inlet",
        medium::HEAT_COST_ALLOCATOR => "heat cost allocator",
        medium::GAS => "gas",
        medium::ELECTRICITY => "electricity",
        _ => "unknown",
    }
}

/// What a telegram says: the meter's index at `at` and the status bits it reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    pub at: i64,
    /// In the meter's unit.
    pub index: f64,
    pub bits: u16,
}

/// What [`telegram`] needs besides the reading: values at the billing dates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct History {
    /// Index at the start of the month (Multical 21 `target_m3`, IZAR last month).
    pub month_start: f64,
    /// Index at the previous 31 December (FHKV `previous_hca`).
    pub year_end: f64,
}

/// The first instant of the month of `at`, and 31 December 02:00 of the year before.
pub fn billing_dates(at: i64) -> (i64, i64) {
    let (year, month, _) = civil_from_days(at.div_euclid(DAY));
    let month_start = days_from_civil(year, month, 1) * DAY;
    let year_end = days_from_civil(year - 1, 12, 31) * DAY + 2 * 3600;
    (month_start, year_end)
}

/// The telegram's JSON object.
pub fn telegram(
    meter: &BusMeter,
    driver: Driver,
    name: &str,
    reading: &Reading,
    history: &History,
) -> Map<String, Value> {
    let mut t = Map::new();
    t.insert("_".into(), json!("telegram"));
    t.insert("media".into(), json!(media(meter.medium)));
    t.insert("meter".into(), json!(driver.name()));
    t.insert("name".into(), json!(name));
    t.insert("id".into(), json!(format_id(meter.id)));
    // wmbusmeters prints energy in kWh whatever the meter counts in.
    let to_kwh = if meter.unit == Unit::MegawattHours {
        1000.0
    } else {
        1.0
    };
    t.insert(driver.index_field().into(), number(reading.index * to_kwh));
    let (words, clear, separator) = driver.words(reading.bits);
    let said = if words.is_empty() {
        clear.to_owned()
    } else {
        words.join(separator)
    };
    match driver {
        Driver::Iperl => {
            t.insert("max_flow_m3h".into(), json!(0));
        }
        Driver::Kamwater => {
            t.insert("target_m3".into(), number(history.month_start));
            t.insert("current_status".into(), json!(said));
            t.insert("status".into(), json!(said));
            for field in ["time_bursting", "time_dry", "time_leaking", "time_reversed"] {
                t.insert(field.into(), json!(""));
            }
        }
        Driver::Izar => {
            t.insert("last_month_total_m3".into(), number(history.month_start));
            let battery = if reading.bits & status::BATTERY_LOW != 0 {
                0.5
            } else {
                12.0
            };
            t.insert("remaining_battery_life_y".into(), number(battery));
            t.insert("current_alarms".into(), json!(said));
            t.insert("previous_alarms".into(), json!("no_alarm"));
            t.insert("transmit_period_s".into(), json!(8));
        }
        Driver::Kamheat => {
            t.insert(
                "total_volume_m3".into(),
                number(round(reading.index * to_kwh / 50.0)),
            );
            t.insert("status".into(), json!(said));
        }
        Driver::Fhkvdataiii => {
            let (_, year_end) = billing_dates(reading.at);
            let day = reading.at.div_euclid(DAY) * DAY + 2 * 3600;
            t.insert("current_date".into(), json!(iso(day)));
            t.insert("previous_hca".into(), number(history.year_end));
            t.insert("previous_date".into(), json!(iso(year_end)));
            t.insert("temp_room_c".into(), json!(21.5));
            t.insert("temp_radiator_c".into(), json!(38.25));
        }
    }
    t.insert("timestamp".into(), json!(iso(reading.at)));
    t
}

/// A broken message, as a faulty set-up or a corrupted link sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The telegram cut in the middle: not JSON.
    BadJson,
    /// The telegram without its `id`.
    MissingId,
    /// The index written as the string `"nan"`.
    NanIndex,
    /// The telegram padded past 64 KiB.
    Huge,
}

impl Malformed {
    pub const ALL: [Malformed; 4] = [
        Malformed::BadJson,
        Malformed::MissingId,
        Malformed::NanIndex,
        Malformed::Huge,
    ];
}

/// Size of the padding of a [`Malformed::Huge`] message.
pub const HUGE_PADDING: usize = 100 * 1024;

/// `good` broken as `how` says; `index_field` names its index.
pub fn malformed(good: &Map<String, Value>, index_field: &str, how: Malformed) -> Vec<u8> {
    let mut broken = good.clone();
    match how {
        Malformed::BadJson => {
            let text = Value::Object(broken).to_string();
            let mut bytes = text.into_bytes();
            bytes.truncate(bytes.len() / 2);
            return bytes;
        }
        Malformed::MissingId => {
            broken.remove("id");
        }
        Malformed::NanIndex => {
            broken.insert(index_field.into(), json!("nan"));
        }
        Malformed::Huge => {
            broken.insert("padding".into(), json!("x".repeat(HUGE_PADDING)));
        }
    }
    Value::Object(broken).to_string().into_bytes()
}

/// An index as wmbusmeters prints it: whole numbers without a decimal point.
fn number(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9e15 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

fn round(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbg::population::population;

    #[test]
    fn shapes_per_driver() {
        let meters = population(3, 10_000_001, 6, 1_767_222_000);
        let reading = Reading {
            at: 1_768_010_400,
            index: 123.456,
            bits: status::LEAK | status::BATTERY_LOW,
        };
        let history = History {
            month_start: 120.0,
            year_end: 100.0,
        };
        let of_unit = |unit: Unit| {
            meters
                .iter()
                .find(|m| m.unit == unit)
                .expect("a meter of each unit in 6 flats")
        };
        for (meter, driver) in [
            (&meters[0], Driver::Iperl),
            (&meters[0], Driver::Kamwater),
            (&meters[0], Driver::Izar),
            (of_unit(Unit::KilowattHours), Driver::Kamheat),
            (of_unit(Unit::Hca), Driver::Fhkvdataiii),
        ] {
            let t = telegram(meter, driver, "n", &reading, &history);
            assert_eq!(t["id"], json!(format_id(meter.id)));
            assert_eq!(t["meter"], json!(driver.name()));
            assert_eq!(t["timestamp"], json!("2026-01-10T02:00:00Z"));
            assert!(t[driver.index_field()].is_number());
            match driver {
                Driver::Kamwater => assert_eq!(t["current_status"], json!("LEAK LOW_BATTERY")),
                Driver::Izar => {
                    assert_eq!(t["current_alarms"], json!("leakage"));
                    assert_eq!(t["remaining_battery_life_y"], json!(0.5));
                }
                Driver::Kamheat => assert_eq!(
                    t["status"],
                    json!("IN_A1_LEAKAGE_IN_THE_SYSTEM LOW_BATTERY_LEVEL")
                ),
                Driver::Fhkvdataiii => {
                    assert_eq!(t["previous_date"], json!("2025-12-31T02:00:00Z"));
                    assert_eq!(t["current_date"], json!("2026-01-10T02:00:00Z"));
                }
                Driver::Iperl => assert!(driver.status_field().is_none()),
            }
        }
        assert_eq!(Driver::for_meter(of_unit(Unit::Hca)), Driver::Fhkvdataiii);
        assert_eq!(
            Driver::for_meter(of_unit(Unit::KilowattHours)),
            Driver::Kamheat
        );
        let quiet = Reading { bits: 0, ..reading };
        let t = telegram(&meters[0], Driver::Izar, "n", &quiet, &history);
        assert_eq!(t["current_alarms"], json!("no_alarm"));
    }

    #[test]
    fn broken_messages() {
        let meters = population(3, 10_000_001, 1, 0);
        let reading = Reading {
            at: 86_400,
            index: 1.5,
            bits: 0,
        };
        let history = History {
            month_start: 1.0,
            year_end: 1.0,
        };
        let good = telegram(&meters[0], Driver::Kamwater, "n", &reading, &history);
        let bad = malformed(&good, "total_m3", Malformed::BadJson);
        assert!(serde_json::from_slice::<Value>(&bad).is_err());
        let no_id: Value =
            serde_json::from_slice(&malformed(&good, "total_m3", Malformed::MissingId)).unwrap();
        assert!(no_id.get("id").is_none());
        let nan: Value =
            serde_json::from_slice(&malformed(&good, "total_m3", Malformed::NanIndex)).unwrap();
        assert_eq!(nan["total_m3"], json!("nan"));
        assert!(malformed(&good, "total_m3", Malformed::Huge).len() > HUGE_PADDING);
        assert_eq!(billing_dates(1_768_010_400), (1_767_225_600, 1_767_146_400));
    }
}
