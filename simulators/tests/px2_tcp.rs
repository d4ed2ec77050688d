//! A PX-2 on Modbus TCP, driven by a real tokio-modbus client.

mod common;

use std::time::Duration;

use common::{connect, mailbox, u32_high_first, Deadline, PATIENCE};
use gardien_simulators::px2::{command, NO_SLOT};
use gardien_simulators::{serve_tcp, AccessResult, Faults, Px2Config, Px2Device, TcpServer, Uid};
use tokio_modbus::client::Context;
use tokio_modbus::prelude::*;

const OK: u16 = 0;
const TABLE_FULL: u16 = 1;
const ALREADY_PRESENT: u16 = 2;
const NOT_FOUND: u16 = 3;

async fn start(config: Px2Config) -> (Px2Device, TcpServer) {
    let px2 = Px2Device::new(
        Px2Config {
            seed: Some(3),
            ..config
        },
        Faults::seeded(3),
    );
    let server = serve_tcp(px2.clone(), "127.0.0.1:0").await.expect("serve");
    (px2, server)
}

/// Writes one mailbox command and polls register 20 until it reports `sequence`.
async fn run(ctx: &mut Context, block: Vec<u16>) -> [u16; 2] {
    let sequence = block[0];
    ctx.write_multiple_registers(10, &block)
        .await
        .unwrap()
        .unwrap();
    let deadline = Deadline::after(PATIENCE);
    loop {
        let words = ctx.read_holding_registers(20, 3).await.unwrap().unwrap();
        if words[0] == sequence {
            return [words[1], words[2]];
        }
        deadline.tick().await;
    }
}

#[tokio::test]
async fn identity_registers() {
    let (_px2, server) = start(Px2Config {
        capacity: 300,
        doors: 6,
        firmware: 0x0205,
        ..Px2Config::default()
    })
    .await;
    let mut ctx = connect(server.local_addr(), 1).await;
    let words = ctx.read_holding_registers(0, 7).await.unwrap().unwrap();
    assert_eq!(words, vec![0x5032, 0x0205, 300, 0, 0, 0, 1]);
    assert_eq!(
        ctx.read_holding_registers(40, 1).await.unwrap(),
        Ok(vec![6])
    );
    assert_eq!(
        ctx.read_input_registers(0, 2).await.unwrap(),
        Ok(vec![0, 500])
    );
}

#[tokio::test]
async fn mailbox_commands() {
    let (px2, server) = start(Px2Config {
        capacity: 2,
        ..Px2Config::default()
    })
    .await;
    let mut ctx = connect(server.local_addr(), 1).await;

    assert_eq!(
        run(&mut ctx, mailbox(1, command::ADD, "04A22B91", 0b11)).await,
        [OK, 0]
    );
    assert_eq!(
        run(&mut ctx, mailbox(2, command::ADD, "04A22B91", 0b1)).await,
        [ALREADY_PRESENT, NO_SLOT]
    );
    assert_eq!(
        run(
            &mut ctx,
            mailbox(3, command::ADD, "0102030405060708090A", 1)
        )
        .await,
        [OK, 1]
    );
    assert_eq!(
        run(&mut ctx, mailbox(4, command::ADD, "AA", 1)).await,
        [TABLE_FULL, NO_SLOT]
    );
    assert_eq!(
        run(&mut ctx, mailbox(5, command::SET_DOORS, "04A22B91", 0b100)).await,
        [OK, 0]
    );
    let slot0 = ctx.read_holding_registers(1000, 8).await.unwrap().unwrap();
    assert_eq!(slot0, vec![1, 4, 0x04A2, 0x2B91, 0, 0, 0, 0b100]);
    assert_eq!(
        run(&mut ctx, mailbox(6, command::DELETE_UID, "04A22B91", 0)).await,
        [OK, 0]
    );
    assert_eq!(
        run(&mut ctx, mailbox(7, command::DELETE_UID, "04A22B91", 0)).await,
        [NOT_FOUND, NO_SLOT]
    );
    assert_eq!(
        ctx.read_holding_registers(1000, 8).await.unwrap(),
        Ok(vec![0; 8])
    );
    assert_eq!(ctx.read_holding_registers(3, 1).await.unwrap(), Ok(vec![1]));
    // The mailbox reads back what was written last.
    let block = ctx.read_holding_registers(10, 10).await.unwrap().unwrap();
    assert_eq!(block, mailbox(7, command::DELETE_UID, "04A22B91", 0));
    assert_eq!(px2.snapshot().used, 1);
}

