//! Configuration: defaults that need nothing, then a TOML file, then `GARDIEN_*`
//! environment variables (`GARDIEN_LISTEN=0.0.0.0:8080`, `GARDIEN_SYNC__CONCURRENCY=32`).

use std::net::SocketAddr;
use std::path::Path;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// The file read when no `--config` is given, if it exists.
pub const DEFAULT_FILE: &str = "gardien.toml";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// sqlx URL or path of the SQLite database; created on first start.
    pub database_url: String,
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// How long a login session lasts, in hours.
    pub session_hours: i64,
    /// Mark the session cookie `Secure` (serve behind HTTPS when true).
    pub secure_cookies: bool,
    /// tracing filter, e.g. `info` or `gardien=debug,tower_http=info`.
    pub log: String,
    /// The lock- and gateway-programming engine.
    pub sync: crate::sync::SyncConfig,
    /// The nightly meter collection.
    pub collection: crate::metering::schedule::CollectionConfig,
    /// The MQTT broker (esp-rfid controllers, wireless M-Bus meters).
    pub mqtt: crate::mqtt::MqttConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "sqlite://gardien.db".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            session_hours: 14 * 24,
            secure_cookies: false,
            log: "info,rumqttd=warn".into(),
            sync: crate::sync::SyncConfig::default(),
            collection: Default::default(),
            mqtt: Default::default(),
        }
    }
}

impl Config {
    /// Loads the configuration. `file` must exist when given; otherwise
    /// `gardien.toml` is read if present.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) if !path.exists() => {
                anyhow::bail!("configuration file {} not found", path.display())
            }
            Some(path) => figment = figment.merge(Toml::file(path)),
            None if Path::new(DEFAULT_FILE).exists() => {
                figment = figment.merge(Toml::file(DEFAULT_FILE))
            }
            None => {}
        }
        let config: Config = figment
            .merge(
                Env::prefixed("GARDIEN_")
                    .ignore(&["CONFIG", "PASSWORD"])
                    .split("__"),
            )
            .extract()
            .map_err(|err| anyhow::anyhow!("invalid configuration: {err}"))?;
        if config.session_hours < 1 {
            anyhow::bail!("invalid configuration: session_hours must be at least 1");
        }
        config
            .collection
            .schedule()
            .map_err(|err| anyhow::anyhow!("invalid configuration: collection.{err}"))?;
        config
            .mqtt
            .check()
            .map_err(|err| anyhow::anyhow!("invalid configuration: {err}"))?;
        Ok(config)
    }
}
