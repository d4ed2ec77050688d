//! A Modbus connection to one device (TCP or RTU over a serial line), with timeouts,
//! reads split to the device's limits, and a count of transactions for benchmarks.
//! After a timeout or a transport error the connection is not trusted again: a late
//! answer could be taken for the next one. The caller reconnects.

use std::time::Duration;

use tokio_modbus::client::{Context, Reader, Writer};
use tokio_modbus::Slave;

use crate::error::{exception_name, DriverError, Result};
use crate::profile::{ModbusSettings, Parity, SerialSettings};

/// Runs one Modbus transaction on a `Link` with its timeout, mapping every failure.
macro_rules! transaction {
    ($link:expr, $operation:expr, $method:ident($($arg:expr),*)) => {{
        $link.begin($operation)?;
        let outcome = tokio::time::timeout($link.timeout, $link.context.$method($($arg),*)).await;
        $link.finish($operation, outcome)
    }};
}

/// Where a device is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `host:port`.
    Tcp(String),
    /// A serial device (`/dev/ttyUSB0`) and its line settings.
    Rtu {
        path: String,
        serial: SerialSettings,
    },
}

impl Endpoint {
    /// A serial endpoint from `path[@baud[,8N1]]`, defaults from the profile.
    pub fn rtu(address: &str, defaults: SerialSettings) -> Result<Endpoint> {
        let bad = |why: &str| {
            DriverError::Unsupported(format!("serial address {address:?}: {why} (expected /dev/ttyUSB0, /dev/ttyUSB0@19200 or /dev/ttyUSB0@9600,8E1)"))
        };
        let (path, settings) = address.split_once('@').unwrap_or((address, ""));
        let mut serial = defaults;
        if !settings.is_empty() {
            let (baud, frame) = settings.split_once(',').unwrap_or((settings, ""));
            serial.baud = baud.parse().map_err(|_| bad("baud rate is not a number"))?;
            if !frame.is_empty() {
                let chars: Vec<char> = frame.chars().collect();
                let [data, parity, stop] = chars[..] else {
                    return Err(bad("frame must look like 8N1"));
                };
                serial.data_bits = data.to_digit(10).ok_or_else(|| bad("data bits"))? as u8;
                serial.parity = match parity.to_ascii_uppercase() {
                    'N' => Parity::None,
                    'E' => Parity::Even,
                    'O' => Parity::Odd,
                    _ => return Err(bad("parity must be N, E or O")),
                };
                serial.stop_bits = stop.to_digit(10).ok_or_else(|| bad("stop bits"))? as u8;
            }
        }
        if path.is_empty() {
            return Err(bad("no device path"));
        }
        Ok(Endpoint::Rtu {
            path: path.to_owned(),
            serial,
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Tcp(address) => write!(f, "tcp://{address}"),
            Endpoint::Rtu { path, serial } => write!(f, "rtu://{path}@{}", serial.baud),
        }
    }
}

pub struct Link {
    context: Context,
    timeout: Duration,
    max_read: u16,
    max_write: u16,
    transactions: u64,
    broken: bool,
}

impl Link {
    pub async fn connect(endpoint: &Endpoint, unit: u8, settings: &ModbusSettings) -> Result<Link> {
        let timeout = Duration::from_millis(settings.timeout_ms);
        let failed = |reason: String| DriverError::Connect {
            endpoint: endpoint.to_string(),
            reason,
        };
        let context = match endpoint {
            Endpoint::Tcp(address) => {
                let stream = tokio::time::timeout(timeout, tokio::net::TcpStream::connect(address))
                    .await
                    .map_err(|_| failed(format!("no answer within {timeout:?}")))?
                    .map_err(|err| failed(err.to_string()))?;
                let _ = stream.set_nodelay(true);
                tokio_modbus::client::tcp::attach_slave(stream, Slave(unit))
            }
            Endpoint::Rtu { path, serial } => {
                use tokio_serial::SerialPortBuilderExt;
                let port = tokio_serial::new(path, serial.baud)
                    .data_bits(match serial.data_bits {
                        7 => tokio_serial::DataBits::Seven,
                        _ => tokio_serial::DataBits::Eight,
                    })
                    .parity(match serial.parity {
                        Parity::None => tokio_serial::Parity::None,
                        Parity::Even => tokio_serial::Parity::Even,
                        Parity::Odd => tokio_serial::Parity::Odd,
                    })
                    .stop_bits(match serial.stop_bits {
                        2 => tokio_serial::StopBits::Two,
                        _ => tokio_serial::StopBits::One,
                    })
                    .open_native_async()
                    .map_err(|err| failed(err.to_string()))?;
                tokio_modbus::client::rtu::attach_slave(port, Slave(unit))
            }
        };
        Ok(Link {
            context,
            timeout,
            max_read: settings.max_read,
            max_write: settings.max_write,
            transactions: 0,
            broken: false,
        })
    }

