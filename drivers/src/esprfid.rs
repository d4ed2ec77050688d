//! esp-rfid door controllers over MQTT (the public esp-rfid v2 protocol).
//!
//! The device takes JSON commands on `TOPIC/cmd` and answers on `TOPIC/send`. Its
//! acknowledgements name no uid and come even when a command failed, and it may drop
//! a command without trace, so nothing here is believed until the user list is read
//! back: [`EspRfid::identify`] reads the list and fingerprints it, and the sync
//! engine's verification compares that fingerprint with the table it expects.
//!
//! A list read ends with the answer to `getconf` (commands are handled in order), and
//! an empty list is read twice, since a lost `getuserlist` looks like an empty device.
//! A user message lost on its way out can still make a list look shorter than it is:
//! the next routine visit, which reads the list again, corrects what that confirmed.
//!
//! A controller's address is `TOPIC@IP`: the topic it listens on and the IP that
//! commands must name in `doorip` (several devices of a site usually share a topic).

use std::time::Duration;

use async_trait::async_trait;
use rumqttc::QoS;
use serde_json::{json, Map, Value};
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

use crate::digest::table_digest;
use crate::error::{DriverError, Result};
use crate::lock::{
    Applied, Credential, Entry, EventBatch, Fingerprint, Identity, LockController, StoredEntry,
    Validity,
};
use crate::mqtt::{MqttChannel, MqttMessage};
use crate::profile::{DeviceProfile, EspRfidLayout, Layout, UidText};

/// Where an esp-rfid controller listens, parsed from `TOPIC@IP`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspRfidAddress {
    pub topic: String,
    pub ip: String,
}

impl EspRfidAddress {
    pub fn parse(address: &str) -> std::result::Result<EspRfidAddress, String> {
        let (topic, ip) = address.trim().rsplit_once('@').ok_or_else(|| {
            format!("{address:?}: an esp-rfid address is TOPIC@IP, e.g. esprfid@192.168.1.31")
        })?;
        if topic.is_empty() || topic.contains(['+', '#']) || topic.ends_with('/') {
            return Err(format!(
                "{address:?}: the topic must be a plain MQTT topic, without + or # or a final /"
            ));
        }
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(format!(
                "{address:?}: {ip:?} is not an IP address (the device's doorip)"
            ));
        }
        Ok(EspRfidAddress {
            topic: topic.to_string(),
            ip: ip.to_string(),
        })
    }

    pub fn command_topic(&self) -> String {
        format!("{}/cmd", self.topic)
    }

    pub fn send_topic(&self) -> String {
        format!("{}/send", self.topic)
    }
}

/// Validity written when a key has none: esp-rfid refuses a user once `validuntil`
/// has passed, so "no end" is a date far ahead (2100-01-01).
pub const NO_END: i64 = 4_102_444_800;

/// The `user` field of the users gardien writes: it shows in the device's log and web
/// page, so it says who manages the entry and nothing about the resident.
const USER_NAME: &str = "gardien";

pub struct EspRfid {
    profile: DeviceProfile,
    layout: EspRfidLayout,
    channel: MqttChannel,
    address: EspRfidAddress,
    /// The list read by the last `identify`, until the next write.
    list: Option<Vec<StoredEntry>>,
    hostname: Option<String>,
    messages: u64,
}

impl EspRfid {
    /// Prepares a driver for the controller at `address` (`TOPIC@IP`) and listens to
    /// its answers. Nothing is sent yet.
    pub async fn connect(
        profile: &DeviceProfile,
        channel: &MqttChannel,
        address: &str,
    ) -> Result<EspRfid> {
        let Layout::EspRfidMqtt(layout) = &profile.layout else {
            return Err(DriverError::Unsupported(format!(
                "profile {} is not an esp-rfid profile",
                profile.id
            )));
        };
        let address = EspRfidAddress::parse(address).map_err(DriverError::Unsupported)?;
        channel
            .ensure_subscribed(&address.send_topic(), QoS::AtMostOnce)
            .await?;
        Ok(EspRfid {
            profile: profile.clone(),
            layout: layout.clone(),
            channel: channel.clone(),
            address,
            list: None,
            hostname: None,
            messages: 0,
        })
    }

