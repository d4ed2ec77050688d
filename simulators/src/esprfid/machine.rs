//! The controller as plain state. A command comes in as the bytes of an MQTT message;
//! what the device publishes in return goes out as JSON texts. Times are Unix seconds
//! given by the caller.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{json, Map, Value};

use super::user::{uid_field, StoredUser};
use super::{EspRfidConfig, EspRfidUser};

/// What a command did, for the MQTT task.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Outcome {
    /// To publish on `TOPIC/send`, in order.
    pub messages: Vec<String>,
    /// The command was not for this device, or not a command at all.
    pub ignored: bool,
    /// The device restarts once the messages are out (`updateconf`).
    pub reboot: bool,
}

/// The `access` field of an access event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum AccessType {
    Always,
    Admin,
    Disabled,
    Expired,
    Denied,
}

impl AccessType {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessType::Always => "Always",
            AccessType::Admin => "Admin",
            AccessType::Disabled => "Disabled",
            AccessType::Expired => "Expired",
            AccessType::Denied => "Denied",
        }
    }

    pub fn opens(self) -> bool {
        matches!(self, AccessType::Always | AccessType::Admin)
    }
}

/// What the reader decided for a badge, as the access event reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EspRfidAccess {
    pub access: AccessType,
    pub known: bool,
    pub username: String,
    /// The uid as the reader wrote it.
    pub uid: String,
}

#[derive(Debug)]
pub(crate) struct EspRfid {
    config: EspRfidConfig,
    /// Flash: survives a reboot, not a factory reset.
    users: BTreeMap<String, StoredUser>,
    configfile: Value,
    relay_pulses: Vec<u64>,
    boots: u64,
}

impl EspRfid {
    /// A device that has just powered up once.
    pub fn new(config: EspRfidConfig) -> EspRfid {
        EspRfid {
            configfile: default_configfile(&config),
            relay_pulses: vec![0; usize::from(config.relays)],
            users: BTreeMap::new(),
            boots: 1,
            config,
        }
    }

    pub fn users(&self) -> impl Iterator<Item = &EspRfidUser> {
        self.users.values().map(|stored| &stored.user)
    }

    pub fn relay_pulses(&self) -> &[u64] {
        &self.relay_pulses
    }

    pub fn boots(&self) -> u64 {
        self.boots
    }

    pub fn reboot(&mut self) {
        self.boots += 1;
    }

    /// Flash formatted: no users, the configuration as shipped. The caller reboots.
    pub fn factory_reset(&mut self) {
        self.users.clear();
        self.configfile = default_configfile(&self.config);
    }

    /// Stores a user as an `adduser` would, capacity included; false if it did not fit.
    pub fn insert(&mut self, user: StoredUser) -> bool {
        let key = user.user.uid.clone();
        if !self.users.contains_key(&key) && self.users.len() >= self.config.capacity {
            return false;
        }
        self.users.insert(key, user);
        true
    }

    /// Runs one message received on `TOPIC/cmd`.
    pub fn command(&mut self, payload: &[u8], now: i64) -> Outcome {
        let ignored = Outcome {
            ignored: true,
            ..Outcome::default()
        };
        // Not JSON, not for us, or no command: the firmware returns without a word.
        let Some(text) = std::str::from_utf8(payload).ok() else {
            return ignored;
        };
        let Ok(Value::Object(command)) = serde_json::from_str::<Value>(text) else {
            return ignored;
        };
        if command.get("doorip").and_then(Value::as_str) != Some(self.config.ip.as_str()) {
            return ignored;
        }
        let Some(cmd) = command.get("cmd").and_then(Value::as_str) else {
            return ignored;
        };
        let mut out = Outcome::default();
        match cmd {
            "adduser" => {
                match StoredUser::from_command(&command, text) {
                    Ok(user) => {
                        if !self.insert(user) {
                            tracing::debug!(hostname = %self.config.hostname, "flash full, user not stored");
                        }
                    }
                    Err(problem) => out.messages.push(self.error_event(&problem, text, now)),
                }
                out.messages.push(self.ack(cmd));
            }
            "deletuid" => {
                match uid_field(&command) {
                    Ok(uid) => {
                        self.users.remove(&uid);
                    }
                    Err(problem) => out.messages.push(self.error_event(&problem, text, now)),
                }
                out.messages.push(self.ack(cmd));
            }
            "deletusers" => {
                self.users.clear();
                out.messages.push(self.ack(cmd));
            }
            "getuserlist" => {
                let (shape, relays) = (self.config.userlist_shape, self.config.relays);
                out.messages
                    .extend(self.users.values().map(|u| u.list_entry(shape, relays)));
            }
            "opendoor" => {
                for pulses in &mut self.relay_pulses {
                    *pulses += 1;
                }
            }
            "getconf" => out
                .messages
                .push(self.reply("getconf", json!({ "configfile": self.configfile.clone() }))),
            "updateconf" => {
                match command.get("configfile") {
                    Some(Value::Object(file)) => {
                        self.configfile = Value::Object(file.clone());
                        out.reboot = true;
                    }
                    _ => out.messages.push(self.error_event(
                        "updateconf without a configfile object",
                        text,
                        now,
                    )),
                }
                out.messages.push(self.ack(cmd));
            }
            "deletlog" => out.messages.push(self.ack(cmd)),
            _ => return ignored,
        }
        out
    }

