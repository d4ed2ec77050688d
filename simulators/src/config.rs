//! The `gardien-sim` configuration file, and starting what it describes.
//!
//! ```toml
//! seed = 7                       # optional: makes every fault draw repeatable
//! ground_truth = "truth.json"    # optional: where the meter scenarios are recorded
//!
//! [clock]                        # the virtual clock meters live on (default: now, running)
//! start = "2025-01-06T00:00:00Z"
//! running = true                 # false: only the `advance` command moves it
//!
//! [[bus]]                        # an RTU line; `pty = true` makes a PtyLink
//! name = "basement"
//! pty = true
//! baud = 9600
//!
//! [[device]]
//! name = "hall"
//! kind = "px2"                   # or "kl8", or "mbg250" (see `mbg::config`)
//! listen = "127.0.0.1:0"         # TCP (the default), or `port = 0`, or `bus = "basement"`
//! entries = [{ uid = "04A22B91", doors = [1, 2] }]
//! faults = { latency_ms = 20, drop = 0.01 }
//!
//! [broker]                       # optional: an embedded MQTT broker
//! listen = "127.0.0.1:1883"      # port 0 picks one; printed as {"broker":"…"}
//!
//! [[esprfid]]                    # an esp-rfid on MQTT (see examples/esprfid.toml);
//! name = "gate"                  # it uses its own `mqtt`, else [mqtt], else [broker]
//! topic = "site"
//! ip = "192.168.1.31"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_modbus::ExceptionCode;
use tokio_serial::Parity;

use crate::broker::EmbeddedBroker;
use crate::device::{AnyDevice, Kl8Device, Px2Device};
use crate::esprfid::config::{BrokerConfig, EspRfidDeviceConfig, EspRfidEndpoint, MqttConfig};
use crate::esprfid::{EspRfidDevice, MqttBroker};
use crate::faults::{FaultSettings, Faults};
use crate::kl8::{Kl8Config, Record};
use crate::mbg::calendar::parse_instant;
use crate::mbg::config::{GenerateConfig, MeterConfig, PopulationConfig, ScenarioConfig};
use crate::mbg::{GroundTruth, SimClock};
use crate::pty::PtyLink;
use crate::px2::{Entry, Px2Config};
use crate::server::{serve_rtu, serve_tcp, Server, TcpServer};
use crate::uid::Uid;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    /// Base seed of the random draws; device i uses `seed + i`. Unset: seeded by the OS.
    pub seed: Option<u64>,
    #[serde(default, rename = "device")]
    pub devices: Vec<DeviceConfig>,
    #[serde(default, rename = "bus")]
    pub buses: Vec<BusConfig>,
    pub clock: Option<ClockConfig>,
    /// Where to write the ground truth of the meter scenarios (JSON), at start.
    pub ground_truth: Option<PathBuf>,
    /// An embedded MQTT broker to start first.
    pub broker: Option<BrokerConfig>,
    /// The broker esp-rfid devices use (default: the embedded one).
    pub mqtt: Option<MqttConfig>,
    /// esp-rfid door controllers, on MQTT.
    #[serde(default)]
    pub esprfid: Vec<EspRfidDeviceConfig>,
}

