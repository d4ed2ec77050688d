//! Device protocols of gardien: lock controllers (PX-2, KL-8) and meter gateways
//! (MBG-250) over Modbus TCP and RTU, described by the profiles of `firmware-config/`.
//!
//! This crate knows no SQL and no HTTP: it turns "add this key to that controller"
//! into Modbus transactions and device answers into plain values.

pub mod digest;
pub mod error;
pub mod esprfid;
mod identity;
pub mod kl8;
pub mod link;
pub mod lock;
pub mod mbg;
pub mod mqtt;
pub mod profile;
pub mod px2;
pub mod registers;

pub use error::{DriverError, Result};
pub use link::{Endpoint, Link};
pub use lock::{
    AccessEvent, AccessResult, Applied, Credential, Entry, EventBatch, Fingerprint, Identity,
    KeyIdentity, LockController, StoredEntry, Validity,
};
pub use mbg::{GatewayStatus, MeterGateway, SlotMeter, SlotReading};
pub use mqtt::{MqttChannel, MqttMessage};
pub use profile::{DeviceProfile, DeviceRole, Layout, Registry};

/// Connects to a lock controller described by `profile` at `endpoint` (unit id `unit`)
/// and returns its driver. The device is not identified yet: call `identify` first.
pub async fn connect_lock_controller(
    profile: &DeviceProfile,
    endpoint: &Endpoint,
    unit: u8,
) -> Result<Box<dyn LockController>> {
    let link = Link::connect(endpoint, unit, profile.modbus_settings()?).await?;
    Ok(match profile.layout {
        Layout::Px2Mailbox(_) => Box::new(px2::Px2::new(link, profile.clone())?),
        Layout::Kl8Records(_) => Box::new(kl8::Kl8::new(link, profile.clone())?),
        Layout::MeterGateway(_) => {
            return Err(DriverError::Unsupported(format!(
                "a {} is a meter gateway, not a lock controller",
                profile.model
            )))
        }
        Layout::EspRfidMqtt(_) => {
            return Err(DriverError::Unsupported(format!(
                "a {} is reached over MQTT, not Modbus",
                profile.model
            )))
        }
    })
}
