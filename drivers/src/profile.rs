//! Device profiles: register maps, limits and capabilities per model and firmware
//! line, read from the TOML files of `firmware-config/`. A model that differs only in
//! addresses, capacity or word order gets a new file, not new code.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::registers::{Field, WordOrder};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceProfile {
    /// Stable identity, e.g. `px2-fw2`.
    pub id: String,
    /// Version of this profile file.
    pub version: u32,
    /// Model name as users write it ("PX-2").
    pub model: String,
    pub description: String,
    /// Value of the model register (Modbus devices).
    pub model_code: Option<u16>,
    /// Firmware major version (or protocol version) this profile is for.
    pub firmware_major: u8,
    /// How the device is reached over Modbus; absent on MQTT devices.
    pub modbus: Option<ModbusSettings>,
    /// Registers that identify a Modbus device; absent on MQTT devices.
    pub identity: Option<IdentityMap>,
    /// Lock controllers only: which keys the device holds.
    pub keys: Option<KeySupport>,
    pub layout: Layout,
}

/// What a device is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRole {
    LockController,
    MeterGateway,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSettings {
    pub default_unit: u8,
    pub tcp_port: u16,
    /// Most registers per read.
    pub max_read: u16,
    /// Most registers per write.
    pub max_write: u16,
    /// How long to wait for an answer.
    pub timeout_ms: u64,
    pub serial: SerialSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SerialSettings {
    pub baud: u32,
    pub parity: Parity,
    pub data_bits: u8,
    pub stop_bits: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    None,
    Even,
    Odd,
}

/// Holding registers that identify the device and summarise its state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityMap {
    pub model: Field,
    pub firmware: Field,
    pub capacity: Field,
    pub used: Option<Field>,
    pub digest: Option<Field>,
    pub boot_counter: Option<Field>,
    pub change_counter: Option<Field>,
    pub clock: Option<Field>,
    pub doors: Option<Field>,
}

impl IdentityMap {
    /// The fields read on every visit: identity and table summary. The clock is read
    /// on its own when needed.
    pub fn summary_fields(&self) -> impl Iterator<Item = &Field> {
        [
            &self.used,
            &self.digest,
            &self.boot_counter,
            &self.change_counter,
        ]
        .into_iter()
        .flatten()
        .chain([&self.model, &self.firmware, &self.capacity])
    }
}

/// Which keys the device can hold and how it names them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySupport {
    /// Badge UID lengths in bytes it can store.
    pub badge_uid_lengths: Vec<usize>,
    pub badge_encoding: BadgeEncoding,
    pub remote_encoding: RemoteEncoding,
    /// Door outputs a mask can address.
    pub max_doors: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadgeEncoding {
    /// The UID bytes.
    Uid,
    /// A 4-byte UID read as a little-endian 32-bit card number.
    CardLe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoteEncoding {
    /// The serial as a 4-byte big-endian UID.
    UidBe32,
    /// The serial as the card number.
    Card,
    /// The device has no remote receiver.
    None,
}

/// How the key table is reached: the part of the protocol that differs between
/// families, described by addresses so that models of a family share the code.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Layout {
    /// Read-only slot table, changes through a command mailbox, digest, event ring.
    Px2Mailbox(MailboxLayout),
    /// Records written directly by the client, change counter, save-to-flash coil.
    Kl8Records(RecordLayout),
    /// A meter gateway: a programmed meter list, a read-out trigger, a reading per slot.
    MeterGateway(GatewayLayout),
    /// An esp-rfid controller over MQTT: JSON commands, content-free acks, a user list
    /// that is the only proof of what it holds.
    EspRfidMqtt(EspRfidLayout),
}

