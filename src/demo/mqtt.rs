//! The demo's MQTT side, through the embedded broker: an esp-rfid controller on the
//! bin store door (programmed like the Modbus controllers, by list read-back), and
//! wireless M-Bus meters heard through a simulated wmbusmeters.

use std::net::SocketAddr;
use std::time::Duration;

use gardien_simulators::esprfid::{EspRfidConfig, EspRfidDevice, EspRfidFaults, MqttBroker};
use gardien_simulators::mbg::population;
use gardien_simulators::wmbus::{WmbusConfig, WmbusPublisher};
use gardien_simulators::{BusMeter, SimClock};

use crate::domain::{LockKind, Transport};
use crate::error::{Error, Result};
use crate::mqtt::config::{MqttConfig, WmbusSubscription};
use crate::storage::audit::Actor;
use crate::storage::controllers::{ControllerFilter, ControllerInput};
use crate::storage::locks::LockInput;
use crate::storage::meters::{MeterFilter, MeterInput};
use crate::storage::profiles::{ProfileFilter, ProfileInput};
use crate::storage::Store;

const CONTROLLER: &str = "Centrale local poubelles";
const TOPIC: &str = "tilleuls/portes";
const IP: &str = "192.168.10.21";
/// The profile that gets the bin store door: the caretaker's and providers'.
const PROFILE: &str = "Toutes portes";
pub const WMBUS_TOPIC: &str = "wmbusmeters/#";

/// First M-Bus id of the wireless meters (the gateways' meters start at 30000001).
const FIRST_WIRELESS_ID: u32 = 40_000_001;
/// Real seconds between two telegrams of each wireless meter in the demo.
const TELEGRAM_EVERY: Duration = Duration::from_secs(300);

/// The simulated MQTT devices of the demo.
pub struct DemoMqtt {
    pub broker: SocketAddr,
    pub esp_rfid: EspRfidDevice,
    pub wmbus: WmbusPublisher,
    wmbus_task: tokio::task::JoinHandle<()>,
}

impl DemoMqtt {
    pub fn stop(self) {
        self.wmbus_task.abort();
    }
}

/// One wireless general water meter per building, heard through wmbusmeters.
fn wireless_meters(buildings: usize) -> Vec<BusMeter> {
    population(
        2027,
        FIRST_WIRELESS_ID,
        buildings as u32,
        super::meters::origin().timestamp(),
    )
    .into_iter()
    .filter(|meter| super::meters::kind_of(meter) == crate::domain::meter::MeterKind::ColdWater)
    .take(buildings)
    .collect()
}

/// The `[mqtt]` section of the demo: an embedded broker on a free loopback port and
/// the residence's wmbusmeters topics.
pub fn config(residence_id: i64) -> Result<MqttConfig> {
    let broker = gardien_simulators::broker::free_port(SocketAddr::from(([127, 0, 0, 1], 0)))
        .map_err(|err| Error::Internal(err.to_string()))?;
    Ok(MqttConfig {
        enabled: true,
        // Started by `start`, before the simulated devices, not by `serve`.
        embedded_broker: false,
        host: broker.ip().to_string(),
        port: broker.port(),
        client_id: Some("gardien-demo".into()),
        wmbus: vec![WmbusSubscription {
            topic: WMBUS_TOPIC.into(),
            residence_id,
        }],
        ..MqttConfig::default()
    })
}

/// Seeds the esp-rfid controller (once) and starts the simulated devices; they
/// connect as soon as the broker is up.
pub async fn start(store: &Store, residence_id: i64, config: &MqttConfig) -> Result<DemoMqtt> {
    seed(store, residence_id).await?;
    let buildings = seed_wireless_meters(store, residence_id).await?;
    let broker = SocketAddr::new(
        config
            .host
            .parse()
            .map_err(|_| Error::Internal(format!("demo broker host {:?}", config.host)))?,
        config.port,
    );
    gardien_simulators::broker::EmbeddedBroker::start(&gardien_simulators::broker::BrokerOptions {
        listen: broker,
        ..Default::default()
    })
    .map_err(|err| Error::Internal(err.to_string()))?;
    let esp_rfid = EspRfidDevice::start(
        EspRfidConfig {
            topic: TOPIC.into(),
            ip: IP.into(),
            hostname: "esp-poubelles".into(),
            door_name: "Local poubelles".into(),
            relays: 1,
            reconnect_delay: Duration::from_millis(500),
            ..EspRfidConfig::default()
        },
        MqttBroker::from(broker),
        EspRfidFaults::seeded(2026),
    )
    .map_err(|err| Error::Internal(err.to_string()))?;
    let mut options =
        rumqttc::MqttOptions::new("wmbusmeters-demo", broker.ip().to_string(), broker.port());
    options.set_keep_alive(Duration::from_secs(30));
    let wmbus = WmbusPublisher::new(
        WmbusConfig::default(),
        wireless_meters(buildings),
        SimClock::system(),
        options,
    )
    .map_err(|err| Error::Internal(err.to_string()))?;
    // The first round at once, then every few minutes.
    let wmbus_task = wmbus.spawn(TELEGRAM_EVERY);
    Ok(DemoMqtt {
        broker,
        esp_rfid,
        wmbus,
        wmbus_task,
    })
}