    /// Deletes every user (`deletusers`).
    pub async fn delete_all(&mut self) -> Result<()> {
        self.command(json!({"cmd": "deletusers"}), Some("deletusers"))
            .await
    }

    /// Publishes a command; with `ack`, waits a little for the content-free
    /// acknowledgement, which paces commands but proves nothing.
    async fn command(&mut self, mut command: Value, ack: Option<&str>) -> Result<()> {
        if let Some(fields) = command.as_object_mut() {
            fields.insert("doorip".into(), Value::String(self.address.ip.clone()));
        }
        self.list = None;
        let mut incoming = self.channel.listen();
        self.publish(&command).await?;
        let Some(ack) = ack else {
            return Ok(());
        };
        let deadline = Instant::now() + Duration::from_millis(self.layout.ack_timeout_ms);
        while let Some(message) = self.next_message(&mut incoming, deadline).await? {
            let fields = message_fields(&message);
            if fields.as_ref().is_some_and(|fields| {
                text(fields, "type") == Some(ack) && self.is_from_this_device(fields)
            }) {
                break;
            }
        }
        Ok(())
    }

    async fn publish(&mut self, command: &Value) -> Result<()> {
        let payload = serde_json::to_vec(command)
            .map_err(|e| DriverError::Protocol(format!("command not encodable: {e}")))?;
        self.channel
            .publish(&self.address.command_topic(), QoS::AtLeastOnce, payload)
            .await?;
        self.messages += 1;
        Ok(())
    }

    /// The next message on this device's answer topic before `deadline`; `None` at the
    /// deadline.
    async fn next_message(
        &mut self,
        incoming: &mut tokio::sync::broadcast::Receiver<MqttMessage>,
        deadline: Instant,
    ) -> Result<Option<MqttMessage>> {
        let send_topic = self.address.send_topic();
        loop {
            match tokio::time::timeout_at(deadline, incoming.recv()).await {
                Err(_) => return Ok(None),
                Ok(Ok(message)) if *message.topic == *send_topic => {
                    self.messages += 1;
                    return Ok(Some(message));
                }
                Ok(Ok(_)) => {}
                Ok(Err(RecvError::Lagged(lost))) => {
                    return Err(DriverError::Transport {
                        operation: "esp-rfid answer",
                        reason: format!("{lost} incoming MQTT messages were lost by a slow reader"),
                    })
                }
                Ok(Err(RecvError::Closed)) => {
                    return Err(DriverError::Transport {
                        operation: "esp-rfid answer",
                        reason: "the MQTT connection is gone".into(),
                    })
                }
            }
        }
    }

