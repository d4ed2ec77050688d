//! The PX-2 family: a read-only slot table changed through a command mailbox, a table
//! digest, and a ring of access events.

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::{DriverError, Result};
use crate::identity::{optional, read_identity, required};
use crate::link::Link;
use crate::lock::{
    AccessEvent, AccessResult, Applied, Credential, Entry, EventBatch, Fingerprint, Identity,
    LockController, StoredEntry,
};
use crate::profile::{DeviceProfile, Layout, MailboxLayout};

const ADD: u16 = 1;
const DELETE_UID: u16 = 2;
const OPEN_DOOR: u16 = 4;
const SET_DOORS: u16 = 5;

const BUSY: u8 = 0x06;

pub struct Px2 {
    link: Link,
    profile: DeviceProfile,
    layout: MailboxLayout,
    /// Sequence of the last command, which the next must differ from.
    last_sequence: Option<u16>,
    /// Set when `identify` found another device: nothing is written to it.
    wrong_device: Option<DriverError>,
    capacity: Option<u16>,
}

impl Px2 {
    pub fn new(link: Link, profile: DeviceProfile) -> Result<Px2> {
        let Layout::Px2Mailbox(layout) = profile.layout.clone() else {
            return Err(DriverError::Unsupported(format!(
                "profile {} is not a mailbox device",
                profile.id
            )));
        };
        Ok(Px2 {
            link,
            profile,
            layout,
            last_sequence: None,
            wrong_device: None,
            capacity: None,
        })
    }

    fn uid_registers(&self, uid: &[u8]) -> Result<Vec<u16>> {
        let count = usize::from(self.layout.uid_registers);
        if uid.is_empty() || uid.len() > count * 2 {
            return Err(DriverError::Unsupported(format!(
                "a UID of {} bytes (1 to {} here)",
                uid.len(),
                count * 2
            )));
        }
        let mut padded = uid.to_vec();
        padded.resize(count * 2, 0);
        Ok(padded
            .chunks(2)
            .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
            .collect())
    }

    /// Runs one mailbox command: one write, then reads of the result until it names our
    /// sequence. Answers (result, slot).
    async fn command(&mut self, command: u16, uid: &[u8], argument: u16) -> Result<(u16, u16)> {
        crate::identity::ensure_right_device(&self.wrong_device)?;
        // Check the request before anything goes on the wire.
        let uid_words = self.uid_registers(uid)?;
        // The next sequence must differ from the previous one: on the first command of
        // a connection, read the mailbox and the result once to learn it.
        let previous = match self.last_sequence {
            Some(previous) => previous,
            None => {
                let count = self.layout.result_base - self.layout.mailbox_base + 1;
                let words = self
                    .link
                    .read_holding(self.layout.mailbox_base, count)
                    .await?;
                let (written, done) = (words[0], words[words.len() - 1]);
                written.max(done)
            }
        };
        let sequence = match previous.wrapping_add(1) {
            0 => 1,
            next => next,
        };
        let mut block = vec![sequence, command, uid.len() as u16];
        block.extend(uid_words);
        block.extend([argument, 0]);

        let deadline = Instant::now() + Duration::from_millis(self.layout.command_timeout_ms);
        let poll = Duration::from_millis(self.layout.result_first_poll_ms.max(1));
        // The device is busy while an earlier command (ours or another client's) runs.
        loop {
            match self
                .link
                .write_registers(self.layout.mailbox_base, &block)
                .await
            {
                Ok(()) => break,
                Err(DriverError::Exception { code: BUSY, .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(poll).await
                }
                Err(err) => return Err(err),
            }
        }
        self.last_sequence = Some(sequence);
        tokio::time::sleep(poll).await;
        loop {
            let result = self.link.read_holding(self.layout.result_base, 3).await?;
            if let [done, outcome, slot] = result[..] {
                if done == sequence {
                    return Ok((outcome, slot));
                }
            }
            if Instant::now() >= deadline {
                return Err(DriverError::Timeout {
                    operation: "mailbox command completion",
                    after: Duration::from_millis(self.layout.command_timeout_ms),
                });
            }
            tokio::time::sleep(poll).await;
        }
    }

    async fn table_change(
        &mut self,
        command: u16,
        entry_uid: &[u8],
        argument: u16,
    ) -> Result<Applied> {
        let (outcome, _slot) = self.command(command, entry_uid, argument).await?;
        match outcome {
            0 => Ok(Applied::Done),
            1 => Err(DriverError::Refused(format!(
                "table full ({} slots)",
                self.capacity.map_or("?".into(), |c| c.to_string())
            ))),
            2 => Ok(Applied::AlreadyPresent),
            3 => Ok(Applied::NotFound),
            4 => Err(DriverError::Refused(
                "the device calls the request malformed (BAD_REQUEST)".into(),
            )),
            other => Err(DriverError::Protocol(format!(
                "unknown command result {other}"
            ))),
        }
    }

    fn uid_of<'a>(&self, credential: &'a Credential) -> Result<&'a [u8]> {
        credential.uid().ok_or_else(|| {
            DriverError::Unsupported(format!(
                "a {} stores UIDs, not card numbers",
                self.profile.model
            ))
        })
    }

    /// Decodes one slot or event's UID: length register then the UID registers.
    fn decode_uid(&self, len: u16, registers: &[u16]) -> Option<Vec<u8>> {
        let len = usize::from(len);
        let bytes: Vec<u8> = registers
            .iter()
            .flat_map(|word| word.to_be_bytes())
            .collect();
        (1..=bytes.len())
            .contains(&len)
            .then(|| bytes[..len].to_vec())
    }
}