    /// Modbus transactions sent on this link so far.
    pub fn transactions(&self) -> u64 {
        self.transactions
    }

    /// Counts a transaction about to start; refuses once the link is broken.
    fn begin(&mut self, operation: &'static str) -> Result<()> {
        if self.broken {
            return Err(DriverError::Transport {
                operation,
                reason: "connection closed after an earlier failure".into(),
            });
        }
        self.transactions += 1;
        Ok(())
    }

    /// Maps the outcome of one transaction; a timeout or a transport error breaks the link.
    fn finish<T>(
        &mut self,
        operation: &'static str,
        outcome: Result<tokio_modbus::Result<T>, tokio::time::error::Elapsed>,
    ) -> Result<T> {
        match outcome {
            Err(_) => {
                self.broken = true;
                Err(DriverError::Timeout {
                    operation,
                    after: self.timeout,
                })
            }
            Ok(Err(err)) => {
                self.broken = true;
                Err(DriverError::Transport {
                    operation,
                    reason: err.to_string(),
                })
            }
            Ok(Ok(Err(exception))) => {
                let code = u8::from(exception);
                Err(DriverError::Exception {
                    operation,
                    code,
                    name: exception_name(code),
                })
            }
            Ok(Ok(Ok(value))) => Ok(value),
        }
    }

    /// Reads `count` holding registers from `address`, in as few requests as the device allows.
    pub async fn read_holding(&mut self, address: u16, count: u16) -> Result<Vec<u16>> {
        self.read_chunked("read holding registers", address, count, false)
            .await
    }

    /// Reads `count` input registers from `address`, in as few requests as the device allows.
    pub async fn read_input(&mut self, address: u16, count: u16) -> Result<Vec<u16>> {
        self.read_chunked("read input registers", address, count, true)
            .await
    }

    async fn read_chunked(
        &mut self,
        operation: &'static str,
        address: u16,
        count: u16,
        input: bool,
    ) -> Result<Vec<u16>> {
        let mut words = Vec::with_capacity(usize::from(count));
        let mut done = 0u16;
        while done < count {
            let chunk = (count - done).min(self.max_read);
            let start = address
                .checked_add(done)
                .ok_or_else(|| DriverError::Protocol("address overflow".into()))?;
            let part = if input {
                transaction!(self, operation, read_input_registers(start, chunk))?
            } else {
                transaction!(self, operation, read_holding_registers(start, chunk))?
            };
            if part.len() != usize::from(chunk) {
                return Err(DriverError::Protocol(format!(
                    "{operation} at {start}: asked {chunk} registers, got {}",
                    part.len()
                )));
            }
            words.extend(part);
            done += chunk;
        }
        Ok(words)
    }

    /// Writes registers with one request (FC16); refuses more than the device takes at once.
    pub async fn write_registers(&mut self, address: u16, words: &[u16]) -> Result<()> {
        if words.len() > usize::from(self.max_write) {
            return Err(DriverError::Unsupported(format!(
                "{} registers in one write, the device takes {}",
                words.len(),
                self.max_write
            )));
        }
        transaction!(
            self,
            "write multiple registers",
            write_multiple_registers(address, words)
        )
    }

    /// Writes one register (FC06).
    pub async fn write_register(&mut self, address: u16, word: u16) -> Result<()> {
        transaction!(
            self,
            "write single register",
            write_single_register(address, word)
        )
    }

    pub async fn write_coil(&mut self, address: u16, on: bool) -> Result<()> {
        transaction!(self, "write single coil", write_single_coil(address, on))
    }

    pub async fn read_coil(&mut self, address: u16) -> Result<bool> {
        let coils = transaction!(self, "read coils", read_coils(address, 1))?;
        coils
            .first()
            .copied()
            .ok_or_else(|| DriverError::Protocol("read coils: empty answer".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_addresses() {
        let defaults = SerialSettings {
            baud: 9600,
            parity: Parity::None,
            data_bits: 8,
            stop_bits: 1,
        };
        assert_eq!(
            Endpoint::rtu("/dev/ttyUSB0", defaults),
            Ok(Endpoint::Rtu {
                path: "/dev/ttyUSB0".into(),
                serial: defaults
            })
        );
        let Ok(Endpoint::Rtu { serial, .. }) = Endpoint::rtu("/dev/ttyUSB1@19200,8E1", defaults)
        else {
            panic!("parsed")
        };
        assert_eq!(
            (serial.baud, serial.parity, serial.stop_bits),
            (19200, Parity::Even, 1)
        );
        assert!(Endpoint::rtu("/dev/ttyUSB0@fast", defaults).is_err());
        assert!(Endpoint::rtu("@9600", defaults).is_err());
    }
}