#[tokio::test]
async fn busy_while_a_command_executes() {
    let slow = Duration::from_millis(400);
    let (_px2, server) = start(Px2Config {
        exec_time: slow..=slow,
        ..Px2Config::default()
    })
    .await;
    let mut ctx = connect(server.local_addr(), 1).await;
    ctx.write_multiple_registers(10, &mailbox(1, command::ADD, "01", 1))
        .await
        .unwrap()
        .unwrap();
    let again = ctx
        .write_multiple_registers(10, &mailbox(2, command::ADD, "02", 1))
        .await;
    assert_eq!(again.unwrap(), Err(ExceptionCode::ServerDeviceBusy));
    // Meanwhile the result registers still show the previous (power-up) result.
    assert_eq!(
        ctx.read_holding_registers(20, 3).await.unwrap(),
        Ok(vec![0, 0, NO_SLOT])
    );
    let deadline = Deadline::after(PATIENCE);
    while ctx.read_holding_registers(20, 1).await.unwrap() != Ok(vec![1]) {
        deadline.tick().await;
    }
    assert_eq!(
        run(&mut ctx, mailbox(2, command::ADD, "02", 1)).await,
        [OK, 1]
    );
}

#[tokio::test]
async fn digest_matches_a_hand_computation() {
    let (_px2, server) = start(Px2Config::default()).await;
    let mut ctx = connect(server.local_addr(), 1).await;
    run(&mut ctx, mailbox(1, command::ADD, "04A22B91", 0x0003)).await;
    run(
        &mut ctx,
        mailbox(2, command::ADD, "0102030405060708090A", 0x8001),
    )
    .await;

    // CRC-32 of uid_len, uid (5 registers), door_mask, each high byte first.
    let first = [0, 4, 0x04, 0xA2, 0x2B, 0x91, 0, 0, 0, 0, 0, 0, 0x00, 0x03];
    let second = [0, 10, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0x80, 0x01];
    let expected = crc32fast::hash(&first) ^ crc32fast::hash(&second);
    let words = ctx.read_holding_registers(4, 2).await.unwrap().unwrap();
    assert_eq!(u32_high_first(&words), expected);

    run(&mut ctx, mailbox(3, command::CLEAR_ALL, "00", 0)).await;
    assert_eq!(
        ctx.read_holding_registers(3, 3).await.unwrap(),
        Ok(vec![0, 0, 0])
    );
}

#[tokio::test]
async fn event_ring_wraps_and_counts() {
    let (px2, server) = start(Px2Config {
        clock: Some(0x1234_5678),
        ..Px2Config::default()
    })
    .await;
    let mut ctx = connect(server.local_addr(), 1).await;
    run(&mut ctx, mailbox(1, command::ADD, "04A22B91", 0b01)).await;
    let known = Uid::from_hex("04A22B91").unwrap();
    let stranger = Uid::from_hex("0102030405060708").unwrap();

    assert_eq!(px2.present(&known, 1), Ok(AccessResult::Granted));
    assert_eq!(px2.present(&known, 2), Ok(AccessResult::DeniedDoor));
    assert_eq!(px2.present(&stranger, 1), Ok(AccessResult::DeniedUnknown));
    let event0 = ctx.read_input_registers(100, 10).await.unwrap().unwrap();
    assert_eq!(event0[2..], [4, 0x04A2, 0x2B91, 0, 0, 0, 1, 1]);
    assert!(u32_high_first(&event0) >= 0x1234_5678);

    // 600 more: 603 in all, events 0-102 overwritten; event 600 sits where event 100 was.
    for _ in 0..600 {
        px2.present(&stranger, 3).unwrap();
    }
    assert_eq!(ctx.read_input_registers(0, 1).await.unwrap(), Ok(vec![603]));
    let event602 = ctx
        .read_input_registers(100 + 10 * 102, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event602[2..], [8, 0x0102, 0x0304, 0x0506, 0x0708, 0, 3, 2]);
    let event103 = ctx
        .read_input_registers(100 + 10 * 103, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event103[8..], [3, 2]);
    let last = ctx.read_input_registers(100 + 10 * 499, 10).await.unwrap();
    assert!(last.is_ok());
    let past = ctx.read_input_registers(100 + 10 * 499, 11).await.unwrap();
    assert_eq!(past, Err(ExceptionCode::IllegalDataAddress));
}