/// The virtual clock shared by every meter gateway of the simulation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockConfig {
    /// ISO-8601 UTC, e.g. "2025-01-06T00:00:00Z". Default: the system time.
    pub start: Option<String>,
    /// Runs with real time (default), or stands still between `advance` commands.
    pub running: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Px2,
    Kl8,
    Mbg250,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    pub name: String,
    pub kind: Kind,
    /// TCP address to listen on; port 0 picks a free port.
    pub listen: Option<String>,
    /// Shorthand for `listen = "127.0.0.1:<port>"`.
    pub port: Option<u16>,
    /// Name of the RTU bus the device hangs on, instead of TCP.
    pub bus: Option<String>,
    /// Default: 1 for a PX-2, 17 for a KL-8, as shipped.
    pub unit_id: Option<u8>,
    pub capacity: Option<u16>,
    /// PX-2 only: doors fitted.
    pub doors: Option<u8>,
    /// "major.minor", e.g. "2.3".
    pub firmware: Option<String>,
    /// PX-2 only: command execution time, min and max.
    pub exec_time_ms: Option<[u64; 2]>,
    /// KL-8 only: duration of a save to flash.
    pub save_time_ms: Option<u64>,
    #[serde(default)]
    pub entries: Vec<EntryConfig>,
    #[serde(default)]
    pub faults: FaultConfig,
    /// MBG-250 only: real time a read-out spends per meter.
    pub ms_per_meter: Option<u64>,
    /// MBG-250 only: program the slots with the loop's meters at start (in order).
    #[serde(default)]
    pub program_slots: bool,
    /// MBG-250 only: meters on the loop.
    #[serde(default)]
    pub meters: Vec<MeterConfig>,
    /// MBG-250 only: a generated building on the loop.
    pub population: Option<PopulationConfig>,
    /// MBG-250 only: anomalies applied to meters of the loop.
    #[serde(default)]
    pub scenarios: Vec<ScenarioConfig>,
    /// MBG-250 only: anomalies drawn over the loop's meters.
    pub generate_scenarios: Option<GenerateConfig>,
}

impl DeviceConfig {
    fn has_meter_settings(&self) -> bool {
        self.ms_per_meter.is_some()
            || self.program_slots
            || !self.meters.is_empty()
            || self.population.is_some()
            || !self.scenarios.is_empty()
            || self.generate_scenarios.is_some()
    }
}

/// An initial table entry. PX-2: `uid`. KL-8: `record` and either `card` or a 4-byte `uid`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryConfig {
    pub uid: Option<String>,
    pub card: Option<u32>,
    pub record: Option<u16>,
    /// Doors allowed, 1-based.
    #[serde(default)]
    pub doors: Vec<u8>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default)]
    pub drop: f64,
    #[serde(default)]
    pub drop_reply: f64,
    #[serde(default)]
    pub close: f64,
    pub exception: Option<ExceptionConfig>,
    pub capacity_limit: Option<u16>,
    #[serde(default)]
    pub offline: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExceptionConfig {
    pub code: u8,
    pub probability: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    pub name: String,
    /// A serial device to open, e.g. one end of a `socat` link.
    pub path: Option<PathBuf>,
    /// Make a pseudo-terminal link; the client end is printed at start.
    #[serde(default)]
    pub pty: bool,
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// "none" (default), "even" or "odd".
    pub parity: Option<String>,
}

fn default_baud() -> u32 {
    9600
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("device {device}: {problem}")]
    Device { device: String, problem: String },
    #[error("bus {bus}: {problem}")]
    Bus { bus: String, problem: String },
    #[error("clock: {problem}")]
    Clock { problem: String },
    #[error("broker: {problem}")]
    Broker { problem: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// Where a client finds a device; printed as one JSON line per device.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoint {
    pub name: String,
    pub kind: Kind,
    pub unit_id: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<SocketAddr>,
    /// The serial path a client opens (for a pty bus, the client end).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtu: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
}

/// Everything a configuration started; dropping it stops the servers.
#[derive(Debug)]
pub struct Simulation {
    devices: Vec<(String, AnyDevice)>,
    endpoints: Vec<Endpoint>,
    esprfid: Vec<(String, EspRfidDevice)>,
    esprfid_endpoints: Vec<EspRfidEndpoint>,
    /// The embedded broker; it outlives the simulation (rumqttd has no shutdown).
    broker: Option<SocketAddr>,
    clock: SimClock,
    _tcp: Vec<TcpServer>,
    _rtu: Vec<Server>,
    _links: Vec<PtyLink>,
}

impl Simulation {
    pub fn device(&self, name: &str) -> Option<&AnyDevice> {
        self.devices.iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }

    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    pub fn esprfid(&self, name: &str) -> Option<&EspRfidDevice> {
        self.esprfid.iter().find(|(n, _)| n == name).map(|(_, d)| d)
    }

