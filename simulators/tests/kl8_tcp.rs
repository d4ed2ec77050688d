//! A KL-8 on Modbus TCP, driven by a real tokio-modbus client.

mod common;

use std::time::Duration;

use common::{connect, Deadline, PATIENCE};
use gardien_simulators::{
    serve_tcp, AccessResult, Faults, Kl8Config, Kl8Device, Record, TcpServer, Uid,
};
use tokio::time::Instant;
use tokio_modbus::prelude::*;

async fn start(config: Kl8Config) -> (Kl8Device, TcpServer) {
    let kl8 = Kl8Device::new(config, Faults::seeded(5));
    let server = serve_tcp(kl8.clone(), "127.0.0.1:0").await.expect("serve");
    (kl8, server)
}

/// The 4 registers of an active record, card number low word first.
fn record(card: u32, door_mask: u16) -> [u16; 4] {
    [card as u16, (card >> 16) as u16, door_mask, 1]
}

#[tokio::test]
async fn identity_and_cdab_card_numbers() {
    let (kl8, server) = start(Kl8Config::default()).await;
    let mut ctx = connect(server.local_addr(), 17).await;
    let identity = ctx.read_holding_registers(0, 4).await.unwrap().unwrap();
    assert_eq!(identity, vec![0x4B38, 0x0104, 1000, 0]);

    // UID 04 A2 2B 91 has card number 0x912BA204, written as 0xA204, 0x912B.
    let uid = Uid::from_hex("04A22B91").unwrap();
    let card = uid.card_number().unwrap();
    assert_eq!(card, 2_435_555_844);
    ctx.write_multiple_registers(100 + 4 * 7, &record(card, 0b10))
        .await
        .unwrap()
        .unwrap();
    let words = ctx.read_holding_registers(128, 4).await.unwrap().unwrap();
    assert_eq!(words, vec![0xA204, 0x912B, 0b10, 1]);
    assert_eq!(
        kl8.snapshot().records,
        vec![(7, Record::active(card, 0b10))]
    );
    assert_eq!(kl8.present(&uid, 2), Ok(AccessResult::Granted));
    assert_eq!(kl8.present(&uid, 1), Ok(AccessResult::DeniedDoor));
    assert_eq!(
        kl8.present_card(card + 1, 2),
        Ok(AccessResult::DeniedUnknown)
    );

    // Clearing by FC06 on `state` counts as a write too.
    ctx.write_single_register(131, 0).await.unwrap().unwrap();
    assert_eq!(ctx.read_holding_registers(3, 1).await.unwrap(), Ok(vec![2]));
    assert_eq!(kl8.present(&uid, 2), Ok(AccessResult::DeniedUnknown));
}

#[tokio::test]
async fn save_takes_time_and_power_cut_loses_unsaved_records() {
    let save_time = Duration::from_millis(300);
    let (kl8, server) = start(Kl8Config {
        save_time,
        ..Kl8Config::default()
    })
    .await;
    let mut ctx = connect(server.local_addr(), 17).await;
    ctx.write_multiple_registers(100, &record(1, 1))
        .await
        .unwrap()
        .unwrap();
    ctx.write_multiple_registers(104, &record(2, 1))
        .await
        .unwrap()
        .unwrap();

    let started = Instant::now();
    ctx.write_single_coil(0, true).await.unwrap().unwrap();
    assert_eq!(ctx.read_coils(0, 1).await.unwrap(), Ok(vec![true]));
    let deadline = Deadline::after(PATIENCE);
    while ctx.read_coils(0, 1).await.unwrap() != Ok(vec![false]) {
        deadline.tick().await;
    }
    assert!(started.elapsed() >= save_time);

    // Written after the save: gone with the power.
    ctx.write_multiple_registers(108, &record(3, 1))
        .await
        .unwrap()
        .unwrap();
    ctx.write_multiple_registers(100, &[0; 4])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ctx.read_holding_registers(3, 1).await.unwrap(), Ok(vec![4]));
    kl8.reboot_with_memory_loss();
    assert_eq!(ctx.read_holding_registers(3, 1).await.unwrap(), Ok(vec![0]));
    let table = ctx.read_holding_registers(100, 12).await.unwrap().unwrap();
    assert_eq!(table, [record(1, 1), record(2, 1), [0; 4]].concat());
}

#[tokio::test]
async fn power_cut_during_save_keeps_the_old_flash() {
    let (kl8, server) = start(Kl8Config {
        save_time: Duration::from_secs(60),
        ..Kl8Config::default()
    })
    .await;
    let mut ctx = connect(server.local_addr(), 17).await;
    ctx.write_multiple_registers(100, &record(1, 1))
        .await
        .unwrap()
        .unwrap();
    ctx.write_single_coil(0, true).await.unwrap().unwrap();
    kl8.reboot();
    assert_eq!(ctx.read_coils(0, 1).await.unwrap(), Ok(vec![false]));
    assert_eq!(
        ctx.read_holding_registers(100, 4).await.unwrap(),
        Ok(vec![0; 4])
    );
}

#[tokio::test]
async fn exceptions_and_door_coils() {
    let (kl8, server) = start(Kl8Config {
        capacity: 10,
        ..Kl8Config::default()
    })
    .await;
    let mut ctx = connect(server.local_addr(), 17).await;
    let read = ctx.read_holding_registers(4, 1).await.unwrap();
    assert_eq!(read, Err(ExceptionCode::IllegalDataAddress));
    let read = ctx.read_holding_registers(100, 101).await.unwrap();
    assert_eq!(read, Err(ExceptionCode::IllegalDataValue));
    let write = ctx
        .write_multiple_registers(140, &record(1, 1))
        .await
        .unwrap();
    assert_eq!(write, Err(ExceptionCode::IllegalDataAddress));
    let write = ctx
        .write_multiple_registers(102, &record(1, 1))
        .await
        .unwrap();
    assert_eq!(write, Err(ExceptionCode::IllegalDataValue));
    let write = ctx.write_single_register(2, 5).await.unwrap();
    assert_eq!(write, Err(ExceptionCode::IllegalDataValue));
    let read = ctx.read_input_registers(0, 1).await.unwrap();
    assert_eq!(read, Err(ExceptionCode::IllegalFunction));

    ctx.write_single_coil(8, true).await.unwrap().unwrap();
    assert_eq!(kl8.with(|k, _| k.door_pulses(8)), 1);
    let coil = ctx.write_single_coil(9, true).await.unwrap();
    assert_eq!(coil, Err(ExceptionCode::IllegalDataAddress));
}
