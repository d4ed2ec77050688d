//! The `[mqtt]` section: how gardien reaches its broker, and what it listens to.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Connect to a broker (esp-rfid controllers, wireless M-Bus meters).
    pub enabled: bool,
    /// Start a broker inside gardien on `host:port` (loopback), for a laptop set-up
    /// with nothing installed. A real deployment uses an external broker.
    pub embedded_broker: bool,
    pub host: String,
    pub port: u16,
    /// Default: `gardien-` and the instance id. Must differ between instances.
    pub client_id: Option<String>,
    pub username: Option<String>,
    /// Better given as `GARDIEN_MQTT__PASSWORD` than written in the file.
    pub password: Option<String>,
    /// TLS to the broker; absent: plain TCP.
    pub tls: Option<TlsConfig>,
    pub keep_alive_seconds: u64,
    /// `false` keeps the session on the broker across reconnects, so that QoS 1
    /// telegrams published while gardien was away are delivered when it is back.
    pub clean_session: bool,
    /// Longest wait between two connection attempts, in seconds.
    pub reconnect_max_seconds: u64,
    /// Wireless M-Bus telegrams (wmbusmeters JSON): topic filters and the residence
    /// whose meters they carry.
    pub wmbus: Vec<WmbusSubscription>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the certificate authority that signed the broker's certificate.
    pub ca_file: PathBuf,
    /// PEM files of a client certificate and its key, when the broker asks for one.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WmbusSubscription {
    /// An MQTT topic filter, e.g. `wmbusmeters/#`; `$share/gardien/wmbusmeters/#`
    /// shares the telegrams between several gardien instances.
    pub topic: String,
    pub residence_id: i64,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            enabled: false,
            embedded_broker: false,
            host: "127.0.0.1".into(),
            port: 1883,
            client_id: None,
            username: None,
            password: None,
            tls: None,
            keep_alive_seconds: 30,
            clean_session: false,
            reconnect_max_seconds: 30,
            wmbus: Vec::new(),
        }
    }
}

impl MqttConfig {
    /// Checks what the broker would refuse late and obscurely.
    pub fn check(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        if self.host.trim().is_empty() || self.port == 0 {
            return Err("mqtt.host and mqtt.port name the broker".into());
        }
        if self.keep_alive_seconds < 5 {
            return Err("mqtt.keep_alive_seconds must be at least 5".into());
        }
        if self.password.is_some() && self.username.is_none() {
            return Err("mqtt.password needs mqtt.username".into());
        }
        if let Some(tls) = &self.tls {
            if tls.client_cert_file.is_some() != tls.client_key_file.is_some() {
                return Err("mqtt.tls: client_cert_file and client_key_file go together".into());
            }
        }
        for subscription in &self.wmbus {
            crate::mqtt::topics::check_filter(&subscription.topic)
                .map_err(|err| format!("mqtt.wmbus topic {:?}: {err}", subscription.topic))?;
        }
        Ok(())
    }
}