    pub fn esprfid_devices(&self) -> impl Iterator<Item = (&str, &EspRfidDevice)> {
        self.esprfid.iter().map(|(n, d)| (n.as_str(), d))
    }

    pub fn esprfid_endpoints(&self) -> &[EspRfidEndpoint] {
        &self.esprfid_endpoints
    }

    /// Where the embedded broker listens, if the file asked for one.
    pub fn broker_addr(&self) -> Option<SocketAddr> {
        self.broker
    }

    pub fn devices(&self) -> impl Iterator<Item = (&str, &AnyDevice)> {
        self.devices.iter().map(|(n, d)| (n.as_str(), d))
    }

    /// The virtual clock of the meter gateways.
    pub fn clock(&self) -> &SimClock {
        &self.clock
    }

    /// The scenarios applied to every meter gateway so far.
    pub fn ground_truth(&self) -> GroundTruth {
        let mut truth = GroundTruth::new();
        for (_, device) in &self.devices {
            if let AnyDevice::Mbg(mbg) = device {
                truth.extend(mbg.ground_truth().scenarios);
            }
        }
        truth
    }
}

/// Builds the devices, opens the buses and listeners, and serves.
pub async fn start(config: &SimConfig) -> Result<Simulation, ConfigError> {
    let clock_config = config.clock.clone().unwrap_or_default();
    let running = clock_config.running.unwrap_or(true);
    let clock = match clock_config.start.as_deref() {
        Some(text) => {
            let start = parse_instant(text).ok_or_else(|| ConfigError::Clock {
                problem: format!("{text} is not a date like 2025-01-06T00:00:00Z"),
            })?;
            SimClock::starting_at(start)
        }
        None => SimClock::system(),
    };
    clock.set_running(running);
    let mut sim = Simulation {
        devices: Vec::new(),
        endpoints: Vec::new(),
        esprfid: Vec::new(),
        esprfid_endpoints: Vec::new(),
        broker: None,
        clock,
        _tcp: Vec::new(),
        _rtu: Vec::new(),
        _links: Vec::new(),
    };
    let mut on_bus: Vec<(String, AnyDevice)> = Vec::new();
    for (i, cfg) in config.devices.iter().enumerate() {
        if sim.device(&cfg.name).is_some() {
            return Err(device_error(cfg, "name used twice"));
        }
        let seed = config.seed.map(|s| s.wrapping_add(i as u64));
        let device = build_device(cfg, seed, &sim.clock)?;
        let mut endpoint = Endpoint {
            name: cfg.name.clone(),
            kind: cfg.kind,
            unit_id: device.unit_id(),
            tcp: None,
            rtu: None,
            bus: cfg.bus.clone(),
        };
        match &cfg.bus {
            Some(bus) => {
                if !config.buses.iter().any(|b| &b.name == bus) {
                    return Err(device_error(cfg, &format!("no bus named {bus}")));
                }
                on_bus.push((bus.clone(), device.clone()));
            }
            None => {
                let addr = match (&cfg.listen, cfg.port) {
                    (Some(listen), _) => listen.clone(),
                    (None, Some(port)) => format!("127.0.0.1:{port}"),
                    (None, None) => "127.0.0.1:0".to_owned(),
                };
                let server = serve_tcp(device.clone(), addr.as_str())
                    .await
                    .map_err(|source| ConfigError::Io {
                        context: format!("device {}: listen on {addr}", cfg.name),
                        source,
                    })?;
                endpoint.tcp = Some(server.local_addr());
                sim._tcp.push(server);
            }
        }
        sim.devices.push((cfg.name.clone(), device));
        sim.endpoints.push(endpoint);
    }
    start_esprfid(&mut sim, config).await?;
    if let Some(path) = &config.ground_truth {
        sim.ground_truth()
            .write(path)
            .map_err(|source| ConfigError::Io {
                context: format!("ground truth {}", path.display()),
                source,
            })?;
    }
    for bus in &config.buses {
        let client_path = start_bus(&mut sim, bus, &on_bus)?;
        for endpoint in &mut sim.endpoints {
            if endpoint.bus.as_ref() == Some(&bus.name) {
                endpoint.rtu = Some(client_path.clone());
            }
        }
    }
    Ok(sim)
}

