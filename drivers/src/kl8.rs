//! The KL-8 family: the client writes card records directly and picks where; a change
//! counter moves on every table write; writes live in RAM until saved to flash.
//!
//! To change one record with one write, the driver keeps an image of the table: read
//! in full once, then kept up to date by its own writes. The image is trusted only
//! while the device's change counter equals the count of writes the image has seen; a
//! reboot (counter back to 0) or another client's writes make it read the table again.

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::error::{DriverError, Result};
use crate::identity::{firmware_pair, optional, read_identity, required};
use crate::link::Link;
use crate::lock::{
    Applied, Credential, Entry, EventBatch, Fingerprint, Identity, LockController, StoredEntry,
};
use crate::profile::{DeviceProfile, Layout, RecordLayout};
use crate::registers::{join_words, split_words};

const STATE_EMPTY: u16 = 0;
const STATE_ACTIVE: u16 = 1;

pub struct Kl8 {
    link: Link,
    profile: DeviceProfile,
    layout: RecordLayout,
    image: Option<Image>,
    /// Set when `identify` found another device: nothing is written to it.
    wrong_device: Option<DriverError>,
}

/// The table as the driver believes the device holds it.
struct Image {
    /// Record index → card and doors, `None` for an empty record.
    records: Vec<Option<(u32, u16)>>,
    /// The change counter value the device shows if nobody else wrote.
    counter: u16,
}

impl Image {
    fn find(&self, card: u32) -> Vec<usize> {
        self.records
            .iter()
            .enumerate()
            .filter(|(_, record)| record.is_some_and(|(c, _)| c == card))
            .map(|(index, _)| index)
            .collect()
    }
}

impl Kl8 {
    pub fn new(link: Link, profile: DeviceProfile) -> Result<Kl8> {
        let Layout::Kl8Records(layout) = profile.layout.clone() else {
            return Err(DriverError::Unsupported(format!(
                "profile {} is not a record device",
                profile.id
            )));
        };
        Ok(Kl8 {
            link,
            profile,
            layout,
            image: None,
            wrong_device: None,
        })
    }

    fn record_address(&self, index: usize, offset: u16) -> u16 {
        self.layout.records_base + self.layout.record_stride * index as u16 + offset
    }

    fn card_of(&self, credential: &Credential) -> Result<u32> {
        match credential {
            Credential::Card(card) => Ok(*card),
            Credential::Uid(_) => Err(DriverError::Unsupported(format!(
                "a {} stores card numbers, not UIDs",
                self.profile.model
            ))),
        }
    }

    async fn counter(&mut self) -> Result<u16> {
        let field = self
            .profile
            .identity_map()?
            .change_counter
            .ok_or_else(|| DriverError::Unsupported("no change counter".into()))?;
        let words = self.link.read_holding(field.address, 1).await?;
        Ok(words[0])
    }

    /// The image, reading the table when there is none.
    async fn image(&mut self) -> Result<&mut Image> {
        if self.image.is_none() {
            self.load_image().await?;
        }
        self.image
            .as_mut()
            .ok_or_else(|| DriverError::Protocol("table image missing after reading it".into()))
    }

    async fn load_image(&mut self) -> Result<()> {
        let field = self.profile.identity_map()?.capacity;
        let capacity = required(
            &crate::registers::Block {
                base: field.address,
                words: self.link.read_holding(field.address, 1).await?,
            },
            &field,
            "capacity",
        )? as u16;
        // Counter before and after: a write in between means the read may be torn.
        for _ in 0..3 {
            let before = self.counter().await?;
            let records = self.read_records(capacity).await?;
            if self.counter().await? == before {
                self.image = Some(Image {
                    records,
                    counter: before,
                });
                return Ok(());
            }
        }
        Err(DriverError::Protocol(
            "the table kept changing while it was read".into(),
        ))
    }

