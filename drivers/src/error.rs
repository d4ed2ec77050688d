//! What can go wrong talking to a device. A transport failure, a Modbus exception and
//! a device that is not what it should be are different errors, handled differently.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    #[error("connection lost during {operation}: {reason}")]
    Transport {
        operation: &'static str,
        reason: String,
    },
    #[error("no answer to {operation} within {after:?}")]
    Timeout {
        operation: &'static str,
        after: Duration,
    },
    #[error("the device answered {operation} with Modbus exception {code:#04x} ({name})")]
    Exception {
        operation: &'static str,
        code: u8,
        name: &'static str,
    },
    /// Model or firmware differ from the configuration: nothing is written to it.
    #[error("not the configured device: {0}")]
    WrongDevice(String),
    /// The device understood the command and said no (table full, bad request).
    #[error("the device refused: {0}")]
    Refused(String),
    /// The device answered something the protocol does not allow.
    #[error("the device answered nonsense: {0}")]
    Protocol(String),
    #[error("not possible on this device: {0}")]
    Unsupported(String),
}

impl DriverError {
    /// Worth trying again later (the device or the network may come back).
    pub fn is_transient(&self) -> bool {
        match self {
            DriverError::Connect { .. }
            | DriverError::Transport { .. }
            | DriverError::Timeout { .. } => true,
            // Busy (06), gateway path or target unavailable (0A, 0B), device failure (04).
            DriverError::Exception { code, .. } => matches!(code, 0x04 | 0x06 | 0x0A | 0x0B),
            _ => false,
        }
    }
}

pub type Result<T, E = DriverError> = std::result::Result<T, E>;

pub(crate) fn exception_name(code: u8) -> &'static str {
    match code {
        0x01 => "illegal function",
        0x02 => "illegal data address",
        0x03 => "illegal data value",
        0x04 => "server device failure",
        0x05 => "acknowledge",
        0x06 => "server device busy",
        0x08 => "memory parity error",
        0x0A => "gateway path unavailable",
        0x0B => "gateway target device failed to respond",
        _ => "unknown exception",
    }
}
