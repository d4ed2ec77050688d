//! MBG-250 helpers: a gateway on a frozen virtual clock, and a client side that
//! programs slots, runs a read-out and decodes readings as a driver would.

use std::time::Duration;

use gardien_simulators::mbg::population;
use gardien_simulators::mbg::profile::date;
use gardien_simulators::{BusMeter, Faults, MbgConfig, MbgDevice, SimClock, SlotConfig};
use tokio::time::timeout;
use tokio_modbus::client::Context;
use tokio_modbus::prelude::*;

use super::{Deadline, PATIENCE};

/// 2025-01-15T00:00:00Z, where the test clocks stand.
pub const T0: i64 = 1_736_899_200;
pub const DAY: i64 = 86_400;

pub fn config(firmware: u16) -> MbgConfig {
    MbgConfig {
        firmware,
        ms_per_meter: Duration::from_millis(2),
        clock: SimClock::frozen(T0),
        name: Some("building-a".into()),
        ..MbgConfig::default()
    }
}

/// A gateway with `flats` flats (3 meters each) on its loop, meters installed on
/// 1 January 2025.
pub fn gateway(config: MbgConfig, flats: u32) -> (MbgDevice, Vec<BusMeter>) {
    let device = MbgDevice::new(config, Faults::seeded(3));
    let meters = population(11, 10_000_001, flats, date(2025, 1, 1));
    device.add_meters(meters.iter().cloned()).expect("meters");
    (device, meters)
}

pub async fn program(ctx: &mut Context, slot: u16, config: &SlotConfig) {
    ctx.write_multiple_registers(100 + 8 * slot, &config.registers())
        .await
        .expect("link")
        .expect("slot written");
}

/// Writes 1 to the trigger and waits until the state register says idle.
pub async fn read_out(ctx: &mut Context) {
    ctx.write_single_register(7, 1)
        .await
        .expect("link")
        .expect("trigger");
    let deadline = Deadline::after(PATIENCE);
    while timeout(PATIENCE, ctx.read_holding_registers(6, 1))
        .await
        .expect("answer")
        .expect("link")
        != Ok(vec![0])
    {
        deadline.tick().await;
    }
}

/// A slot's readings as a driver decodes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decoded {
    pub status: u16,
    /// Firmware 2.x: raw × 10^exponent; 1.x: the float.
    pub value: f64,
    pub raw: i64,
    pub exponent: i16,
    pub float: f32,
    pub unit: u16,
    pub time: u32,
    /// The BCD id echo as 8 digits.
    pub id_echo: u32,
    pub high_words: [u16; 2],
}

pub fn decode(words: &[u16], major: u8) -> Decoded {
    let raw = words[1..5]
        .iter()
        .fold(0u64, |acc, &w| acc << 16 | u64::from(w)) as i64;
    let exponent = words[5] as i16;
    // Firmware 1.x: CDAB, low word first.
    let float = f32::from_bits(u32::from(words[2]) << 16 | u32::from(words[1]));
    let value = if major == 1 {
        f64::from(float)
    } else {
        raw as f64 * 10f64.powi(i32::from(exponent))
    };
    let bcd = u32::from(words[9]) << 16 | u32::from(words[10]);
    let id_echo = (0..8)
        .rev()
        .fold(0, |id, nibble| id * 10 + ((bcd >> (4 * nibble)) & 0xF));
    Decoded {
        status: words[0],
        value,
        raw,
        exponent,
        float,
        unit: words[6],
        time: u32::from(words[7]) << 16 | u32::from(words[8]),
        id_echo,
        high_words: [words[3], words[4]],
    }
}

/// Slots 0..count, 8 per request: 16 × 7 + 11 = 123 registers cover eight slots'
/// first 11 registers.
pub async fn readings(ctx: &mut Context, count: u16, major: u8) -> Vec<Decoded> {
    let mut out = Vec::new();
    for first in (0..count).step_by(8) {
        let n = (count - first).min(8);
        let words = ctx
            .read_input_registers(1000 + 16 * first, 16 * (n - 1) + 11)
            .await
            .expect("link")
            .expect("readings");
        out.extend((0..n).map(|i| decode(&words[usize::from(16 * i)..], major)));
    }
    out
}

pub fn u32_of(words: &[u16]) -> u32 {
    u32::from(words[0]) << 16 | u32::from(words[1])
}
