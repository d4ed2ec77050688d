//! The PX-2 table digest: XOR over the active slots of the CRC-32 (ISO-HDLC, as zlib's
//! `crc32`) of the 14 bytes of slot registers 1..=7 (uid_len, five uid registers, door
//! mask), high byte first. It does not depend on slot order, so the service computes
//! the digest of the table it expects and compares it with one read.

use crate::lock::Entry;

/// The digest of one entry, as the device computes it.
pub fn entry_digest(uid: &[u8], doors: u16) -> u32 {
    let mut bytes = [0u8; 14];
    bytes[1] = uid.len() as u8;
    bytes[2..2 + uid.len().min(10)].copy_from_slice(&uid[..uid.len().min(10)]);
    bytes[12..14].copy_from_slice(&doors.to_be_bytes());
    crc32fast::hash(&bytes)
}

/// The digest of a whole table of UID entries; 0 for an empty table.
pub fn table_digest<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> u32 {
    entries
        .into_iter()
        .filter_map(|entry| {
            entry
                .credential
                .uid()
                .map(|uid| entry_digest(uid, entry.doors))
        })
        .fold(0, |acc, digest| acc ^ digest)
}