/// The wireless meters in the database (once): one general water meter per building.
async fn seed_wireless_meters(store: &Store, residence_id: i64) -> Result<usize> {
    let actor = Actor::system("demo");
    let mut tx = store.write().await?;
    let buildings = tx.buildings(residence_id, &Default::default()).await?.items;
    let meters = wireless_meters(buildings.len());
    let first = format!("{FIRST_WIRELESS_ID:08}");
    let existing = tx
        .meters(
            residence_id,
            &MeterFilter {
                q: Some(first),
                ..MeterFilter::default()
            },
            crate::domain::roles::Visibility::Everything,
        )
        .await?;
    if existing.total > 0 {
        return Ok(meters.len());
    }
    for (meter, building) in meters.iter().zip(&buildings) {
        let input = MeterInput {
            kind: crate::domain::meter::MeterKind::GeneralWater,
            unit_id: None,
            building_id: Some(building.id),
            mbus_id: format!("{:08}", meter.id),
            manufacturer: meter.manufacturer.clone(),
            version: i64::from(meter.version),
            medium: i64::from(meter.medium),
            measure_unit: super::meters::unit_of(meter),
            digits: i64::from(meter.digits),
            installed_on: super::meters::origin().date_naive(),
            initial_index: meter.initial,
            gateway_id: None,
            label: format!("Compteur général sans fil, {}", building.name),
        };
        tx.insert_meter(&actor, residence_id, &input.validated()?)
            .await?;
    }
    tx.commit().await?;
    Ok(meters.len())
}

/// The bin store door on an esp-rfid controller, opened by the "all doors" profile.
async fn seed(store: &Store, residence_id: i64) -> Result<()> {
    let actor = Actor::system("demo");
    let mut tx = store.write().await?;
    let existing = tx
        .controllers(
            residence_id,
            &ControllerFilter {
                q: Some(CONTROLLER.into()),
                ..ControllerFilter::default()
            },
        )
        .await?;
    if !existing.items.is_empty() {
        return Ok(());
    }
    let controller = ControllerInput {
        name: CONTROLLER.into(),
        model: "esp-rfid".into(),
        transport: Transport::Mqtt,
        address: format!("{TOPIC}@{IP}"),
        modbus_unit: None,
        notes: "simulée (esp-rfid sur MQTT)".into(),
        policy: crate::domain::Policy::Enforce,
    };
    let controller = tx
        .insert_controller(&actor, residence_id, &controller.validated()?)
        .await?;
    let lock = LockInput {
        name: "Local poubelles".into(),
        kind: LockKind::Door,
        building_id: None,
        controller_id: Some(controller.id),
        door_number: Some(1),
    };
    let lock = tx.insert_lock(&actor, residence_id, &lock).await?.id;
    let profiles = tx
        .profiles(
            residence_id,
            &ProfileFilter {
                q: Some(PROFILE.into()),
                ..ProfileFilter::default()
            },
        )
        .await?;
    if let Some(profile) = profiles.items.into_iter().find(|p| p.name == PROFILE) {
        let input = ProfileInput {
            name: profile.name.clone(),
            description: format!("{} et local poubelles", profile.description),
            lock_ids: [profile.lock_ids.as_slice(), &[lock]].concat(),
        };
        tx.update_profile(&actor, residence_id, profile.id, &input)
            .await?;
    }
    tx.commit().await
}

/// What `gardien demo` prints about its MQTT side.
pub fn welcome(devices: &DemoMqtt) -> String {
    format!(
        "MQTT: embedded broker on {broker}\n\
         Simulated esp-rfid: \"{CONTROLLER}\" (topic {TOPIC}, IP {IP}), programmed like the others and \
         confirmed by reading its user list back\n\
         Wireless meters: wmbusmeters telegrams on {WMBUS_TOPIC}\n\
         Watch the traffic: mosquitto_sub -h {host} -p {port} -t '#' -v",
        broker = devices.broker,
        host = devices.broker.ip(),
        port = devices.broker.port(),
    )
}
