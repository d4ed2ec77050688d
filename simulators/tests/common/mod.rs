//! Helpers shared by the integration tests: a real tokio-modbus client and polling.

#![allow(dead_code)] // each test file uses its own subset

pub mod mbg;

use std::net::SocketAddr;
use std::time::Duration;

use gardien_simulators::Uid;
use tokio::time::{timeout, Instant};
use tokio_modbus::client::{tcp, Context};
use tokio_modbus::Slave;

/// How long a test waits for something that should happen at once.
pub const PATIENCE: Duration = Duration::from_secs(5);

pub async fn connect(addr: SocketAddr, unit: u8) -> Context {
    timeout(PATIENCE, tcp::connect_slave(addr, Slave(unit)))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// A time limit for polling loops: call [`Deadline::tick`] between attempts.
pub struct Deadline {
    end: Instant,
    within: Duration,
}

impl Deadline {
    pub fn after(within: Duration) -> Deadline {
        Deadline {
            end: Instant::now() + within,
            within,
        }
    }

    /// Fails the test if the deadline has passed, else pauses briefly before the next try.
    pub async fn tick(&self) {
        assert!(
            Instant::now() < self.end,
            "condition not met within {:?}",
            self.within
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A PX-2 mailbox block (registers 10-19).
pub fn mailbox(sequence: u16, command: u16, uid: &str, argument: u16) -> Vec<u16> {
    let uid = Uid::from_hex(uid).expect("hex UID");
    let mut block = vec![sequence, command, u16::from(uid.len())];
    block.extend(uid.to_registers());
    block.extend([argument, 0]);
    block
}

pub fn u32_high_first(words: &[u16]) -> u32 {
    u32::from(words[0]) << 16 | u32::from(words[1])
}