    /// Reads the user list. The protocol has no end-of-list marker and sends nothing
    /// for an empty list, so `getconf` follows `getuserlist`: the device handles
    /// commands in order, and its configuration closes the list. No configuration, no
    /// list: a device that dropped both (or is offline) fails the read.
    async fn read_list_once(&mut self) -> Result<Vec<Entry>> {
        let topic = self.address.command_topic();
        // A device seen to name itself in its list (the firmware's stored-command
        // shape) is read alongside the others; one whose users carry no address, or
        // not known yet, is read alone on its topic.
        let names_itself = self.channel.names_itself(&topic, &self.address.ip);
        let lock = self.channel.topic_lock(&topic);
        let _alone = match names_itself {
            true => None,
            false => Some(lock.lock().await),
        };
        let mut incoming = self.channel.listen();
        self.publish(&json!({"cmd": "getuserlist", "doorip": self.address.ip}))
            .await?;
        self.publish(&json!({"cmd": "getconf", "doorip": self.address.ip}))
            .await?;
        let timeout = Duration::from_millis(self.layout.list_timeout_ms);
        let end = Instant::now() + timeout;
        let mut users: Vec<Entry> = Vec::new();
        let (mut named, mut unnamed) = (0usize, 0usize);
        loop {
            let Some(message) = self.next_message(&mut incoming, end).await? else {
                return Err(DriverError::Timeout {
                    operation: "esp-rfid user list (getuserlist, then getconf)",
                    after: timeout,
                });
            };
            let Some(fields) = message_fields(&message) else {
                continue;
            };
            let address = text(&fields, "ip").or_else(|| text(&fields, "doorip"));
            match address {
                Some(ip) if ip != self.address.ip => continue,
                // Read alongside others: a message naming nobody is not ours.
                None if names_itself => {
                    unnamed += usize::from(is_user(&fields));
                    continue;
                }
                _ => {}
            }
            if is_configuration(&fields) {
                if let Some(name) = text(&fields, "hostname") {
                    self.hostname = Some(name.to_string());
                }
                if names_itself && users.is_empty() && unnamed > 0 {
                    // Perhaps our device changed shape: learn again, alone.
                    self.channel
                        .set_names_itself(&topic, &self.address.ip, false);
                    return Err(DriverError::Protocol(
                        "an empty list while unnamed users went by: read again alone".into(),
                    ));
                }
                if !names_itself && named + unnamed > 0 {
                    self.channel
                        .set_names_itself(&topic, &self.address.ip, unnamed == 0);
                }
                return Ok(users);
            }
            if !is_user(&fields) {
                continue;
            }
            if address.is_some() {
                named += 1;
            } else {
                unnamed += 1;
            }
            match self.user_entry(&fields) {
                Ok(entry) => users.push(entry),
                Err(reason) => tracing::warn!(
                    topic = %self.address.topic,
                    ip = %self.address.ip,
                    "esp-rfid user ignored: {reason}"
                ),
            }
        }
    }

    /// The user list, in slot order. An empty list is read twice: a `getuserlist`
    /// lost on its own (low memory) looks exactly like an empty device.
    async fn read_list(&mut self) -> Result<Vec<StoredEntry>> {
        let mut users = self.read_list_once().await?;
        if users.is_empty() {
            users = self.read_list_once().await?;
        }
        users.sort_by(|a, b| a.credential.cmp(&b.credential));
        users.dedup_by(|a, b| a.credential == b.credential);
        Ok(users
            .into_iter()
            .enumerate()
            .map(|(slot, entry)| StoredEntry {
                slot: slot as u16,
                entry,
            })
            .collect())
    }

    /// The host name the device gave in its last answer; access events name it.
    pub fn hostname(&self) -> Option<&str> {
        self.hostname.as_deref()
    }

    /// Answers carry the device's `ip` (acks, heartbeats) or the `doorip` it was sent
    /// (stored users); a message carrying neither is taken as ours.
    fn is_from_this_device(&self, fields: &Map<String, Value>) -> bool {
        match text(fields, "ip").or_else(|| text(fields, "doorip")) {
            Some(ip) => ip == self.address.ip,
            None => true,
        }
    }

    fn user_entry(&self, fields: &Map<String, Value>) -> std::result::Result<Entry, String> {
        let uid_text = text(fields, "uid").ok_or("no uid")?;
        let keys = self.profile.key_support();
        let uid = uid_from_hex(uid_text, &keys.badge_uid_lengths).ok_or_else(|| {
            format!(
                "uid {uid_text:?} is not a hex uid of {:?} bytes",
                keys.badge_uid_lengths
            )
        })?;
        let mut doors = 0u16;
        for relay in 0..keys.max_doors {
            let name = match relay {
                0 => "acctype".to_string(),
                n => format!("acctype{}", n + 1),
            };
            // 1 = always, 99 = admin: both open; 0 or absent = this relay stays shut.
            if matches!(number(fields, &name), Some(1 | 99)) {
                doors |= 1 << relay;
            }
        }
        Ok(Entry {
            credential: Credential::Uid(uid),
            doors,
        })
    }

