//! A simulated esp-rfid door controller (esprfid/esp-rfid firmware, v2 MQTT protocol),
//! following `shared/devices/esp-rfid-mqtt.md`.
//!
//! - [`machine`]: the controller as plain state: users kept in "flash", a command in,
//!   the messages it publishes out; time is an argument, so it is tested without MQTT.
//! - [`user`]: one user file, i.e. the `adduser` message as received, and what it says.
//! - [`device`]: [`EspRfidDevice`], the cloneable handle: badges, reboots, snapshot,
//!   offline switch.
//! - `link`: the MQTT task (rumqttc): connects, subscribes to `TOPIC/cmd` on each
//!   connection, publishes on `TOPIC/send`, heartbeats.
//! - [`faults`]: commands lost on arrival and messages lost on the way out.
//! - [`config`]: the `[broker]`, `[mqtt]` and `[[esprfid]]` sections of `gardien-sim`.

pub mod config;
pub mod device;
pub mod faults;
mod link;
pub mod machine;
pub mod user;

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use device::{EspRfidDevice, EspRfidError, EspRfidSnapshot};
pub use faults::EspRfidFaults;
pub use machine::{AccessType, EspRfidAccess};
pub use user::{EspRfidUser, MAX_UID_LEN};

/// How the reader writes a badge UID in access events (and so how a user's uid must
/// be written for the badge to be found).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UidFormat {
    /// Lowercase hex, two digits per byte: 04a22b91.
    #[default]
    Padded,
    /// Lowercase hex with the leading zeros of the whole number stripped: 4a22b91.
    NoLeadingZeros,
}

impl UidFormat {
    pub fn format(self, bytes: &[u8]) -> String {
        let padded: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        match self {
            UidFormat::Padded => padded,
            UidFormat::NoLeadingZeros => match padded.trim_start_matches('0') {
                "" if !padded.is_empty() => "0".to_owned(),
                stripped => stripped.to_owned(),
            },
        }
    }
}

/// What `getuserlist` publishes for each user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UserlistShape {
    /// The README's `{"command":"userfile","uid":…,"acctype":…,…}`, numbers as numbers.
    Userfile,
    /// What the firmware does: the `adduser` message exactly as it was received.
    #[default]
    Stored,
}

/// One simulated controller.
#[derive(Debug, Clone, PartialEq)]
pub struct EspRfidConfig {
    /// Base topic: the device listens on `TOPIC/cmd` and speaks on `TOPIC/send`.
    pub topic: String,
    /// Its IP address, which a command's `doorip` must equal.
    pub ip: String,
    /// Also its MQTT client id.
    pub hostname: String,
    /// `doorName` in access events.
    pub door_name: String,
    /// Relays fitted, 1 to 4.
    pub relays: u8,
    pub heartbeat_seconds: u64,
    /// Users the flash holds; an `adduser` beyond is acknowledged and not stored.
    pub capacity: usize,
    pub uid_format: UidFormat,
    pub userlist_shape: UserlistShape,
    /// Wait before trying the broker again after a failed or lost connection (the
    /// firmware waits 60 s).
    pub reconnect_delay: Duration,
}

impl Default for EspRfidConfig {
    fn default() -> Self {
        EspRfidConfig {
            topic: "esprfid".into(),
            ip: "192.168.1.31".into(),
            hostname: "esp-rfid".into(),
            door_name: "esp-rfid".into(),
            relays: 1,
            heartbeat_seconds: 180,
            capacity: 1000,
            uid_format: UidFormat::default(),
            userlist_shape: UserlistShape::default(),
            reconnect_delay: Duration::from_secs(60),
        }
    }
}

impl EspRfidConfig {
    /// What is wrong with this configuration, in words, if anything.
    pub fn check(&self) -> Result<(), String> {
        if self.topic.is_empty() || self.topic.contains(['+', '#']) {
            return Err(format!(
                "topic {:?} must be a plain topic, without + or #",
                self.topic
            ));
        }
        if self.ip.is_empty() || self.hostname.is_empty() {
            return Err("ip and hostname must not be empty".into());
        }
        if !(1..=4).contains(&self.relays) {
            return Err(format!("relays is {}; esp-rfid drives 1 to 4", self.relays));
        }
        if self.heartbeat_seconds == 0 {
            return Err("heartbeat_seconds must be at least 1".into());
        }
        Ok(())
    }

    pub fn cmd_topic(&self) -> String {
        format!("{}/cmd", self.topic)
    }

    pub fn send_topic(&self) -> String {
        format!("{}/send", self.topic)
    }
}

/// Where the device finds its broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttBroker {
    pub host: String,
    pub port: u16,
    /// Username and password, if the broker asks for them.
    pub credentials: Option<(String, String)>,
}

impl MqttBroker {
    pub fn new(host: impl Into<String>, port: u16) -> MqttBroker {
        MqttBroker {
            host: host.into(),
            port,
            credentials: None,
        }
    }

    pub fn with_credentials(mut self, username: &str, password: &str) -> MqttBroker {
        self.credentials = Some((username.to_owned(), password.to_owned()));
        self
    }
}

impl From<std::net::SocketAddr> for MqttBroker {
    fn from(addr: std::net::SocketAddr) -> Self {
        MqttBroker::new(addr.ip().to_string(), addr.port())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_formats() {
        let uid = [0x04, 0xA2, 0x2B, 0x91];
        assert_eq!(UidFormat::Padded.format(&uid), "04a22b91");
        assert_eq!(UidFormat::NoLeadingZeros.format(&uid), "4a22b91");
        // Only the leading zeros of the whole number go, not those inside.
        assert_eq!(UidFormat::NoLeadingZeros.format(&[0x00, 0x0A, 0x05]), "a05");
        assert_eq!(UidFormat::NoLeadingZeros.format(&[0, 0]), "0");
    }

    #[test]
    fn configurations_are_checked() {
        assert!(EspRfidConfig::default().check().is_ok());
        let bad = [
            EspRfidConfig {
                relays: 5,
                ..EspRfidConfig::default()
            },
            EspRfidConfig {
                topic: "site/#".into(),
                ..EspRfidConfig::default()
            },
            EspRfidConfig {
                heartbeat_seconds: 0,
                ..EspRfidConfig::default()
            },
        ];
        for config in bad {
            assert!(config.check().is_err(), "{config:?}");
        }
    }
}