/// Limits of the esp-rfid MQTT protocol, which has no command result and no
/// end-of-list marker (the driver closes a list with `getconf`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EspRfidLayout {
    /// Longest a whole list read may take, up to the answer to `getconf`.
    pub list_timeout_ms: u64,
    /// Longest wait for a command's acknowledgement before moving on (it proves
    /// nothing: the list read-back does).
    pub ack_timeout_ms: u64,
    /// Longest uid the device accepts, in hex digits.
    pub max_uid_hex: usize,
    /// Users the device is trusted to hold (each is a file in its flash).
    pub capacity: u16,
    /// How the reader writes a uid; a user must be stored under the same text for
    /// its badge to be recognised.
    pub uid_text: UidText,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UidText {
    /// Lowercase hex, two digits per byte (04a22b91).
    Padded,
    /// Lowercase hex without the number's leading zeros (4a22b91).
    NoLeadingZeros,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MailboxLayout {
    pub slots_base: u16,
    pub slot_stride: u16,
    pub uid_registers: u16,
    pub mailbox_base: u16,
    pub result_base: u16,
    pub result_first_poll_ms: u64,
    pub command_timeout_ms: u64,
    pub events_written: u16,
    pub events_ring_size: u16,
    pub events_base: u16,
    pub event_stride: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordLayout {
    pub records_base: u16,
    pub record_stride: u16,
    pub card_word_order: WordOrder,
    pub save_coil: u16,
    pub open_door_coil_base: u16,
    pub save_timeout_ms: u64,
}

/// A meter gateway's control registers, meter list and readings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayLayout {
    /// Holding register: end of the last read-out (Unix time), 0 if none.
    pub last_readout: Field,
    /// Holding register: 0 idle, 1 read-out running.
    pub readout_state: u16,
    /// Holding register: write 1 to start a read-out.
    pub trigger: u16,
    /// Bus time one meter takes during a read-out, to know when to look for the end.
    pub ms_per_meter: u64,
    /// Meter slot i's holding registers start at `slots_base + slot_stride * i`:
    /// active, id (BCD u32), manufacturer, version << 8 | medium, reserved.
    pub slots_base: u16,
    pub slot_stride: u16,
    /// Meter slot i's reading (input registers) starts at `readings_base + reading_stride * i`.
    pub readings_base: u16,
    pub reading_stride: u16,
    /// Where each value sits in a reading, as offsets from its start.
    pub reading: ReadingMap,
}

/// Offsets (the `address` of each field) within one slot's reading.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadingMap {
    pub status: Field,
    /// The index: a float in the meter's unit, or a raw integer scaled by `exponent`.
    pub index: Field,
    /// Power of ten applied to a raw integer index.
    pub exponent: Option<Field>,
    pub unit: Field,
    /// Unix time of this meter's reading, 0 if never read.
    pub time: Field,
    /// The id (BCD) of the meter that answered.
    pub id_echo: Field,
}

impl ReadingMap {
    /// Registers from a reading's start that hold everything the service reads.
    pub fn span(&self) -> u16 {
        [
            Some(&self.status),
            Some(&self.index),
            self.exponent.as_ref(),
            Some(&self.unit),
            Some(&self.time),
            Some(&self.id_echo),
        ]
        .into_iter()
        .flatten()
        .map(|field| field.address + field.registers())
        .max()
        .unwrap_or(0)
    }
}

/// The profiles known to this build, by id.
#[derive(Debug, Clone)]
pub struct Registry {
    profiles: BTreeMap<String, DeviceProfile>,
}

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/profiles.rs"));
}

impl Registry {
    /// The profiles of `firmware-config/`, embedded at build time.
    pub fn builtin() -> Result<Registry, String> {
        Registry::from_files(
            embedded::EMBEDDED
                .iter()
                .map(|(name, text)| (name.to_string(), text.to_string())),
        )
    }