    fn add_command(&self, entry: &Entry, validity: Option<Validity>) -> Result<Value> {
        let uid = self.uid_hex(&entry.credential)?;
        let doors = self.profile.check_door_mask(entry.doors)?;
        let validity = validity.unwrap_or(Validity {
            since: 0,
            until: NO_END,
        });
        let mut command = json!({
            "cmd": "adduser",
            "uid": uid,
            "user": USER_NAME,
            "validsince": validity.since.max(0),
            "validuntil": validity.until.max(0),
        });
        if let Some(fields) = command.as_object_mut() {
            for relay in 0..self.profile.key_support().max_doors {
                let name = match relay {
                    0 => "acctype".to_string(),
                    n => format!("acctype{}", n + 1),
                };
                let allowed = doors & (1 << relay) != 0;
                fields.insert(name, Value::from(u8::from(allowed)));
            }
        }
        Ok(command)
    }

    fn uid_hex(&self, credential: &Credential) -> Result<String> {
        let uid = credential.uid().ok_or_else(|| {
            DriverError::Unsupported(format!("a {} stores badge uids only", self.profile.model))
        })?;
        let padded: String = uid.iter().map(|byte| format!("{byte:02x}")).collect();
        let hex = match self.layout.uid_text {
            UidText::Padded => padded,
            UidText::NoLeadingZeros => match padded.trim_start_matches('0') {
                "" => "0".to_string(),
                significant => significant.to_string(),
            },
        };
        if hex.len() > self.layout.max_uid_hex {
            return Err(DriverError::Unsupported(format!(
                "uid {hex} is longer than the {} hex digits a {} stores",
                self.layout.max_uid_hex, self.profile.model
            )));
        }
        Ok(hex)
    }
}

#[async_trait]
impl LockController for EspRfid {
    fn profile(&self) -> &DeviceProfile {
        &self.profile
    }

    /// Reads the user list; its digest is the fingerprint, so a second `identify`
    /// after writes is the read-back that confirms them.
    async fn identify(&mut self) -> Result<Identity> {
        let list = self.read_list().await?;
        let digest = table_digest(list.iter().map(|stored| &stored.entry));
        let used = list.len() as u16;
        self.list = Some(list);
        Ok(Identity {
            model_code: 0,
            firmware: (self.profile.firmware_major, 0),
            capacity: self.layout.capacity,
            used: Some(used),
            fingerprint: Fingerprint::ListDigest(digest),
        })
    }

    async fn read_table(&mut self) -> Result<Vec<StoredEntry>> {
        match self.list.clone() {
            Some(list) => Ok(list),
            None => {
                let list = self.read_list().await?;
                self.list = Some(list.clone());
                Ok(list)
            }
        }
    }

    async fn add(&mut self, entry: &Entry) -> Result<Applied> {
        self.add_valid(entry, None).await
    }

    async fn add_valid(&mut self, entry: &Entry, validity: Option<Validity>) -> Result<Applied> {
        let command = self.add_command(entry, validity)?;
        self.command(command, Some("adduser")).await?;
        Ok(Applied::Done)
    }

    async fn remove(&mut self, credential: &Credential) -> Result<Applied> {
        let uid = self.uid_hex(credential)?;
        self.command(json!({"cmd": "deletuid", "uid": uid}), Some("deletuid"))
            .await?;
        Ok(Applied::Done)
    }

    /// `adduser` replaces a user's file, relays and dates included.
    async fn set_doors(&mut self, entry: &Entry) -> Result<Applied> {
        self.add(entry).await
    }

    async fn set_doors_valid(
        &mut self,
        entry: &Entry,
        validity: Option<Validity>,
    ) -> Result<Applied> {
        self.add_valid(entry, validity).await
    }

    /// esp-rfid pulses all its relays: `door` is checked, not sent.
    async fn open_door(&mut self, door: u8) -> Result<()> {
        self.profile.check_door_number(door)?;
        self.command(json!({"cmd": "opendoor"}), None).await
    }

    async fn persist(&mut self) -> Result<()> {
        Ok(())
    }

