//! The `gardien-sim` stdin protocol: one command per line, one JSON line back.
//!
//! Kept apart from the binary so it can be tested without a process.

use std::time::Duration;

use serde_json::{json, Value};
use tokio_modbus::ExceptionCode;

use crate::config::Simulation;
use crate::device::{AnyDevice, MbgDevice};
use crate::esprfid::EspRfidDevice;
use crate::mbg::calendar::{iso, parse_instant};
use crate::mbg::codes::{format_id, parse_id, status};
use crate::uid::Uid;

pub const HELP: &str = "present <name> <uid-hex> <door> | offline <name> [seconds] | \
online <name> | reboot <name> (memory loss) | power-cycle <name> | latency <name> <ms> | \
drop <name> <probability> | drop-reply <name> <probability> | close <name> <probability> | \
exception <name> <code> <probability> | capacity <name> <limit|none> | clear <name> | \
status <name> | meter gateways: time | advance <seconds> | set-time <iso|unix> | \
no-answer [<name>] <meter-id> on|off | stale <name> <slot> on|off | \
force-status <name> <meter-id> <flag,...|none> | meter <name> <meter-id> | trigger <name> | \
truth <path> | esp-rfid: present <name> <uid-hex> | reboot|power-cycle <name> | \
factory-reset <name> | drop <name> <probability> (commands in) | \
drop-reply <name> <probability> (messages out) | offline <name> | online <name> | \
clear <name> | status <name> | help | quit";

const TWENTY_YEARS: i64 = 20 * 366 * 86_400;

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
        ["time" | "advance" | "set-time" | "truth", ..] => {
            (answer(on_clock(sim, &words)), Next::Continue)
        }
        ["no-answer", meter, state] if sim.device(meter).is_none() => (
            answer(no_answer_anywhere(sim, meter, state)),
            Next::Continue,
        ),
        [verb, name, args @ ..] => {
            let result = match (sim.device(name), sim.esprfid(name)) {
                (Some(device), _) => on_device(device, verb, args),
                (None, Some(esp)) => on_esprfid(esp, verb, args),
                (None, None) => Err(format!("no device named {name}")),
            };
            (answer(result), Next::Continue)
        }
        _ => (
            json!({ "ok": false, "error": format!("unknown command; try: {HELP}") }),
            Next::Continue,
        ),
    }
}

fn answer(result: Result<Value, String>) -> Value {
    match result {
        Ok(Value::Null) => json!({ "ok": true }),
        Ok(value) => json!({ "ok": true, "result": value }),
        Err(error) => json!({ "ok": false, "error": error }),
    }
}

/// The virtual clock, shared by the simulation's meter gateways, and their ground truth.
fn on_clock(sim: &Simulation, words: &[&str]) -> Result<Value, String> {
    let clock = sim.clock();
    match words {
        // Twenty years either way: each hour jumped is an hour every meter integrates.
        ["advance", seconds] => clock.advance(parse_in(seconds, -TWENTY_YEARS..=TWENTY_YEARS)?),
        ["set-time", when] => {
            clock.set_time(parse_instant(when).ok_or("give a date like 2025-01-15T06:00:00Z")?)
        }
        ["truth", path] => sim
            .ground_truth()
            .write(path)
            .map_err(|e| format!("{path}: {e}"))?,
        ["time"] => {}
        _ => return Err(format!("bad arguments for {}; try: {HELP}", words[0])),
    }
    let now = clock.now();
    Ok(json!({ "unix": now, "iso": iso(now) }))
}

/// `no-answer <meter-id> on|off`: on whichever gateway has the meter.
fn no_answer_anywhere(sim: &Simulation, meter: &str, state: &str) -> Result<Value, String> {
    let id = parse_id(meter).ok_or_else(|| format!("no device or meter id named {meter}"))?;
    let on = on_off(state)?;
    let mut found = false;
    for (_, device) in sim.devices() {
        if let AnyDevice::Mbg(mbg) = device {
            found |= mbg.set_answering(id, !on).is_ok();
        }
    }
    if found {
        Ok(Value::Null)
    } else {
        Err(format!("no gateway has meter {meter}"))
    }
}

fn on_off(word: &str) -> Result<bool, String> {
    match word {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{word}: say on or off")),
    }
}