#[async_trait]
impl LockController for Px2 {
    fn profile(&self) -> &DeviceProfile {
        &self.profile
    }

    async fn identify(&mut self) -> Result<Identity> {
        let block = read_identity(&mut self.link, &self.profile, &mut self.wrong_device).await?;
        let id = self.profile.identity_map()?;
        let capacity = required(&block, &id.capacity, "capacity")? as u16;
        self.capacity = Some(capacity);
        Ok(Identity {
            model_code: self.profile.modbus_model_code()?,
            firmware: crate::identity::firmware_pair(&block, &self.profile),
            capacity,
            used: optional(&block, id.used.as_ref()).map(|v| v as u16),
            fingerprint: Fingerprint::Digest {
                digest: optional(&block, id.digest.as_ref()).unwrap_or_default() as u32,
                boot_counter: optional(&block, id.boot_counter.as_ref()).unwrap_or_default() as u16,
            },
        })
    }

    async fn read_table(&mut self) -> Result<Vec<StoredEntry>> {
        let capacity = match self.capacity {
            Some(capacity) => capacity,
            None => self.identify().await?.capacity,
        };
        let stride = self.layout.slot_stride;
        let total = u32::from(capacity) * u32::from(stride);
        let count = u16::try_from(total).map_err(|_| {
            DriverError::Protocol(format!(
                "capacity {capacity} too large for the register map"
            ))
        })?;
        let words = self
            .link
            .read_holding(self.layout.slots_base, count)
            .await?;
        let uid_registers = usize::from(self.layout.uid_registers);
        let mut entries = Vec::new();
        for (slot, registers) in words.chunks(usize::from(stride)).enumerate() {
            if registers[0] & 1 == 0 {
                continue;
            }
            let uid = self
                .decode_uid(registers[1], &registers[2..2 + uid_registers])
                .ok_or_else(|| {
                    DriverError::Protocol(format!(
                        "slot {slot} is active with a UID length of {}",
                        registers[1]
                    ))
                })?;
            let doors = registers[2 + uid_registers];
            entries.push(StoredEntry {
                slot: slot as u16,
                entry: Entry {
                    credential: Credential::Uid(uid),
                    doors,
                },
            });
        }
        Ok(entries)
    }

    async fn add(&mut self, entry: &Entry) -> Result<Applied> {
        let uid = self.uid_of(&entry.credential)?.to_vec();
        let doors = self.profile.check_door_mask(entry.doors)?;
        self.table_change(ADD, &uid, doors).await
    }

    async fn remove(&mut self, credential: &Credential) -> Result<Applied> {
        let uid = self.uid_of(credential)?.to_vec();
        self.table_change(DELETE_UID, &uid, 0).await
    }

