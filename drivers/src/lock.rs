//! What a lock controller is to the service, whatever its protocol: a table of
//! credentials with door masks that can be read, added to and removed from, doors
//! that can be opened, and (for some) a log of access events.

use std::fmt;

use async_trait::async_trait;

use crate::error::{DriverError, Result};
use crate::profile::{BadgeEncoding, DeviceProfile, RemoteEncoding};

/// A key as the service knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyIdentity {
    /// A badge UID, bytes in reading order.
    Badge(Vec<u8>),
    /// A remote's printed serial.
    Remote(u32),
}

/// A key as a device stores it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Credential {
    /// UID bytes (PX-2).
    Uid(Vec<u8>),
    /// A 32-bit card number (KL-8).
    Card(u32),
}

impl Credential {
    pub fn uid(&self) -> Option<&[u8]> {
        match self {
            Credential::Uid(uid) => Some(uid),
            Credential::Card(_) => None,
        }
    }

    /// Parses the text form written by `Display` (`uid:04A22B91`, `card:2435555844`).
    pub fn parse(text: &str) -> Option<Credential> {
        match text.split_once(':')? {
            ("uid", hex) if !hex.is_empty() && hex.len() % 2 == 0 && hex.len() <= 20 => {
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?;
                Some(Credential::Uid(bytes))
            }
            ("card", number) => number.parse().ok().map(Credential::Card),
            _ => None,
        }
    }
}

impl fmt::Display for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Uid(uid) => {
                f.write_str("uid:")?;
                uid.iter().try_for_each(|byte| write!(f, "{byte:02X}"))
            }
            Credential::Card(card) => write!(f, "card:{card}"),
        }
    }
}

/// One line of a controller's table.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub credential: Credential,
    /// Bit n set: door n+1 opens.
    pub doors: u16,
}

/// An entry as read from the device, with where it sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEntry {
    pub slot: u16,
    pub entry: Entry,
}

/// What identifies a device and summarises its table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub model_code: u16,
    pub firmware: (u8, u8),
    pub capacity: u16,
    /// Active entries, when the device tells.
    pub used: Option<u16>,
    pub fingerprint: Fingerprint,
}

/// What tells, in one read, whether a table changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fingerprint {
    /// PX-2: digest of the table, and the boot counter (0 after a factory reset).
    Digest { digest: u32, boot_counter: u16 },
    /// KL-8: +1 on every table write, 0 after power-up.
    ChangeCounter(u16),
    /// esp-rfid: the digest of the user list just read back (0 when empty).
    ListDigest(u32),
}

/// Dates (Unix times) outside which a device that keeps them refuses a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub since: i64,
    pub until: i64,
}