    async fn read_events(&mut self, _cursor: u64) -> Result<EventBatch> {
        Err(DriverError::Unsupported(
            "esp-rfid publishes its access events; they are not polled".into(),
        ))
    }

    async fn read_clock(&mut self) -> Result<Option<u32>> {
        Ok(None)
    }

    async fn set_clock(&mut self, _unix_time: u32) -> Result<()> {
        Err(DriverError::Unsupported(
            "esp-rfid takes its time from NTP".into(),
        ))
    }

    fn transactions(&self) -> u64 {
        self.messages
    }

    fn device_name(&self) -> Option<String> {
        self.hostname.clone()
    }
}

fn message_fields(message: &MqttMessage) -> Option<Map<String, Value>> {
    match serde_json::from_slice::<Value>(&message.payload) {
        Ok(Value::Object(fields)) => Some(fields),
        _ => None,
    }
}

/// The answer to `getconf`: the device's configuration file.
fn is_configuration(fields: &Map<String, Value>) -> bool {
    text(fields, "type") == Some("getconf") || fields.contains_key("configfile")
}

/// A user of the list, in the README shape or as the stored `adduser` command.
fn is_user(fields: &Map<String, Value>) -> bool {
    text(fields, "command") == Some("userfile") || text(fields, "cmd") == Some("adduser")
}

fn text<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a str> {
    fields.get(name).and_then(Value::as_str)
}

/// A number, written as a JSON number or a numeric string (the firmware stores what
/// it was sent).
pub fn number(fields: &Map<String, Value>, name: &str) -> Option<i64> {
    match fields.get(name)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The uid bytes of a uid as esp-rfid reports it: hex in any case, possibly without
/// its leading zeros, padded back to the shortest badge length that holds it.
pub fn uid_from_hex(text: &str, lengths: &[usize]) -> Option<Vec<u8>> {
    let digits = text.trim();
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let significant = digits.trim_start_matches('0');
    let longest = lengths.iter().copied().max()? * 2;
    // Leading zeros written out count (a 7-byte uid may start with zero bytes);
    // beyond the longest uid, only the significant digits do.
    let wanted = if digits.len() <= longest {
        digits.len()
    } else {
        significant.len()
    };
    let length = lengths
        .iter()
        .copied()
        .filter(|len| len * 2 >= wanted.max(1))
        .min()?;
    let padded = format!("{significant:0>width$}", width = length * 2);
    (0..padded.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(padded.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_name_a_topic_and_an_ip() {
        let address = EspRfidAddress::parse("site/doors@192.168.1.31").unwrap();
        assert_eq!(address.command_topic(), "site/doors/cmd");
        assert_eq!(address.ip, "192.168.1.31");
        assert!(EspRfidAddress::parse("site").is_err());
        assert!(EspRfidAddress::parse("site/#@192.168.1.31").is_err());
        assert!(EspRfidAddress::parse("site@door-1").is_err());
    }

    #[test]
    fn uids_without_leading_zeros_come_back_to_their_length() {
        let lengths = [4, 7];
        assert_eq!(
            uid_from_hex("4a22b91", &lengths),
            Some(vec![0x04, 0xA2, 0x2B, 0x91])
        );
        assert_eq!(
            uid_from_hex("04A22B91", &lengths),
            Some(vec![0x04, 0xA2, 0x2B, 0x91])
        );
        assert_eq!(uid_from_hex("12", &lengths), Some(vec![0, 0, 0, 0x12]));
        assert_eq!(
            uid_from_hex("4d1a2b3c4d5e6f", &lengths),
            Some(vec![0x4d, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e, 0x6f])
        );
        assert_eq!(
            uid_from_hex("1a2b3c4d5", &lengths),
            Some(vec![0, 0, 0x01, 0xa2, 0xb3, 0xc4, 0xd5])
        );
        assert_eq!(uid_from_hex("zz", &lengths), None);
        assert_eq!(uid_from_hex("", &lengths), None);
        assert_eq!(uid_from_hex("1a2b3c4d5e6f7a8b", &lengths), None);
    }
}