    /// Parses and checks profiles given as (file name, TOML text).
    pub fn from_files(
        files: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Registry, String> {
        let mut profiles = BTreeMap::new();
        for (name, text) in files {
            let profile: DeviceProfile =
                toml::from_str(&text).map_err(|err| format!("{name}: {err}"))?;
            profile.check().map_err(|err| format!("{name}: {err}"))?;
            if let Some(previous) = profiles.insert(profile.id.clone(), profile) {
                return Err(format!("{name}: profile id {} is used twice", previous.id));
            }
        }
        Ok(Registry { profiles })
    }

    pub fn get(&self, id: &str) -> Option<&DeviceProfile> {
        self.profiles.get(id)
    }

    pub fn all(&self) -> impl Iterator<Item = &DeviceProfile> {
        self.profiles.values()
    }

    /// The profile of a device with `role` for a model name ("PX-2", case and dashes
    /// ignored) and, when known, a firmware major version.
    pub fn for_model(
        &self,
        role: DeviceRole,
        model: &str,
        firmware_major: Option<u8>,
    ) -> Option<&DeviceProfile> {
        let wanted = fold_model(model);
        self.profiles
            .values()
            .filter(|p| p.role() == role && fold_model(&p.model) == wanted)
            .find(|p| firmware_major.is_none_or(|major| p.firmware_major == major))
    }

    /// Model names known for `role`, for error messages.
    pub fn models(&self, role: DeviceRole) -> Vec<String> {
        let mut models: Vec<String> = self
            .profiles
            .values()
            .filter(|p| p.role() == role)
            .map(|p| p.model.clone())
            .collect();
        models.dedup();
        models
    }
}

fn fold_model(model: &str) -> String {
    model
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect::<String>()
        .to_ascii_uppercase()
}

impl DeviceProfile {
    pub fn role(&self) -> DeviceRole {
        match self.layout {
            Layout::Px2Mailbox(_) | Layout::Kl8Records(_) | Layout::EspRfidMqtt(_) => {
                DeviceRole::LockController
            }
            Layout::MeterGateway(_) => DeviceRole::MeterGateway,
        }
    }

    /// How the device is reached over Modbus; an error for MQTT devices.
    pub fn modbus_settings(&self) -> crate::Result<&ModbusSettings> {
        self.modbus.as_ref().ok_or_else(|| self.not_modbus())
    }

    /// The identity registers of a Modbus device.
    pub fn identity_map(&self) -> crate::Result<&IdentityMap> {
        self.identity.as_ref().ok_or_else(|| self.not_modbus())
    }

    /// The model register's expected value on a Modbus device.
    pub fn modbus_model_code(&self) -> crate::Result<u16> {
        self.model_code.ok_or_else(|| self.not_modbus())
    }

    fn not_modbus(&self) -> crate::DriverError {
        crate::DriverError::Unsupported(format!("a {} is not reached over Modbus", self.model))
    }

    /// Whether the device is reached over MQTT rather than Modbus.
    pub fn is_mqtt(&self) -> bool {
        matches!(self.layout, Layout::EspRfidMqtt(_))
    }