    /// A badge at the reader: the decision and the access event to publish.
    pub fn present(&mut self, uid: &[u8], now: i64) -> (EspRfidAccess, String) {
        let uid = self.config.uid_format.format(uid);
        // Looked up as the reader wrote it: a user stored in another form is unknown.
        let access = match self.users.get(&uid).map(|stored| &stored.user) {
            None => EspRfidAccess {
                access: AccessType::Denied,
                known: false,
                username: "Unknown".into(),
                uid: uid.clone(),
            },
            Some(user) => {
                let access = match user.acctype[0] {
                    1 if user.validuntil < now || user.validsince > now => AccessType::Expired,
                    1 => AccessType::Always,
                    99 => AccessType::Admin,
                    _ => AccessType::Disabled,
                };
                let (acctype, username) = (user.acctype, user.user.clone());
                if access.opens() {
                    self.pulse(acctype, access == AccessType::Admin);
                }
                EspRfidAccess {
                    access,
                    known: true,
                    username,
                    uid: uid.clone(),
                }
            }
        };
        let event = json!({
            "type": "access", "time": now, "isKnown": access.known.to_string(),
            "access": access.access.as_str(), "username": access.username, "uid": uid,
            "hostname": self.config.hostname, "doorName": self.config.door_name,
        });
        (access, event.to_string())
    }

    /// Relay 1 opens for any granted badge, the others where their acctype is 1; an
    /// admin opens them all.
    fn pulse(&mut self, acctype: [i64; 4], admin: bool) {
        for (i, pulses) in self.relay_pulses.iter_mut().enumerate() {
            if i == 0 || admin || acctype.get(i) == Some(&1) {
                *pulses += 1;
            }
        }
    }

    pub fn boot_message(&self, now: i64) -> String {
        // The firmware writes this uptime as the string "0".
        self.reply("boot", json!({ "time": now, "uptime": "0" }))
    }

    pub fn heartbeat(&self, now: i64, uptime: u64) -> String {
        self.reply("heartbeat", json!({ "time": now, "uptime": uptime }))
    }

    /// The content-free acknowledgement.
    fn ack(&self, cmd: &str) -> String {
        self.reply(cmd, json!({}))
    }

    fn reply(&self, kind: &str, fields: Value) -> String {
        let mut message = Map::new();
        message.insert("type".into(), json!(kind));
        if let Value::Object(fields) = fields {
            message.extend(fields);
        }
        message.insert("ip".into(), json!(self.config.ip));
        message.insert("hostname".into(), json!(self.config.hostname));
        Value::Object(message).to_string()
    }

    fn error_event(&self, desc: &str, data: &str, now: i64) -> String {
        json!({
            "type": "ERRO", "src": "mqtt", "desc": desc, "data": data, "time": now,
            "cmd": "event", "hostname": self.config.hostname,
        })
        .to_string()
    }
}