    async fn read_records(&mut self, capacity: u16) -> Result<Vec<Option<(u32, u16)>>> {
        let stride = self.layout.record_stride;
        let count = u16::try_from(u32::from(capacity) * u32::from(stride)).map_err(|_| {
            DriverError::Protocol(format!(
                "capacity {capacity} too large for the register map"
            ))
        })?;
        let words = self
            .link
            .read_holding(self.layout.records_base, count)
            .await?;
        words
            .chunks(usize::from(stride))
            .enumerate()
            .map(|(index, record)| match record[3] {
                STATE_EMPTY => Ok(None),
                STATE_ACTIVE => Ok(Some((
                    join_words(&record[0..2], self.layout.card_word_order) as u32,
                    record[2],
                ))),
                other => Err(DriverError::Protocol(format!(
                    "record {index} has state {other} (0 or 1 expected)"
                ))),
            })
            .collect()
    }

    /// The registers of an active record: card (in the profile's word order), doors, state.
    fn record_words(&self, card: u32, doors: u16) -> Vec<u16> {
        let mut words = split_words(u64::from(card), 2, self.layout.card_word_order);
        words.extend([doors, STATE_ACTIVE]);
        words.resize(usize::from(self.layout.record_stride), 0);
        words
    }

    /// Counts one table write in the image.
    fn wrote(&mut self) {
        if let Some(image) = &mut self.image {
            image.counter = image.counter.wrapping_add(1);
        }
    }
}

#[async_trait]
impl LockController for Kl8 {
    fn profile(&self) -> &DeviceProfile {
        &self.profile
    }

    async fn identify(&mut self) -> Result<Identity> {
        let block = read_identity(&mut self.link, &self.profile, &mut self.wrong_device).await?;
        let id = self.profile.identity_map()?;
        let counter = optional(&block, id.change_counter.as_ref()).unwrap_or_default() as u16;
        if self
            .image
            .as_ref()
            .is_some_and(|image| image.counter != counter)
        {
            tracing::info!(
                counter,
                "KL-8 change counter moved unexpectedly: the table will be read again"
            );
            self.image = None;
        }
        let capacity = required(&block, &id.capacity, "capacity")? as u16;
        let used = self
            .image
            .as_ref()
            .map(|image| image.records.iter().flatten().count() as u16);
        Ok(Identity {
            model_code: self.profile.modbus_model_code()?,
            firmware: firmware_pair(&block, &self.profile),
            capacity,
            used,
            fingerprint: Fingerprint::ChangeCounter(counter),
        })
    }

    async fn read_table(&mut self) -> Result<Vec<StoredEntry>> {
        self.load_image().await?;
        let image = self.image().await?;
        Ok(image
            .records
            .iter()
            .enumerate()
            .filter_map(|(index, record)| {
                record.map(|(card, doors)| StoredEntry {
                    slot: index as u16,
                    entry: Entry {
                        credential: Credential::Card(card),
                        doors,
                    },
                })
            })
            .collect())
    }

    async fn add(&mut self, entry: &Entry) -> Result<Applied> {
        crate::identity::ensure_right_device(&self.wrong_device)?;
        let card = self.card_of(&entry.credential)?;
        let doors = self.profile.check_door_mask(entry.doors)?;
        let image = self.image().await?;
        if !image.find(card).is_empty() {
            return Ok(Applied::AlreadyPresent);
        }
        let capacity = image.records.len();
        let free = image
            .records
            .iter()
            .position(Option::is_none)
            .ok_or_else(|| DriverError::Refused(format!("table full ({capacity} records)")))?;
        let words = self.record_words(card, doors);
        self.link
            .write_registers(self.record_address(free, 0), &words)
            .await?;
        self.wrote();
        if let Some(image) = &mut self.image {
            image.records[free] = Some((card, doors));
        }
        Ok(Applied::Done)
    }

