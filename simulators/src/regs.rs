//! Modbus register helpers shared by both register maps.

use std::ops::Range;

use tokio_modbus::ExceptionCode;

/// Validates a request's quantity and address range, in the order the Modbus
/// specification checks them: a zero or too large quantity is 03, a range that runs
/// past the end of the address space is 02.
pub(crate) fn checked_range(
    addr: u16,
    quantity: usize,
    max: usize,
) -> Result<Range<u32>, ExceptionCode> {
    if quantity == 0 || quantity > max {
        return Err(ExceptionCode::IllegalDataValue);
    }
    let start = u32::from(addr);
    let end = start + quantity as u32;
    if end > 0x1_0000 {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(start..end)
}

/// Reads `quantity` registers (or coils) through `read`, which answers `None` for an
/// address outside the map. One unmapped address makes the whole request 02.
pub(crate) fn read_block<T>(
    addr: u16,
    quantity: u16,
    max: usize,
    mut read: impl FnMut(u16) -> Option<T>,
) -> Result<Vec<T>, ExceptionCode> {
    checked_range(addr, usize::from(quantity), max)?
        .map(|a| read(a as u16))
        .collect::<Option<Vec<T>>>()
        .ok_or(ExceptionCode::IllegalDataAddress)
}

/// True when every address of `range` is mapped.
pub(crate) fn all_mapped(range: Range<u32>, mapped: impl Fn(u16) -> bool) -> bool {
    range.into_iter().all(|a| mapped(a as u16))
}

pub(crate) fn high_word(value: u32) -> u16 {
    (value >> 16) as u16
}

pub(crate) fn low_word(value: u32) -> u16 {
    value as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantity_is_checked_before_address() {
        assert_eq!(
            checked_range(0, 0, 10),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            checked_range(0, 11, 10),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            checked_range(0xFFFF, 2, 10),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(checked_range(0xFFFF, 1, 10), Ok(0xFFFF..0x1_0000));
    }

    #[test]
    fn one_hole_fails_the_whole_read() {
        let read = |a: u16| (a != 3).then_some(a);
        assert_eq!(read_block(0, 3, 10, read), Ok(vec![0, 1, 2]));
        assert_eq!(
            read_block(0, 4, 10, read),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }
}