/// The commands only a meter gateway has.
fn on_mbg(mbg: &MbgDevice, verb: &str, args: &[&str]) -> Option<Result<Value, String>> {
    let meter =
        |text: &str| parse_id(text).ok_or_else(|| format!("{text} is not an 8-digit meter id"));
    let result = match (verb, args) {
        ("no-answer", [id, state]) => meter(id).and_then(|id| {
            let on = on_off(state)?;
            mbg.set_answering(id, !on).map_err(|e| e.to_string())?;
            Ok(Value::Null)
        }),
        ("stale", [slot, state]) => parse_in(slot, 0..=u16::MAX).and_then(|slot| {
            let on = on_off(state)?;
            if mbg.set_stale(slot, on) {
                Ok(Value::Null)
            } else {
                Err(format!("no slot {slot}"))
            }
        }),
        ("force-status", [id, flags]) => meter(id).and_then(|id| {
            let bits = match *flags {
                "none" => 0,
                flags => flags.split(',').try_fold(0, |bits, name| {
                    status::by_name(name)
                        .map(|bit| bits | bit)
                        .ok_or_else(|| format!("unknown flag {name}"))
                })?,
            };
            mbg.force_status(id, bits).map_err(|e| e.to_string())?;
            Ok(Value::Null)
        }),
        ("meter", [id]) => meter(id).and_then(|id| {
            let value = mbg.meter_value(id).ok_or("no such meter on the loop")?;
            Ok(json!({
                "value": value.value(), "unit": value.unit,
                "raw": value.raw, "exponent": value.exponent,
            }))
        }),
        ("trigger", []) => Ok(json!({ "started": mbg.trigger() })),
        _ => return None,
    };
    Some(result)
}