/// Starts the embedded broker, if any, then the esp-rfid devices.
async fn start_esprfid(sim: &mut Simulation, config: &SimConfig) -> Result<(), ConfigError> {
    let broker_error = |problem: String| ConfigError::Broker { problem };
    let mut default_broker: Option<MqttBroker> = None;
    if let Some(broker) = &config.broker {
        let options = broker.options().map_err(broker_error)?;
        // Blocking: it waits until the broker accepts connections.
        let started = tokio::task::spawn_blocking(move || EmbeddedBroker::start(&options))
            .await
            .map_err(|e| broker_error(e.to_string()))?
            .map_err(|e| broker_error(e.to_string()))?;
        sim.broker = Some(started.addr());
        default_broker = Some(broker.client_side(started.addr()).map_err(broker_error)?);
    }
    if let Some(mqtt) = &config.mqtt {
        default_broker = Some(
            mqtt.broker()
                .map_err(|p| broker_error(format!("[mqtt]: {p}")))?,
        );
    }
    for (j, cfg) in config.esprfid.iter().enumerate() {
        let error = |problem: &str| ConfigError::Device {
            device: cfg.name.clone(),
            problem: problem.to_owned(),
        };
        if sim.device(&cfg.name).is_some() || sim.esprfid(&cfg.name).is_some() {
            return Err(error("name used twice"));
        }
        // The hostname is the MQTT client id: a second one would push the first off.
        if sim
            .esprfid
            .iter()
            .any(|(_, d)| d.config().hostname == cfg.hostname())
        {
            return Err(error(&format!("hostname {} used twice", cfg.hostname())));
        }
        let same_door =
            |d: &EspRfidDevice| d.config().topic == cfg.topic && d.config().ip == cfg.ip;
        if sim.esprfid.iter().any(|(_, d)| same_door(d)) {
            return Err(error("another esp-rfid has this topic and ip"));
        }
        let seed = config
            .seed
            .map(|s| s.wrapping_add((config.devices.len() + j) as u64));
        let device = crate::esprfid::config::build(cfg, default_broker.as_ref(), seed)
            .map_err(|problem| error(&problem))?;
        sim.esprfid_endpoints
            .push(EspRfidEndpoint::new(&cfg.name, &device));
        sim.esprfid.push((cfg.name.clone(), device));
    }
    Ok(())
}

/// Opens one bus and serves its devices; returns the path a client opens.
fn start_bus(
    sim: &mut Simulation,
    bus: &BusConfig,
    on_bus: &[(String, AnyDevice)],
) -> Result<PathBuf, ConfigError> {
    let bus_error = |problem: &str| ConfigError::Bus {
        bus: bus.name.clone(),
        problem: problem.to_owned(),
    };
    let parity = match bus.parity.as_deref() {
        None | Some("none") => Parity::None,
        Some("even") => Parity::Even,
        Some("odd") => Parity::Odd,
        Some(other) => return Err(bus_error(&format!("unknown parity {other}"))),
    };
    let (device_path, client_path) = match (&bus.path, bus.pty) {
        (Some(path), false) => (path.clone(), path.clone()),
        (None, true) => {
            let link = PtyLink::new().map_err(|source| ConfigError::Io {
                context: format!("bus {}: pseudo-terminals", bus.name),
                source,
            })?;
            let paths = (link.device_path().to_owned(), link.client_path().to_owned());
            sim._links.push(link);
            paths
        }
        _ => return Err(bus_error("give either `path` or `pty = true`")),
    };
    let devices = on_bus
        .iter()
        .filter(|(name, _)| *name == bus.name)
        .map(|(_, d)| d.clone());
    let port = tokio_serial::new(device_path.to_string_lossy(), bus.baud).parity(parity);
    let server = serve_rtu(port, devices).map_err(|source| ConfigError::Io {
        context: format!("bus {}: open {}", bus.name, device_path.display()),
        source,
    })?;
    sim._rtu.push(server);
    Ok(client_path)
}