    /// Checks what the code relies on: limits within Modbus, a table that fits.
    fn check(&self) -> Result<(), String> {
        if self.is_mqtt() {
            if self.modbus.is_some() || self.identity.is_some() || self.model_code.is_some() {
                return Err("an MQTT device has no modbus, identity or model_code".into());
            }
        } else if self.modbus.is_none() || self.identity.is_none() || self.model_code.is_none() {
            return Err("a Modbus device needs model_code, [modbus] and [identity]".into());
        }
        if let Some(m) = &self.modbus {
            if !(1..=125).contains(&m.max_read) || !(1..=123).contains(&m.max_write) {
                return Err("modbus.max_read must be 1..=125 and max_write 1..=123".into());
            }
            if !(1..=247).contains(&m.default_unit) {
                return Err("modbus.default_unit must be 1..=247".into());
            }
        }
        match (&self.keys, self.role()) {
            (Some(keys), DeviceRole::LockController) => {
                if keys.max_doors == 0 || keys.max_doors > 16 {
                    return Err("keys.max_doors must be 1..=16".into());
                }
            }
            (None, DeviceRole::LockController) => {
                return Err("a lock controller needs a [keys] section".into())
            }
            (Some(_), DeviceRole::MeterGateway) => {
                return Err("a meter gateway holds no keys: remove the [keys] section".into())
            }
            (None, DeviceRole::MeterGateway) => {}
        }
        let keys = self.key_support();
        let (Some(m), Some(identity)) = (&self.modbus, &self.identity) else {
            return match &self.layout {
                Layout::EspRfidMqtt(layout) => check_esp_rfid(layout, keys),
                _ => Err("a Modbus device needs [modbus] and [identity]".into()),
            };
        };
        match &self.layout {
            Layout::EspRfidMqtt(_) => return Err("an MQTT device has no [modbus]".into()),
            Layout::Px2Mailbox(layout) => {
                if identity.digest.is_none()
                    || identity.used.is_none()
                    || identity.boot_counter.is_none()
                {
                    return Err("a mailbox device needs identity.digest, identity.used and identity.boot_counter".into());
                }
                if layout.slot_stride < 2 + layout.uid_registers + 1
                    || layout.slot_stride > m.max_read
                {
                    return Err(
                        "layout.slot_stride must hold flags, uid_len, the uid and the door mask"
                            .into(),
                    );
                }
                if layout.event_stride < 4 + layout.uid_registers
                    || layout.event_stride > m.max_read
                {
                    return Err(
                        "layout.event_stride must hold time, uid_len, the uid, door and result"
                            .into(),
                    );
                }
                if keys
                    .badge_uid_lengths
                    .iter()
                    .any(|len| *len == 0 || *len > usize::from(layout.uid_registers) * 2)
                {
                    return Err("keys.badge_uid_lengths do not fit the uid registers".into());
                }
            }
            Layout::Kl8Records(layout) => {
                if identity.change_counter.is_none() {
                    return Err("a record device needs identity.change_counter".into());
                }
                if layout.record_stride < 4 || layout.record_stride > m.max_write {
                    return Err(
                        "layout.record_stride must hold card (2), door_mask and state".into(),
                    );
                }
            }
            Layout::MeterGateway(layout) => {
                if layout.slot_stride < 5 || layout.slot_stride > m.max_write {
                    return Err("layout.slot_stride must hold active, id (2), manufacturer and version/medium, and fit one write".into());
                }
                let span = layout.reading.span();
                if span > layout.reading_stride || layout.reading_stride > m.max_read {
                    return Err(
                        "layout.reading fields must fit in reading_stride, and a reading in one read"
                            .into(),
                    );
                }
                if layout.reading.exponent.is_some()
                    == (layout.reading.index.data_type == crate::registers::DataType::F32)
                {
                    return Err("layout.reading: a float index takes no exponent, an integer index needs one".into());
                }
                if identity.clock.is_none() || identity.used.is_none() {
                    return Err(
                        "a meter gateway needs identity.clock and identity.used (configured slots)"
                            .into(),
                    );
                }
            }
        }
        Ok(())
    }
}

/// esp-rfid: badges only (the reader reports a uid), relays as doors, sane timings.
fn check_esp_rfid(layout: &EspRfidLayout, keys: &KeySupport) -> Result<(), String> {
    if keys.max_doors > 4 {
        return Err("keys.max_doors: esp-rfid drives at most 4 relays".into());
    }
    if keys.badge_encoding != BadgeEncoding::Uid
        || keys
            .badge_uid_lengths
            .iter()
            .any(|len| *len == 0 || len * 2 > layout.max_uid_hex)
    {
        return Err("keys: esp-rfid stores badge uids as hex of at most max_uid_hex digits".into());
    }
    if layout.list_timeout_ms == 0 || layout.ack_timeout_ms == 0 {
        return Err("layout: list_timeout_ms and ack_timeout_ms must be > 0".into());
    }
    Ok(())
}

impl DeviceProfile {
    /// Which keys a lock controller holds; empty for other devices (checked at load).
    pub fn key_support(&self) -> &KeySupport {
        static NONE: KeySupport = KeySupport {
            badge_uid_lengths: Vec::new(),
            badge_encoding: BadgeEncoding::Uid,
            remote_encoding: RemoteEncoding::UidBe32,
            max_doors: 0,
        };
        self.keys.as_ref().unwrap_or(&NONE)
    }
}
