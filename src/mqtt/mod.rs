//! MQTT: gardien's connection to a broker, and what arrives on it.
//!
//! - [`config`]: the `[mqtt]` section (broker, credentials, TLS, wmbus topics).
//! - [`connection`]: the rumqttc connection, reconnects and resubscriptions; every
//!   message goes to the drivers waiting for answers and, when the service handles
//!   it, to the [`inbox`].
//! - [`inbox`]: one worker for wmbus telegrams (`metering::wmbus`) and esp-rfid
//!   messages ([`esprfid_events`]), each acknowledged once handled.
//! - [`topics`]: topic filter matching.
//!
//! The embedded broker (rumqttd, `gardien_simulators::broker`) is started by
//! `gardien demo`, and by `gardien serve` with `mqtt.embedded_broker = true`.

pub mod config;
pub mod connection;
pub mod esprfid_events;
pub mod inbox;
pub mod topics;

pub use config::MqttConfig;
pub use connection::Mqtt;