fn device_error(cfg: &DeviceConfig, problem: &str) -> ConfigError {
    ConfigError::Device {
        device: cfg.name.clone(),
        problem: problem.to_owned(),
    }
}

fn build_device(
    cfg: &DeviceConfig,
    seed: Option<u64>,
    clock: &SimClock,
) -> Result<AnyDevice, ConfigError> {
    let error = |problem: &str| device_error(cfg, problem);
    let firmware = cfg
        .firmware
        .as_deref()
        .map(|text| parse_firmware(text).ok_or_else(|| error("firmware must look like 2.3")))
        .transpose()?;
    let faults = match seed {
        Some(seed) => Faults::seeded(seed),
        None => Faults::default(),
    };
    faults.set(fault_settings(&cfg.faults));
    if cfg.faults.offline {
        faults.go_offline(None);
    }
    if cfg.kind != Kind::Mbg250 && cfg.has_meter_settings() {
        return Err(error(
            "meters, scenarios and ms_per_meter are for an mbg250",
        ));
    }
    let device: AnyDevice = match cfg.kind {
        Kind::Mbg250 => {
            let start = clock.now();
            crate::mbg::config::build(cfg, firmware, faults, clock, start)
                .map_err(|problem| error(&problem))?
                .into()
        }
        Kind::Px2 => {
            if cfg.save_time_ms.is_some() {
                return Err(error("save_time_ms is for a kl8"));
            }
            let defaults = Px2Config::default();
            let doors = cfg.doors.unwrap_or(defaults.doors);
            if !(1..=16).contains(&doors) {
                return Err(error("a PX-2 has 1 to 16 doors"));
            }
            let exec_time = match cfg.exec_time_ms {
                Some([min, max]) => Duration::from_millis(min)..=Duration::from_millis(max),
                None => defaults.exec_time.clone(),
            };
            let config = Px2Config {
                unit_id: cfg.unit_id.unwrap_or(defaults.unit_id),
                capacity: cfg.capacity.unwrap_or(defaults.capacity),
                doors,
                firmware: firmware.unwrap_or(defaults.firmware),
                exec_time,
                seed,
                ..defaults
            };
            let px2 = Px2Device::new(config, faults);
            for entry in &cfg.entries {
                let uid = entry.uid.as_deref().and_then(Uid::from_hex);
                let uid = uid.ok_or_else(|| error("a PX-2 entry needs a uid of 1-10 hex bytes"))?;
                let door_mask = door_mask(&entry.doors).ok_or_else(|| error("doors are 1-16"))?;
                px2.with(|m, _| m.insert(Entry { uid, door_mask }))
                    .map_err(|result| error(&format!("entry {uid}: {result:?}")))?;
            }
            px2.into()
        }
        Kind::Kl8 => {
            if cfg.doors.is_some() || cfg.exec_time_ms.is_some() {
                return Err(error("doors and exec_time_ms are for a px2"));
            }
            let defaults = Kl8Config::default();
            let config = Kl8Config {
                unit_id: cfg.unit_id.unwrap_or(defaults.unit_id),
                capacity: cfg.capacity.unwrap_or(defaults.capacity),
                firmware: firmware.unwrap_or(defaults.firmware),
                save_time: cfg
                    .save_time_ms
                    .map_or(defaults.save_time, Duration::from_millis),
            };
            let kl8 = Kl8Device::new(config, faults);
            for entry in &cfg.entries {
                let card = match (entry.card, entry.uid.as_deref().and_then(Uid::from_hex)) {
                    (Some(card), None) => card,
                    (None, Some(uid)) => uid
                        .card_number()
                        .ok_or_else(|| error("a KL-8 stores only 4-byte UIDs"))?,
                    _ => return Err(error("a KL-8 entry needs a card or a uid")),
                };
                let index = entry
                    .record
                    .ok_or_else(|| error("a KL-8 entry needs a record"))?;
                let door_mask = door_mask(&entry.doors).ok_or_else(|| error("doors are 1-8"))?;
                if !kl8.with(|m, _| m.seed_record(index, Record::active(card, door_mask))) {
                    return Err(error(&format!("record {index} is past the table")));
                }
            }
            kl8.into()
        }
    };
    if let Some(limit) = cfg.faults.capacity_limit {
        device.set_capacity_limit(Some(limit));
    }
    Ok(device)
}