#[tokio::test]
async fn written_counter_wraps_at_65536() {
    let (px2, server) = start(Px2Config::default()).await;
    let mut ctx = connect(server.local_addr(), 1).await;
    let uid = Uid::from_hex("01").unwrap();
    for _ in 0..65_537 {
        px2.present(&uid, 1).unwrap();
    }
    assert_eq!(ctx.read_input_registers(0, 1).await.unwrap(), Ok(vec![1]));
    assert_eq!(px2.snapshot().events_written, 65_537);
    // Event 65536 sits at 65536 mod 500 = 36.
    let event = ctx
        .read_input_registers(100 + 10 * 36, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(event[9], AccessResult::DeniedUnknown as u16);
}

#[tokio::test]
async fn exceptions_for_bad_addresses_and_lengths() {
    let (_px2, server) = start(Px2Config {
        capacity: 10,
        ..Px2Config::default()
    })
    .await;
    let mut ctx = connect(server.local_addr(), 1).await;
    let illegal_address = ExceptionCode::IllegalDataAddress;
    let illegal_value = ExceptionCode::IllegalDataValue;
    let read = ctx.read_holding_registers(7, 1).await.unwrap();
    assert_eq!(read, Err(illegal_address));
    let read = ctx.read_holding_registers(1080, 1).await.unwrap();
    assert_eq!(read, Err(illegal_address));
    let read = ctx.read_holding_registers(1000, 126).await.unwrap();
    assert_eq!(read, Err(illegal_value));
    let read = ctx.read_input_registers(0, 126).await.unwrap();
    assert_eq!(read, Err(illegal_value));
    let write = ctx.write_multiple_registers(3, &[1]).await.unwrap();
    assert_eq!(write, Err(illegal_value));
    let write = ctx.write_multiple_registers(10, &[1, 1]).await.unwrap();
    assert_eq!(write, Err(illegal_value));
    let write = ctx.write_multiple_registers(500, &[1]).await.unwrap();
    assert_eq!(write, Err(illegal_address));
    assert_eq!(
        ctx.write_single_register(30, 1).await.unwrap(),
        Err(ExceptionCode::IllegalFunction)
    );
    // Still healthy afterwards.
    assert_eq!(
        ctx.read_holding_registers(0, 1).await.unwrap(),
        Ok(vec![0x5032])
    );
}

#[tokio::test]
async fn clock_is_written_high_word_first() {
    let (px2, server) = start(Px2Config::default()).await;
    let mut ctx = connect(server.local_addr(), 1).await;
    ctx.write_multiple_registers(30, &[0x6500, 0x0001])
        .await
        .unwrap()
        .unwrap();
    let clock = u32_high_first(&ctx.read_holding_registers(30, 2).await.unwrap().unwrap());
    assert!(
        (0x6500_0001..0x6500_0001 + 5).contains(&clock),
        "{clock:#x}"
    );
    assert!(px2.snapshot().clock >= 0x6500_0001);
}

#[tokio::test]
async fn two_clients_see_one_device() {
    let (_px2, server) = start(Px2Config::default()).await;
    let mut first = connect(server.local_addr(), 1).await;
    let mut second = connect(server.local_addr(), 1).await;
    run(&mut first, mailbox(1, command::ADD, "01", 1)).await;
    assert_eq!(
        second.read_holding_registers(3, 1).await.unwrap(),
        Ok(vec![1])
    );
    assert_eq!(
        second.read_holding_registers(20, 1).await.unwrap(),
        Ok(vec![1])
    );
    // The sequence rule is the device's, not the connection's.
    assert_eq!(
        run(&mut second, mailbox(1, command::DELETE_UID, "01", 0)).await,
        [OK, 0]
    );
    assert_eq!(
        first.read_holding_registers(3, 1).await.unwrap(),
        Ok(vec![1])
    );
}

#[tokio::test]
async fn reboot_and_factory_reset() {
    let (px2, server) = start(Px2Config::default()).await;
    let mut ctx = connect(server.local_addr(), 1).await;
    run(&mut ctx, mailbox(1, command::ADD, "01", 1)).await;
    px2.reboot();
    let words = ctx.read_holding_registers(3, 4).await.unwrap().unwrap();
    assert_eq!((words[0], words[3]), (1, 2), "used and boot counter");
    px2.reboot_with_memory_loss();
    assert_eq!(
        ctx.read_holding_registers(3, 4).await.unwrap(),
        Ok(vec![0, 0, 0, 0])
    );
}
