//! What a controller decides when a badge is presented at a door.

use serde::Serialize;

/// The decision, numbered as in the PX-2 event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessResult {
    Granted = 1,
    /// The badge is not in the table.
    DeniedUnknown = 2,
    /// The badge is in the table but not allowed at this door.
    DeniedDoor = 3,
}

impl AccessResult {
    /// Decision for a table lookup: the door mask of the matching entry, if any.
    pub(crate) fn decide(mask: Option<u16>, door: u8) -> AccessResult {
        match mask {
            None => AccessResult::DeniedUnknown,
            Some(mask) if door_bit(door) & mask != 0 => AccessResult::Granted,
            Some(_) => AccessResult::DeniedDoor,
        }
    }
}

/// Bit of door `door` (1-based) in a door mask.
pub(crate) fn door_bit(door: u8) -> u16 {
    match door {
        1..=16 => 1 << (door - 1),
        _ => 0,
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresentError {
    #[error("door {door} does not exist: this controller has doors 1 to {doors}")]
    NoSuchDoor { door: u8, doors: u8 },
    #[error("this device has no doors")]
    NoDoors,
}

pub(crate) fn check_door(door: u8, doors: u8) -> Result<(), PresentError> {
    if (1..=doors).contains(&door) {
        Ok(())
    } else {
        Err(PresentError::NoSuchDoor { door, doors })
    }
}
