//! The `gardien-sim` stdin protocol: one command per line, one JSON line back.
//!
//! Kept apart from the binary so it can be tested without a process.

use std::time::Duration;

use serde_json::{json, Value};
use tokio_modbus::ExceptionCode;

use crate::config::Simulation;
use crate::device::AnyDevice;
use crate::uid::Uid;

pub const HELP: &str = "present <name> <uid-hex> <door> | offline <name> [seconds] | \
online <name> | reboot <name> (memory loss) | power-cycle <name> | latency <name> <ms> | \
drop <name> <probability> | drop-reply <name> <probability> | close <name> <probability> | \
exception <name> <code> <probability> | capacity <name> <limit|none> | clear <name> | \
status <name> | help | quit";

/// What the caller should do after answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    Quit,
}

/// Runs one command line; returns the JSON answer.
pub fn run(sim: &Simulation, line: &str) -> (Value, Next) {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["quit"] | ["exit"] => (json!({ "ok": true }), Next::Quit),
        ["help"] => (json!({ "ok": true, "help": HELP }), Next::Continue),
        [verb, name, args @ ..] => {
            let answer = match sim.device(name) {
                Some(device) => on_device(device, verb, args),
                None => Err(format!("no device named {name}")),
            };
            let value = match answer {
                Ok(Value::Null) => json!({ "ok": true }),
                Ok(value) => json!({ "ok": true, "result": value }),
                Err(error) => json!({ "ok": false, "error": error }),
            };
            (value, Next::Continue)
        }
        _ => (
            json!({ "ok": false, "error": format!("unknown command; try: {HELP}") }),
            Next::Continue,
        ),
    }
}

fn on_device(device: &AnyDevice, verb: &str, args: &[&str]) -> Result<Value, String> {
    let faults = device.faults();
    match (verb, args) {
        ("present", [uid, door]) => {
            let uid = Uid::from_hex(uid).ok_or("the UID must be 1 to 10 hex bytes")?;
            let door = door.parse().map_err(|_| "the door is a number")?;
            let result = device.present(&uid, door).map_err(|e| e.to_string())?;
            Ok(json!(result))
        }
        ("offline", []) => {
            faults.go_offline(None);
            Ok(Value::Null)
        }
        ("offline", [seconds]) => {
            let seconds: f64 = parse_in(seconds, 0.0..=1e9)?;
            faults.go_offline(Some(Duration::from_secs_f64(seconds)));
            Ok(Value::Null)
        }
        ("online", []) => {
            faults.go_online();
            Ok(Value::Null)
        }
        ("reboot", []) => {
            device.reboot_with_memory_loss();
            Ok(Value::Null)
        }
        ("power-cycle", []) => {
            device.reboot();
            Ok(Value::Null)
        }
        ("latency", [ms]) => {
            faults.set_latency(Duration::from_millis(parse_in(ms, 0..=3_600_000)?));
            Ok(Value::Null)
        }
        ("drop", [p]) => {
            faults.set_drop_probability(parse_in(p, 0.0..=1.0)?);
            Ok(Value::Null)
        }
        ("drop-reply", [p]) => {
            faults.set_drop_reply_probability(parse_in(p, 0.0..=1.0)?);
            Ok(Value::Null)
        }
        ("close", [p]) => {
            faults.set_close_probability(parse_in(p, 0.0..=1.0)?);
            Ok(Value::Null)
        }
        ("exception", [code, p]) => {
            let code = ExceptionCode::new(parse_in(code, 1..=255)?);
            faults.set_exception(Some((code, parse_in(p, 0.0..=1.0)?)));
            Ok(Value::Null)
        }
        ("capacity", ["none"]) => {
            device.set_capacity_limit(None);
            Ok(Value::Null)
        }
        ("capacity", [limit]) => {
            device.set_capacity_limit(Some(parse_in(limit, 0..=u16::MAX)?));
            Ok(Value::Null)
        }
        ("clear", []) => {
            faults.clear();
            device.set_capacity_limit(None);
            Ok(Value::Null)
        }
        ("status", []) => Ok(status(device)),
        _ => Err(format!("bad arguments for {verb}; try: {HELP}")),
    }
}

fn parse_in<T>(text: &str, range: std::ops::RangeInclusive<T>) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Debug,
{
    text.parse::<T>()
        .ok()
        .filter(|value| range.contains(value))
        .ok_or_else(|| format!("{text} is not a number in {range:?}"))
}

fn status(device: &AnyDevice) -> Value {
    let offline = device.faults().is_offline();
    match device {
        AnyDevice::Px2(px2) => {
            let s = px2.snapshot();
            let entries: Vec<Value> = s
                .entries
                .iter()
                .map(|(slot, e)| json!({ "slot": slot, "uid": e.uid.to_string(), "door_mask": e.door_mask }))
                .collect();
            json!({
                "kind": "px2", "offline": offline, "used": s.used,
                "digest": format!("{:08X}", s.digest), "boot_counter": s.boot_counter,
                "events_written": s.events_written, "clock": s.clock, "busy": s.busy,
                "entries": entries,
            })
        }
        AnyDevice::Kl8(kl8) => {
            let s = kl8.snapshot();
            let records = |records: &[(u16, crate::kl8::Record)]| -> Vec<Value> {
                records
                    .iter()
                    .map(|(i, r)| json!({ "record": i, "card": r.card, "door_mask": r.door_mask }))
                    .collect()
            };
            json!({
                "kind": "kl8", "offline": offline, "change_counter": s.change_counter,
                "saving": s.saving, "records": records(&s.records), "saved": records(&s.saved),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{start, SimConfig};

    async fn sim() -> Simulation {
        let text = "seed = 1\n[[device]]\nname = \"hall\"\nkind = \"px2\"\n\
                    entries = [{ uid = \"04A22B91\", doors = [1] }]\n";
        let config: SimConfig = toml::from_str(text).unwrap();
        start(&config).await.unwrap()
    }

    #[tokio::test]
    async fn commands_answer_json() {
        let sim = sim().await;
        let (answer, next) = run(&sim, "present hall 04A22B91 1");
        assert_eq!(answer, json!({ "ok": true, "result": "granted" }));
        assert_eq!(next, Next::Continue);
        let (answer, _) = run(&sim, "present hall 04A22B91 2");
        assert_eq!(answer["result"], "denied_door");
        let (answer, _) = run(&sim, "present hall 04A22B91 9");
        assert_eq!(answer["ok"], false);
        let (answer, _) = run(&sim, "drop hall 2");
        assert_eq!(answer["ok"], false);
        let (answer, _) = run(&sim, "drop nowhere 0.5");
        assert_eq!(answer["error"], "no device named nowhere");
        assert_eq!(run(&sim, "offline hall 1.5").0["ok"], true);
        assert_eq!(run(&sim, "status hall").0["result"]["offline"], true);
        assert_eq!(run(&sim, "online hall").0["ok"], true);
        assert_eq!(run(&sim, "reboot hall").0["ok"], true);
        assert_eq!(run(&sim, "status hall").0["result"]["used"], 0);
        assert_eq!(run(&sim, "quit").1, Next::Quit);
    }
}
