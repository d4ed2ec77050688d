//! Badge UIDs as both controllers see them.

use std::fmt;

/// A badge UID of 1 to 10 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Uid {
    len: u8,
    bytes: [u8; Uid::MAX_LEN],
}

impl Uid {
    pub const MAX_LEN: usize = 10;

    /// `None` unless `bytes` holds 1 to 10 bytes.
    pub fn new(bytes: &[u8]) -> Option<Uid> {
        if bytes.is_empty() || bytes.len() > Self::MAX_LEN {
            return None;
        }
        let mut uid = Uid {
            len: bytes.len() as u8,
            bytes: [0; Self::MAX_LEN],
        };
        uid.bytes[..bytes.len()].copy_from_slice(bytes);
        Some(uid)
    }

    /// Parses hex digits, with optional `:`, `-` or space separators ("04A22B91", "04:a2:2b:91").
    pub fn from_hex(text: &str) -> Option<Uid> {
        let digits: Vec<u8> = text
            .bytes()
            .filter(|b| !matches!(b, b':' | b'-' | b' '))
            .collect();
        if digits.len() % 2 != 0 {
            return None;
        }
        let bytes = digits
            .chunks(2)
            .map(|pair| {
                let pair = std::str::from_utf8(pair).ok()?;
                u8::from_str_radix(pair, 16).ok()
            })
            .collect::<Option<Vec<u8>>>()?;
        Uid::new(&bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    /// Always false: a UID has at least one byte. Present for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The 5 registers of a PX-2 slot or mailbox: bytes left-aligned, high byte first, zero-padded.
    pub fn to_registers(&self) -> [u16; 5] {
        let mut regs = [0; 5];
        for (reg, pair) in regs.iter_mut().zip(self.bytes.chunks(2)) {
            *reg = u16::from_be_bytes([pair[0], pair[1]]);
        }
        regs
    }

    /// The inverse of [`Uid::to_registers`]. `None` when `len` is not 1..=10 or when a byte
    /// past `len` is not zero (the padding the PX-2 manual requires).
    pub fn from_registers(len: u16, regs: &[u16; 5]) -> Option<Uid> {
        let len = usize::from(len);
        if len == 0 || len > Self::MAX_LEN {
            return None;
        }
        let bytes: Vec<u8> = regs.iter().flat_map(|r| r.to_be_bytes()).collect();
        if bytes[len..].iter().any(|&b| b != 0) {
            return None;
        }
        Uid::new(&bytes[..len])
    }

    /// The KL-8 card number of a 4-byte badge: its UID read little-endian.
    /// Other lengths have no card number.
    pub fn card_number(&self) -> Option<u32> {
        let bytes: [u8; 4] = self.as_bytes().try_into().ok()?;
        Some(u32::from_le_bytes(bytes))
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uid({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_are_left_aligned_and_padded() {
        let uid = Uid::from_hex("04A22B91").unwrap();
        assert_eq!(uid.to_registers(), [0x04A2, 0x2B91, 0, 0, 0]);
        let odd = Uid::from_hex("04A22B").unwrap();
        assert_eq!(odd.to_registers(), [0x04A2, 0x2B00, 0, 0, 0]);
        assert_eq!(Uid::from_registers(3, &odd.to_registers()), Some(odd));
    }

    #[test]
    fn rejects_bad_lengths_and_padding() {
        assert_eq!(Uid::new(&[]), None);
        assert_eq!(Uid::new(&[0; 11]), None);
        assert_eq!(Uid::from_registers(0, &[0; 5]), None);
        assert_eq!(Uid::from_registers(11, &[0; 5]), None);
        assert_eq!(Uid::from_registers(1, &[0x0401, 0, 0, 0, 0]), None);
        assert_eq!(Uid::from_hex("ABC"), None);
        assert_eq!(Uid::from_hex("zz"), None);
    }

    #[test]
    fn card_number_is_little_endian() {
        let uid = Uid::from_hex("04:A2:2B:91").unwrap();
        assert_eq!(uid.card_number(), Some(2_435_555_844));
        assert_eq!(Uid::from_hex("04A22B91AA").unwrap().card_number(), None);
        assert_eq!(uid.to_string(), "04A22B91");
    }
}
