//! Values spread over 16-bit Modbus registers, in the vocabulary integrators know from
//! Telegraf and Home Assistant: a data type and a word order.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataType {
    U16,
    I16,
    U32,
    I32,
    U64,
    I64,
    F32,
}

impl DataType {
    /// Registers the value takes.
    pub fn registers(self) -> u16 {
        match self {
            DataType::U16 | DataType::I16 => 1,
            DataType::U32 | DataType::I32 | DataType::F32 => 2,
            DataType::U64 | DataType::I64 => 4,
        }
    }
}

/// Order of the 16-bit words of a multi-register value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum WordOrder {
    /// High word first (big-endian), the Modbus convention.
    #[default]
    ABCD,
    /// Low word first ("word-swapped").
    CDAB,
}

/// A value at a register address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    pub address: u16,
    #[serde(rename = "type")]
    pub data_type: DataType,
    #[serde(default)]
    pub word_order: WordOrder,
}

/// Joins `words` (in register order) into one integer, most significant word first
/// after applying `order`.
pub fn join_words(words: &[u16], order: WordOrder) -> u64 {
    let fold = |acc: u64, word: &u16| (acc << 16) | u64::from(*word);
    match order {
        WordOrder::ABCD => words.iter().fold(0, fold),
        WordOrder::CDAB => words.iter().rev().fold(0, fold),
    }
}

/// Splits `value` into `count` registers in register order.
pub fn split_words(value: u64, count: usize, order: WordOrder) -> Vec<u16> {
    let mut words: Vec<u16> = (0..count)
        .rev()
        .map(|i| (value >> (16 * i)) as u16)
        .collect();
    if order == WordOrder::CDAB {
        words.reverse();
    }
    words
}

/// A decoded number.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Number {
    Unsigned(u64),
    Signed(i64),
    Float(f64),
}

impl Field {
    pub fn registers(&self) -> u16 {
        self.data_type.registers()
    }

    /// Decodes the field from `words`, the registers starting at its address.
    pub fn decode(&self, words: &[u16]) -> Option<Number> {
        let words = words.get(..usize::from(self.registers()))?;
        let raw = join_words(words, self.word_order);
        Some(match self.data_type {
            DataType::U16 | DataType::U32 | DataType::U64 => Number::Unsigned(raw),
            DataType::I16 => Number::Signed(i64::from(raw as u16 as i16)),
            DataType::I32 => Number::Signed(i64::from(raw as u32 as i32)),
            DataType::I64 => Number::Signed(raw as i64),
            DataType::F32 => Number::Float(f64::from(f32::from_bits(raw as u32))),
        })
    }

    /// Decodes an unsigned field; `None` if the words are missing or the type is not unsigned.
    pub fn decode_unsigned(&self, words: &[u16]) -> Option<u64> {
        match self.decode(words)? {
            Number::Unsigned(value) => Some(value),
            _ => None,
        }
    }

    /// Encodes an unsigned value for writing.
    pub fn encode_unsigned(&self, value: u64) -> Vec<u16> {
        split_words(value, usize::from(self.registers()), self.word_order)
    }
}

/// A run of holding or input registers read in one go, starting at `base`.
#[derive(Debug, Clone)]
pub struct Block {
    pub base: u16,
    pub words: Vec<u16>,
}

impl Block {
    /// The registers of `field`, if the block covers them.
    pub fn slice(&self, field: &Field) -> Option<&[u16]> {
        let start = usize::from(field.address.checked_sub(self.base)?);
        self.words
            .get(start..start + usize::from(field.registers()))
    }

    pub fn unsigned(&self, field: &Field) -> Option<u64> {
        field.decode_unsigned(self.slice(field)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_orders() {
        assert_eq!(join_words(&[0x912B, 0xA204], WordOrder::ABCD), 0x912B_A204);
        assert_eq!(join_words(&[0xA204, 0x912B], WordOrder::CDAB), 0x912B_A204);
        assert_eq!(
            split_words(0x912B_A204, 2, WordOrder::CDAB),
            vec![0xA204, 0x912B]
        );
        let field = Field {
            address: 0,
            data_type: DataType::F32,
            word_order: WordOrder::CDAB,
        };
        let words = split_words(u64::from(1.5f32.to_bits()), 2, WordOrder::CDAB);
        assert_eq!(field.decode(&words), Some(Number::Float(1.5)));
        let signed = Field {
            address: 0,
            data_type: DataType::I16,
            word_order: WordOrder::ABCD,
        };
        assert_eq!(signed.decode(&[0xFFFE]), Some(Number::Signed(-2)));
    }
}