fn on_device(device: &AnyDevice, verb: &str, args: &[&str]) -> Result<Value, String> {
    if let AnyDevice::Mbg(mbg) = device {
        if let Some(result) = on_mbg(mbg, verb, args) {
            return result;
        }
    }
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

/// The commands of an esp-rfid (its badges have no door number: it has one reader).
fn on_esprfid(esp: &EspRfidDevice, verb: &str, args: &[&str]) -> Result<Value, String> {
    let faults = esp.faults();
    match (verb, args) {
        ("present", [uid]) => {
            let uid = Uid::from_hex(uid).ok_or("the UID must be 1 to 10 hex bytes")?;
            let access = esp.present(uid.as_bytes()).map_err(|e| e.to_string())?;
            serde_json::to_value(access).map_err(|e| e.to_string())
        }
        ("reboot" | "power-cycle", []) => {
            esp.reboot();
            Ok(Value::Null)
        }
        ("factory-reset", []) => {
            esp.factory_reset();
            Ok(Value::Null)
        }
        ("drop" | "drop-commands", [p]) => {
            faults.set_drop_commands(parse_in(p, 0.0..=1.0)?);
            Ok(Value::Null)
        }
        ("drop-reply" | "drop-messages", [p]) => {
            faults.set_drop_messages(parse_in(p, 0.0..=1.0)?);
            Ok(Value::Null)
        }
        ("offline", []) => {
            esp.set_offline(true);
            Ok(Value::Null)
        }
        ("online", []) => {
            esp.set_offline(false);
            Ok(Value::Null)
        }
        ("clear", []) => {
            faults.set_drop_commands(0.0);
            faults.set_drop_messages(0.0);
            esp.set_offline(false);
            Ok(Value::Null)
        }
        ("status", []) => {
            let mut status = serde_json::to_value(esp.snapshot()).map_err(|e| e.to_string())?;
            status["kind"] = json!("esprfid");
            Ok(status)
        }
        _ => Err(format!(
            "bad arguments for {verb} on an esp-rfid; try: {HELP}"
        )),
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
        AnyDevice::Mbg(mbg) => {
            let s = mbg.snapshot();
            let slots: Vec<Value> = s
                .slots
                .iter()
                .map(|(slot, c)| json!({ "slot": slot, "id": format_id(c.id), "active": c.active }))
                .collect();
            let readings: Vec<Value> = s
                .readings
                .iter()
                .map(|(slot, r)| {
                    json!({
                        "slot": slot, "status": r.status, "time": r.time,
                        "value": r.value.map(|v| v.value()), "unit": r.value.map(|v| v.unit),
                        "id_echo": r.id_echo.map(format_id),
                    })
                })
                .collect();
            json!({
                "kind": "mbg250", "offline": offline, "configured": s.configured,
                "last_readout": s.last_readout, "running": s.running, "clock": s.clock,
                "virtual_time": iso(s.virtual_time), "meters": mbg.with_bus(|b| b.len()),
                "slots": slots, "readings": readings,
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

    #[tokio::test]
    async fn esprfid_commands() {
        let text = "[broker]\nlisten = \"127.0.0.1:0\"\n[[esprfid]]\nname = \"gate\"\n\
                    topic = \"t\"\nip = \"10.0.0.1\"\nusers = [{ uid = \"04a22b91\" }]\n";
        let config: SimConfig = toml::from_str(text).unwrap();
        let sim = start(&config).await.unwrap();
        let ok = |line: &str| {
            let (answer, _) = run(&sim, line);
            assert_eq!(answer["ok"], true, "{line}: {answer}");
            answer
        };
        let granted = ok("present gate 04A22B91");
        assert_eq!(granted["result"]["access"], "Always");
        assert_eq!(granted["result"]["known"], true);
        assert_eq!(ok("present gate 01")["result"]["access"], "Denied");
        ok("drop gate 0.5");
        ok("drop-reply gate 1");
        assert_eq!(
            sim.esprfid("gate").unwrap().faults().probabilities(),
            (0.5, 1.0)
        );
        ok("offline gate");
        let status = ok("status gate");
        assert_eq!(status["result"]["kind"], "esprfid");
        assert_eq!(status["result"]["offline"], true);
        assert_eq!(status["result"]["relay_pulses"], json!([1]));
        ok("clear gate");
        assert_eq!(ok("status gate")["result"]["offline"], false);
        ok("reboot gate");
        assert_eq!(ok("status gate")["result"]["boots"], 2);
        ok("factory-reset gate");
        assert_eq!(ok("status gate")["result"]["users"], json!([]));
        for bad in [
            "present gate 04A22B91 1",
            "drop gate 2",
            "latency gate 5",
            "offline gate 3",
        ] {
            assert_eq!(run(&sim, bad).0["ok"], false, "{bad}");
        }
    }

    #[tokio::test]
    async fn meter_gateway_commands() {
        let text = "[clock]\nstart = \"2025-01-15T00:00:00Z\"\nrunning = false\n\
                    [[device]]\nname = \"gw\"\nkind = \"mbg250\"\nprogram_slots = true\n\
                    meters = [{ id = \"12345678\", usage = \"cold_water\", initial = 5.0 }]\n";
        let config: SimConfig = toml::from_str(text).unwrap();
        let sim = start(&config).await.unwrap();
        let ok = |line: &str| {
            let (answer, _) = run(&sim, line);
            assert_eq!(answer["ok"], true, "{line}: {answer}");
            answer
        };
        assert_eq!(ok("time")["result"]["iso"], "2025-01-15T00:00:00Z");
        assert_eq!(ok("advance 3600")["result"]["unix"], 1_736_902_800);
        assert_eq!(
            ok("set-time 2025-01-16")["result"]["iso"],
            "2025-01-16T00:00:00Z"
        );
        assert!(ok("meter gw 12345678")["result"]["value"].as_f64().unwrap() > 5.0);
        ok("no-answer 12345678 on");
        ok("no-answer gw 12345678 off");
        ok("force-status gw 12345678 leak,battery_low");
        ok("stale gw 0 off");
        ok("trigger gw");
        let status = ok("status gw");
        assert_eq!(status["result"]["kind"], "mbg250");
        assert_eq!(status["result"]["slots"][0]["id"], "12345678");
        for bad in [
            "no-answer 87654321 on",
            "no-answer gw 12345678 maybe",
            "force-status gw 12345678 smoke",
            "stale gw 250 on",
            "meter gw 1234",
            "present gw 04A22B91 1",
            "advance soon",
        ] {
            assert_eq!(run(&sim, bad).0["ok"], false, "{bad}");
        }
        let path = std::env::temp_dir().join(format!("control-truth-{}.json", std::process::id()));
        ok(&format!("truth {}", path.display()));
        assert!(std::fs::remove_file(path).is_ok());
    }
}