    /// Clears every record holding the card: duplicates are a fault the device
    /// resolves by honouring the first, and a removed key must go for good.
    async fn remove(&mut self, credential: &Credential) -> Result<Applied> {
        crate::identity::ensure_right_device(&self.wrong_device)?;
        let card = self.card_of(credential)?;
        let indexes = self.image().await?.find(card);
        if indexes.is_empty() {
            return Ok(Applied::NotFound);
        }
        for index in indexes {
            self.link
                .write_register(self.record_address(index, 3), STATE_EMPTY)
                .await?;
            self.wrote();
            if let Some(image) = &mut self.image {
                image.records[index] = None;
            }
        }
        Ok(Applied::Done)
    }

    async fn set_doors(&mut self, entry: &Entry) -> Result<Applied> {
        crate::identity::ensure_right_device(&self.wrong_device)?;
        let card = self.card_of(&entry.credential)?;
        let doors = self.profile.check_door_mask(entry.doors)?;
        let indexes = self.image().await?.find(card);
        if indexes.is_empty() {
            return Ok(Applied::NotFound);
        }
        // A record is written whole (one FC16 of its registers); the device takes no
        // single-register write but the one that clears it.
        let record = self.record_words(card, doors);
        for index in indexes {
            self.link
                .write_registers(self.record_address(index, 0), &record)
                .await?;
            self.wrote();
            if let Some(image) = &mut self.image {
                image.records[index] = Some((card, doors));
            }
        }
        Ok(Applied::Done)
    }

    async fn open_door(&mut self, door: u8) -> Result<()> {
        crate::identity::ensure_right_device(&self.wrong_device)?;
        self.profile.check_door_number(door)?;
        let coil = self.layout.open_door_coil_base + u16::from(door - 1);
        self.link.write_coil(coil, true).await
    }

    /// Saves the table to flash and waits until the device says it is done.
    async fn persist(&mut self) -> Result<()> {
        crate::identity::ensure_right_device(&self.wrong_device)?;
        self.link.write_coil(self.layout.save_coil, true).await?;
        let timeout = Duration::from_millis(self.layout.save_timeout_ms);
        let deadline = Instant::now() + timeout;
        let mut poll = Duration::from_millis(20);
        loop {
            tokio::time::sleep(poll).await;
            if !self.link.read_coil(self.layout.save_coil).await? {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DriverError::Timeout {
                    operation: "save to flash",
                    after: timeout,
                });
            }
            poll = (poll * 2).min(Duration::from_millis(200));
        }
    }

    async fn read_events(&mut self, _cursor: u64) -> Result<EventBatch> {
        Err(DriverError::Unsupported(format!(
            "a {} keeps no event log over Modbus",
            self.profile.model
        )))
    }

    async fn read_clock(&mut self) -> Result<Option<u32>> {
        Ok(None)
    }

    async fn set_clock(&mut self, _unix_time: u32) -> Result<()> {
        Err(DriverError::Unsupported(format!(
            "a {} has no clock",
            self.profile.model
        )))
    }

    fn placed_table(&self) -> Option<Vec<StoredEntry>> {
        self.image.as_ref().map(|image| {
            image
                .records
                .iter()
                .enumerate()
                .filter_map(|(index, record)| {
                    record.map(|(card, doors)| StoredEntry {
                        slot: index as u16,
                        entry: Entry {
                            credential: Credential::Card(card),
                            doors,
                        },
                    })
                })
                .collect()
        })
    }

    fn trust_placed_table(
        &mut self,
        table: Vec<StoredEntry>,
        fingerprint: Fingerprint,
        capacity: u16,
    ) {
        let Fingerprint::ChangeCounter(counter) = fingerprint else {
            return;
        };
        let mut records = vec![None; usize::from(capacity)];
        for stored in table {
            let (Credential::Card(card), Some(record)) = (
                stored.entry.credential,
                records.get_mut(usize::from(stored.slot)),
            ) else {
                return; // not a table of this device: keep reading instead
            };
            *record = Some((card, stored.entry.doors));
        }
        self.image = Some(Image { records, counter });
    }

    fn expected_fingerprint(&self) -> Option<Fingerprint> {
        self.image
            .as_ref()
            .map(|image| Fingerprint::ChangeCounter(image.counter))
    }

    fn transactions(&self) -> u64 {
        self.link.transactions()
    }
}
