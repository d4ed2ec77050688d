//! The `[broker]`, `[mqtt]` and `[[esprfid]]` parts of the `gardien-sim` file (see
//! `simulators/examples/esprfid.toml`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{
    EspRfidConfig, EspRfidDevice, EspRfidFaults, EspRfidUser, MqttBroker, UidFormat, UserlistShape,
};
use crate::broker::BrokerOptions;

/// An embedded MQTT broker to start with the simulation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    /// Default 127.0.0.1:1883; port 0 picks a free port (printed at start).
    pub listen: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl BrokerConfig {
    pub fn options(&self) -> Result<BrokerOptions, String> {
        let listen = self.listen.as_deref().unwrap_or("127.0.0.1:1883");
        let listen: SocketAddr = listen
            .parse()
            .map_err(|_| format!("listen {listen:?} is not an address like 127.0.0.1:1883"))?;
        Ok(BrokerOptions {
            listen,
            credentials: credentials(&self.username, &self.password)?,
            ..BrokerOptions::default()
        })
    }

    /// How devices reach the broker started from this section at `addr`.
    pub fn client_side(&self, addr: SocketAddr) -> Result<MqttBroker, String> {
        // A broker listening on every interface is reached on loopback.
        let ip = match addr.ip() {
            ip if ip.is_unspecified() => Ipv4Addr::LOCALHOST.into(),
            ip => ip,
        };
        Ok(MqttBroker {
            credentials: credentials(&self.username, &self.password)?,
            ..MqttBroker::from(SocketAddr::new(ip, addr.port()))
        })
    }
}

/// A broker outside the simulation (or any broker, named by address).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Default 127.0.0.1.
    pub host: Option<String>,
    /// Default 1883.
    pub port: Option<u16>,
    pub username: Option<String>,
    pub password: Option<String>,
}

impl MqttConfig {
    pub fn broker(&self) -> Result<MqttBroker, String> {
        Ok(MqttBroker {
            host: self.host.clone().unwrap_or_else(|| "127.0.0.1".into()),
            port: self.port.unwrap_or(1883),
            credentials: credentials(&self.username, &self.password)?,
        })
    }
}

fn credentials(
    username: &Option<String>,
    password: &Option<String>,
) -> Result<Option<(String, String)>, String> {
    match (username, password) {
        (Some(user), Some(password)) => Ok(Some((user.clone(), password.clone()))),
        (None, None) => Ok(None),
        _ => Err("give both username and password, or neither".into()),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EspRfidDeviceConfig {
    pub name: String,
    /// Base topic; devices of a site usually share it.
    pub topic: String,
    pub ip: String,
    /// Default: the name. Also the MQTT client id, so unique per broker.
    pub hostname: Option<String>,
    /// Default: the hostname.
    pub door_name: Option<String>,
    pub relays: Option<u8>,
    pub heartbeat_seconds: Option<u64>,
    pub capacity: Option<usize>,
    pub uid_format: Option<UidFormat>,
    pub userlist_shape: Option<UserlistShape>,
    /// Wait before reconnecting to the broker (default 60000, the firmware's).
    pub reconnect_ms: Option<u64>,
    /// This device's broker, instead of `[mqtt]` or the embedded `[broker]`.
    pub mqtt: Option<MqttConfig>,
    #[serde(default)]
    pub users: Vec<UserConfig>,
    #[serde(default)]
    pub faults: EspRfidFaultConfig,
}

impl EspRfidDeviceConfig {
    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.name)
    }
}

/// A user already in flash at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub uid: String,
    #[serde(default)]
    pub user: String,
    /// Default 1 (always).
    pub acctype: Option<i64>,
    #[serde(default)]
    pub acctype2: i64,
    #[serde(default)]
    pub acctype3: i64,
    #[serde(default)]
    pub acctype4: i64,
    #[serde(default)]
    pub validsince: i64,
    /// Default: 2100-01-01. (A client's `adduser` without it means 0, expired.)
    pub validuntil: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EspRfidFaultConfig {
    #[serde(default)]
    pub drop_commands: f64,
    #[serde(default)]
    pub drop_messages: f64,
    #[serde(default)]
    pub offline: bool,
}

/// Where a client finds an esp-rfid; printed as one JSON line at start.
#[derive(Debug, Clone, Serialize)]
pub struct EspRfidEndpoint {
    pub name: String,
    pub kind: &'static str,
    /// host:port of its broker.
    pub mqtt: String,
    pub topic: String,
    pub ip: String,
    pub hostname: String,
}

impl EspRfidEndpoint {
    pub fn new(name: &str, device: &EspRfidDevice) -> EspRfidEndpoint {
        let config = device.config();
        let broker = device.broker();
        EspRfidEndpoint {
            name: name.to_owned(),
            kind: "esprfid",
            mqtt: format!("{}:{}", broker.host, broker.port),
            topic: config.topic.clone(),
            ip: config.ip.clone(),
            hostname: config.hostname.clone(),
        }
    }
}

/// Starts one device; `default_broker` is `[mqtt]`, else the embedded broker.
pub fn build(
    cfg: &EspRfidDeviceConfig,
    default_broker: Option<&MqttBroker>,
    seed: Option<u64>,
) -> Result<EspRfidDevice, String> {
    let broker = match (&cfg.mqtt, default_broker) {
        (Some(mqtt), _) => mqtt.broker()?,
        (None, Some(broker)) => broker.clone(),
        (None, None) => return Err("no broker: give [broker], [mqtt] or this device's mqtt".into()),
    };
    let defaults = EspRfidConfig::default();
    let hostname = cfg.hostname().to_owned();
    let config = EspRfidConfig {
        topic: cfg.topic.clone(),
        ip: cfg.ip.clone(),
        door_name: cfg.door_name.clone().unwrap_or_else(|| hostname.clone()),
        hostname,
        relays: cfg.relays.unwrap_or(defaults.relays),
        heartbeat_seconds: cfg.heartbeat_seconds.unwrap_or(defaults.heartbeat_seconds),
        capacity: cfg.capacity.unwrap_or(defaults.capacity),
        uid_format: cfg.uid_format.unwrap_or(defaults.uid_format),
        userlist_shape: cfg.userlist_shape.unwrap_or(defaults.userlist_shape),
        reconnect_delay: cfg
            .reconnect_ms
            .map_or(defaults.reconnect_delay, Duration::from_millis),
    };
    let faults = seed.map_or_else(EspRfidFaults::default, EspRfidFaults::seeded);
    faults.set_drop_commands(cfg.faults.drop_commands);
    faults.set_drop_messages(cfg.faults.drop_messages);
    let users: Vec<EspRfidUser> = cfg
        .users
        .iter()
        .map(|user| EspRfidUser {
            uid: user.uid.to_ascii_lowercase(),
            user: user.user.clone(),
            acctype: [
                user.acctype.unwrap_or(1),
                user.acctype2,
                user.acctype3,
                user.acctype4,
            ],
            validsince: user.validsince,
            validuntil: user.validuntil.unwrap_or(4_102_444_800),
        })
        .collect();
    EspRfidDevice::start_with(config, broker, faults, &users, cfg.faults.offline)
        .map_err(|e| e.to_string())
}