/// The outcome of a table change the device accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Done,
    /// Add of a credential the table already holds; nothing changed.
    AlreadyPresent,
    /// Removal of a credential the table does not hold; nothing changed.
    NotFound,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessResult {
    Granted,
    /// Credential not in the table.
    DeniedUnknown,
    /// Credential known, door not in its mask.
    DeniedDoor,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessEvent {
    /// Number of the event since the device's power-up.
    pub number: u64,
    /// Unix time (UTC) by the device's clock.
    pub time: u32,
    pub credential: Credential,
    pub door: u8,
    pub result: AccessResult,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventBatch {
    pub events: Vec<AccessEvent>,
    /// Events written since the cursor that the ring no longer holds.
    pub lost: u32,
    /// Where the next read starts.
    pub cursor: u64,
}

/// A lock controller, over whatever protocol it speaks.
#[async_trait]
pub trait LockController: Send {
    fn profile(&self) -> &DeviceProfile;

    /// Reads the identity registers; refuses a device that is not the profile's model
    /// and firmware line.
    async fn identify(&mut self) -> Result<Identity>;

    /// Reads the whole table.
    async fn read_table(&mut self) -> Result<Vec<StoredEntry>>;

    /// Adds a credential; `AlreadyPresent` leaves its doors as they are.
    async fn add(&mut self, entry: &Entry) -> Result<Applied>;

    /// Adds a credential with the dates outside which the device itself must refuse
    /// it, on devices that keep dates (esp-rfid); the others store no dates and the
    /// service removes the key when its validity ends.
    async fn add_valid(&mut self, entry: &Entry, validity: Option<Validity>) -> Result<Applied> {
        let _ = validity;
        self.add(entry).await
    }

    async fn remove(&mut self, credential: &Credential) -> Result<Applied>;

    /// Changes the doors of a credential the table holds.
    async fn set_doors(&mut self, entry: &Entry) -> Result<Applied>;

    /// `set_doors` on a device that keeps validity dates, which it rewrites with them.
    async fn set_doors_valid(
        &mut self,
        entry: &Entry,
        validity: Option<Validity>,
    ) -> Result<Applied> {
        let _ = validity;
        self.set_doors(entry).await
    }

    /// Pulses the relay of door `door` (1-based).
    async fn open_door(&mut self, door: u8) -> Result<()>;

    /// Makes changes durable where the device needs it (KL-8: save to flash).
    async fn persist(&mut self) -> Result<()>;

    /// Access events written since `cursor`; `Unsupported` on devices without a log.
    /// `cursor` counts events since the device's power-up (0 after a reboot).
    async fn read_events(&mut self, cursor: u64) -> Result<EventBatch>;

    /// The device clock (Unix time, UTC); `None` on devices without one.
    async fn read_clock(&mut self) -> Result<Option<u32>>;

    /// Sets the device clock to `unix_time` (UTC).
    async fn set_clock(&mut self, unix_time: u32) -> Result<()>;

    /// The fingerprint the device shows if only this driver changed it since it last
    /// read the table; `None` when the driver cannot tell (the caller then compares
    /// with what it expects, e.g. the digest of the expected table).
    fn expected_fingerprint(&self) -> Option<Fingerprint> {
        None
    }

    /// The table with record positions, where the client places records (KL-8), as the
    /// driver believes it after its own writes; `None` elsewhere.
    fn placed_table(&self) -> Option<Vec<StoredEntry>> {
        None
    }

    /// Gives the driver a table with record positions kept from an earlier connection,
    /// to be trusted only while the device's fingerprint is `fingerprint`; saves the
    /// full read a client-placed table would otherwise need before its first write.
    fn trust_placed_table(
        &mut self,
        _table: Vec<StoredEntry>,
        _fingerprint: Fingerprint,
        _capacity: u16,
    ) {
    }

    /// Modbus transactions (or messages) used so far on this connection.
    fn transactions(&self) -> u64;

    /// The name the device gives itself, where its unsolicited messages carry only
    /// that (esp-rfid access events name the host).
    fn device_name(&self) -> Option<String> {
        None
    }
}

impl DeviceProfile {
    /// How this device stores `key`, or why it cannot.
    pub fn credential_for(&self, key: &KeyIdentity) -> Result<Credential> {
        let keys = self.key_support();
        match key {
            KeyIdentity::Badge(uid) => {
                if !keys.badge_uid_lengths.contains(&uid.len()) {
                    return Err(DriverError::Unsupported(format!(
                        "a {} holds badges with UIDs of {:?} bytes, not {}",
                        self.model,
                        keys.badge_uid_lengths,
                        uid.len()
                    )));
                }
                match keys.badge_encoding {
                    BadgeEncoding::Uid => Ok(Credential::Uid(uid.clone())),
                    BadgeEncoding::CardLe => {
                        let bytes: [u8; 4] = uid.as_slice().try_into().map_err(|_| {
                            DriverError::Unsupported(format!(
                                "a {} stores 4-byte badge UIDs only",
                                self.model
                            ))
                        })?;
                        Ok(Credential::Card(u32::from_le_bytes(bytes)))
                    }
                }
            }
            KeyIdentity::Remote(serial) => Ok(match keys.remote_encoding {
                RemoteEncoding::UidBe32 => Credential::Uid(serial.to_be_bytes().to_vec()),
                RemoteEncoding::Card => Credential::Card(*serial),
                RemoteEncoding::None => {
                    return Err(DriverError::Unsupported(format!(
                        "a {} has no remote receiver",
                        self.model
                    )))
                }
            }),
        }
    }

    /// Checks that a door mask only names doors this device has.
    pub fn check_door_mask(&self, doors: u16) -> Result<u16> {
        let max_doors = self.key_support().max_doors;
        let limit = if max_doors >= 16 {
            u16::MAX
        } else {
            (1u16 << max_doors) - 1
        };
        if doors & !limit != 0 {
            return Err(DriverError::Unsupported(format!(
                "door mask {doors:#06x} beyond the {} doors of a {}",
                max_doors, self.model
            )));
        }
        Ok(doors)
    }

    /// Checks a door number (1-based) against the doors this device has.
    pub fn check_door_number(&self, door: u8) -> Result<u8> {
        let max_doors = self.key_support().max_doors;
        if door == 0 || door > max_doors {
            return Err(DriverError::Unsupported(format!(
                "door {door} (1 to {max_doors} on a {})",
                self.model
            )));
        }
        Ok(door)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_print_and_parse() {
        for credential in [
            Credential::Uid(vec![0x04, 0xA2, 0x2B, 0x91]),
            Credential::Card(2_435_555_844),
        ] {
            assert_eq!(Credential::parse(&credential.to_string()), Some(credential));
        }
        assert_eq!(Credential::parse("uid:0"), None);
        assert_eq!(Credential::parse("card:x"), None);
    }
}