/// What `getconf` answers until an `updateconf` replaces it.
fn default_configfile(config: &EspRfidConfig) -> Value {
    json!({
        "command": "configfile",
        "general": { "hostnm": config.hostname, "restart": 0 },
        "network": { "ip": config.ip },
        "mqtt": { "enabled": 1, "topic": config.topic, "syncrate": config.heartbeat_seconds },
        "hardware": { "numrelays": config.relays },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::esprfid::{UidFormat, UserlistShape};

    const NOW: i64 = 1_750_000_000;

    fn device(config: EspRfidConfig) -> EspRfid {
        EspRfid::new(config)
    }

    fn run(esp: &mut EspRfid, command: Value) -> Outcome {
        esp.command(command.to_string().as_bytes(), NOW)
    }

    fn messages(outcome: &Outcome) -> Vec<Value> {
        outcome
            .messages
            .iter()
            .map(|m| serde_json::from_str(m).unwrap())
            .collect()
    }

    fn add(uid: &str, acctype: i64, validuntil: i64) -> Value {
        json!({"cmd": "adduser", "doorip": "192.168.1.31", "uid": uid, "user": "Ann",
               "acctype": acctype, "validsince": 0, "validuntil": validuntil})
    }

    #[test]
    fn acks_say_nothing_and_come_even_when_full() {
        let mut esp = device(EspRfidConfig {
            capacity: 1,
            ..EspRfidConfig::default()
        });
        let ack = json!({"type": "adduser", "ip": "192.168.1.31", "hostname": "esp-rfid"});
        assert_eq!(
            messages(&run(&mut esp, add("01", 1, NOW))),
            vec![ack.clone()]
        );
        assert_eq!(
            messages(&run(&mut esp, add("02", 1, NOW))),
            vec![ack.clone()]
        );
        assert_eq!(esp.users().count(), 1);
        // Rewriting a stored user needs no room.
        run(&mut esp, add("01", 99, NOW));
        assert_eq!(esp.users().next().unwrap().acctype[0], 99);
    }

    #[test]
    fn other_doors_and_garbage_get_no_answer() {
        let mut esp = device(EspRfidConfig::default());
        for payload in [
            json!({"cmd": "adduser", "doorip": "192.168.1.32", "uid": "01"}).to_string(),
            json!({"cmd": "adduser", "uid": "01"}).to_string(),
            json!({"cmd": "reboot", "doorip": "192.168.1.31"}).to_string(),
            "{not json".into(),
            "[1,2]".into(),
        ] {
            let outcome = esp.command(payload.as_bytes(), NOW);
            assert!(outcome.ignored && outcome.messages.is_empty(), "{payload}");
        }
        assert_eq!(esp.users().count(), 0);
    }

    #[test]
    fn a_bad_user_is_logged_and_still_acknowledged() {
        let mut esp = device(EspRfidConfig::default());
        let out = messages(&run(
            &mut esp,
            json!({"cmd": "adduser", "doorip": "192.168.1.31", "user": "Ann"}),
        ));
        assert_eq!(out[0]["type"], "ERRO");
        assert_eq!(out[0]["cmd"], "event");
        assert_eq!(out[1]["type"], "adduser");
        assert_eq!(esp.users().count(), 0);
    }

    #[test]
    fn list_delete_and_config() {
        let mut esp = device(EspRfidConfig {
            userlist_shape: UserlistShape::Userfile,
            ..EspRfidConfig::default()
        });
        run(&mut esp, add("0A", 1, NOW));
        run(&mut esp, add("0b", 1, NOW));
        let list = messages(&run(
            &mut esp,
            json!({"cmd": "getuserlist", "doorip": "192.168.1.31"}),
        ));
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["uid"], "0a");
        run(
            &mut esp,
            json!({"cmd": "deletuid", "doorip": "192.168.1.31", "uid": "0B"}),
        );
        assert_eq!(esp.users().count(), 1);
        run(
            &mut esp,
            json!({"cmd": "deletusers", "doorip": "192.168.1.31"}),
        );
        let empty = run(
            &mut esp,
            json!({"cmd": "getuserlist", "doorip": "192.168.1.31"}),
        );
        assert!(empty.messages.is_empty() && !empty.ignored);

        let update = run(
            &mut esp,
            json!({"cmd": "updateconf", "doorip": "192.168.1.31", "configfile": {"a": 1}}),
        );
        assert!(update.reboot);
        let conf = messages(&run(
            &mut esp,
            json!({"cmd": "getconf", "doorip": "192.168.1.31"}),
        ));
        assert_eq!(conf[0]["configfile"], json!({"a": 1}));
        run(
            &mut esp,
            json!({"cmd": "opendoor", "doorip": "192.168.1.31"}),
        );
        assert_eq!(esp.relay_pulses(), [1]);
    }

    #[test]
    fn access_decisions() {
        let mut esp = device(EspRfidConfig {
            relays: 3,
            uid_format: UidFormat::NoLeadingZeros,
            ..EspRfidConfig::default()
        });
        run(&mut esp, add("4a22b91", 1, NOW + 10));
        run(&mut esp, add("4a22b92", 1, NOW - 1));
        run(&mut esp, add("4a22b93", 0, NOW + 10));
        run(&mut esp, add("4a22b94", 99, 0));
        let mut at = |last: u8| esp.present(&[0x04, 0xA2, 0x2B, last], NOW).0.access;
        assert_eq!(at(0x91), AccessType::Always);
        assert_eq!(at(0x92), AccessType::Expired);
        assert_eq!(at(0x93), AccessType::Disabled);
        assert_eq!(at(0x94), AccessType::Admin);
        assert_eq!(at(0x95), AccessType::Denied);
        assert_eq!(esp.relay_pulses(), [2, 1, 1]);
        let (_, event) = esp.present(&[0x04, 0xA2, 0x2B, 0x95], NOW);
        let event: Value = serde_json::from_str(&event).unwrap();
        assert_eq!(event["isKnown"], "false");
        assert_eq!(event["uid"], "4a22b95");
    }
}
