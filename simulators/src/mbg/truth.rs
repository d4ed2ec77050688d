//! The ground truth: one record per scenario applied, written as JSON for the anomaly
//! detection to measure itself against.
//!
//! ```json
//! {
//!   "schema": "gardien-sim/mbg-ground-truth/1",
//!   "scenarios": [{
//!     "kind": "leak",               // leak | stuck | backwards | rollover | replaced
//!                                   // | over_consumption | no_answer
//!     "gateway": "building-a",      // null when not applied through a gateway
//!     "unit_id": 1,                 // the gateway's Modbus unit id, or null
//!     "meter_id": "10000001",       // 8 digits, as programmed in a slot
//!     "unit": "m3",                 // unit of every index and amount below
//!     "start": "2025-01-10T00:00:00Z", "start_unix": 1736467200,
//!     "end": null, "end_unix": null,// null: goes on; instant kinds: the start
//!     "parameters": { "litres_per_hour": 12.0 },
//!     "expected": { "flow_per_hour": 0.012, "...": "...", "finding": "a flow of…" }
//!   }]
//! }
//! ```
//!
//! `parameters` and `expected` by kind (amounts in `unit`, instants as ISO and Unix):
//! - leak: {litres_per_hour} → {flow_per_hour, leaked (null if no end),
//!   index_at_start, index_at_end}
//! - stuck: {} → {index_frozen_at, uncounted (consumption the counter missed, null
//!   if no end)}
//! - backwards: {drop} → {index_before, index_after}
//! - rollover: {before_wrap, digits} → {modulus, index_at_start, wraps_at,
//!   wraps_at_unix, index_before_wrap, index_after_wrap} (null if it does not wrap
//!   within the period)
//! - replaced: {new_meter_id, new_initial_index} → {old_meter_id, old_final_index,
//!   new_meter_id, new_initial_index}
//! - over_consumption: {factor} → {normal_consumption, actual_consumption}
//! - no_answer: {} → {index_when_silenced}
//!
//! Every `expected` also has `finding`, a sentence saying what a detector should report.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::calendar::iso;
use super::codes::{format_id, Unit};
use super::scenario::Scenario;

pub const SCHEMA: &str = "gardien-sim/mbg-ground-truth/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthRecord {
    pub kind: String,
    pub gateway: Option<String>,
    pub unit_id: Option<u8>,
    pub meter_id: String,
    pub unit: Unit,
    pub start: String,
    pub start_unix: i64,
    pub end: Option<String>,
    pub end_unix: Option<i64>,
    pub parameters: Value,
    pub expected: Value,
}

impl TruthRecord {
    pub(crate) fn new(
        scenario: &Scenario,
        start: i64,
        end: Option<i64>,
        unit: Unit,
        parameters: Value,
        expected: Value,
    ) -> TruthRecord {
        let end = if scenario.kind.is_instant() {
            Some(start)
        } else {
            end
        };
        TruthRecord {
            kind: scenario.kind.name().to_owned(),
            gateway: None,
            unit_id: None,
            meter_id: format_id(scenario.meter_id),
            unit,
            start: iso(start),
            start_unix: start,
            end: end.map(iso),
            end_unix: end,
            parameters,
            expected,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    pub schema: String,
    pub scenarios: Vec<TruthRecord>,
}

impl Default for GroundTruth {
    fn default() -> Self {
        GroundTruth {
            schema: SCHEMA.to_owned(),
            scenarios: Vec::new(),
        }
    }
}

impl GroundTruth {
    pub fn new() -> GroundTruth {
        GroundTruth::default()
    }

    pub fn push(&mut self, record: TruthRecord) {
        self.scenarios.push(record);
    }

    pub fn extend(&mut self, records: impl IntoIterator<Item = TruthRecord>) {
        self.scenarios.extend(records);
    }

    pub fn to_json(&self) -> String {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    pub fn from_json(text: &str) -> Result<GroundTruth, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn write(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::write(path, self.to_json() + "\n")
    }

    pub fn read(path: impl AsRef<Path>) -> io::Result<GroundTruth> {
        let text = std::fs::read_to_string(path)?;
        GroundTruth::from_json(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mbg::scenario::ScenarioKind;
    use serde_json::json;

    #[test]
    fn round_trip() {
        let scenario = Scenario {
            kind: ScenarioKind::Backwards { drop: 1.0 },
            meter_id: 42,
            start: 1_736_467_200,
            end: Some(1_736_500_000),
        };
        let record = TruthRecord::new(
            &scenario,
            scenario.start,
            None,
            Unit::CubicMetres,
            json!({ "drop": 1.0 }),
            json!({ "finding": "a drop" }),
        );
        assert_eq!(record.end_unix, Some(1_736_467_200));
        assert_eq!(record.end.as_deref(), Some("2025-01-10T00:00:00Z"));
        let mut truth = GroundTruth::new();
        truth.push(record);
        let text = truth.to_json();
        assert!(text.contains("\"meter_id\": \"00000042\""), "{text}");
        assert!(text.contains("\"unit\": \"m3\""));
        assert_eq!(GroundTruth::from_json(&text).unwrap(), truth);
    }
}