fn fault_settings(cfg: &FaultConfig) -> FaultSettings {
    FaultSettings {
        latency: Duration::from_millis(cfg.latency_ms),
        drop_request: cfg.drop,
        drop_reply: cfg.drop_reply,
        close_connection: cfg.close,
        exception: cfg
            .exception
            .as_ref()
            .map(|e| (ExceptionCode::new(e.code), e.probability)),
    }
}

/// "2.3" → 0x0203.
pub fn parse_firmware(text: &str) -> Option<u16> {
    let (major, minor) = text.split_once('.')?;
    Some(u16::from(major.parse::<u8>().ok()?) << 8 | u16::from(minor.parse::<u8>().ok()?))
}

/// Doors 1-16 → mask; `None` for a door out of range.
pub fn door_mask(doors: &[u8]) -> Option<u16> {
    doors.iter().try_fold(0u16, |mask, &door| match door {
        1..=16 => Some(mask | 1 << (door - 1)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_demo_file() {
        let text = include_str!("../examples/demo.toml");
        let config: SimConfig = toml::from_str(text).expect("demo.toml");
        assert!(config.devices.len() >= 2);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let text = "[[device]]\nname = \"a\"\nkind = \"px2\"\ncapcity = 3\n";
        assert!(toml::from_str::<SimConfig>(text).is_err());
    }

    #[test]
    fn helpers() {
        assert_eq!(parse_firmware("2.3"), Some(0x0203));
        assert_eq!(parse_firmware("2"), None);
        assert_eq!(door_mask(&[1, 3]), Some(0b101));
        assert_eq!(door_mask(&[17]), None);
    }

    #[tokio::test]
    async fn starts_the_meters_file_and_writes_the_ground_truth() {
        let text = include_str!("../examples/meters.toml");
        let mut config: SimConfig = toml::from_str(text).expect("meters.toml");
        let path = std::env::temp_dir().join(format!("meters-truth-{}.json", std::process::id()));
        config.ground_truth = Some(path.clone());
        let sim = start(&config).await.expect("start");
        assert_eq!(sim.endpoints().len(), 3);
        assert!(sim.endpoints().iter().all(|e| e.kind == Kind::Mbg250));
        let truth = GroundTruth::read(&path).expect("ground truth written");
        std::fs::remove_file(&path).unwrap();
        // 2 listed + 7 drawn for building A, 1 for building B.
        assert_eq!(truth.scenarios.len(), 10);
        assert_eq!(truth, sim.ground_truth());
        assert_eq!(truth.scenarios[0].gateway.as_deref(), Some("building-a"));
        let Some(AnyDevice::Mbg(b)) = sim.device("building-b") else {
            panic!("building-b is a gateway");
        };
        let snapshot = b.snapshot();
        assert_eq!(snapshot.configured, 5);
        let start = parse_instant("2025-01-06").unwrap();
        assert!((start..start + 60).contains(&snapshot.virtual_time));
        let rollover = b.meter_value_at(20_000_001, start).unwrap();
        assert_eq!(rollover.value(), 99_999.2);
    }

    #[tokio::test]
    async fn meter_settings_are_checked() {
        let bad = [
            (
                "kind = \"px2\"\nmeters = [{ id = \"12345678\", usage = \"heating\" }]",
                "mbg250",
            ),
            ("kind = \"mbg250\"\nfirmware = \"3.0\"", "1.x or 2.x"),
            (
                "kind = \"mbg250\"\nmeters = [{ id = \"1234\", usage = \"heating\" }]",
                "8 digits",
            ),
            (
                "kind = \"mbg250\"\nmeters = [{ id = \"12345678\", usage = \"cold_water\" }]\n\
                 scenarios = [{ kind = \"leak\", meter = \"12345678\", start = \"2025-01-06\" }]",
                "litres_per_hour",
            ),
            (
                "kind = \"mbg250\"\nmeters = [{ id = \"12345678\", usage = \"heating\" }]\n\
                 scenarios = [{ kind = \"leak\", meter = \"12345678\", start = \"2025-01-06\", \
                 litres_per_hour = 3 }]",
                "water meter",
            ),
            (
                "kind = \"mbg250\"\npopulation = { seed = 1, first_id = \"1\", flats = 2 }",
                "8 digits",
            ),
        ];
        for (device, expected) in bad {
            let text = format!("[[device]]\nname = \"gw\"\n{device}\n");
            let config: SimConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let err = start(&config).await.unwrap_err().to_string();
            assert!(err.contains("gw") && err.contains(expected), "{err}");
        }
        let bad_clock = "[clock]\nstart = \"tomorrow\"\n";
        let config: SimConfig = toml::from_str(bad_clock).unwrap();
        assert!(start(&config).await.is_err());
    }

    #[tokio::test]
    async fn starts_the_esprfid_file_with_its_broker() {
        let text = include_str!("../examples/esprfid.toml");
        let config: SimConfig = toml::from_str(text).expect("esprfid.toml");
        let sim = start(&config).await.expect("start");
        let broker = sim.broker_addr().expect("an embedded broker");
        assert_ne!(broker.port(), 0);
        let endpoints = sim.esprfid_endpoints();
        assert_eq!(endpoints.len(), 2);
        assert_eq!(endpoints[0].mqtt, broker.to_string());
        assert_eq!(endpoints[1].hostname, "esp-rfid-bikes");
        let gate = sim.esprfid("gate").expect("gate");
        assert_eq!(gate.config().door_name, "Portail");
        let users = gate.snapshot().users;
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].acctype, [1, 1, 0, 0]);
        assert_eq!(users[1].validuntil, 4_102_444_800);
    }

    #[tokio::test]
    async fn bad_esprfid_sections_are_reported() {
        let device = "[[esprfid]]\nname = \"gate\"\ntopic = \"t\"\nip = \"10.0.0.1\"\n";
        let mqtt = "[mqtt]\nport = 1\n";
        let bad = [
            (device.to_owned(), "no broker"),
            (format!("{mqtt}{device}relays = 5\n"), "1 to 4"),
            (
                format!("{mqtt}{device}users = [{{ uid = \"xyz\" }}]\n"),
                "hex",
            ),
            (format!("{mqtt}{device}{device}"), "name used twice"),
            (
                format!("{mqtt}{device}{}", device.replace("gate", "gate2")),
                "topic and ip",
            ),
            (
                format!("[mqtt]\nusername = \"u\"\n{device}"),
                "both username",
            ),
            ("[broker]\nlisten = \"here\"\n".to_owned(), "not an address"),
        ];
        for (text, expected) in bad {
            let config: SimConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
            let err = start(&config).await.unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
        let typo = format!("{mqtt}{device}relay = 2\n");
        assert!(toml::from_str::<SimConfig>(&typo).is_err());
    }

    #[tokio::test]
    async fn bad_devices_are_reported_by_name() {
        let text = "[[device]]\nname = \"gate\"\nkind = \"kl8\"\nentries = [{ record = 0, uid = \"0102030405\" }]\n";
        let config: SimConfig = toml::from_str(text).unwrap();
        let err = start(&config).await.unwrap_err().to_string();
        assert!(err.contains("gate") && err.contains("4-byte"), "{err}");
    }
}