    async fn set_doors(&mut self, entry: &Entry) -> Result<Applied> {
        let uid = self.uid_of(&entry.credential)?.to_vec();
        let doors = self.profile.check_door_mask(entry.doors)?;
        self.table_change(SET_DOORS, &uid, doors).await
    }

    async fn open_door(&mut self, door: u8) -> Result<()> {
        self.profile.check_door_number(door)?;
        match self.command(OPEN_DOOR, &[0], u16::from(door)).await?.0 {
            0 => Ok(()),
            other => Err(DriverError::Refused(format!(
                "open door {door}: result {other}"
            ))),
        }
    }

    async fn persist(&mut self) -> Result<()> {
        Ok(()) // the table survives power cuts
    }

    /// `cursor` counts events since power-up. The device counts in 16 bits and places
    /// event n at n mod ring size, so the position must come from the full count: the
    /// 16-bit difference says how many were written since the cursor (fewer than 65536
    /// between two reads).
    async fn read_events(&mut self, cursor: u64) -> Result<EventBatch> {
        crate::identity::ensure_right_device(&self.wrong_device)?;
        let layout = self.layout.clone();
        let first = layout.events_written.min(layout.events_ring_size);
        let span = layout.events_written.max(layout.events_ring_size) - first + 1;
        let header = self.link.read_input(first, span).await?;
        let written = header[usize::from(layout.events_written - first)];
        let ring = u64::from(header[usize::from(layout.events_ring_size - first)]);
        if ring == 0 {
            return Err(DriverError::Protocol("event ring size 0".into()));
        }
        let pending = u64::from(written.wrapping_sub(cursor as u16));
        let total = cursor + pending;
        let lost = pending.saturating_sub(ring);
        let mut events = Vec::new();
        // Read the ring in runs of consecutive positions, as few requests as possible.
        let mut number = cursor + lost;
        while number < total {
            let position = number % ring;
            let run = (ring - position).min(total - number) as u16;
            let address = layout.events_base + position as u16 * layout.event_stride;
            let words = self
                .link
                .read_input(address, run * layout.event_stride)
                .await?;
            for registers in words.chunks(usize::from(layout.event_stride)) {
                if let Some(event) = self.decode_event(number, registers) {
                    events.push(event);
                }
                number += 1;
            }
        }
        Ok(EventBatch {
            events,
            lost: lost as u32,
            cursor: total,
        })
    }

    async fn read_clock(&mut self) -> Result<Option<u32>> {
        crate::identity::read_clock(&mut self.link, &self.profile).await
    }

    async fn set_clock(&mut self, unix_time: u32) -> Result<()> {
        crate::identity::ensure_right_device(&self.wrong_device)?;
        let field = self.profile.identity_map()?.clock.ok_or_else(|| {
            DriverError::Unsupported(format!("a {} has no clock register", self.profile.model))
        })?;
        let words = field.encode_unsigned(u64::from(unix_time));
        self.link.write_registers(field.address, &words).await
    }

    fn transactions(&self) -> u64 {
        self.link.transactions()
    }
}

impl Px2 {
    /// One event record: time (2), uid_len, uid, door, result. A record the protocol
    /// does not allow is skipped (and logged): one bad record must not stop the log.
    fn decode_event(&self, number: u64, registers: &[u16]) -> Option<AccessEvent> {
        let uid_registers = usize::from(self.layout.uid_registers);
        let time = (u32::from(registers[0]) << 16) | u32::from(registers[1]);
        let uid = self.decode_uid(registers[2], &registers[3..3 + uid_registers]);
        let door = registers[3 + uid_registers];
        let result = match registers[4 + uid_registers] {
            1 => Some(AccessResult::Granted),
            2 => Some(AccessResult::DeniedUnknown),
            3 => Some(AccessResult::DeniedDoor),
            _ => None,
        };
        match (uid, result) {
            (Some(uid), Some(result)) if (1..=16).contains(&door) => Some(AccessEvent {
                number,
                time,
                credential: Credential::Uid(uid),
                door: door as u8,
                result,
            }),
            _ => {
                tracing::warn!(
                    number,
                    ?registers,
                    "skipping an event record the protocol does not allow"
                );
                None
            }
        }
    }
}
